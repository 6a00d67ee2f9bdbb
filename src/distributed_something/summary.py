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

The checkpoint moves to a reading's start minus a margin (below), so the intents of the
last moments are listed again by the next reading; the checkpoint also names those whose
records it counted (``seen``), and a later reading reads a task again only for an intent
it does not name (or when the task was running). A monitor ticking through a busy run then
reads each task about once, not once per tick for the length of the margin.

A task is read only as far as it can have changed (`_read_tail`): with no event at the
checkpoint and no mark or skip intent since, only its attempts are listed. No reader should
meet a long journal: the monitors fold it in every tick, and a writer that wrote
`records.FOLD_EVERY` intents (or one `records.FOLD_AGE_S` ago) not yet covered folds them in
itself (`fold_behind`; a small ``covered`` hint tells it whether a monitor did). The monitors
then delete the journal's minutes `JOURNAL_KEEP_S` behind the checkpoint (`prune_journal`),
after raising a *floor* (`RunRecords.journal_floor`): a reader reads the floor after listing
the journal, and one whose checkpoint is behind it counts from every record instead; no
checkpoint behind the floor is written.

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
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distributed_something.errors import BackendError
from distributed_something.ledger import (
    DONE_ATTEMPT,
    EVENT_CODES,
    STATES,
    count_codes,
    event_code,
    event_codes,
    state_of,
)
from distributed_something.records import MINUTE_US, AttemptKey, Mark, RunRecords

log = logging.getLogger(__name__)

#: How late (s) an intent may land after the time in its key, unless the storage says
#: (``journal_margin``): S3 writes from many machines with their own clocks.
DEFAULT_MARGIN_S = 120.0
#: An intent whose record has not shown up after this long (s) belongs to a dead writer.
GIVE_UP_S = 900.0
#: Roll the checkpoint forward when this many tasks had to be read again …
ROLL_TASKS = 50
#: … or when it is this old (s).
ROLL_AGE_S = 120.0
#: Entries a delta may hold before the monitor writes the checkpoint whole again.
COMPACT_TASKS = 20_000
#: The journal kept behind a checkpoint (s) before it is deleted (`prune_journal`).
JOURNAL_KEEP_S = 1800.0
#: Most intents one reading deletes (the rest go at the next).
PRUNE_BATCH = 20_000
#: Shards of the checkpoint's task entries.
SHARDS = 256
VERSION = 2
#: The code of a task without an attempt or a mark.
QUIET = "-"

