"""The `cellprofiler` recipe: Distributed-CellProfiler (DCP) job files, inputs downloaded.

A DCP task is the message DCP's ``run.py submitJob`` sends: the job file's shared keys
(``pipeline``, ``data_file``, ``input``, ``output``, ``output_structure``) plus the group's
``Metadata``, either ``"Metadata_Plate=P1,Metadata_Well=A01"`` or the dict printed by
``cellprofiler --print-groups``. What DCP's worker read through an s3fs mount of
``/home/ubuntu/bucket`` is downloaded instead, in two rounds:

1. `CellProfilerRecipe.plan` (pure) declares the pipeline and the data file, from the
   workspace bucket, mirrored under ``{input_dir}/workspace/<key>``;
2. `CellProfilerRecipe.more_inputs`, called by the worker once those are staged, reads the
   data file and declares the images of the task's group, from the source bucket, mirrored
   under ``{input_dir}/images/<key>``.

The command is then our in-task helper (`distributed_something.recipes.cellprofiler_task`),
which rewrites the data file's paths to the downloaded images, prepares plugins when asked,
and replaces itself with ``cellprofiler -c -r -p … -o … -d <done file> --data-file=… -g …``.
The run succeeded only when CellProfiler exited 0 and its done file says ``Complete``; only
then does the worker upload ``{output_dir}`` under ``<output>/<DCP metadata id>``.

Every function here except `find_executable` and `CellProfilerRecipe.more_inputs` is pure.
"""

from __future__ import annotations

import math
import posixpath
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from distributed_something.backends import backend_kind
from distributed_something.config.model import Config, ToolConfig
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.keys import check_key, check_prefix, join_key
from distributed_something.recipes.base import (
    Input,
    TaskPlan,
    ToolProblem,
    Workdir,
    plainly_safe_key,
    program_problem,
    read_own_file,
)
from distributed_something.recipes.loaddata import (
    file_list_images,
    group_argument,
    group_images,
    read_load_data,
)
from distributed_something.worker.causes import signal_name

__all__ = [
    "DEFAULT_PLUGINS_REPO",
    "DONE_FILE",
    "PLUGINS_REPO_ENV",
    "TASK_ERROR_FILE",
    "TASK_MODULE",
    "CellProfilerJob",
    "CellProfilerRecipe",
    "DataKind",
    "cellprofiler_argv",
    "find_executable",
    "job_of",
    "judge_done_file",
    "metadata_id",
    "output_prefix",
    "parse_metadata",
]

#: CellProfiler's done file (``-d``), in the workdir root so it is never uploaded.
DONE_FILE = "cp.is.done"

#: Written by the in-task helper when it fails before CellProfiler starts.
TASK_ERROR_FILE = "cellprofiler_task.error"

#: The in-task helper the plan's argv runs.
TASK_MODULE = "distributed_something.recipes.cellprofiler_task"

#: The CellProfiler-plugins checkout used when ``tool.use_plugins`` is on: the value of this
#: variable in the config's ``env`` table, else where DCP's image keeps it.
PLUGINS_REPO_ENV = "CELLPROFILER_PLUGINS_REPO"
DEFAULT_PLUGINS_REPO = "/home/ubuntu/CellProfiler-plugins"

#: The folders under ``input_dir`` that mirror the workspace and source buckets.
WORKSPACE_DIR = "workspace"
IMAGES_DIR = "images"
#: Where the helper writes the rewritten data file, under the workdir root.
LOCAL_DATA_DIR = "data_file"

DataKind = Literal["csv", "txt", "h5"]

_JOB = "job file"
_CONFIG = "config"
_ENGINES = {"": True, "imageio": True, "bioformats": False}
_METADATA_FIX = (
    'write "Metadata": "Metadata_Plate=P1,Metadata_Well=A01" (comma-separated key=value pairs) '
    'or "Metadata": {"Metadata_Plate": "P1", "Metadata_Well": "A01"}'
)


