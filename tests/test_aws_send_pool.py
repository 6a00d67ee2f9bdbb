"""A big submit's SendMessageBatch calls spread over processes (backends/aws/send_pool.py),
against the moto server: the same messages arrive, the calls are made by other processes,
and an SQS error raised there reaches the caller whole."""

from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from distributed_something.backends.aws import send_pool, sqs_queue
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.sqs_queue import SqsError, SqsQueue, SqsQueueGone
from distributed_something.errors import BackendError

AWS = AwsSettings(region="us-east-1")


def pooled_queue(name: str, processes: int = 2) -> SqsQueue:
    sqs = client("sqs", AWS)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    return SqsQueue(AWS, url, dead, max_receive_count=3, wait_seconds=0, processes=processes)


def receive_all(queue: SqsQueue) -> list[tuple[str, str]]:
    received = []
    while batch := queue.receive(10, 60):
        received.extend((m.task_id, m.body) for m in batch)
    return sorted(received)


@pytest.fixture
def pool_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes from the first message, for any call of two batches or more."""
    monkeypatch.setattr(send_pool, "PROCESSES_AFTER", 0)
    monkeypatch.setattr(send_pool, "MIN_CALLS", 2)


def count_sends(made: Any, counted: list[str]) -> None:
    made.meta.events.register("before-call.sqs.SendMessageBatch", lambda **_: counted.append(""))


def test_a_big_submit_sends_the_same_messages_from_other_processes(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends: list[str] = []  # SendMessageBatch calls made by this process's clients
    monkeypatch.setattr(send_pool, "PROCESSES_AFTER", 30)
    monkeypatch.setattr(send_pool, "MIN_CALLS", 3)
    from distributed_something.backends.aws import clients

    monkeypatch.setattr(
        clients,
        "client_observers",
        [*clients.client_observers, lambda made: count_sends(made, sends)],
    )
    queue = pooled_queue("pooled")
    items = [(f"t{i:03d}", json.dumps({"group": i})) for i in range(90)]

    # 30 by this process's threads (3 calls), then 60 over the processes (6 calls).
    assert queue.send_batch(items[:30]) == 30
    assert len(sends) == 3
    assert queue.send_batch(items[30:]) == 60

    assert len(sends) == 3, "the second submit's calls were made by the sending processes"
    assert receive_all(queue) == items


def test_a_small_send_never_starts_processes(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send_pool, "PROCESSES_AFTER", 0)
    queue = pooled_queue("small")
    items = [(f"s{i}", json.dumps({"group": i})) for i in range(20)]  # 2 calls < MIN_CALLS

    assert queue.send_batch(items) == 20

    assert queue._pool is None
    assert receive_all(queue) == sorted(items)


def test_an_error_in_a_sending_process_reaches_the_caller_whole(
    aws: str, pool_at_once: None
) -> None:
    queue = pooled_queue("gone")
    client("sqs", AWS).delete_queue(QueueUrl=queue.queue_url)

    with pytest.raises(SqsQueueGone) as raised:
        queue.send_batch([(f"g{i}", json.dumps({"group": i})) for i in range(30)])

    assert queue._pool is not None
    assert raised.value.code in sqs_queue.QUEUE_GONE_CODES
    assert "SendMessageBatch on queue gone failed" in str(raised.value)


@pytest.mark.parametrize("kind", [SqsError, SqsQueueGone])
def test_sqs_errors_pickle_with_their_code_and_detail(kind: type[SqsError]) -> None:
    error = kind("SQS SendMessageBatch on queue q failed: Throttling: slow down", "Throttling", "x")

    again = pickle.loads(pickle.dumps(error))

    assert type(again) is kind
    assert (str(again), again.code, again.detail) == (str(error), "Throttling", "x")


@pytest.mark.parametrize(("cores", "processes"), [(1, 0), (2, 2), (3, 3), (64, 4)])
def test_sending_processes_follow_the_cores(cores: int, processes: int) -> None:
    assert send_pool.process_count(cores) == processes


def test_slices_keep_every_batch_once_in_order() -> None:
    batches = [[{"MessageBody": str(i)}] for i in range(7)]

    parts = send_pool._slices(batches, 3)

    assert [len(part) for part in parts] == [3, 3, 1]
    assert [b for part in parts for b in part] == batches


def test_where_processes_cannot_start_the_threads_send(
    aws: str, pool_at_once: None, monkeypatch: pytest.MonkeyPatch
) -> None:

    def no_semaphores(self: send_pool.SendPool) -> None:
        raise OSError(38, "Function not implemented")  # sem_open in AWS Lambda

    monkeypatch.setattr(send_pool.SendPool, "start", no_semaphores)
    queue = pooled_queue("lambda")
    items = [(f"l{i:02d}", json.dumps({"group": i})) for i in range(30)]

    assert queue.send_batch(items) == 30

    assert (queue.processes, queue._pool) == (0, None)
    assert receive_all(queue) == items


def test_a_sending_process_that_dies_is_one_clear_error(
    aws: str, pool_at_once: None, monkeypatch: pytest.MonkeyPatch
) -> None:

    def dying(self: send_pool.SendPool) -> None:
        if self._pool is None:  # a pool whose process exits as it starts
            self._pool = ProcessPoolExecutor(1, initializer=os._exit, initargs=(9,))

    monkeypatch.setattr(send_pool.SendPool, "start", dying)
    queue = pooled_queue("dies")

    with pytest.raises(BackendError) as raised:
        queue.send_batch([(f"d{i}", json.dumps({"group": i})) for i in range(30)])

    text = str(raised.value)
    assert "a sending process stopped" in text and "30 messages" in text
    assert "stay pending in the run" in text and "ds monitor" in text
