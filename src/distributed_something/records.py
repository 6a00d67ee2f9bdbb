"""Run bookkeeping kept in storage: done markers, skip and failure records, logs, manifests.

Everything lives under ``_ds/<app_name>/`` in the main bucket, so any process that can reach
the bucket (local workers, containers on AWS, the monitor) sees the same picture. Done markers
are kept across runs (they make check-if-done work); everything else is kept per run under
``runs/<run_id>/``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from distributed_something.interfaces.storage import (
    NoConditionalWrites,
    Storage,
    conditional_writes,
    list_keys,
    list_keys_of,
    read_many,
    write_all,
)

META_ROOT = "_ds"

_R = TypeVar("_R")


@dataclass
class DoneMarker:
    """Written after a task's outputs are uploaded; its presence means "done"."""

    task_id: str
    attempt: int
    duration: float
    outputs: list[str]
    started_at: float
    finished_at: float
    worker: str
    output_prefix: str
    #: finish times of every completion (a task runs twice only if a worker vanished).
    completions: list[float] = field(default_factory=list)
    #: the run whose attempt completed the task ("" in markers written before runs were kept)
    run_id: str = ""
    #: the bucket the outputs went to when the task's plan named one (DOZC's
    #: ``output_bucket``); "" for the config's destination bucket
    output_bucket: str = ""

    def written_by(self, key: AttemptKey, run_id: str) -> bool:
        """Whether the attempt ``key`` of run ``run_id`` wrote this marker: the same run and
        attempt number, and the same start (its record's key keeps the start the marker
        says; markers written before they said one match on the number alone). Attempt
        numbers repeat where a task was sent again as a fresh message."""
        if not run_id or self.run_id != run_id or self.attempt != key.attempt:
            return False
        return not self.started_at or round(self.started_at * 1e6) == key.started_us


@dataclass
class Machine:
    """The machine a worker runs on, written once by the worker where the backend knows it
    (AWS: from the instance metadata), so the report can price that worker's attempts at
    its machine's own spot price."""

    worker: str
    instance_id: str
    instance_type: str
    availability_zone: str
    at: float


@dataclass
class Failure:
    """One failed attempt: why, with the exit code and the end of the log."""

    task_id: str
    attempt: int
    error: str
    exit_code: int | None
    log_tail: str
    at: float
    worker: str
    #: True when this was the last attempt the queue allows: the task is dead-lettered next
    final: bool = False
    #: why it failed: exit, signal, timeout, memory, not_found, upload, tool, interrupted or
    #: lost (worker/causes.py); "" in records written before causes were kept
    cause: str = ""
    #: the peak memory of the task's processes (MB) and the CPU time they used (s), when
    #: measured
    peak_memory_mb: float | None = None
    cpu_seconds: float | None = None


@dataclass
class Attempt:
    """One execution of a task by a worker, from start to end (`outcome` says how it ended).

    Outcomes: ``running`` (still open), ``done``, ``failed`` (retried later), ``dead`` (the
    last allowed attempt failed), ``released`` (handed back: worker stopping), ``lost`` (the
    lease or the worker was lost), ``duplicate`` (another delivery of the task was already
    running: this one stood down).
    """

    task_id: str
    attempt: int
    message_id: str
    worker: str
    started_at: float
    ended_at: float | None = None
    outcome: str = "running"
    exit_code: int | None = None
    error: str = ""
    #: why a failed, dead, released or lost attempt ended so (see `Failure.cause`); "" for
    #: others and in records written before causes were kept
    cause: str = ""
    #: the peak memory of the task's processes (MB) and their CPU time (s), when measured
    peak_memory_mb: float | None = None
    cpu_seconds: float | None = None

    @property
    def stem(self) -> str:
        """The attempt's key stem: start time, attempt number and message, sortable by time."""
        return f"{round(self.started_at * 1e6):017d}-{self.attempt:04d}-{_short(self.message_id)}"


ATTEMPT_OUTCOMES = ("running", "done", "failed", "dead", "released", "lost", "duplicate")


@dataclass(frozen=True)
class AttemptKey:
    """What an attempt record's key tells without reading it."""

    task_id: str
    started_us: int
    attempt: int
    message: str
    outcome: str

    @property
    def stem(self) -> str:
        return f"{self.started_us:017d}-{self.attempt:04d}-{self.message}"


def attempts_ran(outcomes: Iterable[str]) -> int:
    """How many of a task's attempts, given by their ``outcomes``, ran: a stood-down
    duplicate did not (the tries the ledger and the report count)."""
    return sum(1 for outcome in outcomes if outcome != "duplicate")


#: Outcomes of an attempt whose worker died on it: ``lost``, or ``running`` where nobody
#: runs it any more.
_DIED = frozenset({"lost", "running"})


def worker_deaths(keys: Iterable[AttemptKey], message: str) -> int:
    """How many receives of ``message`` (as `AttemptKey.message` names it) a task's attempt
    ``keys`` show ended by their worker's death (`_DIED`). When the message is (or is about
    to be) dead-lettered with fewer deaths than the queue allows receives, the task is sent
    again rather than counted dead (the watchdog's `worker.settle`, the monitor's
    `monitor.settle`): the other receives went to hand-backs, which use up no try, or to
    failures, which the worker counts itself (it makes the task dead when they use up
    ``job_retries``, or sends it again fresh when they do not). A lost attempt uses up no
    retry either; only a task that kills its worker at every receive ends dead so."""
    return sum(1 for k in keys if k.message == message and k.outcome in _DIED)


def attempts_ran_by(keys: Iterable[AttemptKey], at_us: float) -> int:
    """How many of a task's attempt ``keys`` ran (`attempts_ran`) and had started by
    ``at_us``. An attempt's number as the ledger counts tries (1, 2, 3 …) is this at its own
    start; its record's number, its message's receive count, starts again at 1 after a
    redrive or a re-send as a fresh message."""
    return attempts_ran(k.outcome for k in keys if k.started_us <= at_us)


@dataclass(frozen=True)
class Mark:
    """A ledger event that is not an attempt: a redrive, a requeue, a task found dead in the
    dead-letter store with no failure record (its worker vanished on the last attempt),
    ``deleted``: a task run by a family image's own worker, which keeps no records and
    deletes a message only when its task succeeded, found gone from the drained queue, or
    ``ended``: a task waiting for a retry when its run was torn down (no retry will come)."""

    task_id: str
    kind: str
    at_us: int


