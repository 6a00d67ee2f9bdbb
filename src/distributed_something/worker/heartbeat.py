"""Keeps the lease of the task being run alive, from one thread per worker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from distributed_something.interfaces.queue import Message, Queue
from distributed_something.worker.policy import heartbeat_interval

log = logging.getLogger("ds.worker")

#: Seconds before a lease's hard end (`LeaseEnding`) at which the command is stopped, so the
#: worker can record the failure and hand the task back while it still holds the lease.
WRAP_UP_SECONDS = 600.0


class LeaseEnding(Exception):
    """Raised by a queue's ``extend_lease`` when the lease cannot be kept past
    ``seconds_left`` from now, however often it is extended (SQS hides a received message
    at most 12 hours after its receipt).

    The queue has kept the lease as long as it can (until then); ``seconds_left`` is 0 when
    the queue cannot tell how long that is. The message must not be run past that point: it
    becomes visible, and a second worker would run the same task.
    """

    def __init__(self, text: str, seconds_left: float) -> None:
        super().__init__(text)
        self.seconds_left = max(float(seconds_left), 0.0)


@dataclass
class Lease:
    """The lease on one message while its command runs.

    ``lost`` is set when an extension reports that someone else holds the task now.
    ``ended`` says why the lease could not be kept longer (`LeaseEnding`): the command was
    stopped (``on_lost`` set) before the lease's hard end, but the lease is still held, so
    the worker can record the failure and hand the message back. ``message`` is the message
    whose lease this is (the one to delete or release).
    """

    message: Message
    seconds: float
    on_lost: threading.Event
    due: float
    lost: threading.Event = field(default_factory=threading.Event)
    ended: str | None = None
    #: when (by the heartbeat's clock) the command must stop, once the lease's end is known,
    #: and why (`ended` takes it when the command is stopped)
    stop_at: float | None = None
    ending: str | None = None
    #: when (by the heartbeat's clock) the task's time limit has surely passed: the command
    #: is stopped then and the lease no longer extended (``timed_out`` set), should the
    #: runner not have ended it at its own time limit
    deadline: float | None = None
    timed_out: bool = False
    #: told after each extension the queue answered (the worker renews the task's claim)
    on_beat: Callable[[], object] | None = None


@dataclass(frozen=True)
class BeatPlan:
    """What the heartbeat does for a held lease at one moment: ``wait`` (``seconds`` until
    the beat is due), ``extend`` the lease, or ``stop`` the command (its stop time came)."""

    action: Literal["wait", "extend", "stop"]
    seconds: float = 0.0


def plan_beat(due: float, stop_at: float | None, now: float) -> BeatPlan:
    """The heartbeat's decision at ``now`` for a lease whose next beat is ``due`` and whose
    command must stop at ``stop_at`` (None: no stop known). Pure."""
    if due > now:
        return BeatPlan("wait", due - now)
    if stop_at is not None and now >= stop_at:
        return BeatPlan("stop")
    return BeatPlan("extend")


def next_due(now: float, lease_seconds: float, stop_at: float | None) -> float:
    """When the beat after one answered at ``now`` is due: a third of the lease later
    (`heartbeat_interval`), or at the stop time if that comes first. Pure."""
    due = now + heartbeat_interval(lease_seconds)
    return due if stop_at is None else min(due, stop_at)


def stop_time(now: float, seconds_left: float, wrap_up: float, stop_at: float | None) -> float:
    """When to stop the command of a lease the queue keeps only ``seconds_left`` more from
    ``now`` (`LeaseEnding`): ``wrap_up`` seconds before that end (at once when less is
    left), or at an earlier ``stop_at`` already set. Pure."""
    stop = now + max(seconds_left - wrap_up, 0.0)
    return stop if stop_at is None else min(stop, stop_at)


#: How the heartbeat's thread waits for its next beat: on the condition that `Heartbeat.keep`
#: and `Heartbeat.close` notify, for at most the seconds given (None: until notified).
Waiter = Callable[[threading.Condition, float | None], object]


def _wait(cond: threading.Condition, seconds: float | None) -> object:
    return cond.wait(seconds)


class Heartbeat:
    """Extends the held lease every third of its length until the holder lets go.

    One thread serves every task of a worker (started at the first `keep`), so a short
    task pays no thread start and join. If an extension reports the lease lost, the lease's
    ``lost`` and ``on_lost`` events are set and it is not extended again, so the worker can
    stop the command and not upload. Errors talking to the queue are retried at the next
    beat: a transient failure must not cost the lease while it is still valid — except
    `LeaseEnding`: the lease has a hard end, and ``wrap_up`` seconds before it (at once when
    less is left) the command is stopped (``on_lost`` set, ``ended`` says why, ``lost``
    not set) and the lease is not extended again. Leaving `keep` waits for an extension in
    progress, so none happens after the task is deleted.

    With ``background=False`` no thread is started: the owner calls `tick` (a driver on a
    fake clock). ``wait`` is how the thread waits between beats (`Waiter`); what to do at
    each wake-up is `plan_beat`'s.
    """

    def __init__(
        self,
        queue: Queue,
        clock: Callable[[], float] = time.monotonic,
        *,
        background: bool = True,
        wrap_up: float = WRAP_UP_SECONDS,
        wait: Waiter = _wait,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.background = background
        self.wrap_up = wrap_up
        self._wait = wait
        self._cond = threading.Condition()
        self._lease: Lease | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        # When the thread's current wait ends by itself (clock time; None: it waits to be
        # notified), and how long it waits while no lease is held (the last beat interval).
        self._wake_at: float | None = None
        self._idle_wait: float | None = None

    @contextmanager
    def keep(
        self,
        message: Message,
        lease_seconds: float,
        on_lost: threading.Event,
        *,
        deadline: float | None = None,
        on_beat: Callable[[], object] | None = None,
    ) -> Iterator[Lease]:
        """Keep ``message``'s lease alive inside the block, for at most ``deadline`` seconds
        (None: for as long as the block lasts). A hung task must not hold its lease forever:
        at the deadline the command is stopped (``on_lost`` set, ``ended`` says why,
        ``timed_out`` set) and the lease is not extended again, so if the worker itself is
        stuck the lease runs out and another worker takes the task. ``on_beat`` is called
        (from the heartbeat's thread) after each extension the queue answered."""
        now = self.clock()
        stop_at = None if deadline is None else now + max(deadline, 0.0)
        lease = Lease(message, lease_seconds, on_lost, next_due(now, lease_seconds, stop_at))
        lease.on_beat = on_beat
        if deadline is not None:
            lease.deadline = lease.stop_at = stop_at
            lease.ending = f"the task ran past its time limit ({deadline:g} s with the grace)"
        with self._cond:
            if self._thread is None and self.background:
                self._thread = threading.Thread(target=self._beat, name="ds-heartbeat", daemon=True)
                self._thread.start()
            self._lease = lease
            self._idle_wait = heartbeat_interval(lease_seconds)
            # Woken only when its wait would end after this lease's first beat is due: a run
            # of short tasks then wakes it about once per interval, not once per task (a
            # thread switch per task took a quarter of a no-op task's time).
            if self._wake_at is None or self._wake_at > lease.due:
                self._cond.notify()
        try:
            yield lease
        finally:
            with self._cond:  # waits for an extension in progress
                self._lease = None

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def tick(self) -> float | None:
        """Extend the held lease if it is due by the clock; return the seconds until the
        next beat is due (None when no lease is held). What the thread does at each wake-up.
        """
        with self._cond:
            return self._tick()

    def _beat(self) -> None:
        with self._cond:
            while not self._closed:
                wait = self._tick()
                if wait is not None and wait <= 0:
                    continue
                if wait is None:
                    # No lease: wake after an interval anyway, so the next lease's first
                    # beat (an interval after it starts) needs no notify.
                    wait = self._idle_wait
                self._wake_at = None if wait is None else self.clock() + wait
                self._wait(self._cond, wait)
                self._wake_at = None

    def _tick(self) -> float | None:
        # Called holding the lock: `keep` cannot end mid-extension.
        lease = self._lease
        if lease is None:
            return None
        plan = plan_beat(lease.due, lease.stop_at, self.clock())
        if plan.action == "wait":
            return plan.seconds
        if plan.action == "stop":
            self._end(lease)
            return None
        ending: LeaseEnding | None = None
        try:
            kept = self.queue.extend_lease(lease.message, lease.seconds)
        except LeaseEnding as exc:
            kept, ending = True, exc
        except Exception:  # noqa: BLE001 - any queue error: try again next beat
            kept = True
        # The next beat is timed from the answer, so a slow answer still leaves `keep` a gap.
        now = self.clock()
        if not kept:
            lease.lost.set()
            lease.on_lost.set()
            self._lease = None
            return None
        if ending is not None:
            # Stop the command while the lease still holds, with time to hand the task back.
            stop_at = stop_time(now, ending.seconds_left, self.wrap_up, lease.stop_at)
            if stop_at != lease.stop_at:
                lease.stop_at = stop_at
                lease.ending = str(ending)
            if now >= stop_at:
                self._end(lease)
                return None
        if lease.on_beat is not None:
            try:
                lease.on_beat()
            except Exception as exc:  # noqa: BLE001 - the lease is kept whatever it does
                log.warning("after extending the lease of %s: %s", lease.message.task_id, exc)
        lease.due = next_due(now, lease.seconds, lease.stop_at)
        return lease.due - now

    def _end(self, lease: Lease) -> None:
        """Stop the command of a lease that cannot be kept longer (still held: not lost)."""
        lease.timed_out = lease.deadline is not None and self.clock() >= lease.deadline
        lease.ended = lease.ending
        log.warning("task %s stopped: %s", lease.message.task_id, lease.ended)
        lease.on_lost.set()
        self._lease = None