# --- the task ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CellProfilerJob:
    """One DCP task's values, checked.

    ``metadata`` keeps the group's pairs in their order (values as text); ``kind`` says how
    ``data_file`` is passed to CellProfiler: ``csv`` (LoadData, ``--data-file``), ``txt``
    (a file list, ``--file-list``) or ``h5`` (a batch file, which is also the pipeline).
    """

    pipeline: str
    data_file: str
    input: str
    output: str
    output_structure: str
    metadata: tuple[tuple[str, str], ...]
    kind: DataKind

    @property
    def metadata_id(self) -> str:
        """DCP's name for the task: its output folder and log name (see `metadata_id`)."""
        return metadata_id(self.metadata, self.output_structure)

    @property
    def group(self) -> str:
        """The ``-g`` value: ``"k=v,k=v"``."""
        return group_argument(self.metadata)


#: A Metadata string `parse_metadata` certainly accepts as it is (but for a repeated key):
#: key=value pairs with no space, comma or "=" inside a key or value.
_PLAIN_METADATA = re.compile(r"[^\s,=]+=[^\s,=]+(?:,[^\s,=]+=[^\s,=]+)*")


def parse_metadata(
    value: Any, *, source: str = _JOB, field: str = "Metadata"
) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a DCP ``Metadata``, in order, values as text.

    Accepts ``"k=v,k=v"`` and a dict of strings or numbers (``--print-groups`` form; a JSON
    number becomes its decimal text, e.g. ``1`` → ``"1"``). Raises ``InputError`` for anything
    else: an empty value, a pair without ``=`` or with an empty side, a repeated key, spaces
    around a key or value, and ``,`` or ``=`` inside a dict value (CellProfiler's ``-g`` could
    not carry them).
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(value, str):
        if not value:
            raise InputError(source, field, "is empty", _METADATA_FIX)
        for pair in value.split(","):
            key, sep, text = pair.partition("=")
            if not sep or not key or not text or "=" in text:
                raise InputError(
                    source,
                    field,
                    f"has a bad pair {pair!r} in {value!r}: each comma-separated part must be "
                    "key=value",
                    _METADATA_FIX,
                )
            pairs.append((key, text))
    elif isinstance(value, Mapping) and value:
        for key, raw in value.items():
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise InputError(
                    source,
                    f"{field}.{key}",
                    f"is {raw!r}; metadata values must be strings or numbers",
                    _METADATA_FIX,
                )
            text = raw if isinstance(raw, str) else _number_text(raw)
            if not text or "," in text or "=" in text:
                raise InputError(
                    source,
                    f"{field}.{key}",
                    f"is {text!r}: CellProfiler's -g cannot carry an empty value, ',' or '='",
                    "use another metadata value",
                )
            pairs.append((str(key), text))
    else:
        what = "an empty object" if isinstance(value, Mapping) else f"{value!r}"
        raise InputError(source, field, f"is {what}, not a group of metadata", _METADATA_FIX)
    seen: set[str] = set()
    for key, text in pairs:
        if key != key.strip() or text != text.strip():
            raise InputError(
                source,
                field,
                f"has spaces around {key}={text!r}, which CellProfiler would keep",
                _METADATA_FIX,
            )
        if key in seen:
            raise InputError(source, field, f"names {key} twice", "name each key once")
        seen.add(key)
    return pairs


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value)


def metadata_id(metadata: Sequence[tuple[str, str]], output_structure: str) -> str:
    """DCP's metadata id of a task: the name of its output folder and of its log.

    As DCP's worker computes it: with an empty ``output_structure``, the values joined with
    ``-`` (``Metadata_Plate=P1,Metadata_Well=A01`` → ``P1-A01``); otherwise
    ``output_structure`` with each key, in the group's order, replaced by its value wherever
    it occurs in the text so far (``Metadata_Plate/Metadata_Well`` → ``P1/A01``); a key that
    does not occur is left out. (DCP refuses a ``--print-groups`` dict without an
    ``output_structure``; here it gets the joined values too.)
    """
    if not output_structure:
        return "-".join(value for _, value in metadata)
    result = output_structure
    for key, value in metadata:
        if key in result:
            result = result.replace(key, value)
    return result


