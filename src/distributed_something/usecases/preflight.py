"""Preflight checks of `ds validate`: what would make every task fail, found before any run.

A command that is not installed, an input that is not in storage, a job value that makes a
name too long for a file system or an argument too long for the OS: each would otherwise
cost a run, every retry of every task, and a dead-letter queue to read. Each finding is one
`InputError` naming the file, the field and the fix.

Kept fast: the plans are those `check_job` made anyway; storage is asked one listing per
bucket (of the common prefix of the keys wanted), or one ``exists`` per key when there are
few; a job of more than `ALL_TASKS` tasks has a sample of `SAMPLE` of its tasks' inputs
checked, and a note says so.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from distributed_something.backends import backend_kind
from distributed_something.errors import InputError
from distributed_something.interfaces.storage import Storage
from distributed_something.jobs.model import JobFile, Task
from distributed_something.jobs.prefixes import element_position, in_records_area, list_key_of
from distributed_something.keys import MAX_NAME_BYTES
from distributed_something.project import Project
from distributed_something.recipes.base import (
    PLACEHOLDER_WORKDIR,
    Input,
    TaskPlan,
    missing_tool,
    program_problem,
)
from distributed_something.recipes.cellprofiler import CellProfilerJob, job_of, parse_metadata
from distributed_something.recipes.loaddata import LoadDataTable, group_matcher, read_load_data
from distributed_something.recipes.registry import recipe_for

#: Jobs up to this many tasks have every task's inputs checked …
ALL_TASKS = 1000
#: … larger ones a sample of this many tasks, spread over the job.
SAMPLE = 200
#: Up to this many distinct keys in a bucket are checked one by one; more, by one listing.
EXISTS_ONE_BY_ONE = 20
#: The longest single argument Linux passes to a program (MAX_ARG_STRLEN), with its NUL.
MAX_ARG_BYTES = 128 * 1024
#: Findings shown; more are counted in a last line.
MAX_FINDINGS = 20


def arg_max() -> int:
    """The OS's limit on a program's arguments and environment together, in bytes."""
    try:
        value = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError, AttributeError):  # not POSIX: the smallest POSIX allows
        value = -1
    return value if value > 0 else 4096


@dataclass
class Preflight:
    """What the checks found (problems, as `InputError`s) and noted."""

    findings: list[InputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class PreflightFailed(InputError):
    """One or more preflight findings (exit 2). Its fields are the first finding's; its
    text is every finding, one line each (at most `MAX_FINDINGS`, then how many more)."""

    def __init__(self, findings: Sequence[InputError]) -> None:
        first = findings[0]
        super().__init__(first.source, first.field, first.problem, first.fix)
        lines = [str(f) for f in findings[:MAX_FINDINGS]]
        if len(findings) > MAX_FINDINGS:
            lines.append(f"… and {len(findings) - MAX_FINDINGS} more problem(s) like these")
        self.findings = list(findings)
        self.args = ("\nerror: ".join(lines),)

    def __str__(self) -> str:
        return str(self.args[0])


def preflight(
    project: Project,
    job: JobFile,
    job_path: Path,
    plans: Sequence[TaskPlan],
    *,
    bucket: Callable[[str], Storage] | None,
    where: Callable[[str, str], str] | None = None,
) -> Preflight:
    """Check the plans of ``job``'s tasks (``plans[i]`` is ``job.tasks[i]``'s).

    - the program, on the local backend: for the ``command`` recipe ``recipe.argv[0]`` as
      the first task renders it is on PATH (``shutil.which``), or is an executable file
      when it is a path; another recipe's tool (CellProfiler, ImageJ, the converter's
      packages) is installed, as the recipe says (`recipes.base.NeedsTools`);
    - sizes: every ``/``-separated name of an output prefix or input key is at most 255
      bytes (a file name's limit); every argument at most 128 KiB and all arguments with the
      environment within the OS's ``ARG_MAX``;
    - inputs (when ``bucket`` opens the run's buckets; None skips it with a note): every
      input of every task exists, or of a sample of `SAMPLE` tasks when there are more than
      `ALL_TASKS` (a note says so). This covers the family recipes' own files (a DCP
      pipeline and data file, a Fiji script in the workspace bucket). ``where(bucket, key)``
      says where a missing object is expected, for the fix;
    - a DCP job's groups against its LoadData CSV (`check_load_data_groups`), also when there
      are no plans (a family config.py on AWS names no recipe: its image plans the tasks).

    The same checks as `PlanChecks` given the plans one by one.
    """
    checks = PlanChecks(project, job, job_path, bucket=bucket, where=where)
    for index, plan in enumerate(plans):
        checks.add(index, plan)
    return checks.finish()


class PlanChecks:
    """`preflight` over plans given one at a time as they are made (`add`), keeping only what
    the checks need (the first plan, the sampled tasks' plans, one finding per kind of size
    problem), not every plan: a million plans take gigabytes. `finish` gives the result."""

    def __init__(
        self,
        project: Project,
        job: JobFile,
        job_path: Path,
        *,
        bucket: Callable[[str], Storage] | None,
        where: Callable[[str, str], str] | None = None,
        load_data: bool = True,
    ) -> None:
        self.project = project
        self.job = job
        self.job_path = job_path
        self.bucket = bucket
        self.where = where
        #: whether a DCP job's groups are checked against its LoadData CSV
        #: (`check_load_data_groups`: it reads the whole CSV)
        self.load_data = load_data
        #: whether any plan has inputs
        self.any_inputs = False
        self._first: TaskPlan | None = None
        self._count = 0
        total = len(job.tasks)
        self._chosen: set[int] | None = None
        if total > ALL_TASKS:
            # Evenly spread, first and last included: one bad region of the job is likely seen.
            step = (total - 1) / (SAMPLE - 1)
            self._chosen = {round(i * step) for i in range(SAMPLE)}
        self._kept: dict[int, TaskPlan] = {}
        self._sizes = _SizeChecks(job, job_path, self.group_field)

    def group_field(self, index: int) -> str:
        """``groups[i]`` of task ``index`` (its position among the file's elements)."""
        return f"{list_key_of(self.job)}[{element_position(self.job, index)}]"

    def add(self, index: int, plan: TaskPlan) -> None:
        """Check task ``index``'s plan (indexes of ``job.tasks``, each once)."""
        if self._first is None:
            self._first = plan
        self._count += 1
        if plan.inputs:
            self.any_inputs = True
            if self._chosen is None or index in self._chosen:
                self._kept[index] = plan
        self._sizes.add(index, plan)

    def finish(self) -> Preflight:
        """The findings and notes of every check, in `preflight`'s order."""
        result = Preflight()
        if self._first is not None:
            _check_program(self.project, self._first, result)
            _check_project_files(self.project, result)
            result.findings += self._sizes.findings
            if self.bucket is not None:
                if self._chosen is not None:
                    result.notes.append(
                        f"{self.job_path}: the inputs of {len(self._chosen)} of the "
                        f"{self._count} tasks (spread over the job) were checked in storage, "
                        "not all of them"
                    )
                _check_inputs(self, self.bucket, result)
        if self.load_data:
            check_load_data_groups(
                self.project,
                self.job,
                self.job_path,
                self.group_field,
                bucket=self.bucket,
                result=result,
            )
        return result


def _check_inputs(checks: PlanChecks, bucket: Callable[[str], Storage], result: Preflight) -> None:
    """The inputs of the kept (sampled) plans exist in storage."""
    project, job, job_path, where = checks.project, checks.job, checks.job_path, checks.where
    wanted: dict[tuple[str, str], list[tuple[int, int, Input]]] = {}
    config = project.config
    for index in sorted(checks._kept):
        for number, item in enumerate(checks._kept[index].inputs):
            if _long_name(item.key) is not None:
                continue  # already a finding; no file system could even look it up
            name = item.bucket or config.storage.source_bucket
            wanted.setdefault((name, item.key), []).append((index, number, item))
    by_bucket: dict[str, list[str]] = {}
    for name, key in wanted:
        by_bucket.setdefault(name, []).append(key)
    for name, keys in by_bucket.items():
        for key in sorted(_missing(bucket(name), keys)):
            index, number, item = wanted[(name, key)][0]
            task = job.tasks[index]
            place = where(name, key) if where is not None else f"bucket {name or 'main'!r}"
            source, what, shared = _input_field(project, job_path, task, item, number)
            if shared:  # named once for every task: the file and its field say it all
                field, problem = what, f"names {key!r}, which is not in storage ({place})"
            else:
                field = checks.group_field(index)
                problem = (
                    f"the input {key!r} of the group {task.describe()} (task {task.id}, "
                    f"{what}) is not in storage ({place})"
                )
            result.findings.append(
                InputError(
                    source,
                    field,
                    problem,
                    "put the file there (upload it, or copy it into that folder), or correct "
                    "the value or template that names it",
                )
            )


def _check_program(project: Project, plan: TaskPlan, result: Preflight) -> None:
    """What the tasks start, where the workers run on this machine (the local backend:
    `BackendKind.runs_here`): ``recipe.argv[0]`` of the command recipe as the first task
    renders it; another recipe's tool as the recipe says (`recipes.base.NeedsTools`)."""
    config = project.config
    if not backend_kind(config.backend).runs_here:
        return
    path = config.env.get("PATH") or os.environ.get("PATH")
    if config.recipe.name != "command":
        recipe = recipe_for(config, source=str(project.config_path))
        missing = missing_tool(recipe, config, path) if recipe is not None else None
        if missing is not None:
            result.findings.append(InputError(str(project.config_path), "recipe", *missing))
        return
    if not plan.argv:
        return
    program = plan.argv[0]
    if program.startswith(str(PLACEHOLDER_WORKDIR.root)):
        return  # inside the task's folder: staged with the inputs, not there yet
    if "/" in program and not Path(program).is_absolute():
        return  # relative to the task's working folder: nothing to check here
    problem = program_problem(program, path)
    if problem is None:
        return
    if problem == "is not executable":
        fix = f"make it executable (chmod +x {program})"
    elif "#!" in problem:
        fix = (
            "add a #! first line naming its interpreter (e.g. #!/bin/sh), or run it with its "
            'interpreter: recipe.argv = ["sh", "{the script}", …]'
        )
    else:
        fix = (
            "install it, put its folder on PATH, or give its absolute path in "
            'recipe.argv[0] (e.g. "{python}" for the Python running ds)'
        )
    result.findings.append(
        InputError(
            str(project.config_path),
            "recipe.argv[0]",
            f"the program {program!r} {problem} (first task)",
            fix,
        )
    )


def _check_project_files(project: Project, result: Preflight) -> None:
    """A literal relative path in the command recipe's ``argv`` that names a file of the
    project folder: tasks run in their own scratch folder, empty when each task starts (on
    every backend), so the command would not find it there and every task would fail."""
    config = project.config
    if config.recipe.name != "command":
        return
    folder = project.config_path.parent
    for number, template in enumerate(config.recipe.argv):
        if "{" in template or not template or Path(template).is_absolute():
            continue  # rendered per task, or found wherever the task runs
        if number == 0 and "/" not in template:
            continue  # a program looked up on PATH (`_check_program`)
        try:
            named = (folder / template).is_file()
        except (OSError, ValueError):  # inline code (`python -c …`): too long a name, a NUL
            continue
        if not named:
            continue
        name = template.removeprefix("./")
        result.findings.append(
            InputError(
                str(project.config_path),
                f"recipe.argv[{number}]",
                f"{template!r} is a file of the project folder {folder}, but each task runs "
                "in its own scratch folder ({work_dir}), where it is not: every task would "
                "fail to find it",
                f'list it in recipe.inputs (["{name}"], in storage) and write '
                f'"{{input_dir}}/{name}" here, which works on every backend; or give its '
                f"absolute path ({(folder / template).resolve()}) where the workers share "
                "this folder (local, Slurm)",
            )
        )


_NAME_FIX = (
    f"shorten the job values that make it (at most {MAX_NAME_BYTES} bytes per name "
    "between '/'), or the template"
)
_LONG_FIX = "pass long values in a file (an input) instead of on the command line"
#: UTF-8 takes at most this many bytes a character: text this many times shorter than a
#: limit is within it, without encoding it.
_MAX_UTF8 = 4


class _SizeChecks:
    """Names of at most 255 bytes; arguments within the OS's limits (one finding per kind:
    the first task of each kind, the others share its cause)."""

    def __init__(self, job: JobFile, job_path: Path, group_field: Callable[[int], str]) -> None:
        self.job = job
        self.job_path = job_path
        self.group_field = group_field
        self.limit = arg_max()
        self.environment = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in os.environ.items())
        self.seen: set[str] = set()
        self.findings: list[InputError] = []

    def _add(self, kind: str, index: int, problem: str, fix: str) -> None:
        if kind not in self.seen:
            self.seen.add(kind)
            task = self.job.tasks[index]
            self.findings.append(
                InputError(
                    str(self.job_path),
                    self.group_field(index),
                    f"the group {task.describe()} (task {task.id}): {problem}",
                    fix,
                )
            )

    def add(self, index: int, plan: TaskPlan) -> None:
        """Check one plan."""
        longest = 0
        for item in plan.inputs:  # a loop: this runs a million times at validate
            if len(item.key) > longest:
                longest = len(item.key)
            if item.key.startswith("_") and in_records_area(item.key):
                self._add(
                    "records-input",
                    index,
                    f"the input {_shown(item.key)!r} is in the records area _ds/, which no "
                    "task reads (it holds every run's records and logs)",
                    "name an input outside _ds/ (check the job values and the recipe's input "
                    "templates)",
                )
        longest *= _MAX_UTF8
        if _MAX_UTF8 * len(plan.output_prefix) > MAX_NAME_BYTES or longest > MAX_NAME_BYTES:
            named = [("output prefix", plan.output_prefix)]
            named += [("input", i.key) for i in plan.inputs]
            for what, key in named:
                long = _long_name(key)
                if long is not None:
                    self._add(
                        f"name:{what}",
                        index,
                        f"the {what} {_shown(key)!r} has a name of {long} bytes; a file system "
                        f"takes at most {MAX_NAME_BYTES}",
                        _NAME_FIX,
                    )
        argv = plan.argv
        chars = sum(map(len, argv))
        env = (
            sum(len(k.encode()) + len(v.encode()) + 2 for k, v in plan.env.items())
            if plan.env
            else 0
        )
        # Bytes at most (a character is at most 4 bytes, each argument has its NUL and a
        # pointer): within every limit, the exact count is not needed. No argument is longer
        # than all of them.
        bound = _MAX_UTF8 * chars + 9 * len(argv) + 8 + self.environment + env
        if bound <= self.limit and _MAX_UTF8 * chars < MAX_ARG_BYTES:
            return
        sizes = [len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv]
        big = next((i for i, n in enumerate(sizes) if n > MAX_ARG_BYTES), None)
        if big is not None:
            self._add(
                "arg",
                index,
                f"recipe.argv[{big}] renders to {sizes[big] - 1} bytes; one argument may have "
                f"at most {MAX_ARG_BYTES - 1}",
                _LONG_FIX,
            )
        # Strings plus one pointer each, as the kernel counts them against ARG_MAX.
        total = sum(sizes) + 8 * (len(sizes) + 1) + self.environment + env
        if total > self.limit:
            self._add(
                "argv",
                index,
                f"its command line and environment take {total} bytes; the OS allows "
                f"{self.limit} (ARG_MAX)",
                _LONG_FIX,
            )


def _long_name(key: str) -> int | None:
    if len(key) * _MAX_UTF8 <= MAX_NAME_BYTES or (len(key) <= MAX_NAME_BYTES and key.isascii()):
        return None  # no name can be longer than the key
    sizes = [len(part.encode("utf-8", "surrogateescape")) for part in key.split("/")]
    longest = max(sizes, default=0)
    return longest if longest > MAX_NAME_BYTES else None


def _shown(key: str) -> str:
    return key if len(key) <= 80 else key[:40] + "…" + key[-30:]


def _input_field(
    project: Project, job_path: Path, task: Task, item: Input, number: int
) -> tuple[str, str, bool]:
    """(file, field, whether the field is shared by every task) that names input ``item``
    (the ``number``-th of the task's plan)."""
    recipe = project.config.recipe.name
    if recipe == "cellprofiler":
        for name in ("pipeline", "data_file"):
            if task.body.get(name) == item.key:
                return str(job_path), name, name not in _group_keys(task)
    if recipe == "fiji" and item.path.startswith("script/"):
        return str(project.config_path), "recipe.script", True
    if recipe in ("command", "fiji") and number < len(project.config.recipe.inputs):
        return str(job_path), f"recipe.inputs[{number}]", False
    return str(job_path), "inputs", False


def _group_keys(task: Task) -> set[str]:
    """The keys a task's group sets itself (a DCP group may carry its own pipeline)."""
    return set(task.group) if isinstance(task.group, dict) else set()


def _missing(storage: Storage, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` ``storage`` lacks: one ``exists`` each when few, else one listing of
    their common prefix (a listing per key would be thousands of round trips)."""
    if len(keys) <= EXISTS_ONE_BY_ONE:
        return {k for k in keys if not storage.exists(k)}
    # Cut at a '/': a prefix ending inside a name ("img/f0") might not be a valid key.
    common = posixpath.commonprefix(list(keys)).rpartition("/")[0]
    common = f"{common}/" if common else ""
    found = {obj.key for obj in storage.list(common)}
    return set(keys) - found


# --- a DCP job's groups against its LoadData CSV ------------------------------------------

_GROUP_FIX = (
    "correct the group's Metadata to name a row of the data file (its Metadata_ columns and "
    "values; numbers compare as numbers, so 2 matches 002), or add the group's rows to the "
    "data file"
)


def check_load_data_groups(
    project: Project,
    job: JobFile,
    job_path: Path,
    group_field: Callable[[int], str],
    *,
    bucket: Callable[[str], Storage] | None,
    result: Preflight,
) -> None:
    """Each group of a DCP job whose ``data_file`` is a LoadData CSV selects at least one of
    its rows, compared as CellProfiler's ``-g`` compares (see `select_group_rows`): a group
    that selects none would make CellProfiler run nothing, on every attempt.

    The CSV is read from local storage (the workspace bucket, as ``bucket`` opens it, else
    the local backend's folder of that bucket), or else from the project folder (at the data
    file's key, or its name in the folder or in ``files/``). One finding per group matching
    no row, and per group key that is not a column of the CSV (once per file and key); an
    unreadable CSV is one finding. When the CSV cannot be read here (on AWS it needs
    credentials, which `ds validate` does not use) a note says the groups were not checked.
    Data files of other kinds (file lists, batch files) are not checked.
    """
    config = project.config
    if job.format != "dcp" and config.recipe.name != "cellprofiler":
        return
    by_file = _dcp_tasks_by_data_file(job)
    workspace = config.storage.workspace_bucket or config.storage.source_bucket
    storage = bucket(workspace) if bucket is not None else None
    for key, tasks_of in by_file.items():
        found = _read_data_file(project, key, workspace, storage)
        if found is None:
            if storage is None:  # a missing file in local storage is already a finding
                result.notes.append(_not_checked_note(project, job_path, key))
            continue
        tasks = tasks_of()
        text, origin = found
        try:
            table = read_load_data(text, source=origin)
        except InputError as error:
            result.findings.append(error)
            continue
        _check_groups(table, key, origin, job, job_path, tasks, group_field, result)


def _dcp_tasks_by_data_file(
    job: JobFile,
) -> dict[str, Callable[[], list[tuple[int, CellProfilerJob]]]]:
    """Each LoadData CSV named by the runnable DCP tasks of ``job`` → a function giving those
    tasks (index, DCP values), called only once the CSV is read: a compact job's tasks share
    every key but their Metadata, so the file is known from its shared keys alone."""
    tasks = job.tasks
    if tasks.group_key == "Metadata":
        try:
            common = job_of(Task(body={**tasks.shared, "Metadata": "Metadata_DS=1"}, id="-"))
        except InputError:
            return {}  # no task is runnable: check_job (or the image's worker) says so
        if common.kind != "csv" or not common.data_file:
            return {}

        def each() -> list[tuple[int, CellProfilerJob]]:
            out: list[tuple[int, CellProfilerJob]] = []
            for index, metadata in enumerate(tasks.groups()):
                try:
                    pairs = tuple(parse_metadata(metadata))
                except InputError:
                    continue  # not a runnable DCP task
                out.append((index, replace(common, metadata=pairs)))
            return out

        return {common.data_file: each}
    by_file: dict[str, list[tuple[int, CellProfilerJob]]] = {}
    for index, task in enumerate(tasks):
        try:
            values = job_of(task)
        except InputError:
            continue  # not a runnable DCP task: check_job (or the image's worker) says so
        if values.kind == "csv" and values.data_file:
            by_file.setdefault(values.data_file, []).append((index, values))
    return {key: partial(list, found) for key, found in by_file.items()}


def _check_groups(
    table: LoadDataTable,
    key: str,
    origin: str,
    job: JobFile,
    job_path: Path,
    tasks: Sequence[tuple[int, CellProfilerJob]],
    group_field: Callable[[int], str],
    result: Preflight,
) -> None:
    """The findings for ``tasks`` (index, DCP values) whose groups match no row of ``table``."""
    matchers: dict[tuple[str, ...], Callable[[Sequence[tuple[str, str]]], bool]] = {}
    missing_columns: set[str] = set()
    for index, values in tasks:
        task = job.tasks[index]
        keys = tuple(name for name, _ in values.metadata)
        absent = [name for name in keys if name not in table.columns]
        if absent:
            for name in absent:
                if name in missing_columns:
                    continue
                missing_columns.add(name)
                known = ", ".join(c for c in table.columns if c.startswith("Metadata_"))
                result.findings.append(
                    InputError(
                        str(job_path),
                        group_field(index),
                        f"the group {task.describe()} (task {task.id}) names {name}, which is "
                        f"not a column of the data_file {key!r} (read from {origin}; its Metadata_ "
                        f"columns: {known or 'none'})",
                        "use the data file's Metadata_ column names in the groups' Metadata",
                    )
                )
            continue
        if keys not in matchers:
            matchers[keys] = group_matcher(table, keys)
        if not matchers[keys](values.metadata):
            result.findings.append(
                InputError(
                    str(job_path),
                    group_field(index),
                    f"the group {task.describe()} (task {task.id}) matches no row of the "
                    f"data_file {key!r} (read from {origin}), so CellProfiler would have nothing "
                    "to run",
                    _GROUP_FIX,
                )
            )


def _read_data_file(
    project: Project, key: str, bucket_name: str, storage: Storage | None
) -> tuple[str, str] | None:
    """(the data file's text, the file it was read from) from local storage (``storage``, else the
    local backend's bucket folder, which validate leaves unopened while another input folder
    is missing), else from the project folder; None when it is in none of them."""
    local = _local_bucket_file(project, bucket_name, key)
    if storage is not None and storage.exists(key):
        text = storage.get_bytes(key).decode("utf-8-sig", errors="surrogateescape")
        where = local or f"{key} in bucket {bucket_name or 'main'!r}"
        return text, str(where)
    name = posixpath.basename(key)
    base = project.base_dir
    for path in (local, base / key, base / name, base / "files" / name):
        if path is not None and path.is_file():
            text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
            return text, str(path)
    return None


def _local_bucket_file(project: Project, bucket_name: str, key: str) -> Path | None:
    """Where the backend's folder keeps ``key`` of bucket ``bucket_name`` (None when its
    storage is not a folder validation reads: `BackendKind.bucket_folder`)."""
    bucket_folder = backend_kind(project.config.backend).bucket_folder
    if bucket_folder is None:
        return None
    return bucket_folder(project, bucket_name) / key


def _not_checked_note(project: Project, job_path: Path, key: str) -> str:
    config = project.config
    bucket = config.storage.workspace_bucket or config.storage.source_bucket
    why = backend_kind(config.backend).unread_input_note(project, bucket, key)
    return (
        f"{job_path}: the groups' Metadata were not checked against the data_file {key!r}: "
        f"{why} (put a copy at {project.base_dir / key} to have it checked)"
    )
