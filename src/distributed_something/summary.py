"""The ledger summary: a run's counts in about constant time, still from its records.

Listing every attempt record of a run is linear in its tasks: minutes on S3 and tens of
seconds locally at a million. `ds status` and the monitor instead read

- a **checkpoint** (``summary/checkpoint.txt`` in the run's records): the counts as the
  records stood at a time T (``covered_us``), and an entry per task of the manifest and per
  task with an event — its `ledger.event_code` (``-``: none), whether it was delivered
  twice, skipped, and is in the manifest — spread over `SHARDS` shards by a hash of its id,
  so a few tasks are looked up without parsing the rest. It also names the manifest parts
  and the submit-time skip lists it counted (their keys and sizes) and the tasks running
  at T;
- the **journal** since T: before a worker opens an attempt or skips a task, and before
  anyone writes a mark, it writes an empty *intent* object
  ``journal/<minute>/<µs>.<a|m|s>.<detail>.<task>`` (`RunRecords.write_intent`). The tasks
  named there since T, and the tasks running at T (an open attempt is closed without an
  intent), are the only ones whose state can have changed: only they are read again, one
  listing each, and the counts are moved from their old state to their new one.

Crash safety: the intent is written before its record, so no record written after T lacks
an intent after T. An intent whose record never landed (its writer died in between) only
makes a task be read again. The checkpoint moves forward to a reader's start minus
`margin` (how late an intent may land after its key time: clock skew and the write's
duration), and never past an intent whose record the reader did not see yet — unless that
intent is older than `GIVE_UP_S` (its writer is gone). A checkpoint that cannot be read
whole, or that counted other manifest parts or skip lists than there are now (a second
submit), is not used: the counts are made again from the records (`rebuild`: the tasks'
codes from the old checkpoint and the journal since, or from a whole listing), and a new
checkpoint written. Counts are made by the same functions a whole reading uses
(`ledger.event_code`, `ledger.state_of`), so `ds status` and `ds report` agree.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distributed_something.errors import BackendError
from distributed_something.ledger import (
    EVENT_CODES,
    STATES,
    count_codes,
    event_code,
    event_codes,
    state_of,
)
from distributed_something.records import RunRecords

#: How late (s) an intent may land after the time in its key, unless the storage says
#: (``journal_margin``): S3 writes from many machines with their own clocks.
DEFAULT_MARGIN_S = 120.0
#: An intent whose record has not shown up after this long (s) belongs to a dead writer.
GIVE_UP_S = 900.0
#: Roll the checkpoint forward when this many tasks had to be read again …
ROLL_TASKS = 50
#: … or when it is this old (s).
ROLL_AGE_S = 120.0
#: Shards of the checkpoint's task entries.
SHARDS = 256
VERSION = 2
#: The code of a task without an attempt or a mark.
QUIET = "-"

#: (event code, duplicate, skipped, in the manifest)
Entry = tuple[str, bool, bool, bool]


def margin(records: RunRecords) -> float:
    """How late an intent may land after its key time on this storage (seconds)."""
    return float(getattr(records.storage, "journal_margin", DEFAULT_MARGIN_S))


def shard_of(task_id: str) -> int:
    """The checkpoint shard that holds a task's entry."""
    return zlib.crc32(task_id.encode()) % SHARDS


def state_of_entry(entry: Entry) -> str:
    """The task's state from its entry (see `ledger.state_of`)."""
    code, _, skipped, _ = entry
    if code == QUIET:
        return "skipped" if skipped else "pending"
    return state_of(code, skipped)


@dataclass
class Checkpoint:
    """A checkpoint as read: its head and its shards, parsed only when looked up."""

    covered_us: int
    counts: dict[str, int]
    manifest: list[list[object]]
    skip_lists: list[list[object]]
    running: list[str]
    raw: bytes
    offsets: list[int]
    _parsed: dict[int, dict[str, Entry]] = field(default_factory=dict)

    def shard(self, index: int) -> dict[str, Entry]:
        """The entries of one shard (parsed once)."""
        found = self._parsed.get(index)
        if found is None:
            found = self._parsed[index] = _parse_shard(
                self.raw[self.offsets[index] : self.offsets[index + 1]]
            )
        return found

    def lookup(self, task_ids: Iterable[str]) -> dict[str, Entry]:
        """The entries of those of ``task_ids`` that have one."""
        out = {}
        for task_id in task_ids:
            entry = self.shard(shard_of(task_id)).get(task_id)
            if entry is not None:
                out[task_id] = entry
        return out

    def entries(self) -> dict[str, Entry]:
        """Every entry (a whole parse: for a rebuild)."""
        out: dict[str, Entry] = {}
        for index in range(SHARDS):
            out.update(self.shard(index))
        return out


