"""Keeps a task's lease alive while its command runs."""

from __future__ import annotations

import threading

from distributed_something.interfaces.queue import Message, Queue
from distributed_something.worker.policy import heartbeat_interval


class Heartbeat:
    """Extends ``message``'s lease every third of ``lease_seconds`` until stopped.

    If an extension reports the lease lost (someone else holds the task now), ``lost`` is set
    and ``on_lost`` is called once, so the worker can stop the command and not upload.
    Errors talking to the queue are retried at the next beat: a transient failure must not
    cost the lease while it is still valid.
    """

    def __init__(
        self, queue: Queue, message: Message, lease_seconds: float, on_lost: threading.Event
    ) -> None:
        self.queue = queue
        self.message = message
        self.lease_seconds = lease_seconds
        self.lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ds-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = heartbeat_interval(self.lease_seconds)
        while not self._stop.wait(interval):
            try:
                kept = self.queue.extend_lease(self.message, self.lease_seconds)
            except Exception:  # noqa: BLE001 - any queue error: try again next beat
                continue
            if not kept:
                self.lost.set()
                return
