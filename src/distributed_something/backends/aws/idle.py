"""Idle shutdown (docs/design.md §2): a machine whose workers have all found nothing to run for a
grace period terminates itself — minutes of idle instead of the idle-CPU alarm's 15.

The workers of one instance (several ECS tasks, several processes in each) meet in one host
folder, mounted into every container of the task definition at `CONTAINER_DIR` and named by
``DS_IDLE_DIR``. Each worker process keeps a state file there, rewritten atomically every
`CHECK_SECONDS` and removed when it exits::

    {"worker": "<name>", "idle_since": <wall time> or null, "updated": <wall time>}

`should_shut_down` decides from the states: a worker killed without cleanup stops updating
its file, which then goes stale and no longer counts. `IdleShutdown` is the thread that
writes the own state, reads the others' and acts.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from distributed_something.atomicfile import write_text_atomically
from distributed_something.background import BackgroundThread

log = logging.getLogger("ds.idle")

#: The environment variable naming the shared folder inside the container.
IDLE_DIR_ENV = "DS_IDLE_DIR"
#: The task definition's volume: one host folder for every ds worker of the instance, of
#: any app (a cluster can place two apps' tasks on one machine: all must be idle).
IDLE_VOLUME = "ds-idle"
HOST_DIR = "/var/lib/ds-idle"
CONTAINER_DIR = "/ds-idle"
#: Seconds between two writes of a worker's state (and two decisions).
CHECK_SECONDS = 15.0
#: A state not updated for this long belongs to a worker that is gone (killed, frozen).
STALE_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerState:
    """One worker's state file: idle since ``idle_since`` (None: busy, or not polled yet),
    written at ``updated`` (both wall-clock seconds)."""

    worker: str
    idle_since: float | None
    updated: float


def fresh_states(
    states: Iterable[WorkerState], now: float, stale_after: float = STALE_SECONDS
) -> list[WorkerState]:
    """The states updated within ``stale_after`` seconds before ``now``."""
    return [s for s in states if now - s.updated <= stale_after]


def should_shut_down(
    states: Iterable[WorkerState],
    now: float,
    *,
    grace: float,
    stale_after: float = STALE_SECONDS,
) -> bool:
    """True when the machine should terminate itself: at least one fresh state (see
    `fresh_states`), and every fresh state idle for at least ``grace`` seconds at ``now``.

    The caller includes its own state. Stale states are ignored, so a killed worker's file
    neither blocks the shutdown nor causes it.
    """
    fresh = fresh_states(states, now, stale_after)
    return bool(fresh) and all(
        s.idle_since is not None and now - s.idle_since >= grace for s in fresh
    )


def write_state(path: Path, state: WorkerState) -> None:
    """Write ``state`` to ``path`` atomically (readers never see half a file). Raises
    OSError."""
    data = {"worker": state.worker, "idle_since": state.idle_since, "updated": state.updated}
    write_text_atomically(path, json.dumps(data))


def read_states(directory: Path, *, skip: str = "") -> list[WorkerState]:
    """The states of the ``*.json`` files in ``directory`` except the file named ``skip``.

    A file that vanished meanwhile, or does not hold a state (other JSON, garbage), is left
    out: it is not a worker's to count.
    """
    states: list[WorkerState] = []
    for path in sorted(directory.glob("*.json")):
        if path.name == skip:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        state = _state_of(data)
        if state is not None:
            states.append(state)
    return states


def _state_of(data: object) -> WorkerState | None:
    if not isinstance(data, dict):
        return None
    updated, idle_since = _time(data.get("updated")), _time(data.get("idle_since"))
    if updated is None or (idle_since is None and data.get("idle_since") is not None):
        return None
    return WorkerState(str(data.get("worker", "")), idle_since, updated)


def _time(value: object) -> float | None:
    """``value`` as seconds when it is a finite number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def state_file_name(worker: str) -> str:
    """``<worker>-<random>.json``, safe as a file name; the random part keeps two workers
    given the same name (``--name``) from sharing a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", worker)[:100] or "worker"
    return f"{safe}-{secrets.token_hex(4)}.json"


class IdleShutdown(BackgroundThread):
    """Keeps this worker's state file in ``directory`` and shuts the machine down when
    every worker on it has been idle for ``grace`` seconds.

    Every ``interval`` seconds (the first time at `start`) a daemon thread writes the state
    (``idle_for()``: seconds this worker has been idle, None while busy) and, when
    ``on_idle`` is given, applies `should_shut_down` to the other files' states plus its
    own. When true it calls ``on_idle(number of workers)`` — which returns True once the
    machine is being terminated: the thread then ends. A False (or an exception, logged)
    is retried after ``grace`` seconds, not at every check. Without ``on_idle`` the state
    is only published, so that other workers on the machine count this one.

    Nothing is done when ``directory`` is not an existing folder (no shared volume: the
    worker runs outside the run's task definition); a folder that cannot be written turns
    the feature off with a warning. `stop` ends the thread promptly and removes the file.
    """

    def __init__(
        self,
        directory: Path,
        worker: str,
        idle_for: Callable[[], float | None],
        on_idle: Callable[[int], bool] | None,
        *,
        grace: float,
        interval: float = CHECK_SECONDS,
        stale_after: float = STALE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or stale_after <= interval:
            raise ValueError("need 0 < interval < stale_after")
        self.directory = directory
        self.worker = worker
        self.path = directory / state_file_name(worker)
        self.idle_for = idle_for
        self.on_idle = on_idle
        self.grace = grace
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock
        #: True once ``on_idle`` reported the machine terminating
        self.fired = False
        self._next_attempt = -math.inf
        # on_idle may stop the worker, whose exit stops this from the thread itself.
        super().__init__("ds-idle")

    def start(self) -> Self:
        """Start the thread (nothing when ``directory`` is not a folder)."""
        if not self.directory.is_dir():
            log.info("idle shutdown off: %s is not a folder (no shared volume)", self.directory)
            return self
        return super().start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the thread (at once: it waits on an event) and remove the state file."""
        super().stop(timeout)
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the idle state %s: %s", self.path, exc)

    def check(self) -> bool:
        """One round: write the own state, then decide (and act) if it is time. Returns
        True when ``on_idle`` reported the machine terminating. Raises OSError when the
        state cannot be written."""
        now = self.clock()
        idle = self.idle_for()
        own = WorkerState(self.worker, None if idle is None else now - idle, now)
        write_state(self.path, own)
        if self.on_idle is None or now < self._next_attempt:
            return False
        states = [*read_states(self.directory, skip=self.path.name), own]
        if not should_shut_down(states, now, grace=self.grace, stale_after=self.stale_after):
            return False
        count = len(fresh_states(states, now, self.stale_after))
        try:
            self.fired = bool(self.on_idle(count))
        except Exception:  # the idle-CPU alarm remains: keep working
            log.exception("idle shutdown failed")
        if not self.fired:
            self._next_attempt = now + max(self.grace, self.interval)
        return self.fired

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.check():
                    return
            except OSError as exc:
                log.warning(
                    "idle shutdown off: cannot write %s (%s); the idle-CPU alarm remains",
                    self.path,
                    exc.strerror or exc,
                )
                return
            self._stop.wait(self.interval)
