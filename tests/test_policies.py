"""The pure decisions: check-if-done, retry backoff, heartbeat, and the monitor policy."""

from __future__ import annotations

import pytest

from distributed_something.config.model import CheckIfDoneConfig
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.monitor.policy import (
    CHEAPEST_AFTER_SECONDS,
    MAX_REQUEUES,
    MAX_STRETCHED_PAUSE,
    READ_SHARE,
    DrainCheck,
    Observation,
    PolicyConfig,
    ReplaceWorkers,
    ScaleTo,
    Teardown,
    decide,
    drain_check,
    next_pause,
    reconcile,
)
from distributed_something.worker.policy import (
    MAX_LEASE_SECONDS,
    heartbeat_interval,
    lease_seconds,
    outputs_look_done,
    retry_delay,
)
from testkit import FakeClock


def objs(*pairs: tuple[str, int]) -> list[ObjectInfo]:
    return [ObjectInfo(k, s) for k, s in pairs]


def test_rule_without_expected_number_never_fires() -> None:
    assert not outputs_look_done(objs(("a", 10)) * 50, CheckIfDoneConfig())


def test_rule_counts_big_enough_named_objects() -> None:
    rule = CheckIfDoneConfig(
        expected_number_files=2, min_file_size_bytes=5, necessary_string="Cells"
    )
    assert outputs_look_done(objs(("p/Cells.csv", 5), ("p/x/Cells2.csv", 9)), rule)
    assert not outputs_look_done(objs(("p/Cells.csv", 5), ("p/Cells2.csv", 4)), rule)
    # The string must be in the object's name, not only in its folder.
    assert not outputs_look_done(objs(("Cells/a.csv", 5), ("Cells/b.csv", 9)), rule)


def test_rule_stops_reading_once_satisfied() -> None:
    read = []

    def listing():  # type: ignore[no-untyped-def]
        for i in range(10_000):
            read.append(i)
            yield ObjectInfo(f"k{i}", 10)

    assert outputs_look_done(listing(), CheckIfDoneConfig(expected_number_files=3))
    assert len(read) == 3


def test_the_monitor_waits_its_interval_unless_readings_are_costly() -> None:
    assert next_pause(1.0, 0.01) == 1.0  # a cheap reading: the interval
    assert next_pause(60.0, 2.0) == 60.0  # AWS: the interval is long already
    # A reading of 0.2 s (a large run's ledger): at most 1/READ_SHARE of the time reading.
    assert next_pause(1.0, 0.2) == pytest.approx(0.2 * READ_SHARE)
    assert next_pause(1.0, 0.2) > 1.0
    assert next_pause(1.0, 100.0) == MAX_STRETCHED_PAUSE  # never stretched without end
    assert next_pause(0.0, 0.0) == 0.0


def test_retry_delay_grows_caps_and_stops_at_the_limit() -> None:
    no_jitter = lambda: 0.0  # noqa: E731
    delays = [retry_delay(n, 10, base=2, cap=30, jitter=no_jitter) for n in range(1, 10)]
    assert delays[:5] == [2, 4, 8, 16, 30]
    assert all(d == 30 for d in delays[4:])
    assert retry_delay(3, 3, jitter=no_jitter) == 0.0
    assert retry_delay(1, 3, base=2, jitter=lambda: 1.0) == 3.0


def test_heartbeat_beats_three_times_per_lease() -> None:
    assert heartbeat_interval(60) == 20
    assert heartbeat_interval(0.1) == 0.2


def test_the_lease_is_the_visibility_up_to_ten_minutes() -> None:
    # A DCP config's hours-long SQS_MESSAGE_VISIBILITY would hide a vanished worker's task
    # for hours: the lease (extended while the command runs) is capped.
    assert lease_seconds(60) == 60.0 and lease_seconds(600) == 600.0
    assert lease_seconds(3 * 3600) == MAX_LEASE_SECONDS == 600.0
    assert heartbeat_interval(lease_seconds(43200)) == 200.0


