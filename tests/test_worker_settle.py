"""Settling what a dead worker held (worker/settle.py): its open attempt closed as lost, its
message visible at once, the messages it held given back — and nothing touched that was not
its own any more. On the local queue and records, as the watchdog meets them; the watchdog
itself is run end to end in test_e2e_local.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.interfaces.queue import Message
from distributed_something.ledger import read_ledger
from distributed_something.records import Attempt, DoneMarker, ManifestEntry, RunRecords
from distributed_something.worker.loop import Holding
from distributed_something.worker.procgroups import RECORD_BYTES, GroupRecorder, record_path
from distributed_something.worker.settle import Settled, holding_of, settle
from testkit import FakeClock, moto_queue_and_bucket

LEASE = 300.0


class Rig:
    """A worker carried task "fin" to its end (its message not deleted yet); of the four
    tasks sent next it received three: it runs the first, holds two."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=self.clock)
        storage = LocalBucket(FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite"))
        self.records = RunRecords(storage, "T", "r1")
        self.ids = [f"t{i}" for i in range(4)]
        self.records.write_manifest("m", [ManifestEntry(t, {"name": t}) for t in self.ids])
        self.queue.send_batch([("fin", json.dumps({"name": "fin"}))])
        self.finished = self.queue.receive(1, LEASE)[0]
        self.queue.send_batch([(t, json.dumps({"name": t})) for t in self.ids])
        self.received = self.queue.receive(3, LEASE)
        assert [m.task_id for m in self.received] == self.ids[:3]
        self.attempt = Attempt(
            task_id="t0",
            attempt=1,
            message_id=self.received[0].message_id,
            worker="w",
            started_at=self.clock(),
            cause="lost",
        )
        self.records.open_attempt(self.attempt)
        self.log = tmp_path / "scratch" / "w4242-0" / "task.log"
        self.log.parent.mkdir(parents=True)
        self.log.write_text("# header\nstep 1 of 3\nstep 2 of 3\n")
        self.holding = holding_of(
            "r1",
            Holding(
                self.attempt, self.received[0], self.received[1:], [self.finished.handle], self.log
            ),
        )

    def stored_log(self) -> bytes | None:
        key = self.records.log_key("t0", 1, self.attempt.started_at)
        try:
            return self.records.storage.get_bytes(key)
        except KeyError:
            return None

    def visible(self) -> dict[str, int]:
        """Task -> receive count (this receive's included) of what a receive now gets; given
        back at once, so the receive is undone."""
        got = self.queue.receive(10, LEASE)
        self.queue.give_back(got)
        return {m.task_id: m.receive_count for m in got}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_the_attempt_is_closed_as_lost_and_every_message_is_back_at_once(rig: Rig) -> None:
    assert read_ledger(rig.records).counts["running"] == 1
    assert rig.visible() == {"t3": 1}  # t0..t2 are leased for 300 s
    done = settle(rig.records, rig.queue, rig.holding, 4242, rig.clock() + 1)
    assert done.task_id == "t0" and done.held == 2
    [closed] = rig.records.attempt_keys("t0")
    assert closed.outcome == "lost"
    data = rig.records.read_json_many([rig.records.key_of(closed)])[0]
    assert data is not None and "worker (pid 4242) died" in data["error"]
    assert data["cause"] == "lost" and data["ended_at"] == rig.clock() + 1
    counts = read_ledger(rig.records).counts
    assert counts["running"] == 0 and counts["pending"] == 4
    # The run message used a receive (as when a lease runs out); the held ones did not.
    assert rig.visible() == {"t0": 2, "t1": 1, "t2": 1, "t3": 1}
    assert rig.queue.last_error("t0") == data["error"]
    # What the task wrote before its worker died is kept where `ds logs` finds it.
    stored = rig.stored_log()
    assert stored is not None and stored.startswith(b"# header\nstep 1 of 3\nstep 2 of 3\n")
    assert stored.endswith(b"[ds] the log ends here: its worker (pid 4242) died\n")
    # The finished task's message was deleted: it does not come back at its lease's end.
    rig.clock.now += LEASE + 1
    assert "fin" not in rig.visible() and done.done == 1


def test_an_attempt_closed_before_the_death_is_left_and_its_message_stays_leased(
    rig: Rig,
) -> None:
    rig.attempt.outcome, rig.attempt.ended_at = "done", rig.clock()
    rig.records.close_attempt(rig.attempt)  # the end was written; the delete was not yet
    done = settle(rig.records, rig.queue, rig.holding, 4242, rig.clock())
    assert done.task_id == "" and done.held == 2
    assert [a.outcome for a in rig.records.attempt_keys("t0")] == ["done"]
    assert rig.stored_log() is None  # the worker kept (or skipped) it itself
    assert rig.visible() == {"t1": 1, "t2": 1, "t3": 1}  # t0 comes back only at its lease's end


def test_an_attempt_that_wrote_its_done_marker_is_recorded_done_and_its_message_deleted(
    rig: Rig,
) -> None:
    # Where the marker and the attempt's end are two writes (S3), the worker died between
    # them: the task completed in this run. Sent again, it would run twice or be recorded
    # skipped (done before this run).
    rig.records.write_done(DoneMarker("t0", 1, 0.5, [], 0.0, 1.0, "w", "out/t0", run_id="r1"))
    done = settle(rig.records, rig.queue, rig.holding, 4242, rig.clock())
    assert done.task_id == "t0" and done.completed
    [closed] = rig.records.attempt_keys("t0")
    assert closed.outcome == "done"
    entry = read_ledger(rig.records).tasks["t0"]
    assert (entry.state, entry.attempts) == ("done", 1)
    rig.clock.now += LEASE + 1  # not even at its lease's end
    assert "t0" not in rig.visible()


@pytest.mark.parametrize(
    "marker",
    [
        DoneMarker("t0", 1, 0.5, [], 0.0, 1.0, "w", "out/t0", run_id="r0"),  # an earlier run's
        DoneMarker("t0", 2, 0.5, [], 0.0, 1.0, "w", "out/t0", run_id="r1"),  # another attempt's
        # Attempt 1 too, but of another start: an earlier message's (sent again fresh)
        DoneMarker("t0", 1, 0.5, [], 1.5, 2.0, "w", "out/t0", run_id="r1"),
    ],
)
def test_a_done_marker_of_another_attempt_leaves_the_death_lost(
    rig: Rig, marker: DoneMarker
) -> None:
    rig.records.write_done(marker)
    done = settle(rig.records, rig.queue, rig.holding, 4242, rig.clock())
    assert done.task_id == "t0" and not done.completed
    assert [a.outcome for a in rig.records.attempt_keys("t0")] == ["lost"]
    assert rig.visible()["t0"] == 2


def test_messages_received_again_since_are_left_to_their_new_holder(rig: Rig) -> None:
    rig.clock.now += LEASE + 1  # every lease ran out; another worker received them
    again = rig.queue.receive(10, LEASE)
    assert sorted(m.task_id for m in again) == sorted([*rig.ids, "fin"])
    settle(rig.records, rig.queue, rig.holding, 4242, rig.clock())
    assert rig.visible() == {}  # the new leases hold


def test_a_holding_that_is_not_one_is_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="not an attempt"):
        settle(rig.records, rig.queue, {**rig.holding, "attempt": "t0"}, 1, rig.clock())
    assert read_ledger(rig.records).counts["running"] == 1


