"""A discrete-event simulation of one run on an EC2 Spot fleet: what the machines cost.

Pure Python and seeded: the same seed gives the same tasks, the same boot times and the
same spot interruptions to every policy compared (machine k of a run draws its boot time
and its time to interruption from a stream seeded by (seed, k)).

The world (`World`):
- ``tasks`` tasks whose durations are lognormal (median ``median_minutes``, shape
  ``sigma``); a task that runs again takes as long again.
- A spot fleet of ``machines`` machines, ``workers_per_machine`` worker slots each, of
  the "maintain" type: whenever fewer machines are up than its target capacity it
  launches the difference; a machine boots for ``boot_minutes`` (± half) before its
  workers start. Lowering the target never terminates a machine (both tools use the
  "noTermination" excess-capacity policy).
- Spot interruptions: each machine is interrupted after an exponential time (mean
  ``interrupt_mean_hours``): a notice, then termination two minutes later.
- Billing per second from launch to termination (60 s minimum).
- An idle-CPU alarm on every machine (both tools create one): a machine whose worker
  slots have all been idle for ``alarm_minutes`` (15) is terminated.

Our policy (`OursPolicy`) — as distributed_something implements it:
- every ``monitor_seconds`` (60) the monitor calls the product's own pure policy,
  ``distributed_something.monitor.policy.decide``, with the queue counts and the fleet's
  running workers; ``ScaleTo(n)`` sets the fleet target, ``Teardown`` ends the run
  (every machine terminated at that tick); ``ReplaceWorkers`` needs no action here
  (workers come with their machines);
- idle workers keep polling until the queue is drained (they take a task as soon as one
  is visible); a worker that gets an interruption notice hands its task back at once
  (visible again, the work so far lost) and takes no more;
- a busy worker extends its lease (heartbeat), so a task is never run twice while its
  worker lives;
- an idle machine shuts itself down once all its workers have been idle for
  ``grace_minutes`` (the product's idle shutdown, docs/design.md §2; by default
  ``aws.idle_shutdown_minutes`` of the config model), at the first of the workers' checks
  past the grace period — modelled as the grace plus one check interval
  (``distributed_something.backends.aws.idle.CHECK_SECONDS``), the worst case. With
  ``grace_minutes=None`` (the idle shutdown turned off) it leaves only through the
  idle-CPU alarm (``alarm_minutes``), which remains the fallback either way.

The family's policy (`FamilyPolicy`), from Distributed-CellProfiler's run.py and worker:
- the monitor polls every minute; every tenth minute, when nothing is visible and fewer
  messages are in flight than machines are active, it sets the fleet target to the number
  of messages in flight (tasks, not machines; "noTermination"); it tears down when
  nothing is visible and nothing is in flight;
- a worker exits at its first empty poll and ECS starts it again after
  ``restart_seconds`` (60), when it polls again;
- no heartbeat: a message is hidden for ``visibility_minutes`` (SQS_MESSAGE_VISIBILITY;
  the family's docs: "estimate 1.5X how long the job typically takes", 18 = 1.5 x the
  mean task) from its receive; a task still running
  then becomes visible and another worker runs it too (both copies run to the end; the
  first to finish deletes the message);
- no interruption handling: tasks on an interrupted machine run until it is terminated,
  and their messages come back when their visibility ends.

Measured (`Totals`): machine-hours paid; of them booting, busy (at least one task
running), idle (booted, no task running, no notice pending) and noticed (between an
interruption notice and the termination); the run's makespan; slot-hours lost to
interruptions and to duplicate runs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from distributed_something.backends.aws.idle import CHECK_SECONDS
from distributed_something.config.model import AwsConfig
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts
from distributed_something.monitor.policy import (
    Observation,
    PolicyConfig,
    ScaleTo,
    Teardown,
    decide,
    drain_check,
)

MINUTE = 60.0
HOUR = 3600.0
LEASE_SECONDS = 60.0  # our base lease (queue.visibility's default): a dead worker's task
# is visible again this long after its last heartbeat

VISIBLE, IN_FLIGHT, DELETED = "visible", "in flight", "deleted"

#: The product's default grace period of the idle shutdown (aws.idle_shutdown_minutes).
IDLE_SHUTDOWN_MINUTES: float = AwsConfig.model_fields["idle_shutdown_minutes"].default


@dataclass(frozen=True)
class World:
    """The run and the fleet, the same for every policy compared."""

    tasks: int = 10_000
    median_minutes: float = 8.0
    sigma: float = 0.9
    machines: int = 50
    workers_per_machine: int = 4
    boot_minutes: float = 4.0
    interrupt_mean_hours: float = 24.0
    notice_seconds: float = 120.0
    alarm_minutes: float = 15.0
    monitor_seconds: float = 60.0
    seed: int = 1

    def durations(self) -> list[float]:
        """Each task's run time in seconds (seeded)."""
        rng = random.Random(f"{self.seed}-tasks")
        mu = math.log(self.median_minutes * MINUTE)
        return [rng.lognormvariate(mu, self.sigma) for _ in range(self.tasks)]

    def machine_draws(self, index: int) -> tuple[float, float]:
        """(boot seconds, seconds from launch to an interruption notice) of machine
        ``index``: the same for every policy."""
        rng = random.Random(f"{self.seed}-machine-{index}")
        boot = self.boot_minutes * MINUTE * rng.uniform(0.5, 1.5)
        if self.interrupt_mean_hours <= 0:
            return boot, math.inf
        return boot, rng.expovariate(1.0 / (self.interrupt_mean_hours * HOUR))


