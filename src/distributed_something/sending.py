"""Sending a submit's tasks to the queue, so that an interrupted sending is finished later.

`submit` writes the run's manifest first (every task that may be queued), then sends. Were
the sending interrupted (Ctrl-C, a network failure, a killed process), the tasks not sent yet
would be in the manifest, so counted pending, and in no queue: a second submit leaves
pending tasks out, and only the monitor's reconciliation, once the queue had drained, would
send them. So the sending keeps a progress record (`RunRecords.sending_key`): how many tasks
it is to send (the manifest part's, but those the submit left out) and how many it sent, in
order, and who sends; written as it starts, every `PROGRESS_EVERY` seconds while it sends
and when it is interrupted, and removed once all are sent. `resume` sends what an
interrupted sending left, rebuilding the messages from the manifest: `ds submit`,
`ds monitor` and `ds run` call it first, and a monitor about to send again tasks that left
the queue unseen calls it instead (`monitor.settle.settle`). A sending still under way in
another process is not one (`abandoned` decides). At least once: tasks sent after the last
progress written (a killed process writes none) are sent again, and a worker that receives
a task done already skips it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from distributed_something.interfaces.queue import Queue
from distributed_something.jobs.model import TaskList
from distributed_something.records import RunRecords
from distributed_something.worker.procgroups import proc_info, this_machine

log = logging.getLogger("ds.submit")

#: Messages per `Queue.send_batch` call: large, so a queue's own batching (10 per SQS call,
#: over a thread pool) is not held up waiting for each chunk's slowest call; small enough for
#: a progress bar.
SUBMIT_CHUNK = 5000
#: Seconds between two writes of the progress while sending (also written when interrupted).
PROGRESS_EVERY = 1.0
#: A sending from another machine whose progress is older than this (s) is abandoned.
STALE_AFTER = 120.0


def _sender() -> dict[str, Any]:
    """Who sends: this machine and process (its start time, as pids are reused)."""
    machine = this_machine()
    me = proc_info(os.getpid())
    return {
        "host": socket.gethostname(),
        "boot_id": machine.boot_id if machine else "",
        "pid": os.getpid(),
        "pid_start": me.start if me else None,
    }


def abandoned(
    progress: dict[str, Any],
    here: dict[str, Any],
    alive: Callable[[int, int | None], bool],
    now: float,
    age: float | None = None,
) -> bool:
    """Whether the sending ``progress`` describes is over without having ended: it was
    interrupted (it said so), or its process is gone (on this machine: ``here`` is
    `_sender`'s; ``alive(pid, start)`` tells), or it wrote nothing for `STALE_AFTER` seconds
    (another machine's): by the record's ``age`` where the storage's clock says it (S3), else
    by ``now`` less the time written in it (its clock may differ, hence the margin). Pure."""
    if progress.get("stopped"):
        return True
    sender = progress.get("sender") or {}
    if sender.get("boot_id") and sender.get("boot_id") == here.get("boot_id"):
        return not alive(int(sender.get("pid", 0)), sender.get("pid_start"))
    if age is not None:
        return age > STALE_AFTER
    return now - float(progress.get("at", 0.0)) > STALE_AFTER


def announce(records: RunRecords, part: str) -> None:
    """Say that submit ``part`` is about to be written and sent (a progress record with
    nothing to send yet), before the submit looks whether the run is still in progress: a
    monitor ending the run at that moment then sees it (`under_way`) and goes on watching,
    or the submit sees the run ended and sends nothing (`lifecycle.submit`)."""
    records.write_sending(part, {"to_send": 0, "sent": 0, "sender": _sender(), "at": time.time()})


def send_part(
    records: RunRecords,
    queue: Queue,
    part: str,
    tasks: TaskList,
    left_out: Iterable[str],
    *,
    on_sent: Callable[[int], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send ``tasks``, the tasks of manifest part ``part`` but ``left_out`` (in the part's
    order), keeping the progress record; returns how many were sent. ``on_sent`` is told
    the count after each batch."""
    progress: dict[str, Any] = {"to_send": len(tasks), "sent": 0, "sender": _sender()}
    left = sorted(left_out)
    if left:
        records.write_sending_left_out(part, left)
    return _send(records, queue, part, progress, _messages(tasks, SUBMIT_CHUNK), on_sent, clock)


def resume(
    records: RunRecords, queue: Queue, *, clock: Callable[[], float] = time.monotonic
) -> int:
    """Send what interrupted sendings of this run left (see the module's docstring); returns
    how many tasks it sent. A progress record that cannot be understood is left as it is
    and logged (the monitor's reconciliation still sends its tasks once the queue drains)."""
    sent = 0
    here = _sender()
    for part, progress, age in records.sendings():
        if not abandoned(progress, here, _alive, time.time(), age):
            continue  # under way in another process
        progress = {**progress, "sender": here, "stopped": False}
        try:
            done = int(progress["sent"])
            left_out = records.sending_left_out(part)
            ids = records.manifest_part_ids(part)
        except KeyError as exc:
            if not int(progress.get("to_send") or 0):
                records.end_sending(part)  # announced, then stopped before its manifest
                continue
            log.warning("submit %s: its progress or manifest is missing (%r): left", part, exc)
            continue
        except (ValueError, TypeError) as exc:
            log.warning("submit %s: its progress cannot be read (%s): left as it is", part, exc)
            continue
        rest = [task_id for task_id in ids if task_id not in left_out][done:]
        sent += _send(records, queue, part, progress, _rebuilt(records, rest), None, clock)
    return sent


def under_way(records: RunRecords) -> bool:
    """Whether a sending of this run is under way in another process (not `abandoned`)."""
    here = _sender()
    return any(not abandoned(p, here, _alive, time.time(), age) for _, p, age in records.sendings())


def unsent(records: RunRecords) -> int:
    """How many tasks interrupted sendings of this run left unsent (by their progress)."""
    left = 0
    here = _sender()
    for _, progress, age in records.sendings():
        if not abandoned(progress, here, _alive, time.time(), age):
            continue
        with contextlib.suppress(KeyError, ValueError, TypeError):
            left += max(int(progress["to_send"]) - int(progress["sent"]), 0)
    return left


def _send(
    records: RunRecords,
    queue: Queue,
    part: str,
    progress: dict[str, Any],
    chunks: Iterator[tuple[int, list[tuple[str, str]]]],
    on_sent: Callable[[int], object] | None,
    clock: Callable[[], float],
) -> int:
    """Send ``chunks`` ((how many tasks of the part's order, their messages)), the tasks of
    ``part`` from position ``progress["sent"]`` on, writing the progress as the module's
    docstring says; returns how many tasks it got through."""
    start = int(progress["sent"])
    position = start
    records.write_sending(part, {**progress, "at": time.time()})
    written = clock()
    try:
        for advance, chunk in chunks:
            with _ctrl_c_after():  # a chunk sent is counted sent: not sent twice
                queue.send_batch(chunk)
                position += advance
            if on_sent is not None:
                on_sent(position - start)
            if clock() - written >= PROGRESS_EVERY:
                records.write_sending(part, {**progress, "sent": position, "at": time.time()})
                written = clock()
    except BaseException:
        # The chunk in flight counts as unsent: sent again by `resume` if it did go.
        with contextlib.suppress(Exception):
            stopped = {**progress, "sent": position, "at": time.time(), "stopped": True}
            records.write_sending(part, stopped)
        raise
    records.end_sending(part)
    return position - start


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is over, then raise it (KeyboardInterrupt):
    the block runs whole or not at all as far as Ctrl-C goes. Nothing held back off the main
    thread, or where SIGINT is not Python's default handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` (started at ``start``, clock ticks after boot) still runs."""
    info = proc_info(pid)
    return info is not None and not info.exited and (start is None or info.start == start)


def _messages(tasks: TaskList, size: int) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """The queue messages (id, body) of ``tasks`` in chunks of ``size`` (each with its
    length): only one chunk's bodies exist at a time."""
    chunk: list[tuple[str, str]] = []
    for index, task_id in enumerate(tasks.ids()):
        chunk.append((task_id, tasks.body_json_at(index)))
        if len(chunk) == size:
            yield len(chunk), chunk
            chunk = []
    if chunk:
        yield len(chunk), chunk


def _rebuilt(
    records: RunRecords, task_ids: Sequence[str]
) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """The messages of ``task_ids`` rebuilt from the manifest, in chunks, as `_messages`
    (a task whose body cannot be rebuilt is logged and skipped: it counts as gone through;
    the monitor's reconciliation meets it once the queue drains)."""
    bodies = records.bodies(task_ids)
    missing = [task_id for task_id in task_ids if task_id not in bodies]
    if missing:
        log.warning("%d tasks cannot be rebuilt from the manifest: not sent", len(missing))
    for at in range(0, len(task_ids), SUBMIT_CHUNK):
        ids = task_ids[at : at + SUBMIT_CHUNK]
        yield len(ids), [(task_id, bodies[task_id]) for task_id in ids if task_id in bodies]
