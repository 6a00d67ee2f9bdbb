"""The worker's heartbeat: one thread keeps the current task's lease alive."""

from __future__ import annotations

import threading
import time

from distributed_something.interfaces.queue import Message
from distributed_something.worker.heartbeat import Heartbeat, LeaseEnding
from testkit import FakeClock


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


class CeilingQueue:
    """A queue whose leases end ``ceiling`` seconds after `start` (by ``clock``): from
    ``notice`` seconds before that it raises LeaseEnding, as SqsQueue does near SQS's 12 h."""

    def __init__(self, clock: FakeClock, ceiling: float, notice: float) -> None:
        self.clock = clock
        self.end = clock() + ceiling
        self.notice = notice
        self.calls: list[float] = []

    def extend_lease(self, message: Message, seconds: float) -> bool:
        self.calls.append(self.clock())
        left = self.end - self.clock()
        if seconds + self.notice > left:
            raise LeaseEnding("the lease ends", left)
        return True


def test_a_lease_with_an_end_stops_the_command_wrap_up_seconds_before_it() -> None:
    clock = FakeClock()
    queue = CeilingQueue(clock, ceiling=4 * 3600, notice=1800)
    beat = Heartbeat(queue, clock, background=False, wrap_up=600)  # type: ignore[arg-type]
    abort = threading.Event()
    with beat.keep(message("a"), 900, abort) as lease:
        while (wait := beat.tick()) is not None:
            assert lease.ended is None  # told in time, but running on until the stop
            clock.advance(wait)
    assert abort.is_set() and not lease.lost.is_set()
    assert lease.ended == "the lease ends"
    assert queue.end - clock() == 600  # exactly the wrap-up time left
    assert beat.tick() is None  # not extended again
    beat.close()


def test_a_task_ending_before_the_stop_is_not_marked_ended() -> None:
    clock = FakeClock()
    queue = CeilingQueue(clock, ceiling=3600, notice=1800)
    beat = Heartbeat(queue, clock, background=False, wrap_up=600)  # type: ignore[arg-type]
    abort = threading.Event()
    with beat.keep(message("a"), 900, abort) as lease:
        for _ in range(5):  # beats at 300 … 1200 s: at 1200 s, 2400 s left < 900 + 1800
            wait = beat.tick()
            assert wait is not None
            clock.advance(wait)
    assert lease.ending == "the lease ends"
    assert lease.ended is None and not abort.is_set()
    beat.close()
