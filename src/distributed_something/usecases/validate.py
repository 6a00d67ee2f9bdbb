"""`ds validate`: check config, job file and fleet file; create nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed_something.backends import backend_kind
from distributed_something.config.legacy import config_warnings, key_name_note
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.fleet import load_fleet
from distributed_something.interfaces.storage import Storage
from distributed_something.jobs.model import JobFile, Task
from distributed_something.jobs.parse import load_job_file
from distributed_something.jobs.prefixes import (
    clash_error,
    element_position,
    find_clash_in_keys,
    list_key_of,
    output_key,
    prefix_problem,
)
from distributed_something.project import Project
from distributed_something.recipes.base import (
    PLACEHOLDER_WORKDIR,
    Recipe,
    TaskPlan,
    output_prefixes_may_repeat,
)
from distributed_something.recipes.registry import recipe_for
from distributed_something.usecases.preflight import PlanChecks, PreflightFailed


@dataclass
class Validated:
    """What passed validation."""

    project: Project
    job: JobFile | None = None
    fleet: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


#: Receives each task's plan as it is made: ``(index in job.tasks, plan)``.
PlanSink = Callable[[int, TaskPlan], None]


def check_job(
    project: Project,
    job_path: Path,
    plans: list[TaskPlan] | None = None,
    *,
    checks: Callable[[JobFile], PlanSink] | None = None,
) -> JobFile:
    """Parse the job file and plan every task with the recipe; return the parsed job.

    Raises ``InputError`` (exit 2) naming the file, the field and the fix when the job file
    is malformed, when the recipe cannot plan a task (a missing field, an unsafe key), when a
    task's output prefix is empty, has an empty name or lies under ``_ds/`` (the records
    area), or when two tasks' output prefixes in one bucket are equal or one contains the
    other (equal ones are accepted for recipes whose format shares folders by design, see
    `output_prefixes_may_repeat`). Pure: plans use ``PLACEHOLDER_WORKDIR`` and create nothing.
    Each task's plan is appended to ``plans`` when given, and given to the sink that
    ``checks(job)`` returns (`preflight.PlanChecks.add`); no plan is kept otherwise.
    """
    job = load_job_file(job_path)
    config = project.config
    recipe = recipe_for(config, source=str(project.config_path))
    if recipe is None:
        return job  # the image's own entrypoint reads the tasks
    sink = checks(job) if checks is not None else None
    # Where each task writes (`_written_at`), for the overlap check: one string per task is
    # all that is kept.
    keys: list[str] = []
    for index, plan in plan_tasks(project, job_path, job, recipe):
        if plans is not None:
            plans.append(plan)
        if sink is not None:
            sink(index, plan)
        problem = prefix_problem(plan.output_prefix)
        if problem is not None:
            raise _prefix_error(project, job, job_path, index, plan.output_prefix, problem)
        keys.append(_written_at(config, plan))
    clash = find_clash_in_keys(keys, allow_equal=output_prefixes_may_repeat(recipe))
    if clash is not None:
        outputs = [
            (bucket, prefix[:-1]) for bucket, _, prefix in (k.partition("\x00") for k in keys)
        ]
        raise clash_error(job, clash, outputs, source=str(job_path))
    return job


def _written_at(config: Config, plan: TaskPlan) -> str:
    """The `output_key` of where ``plan`` writes: its bucket as the worker resolves it (the
    destination bucket, else the main one), and its prefix."""
    storage = config.storage
    bucket = plan.output_bucket or storage.destination_bucket or storage.bucket
    return output_key(bucket, plan.output_prefix)


def check_outputs_against_run(
    project: Project, job_path: Path, job: JobFile, earlier: Mapping[str, str], run_id: str
) -> None:
    """Raise `InputError` when a task of ``job`` would write where a task already in run
    ``run_id`` writes (``earlier``: {task id: message body} of the run's tasks that ``job``
    does not have): equal output folders (unless the recipe shares folders by design,
    `output_prefixes_may_repeat`), or one inside the other. `check_job` compares a job
    file's tasks with each other; a second job file, or a group edited before `ds run`
    resumed, would otherwise overwrite the outputs of a task the run reports done."""
    recipe = recipe_for(project.config, source=str(project.config_path))
    if recipe is None or not earlier:
        return
    keys = [
        _written_at(project.config, plan) for _, plan in plan_tasks(project, job_path, job, recipe)
    ]
    ours = len(keys)
    others: list[Task] = []
    for body in earlier.values():
        task = Task.from_body(body)
        try:
            plan = recipe.plan(project.config, task, PLACEHOLDER_WORKDIR)
        except InputError:
            continue  # planned at its own submit; a config changed since cannot say where
        others.append(task)
        keys.append(_written_at(project.config, plan))
    clash = find_clash_in_keys(keys, allow_equal=output_prefixes_may_repeat(recipe))
    if clash is None or clash.second < ours or clash.first >= ours:
        return  # none, or within one side: each was checked on its own
    mine, theirs = clash.first, others[clash.second - ours]
    bucket, _, prefix = keys[mine].partition("\x00")
    position = element_position(job, mine)
    where = "writes" if clash.equal else "writes in or around"
    raise InputError(
        str(job_path),
        f"{list_key_of(job)}[{position}]",
        f"the group {job.tasks[mine].describe()} {where} {prefix[:-1]!r} in "
        f"{f'bucket {bucket!r}' if bucket else 'the main bucket'}, where task {theirs.id} "
        f"({theirs.describe()}), already in run {run_id}, writes: one would overwrite or "
        "be mistaken for the other",
        "give the group an output folder of its own; or, to replace the earlier task's "
        "outputs, end the run with `ds cleanup` and start a new one with this file",
    )


def plan_tasks(
    project: Project, job_path: Path, job: JobFile, recipe: Recipe
) -> Iterator[tuple[int, TaskPlan]]:
    """``(index, plan)`` of each of ``job.tasks`` in order, planned with
    ``PLACEHOLDER_WORKDIR``; a recipe's `InputError` names the job file or the config.

    A recipe with a ``planner`` (`CommandRecipe.planner`) plans a compact job
    (`TaskList`) from its templates parsed once, without making a `Task` per task; `plan`
    decides whatever the planner leaves (and raises the errors).
    """
    config = project.config
    tasks = job.tasks
    fast: Callable[[str, Any], TaskPlan | None] | None = None
    make_planner = getattr(recipe, "planner", None)
    if callable(make_planner):
        fast = make_planner(config, PLACEHOLDER_WORKDIR, tasks.shared, tasks.group_key)
    if fast is not None:
        for index, (task_id, group) in enumerate(zip(tasks.ids(), tasks.groups(), strict=True)):
            plan = fast(task_id, group)
            if plan is None:
                plan = _plan(project, job_path, recipe, tasks[index])
            yield index, plan
        return
    for index, task in enumerate(tasks):
        yield index, _plan(project, job_path, recipe, task)


def _plan(project: Project, job_path: Path, recipe: Recipe, task: Task) -> TaskPlan:
    """``recipe.plan`` of ``task``; its `InputError` names the job file or the config."""
    try:
        return recipe.plan(project.config, task, PLACEHOLDER_WORKDIR)
    except InputError as exc:
        # Recipes name "job file" or "config"; say which files they are.
        source = {"job file": str(job_path), "config": str(project.config_path)}
        raise InputError(
            source.get(exc.source, exc.source), exc.field, exc.problem, exc.fix
        ) from None


def _prefix_error(
    project: Project, job: JobFile, job_path: Path, index: int, prefix: str, problem: str
) -> InputError:
    """The error for task ``index`` of ``job``, whose output prefix ``prefix`` has ``problem``."""
    position = element_position(job, index)
    task = job.tasks[index]
    return InputError(
        str(job_path),
        f"{list_key_of(job)}[{position}]",
        f"the group {task.describe()} (task {task.id}) would write its outputs under "
        f"{prefix!r}, which {problem}",
        "change the group's values, or the output prefix template (recipe.output_prefix in "
        f"{project.config_path}, or the job file's output keys), so that every task renders "
        "its own folder of non-empty names outside _ds/",
    )


def validate(project: Project, job_path: Path | None, fleet_path: Path | None) -> Validated:
    """Validate everything given. Raises InputError at the first problem."""
    result = Validated(project)
    result.notes += config_warnings(project.config_path, backend=project.config.backend)
    recipe_for(project.config, source=str(project.config_path))
    # e.g. on AWS: the run image, the bucket policy, the root volume
    result.notes += backend_kind(project.config.backend).validate_notes(project)
    if job_path is not None:
        result.job, notes = checked_job(project, job_path)
        for dup in result.job.duplicates:
            result.notes.append(
                f"{job_path}: group {dup.index} repeats group {dup.first_index} "
                f"(task {dup.task_id}); it will be submitted once"
            )
        result.notes += notes
    if fleet_path is not None:
        result.fleet = load_fleet(fleet_path, key_name=project.config.aws.ssh_key_name)
        note = key_name_note(project.config_path, result.fleet)
        if note is not None and project.config.backend == "aws":
            result.notes.append(note)
    return result


def checked_job(
    project: Project, job_path: Path, *, load_data: bool = True, running: bool = False
) -> tuple[JobFile, list[str]]:
    """`check_job` and the preflight checks (`preflight.PlanChecks`: the program, names and
    arguments within the OS's limits, the inputs in local storage and, with ``load_data``,
    a DCP job's groups against its LoadData CSV), as `ds validate`, `ds submit` and `ds run`
    make them before anything is created or sent. `ds submit` and `ds run` leave the CSV to
    `ds validate`: it is read whole (at a million groups it doubles a submit's time and
    memory). Returns the parsed job and the checks' notes; raises `PreflightFailed` with
    every finding. With ``running`` (`ds run`: the tasks run next), tasks with inputs in a
    local bucket folder that does not exist, and that no `local.prepare` makes, are bad
    input (`InputError` naming the folder): every one of them would be dead."""
    bucket, where, why_not = _input_storage(project)
    made: list[PlanChecks] = []

    def plan_checks_of(job: JobFile) -> PlanChecks:
        return PlanChecks(project, job, job_path, bucket=bucket, where=where, load_data=load_data)

    def checks(job: JobFile) -> PlanSink:
        made.append(plan_checks_of(job))
        return made[0].add

    job = check_job(project, job_path, checks=checks)
    # No recipe: no plans, but a DCP job's groups are still checked (`preflight`).
    plan_checks = made[0] if made else plan_checks_of(job)
    found = plan_checks.finish()
    if found.findings:
        raise PreflightFailed(found.findings)
    notes = list(found.notes)
    if why_not and plan_checks.any_inputs:
        missing = _missing_bucket_folder(project) if running else None
        if missing is not None:
            # The command recipe's inputs are its recipe.inputs; a family recipe's are the
            # files its job file names (pipeline, data file, images, script).
            named = "recipe.inputs" if project.config.recipe.name == "command" else "job.json"
            raise InputError(
                str(missing),
                None,
                f"does not exist, so none of the tasks' inputs (the files {named} names) is "
                "there: every task would be dead",
                "put the inputs into that folder (it is the local bucket), or make them with "
                "local.prepare, then run again",
            )
        notes.append(why_not)
    return job, notes


def _input_storage(
    project: Project,
) -> tuple[Callable[[str], Storage] | None, Callable[[str, str], str] | None, str]:
    """How `preflight` opens the run's buckets (None: inputs are not checked) and says where
    a key belongs, or why inputs are not checked.

    Only folders (`BackendKind.bucket_folder`, the local backend's) are read: validation
    never needs credentials or a network, and creates nothing (a bucket folder that does not
    exist yet is not made)."""
    config = project.config
    kind = backend_kind(config.backend)
    bucket_folder, folder_storage = kind.bucket_folder, kind.folder_storage
    if bucket_folder is None or folder_storage is None:
        return (
            None,
            None,
            (
                f"inputs in the {config.backend} backend's storage are not checked by validate"
                + (" (`ds doctor` checks the bucket)" if kind.doctor is not None else "")
            ),
        )
    if config.local.prepare:
        return None, None, "inputs are not checked: local.prepare makes them at `ds setup`"

    def folder(name: str) -> Path:
        return bucket_folder(project, name)

    missing = _missing_bucket_folder(project)
    if missing is not None:
        return (
            None,
            None,
            (
                f"inputs are not checked: the storage folder {missing} does not exist yet "
                "(put the inputs there, or make them with local.prepare)"
            ),
        )

    def where(name: str, key: str) -> str:
        return f"expected at {folder(name) / key}"

    return (lambda name: folder_storage(folder(name))), where, ""


def _missing_bucket_folder(project: Project) -> Path | None:
    """The first local bucket folder inputs may come from that does not exist, where no
    `local.prepare` makes them at setup; None when there is none (or not a local backend)."""
    bucket_folder = backend_kind(project.config.backend).bucket_folder
    if bucket_folder is None or project.config.local.prepare:
        return None
    folders = sorted(bucket_folder(project, name) for name in _input_buckets(project))
    return next((folder for folder in folders if not folder.is_dir()), None)


def _input_buckets(project: Project) -> set[str]:
    """The buckets inputs may come from ('' is the main one)."""
    storage = project.config.storage
    return {storage.source_bucket, storage.workspace_bucket}
