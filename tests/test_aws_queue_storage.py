"""SQS- and S3-specific behaviour of the AWS queue and storage, on a moto server.

The shared behaviour is in tests/test_queue_contract.py and tests/test_storage_contract.py;
here: batching, retries, messages from the family's tools, the real redrive policy, and
what reaches the API (seen through botocore's "before-call" event).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from distributed_something.backends.aws import clients, s3_storage, sqs_queue
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.s3_storage import S3Storage, object_age
from distributed_something.backends.aws.sqs_queue import TASK_ID_ATTRIBUTE, SqsError, SqsQueue
from distributed_something.config.upload_flags import NO_GUESSED_TYPE, upload_args_from_flags
from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.queue import QueueCounts
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.jobs.model import (
    MAX_MESSAGE_BYTES,
    MESSAGE_ATTRIBUTE_BYTES,
    Task,
    task_id_of,
)
from distributed_something.jobs.parse import parse_job_text

AWS = AwsSettings(region="us-east-1")


# -- helpers ---------------------------------------------------------------------------------


class Call:
    """One API call: its arguments, and its HTTP headers as botocore was about to send it."""

    def __init__(self, operation: str, arguments: dict[str, Any]) -> None:
        self.operation = operation
        self.arguments = arguments
        self.headers: dict[str, str] = {}
        self.thread = threading.get_ident()


def record_calls(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every call made by clients that ``module`` creates from now on."""
    calls: list[Call] = []
    pending = threading.local()  # a call's arguments, until its before-call event
    real_client = module.client

    def on_arguments(model: Any, params: dict[str, Any], **_: Any) -> None:
        pending.call = Call(model.name, dict(params))

    def on_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        call = pending.call
        assert call.operation == model.name
        call.headers = {str(k).lower(): str(v) for k, v in params.get("headers", {}).items()}
        calls.append(call)

    def hooked(service: str, settings: AwsSettings) -> Any:
        made = real_client(service, settings)
        made.meta.events.register("provide-client-params", on_arguments)
        made.meta.events.register("before-call", on_call)
        return made

    monkeypatch.setattr(module, "client", hooked)
    return calls


def create_queues(name: str, max_receive_count: int) -> tuple[str, str]:
    """A job queue dead-lettering into a second queue after ``max_receive_count``."""
    sqs = client("sqs", AWS)
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
    job = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    return str(job["QueueUrl"]), str(dead)


def make_queue(max_receive_count: int = 3, **options: Any) -> SqsQueue:
    job, dead = create_queues("jobs", max_receive_count)
    options.setdefault("wait_seconds", 0)
    return SqsQueue(AWS, job, dead, max_receive_count=max_receive_count, **options)


def raw_count(url: str) -> int:
    """Every message of a queue, visible or not, asked of SQS directly."""
    attributes = client("sqs", AWS).get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def kill(queue: SqsQueue, message_count: int) -> None:
    """Receive and release every message until the redrive policy dead-letters them."""
    for _ in range(queue.max_receive_count):
        received = []
        while batch := queue.receive(10, 30):
            received.extend(batch)
        assert len(received) == message_count
        for message in received:
            queue.release(message, 0)
    assert queue.receive(10, 30) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=message_count)


class FlakySqs:
    """An SQS client whose SendMessageBatch fails some entries, as SQS may.

    ``fail(call_number, entries)`` says which entry ids of a call to report as failed
    (those are not sent); ``sender_fault`` marks them as the sender's fault.
    """

    def __init__(
        self, real: Any, fail: Callable[[int, list[dict[str, Any]]], set[str]], sender_fault: bool
    ) -> None:
        self._real = real
        self._fail = fail
        self._sender_fault = sender_fault
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls.append([entry["Id"] for entry in Entries])
        failing = self._fail(len(self.calls), Entries)
        passing = [entry for entry in Entries if entry["Id"] not in failing]
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        if passing:
            response = self._real.send_message_batch(QueueUrl=QueueUrl, Entries=passing)
            response.setdefault("Failed", [])
        for entry_id in sorted(failing):
            response["Failed"].append(
                {
                    "Id": entry_id,
                    "SenderFault": self._sender_fault,
                    "Code": "InvalidMessageContents" if self._sender_fault else "InternalError",
                    "Message": "injected failure",
                }
            )
        return response


def flaky_queue(
    monkeypatch: pytest.MonkeyPatch,
    fail: Callable[[int, list[dict[str, Any]]], set[str]],
    *,
    sender_fault: bool = False,
) -> tuple[SqsQueue, FlakySqs, list[float]]:
    made: list[FlakySqs] = []
    real_client = clients.client

    def flaky(service: str, settings: AwsSettings) -> Any:
        made.append(FlakySqs(real_client(service, settings), fail, sender_fault))
        return made[-1]

    monkeypatch.setattr(sqs_queue, "client", flaky)
    sleeps: list[float] = []
    queue = make_queue(sleep=sleeps.append, threads=1)
    return queue, made[0], sleeps


