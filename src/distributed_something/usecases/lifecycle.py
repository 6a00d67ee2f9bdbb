"""The run's life: setup → submit → start workers → monitor → report/cleanup."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed_something import summary
from distributed_something.backends import no_run_here, open_backend
from distributed_something.errors import InputError
from distributed_something.fleet import load_fleet
from distributed_something.interfaces.backend import Backend
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.jobs.model import JobFile, TaskList
from distributed_something.ledger import read_ledger
from distributed_something.monitor.loop import policy_config, watch
from distributed_something.monitor.progress import from_counts
from distributed_something.monitor.settle import (
    close_open_attempts,
    end_retries,
    record_image_outcomes,
)
from distributed_something.project import Project
from distributed_something.recipes.registry import recipe_for
from distributed_something.records import RunRecords, Skip
from distributed_something.report.build import RunReport, build_report
from distributed_something.report.files import TaskFiles
from distributed_something.report.html import write_html
from distributed_something.sending import announce as announce_sending
from distributed_something.sending import resume as resume_sending
from distributed_something.sending import send_part, under_way
from distributed_something.state import (
    RunState,
    all_runs,
    load_state,
    new_state,
    no_run_error,
    require_state,
    save_state,
    state_of_run,
)
from distributed_something.ui import info, task_bar
from distributed_something.usecases.pricing import priced_report_context
from distributed_something.usecases.skipdone import finished_tasks
from distributed_something.usecases.validate import check_outputs_against_run, checked_job

#: A run state resource: true when the run reruns every task (`ds run --force`), so its
#: workers skip none as already done.
FORCE_RESOURCE = "force"


def records_for(project: Project, backend: Backend, state: RunState) -> RunRecords:
    """The run's records in the main bucket."""
    return RunRecords(backend.storage, project.config.app_name, state.run_id)


def backend_of_run(project: Project, backend: Backend | None = None) -> Backend:
    """``backend``, else the project's opened, for a command on a run that must exist:
    raises `no_run_error` without opening anything when the project has no run
    (`no_run_here`), so that looking creates nothing."""
    if backend is not None:
        return backend
    if no_run_here(project):
        raise no_run_error(project)
    return open_backend(project)


def setup(
    project: Project, backend: Backend | None = None, *, continues: str | None = None
) -> RunState:
    """Create what a run needs, or reuse the run in progress. Idempotent.

    ``continues`` names a finished run whose dead tasks the new run takes (`ds dead
    redrive`): the new run records it and prepares nothing again (`local.prepare`)."""
    backend = backend or open_backend(project)
    state = load_state(project, backend.storage)
    previous = None
    if state is None or not state.active:
        previous, state = state, new_state(project, backend.name, dead_at_start=0)
        if continues is not None:
            state.resources["continues"] = continues
    saver = _saver(project, backend)
    backend.provisioner.setup(state, saver, previous)
    if state.submitted == 0:
        state.dead_at_start = backend.queue.counts().dead
    saver(state)
    return state


def _saver(project: Project, backend: Backend) -> Callable[[RunState], None]:
    def save(state: RunState) -> None:
        save_state(project, state, backend.storage)

    return save


@dataclass(frozen=True)
class SubmitResult:
    """What `ds submit` sent. ``left_out``: tasks already pending or running in this run
    (not sent again; ``force`` sends them anyway); ``resumed``: tasks an earlier submit's
    interrupted sending had left, sent first (`sending.resume`)."""

    sent: int
    duplicates: int
    job_format: str
    skipped: int = 0
    left_out: int = 0
    resumed: int = 0

    def lines(self, job_name: str) -> list[str]:
        """What `ds submit` and `ds run` say of it (rich markup), the same words in both."""
        said = []
        if self.resumed:
            said.append(f"sent {self.resumed} tasks an interrupted submit had left unsent")
        said.append(
            f"submitted {self.sent} task{'' if self.sent == 1 else 's'} from {job_name} "
            f"({self.job_format} format); {self.skipped} already done"
        )
        if self.left_out:
            said.append(
                f"[yellow]{self.left_out} task(s) left out: already pending or running in "
                "this run[/] (`--force` sends them anyway)"
            )
        if self.duplicates:
            said.append(f"[yellow]{self.duplicates} duplicate group(s) submitted once[/]")
        return said