@dataclass
class Execution:
    """One run of a task in one worker slot."""

    task: int
    machine: Machine
    slot: int
    started: float
    cancelled: bool = False


@dataclass
class Machine:
    """One spot instance and the time it spent in each state."""

    index: int
    launched: float
    slots: list[Execution | None]
    ready: bool = False
    noticed: bool = False
    ended: float | None = None
    busy_slots: int = 0
    idle_version: int = 0
    since: float = 0.0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"booting": 0.0, "busy": 0.0, "idle": 0.0, "noticed": 0.0}
    )

    @property
    def state(self) -> str:
        if not self.ready:
            return "booting"
        if self.noticed:
            return "noticed"
        return "busy" if self.busy_slots else "idle"

    def account(self, now: float) -> None:
        """Charge the time since the last change to the current state."""
        self.seconds[self.state] += now - self.since
        self.since = now


@dataclass
class Totals:
    """What a run cost (hours of machine time unless said otherwise)."""

    paid: float
    booting: float
    busy: float
    idle: float
    noticed: float
    makespan: float
    lost_slot_hours: float
    duplicate_slot_hours: float
    launched: int
    interrupted: int
    done: int

    @property
    def idle_share(self) -> float:
        """Idle machine time (nothing to run) as a share of the time paid."""
        return self.idle / self.paid if self.paid else 0.0


class Policy:
    """How a tool behaves; the two below fill in the differences."""

    name = "policy"
    #: the worker hands its task back at an interruption notice
    handles_notice = False
    #: seconds a message stays hidden after a receive (None: a heartbeat keeps it hidden
    #: while its worker lives)
    visibility: float | None = None
    #: seconds between an idle worker's polls (0: it takes a task as soon as one is visible)
    poll_delay = 0.0

    def idle_exit(self, world: World) -> float:
        """Seconds a machine stays up with every worker idle."""
        return world.alarm_minutes * MINUTE

    def tick(self, run: Run, minute: int) -> bool:
        """The monitor's work at the end of ``minute``; True tears the run down."""
        raise NotImplementedError


