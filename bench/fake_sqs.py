"""A fake AWS endpoint on 127.0.0.1 that answers every API call after a fixed latency.

It speaks enough of two protocols for the benchmarks:

- SQS's JSON protocol (boto3 >= 1.34): ``POST /`` with ``X-Amz-Target: AmazonSQS.<Op>`` and
  a JSON body — CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage,
  SendMessageBatch, ReceiveMessage, DeleteMessage, DeleteMessageBatch,
  ChangeMessageVisibility, PurgeQueue. (Checked with a botocore ``before-send`` hook: boto3
  1.44 sends exactly these headers to the endpoint's root path.)
- S3's REST protocol, path style (what botocore uses for an IP endpoint): CreateBucket,
  PutObject, GetObject, HeadObject, DeleteObject, ListObjects (v1) and ListObjectsV2 with
  pagination (1,000 keys a page).

Every API call sleeps ``latency`` seconds (default 0.020) before answering, in its own
thread, so concurrent callers overlap exactly as they would against a remote service whose
round trip is that long. Calls are counted by operation. Administrative paths under
``/_fake/`` (stats, reset, latency, seeding S3 keys) are neither delayed nor counted.

Run it as ``python bench/fake_sqs.py [--port 0] [--latency 0.02]``: it prints
``READY <url>`` once listening. `FakeAwsServer` starts it as a subprocess (so the server's
own Python work does not compete with the client being measured for one interpreter lock)
and stops it by its pid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

DEFAULT_LATENCY = 0.020
ACCOUNT = "123456789012"


# -- state -----------------------------------------------------------------------------------


class _Queue:
    """Messages of one queue: visible ones in order, received ones by receipt handle."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.visible: dict[str, dict[str, Any]] = {}  # message id -> message (insertion order)
        self.in_flight: dict[str, tuple[float, dict[str, Any]]] = {}  # handle -> (until, msg)


class FakeState:
    """Queues, buckets and call counts; every method runs under one lock."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.queues: dict[str, _Queue] = {}
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        with self.lock:
            self.queues.clear()
            self.buckets.clear()
            self.calls.clear()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _attributes_md5(attributes: dict[str, Any]) -> str:
    """SQS's MD5 of message attributes (length-prefixed name, type, transport, value)."""
    out = b""
    for name in sorted(attributes):
        value = attributes[name]
        kind = str(value.get("DataType", "String"))
        out += struct.pack(">I", len(name.encode())) + name.encode()
        out += struct.pack(">I", len(kind.encode())) + kind.encode()
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            data = raw.encode() if isinstance(raw, str) else raw
            out += b"\x02" + struct.pack(">I", len(data)) + data
        else:
            data = str(value.get("StringValue", "")).encode()
            out += b"\x01" + struct.pack(">I", len(data)) + data
    return _md5(out)


# -- SQS -------------------------------------------------------------------------------------


class SqsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _queue_of(state: FakeState, params: dict[str, Any]) -> _Queue:
    url = str(params.get("QueueUrl", ""))
    name = url.rstrip("/").rsplit("/", 1)[-1]
    queue = state.queues.get(name)
    if queue is None:
        raise SqsError("AWS.SimpleQueueService.NonExistentQueue", f"no queue {name}")
    return queue


def _new_message(body: str, attributes: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "MessageId": str(uuid.uuid4()),
        "Body": body,
        "MessageAttributes": attributes or {},
        "ReceiveCount": 0,
    }


def _sent(message: dict[str, Any]) -> dict[str, Any]:
    out = {"MessageId": message["MessageId"], "MD5OfMessageBody": _md5(message["Body"].encode())}
    if message["MessageAttributes"]:
        out["MD5OfMessageAttributes"] = _attributes_md5(message["MessageAttributes"])
    return out


def _expire(queue: _Queue, now: float) -> None:
    for handle, (until, message) in list(queue.in_flight.items()):
        if until <= now:
            del queue.in_flight[handle]
            queue.visible[message["MessageId"]] = message


