"""The compute contract: whatever runs `ds worker` processes (local processes, ECS on Spot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ComputeStatus:
    """Workers asked for and workers actually running, and why some asked for are not, when
    the backend says (ECS: "unable to place a task …"; "" otherwise)."""

    desired: int
    running: int
    waiting: str = ""


class Compute(Protocol):
    """Starts, scales and stops workers.

    - ``start(n)`` starts ``n`` workers (staggered as configured) and returns at once.
    - ``scale(n)`` sets the number of workers wanted; it never kills a worker that is busy.
    - ``scale_machines(n)`` sets the number of machines wanted (a fleet's target) without
      terminating busy ones; a backend without machines does nothing.
    - ``housekeeping()`` is called on every monitor tick (e.g. to remove the alarms of
      terminated instances); it must be cheap and idempotent.
    - ``pause(seconds)`` waits before the monitor's next reading: ``seconds``, or less when
      something happened that a reading should see at once (a worker started by this
      process exited: the run may be over).
    - ``status()`` reports desired and running workers.
    - ``stop()`` asks every worker to stop: each hands its current task back to the queue.
    - ``cleanup()`` removes what ``start`` created; safe to call more than once.
    """

    def start(self, n: int) -> None: ...

    def scale(self, n: int) -> None: ...

    def scale_machines(self, n: int) -> None: ...

    def housekeeping(self) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def status(self) -> ComputeStatus: ...

    def stop(self) -> None: ...

    def cleanup(self) -> None: ...
