"""Builds the run report from the run's records and the dead-letter store."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field, fields
from typing import Any

from distributed_something.ledger import Ledger, read_ledger
from distributed_something.records import Failure, RunRecords
from distributed_something.report.context import ReportContext
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
    #: why the last failed attempt failed (``exit``, ``memory``, ``timeout`` …), when recorded
    cause: str | None = None
    #: the first meaningful error line of the last failure (see `first_error_line`)
    first_error: str | None = None
    #: the end of the last failed attempt's log (failed and dead tasks)
    log_tail: str | None = None
    #: the storage prefix its outputs were stored under (done tasks)
    output_prefix: str = ""
    #: the estimated cost of all its attempts (USD; see `report.cost`), None when unpriced
    cost_usd: float | None = None


@dataclass(frozen=True)
class AttemptSpan:
    """One attempt as the timeline draws it: on which worker, when (Unix seconds; ``end``
    None while it runs), for which task and how it ended (`records.ATTEMPT_OUTCOMES`)."""

    worker: str
    task_id: str
    start: float
    end: float | None
    outcome: str


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
    #: where output prefixes and this run's logs are (a folder or ``s3://…``; "" unknown)
    outputs_location: str = ""
    logs_location: str = ""
    #: the run's estimated cost (``usd``, ``usd_per_hour``, ``slots``, ``attempts``,
    #: ``basis``; see `report.cost`), or None with ``cost_note`` saying why
    cost: dict[str, Any] | None = None
    cost_note: str = ""
    #: every attempt for the timeline (not in the JSON: `ds report --trace` lists them)
    timeline: list[AttemptSpan] = field(default_factory=list)
    timeline_note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (it shares the tasks' groups and lists: read only).

        Built field by field: ``dataclasses.asdict`` deep-copies every task, which took
        longer than building the report itself for 2,000 tasks."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "timeline"}
        data["tasks"] = [{f.name: getattr(t, f.name) for f in _TASK_FIELDS} for t in self.tasks]
        return data

    @property
    def ok(self) -> bool:
        """True when nothing is dead, failed, running or pending."""
        return all(self.counts[k] == 0 for k in ("dead", "failed", "running", "pending"))


def build_report(
    records: RunRecords, state: RunState, context: ReportContext | None = None
) -> RunReport:
    """Account for every task of the run's manifest, in submission order, with the state
    the ledger gives it (so `ds status` and the report never disagree), and the details of
    its records: duration and outputs of a done task, the last error of a failed or dead one.
    Its attempts give the timeline and, with ``context``'s pricing, the cost (see
    `trace.attach_attempts`); ``context`` also says where outputs and logs are.
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
                    output_prefix=marker.output_prefix if marker else "",
                )
            )
            continue
        error = fail.error if fail is not None else mark_errors.get(tid)
        if outcome in ("pending", "running", "skipped"):
            error = None if outcome != "pending" or fail is None else fail.error
        shown = fail if fail is not None and error is not None else None
        tasks.append(
            TaskReport(
                tid,
                entry.group,
                outcome,
                entry.attempts if outcome != "skipped" else 1,
                error=error,
                duplicate=entry.duplicate,
                cause=failure_cause(shown) if shown is not None else None,
                first_error=(
                    first_error_line(shown.log_tail, shown.error) if shown is not None else error
                ),
                log_tail=shown.log_tail if shown is not None else None,
            )
        )
    counts, stats = tally(tasks)
    report = RunReport(
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
    from distributed_something.report.trace import attach_attempts  # it imports this module

    attach_attempts(report, records, context or ReportContext())
    return report


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


# --- failures for people -------------------------------------------------------------------

#: Our own header lines at the top of every task log (`worker.loop`): never the error.
_HEADER = re.compile(r"^ds: (task \S+ attempt |argv )")
#: Words that make a log line look like an error message.
_ERROR_WORDS = re.compile(
    r"(?i)(error|exception|fatal|fail|cannot|can't|could not|couldn't|not found|no such|"
    r"denied|killed|abort|panic|invalid|segmentation fault|out of memory|traceback|"
    r"unable to|missing|refused)"
)
#: ANSI escape sequences (CSI, OSC, two-character ESC) and other control characters, as a
#: log's first error line must print as plain text in a table.
_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-Z\\^-~]"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_LINE_CHARS = 300


def failure_cause(failure: Failure) -> str | None:
    """The failure's recorded cause (``exit``, ``memory`` …); None for records written
    before causes were kept."""
    cause = getattr(failure, "cause", None)
    return str(cause) if cause else None


def first_error_line(log_tail: str, error: str) -> str:
    """The first line of ``log_tail`` that says what went wrong, else ``error``.

    Our ``ds:`` header lines are passed over; the first other line that looks like an error
    (it names an error, exception, failure, a missing file …) is taken, with control
    sequences removed and clipped to 300 characters. A Python traceback gives its exception
    line (``ValueError: …``), the line that explains it, not ``Traceback (most recent …``.
    """
    lines = [_CONTROLS.sub("", line).strip() for line in log_tail.splitlines()]
    for index, line in enumerate(lines):
        if not line or _HEADER.match(line) or not _ERROR_WORDS.search(line):
            continue
        if line.startswith("Traceback (most recent call last)"):
            # The exception line is the first one after the indented frames.
            raw = log_tail.splitlines()
            for later, text in zip(raw[index + 1 :], lines[index + 1 :], strict=True):
                if text and not later[:1].isspace():
                    return _clip(text)
        return _clip(line)
    return error


def short_group(group: Any, limit: int = 40) -> str:
    """A task's group as a table shows it: its job values (``f07``; ``Plate=P1, Well=A01``
    for several), clipped to ``limit`` characters with ``…``."""
    if isinstance(group, dict):
        values = list(group.items())
        if len(values) == 1:
            text = _scalar(values[0][1])
        else:
            text = ", ".join(f"{k}={_scalar(v)}" for k, v in values)
    elif isinstance(group, list):
        text = ", ".join(_scalar(v) for v in group)
    else:
        text = _scalar(group)
    text = _CONTROLS.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except ValueError:  # a circular structure
        return repr(value)


def _clip(text: str) -> str:
    return text if len(text) <= _LINE_CHARS else text[: _LINE_CHARS - 1] + "…"