class NotAws(http.server.ThreadingHTTPServer):
    """A server on 127.0.0.1 that answers every request with ``status`` and ``body``, as a
    proxy or a wrong endpoint does; ``url`` is its address."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _NotAwsHandler)
        self.status = 200
        self.body = b""
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _NotAwsHandler(http.server.BaseHTTPRequestHandler):
    server: NotAws

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.server.body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_aws(aws: str) -> Iterator[NotAws]:
    """A `NotAws` server (``aws`` gives the fake credentials and no real AWS config)."""
    server = NotAws()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def assert_one_line_backend_error(error: BaseException, *parts: str) -> None:
    """``error`` is a `BackendError` whose one-line text has every one of ``parts``."""
    assert isinstance(error, BackendError)
    text = str(error)
    assert "\n" not in text
    for part in parts:
        assert part in text


# -- SQS: sending ----------------------------------------------------------------------------


def test_batch_send_of_25_takes_3_calls(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_calls(sqs_queue, monkeypatch)
    queue = make_queue()
    items = [(f"t{i:02d}", json.dumps({"group": i})) for i in range(25)]

    assert queue.send_batch(items) == 25

    sends = [call for call in calls if call.operation == "SendMessageBatch"]
    assert len(sends) == 3
    assert len({call.thread for call in sends}) >= 1
    assert queue.counts() == QueueCounts(visible=25, in_flight=0, dead=0)
    received = []
    while batch := queue.receive(10, 30):
        received.extend(batch)
    assert sorted((m.task_id, m.body) for m in received) == items


def test_large_bodies_are_split_into_batches_sqs_accepts(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(sqs_queue, monkeypatch)
    queue = make_queue()
    # 1.6 MB in all: more than one batch may carry (1 MiB), which SQS refuses whole.
    items = [(f"big{i}", str(i) * 400_000) for i in range(4)]

    assert queue.send_batch(items) == 4

    sends = [c for c in calls if c.operation == "SendMessageBatch"]
    assert [len(c.arguments["Entries"]) for c in sends] == [2, 2]
    received = queue.receive(10, 30)
    received += queue.receive(10, 30)
    assert sorted((m.task_id, m.body) for m in received) == items


def test_the_largest_body_validation_allows_fits_sqs_with_its_attribute(aws: str) -> None:
    """SQS counts a message's attributes in its 1 MiB (moto does not; the `aws` fixture's
    checker does): before, a body in the last 36 bytes under 1 MiB passed validation and
    SQS refused it."""
    overhead = len('{"group":{"a":""}}')
    value = "x" * (MAX_MESSAGE_BYTES - overhead)
    job = parse_job_text(json.dumps({"groups": [{"a": value}]}), source="job.json", suffix=".json")
    (task,) = job.tasks
    assert len(task.body_json().encode()) == MAX_MESSAGE_BYTES
    assert make_queue().send_batch([(task.id, task.body_json())]) == 1
    assert len(TASK_ID_ATTRIBUTE) + len("String") + len(task.id) <= MESSAGE_ATTRIBUTE_BYTES
    with pytest.raises(InputError) as refused:
        text = json.dumps({"groups": [{"a": value + "x"}]})
        parse_job_text(text, source="job.json", suffix=".json")
    assert refused.value.field == "groups[0]"


def test_task_id_travels_as_a_message_attribute(aws: str) -> None:
    queue = make_queue()
    queue.send_batch([("abc123", '{"group": 1}')])
    raw = client("sqs", AWS).receive_message(
        QueueUrl=queue.queue_url, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"][0]
    assert raw["Body"] == '{"group": 1}'  # the body is what the family's workers read
    assert raw["MessageAttributes"][TASK_ID_ATTRIBUTE] == {
        "StringValue": "abc123",
        "DataType": "String",
    }


def test_partial_batch_failure_is_retried(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first call fails entries 1 and 4; the retry of those succeeds.
    queue, sqs, sleeps = flaky_queue(monkeypatch, lambda n, _: {"1", "4"} if n == 1 else set())
    items = [(f"t{i}", f"body {i}") for i in range(6)]

    assert queue.send_batch(items) == 6

    assert sqs.calls == [["0", "1", "2", "3", "4", "5"], ["1", "4"]]
    assert len(sleeps) == 1
    received = queue.receive(10, 30)
    received += queue.receive(10, 30)
    assert sorted((m.task_id, m.body) for m in received) == items


def test_batch_entries_failing_every_time_raise_after_backoff(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, sqs, sleeps = flaky_queue(
        monkeypatch, lambda n, entries: {e["Id"] for e in entries if e["MessageBody"] == "body 0"}
    )
    items = [(f"t{i}", f"body {i}") for i in range(12)]

    with pytest.raises(BackendError, match=r"1 of 12 messages were not sent.*InternalError"):
        queue.send_batch(items)

    assert len(sqs.calls) == 1 + queue.send_attempts  # a call for the second chunk, 5 for the first
    assert sleeps == sorted(sleeps) and len(sleeps) == queue.send_attempts - 1
    assert sleeps[1] == 2 * sleeps[0]  # exponential backoff
    assert queue.counts().visible == 11


def test_sender_faults_are_not_retried(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    queue, sqs, sleeps = flaky_queue(monkeypatch, lambda n, _: {"2"}, sender_fault=True)
    with pytest.raises(BackendError, match="InvalidMessageContents"):
        queue.send_batch([(f"t{i}", "b") for i in range(3)])
    assert len(sqs.calls) == 1
    assert sleeps == []
    assert queue.counts().visible == 2


# -- SQS: messages sent by the family's run.py -----------------------------------------------


def test_messages_without_task_id_attribute_get_a_stable_id(aws: str) -> None:
    queue = make_queue()
    sqs = client("sqs", AWS)
    body = {"Metadata": "Metadata_Plate=P1,Metadata_Well=A01", "output": "out", "group": "g"}
    # As the family's run.py sends them: json.dumps of the task, no attributes.
    sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(body))
    sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(body, indent=2))
    plain = sqs.send_message(QueueUrl=queue.queue_url, MessageBody="not json")["MessageId"]
    listed = sqs.send_message(QueueUrl=queue.queue_url, MessageBody="[1, 2]")["MessageId"]

    received = {m.body: m.task_id for m in queue.receive(10, 30)}

    stable = task_id_of(body)
    assert stable == Task(body=body).id  # the id `ds submit` gives the same task
    assert received[json.dumps(body)] == stable
    assert received[json.dumps(body, indent=2)] == stable  # formatting does not matter
    assert received["not json"] == plain
    assert received["[1, 2]"] == listed


def test_dead_messages_without_attribute_are_found_by_their_stable_id(aws: str) -> None:
    queue = make_queue(max_receive_count=1)
    body = {"group": {"Plate": "P1"}}
    client("sqs", AWS).send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(body))
    kill(queue, 1)

    [dead] = queue.list_dead()
    assert dead.task_id == task_id_of(body)
    assert queue.redrive([task_id_of(body)]) == 1
    [again] = queue.receive(10, 30)
    assert (again.task_id, again.body, again.receive_count) == (
        task_id_of(body),
        json.dumps(body),
        1,
    )


# -- SQS: dead letters -----------------------------------------------------------------------


def test_dead_lettering_follows_the_redrive_policy(aws: str) -> None:
    queue = make_queue(max_receive_count=2)
    queue.send_batch([("poison", "p")])
    first = queue.receive(10, 30)
    assert [m.receive_count for m in first] == [1]
    queue.release(first[0], 0)
    second = queue.receive(10, 30)
    assert [m.receive_count for m in second] == [2]
    queue.release(second[0], 0)

    assert queue.receive(10, 30) == []  # SQS moved it on this receive
    assert raw_count(queue.queue_url) == 0
    assert raw_count(queue.dead_letter_queue_url) == 1
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=1)


def test_list_dead_leaves_messages_in_the_dead_letter_queue(aws: str) -> None:
    queue = make_queue(max_receive_count=2)
    queue.send_batch([(f"t{i}", f"body {i}") for i in range(13)])
    kill(queue, 13)

    first = queue.list_dead()
    second = queue.list_dead()  # each listing receives every message once more

    expected = sorted((f"t{i}", f"body {i}", 2, "") for i in range(13))
    assert sorted((d.task_id, d.body, d.receive_count, d.error) for d in first) == expected
    assert sorted((d.task_id, d.body, d.receive_count, d.error) for d in second) == expected
    assert raw_count(queue.dead_letter_queue_url) == 13
    # Visible again at once, not after the listing's lease.
    visible = client("sqs", AWS).get_queue_attributes(
        QueueUrl=queue.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(visible) == 13


def test_redrive_moves_dead_messages_back(aws: str) -> None:
    queue = make_queue(max_receive_count=1)
    queue.send_batch([(f"t{i}", f"body {i}") for i in range(12)])
    kill(queue, 12)

    assert queue.redrive(["t3", "t11", "unknown"]) == 2
    assert raw_count(queue.dead_letter_queue_url) == 10
    assert queue.redrive() == 10

    assert raw_count(queue.dead_letter_queue_url) == 0
    assert queue.counts() == QueueCounts(visible=12, in_flight=0, dead=0)
    raw = []
    sqs = client("sqs", AWS)
    while batch := sqs.receive_message(
        QueueUrl=queue.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        raw.extend(batch)
    # Same body and same task id attribute as when submitted.
    assert sorted(
        (m["MessageAttributes"][TASK_ID_ATTRIBUTE]["StringValue"], m["Body"]) for m in raw
    ) == sorted((f"t{i}", f"body {i}") for i in range(12))


# -- SQS: leases, purge and errors -----------------------------------------------------------


def test_leases_are_whole_seconds_rounded_up(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_calls(sqs_queue, monkeypatch)
    queue = make_queue()
    queue.send_batch([("t", "b")])
    [message] = queue.receive(1, 0.2)
    assert queue.extend_lease(message, 61.5) is True
    queue.release(message, 2.01)
    assert [c.operation for c in calls][-3:] == [
        "ReceiveMessage",
        "ChangeMessageVisibility",
        "ChangeMessageVisibility",
    ]
    assert [c.arguments["VisibilityTimeout"] for c in calls[-3:]] == [1, 62, 3]


def test_gone_handles_are_not_errors(aws: str) -> None:
    queue = make_queue()
    queue.send_batch([("t", "b")])
    [message] = queue.receive(1, 30)
    queue.delete(message)
    queue.delete(message)
    queue.release(message, 0)
    assert queue.extend_lease(message, 30) is False
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)


def test_second_purge_within_a_minute_deletes_instead(aws: str) -> None:
    queue = make_queue()
    queue.send_batch([(f"a{i}", "b") for i in range(3)])
    queue.purge()
    queue.send_batch([(f"b{i}", "b") for i in range(14)])
    queue.purge()  # SQS refuses a second PurgeQueue for 60 s
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)


def test_missing_queue_is_a_backend_error_naming_the_operation(aws: str) -> None:
    queue = make_queue()
    client("sqs", AWS).delete_queue(QueueUrl=queue.queue_url)
    with pytest.raises(BackendError, match=r"GetQueueAttributes on queue jobs failed.*ds setup"):
        queue.counts()
    with pytest.raises(BackendError, match="SendMessageBatch on queue jobs"):
        queue.send_batch([("t", "b")])


def test_an_answer_that_is_not_utf8_is_a_one_line_backend_error(not_aws: NotAws) -> None:
    # boto3's SQS speaks JSON: bytes that are not UTF-8 fail as they are decoded.
    not_aws.body = b"\xff\xfe\x00<html>proxy error</html>"
    settings = AwsSettings(region="us-east-1", endpoint_url=not_aws.url)
    queue = SqsQueue(
        settings,
        f"{not_aws.url}/123456789012/jobs",
        f"{not_aws.url}/123456789012/jobs-dead",
        max_receive_count=3,
        wait_seconds=0,
    )
    calls: list[tuple[str, Callable[[], object]]] = [
        ("ReceiveMessage", lambda: queue.receive(1, 30)),
        ("SendMessageBatch", lambda: queue.send_batch([("t", "body")])),
        ("GetQueueAttributes", queue.counts),
    ]
    for operation, call in calls:
        with pytest.raises(BackendError) as caught:
            call()
        assert_one_line_backend_error(
            caught.value, f"SQS {operation} on queue jobs failed", "codec can't decode", "endpoint"
        )


def test_a_proxy_page_is_not_read_as_nothing_sent_or_an_empty_queue(not_aws: NotAws) -> None:
    # boto3 reads a 200 answer that is not JSON as an empty one: without a check, the
    # messages would be lost silently and the queue would look drained.
    not_aws.body = b"<html><body>Please log in to the proxy</body></html>"
    settings = AwsSettings(region="us-east-1", endpoint_url=not_aws.url)
    url = f"{not_aws.url}/123456789012/jobs"
    queue = SqsQueue(settings, url, f"{url}-dead", max_receive_count=3, wait_seconds=0)
    with pytest.raises(BackendError) as caught:
        queue.send_batch([("a", "body a"), ("b", "body b")])
    assert_one_line_backend_error(
        caught.value,
        "SQS SendMessageBatch on queue jobs failed",
        "does not say whether 2 of 2 messages were sent",
        "check the endpoint",
    )
    with pytest.raises(BackendError) as caught:
        queue.counts()
    assert_one_line_backend_error(
        caught.value, "SQS GetQueueAttributes on queue jobs failed", "has no attributes"
    )


def test_an_answer_that_does_not_parse_is_a_one_line_backend_error(aws: str) -> None:
    # What botocore's parser raises (not a BotoCoreError) at an HTML page where XML was due:
    # SQS answered XML before botocore 1.34.9x. Raised where botocore parses the answer.
    queue = make_queue()
    message = (
        "Unable to parse response (mismatched tag: line 1, column 32), invalid XML received. "
        "Further retries may succeed:\n<html><body><p>Proxy error<br></body></html>"
    )

    def unparseable(**_: Any) -> None:
        raise ResponseParserError(message)

    queue._client.meta.events.register("before-parse.sqs.ReceiveMessage", unparseable)
    with pytest.raises(BackendError) as caught:
        queue.receive(1, 30)
    assert_one_line_backend_error(
        caught.value,
        "SQS ReceiveMessage on queue jobs failed: Unable to parse response",
        "check the endpoint",
    )
    assert "<html>" not in str(caught.value)
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)  # other calls work


# -- S3 ----------------------------------------------------------------------------------------


@pytest.fixture
def bucket(aws: str) -> str:
    client("s3", AWS).create_bucket(Bucket="ds-test-bucket")
    return "ds-test-bucket"


def test_requester_pays_and_acl_reach_the_api(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(s3_storage, monkeypatch)
    storage = S3Storage(
        AWS, bucket, requester_pays=True, upload_args={"ACL": "bucket-owner-full-control"}
    )
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (9 * 1024 * 1024))  # above the 8 MiB multipart threshold
    small = tmp_path / "small.txt"
    small.write_bytes(b"small")

    storage.put_bytes("a/bytes.txt", b"bytes")
    storage.put_file("a/big.bin", big)
    storage.put_files([("a/small.txt", small)])
    assert storage.get_bytes("a/bytes.txt") == b"bytes"
    storage.get_file("a/big.bin", tmp_path / "down" / "big.bin")
    assert storage.exists("a/small.txt")
    assert [info.key for info in storage.list("a/")] == ["a/big.bin", "a/bytes.txt", "a/small.txt"]
    storage.delete("a/bytes.txt")

    assert (tmp_path / "down" / "big.bin").read_bytes() == big.read_bytes()
    operations = {call.operation for call in calls}
    assert {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    } <= operations
    assert {"GetObject", "HeadObject", "ListObjectsV2", "DeleteObject"} <= operations
    assert [c.operation for c in calls if c.headers.get("x-amz-request-payer") != "requester"] == []
    creating = [c for c in calls if c.operation in ("PutObject", "CreateMultipartUpload")]
    assert len(creating) == 3
    assert {c.headers.get("x-amz-acl") for c in creating} == {"bucket-owner-full-control"}
    assert len([c for c in calls if c.operation == "UploadPart"]) == 2  # 8 MiB parts


def test_without_options_no_extra_arguments_are_sent(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(s3_storage, monkeypatch)
    storage = S3Storage(AWS, bucket)
    storage.put_bytes("k", b"x")
    storage.get_file("k", tmp_path / "k")
    assert calls
    assert [c.operation for c in calls if "x-amz-request-payer" in c.headers] == []
    assert [c.operation for c in calls if "x-amz-acl" in c.headers] == []


def test_a_files_content_type_is_guessed_from_its_name_as_the_aws_cli_does(
    bucket: str, tmp_path: Path
) -> None:
    """The family's workers uploaded with `aws s3 cp`, which sets the Content-Type from the
    file's name: a PNG or CSV opens in a browser from S3 instead of downloading."""
    for name in ("a.png", "b.csv", "c.zarray"):
        (tmp_path / name).write_text("x")

    def types(storage: S3Storage, prefix: str) -> dict[str, str]:
        storage.put_files([(f"{prefix}/{n}", tmp_path / n) for n in ("a.png", "b.csv", "c.zarray")])
        client = storage._client
        return {
            n: client.head_object(Bucket=bucket, Key=f"{prefix}/{n}")["ContentType"]
            for n in ("a.png", "b.csv", "c.zarray")
        }

    assert types(S3Storage(AWS, bucket), "guess") == {
        "a.png": "image/png",
        "b.csv": "text/csv",
        "c.zarray": "binary/octet-stream",  # nothing known: S3's own default
    }
    flags = upload_args_from_flags("--no-guess-mime-type", source="config.py")
    assert set(types(S3Storage(AWS, bucket, upload_args=flags), "plain").values()) == {
        "binary/octet-stream"
    }
    fixed = upload_args_from_flags("--content-type text/plain", source="config.py")
    assert set(types(S3Storage(AWS, bucket, upload_args=fixed), "fixed").values()) == {"text/plain"}


