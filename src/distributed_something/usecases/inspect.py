"""Looking at a run: status, task logs, the dead-letter store."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from distributed_something.backends import Backend, open_backend
from distributed_something.errors import InputError
from distributed_something.interfaces.queue import DeadTask
from distributed_something.jobs.model import Task
from distributed_something.monitor.progress import Progress, measure
from distributed_something.project import Project
from distributed_something.records import ManifestEntry
from distributed_something.state import require_state, save_state
from distributed_something.usecases import lifecycle
from distributed_something.usecases.lifecycle import records_for


@dataclass(frozen=True)
class Status:
    """A snapshot of the current run."""

    app_name: str
    run_id: str
    progress: Progress
    workers_desired: int
    workers_running: int
    elapsed: float
    eta_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["progress"]["finished"] = self.progress.finished
        return data


def status(project: Project, backend: Backend | None = None) -> Status:
    """Counts, workers, and an ETA from the throughput so far."""
    backend = backend or open_backend(project)
    state = require_state(project, backend.storage)
    progress = measure(backend.queue.counts(), records_for(project, backend, state), state)
    compute = backend.compute.status()
    started = state.workers_started_at or state.created_at
    elapsed = max((state.finished_at or time.time()) - started, 0.0)
    remaining = progress.total - progress.finished
    eta = None
    if progress.finished and remaining > 0 and elapsed > 0:
        eta = remaining / (progress.finished / elapsed)
    return Status(
        app_name=project.config.app_name,
        run_id=state.run_id,
        progress=progress,
        workers_desired=compute.desired,
        workers_running=compute.running,
        elapsed=elapsed,
        eta_seconds=eta,
    )


def task_logs(project: Project, task: str, backend: Backend | None = None) -> list[tuple[str, str]]:
    """(key, text) of every stored log of a task (its id or a unique prefix of it); empty
    when the task succeeded without printing anything (no log is kept for that)."""
    backend = backend or open_backend(project)
    records = records_for(project, backend, require_state(project, backend.storage))
    prefix = f"{records.run_prefix}logs/"
    ids = sorted(
        {o.key[len(prefix) :].split("/", 1)[0] for o in backend.storage.list(prefix + task)}
    )
    if not ids and task and any(True for _ in backend.storage.list(f"{records.prefix}done/{task}")):
        return []
    if not ids:
        raise InputError(
            "argument",
            "TASK",
            f"no logs for a task id starting with {task!r} in this run",
            "copy a task id from `ds report` or `ds dead list`",
        )
    if len(ids) > 1:
        raise InputError(
            "argument", "TASK", f"{task!r} matches {len(ids)} tasks", "give more of the task id"
        )
    return records.logs_of(ids[0])


def dead_list(project: Project, backend: Backend | None = None) -> list[DeadTask]:
    """Everything in the dead-letter store."""
    backend = backend or open_backend(project)
    return backend.queue.list_dead()


def dead_show(project: Project, task: str, backend: Backend | None = None) -> dict[str, Any]:
    """One dead task: its message, its failures in this run, its last error."""
    backend = backend or open_backend(project)
    matches = [d for d in backend.queue.list_dead() if d.task_id.startswith(task)]
    if not matches:
        raise InputError(
            "argument", "TASK", f"no dead task id starts with {task!r}", "see `ds dead list`"
        )
    dead = matches[0]
    records = records_for(project, backend, require_state(project, backend.storage))
    failures = [asdict(f) for f in records.failures_of(dead.task_id)]
    return {
        "task_id": dead.task_id,
        "receive_count": dead.receive_count,
        "error": dead.error or (failures[-1]["error"] if failures else ""),
        "body": json.loads(dead.body),
        "failures": failures,
    }


def dead_redrive(
    project: Project, tasks: list[str] | None = None, backend: Backend | None = None
) -> int:
    """Put dead tasks (all, or those whose ids start with the given prefixes) back on the
    queue; returns how many. When the run is finished (its queue may be gone), a new run is
    set up to take them. `ds start-cluster` and `ds monitor` then process them."""
    backend = backend or open_backend(project)
    dead = backend.queue.list_dead()
    chosen = dead
    if tasks:
        chosen = []
        for prefix in tasks:
            found = [d for d in dead if d.task_id.startswith(prefix)]
            if not found:
                raise InputError(
                    "argument",
                    "TASK",
                    f"no dead task id starts with {prefix!r}",
                    "see `ds dead list`",
                )
            chosen.extend(found)
    state = require_state(project, backend.storage)
    if not state.active:
        state = lifecycle.setup(project, backend)
    moved = backend.queue.redrive([d.task_id for d in chosen] if tasks else None)
    records = lifecycle.records_for(project, backend, state)
    records.write_manifest(
        f"redrive-{time.time_ns()}", (ManifestEntry(d.task_id, _group_of(d)) for d in chosen)
    )
    state.submitted += moved
    save_state(project, state, backend.storage)
    return moved


def _group_of(dead: DeadTask) -> Any:
    try:
        return Task.from_body(dead.body).group
    except ValueError:
        return None
