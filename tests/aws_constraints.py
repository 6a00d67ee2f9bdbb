"""The API reference's limits on every AWS request the code builds, checked where moto does not.

botocore checks a request's types, its required members and minimums before sending it; moto
then accepts nearly anything. AWS itself refuses a request whose string is longer than the
model's ``max``, whose value is not one of an ``enum``'s, that does not match a ``pattern``,
or whose list or number is above its ``max``. `violations` checks a request's parameters
against those constraints of botocore's service model (the API reference's own), and
`watch` makes a client record every violation of its requests (``before-parameter-build``:
the parameters as the code passed them).

A pattern must match the whole value, as AWS's validators apply them (a log group name
with a space is refused although ``[\\.\\-_/#A-Za-z0-9]+`` matches part of it). Patterns
that Python's ``re`` cannot compile (``\\p{...}`` classes) are not checked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any


@functools.cache
def _pattern(text: str) -> re.Pattern[str] | None:
    try:
        # AWS's validators are Java's: \w and \d are ASCII there, unlike Python's.
        return re.compile(text, re.DOTALL | re.ASCII)
    except re.error:
        return None


#: Limits the API reference states in its text but botocore's model does not (service,
#: operation, path of the member ("[]": each item of a list)) -> (minimum, maximum): of a
#: number, or of a list's or a map's length. Only calls ds makes.
DOCUMENTED: dict[tuple[str, str, str], tuple[int, int]] = {
    ("sqs", "SendMessageBatch", "Entries"): (1, 10),
    ("sqs", "SendMessageBatch", "Entries[].DelaySeconds"): (0, 900),
    ("sqs", "SendMessage", "DelaySeconds"): (0, 900),
    ("sqs", "SendMessage", "MessageAttributes"): (0, 10),
    ("sqs", "SendMessageBatch", "Entries[].MessageAttributes"): (0, 10),
    ("sqs", "DeleteMessageBatch", "Entries"): (1, 10),
    ("sqs", "ChangeMessageVisibilityBatch", "Entries"): (1, 10),
    ("sqs", "ChangeMessageVisibilityBatch", "Entries[].VisibilityTimeout"): (0, 43200),
    ("sqs", "ChangeMessageVisibility", "VisibilityTimeout"): (0, 43200),
    ("sqs", "ReceiveMessage", "MaxNumberOfMessages"): (1, 10),
    ("sqs", "ReceiveMessage", "WaitTimeSeconds"): (0, 20),
    ("sqs", "ReceiveMessage", "VisibilityTimeout"): (0, 43200),
    ("ecs", "DescribeTasks", "tasks"): (1, 100),
    ("ecs", "DescribeServices", "services"): (1, 10),
    ("ecs", "DescribeContainerInstances", "containerInstances"): (1, 100),
    ("ecs", "ListTasks", "maxResults"): (1, 100),
    ("ecs", "ListServices", "maxResults"): (1, 100),
    ("s3", "DeleteObjects", "Delete.Objects"): (1, 1000),
    ("cloudwatch", "PutMetricData", "MetricData"): (1, 1000),
}

#: PutLogEvents: a batch's size is the sum of its messages' UTF-8 bytes plus 26 each.
LOG_BATCH_BYTES = 1_048_576

#: IAM's limit on a role's inline policies together (characters, whitespace not counted).
ROLE_POLICY_CHARACTERS = 10_240

#: SendMessage(Batch): a message's body and its attributes (each one's name, type and value)
#: count against the queue's MaximumMessageSize, at most 1 MiB (MessageAttributeValue:
#: "All parts of the message attribute, including Name, Type, and Value, are part of the
#: message size restriction"); a batch's messages together too.
SQS_MESSAGE_BYTES = 1_048_576
#: The characters a message body may hold (SendMessage: "#x9 | #xA | #xD | #x20 to #xD7FF |
#: #xE000 to #xFFFD | #x10000 to #x10FFFF"); any other is refused.
SQS_BODY_CHARACTERS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def violations(operation: Any, params: dict[str, Any]) -> list[str]:
    """What in ``params`` (an operation's input as passed to the client) AWS would refuse
    under ``operation``'s input shape (botocore's OperationModel) and the limits the API
    reference states beside it (`DOCUMENTED`, `LOG_BATCH_BYTES`): one line each, naming the
    member's path, the value's size and the limit."""
    found: list[str] = []
    shape = operation.input_shape
    if shape is not None:
        _check(shape, params, operation.name, found)
    service = operation.service_model.service_name
    for (svc, name, path), (low, high) in DOCUMENTED.items():
        if (svc, name) != (service, operation.name):
            continue
        for where, value in _at(params, path.replace("[]", ".[]").split("."), name):
            size = len(value) if isinstance(value, (list, tuple, dict)) else value
            if isinstance(size, int) and not low <= size <= high:
                found.append(f"{where}: {size}, from {low} to {high} (API reference)")
    if service == "sqs" and operation.name in ("SendMessage", "SendMessageBatch"):
        found += _sqs_message_problems(operation.name, params)
    if (service, operation.name) == ("iam", "PutRolePolicy"):
        # "Role policy size cannot exceed 10,240 characters" (whitespace not counted; one
        # inline policy per role is all ds writes).
        text = str(params.get("PolicyDocument", ""))
        size = len("".join(text.split()))
        if size > ROLE_POLICY_CHARACTERS:
            found.append(f"PutRolePolicy.PolicyDocument: {size} characters, at most 10240")
    if (service, operation.name) == ("logs", "PutLogEvents"):
        events = params.get("logEvents") or []
        size = sum(len(str(e.get("message", "")).encode()) + 26 for e in events)
        if size > LOG_BATCH_BYTES:
            found.append(f"PutLogEvents.logEvents: {size} bytes, at most {LOG_BATCH_BYTES}")
    return found


def _sqs_message_problems(name: str, params: dict[str, Any]) -> list[str]:
    """`SQS_MESSAGE_BYTES` and `SQS_BODY_CHARACTERS` kept by each message of a send."""
    entries = params.get("Entries") or [] if name == "SendMessageBatch" else [params]
    found: list[str] = []
    total = 0
    for i, entry in enumerate(entries):
        where = f"{name}.Entries[{i}]" if name == "SendMessageBatch" else name
        body = str(entry.get("MessageBody", ""))
        size = len(body.encode("utf-8", "surrogatepass"))
        for key, value in (entry.get("MessageAttributes") or {}).items():
            size += len(key.encode()) + len(str(value.get("DataType", "")).encode())
            size += len(str(value.get("StringValue", "")).encode())
            size += len(value.get("BinaryValue", b""))
        total += size
        if size > SQS_MESSAGE_BYTES:
            found.append(f"{where}: {size} bytes with its attributes, at most {SQS_MESSAGE_BYTES}")
        if SQS_BODY_CHARACTERS.fullmatch(body) is None:
            bad = next(c for c in body if SQS_BODY_CHARACTERS.fullmatch(c) is None)
            found.append(f"{where}.MessageBody: holds U+{ord(bad):04X}, which SQS refuses")
    if name == "SendMessageBatch" and total > SQS_MESSAGE_BYTES:
        found.append(f"{name}: {total} bytes in all, at most {SQS_MESSAGE_BYTES}")
    return found


def _at(value: Any, parts: list[str], where: str) -> list[tuple[str, Any]]:
    """The values at the member path ``parts`` ("[]": every item) of ``value``."""
    if not parts:
        return [(where, value)]
    head, rest = parts[0], parts[1:]
    if head == "[]":
        if not isinstance(value, (list, tuple)):
            return []
        return [x for i, item in enumerate(value) for x in _at(item, rest, f"{where}[{i}]")]
    if not isinstance(value, dict) or value.get(head) is None:
        return []
    return _at(value[head], rest, f"{where}.{head}")


def _check(shape: Any, value: Any, path: str, found: list[str]) -> None:
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                _check(member, value[name], f"{path}.{name}", found)
        return
    if kind == "list" and isinstance(value, (list, tuple)):
        if "max" in meta and len(value) > meta["max"]:
            found.append(f"{path}: {len(value)} items, at most {meta['max']}")
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", found)
        return
    if kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            found.append(f"{path}: {len(value)} entries, at most {meta['max']}")
        for key, item in value.items():
            _check(shape.key, key, f"{path}<key {key!r}>", found)
            _check(shape.value, item, f"{path}[{key!r}]", found)
        return
    if kind == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            found.append(f"{path}: {len(value)} characters, at most {meta['max']}")
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            found.append(f"{path}: {value!r} is not one of {sorted(enum)}")
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and pattern.fullmatch(value) is None:
            found.append(f"{path}: {value[:80]!r} does not match {meta['pattern']!r}")
        return
    if kind in ("integer", "long") and isinstance(value, int) and not isinstance(value, bool):
        if "max" in meta and value > meta["max"]:
            found.append(f"{path}: {value}, at most {meta['max']}")
        return
    blob = kind == "blob" and isinstance(value, (bytes, bytearray, str))
    if blob and "max" in meta and len(value) > meta["max"]:
        found.append(f"{path}: {len(value)} bytes, at most {meta['max']}")


def watch(client: Any, report: Callable[[str], None]) -> None:
    """Call ``report`` with each violation (prefixed by the service's name) of every request
    ``client`` builds from now on."""

    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        for line in violations(model, params):
            report(f"{service} {line}")

    client.meta.events.register("before-parameter-build.*.*", check)
