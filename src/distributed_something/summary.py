"""The ledger summary: a run's counts in about constant time, still from its records.

Listing every attempt record of a run is linear in its tasks: minutes on S3 and tens of
seconds locally at a million. `ds status` and the monitor instead read

- a **checkpoint** (``summary/checkpoint.txt`` in the run's records): the *event code* of
  every task that had an attempt or a mark (`event_code`), as the records stood at a time
  T (``covered_us``); written whole, atomically, by a reader that read the whole ledger or
  rolled an earlier checkpoint forward;
- the **journal** since T: before a worker opens an attempt, and before anyone writes a
  mark, it writes an empty *intent* object ``journal/<minute>/<µs>.<a|m>.<detail>.<task>``
  (`RunRecords.write_intent`). The tasks named there since T, and the tasks that were
  running at T (an open attempt is closed without an intent), are the only ones whose
  state can have changed: only they are read again, one listing each.

Crash safety: the intent is written before its record, so no record written after T lacks
an intent after T. An intent whose record never landed (its writer died in between) only
makes a task be read again. The checkpoint moves forward to a reader's start minus
`margin` (how late an intent may land after its key time: clock skew and the write's
duration), and never past an intent whose record the reader did not see yet — unless that
intent is older than `GIVE_UP_S` (its writer is gone). A checkpoint that cannot be read
whole is ignored: the ledger is then read whole and a new checkpoint written. Counts are
always computed from the same event codes the whole ledger gives (`ledger.count_codes`), so
`ds status` and `ds report` agree.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from distributed_something.errors import BackendError
from distributed_something.ledger import EVENT_CODES, event_code, event_codes
from distributed_something.records import RunRecords

#: How late (s) an intent may land after the time in its key, unless the storage says
#: (``journal_margin``): S3 writes from many machines with their own clocks.
DEFAULT_MARGIN_S = 120.0
#: An intent whose record has not shown up after this long (s) belongs to a dead writer.
GIVE_UP_S = 900.0
#: Roll the checkpoint forward when this many tasks had to be read again …
ROLL_TASKS = 200
#: … or when it is this old (s).
ROLL_AGE_S = 300.0

Codes = dict[str, tuple[str, bool]]


def margin(records: RunRecords) -> float:
    """How late an intent may land after its key time on this storage (seconds)."""
    return float(getattr(records.storage, "journal_margin", DEFAULT_MARGIN_S))


def read_codes(
    records: RunRecords, *, clock: Callable[[], float] = time.time, write: bool = True
) -> Codes:
    """The event code of every task of the run with an attempt or a mark (what
    `ledger.event_codes` gives from a whole reading), from the checkpoint and the journal
    since; the whole ledger is read when there is no readable checkpoint. With ``write``
    the checkpoint is written (first time) or rolled forward when it is due; a storage that
    refuses the write (read-only access) changes nothing but the speed."""
    started_us = round(clock() * 1e6)
    margin_us = round(margin(records) * 1e6)
    checkpoint = records.read_checkpoint()
    if checkpoint is not None and not {c for c, _ in checkpoint[1].values()} <= EVENT_CODES:
        checkpoint = None  # damaged: not trusted
    if checkpoint is None:
        codes = event_codes(records.attempt_keys(), records.marks())
        if write:
            _write(records, started_us - margin_us, codes)
        return codes
    covered_us, codes = checkpoint
    intents = records.intents_since(covered_us, started_us + margin_us)
    by_task: dict[str, list[tuple[str, str, int]]] = {}
    for intent in intents:
        by_task.setdefault(intent.task_id, []).append((intent.kind, intent.detail, intent.at_us))
    for task_id, (code, _) in codes.items():
        if code == "running":
            by_task.setdefault(task_id, [])
    give_up_us = started_us - round(GIVE_UP_S * 1e6)
    held_us = started_us - margin_us
    for task_id, wanted in by_task.items():
        attempts = records.attempt_keys(task_id)
        marks = records.marks_of(task_id)
        if attempts or marks:
            codes[task_id] = event_code(
                [(a.started_us, a.outcome) for a in attempts], [(m.at_us, m.kind) for m in marks]
            )
        else:
            codes.pop(task_id, None)
        stems = {a.stem for a in attempts}
        seen_marks = {f"{m.kind}-{m.at_us}" for m in marks}
        for kind, detail, at_us in wanted:
            landed = detail in stems if kind == "a" else detail in seen_marks
            if not landed and at_us > give_up_us:
                held_us = min(held_us, at_us)  # read this task again until its record lands
    new_covered = max(covered_us, held_us)
    due = len(by_task) > ROLL_TASKS or new_covered - covered_us > ROLL_AGE_S * 1e6
    if write and due:
        _write(records, new_covered, codes)
    return codes


def _write(records: RunRecords, covered_us: int, codes: Mapping[str, tuple[Any, ...]]) -> None:
    # Read-only access: the next reader reads more, nothing is miscounted.
    with contextlib.suppress(BackendError, OSError):
        records.write_checkpoint(covered_us, codes)


def write_full_checkpoint(
    records: RunRecords, started: float, codes: dict[str, tuple[str, bool, int]]
) -> None:
    """A checkpoint from a whole reading of the ledger begun at ``started`` (the report's:
    `report.build.read_task_codes`), so the next `read_codes` reads only what changed."""
    covered_us = round((started - margin(records)) * 1e6)
    _write(records, covered_us, codes)