def submit(
    project: Project,
    job_path: Path,
    *,
    job: JobFile | None = None,
    backend: Backend | None = None,
    show_progress: bool = True,
    skip_done: bool | None = None,
    force: bool = False,
    outputs_checked: bool = False,
) -> SubmitResult:
    """Validate the job file fully (unless ``job`` is it, validated), then send every unique
    task in batches. Its tasks' output folders are checked against those of the run's other
    tasks (`check_outputs_against_run`) unless ``outputs_checked`` (the caller did).

    Lifecycle rules (docs/lifecycle.md): a finished run (cleaned up, or monitored to its end)
    takes no more tasks — `InputError` saying to start a new run with `ds setup`; a task
    already pending, running or waiting for a retry in this run is not sent again (counted
    in ``left_out``) unless ``force``. With ``skip_done`` (default: when check-if-done is on),
    tasks already finished are not sent: they are recorded as skipped, decided by one
    listing of the done markers and one of the output root.
    """
    job = job or checked_job(project, job_path, load_data=False)[0]
    backend = backend_of_run(project, backend)
    state = require_state(project, backend.storage)
    if not state.active:
        raise InputError(
            str(job_path),
            None,
            f"run {state.run_id} of {project.config.app_name} is finished (cleaned up or "
            "monitored to its end): no worker would take these tasks",
            "start a new run with `ds setup`, then submit again (or `ds run` does every step)",
        )
    records = records_for(project, backend, state)
    if len(job.tasks) and not outputs_checked:
        _check_outputs(project, job_path, job, records, records.manifest_ids())
    part = f"{time.time_ns()}"
    # Said, then looked again: a monitor ending the run now either sees this submit coming
    # (and watches its tasks) or has said the run is over, and nothing is sent to it.
    announce_sending(records, part)
    current = load_state(project, backend.storage)
    if current is None or current.run_id != state.run_id or not current.active:
        records.end_sending(part)
        raise InputError(
            str(job_path),
            None,
            f"run {state.run_id} of {project.config.app_name} ended as this submit began "
            "(its monitor found every task finished): nothing was sent",
            "start a new run with `ds run` (or `ds setup`, then submit again)",
        )
    # What an interrupted submit left unsent goes first: it is pending, so left out below.
    resumed = resume_sending(records, backend.queue)
    tasks = job.tasks
    left_out = 0
    excluded: set[str] = set()
    ledger = read_ledger(records) if tasks else None
    if not force and ledger is not None:
        live = set(ledger.ids_in("pending", "running", "failed"))
        if live:
            tasks = tasks.without(live)
            left_out = len(job.tasks) - len(tasks)
            excluded = {task_id for task_id in job.tasks.ids() if task_id in live}
    # The manifest is written first: the report must know every task that may be queued.
    records.write_manifest_json(
        part,
        _manifest_groups(job.tasks),
        shared=job.tasks.shared,
        group_key=job.tasks.group_key,
    )
    if skip_done is None:
        skip_done = project.config.check_if_done.enabled and not force
    skipped = 0
    if skip_done:
        recipe = recipe_for(project.config, source=str(project.config_path))
        finished = finished_tasks(project.config, recipe, tasks, records, backend.bucket)
        now = time.time()
        records.write_skips(
            f"{time.time_ns()}",
            (Skip(tid, now, f"{why} (at submit)", "submit") for tid, why in finished.items()),
        )
        if finished:
            tasks = tasks.without(finished.keys())
            excluded.update(finished)
        skipped = len(finished)
    if ledger is not None:
        dead = set(ledger.ids_in("dead"))
        _revive_dead(records, backend, [task_id for task_id in tasks.ids() if task_id in dead])
    # The ledger summary counts the new manifest now, not at the first `ds status`.
    summary.read_counts(records)
    # Nothing to send (every task done or left out): no bar counting 0/0.
    bar = task_bar("submit") if show_progress and len(tasks) else None
    bar_id = bar.add_task("submit", total=len(tasks), detail="") if bar else None
    sent = 0

    def progress(count: int) -> None:
        nonlocal sent
        sent = count
        if bar is not None and bar_id is not None:
            bar.update(bar_id, completed=count)

    if bar:
        bar.start()
    try:
        send_part(records, backend.queue, part, tasks, excluded, on_sent=progress)
    finally:
        if bar:
            bar.stop()
        # Also when interrupted: the run is in progress (`ds run` again resumes it, and
        # `resume_sending` sends the rest). Onto the state as saved now: a monitor may have
        # saved it meanwhile.
        latest = load_state(project, backend.storage)
        if latest is not None and latest.run_id == state.run_id:
            state = latest
        state.submitted += sent + skipped
        if str(job_path.resolve()) not in state.job_files:  # a file submitted again: once
            state.job_files.append(str(job_path.resolve()))
        save_state(project, state, backend.storage)
    if sent and not state.active:
        # `ds cleanup` ended the run as these were sent (a monitor would have waited for
        # them, `_ends_alone`): said, not reported sent.
        raise InputError(
            str(job_path),
            None,
            f"run {state.run_id} of {project.config.app_name} was ended (`ds cleanup`) while "
            f"this submit was sending: its {sent} task(s) will not run",
            "start a new run with `ds run` (or `ds setup`, then submit again; done tasks are "
            "skipped)",
        )
    return SubmitResult(
        sent=sent,
        resumed=resumed,
        duplicates=len(job.duplicates),
        job_format=job.format,
        skipped=skipped,
        left_out=left_out,
    )


