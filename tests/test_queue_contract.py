"""The Queue contract (interfaces/queue.py), run against every implementation.

Each implementation contributes one factory: a fixture named ``<name>_queue_factory`` that
gives a function taking ``(max_receive_count, tmp_path)`` and returning
``(queue, advance_clock)``, where ``advance_clock(seconds)`` moves the queue's time forward
(a fake clock for SQLite; an SQS factory would sleep), and its name in `IMPLEMENTATIONS`.
The contract tests hold every implementation to the same behaviour; tests named
``test_sqlite_*`` are for the SQLite queue only.

The SQS variant runs on a moto server (tests/conftest.py's ``aws`` fixture). SQS time is
the wall clock in whole seconds, so that variant runs every lease, delay and clock advance
of these tests divided by `SQS_TIME_SCALE` (every lease here is a multiple of 5 s, so the
scaled leases are still whole seconds and keep their order) and really sleeps.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest

from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.sqs_queue import SqsQueue
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.errors import BackendError
from distributed_something.interfaces.queue import Message, Queue, QueueCounts
from testkit import FakeClock

AdvanceClock = Callable[[float], None]
QueueFactory = Callable[[int, Path], tuple[Queue, AdvanceClock]]

LEASE = 30.0


def sqlite_factory(max_receive_count: int, tmp_path: Path) -> tuple[Queue, AdvanceClock]:
    clock = FakeClock(1_700_000_000.0)
    queue = SqliteQueue(tmp_path / "queue.db", max_receive_count=max_receive_count, clock=clock)
    return queue, clock.advance


@pytest.fixture
def sqlite_queue_factory() -> QueueFactory:
    return sqlite_factory


SQS_TIME_SCALE = 5
"""The SQS variant divides leases, delays and clock advances by this (10 s -> 2 s)."""

AWS = AwsSettings(region="us-east-1")


def create_sqs_queues(name: str, max_receive_count: int) -> tuple[str, str]:
    """A job queue whose redrive policy dead-letters into a new queue; their URLs."""
    sqs = client("sqs", AWS)
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
    job = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    return str(job["QueueUrl"]), str(dead)


class ScaledSqsQueue(SqsQueue):
    """An `SqsQueue` whose leases and delays are divided by `SQS_TIME_SCALE`."""

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        return super().receive(max_messages, lease_seconds / SQS_TIME_SCALE)

    def extend_lease(self, message: Message, seconds: float) -> bool:
        return super().extend_lease(message, seconds / SQS_TIME_SCALE)

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None:
        super().release(message, delay_seconds / SQS_TIME_SCALE, error)


@pytest.fixture
def sqs_queue_factory(aws: str) -> QueueFactory:
    names = itertools.count()

    def factory(max_receive_count: int, tmp_path: Path) -> tuple[Queue, AdvanceClock]:
        job, dead = create_sqs_queues(f"contract-{next(names)}", max_receive_count)
        # No long polling: receive_all ends on an empty receive, which would wait.
        queue = ScaledSqsQueue(AWS, job, dead, max_receive_count=max_receive_count, wait_seconds=0)
        return queue, lambda seconds: time.sleep(seconds / SQS_TIME_SCALE)

    return factory


# One name per implementation: the fixture "<name>_queue_factory" gives its factory (a
# fixture, so that e.g. an SQS factory can depend on a moto server fixture).
IMPLEMENTATIONS = ["sqlite", "sqs"]
# Implementations that record the error given to `release` and report it for dead tasks
# (SQS cannot attach it to the message, so its DeadTask.error may be empty).
KEEPS_LAST_ERROR = {"sqlite"}
# Implementations where the handle of an earlier receive can no longer act on the message.
# SQS documents that a stale handle "might" still delete it, and moto accepts every handle
# a message ever had, so for SQS a stale handle may act on the newer lease.
REJECTS_STALE_HANDLES = {"sqlite"}
# How many messages "many" is: moto's SQS slows down with queue depth (every call scans
# every message: receiving 1,000 takes ~40 s), so the SQS variant sends fewer, still in
# many batches of 10 and several receives.
MANY = {"sqs": 120}


class MakeQueue:
    """Makes queues of one implementation in the test's tmp_path; closes them at the end."""

    def __init__(self, name: str, factory: QueueFactory, tmp_path: Path) -> None:
        self.name = name
        self.keeps_last_error = name in KEEPS_LAST_ERROR
        self.rejects_stale_handles = name in REJECTS_STALE_HANDLES
        self.many = MANY.get(name, 1_000)
        self._factory = factory
        self._tmp_path = tmp_path
        self.made: list[Queue] = []

    def __call__(self, max_receive_count: int = 5) -> tuple[Queue, AdvanceClock]:
        folder = self._tmp_path / f"queue-{len(self.made)}"
        folder.mkdir()
        queue, advance = self._factory(max_receive_count, folder)
        self.made.append(queue)
        return queue, advance


