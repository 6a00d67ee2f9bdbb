"""Benchmark `cost`: machine-hours of a 10,000-task spot run, our policy vs the family's.

The simulation is bench/costsim.py (pure Python, seeded; its docstring is the model):
10,000 tasks of lognormal duration (median 8 min, sigma 0.9: mean ~12 min, the longest
~3-4 h), 50 machines x 4 worker slots, boot 2-6 min, spot interruptions (mean 24 h per
machine, 2-minute notice), per-second billing, an idle-CPU alarm (15 min) on every
machine. Ours is driven by the product's real monitor policy
(distributed_something.monitor.policy.decide, every 60 simulated seconds) and its idle
shutdown (a machine whose workers have all been idle for aws.idle_shutdown_minutes, the
config model's default, terminates itself at the next 15-second check); the family's
by Distributed-CellProfiler's monitor (every 10 minutes, target = messages in flight),
workers that exit at the first empty poll (ECS restarts them a minute later) and no
heartbeat (SQS_MESSAGE_VISIBILITY = 18 min: the family's docs say "estimate 1.5X how long
the job typically takes", and the mean task takes 12 min).

Each policy runs the same ``--seeds`` worlds (10); the means count.
Unit: machine-hours paid, lower is better; ratio = baseline / ours (above 1: we pay less).
Target: tail idle (machine time with nothing to run) <= 2% of the time paid, for ours.
Other lines: ours with the idle shutdown turned off (idle machines leave only through the
15-minute alarm, as before docs/design.md §2's idle shutdown was built), and how the comparison
moves with the family's visibility timeout and the interruption rate.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import replace

from costsim import (
    IDLE_SHUTDOWN_MINUTES,
    FamilyPolicy,
    OursPolicy,
    Policy,
    Totals,
    World,
    simulate,
)

TARGET_IDLE_SHARE = 0.02


def mean_totals(world: World, make: Callable[[], Policy], seeds: int) -> Totals:
    """Field-by-field mean of the totals over seeds 1..``seeds``."""
    runs = [simulate(replace(world, seed=seed), make()) for seed in range(1, seeds + 1)]
    fields = Totals.__dataclass_fields__
    means = {name: statistics.fmean(getattr(run, name) for run in runs) for name in fields}
    counts = ("launched", "interrupted", "done")
    return Totals(**{k: (round(v) if k in counts else v) for k, v in means.items()})


def line(label: str, totals: Totals) -> str:
    return (
        f"{label:<44} paid {totals.paid:7.1f} h  idle {totals.idle:5.1f} h "
        f"({totals.idle_share * 100:4.1f}%)  boot {totals.booting:4.1f} h  makespan "
        f"{totals.makespan:5.2f} h  lost {totals.lost_slot_hours:5.1f} slot-h  duplicates "
        f"{totals.duplicate_slot_hours:5.1f} slot-h  machines {totals.launched}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--interrupt-mean-hours", type=float, default=24.0)
    parser.add_argument("--visibility-minutes", type=float, default=18.0)
    parser.add_argument(
        "--grace-minutes",
        type=float,
        default=IDLE_SHUTDOWN_MINUTES,
        help="ours: aws.idle_shutdown_minutes (default: the config's default)",
    )
    args = parser.parse_args()

    world = World(machines=args.machines, interrupt_mean_hours=args.interrupt_mean_hours)
    seeds = args.seeds
    grace = args.grace_minutes

    def ours_policy() -> OursPolicy:
        return OursPolicy(grace_minutes=grace)

    def alarm_only() -> OursPolicy:
        return OursPolicy(grace_minutes=None)

    ours = mean_totals(world, ours_policy, seeds)
    family = mean_totals(world, lambda: FamilyPolicy(args.visibility_minutes), seeds)
    alarm = mean_totals(world, alarm_only, seeds)

    print(
        f"world: {world.tasks} tasks, lognormal median {world.median_minutes:g} min sigma "
        f"{world.sigma:g}; {world.machines} machines x {world.workers_per_machine} slots; "
        f"interruptions mean {world.interrupt_mean_hours:g} h/machine; means of {seeds} seeds"
    )
    print(line(f"ours (as implemented, {grace:g} min idle shutdown)", ours))
    print(line(f"family (visibility {args.visibility_minutes:g} min)", family))
    print(line("ours, alarm only (no idle shutdown)", alarm))
    print("sensitivity (paid machine-hours, family / ours):")
    for label, changed, visibility in (
        ("family visibility 60 min", world, 60.0),
        ("family visibility 240 min", world, 240.0),
        ("no interruptions", replace(world, interrupt_mean_hours=0.0), args.visibility_minutes),
        (
            "interruptions mean 8 h",
            replace(world, interrupt_mean_hours=8.0),
            args.visibility_minutes,
        ),
        ("20 machines", replace(world, machines=20), args.visibility_minutes),
        ("200 machines", replace(world, machines=200), args.visibility_minutes),
    ):
        o = mean_totals(changed, ours_policy, seeds)
        f = mean_totals(changed, lambda v=visibility: FamilyPolicy(v), seeds)
        a = mean_totals(changed, alarm_only, seeds)
        print(
            f"  {label:<26} ours {o.paid:6.1f} h (idle {o.idle_share * 100:4.1f}%)  family "
            f"{f.paid:6.1f} h (idle {f.idle_share * 100:4.1f}%)  ratio {f.paid / o.paid:.2f}"
            f"  | alarm only {a.paid:6.1f} h (idle {a.idle_share * 100:4.1f}%)"
        )
    met = ours.idle_share <= TARGET_IDLE_SHARE
    print(
        f"TARGET met={'yes' if met else 'no'} tail idle {ours.idle_share * 100:.1f}% of paid "
        f"time (target <= {TARGET_IDLE_SHARE * 100:.0f}%); family {family.idle_share * 100:.1f}%; "
        f"alarm only (no idle shutdown) {alarm.idle_share * 100:.1f}%"
    )
    print(
        f"LIMIT ours: an idle machine leaves {grace:g} min (+ up to one 15-second check) "
        "after its last worker found nothing to run (backends/aws/idle.py; the 15-minute "
        "idle-CPU alarm remains the fallback), so the tail still costs a few minutes x "
        "machines, plus boot time; the family's extra cost is mostly duplicate runs (no "
        "heartbeat) and interrupted tasks waiting out their visibility; its idle share is "
        "low because its machines keep busy re-running tasks whose visibility ran out "
        "(paid for nothing, not idle)"
    )
    if not met:
        print(
            "FIX shorten aws.idle_shutdown_minutes, or check that the workers reach the "
            "idle shutdown (DS_IDLE_DIR mounted, ec2:TerminateInstances allowed)"
        )
    print(
        f"RESULT cost ours={ours.paid:.1f} baseline={family.paid:.1f} "
        f"ratio={family.paid / ours.paid:.2f} unit=machine-hours"
    )


if __name__ == "__main__":
    main()