def _check_outputs(
    project: Project, job_path: Path, job: JobFile, records: RunRecords, in_run: Iterable[str]
) -> None:
    """`check_outputs_against_run` of ``job`` and the tasks of ``records``' run (``in_run``:
    their ids) that the job does not have."""
    earlier = set(in_run).difference(job.tasks.ids())
    if earlier:
        bodies = records.bodies(earlier)
        check_outputs_against_run(project, job_path, job, bodies, records.run_id)


def _revive_dead(records: RunRecords, backend: Backend, task_ids: list[str]) -> None:
    """Tasks dead in this run that a submit sends again are redriven, as `ds dead redrive`
    does: their dead-letter copies removed and a redrive mark written before they are sent,
    so the ledger counts them pending (not dead while they are queued; `ds dead list` no
    longer offers them for a redrive that would send them twice), and their retries start
    again."""
    if not task_ids:
        return
    backend.queue.drop_dead(task_ids)
    now = time.time()
    for task_id in task_ids:
        records.write_mark(task_id, "redrive", now, {"from_run": records.run_id, "by": "submit"})


def _manifest_groups(tasks: TaskList) -> Iterator[tuple[str, str]]:
    """(task id, JSON of its element) of each task, without making the tasks."""
    for index, task_id in enumerate(tasks.ids()):
        yield task_id, tasks.group_json(index)


