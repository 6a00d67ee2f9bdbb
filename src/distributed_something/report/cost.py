"""Estimated cost of task time: a machine's hourly price × the task's share of the machine.

Only AWS runs have a price: ``aws.machine_price``, the most the spot fleet may pay per
machine-hour (the spot market price is at most that). A task's share of its machine is one
of its task slots: a machine runs ``cluster.tasks_per_machine`` containers of
``cluster.docker_cores`` worker processes, each running one task at a time. So an attempt
that ran ``wall`` seconds is estimated at ``machine_price × wall / 3600 / slots``. Local and
Slurm runs have no price: their cost is omitted, never invented. Boot and idle time of the
machines is not task time and is not counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

from distributed_something.config.model import Config


@dataclass(frozen=True)
class Pricing:
    """What an hour of a machine costs (USD, ``usd_per_hour``) and how many tasks share it at
    once (``slots``); ``basis`` says where the price comes from, for people."""

    usd_per_hour: float
    slots: int
    basis: str

    def attempt_cost(self, wall_seconds: float) -> float:
        """The estimated cost in USD of one attempt that ran ``wall_seconds`` (≥ 0)."""
        return self.usd_per_hour * max(wall_seconds, 0.0) / 3600.0 / self.slots


def pricing_for(config: Config, backend: str) -> Pricing | None:
    """The pricing of a run of ``config`` on ``backend`` (``aws``, ``local``, ``slurm``):
    None where no price is known (every backend but AWS)."""
    if backend != "aws":
        return None
    cluster = config.cluster
    slots = max(cluster.tasks_per_machine * cluster.docker_cores, 1)
    price = config.aws.machine_price
    return Pricing(
        usd_per_hour=price,
        slots=slots,
        basis=(
            f"aws.machine_price ${price:g}/h (the most the spot fleet pays per machine-hour: "
            f"an upper bound) shared by {slots} task slot{'s' if slots != 1 else ''} per machine "
            f"(tasks_per_machine {cluster.tasks_per_machine} × docker_cores "
            f"{cluster.docker_cores}); task time only, not machines' boot or idle time"
        ),
    )


#: Why a run's cost is not shown, by backend (a price is known on AWS only).
NO_PRICE = "no price is known for the {backend} backend: cost is shown for AWS runs only"


__all__ = ["NO_PRICE", "Pricing", "pricing_for"]
