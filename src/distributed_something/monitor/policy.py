"""The monitor's decisions as a pure function of what it observes (tested with a fake clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts

#: "cheapest" mode drops to one machine after this long (the family's behaviour).
CHEAPEST_AFTER_SECONDS = 15 * 60


@dataclass(frozen=True)
class Observation:
    """What the monitor saw at ``now``."""

    now: float
    counts: QueueCounts
    compute: ComputeStatus
    started_at: float


@dataclass(frozen=True)
class PolicyConfig:
    """The fixed inputs of the policy."""

    #: workers the run asked for (machines × tasks per machine × processes per container)
    workers: int
    #: worker processes per machine, to turn tasks in flight into machines
    workers_per_machine: int = 1
    cheapest: bool = False


@dataclass(frozen=True)
class Teardown:
    """Everything is finished: stop workers and clean up."""


@dataclass(frozen=True)
class ScaleTo:
    """Set the number of machines wanted (never terminating busy ones)."""

    machines: int


@dataclass(frozen=True)
class ReplaceWorkers:
    """Start workers until ``workers`` run (some died while work remains)."""

    workers: int


Action = Teardown | ScaleTo | ReplaceWorkers


def decide(obs: Observation, cfg: PolicyConfig) -> list[Action]:
    """The actions for one monitor tick.

    - Drained (nothing visible, nothing in flight): tear down.
    - Work still visible but fewer workers running than asked: replace the missing ones.
    - Nothing visible but tasks in flight: shrink to the machines those tasks need, so the
      tail costs only what is still busy.
    - Cheapest mode, after 15 minutes: one machine.
    """
    counts = obs.counts
    if counts.drained:
        return [Teardown()]
    actions: list[Action] = []
    full = math.ceil(cfg.workers / max(cfg.workers_per_machine, 1))
    target = full
    if cfg.cheapest and obs.now - obs.started_at >= CHEAPEST_AFTER_SECONDS:
        target = min(target, 1)
    if counts.visible == 0:
        busy = math.ceil(counts.in_flight / max(cfg.workers_per_machine, 1))
        target = min(target, max(busy, 1))
    wanted = min(cfg.workers, target * max(cfg.workers_per_machine, 1))
    if counts.visible > 0 and obs.compute.running < wanted:
        actions.append(ReplaceWorkers(wanted))
    actions.append(ScaleTo(target))
    return actions
