"""The spot price history of the machines a run used (EC2 DescribeSpotPriceHistory).

The report prices each attempt at what its machine's spot price was over the attempt's own
time (report/cost.py). The history is read with the person's own credentials when they ask
for the report (``ec2:DescribeSpotPriceHistory``; no role of ds needs it).

What the API does (EC2 API reference, DescribeSpotPriceHistory): with a start and an end
time it returns the price changes in that range *and* the last change before the start —
the price in effect at the start; it goes back at most 90 days; answers are paginated
(``NextToken``, at most 1,000 items a page); ``AvailabilityZone`` filters by one zone, so
one request (with its pages) is made per zone, for that zone's instance types. The fleet's
ECS-optimized Linux instances are priced under the product ``Linux/UNIX`` (older accounts and
some regions also list ``Linux/UNIX (Amazon VPC)``: both are asked for, and ``Linux/UNIX``
is used where both answer).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from distributed_something.backends.aws.errors import aws_call
from distributed_something.errors import BackendError

#: Product descriptions asked for, in order of preference.
PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
#: How far back the history goes (the API refuses an older start time).
HISTORY_DAYS = 90
#: Items per page (the API's most).
PAGE_SIZE = 1000

Machine = tuple[str, str]  # (instance type, Availability Zone)
#: (Unix time a price took effect, USD per hour), oldest first
Steps = list[tuple[float, float]]


def spot_price_requests(
    machines: Collection[Machine], start: float, end: float
) -> list[dict[str, Any]]:
    """The DescribeSpotPriceHistory requests (without ``NextToken``) for ``machines`` from
    ``start`` to ``end`` (Unix seconds): one per Availability Zone, its instance types
    sorted, zones in order."""
    zones: dict[str, set[str]] = {}
    for instance_type, zone in machines:
        zones.setdefault(zone, set()).add(instance_type)
    return [
        {
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "InstanceTypes": sorted(types),
            "ProductDescriptions": list(PRODUCTS),
            "AvailabilityZone": zone,
            "MaxResults": PAGE_SIZE,
        }
        for zone, types in sorted(zones.items())
    ]


def spot_price_history(
    ec2: Any, machines: Collection[Machine], start: float, end: float, *, now: float
) -> dict[Machine, Steps]:
    """(instance type, zone) → its spot price steps from ``start`` to ``end`` (the first
    one the price in effect at ``start``), for each of
    ``machines`` the history has; read with client ``ec2`` (every page of every zone).

    Raises `BackendError` when ``start`` is more than `HISTORY_DAYS` before ``now`` (the API
    has no older prices) or when AWS refuses (e.g. no ``ec2:DescribeSpotPriceHistory``)."""
    if start < now - HISTORY_DAYS * 86400:
        raise BackendError(
            f"the run started more than {HISTORY_DAYS} days ago: EC2 keeps {HISTORY_DAYS} days "
            "of spot prices"
        )
    found: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for request in spot_price_requests(machines, start, min(end, now)):
        token = ""
        while True:
            with aws_call(
                "read the spot price history (ec2:DescribeSpotPriceHistory)",
                "Allow ec2:DescribeSpotPriceHistory to whoever runs `ds report`, or ignore: "
                "the cost is then the upper bound aws.machine_price",
            ):
                page = ec2.describe_spot_price_history(
                    **request, **({"NextToken": token} if token else {})
                )
            for item in page.get("SpotPriceHistory", []):
                key = (item["InstanceType"], item["AvailabilityZone"], item["ProductDescription"])
                at = _seconds(item["Timestamp"])
                found.setdefault(key, []).append((at, float(item["SpotPrice"])))
            token = page.get("NextToken") or ""
            if not token:
                break
    history: dict[Machine, Steps] = {}
    for instance_type, zone in machines:
        for product in PRODUCTS:
            steps = found.get((instance_type, zone, product))
            if steps:
                history[(instance_type, zone)] = sorted(steps)
                break
    return history


def _seconds(value: Any) -> float:
    """A botocore timestamp (a datetime) as Unix seconds."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


__all__ = ["HISTORY_DAYS", "PRODUCTS", "spot_price_history", "spot_price_requests"]