MARK_KINDS = ("redrive", "requeue", "dead", "deleted", "ended")

#: Microseconds in a minute: the journal's folders (see `RunRecords.intent_key`).
MINUTE_US = 60_000_000
#: A process that wrote this many intents not yet known to be covered by the ledger
#: summary's checkpoint checks whether they are, and folds the journal into it when not
#: (`summary.fold_behind`) …
FOLD_EVERY = 5_000
#: … and so does one whose oldest such intent is this old (s): without a monitor, the
#: journal since the checkpoint stays short, so no reader (`ds status`) meets a long one.
FOLD_AGE_S = 300.0


@dataclass(frozen=True)
class Intent:
    """An entry of the journal: a record of ``task_id`` is about to be written (an attempt
    with stem ``detail`` when ``kind`` is ``a``, a mark ``<kind>-<µs>`` when ``m``, a skip
    record when ``s``)."""

    task_id: str
    at_us: int
    kind: str
    detail: str


@dataclass
class Skip:
    """A received task that check-if-done found finished already."""

    task_id: str
    at: float
    reason: str
    worker: str


@dataclass(frozen=True)
class ManifestEntry:
    """One submitted task, as the report lists it."""

    task_id: str
    group: Any


@dataclass(frozen=True)
class ManifestPart:
    """What one submit wrote: the job's shared keys and which body key holds the group, so
    a task's queue message can be rebuilt (``{**shared, group_key: group}``)."""

    shared: dict[str, Any]
    group_key: str
    entries: list[ManifestEntry]


#: What to do about a record that cannot be read (see `RunRecords.corrupt`).
CORRUPT_FIX = (
    "delete this object to repair it (a done marker or attempt record is written again by "
    "the task's next run), or restore it from a copy; a local run's records are rows of "
    'records/<bucket>.sqlite in .ds/<app>/: sqlite3 that-file "DELETE FROM objects WHERE '
    "key = 'the key'\""
)


def _fields_of(record: Any) -> dict[str, Any]:
    """A record's fields by name, in their order: `dataclasses.asdict` without its deep
    copy, which was a tenth of a short task's bookkeeping (the records are flat)."""
    return dict(vars(record))


def _json_bytes(data: dict[str, Any]) -> bytes:
    # One line: json's C encoder (an indented record costs the pure-Python one, three times
    # a task's records on a worker running short tasks).
    return json.dumps(data).encode()


@dataclass
class Writes:
    """Writes to make together (`write_all`): every put, then every delete."""

    puts: list[tuple[str, bytes]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def add(self, other: Writes) -> None:
        self.puts += other.puts
        self.deletes += other.deletes

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)


