"""The worker's heartbeat: one thread keeps the current task's lease alive. What it does
when is a pure plan (`plan_beat`) driven by a fake clock here; the thread's waits are
observed (`ParkWatch`), so no test sleeps to show that nothing happened."""

from __future__ import annotations

import threading
import time

from distributed_something.interfaces.queue import Message
from distributed_something.worker.heartbeat import (
    BeatPlan,
    Heartbeat,
    LeaseEnding,
    next_due,
    plan_beat,
    stop_time,
)
from testkit import FakeClock, wait_for


class RecordingQueue:
    """Answers extend_lease from a script and records every call."""

    def __init__(self, answers: list[bool | Exception] | None = None) -> None:
        self.answers = list(answers or [])
        self.calls: list[tuple[str, float]] = []

    def extend_lease(self, message: Message, seconds: float) -> bool:
        self.calls.append((message.task_id, seconds))
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def message(task_id: str) -> Message:
    return Message(handle=f"h-{task_id}", task_id=task_id, body="{}", receive_count=1)


class ParkWatch:
    """The heartbeat thread's `Waiter`: waits as the real one does, and records each wait's
    timeout and whether a lease was held then, so a test sees the thread parked (waiting
    with no lease held: when it wakes it has nothing to extend), without sleeping to find
    out."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.idle: list[bool] = []
        self.beat: Heartbeat | None = None
        self.changed = threading.Condition()

    def watching(self, beat: Heartbeat) -> Heartbeat:
        self.beat = beat
        return beat

    def __call__(self, cond: threading.Condition, seconds: float | None) -> object:
        with self.changed:
            self.timeouts.append(seconds)
            self.idle.append(self.beat is not None and self.beat._lease is None)
            self.changed.notify_all()
        return cond.wait(seconds)

    def wait_parked(self, after: int = 0) -> None:
        """Until the thread waits with no lease held, after ``after`` recorded waits."""
        with self.changed:
            parked = self.changed.wait_for(lambda: any(self.idle[after:]), timeout=10)
        assert parked, "the heartbeat thread never parked"


def test_the_plan_waits_until_due_extends_then_stops_at_the_stop_time() -> None:
    assert plan_beat(due=110.0, stop_at=None, now=100.0) == BeatPlan("wait", 10.0)
    assert plan_beat(due=100.0, stop_at=None, now=100.0) == BeatPlan("extend")
    assert plan_beat(due=100.0, stop_at=150.0, now=120.0) == BeatPlan("extend")
    assert plan_beat(due=150.0, stop_at=150.0, now=150.0) == BeatPlan("stop")
    assert plan_beat(due=200.0, stop_at=150.0, now=160.0) == BeatPlan("wait", 40.0)


def test_the_next_beat_is_a_third_of_the_lease_or_the_stop_time() -> None:
    assert next_due(100.0, 900.0, None) == 400.0
    assert next_due(100.0, 900.0, 250.0) == 250.0
    assert next_due(100.0, 0.3, None) == 100.2  # never more often than every 0.2 s


def test_the_stop_time_leaves_the_wrap_up_before_the_lease_ends() -> None:
    assert stop_time(1000.0, seconds_left=3600.0, wrap_up=600.0, stop_at=None) == 4000.0
    assert stop_time(1000.0, seconds_left=300.0, wrap_up=600.0, stop_at=None) == 1000.0
    assert stop_time(1000.0, seconds_left=3600.0, wrap_up=600.0, stop_at=2000.0) == 2000.0


def test_one_thread_extends_each_task_in_turn_and_stops_between_tasks() -> None:
    queue = RecordingQueue()
    watch = ParkWatch()
    beat = watch.watching(Heartbeat(queue, wait=watch))  # type: ignore[arg-type]
    abort = threading.Event()
    threads_before = threading.active_count()
    with beat.keep(message("a"), 0.6, abort):  # beats every 0.2 s
        assert wait_for(lambda: len(queue.calls) >= 2)
        waits = len(watch.timeouts)
    watch.wait_parked(after=waits)
    calls_after_a = len(queue.calls)
    with beat.keep(message("b"), 0.6, abort) as lease:
        assert len(queue.calls) == calls_after_a  # parked while nothing was held
        assert wait_for(lambda: ("b", 0.6) in queue.calls)
        assert threading.active_count() == threads_before + 1  # the same single thread
    assert {task for task, _ in queue.calls} == {"a", "b"}
    assert not lease.lost.is_set() and not abort.is_set()
    beat.close()
    assert threading.active_count() == threads_before


def test_a_run_of_short_tasks_does_not_wake_the_thread_for_each() -> None:
    queue = RecordingQueue()
    watch = ParkWatch()
    beat = watch.watching(Heartbeat(queue, wait=watch))  # type: ignore[arg-type]
    abort = threading.Event()
    for index in range(50):  # each far shorter than the 20 s to its first beat
        with beat.keep(message(f"t{index}"), 60.0, abort):
            time.sleep(0.005)  # a short command: time for a woken thread to run
    # Woken once, by the first task; every later lease's first beat comes after the wait it
    # is in ends (a switch to the thread per task took a quarter of a no-op task's time).
    assert wait_for(lambda: len(watch.timeouts) >= 1)
    assert len(watch.timeouts) <= 2, watch.timeouts
    assert queue.calls == []
    beat.close()


def test_nothing_is_extended_while_no_lease_is_held() -> None:
    clock = FakeClock()
    queue = RecordingQueue()
    beat = Heartbeat(queue, clock, background=False)  # type: ignore[arg-type]
    with beat.keep(message("a"), 0.6, threading.Event()):
        clock.advance(0.2)
        assert beat.tick() is not None
    assert queue.calls == [("a", 0.6)]
    clock.advance(3600)
    assert beat.tick() is None
    assert queue.calls == [("a", 0.6)]


def test_the_holder_is_told_after_each_extension_the_queue_answered() -> None:
    """`on_beat` (the worker renews the task's claim): after an extension that kept the
    lease, not after one that lost it, and never when no extension was due."""
    clock = FakeClock()
    queue = RecordingQueue([True, False])
    beat = Heartbeat(queue, clock, background=False)  # type: ignore[arg-type]
    told: list[float] = []
    with beat.keep(message("a"), 0.6, threading.Event(), on_beat=lambda: told.append(clock())):
        assert beat.tick() is not None and told == []  # not due yet
        clock.advance(0.2)
        beat.tick()
        assert told == [clock()]
        clock.advance(0.2)
        assert beat.tick() is None  # lost: not told
    assert len(told) == 1


def test_a_short_task_is_never_extended() -> None:
    queue = RecordingQueue()
    beat = Heartbeat(queue)  # type: ignore[arg-type]
    for i in range(50):
        with beat.keep(message(str(i)), 60, threading.Event()):
            pass
    beat.close()
    assert queue.calls == []


def test_a_lost_lease_sets_both_events_and_is_not_extended_again() -> None:
    clock = FakeClock()
    queue = RecordingQueue([RuntimeError("throttled"), False])
    beat = Heartbeat(queue, clock, background=False)  # type: ignore[arg-type]
    abort = threading.Event()
    with beat.keep(message("a"), 0.6, abort) as lease:
        while (wait := beat.tick()) is not None:
            clock.advance(wait)
        assert abort.is_set() and lease.lost.is_set()
        clock.advance(3600)
        assert beat.tick() is None
        assert len(queue.calls) == 2  # the error was retried; the loss ends it


def test_a_lost_lease_parks_the_thread() -> None:
    queue = RecordingQueue([False])
    watch = ParkWatch()
    beat = watch.watching(Heartbeat(queue, wait=watch))  # type: ignore[arg-type]
    abort = threading.Event()
    with beat.keep(message("a"), 0.6, abort) as lease:
        assert abort.wait(10)
        watch.wait_parked()
        assert lease.lost.is_set() and queue.calls == [("a", 0.6)]
    beat.close()


def test_leaving_waits_for_an_extension_in_progress() -> None:
    events: list[str] = []
    started, release = threading.Event(), threading.Event()

    class SlowQueue:
        def extend_lease(self, message: Message, seconds: float) -> bool:
            events.append("extension started")
            started.set()
            assert release.wait(10)
            events.append("extension ended")
            return True

    watch = ParkWatch()
    beat = watch.watching(Heartbeat(SlowQueue(), wait=watch))  # type: ignore[arg-type]
    leaving, left = threading.Event(), threading.Event()

    def end_the_extension() -> None:
        # Once the block is being left: a leaving that did not wait would be seen here
        # (`left`); a correct one is still blocked when the window closes.
        assert leaving.wait(10)
        left.wait(0.2)
        release.set()

    releaser = threading.Thread(target=end_the_extension)
    releaser.start()
    with beat.keep(message("a"), 0.6, threading.Event()):
        assert started.wait(10)
        waits = len(watch.timeouts)
        leaving.set()
    events.append("left")
    left.set()
    releaser.join()
    assert events == ["extension started", "extension ended", "left"]
    watch.wait_parked(after=waits)  # none after the block ended
    assert events.count("extension started") == 1
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
