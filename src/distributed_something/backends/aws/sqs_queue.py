"""The AWS task queue: an SQS queue and its dead-letter queue behind the `Queue` contract.

The message body is the task exactly as the family's worker images read it; the task id
travels beside it as the message attribute ``ds-task-id``. Messages sent by other tools
(the family's ``run.py``) have no such attribute: their id is then the same stable hash
`ds submit` would give the body (`task_id_of`), so resubmissions and reports still match.

Dead-lettering is SQS's own: the job queue's redrive policy moves a message to the
dead-letter queue on the receive after ``maxReceiveCount``. SQS keeps no "last error" on a
message, so failures are recorded by the worker in storage and `DeadTask.error` is empty.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from distributed_something.backends.aws import send_pool
from distributed_something.backends.aws.clients import (
    AwsSettings,
    client,
    connection_fix,
    first_line,
    unreadable_answers,
)
from distributed_something.backends.aws.errors import chunks
from distributed_something.errors import BackendError, QueueGone
from distributed_something.interfaces.queue import DeadTask, Message, QueueCounts
from distributed_something.jobs.model import MAX_MESSAGE_BYTES, task_id_of
from distributed_something.worker.heartbeat import LeaseEnding

log = logging.getLogger(__name__)

TASK_ID_ATTRIBUTE = "ds-task-id"
"""The message attribute (String) that carries a message's task id."""

BATCH_SIZE = 10
"""SQS's most entries per batch call and most messages per receive."""

MAX_BATCH_BYTES = MAX_MESSAGE_BYTES
"""SQS's largest batch payload: bodies and message attributes together."""

MAX_VISIBILITY_SECONDS = 43_200
"""SQS's longest visibility timeout (12 hours)."""

MAX_WAIT_SECONDS = 20
"""SQS's longest long-polling wait."""

CEILING_NOTICE_SECONDS = 1800
"""How long before a lease's 12-hour ceiling `SqsQueue.extend_lease` starts raising
`LeaseEnding` (beyond the lease asked for): time for the worker to stop the command and hand
the task back while it still holds it."""

LIST_VISIBILITY_SECONDS = 30
"""How long `list_dead`/`redrive` hide the dead messages they read at least (they show them
again at the end): long enough for one listing pass of a few thousand, short enough to be
harmless if we crash (`listing_visibility` for more)."""

QUIET_BATCHES = 3
"""Receives in a row with no message not seen yet that end a dead-letter listing."""

IN_FLIGHT_LIMIT = 120_000
"""SQS's cap on a standard queue's messages in flight ("approximately 120,000"); past it a
long-polling receive answers empty, not with an error (Amazon SQS quotas). A dead-letter
listing holds every message it read in flight until it ends."""

IN_FLIGHT_MARGIN = 1_000
"""How close to `IN_FLIGHT_LIMIT` a listing that ends early is taken to have met it."""


