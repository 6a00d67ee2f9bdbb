"""Estimated cost of task time: a machine's hourly price × the task's share of the machine.

Only AWS runs have a price. A task's share of its machine is one of its task slots: a machine
runs ``cluster.tasks_per_machine`` containers of ``cluster.docker_cores`` worker processes,
each running one task at a time. So an attempt is estimated at its machine's price over the
attempt's wall time ÷ ``slots``. The price is, by preference:

- the **spot price history** of the attempt's machine (its instance type in its Availability
  Zone, as its worker recorded them: `records.Machine`), integrated over the attempt's own
  start and end (`spot_cost`) — what the fleet actually paid for that time;
- else ``aws.machine_price``, the most the spot fleet may pay per machine-hour: an upper
  bound.

Local and Slurm runs have no price: their cost is omitted, never invented. Boot and idle time
of the machines is not task time and is not counted here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from distributed_something.config.model import Config


class SpotHistory:
    """A machine's spot price over time: ``steps`` of (Unix time the price took effect, USD
    per hour), each price holding until the next; sorted here. What the machine cost over
    any span is read in O(log n) (`cost`), from the running total at each step."""

    def __init__(self, steps: Iterable[tuple[float, float]]) -> None:
        ordered = sorted(steps)
        self.times = [t for t, _ in ordered]
        self.prices = [p for _, p in ordered]
        self._totals = [0.0]  # price × seconds paid from the first step to each step
        for k in range(1, len(ordered)):
            paid = self.prices[k - 1] * (self.times[k] - self.times[k - 1])
            self._totals.append(self._totals[-1] + paid)

    def __bool__(self) -> bool:
        return bool(self.times)

    def __repr__(self) -> str:
        return f"SpotHistory({list(zip(self.times, self.prices, strict=True))!r})"

    def cost(self, start: float, end: float) -> float:
        """What the machine cost from ``start`` to ``end`` (Unix seconds), in USD. Before
        the first step the first price is taken (the history AWS returns starts with the
        price in effect at its start time, so that is only a truncated history); an empty
        history or an empty span costs 0."""
        if not self.times or end <= start:
            return 0.0
        return (self._paid_until(end) - self._paid_until(start)) / 3600.0

    def _paid_until(self, at: float) -> float:
        i = max(bisect_right(self.times, at) - 1, 0)
        return self._totals[i] + self.prices[i] * (at - self.times[i])


@dataclass(frozen=True)
class Pricing:
    """What an hour of a machine costs (USD, ``usd_per_hour``) and how many tasks share it at
    once (``slots``); ``basis`` says where the price comes from, for people."""

    usd_per_hour: float
    slots: int
    basis: str
    #: worker name → the spot prices of the machine it ran on (`with_spot_prices`);
    #: other workers' attempts are priced at ``usd_per_hour``
    spot: Mapping[str, SpotHistory] = field(default_factory=dict)

    def attempt_cost(self, wall_seconds: float, *, worker: str = "", start: float = 0.0) -> float:
        """The estimated cost in USD of one attempt that ran ``wall_seconds`` (≥ 0) from
        ``start`` on ``worker``: at its machine's spot prices over that time when known,
        else at ``usd_per_hour``."""
        wall = max(wall_seconds, 0.0)
        history = self.spot.get(worker) if worker else None
        if history:
            return history.cost(start, start + wall) / self.slots
        return self.usd_per_hour * wall / 3600.0 / self.slots

    def spot_priced(self, worker: str) -> bool:
        """True when ``worker``'s attempts are priced from its machine's spot prices."""
        return bool(self.spot.get(worker))


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


def with_spot_prices(
    pricing: Pricing,
    machines: Mapping[str, tuple[str, str]],
    history: Mapping[tuple[str, str], SpotHistory],
) -> Pricing:
    """``pricing`` whose workers' attempts are priced at their machines' spot prices:
    ``machines`` maps a worker to its (instance type, Availability Zone), ``history`` such a
    pair to its prices. Workers without both keep ``usd_per_hour``; the basis says
    which machines were priced how."""
    spot = {w: history[m] for w, m in machines.items() if history.get(m)}
    if not spot:
        return pricing
    kinds = sorted({f"{t} in {z}" for w, (t, z) in machines.items() if w in spot})
    rest = len(machines) - len(spot)
    slots = pricing.slots
    basis = (
        f"the spot price history of each attempt's machine over the attempt's own time "
        f"({', '.join(kinds)}; EC2 DescribeSpotPriceHistory, Linux/UNIX) shared by {slots} "
        f"task slot{'s' if slots != 1 else ''} per machine; "
        + (
            f"{rest} worker{'s' if rest != 1 else ''} without a known machine price at "
            f"aws.machine_price ${pricing.usd_per_hour:g}/h (an upper bound); "
            if rest
            else "attempts of workers that recorded no machine at aws.machine_price "
            f"${pricing.usd_per_hour:g}/h (an upper bound); "
        )
        + "task time only, not machines' boot or idle time"
    )
    return replace(pricing, spot=spot, basis=basis)


def with_price_note(pricing: Pricing, note: str) -> Pricing:
    """``pricing`` whose basis ends with ``note`` (why no spot prices were used)."""
    return replace(pricing, basis=f"{pricing.basis} ({note})")


#: Why a run's cost is not shown, by backend (a price is known on AWS only).
NO_PRICE = "no price is known for the {backend} backend: cost is shown for AWS runs only"


__all__ = [
    "NO_PRICE",
    "Pricing",
    "SpotHistory",
    "pricing_for",
    "with_price_note",
    "with_spot_prices",
]