def _parse_shard(body: bytes) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for line in body.decode().splitlines():
        task_id, code, flags = line.rsplit(" ", 2)
        if (code not in EVENT_CODES and code != QUIET) or len(flags) != 3:
            raise ValueError(f"not a checkpoint entry: {line!r}")
        out[task_id] = (code, flags[0] == "1", flags[1] == "1", flags[2] == "1")
    return out


def _encode(task_id: str, entry: Entry) -> str:
    code, dup, skipped, listed = entry
    return f"{task_id} {code} {int(dup)}{int(skipped)}{int(listed)}\n"


def read_checkpoint(records: RunRecords) -> Checkpoint | None:
    """The run's checkpoint; None when there is none or it cannot be read (a torn or
    damaged one is not trusted: the counts are made again and it is written again)."""
    try:
        raw = records.storage.get_bytes(records.checkpoint_key())
    except KeyError:
        return None
    head, _, _ = raw.partition(b"\n")
    try:
        meta = json.loads(head)
        if meta.get("version") != VERSION:
            return None
        start = len(head) + 1
        offsets = [start + int(o) for o in meta["offsets"]]
        if len(offsets) != SHARDS + 1 or offsets[-1] != len(raw):
            return None  # torn: not the length it was written with
        counts = {k: int(meta["counts"][k]) for k in (*STATES, "total", "duplicates")}
        return Checkpoint(
            int(meta["covered_us"]),
            counts,
            list(meta["manifest"]),
            list(meta["skip_lists"]),
            [str(t) for t in meta["running"]],
            raw,
            offsets,
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def write_checkpoint(
    records: RunRecords,
    covered_us: int,
    counts: dict[str, int],
    signatures: tuple[list[list[object]], list[list[object]]],
    shards: list[bytes],
    running: list[str],
) -> None:
    """Write a checkpoint (see the module) whole, atomically; a storage that refuses
    (read-only access) changes nothing but the next reader's speed."""
    offsets = [0]
    for body in shards:
        offsets.append(offsets[-1] + len(body))
    head = json.dumps(
        {
            "version": VERSION,
            "covered_us": covered_us,
            "counts": counts,
            "manifest": signatures[0],
            "skip_lists": signatures[1],
            "running": running,
            "offsets": offsets,
        }
    ).encode()
    with contextlib.suppress(BackendError, OSError):
        records.storage.put_bytes(records.checkpoint_key(), b"\n".join([head, b"".join(shards)]))


def signatures(records: RunRecords) -> tuple[list[list[object]], list[list[object]]]:
    """(manifest parts, submit-time skip lists) as [key, size] pairs: one listing each."""
    manifest = [[o.key, o.size] for o in records.storage.list(f"{records.run_prefix}manifest-")]
    skips = [[o.key, o.size] for o in records.storage.list(f"{records.run_prefix}skipped-")]
    return manifest, skips


def read_counts(
    records: RunRecords, *, clock: Callable[[], float] = time.time, write: bool = True
) -> dict[str, int]:
    """`Ledger.counts` of the run (what a whole reading gives), from the checkpoint and the
    journal since; made again from the records when the checkpoint cannot be used. With
    ``write`` the checkpoint is written or rolled forward when due."""
    started_us = round(clock() * 1e6)
    checkpoint = read_checkpoint(records)
    sigs = signatures(records)
    if checkpoint is None or [checkpoint.manifest, checkpoint.skip_lists] != list(sigs):
        return rebuild(records, checkpoint, sigs, started_us, write=write)
    tail, held_us = _tail(records, checkpoint, started_us)
    old = checkpoint.lookup(tail)
    counts = dict(checkpoint.counts)
    updates: dict[str, Entry] = {}
    for task_id, (now_code, now_dup) in tail.items():
        before = old.get(task_id, (QUIET, False, False, False))
        code, dup = (now_code, now_dup) if now_code is not None else (QUIET, False)
        # Skip records are only ever added: the submit-time lists are the checkpoint's.
        skipped = before[2] or records.storage.exists(records.skip_key(task_id))
        after: Entry = (code, dup, skipped, before[3])
        if after == before:
            continue
        updates[task_id] = after
        if before[3]:
            counts[state_of_entry(before)] -= 1
            counts[state_of_entry(after)] += 1
            counts["duplicates"] += int(after[1]) - int(before[1])
    covered_us = max(checkpoint.covered_us, held_us)
    due = len(tail) > ROLL_TASKS or covered_us - checkpoint.covered_us > ROLL_AGE_S * 1e6
    if write and due:
        running = [t for t, e in {**old, **updates}.items() if e[0] == "running"]
        touched = {shard_of(t) for t in updates}
        shards = []
        for index in range(SHARDS):
            body = checkpoint.raw[checkpoint.offsets[index] : checkpoint.offsets[index + 1]]
            if index in touched:
                entries = {**checkpoint.shard(index)}
                entries.update((t, e) for t, e in updates.items() if shard_of(t) == index)
                body = "".join(_encode(t, e) for t, e in entries.items()).encode()
            shards.append(body)
        write_checkpoint(records, covered_us, counts, sigs, shards, running)
    return counts


def _tail(
    records: RunRecords, checkpoint: Checkpoint, started_us: int
) -> tuple[dict[str, tuple[str | None, bool]], int]:
    """The tasks to read again — named by intents since the checkpoint, or running at it —
    each with its (event code, duplicate) now (None: it has no event), and how far the
    checkpoint may move: to the start minus the margin, held at the oldest intent whose
    record has not landed yet (unless it is older than `GIVE_UP_S`)."""
    margin_us = round(margin(records) * 1e6)
    wanted: dict[str, list[tuple[str, str, int]]] = {t: [] for t in checkpoint.running}
    for intent in records.intents_since(checkpoint.covered_us, started_us + margin_us):
        wanted.setdefault(intent.task_id, []).append((intent.kind, intent.detail, intent.at_us))
    give_up_us = started_us - round(GIVE_UP_S * 1e6)
    held_us = started_us - margin_us
    tail: dict[str, tuple[str | None, bool]] = {}
    for task_id, intents in wanted.items():
        attempts = records.attempt_keys(task_id)
        marks = records.marks_of(task_id)
        if attempts or marks:
            code, dup = event_code(
                [(a.started_us, a.outcome) for a in attempts], [(m.at_us, m.kind) for m in marks]
            )
            tail[task_id] = (code, dup)
        else:
            tail[task_id] = (None, False)
        stems = {a.stem for a in attempts}
        seen_marks = {f"{m.kind}-{m.at_us}" for m in marks}
        for kind, detail, at_us in intents:
            if kind == "a":
                landed = detail in stems
            elif kind == "m":
                landed = detail in seen_marks
            else:
                landed = records.storage.exists(records.skip_key(task_id))
            if not landed and at_us > give_up_us:
                held_us = min(held_us, at_us)  # read this task again until its record lands
    return tail, held_us


def rebuild(
    records: RunRecords,
    checkpoint: Checkpoint | None,
    sigs: tuple[list[list[object]], list[list[object]]],
    started_us: int,
    *,
    write: bool = True,
) -> dict[str, int]:
    """The counts made again from the records — each task's code from the old checkpoint
    and the journal since, or (without one) from a whole listing; the manifest and skip
    records read whole — and a new checkpoint written (with ``write``)."""
    margin_us = round(margin(records) * 1e6)
    if checkpoint is None:
        codes = event_codes(records.attempt_keys(), records.marks())
        covered_us = started_us - margin_us
    else:
        codes = {t: (e[0], e[1]) for t, e in checkpoint.entries().items() if e[0] != QUIET}
        tail, covered_us = _tail(records, checkpoint, started_us)
        covered_us = max(checkpoint.covered_us, covered_us)
        for task_id, (code, dup) in tail.items():
            if code is None:
                codes.pop(task_id, None)
            else:
                codes[task_id] = (code, dup)
    ids = records.manifest_ids()
    skipped = records.skipped_ids()
    counts = count_codes(ids, skipped, codes)
    if write:
        bodies: list[list[str]] = [[] for _ in range(SHARDS)]
        for task_id in ids:
            code, dup = codes.get(task_id, (QUIET, False))
            entry = (code, dup, task_id in skipped, True)
            bodies[shard_of(task_id)].append(_encode(task_id, entry))
        for task_id, (code, dup) in codes.items():
            if task_id not in ids:
                bodies[shard_of(task_id)].append(
                    _encode(task_id, (code, dup, task_id in skipped, False))
                )
        running = [t for t, (code, _) in codes.items() if code == "running"]
        shards = ["".join(b).encode() for b in bodies]
        write_checkpoint(records, covered_us, counts, sigs, shards, running)
    return counts


def recount(records: RunRecords, *, clock: Callable[[], float] = time.time) -> dict[str, int]:
    """The counts made again from a whole reading of the records, and a new checkpoint: for
    when records were written without an intent (a worker of an earlier version)."""
    return rebuild(records, None, signatures(records), round(clock() * 1e6))