def start_cluster(
    project: Project, fleet_path: Path | None = None, backend: Backend | None = None
) -> ComputeStatus:
    """Start the workers the config asks for (machines × tasks × processes, capped); on AWS
    from the spot fleet file ``fleet_path``."""
    fleet = load_fleet(fleet_path) if fleet_path is not None else None
    _require_workers(project)
    backend = backend_of_run(project, backend)
    state = require_state(project, backend.storage)
    if not state.active:
        # Its queue is gone: machines started now would find nothing and cost until stopped.
        raise InputError(
            str(project.config_path),
            None,
            f"run {state.run_id} of {project.config.app_name} is finished (cleaned up or "
            "monitored to its end): no worker would find a task",
            "start a new run with `ds setup` and submit the job file (or `ds run` does "
            "every step); `ds dead redrive` continues a finished run's dead tasks",
        )
    workers = policy_config(project.config, False, backend.max_workers).workers
    state.workers_started_at = state.workers_started_at or time.time()
    backend.provisioner.start(state, fleet, workers, _saver(project, backend))
    return backend.compute.status()


def _require_workers(project: Project) -> None:
    """`InputError` when the config starts no worker (``cluster.machines = 0``): machines
    started for none would cost, and a run's monitor would wait for ever."""
    if project.config.cluster.machines == 0:
        raise InputError(
            str(project.config_path),
            "cluster.machines",
            "is 0: no worker would start, and the run would wait for ever",
            "set it to 1 or more (the workers are machines × tasks_per_machine × docker_cores)",
        )


def monitor(
    project: Project,
    *,
    backend: Backend | None = None,
    cheapest: bool = False,
    interval: float | None = None,
    show_progress: bool = True,
) -> RunReport:
    """Watch the run until drained, then clean up and write the report."""
    backend = backend_of_run(project, backend)
    state = require_state(project, backend.storage)
    if interval is None:
        interval = backend.poll_interval
    ended_elsewhere = False
    if state.active:
        resumed = resume_sending(records_for(project, backend, state), backend.queue)
        if resumed:
            info(f"sent {resumed} tasks an interrupted submit had left unsent")
        run_id = state.run_id
        while True:
            watch(
                project.config,
                backend,
                state,
                interval=interval,
                confirm_seconds=drain_confirm_seconds(backend.drain_confirm_floor, interval),
                cheapest=cheapest,
                show_progress=show_progress,
                image_entrypoint=_image_entrypoint(project),
                still_active=lambda: _still_active(project, backend, run_id),
            )
            now = load_state(project, backend.storage)
            if now is not None and now.run_id == state.run_id and not now.active:
                # Ended meanwhile (`ds cleanup`): its state, not ours, is saved, once that
                # command has stopped the workers and closed their attempts (it says the run
                # ended first): the report counts the run as the cleanup leaves it.
                state = _torn_down(project, backend, now)
                ended_elsewhere = True
                break
            if now is not None and now.run_id == state.run_id:
                state = now
            if _ends_alone(project, backend, state):
                break
            info("tasks were submitted as the run ended: watching them too")
    report = finish(project, backend, state)
    report.ended_elsewhere = ended_elsewhere
    return report


def _ends_alone(project: Project, backend: Backend, state: RunState) -> bool:
    """Say that the run is over (its state saved finished), then look whether a submit
    came meanwhile: True when none did (the run ends), else False with the run said to be
    in progress again. A submit says it is coming before it looks at the state
    (`sending.announce`): of the two, at least one sees the other's word, so no task is sent
    to a run being torn down unseen."""
    state.finished_at = time.time()
    save_state(project, state, backend.storage)
    records = records_for(project, backend, state)
    # The family image's own worker keeps no records: only a submit under way counts there.
    progress = None if _image_entrypoint(project) else from_counts(summary.read_counts(records))
    if not under_way(records) and (progress is None or progress.finished >= progress.total):
        return True
    state.finished_at = None
    save_state(project, state, backend.storage)
    return False


#: How long a monitor waits for another command's teardown of its run to end.
TEARDOWN_WAIT_SECONDS = 120.0


def _torn_down(project: Project, backend: Backend, state: RunState) -> RunState:
    """``state`` once its teardown (by another command) is done, or as it is after
    `TEARDOWN_WAIT_SECONDS` (that command died: `finish` completes the teardown)."""
    deadline = time.monotonic() + TEARDOWN_WAIT_SECONDS
    while not state.cleaned_up and time.monotonic() < deadline:
        time.sleep(0.2)
        now = load_state(project, backend.storage)
        if now is None or now.run_id != state.run_id:
            break
        state = now
    return state