def output_prefix(job: CellProfilerJob) -> str:
    """Where the task's outputs go: ``<output>/<metadata id>``, as DCP's ``remoteOut``.

    Raises ``InputError`` when ``output_structure`` names none of the group's keys (every
    task would write into the same folder) or when the result is not a safe storage prefix.
    """
    where = f"for the group {group_argument(job.metadata)}"
    if job.output_structure and not any(key in job.output_structure for key, _ in job.metadata):
        keys = ", ".join(key for key, _ in job.metadata)
        raise InputError(
            _JOB,
            "output_structure",
            f"{job.output_structure!r} names none of the group's keys ({keys}) {where}, so "
            "every task would write into the same folder",
            f'name the keys that tell tasks apart, e.g. "{"-".join(k for k, _ in job.metadata)}"',
        )
    name = job.metadata_id
    try:
        prefix = join_key(job.output, name, source=_JOB)
        check_prefix(prefix, source=_JOB)
    except InputError as error:
        raise InputError(
            _JOB,
            "output",
            f"{where} the output folder {job.output!r} + {name!r} is not a safe storage "
            f"prefix: {error.problem}",
            "use relative '/'-separated names (no leading '/', no '..') in output and in the "
            "metadata values",
        ) from None
    return prefix


def job_of(task: Task) -> CellProfilerJob:
    """The DCP values of ``task``; raises ``InputError`` naming what is missing or wrong.

    ``pipeline``, ``input`` and ``output`` are required; ``data_file`` may be empty only when
    the pipeline is a batch file (``.h5``). Keys must be safe storage keys.
    """
    body = task.body
    where = f"the group {task.describe()} (task {task.id})"
    values: dict[str, str] = {}
    for name in ("pipeline", "data_file", "input", "output", "output_structure"):
        raw = body.get(name, "")
        if not isinstance(raw, str):
            raise InputError(
                _JOB, name, f"is {raw!r} for {where}, not a string", f'write "{name}": "<text>"'
            )
        values[name] = raw.strip()
    for name in ("pipeline", "input", "output"):
        # An empty input is the bucket root (DCP: -i /home/ubuntu/bucket/); a missing one,
        # like the others, says the job file is no DCP job file.
        if not values[name] and (name != "input" or "input" not in body):
            raise InputError(
                _JOB,
                name,
                f"is missing or empty for {where}; the cellprofiler recipe runs "
                "Distributed-CellProfiler job files",
                f'add "{name}": "<a path relative to the bucket root>" to the job file',
            )
    if "Metadata" not in body:
        raise InputError(
            _JOB,
            "groups",
            f"{where} has no Metadata",
            f"give each group a Metadata: {_METADATA_FIX}",
        )
    try:
        metadata = parse_metadata(body["Metadata"])
    except InputError as error:
        raise InputError(_JOB, error.field, f"{error.problem} ({where})", error.fix) from None
    pipeline, data_file = values["pipeline"], values["data_file"]
    for name in ("pipeline", "data_file"):
        if values[name]:
            try:
                check_key(values[name], source=_JOB)
            except InputError as error:
                raise InputError(_JOB, name, error.problem, error.fix) from None
    try:
        check_prefix(values["input"], source=_JOB)
    except InputError as error:
        raise InputError(_JOB, "input", error.problem, error.fix) from None
    kind = _kind_of(data_file or (pipeline if pipeline.lower().endswith(".h5") else ""))
    return CellProfilerJob(
        pipeline=pipeline,
        data_file=data_file,
        input=values["input"],
        output=values["output"],
        output_structure=values["output_structure"],
        metadata=tuple(metadata),
        kind=kind,
    )