def listing_visibility(depth: int) -> int:
    """Seconds to hide the messages of a listing of a queue ``depth`` messages deep: ten a
    receive, and twice the ~0.1 s a receive takes from afar, at least
    `LIST_VISIBILITY_SECONDS`, at most SQS's 12 hours. Pure."""
    return min(max(LIST_VISIBILITY_SECONDS, -(-max(depth, 0) // 50)), 12 * 3600)


# Receipt times kept for the 12-hour ceiling: a worker holds one message at a time; this
# only bounds what a long-lived queue object keeps of handles never deleted or released.
_RECEIPTS_KEPT = 10_000
_NOT_AWS_HINT = "the answer is not SQS's: check the endpoint (AWS_ENDPOINT_URL) and any proxy"
_SQS_CODE_PREFIX = "AWS.SimpleQueueService."
# ChangeMessageVisibility/DeleteMessage with a handle whose lease is gone: the message was
# deleted, moved to the dead-letter queue, or is not in flight any more.
_LEASE_LOST_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight"})
#: SQS's codes (without the prefix) for a queue that does not exist: deleted, or never made.
QUEUE_GONE_CODES = frozenset({"NonExistentQueue", "QueueDoesNotExist"})
# Codes whose fix is the same for every operation.
_HINTS = {
    "AccessDenied": "check the IAM permissions of the profile or task role",
    "AccessDeniedException": "check the IAM permissions of the profile or task role",
    "NonExistentQueue": "the queue does not exist: run `ds setup`",
    "QueueDoesNotExist": "the queue does not exist: run `ds setup`",
    "InvalidClientTokenId": "check the AWS credentials (profile) and region",
    "UnrecognizedClientException": "check the AWS credentials (profile) and region",
}


class SqsError(BackendError):
    """An SQS call failed. ``code`` is SQS's error code without the
    ``AWS.SimpleQueueService.`` prefix ("" when the call never reached SQS)."""

    def __init__(self, text: str, code: str = "", detail: str = "") -> None:
        super().__init__(text)
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a sending process (send_pool), it must arrive whole: code and detail.
        return (type(self), (str(self), self.code, self.detail))

    @property
    def lease_lost(self) -> bool:
        """Whether SQS refused a receipt handle because its lease is gone."""
        if self.code in _LEASE_LOST_CODES:
            return True
        # AWS: "Value ... for parameter ReceiptHandle is invalid. Reason: Message does not
        # exist or is not available for visibility timeout change."
        return self._invalid_parameter and "receipthandle" in self.detail.lower()

    @property
    def _invalid_parameter(self) -> bool:
        """SQS's common error InvalidParameterValue, under the query API's name or as a
        JSON protocol type InvalidParameterValueException (the code `_boundary` takes
        first). The error has no shape in the service model, so nothing ties its JSON type
        to the query code (QueueDoesNotExist's is NonExistentQueue)."""
        return self.code.removesuffix("Exception") == "InvalidParameterValue"

    @property
    def beyond_ceiling(self) -> bool:
        """Whether SQS refused a visibility change that would hide the message more than
        12 hours after its receipt ("Total VisibilityTimeout for the message is beyond the
        limit [43200 seconds]")."""
        detail = self.detail.lower()
        return self._invalid_parameter and "visibilitytimeout" in detail and "limit" in detail


class SqsQueueGone(SqsError, QueueGone):
    """An SQS call found its queue gone (`QUEUE_GONE_CODES`): the run is over."""


# Bodies of recently received messages, by task id: the task log's stream is named from
# the task's metadata (task_logs.family_stream_name), and its factory is only given the
# task id. A task id is the hash of its body, so whichever queue object received it, the
# body is the same; bounded, as a worker holds one message at a time.
_BODIES_KEPT = 256
_bodies: dict[str, str] = {}
_bodies_lock = threading.Lock()


def received_body(task_id: str) -> str | None:
    """The body of a message with task id ``task_id`` that an `SqsQueue` of this process
    received lately (the last `_BODIES_KEPT` task ids), or None."""
    with _bodies_lock:
        return _bodies.get(task_id)


def _remember_bodies(messages: Sequence[Message]) -> None:
    with _bodies_lock:
        for message in messages:
            _bodies.pop(message.task_id, None)
            _bodies[message.task_id] = message.body
        while len(_bodies) > _BODIES_KEPT:
            del _bodies[next(iter(_bodies))]


def _queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _seconds(value: float) -> int:
    """Whole seconds for SQS (rounded up, so a lease is never shorter than asked)."""
    return min(max(math.ceil(value), 0), MAX_VISIBILITY_SECONDS)


_T = TypeVar("_T")


def _ceiling_text(message: Message) -> str:
    """Why a task must stop before SQS's 12-hour ceiling on its lease (one line)."""
    return (
        f"task {message.task_id} reached SQS's 12-hour limit: a received message is hidden "
        "at most 12 hours after its receipt, then a second worker would run it, so the command "
        "was stopped (split the work into tasks shorter than 12 hours)"
    )


def chunks_of_ten(items: Sequence[_T]) -> Iterator[list[_T]]:
    """``items`` in SQS batches (at most `BATCH_SIZE` entries)."""
    return chunks(items, BATCH_SIZE)


def _entry_bytes(entry: dict[str, Any]) -> int:
    """What SQS counts of a message's size: its body and its attributes' names, types and
    values."""
    size = len(str(entry["MessageBody"]).encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        data = value.get("StringValue") or value.get("BinaryValue") or b""
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(data.encode() if isinstance(data, str) else data)
    return size


def _batches(items: Sequence[_T], entry_of: Callable[[_T], dict[str, Any]]) -> list[list[_T]]:
    """Split ``items`` into batches SQS accepts: at most 10 entries and `MAX_BATCH_BYTES`."""
    batches: list[list[_T]] = []
    current: list[_T] = []
    current_bytes = 0
    for item in items:
        size = _entry_bytes(entry_of(item))
        if current and (len(current) == BATCH_SIZE or current_bytes + size > MAX_BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def _body_task_id(body: str, message_id: str) -> str:
    """The id of a message sent without a task id attribute (e.g. by the family's run.py)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return message_id
    return task_id_of(value) if isinstance(value, dict) else message_id


def _reasons(failures: Sequence[dict[str, Any]]) -> str:
    """SQS's distinct reasons for failed batch entries, as one phrase."""
    return "; ".join(sorted({f"{f.get('Code', '?')}: {f.get('Message', '')}" for f in failures}))


def _resend_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """A batch entry sending a received message again: same body, same attributes (in the
    shape SendMessage accepts: without the empty list fields a receive returns)."""
    entry: dict[str, Any] = {"MessageBody": raw["Body"]}
    attributes = raw.get("MessageAttributes") or {}
    if attributes:
        entry["MessageAttributes"] = {
            name: {
                key: value[key]
                for key in ("DataType", "StringValue", "BinaryValue")
                if key in value
            }
            for name, value in attributes.items()
        }
    return entry


class SqsQueue:
    """A `Queue` (see interfaces/queue.py for the contract) on an SQS queue whose redrive
    policy sends messages to ``dead_letter_queue_url`` after ``max_receive_count`` receives.

    ``max_receive_count`` must be the queue's ``maxReceiveCount`` (setup creates both from
    the same config). ``wait_seconds`` is the long-polling wait of a receive that finds
    nothing (0–20). ``threads`` sends batches concurrently; a big submit also spreads them
    over ``processes`` processes (`send_pool`; default: one per core, none on one core).
    A batch entry that SQS reports
    as failed through no fault of ours is sent again up to ``send_attempts`` times in all,
    with exponential backoff through ``sleep``.

    Differences from the SQLite queue, all SQS's: leases are whole seconds (rounded up);
    ``release`` cannot keep the error (DeadTask.error is ""); SQS may accept the receipt
    handle of an earlier receive of a message, so a stale handle can act on a newer lease;
    counts are approximate. Every AWS failure raises `BackendError` (an `SqsError`) naming
    the operation and queue; a queue that does not exist (any more) raises `QueueGone`
    (an `SqsQueueGone`). Safe to share between threads and processes.
    """

    def __init__(
        self,
        settings: AwsSettings,
        queue_url: str,
        dead_letter_queue_url: str,
        *,
        max_receive_count: int,
        wait_seconds: int = 1,
        threads: int = 32,
        send_attempts: int = 5,
        processes: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.queue_url = queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self.max_receive_count = max_receive_count
        self.wait_seconds = min(max(int(wait_seconds), 0), MAX_WAIT_SECONDS)
        self.threads = max(int(threads), 1)
        self.send_attempts = max(int(send_attempts), 1)
        self.processes = send_pool.process_count() if processes is None else processes
        self._sent_here = 0  # messages this object sent through its own threads
        self._pool: send_pool.SendPool | None = None
        self._sleep = sleep
        self._clock = clock
        # handle -> clock() just before the receive that returned it: SQS counts its 12-hour
        # ceiling from its receipt, which is later, so the time left we compute is never more
        # than SQS's.
        self._received_at: dict[str, float] = {}
        self._received_lock = threading.Lock()
        self._client: Any = client("sqs", settings)

    # -- calls -----------------------------------------------------------------------------

    @contextmanager
    def _boundary(self, operation: str, queue_url: str) -> Iterator[None]:
        """Turn botocore's errors into `SqsError` naming the operation and the queue."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"SQS {operation} on queue {_queue_name(queue_url)} failed"
        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("QueryErrorCode") or info.get("Code") or "")
            code = code.removeprefix(_SQS_CODE_PREFIX)
            detail = str(info.get("Message") or "")
            hint = _HINTS.get(code)
            text = f"{where}: {code}: {detail}" + (f" ({hint})" if hint else "")
            if code in QUEUE_GONE_CODES:
                raise SqsQueueGone(text, code, detail) from error
            raise SqsError(text, code, detail) from error
        except BotoCoreError as error:
            reach = connection_fix(error)
            raise SqsError(f"{where}: {error}" + (f". Fix: {reach}" if reach else "")) from error
        except unreadable_answers() as error:
            # An endpoint answering garbage (a proxy's page): XML that does not parse (the
            # query protocol of older botocore) or bytes that are not UTF-8 (JSON protocol).
            # Only botocore runs in here, and it decodes nothing but the answer.
            raise SqsError(f"{where}: {first_line(error)} ({_NOT_AWS_HINT})") from error

    def _call(self, operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        with self._boundary(operation, kwargs["QueueUrl"]):
            return method(**kwargs)

    # -- sending ---------------------------------------------------------------------------

    def _send_entries(
        self, queue_url: str, entries: Sequence[dict[str, Any]]
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """Send one batch of entries (no "Id": their index is their id); retry those SQS
        failed without blaming the sender.

        Returns the indexes of the entries sent and SQS's failure records of those not sent.
        """
        pending = [{**entry, "Id": str(index)} for index, entry in enumerate(entries)]
        sent: list[int] = []
        given_up: list[dict[str, Any]] = []
        for attempt in range(self.send_attempts):
            response = self._call(
                "SendMessageBatch",
                self._client.send_message_batch,
                QueueUrl=queue_url,
                Entries=pending,
            )
            successful: list[dict[str, Any]] = list(response.get("Successful", []))
            failed: list[dict[str, Any]] = list(response.get("Failed", []))
            answered = {str(item["Id"]) for item in successful + failed}
            unanswered = sum(entry["Id"] not in answered for entry in pending)
            if unanswered:
                # SQS names every entry. An answer that does not (a proxy's 200 page reads
                # as an empty one) would otherwise lose those messages without a word.
                raise SqsError(
                    f"SQS SendMessageBatch on queue {_queue_name(queue_url)} failed: the "
                    f"answer does not say whether {unanswered} of {len(pending)} messages "
                    f"were sent ({_NOT_AWS_HINT})"
                )
            sent.extend(int(item["Id"]) for item in successful)
            # A sender fault (bad body, bad attribute) fails the same way every time.
            given_up.extend(item for item in failed if item.get("SenderFault"))
            retry_ids = {item["Id"] for item in failed if not item.get("SenderFault")}
            pending = [entry for entry in pending if entry["Id"] in retry_ids]
            if not pending:
                break
            if attempt + 1 < self.send_attempts:
                self._sleep(min(0.1 * 2**attempt, 5.0))
        else:
            given_up.extend(item for item in failed if not item.get("SenderFault"))
        return sent, given_up

    @staticmethod
    def _entry(item: tuple[str, str]) -> dict[str, Any]:
        task_id, body = item
        entry: dict[str, Any] = {"MessageBody": body}
        if task_id:  # SQS refuses an empty attribute value; the body gives the id then
            entry["MessageAttributes"] = {
                TASK_ID_ATTRIBUTE: {"DataType": "String", "StringValue": task_id}
            }
        return entry

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int:
        """Send ``(task_id, body)`` pairs, 10 per SendMessageBatch call (fewer when their
        bodies are large), calls concurrent.

        Returns how many were sent (all of them). When some entries still fail after the
        retries, raises `BackendError` saying how many and why; the others were sent.
        """
        entries = [self._entry(item) for item in items]
        chunks = _batches(entries, lambda entry: entry)
        if not chunks:
            return 0
        pool = self._send_pool() if self._use_processes(len(chunks)) else None
        if pool is not None:
            results = pool.send(chunks)
        else:
            results = self.send_batches(chunks)
            self._sent_here += len(entries)
        sent = sum(len(ids) for ids, _ in results)
        failures = [failure for _, failed in results for failure in failed]
        if failures:
            raise SqsError(
                f"SQS SendMessageBatch on queue {_queue_name(self.queue_url)}: "
                f"{len(failures)} of {len(items)} messages were not sent "
                f"({_reasons(failures)}); the other {sent} were sent"
            )
        return sent

    def send_batches(
        self, batches: Sequence[Sequence[dict[str, Any]]]
    ) -> list[tuple[list[int], list[dict[str, Any]]]]:
        """Send each batch (entries without ids) as one SendMessageBatch, over the threads;
        per batch, the indexes of its entries sent and SQS's records of those not sent."""

        def send(entries: Sequence[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
            return self._send_entries(self.queue_url, entries)

        if len(batches) <= 1 or self.threads == 1:
            return [send(entries) for entries in batches]
        with ThreadPoolExecutor(min(self.threads, len(batches))) as pool:
            return list(pool.map(send, batches))

    def _use_processes(self, calls: int) -> bool:
        return (
            self.processes > 1
            and calls >= send_pool.MIN_CALLS
            and self._sent_here >= send_pool.PROCESSES_AFTER
        )

    def _send_pool(self) -> send_pool.SendPool | None:
        """The processes sending for this queue, started; None where they cannot start."""
        if self._pool is None:
            spec = send_pool.QueueSpec(
                self.settings,
                self.queue_url,
                self.dead_letter_queue_url,
                self.max_receive_count,
                threads=max(self.threads // self.processes, 1),
                send_attempts=self.send_attempts,
            )
            pool = send_pool.SendPool(spec, self.processes)
            try:
                pool.start()
            except (OSError, NotImplementedError) as exc:
                log.debug("sending with threads only: no process pool here (%s)", exc)
                self.processes = 0
                return None
            self._pool = pool
        return self._pool

    # -- receiving and leases --------------------------------------------------------------

    def _message(self, raw: dict[str, Any]) -> Message:
        attributes = raw.get("MessageAttributes") or {}
        task_id = attributes.get(TASK_ID_ATTRIBUTE, {}).get("StringValue")
        body = str(raw.get("Body", ""))
        return Message(
            handle=str(raw["ReceiptHandle"]),
            task_id=str(task_id) if task_id else _body_task_id(body, str(raw["MessageId"])),
            body=body,
            receive_count=int((raw.get("Attributes") or {}).get("ApproximateReceiveCount", 1)),
            message_id=str(raw["MessageId"]),
        )

    def _receive_raw(
        self, queue_url: str, max_messages: int, visibility: int
    ) -> list[dict[str, Any]]:
        response = self._call(
            "ReceiveMessage",
            self._client.receive_message,
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(max(max_messages, 1), BATCH_SIZE),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=self.wait_seconds,
            MessageAttributeNames=["All"],
            # Not "AttributeNames": deprecated, and its documented values are the queue's
            # attributes, not the message's (boto3 >= 1.35, the floor, has this one).
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        """Up to ``max_messages`` (at most 10) messages, each leased for ``lease_seconds``
        rounded up to whole seconds. Waits up to ``wait_seconds`` when none is visible."""
        if max_messages < 1:
            return []
        started = self._clock()
        raw = self._receive_raw(self.queue_url, max_messages, _seconds(lease_seconds))
        messages = [self._message(item) for item in raw]
        _remember_bodies(messages)
        with self._received_lock:
            for message in messages:
                self._received_at[message.handle] = started
            while len(self._received_at) > _RECEIPTS_KEPT:  # handles never let go of
                del self._received_at[next(iter(self._received_at))]
        return messages

    def _forget(self, handle: str) -> None:
        with self._received_lock:
            self._received_at.pop(handle, None)

    def lease_time_left(self, message: Message) -> float | None:
        """Seconds until SQS's 12-hour ceiling on ``message``'s lease (measured from this
        queue's receive of it; never more than SQS's own count), or None when this queue
        object did not receive it."""
        with self._received_lock:
            received = self._received_at.get(message.handle)
        if received is None:
            return None
        return MAX_VISIBILITY_SECONDS - (self._clock() - received)

    def _change_visibility(self, handle: str, seconds: float) -> bool:
        """Set a received message's visibility; False when its lease is gone."""
        try:
            self._call(
                "ChangeMessageVisibility",
                self._client.change_message_visibility,
                QueueUrl=self.queue_url,
                ReceiptHandle=handle,
                VisibilityTimeout=_seconds(seconds),
            )
        except SqsError as error:
            if error.lease_lost:
                return False
            raise
        return True

    def extend_lease(self, message: Message, seconds: float) -> bool:
        """Hide ``message`` for ``seconds`` (rounded up) from now; False when SQS says its
        lease is gone (deleted, dead-lettered or no longer in flight).

        SQS hides a message at most 12 hours after the receive that returned it, however
        often the lease is extended. Once the lease is within ``seconds`` +
        `CEILING_NOTICE_SECONDS` of that ceiling, it is extended as far as allowed (to the
        ceiling at most) and then `LeaseEnding` is raised with the seconds left: the task must
        stop before the message becomes visible to other workers. So it is too, with 0 seconds
        left, when SQS itself refuses an extension for that reason (a message this queue
        object did not receive).
        """
        want = _seconds(seconds)
        left = self.lease_time_left(message)
        if left is not None and left < 1:
            raise LeaseEnding(_ceiling_text(message), 0)
        give = want if left is None else min(want, math.floor(left))
        try:
            kept = self._change_visibility(message.handle, give)
        except SqsError as error:
            if error.beyond_ceiling:
                raise LeaseEnding(_ceiling_text(message), 0) from None
            raise
        if not kept:
            self._forget(message.handle)
            return False
        if left is not None and want + CEILING_NOTICE_SECONDS > left:
            raise LeaseEnding(_ceiling_text(message), math.floor(left))
        return True

    def delete(self, message: Message) -> None:
        """Delete ``message`` for good; a handle whose lease is gone is not an error."""
        try:
            self._call(
                "DeleteMessage",
                self._client.delete_message,
                QueueUrl=self.queue_url,
                ReceiptHandle=message.handle,
            )
        except SqsError as error:
            if not error.lease_lost:
                raise
        self._forget(message.handle)

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None:
        """Make ``message`` visible again after ``delay_seconds`` (rounded up).

        SQS cannot keep ``error`` (the worker stores failures in storage); a handle whose
        lease is gone is not an error. A delay past SQS's 12-hour ceiling on the lease ends
        at the ceiling (the message becomes visible then, sooner than asked).
        """
        left = self.lease_time_left(message)
        if left is not None:
            delay_seconds = min(delay_seconds, max(math.floor(left), 0))
        try:
            self._change_visibility(message.handle, delay_seconds)
        except SqsError as failure:
            if not failure.beyond_ceiling:
                raise
        self._forget(message.handle)

    # -- counts ----------------------------------------------------------------------------

    def _attributes(self, queue_url: str) -> dict[str, int]:
        response = self._call(
            "GetQueueAttributes",
            self._client.get_queue_attributes,
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes")
        if not isinstance(attributes, dict):
            # SQS always answers the attributes asked for; empty counts instead would read
            # as a drained queue (and the monitor would tear the run down).
            raise SqsError(
                f"SQS GetQueueAttributes on queue {_queue_name(queue_url)} failed: the answer "
                f"has no attributes ({_NOT_AWS_HINT})"
            )
        return {name: int(value) for name, value in attributes.items()}

    def counts(self) -> QueueCounts:
        """SQS's approximate counts: visible includes delayed messages (they will be
        visible without anyone acting), in flight is NotVisible, dead is every message of
        the dead-letter queue."""
        job = self._attributes(self.queue_url)
        dead = self._attributes(self.dead_letter_queue_url)
        return QueueCounts(
            visible=job.get("ApproximateNumberOfMessages", 0)
            + job.get("ApproximateNumberOfMessagesDelayed", 0),
            in_flight=job.get("ApproximateNumberOfMessagesNotVisible", 0),
            dead=sum(dead.values()),
        )

    # -- dead letters ----------------------------------------------------------------------

    def _read_dead(self) -> list[dict[str, Any]]:
        """Receive every dead message (hidden while the listing lasts), in first-receive
        order, each with its newest receipt handle.

        A receive returns at most 10 messages, so the listing hides them for as long as it
        may take (`listing_visibility` of the dead-letter queue's depth): were the first ones
        to show again meanwhile, a batch of them alone would look like the end. It ends on
        an empty receive, or after `QUIET_BATCHES` in a row bring no message it had not
        seen; a message received again keeps its newest handle (an older one may delete
        nothing: "If you use an old ReceiptHandle, the request will succeed, but the message
        might not be deleted", DeleteMessage). A queue deeper than SQS lets one reader hold
        in flight (`IN_FLIGHT_LIMIT`) cannot be read whole: `SqsError`, rather than a part
        of it taken for all."""
        depth = sum(self._attributes(self.dead_letter_queue_url).values())
        hidden_for = listing_visibility(depth)
        seen: dict[str, dict[str, Any]] = {}
        quiet = 0
        while quiet < QUIET_BATCHES:
            batch = self._receive_raw(self.dead_letter_queue_url, BATCH_SIZE, hidden_for)
            if not batch:
                break
            quiet = 0 if any(raw["MessageId"] not in seen for raw in batch) else quiet + 1
            for raw in batch:
                seen[raw["MessageId"]] = raw  # the newest handle (dicts keep first order)
        if depth > len(seen) >= IN_FLIGHT_LIMIT - IN_FLIGHT_MARGIN:
            # Stopped by SQS's in-flight cap, not by the end: a partial listing would have
            # the dead letters left out taken for tasks that left the queue unseen.
            self._show_dead(list(seen.values()))
            raise SqsError(
                f"SQS dead-letter queue {_queue_name(self.dead_letter_queue_url)}: holds about "
                f"{depth:,} messages, and SQS lets one reader hold at most about "
                f"{IN_FLIGHT_LIMIT:,} in flight, so ds cannot read them all at once. Fix: make "
                "it smaller first (the SQS console's 'Start DLQ redrive' sends them back to "
                "the job queue; a purge drops them, while ds's records of their failures "
                "stay), then run the command again"
            )
        return list(seen.values())

    def _show_dead(self, messages: Sequence[dict[str, Any]]) -> None:
        """Make dead messages read by `_read_dead` visible again at once.

        Best effort: a message this fails for becomes visible on its own when the short
        listing lease ends, so a failure here must not hide the caller's result or error.
        """
        for chunk in chunks_of_ten(messages):
            with suppress(SqsError):
                self._call(
                    "ChangeMessageVisibilityBatch",
                    self._client.change_message_visibility_batch,
                    QueueUrl=self.dead_letter_queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": raw["ReceiptHandle"],
                            "VisibilityTimeout": 0,
                        }
                        for i, raw in enumerate(chunk)
                    ],
                )

    def _dead_task(self, raw: dict[str, Any]) -> DeadTask:
        message = self._message(raw)
        # Reading a dead message is a receive, which SQS counts: the count before this
        # listing is one less, and a message dead-lettered by the redrive policy was
        # received max_receive_count times however often it has been listed since.
        count = min(max(message.receive_count - 1, 0), self.max_receive_count)
        return DeadTask(task_id=message.task_id, body=message.body, receive_count=count, error="")

    def list_dead(self) -> list[DeadTask]:
        """Every message of the dead-letter queue, which keeps them all.

        Messages are received once each (hidden for `LIST_VISIBILITY_SECONDS` while the
        listing runs) and made visible again before returning. ``error`` is empty: SQS
        keeps none.
        """
        messages = self._read_dead()
        try:
            return [self._dead_task(raw) for raw in messages]
        finally:
            self._show_dead(messages)

    def redrive(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead messages (all, or those whose task id is in ``task_ids``) back to the
        job queue with a fresh receive count; returns how many moved.

        Each message is sent to the job queue (same body and attributes) before it is
        deleted from the dead-letter queue, so a failure can duplicate a task but never
        lose one. Messages not moved are made visible again in the dead-letter queue.
        """
        if task_ids is not None and len(task_ids) == 0:
            return 0
        wanted = None if task_ids is None else set(task_ids)
        messages = self._read_dead()
        chosen = [raw for raw in messages if wanted is None or self._message(raw).task_id in wanted]
        moved: set[str] = set()
        try:
            for chunk in _batches(chosen, _resend_entry):
                sent_indexes, failures = self._send_entries(
                    self.queue_url, [_resend_entry(raw) for raw in chunk]
                )
                sent = [chunk[index] for index in sent_indexes]
                if sent:
                    self._delete_dead(sent)
                    moved.update(raw["MessageId"] for raw in sent)
                if failures:
                    raise SqsError(
                        f"SQS redrive to queue {_queue_name(self.queue_url)}: {len(failures)} "
                        f"dead messages could not be sent back ({_reasons(failures)}); they "
                        f"stay in the dead-letter queue and {len(moved)} were moved"
                    )
        finally:
            self._show_dead([raw for raw in messages if raw["MessageId"] not in moved])
        return len(moved)

    def drop_dead(self, task_ids: Sequence[str]) -> int:
        """Delete every copy of the given tasks from the dead-letter queue; returns how many
        copies. The others are made visible again."""
        wanted = set(task_ids)
        if not wanted:
            return 0
        messages = self._read_dead()
        chosen = [raw for raw in messages if self._message(raw).task_id in wanted]
        dropped: set[str] = set()
        try:
            for chunk in chunks_of_ten(chosen):
                self._delete_dead(chunk)
                dropped.update(raw["MessageId"] for raw in chunk)
        finally:
            self._show_dead([raw for raw in messages if raw["MessageId"] not in dropped])
        return len(dropped)

    def _delete_dead(self, messages: Sequence[dict[str, Any]]) -> None:
        response = self._call(
            "DeleteMessageBatch",
            self._client.delete_message_batch,
            QueueUrl=self.dead_letter_queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]}
                for i, raw in enumerate(messages)
            ],
        )
        failed = response.get("Failed", [])
        if failed:
            raise SqsError(
                f"SQS DeleteMessageBatch on queue {_queue_name(self.dead_letter_queue_url)}: "
                f"{len(failed)} redriven messages could not be removed from the dead-letter "
                f"queue ({failed[0].get('Code', '?')}: {failed[0].get('Message', '')}); they "
                "are in both queues now: delete them from the dead-letter queue by hand"
            )

    # -- purge -----------------------------------------------------------------------------

    def purge(self) -> None:
        """Delete every message of the job queue (PurgeQueue); the dead-letter queue stays.

        SQS allows one purge per queue every 60 seconds: during that time, the visible
        messages are received and deleted instead (the running purge takes the others).
        """
        try:
            self._call("PurgeQueue", self._client.purge_queue, QueueUrl=self.queue_url)
        except SqsError as error:
            if error.code != "PurgeQueueInProgress":
                raise
            self._delete_visible()

    def _delete_visible(self) -> None:
        while batch := self._receive_raw(self.queue_url, BATCH_SIZE, LIST_VISIBILITY_SECONDS):
            self._call(
                "DeleteMessageBatch",
                self._client.delete_message_batch,
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]}
                    for i, raw in enumerate(batch)
                ],
            )
