"""Reading the spot price history (backends/aws/spot_prices.py) as the API reference has it.

moto answers DescribeSpotPriceHistory with one fixed price per instance type and zone and
ignores the times, the product descriptions and pagination. So the requests and the
paging are checked with botocore's Stubber (each request exactly as built, every page
read), the refusals as AWS gives them, and the call itself once against moto's server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from distributed_something.backends.aws.clients import client, settings_from
from distributed_something.backends.aws.spot_prices import (
    HISTORY_DAYS,
    PRODUCTS,
    spot_price_history,
)
from distributed_something.errors import BackendError

T0 = 1_790_000_000.0  # 2026-09-21
NOW = T0 + 7200


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def item(instance_type: str, zone: str, price: str, when: float, product: str) -> dict[str, Any]:
    return {
        "InstanceType": instance_type,
        "AvailabilityZone": zone,
        "SpotPrice": price,
        "Timestamp": at(when),
        "ProductDescription": product,
    }


def offline_ec2() -> Any:
    """An EC2 client whose every call the test's Stubber answers (no endpoint is reached)."""
    settings = settings_from("us-east-1", None)
    return client("ec2", settings)


def expected(zone: str, types: list[str], end: float = NOW) -> dict[str, Any]:
    return {
        "StartTime": at(T0),
        "EndTime": at(end),
        "InstanceTypes": types,
        "ProductDescriptions": list(PRODUCTS),
        "AvailabilityZone": zone,
        "MaxResults": 1000,
    }


def test_one_request_per_zone_every_page_read_and_linux_preferred(aws: str) -> None:
    ec2 = offline_ec2()
    machines = {
        ("m5.xlarge", "us-east-1a"),
        ("c5.xlarge", "us-east-1a"),
        ("m5.xlarge", "us-east-1b"),
    }
    linux, vpc = PRODUCTS
    with Stubber(ec2) as stub:
        # Zone a, two pages: the token of the first is sent with the second request.
        stub.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    item("m5.xlarge", "us-east-1a", "0.0700", T0 + 600, linux),
                    item("m5.xlarge", "us-east-1a", "0.0650", T0 - 50, linux),
                ],
                "NextToken": "page-2",
            },
            expected("us-east-1a", ["c5.xlarge", "m5.xlarge"]),
        )
        stub.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    item("c5.xlarge", "us-east-1a", "0.0600", T0 - 10, vpc),
                    item("m5.xlarge", "us-east-1a", "0.0900", T0 - 50, vpc),
                ],
                "NextToken": "",
            },
            {**expected("us-east-1a", ["c5.xlarge", "m5.xlarge"]), "NextToken": "page-2"},
        )
        stub.add_response(
            "describe_spot_price_history",
            {"SpotPriceHistory": [item("m5.xlarge", "us-east-1b", "0.0800", T0 - 5, linux)]},
            expected("us-east-1b", ["m5.xlarge"]),
        )
        history = spot_price_history(ec2, machines, T0, T0 + 10_000, now=NOW)
        stub.assert_no_pending_responses()
    # Oldest first; Linux/UNIX where both products answer, the VPC product where only it does.
    assert history[("m5.xlarge", "us-east-1a")] == [(T0 - 50, 0.065), (T0 + 600, 0.07)]
    assert history[("c5.xlarge", "us-east-1a")] == [(T0 - 10, 0.06)]
    assert history[("m5.xlarge", "us-east-1b")] == [(T0 - 5, 0.08)]


def test_a_refusal_is_one_error_that_names_the_permission(aws: str) -> None:
    ec2 = offline_ec2()
    with Stubber(ec2) as stub:
        stub.add_client_error(
            "describe_spot_price_history",
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
            403,
        )
        with pytest.raises(BackendError) as raised:
            spot_price_history(ec2, {("m5.xlarge", "us-east-1a")}, T0, NOW, now=NOW)
    text = str(raised.value)
    assert "UnauthorizedOperation" in text and "ec2:DescribeSpotPriceHistory" in text
    assert "\n" not in text


def test_a_run_older_than_the_history_asks_nothing(aws: str) -> None:
    ec2 = offline_ec2()
    with Stubber(ec2) as stub:  # no response queued: any call would fail the test
        with pytest.raises(BackendError) as raised:
            spot_price_history(
                ec2, {("m5.xlarge", "us-east-1a")}, T0 - (HISTORY_DAYS + 1) * 86400, T0, now=NOW
            )
        stub.assert_no_pending_responses()
    assert f"{HISTORY_DAYS} days" in str(raised.value)


def test_moto_answers_the_request_as_built(aws: str) -> None:
    ec2 = client("ec2", settings_from("us-east-1", None))
    now = datetime.now(UTC).timestamp()
    history = spot_price_history(ec2, {("m5.xlarge", "us-east-1a")}, now - 3600, now, now=now)
    ((when, price),) = history[("m5.xlarge", "us-east-1a")]
    assert price > 0 and when < now  # moto's one fixed price, from long before