def _kind_of(data_file: str) -> DataKind:
    suffix = posixpath.splitext(data_file)[1].lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".txt":
        return "txt"
    if suffix == ".h5":
        return "h5"
    problem = f"is {data_file!r}, which is not" if data_file else "is empty: it must be"
    raise InputError(
        _JOB,
        "data_file",
        f"{problem} a LoadData .csv, a file list .txt or a batch file .h5",
        "set data_file to the key of a LoadData CSV, a file list or a batch file (for a "
        "batch file, pipeline and data_file are both the .h5)",
    )


# --- the command ---------------------------------------------------------------------------


def find_executable(configured: str = "") -> str:
    """The CellProfiler to run: ``configured`` (``recipe.executable``) when set, else
    ``cellprofiler`` on PATH, else the one next to this Python (where
    ``scripts/install-cellprofiler.sh`` links it), else plain ``cellprofiler`` (the helper
    then reports that it is missing)."""
    if configured:
        return configured
    found = shutil.which("cellprofiler")
    if found:
        return found
    beside = Path(sys.executable).parent / "cellprofiler"
    if beside.exists():
        return str(beside)
    return "cellprofiler"


@dataclass(frozen=True)
class TaskPaths:
    """Where one task's files are in its workdir."""

    pipeline: Path
    data_file: Path | None  # as downloaded
    local_data_file: Path | None  # rewritten for the local images (what CellProfiler reads)
    image_dir: Path
    default_input: Path
    output: Path
    done_file: Path
    error_file: Path

    @classmethod
    def of(cls, job: CellProfilerJob, workdir: Workdir) -> TaskPaths:
        """The paths of ``job`` in ``workdir``."""
        workspace = workdir.input_dir / WORKSPACE_DIR
        data_file = workspace / job.data_file if job.data_file else None
        if job.kind == "h5":
            local = None
        else:
            assert data_file is not None
            local = workdir.root / LOCAL_DATA_DIR / data_file.name
        return cls(
            pipeline=workspace / job.pipeline,
            data_file=data_file,
            local_data_file=local,
            image_dir=workdir.input_dir / IMAGES_DIR,
            default_input=workspace / job.input.rstrip("/") if job.input.strip("/") else workspace,
            output=workdir.output_dir,
            done_file=workdir.root / DONE_FILE,
            error_file=workdir.root / TASK_ERROR_FILE,
        )


def engine_of(config: Config) -> str:
    """The image reading engine: ``recipe.engine``, else ``"bioformats"`` on AWS (every
    reader, as DCP's image runs CellProfiler there: a CellProfiler 4.2 image has no ``-e``
    option at all, and Bio-Formats' Java parts download there) and ``"imageio"`` elsewhere
    (TIFF/PNG without Bio-Formats, whose downloads fail on a machine or Slurm node offline)."""
    return config.recipe.engine or (
        "bioformats" if backend_kind(config.backend).in_image else "imageio"
    )


def _engine_flags(engine: str) -> list[str]:
    if engine not in _ENGINES:
        raise InputError(
            _CONFIG,
            "recipe.engine",
            f"{engine!r} is not an image reading engine of the cellprofiler recipe",
            'set it to "imageio" (reads TIFF/PNG without Java downloads; the default off '
            'AWS) or "bioformats" (every reader, Bio-Formats included; the default on AWS)',
        )
    return ["-e", "imageio_reader"] if _ENGINES[engine] else []


def plugins_directory(config: Config) -> str:
    """The ``--plugins-directory`` passed when plugins are used: ``active_plugins`` of the
    CellProfiler-plugins checkout (the helper falls back to the checkout itself when it
    has no ``active_plugins``, as DCP does)."""
    repo = config.env.get(PLUGINS_REPO_ENV) or DEFAULT_PLUGINS_REPO
    return posixpath.join(repo.rstrip("/"), "active_plugins")


