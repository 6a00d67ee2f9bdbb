"""Builds the run report from the run's records and the dead-letter store."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from typing import Any

from distributed_something.ledger import Ledger, read_ledger
from distributed_something.records import Failure, RunRecords
from distributed_something.state import RunState

OUTCOMES = ("done", "skipped", "running", "failed", "dead", "pending")


@dataclass
class TaskReport:
    """One task's outcome in this run.

    ``outcome``: done (ran and succeeded), skipped (found done already), dead (dead-lettered
    after its last allowed attempt), failed (its last attempt failed and it awaits a retry),
    running (an attempt is under way), pending (not started, or handed back).
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
    #: records that could not be read: key → what is wrong and how to repair it
    corrupt: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (it shares the tasks' groups and lists: read only).

        Built field by field: ``dataclasses.asdict`` deep-copies every task, which took
        longer than building the report itself for 2,000 tasks."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tasks"] = [{f.name: getattr(t, f.name) for f in _TASK_FIELDS} for t in self.tasks]
        return data

    @property
    def ok(self) -> bool:
        """True when nothing is dead, failed, running or pending."""
        return all(self.counts[k] == 0 for k in ("dead", "failed", "running", "pending"))


def build_report(records: RunRecords, state: RunState) -> RunReport:
    """Account for every task of the run's manifest, in submission order, with the state
    the ledger gives it (so `ds status` and the report never disagree), and the details of
    its records: duration and outputs of a done task, the last error of a failed or dead one.
    """
    ledger = read_ledger(records)
    tasks_by_state = ledger.tasks
    failures: dict[str, Failure] = {}
    for failure in records.all_failures():
        last = failures.get(failure.task_id)
        if last is None or last.at < failure.at:
            failures[failure.task_id] = failure
    done_ids = [t.id for t in tasks_by_state.values() if t.state == "done"]
    markers = records.read_done_many(done_ids)
    mark_errors = _dead_mark_errors(records, ledger, failures)
    tasks: list[TaskReport] = []
    for entry in tasks_by_state.values():
        tid = entry.id
        outcome = entry.state
        fail = failures.get(tid)
        if outcome == "done":
            marker = markers.get(tid)
            tasks.append(
                TaskReport(
                    tid,
                    entry.group,
                    "done",
                    marker.attempt if marker else max(entry.attempts, 1),
                    marker.duration if marker else None,
                    marker.outputs if marker else [],
                    duplicate=entry.duplicate,
                    finished_at=marker.finished_at if marker else None,
                )
            )
            continue
        error = fail.error if fail is not None else mark_errors.get(tid)
        if outcome in ("pending", "running", "skipped"):
            error = None if outcome != "pending" or fail is None else fail.error
        tasks.append(
            TaskReport(
                tid,
                entry.group,
                outcome,
                entry.attempts if outcome != "skipped" else 1,
                error=error,
                duplicate=entry.duplicate,
            )
        )
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
        corrupt=dict(records.corrupt),
    )


def _dead_mark_errors(
    records: RunRecords, ledger: Ledger, failures: dict[str, Failure]
) -> dict[str, str]:
    """The errors of dead tasks that have no failure record (found in the dead-letter store
    by the monitor, or given up after leaving the queue): read from their dead marks."""
    wanted = {t.id for t in ledger.tasks.values() if t.state == "dead" and t.id not in failures}
    if not wanted:
        return {}
    out: dict[str, str] = {}
    for mark in records.marks():
        if mark.kind == "dead" and mark.task_id in wanted:
            data = records.read_mark(mark)
            out[mark.task_id] = str((data or {}).get("error", ""))
    return out


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
