"""Ships a running task's log file to CloudWatch Logs as it grows.

The worker writes each task's output to a file (the runner appends to it); while the task
runs, `CloudWatchTaskLog` tails that file and sends new lines to a log stream, so
`ds logs TASK` and the console show progress live, not only when the task ends.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from distributed_something.backends.aws.errors import error_code
from distributed_something.errors import InputError
from distributed_something.secrets_scan import redact

log = logging.getLogger("ds.task_logs")

#: CloudWatch Logs: a stream name has 1–512 characters and no ':' or '*'.
MAX_STREAM_NAME = 512
# ':' and '*' are refused by CloudWatch; control characters would garble the console.
# Each becomes '.', as the family's Fiji worker did for '*'.
_NOT_IN_STREAM_NAMES = re.compile(r"[:*\x00-\x1f\x7f]")

#: PutLogEvents limits: events per call, bytes per call (message bytes + 26 per event),
#: bytes per event, and the time span of one call.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 262_144 - EVENT_OVERHEAD
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000

_READ_CHUNK = 1 << 20


def split_message(text: str, limit: int = MAX_EVENT_BYTES) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        # Back off to a character boundary (continuation bytes are 0b10xxxxxx).
        while end < len(data) and end > start and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


def batches(events: Iterable[tuple[int, str]]) -> Iterator[list[dict[str, Any]]]:
    """Chronological ``(timestamp ms, message)`` events grouped into PutLogEvents calls.

    Each batch has at most 10,000 events, at most 1 MiB (message bytes + 26 per event) and
    spans at most 24 hours; events keep their order. A message longer than one event allows
    must be split before (`split_message`).
    """
    batch: list[dict[str, Any]] = []
    size = 0
    for timestamp, message in events:
        cost = len(message.encode("utf-8")) + EVENT_OVERHEAD
        if batch and (
            len(batch) >= MAX_BATCH_EVENTS
            or size + cost > MAX_BATCH_BYTES
            or timestamp - batch[0]["timestamp"] >= MAX_BATCH_SPAN_MS
        ):
            yield batch
            batch, size = [], 0
        batch.append({"timestamp": timestamp, "message": message})
        size += cost
    if batch:
        yield batch


def family_stream_name(body: Mapping[str, Any]) -> str | None:
    """The name the family's worker gave the log stream of the task with this message body,
    or None when its job format had none.

    - DCP (``Metadata`` as ``"k=v,k=v"`` or a ``--print-groups`` dict): cp-worker.py's
      metadata id, the values joined with ``-`` (``Plate1-A01``), or ``output_structure``
      with each key replaced by its value (``Plate1/A01``);
    - DF (``Metadata`` beside ``shared_metadata`` or ``output_file_location``): fiji-worker.py's
      ``k='v', k='v'``;
    - DOZC (``plate``): the plate's name, as B2R-worker.py;
    - DS ``group`` and CSV rows: None (the DS template named no stream).

    A value the family's worker could not have read either (a malformed ``Metadata``) gives
    None. The name is as the family wrote it: `task_stream_name` makes it a valid one.
    """
    # Imported here: the recipe module is large and only this needs it.
    from distributed_something.recipes.cellprofiler import metadata_id, parse_metadata

    if "Metadata" in body:
        metadata = body["Metadata"]
        if "shared_metadata" in body or "output_file_location" in body:
            if not isinstance(metadata, Mapping) or not metadata:
                return None
            return ", ".join(f"{key}='{value}'" for key, value in metadata.items())
        try:
            pairs = parse_metadata(metadata)
        except InputError:
            return None
        structure = body.get("output_structure")
        return metadata_id(pairs, structure if isinstance(structure, str) else "")
    if "plate" in body:
        plate = body["plate"]
        if isinstance(plate, Mapping):
            plate = plate.get("name")
        if isinstance(plate, bool) or not isinstance(plate, str | int):
            return None
        return str(plate)
    return None


def task_stream_name(task_id: str, attempt: int, body: Mapping[str, Any] | None = None) -> str:
    """The log stream of one attempt of a task: ``<name>/<task id>-<attempt>``, where
    ``<name>`` is the family's name for the task (`family_stream_name` of its message
    ``body``), else ``<task id>-<attempt>`` (attempt as 4 digits).

    The task id and attempt make every attempt's stream its own, across runs too. The
    name is made valid for CloudWatch: ':', '*' and control characters become '.', and it
    is cut so the whole stays within 512 characters.
    """
    own = f"{task_id}-{attempt:04d}"
    name = family_stream_name(body) if body is not None else None
    if not name:
        return own[:MAX_STREAM_NAME]
    clean = _NOT_IN_STREAM_NAMES.sub(".", name).strip()
    clean = clean[: max(MAX_STREAM_NAME - len(own) - 1, 0)].rstrip("/")
    return f"{clean}/{own}" if clean else own[:MAX_STREAM_NAME]


class CloudWatchTaskLog:
    """While the ``with`` block runs, the lines appended to ``path`` go to the CloudWatch Logs
    stream ``group``/``stream``.

    On entry the stream is created (an existing one is fine; the group must exist — a
    missing group is logged and nothing is shipped). A daemon thread reads the new complete
    lines every ``interval`` seconds and sends them with PutLogEvents, in order, within the
    API's limits (see `batches`); each line is stamped with the time it was read. On exit
    the rest of the file — including a last line without a newline — is sent.

    Nothing here ever raises into the task: a failed call is logged, its lines are tried
    again on the next round up to ``max_attempts`` rounds, then dropped and counted in
    ``lines_dropped``; if a call still hangs ``exit_timeout`` seconds after the block ends,
    the rest is not shipped. Blank lines are not sent (CloudWatch rejects empty messages).
    """

    def __init__(
        self,
        logs_client: Any,
        group: str,
        stream: str,
        path: Path,
        *,
        interval: float = 2.0,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        exit_timeout: float = 30.0,
    ) -> None:
        self.logs = logs_client
        self.group = group
        self.stream = stream
        self.path = path
        self.interval = interval
        self.max_attempts = max(1, max_attempts)
        self.clock = clock
        self.exit_timeout = exit_timeout
        #: lines accepted by CloudWatch / given up on
        self.lines_shipped = 0
        self.lines_dropped = 0
        self._enabled = False
        self._created = False
        self._offset = 0
        self._partial = b""
        self._last_ts = 0
        self._pending: list[tuple[int, str]] = []
        self._failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ds-task-log", daemon=True)

    # context -------------------------------------------------------------------------------
    def __enter__(self) -> CloudWatchTaskLog:
        # The stream is made with the first lines to send (`_send`), not here: CreateLogStream
        # is limited to 50 a second per account and region, and a fleet of short tasks
        # would wait on it before each command (and a task that prints nothing needs none).
        self._enabled = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.exit_timeout)
        if not self._enabled:
            return
        if self._thread.is_alive():
            # A call hangs (CloudWatch unreachable): the task must not wait for its log.
            log.warning(
                "task log %s/%s: still sending after %.0fs; the rest is not shipped",
                self.group,
                self.stream,
                self.exit_timeout,
            )
            return
        try:
            with self._lock:
                self._read_new(final=True)
                self._send(final=True)
        except Exception as exc:  # noqa: BLE001 - a lost log line must never fail a task
            log.warning("task log %s/%s: final shipping failed: %s", self.group, self.stream, exc)

    # internals -----------------------------------------------------------------------------
    def _create_stream(self) -> bool:
        try:
            self.logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except Exception as exc:  # noqa: BLE001 - shipping is best effort, the task goes on
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "ResourceAlreadyExistsException":
                return True
            log.warning(
                "task log: could not create stream %s in log group %s (%s); "
                "the log is kept in storage only",
                self.stream,
                self.group,
                exc,
            )
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    self._read_new(final=False)
                    self._send(final=False)
            except Exception as exc:  # noqa: BLE001 - keep tailing whatever happened
                log.warning("task log %s/%s: %s", self.group, self.stream, exc)

    def _read_new(self, *, final: bool) -> None:
        """Turn the bytes appended since the last read into pending events."""
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, 2)
                if size < self._offset:  # truncated or replaced: start over
                    self._offset, self._partial = 0, b""
                fh.seek(self._offset)
                while True:
                    chunk = fh.read(_READ_CHUNK)
                    if not chunk:
                        break
                    self._offset += len(chunk)
                    self._add(self._partial + chunk)
        except FileNotFoundError:
            pass  # nothing written yet
        if final and self._partial:
            self._add(self._partial + b"\n")
        elif len(self._partial) > MAX_EVENT_BYTES:
            # A line that never ends (progress bars): ship what there is.
            self._add(self._partial + b"\n")

    def _add(self, data: bytes) -> None:
        *lines, self._partial = data.split(b"\n")
        timestamp = max(int(self.clock() * 1000), self._last_ts)
        self._last_ts = timestamp
        for raw in lines:
            # As the log ds stores: no credential the command printed (`redact`).
            text = redact(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if not text.strip():
                continue
            self._pending.extend((timestamp, piece) for piece in split_message(text))

    def _send(self, *, final: bool) -> None:
        if self._pending and not self._created:
            self._created = self._create_stream()
            if not self._created:  # said once; the lines stay in storage's copy only
                self.lines_dropped += len(self._pending)
                self._pending.clear()
                self._enabled = False
                self._stop.set()
                return
        while self._pending:
            batch = next(batches(self._pending))
            try:
                response = self.logs.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=batch
                )
            except Exception as exc:  # noqa: BLE001 - a lost log line must never fail a task
                self._failures += 1
                if not final and self._failures < self.max_attempts:
                    log.warning(
                        "task log %s/%s: sending %d lines failed (will retry): %s",
                        self.group,
                        self.stream,
                        len(batch),
                        exc,
                    )
                    return
                log.warning(
                    "task log %s/%s: dropped %d lines after failures: %s",
                    self.group,
                    self.stream,
                    len(batch),
                    exc,
                )
                self.lines_dropped += len(batch)
            else:
                rejected = response.get("rejectedLogEventsInfo") if response else None
                refused = rejected_count(rejected, len(batch)) if rejected else 0
                if refused:
                    log.warning("task log %s/%s: rejected %s", self.group, self.stream, rejected)
                self.lines_shipped += len(batch) - refused
                self.lines_dropped += refused
            self._failures = 0
            del self._pending[: len(batch)]


def rejected_count(info: dict[str, Any], sent: int) -> int:
    """How many of ``sent`` events PutLogEvents' ``rejectedLogEventsInfo`` says it refused:
    those before ``tooOldLogEventEndIndex`` / ``expiredLogEventEndIndex`` (exclusive) and
    from ``tooNewLogEventStartIndex`` on. Pure."""
    old_end = max(
        int(info.get("tooOldLogEventEndIndex", 0) or 0),
        int(info.get("expiredLogEventEndIndex", 0) or 0),
    )
    new_start = info.get("tooNewLogEventStartIndex")
    new_start = sent if new_start is None else int(new_start)
    old_end, new_start = min(max(old_end, 0), sent), min(max(new_start, 0), sent)
    return min(sent, old_end + (sent - new_start))


class CloudWatchLiveLog:
    """A running attempt's log read back from its CloudWatch stream (`task_stream_name`),
    for `ds logs -f`: each `read` returns the events since the last one, a line each."""

    def __init__(self, logs: Any, group: str, stream: str) -> None:
        self.logs, self.group, self.stream = logs, group, stream
        self._token: str | None = None

    @classmethod
    def of(
        cls, settings: Any, group: str, task_id: str, attempt: int, body: str | None
    ) -> CloudWatchLiveLog:
        """The live log of ``task_id``'s attempt ``attempt`` in ``group``; ``body`` (the
        task's message, JSON) gives the family's stream name."""
        from distributed_something.backends.aws.clients import client

        try:
            message = json.loads(body) if body is not None else None
        except ValueError:
            message = None
        stream = task_stream_name(task_id, attempt, message if isinstance(message, dict) else None)
        return cls(client("logs", settings), group, stream)

    #: The most GetLogEvents pages one `read` asks for (a guard against a token that never
    #: settles); the next `read` goes on from where this one stopped.
    MAX_PAGES = 100

    def read(self) -> str:
        lines: list[str] = []
        for _ in range(self.MAX_PAGES):
            request: dict[str, Any] = {
                "logGroupName": self.group,
                "logStreamName": self.stream,
                "startFromHead": True,
            }
            if self._token is not None:
                request["nextToken"] = self._token
            try:
                answer = self.logs.get_log_events(**request)
            except ClientError as exc:  # a stream not made yet: nothing to read
                if error_code(exc) == "ResourceNotFoundException":
                    return "".join(lines)
                raise
            lines += [event["message"].rstrip("\n") + "\n" for event in answer["events"]]
            # Only the token sent coming back marks the end of the stream: an empty or partly
            # full page may still be followed by more events (GetLogEvents).
            sent, self._token = self._token, answer.get("nextForwardToken", self._token)
            if self._token == sent:
                break
        return "".join(lines)

    def finish(self, stored: bytes) -> str:
        # The worker sends the rest of the file as the attempt ends: read to the end.
        return self.read()