def test_put_files_of_50_files_concurrently(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(s3_storage, monkeypatch)
    storage = S3Storage(AWS, bucket, threads=8)
    items = []
    for i in range(50):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"content {i}")
        items.append((f"outputs/f{i:02d}.txt", path))

    storage.put_files(items)

    assert [info.key for info in storage.list("outputs/")] == [key for key, _ in items]
    assert storage.get_bytes("outputs/f37.txt") == b"content 37"
    puts = [c for c in calls if c.operation == "PutObject"]
    assert len(puts) == 50
    assert len({c.thread for c in puts}) > 1  # uploads ran on several threads


def test_put_files_raises_the_first_failure(bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(AWS, bucket, threads=2)
    real = tmp_path / "real.txt"
    real.write_text("x")
    with pytest.raises(FileNotFoundError):
        storage.put_files([("a", real), ("b", tmp_path / "missing.txt")])


def test_get_file_is_atomic_and_cleans_up(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = S3Storage(AWS, bucket)
    storage.put_bytes("obj", b"new content")
    target = tmp_path / "dir" / "target.txt"
    target.parent.mkdir()
    target.write_bytes(b"old")

    # Downloads that fail (after the transfer manager's retries, or at once) leave the old
    # file and no temporary file.
    failures: list[Exception] = [
        ConnectionResetError("injected"),
        ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "GetObject"),
    ]
    for failure in failures:

        def fail_get(failure: Exception = failure, **_: Any) -> None:
            raise failure

        storage._client.meta.events.register("before-call.s3.GetObject", fail_get)
        with pytest.raises(BackendError, match="download of s3://ds-test-bucket/obj failed"):
            storage.get_file("obj", target)
        storage._client.meta.events.unregister("before-call.s3.GetObject", fail_get)
        assert target.read_bytes() == b"old"
        assert [p.name for p in target.parent.iterdir()] == ["target.txt"]

    storage.get_file("obj", target)
    assert target.read_bytes() == b"new content"
    assert [p.name for p in target.parent.iterdir()] == ["target.txt"]


def test_get_file_of_missing_key(bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(AWS, bucket)
    existing = tmp_path / "keep.txt"
    existing.write_bytes(b"keep")
    with pytest.raises(KeyError):
        storage.get_file("missing/key.txt", existing)
    assert existing.read_bytes() == b"keep"
    with pytest.raises(KeyError):
        storage.get_file("missing/key.txt", tmp_path / "new" / "deep" / "file.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # folders made are gone
    with pytest.raises(KeyError):
        storage.get_bytes("missing/key.txt")
    assert storage.exists("missing/key.txt") is False


def test_bad_keys_are_refused_before_any_call(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(s3_storage, monkeypatch)
    storage = S3Storage(AWS, bucket, requester_pays=True)
    source = tmp_path / "s.txt"
    source.write_text("x")
    for key in ("../x", "a/../../x", "/abs", "a//b"):
        with pytest.raises(InputError):
            storage.put_bytes(key, b"x")
        with pytest.raises(InputError):
            storage.put_file(key, source)
        with pytest.raises(InputError):
            storage.put_files([("fine.txt", source), (key, source)])
        with pytest.raises(InputError):
            storage.get_bytes(key)
        with pytest.raises(InputError):
            storage.get_file(key, tmp_path / "out")
        with pytest.raises(InputError):
            storage.exists(key)
        with pytest.raises(InputError):
            storage.delete(key)
    with pytest.raises(InputError):
        storage.list("../")
    assert calls == []
    assert client("s3", AWS).list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_folder_markers_are_not_listed(bucket: str) -> None:
    raw = client("s3", AWS)
    raw.put_object(Bucket=bucket, Key="plates/", Body=b"")
    raw.put_object(Bucket=bucket, Key="plates/a.tif", Body=b"abc")
    storage = S3Storage(AWS, bucket)
    assert list(storage.list("")) == [ObjectInfo(key="plates/a.tif", size=3)]


def test_missing_bucket_is_a_backend_error(aws: str, tmp_path: Path) -> None:
    storage = S3Storage(AWS, "no-such-bucket")
    source = tmp_path / "s.txt"
    source.write_text("x")
    with pytest.raises(BackendError, match=r"upload of s3://no-such-bucket/k failed.*bucket name"):
        storage.put_file("k", source)
    with pytest.raises(
        BackendError, match=r"GetObject of s3://no-such-bucket/k failed.*NoSuchBucket"
    ):
        storage.get_bytes("k")
    with pytest.raises(BackendError, match="NoSuchBucket"):
        list(storage.list(""))


def test_an_s3_answer_that_does_not_parse_is_a_one_line_backend_error(
    not_aws: NotAws, tmp_path: Path
) -> None:
    # A proxy's page with a 2xx status other than 200 (botocore retries a bad 200 as a 500):
    # HTML that is not XML makes botocore's parser raise ResponseParserError.
    not_aws.status = 203
    not_aws.body = b"<html><body><p>Proxy error<br></body></html>"
    storage = S3Storage(AwsSettings(region="us-east-1", endpoint_url=not_aws.url), "bucket")
    source = tmp_path / "s.txt"
    source.write_text("x")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("ListObjectsV2 of s3://bucket/a/", lambda: list(storage.list("a/"))),
        ("PutObject of s3://bucket/k", lambda: storage.put_bytes("k", b"x")),
        ("upload of s3://bucket/one", lambda: storage.put_file("one", source)),
        ("upload of s3://bucket/", lambda: storage.put_files([("x/1", source), ("x/2", source)])),
    ]
    for where, call in calls:
        with pytest.raises(BackendError) as caught:
            call()
        assert_one_line_backend_error(
            caught.value, f"S3 {where}", "Unable to parse response", "check the endpoint"
        )
        assert "<html>" not in str(caught.value)


def test_put_files_checks_every_file_before_uploading_any(bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(AWS, bucket)
    real = tmp_path / "real.txt"
    real.write_text("x")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        storage.put_files([("a", real), ("b", tmp_path / "missing.txt")])
    with pytest.raises(FileNotFoundError):
        storage.put_files([("a", real), ("c", tmp_path)])  # a folder is no file
    assert list(storage.list("")) == []


def test_put_files_errors_read_as_put_file_errors(aws: str, tmp_path: Path) -> None:
    storage = S3Storage(AWS, "no-such-bucket")
    source = tmp_path / "s.txt"
    source.write_text("x")
    expected = r"S3 upload of s3://no-such-bucket/{key} failed: .*NoSuchBucket.*bucket name"
    with pytest.raises(BackendError, match=expected.format(key="one")) as single:
        storage.put_file("one", source)
    with pytest.raises(BackendError, match=expected.format(key="one")) as many:
        storage.put_files([("one", source)])
    assert str(many.value) == str(single.value)
    assert getattr(many.value, "code", "") == "NoSuchBucket"


def test_put_files_stops_at_the_first_failure_and_names_its_key(
    bucket: str, tmp_path: Path
) -> None:
    storage = S3Storage(AWS, bucket, threads=1)
    items = []
    for i in range(40):
        path = tmp_path / f"f{i}.txt"
        path.write_text(str(i))
        items.append((f"out/f{i:02d}.txt", path))

    def refuse_f01(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == "out/f01.txt":
            error = {"Code": "AccessDenied", "Message": "injected"}
            raise ClientError({"Error": error}, "PutObject")
        if params["Key"] > "out/f01.txt":
            # Each later upload takes a while (38 of them: 7.6 s), so the failure is seen
            # and the rest cancelled long before they could all finish, even on a busy
            # machine (without it, a slow main thread saw every upload done first).
            time.sleep(0.2)

    storage._client.meta.events.register("provide-client-params.s3.PutObject", refuse_f01)
    with pytest.raises(BackendError, match=r"upload of s3://ds-test-bucket/out/f01.txt failed"):
        storage.put_files(items)
    stored = [info.key for info in storage.list("out/")]
    assert "out/f01.txt" not in stored
    assert len(stored) < 39  # the uploads not started when it failed were cancelled


# -- upload flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("", {}),
        ("   ", {}),
        ("--acl bucket-owner-full-control", {"ACL": "bucket-owner-full-control"}),
        ("--sse AES256", {"ServerSideEncryption": "AES256"}),
        ("--sse", {"ServerSideEncryption": "AES256"}),  # as in the aws-cli
        ("--storage-class INTELLIGENT_TIERING", {"StorageClass": "INTELLIGENT_TIERING"}),
        ("--request-payer requester", {"RequestPayer": "requester"}),
        ("--request-payer", {"RequestPayer": "requester"}),
        (
            "--acl=bucket-owner-full-control --sse aws:kms --sse-kms-key-id 'alias/my key'",
            {
                "ACL": "bucket-owner-full-control",
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "alias/my key",
            },
        ),
        (
            "--acl bucket-owner-full-control --metadata-directive REPLACE --quiet",
            {"ACL": "bucket-owner-full-control"},
        ),
        ("--sse --acl private", {"ServerSideEncryption": "AES256", "ACL": "private"}),
        ("--content-type text/csv", {"ContentType": "text/csv"}),
        ("--no-guess-mime-type", {NO_GUESSED_TYPE: "true"}),
    ],
)
def test_upload_args_from_flags(flags: str, expected: dict[str, str]) -> None:
    assert upload_args_from_flags(flags, source="config.py") == expected


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ("--recursive", "unknown or unsupported flag '--recursive'"),
        ("--acl", "--acl needs a value"),
        ("--acl --sse AES256", "--acl needs a value"),
        ("--storage-class", "--storage-class needs a value"),
        ("--metadata-directive", "--metadata-directive needs a value"),
        ("--acl=", "--acl has an empty value"),
        ("--acl public", "--acl 'public' is not a value S3 accepts"),
        ("--storage-class intelligent_tiering", "is not a value S3 accepts"),
        ("bucket-owner-full-control", "is not a flag"),
        ("--acl private extra", "'extra' is not a flag"),
        ("--acl 'private", "cannot read"),
    ],
)
def test_upload_flags_errors(flags: str, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        upload_args_from_flags(flags, source="config.py")
    assert caught.value.source == "config.py"
    assert caught.value.field == "storage.upload_flags"
    assert problem in caught.value.problem
    assert caught.value.fix


def test_conditional_writes_for_task_claims(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`put_new` creates only what is not there (If-None-Match: *), `put_tagged` replaces
    only the version read (If-Match): exactly one of two writers wins either way. The
    headers are checked on the requests built, not only on moto's answers."""
    calls = record_calls(s3_storage, monkeypatch)
    storage = S3Storage(AWS, bucket)
    first = storage.put_new("_ds/T/claims/t.json", b"a")
    assert first is not None
    assert storage.put_new("_ds/T/claims/t.json", b"b") is None  # taken: 412
    data, tag, age = storage.get_tagged("_ds/T/claims/t.json")
    assert (data, tag) == (b"a", first)
    assert age is not None and 0 <= age < 60  # by S3's clock: just written
    replaced = storage.put_tagged("_ds/T/claims/t.json", b"c", tag)
    assert replaced is not None and replaced != tag
    assert storage.put_tagged("_ds/T/claims/t.json", b"d", tag) is None  # stale version
    assert storage.get_bytes("_ds/T/claims/t.json") == b"c"
    assert storage.put_tagged("_ds/T/claims/none.json", b"e", tag) is None  # no object
    with pytest.raises(KeyError):
        storage.get_tagged("_ds/T/claims/none.json")
    puts = [c for c in calls if c.operation == "PutObject"]
    assert [c.headers.get("if-none-match") for c in puts[:2]] == ["*", "*"]
    assert [c.headers.get("if-match") for c in puts[2:4]] == [tag, tag]


def test_an_objects_age_is_s3s_date_less_its_last_modified() -> None:
    written = datetime(2026, 12, 7, 14, 0, 0, tzinfo=UTC)

    def answer(date: str | None, modified: object = written) -> dict[str, object]:
        headers = {} if date is None else {"date": date}
        return {"LastModified": modified, "ResponseMetadata": {"HTTPHeaders": headers}}

    assert object_age(answer("Mon, 07 Dec 2026 14:10:30 GMT")) == 630.0
    # S3 rounds Last-Modified and Date to the second apart: never a negative age.
    assert object_age(answer("Mon, 07 Dec 2026 13:59:59 GMT")) == 0.0
    assert object_age(answer(None)) is None  # an S3 stand-in saying no date
    assert object_age(answer("yesterday")) is None
    assert object_age(answer("Mon, 07 Dec 2026 14:10:30 GMT", modified=None)) is None
    assert object_age({}) is None


def test_a_dead_letter_listing_goes_on_past_messages_shown_again(aws: str) -> None:
    """On SQS a listing longer than its hiding time meets its first messages again (with new
    receipt handles) before the last ones: a batch of those alone is not the end, and each
    message keeps its newest handle (an old one "might not" delete it). Simulated: the
    third receive answers the first batch again, as SQS would once it showed again."""
    queue = make_queue(max_receive_count=1)
    queue.send_batch([(f"t{i}", f"body {i}") for i in range(25)])
    kill(queue, 25)
    answers: list[list[dict[str, Any]]] = []
    calls = 0

    def replay(**_: Any) -> Any:
        """The third receive answers, without asking moto, the first batch again."""
        nonlocal calls
        calls += 1
        if calls != 3:
            return None
        from botocore.awsrequest import AWSResponse

        again = [{**m, "ReceiptHandle": m["ReceiptHandle"] + "-new"} for m in answers[0]]
        answers.append(again)
        parsed = {"Messages": again, "ResponseMetadata": {"HTTPStatusCode": 200}}
        return AWSResponse("https://127.0.0.1/", 200, {}, None), parsed

    def kept(parsed: dict[str, Any], **_: Any) -> None:
        if calls != 3:
            answers.append(list(parsed.get("Messages", [])))

    events = queue._client.meta.events
    events.register("before-call.sqs.ReceiveMessage", replay)
    events.register("after-call.sqs.ReceiveMessage", kept)
    try:
        listed = queue._read_dead()
    finally:
        events.unregister("before-call.sqs.ReceiveMessage", replay)
        events.unregister("after-call.sqs.ReceiveMessage", kept)
    assert len(listed) == 25  # the batch shown again did not end the listing
    newest = {m["MessageId"]: m["ReceiptHandle"] for m in answers[2]}
    assert all(
        m["ReceiptHandle"] == newest[m["MessageId"]] for m in listed if m["MessageId"] in newest
    )


def test_a_dead_letter_listing_stopped_by_the_in_flight_cap_is_an_error_not_a_part(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS holds at most ~120,000 messages of a queue in flight; past that a long-polling
    receive answers empty, without an error (moto has no cap). A listing holds each dead
    letter it read in flight: stopped there, the letters left out would be taken for tasks
    that left the queue unseen and sent again (monitor/settle.py). Scaled down: the cap is
    30 here, the dead-letter queue holds 45."""
    from distributed_something.backends.aws import sqs_queue

    monkeypatch.setattr(sqs_queue, "IN_FLIGHT_LIMIT", 30)
    monkeypatch.setattr(sqs_queue, "IN_FLIGHT_MARGIN", 0)
    queue = make_queue(max_receive_count=1)
    queue.send_batch([(f"t{i}", f"body {i}") for i in range(45)])
    kill(queue, 45)
    held = 0

    def capped(**_: Any) -> Any:
        """Past 30 in flight, an empty answer, as SQS gives a long poll."""
        if held < 30:
            return None
        from botocore.awsrequest import AWSResponse

        parsed = {"ResponseMetadata": {"HTTPStatusCode": 200}}
        return AWSResponse("https://127.0.0.1/", 200, {}, None), parsed

    def count(parsed: dict[str, Any], **_: Any) -> None:
        nonlocal held
        held += len(parsed.get("Messages", []))

    events = queue._client.meta.events
    events.register("before-call.sqs.ReceiveMessage", capped)
    events.register("after-call.sqs.ReceiveMessage", count)
    try:
        with pytest.raises(SqsError) as caught:
            queue.list_dead()
    finally:
        events.unregister("before-call.sqs.ReceiveMessage", capped)
        events.unregister("after-call.sqs.ReceiveMessage", count)
    assert "holds about 45 messages" in str(caught.value)
    assert "cannot read them all at once" in str(caught.value)
    assert len(queue.list_dead()) == 45  # shown again at once: nothing was lost or held


def test_a_deep_dead_letter_queue_is_hidden_for_as_long_as_its_listing_takes() -> None:
    from distributed_something.backends.aws.sqs_queue import listing_visibility

    assert listing_visibility(0) == listing_visibility(1500) == 30
    assert listing_visibility(100_000) == 2000  # 10,000 receives of ~0.1 s, twice over
    assert listing_visibility(10**9) == 12 * 3600  # SQS's longest