class OursPolicy(Policy):
    """distributed_something: its real monitor policy, heartbeats, notice handling and idle
    shutdown (``grace_minutes`` None or 0: off, the idle-CPU alarm only)."""

    name = "ours"
    handles_notice = True

    def __init__(self, grace_minutes: float | None = IDLE_SHUTDOWN_MINUTES) -> None:
        self.grace_minutes = grace_minutes or None
        if self.grace_minutes is None:
            self.name = "ours, alarm only"
        #: when the queue first read empty (the monitor's drain check keeps it)
        self.drained_since: float | None = None

    def idle_exit(self, world: World) -> float:
        alarm = world.alarm_minutes * MINUTE
        if self.grace_minutes is None:
            return alarm
        return min(self.grace_minutes * MINUTE + CHECK_SECONDS, alarm)

    def tick(self, run: Run, minute: int) -> bool:
        world = run.world
        per_machine = world.workers_per_machine
        working = sum(1 for m in run.alive() if m.ready and not m.noticed)
        # The monitor's drain check (monitor.policy.drain_check): the queue must read empty
        # on readings a minute apart (SQS's counts are approximate), and the ledger must give
        # every task an outcome (here: every task done).
        check = drain_check(
            now=run.now,
            drained_since=self.drained_since,
            queue_drained=run.visible_count == 0 and run.in_flight_count == 0,
            ledger_finished=run.done == world.tasks,
            confirm_seconds=MINUTE,
        )
        self.drained_since = check.drained_since
        observation = Observation(
            now=run.now,
            counts=QueueCounts(visible=run.visible_count, in_flight=run.in_flight_count, dead=0),
            compute=ComputeStatus(desired=run.target * per_machine, running=working * per_machine),
            started_at=0.0,
            finished=check.verdict == "finished",
        )
        config = PolicyConfig(workers=world.machines * per_machine, workers_per_machine=per_machine)
        for action in decide(observation, config):
            if isinstance(action, Teardown):
                return True
            if isinstance(action, ScaleTo):
                run.set_target(action.machines)
        return False


class FamilyPolicy(Policy):
    """Distributed-CellProfiler's monitor and worker."""

    name = "family"

    def __init__(self, visibility_minutes: float = 18.0, restart_seconds: float = 60.0) -> None:
        self.visibility = visibility_minutes * MINUTE
        self.poll_delay = restart_seconds

    def tick(self, run: Run, minute: int) -> bool:
        if run.visible_count == 0 and run.in_flight_count == 0:
            return True
        if minute % 10 == 9 and run.visible_count == 0:
            active = sum(1 for _ in run.alive())
            if run.in_flight_count < active:
                run.set_target(run.in_flight_count)
        return False


