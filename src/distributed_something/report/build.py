"""Builds the run report from the run's records, streamed (a few bytes a task in memory)."""

from __future__ import annotations

import itertools
import json
import re
import statistics
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from distributed_something.errors import BackendError
from distributed_something.interfaces.fork import ForkCall
from distributed_something.ledger import DONE_ATTEMPT, STATES, event_code, state_of
from distributed_something.records import (
    Attempt,
    AttemptKey,
    DoneMarker,
    Failure,
    RunRecords,
    attempts_ran,
)
from distributed_something.report.context import ReportContext
from distributed_something.state import RunState
from distributed_something.worker.causes import first_meaningful_line

#: A task's outcomes in the report: the ledger's states, in the same order.
OUTCOMES = STATES


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
    #: the bucket they were stored in when its recipe named one; "" for the config's
    #: destination bucket (`RunReport.outputs_location`)
    output_bucket: str = ""
    #: the estimated cost of all its attempts (USD; see `report.cost`), None when unpriced
    cost_usd: float | None = None
    #: a done task that needed more than one attempt: why the last failed one failed (its
    #: cause and first error line, ``exit: command exited with code 5: …``), or
    #: ``interrupted or lost`` when none failed (handed back, its worker gone)
    retried_after: str | None = None


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


#: Tasks of each outcome other than dead and failed (all listed) that a report holds in
#: memory and shows (`RunReport.tasks`); the rest are only counted, plotted and written to
#: the per-task files beside it (report.tsv, report.json).
SAMPLE = 2000


