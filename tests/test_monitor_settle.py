"""The monitor's settling of tasks that left the queue without an outcome (monitor/settle.py),
where two monitors of one run act on it: `ds monitor` beside the unattended monitor, or one
EventBridge event delivered twice, or two `ds monitor`s. The conditional writes of the
records decide: S3's (on moto), and the local records' (SQLite)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.interfaces.queue import Queue
from distributed_something.jobs.model import Task
from distributed_something.ledger import read_ledger
from distributed_something.monitor.settle import NO_BODY, SLOT_STALE_SECONDS, settle
from distributed_something.records import ManifestEntry, RunRecords
from testkit import age_s3, moto_queue_and_bucket

NOW = 1_800_000_000.0
Lost = Callable[[list[str]], tuple[Queue, RunRecords]]


@pytest.fixture(params=["local", "aws"])
def lost_tasks(request: pytest.FixtureRequest, tmp_path: Path) -> Lost:
    """Makes a run whose tasks ``names`` (their ids: `ID`) left the queue unseen: in the
    manifest, with no record and no message; on the local queue and records, or on moto's
    SQS and S3."""

    def make(names: list[str]) -> tuple[Queue, RunRecords]:
        if request.param == "aws":
            request.getfixturevalue("aws")
            queue, storage = moto_queue_and_bucket("Settle")
        else:
            queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3)
            storage = LocalBucket(
                FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite")
            )
        records = RunRecords(storage, "T", "r1")
        records.write_manifest("m", [ManifestEntry(ID[name], {"name": name}) for name in names])
        return queue, records

    return make


#: Task name -> id.
ID = {name: Task({"group": {"name": name}}).id for name in ("a", "b")}


def messages(queue: Queue) -> list[str]:
    """The names of the tasks whose messages a receive gets now."""
    got = queue.receive(10, 30)
    names = {v: k for k, v in ID.items()}
    return sorted(names[m.task_id] for m in got)


def test_two_monitors_reading_alike_send_a_lost_task_once(lost_tasks: Lost) -> None:
    queue, records = lost_tasks(["a", "b"])
    ledger = read_ledger(records)  # both read the run before either sends
    first = settle(records, queue, ledger, NOW)
    second = settle(records, queue, ledger, NOW + 1)
    assert sorted(first.requeue) == sorted(ID.values()) and second.requeue == []
    assert messages(queue) == ["a", "b"]  # one message each, not two
    assert [e.requeues for e in read_ledger(records).tasks.values()] == [1, 1]


def test_the_next_loss_is_sent_again_too(lost_tasks: Lost) -> None:
    queue, records = lost_tasks(["a"])
    settle(records, queue, read_ledger(records), NOW)
    (message,) = queue.receive(1, 30)
    queue.delete(message)  # lost again: gone with no outcome
    again = settle(records, queue, read_ledger(records), NOW + 60)
    assert again.requeue == [ID["a"]] and messages(queue) == ["a"]
    assert read_ledger(records).tasks[ID["a"]].requeues == 2


def test_a_slot_whose_taker_stopped_before_its_mark_is_taken_over_once_stale(
    lost_tasks: Lost,
) -> None:
    queue, records = lost_tasks(["a"])
    slot = records.requeue_slot_key(ID["a"], 1)
    records.storage.put_bytes(slot, json.dumps({"at": NOW}).encode())  # taken; nothing sent
    fresh = settle(records, queue, read_ledger(records), NOW + 5)
    assert fresh.requeue == [] and messages(queue) == []  # its taker may still be sending
    late = NOW + SLOT_STALE_SECONDS
    if isinstance(records.storage, S3Storage):
        age_s3(records.storage, SLOT_STALE_SECONDS)  # S3's clock decides there
    stale = settle(records, queue, read_ledger(records), late)
    assert stale.requeue == [ID["a"]] and messages(queue) == ["a"]
    assert json.loads(records.storage.get_bytes(slot)) == {"at": late}


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_on_s3_a_slots_age_is_s3s_whatever_the_monitors_clocks_say(aws: str, skew: float) -> None:
    # The Lambda monitor takes a slot; `ds monitor` on a laptop whose clock is an hour off
    # reads the run alike. Ahead, it would have taken the fresh slot over (two messages);
    # behind, it would never take over a slot S3 says is stale.
    queue, storage = moto_queue_and_bucket("Settle")
    records = RunRecords(storage, "T", "r1")
    records.write_manifest("m", [ManifestEntry(ID["a"], {"name": "a"})])
    ledger = read_ledger(records)
    assert settle(records, queue, ledger, NOW).requeue == [ID["a"]]
    assert settle(records, queue, ledger, NOW + skew).requeue == []
    assert messages(queue) == ["a"]  # once
    age_s3(storage, SLOT_STALE_SECONDS)
    # Ten minutes later by S3, the laptop an hour behind the slot's writer: taken over.
    assert settle(records, queue, ledger, NOW - 3600).requeue == [ID["a"]]
    assert messages(queue) == ["a"]


def test_where_botocore_has_no_conditional_put_lost_tasks_are_still_sent(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Lambda runtime's own botocore may predate S3's conditional PutObject: the monitor
    # sends as before (two monitors might each send) rather than never.
    from botocore.exceptions import ParamValidationError

    queue, storage = moto_queue_and_bucket("Settle")
    records = RunRecords(storage, "T", "r1")
    records.write_manifest("m", [ManifestEntry(ID[name], {"name": name}) for name in ID])
    s3 = storage._client
    put_object = s3.put_object

    def old_put_object(**kwargs: object) -> object:
        if "IfNoneMatch" in kwargs or "IfMatch" in kwargs:
            raise ParamValidationError(report='Unknown parameter in input: "IfNoneMatch"')
        return put_object(**kwargs)

    monkeypatch.setattr(s3, "put_object", old_put_object)
    plan = settle(records, queue, read_ledger(records), NOW)
    assert sorted(plan.requeue) == sorted(ID.values()) and messages(queue) == ["a", "b"]


def test_a_lost_task_whose_message_cannot_be_rebuilt_is_dead_saying_why(
    lost_tasks: Lost,
) -> None:
    # Its manifest entry does not hash to its id (a manifest of an older version): nothing
    # can be sent, so no requeue is recorded that never comes.
    queue, records = lost_tasks(["a"])
    records.write_manifest("old", [ManifestEntry("0ld", {"name": "x"})])
    plan = settle(records, queue, read_ledger(records), NOW)
    assert plan.requeue == [ID["a"]] and plan.dead == {"0ld": NO_BODY}
    assert messages(queue) == ["a"]
    entry = read_ledger(records).tasks["0ld"]
    assert (entry.state, entry.requeues) == ("dead", 0)
    (mark,) = records.storage.list(f"{records.run_prefix}marks/0ld/")
    assert mark.key.endswith(".dead")
    assert json.loads(records.storage.get_bytes(mark.key))["error"] == NO_BODY
