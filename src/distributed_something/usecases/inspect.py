"""Looking at runs: status, the list of runs, task logs, dead tasks and their redrive.

Every count here comes from the run's ledger (ledger.py), never from queue depth: the
queue's counts appear only as a hint of what it holds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from distributed_something.backends import Backend, open_backend
from distributed_something.errors import InputError
from distributed_something.ledger import Ledger, read_ledger
from distributed_something.monitor.progress import Progress, measure
from distributed_something.project import Project
from distributed_something.records import RunRecords
from distributed_something.state import (
    RunState,
    all_runs,
    load_state,
    require_state,
    save_state,
    state_of_run,
)
from distributed_something.usecases import lifecycle
from distributed_something.usecases.lifecycle import records_for


@dataclass(frozen=True)
class Status:
    """A snapshot of a run. ``queued``/``in_flight`` are the queue's own (approximate)
    counts, a hint of what it holds; every count of tasks is in ``progress``."""

    app_name: str
    run_id: str
    active: bool
    progress: Progress
    workers_desired: int
    workers_running: int
    elapsed: float
    eta_seconds: float | None
    queued: int = 0
    in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "app_name": self.app_name,
            "run_id": self.run_id,
            "active": self.active,
            "counts": self.progress.counts(),
            "finished": self.progress.finished,
            "corrupt_records": self.progress.corrupt,
            "workers": {"running": self.workers_running, "desired": self.workers_desired},
            "queue": {"queued": self.queued, "in_flight": self.in_flight},
            "elapsed": self.elapsed,
            "eta_seconds": self.eta_seconds,
        }


def status(project: Project, backend: Backend | None = None, run_id: str | None = None) -> Status:
    """Counts by state (from the ledger), workers, and an ETA from the throughput so far."""
    backend = backend or open_backend(project)
    state = state_of_run(project, backend.storage, run_id)
    progress = measure(read_ledger(records_for(project, backend, state)))
    current = _is_current(project, backend, state)
    compute = backend.compute.status() if current and state.active else None
    queued = in_flight = 0
    if current and state.active:
        counts = backend.queue.counts()
        queued, in_flight = counts.visible, counts.in_flight
    started = state.workers_started_at or state.created_at
    elapsed = max((state.finished_at or time.time()) - started, 0.0)
    remaining = progress.total - progress.finished
    eta = None
    working = compute is not None and compute.running > 0
    if working and progress.finished and remaining > 0 and elapsed > 0:
        eta = remaining / (progress.finished / elapsed)
    return Status(
        app_name=project.config.app_name,
        run_id=state.run_id,
        active=state.active,
        progress=progress,
        workers_desired=compute.desired if compute else 0,
        workers_running=compute.running if compute else 0,
        elapsed=elapsed,
        eta_seconds=eta,
        queued=queued,
        in_flight=in_flight,
    )


def _is_current(project: Project, backend: Backend, state: RunState) -> bool:
    current = load_state(project, backend.storage)
    return current is not None and current.run_id == state.run_id


@dataclass(frozen=True)
class RunSummary:
    """One run of a project, for `ds runs`."""

    run_id: str
    created_at: float
    finished_at: float | None
    job_files: list[str]
    counts: dict[str, int]
    state: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def runs(project: Project, backend: Backend | None = None) -> list[RunSummary]:
    """Every run of the project, oldest first, with its counts from its ledger."""
    backend = backend or open_backend(project)
    out = []
    for state in all_runs(project.config.app_name, backend.storage):
        ledger = read_ledger(records_for(project, backend, state))
        if state.active:
            label = "active"
        elif ledger.finished:
            label = "finished"
        else:
            label = "stopped"  # cleaned up with tasks left without an outcome
        out.append(
            RunSummary(
                run_id=state.run_id,
                created_at=state.created_at,
                finished_at=state.finished_at,
                job_files=state.job_files,
                counts=ledger.counts,
                state=label,
            )
        )
    return out


@dataclass(frozen=True)
class TaskLog:
    """One stored log of one attempt of a task."""

    run_id: str
    key: str
    text: str


@dataclass(frozen=True)
class TaskLogs:
    """The stored logs of one task, oldest first, and its state in each run it is in."""

    task_id: str
    states: dict[str, str]
    logs: list[TaskLog]


def task_logs(
    project: Project, task: str, backend: Backend | None = None, run_id: str | None = None
) -> TaskLogs:
    """Every stored log of a task (its id or a unique prefix of it), in every run (or in run
    ``run_id``), oldest first; no logs when the task never printed anything (a quiet success
    keeps none) or never ran. Raises `InputError` when no task of the project has that id."""
    backend = backend or open_backend(project)
    if run_id is not None:
        run_states = [state_of_run(project, backend.storage, run_id)]
    else:
        run_states = all_runs(project.config.app_name, backend.storage)
    found: dict[str, list[TaskLog]] = {}
    known: set[str] = set()
    states: dict[str, dict[str, str]] = {}
    for state in run_states:
        records = records_for(project, backend, state)
        prefix = f"{records.run_prefix}logs/"
        for obj in backend.storage.list(prefix + task):
            tid = obj.key[len(prefix) :].split("/", 1)[0]
            text = backend.storage.get_bytes(obj.key).decode(errors="replace")
            found.setdefault(tid, []).append(TaskLog(state.run_id, obj.key, text))
        for entry in read_ledger(records).tasks.values():
            if entry.id.startswith(task):
                known.add(entry.id)
                states.setdefault(entry.id, {})[state.run_id] = entry.state
    ids = set(found) | known
    if not task or not ids:
        where = f"run {run_id}" if run_id else "any run"
        raise InputError(
            "argument",
            "TASK",
            f"no task id starting with {task!r} in {where} of {project.config.app_name}",
            "copy a task id from `ds report` or `ds dead list`",
        )
    if len(ids) > 1:
        raise InputError(
            "argument", "TASK", f"{task!r} matches {len(ids)} tasks", "give more of the task id"
        )
    (tid,) = ids
    logs = sorted(found.get(tid, []), key=lambda log: (log.run_id, log.key))
    return TaskLogs(tid, states.get(tid, {}), logs)


@dataclass
class DeadEntry:
    """One dead task of a run: its latest failure, with the history of its attempts."""

    task_id: str
    group: Any
    run_id: str
    attempts: int
    error: str
    exit_code: int | None = None
    #: every failed attempt, oldest first (attempt, error, exit code, time)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: copies of the task in the dead-letter store (more than one after a resubmit)
    copies: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dead_list(
    project: Project, backend: Backend | None = None, run_id: str | None = None
) -> list[DeadEntry]:
    """The dead tasks of the current run (or of run ``run_id``): one entry per task, from
    the run's ledger, with the error of its last failure (else the dead-letter store's)."""
    backend = backend or open_backend(project)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    return _dead_entries(records, read_ledger(records), backend)


def _dead_entries(records: RunRecords, ledger: Ledger, backend: Backend) -> list[DeadEntry]:
    dead_ids = ledger.ids_in("dead")
    if not dead_ids:
        return []
    letters: dict[str, list[str]] = {}
    for d in backend.queue.list_dead():
        letters.setdefault(d.task_id, []).append(d.error)
    failures: dict[str, list[dict[str, Any]]] = {}
    for f in records.all_failures():
        if f.task_id in ledger.tasks:
            failures.setdefault(f.task_id, []).append(
                {"attempt": f.attempt, "error": f.error, "exit_code": f.exit_code, "at": f.at}
            )
    mark_errors: dict[str, str] = {}
    for mark in records.marks():
        if mark.kind == "dead" and mark.task_id not in failures:
            mark_errors[mark.task_id] = str((records.read_mark(mark) or {}).get("error", ""))
    out = []
    for tid in dead_ids:
        history = sorted(failures.get(tid, []), key=lambda h: float(h["at"]))
        last = history[-1] if history else None
        copies = letters.get(tid, [])
        error = (
            (last or {}).get("error")
            or mark_errors.get(tid)
            or next((e for e in reversed(copies) if e), "")
        )
        out.append(
            DeadEntry(
                task_id=tid,
                group=ledger.tasks[tid].group,
                run_id=ledger.run_id,
                attempts=ledger.tasks[tid].attempts,
                error=str(error),
                exit_code=last["exit_code"] if last else None,
                history=history,
                copies=len(copies),
            )
        )
    return out


def dead_show(
    project: Project, task: str, backend: Backend | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """One dead task of the run: its group, its failures (with log tails), its last error."""
    backend = backend or open_backend(project)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    entries = [e for e in dead_list(project, backend, state.run_id) if e.task_id.startswith(task)]
    if len(entries) != 1:
        problem = "no dead task id starts with" if not entries else "several dead tasks match"
        raise InputError("argument", "TASK", f"{problem} {task!r}", "see `ds dead list`")
    entry = entries[0]
    failures = [asdict(f) for f in records.failures_of(entry.task_id)]
    return {**entry.to_json(), "failures": failures}


def dead_redrive(
    project: Project,
    tasks: list[str] | None = None,
    backend: Backend | None = None,
    run_id: str | None = None,
) -> int:
    """Put dead tasks of the current run (all, or those whose ids start with the given
    prefixes) back on the queue: exactly one message per task, whatever copies the
    dead-letter store holds, and a redrive mark in the run's ledger. Returns how many.

    The tasks go back to the run they belong to when it is still active. A finished run
    (its queue may be gone) is continued by a new run that takes exactly these tasks, set up
    without `local.prepare` (nothing is prepared again). `ds start-cluster` and `ds monitor`
    then process them.
    """
    backend = backend or open_backend(project)
    state = state_of_run(project, backend.storage, run_id)
    current = require_state(project, backend.storage)
    if run_id is not None and state.run_id != current.run_id and current.active:
        raise InputError(
            "argument",
            "--run",
            f"run {current.run_id} is in progress; tasks of run {state.run_id} cannot join it",
            "finish it first (`ds monitor` or `ds cleanup`), then redrive",
        )
    records = records_for(project, backend, state)
    entries = _dead_entries(records, read_ledger(records), backend)
    chosen = entries
    if tasks:
        chosen = []
        for prefix in tasks:
            found = [e for e in entries if e.task_id.startswith(prefix)]
            if not found:
                raise InputError(
                    "argument",
                    "TASK",
                    f"no dead task of run {state.run_id} starts with {prefix!r}",
                    "see `ds dead list`",
                )
            chosen.extend(e for e in found if e not in chosen)
    if not chosen:
        return 0
    ids = [e.task_id for e in chosen]
    bodies = records.bodies(ids)
    target = state
    if not state.active:
        target = lifecycle.setup(project, backend, continues=state.run_id)
    target_records = records_for(project, backend, target)
    if target.run_id != state.run_id:
        parts = records.manifest_parts()
        entries_by_id = {e.task_id: e for e in chosen}
        for part in parts:
            mine = [m for m in part.entries if m.task_id in entries_by_id]
            if mine:
                target_records.write_manifest(
                    f"redrive-{time.time_ns()}", mine, shared=part.shared, group_key=part.group_key
                )
    # The dead-letter copies are removed first (a task is only ever re-sent by us, once),
    # then one fresh message per task is sent: a failure in between leaves the task dead
    # in the ledger (nothing is counted done) and `ds dead redrive` can be run again.
    backend.queue.drop_dead(ids)
    missing = [tid for tid in ids if tid not in bodies]
    if missing:
        raise InputError(
            "argument",
            "TASK",
            f"the manifest of run {state.run_id} has no body for {missing[0]}",
            "submit its job file again",
        )
    now = time.time()
    moved = backend.queue.send_batch([(tid, bodies[tid]) for tid in ids])
    for tid in ids:
        target_records.write_mark(tid, "redrive", now, {"from_run": state.run_id})
    target.submitted += 0 if target.run_id == state.run_id else moved
    save_state(project, target, backend.storage)
    return moved
