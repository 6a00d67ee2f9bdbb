"""The retries of the boto3 clients on the command line (`clients.set_interactive`).

A person waits there, so an endpoint that cannot be reached is said after 2 attempts; but a
throttled or failing call (AWS answers it: ``Throttling``, EC2's ``RequestLimitExceeded``,
HTTP 500/503) must be retried as everywhere else: `ds run` watches a run for hours and
`ds submit` makes thousands of calls, and AWS's SDK retry guidance treats these answers as
transient. moto never throttles, so a loopback server plays an AWS endpoint that does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import ThreadingHTTPServer

import pytest

pytest.importorskip("boto3")

from distributed_something.backends.aws import clients
from testkit import AnsweringHandler

# Without the XML namespace AWS puts there: botocore's parser ignores namespaces, and tests
# name no address but loopback.
_THROTTLED = (
    b"<ErrorResponse><Error>"
    b"<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    b"<RequestId>1</RequestId></ErrorResponse>"
)
_IDENTITY = (
    b"<GetCallerIdentityResponse>"
    b"<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/u</Arn>"
    b"<UserId>AIDEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
    b"<ResponseMetadata><RequestId>2</RequestId></ResponseMetadata>"
    b"</GetCallerIdentityResponse>"
)


class _Throttling(ThreadingHTTPServer):
    """Answers the first ``throttled`` requests with STS's Throttling error, then succeeds."""

    def __init__(self, throttled: int) -> None:
        self.throttled = throttled
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(AnsweringHandler):
    server: _Throttling

    def do_POST(self) -> None:
        self.read_request()
        self.server.requests += 1
        throttled = self.server.requests <= self.server.throttled
        body = _THROTTLED if throttled else _IDENTITY
        self.answer(400 if throttled else 200, body, "text/xml")


@pytest.fixture
def interactive(monkeypatch: pytest.MonkeyPatch) -> Iterator[clients.AwsSettings]:
    """The command line's settings, with fake credentials and no waits between retries."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda seconds: None)
    clients.set_interactive(True)
    try:
        yield clients.settings_from("us-east-1", None)
    finally:
        clients.set_interactive(False)


def test_a_throttled_call_on_the_command_line_is_retried_as_everywhere(
    interactive: clients.AwsSettings,
) -> None:
    server = _Throttling(throttled=3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        sts = clients.client("sts", replace(interactive, endpoint_url=url))
        # Before: 2 attempts in all, so the second Throttling answer failed the command.
        assert sts.get_caller_identity()["Account"] == "123456789012"
        assert server.requests == 4
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_endpoint_on_the_command_line_is_tried_twice_only(
    interactive: clients.AwsSettings,
) -> None:
    from botocore.exceptions import EndpointConnectionError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # closed again when the block ends
    sts = clients.client("sts", replace(interactive, endpoint_url=f"http://127.0.0.1:{port}"))
    sent: list[str] = []
    sts.meta.events.register("before-send", lambda **kwargs: sent.append("x"))
    with pytest.raises(EndpointConnectionError):
        sts.get_caller_identity()
    assert len(sent) == clients.INTERACTIVE_MAX_ATTEMPTS


def test_workers_and_the_monitor_keep_every_attempt_to_connect() -> None:
    patient = clients.settings_from("us-east-1", None)
    assert patient.max_attempts == 10 and patient.connection_attempts is None