def sqs_call(state: FakeState, base_url: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """One SQS operation on ``state`` (called with the lock held)."""
    now = time.monotonic()
    if op == "CreateQueue":
        name = str(params["QueueName"])
        url = f"{base_url}/{ACCOUNT}/{name}"
        state.queues.setdefault(name, _Queue(name, url))
        return {"QueueUrl": url}
    if op == "GetQueueUrl":
        name = str(params["QueueName"])
        if name not in state.queues:
            raise SqsError("AWS.SimpleQueueService.NonExistentQueue", f"no queue {name}")
        return {"QueueUrl": state.queues[name].url}
    queue = _queue_of(state, params)
    _expire(queue, now)
    if op == "GetQueueAttributes":
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(len(queue.visible)),
                "ApproximateNumberOfMessagesNotVisible": str(len(queue.in_flight)),
                "ApproximateNumberOfMessagesDelayed": "0",
            }
        }
    if op == "SendMessage":
        message = _new_message(str(params["MessageBody"]), params.get("MessageAttributes"))
        queue.visible[message["MessageId"]] = message
        return _sent(message)
    if op == "SendMessageBatch":
        entries = params.get("Entries", [])
        if not 1 <= len(entries) <= 10:
            raise SqsError("AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "1 to 10")
        successful = []
        for entry in entries:
            message = _new_message(str(entry["MessageBody"]), entry.get("MessageAttributes"))
            queue.visible[message["MessageId"]] = message
            successful.append({"Id": entry["Id"], **_sent(message)})
        return {"Successful": successful, "Failed": []}
    if op == "ReceiveMessage":
        wanted = int(params.get("MaxNumberOfMessages", 1))
        visibility = float(params.get("VisibilityTimeout", 30))
        out = []
        for message_id in list(queue.visible)[:wanted]:
            message = queue.visible.pop(message_id)
            message["ReceiveCount"] += 1
            handle = uuid.uuid4().hex
            queue.in_flight[handle] = (now + visibility, message)
            item: dict[str, Any] = {
                "MessageId": message["MessageId"],
                "ReceiptHandle": handle,
                "Body": message["Body"],
                "MD5OfBody": _md5(message["Body"].encode()),
                "Attributes": {"ApproximateReceiveCount": str(message["ReceiveCount"])},
            }
            if message["MessageAttributes"]:
                item["MessageAttributes"] = message["MessageAttributes"]
            out.append(item)
        return {"Messages": out} if out else {}
    if op == "DeleteMessage":
        queue.in_flight.pop(str(params["ReceiptHandle"]), None)
        return {}
    if op == "DeleteMessageBatch":
        for entry in params.get("Entries", []):
            queue.in_flight.pop(str(entry["ReceiptHandle"]), None)
        return {"Successful": [{"Id": e["Id"]} for e in params.get("Entries", [])], "Failed": []}
    if op == "ChangeMessageVisibility":
        handle = str(params["ReceiptHandle"])
        if handle not in queue.in_flight:
            raise SqsError("AWS.SimpleQueueService.MessageNotInflight", "not in flight")
        _, message = queue.in_flight[handle]
        timeout = float(params.get("VisibilityTimeout", 0))
        if timeout <= 0:
            del queue.in_flight[handle]
            queue.visible[message["MessageId"]] = message
        else:
            queue.in_flight[handle] = (now + timeout, message)
        return {}
    if op == "PurgeQueue":
        queue.visible.clear()
        queue.in_flight.clear()
        return {}
    raise SqsError("InvalidAction", f"the fake SQS does not implement {op}")


# -- S3 --------------------------------------------------------------------------------------


def _list_xml(bucket: str, keys: dict[str, bytes], query: dict[str, list[str]], v2: bool) -> bytes:
    prefix = query.get("prefix", [""])[0]
    max_keys = min(int(query.get("max-keys", ["1000"])[0]), 1000)
    url_encode = query.get("encoding-type", [""])[0] == "url"
    if v2:
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
    else:
        after = query.get("marker", [""])[0]
    matching = sorted(k for k in keys if k.startswith(prefix) and k > after)
    page, truncated = matching[:max_keys], len(matching) > max_keys

    def enc(text: str) -> str:
        return escape(quote(text, safe="/") if url_encode else text)

    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<ListBucketResult>",  # botocore reads the elements by name, without a namespace
        f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>",
        f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>",
    ]
    if url_encode:
        parts.append("<EncodingType>url</EncodingType>")
    if v2:
        parts.append(f"<KeyCount>{len(page)}</KeyCount>")
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>")
    elif truncated:
        parts.append(f"<NextMarker>{enc(page[-1])}</NextMarker>")
    for key in page:
        data = keys[key]
        parts.append(
            f"<Contents><Key>{enc(key)}</Key><LastModified>2024-01-01T00:00:00.000Z"
            f'</LastModified><ETag>"{_md5(data)}"</ETag><Size>{len(data)}</Size>'
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def _s3_error(code: str, status: int) -> tuple[int, dict[str, str], bytes]:
    body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
    return status, {"Content-Type": "application/xml"}, body


def s3_call(
    state: FakeState, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> tuple[str, int, dict[str, str], bytes]:
    """One S3 operation: (operation name, status, headers, body)."""
    bucket, _, raw_key = path.lstrip("/").partition("/")
    key = unquote(raw_key)
    if not key:
        if method == "PUT":
            state.buckets.setdefault(bucket, {})
            return "CreateBucket", 200, {}, b""
        if bucket not in state.buckets:
            return ("ListObjects", *_s3_error("NoSuchBucket", 404))
        v2 = query.get("list-type", [""])[0] == "2"
        xml = _list_xml(bucket, state.buckets[bucket], query, v2)
        name = "ListObjectsV2" if v2 else "ListObjects"
        return name, 200, {"Content-Type": "application/xml"}, xml
    objects = state.buckets.get(bucket)
    if objects is None:
        return (f"{method} object", *_s3_error("NoSuchBucket", 404))
    if method == "PUT":
        objects[key] = body
        return "PutObject", 200, {"ETag": f'"{_md5(body)}"'}, b""
    if method == "DELETE":
        objects.pop(key, None)
        return "DeleteObject", 204, {}, b""
    if key not in objects:
        return ("GetObject" if method == "GET" else "HeadObject", *_s3_error("NoSuchKey", 404))
    data = objects[key]
    headers = {"ETag": f'"{_md5(data)}"', "Content-Length": str(len(data))}
    if method == "HEAD":
        return "HeadObject", 200, headers, b""
    return "GetObject", 200, headers, data


# -- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # Without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~40 ms to
    # every answer written in more than one send: a latency no real service has.
    disable_nagle_algorithm = True
    # A buffered writer (flushed after each request) sends headers and body together.
    wbufsize = 1 << 16
    state: FakeState
    base_url: str

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a benchmark's server prints nothing per request."""

    def handle_expect_100(self) -> bool:
        """Send "100 Continue" at once (botocore waits up to 1 s for it before a body)."""
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = self._read_chunked()
        return data

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name != "Content-Length":
                self.send_header(name, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _admin(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        state = self.state
        with state.lock:
            if path == "/_fake/stats":
                out: Any = dict(state.calls)
            elif path == "/_fake/reset":
                state.queues.clear()
                state.buckets.clear()
                state.calls.clear()
                out = {}
            elif path == "/_fake/latency":
                state.latency = float(query["seconds"][0])
                out = {"latency": state.latency}
            elif path == "/_fake/seed":
                # {"bucket": b, "objects": [[key, size], ...]}: objects of zero bytes' content
                # of the given size, made without API calls (setting up, not measuring).
                spec = json.loads(body)
                objects = state.buckets.setdefault(spec["bucket"], {})
                for key, size in spec["objects"]:
                    objects[key] = b"x" * int(size)
                out = {"objects": len(objects)}
            else:
                self._reply(404, {}, b"")
                return
        self._reply(200, {"Content-Type": "application/json"}, json.dumps(out).encode())

    def _handle(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        body = self._body()
        if split.path.startswith("/_fake/"):
            self._admin(split.path, query, body)
            return
        state = self.state
        target = self.headers.get("X-Amz-Target", "")
        time.sleep(state.latency)
        if target.startswith("AmazonSQS."):
            op = target.removeprefix("AmazonSQS.")
            with state.lock:
                state.calls[op] += 1
                try:
                    result = sqs_call(state, self.base_url, op, json.loads(body or b"{}"))
                    status, payload = 200, result
                except SqsError as error:
                    status = error.status
                    payload = {"__type": error.code, "message": str(error)}
            headers = {"Content-Type": "application/x-amz-json-1.0"}
            if status != 200:
                headers["x-amzn-query-error"] = f"{payload['__type']};Sender"
            self._reply(status, headers, json.dumps(payload).encode())
            return
        with state.lock:
            op, status, headers, data = s3_call(state, self.command, split.path, query, body)
            state.calls[op] += 1
        self._reply(status, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve(port: int, latency: float) -> None:
    """Serve on 127.0.0.1:``port`` (0: any free port) until killed; prints ``READY <url>``."""
    state = FakeState(latency)
    server = _Server(("127.0.0.1", port), _Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.state = state
    _Handler.base_url = url
    print(f"READY {url}", flush=True)
    server.serve_forever(poll_interval=0.5)


# -- client side -----------------------------------------------------------------------------

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def isolate_aws_environment(endpoint_url: str, scratch: Path) -> None:
    """Point every boto3 client of this process at ``endpoint_url`` with fake credentials and
    no real AWS config files, so nothing can reach anything but 127.0.0.1."""
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    os.environ["AWS_CONFIG_FILE"] = str(scratch / "no-aws-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "no-aws-credentials")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


def submit_backend(project: Any, settings: Any, url: str, dead: str, bucket: str) -> Any:
    """The aws `Backend` `ds submit` needs, on the fake endpoint: the queues at ``url`` and
    ``dead``, the bucket ``bucket`` (created), and a fresh run state saved in it. Submit
    never touches compute or the provisioner, so they are left out."""
    from distributed_something.backends import Backend
    from distributed_something.backends.aws.clients import client
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.backends.aws.sqs_queue import SqsQueue
    from distributed_something.state import new_state, save_state

    client("s3", settings).create_bucket(Bucket=bucket)
    storage = S3Storage(settings, bucket)
    save_state(project, new_state(project, "aws", dead_at_start=0), storage)
    return Backend(
        name="aws",
        queue=SqsQueue(settings, url, dead, max_receive_count=3),
        storage=storage,
        compute=None,  # type: ignore[arg-type]
        bucket=lambda name: storage,
        provisioner=None,  # type: ignore[arg-type]
    )


class FakeAwsServer:
    """The fake endpoint as a subprocess: ``with FakeAwsServer(0.02) as server: server.url``."""

    def __init__(self, latency: float = DEFAULT_LATENCY) -> None:
        self.latency = latency
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FakeAwsServer:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--latency", str(self.latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self._proc.kill()
            raise RuntimeError(f"fake AWS server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def _admin(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, int]:
        """API calls answered so far, by operation."""
        calls: dict[str, int] = self._admin("/_fake/stats")
        return calls

    def reset(self) -> None:
        """Forget every queue, bucket and count."""
        self._admin("/_fake/reset")

    def set_latency(self, seconds: float) -> None:
        """Change the per-call latency (e.g. 0 while seeding through the API)."""
        self._admin(f"/_fake/latency?seconds={seconds}")

    def seed(self, bucket: str, objects: list[tuple[str, int]]) -> None:
        """Create ``(key, size)`` objects in ``bucket`` without API calls."""
        self._admin("/_fake/seed", {"bucket": bucket, "objects": objects})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    args = parser.parse_args()
    serve(args.port, args.latency)


if __name__ == "__main__":
    main()