def obs(now: float, visible: int, in_flight: int, running: int = 4) -> Observation:
    return Observation(now, QueueCounts(visible, in_flight, 0), ComputeStatus(4, running), 0.0)


CFG = PolicyConfig(workers=8, workers_per_machine=2)


def test_only_the_drain_checks_verdict_tears_down() -> None:
    # An empty queue is not the end of a run: only the drain check's "finished" is.
    assert Teardown() not in decide(obs(10, 0, 0), CFG)
    done = Observation(10, QueueCounts(0, 0, 0), ComputeStatus(4, 4), 0.0, finished=True)
    assert decide(done, CFG) == [Teardown()]


def test_drain_check_needs_two_empty_readings_apart_and_a_finished_ledger() -> None:
    clock = FakeClock(100.0)

    def check(since: float | None, drained: bool, ledger: bool) -> DrainCheck:
        return drain_check(
            now=clock(),
            drained_since=since,
            queue_drained=drained,
            ledger_finished=ledger,
            confirm_seconds=60,
        )

    first = check(None, True, True)
    assert first == DrainCheck(100.0, "confirming")  # one reading proves nothing
    clock.advance(30)
    assert check(first.drained_since, True, True).verdict == "confirming"
    clock.advance(30)
    assert check(first.drained_since, True, True) == DrainCheck(100.0, "finished")
    # Work showing up again resets the clock.
    assert check(first.drained_since, False, True) == DrainCheck(None, "working")
    # The queue stayed empty but the ledger has tasks without an outcome: find them.
    assert check(first.drained_since, True, False).verdict == "reconcile"
    # The queue's counts never decide alone: a finished ledger with a busy queue works on.
    assert check(None, False, True).verdict == "working"


def test_reconcile_marks_dead_letters_dead_and_requeues_the_others_a_bounded_number_of_times() -> (
    None
):
    plan = reconcile(
        ["a", "b", "c", "d"],
        dead_letters={"a": "boom", "b": ""},
        requeues={"c": 0, "d": MAX_REQUEUES},
    )
    assert plan.dead["a"] == "boom"
    assert "vanished" in plan.dead["b"]
    assert "given up" in plan.dead["d"]
    assert plan.requeue == ["c"]
    # Dead-lettered by hand-backs with tries left: sent again, as often as a lost task.
    again = reconcile(
        ["a", "b", "e"],
        dead_letters={"a": "boom", "b": "", "e": ""},
        requeues={"e": MAX_REQUEUES},
        handed_back={"b", "e"},
    )
    assert again.requeue == ["b"] and set(again.dead) == {"a", "e"}
    assert "given up" in again.dead["e"]


def test_full_fleet_while_work_is_visible() -> None:
    assert decide(obs(10, 50, 8, running=8), CFG) == [ScaleTo(4)]


def test_tail_shrinks_to_machines_still_busy() -> None:
    assert decide(obs(10, 0, 3, running=8), CFG) == [ScaleTo(2)]
    assert decide(obs(10, 0, 1, running=8), CFG) == [ScaleTo(1)]


def test_dead_workers_are_replaced_while_work_remains() -> None:
    assert decide(obs(10, 5, 2, running=3), CFG) == [ReplaceWorkers(8), ScaleTo(4)]
    # nothing visible: nothing to replace them for
    assert decide(obs(10, 0, 2, running=1), CFG) == [ScaleTo(1)]


@pytest.mark.parametrize(
    ("elapsed", "machines"), [(CHEAPEST_AFTER_SECONDS - 1, 4), (CHEAPEST_AFTER_SECONDS, 1)]
)
def test_cheapest_mode_drops_to_one_machine_after_15_minutes(elapsed: float, machines: int) -> None:
    cfg = PolicyConfig(workers=8, workers_per_machine=2, cheapest=True)
    actions = decide(obs(elapsed, 100, 8, running=8), cfg)
    assert actions[-1] == ScaleTo(machines)
