"""The client factory: sessions parse timestamps with the fast ISO 8601 path."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from botocore.utils import parse_timestamp as botocore_parse

from distributed_something.backends.aws.clients import (
    AwsSettings,
    client,
    first_line,
    parse_timestamp,
)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-22T05:10:00.000Z",
        "2026-11-22T05:10:00Z",
        "2026-11-22T05:10:00.123456+02:00",
        "2026-11-22T05:10:00",  # no zone: botocore's reading (local time) is kept
        "Sun, 22 Nov 2026 05:10:00 GMT",
        1700000000,
        "1700000000.5",
    ],
)
def test_parse_timestamp_reads_what_botocore_reads(value: Any) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse(value)
    assert ours == theirs
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)


def test_parse_timestamp_rejects_what_botocore_rejects() -> None:
    with pytest.raises(ValueError):
        botocore_parse("not a time")
    with pytest.raises(ValueError):
        parse_timestamp("not a time")


def test_clients_use_the_fast_parser(aws: str) -> None:
    s3 = client("s3", AwsSettings(region="us-east-1"))
    s3.create_bucket(Bucket="stamps")
    s3.put_object(Bucket="stamps", Key="a", Body=b"x")
    listed = s3.list_objects_v2(Bucket="stamps")["Contents"][0]["LastModified"]
    # dateutil's parser would give dateutil.tz.tzutc(); ours gives the standard library's UTC.
    assert listed.tzinfo is UTC


def _unreadable() -> list[Exception]:
    from botocore.parsers import ResponseParserError

    page = "<html><body>Proxy error</body></html>"
    return [
        ResponseParserError(
            f"Unable to parse response (syntax error), invalid XML received:\n{page}"
        ),
        UnicodeDecodeError("utf-8", b"\xe9t\xe9", 0, 1, "invalid continuation byte"),
    ]


@pytest.mark.parametrize("error", _unreadable(), ids=["parser", "not-utf8"])
def test_the_aws_boundary_turns_an_unreadable_answer_into_one_line(error: Exception) -> None:
    from distributed_something.backends.aws.errors import DEFAULT_FIX, aws_call, call
    from distributed_something.errors import BackendError

    def fail() -> None:
        raise error

    with pytest.raises(BackendError) as block, aws_call("list things"):
        fail()
    with pytest.raises(BackendError) as one:
        call("list things", fail, fix="The role needs s3:ListBucket.")
    for info, fix in ((block, DEFAULT_FIX), (one, "The role needs s3:ListBucket.")):
        message = str(info.value)
        assert message.startswith("could not list things: ") and message.endswith(fix)
        assert "\n" not in message and "<html>" not in message


def test_first_line_keeps_the_first_line_or_names_the_type() -> None:
    assert first_line(ValueError("Unable to parse:\n<html>")) == "Unable to parse"
    assert first_line(ValueError("")) == "ValueError"