def cellprofiler_argv(
    executable: str,
    job: CellProfilerJob,
    paths: TaskPaths,
    tool: ToolConfig,
    *,
    engine: str = "",
    plugins_dir: str = "",
) -> list[str]:
    """DCP's CellProfiler command, one list element per argument.

    ``<exe> -c -r -p PIPELINE -i DEFAULT_INPUT -o OUTPUT -d DONE_FILE`` then
    ``--data-file=FILE`` (LoadData CSV) or ``--file-list=FILE`` (file list) or nothing (batch
    file), ``-g GROUP``, ``--plugins-directory=DIR`` when ``tool.use_plugins``,
    ``--always-continue`` when ``tool.always_continue``, and ``-e imageio_reader`` unless
    ``engine`` is ``"bioformats"``. Raises ``InputError`` for an unknown engine.
    """
    argv = [
        executable,
        "-c",
        "-r",
        "-p",
        str(paths.pipeline),
        "-i",
        str(paths.default_input),
        "-o",
        str(paths.output),
        "-d",
        str(paths.done_file),
    ]
    if job.kind == "csv":
        argv.append(f"--data-file={paths.local_data_file}")
    elif job.kind == "txt":
        argv.append(f"--file-list={paths.local_data_file}")
    argv += ["-g", job.group]
    if tool.use_plugins:
        argv.append(f"--plugins-directory={plugins_dir}")
    if tool.always_continue:
        argv.append("--always-continue")
    # Last, because -e takes any number of values.
    argv += _engine_flags(engine)
    return argv


def _helper_argv(config: Config, job: CellProfilerJob, paths: TaskPaths) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        TASK_MODULE,
        "--kind",
        job.kind,
        "--image-dir",
        str(paths.image_dir),
        "--group",
        job.group,
        "--metadata-id",
        job.metadata_id,
        "--error-file",
        str(paths.error_file),
        "--mkdir",
        str(paths.default_input),
        "--mkdir",
        str(paths.output),
    ]
    if paths.data_file is not None and paths.local_data_file is not None:
        argv += [
            "--data-file",
            str(paths.data_file),
            "--local-data-file",
            str(paths.local_data_file),
        ]
        if job.kind == "csv" and job.input.strip("/"):
            # LoadData resolves a relative PathName_ against the default input folder.
            argv += ["--relative-to", job.input.strip("/")]
    tool = config.tool
    if tool.use_plugins:
        argv += ["--plugins-repo", posixpath.dirname(plugins_directory(config))]
        if tool.update_plugins:
            argv.append("--update-plugins")
        if tool.plugins_commit and tool.plugins_commit.lower() != "false":
            argv += ["--plugins-commit", tool.plugins_commit]
        if tool.install_requirements:
            argv.append("--install-requirements")
            if tool.requirements_file:
                argv += ["--requirements-file", tool.requirements_file]
            if tool.requirements:
                argv += ["--requirements", tool.requirements]
    return argv


# --- the run's outcome ---------------------------------------------------------------------


def judge_done_file(
    done_text: str | None, exit_code: int, task_error: str | None = None
) -> str | None:
    """None when the run succeeded, else why it failed.

    Success needs both exit code 0 and a done file whose first line is ``Complete`` (DCP's
    test). ``done_text`` is the done file's text (None: CellProfiler never wrote it, so it
    did not finish); ``task_error`` is the in-task helper's own error, when it stopped
    before CellProfiler ran.
    """
    if task_error:
        return f"cellprofiler task setup failed (exit code {exit_code}): {task_error.strip()}"
    code = f"exit code {exit_code}"
    if exit_code < 0:
        code += f", killed by signal {-exit_code} ({signal_name(-exit_code)})"
    if done_text is None:
        return (
            f"CellProfiler did not finish ({code}): it wrote no done file ({DONE_FILE}); see "
            "the task log"
        )
    first = done_text.splitlines()[0].strip() if done_text.strip() else ""
    if first == "Complete":
        if exit_code == 0:
            return None
        return f"CellProfiler wrote Complete in its done file but exited with {code}"
    if first == "Failure":
        return (
            f"CellProfiler reported Failure in its done file ({code}); the task log names the "
            "module and image set that failed"
        )
    return f"CellProfiler's done file says {first!r}, not Complete ({code})"


