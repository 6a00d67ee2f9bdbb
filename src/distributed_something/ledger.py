"""The ledger: every task of a run in exactly one state, decided from the run's records.

`status`, `report`, `dead list` and the monitor's "finished" decision all read the run
this way, so they never disagree. Queue counts never enter a count: they are approximate,
and a queue can be deleted (cleanup) or purged while records stay.

A task's state is a pure function of its events (`task_state`):

- ``done``: an attempt of this run completed (its done marker was written first), or —
  for the family's images, whose worker keeps no records — its message left the drained
  queue other than to the dead letters (a ``deleted`` mark);
- ``skipped``: check-if-done found it finished (at submit or by a worker);
- otherwise the latest event decides: an open attempt → ``running``; a failed attempt →
  ``failed`` (a retry follows); the last allowed attempt failed, or the task was found in the
  dead-letter store → ``dead``; an attempt handed back or lost, a redrive or a requeue →
  ``pending``; no event → ``pending``. A run torn down (`ds cleanup`) marks its failed
  tasks ``ended``: no retry will come, so they are ``pending`` (unfinished), their last
  failure kept as the cause, as the attempts it closes as lost leave theirs.

Attempts that stood down because another delivery of the task was already running
(``duplicate``) do not change the state; they are counted in ``duplicates``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed_something.records import (
    AttemptKey,
    ManifestEntry,
    Mark,
    RunRecords,
    attempts_ran,
)

#: The states a task can be in, in the order every table of counts shows them (`ds status`,
#: `ds report`, the HTML report, `--json` counts): the outcomes (done, skipped, dead), then
#: the tasks still under way, nearest to an outcome first (failed: waiting for a retry).
STATES = ("done", "skipped", "dead", "failed", "running", "pending")
#: The columns of a table of counts: the states, then their sum.
COUNT_COLUMNS = (*STATES, "total")
#: States in which nothing more will happen to a task in this run.
FINAL_STATES = frozenset({"done", "skipped", "dead"})

#: What a closed attempt's outcome means for the task (None: no change).
_OUTCOME_STATE: dict[str, str | None] = {
    "running": "running",
    "failed": "failed",
    "dead": "dead",
    "released": "pending",
    "lost": "pending",
    "duplicate": None,
    "done": "done",
}
_MARK_STATE = {
    "redrive": "pending",
    "requeue": "pending",
    "dead": "dead",
    "deleted": "done",
    "ended": "pending",
}


def task_state(
    *, skipped: bool, attempts: Sequence[tuple[int, str]], marks: Sequence[tuple[int, str]]
) -> str:
    """The state of one task from its events (see the module docstring).

    ``attempts`` are (start time in µs, outcome) and ``marks`` (time in µs, kind); both in
    any order.
    """
    if any(outcome == "done" for _, outcome in attempts):
        return "done"
    if skipped:
        return "skipped"
    events: list[tuple[int, int, str]] = []
    for at, outcome in attempts:
        state = _OUTCOME_STATE.get(outcome)
        if state is not None:
            events.append((at, 0, state))
    for at, kind in marks:
        events.append((at, 1, _MARK_STATE[kind]))
    if not events:
        return "pending"
    return max(events)[2]


@dataclass
class TaskEntry:
    """One task of the run as the ledger sees it."""

    id: str
    group: Any
    state: str
    #: attempts that ran (stood-down duplicates not counted)
    attempts: int = 0
    #: True when the task was delivered twice at once, or completed twice
    duplicate: bool = False
    #: times the monitor sent it again after it left the queue without an outcome
    requeues: int = 0


@dataclass
class Ledger:
    """Every task of a run (in submission order) with its state, and the counts by state."""

    run_id: str
    tasks: dict[str, TaskEntry]
    #: records that could not be read: key → what is wrong and how to repair it
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Tasks by state, plus ``total`` (distinct tasks) and ``duplicates``; the same names
        as the run report's ``counts`` (with ``running`` beside ``pending``)."""
        counts = dict.fromkeys(STATES, 0)
        duplicates = 0
        for task in self.tasks.values():
            counts[task.state] += 1
            duplicates += task.duplicate
        counts["total"] = len(self.tasks)
        counts["duplicates"] = duplicates
        return counts

    @property
    def finished(self) -> bool:
        """True when every task is done, skipped or dead (nothing more will happen)."""
        return all(t.state in FINAL_STATES for t in self.tasks.values())

    def ids_in(self, *states: str) -> list[str]:
        """The ids of the tasks in any of ``states``, in submission order."""
        return [t.id for t in self.tasks.values() if t.state in states]


