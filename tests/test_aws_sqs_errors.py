"""SQS's refusals of a receipt handle as botocore parses them from SQS's JSON protocol.

SQS answers in JSON (``__type``) and adds the code its query API used in the header
``x-amzn-query-error: <code>;Sender``; botocore then puts the header's code in
``Error.Code`` and the JSON type in ``Error.QueryErrorCode``. SQS's common error
InvalidParameterValue has no shape in the service model, so nothing ties its JSON type to the
query code: ``InvalidParameterValueException`` is the name SQS-compatible servers written to
mirror AWS give it (others write ``InvalidParameterValue``). A refusal meaning "this lease is
gone" or "12 hours since the receipt" must be recognised under either; moto answers only
the second, a loopback server the first here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

pytest.importorskip("boto3")

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.sqs_queue import SqsQueue
from distributed_something.interfaces.queue import Message
from distributed_something.worker.heartbeat import LeaseEnding
from testkit import AnsweringHandler

LEASE_GONE = (
    "Value AQEBx for parameter ReceiptHandle is invalid. Reason: Message does not exist or is "
    "not available for visibility timeout change."
)
PAST_12_HOURS = (
    "Value 600 for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout "
    "for the message is beyond the limit [43200 seconds]."
)


class _Refusing(ThreadingHTTPServer):
    """Answers every SQS call with InvalidParameterValue carrying ``message``."""

    def __init__(self) -> None:
        self.message = ""
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(AnsweringHandler):
    server: _Refusing

    def do_POST(self) -> None:
        self.read_request()
        body = json.dumps(
            {
                "__type": "InvalidParameterValueException",
                "message": self.server.message,
            }
        ).encode()
        self.answer(
            400,
            body,
            "application/x-amz-json-1.0",
            {"x-amzn-query-error": "InvalidParameterValue;Sender"},
        )


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Refusing, SqsQueue]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = _Refusing()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings = AwsSettings(region="us-east-1", endpoint_url=url, max_attempts=1)
    queue = SqsQueue(
        settings, f"{url}/123456789012/Q", f"{url}/123456789012/D", max_receive_count=3
    )
    try:
        yield server, queue
    finally:
        server.shutdown()
        server.server_close()


MESSAGE = Message(handle="AQEBx", task_id="t1", body="{}", receive_count=1, message_id="m1")


def test_a_lease_sqs_says_is_gone_is_lost_not_an_error(
    refusing: tuple[_Refusing, SqsQueue],
) -> None:
    server, queue = refusing
    server.message = LEASE_GONE
    # Before: SqsError ("InvalidParameterValueException" was not taken for a lost lease).
    assert queue.extend_lease(MESSAGE, 600) is False
    queue.release(MESSAGE, 0)  # a lease gone is not an error here either
    queue.delete(MESSAGE)


def test_an_extension_past_12_hours_ends_the_lease(refusing: tuple[_Refusing, SqsQueue]) -> None:
    server, queue = refusing
    server.message = PAST_12_HOURS
    with pytest.raises(LeaseEnding):
        queue.extend_lease(MESSAGE, 600)