#: (event code, duplicate, skipped, in the manifest)
Entry = tuple[str, bool, bool, bool]
#: An intent as (task id, key time, kind, detail): one a reading saw land (`Checkpoint.seen`).
Seen = tuple[str, int, str, str]
#: Most landed intents a checkpoint remembers past its time; beyond, none (they are read
#: again, as without any).
SEEN_MAX = 50_000


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
    #: the base's id: a delta names the base it adds to
    base_id: str = ""
    #: the entries changed since the base was written (the delta's), looked up first
    delta: dict[str, Entry] = field(default_factory=dict)
    #: intents keyed at or after ``covered_us`` whose records the writer of this checkpoint
    #: read (its entries count them): a later reading need not read their tasks again for
    #: them (unless the task was running: its attempt closes without an intent)
    seen: set[Seen] = field(default_factory=set)
    #: each shard's lines are in task id order (`write_checkpoint` writes them so): a
    #: lookup is a binary search; False in a checkpoint written before they were
    in_order: bool = False
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
            entry = self.delta.get(task_id) or self._find(task_id)
            if entry is not None:
                out[task_id] = entry
        return out

    def _find(self, task_id: str) -> Entry | None:
        """One task's entry in the base, found in its shard's bytes without parsing the
        shard (a thousand lookups in a million entries take milliseconds)."""
        index = shard_of(task_id)
        if index in self._parsed:
            return self._parsed[index].get(task_id)
        start, end = self.offsets[index], self.offsets[index + 1]
        if self.in_order:
            return self._search(task_id, start, end)
        needle = task_id.encode() + b" "
        pos = self.raw.find(needle, start, end)
        while pos != -1:
            line_end = self.raw.find(b"\n", pos, end)
            if pos == start or self.raw[pos - 1] == 10:  # at a line's start
                parsed = _parse_shard(self.raw[pos : line_end + 1])
                if task_id in parsed:
                    return parsed[task_id]
            pos = self.raw.find(needle, pos + 1, end)
        return None

    def _search(self, task_id: str, low: int, high: int) -> Entry | None:
        """One task's entry by binary search of a shard's lines, ordered by id, from byte
        ``low`` to ``high`` (both at a line's start): a few dozen short reads, where a scan
        of the shard read 50 KB on average (60 µs a task: a thousand tasks changed since
        the checkpoint took `ds status` most of a second)."""
        raw, wanted = self.raw, task_id.encode()
        while low < high:
            start = max(low, raw.rfind(b"\n", low, (low + high) // 2) + 1)
            end = raw.find(b"\n", start, high)
            if end < 0:
                raise ValueError("not a checkpoint shard: its last line has no end")
            found = raw[start:end].rsplit(b" ", 2)[0]
            if found == wanted:
                return _parse_shard(raw[start : end + 1])[task_id]
            if found < wanted:
                low = end + 1
            else:
                high = start
        return None

    def entries(self) -> dict[str, Entry]:
        """Every entry (a whole parse: for a rebuild)."""
        out: dict[str, Entry] = {}
        for index in range(SHARDS):
            out.update(self.shard(index))
        out.update(self.delta)
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


def _shard_body(lines: list[str]) -> bytes:
    """A shard's lines (`_encode`'s), put in task id order (`Checkpoint.in_order`)."""
    lines.sort(key=_line_id)  # in place: a million lines are not copied
    return "".join(lines).encode()


def _line_id(line: str) -> str:
    return line.rsplit(" ", 2)[0]


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
        checkpoint = Checkpoint(
            int(meta["covered_us"]),
            counts,
            list(meta["manifest"]),
            list(meta["skip_lists"]),
            [str(t) for t in meta["running"]],
            raw,
            offsets,
            str(meta["id"]),
            seen=_seen_of(meta.get("seen", [])),
            in_order=meta.get("in_order") is True,
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    _apply_delta(records, checkpoint)
    return checkpoint


def _seen_of(items: object) -> set[Seen]:
    """The landed intents of a checkpoint or delta as written (`_seen_json`); raises
    ValueError (or TypeError) when they are not."""
    if not isinstance(items, list):
        raise ValueError("seen is not a list")
    return {(str(t), int(at), str(kind), str(detail)) for t, at, kind, detail in items}


def _seen_json(seen: set[Seen]) -> list[list[object]]:
    return [list(item) for item in sorted(seen)]


def _apply_delta(records: RunRecords, checkpoint: Checkpoint) -> None:
    """Move ``checkpoint`` forward by its delta (`roll`), when there is one for its base;
    a delta that cannot be read, or of another base (written before the base was made
    again), is not used: the base alone is a checkpoint, only an older one."""
    try:
        data = json.loads(records.storage.get_bytes(records.checkpoint_key() + ".delta"))
        if data["base"] != checkpoint.base_id:
            return
        counts = {k: int(data["counts"][k]) for k in (*STATES, "total", "duplicates")}
        delta: dict[str, Entry] = {}
        for task_id, (code, dup, skipped, listed) in data["entries"].items():
            if code not in EVENT_CODES and code != QUIET:
                return
            delta[str(task_id)] = (str(code), bool(dup), bool(skipped), bool(listed))
        covered, running = int(data["covered_us"]), [str(t) for t in data["running"]]
        seen = _seen_of(data.get("seen", []))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, AttributeError):
        return
    checkpoint.counts, checkpoint.covered_us, checkpoint.running = counts, covered, running
    checkpoint.delta, checkpoint.seen = delta, seen


def write_checkpoint(
    records: RunRecords,
    covered_us: int,
    counts: dict[str, int],
    signatures: tuple[list[list[object]], list[list[object]]],
    shards: Iterable[list[str]],
    running: list[str],
    seen: set[Seen] | None = None,
) -> bool:
    """Write a checkpoint (see the module) whole, atomically: each of the `SHARDS` shards'
    lines (`_encode`'s, put in task id order here, one shard at a time: ``shards`` may
    make each as it is taken); a storage that refuses (read-only access) changes nothing
    but the next reader's speed. True when written."""
    bodies = [_shard_body(entries) for entries in shards]
    offsets = [0]
    for body in bodies:
        offsets.append(offsets[-1] + len(body))
    head = json.dumps(
        {
            "version": VERSION,
            "id": secrets.token_hex(8),
            "covered_us": covered_us,
            "counts": counts,
            "manifest": signatures[0],
            "skip_lists": signatures[1],
            "running": running,
            "seen": _seen_json(seen or set()),
            "offsets": offsets,
            "in_order": True,
        }
    ).encode()
    with contextlib.suppress(BackendError, OSError):
        if not _journal_whole_since(records, covered_us):
            return False  # cleaned past it while this reading went on: it would mislead
        records.storage.put_bytes(records.checkpoint_key(), b"\n".join([head, b"".join(bodies)]))
        records.storage.put_bytes(records.covered_key(), str(covered_us).encode())
        return True
    return False


def signatures(records: RunRecords) -> tuple[list[list[object]], list[list[object]]]:
    """(manifest parts, submit-time skip lists) as [key, size] pairs: one listing each."""
    manifest = [[o.key, o.size] for o in records.storage.list(f"{records.run_prefix}manifest-")]
    skips = [[o.key, o.size] for o in records.storage.list(f"{records.run_prefix}skipped-")]
    return manifest, skips


def read_counts(
    records: RunRecords,
    *,
    clock: Callable[[], float] = time.time,
    write: bool = True,
    compact: bool = False,
    prune: bool | None = None,
) -> dict[str, int]:
    """`read_counts_running` without the running tasks."""
    return read_counts_running(records, clock=clock, write=write, compact=compact, prune=prune)[0]


def read_counts_running(
    records: RunRecords,
    *,
    clock: Callable[[], float] = time.time,
    write: bool = True,
    compact: bool = False,
    prune: bool | None = None,
) -> tuple[dict[str, int], list[str]]:
    """`Ledger.counts` of the run (what a whole reading gives) and the ids of the tasks
    running now (an attempt open), from the checkpoint and the journal since; made again
    from the records when the checkpoint cannot be used. With ``write`` the checkpoint is
    written or rolled forward when due: a delta beside it holds the entries changed since
    it was written; with ``compact`` (a long-lived reader: the monitor) the checkpoint is
    written whole again once the delta holds more than `COMPACT_TASKS` entries (other
    readers: when the reading changed that many itself, or the delta holds five times
    that), so a reader a person waits for seldom rewrites a million. With ``prune``
    (default: ``compact``) the journal the checkpoint covers is deleted, some at a time
    (`prune_journal`)."""
    started_us = round(clock() * 1e6)
    checkpoint = read_checkpoint(records)
    sigs = signatures(records)
    if checkpoint is None or [checkpoint.manifest, checkpoint.skip_lists] != list(sigs):
        return rebuild(records, checkpoint, sigs, started_us, write=write)
    wanted = _wanted(records, checkpoint, started_us)
    if wanted is None:  # the journal since the checkpoint was cleaned away: read it all
        return rebuild(records, None, sigs, started_us, write=write)
    try:
        old = checkpoint.lookup(wanted)
    except ValueError:  # a damaged entry: the checkpoint is not trusted
        return rebuild(records, None, sigs, started_us, write=write)
    tail, held_us, landed = _read_tail(records, wanted, old, started_us)
    counts = dict(checkpoint.counts)
    updates: dict[str, Entry] = {}
    for task_id, (now_code, now_dup, has_skip) in tail.items():
        before = old.get(task_id, (QUIET, False, False, False))
        code, dup = (now_code, now_dup) if now_code is not None else (QUIET, False)
        # Skip records are only ever added: the submit-time lists are the checkpoint's.
        skipped = before[2] or has_skip
        after: Entry = (code, dup, skipped, before[3])
        if after == before:
            continue
        updates[task_id] = after
        if before[3]:
            counts[state_of_entry(before)] -= 1
            counts[state_of_entry(after)] += 1
            counts["duplicates"] += int(after[1]) - int(before[1])
    covered_us = max(checkpoint.covered_us, held_us)
    seen = _still_seen(checkpoint.seen | landed, covered_us)
    due = len(tail) > ROLL_TASKS or covered_us - checkpoint.covered_us > ROLL_AGE_S * 1e6
    # Every task running now was running at the checkpoint or has an intent since: wanted.
    running = [t for t, e in {**old, **updates}.items() if e[0] == "running"]
    if write and due:
        delta = {**checkpoint.delta, **updates}
        # Other readers compact when this reading changed that many itself (it was slow
        # already), or the delta has grown five times over (reading it costs too).
        big = compact or len(updates) >= COMPACT_TASKS or len(delta) > 5 * COMPACT_TASKS
        if len(delta) > COMPACT_TASKS and big:
            by_shard: list[dict[str, Entry]] = [{} for _ in range(SHARDS)]
            for task_id, entry in delta.items():
                by_shard[shard_of(task_id)][task_id] = entry
            shards = (
                [_encode(t, e) for t, e in {**checkpoint.shard(i), **by_shard[i]}.items()]
                for i in range(SHARDS)
            )
            written = write_checkpoint(records, covered_us, counts, sigs, shards, running, seen)
        else:
            written = _write_delta(
                records, checkpoint.base_id, covered_us, counts, running, delta, seen
            )
        if written and (compact if prune is None else prune):
            prune_journal(records, covered_us)  # only behind a checkpoint that was written
    return counts, running


def _write_delta(
    records: RunRecords,
    base_id: str,
    covered_us: int,
    counts: dict[str, int],
    running: list[str],
    delta: dict[str, Entry],
    seen: set[Seen],
) -> bool:
    """Roll the checkpoint forward without rewriting its base: one small object with the
    entries changed since the base, the counts, the running tasks, the time covered and
    the intents since then already counted. True when written."""
    data = {
        "base": base_id,
        "covered_us": covered_us,
        "counts": counts,
        "running": running,
        "entries": {t: list(e) for t, e in delta.items()},
        "seen": _seen_json(seen),
    }
    with contextlib.suppress(BackendError, OSError):
        if not _journal_whole_since(records, covered_us):
            return False  # see `write_checkpoint`
        records.storage.put_bytes(
            records.checkpoint_key() + ".delta", json.dumps(data, separators=(",", ":")).encode()
        )
        records.storage.put_bytes(records.covered_key(), str(covered_us).encode())
        return True
    return False


def _wanted(
    records: RunRecords, checkpoint: Checkpoint, started_us: int
) -> dict[str, list[tuple[str, str, int]]] | None:
    """The tasks to read again — named by intents since the checkpoint (up to the start
    plus the margin), or running at it — each with its intents (kind, detail, time); None
    when the journal since the checkpoint may have been cleaned away (`prune_journal`: the
    journal's floor, read after the listing, is past the checkpoint)."""
    margin_us = round(margin(records) * 1e6)
    wanted: dict[str, list[tuple[str, str, int]]] = {t: [] for t in checkpoint.running}
    seen = checkpoint.seen
    for intent in records.intents_since(checkpoint.covered_us, started_us + margin_us):
        task_id = intent.task_id
        if (task_id, intent.at_us, intent.kind, intent.detail) in seen and task_id not in wanted:
            # Counted by the checkpoint's writer, and the task was not running then: no
            # record of it can have changed without a newer intent.
            continue
        wanted.setdefault(task_id, []).append((intent.kind, intent.detail, intent.at_us))
    if not _journal_whole_since(records, checkpoint.covered_us):
        return None
    return wanted


def _journal_whole_since(records: RunRecords, covered_us: int) -> bool:
    """Whether the journal from ``covered_us`` on is whole: no floor past its minute."""
    return records.journal_floor() <= covered_us // MINUTE_US


def prune_journal(records: RunRecords, covered_us: int, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` intents of the journal's minutes that end `JOURNAL_KEEP_S`
    before ``covered_us`` (a checkpoint just written covers them); returns how many.

    Safe for a reader holding an older checkpoint: the floor (`RunRecords.journal_floor`)
    is raised before any intent goes, and a reader reads it after listing the journal; a
    floor past its checkpoint's minute makes it read every record instead (`rebuild`), and
    no checkpoint behind the floor is written (`write_checkpoint`). Keeping
    `JOURNAL_KEEP_S` (longer than a held-back checkpoint lags: `GIVE_UP_S` and the
    margin) makes that rare: readers find the intents they need."""
    floor = (covered_us - round(JOURNAL_KEEP_S * 1e6)) // MINUTE_US
    if floor <= 0:
        return 0
    try:
        if records.journal_floor() < floor:
            records.raise_journal_floor(floor)
        return records.delete_journal_before(floor, limit)
    except (BackendError, OSError) as exc:  # read-only access: the journal stays
        log.debug("journal not pruned: %s", exc)
        return 0


#: The entry of a task the checkpoint has none for: no event, not skipped, not listed.
NO_ENTRY: Entry = (QUIET, False, False, False)


def _read_tail(
    records: RunRecords,
    wanted: dict[str, list[tuple[str, str, int]]],
    old: dict[str, Entry],
    started_us: int,
) -> tuple[dict[str, tuple[str | None, bool, bool]], int, set[Seen]]:
    """Each task of ``wanted`` with its (event code, duplicate, has a worker's skip record)
    now (code None: it has no event), read from its records; how far the checkpoint may
    move: to the start minus the margin, held at the oldest intent whose record has not
    landed yet (unless it is older than `GIVE_UP_S`); and the intents whose records landed.

    Only what can have changed since the task's entry in ``old`` is read: every mark and
    skip record is written after an intent, so a task whose entry had no event and that
    has no mark intent since has no mark; one with no skip intent has no new skip record;
    and a task with a completed attempt is done whatever its marks say. Most tasks of a
    busy run (no event at the checkpoint, one attempt since) take one listing, not three.
    """
    margin_us = round(margin(records) * 1e6)
    give_up_us = started_us - round(GIVE_UP_S * 1e6)
    held_us = started_us - margin_us
    tail: dict[str, tuple[str | None, bool, bool]] = {}
    landed_intents: set[Seen] = set()

    def attempts_needed(task_id: str) -> bool:
        return old.get(task_id, NO_ENTRY)[0] != QUIET or any(
            kind == "a" for kind, _, _ in wanted[task_id]
        )

    listed: dict[str, list[AttemptKey]] | None = None
    workers = min(records.storage.read_concurrency, len(wanted))
    if workers <= 1:
        # Read one after the other: the attempts of every task at once first (the local
        # records list them in one snapshot, not one read each).
        needed = [task_id for task_id in wanted if attempts_needed(task_id)]
        listed = dict(zip(needed, records.attempt_keys_of(needed), strict=True))

    def read(task_id: str) -> tuple[list[AttemptKey], list[Mark], bool]:
        code, _, skipped, _ = old.get(task_id, NO_ENTRY)
        kinds = {kind for kind, _, _ in wanted[task_id]}
        if listed is not None:
            attempts = listed.get(task_id, [])
        else:
            attempts = records.attempt_keys(task_id) if attempts_needed(task_id) else []
        marks_needed = "m" in kinds or code not in (QUIET, DONE_ATTEMPT)
        if code == DONE_ATTEMPT and not any(a.outcome == "done" for a in attempts):
            marks_needed = True  # its completed attempt is gone: the marks decide again
        marks = records.marks_of(task_id) if marks_needed else []
        has_skip = (
            "s" in kinds and not skipped and records.storage.exists(records.skip_key(task_id))
        )
        return attempts, marks, has_skip

    # One task's records are up to three requests: on S3, many tasks are read at once.
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = dict(zip(wanted, pool.map(read, wanted), strict=True))
    else:
        found = {task_id: read(task_id) for task_id in wanted}
    for task_id, intents in wanted.items():
        attempts, marks, has_skip = found[task_id]
        if attempts or marks:
            code, dup = event_code(
                [(a.started_us, a.outcome) for a in attempts], [(m.at_us, m.kind) for m in marks]
            )
            tail[task_id] = (code, dup, has_skip)
        else:
            tail[task_id] = (None, False, has_skip)
        stems = {a.stem for a in attempts}
        seen_marks = {f"{m.kind}-{m.at_us}" for m in marks}
        skipped_before = old.get(task_id, NO_ENTRY)[2]
        for kind, detail, at_us in intents:
            if kind == "a":
                landed = detail in stems
            elif kind == "m":
                landed = detail in seen_marks
            else:  # a skip record: already skipped, it changes nothing when it lands
                landed = has_skip or skipped_before
            if landed:
                landed_intents.add((task_id, at_us, kind, detail))
            elif at_us > give_up_us:
                held_us = min(held_us, at_us)  # read this task again until its record lands
    return tail, held_us, landed_intents


def rebuild(
    records: RunRecords,
    checkpoint: Checkpoint | None,
    sigs: tuple[list[list[object]], list[list[object]]],
    started_us: int,
    *,
    write: bool = True,
) -> tuple[dict[str, int], list[str]]:
    """The counts and the running tasks made again from the records — each task's code
    from the old checkpoint and the journal since, or (without one) from a whole listing;
    the manifest and skip records read whole — and a new checkpoint written (with
    ``write``)."""
    margin_us = round(margin(records) * 1e6)
    seen: set[Seen] = set()
    if checkpoint is None:
        codes = event_codes(records.attempt_keys(), records.marks())
        covered_us = started_us - margin_us
    else:
        try:
            entries = checkpoint.entries()
        except ValueError:  # a damaged entry: read every record instead
            return rebuild(records, None, sigs, started_us, write=write)
        codes = {t: (e[0], e[1]) for t, e in entries.items() if e[0] != QUIET}
        wanted = _wanted(records, checkpoint, started_us)
        if wanted is None:
            return rebuild(records, None, sigs, started_us, write=write)
        tail, covered_us, landed = _read_tail(records, wanted, entries, started_us)
        covered_us = max(checkpoint.covered_us, covered_us)
        seen = _still_seen(checkpoint.seen | landed, covered_us)
        for task_id, (code, dup, _) in tail.items():
            if code is None:
                codes.pop(task_id, None)
            else:
                codes[task_id] = (code, dup)
    ids = records.manifest_ids()
    skipped = records.skipped_ids()
    counts = count_codes(ids, skipped, codes)
    running = [t for t, (code, _) in codes.items() if code == "running"]
    if write:
        # Encoded at once: a line is the least a task can be held as until it is written.
        shards: list[list[str]] = [[] for _ in range(SHARDS)]
        for task_id in ids:
            code, dup = codes.get(task_id, (QUIET, False))
            shards[shard_of(task_id)].append(
                _encode(task_id, (code, dup, task_id in skipped, True))
            )
        for task_id, (code, dup) in codes.items():
            if task_id not in ids:
                entry = (code, dup, task_id in skipped, False)
                shards[shard_of(task_id)].append(_encode(task_id, entry))
        write_checkpoint(records, covered_us, counts, sigs, shards, running, seen)
    return counts, running


def _still_seen(seen: set[Seen], covered_us: int) -> set[Seen]:
    """Of ``seen``, the intents a reading from ``covered_us`` on still lists; none when they
    are more than `SEEN_MAX` (a checkpoint held back long: they are read again instead)."""
    kept = {item for item in seen if item[1] >= covered_us}
    return kept if len(kept) <= SEEN_MAX else set()


def covered_hint(records: RunRecords) -> int:
    """How far the checkpoint covered the journal when it was last written (µs; 0: not
    known). A hint only: the checkpoint itself says, and is what readers trust."""
    try:
        return int(records.storage.get_bytes(records.covered_key()))
    except (KeyError, ValueError, BackendError, OSError):
        return 0


def fold_behind(records: RunRecords, since_us: int) -> bool:
    """Fold the journal into the checkpoint (a reading that writes it) unless it already
    covers ``since_us``: what a writer does after many intents (`records.FOLD_EVERY`), so
    the journal since the checkpoint stays short even when no monitor runs. Cheap when a
    monitor keeps the checkpoint fresh: one small read. A fold that fails changes nothing
    but the next reader's speed (the writer goes on). Returns True when it folded."""
    if covered_hint(records) >= since_us:
        return False
    try:
        # Not pruned here: a worker leaves deleting thousands of intents to the monitor.
        read_counts(records, compact=True, prune=False)
    except (BackendError, OSError, ValueError) as exc:
        log.warning("could not fold the journal into the ledger summary: %s", exc)
        return False
    return True


def recount(records: RunRecords, *, clock: Callable[[], float] = time.time) -> dict[str, int]:
    """The counts made again from a whole reading of the records, and a new checkpoint: for
    when records were written without an intent (a worker of an earlier version)."""
    return rebuild(records, None, signatures(records), round(clock() * 1e6))[0]
