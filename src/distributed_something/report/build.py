"""Builds the run report from the run's records and the dead-letter store."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from typing import Any

from distributed_something.interfaces.queue import Queue
from distributed_something.records import RunRecords
from distributed_something.state import RunState

OUTCOMES = ("done", "skipped", "failed", "dead", "pending")


@dataclass
class TaskReport:
    """One task's outcome in this run.

    ``outcome``: done (ran and succeeded), skipped (found done already), dead (dead-lettered
    after its last allowed attempt), failed (its last attempt failed and it awaits a retry),
    pending (not finished yet).
    """

    id: str
    group: Any
    outcome: str
    attempts: int
    duration: float | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    duplicate: bool = False
    finished_at: float | None = None


_TASK_FIELDS = fields(TaskReport)


@dataclass
class RunReport:
    """The whole run: counts by outcome and one entry per submitted task."""

    app_name: str
    run_id: str
    backend: str
    created_at: float
    finished_at: float | None
    counts: dict[str, int]
    tasks: list[TaskReport]
    duration_stats: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (it shares the tasks' groups and lists: read only).

        Built field by field: ``dataclasses.asdict`` deep-copies every task, which took
        longer than building the report itself for 2,000 tasks."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tasks"] = [{f.name: getattr(t, f.name) for f in _TASK_FIELDS} for t in self.tasks]
        return data

    @property
    def ok(self) -> bool:
        """True when nothing is dead, failed or pending."""
        return all(self.counts[k] == 0 for k in ("dead", "failed", "pending"))


def build_report(
    records: RunRecords, queue: Queue, state: RunState, *, image_entrypoint: bool = False
) -> RunReport:
    """Account for every task of the run's manifest, in submission order.

    With ``image_entrypoint`` the tasks were processed by the container image's own worker
    (the family's images), which writes no records and deletes a message only when its task
    succeeded: once the queue is drained, a task that is not dead is done.
    """
    dead = {d.task_id: d for d in queue.list_dead()}
    deleted_means_done = image_entrypoint and queue.counts().drained
    skipped = {s.task_id for s in records.all_skips()}
    failures: dict[str, list[str | int]] = {}
    for failure in records.all_failures():
        last = failures.get(failure.task_id)
        if last is None or int(last[0]) < failure.attempt:
            failures[failure.task_id] = [failure.attempt, failure.error]
    tasks: list[TaskReport] = []
    manifest = records.manifest()
    markers = records.read_done_many([entry.task_id for entry in manifest])
    for entry in manifest:
        tid = entry.task_id
        marker = markers.get(tid)
        fail = failures.get(tid)
        if marker is not None and marker.finished_at >= state.created_at:
            in_run = [t for t in marker.completions if t >= state.created_at]
            tasks.append(
                TaskReport(
                    tid,
                    entry.group,
                    "done",
                    marker.attempt,
                    marker.duration,
                    marker.outputs,
                    duplicate=len(in_run) > 1,
                    finished_at=marker.finished_at,
                )
            )
        elif tid in skipped:
            tasks.append(TaskReport(tid, entry.group, "skipped", 1))
        elif tid in dead:
            error = dead[tid].error or (str(fail[1]) if fail else "")
            tasks.append(TaskReport(tid, entry.group, "dead", dead[tid].receive_count, error=error))
        elif fail is not None:
            tasks.append(TaskReport(tid, entry.group, "failed", int(fail[0]), error=str(fail[1])))
        elif deleted_means_done:
            tasks.append(TaskReport(tid, entry.group, "done", 1))
        else:
            tasks.append(TaskReport(tid, entry.group, "pending", 0))
    counts, stats = tally(tasks)
    return RunReport(
        app_name=state.app_name,
        run_id=state.run_id,
        backend=state.backend,
        created_at=state.created_at,
        finished_at=state.finished_at,
        counts=counts,
        tasks=tasks,
        duration_stats=stats,
    )


def tally(tasks: list[TaskReport]) -> tuple[dict[str, int], dict[str, float]]:
    """Counts by outcome (plus ``total`` and ``duplicates``) and duration statistics."""
    counts = {k: 0 for k in OUTCOMES}
    for task in tasks:
        counts[task.outcome] += 1
    counts["total"] = len(tasks)
    counts["duplicates"] = sum(1 for t in tasks if t.duplicate)
    return counts, _stats([t.duration for t in tasks if t.duration is not None])


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
        "total": sum(ordered),
    }