class Run:
    """One simulated run of ``world`` under ``policy``."""

    def __init__(self, world: World, policy: Policy, *, max_days: float = 30.0) -> None:
        self.world = world
        self.policy = policy
        self.now = 0.0
        self.limit = max_days * 24 * HOUR
        self.durations = world.durations()
        self.state = [VISIBLE] * world.tasks
        self.receipt = [0] * world.tasks
        self.visible: deque[int] = deque(range(world.tasks))
        self.visible_count = world.tasks
        self.in_flight_count = 0
        self.done = 0
        self.machines: list[Machine] = []
        self.target = 0
        self.waiting: deque[tuple[Machine, int]] = deque()  # free slots that take work now
        self.events: list[tuple[float, int, str, Any]] = []
        self.sequence = 0
        self.lost = 0.0
        self.duplicates = 0.0
        self.interrupted = 0
        self.finished_at: float | None = None

    # -- plumbing ------------------------------------------------------------------------
    def at(self, when: float, kind: str, payload: Any = None) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, payload))

    def alive(self) -> list[Machine]:
        return [m for m in self.machines if m.ended is None]

    # -- fleet -----------------------------------------------------------------------------
    def set_target(self, machines: int) -> None:
        """The fleet's target capacity; "maintain": launch what is missing, kill nothing."""
        self.target = max(machines, 0)
        missing = self.target - len(self.alive())
        for _ in range(missing):
            self.launch()

    def launch(self) -> None:
        index = len(self.machines)
        machine = Machine(index, self.now, [None] * self.world.workers_per_machine, since=self.now)
        self.machines.append(machine)
        boot, interruption = self.world.machine_draws(index)
        self.at(self.now + boot, "ready", machine)
        if math.isfinite(interruption):
            self.at(self.now + interruption, "notice", machine)

    def terminate(self, machine: Machine) -> None:
        if machine.ended is not None:
            return
        machine.account(self.now)
        machine.ended = self.now
        for slot, execution in enumerate(machine.slots):
            if execution is not None:
                self.lost += self.now - execution.started
                execution.cancelled = True
                machine.slots[slot] = None
                if self.policy.visibility is None:
                    # Our lease outlives its worker by at most one lease.
                    self.at(self.now + LEASE_SECONDS, "expire", (execution.task, -1))
        machine.busy_slots = 0
        self.waiting = deque((m, s) for m, s in self.waiting if m is not machine)
        if self.finished_at is None:
            self.set_target(self.target)  # the fleet replaces what it lost

    # -- queue and workers ------------------------------------------------------------------
    def make_visible(self, task: int) -> None:
        self.state[task] = VISIBLE
        self.in_flight_count -= 1
        self.visible_count += 1
        self.visible.append(task)

    def take(self) -> int | None:
        """Receive one visible task (or None)."""
        while self.visible:
            task = self.visible.popleft()
            if self.state[task] == VISIBLE:
                self.state[task] = IN_FLIGHT
                self.visible_count -= 1
                self.in_flight_count += 1
                self.receipt[task] += 1
                return task
        return None

    def start(self, machine: Machine, slot: int, task: int) -> None:
        execution = Execution(task, machine, slot, self.now)
        machine.slots[slot] = execution
        machine.account(self.now)
        machine.idle_version += 1
        machine.busy_slots += 1
        self.at(self.now + self.durations[task], "done", execution)
        if self.policy.visibility is not None:
            self.at(self.now + self.policy.visibility, "expire", (task, self.receipt[task]))

    def free(self, machine: Machine, slot: int) -> None:
        """A worker slot with nothing to do: it polls now (ours) or after a restart."""
        if machine.ended is not None or not machine.ready:
            return
        if machine.noticed and self.policy.handles_notice:
            return  # our worker stops taking work at the notice
        if self.policy.poll_delay > 0:
            task = self.take()
            if task is None:
                self.at(self.now + self.policy.poll_delay, "poll", (machine, slot))
            else:
                self.start(machine, slot, task)
            return
        task = self.take()
        if task is None:
            self.waiting.append((machine, slot))
        else:
            self.start(machine, slot, task)

    def dispatch(self) -> None:
        """Give visible tasks to workers waiting for one (ours: they poll continuously)."""
        while self.waiting and self.visible_count:
            machine, slot = self.waiting.popleft()
            if machine.ended is not None or machine.slots[slot] is not None:
                continue
            task = self.take()
            if task is None:
                self.waiting.appendleft((machine, slot))
                return
            self.start(machine, slot, task)

    def became_idle(self, machine: Machine) -> None:
        """Start the idle clock (the caller charged the time before the change)."""
        machine.idle_version += 1
        self.at(
            self.now + self.policy.idle_exit(self.world), "idle", (machine, machine.idle_version)
        )

    # -- events ------------------------------------------------------------------------------
    def on_ready(self, machine: Machine) -> None:
        if machine.ended is not None:
            return
        machine.account(self.now)
        machine.ready = True
        self.became_idle(machine)
        for slot in range(len(machine.slots)):
            self.free(machine, slot)

    def on_done(self, execution: Execution) -> None:
        if execution.cancelled:
            return
        machine, task = execution.machine, execution.task
        machine.account(self.now)
        machine.slots[execution.slot] = None
        if self.state[task] == DELETED:
            self.duplicates += self.now - execution.started
        else:
            if self.state[task] == VISIBLE:
                self.visible_count -= 1
            else:
                self.in_flight_count -= 1
            self.state[task] = DELETED
            self.done += 1
        machine.busy_slots -= 1
        if machine.busy_slots == 0:
            self.became_idle(machine)
        self.free(machine, execution.slot)

    def on_expire(self, task: int, receipt: int) -> None:
        if self.state[task] == IN_FLIGHT and receipt in (-1, self.receipt[task]):
            self.make_visible(task)
            self.dispatch()

    def on_notice(self, machine: Machine) -> None:
        if machine.ended is not None:
            return
        self.interrupted += 1
        machine.account(self.now)
        machine.noticed = True
        self.at(self.now + self.world.notice_seconds, "terminate", machine)
        if not self.policy.handles_notice:
            return
        for slot, execution in enumerate(machine.slots):
            if execution is not None:
                self.lost += self.now - execution.started
                execution.cancelled = True
                machine.slots[slot] = None
                self.make_visible(execution.task)
        machine.busy_slots = 0
        self.waiting = deque((m, s) for m, s in self.waiting if m is not machine)
        self.dispatch()

    def on_idle(self, machine: Machine, version: int) -> None:
        if machine.ended is None and machine.busy_slots == 0 and version == machine.idle_version:
            self.terminate(machine)

    def on_poll(self, machine: Machine, slot: int) -> None:
        if machine.ended is None and machine.slots[slot] is None:
            self.free(machine, slot)

    def on_tick(self, minute: int) -> None:
        if self.policy.tick(self, minute):
            self.finished_at = self.now
            for machine in self.alive():
                self.terminate(machine)
            return
        self.at(self.now + self.world.monitor_seconds, "tick", minute + 1)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> Totals:
        """Simulate to the teardown; returns the totals."""
        self.set_target(self.world.machines)
        self.at(self.world.monitor_seconds, "tick", 0)
        while self.events and self.finished_at is None:
            when, _, kind, payload = heapq.heappop(self.events)
            if when > self.limit:
                raise RuntimeError(f"{self.policy.name}: no teardown within the time limit")
            self.now = when
            if kind == "ready":
                self.on_ready(payload)
            elif kind == "done":
                self.on_done(payload)
            elif kind == "expire":
                self.on_expire(*payload)
            elif kind == "notice":
                self.on_notice(payload)
            elif kind == "terminate":
                self.terminate(payload)
            elif kind == "idle":
                self.on_idle(*payload)
            elif kind == "poll":
                self.on_poll(*payload)
            elif kind == "tick":
                self.on_tick(payload)
        assert self.done == self.world.tasks, (self.policy.name, self.done)
        return self.totals()

    def totals(self) -> Totals:
        seconds = {"booting": 0.0, "busy": 0.0, "idle": 0.0, "noticed": 0.0}
        paid = 0.0
        for machine in self.machines:
            assert machine.ended is not None
            for state, value in machine.seconds.items():
                seconds[state] += value
            paid += max(machine.ended - machine.launched, 60.0)
        return Totals(
            paid=paid / HOUR,
            booting=seconds["booting"] / HOUR,
            busy=seconds["busy"] / HOUR,
            idle=seconds["idle"] / HOUR,
            noticed=seconds["noticed"] / HOUR,
            makespan=(self.finished_at or self.now) / HOUR,
            lost_slot_hours=self.lost / HOUR,
            duplicate_slot_hours=self.duplicates / HOUR,
            launched=len(self.machines),
            interrupted=self.interrupted,
            done=self.done,
        )


def simulate(world: World, policy: Policy) -> Totals:
    """The totals of one run of ``world`` under ``policy``."""
    return Run(world, policy).run()
