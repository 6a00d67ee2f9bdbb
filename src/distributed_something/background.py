"""A daemon thread with a stop event, usable as a context manager."""

from __future__ import annotations

import threading
from typing import Self


class BackgroundThread:
    """Runs `_run` in a daemon thread named ``name`` from `start` until `stop`.

    `_run` (a subclass's) must return soon after ``self._stop`` is set: wait on it
    (``self._stop.wait(interval)``), never sleep. `stop` may be called from inside the
    thread (a callback stopping its own watcher): it then does not join.
    """

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
