"""The monitor's decisions as a pure function of what it observes (tested with a fake clock)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts

#: "cheapest" mode drops to one machine after this long (the family's behaviour).
CHEAPEST_AFTER_SECONDS = 15 * 60


@dataclass(frozen=True)
class Observation:
    """What the monitor saw at ``now``. ``finished`` is the drain check's verdict (the
    ledger says every task is done, skipped or dead, and the queue stayed empty)."""

    now: float
    counts: QueueCounts
    compute: ComputeStatus
    started_at: float
    finished: bool = False


@dataclass(frozen=True)
class DrainCheck:
    """The drain check's result: when the queue first read empty (None: it does not), and
    the verdict — ``working``, ``confirming`` (empty, but not for long enough yet),
    ``finished`` (tear down) or ``reconcile`` (the queue stayed empty but the ledger has
    tasks without an outcome: they left the queue unseen, e.g. dead-lettered when their
    worker vanished on the last attempt, or purged: find them and decide)."""

    drained_since: float | None
    verdict: str


def drain_check(
    *,
    now: float,
    drained_since: float | None,
    queue_drained: bool,
    ledger_finished: bool,
    confirm_seconds: float,
) -> DrainCheck:
    """Decide whether a run is over. Queue counts are approximate (SQS's can read 0 while
    messages exist), so "empty" must hold on readings at least ``confirm_seconds`` apart;
    and the run is over only when the ledger, not the queue, says every task has an
    outcome. The CLI monitor and the unattended (Lambda) monitor both decide here."""
    if not queue_drained:
        return DrainCheck(None, "working")
    since = now if drained_since is None else drained_since
    if now - since < confirm_seconds or (drained_since is None and confirm_seconds > 0):
        return DrainCheck(since, "confirming")
    return DrainCheck(since, "finished" if ledger_finished else "reconcile")


#: The monitor spends at most 1/READ_SHARE of its time computing a reading: a reading that
#: takes much CPU (a large run's local ledger) stretches the wait after it, up to
#: `MAX_STRETCHED_PAUSE`. Waits (an AWS reading's round trips) do not count.
READ_SHARE = 20
MAX_STRETCHED_PAUSE = 30.0


def next_pause(interval: float, reading_seconds: float) -> float:
    """How long the monitor waits after a reading that took ``reading_seconds`` of CPU: its
    ``interval``, or longer when readings are costly, so that watching a run of short tasks
    does not take the CPU its workers need (at most `MAX_STRETCHED_PAUSE` unless the
    interval is longer). Pure."""
    stretched = min(reading_seconds * READ_SHARE, MAX_STRETCHED_PAUSE)
    return max(interval, stretched)


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

    - Finished (the drain check's verdict, `Observation.finished`): tear down.
    - Work still visible but fewer workers running than asked: replace the missing ones.
    - Nothing visible but tasks in flight: shrink to the machines those tasks need, so the
      tail costs only what is still busy.
    - Cheapest mode, after 15 minutes: one machine.
    """
    counts = obs.counts
    if obs.finished:
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


#: a task that left the queue without an outcome this many times is given up (dead)
MAX_REQUEUES = 2


@dataclass(frozen=True)
class Reconciliation:
    """What to do with tasks the ledger has no outcome for once the queue stayed empty."""

    #: task id → why it is dead (found in the dead-letter store, or lost too often)
    dead: dict[str, str]
    #: tasks to send again (they left the queue without an outcome and are not dead-lettered)
    requeue: list[str]


def reconcile(
    unfinished: list[str],
    dead_letters: dict[str, str],
    requeues: dict[str, int],
    max_requeues: int = MAX_REQUEUES,
    handed_back: Collection[str] = (),
) -> Reconciliation:
    """Decide the fate of ``unfinished`` tasks (no outcome in the ledger) when the queue
    stayed empty: those in the dead-letter store (``dead_letters``: id → last error) are
    dead, except those in ``handed_back`` (dead-lettered with fewer of their receives lost
    to their worker's death than the queue allows: hand-backs and failures with tries left
    used up the receive count, `worker_deaths`);
    the others left the queue unseen (a purge, a lost message) or were dead-lettered so, and
    are sent again, unless they already were ``max_requeues`` times (``requeues``: id →
    times)."""
    dead: dict[str, str] = {}
    again: list[str] = []
    for task_id in unfinished:
        if task_id in dead_letters and task_id not in handed_back:
            error = dead_letters[task_id]
            dead[task_id] = error or "dead-lettered with no failure record (its worker vanished)"
        elif requeues.get(task_id, 0) >= max_requeues:
            dead[task_id] = f"left the queue {requeues[task_id]} times without an outcome; given up"
        else:
            again.append(task_id)
    return Reconciliation(dead, again)