# --- the recipe ----------------------------------------------------------------------------


class CellProfilerRecipe:
    """Runs DCP tasks with CellProfiler (see the module docstring and `Recipe`).

    - ``plan``: inputs = the pipeline and data file from ``storage.workspace_bucket``;
      argv = the in-task helper then `cellprofiler_argv`; output prefix = `output_prefix`
      in ``storage.destination_bucket``. Pure; ``InputError`` for a task or config it
      cannot run.
    - ``more_inputs``: after those are staged, the images of the group (LoadData rows
      selected by `select_group_rows`, every file of a file list, none for a batch file)
      from ``storage.source_bucket``, mirrored under ``{input_dir}/images``.
    - ``check_success``: `judge_done_file`.
    """

    name: str = "cellprofiler"
    #: DCP's ``output_structure`` may name only some of the group's keys (``Metadata_Plate``
    #: for groups of plate and well) to collect several groups' outputs in one folder, on
    #: purpose; `ds validate` accepts those equal prefixes (see `output_prefixes_may_repeat`).
    output_prefixes_may_repeat: bool = True

    def missing_tool(self, config: Config, path: str | None) -> ToolProblem | None:
        """CellProfiler, when it cannot be started here (`NeedsTools`)."""
        executable = find_executable(config.recipe.executable)
        problem = program_problem(executable, path)
        if problem is None:
            return None
        return (
            f"CellProfiler ({executable!r}) {problem}: every task would fail",
            "install it: `make examples` does (scripts/install-cellprofiler.sh PYTHON BIN_DIR "
            "links it next to ds's python), or set recipe.executable to its path",
        )

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan:
        """The plan for ``task``; raises ``InputError`` for a bad task or engine."""
        job = job_of(task)
        prefix = output_prefix(job)
        paths = TaskPaths.of(job, workdir)
        cp_argv = cellprofiler_argv(
            find_executable(config.recipe.executable),
            job,
            paths,
            config.tool,
            engine=engine_of(config),
            plugins_dir=plugins_directory(config),
        )
        workspace = config.storage.workspace_bucket
        inputs = [Input(job.pipeline, f"{WORKSPACE_DIR}/{job.pipeline}", workspace)]
        if job.data_file and job.data_file != job.pipeline:
            inputs.append(Input(job.data_file, f"{WORKSPACE_DIR}/{job.data_file}", workspace))
        return TaskPlan(
            argv=[*_helper_argv(config, job, paths), "--", *cp_argv],
            output_prefix=prefix,
            inputs=inputs,
            output_bucket=config.storage.destination_bucket,
        )

    def planner(
        self, config: Config, workdir: Workdir, shared: Mapping[str, Any], group_key: str
    ) -> Callable[[str, Any], TaskPlan | None] | None:
        """``plan`` for the tasks of one DCP job (shared keys ``shared``, each task's
        ``Metadata`` under ``group_key``): ``(task id, Metadata) -> plan``, or None where
        ``plan`` must decide (and raise its `InputError`). In a DCP message only the Metadata
        differs between tasks, so the checks of the shared keys, the executable's lookup and
        the paths are done once; a plan's argv is a frame with the group's ``-g`` value and
        metadata id put in. None (no planner) when the shared keys or the config are not
        plannable: ``plan`` says why for each task.
        """
        if group_key != "Metadata":
            return None
        try:
            job = job_of(Task(body={**shared, "Metadata": "Metadata_DS=1"}, id="-"))
            paths = TaskPaths.of(job, workdir)
            executable = find_executable(config.recipe.executable)
            plugins = plugins_directory(config)
            engine = engine_of(config)

            def argv_of(job: CellProfilerJob) -> list[str]:
                cp_argv = cellprofiler_argv(
                    executable,
                    job,
                    paths,
                    config.tool,
                    engine=engine,
                    plugins_dir=plugins,
                )
                return [*_helper_argv(config, job, paths), "--", *cp_argv]

            frame = argv_of(job)
        except InputError:
            return None
        group_at = [i for i in range(1, len(frame)) if frame[i - 1] in ("--group", "-g")]
        id_at = [i for i in range(1, len(frame)) if frame[i - 1] == "--metadata-id"]

        def fill(group: str, name: str) -> list[str]:
            argv = frame.copy()
            for i in group_at:
                argv[i] = group
            for i in id_at:
                argv[i] = name
            return argv

        # The frame must give what argv_of gives for any metadata: checked on two made up.
        for pairs in ((("Metadata_DS", "a"),), (("Metadata_X", "b"), ("Metadata_Y", "c"))):
            probe = replace(job, metadata=pairs)
            if fill(probe.group, probe.metadata_id) != argv_of(probe):
                return None
        structure, output = job.output_structure, job.output
        workspace = config.storage.workspace_bucket
        inputs = [Input(job.pipeline, f"{WORKSPACE_DIR}/{job.pipeline}", workspace)]
        if job.data_file and job.data_file != job.pipeline:
            inputs.append(Input(job.data_file, f"{WORKSPACE_DIR}/{job.data_file}", workspace))
        bucket = config.storage.destination_bucket
        plain_output = plainly_safe_key(output)

        def plan(task_id: str, metadata: Any) -> TaskPlan | None:
            if type(metadata) is str and _PLAIN_METADATA.fullmatch(metadata):
                # What parse_metadata gives for it, when no key repeats; its -g value is the
                # string itself.
                pairs = [(k, v) for k, _, v in (p.partition("=") for p in metadata.split(","))]
                if len({k for k, _ in pairs}) != len(pairs):
                    return None
                group = metadata
            else:
                try:
                    pairs = parse_metadata(metadata)
                except InputError:
                    return None
                group = group_argument(pairs)
            if structure and not any(key in structure for key, _ in pairs):
                return None  # output_prefix refuses it
            name = metadata_id(pairs, structure)
            if not (plain_output and plainly_safe_key(name)):
                return None  # join_key and check_prefix decide
            return TaskPlan.of(fill(group, name), f"{output}/{name}", list(inputs), bucket)

        return plan

    def more_inputs(self, config: Config, task: Task, workdir: Workdir) -> list[Input]:
        """The group's images, read from the staged data file (it reads local files only).

        Raises ``InputError`` (source = the data file's key) when the data file does not
        select any row for the group or names an image it cannot map to a key.
        """
        job = job_of(task)
        paths = TaskPaths.of(job, workdir)
        if job.kind == "h5" or paths.data_file is None:
            return []
        text = paths.data_file.read_text(encoding="utf-8-sig", errors="surrogateescape")
        if job.kind == "csv":
            table = read_load_data(text, source=job.data_file)
            keys = group_images(table, job.metadata, source=job.data_file, base=job.input)
        else:
            keys = file_list_images(text, source=job.data_file)
        source = config.storage.source_bucket
        # --always-continue: CellProfiler skips an image set it cannot read, as on DCP's
        # mount, so a missing image is CellProfiler's to skip, not the task's failure.
        optional = config.tool.always_continue
        return [Input(key, f"{IMAGES_DIR}/{key}", source, optional) for key in keys]

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
        """None when CellProfiler exited 0 and its done file says ``Complete``."""
        done = workdir.root / DONE_FILE
        error = workdir.root / TASK_ERROR_FILE
        return judge_done_file(read_own_file(done), exit_code, read_own_file(error))
