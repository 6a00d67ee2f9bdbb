"""The Slurm backend's queue: tasks in slices on the shared filesystem, one owner per slice.

A shared SQLite file is no queue for a cluster: its WAL mode needs every process on one
host, and POSIX locks over NFS are slow and fragile under many writers. Here every write
has exactly one writer instead:

- ``slices/<sid>.json``: one slice of tasks, written once by `send_batch` (login node) and
  never changed. A slice is what one Slurm job (array element) works through.
- ``slices/<sid>.state.json``: the slice's queue state (receive counts, leases, delays,
  last errors, dead letters), written only by the slice's **owner**: the process holding
  ``slices/<sid>.lock`` (`flock`). The `ds worker` of the array element serving the slice
  holds it for its whole life; the login node takes it only to reclaim what a finished
  Slurm job left (`reclaim`), which fails while the job lives.
- ``control.json``: what the login node decided (slices purged at cleanup, dead letters
  redriven or dropped), written under ``control.lock`` by `ds` commands only.

Each state file is replaced atomically (temporary file + rename), so readers (`counts` on
the login node, for `ds monitor`) never see half of one. The lease semantics are SQS's (see
`interfaces.queue`), within a slice; a worker bound to a slice (``DS_SLURM_SLICE``)
receives only from it. A worker whose slice is finished (or held by another) may go on with
the next slice that no process holds (``take_more`` decides whether its Slurm job has the
time left): work flows to the jobs Slurm is already running instead of waiting for Slurm
to schedule one more array element per slice. ``held/<worker>`` names the slice a worker
holds now (empty: none), so the login node settles the right slice when its job ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed_something.atomicfile import write_text_atomically
from distributed_something.errors import BackendError, QueueGone
from distributed_something.interfaces.queue import DeadTask, Message, QueueCounts

#: The environment variable naming the slice a worker serves (set by the Slurm job script).
SLICE_ENV = "DS_SLURM_SLICE"
#: The environment variable naming the worker (``slurm-<array job>_<index>``), set likewise.
WORKER_ENV = "DS_SLURM_WORKER"
#: How many slices a worker looks into, at most, for one more to take (a bound on the
#: files it reads at a million tasks).
MAX_EXAMINED = 256


@dataclass(frozen=True)
class Reclaimed:
    """A message a finished Slurm job held (or that ``killed`` names), made visible again
    or dead-lettered (``dead``) by `SliceQueue.reclaim`."""

    task_id: str
    message_id: str
    receive_count: int
    dead: bool


def new_slice_id() -> str:
    """A slice id that sorts by creation time."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


