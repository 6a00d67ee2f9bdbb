"""The provisioner contract: creating and removing what a run needs beyond queue/storage use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from distributed_something.state import RunState


class Provisioner(Protocol):
    """Creates and removes a run's resources; every method is idempotent.

    - ``setup(state, save, previous)`` creates the queue, dead-letter store and whatever
      runs workers (for AWS: queues, cluster, task definition, service with 0 tasks),
      recording each resource in ``state.resources`` and calling ``save(state)`` after each
      one. ``previous`` is the finished run this new one follows (None: none, or ``state``
      is a run in progress set up again): what its teardown released may not be reusable
      at once (AWS: a deleted queue's name, for 60 seconds).
    - ``start(state, fleet, workers)`` brings up capacity for ``workers`` worker processes
      (``fleet`` is the user's fleet file, if the backend needs one) and waits until it is
      there or clearly cannot be.
    - ``teardown(state, save)`` removes everything recorded, step by step, calling
      ``save(state)`` after each step, so a teardown killed at any point finishes when run
      again. The dead-letter store, outputs and run records are kept.
    """

    def setup(
        self,
        state: RunState,
        save: Callable[[RunState], None],
        previous: RunState | None = None,
    ) -> None: ...

    def start(
        self,
        state: RunState,
        fleet: dict[str, Any] | None,
        workers: int,
        save: Callable[[RunState], None],
    ) -> None: ...

    def teardown(self, state: RunState, save: Callable[[RunState], None]) -> None: ...