def _index(
    attempts: Iterable[AttemptKey], marks: Iterable[Mark]
) -> tuple[dict[str, list[tuple[int, str]]], dict[str, list[tuple[int, str]]]]:
    """The attempts (start, outcome) and marks (time, kind) of each task that has any."""
    by_task: dict[str, list[tuple[int, str]]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append((a.started_us, a.outcome))
    marks_by_task: dict[str, list[tuple[int, str]]] = {}
    for m in marks:
        marks_by_task.setdefault(m.task_id, []).append((m.at_us, m.kind))
    return by_task, marks_by_task


def _entry(
    task_id: str,
    group: Any,
    skipped: set[str],
    by_task: dict[str, list[tuple[int, str]]],
    marks_by_task: dict[str, list[tuple[int, str]]],
) -> TaskEntry:
    """One task's `TaskEntry` from the indexed events (see `_index`)."""
    events = by_task.get(task_id)
    task_marks = marks_by_task.get(task_id)
    if events is None and task_marks is None:
        # No attempt and no mark (most tasks of a big run under way): a skip or nothing.
        return TaskEntry(task_id, group, "skipped" if task_id in skipped else "pending")
    events = events or []
    task_marks = task_marks or []
    state = task_state(skipped=task_id in skipped, attempts=events, marks=task_marks)
    outcomes = [o for _, o in events]
    return TaskEntry(
        task_id,
        group,
        state,
        attempts=attempts_ran(outcomes),
        duplicate="duplicate" in outcomes or outcomes.count("done") > 1,
        requeues=sum(1 for _, kind in task_marks if kind == "requeue"),
    )


def build_ledger(
    run_id: str,
    manifest: Iterable[ManifestEntry],
    skipped: set[str],
    attempts: Iterable[AttemptKey],
    marks: Iterable[Mark],
    corrupt: dict[str, str] | None = None,
) -> Ledger:
    """The ledger from the run's records (pure: the reading is `read_ledger`'s)."""
    by_task, marks_by_task = _index(attempts, marks)
    tasks: dict[str, TaskEntry] = {}
    for entry in manifest:
        if entry.task_id not in tasks:
            tasks[entry.task_id] = _entry(
                entry.task_id, entry.group, skipped, by_task, marks_by_task
            )
    return Ledger(run_id, tasks, dict(corrupt or {}))


#: `event_code`'s code of a task with a completed attempt: done whatever else happened.
DONE_ATTEMPT = "D"
#: Every event code (`event_code`): `DONE_ATTEMPT`, or the state the latest event gives.
EVENT_CODES = frozenset({DONE_ATTEMPT, "done", "running", "failed", "dead", "pending"})


def event_code(
    attempts: Sequence[tuple[int, str]], marks: Sequence[tuple[int, str]]
) -> tuple[str, bool]:
    """What a task's attempts and marks say, whatever its skip records: (code, duplicate).

    The code is `DONE_ATTEMPT` when an attempt completed, else the state `task_state` gives
    without a skip; `state_of` adds the skip. ``duplicate``: as `TaskEntry.duplicate`."""
    outcomes = [o for _, o in attempts]
    duplicate = "duplicate" in outcomes or outcomes.count("done") > 1
    if "done" in outcomes:
        return DONE_ATTEMPT, duplicate
    return task_state(skipped=False, attempts=attempts, marks=marks), duplicate


def state_of(code: str, skipped: bool) -> str:
    """The task's state (`task_state`) from its `event_code` and whether it was skipped."""
    if code == DONE_ATTEMPT:
        return "done"
    return "skipped" if skipped else code


def event_codes(
    attempts: Iterable[AttemptKey], marks: Iterable[Mark]
) -> dict[str, tuple[str, bool]]:
    """The `event_code` of every task with an attempt or a mark."""
    by_task, marks_by_task = _index(attempts, marks)
    return {
        task_id: event_code(by_task.get(task_id, []), marks_by_task.get(task_id, []))
        for task_id in by_task.keys() | marks_by_task.keys()
    }


def count_codes(
    task_ids: Iterable[str], skipped: set[str], codes: dict[str, tuple[str, bool]]
) -> dict[str, int]:
    """`Ledger.counts` for the manifest's ``task_ids`` from the tasks' event codes
    (`event_codes`; a task without one had no event): only tasks with a code are looked at
    one by one, the others are pending or skipped."""
    ids = task_ids if isinstance(task_ids, (dict, set, frozenset)) else dict.fromkeys(task_ids)
    counts = dict.fromkeys(STATES, 0)
    duplicates = 0
    eventful = 0
    if len(codes) > len(ids):
        pairs = ((t, codes[t]) for t in ids if t in codes)
    else:
        pairs = ((t, c) for t, c in codes.items() if t in ids)
    for task_id, (code, duplicate) in pairs:
        counts[state_of(code, task_id in skipped)] += 1
        duplicates += duplicate
        eventful += 1
    quiet_skipped = sum(1 for t in skipped if t in ids and t not in codes)
    counts["skipped"] += quiet_skipped
    counts["pending"] += len(ids) - eventful - quiet_skipped
    counts["total"] = len(ids)
    counts["duplicates"] = duplicates
    return counts


def count_tasks(
    task_ids: Iterable[str],
    skipped: set[str],
    attempts: Iterable[AttemptKey],
    marks: Iterable[Mark],
) -> dict[str, int]:
    """`Ledger.counts` of the ledger `build_ledger` would give for these records (the
    manifest given by its task ids), without an entry per task."""
    return count_codes(task_ids, skipped, event_codes(attempts, marks))


def read_counts(
    records: RunRecords, *, compact: bool = False
) -> tuple[dict[str, int], dict[str, str]]:
    """`read_ledger(records).counts` and the corrupt records met, without an entry per task
    and without listing every attempt: from the ledger summary (summary.py), which reads
    only the tasks whose records changed since its checkpoint. What `ds status` and the
    monitor show. ``compact``: see `summary.read_counts` (the monitor's)."""
    from distributed_something.summary import read_counts as summary_counts

    return summary_counts(records, compact=compact), dict(records.corrupt)


def read_counts_running(records: RunRecords) -> tuple[dict[str, int], dict[str, str], list[str]]:
    """`read_counts`, and the ids of the tasks running now (from the same reading)."""
    from distributed_something.summary import read_counts_running as summary_counts

    counts, running = summary_counts(records)
    return counts, dict(records.corrupt), running


def read_outcomes(records: RunRecords) -> tuple[dict[str, int], Ledger]:
    """A whole reading of the records, as `read_ledger` makes it, held lean: the counts
    (`Ledger.counts` of `read_ledger`) and a `Ledger` of only the tasks without an outcome
    (pending, running, failed; their groups not kept). The monitors end a run on it: at a
    million tasks it holds a code per task with an event, not an entry per task."""
    ids = records.manifest_ids()
    skipped = records.skipped_ids()
    marks_by_task: dict[str, list[tuple[int, str]]] = {}
    for m in records.marks():
        marks_by_task.setdefault(m.task_id, []).append((m.at_us, m.kind))
    codes: dict[str, tuple[str, bool]] = {}
    attempted: dict[str, int] = {}
    for task_id, attempts in records.iter_attempts_by_task():
        events = [(a.started_us, a.outcome) for a in attempts]
        codes[task_id] = event_code(events, marks_by_task.get(task_id, []))
        attempted[task_id] = sum(1 for _, o in events if o != "duplicate")
    for task_id, task_marks in marks_by_task.items():
        if task_id not in codes:
            codes[task_id] = event_code([], task_marks)
    unfinished: dict[str, TaskEntry] = {}
    for task_id in ids:
        found = codes.get(task_id)
        if found is None:
            state = "skipped" if task_id in skipped else "pending"
        else:
            state = state_of(found[0], task_id in skipped)
        if state not in FINAL_STATES:
            requeues = sum(1 for _, kind in marks_by_task.get(task_id, ()) if kind == "requeue")
            unfinished[task_id] = TaskEntry(
                task_id,
                None,
                state,
                attempts=attempted.get(task_id, 0),
                duplicate=bool(found and found[1]),
                requeues=requeues,
            )
    counts = count_codes(ids, skipped, codes)
    return counts, Ledger(records.run_id, unfinished, dict(records.corrupt))


def read_ledger(records: RunRecords) -> Ledger:
    """Read the run's ledger: its manifest, skip records, and two listings (attempts and
    marks). No queue is asked anything."""
    manifest = records.manifest()
    skipped = records.skipped_ids()
    attempts = records.attempt_keys()
    marks = records.marks()
    return build_ledger(records.run_id, manifest, skipped, attempts, marks, records.corrupt)