@functools.lru_cache(maxsize=1024)
def _short(message_id: str) -> str:
    """A key-safe, short form of a queue message id (8 hex digits of its hash); remembered
    for the last ids (a worker names a task's attempt in several keys)."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:8]


class RunRecords:
    """Reads and writes the bookkeeping objects of one app in one storage."""

    def __init__(self, storage: Storage, app_name: str, run_id: str) -> None:
        self.storage = storage
        self.app_name = app_name
        self.run_id = run_id
        self.prefix = f"{META_ROOT}/{app_name}/"
        self.run_prefix = f"{self.prefix}runs/{run_id}/"
        #: records that could not be read (key → problem), filled by the reads that met them
        self.corrupt: dict[str, str] = {}
        #: objects written once and never changed (manifests, submit skip lists), by key:
        #: a monitor re-reading the ledger every tick reads each of them once
        self._written_once: dict[str, bytes] = {}
        #: intents this process wrote since it last found the checkpoint covering its own,
        #: and the time of the oldest (see `FOLD_EVERY`)
        self._unfolded = 0
        self._unfolded_since_us: int | None = None

    # keys ------------------------------------------------------------------------------
    def done_key(self, task_id: str) -> str:
        return f"{self.prefix}done/{task_id}.json"

    def skip_key(self, task_id: str) -> str:
        return f"{self.run_prefix}skipped/{task_id}.json"

    def skips_key(self, part: str) -> str:
        return f"{self.run_prefix}skipped-{part}.jsonl"

    def failure_key(self, task_id: str, attempt: int, at: float) -> str:
        # The time keeps the failures of a task redriven (attempts count from 1 again) apart.
        return f"{self.run_prefix}failures/{task_id}/{attempt:04d}-{round(at * 1e6):017d}.json"

    def log_key(self, task_id: str, attempt: int, started: float) -> str:
        return f"{self.run_prefix}logs/{task_id}/{round(started * 1e6):017d}-{attempt:04d}.log"

    def key_of(self, key: AttemptKey, outcome: str | None = None) -> str:
        """The storage key of the attempt record ``key`` names (with ``outcome``: of that
        attempt's record with another outcome)."""
        return f"{self.run_prefix}attempts/{key.task_id}/{key.stem}.{outcome or key.outcome}.json"

    def attempt_key(self, attempt: Attempt, outcome: str | None = None) -> str:
        """``attempts/<task>/<stem>.<outcome>.json``; an open attempt is ``….running.json``."""
        state = outcome or attempt.outcome
        return f"{self.run_prefix}attempts/{attempt.task_id}/{attempt.stem}.{state}.json"

    def mark_key(self, task_id: str, kind: str, at: float) -> str:
        return f"{self.run_prefix}marks/{task_id}/{round(at * 1e6):017d}.{kind}"

    def manifest_key(self, part: str) -> str:
        return f"{self.run_prefix}manifest-{part}.jsonl"

    def claim_key(self, task_id: str) -> str:
        """The task's claim: which delivery runs it now, where records are written, then
        listed (`worker.claims`)."""
        return f"{self.run_prefix}claims/{task_id}.json"

    def requeue_slot_key(self, task_id: str, requeue: int) -> str:
        """The slot of the task's ``requeue``-th sending again by a monitor: the monitor that
        creates it sends (`monitor.settle`)."""
        return f"{self.run_prefix}requeues/{task_id}/{requeue:04d}.json"

    def sending_key(self, part: str) -> str:
        """How far the sending of submit ``part`` got (see `sending`)."""
        return f"{self.run_prefix}sending/{part}.json"

    def report_key(self) -> str:
        return f"{self.run_prefix}report.json"

    def checkpoint_key(self) -> str:
        """The ledger summary's checkpoint (see summary.py)."""
        return f"{self.run_prefix}summary/checkpoint.txt"

    def covered_key(self) -> str:
        """How far the ledger summary's checkpoint covers the journal (µs), written after
        the checkpoint or its delta: a hint for writers (`summary.fold_behind`)."""
        return f"{self.run_prefix}summary/covered.txt"

    def floor_key(self, minute: int) -> str:
        """A journal floor: the journal's minutes before ``minute`` may have been deleted
        (see `journal_floor`)."""
        return f"{self.run_prefix}summary/floor/{minute:08d}"

    def intent_key(self, task_id: str, at_us: int, kind: str, detail: str) -> str:
        """``journal/<minute>/<µs>.<kind>.<detail>.<task>``: an intent (see summary.py);
        ``kind`` is ``a`` (an attempt, ``detail`` its stem), ``m`` (a mark: its kind and
        time, ``dead-<µs>``) or ``s`` (a worker's skip record)."""
        return (
            f"{self.run_prefix}journal/{at_us // MINUTE_US:08d}/"
            f"{at_us:017d}.{kind}.{detail}.{task_id}"
        )

    @property
    def writes_atomically(self) -> bool:
        """Whether the storage makes several writes one (``write_batch``; see `write_all`)."""
        return hasattr(self.storage, "write_batch")

    # writes ----------------------------------------------------------------------------
    def write_done(self, marker: DoneMarker) -> DoneMarker:
        """Store the done marker, keeping the finish times of earlier completions.

        Only a task received more than once can have completed before (a worker vanished
        mid-task), so a first attempt skips reading the old marker.
        """
        key, data = self._done_item(marker)
        self.storage.put_bytes(key, data)
        return marker

    def _done_item(self, marker: DoneMarker) -> tuple[str, bytes]:
        """The done marker's key and content, with the finish times of earlier completions
        (read only for a task received more than once: only then can it have completed)."""
        previous = self.read_done(marker.task_id) if marker.attempt > 1 else None
        history = previous.completions if previous else []
        marker.completions = [*history[-9:], marker.finished_at]
        return self.done_key(marker.task_id), _json_bytes(_fields_of(marker))

    def write_skip(self, skip: Skip) -> None:
        """One task a worker skipped: one object, so workers never write the same key. An
        intent is written first (see summary.py)."""
        self.write_intent(skip.task_id, "s", "skip")
        self._put_json(self.skip_key(skip.task_id), _fields_of(skip))

    def write_skips(self, part: str, skips: Iterable[Skip]) -> None:
        """Many tasks skipped at once (at submit): one JSON-lines object for all of them, so
        skipping 9,000 finished tasks costs one write, not 9,000."""
        lines = [json.dumps(_fields_of(s)) for s in skips]
        if lines:
            self.storage.put_bytes(self.skips_key(part), ("\n".join(lines) + "\n").encode())

    def write_failure(self, failure: Failure) -> None:
        key = self.failure_key(failure.task_id, failure.attempt, failure.at)
        self._put_json(key, _fields_of(failure))

    def write_manifest(
        self,
        part: str,
        entries: Iterable[ManifestEntry],
        *,
        shared: dict[str, Any] | None = None,
        group_key: str = "group",
    ) -> None:
        """One submit's tasks; the first line holds the shared keys (see `ManifestPart`)."""
        self.write_manifest_json(
            part,
            ((e.task_id, json.dumps(e.group)) for e in entries),
            shared=shared,
            group_key=group_key,
        )

    def write_manifest_json(
        self,
        part: str,
        entries: Iterable[tuple[str, str]],
        *,
        shared: dict[str, Any] | None = None,
        group_key: str = "group",
    ) -> None:
        """`write_manifest` of ``(task id, the JSON text of its group)`` pairs: the groups'
        text is written as it is (a compact job keeps its groups as text already). The part
        is written to a temporary file a chunk of lines at a time and stored from there, so
        no list of a million lines is held beside the part's bytes."""
        head = json.dumps({"shared": shared or {}, "group_key": group_key})
        ids = bytearray()
        plain_ids = True
        size = 0
        crc = 0
        with tempfile.TemporaryDirectory(prefix="ds-manifest-") as folder:
            path = Path(folder) / "manifest.jsonl"
            with path.open("wb") as out:

                def write(text: str) -> None:
                    nonlocal size, crc
                    data = text.encode()
                    out.write(data)
                    size += len(data)
                    crc = zlib.crc32(data, crc)

                write(head + "\n")
                lines: list[str] = []
                for task_id, group in entries:
                    # A task id is hex digits: quoted as it is (json.dumps per line cost more
                    # than the rest of the line); any other text is encoded.
                    quoted = f'"{task_id}"' if task_id.isalnum() else json.dumps(task_id)
                    plain_ids = plain_ids and "\n" not in task_id
                    ids += b"\n" + task_id.encode()
                    lines.append(f'{{"task_id": {quoted}, "group": {group}}}\n')
                    if len(lines) == 10_000:
                        write("".join(lines))
                        lines = []
                write("".join(lines))
            key = self.manifest_key(part)
            # One PutObject, as before (a multipart upload is not one atomic write on every
            # store); only the part's bytes are held, not its lines as well.
            self.storage.put_bytes(key, path.read_bytes())
        if plain_ids:
            # The ids alone, for counting without parsing the groups (`manifest_ids`).
            meta = json.dumps({"size": size, "crc32": crc})
            self.storage.put_bytes(self._index_key(key), meta.encode() + bytes(ids))

    def write_intent(self, task_id: str, kind: str, detail: str) -> None:
        """Say, before writing a record that changes a task's state, that it will (see
        summary.py: readers of the ledger summary read that task again)."""
        self.storage.put_bytes(self._next_intent(task_id, kind, detail), b"")

    def _next_intent(self, task_id: str, kind: str, detail: str) -> str:
        """The key of the next intent of this process (written by the caller, before or with
        its record), after folding the journal behind when it is due."""
        since = self._unfolded_since_us
        if since is not None and (
            self._unfolded >= FOLD_EVERY or now() * 1e6 - since >= FOLD_AGE_S * 1e6
        ):
            # Before this intent, so every intent of this process has its record by now.
            from distributed_something.summary import fold_behind

            fold_behind(RunRecords(self.storage, self.app_name, self.run_id), since)
            self._unfolded, self._unfolded_since_us = 0, None
        at_us = round(now() * 1e6)  # after the fold: the checkpoint may cover up to then
        if self._unfolded_since_us is None:
            self._unfolded_since_us = at_us
        self._unfolded += 1
        return self.intent_key(task_id, at_us, kind, detail)

    def open_attempt(self, attempt: Attempt, first: Writes | None = None) -> str:
        """Record that ``attempt`` started; returns the open record's key. An intent is
        written first (see summary.py), so no state change escapes the ledger summary; where
        the storage writes atomically (`write_all`), both are one write, with ``first``
        (writes kept for it: `closing`) before them."""
        writes = self._opening(attempt, first)
        write_all(self.storage, writes.puts, writes.deletes)
        return self.attempt_key(attempt, "running")

    def open_attempt_looking(
        self, attempt: Attempt, first: Writes | None = None
    ) -> list[AttemptKey] | None:
        """`open_attempt`, and the task's attempts (oldest first) as they stand right after
        that write, read in the same transaction where the storage can (``write_and_list``:
        the local records): every record whose write committed before this one is listed,
        and none committed after it. None where the storage cannot: the caller then lists
        them itself, after the write (`attempt_keys`), and may see writes made since."""
        writes = self._opening(attempt, first)
        together = getattr(self.storage, "write_and_list", None)
        if together is None:
            write_all(self.storage, writes.puts, writes.deletes)
            return None
        start = f"{self.run_prefix}attempts/"
        listed = together(writes.puts, writes.deletes, f"{start}{attempt.task_id}/")
        if listed is None:
            return None
        return self._attempts_listed(start, listed)

    def _opening(self, attempt: Attempt, first: Writes | None) -> Writes:
        """The writes of `open_attempt`: ``first``, the intent, the open record."""
        intent = self._next_intent(attempt.task_id, "a", attempt.stem)
        before = first or Writes()
        record = (self.attempt_key(attempt, "running"), _json_bytes(_fields_of(attempt)))
        return Writes([*before.puts, (intent, b""), record], list(before.deletes))

    def close_attempt(self, attempt: Attempt) -> None:
        """Record how ``attempt`` ended (its ``outcome``), then remove its open record (one
        write where the storage writes atomically)."""
        self.write(self.closing(attempt))

    def write(self, writes: Writes) -> None:
        """Make ``writes`` (`write_all`: one write where the storage allows)."""
        write_all(self.storage, writes.puts, writes.deletes)

    def closing(self, attempt: Attempt, done: DoneMarker | None = None) -> Writes:
        """The writes `close_attempt` makes, to make now or with a later write; with
        ``done`` (an attempt that completed its task), the task's done marker first."""
        if attempt.outcome == "running":
            raise ValueError("close_attempt needs the attempt's outcome")
        writes = Writes([] if done is None else [self._done_item(done)])
        writes.puts.append((self.attempt_key(attempt), _json_bytes(_fields_of(attempt))))
        writes.deletes.append(self.attempt_key(attempt, "running"))
        return writes

    def close_stale(self, key: AttemptKey, outcome: str, at: float, error: str = "") -> bool:
        """Close an open attempt record another process left behind (its worker is gone),
        saying ``error`` (else what the record says, else that its worker stopped without a
        word). False, and nothing written, when the record is no longer open (its worker
        or another closer got there first). No intent is needed (see summary.py): readers
        of the ledger summary read a task running at the checkpoint again."""
        open_key = self.key_of(key, "running")
        try:
            raw = self.storage.get_bytes(open_key)
        except KeyError:
            return False
        data = self._parsed(open_key, raw) or {}
        data.update(
            task_id=key.task_id,
            attempt=key.attempt,
            started_at=key.started_us / 1e6,
            ended_at=at,
            outcome=outcome,
        )
        data.setdefault("message_id", "")
        data.setdefault("worker", "")
        if error or not data.get("error"):
            data["error"] = error or "the worker running it stopped without a word"
        closed = self.key_of(key, outcome)
        self._put_json(closed, data)
        self.storage.delete(open_key)
        return True

    def settle_completed(self, key: AttemptKey, marker: DoneMarker) -> None:
        """Close as ``done`` the attempt whose done marker is ``marker`` but whose record
        says it is still running or was lost: its worker stopped after writing the marker and
        before closing the record, so the task did complete in this run. An intent is
        written first (the record changes a task's state; see summary.py)."""
        self.write_intent(key.task_id, "a", key.stem)
        old_key = self.key_of(key)
        data = self._get_json(old_key) or {}
        data.update(
            task_id=key.task_id,
            attempt=key.attempt,
            started_at=key.started_us / 1e6,
            ended_at=marker.finished_at,
            outcome="done",
            error="",
            cause="",
            note="completed (its done marker was written); its worker stopped before "
            "recording the end",
        )
        data.setdefault("message_id", "")
        data.setdefault("worker", marker.worker)
        self._put_json(self.key_of(key, "done"), data)
        self.storage.delete(old_key)

    def write_mark(self, task_id: str, kind: str, at: float, detail: dict[str, Any]) -> None:
        """A ledger event other than an attempt (see `Mark`)."""
        if kind not in MARK_KINDS:
            raise ValueError(f"unknown mark kind {kind!r}")
        self.write_intent(task_id, "m", f"{kind}-{round(at * 1e6)}")
        self._put_json(self.mark_key(task_id, kind, at), {"task_id": task_id, **detail})

    # reads -----------------------------------------------------------------------------
    def read_done(self, task_id: str) -> DoneMarker | None:
        key = self.done_key(task_id)
        return self._typed(DoneMarker, key, self._get_json(key))

    def read_done_of(self, task_ids: Sequence[str]) -> list[DoneMarker | None]:
        """The done marker of each of ``task_ids``, in order (None where it has none), read
        as `read_json_many` reads: several at a time, not one read after the other."""
        keys = [self.done_key(t) for t in task_ids]
        return [
            self._typed(DoneMarker, key, data)
            for key, data in zip(keys, self.read_json_many(keys), strict=True)
        ]

    def all_skips(self) -> Iterator[Skip]:
        """Every task skipped in this run, each id once (the first record of it)."""
        single, batched = self._skip_records()
        seen: set[str] = set()
        singles = [
            self._typed(Skip, key, d)
            for key, d in zip(single, self.read_json_many(single), strict=True)
        ]
        for skip in (*batched, *singles):
            if skip is not None and skip.task_id not in seen:
                seen.add(skip.task_id)
                yield skip

    def all_failures(self) -> Iterator[Failure]:
        for key, data in self._iter_json(f"{self.run_prefix}failures/"):
            failure = self._typed(Failure, key, data)
            if failure is not None:
                yield failure

    def failures_of(self, task_id: str) -> list[Failure]:
        """Every failed attempt of a task in this run, oldest first."""
        found = []
        for key, data in self._iter_json(f"{self.run_prefix}failures/{task_id}/"):
            failure = self._typed(Failure, key, data)
            if failure is not None:
                found.append(failure)
        return sorted(found, key=lambda f: f.at)

    def attempt_keys(self, task_id: str = "") -> list[AttemptKey]:
        """Every attempt of this run (or of one task), from one listing, oldest first."""
        start = f"{self.run_prefix}attempts/"
        prefix = f"{start}{task_id}/" if task_id else start
        return self._attempts_listed(start, list_keys(self.storage, prefix))

    def attempt_keys_of(self, task_ids: Sequence[str]) -> list[list[AttemptKey]]:
        """`attempt_keys` of each of ``task_ids``, in order, listed together where the
        storage can (`list_keys_of`: the local records read them in one snapshot)."""
        start = f"{self.run_prefix}attempts/"
        listed = list_keys_of(self.storage, [f"{start}{task_id}/" for task_id in task_ids])
        return [self._attempts_listed(start, keys) for keys in listed]

    def ended_attempts_of(
        self,
        task_ids: Sequence[str],
        outcomes: Iterable[str] = ("failed", "dead", "released", "lost"),
    ) -> dict[str, list[Attempt]]:
        """The attempt records of ``task_ids`` that ended with one of ``outcomes`` (by
        default: without the task done), oldest first, by task: only these tasks' attempts
        listed (`attempt_keys_of`) and read (`read_json_many`), never the whole run's."""
        if not task_ids:
            return {}
        wanted = frozenset(outcomes)
        keys = [
            k for listed in self.attempt_keys_of(task_ids) for k in listed if k.outcome in wanted
        ]
        names = [self.key_of(k) for k in keys]
        found: dict[str, list[Attempt]] = {}
        for key, name, data in zip(keys, names, self.read_json_many(names), strict=True):
            attempt = self._typed(Attempt, name, data)
            if attempt is not None:
                found.setdefault(key.task_id, []).append(attempt)
        return found

    def _attempts_listed(self, start: str, keys: Iterable[str]) -> list[AttemptKey]:
        """The attempts named by ``keys`` (listed under ``start``), oldest first; other
        names are noted in `corrupt`."""
        found = []
        for key in keys:
            parsed = parse_attempt_key(key[len(start) :])
            if parsed is None:
                self.corrupt[key] = "not an attempt record's name"
            else:
                found.append(parsed)
        return _oldest_first(found)

    def iter_attempts_by_task(self) -> Iterator[tuple[str, list[AttemptKey]]]:
        """(task, its attempts oldest first) for every task with an attempt in this run,
        streamed from one listing (a task's records are listed together: they share its
        folder), so only one task's keys are held at a time."""
        start = f"{self.run_prefix}attempts/"
        current = ""
        found: list[AttemptKey] = []
        for key in list_keys(self.storage, start):
            parsed = parse_attempt_key(key[len(start) :])
            if parsed is None:
                self.corrupt[key] = "not an attempt record's name"
                continue
            if parsed.task_id != current:
                if found:
                    yield current, _oldest_first(found)
                current, found = parsed.task_id, []
            found.append(parsed)
        if found:
            yield current, _oldest_first(found)

    def marks(self) -> list[Mark]:
        """Every mark of this run (one listing), oldest first."""
        return self._marks_under("")

    def marks_of(self, task_id: str) -> list[Mark]:
        """The marks of one task in this run (one listing of its folder), oldest first."""
        return self._marks_under(f"{task_id}/")

    def _marks_under(self, folder: str) -> list[Mark]:
        """The marks listed under ``marks/<folder>``, oldest first; other names are noted in
        `corrupt`."""
        start = f"{self.run_prefix}marks/"
        found = []
        for key in list_keys(self.storage, f"{start}{folder}"):
            task_id, _, name = key[len(start) :].partition("/")
            at, _, kind = name.partition(".")
            if kind in MARK_KINDS and at.isdigit():
                found.append(Mark(task_id, kind, int(at)))
            else:
                self.corrupt[key] = "not a mark record's name"
        return sorted(found, key=lambda m: m.at_us)

    def intents_since(self, since_us: int, until_us: int) -> list[Intent]:
        """The intents written from ``since_us`` on (key times; up to ``until_us``'s minute,
        listed minute by minute, or in one listing when that spans more than a day)."""
        start = f"{self.run_prefix}journal/"
        first, last = since_us // MINUTE_US, until_us // MINUTE_US
        # Keys hold their time zero-padded: the first minute is listed from ``since_us`` on
        # (a busy minute holds tens of thousands of intents, most of them covered already).
        after = f"{start}{first:08d}/{max(since_us - 1, 0):017d}/"
        if last - first > 1440:
            listings = [list_keys(self.storage, start, start_after=after)]
        else:
            listings = [
                list_keys(self.storage, f"{start}{m:08d}/", start_after=after if m == first else "")
                for m in range(first, last + 1)
            ]
        found = []
        for listing in listings:
            for key in listing:
                parts = key[len(start) :].partition("/")[2].split(".", 3)
                if len(parts) != 4 or not parts[0].isdigit() or parts[1] not in ("a", "m", "s"):
                    self.corrupt[key] = "not an intent's name"
                    continue
                at = int(parts[0])
                if at >= since_us:
                    found.append(Intent(parts[3], at, parts[1], parts[2]))
        return found

    def journal_floor(self) -> int:
        """The first minute of the journal that is whole: the highest floor written (one
        listing of a few keys; 0 when none was). Floors are separate objects, so two
        cleaners at once can only raise it, never lower it."""
        start = f"{self.run_prefix}summary/floor/"
        floors = [key[len(start) :] for key in list_keys(self.storage, start)]
        return max((int(f) for f in floors if f.isdigit()), default=0)

    def raise_journal_floor(self, minute: int) -> None:
        """Record that the journal's minutes before ``minute`` may be deleted (written
        before any is), and forget lower floors (the highest one is what counts)."""
        self.storage.put_bytes(self.floor_key(minute), b"")
        start = f"{self.run_prefix}summary/floor/"
        for key in list(list_keys(self.storage, start)):
            name = key[len(start) :]
            if name.isdigit() and int(name) < minute:
                self.storage.delete(key)

    def delete_journal_before(self, minute: int, limit: int) -> int:
        """Delete up to ``limit`` intents of the journal's minutes before ``minute``, oldest
        first (several at a time where the storage says it pays); returns how many. Only
        below a floor raised first (`raise_journal_floor`): readers check it."""
        start = f"{self.run_prefix}journal/"
        keys: list[str] = []
        for key in list_keys(self.storage, start):
            folder = key[len(start) :].partition("/")[0]
            if not folder.isdigit() or int(folder) >= minute or len(keys) >= limit:
                break
            keys.append(key)
        workers = min(self.storage.read_concurrency, len(keys))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(self.storage.delete, keys))
        else:
            for key in keys:
                self.storage.delete(key)
        return len(keys)

    def read_mark(self, mark: Mark) -> dict[str, Any] | None:
        """The details a mark was written with."""
        return self._get_json(self.mark_key(mark.task_id, mark.kind, mark.at_us / 1e6))

    def machine_key(self, worker: str) -> str:
        """``<run prefix>machines/<worker>.json``: the machine of one worker (`Machine`); a
        character a key should not hold becomes ``_``."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in worker)
        return f"{self.run_prefix}machines/{safe}.json"

    def write_machine(self, machine: Machine) -> None:
        """Record the machine a worker runs on (one small object per worker)."""
        self._put_json(self.machine_key(machine.worker), _fields_of(machine))

    def machines(self) -> dict[str, Machine]:
        """worker name → its `Machine`, for every worker of this run that recorded one;
        unreadable records are noted in `corrupt` and left out."""
        keys = list(list_keys(self.storage, f"{self.run_prefix}machines/"))
        found: dict[str, Machine] = {}
        for key, data in zip(keys, self.read_json_many(keys), strict=True):
            machine = self._typed(Machine, key, data)
            if machine is not None:
                found[machine.worker] = machine
        return found

    def machine_problems(self) -> list[str]:
        """One line per machine that recorded a problem under ``instances/`` of this run
        (e.g. an AWS instance whose metadata service its containers cannot reach), for
        `ds status`; unreadable records are noted in `corrupt` and skipped."""
        lines: list[str] = []
        for key in list_keys(self.storage, f"{self.run_prefix}instances/"):
            record = self._get_json(key)
            if record is not None and record.get("imds") == "unreachable":
                lines.append(f"{record.get('machine', key)}: {record.get('problem', '')}")
        return lines

    def done_ids(self) -> set[str]:
        """Tasks of the app with a done marker (one listing, no reads)."""
        start = f"{self.prefix}done/"
        return {
            key[len(start) : -len(".json")]
            for key in list_keys(self.storage, start)
            if key.endswith(".json")
        }

    def skipped_ids(self) -> set[str]:
        """Tasks skipped in this run: one listing, plus one read per submit that skipped
        tasks (the per-task records of workers are counted by key, not read)."""
        single, batched = self._skip_records()
        start = len(f"{self.run_prefix}skipped/")
        return {key[start : -len(".json")] for key in single} | {s.task_id for s in batched}

    def count_skipped(self) -> int:
        """How many tasks were skipped in this run (see `skipped_ids`)."""
        return len(self.skipped_ids())

    def manifest_parts(self) -> list[ManifestPart]:
        """What each submit of the run wrote, oldest first."""
        return [
            ManifestPart(shared, group_key, [ManifestEntry(t, g) for t, g in rows])
            for shared, group_key, rows in self._manifest_rows()
        ]

    def manifest(self) -> list[ManifestEntry]:
        """Every task submitted in the run, first submission first, each id once."""
        seen: dict[str, ManifestEntry] = {}
        for part in self.manifest_parts():
            for entry in part.entries:
                seen.setdefault(entry.task_id, entry)
        return list(seen.values())

    def iter_manifest(self) -> Iterator[tuple[str, Any]]:
        """(task id, group) of every task submitted in the run, first submission first,
        each id once, as `manifest` gives them, streamed: one line is parsed at a time. A
        part is read once to check it whole (a part that cannot be read is left out whole,
        noted in `corrupt`), unless its id index vouches for its bytes."""
        parts = list(list_keys(self.storage, f"{self.run_prefix}manifest-"))
        seen: set[str] | None = set() if len(parts) > 1 else None
        for key in parts:
            data = self.storage.get_bytes(key)
            check = {"size": len(data), "crc32": zlib.crc32(data)}
            if self._indexed_ids(key, check) is None and self._manifest_part(key, data) is None:
                continue
            for row in _rows_of(data):
                if "task_id" not in row:
                    continue
                task_id = str(row["task_id"])
                if seen is not None:
                    if task_id in seen:
                        continue
                    seen.add(task_id)
                yield task_id, row.get("group")

    def manifest_ids(self) -> dict[str, None]:
        """The ids of `manifest` (the same parts, read the same way), without building an
        entry per task: what counting needs. A part whose id index (written beside it by
        `write_manifest`) matches its bytes is counted from the index, without parsing."""
        ids: dict[str, None] = {}
        for key in list_keys(self.storage, f"{self.run_prefix}manifest-"):
            # Read, not kept (`_read_once`): counting needs the bytes only for the check.
            data = self._written_once.get(key) or self.storage.get_bytes(key)
            check = {"size": len(data), "crc32": zlib.crc32(data)}
            if self.storage.exists(self._index_key(key)):
                del data  # a million tasks' groups are not held while their ids are read
                indexed = self._indexed_ids(key, check)
                if indexed is not None:
                    ids.update(dict.fromkeys(indexed))
                    continue
                data = self._read_once(key)
            part = self._manifest_part(key, data)
            if part is not None:
                ids.update(dict.fromkeys(t for t, _ in part[2]))
        return ids

    def _manifest_rows(self) -> Iterator[tuple[dict[str, Any], str, list[tuple[str, Any]]]]:
        """(shared keys, group key, [(task id, group)]) of each readable manifest part, oldest
        first; a part that cannot be read is noted in `corrupt` and left out whole."""
        for key in list_keys(self.storage, f"{self.run_prefix}manifest-"):
            part = self._manifest_part(key, self._read_once(key))
            if part is not None:
                yield part

    def _manifest_part(
        self, key: str, data: bytes
    ) -> tuple[dict[str, Any], str, list[tuple[str, Any]]] | None:
        shared: dict[str, Any] = {}
        group_key = "group"
        try:
            rows = _json_lines(data)
            entries = [(str(row["task_id"]), row.get("group")) for row in rows if "task_id" in row]
            for row in rows:
                if "task_id" not in row:
                    shared = dict(row.get("shared") or {})
                    group_key = str(row.get("group_key") or "group")
        except (ValueError, TypeError, AttributeError) as exc:
            self.corrupt[key] = f"not a task manifest ({exc})"
            return None
        return shared, group_key, entries

    def _index_key(self, manifest_key: str) -> str:
        return f"{self.run_prefix}index/{manifest_key[len(self.run_prefix) :]}.ids"

    def _indexed_ids(self, manifest_key: str, check: dict[str, int]) -> list[str] | None:
        """The task ids of a manifest part from its index, or None when there is none or it
        does not match the part's bytes (``check``: their size and CRC-32) or cannot be
        read."""
        try:
            raw = self.storage.get_bytes(self._index_key(manifest_key))
        except KeyError:
            return None
        head, _, body = raw.partition(b"\n")
        try:
            meta = json.loads(head)
            if meta != check:
                return None
            return body.decode().split("\n") if body else []
        except (ValueError, UnicodeDecodeError):
            return None

    def write_sending(self, part: str, progress: dict[str, Any]) -> None:
        """Say how far the sending of submit ``part`` got (`sending`)."""
        self._put_json(self.sending_key(part), progress)

    def write_sending_left_out(self, part: str, task_ids: Iterable[str]) -> None:
        """The tasks of submit ``part`` it does not send (already under way, or done), once,
        beside its progress: the progress itself is written every second."""
        self.storage.put_bytes(self._left_out_key(part), "\n".join(task_ids).encode())

    def sending_left_out(self, part: str) -> set[str]:
        """`write_sending_left_out`'s tasks of ``part`` (none when it wrote none)."""
        try:
            data = self.storage.get_bytes(self._left_out_key(part))
        except KeyError:
            return set()
        return set(data.decode().split("\n")) if data else set()

    def end_sending(self, part: str) -> None:
        """Submit ``part`` is sent whole: forget its progress."""
        self.storage.delete(self.sending_key(part))
        self.storage.delete(self._left_out_key(part))

    def _left_out_key(self, part: str) -> str:
        return f"{self.run_prefix}sending/{part}.left-out"

    def sendings(self) -> list[tuple[str, dict[str, Any], float | None]]:
        """(part, progress, age) of every submit whose sending did not end, oldest first: the
        age of its progress record by the storage's clock (S3's: `Tagged.age`), or None where
        the storage does not say (one machine's records). A progress that cannot be read is
        noted in `corrupt` and left out."""
        start = f"{self.run_prefix}sending/"
        found = []
        for key in list_keys(self.storage, start):
            if not key.endswith(".json"):
                continue
            try:
                raw, age = self._read_aged(key)
            except KeyError:
                continue  # ended meanwhile
            data = self._parsed(key, raw)
            if data is not None:
                found.append((key[len(start) :].removesuffix(".json"), data, age))
        return found

    def _read_aged(self, key: str) -> tuple[bytes, float | None]:
        """The content of ``key`` and its age by the storage's clock (None where it does
        not say: `Tagged.age`); KeyError when missing."""
        writes = conditional_writes(self.storage)
        if writes is not None:
            with contextlib.suppress(NoConditionalWrites):  # (a key kept as a file locally)
                tagged = writes.get_tagged(key)
                return tagged.data, tagged.age
        return self.storage.get_bytes(key), None

    def manifest_part_ids(self, part: str) -> list[str]:
        """The task ids of submit ``part``'s manifest, in its order (from its id index when
        that matches the part's bytes). KeyError when there is no such part; ValueError
        when it cannot be read."""
        key = self.manifest_key(part)
        data = self.storage.get_bytes(key)
        indexed = self._indexed_ids(key, {"size": len(data), "crc32": zlib.crc32(data)})
        if indexed is not None:
            return indexed
        read = self._manifest_part(key, data)
        if read is None:
            raise ValueError(f"{key}: {self.corrupt[key]}")
        return [task_id for task_id, _ in read[2]]

    def bodies(self, task_ids: Iterable[str]) -> dict[str, str]:
        """The queue message bodies of the given tasks, rebuilt from the manifest. A task
        whose rebuilt body does not hash to its id (a manifest written before the shared
        keys were kept) has none."""
        from distributed_something.jobs.model import Task

        wanted = set(task_ids)
        out: dict[str, str] = {}
        for part in self.manifest_parts():
            for entry in part.entries:
                if entry.task_id in wanted and entry.task_id not in out:
                    task = Task({**part.shared, part.group_key: entry.group}, part.group_key)
                    if task.id == entry.task_id:
                        out[entry.task_id] = task.body_json()
        return out

    def logs_of(self, task_id: str) -> list[tuple[str, str]]:
        """(key, text) of every stored log of a task, oldest attempt first."""
        out = []
        for key in list_keys(self.storage, f"{self.run_prefix}logs/{task_id}/"):
            out.append((key, self.storage.get_bytes(key).decode(errors="replace")))
        return sorted(out)

    # helpers ---------------------------------------------------------------------------
    def _skip_records(self) -> tuple[list[str], list[Skip]]:
        """Keys of the workers' one-per-task skip records, and the records of every submit's
        JSON-lines object (one read each)."""
        single: list[str] = []
        batched: list[Skip] = []
        for key in list_keys(self.storage, f"{self.run_prefix}skipped"):
            if key.startswith(f"{self.run_prefix}skipped/") and key.endswith(".json"):
                single.append(key)
            elif key.endswith(".jsonl"):
                try:
                    lines = self._read_once(key).decode().splitlines()
                    batched.extend(Skip(**json.loads(line)) for line in lines if line.strip())
                except (ValueError, TypeError) as exc:
                    self.corrupt[key] = f"not a list of skip records ({exc})"
        return single, batched

    def _typed(self, cls: type[_R], key: str, data: dict[str, Any] | None) -> _R | None:
        """``cls(**data)``, or None (noted in `corrupt`) when the fields do not fit."""
        if data is None:
            return None
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        try:
            if names.issuperset(data):  # the usual case: no field of a newer version
                return cls(**data)
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            self.corrupt[key] = f"not a {cls.__name__} record ({exc})"
            return None

    def _read_once(self, key: str) -> bytes:
        """An object that is written once and never changed, read at most once."""
        data = self._written_once.get(key)
        if data is None:
            data = self._written_once[key] = self.storage.get_bytes(key)
        return data

    def _put_json(self, key: str, data: dict[str, Any]) -> None:
        self.storage.put_bytes(key, _json_bytes(data))

    def _get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key``; None when it is missing or corrupt (a corrupt one is
        noted in `corrupt` with the problem, so reports list it instead of failing)."""
        try:
            raw = self.storage.get_bytes(key)
        except KeyError:
            return None
        return self._parsed(key, raw)

    def _parsed(self, key: str, raw: bytes | None) -> dict[str, Any] | None:
        """`_get_json` of the content ``raw`` read at ``key`` (None: missing)."""
        if raw is None:
            return None
        try:
            loaded = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.corrupt[key] = f"not valid JSON ({exc})"
            return None
        if not isinstance(loaded, dict):
            self.corrupt[key] = f"holds a JSON {type(loaded).__name__}, not an object"
            return None
        return loaded

    def read_json_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """`_get_json` of each key, in order, read as `read_many` does: in chunks where the
        storage reads many keys at once (the local records), else as many at a time as it
        says pays off (on S3 each read is a round trip: a report of 10,000 tasks read one
        after the other would wait minutes)."""
        return [
            self._parsed_quickly(key, raw)
            for key, raw in zip(keys, read_many(self.storage, keys), strict=True)
        ]

    def _parsed_quickly(self, key: str, raw: bytes | None) -> dict[str, Any] | None:
        """`_parsed`, by the decoder's own scan for a record that is one UTF-8 JSON object
        and nothing else (what we write): `json.loads`'s checks of the encoding and the
        whitespace around took a third of a report's reading of a million done markers.
        Anything else is judged by `_parsed`, as ever."""
        if raw is None:
            return None
        try:
            text = raw.decode()
            value, end = _DECODER.raw_decode(text)
        except (ValueError, UnicodeDecodeError):
            return self._parsed(key, raw)
        if end != len(text) or type(value) is not dict:
            return self._parsed(key, raw)
        return value

    def _iter_json(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        keys = [key for key in list_keys(self.storage, prefix) if key.endswith(".json")]
        for key, data in zip(keys, self.read_json_many(keys), strict=True):
            if data is not None:
                yield key, data


#: The decoder of `RunRecords._parsed_quickly` (json.loads makes none: it uses its own).
_DECODER = json.JSONDecoder()

#: The field names of each record class `RunRecords._typed` made (a report makes one per
#: task: looking them up each time was a tenth of its reading).
_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _json_lines(data: bytes) -> list[Any]:
    """The JSON value of each non-blank line of ``data``.

    A manifest of a million tasks is parsed by one `json.loads` of the lines joined as an
    array (a few times faster than a call per line); when that does not give exactly one
    value per line (blank lines, a damaged object) each line is parsed alone, so the error
    is the same as it always was.
    """
    body = data.rstrip(b"\n")
    if body and b"\n\n" not in body:
        try:
            rows = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        except (ValueError, UnicodeDecodeError):
            rows = None
        if isinstance(rows, list) and len(rows) == body.count(b"\n") + 1:
            return rows
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


#: Of two records of one attempt (one stem), the one that counts: a worker that records its
#: attempt's end after someone closed the attempt as lost (`ds cleanup` closes open attempts
#: without waiting for the workers to stop; a worker stopped past its lease is closed by the
#: next delivery) leaves both, and also a crash between the two writes of S3 (the closed
#: record first, then the open one's delete). One execution is one attempt.
_OUTCOME_RANK = {
    "done": 0,
    "dead": 1,
    "failed": 2,
    "released": 3,
    "duplicate": 4,
    "lost": 5,
    "running": 6,
}


def _oldest_first(keys: list[AttemptKey]) -> list[AttemptKey]:
    """``keys`` by start time (then stem), one per attempt (`_OUTCOME_RANK` picks the record
    of an attempt written twice); most tasks have one attempt: nothing to sort."""
    if len(keys) < 2:
        return keys
    ordered = sorted(
        keys, key=lambda a: (a.started_us, a.stem, a.task_id, _OUTCOME_RANK.get(a.outcome, 9))
    )
    return [
        k
        for i, k in enumerate(ordered)
        if i == 0 or (ordered[i - 1].stem, ordered[i - 1].task_id) != (k.stem, k.task_id)
    ]


#: Lines of a manifest part `_rows_of` parses together.
_ROWS_AT_ONCE = 1000


def _rows_of(data: bytes) -> Iterator[Any]:
    """The JSON value of each non-blank line of ``data`` (a checked manifest part), parsed
    `_ROWS_AT_ONCE` lines at a time (`_json_lines`): only those are held parsed at once."""
    lines: list[bytes] = []
    for line in io.BytesIO(data):
        if line.strip():
            lines.append(line.rstrip(b"\n"))
        if len(lines) >= _ROWS_AT_ONCE:
            yield from _json_lines(b"\n".join(lines))
            lines.clear()
    if lines:
        yield from _json_lines(b"\n".join(lines))


def parse_attempt_key(rest: str) -> AttemptKey | None:
    """An `AttemptKey` from ``<task>/<stem>.<outcome>.json``; None for anything else."""
    task_id, _, name = rest.partition("/")
    stem, _, tail = name.partition(".")
    outcome = tail.removesuffix(".json")
    parts = stem.split("-")
    if (
        not task_id
        or len(parts) != 3
        or not parts[0].isdigit()
        or not parts[1].isdigit()
        or outcome not in ATTEMPT_OUTCOMES
        or not tail.endswith(".json")
    ):
        return None
    return AttemptKey(task_id, int(parts[0]), int(parts[1]), parts[2], outcome)


def now() -> float:
    """Wall-clock time shared by every process of a run (records compare across machines)."""
    return time.time()