@pytest.fixture(params=IMPLEMENTATIONS)
def queue_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeQueue]:
    factory: QueueFactory = request.getfixturevalue(f"{request.param}_queue_factory")
    maker = MakeQueue(request.param, factory, tmp_path)
    yield maker
    for queue in maker.made:
        close = getattr(queue, "close", None)
        if close is not None:
            close()


def receive_all(queue: Queue, lease: float = LEASE) -> list[Message]:
    """Receive until nothing visible is left (each call may return fewer than asked)."""
    received: list[Message] = []
    while batch := queue.receive(10, lease):
        received.extend(batch)
    return received


def one(queue: Queue, lease: float = LEASE) -> Message:
    messages = queue.receive(1, lease)
    assert len(messages) == 1
    return messages[0]


# -- send, receive, delete --------------------------------------------------------------------


def test_send_receive_delete(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    assert queue.send_batch([("t1", '{"a": 1}'), ("t2", '{"a": 2}')]) == 2
    assert queue.counts() == QueueCounts(visible=2, in_flight=0, dead=0)

    messages = receive_all(queue)
    assert sorted((m.task_id, m.body, m.receive_count) for m in messages) == [
        ("t1", '{"a": 1}', 1),
        ("t2", '{"a": 2}', 1),
    ]
    assert len({m.handle for m in messages}) == 2
    assert queue.counts() == QueueCounts(visible=0, in_flight=2, dead=0)

    for message in messages:
        queue.delete(message)
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)
    assert queue.counts().drained
    assert queue.receive(10, LEASE) == []


def test_send_empty_batch(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    assert queue.send_batch([]) == 0
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)