def _still_active(project: Project, backend: Backend, run_id: str) -> bool:
    """Whether run ``run_id`` is still the current run, in progress (its saved state)."""
    now = load_state(project, backend.storage)
    return now is not None and now.run_id == run_id and now.active


#: Overrides how long the queue must read empty before a run is over (seconds), as for the
#: unattended monitor (`backends/aws/lambda_monitor.py` reads the same variable).
DRAIN_CONFIRM_ENV = "DS_DRAIN_CONFIRM_SECONDS"


def drain_confirm_seconds(floor: float, interval: float) -> float:
    """How far apart two empty readings of the queue must be: one tick, but at least the
    backend's ``floor`` (`Backend.drain_confirm_floor`: a minute for SQS's approximate
    counts, the unattended monitor's default); none where the counts are exact (floor 0:
    the local and Slurm queues), so one empty reading ends the run.
    ``$DS_DRAIN_CONFIRM_SECONDS`` overrides both."""
    raw = os.environ.get(DRAIN_CONFIRM_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value < 0:
            raise InputError(
                "environment", DRAIN_CONFIRM_ENV, f"{raw!r} is not a number of seconds", "e.g. 60"
            )
        return value
    return max(interval, floor) if floor > 0 else 0.0


def _image_entrypoint(project: Project) -> bool:
    """True when no recipe is set: the image's own worker runs the tasks (no records)."""
    return recipe_for(project.config, source=str(project.config_path)) is None


def finish(project: Project, backend: Backend, state: RunState) -> RunReport:
    """Write the report, then tear the run's resources down and mark it finished.

    The report comes first: on AWS the teardown deletes the queue it counts from. When the
    family image's own worker ran the tasks (no recipe: it keeps no records), what the
    drained queue shows is recorded first (`record_image_outcomes`), so the report and
    `ds status` say the same afterwards.
    """
    if state.finished_at is None:
        state.finished_at = time.time()
    if _image_entrypoint(project) and backend.queue.counts().drained:
        records = records_for(project, backend, state)
        record_image_outcomes(records, backend.queue, read_ledger(records), time.time())
    report = write_report(project, backend, state)
    _teardown(project, backend, state)
    return report


def _teardown(project: Project, backend: Backend, state: RunState) -> None:
    saver = _saver(project, backend)
    backend.provisioner.teardown(state, saver)
    records = records_for(project, backend, state)
    close_open_attempts(records)
    end_retries(records)
    state.cleaned_up = True
    saver(state)


def write_report(project: Project, backend: Backend, state: RunState) -> RunReport:
    """Build the run report and store it next to the state and in the main bucket: the
    JSON and the TSV of every task are written as the tasks stream by (report/files.py)."""
    records = records_for(project, backend, state)
    context = priced_report_context(project.config, backend, records, state)
    files = TaskFiles(project.report_path, project.report_path.with_suffix(".tsv"))
    try:
        report = build_report(
            records, state, context, files.add, fork=backend.fork_call, parts=files
        )
        files.finish(report)
    except BaseException:
        files.abandon()
        raise
    backend.storage.put_file(records.report_key(), project.report_path)
    html = write_html(report, project.report_path.with_suffix(".html"))
    backend.storage.put_file(records.report_key().removesuffix(".json") + ".html", html)
    tsv = project.report_path.with_suffix(".tsv")
    backend.storage.put_file(records.report_key().removesuffix(".json") + ".tsv", tsv)
    return report


def report(
    project: Project, backend: Backend | None = None, run_id: str | None = None
) -> RunReport:
    """The report of the current run (or of run ``run_id``), rebuilt from storage now."""
    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    current = load_state(project, backend.storage)
    if current is not None and current.run_id != state.run_id:
        # An earlier run: rebuilt and shown, but the current run's report files stay.
        records = records_for(project, backend, state)
        context = priced_report_context(project.config, backend, records, state)
        return build_report(records, state, context)
    return write_report(project, backend, state)


def cleanup(project: Project, backend: Backend | None = None) -> RunState | None:
    """Tear down on demand: stop workers (each hands its task back), remove the queue and
    what runs workers, mark the run finished. The dead-letter store, outputs and records are
    kept; the job file can be submitted again and finished tasks are skipped."""
    if backend is None and no_run_here(project):
        return None
    backend = backend or open_backend(project)
    state = load_state(project, backend.storage)
    if state is None:
        return None
    if state.finished_at is None:
        state.finished_at = time.time()
        # Said first: a monitor ticking meanwhile (`ds run` in another terminal) must not
        # start workers while these are stopped, and a worker starting now finds the run
        # over (`run_worker`) instead of running its tasks after the cleanup.
        save_state(project, state, backend.storage)
    _teardown(project, backend, state)
    return state


def run(
    project: Project,
    job_path: Path,
    *,
    fleet_path: Path | None = None,
    cheapest: bool = False,
    show_progress: bool = True,
    interval: float | None = None,
    force: bool = False,
) -> RunReport:
    """Every step in one: validate, setup, submit, start workers, monitor, report.

    Run again after an interruption, it resumes the run in progress for the same job file.
    ``force`` reruns every task, done ones included: submit skips none, and the run's state
    says `FORCE_RESOURCE`, so its workers do not check whether a task is done either.
    """
    job = checked_job(project, job_path, load_data=False, running=True)[0]
    if fleet_path is not None:
        load_fleet(fleet_path)  # validated before anything is created
    _require_workers(project)
    backend = open_backend(project)
    state = load_state(project, backend.storage)
    resuming = state is not None and state.active and state.submitted > 0
    # (A state written before files were kept once may name one file twice.)
    if resuming and state is not None and set(state.job_files) != {str(job_path.resolve())}:
        raise InputError(
            str(project.config_path),
            None,
            f"run {state.run_id} of {project.config.app_name} is still in progress with "
            f"{', '.join(state.job_files) or 'no job file'}",
            "finish it with `ds monitor`, or stop it with `ds cleanup`",
        )
    if resuming and force and state is not None and not state.resources.get(FORCE_RESOURCE):
        # Resumed, its done tasks would stay done: --force would be silently not applied.
        raise InputError(
            "argument",
            "--force",
            f"run {state.run_id} of {project.config.app_name} is in progress, started "
            "without --force: resuming it reruns no task it has done",
            "resume it without --force, or end it with `ds cleanup`; then `ds run --force` "
            "starts a new run that reruns every task",
        )
    new = setup(project, backend)
    if resuming:
        info(f"resuming run {state.run_id if state else ''}")
        _submit_added(project, job_path, job, backend, new, force=force)
    else:
        if force:
            new.resources[FORCE_RESOURCE] = True
            save_state(project, new, backend.storage)
        result = _submit_for_run(project, job_path, job, backend, force, show_progress)
        for line in result.lines(job_path.name):
            info(line)
    del job  # a million parsed tasks are not held while the run is watched
    try:
        # Interrupted while workers start (the first may run a task before the last is
        # started), it stops those started as it would once they all run.
        start_cluster(project, fleet_path, backend)
        return monitor(
            project,
            backend=backend,
            cheapest=cheapest,
            interval=interval,
            show_progress=show_progress,
        )
    except KeyboardInterrupt:
        info("interrupted: stopping workers (their tasks go back to the queue)")
        backend.compute.stop()
        info(
            "the run stays in progress: run the same `ds run` again to resume it (finished "
            "tasks are kept), or `ds cleanup` to end it"
        )
        raise


def _submit_added(
    project: Project,
    job_path: Path,
    job: JobFile,
    backend: Backend,
    state: RunState,
    *,
    force: bool,
) -> None:
    """Send the groups added to the job file since the run in progress took it (edited
    between an interruption and `ds run` again): without this they would never run, and
    the run would end as if complete. Only tasks the run does not know are sent, once.

    A run that continues another (`ds dead redrive` of a stopped run) knows that run's
    tasks too, but not those it left unfinished (pending, running or waiting for a retry
    when `ds cleanup` stopped it): no worker of that run takes them any more, and the
    continuation would otherwise end "complete" without them."""
    known: dict[str, None] = {}
    unfinished = 0
    runs: dict[str, RunState] | None = None  # every run's state, read if one continues another
    run: RunState | None = state
    seen: set[str] = set()
    while run is not None and run.run_id not in seen:
        # A run that continues another (`ds dead redrive`) took that run's tasks too.
        seen.add(run.run_id)
        records = records_for(project, backend, run)
        ids = records.manifest_ids()
        if run is state and len(job.tasks):
            # Before anything is said or sent; the whole file, so errors name its groups.
            _check_outputs(project, job_path, job, records, ids)
        if run is not state:
            left = set(read_ledger(records).ids_in("pending", "running", "failed"))
            left.difference_update(known)  # taken by a later run (redriven into it)
            unfinished += sum(1 for task_id in left if task_id in ids)
            ids = {task_id: None for task_id in ids if task_id not in left}
        known.update(ids)
        continued = run.resources.get("continues")
        if not isinstance(continued, str):
            break
        if runs is None:
            runs = {r.run_id: r for r in all_runs(project.config.app_name, backend.storage)}
        run = runs.get(continued)
    added = job.tasks.without(known.keys())
    # The run's tasks the file no longer names: counted, not listed (the file's tasks are
    # unique, so those it shares with the run are all but the added ones).
    removed = len(known) - (len(job.tasks) - len(added))
    del known
    if unfinished:
        info(
            f"{unfinished} task(s) of the run this one continues were left unfinished when "
            "it was stopped: those the job file still has are sent with this run"
        )
    if removed > 0:
        info(
            f"{removed} task(s) of this run are no longer in {job_path.name}: they were sent "
            "and still run (`ds cleanup`, then `ds run`, runs only the file's groups)"
        )
    if not len(added):
        return
    added_job = dataclasses.replace(job, tasks=added, duplicates=[])
    result = _submit_for_run(
        project, job_path, added_job, backend, force, False, outputs_checked=True
    )
    info(
        f"{job_path.name} has {len(added)} group(s) the run did not have: sent {result.sent} "
        f"({result.skipped} already done)"
    )


def _submit_for_run(
    project: Project,
    job_path: Path,
    job: JobFile,
    backend: Backend,
    force: bool,
    show_progress: bool,
    *,
    outputs_checked: bool = False,
) -> SubmitResult:
    """`submit` as `ds run` makes it: ``force`` sends done tasks too."""
    return submit(
        project,
        job_path,
        job=job,
        backend=backend,
        show_progress=show_progress,
        skip_done=False if force else None,
        force=force,
        outputs_checked=outputs_checked,
    )


def rerun_done_tasks(project: Project, backend: Backend | None = None) -> None:
    """Tell the current run's workers to skip no task as already done (`FORCE_RESOURCE`):
    `ds submit --no-skip-done` sent done tasks to be run again."""
    backend = backend or open_backend(project)
    state = require_state(project, backend.storage)
    if not state.resources.get(FORCE_RESOURCE):
        state.resources[FORCE_RESOURCE] = True
        save_state(project, state, backend.storage)


def outputs_location(project: Project, backend: Backend | None = None) -> str:
    """Where a run's outputs land, for people."""
    backend = backend or open_backend(project)
    return backend.location(project.config.storage.destination_bucket)
