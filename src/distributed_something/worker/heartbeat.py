"""Keeps the lease of the task being run alive, from one thread per worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from distributed_something.interfaces.queue import Message, Queue
from distributed_something.worker.policy import heartbeat_interval


@dataclass
class Lease:
    """The lease on one message while its command runs. ``lost`` is set when an extension
    reports that someone else holds the task now."""

    message: Message
    seconds: float
    on_lost: threading.Event
    due: float
    lost: threading.Event = field(default_factory=threading.Event)


class Heartbeat:
    """Extends the held lease every third of its length until the holder lets go.

    One thread serves every task of a worker (started at the first `keep`), so a short
    task pays no thread start and join. If an extension reports the lease lost, the lease's
    ``lost`` and ``on_lost`` events are set and it is not extended again, so the worker can
    stop the command and not upload. Errors talking to the queue are retried at the next
    beat: a transient failure must not cost the lease while it is still valid. Leaving
    `keep` waits for an extension in progress, so none happens after the task is deleted.
    """

    def __init__(self, queue: Queue, clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.clock = clock
        self._cond = threading.Condition()
        self._lease: Lease | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(
        self, message: Message, lease_seconds: float, on_lost: threading.Event
    ) -> Iterator[Lease]:
        """Keep ``message``'s lease alive inside the block."""
        due = self.clock() + heartbeat_interval(lease_seconds)
        lease = Lease(message, lease_seconds, on_lost, due)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="ds-heartbeat", daemon=True)
                self._thread.start()
            self._lease = lease
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

    def _beat(self) -> None:
        with self._cond:
            while not self._closed:
                lease = self._lease
                if lease is None:
                    self._cond.wait()
                    continue
                wait = lease.due - self.clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                # Extended while holding the lock: `keep` cannot end mid-extension. The next
                # beat is timed from the answer, so a slow answer still leaves `keep` a gap.
                try:
                    kept = self.queue.extend_lease(lease.message, lease.seconds)
                except Exception:  # noqa: BLE001 - any queue error: try again next beat
                    kept = True
                lease.due = self.clock() + heartbeat_interval(lease.seconds)
                if not kept:
                    lease.lost.set()
                    lease.on_lost.set()
                    self._lease = None