def test_a_worker_record_holding_sixteen_local_messages_is_updated_in_place(
    tmp_path: Path, rig: Rig
) -> None:
    recorder = GroupRecorder.start(tmp_path / "scratch", watch=False)
    assert recorder is not None
    path = record_path(tmp_path / "scratch", os.getpid())
    inode = path.stat().st_ino
    many = rig.queue.receive(1, LEASE) * 16  # the handles of the local queue are alike
    holding = Holding(rig.attempt, rig.received[0], many, [m.handle for m in many], rig.log)
    recorder.holding(holding_of("r1", holding))
    assert path.stat().st_ino == inode and path.stat().st_size == RECORD_BYTES
    assert json.loads(path.read_text())["holding"] == json.loads(
        json.dumps(holding_of("r1", holding))
    )
    recorder.close()


class SqsRig:
    """A task's message on moto's SQS (three receives, then the dead-letter queue), its
    records on moto's S3, and `dies`: a worker receives it, starts an attempt and dies, and
    its watchdog settles it."""

    def __init__(self) -> None:
        from distributed_something.jobs.model import Task

        self.queue, storage = moto_queue_and_bucket("settle")
        self.records = RunRecords(storage, "T", "r1")
        self.task = Task({"group": {"name": "v"}})
        self.records.write_manifest("m", [ManifestEntry(self.task.id, {"name": "v"})])
        self.queue.send_batch([(self.task.id, self.task.body_json())])

    def dies(self, *, marked: bool = False) -> tuple[Message, Settled]:
        """A receive whose worker dies; with ``marked``, after writing the done marker."""
        (message,) = self.queue.receive(1, 30)
        attempt = Attempt(self.task.id, message.receive_count, message.message_id, "w", time.time())
        self.records.open_attempt(attempt)
        if marked:
            self.records.write_done(
                DoneMarker(self.task.id, attempt.attempt, 0.1, [], 0.0, 1.0, "w", "o", run_id="r1")
            )
        holding = holding_of("r1", Holding(attempt, message, [], [], Path("/nonexistent")))
        return message, settle(self.records, self.queue, holding, 4242, time.time())

    def hand_back(self) -> None:
        """A receive handed back untouched (a worker told to stop as it received it)."""
        (untouched,) = self.queue.receive(1, 30)
        self.queue.release(untouched, 0)