def test_receive_respects_max_messages(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    queue.send_batch([(f"t{i}", f"body {i}") for i in range(5)])
    first = queue.receive(3, LEASE)
    assert 1 <= len(first) <= 3
    rest = receive_all(queue)
    assert sorted(m.task_id for m in first + rest) == [f"t{i}" for i in range(5)]


def test_batch_send_of_many(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    many = queue_factory.many
    items = [(f"task-{i:04d}", f'{{"i": {i}}}') for i in range(many)]
    assert queue.send_batch(items) == many
    assert queue.counts() == QueueCounts(visible=many, in_flight=0, dead=0)
    received = receive_all(queue)
    assert sorted((m.task_id, m.body) for m in received) == items
    assert queue.counts() == QueueCounts(visible=0, in_flight=many, dead=0)


def test_same_task_id_twice_is_two_messages(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    queue.send_batch([("t", "first"), ("t", "second")])
    assert sorted(m.body for m in receive_all(queue)) == ["first", "second"]


# -- leases ----------------------------------------------------------------------------------


def test_lease_hides_message_until_it_expires(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory()
    queue.send_batch([("t1", "b")])
    first = one(queue, lease=10)
    assert first.receive_count == 1

    advance(5)
    assert queue.receive(10, 10) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=0)

    advance(6)
    assert queue.counts() == QueueCounts(visible=1, in_flight=0, dead=0)
    second = one(queue, lease=10)
    assert (second.task_id, second.body, second.receive_count) == ("t1", "b", 2)
    assert second.handle != first.handle


def test_extend_lease_keeps_message_hidden(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory()
    queue.send_batch([("t1", "b")])
    message = one(queue, lease=10)

    advance(8)
    assert queue.extend_lease(message, 10) is True
    advance(8)  # 16 s after the receive: past the first lease, within the extension
    assert queue.receive(10, 10) == []
    assert queue.counts().in_flight == 1

    advance(3)  # 19 s: the extension (to 18 s) is over
    again = one(queue, lease=10)
    assert again.receive_count == 2


def skip_unless_stale_handles_are_rejected(queue_factory: MakeQueue) -> None:
    if not queue_factory.rejects_stale_handles:
        pytest.skip(
            f"not applicable: {queue_factory.name} may accept the receipt handle of an "
            "earlier receive"
        )


def test_extend_lease_false_after_message_received_by_another(queue_factory: MakeQueue) -> None:
    skip_unless_stale_handles_are_rejected(queue_factory)
    queue, advance = queue_factory()
    queue.send_batch([("t1", "b")])
    stale = one(queue, lease=10)
    advance(11)
    fresh = one(queue, lease=10)

    assert queue.extend_lease(stale, 100) is False
    advance(11)  # the stale extension must not have kept the fresh lease alive
    assert queue.counts() == QueueCounts(visible=1, in_flight=0, dead=0)
    assert queue.extend_lease(fresh, 100) is True


def test_extend_lease_false_after_delete(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    queue.send_batch([("t1", "b")])
    message = one(queue)
    queue.delete(message)
    assert queue.extend_lease(message, 10) is False
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)


def test_receivers_never_share_a_leased_message(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    queue.send_batch([(f"t{i}", "b") for i in range(20)])
    a = queue.receive(10, LEASE)
    b = queue.receive(10, LEASE)
    c = receive_all(queue)
    ids = [m.task_id for m in a + b + c]
    assert sorted(ids) == sorted(f"t{i}" for i in range(20))


# -- release ---------------------------------------------------------------------------------


def test_release_at_once(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    queue.send_batch([("t1", "b")])
    message = one(queue)
    queue.release(message, 0)
    assert queue.counts() == QueueCounts(visible=1, in_flight=0, dead=0)
    again = one(queue)
    assert (again.task_id, again.receive_count) == ("t1", 2)


def test_release_with_delay_counts_as_in_flight(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory()
    queue.send_batch([("t1", "b")])
    message = one(queue, lease=100)
    queue.release(message, 20, error="exit code 1")

    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    assert not queue.counts().drained
    advance(10)
    assert queue.receive(10, LEASE) == []
    advance(11)  # 21 s: the delay is over, long before the original 100 s lease would be
    assert queue.counts() == QueueCounts(visible=1, in_flight=0, dead=0)
    assert one(queue).receive_count == 2


def test_stale_handles_do_not_touch_the_new_lease(queue_factory: MakeQueue) -> None:
    skip_unless_stale_handles_are_rejected(queue_factory)
    queue, advance = queue_factory(max_receive_count=3)
    queue.send_batch([("t1", "b")])
    stale = one(queue, lease=10)
    advance(11)
    fresh = one(queue, lease=100)

    queue.release(stale, 0, error="stale error")
    queue.delete(stale)
    assert queue.extend_lease(stale, 1_000) is False
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    assert queue.receive(10, LEASE) == []

    # The fresh handle still works.
    queue.release(fresh, 0, error="fresh error")
    third = one(queue, lease=10)
    assert third.receive_count == 3
    # A handle of the second receive is stale now too: its delete must not remove it.
    queue.delete(fresh)
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    queue.release(third, 0)
    assert receive_all(queue) == []  # a fourth receive dead-letters it
    [dead] = queue.list_dead()
    if queue_factory.keeps_last_error:
        assert dead.error == "fresh error"  # not the stale release's error


# -- dead letters ----------------------------------------------------------------------------


def test_dead_lettered_after_max_receive_count_with_last_error(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory(max_receive_count=3)
    queue.send_batch([("poison", "p"), ("good", "g")])
    for attempt in range(1, 4):
        messages = {m.task_id: m for m in receive_all(queue)}
        assert messages["poison"].receive_count == attempt
        queue.release(messages["poison"], 0, error=f"failure {attempt}")
        if "good" in messages:
            queue.delete(messages["good"])

    # The fourth receive moves it to the dead-letter store instead of returning it.
    assert receive_all(queue) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=1)
    [dead] = queue.list_dead()
    assert (dead.task_id, dead.body, dead.receive_count) == ("poison", "p", 3)
    if queue_factory.keeps_last_error:
        assert dead.error == "failure 3"
    advance(LEASE + 1)
    assert receive_all(queue) == []


def test_dead_lettering_keeps_looking_for_deliverable_messages(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory(max_receive_count=1)
    queue.send_batch([(f"p{i}", "p") for i in range(3)])
    assert len(receive_all(queue, lease=5)) == 3
    advance(6)
    queue.send_batch([("fresh", "f")])
    received = receive_all(queue)
    assert [m.task_id for m in received] == ["fresh"]
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=3)


def test_release_without_error_keeps_the_previous_error(queue_factory: MakeQueue) -> None:
    if not queue_factory.keeps_last_error:
        pytest.skip(f"not applicable: {queue_factory.name} does not record release errors")
    queue, _ = queue_factory(max_receive_count=2)
    queue.send_batch([("t", "b")])
    queue.release(one(queue), 0, error="disk full")
    queue.release(one(queue), 0)
    assert receive_all(queue) == []
    [dead] = queue.list_dead()
    assert dead.error == "disk full"


def test_redrive_all_resets_receive_count(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory(max_receive_count=1)
    queue.send_batch([("a", "1"), ("b", "2")])
    receive_all(queue, lease=5)
    advance(6)
    assert receive_all(queue) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=2)

    assert queue.redrive() == 2
    assert queue.counts() == QueueCounts(visible=2, in_flight=0, dead=0)
    assert queue.list_dead() == []
    again = receive_all(queue)
    assert sorted((m.task_id, m.body, m.receive_count) for m in again) == [
        ("a", "1", 1),
        ("b", "2", 1),
    ]


def test_redrive_by_id(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory(max_receive_count=1)
    queue.send_batch([("a", "1"), ("b", "2"), ("c", "3")])
    receive_all(queue, lease=5)
    advance(6)
    receive_all(queue)

    assert queue.redrive(["b", "not-there"]) == 1
    assert sorted(d.task_id for d in queue.list_dead()) == ["a", "c"]
    [message] = receive_all(queue)
    assert (message.task_id, message.receive_count) == ("b", 1)
    assert queue.redrive([]) == 0
    assert queue.counts().dead == 2


def test_redrive_when_nothing_is_dead(queue_factory: MakeQueue) -> None:
    queue, _ = queue_factory()
    assert queue.redrive() == 0
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)


# -- purge -----------------------------------------------------------------------------------


def test_purge_deletes_messages_but_keeps_dead_ones(queue_factory: MakeQueue) -> None:
    queue, advance = queue_factory(max_receive_count=1)
    queue.send_batch([("dead", "d")])
    receive_all(queue, lease=5)
    advance(6)
    receive_all(queue)
    queue.send_batch([(f"t{i}", "b") for i in range(5)])
    queue.receive(2, LEASE)

    queue.purge()
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=1)
    assert receive_all(queue) == []
    assert [d.task_id for d in queue.list_dead()] == ["dead"]


# -- SQLite only -----------------------------------------------------------------------------


def _worker(path: Path, start: BarrierType, results: Connection) -> None:
    """Receive and delete until the queue is drained; report every task id processed."""
    queue = SqliteQueue(path, max_receive_count=5)
    queue.counts()  # open the connection before the race starts
    start.wait()
    done: list[str] = []
    while True:
        messages = queue.receive(2, 60)
        if not messages:
            if queue.counts().drained:
                break
            continue
        for message in messages:
            done.append(message.task_id)
            queue.delete(message)
    queue.close()
    results.send(done)
    results.close()


def test_sqlite_many_processes_process_each_message_once(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = SqliteQueue(path, max_receive_count=5)
    task_ids = [f"task-{i:03d}" for i in range(400)]
    queue.send_batch([(task_id, "b") for task_id in task_ids])

    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False) for _ in range(4)]
    start = context.Barrier(len(pipes))
    processes = [context.Process(target=_worker, args=(path, start, sender)) for _, sender in pipes]
    for process in processes:
        process.start()
    for _, sender in pipes:
        sender.close()  # so that recv raises EOFError if a worker dies instead of hanging
    done: list[str] = []
    for receiver, _ in pipes:
        done.extend(receiver.recv())
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    assert sorted(done) == task_ids  # every message processed, none twice
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)
    queue.close()


def _use_inherited(queue: SqliteQueue, results: Connection) -> None:
    """In a forked child: use the parent's instance as is."""
    messages = queue.receive(10, 60)
    for message in messages:
        queue.delete(message)
    # The child must not use the connection it inherited: it opens its own.
    reopened = [queue._conn is not inherited for inherited in queue._inherited]
    results.send((os.getpid(), [m.task_id for m in messages], reopened))
    results.close()


def test_sqlite_reopens_after_fork(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.db", max_receive_count=5)
    queue.send_batch([("a", "1"), ("b", "2")])
    assert queue.counts().visible == 2  # the parent's connection is open before the fork

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_use_inherited, args=(queue, sender))
    child.start()
    sender.close()
    child_pid, child_ids, reopened = receiver.recv()
    child.join(60)

    assert child.exitcode == 0
    assert child_pid != os.getpid()
    assert reopened == [True]
    assert sorted(child_ids) == ["a", "b"]
    # The parent's connection still works and sees the child's deletes.
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, dead=0)
    queue.send_batch([("c", "3")])
    assert [m.task_id for m in receive_all(queue)] == ["c"]
    queue.close()


def test_sqlite_last_error_of_queued_message(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.db", max_receive_count=5)
    queue.send_batch([("t", "b")])
    assert queue.last_error("t") is None
    assert queue.last_error("unknown") is None
    queue.release(one(queue), 0, error="exit code 2")
    assert queue.last_error("t") == "exit code 2"
    queue.close()


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    path = tmp_path / "nested" / "queue.db"
    first = SqliteQueue(path, max_receive_count=5, clock=clock)
    first.send_batch([("t", "b")])
    leased = one(first, lease=10)
    first.close()

    second = SqliteQueue(path, max_receive_count=5, clock=clock)
    assert second.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    second.delete(leased)  # handles stay valid across instances
    assert second.counts() == QueueCounts(visible=0, in_flight=0, dead=0)
    second.close()


def test_sqlite_rejects_foreign_handles(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.db", max_receive_count=5)
    with pytest.raises(ValueError, match="receipt handle"):
        queue.delete(Message(handle="AQEB-sqs-handle", task_id="t", body="b", receive_count=1))
    queue.close()


def two_sqlite_queues(tmp_path: Path) -> tuple[SqliteQueue, SqliteQueue, FakeClock]:
    """Two instances (two workers' views) of one local queue file, on one fake clock."""
    clock = FakeClock(1_700_000_000.0)
    path = tmp_path / "queue.db"
    return (
        SqliteQueue(path, max_receive_count=5, clock=clock),
        SqliteQueue(path, max_receive_count=5, clock=clock),
        clock,
    )


def test_sqlite_delete_soon_rides_on_the_next_write(tmp_path: Path) -> None:
    # A worker's acknowledgement costs no transaction of its own: the message is deleted by
    # the same transaction that receives the next one (or at any read, flush or close).
    worker, other, _ = two_sqlite_queues(tmp_path)
    worker.send_batch([("t1", "b"), ("t2", "b")])
    first = one(worker)
    worker.delete_soon(first)
    assert other.counts() == QueueCounts(visible=1, in_flight=1, dead=0)  # not yet
    second = one(worker)  # ...and now, in the same transaction
    assert second.task_id == "t2"
    assert other.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    worker.delete_soon(second)
    assert worker.counts().drained  # a read of the same instance sees its own deletes
    assert other.counts().drained
    worker.send_batch([("t3", "b")])
    third = one(worker)
    worker.delete_soon(third)
    worker.close()  # a worker that exits leaves nothing to do
    assert other.counts().drained


def test_sqlite_delete_soon_survives_a_failed_transaction(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    path = tmp_path / "queue.db"
    queue = SqliteQueue(path, max_receive_count=5, clock=clock)
    queue.send_batch([("t1", "b"), ("t2", "b")])
    queue.delete_soon(one(queue))
    refuse = sqlite3.connect(path, isolation_level=None)
    refuse.execute(
        "CREATE TRIGGER full BEFORE UPDATE ON messages BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    with pytest.raises(BackendError, match="full"):
        queue.receive(1, LEASE)  # rolled back, the delete with it...
    refuse.execute("DROP TRIGGER full")
    assert queue.counts() == QueueCounts(visible=1, in_flight=0, dead=0)  # ...done again
    refuse.close()
    queue.close()


def test_sqlite_delete_soon_of_a_message_received_again_leaves_it(tmp_path: Path) -> None:
    # Deferred, the delete still names the receive it acknowledges: a message whose lease
    # ran out and was received again (by another worker) is left to that worker.
    slow, fast, clock = two_sqlite_queues(tmp_path)
    slow.send_batch([("t1", "b")])
    stale = one(slow, lease=10)
    clock.advance(11)
    again = one(fast)
    slow.delete_soon(stale)
    slow.flush()
    assert fast.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    assert fast.extend_lease(again, 10)


def test_sqlite_give_back_undoes_the_receive(tmp_path: Path) -> None:
    # A worker holding messages to run next hands back those it did not start: visible at
    # once, first in line again, and their receive not counted (holding is not trying).
    worker, other, clock = two_sqlite_queues(tmp_path)
    worker.send_batch([("t1", "b"), ("t2", "b"), ("t3", "b")])
    clock.advance(1)
    worker.send_batch([("t4", "b")])
    first, second, third = worker.receive(3, LEASE)
    assert [m.task_id for m in (first, second, third)] == ["t1", "t2", "t3"]
    worker.give_back([second, third])
    assert other.counts() == QueueCounts(visible=3, in_flight=1, dead=0)
    taken = other.receive(3, LEASE)
    assert [(m.task_id, m.receive_count) for m in taken] == [("t2", 1), ("t3", 1), ("t4", 1)]
    # A stale handle (the message was received again since) leaves the new lease alone.
    worker.give_back([second])
    assert other.counts() == QueueCounts(visible=0, in_flight=4, dead=0)
    assert other.extend_lease(taken[0], LEASE)
    worker.give_back([])  # nothing: no transaction needed


def test_sqlite_give_back_never_uses_up_receives(tmp_path: Path) -> None:
    # Held and given back more times than the queue allows receives: still delivered, with
    # its first receive, never dead-lettered for it.
    queue = SqliteQueue(tmp_path / "queue.db", max_receive_count=2)
    queue.send_batch([("t1", "b")])
    for _ in range(5):
        queue.give_back(queue.receive(1, LEASE))
    (message,) = queue.receive(1, LEASE)
    assert message.receive_count == 1
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, dead=0)
    queue.close()