@dataclass
class RunReport:
    """The whole run: counts by outcome and the tasks it lists.

    ``tasks`` lists every dead, failed and running task and the first `SAMPLE` tasks of
    each other outcome, in submission order (all tasks of a run that small);
    ``listed_all`` says whether that is every task. ``durations`` and ``finish_times`` hold
    those of every done task (for statistics and plots over all tasks)."""

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
    #: where each bucket a task's recipe named instead of the destination bucket is
    #: (`TaskReport.output_bucket`)
    bucket_locations: dict[str, str] = field(default_factory=dict)
    #: the run's estimated cost (``usd``, ``usd_per_hour``, ``slots``, ``attempts``,
    #: ``spot_attempts``, ``open_attempts``, ``tasks``, ``basis``; see `report.cost`), or
    #: None with ``cost_note`` saying why
    cost: dict[str, Any] | None = None
    cost_note: str = ""
    #: every attempt for the timeline (not in the JSON: `ds report --trace` lists them)
    timeline: list[AttemptSpan] = field(default_factory=list)
    timeline_note: str = ""
    listed_all: bool = True
    #: done tasks that needed more than one attempt, by the cause of their last failed one
    #: (``interrupted or lost`` when none failed): every task's, listed or not
    retried: dict[str, int] = field(default_factory=dict)
    #: done tasks with fewer outputs than ``expected_outputs`` (`ReportContext`), which the
    #: count rule does not take as done: the next submit runs them again
    short_of_expected: int = 0
    expected_outputs: int | None = None
    #: None: take them from ``tasks`` (a report made by hand, with all its tasks)
    durations: Sequence[float] | None = None
    finish_times: Sequence[float] | None = None
    #: True when another command (`ds cleanup`) ended the run this report's `ds run` or
    #: `ds monitor` was watching (not in the JSON: it is about that watch, not the run)
    ended_elsewhere: bool = False

    @property
    def all_durations(self) -> Sequence[float]:
        """The duration of every done task that has one."""
        if self.durations is not None:
            return self.durations
        return [t.duration for t in self.tasks if t.duration is not None]

    @property
    def all_finish_times(self) -> Sequence[float]:
        """The finish time of every done task that has one."""
        if self.finish_times is not None:
            return self.finish_times
        return [
            t.finished_at for t in self.tasks if t.outcome == "done" and t.finished_at is not None
        ]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (it shares the tasks' groups and lists: read only);
        the durations and finish times (the tasks carry theirs) and the timeline are left
        out.

        Built field by field: ``dataclasses.asdict`` deep-copies every task, which took
        longer than building the report itself for 2,000 tasks."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_JSON}
        data["tasks"] = [task_json(t) for t in self.tasks]
        return data

    def retried_text(self) -> str | None:
        """ "3 tasks were done after a retry (exit ×2, interrupted or lost ×1)", or None when
        every done task was done at its first attempt."""
        if not self.retried:
            return None
        total = sum(self.retried.values())
        ranked = sorted(self.retried.items(), key=lambda item: (-item[1], item[0]))
        causes = ", ".join(f"{cause} ×{count}" for cause, count in ranked)
        tasks = "1 task was" if total == 1 else f"{total} tasks were"
        return f"{tasks} done after a retry ({causes})"

    def short_text(self) -> str | None:
        """What `short_of_expected` means for the user, or None when it is 0."""
        if not self.short_of_expected:
            return None
        n = self.short_of_expected
        tasks = "1 task was" if n == 1 else f"{n} tasks were"
        return (
            f"{tasks} done with fewer outputs than check_if_done.expected_number_files "
            f"({self.expected_outputs}): the count decides what is done, so submitting the "
            "job again runs them again"
        )

    @property
    def ok(self) -> bool:
        """True when nothing is dead, failed, running or pending."""
        return all(self.counts[k] == 0 for k in ("dead", "failed", "running", "pending"))


#: Left out of the JSON: the arrays for plots (the tasks carry their values) and the
#: timeline (one entry per attempt: `ds report --trace` lists them).
_NOT_JSON = ("durations", "finish_times", "timeline", "ended_elsewhere")


def task_json(task: TaskReport) -> dict[str, Any]:
    """One task as the JSON report holds it: its fields, in order."""
    data = task.__dict__
    if len(data) == len(_TASK_FIELDS):  # its fields only, set in order by __init__
        return dict(data)
    return {f.name: getattr(task, f.name) for f in _TASK_FIELDS}


class TaskPart(Protocol):
    """Where another process writes the tasks of a later part of the manifest."""

    def add(self, task: TaskReport) -> None: ...

    def close(self) -> None: ...


_Part = TypeVar("_Part", bound=TaskPart)


class PartedSink(Protocol[_Part]):
    """The per-task output of a report (``on_task``'s) that a forked process can write part
    of: ``part()`` is made before the fork and filled by the child; ``join(part)`` puts
    what it holds after the tasks given so far; ``drop(part)`` throws it away."""

    def part(self) -> _Part: ...

    def join(self, part: _Part) -> None: ...

    def drop(self, part: _Part) -> None: ...


#: A run of at least this many tasks is read by two processes when the backend can fork a
#: reader (`build_report`'s ``fork``): the second half of the manifest in a forked child.
SPLIT_MIN_TASKS = 50_000


def build_report(
    records: RunRecords,
    state: RunState,
    context: ReportContext | None = None,
    on_task: Callable[[TaskReport], object] | None = None,
    *,
    fork: ForkCall | None = None,
    parts: PartedSink[Any] | None = None,
) -> RunReport:
    """Account for every task of the run's manifest, in submission order, with the state
    the ledger gives it (so `ds status` and the report never disagree), and the details of
    its records: duration and outputs of a done task, the last error of a failed or dead one.

    The records are streamed: each task's `TaskReport` is made, passed to ``on_task`` (the
    per-task files are written from there) and kept only when listed (`RunReport.tasks`);
    what stays in memory per task is its ledger code and, for a done task, two floats. The
    reading is whole: it does not use the ledger summary (summary.py) `ds status` reads,
    and so checks it.

    Its attempts give the timeline and, with ``context``'s pricing, the cost of each task
    and of the run (`trace.read_report_attempts`: runs of at most
    `trace.MAX_REPORT_ATTEMPTS` attempts; their keys are kept from the same listing that
    gives the codes, so a bigger run holds none); ``context`` also says where outputs and
    logs are.

    With ``fork`` (the backend's `ForkCall`: the local records, where the reading is CPU
    work on a machine with cores to spare), a run of `SPLIT_MIN_TASKS` or more is read by
    two processes: the second half of the manifest by a forked child, its tasks given to a
    part of ``parts`` (required with ``on_task``) and joined after the first half's. The
    report is the one reading alone would make; a child that fails has its half read here.
    """
    from distributed_something.report import trace  # it imports this module

    kept = _KeptKeys(trace.MAX_REPORT_ATTEMPTS)
    codes = read_task_codes(records, kept.add)
    found = trace.read_report_attempts(
        records, context or ReportContext(), state.backend, kept.keys, kept.count
    )
    skipped = records.skipped_ids()
    failures: dict[str, Failure] = {}
    failed_times: dict[str, int] = {}
    for failure in records.all_failures():
        last = failures.get(failure.task_id)
        failed_times[failure.task_id] = failed_times.get(failure.task_id, 0) + 1
        if last is None or last.at < failure.at:
            failures[failure.task_id] = failure
    dead = {
        tid: ran for tid, (code, _, ran) in codes.items() if code == "dead" and tid not in skipped
    }
    for tid in _died_last(records, failures, failed_times, dead):
        del failures[tid]  # a death made it dead, not its last failure
    dead_marked = {tid for tid in dead if tid not in failures}
    reading = _Reading(
        records,
        codes,
        skipped,
        failures,
        _dead_mark_errors(records, dead_marked),
        _dead_attempt_causes(records, dead_marked),
        found.task_costs,
        (context or ReportContext()).locate or (lambda _bucket: ""),
        (context or ReportContext()).expected_outputs,
    )
    tally = _read_split(reading, on_task, fork, parts)
    report = RunReport(
        app_name=state.app_name,
        run_id=state.run_id,
        backend=state.backend,
        created_at=state.created_at,
        finished_at=state.finished_at,
        counts=tally.counts | {"total": sum(tally.counts.values()), "duplicates": tally.duplicates},
        tasks=tally.listed,
        duration_stats=_stats(sorted(tally.durations)),
        corrupt=dict(records.corrupt),
        listed_all=len(tally.listed) == sum(tally.counts.values()),
        retried=tally.retried,
        short_of_expected=tally.short,
        expected_outputs=(context or ReportContext()).expected_outputs,
        durations=tally.durations,
        finish_times=tally.finish_times,
        bucket_locations=tally.bucket_locations,
    )
    found.apply(report, costs_of_tasks=False)  # the tasks got theirs as they streamed by
    return report


@dataclass
class _Reading:
    """What every task's report is made from, read before the tasks are (`_tally`)."""

    records: RunRecords
    codes: dict[str, tuple[str, bool, int]]
    skipped: set[str]
    failures: dict[str, Failure]
    mark_errors: dict[str, str]
    #: the cause of the last attempt of each dead task without a failure record (its
    #: worker died on it: ``lost``), from its attempt records
    mark_causes: dict[str, str]
    task_costs: dict[str, float] | None
    locate: Callable[[str], str]
    #: `ReportContext.expected_outputs`
    expected_outputs: int | None = None


@dataclass
class _Tally:
    """The tasks of a stretch of the manifest, counted (`_tally`); two in order add up
    (`join`) to what one over both would be."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    duplicates: int = 0
    retried: dict[str, int] = field(default_factory=dict)
    short: int = 0
    durations: array[float] = field(default_factory=lambda: array("d"))
    finish_times: array[float] = field(default_factory=lambda: array("d"))
    listed: list[TaskReport] = field(default_factory=list)
    bucket_locations: dict[str, str] = field(default_factory=dict)
    corrupt: dict[str, str] = field(default_factory=dict)

    def join(self, later: _Tally) -> None:
        """Add ``later``'s tasks, which follow these; its listed tasks of sampled outcomes
        beyond `SAMPLE` (counting these) are left out, as one tally would have."""
        shown = dict(self.counts)
        for task in later.listed:
            shown[task.outcome] += 1
            if task.outcome in ("dead", "failed", "running") or shown[task.outcome] <= SAMPLE:
                self.listed.append(task)
        for outcome, count in later.counts.items():
            self.counts[outcome] += count
        self.duplicates += later.duplicates
        self.short += later.short
        for cause, count in later.retried.items():
            self.retried[cause] = self.retried.get(cause, 0) + count
        self.durations.extend(later.durations)
        self.finish_times.extend(later.finish_times)
        self.bucket_locations.update(later.bucket_locations)
        self.corrupt.update(later.corrupt)


def _read_split(
    reading: _Reading,
    on_task: Callable[[TaskReport], object] | None,
    fork: ForkCall | None,
    parts: PartedSink[Any] | None,
) -> _Tally:
    """Every task's `_tally`: the second half of the manifest in a forked child where
    `build_report` says so, else all here."""
    total = len(reading.records.manifest_ids()) if fork is not None else 0
    if fork is None or total < SPLIT_MIN_TASKS or (on_task is not None and parts is None):
        return _tally(reading, on_task, 0, None)
    half = total // 2
    part = parts.part() if on_task is not None and parts is not None else None

    def second_half() -> _Tally:
        later = _tally(reading, part.add if part is not None else None, half, None)
        if part is not None:
            part.close()
        return later

    child = fork(second_half)
    if child is None:  # not now (another thread runs): all here
        if part is not None and parts is not None:
            parts.drop(part)
        return _tally(reading, on_task, 0, None)
    try:
        tally = _tally(reading, on_task, 0, half)
    except BaseException:
        child.cancel()
        if part is not None and parts is not None:
            parts.drop(part)
        raise
    try:
        later = child.result()
    except BackendError:  # read that half here, after the first
        if part is not None and parts is not None:
            parts.drop(part)
        later = _tally(reading, on_task, half, None)
    else:
        if part is not None and parts is not None:
            parts.join(part)
    reading.records.corrupt.update(later.corrupt)
    tally.join(later)
    return tally


def _tally(
    reading: _Reading,
    on_task: Callable[[TaskReport], object] | None,
    start: int,
    stop: int | None,
) -> _Tally:
    """The `TaskReport` of each task of the manifest from ``start`` to ``stop`` (None: its
    end), passed to ``on_task``, counted and, when listed, kept."""
    tally = _Tally()
    counts, listed = tally.counts, tally.listed
    codes, failures, mark_errors = reading.codes, reading.failures, reading.mark_errors
    mark_causes = reading.mark_causes
    task_costs, locate = reading.task_costs, reading.locate
    expected = reading.expected_outputs
    bucket_locations = tally.bucket_locations
    rows = _with_markers(reading.records, codes, reading.skipped, start, stop)
    for tid, group, outcome, marker in rows:
        _, duplicate, attempts = codes.get(tid, _QUIET)
        if outcome == "done":
            task = TaskReport(
                tid,
                group,
                "done",
                # The attempts that ran, as the ledger and `ds dead list` count them: the
                # marker's number is its message's receive count, which a redrive (a new
                # message) starts again at 1. Without attempt records (a family image's
                # task, done by a mark) the marker's number is all there is.
                attempts or (marker.attempt if marker else 1),
                marker.duration if marker else None,
                marker.outputs if marker else [],
                duplicate=duplicate,
                finished_at=marker.finished_at if marker else None,
                output_prefix=marker.output_prefix if marker else "",
                output_bucket=marker.output_bucket if marker else "",
            )
            if expected is not None and marker is not None and len(task.outputs) < expected:
                tally.short += 1
            if attempts > 1 and not duplicate:
                cause, task.retried_after = _retried_after(failures.get(tid))
                tally.retried[cause] = tally.retried.get(cause, 0) + 1
            if task.output_bucket and task.output_bucket not in bucket_locations:
                bucket_locations[task.output_bucket] = locate(task.output_bucket)
            if task.duration is not None:
                tally.durations.append(task.duration)
            if task.finished_at is not None:
                tally.finish_times.append(task.finished_at)
        else:
            task = _unfinished(
                tid, group, outcome, attempts, duplicate, failures, mark_errors, mark_causes
            )
        if task_costs is not None:
            task.cost_usd = task_costs.get(tid)
        counts[outcome] += 1
        tally.duplicates += task.duplicate
        if outcome in ("dead", "failed", "running") or counts[outcome] <= SAMPLE:
            listed.append(task)
        if on_task is not None:
            on_task(task)
    tally.corrupt = dict(reading.records.corrupt)
    return tally


#: Tasks of the manifest whose done markers `_with_markers` reads together.
_MARKER_BATCH = 1000


def _with_markers(
    records: RunRecords,
    codes: dict[str, tuple[str, bool, int]],
    skipped: set[str],
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[str, Any, str, DoneMarker | None]]:
    """(task, group, outcome, done marker or None) of every task of the manifest (from
    ``start`` to ``stop``), in submission order; the markers of the done ones read
    `_MARKER_BATCH` tasks at a time (`RunRecords.read_done_of`: one read each, not a read
    per task)."""
    batch: list[tuple[str, Any, str]] = []

    def flush() -> Iterator[tuple[str, Any, str, DoneMarker | None]]:
        done = [tid for tid, _, outcome in batch if outcome == "done"]
        markers = dict(zip(done, records.read_done_of(done), strict=True))
        for tid, group, outcome in batch:
            yield tid, group, outcome, markers.get(tid)
        batch.clear()

    for tid, group in itertools.islice(records.iter_manifest(), start, stop):
        batch.append((tid, group, state_of(codes.get(tid, _QUIET)[0], tid in skipped)))
        if len(batch) >= _MARKER_BATCH:
            yield from flush()
    yield from flush()


class _KeptKeys:
    """The attempt keys of a listing while there are at most ``limit`` of them (then none,
    only their ``count``), oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._keys: list[AttemptKey] | None = []

    def add(self, keys: list[AttemptKey]) -> None:
        """Count (and keep, while within the limit) one task's attempt keys."""
        self.count += len(keys)
        if self._keys is not None:
            if self.count > self.limit:
                self._keys = None
            else:
                self._keys.extend(keys)

    @property
    def keys(self) -> list[AttemptKey] | None:
        """The keys kept, oldest first; None when there were more than the limit."""
        if self._keys is None:
            return None
        return sorted(self._keys, key=lambda a: (a.started_us, a.stem))


#: The code of a task without an attempt or a mark (see `read_task_codes`).
_QUIET = ("pending", False, 0)


def read_task_codes(
    records: RunRecords, on_attempts: Callable[[list[AttemptKey]], object] | None = None
) -> dict[str, tuple[str, bool, int]]:
    """(event code, duplicate, attempts that ran) of every task with an attempt or a mark
    (`ledger.event_code`; stood-down duplicates not counted as attempts), read from one
    streamed listing of the attempts (a task's records are listed together) and one of the
    marks; each task's attempt keys are passed to ``on_attempts`` as they are listed. Equal
    values are one shared tuple: a million tasks hold a few."""
    marks: dict[str, list[tuple[int, str]]] = {}
    for m in records.marks():
        marks.setdefault(m.task_id, []).append((m.at_us, m.kind))
    shared: dict[tuple[str, bool, int], tuple[str, bool, int]] = {}
    codes: dict[str, tuple[str, bool, int]] = {}
    done_once = (DONE_ATTEMPT, False, 1)  # what `event_code` makes of one done attempt
    for task_id, attempts in records.iter_attempts_by_task():
        if on_attempts is not None:
            on_attempts(attempts)
        if len(attempts) == 1 and attempts[0].outcome == "done" and task_id not in marks:
            codes[task_id] = done_once  # most tasks of a finished run
            continue
        events = [(a.started_us, a.outcome) for a in attempts]
        code, duplicate = event_code(events, marks.pop(task_id, []))
        ran = attempts_ran(o for _, o in events)
        value = (code, duplicate, ran)
        codes[task_id] = shared.setdefault(value, value)
    for task_id, task_marks in marks.items():
        code, duplicate = event_code([], task_marks)
        value = (code, duplicate, 0)
        codes[task_id] = shared.setdefault(value, value)
    return codes


#: `TaskReport.retried_after` of a done task none of whose attempts failed on its own.
RETRIED_UNFAILED = "interrupted or lost"


def _retried_after(failure: Failure | None) -> tuple[str, str]:
    """The cause and `TaskReport.retried_after` of a done task whose last failed attempt
    was ``failure``."""
    if failure is None:
        return RETRIED_UNFAILED, RETRIED_UNFAILED
    cause = failure_cause(failure) or "exit"
    return cause, _clip(f"{cause}: {failure.error}")


def _unfinished(
    tid: str,
    group: Any,
    outcome: str,
    attempts: int,
    duplicate: bool,
    failures: dict[str, Failure],
    mark_errors: dict[str, str],
    mark_causes: dict[str, str],
) -> TaskReport:
    """The `TaskReport` of a task that is not done."""
    fail = failures.get(tid)
    error = fail.error if fail is not None else mark_errors.get(tid)
    if outcome in ("pending", "running", "skipped"):
        error = None if outcome != "pending" or fail is None else fail.error
    shown = fail if fail is not None and error is not None else None
    if shown is not None:
        cause = failure_cause(shown)
    else:  # a dead task without a failure record: its attempts' cause (``lost``)
        cause = mark_causes.get(tid) if outcome == "dead" else None
    return TaskReport(
        tid,
        group,
        outcome,
        attempts,  # that ran: none for a task skipped as done before any ran
        error=error,
        duplicate=duplicate,
        cause=cause,
        first_error=(first_error_line(shown.log_tail, shown.error) if shown is not None else error),
        log_tail=shown.log_tail if shown is not None else None,
    )


def _died_last(
    records: RunRecords,
    failures: dict[str, Failure],
    failed_times: dict[str, int],
    dead: dict[str, int],
) -> list[str]:
    """Of the ``dead`` tasks (id -> attempts that ran) with a failure record (``failures``:
    the last of each; ``failed_times``: how many), those whose attempt after their last
    failure was lost (its worker died on it, as on every receive of the message that was
    dead-lettered then): their failure is not why they are dead. Only the attempts of tasks
    with more attempts than failures (one ended without a failure record) are read."""
    unrecorded = [
        tid for tid, ran in dead.items() if tid in failures and ran > failed_times.get(tid, 0)
    ]
    found = []
    for tid, attempts in records.ended_attempts_of(unrecorded).items():
        last = attempts[-1]
        if attempt_cause(last) == "lost" and last.started_at >= failures[tid].at:
            found.append(tid)
    return found


def _dead_mark_errors(records: RunRecords, wanted: set[str]) -> dict[str, str]:
    """The errors of dead tasks that have no failure record (found in the dead-letter store
    by the monitor, or given up after leaving the queue): read from their dead marks."""
    if not wanted:
        return {}
    out: dict[str, str] = {}
    for mark in records.marks():
        if mark.kind == "dead" and mark.task_id in wanted:
            data = records.read_mark(mark)
            out[mark.task_id] = str((data or {}).get("error", ""))
    return out


def _dead_attempt_causes(records: RunRecords, wanted: set[str]) -> dict[str, str]:
    """The cause of the last attempt that ended without the task done, of each of the dead
    tasks ``wanted`` that have no failure record (their worker died on every attempt:
    ``lost``): only these tasks' attempt records are read."""
    out: dict[str, str] = {}
    for tid, attempts in records.ended_attempts_of(sorted(wanted)).items():
        cause = attempt_cause(attempts[-1])
        if cause:
            out[tid] = cause
    return out


def tally(tasks: list[TaskReport]) -> tuple[dict[str, int], dict[str, float]]:
    """Counts by outcome (plus ``total`` and ``duplicates``) and duration statistics."""
    counts = {k: 0 for k in OUTCOMES}
    for task in tasks:
        counts[task.outcome] += 1
    counts["total"] = len(tasks)
    counts["duplicates"] = sum(1 for t in tasks if t.duplicate)
    return counts, _stats(sorted(t.duration for t in tasks if t.duration is not None))


def _stats(ordered: list[float]) -> dict[str, float]:
    """Statistics of ``ordered`` (sorted) durations."""
    if not ordered:
        return {}
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
        "total": sum(ordered),
    }


# --- failures for people -------------------------------------------------------------------

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


def attempt_cause(attempt: Attempt) -> str | None:
    """Why an attempt that did not complete its task ended so (``lost``, ``interrupted``,
    ``exit`` …, the causes of `worker.causes`): its recorded cause, else ``lost`` for an
    attempt closed as lost without one; None when not recorded."""
    if attempt.cause:
        return str(attempt.cause)
    return "lost" if attempt.outcome == "lost" else None


def first_error_line(log_tail: str, error: str) -> str:
    """The line of ``log_tail`` that says what went wrong, else ``error``: as the worker
    picks it (`worker.causes.first_meaningful_line`: a traceback's exception line, an error
    stated outright, else the last line that reads like one; never our ``ds:`` lines), with
    control sequences removed and clipped to 300 characters."""
    line = first_meaningful_line(_CONTROLS.sub("", log_tail), last_words=False)
    return _clip(line) if line else error


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
