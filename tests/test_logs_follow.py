"""`ds logs -f` readers: the CloudWatch stream of a running attempt (on moto), and the
follower's rounds over attempts on the local backend's records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.task_logs import CloudWatchLiveLog, task_stream_name
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.records import Attempt, RunRecords
from distributed_something.usecases.follow import Follower, ScratchLiveLog

REGION = "us-east-1"
GROUP = "FollowApp"


def put(logs: object, stream: str, *messages: str) -> None:
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)  # type: ignore[attr-defined]


def test_cloudwatch_live_log_reads_each_event_once_in_order(aws: str) -> None:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=GROUP)
    body = json.dumps({"Metadata": {"Metadata_Plate": "P1", "Metadata_Well": "A01"}})
    live = CloudWatchLiveLog.of(AwsSettings(REGION), GROUP, "abc123", 2, body)
    # The family's stream name for the group, then the task and attempt.
    assert live.stream == task_stream_name("abc123", 2, json.loads(body))
    assert live.stream.endswith("/abc123-0002") and "P1" in live.stream

    assert live.read() == ""  # the worker has not made the stream yet
    logs.create_log_stream(logGroupName=GROUP, logStreamName=live.stream)
    put(logs, live.stream, "one", "two")
    assert live.read() == "one\ntwo\n"
    assert live.read() == ""  # nothing new: nothing printed twice
    put(logs, live.stream, "three")
    assert live.finish(b"ignored: the stream is the source") == "three\n"


def test_scratch_live_log_streams_whole_lines_then_the_stored_rest(tmp_path: Path) -> None:
    worker = tmp_path / "w1-0"
    worker.mkdir()
    log = worker / "task.log"
    live = ScratchLiveLog(tmp_path, "t1", 1)
    assert live.read() == ""  # no worker runs it yet
    log.write_bytes(b"ds: task t1 attempt 1 on w\nfirst\nsec")
    assert live.read() == "ds: task t1 attempt 1 on w\nfirst\n"  # the half line waits
    stored = b"ds: task t1 attempt 1 on w\nfirst\nsecond\nlast\n"
    log.write_bytes(b"ds: task t2 attempt 1 on w\n")  # the worker moved on
    assert live.read() == ""
    assert live.finish(stored) == "second\nlast\n"


def test_follower_prints_attempts_then_stops_at_the_final_outcome(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    records = RunRecords(storage, "App", "run1")
    printed: list[str] = []
    live: dict[int, list[str]] = {1: ["a1 live\n"], 2: ["a2 live\n"]}

    class Fake:
        def __init__(self, attempt: int) -> None:
            self.attempt = attempt

        def read(self) -> str:
            return live[self.attempt].pop(0) if live[self.attempt] else ""

        def finish(self, stored: bytes) -> str:
            return f"[stored {len(stored)} bytes]\n"

    follower = Follower(records, storage, "t1", Fake, printed.append)
    assert follower.poll() is True and printed == []  # pending: keeps waiting
    first = Attempt("t1", 1, "m1", "w", started_at=100.0)
    records.open_attempt(first)
    assert follower.poll() is True and "a1 live\n" in printed
    first.outcome, first.ended_at = "failed", 101.0
    records.close_attempt(first)
    storage.put_bytes(records.log_key("t1", 1, 100.0), b"x" * 7)
    assert follower.poll() is True  # failed: a retry comes
    assert printed[-2:] == ["[stored 7 bytes]\n", "ds: attempt 1 ended: failed\n"]
    second = Attempt("t1", 2, "m1", "w", started_at=102.0)
    records.open_attempt(second)
    follower.poll()
    second.outcome, second.ended_at = "done", 103.0
    records.close_attempt(second)
    assert follower.poll() is False  # done: following ends
    text = "".join(printed)
    assert text.count("a2 live") == 1 and text.endswith("ds: attempt 2 ended: done\n")


@pytest.mark.parametrize("outcome", ["done", "dead"])
def test_following_an_ended_task_prints_nothing_more(tmp_path: Path, outcome: str) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    records = RunRecords(storage, "App", "run1")
    attempt = Attempt("t1", 1, "m1", "w", started_at=100.0)
    records.open_attempt(attempt)
    attempt.outcome, attempt.ended_at = outcome, 101.0
    records.close_attempt(attempt)
    printed: list[str] = []
    follower = Follower(
        records, storage, "t1", lambda n: ScratchLiveLog(tmp_path, "t1", n), printed.append
    )
    follower.skip_existing()
    assert follower.poll() is False and printed == []
