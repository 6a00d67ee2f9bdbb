"""The worker's heartbeat: one thread keeps the current task's lease alive."""

from __future__ import annotations

import threading
import time

from distributed_something.interfaces.queue import Message
from distributed_something.worker.heartbeat import Heartbeat


class RecordingQueue:
    """Answers extend_lease from a script and records every call."""

    def __init__(self, answers: list[bool | Exception] | None = None) -> None:
        self.answers = list(answers or [])
        self.calls: list[tuple[str, float]] = []
        self.slow = 0.0

    def extend_lease(self, message: Message, seconds: float) -> bool:
        self.calls.append((message.task_id, seconds))
        if self.slow:
            time.sleep(self.slow)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def message(task_id: str) -> Message:
    return Message(handle=f"h-{task_id}", task_id=task_id, body="{}", receive_count=1)


def wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_one_thread_extends_each_task_in_turn_and_stops_between_tasks() -> None:
    queue = RecordingQueue()
    beat = Heartbeat(queue)  # type: ignore[arg-type]
    abort = threading.Event()
    threads_before = threading.active_count()
    with beat.keep(message("a"), 0.6, abort):  # beats every 0.2 s
        wait_until(lambda: len(queue.calls) >= 2)
    calls_after_a = len(queue.calls)
    time.sleep(0.5)
    assert len(queue.calls) == calls_after_a  # nothing held: no extensions
    with beat.keep(message("b"), 0.6, abort) as lease:
        wait_until(lambda: ("b", 0.6) in queue.calls)
        assert threading.active_count() == threads_before + 1  # the same single thread
    assert {task for task, _ in queue.calls} == {"a", "b"}
    assert not lease.lost.is_set() and not abort.is_set()
    beat.close()
    assert threading.active_count() == threads_before


def test_a_short_task_is_never_extended() -> None:
    queue = RecordingQueue()
    beat = Heartbeat(queue)  # type: ignore[arg-type]
    for i in range(50):
        with beat.keep(message(str(i)), 60, threading.Event()):
            pass
    beat.close()
    assert queue.calls == []


def test_a_lost_lease_sets_both_events_and_is_not_extended_again() -> None:
    queue = RecordingQueue([RuntimeError("throttled"), False])
    beat = Heartbeat(queue)  # type: ignore[arg-type]
    abort = threading.Event()
    with beat.keep(message("a"), 0.6, abort) as lease:
        assert abort.wait(5)
        assert lease.lost.is_set()
        calls = len(queue.calls)
        time.sleep(0.5)
        assert len(queue.calls) == calls == 2  # the error was retried; the loss ends it
    beat.close()


def test_leaving_waits_for_an_extension_in_progress() -> None:
    queue = RecordingQueue()
    queue.slow = 0.3
    beat = Heartbeat(queue)  # type: ignore[arg-type]
    with beat.keep(message("a"), 0.6, threading.Event()):
        wait_until(lambda: queue.calls)  # an extension has started and takes 0.3 s
        started = time.monotonic()
    waited = time.monotonic() - started
    calls = len(queue.calls)
    time.sleep(0.4)
    assert len(queue.calls) == calls  # none after the block ended
    assert waited > 0.05  # the exit waited for the call in progress
    beat.close()
