"""A per-attempt trace of a run, like Nextflow's ``trace.txt``: one TSV row per attempt.

Read from the run's attempt records (`RunRecords.attempt_keys` lists them; each is read,
several at a time on a network store). Fields a record does not hold (a worker older than
CPU and memory accounting, an attempt closed by another process as ``lost``) are empty, and
so is ``cost_usd`` where no price is known (see `report.cost`: AWS runs only).

The same attempts give the HTML report its timeline of workers and its costs
(`read_report_attempts`), for runs of at most `MAX_REPORT_ATTEMPTS` attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distributed_something.atomicfile import write_text_atomically
from distributed_something.ledger import read_ledger
from distributed_something.records import AttemptKey, RunRecords, attempts_ran_by
from distributed_something.report.build import AttemptSpan, RunReport, short_group
from distributed_something.report.context import ReportContext, join_location
from distributed_something.report.cost import NO_PRICE, Pricing

#: The trace's columns, in order.
COLUMNS = (
    "task_id",
    "group",
    "attempt",
    "start",
    "end",
    "wall_seconds",
    "cpu_seconds",
    "peak_memory_mb",
    "exit_code",
    "cause",
    "worker",
    "outcome",
    "cost_usd",
    "receive",
)

MAX_REPORT_ATTEMPTS = 20_000
"""Most attempts the report reads for its timeline and costs: each is one read, and a run
of a million tasks would wait minutes for them. Larger runs get a note; their trace
(`write_trace`) lists every attempt with its cost."""


@dataclass(frozen=True)
class TraceRow:
    """One attempt of one task (see `COLUMNS`); times are Unix seconds."""

    task_id: str
    group: Any
    attempt: int
    start: float
    end: float | None
    cpu_seconds: float | None
    peak_memory_mb: float | None
    exit_code: int | None
    cause: str | None
    worker: str
    outcome: str
    #: the attempt's estimated cost (USD), None when unpriced or still running
    cost_usd: float | None = None
    #: its message's receive count (``attempt`` counts the task's attempts as they ran; a
    #: redrive starts this again at 1), for a queue's retry limit; None: as ``attempt``
    receive: int | None = None

    @property
    def wall_seconds(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    def cells(self) -> list[str]:
        """The row as TSV cells: times in ISO 8601 UTC, numbers as written, None empty."""
        return [
            self.task_id,
            short_group(self.group, limit=200),
            str(self.attempt),
            _iso(self.start),
            _iso(self.end),
            _num(self.wall_seconds),
            _num(self.cpu_seconds),
            _num(self.peak_memory_mb),
            "" if self.exit_code is None else str(self.exit_code),
            self.cause or "",
            self.worker,
            self.outcome,
            "" if self.cost_usd is None else f"{self.cost_usd:.6f}",
            str(self.attempt if self.receive is None else self.receive),
        ]


def read_attempts(records: RunRecords, keys: Sequence[AttemptKey]) -> list[dict[str, Any]]:
    """The attempt records named by ``keys``, in order (``{}`` for one that is gone or
    unreadable: it is noted in ``records.corrupt`` when unreadable), read as
    `RunRecords.read_json_many` does. One closed between the listing and the read is gone:
    its key says enough."""
    return [data or {} for data in records.read_json_many([records.key_of(k) for k in keys])]


def trace_rows(records: RunRecords, pricing: Pricing | None = None) -> list[TraceRow]:
    """Every attempt of the run, oldest first, with its task's group from the manifest and,
    with ``pricing``, its estimated cost."""
    groups = {t.id: t.group for t in read_ledger(records).tasks.values()}
    keys = records.attempt_keys()
    return _rows(keys, read_attempts(records, keys), groups, pricing)


def _rows(
    keys: Sequence[AttemptKey],
    datas: Sequence[dict[str, Any]],
    groups: dict[str, Any],
    pricing: Pricing | None,
) -> list[TraceRow]:
    # An attempt's number is counted among its task's as "tries" counts them.
    of_task: dict[str, list[AttemptKey]] = {}
    for key in keys:
        of_task.setdefault(key.task_id, []).append(key)
    rows = []
    for key, data in zip(keys, datas, strict=True):
        start = _float(data.get("started_at")) or key.started_us / 1e6
        end = _float(data.get("ended_at"))
        cost = None
        worker = str(data.get("worker") or "")
        if pricing is not None and end is not None:
            cost = pricing.attempt_cost(end - start, worker=worker, start=start)
        rows.append(
            TraceRow(
                task_id=key.task_id,
                group=groups.get(key.task_id),
                attempt=attempts_ran_by(of_task[key.task_id], key.started_us) or key.attempt,
                start=start,
                end=end,
                cpu_seconds=_float(data.get("cpu_seconds")),
                peak_memory_mb=_float(data.get("peak_memory_mb")),
                exit_code=data.get("exit_code") if isinstance(data.get("exit_code"), int) else None,
                cause=str(data["cause"]) if data.get("cause") else None,
                worker=worker,
                outcome=key.outcome,
                cost_usd=cost,
                receive=key.attempt,
            )
        )
    return rows


@dataclass
class ReportAttempts:
    """What a run's attempts and the report context tell the report (`read_report_attempts`):
    where outputs and logs are, the timeline, the cost of the run (``cost``, None with
    ``cost_note`` saying why) and of each task that has a priced attempt (``task_costs``,
    None without a price), or notes saying why the attempts were not read."""

    outputs_location: str = ""
    logs_location: str = ""
    timeline: list[AttemptSpan] = field(default_factory=list)
    timeline_note: str = ""
    cost: dict[str, Any] | None = None
    cost_note: str = ""
    task_costs: dict[str, float] | None = None

    def apply(self, report: RunReport, costs_of_tasks: bool = True) -> None:
        """Give ``report`` all this (and, when ``costs_of_tasks``, each listed task its cost;
        a streamed report gives the tasks theirs as they stream by)."""
        report.outputs_location = self.outputs_location
        report.logs_location = self.logs_location
        report.timeline = self.timeline
        report.timeline_note = self.timeline_note
        report.cost = self.cost
        report.cost_note = self.cost_note
        if costs_of_tasks and self.task_costs is not None:
            for task in report.tasks:
                task.cost_usd = self.task_costs.get(task.id)


def read_report_attempts(
    records: RunRecords,
    context: ReportContext,
    backend: str,
    keys: Sequence[AttemptKey] | None = None,
    count: int | None = None,
) -> ReportAttempts:
    """What the run's attempts (``keys``, oldest first, of ``count`` attempts; both listed
    here when not given; ``keys`` None when the caller kept none of more than
    `MAX_REPORT_ATTEMPTS`) and ``context`` tell a report of a run on ``backend``: where
    outputs and logs are, the timeline (one span per attempt), and with
    ``context.pricing`` the cost of each task (all its finished attempts) and of the run;
    without a price ``cost_note`` says why there is none. Runs of more than
    `MAX_REPORT_ATTEMPTS` attempts get notes instead of the timeline and costs. Unreadable
    attempt records are added to ``records.corrupt``."""
    found = ReportAttempts(
        outputs_location=context.outputs_location,
        logs_location=join_location(context.records_location, records.run_prefix + "logs/"),
    )
    pricing = context.pricing
    if pricing is None:
        found.cost_note = (
            NO_PRICE.format(backend=backend)
            if context.records_location
            else "no price was given: cost is shown for AWS runs only"
        )
    if keys is None and count is None:
        keys = records.attempt_keys()
    total = count if count is not None else len(keys or ())
    if keys is None or total > MAX_REPORT_ATTEMPTS:
        more = (
            f"this run has {total:,} attempts; the report reads at most "
            f"{MAX_REPORT_ATTEMPTS:,}: `ds report --trace trace.tsv` lists every attempt"
        )
        found.timeline_note = more
        if pricing is not None:
            found.cost_note = more + " with its cost"
        return found
    rows = _rows(keys, read_attempts(records, keys), {}, pricing)
    found.timeline = [AttemptSpan(r.worker, r.task_id, r.start, r.end, r.outcome) for r in rows]
    if pricing is None:
        return found
    per_task: dict[str, float] = {}
    for row in rows:
        if row.cost_usd is not None:
            per_task[row.task_id] = per_task.get(row.task_id, 0.0) + row.cost_usd
    found.task_costs = per_task
    priced = [r for r in rows if r.cost_usd is not None]
    found.cost = {
        "usd": sum(r.cost_usd or 0.0 for r in priced),
        "usd_per_hour": pricing.usd_per_hour,
        "slots": pricing.slots,
        "attempts": len(priced),
        # of them, those priced at their machine's spot price history (the rest: usd_per_hour)
        "spot_attempts": sum(1 for r in priced if pricing.spot_priced(r.worker)),
        "open_attempts": len(rows) - len(priced),
        # The report may list a sample of the tasks: the count of priced ones is kept here.
        "tasks": len(per_task),
        "basis": pricing.basis,
    }
    return found


def attach_attempts(report: RunReport, records: RunRecords, context: ReportContext) -> None:
    """Give ``report`` what its attempts and ``context`` tell (`read_report_attempts`, the
    attempts listed here), each listed task its cost included; unreadable attempt records
    are added to ``report.corrupt``."""
    read_report_attempts(records, context, report.backend).apply(report)
    report.corrupt.update(records.corrupt)


def write_trace(records: RunRecords, path: Path, pricing: Pricing | None = None) -> int:
    """Write the run's trace as TSV (a header of `COLUMNS`, then one row per attempt; with
    ``pricing`` each finished attempt's ``cost_usd``) to ``path`` atomically; returns the
    number of attempts written."""
    rows = trace_rows(records, pricing)
    lines = [_tsv(COLUMNS), *(_tsv(r.cells()) for r in rows)]
    write_text_atomically(path, "".join(lines))
    return len(rows)


def _tsv(cells: Sequence[str]) -> str:
    # Tabs and line ends inside a cell (a group value) would break the columns.
    clean = [c.replace("\t", " ").replace("\r", " ").replace("\n", " ") for c in cells]
    return "\t".join(clean) + "\n"


def _iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


__all__ = [
    "COLUMNS",
    "MAX_REPORT_ATTEMPTS",
    "ReportAttempts",
    "TraceRow",
    "attach_attempts",
    "read_attempts",
    "read_report_attempts",
    "trace_rows",
    "write_trace",
]