class SliceQueue:
    """A `Queue` (interfaces/queue.py) made of slices in the folder ``root``.

    ``slice_id`` binds the queue to one slice (a worker in a Slurm job): it takes the slice's
    lock on first use and keeps it until the process ends; if another process holds it, the
    slice is someone else's and this queue reads empty and drained (the worker exits).
    With ``take_more`` (called with the longest time in seconds one slice has taken this
    worker), once the bound slice has nothing left, or is someone else's, the queue binds
    itself to the next slice with work that no process holds, while ``take_more`` says yes;
    ``worker`` names the process in ``held/``. Unbound (the login node), the queue sends new
    slices, counts over every slice and manages the dead letters; it does not receive.
    ``tasks_per_slice`` is how many tasks `send_batch` puts in one slice at most: fewer
    when that would leave fewer slices than ``spread`` (the Slurm jobs allowed at once), so
    a small run still uses every job it may.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_receive_count: int,
        tasks_per_slice: int = 10,
        slice_id: str | None = None,
        clock: Callable[[], float] = time.time,
        worker: str | None = None,
        take_more: Callable[[float], bool] | None = None,
        time_for: Callable[[float], bool] | None = None,
        spread: int = 1,
    ) -> None:
        if max_receive_count < 1:
            raise ValueError(f"max_receive_count must be at least 1, got {max_receive_count}")
        self.root = Path(root)
        self.max_receive_count = max_receive_count
        self.tasks_per_slice = max(tasks_per_slice, 1)
        self.spread = max(spread, 1)
        self.slice_id = slice_id
        self._clock = clock
        self._lock = threading.Lock()  # the heartbeat thread extends leases meanwhile
        self.worker = worker
        self._take_more = take_more
        self._owned: _OwnedSlice | None = None
        self._refused = False
        self._taken_at = 0.0  # when the bound slice was taken (monotonic)
        self._longest = 0.0  # the longest a finished slice took this worker, seconds
        self._no_more = False  # looked for one more slice and found none
        self._time_for = time_for
        self._task_longest = 0.0  # the longest time between two receives that gave a task
        self._received_at: float | None = None  # when the last task was received (monotonic)
        self._out_of_time = False  # no time left for one more task: reads drained
        #: slices with every message done or dead (they never change again), by the login node
        self._complete: set[str] = set()

    # -- files ---------------------------------------------------------------------------

    @property
    def slices_dir(self) -> Path:
        return self.root / "slices"

    def slice_ids(self) -> list[str]:
        """Every slice, oldest first."""
        try:
            names = [p.name for p in self.slices_dir.iterdir()]
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".json")] for n in names if _is_slice_file(n))

    def messages_of(self, sid: str) -> list[dict[str, str]]:
        """The slice's messages (``id``, ``task_id``, ``body``); [] for a removed slice."""
        try:
            data = json.loads((self.slices_dir / f"{sid}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise BackendError(
                f"slice {sid} in {self.slices_dir} cannot be read: {error}"
            ) from None
        messages: list[dict[str, str]] = data["messages"]
        return messages

    def _read_state(self, sid: str) -> dict[str, Any]:
        try:
            text = (self.slices_dir / f"{sid}.state.json").read_text(encoding="utf-8")
            state: dict[str, Any] = json.loads(text)
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as error:
            raise BackendError(f"the state of slice {sid} cannot be read: {error}") from None
        state.setdefault("messages", {})
        state.setdefault("dead", [])
        return state

    def _write_state(self, sid: str, state: dict[str, Any]) -> None:
        write_text_atomically(self.slices_dir / f"{sid}.state.json", json.dumps(state))

    def _control(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "control.json").read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as error:
            raise BackendError(f"{self.root / 'control.json'} cannot be read: {error}") from None
        data.setdefault("purged", [])
        data.setdefault("dropped", [])
        return data

    @contextlib.contextmanager
    def _editing_control(self) -> Iterator[dict[str, Any]]:
        """The control file, locked against other `ds` commands while it is changed."""
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / "control.lock", wait=True):
            data = self._control()
            yield data
            write_text_atomically(self.root / "control.json", json.dumps(data))

    # -- the bound slice -----------------------------------------------------------------

    def _own(self) -> _OwnedSlice | None:
        """The bound slice, its lock taken on first use; None when another process has it
        (or it was purged)."""
        if self.slice_id is None:
            # A `ds worker` started by hand: it has no slice, so no task can come to it.
            # QueueGone makes the worker exit at once rather than poll; said loudly first.
            problem = (
                "on Slurm, `ds worker` runs inside the Slurm jobs that `ds start-cluster` "
                f"submits (they set {SLICE_ENV}); start workers with `ds start-cluster`"
            )
            logging.getLogger("ds.worker").error("%s", problem)
            raise QueueGone(problem)
        if self._owned is None and not self._refused:
            owned = _OwnedSlice.take(self, self.slice_id)
            if owned is None:
                self._refused = True
                self._note_held("")
            else:
                self._owned = owned
                self._taken_at = time.monotonic()
                self._note_held(owned.sid)
        if self._owned is not None and self.slice_id in self._control()["purged"]:
            return None
        return self._owned

    def _own_or_next(self) -> _OwnedSlice | None:
        """`_own`, or the next slice with work when the bound one has none left (or is
        someone else's) and ``take_more`` allows one more."""
        owned = self._own()
        if self._take_more is None or self._no_more:
            return owned
        if owned is not None and owned.pending():
            return owned
        if self._owned is not None and self.slice_id in self._control()["purged"]:
            return owned  # cleanup is under way: no more work for anyone
        if self._owned is not None:
            self._longest = max(self._longest, time.monotonic() - self._taken_at)
        if not self._take_more(self._longest):
            self._no_more = True
            return owned
        taken = self._next_slice()
        if taken is None:
            self._no_more = True
            return owned
        previous, self._owned = self._owned, taken
        self.slice_id = taken.sid
        self._refused = False
        self._taken_at = time.monotonic()
        self._note_held(taken.sid)  # before the previous lock goes: never unnamed
        if previous is not None and previous.lock_fd is not None:
            os.close(previous.lock_fd)
        return taken

    def _next_slice(self) -> _OwnedSlice | None:
        """Lock the first slice after the bound one (in id order, wrapping around) that no
        process holds, is not purged, and is `ready` to be worked on."""
        ids = self.slice_ids()
        current = self.slice_id or ""
        later = [sid for sid in ids if sid > current]
        order = later + [sid for sid in ids if sid < current]
        purged = set(self._control()["purged"])
        examined = 0
        for sid in order:
            if sid in self._complete or sid in purged:
                continue
            if examined >= MAX_EXAMINED:
                break
            taken = _OwnedSlice.take(self, sid)
            if taken is None:
                continue  # another worker's (its own job's, or one that went on to it)
            examined += 1
            if taken.ready(self._clock()):
                return taken
            if not taken.pending():
                self._complete.add(sid)
            if taken.lock_fd is not None:
                os.close(taken.lock_fd)
        return None

    def _note_held(self, sid: str) -> None:
        """Say in ``held/<worker>`` which slice this worker holds now ('' for none)."""
        if self.worker:
            write_text_atomically(self.root / "held" / self.worker, sid)

    def held_by(self, worker: str) -> str | None:
        """The slice worker ``worker`` held last ('' for none); None when it never said
        (it did not start, or it predates ``held/``)."""
        try:
            return (self.root / "held" / worker).read_text().strip()
        except FileNotFoundError:
            return None

    def held_workers(self) -> set[str]:
        """The workers that say in ``held/`` which slice they held last."""
        try:
            return {path.name for path in (self.root / "held").iterdir()}
        except FileNotFoundError:
            return set()

    def forget_worker(self, worker: str) -> None:
        """Remove ``held/<worker>`` (its job ended and was settled)."""
        (self.root / "held" / worker).unlink(missing_ok=True)

    def close(self) -> None:
        """Let go of the bound slice (its lock); the process ending does the same."""
        with self._lock:
            if self._owned is not None and self._owned.lock_fd is not None:
                os.close(self._owned.lock_fd)
            self._owned = None

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int:
        """Write ``items`` as new slices of ``tasks_per_slice`` tasks (fewer when there are
        not enough items for ``spread`` full slices), visible at once."""
        rows = list(items)
        self.slices_dir.mkdir(parents=True, exist_ok=True)
        per = min(self.tasks_per_slice, max(1, -(-len(rows) // self.spread)))
        for start in range(0, len(rows), per):
            sid = new_slice_id()
            chunk = rows[start : start + per]
            messages = [
                {"id": f"{sid}.{i}", "task_id": task_id, "body": body}
                for i, (task_id, body) in enumerate(chunk)
            ]
            write_text_atomically(
                self.slices_dir / f"{sid}.json", json.dumps({"messages": messages})
            )
        return len(rows)

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        """Lease up to ``max_messages`` visible messages of the bound slice (oldest visible
        first); a message already received ``max_receive_count`` times is dead-lettered."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        with self._lock:
            if self._no_time_left():
                return []
            owned = self._own_or_next()
            if owned is None:
                return []
            now = self._clock()
            received: list[Message] = []
            for index, message in owned.in_visible_order(now):
                if len(received) >= max_messages:
                    break
                entry = owned.entry(message["id"])
                if entry["rc"] >= self.max_receive_count:
                    owned.bury(index, entry.get("error") or "", now)
                    continue
                token = secrets.token_hex(8)
                entry.update(rc=entry["rc"] + 1, token=token, visible_at=now + lease_seconds)
                entry["leased"] = True
                received.append(
                    Message(
                        handle=f"{message['id']}:{token}",
                        task_id=message["task_id"],
                        body=message["body"],
                        receive_count=entry["rc"],
                        message_id=message["id"],
                    )
                )
            owned.save()
            if received:
                self._received_at = time.monotonic()
            return received

    def _held(self, message: Message) -> tuple[_OwnedSlice, dict[str, Any]] | None:
        owned = self._own()
        mid, _, token = message.handle.rpartition(":")
        if owned is None or mid not in owned.index:
            return None
        entry = owned.entry(mid)
        if entry.get("token") != token or entry.get("done") or entry.get("dead"):
            return None
        return owned, entry

    def extend_lease(self, message: Message, seconds: float) -> bool:
        with self._lock:
            held = self._held(message)
            if held is None:
                return False
            owned, entry = held
            entry["visible_at"] = self._clock() + seconds
            owned.save()
            return True

    def delete(self, message: Message) -> None:
        with self._lock:
            held = self._held(message)
            if held is not None:
                owned, entry = held
                entry.update(done=True, leased=False)
                owned.save()

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None:
        if delay_seconds < 0:
            raise ValueError(f"delay_seconds must not be negative, got {delay_seconds}")
        with self._lock:
            held = self._held(message)
            if held is not None:
                owned, entry = held
                entry.update(visible_at=self._clock() + delay_seconds, leased=False)
                if error is not None:
                    entry["error"] = error
                owned.save()

    # -- counts and dead letters -----------------------------------------------------------

    def _no_time_left(self) -> bool:
        """True (from then on) when ``time_for`` says the job has no time for one more task
        as long as the longest this worker ran: the worker then finds the queue drained and
        exits, and its slice's tasks wait for another job (a task cut by the time limit
        would cost a try)."""
        if self._out_of_time or self._time_for is None:
            return self._out_of_time
        now = time.monotonic()
        if self._received_at is not None:
            self._task_longest = max(self._task_longest, now - self._received_at)
            self._received_at = None
        if self._task_longest > 0 and not self._time_for(self._task_longest):
            self._out_of_time = True
            logging.getLogger("ds.worker").info(
                "not enough of the Slurm job's time left for one more task (the longest took "
                "%.0f s): its slice's tasks wait for the next job",
                self._task_longest,
            )
        return self._out_of_time

    def counts(self) -> QueueCounts:
        """The bound slice's counts for a worker (the whole queue's when unbound); none at
        all once the job has no time left for one more task."""
        now = self._clock()
        if self._out_of_time:
            return QueueCounts(0, 0, 0)
        if self.slice_id is not None:
            with self._lock:
                owned = self._own_or_next()
                if owned is None:
                    return QueueCounts(0, 0, 0)
                return _count([m for _, m in owned.pending()], owned.state, now)
        visible = in_flight = dead = 0
        dropped = set(self._control()["dropped"])
        for view in self.views():
            dead += sum(1 for d in view.state["dead"] if d["id"] not in dropped)
            c = _count(view.pending, view.state, now)
            visible += c.visible
            in_flight += c.in_flight
        return QueueCounts(visible, in_flight, dead)

    def views(self) -> Iterator[SliceView]:
        """Every slice as the login node sees it: its unfinished messages (none when purged)
        and its state file."""
        purged = set(self._control()["purged"])
        for sid in self.slice_ids():
            if sid in self._complete:
                continue
            state = self._read_state(sid)
            pending = []
            if sid not in purged:
                entries = state["messages"]
                pending = [
                    m
                    for m in self.messages_of(sid)
                    if not entries.get(m["id"], {}).get("done")
                    and not entries.get(m["id"], {}).get("dead")
                ]
            if not pending and not state["dead"]:
                self._complete.add(sid)
            yield SliceView(sid, pending, state)

    def is_free(self, sid: str) -> bool:
        """Whether no process holds slice ``sid`` now (a worker on a node Slurm lost touch
        with may still hold it: then it is not handed to a new job)."""
        with locked(self.slices_dir / f"{sid}.lock", wait=False) as free:
            return free

    def slices_with_work(self) -> list[str]:
        """Slices with messages neither done nor dead (visible, leased or delayed)."""
        return [v.sid for v in self.views() if v.pending]

    def _dead_entries(self) -> list[dict[str, Any]]:
        dropped = set(self._control()["dropped"])
        return [d for v in self.views() for d in v.state["dead"] if d["id"] not in dropped]

    def list_dead(self) -> list[DeadTask]:
        return [
            DeadTask(d["task_id"], d["body"], int(d["rc"]), d.get("error") or "")
            for d in self._dead_entries()
        ]

    def redrive(self, task_ids: Sequence[str] | None = None) -> int:
        """Send the dead tasks (all, or those named) again as new slices, with fresh
        receive counts, and drop their dead letters."""
        wanted = None if task_ids is None else set(task_ids)
        with self._editing_control() as control:
            dropped = set(control["dropped"])
            chosen = [
                d
                for v in self.views()
                for d in v.state["dead"]
                if d["id"] not in dropped and (wanted is None or d["task_id"] in wanted)
            ]
            self.send_batch([(d["task_id"], d["body"]) for d in chosen])
            control["dropped"] = [*control["dropped"], *(d["id"] for d in chosen)]
        return len(chosen)

    def drop_dead(self, task_ids: Sequence[str]) -> int:
        wanted = set(task_ids)
        with self._editing_control() as control:
            dropped = set(control["dropped"])
            chosen = [
                d["id"]
                for v in self.views()
                for d in v.state["dead"]
                if d["id"] not in dropped and d["task_id"] in wanted
            ]
            control["dropped"] = [*control["dropped"], *chosen]
        return len(chosen)

    def purge(self) -> None:
        """Drop every message not yet done or dead (cleanup, once the Slurm jobs are gone).
        Slices with no dead letters are removed; the others stay, marked purged."""
        with self._editing_control() as control:
            purged = set(control["purged"])
            for sid in self.slice_ids():
                if sid in purged:
                    continue
                if self._read_state(sid)["dead"]:
                    purged.add(sid)
                    continue
                with locked(self.slices_dir / f"{sid}.lock", wait=False) as free:
                    if not free:
                        purged.add(sid)  # a worker still holds it: it will read it purged
                        continue
                    for suffix in (".json", ".state.json"):
                        (self.slices_dir / f"{sid}{suffix}").unlink(missing_ok=True)
                (self.slices_dir / f"{sid}.lock").unlink(missing_ok=True)
                self._complete.discard(sid)
            control["purged"] = sorted(purged)

    # -- the login node's repair of what a finished Slurm job left -------------------------

    def reclaim(
        self,
        sid: str,
        error: str,
        killed: dict[str, str] | None = None,
        final: frozenset[str] = frozenset(),
    ) -> list[Reclaimed] | None:
        """Once the Slurm job serving slice ``sid`` is gone: make the messages it still
        held visible again with ``error`` as their last error, and give the tasks in
        ``killed`` (task id → error: the job was killed while running them, and they were
        handed back) that error. The tasks in ``final`` (their last try was used) are
        dead-lettered instead. Returns what was changed; None when a live process holds
        the slice.
        """
        killed = killed or {}
        changed: list[Reclaimed] = []
        with self._lock, locked(self.slices_dir / f"{sid}.lock", wait=False) as free:
            if not free:
                return None
            owned = _OwnedSlice(self, sid, None)
            now = self._clock()
            for index, message in owned.pending():
                entry = owned.entry(message["id"])
                held = bool(entry.get("leased")) and entry.get("rc", 0) > 0
                if not held and message["task_id"] not in killed:
                    continue
                why = killed.get(message["task_id"], error)
                entry.update(leased=False, visible_at=now, error=why)
                dead = message["task_id"] in final
                if dead:
                    owned.bury(index, why, now)
                changed.append(Reclaimed(message["task_id"], message["id"], entry["rc"], dead))
            if changed:
                owned.save()
        return changed

    def bury_copies(self, tasks: dict[str, str]) -> int:
        """Dead-letter every unfinished copy of ``tasks`` (task id → error) in slices no
        process holds: a worker stopped by Slurm may have sent its task again as a fresh
        message before Slurm's verdict made it final. Returns how many copies."""
        buried = 0
        for view in list(self.views()):
            if not any(m["task_id"] in tasks for m in view.pending):
                continue
            with self._lock, locked(self.slices_dir / f"{view.sid}.lock", wait=False) as free:
                if not free:
                    continue
                owned = _OwnedSlice(self, view.sid, None)
                now = self._clock()
                for index, message in owned.pending():
                    if message["task_id"] in tasks:
                        owned.bury(index, tasks[message["task_id"]], now)
                        buried += 1
                owned.save()
        return buried


@dataclass
class SliceView:
    """One slice as read on the login node."""

    sid: str
    #: messages neither done nor dead
    pending: list[dict[str, str]]
    state: dict[str, Any]


class _OwnedSlice:
    """A slice whose lock this process holds: its messages and state, kept in memory and
    written through on every change."""

    def __init__(self, queue: SliceQueue, sid: str, lock_fd: int | None) -> None:
        self.queue = queue
        self.sid = sid
        self.lock_fd = lock_fd  # kept open: closing it would release the lock
        self.messages = queue.messages_of(sid)
        self.index = {m["id"]: i for i, m in enumerate(self.messages)}
        self.state = queue._read_state(sid)

    @classmethod
    def take(cls, queue: SliceQueue, sid: str) -> _OwnedSlice | None:
        path = queue.slices_dir / f"{sid}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            return None
        return cls(queue, sid, fd)

    def entry(self, mid: str) -> dict[str, Any]:
        entries: dict[str, dict[str, Any]] = self.state["messages"]
        return entries.setdefault(mid, {"rc": 0, "visible_at": 0.0})

    def pending(self) -> list[tuple[int, dict[str, str]]]:
        entries = self.state["messages"]
        return [
            (i, m)
            for i, m in enumerate(self.messages)
            if not entries.get(m["id"], {}).get("done") and not entries.get(m["id"], {}).get("dead")
        ]

    def ready(self, now: float) -> bool:
        """Whether a worker going on to this slice finds work now, and nothing a gone
        worker still holds: a leased message is the login node's to reclaim (it knows how
        that worker's Slurm job ended, for the task's records)."""
        pending = self.pending()
        if any(self.entry(m["id"]).get("leased") for _, m in pending):
            return False
        return bool(self.in_visible_order(now))

    def in_visible_order(self, now: float) -> list[tuple[int, dict[str, str]]]:
        found = [
            (float(self.entry(m["id"])["visible_at"]), i, m)
            for i, m in self.pending()
            if float(self.entry(m["id"])["visible_at"]) <= now
        ]
        return [(i, m) for _, i, m in sorted(found, key=lambda f: (f[0], f[1]))]

    def bury(self, index: int, error: str, now: float) -> None:
        message = self.messages[index]
        entry = self.entry(message["id"])
        entry.update(dead=True, leased=False)
        self.state["dead"].append(
            {
                "id": message["id"],
                "task_id": message["task_id"],
                "body": message["body"],
                "rc": entry["rc"],
                "error": error,
                "at": now,
            }
        )

    def save(self) -> None:
        self.queue._write_state(self.sid, self.state)


def _count(pending: list[dict[str, str]], state: dict[str, Any], now: float) -> QueueCounts:
    entries = state["messages"]
    visible = in_flight = 0
    for message in pending:
        if float(entries.get(message["id"], {}).get("visible_at", 0.0)) <= now:
            visible += 1
        else:
            in_flight += 1
    return QueueCounts(visible, in_flight, len(state["dead"]))


def _is_slice_file(name: str) -> bool:
    return name.endswith(".json") and not name.endswith(".state.json") and not name.startswith(".")


def _try_lock(fd: int, *, wait: bool = False) -> bool:
    """Take an exclusive lock on ``fd``, waiting for it or not. A filesystem without locks
    (an NFS mount without lockd) cannot keep two Slurm jobs off one slice: said loudly."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        raise BackendError(
            f"cannot lock files in the shared folder ({error}); ds on Slurm needs a shared "
            "filesystem with working locks (NFS with lockd, Lustre, GPFS, BeeGFS)"
        ) from None
    return True


@contextlib.contextmanager
def locked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; yields False
    when ``wait`` is off and another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield _try_lock(fd, wait=wait)
    finally:
        os.close(fd)