def test_on_sqs_a_spent_receive_count_with_a_hand_back_among_it_is_sent_again(aws: str) -> None:
    """As the moto chaos run met it: receive 1 and 3 of a task's message died with their
    workers, receive 2 was handed back untouched (a worker told to stop as it received it).
    Settling the second death sends the task again rather than letting SQS dead-letter a
    task that died twice of its three receives; a third death is dead-lettered as ever."""
    rig = SqsRig()
    queue, task, dies = rig.queue, rig.task, rig.dies
    assert dies()[0].receive_count == 1
    rig.hand_back()  # receive 2: no attempt recorded
    second, settled = dies()
    assert second.receive_count == 3 and settled.task_id == task.id
    assert queue.counts().dead == 0
    # Not dead-lettered at the next receive: a fresh message of the task, its old one gone.
    fresh, _ = dies()
    assert (fresh.receive_count, fresh.body) == (1, task.body_json())
    assert fresh.message_id != second.message_id
    assert [dies()[0].receive_count for _ in range(2)] == [2, 3]
    assert queue.receive(1, 30) == []  # three deaths of three receives: dead-lettered
    assert queue.counts().dead == 1


def test_on_s3_a_death_after_the_done_marker_on_the_last_receive_is_done(aws: str) -> None:
    """The same, but the second death came after the task wrote its done marker (on S3 the
    marker and the attempt's end are two writes): the task completed in this run. It is
    recorded done and its message deleted, not sent again as a fresh message (which the next
    worker would find done and record skipped, or run again)."""
    rig = SqsRig()
    rig.dies()
    rig.hand_back()
    last, settled = rig.dies(marked=True)
    assert last.receive_count == 3 and settled.completed
    assert rig.queue.receive(1, 30) == [] and rig.queue.counts().dead == 0
    entry = read_ledger(rig.records).tasks[rig.task.id]
    assert (entry.state, entry.attempts) == ("done", 2)
    assert rig.records.count_skipped() == 0
