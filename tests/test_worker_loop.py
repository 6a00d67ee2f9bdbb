"""The worker loop one step at a time, on the real local queue and folder storage."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends import Backend
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import Config
from distributed_something.errors import BackendError, QueueGone
from distributed_something.interfaces.queue import Message, QueueCounts
from distributed_something.interfaces.storage import Storage
from distributed_something.jobs.model import Task
from distributed_something.ledger import read_ledger
from distributed_something.recipes import base
from distributed_something.recipes.base import Workdir
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import DoneMarker, ManifestEntry, RunRecords
from distributed_something.worker import loop as loop_module
from distributed_something.worker.loop import MAX_HELD_TASKS, Outcome, Worker, WorkerSettings
from distributed_something.worker.policy import MAX_LEASE_SECONDS
from distributed_something.worker.runner import SubprocessRunner
from testkit import FakeClock, NoCompute, NoProvisioner

PY = sys.executable


class Rig:
    """A worker wired to a queue with a fake clock and a folder bucket in tmp_path."""

    def __init__(
        self, tmp_path: Path, argv: list[str], *, bucket: Storage | None = None, **config: Any
    ) -> None:
        self.clock = FakeClock(1_000_000.0)
        self.queue = SqliteQueue(
            tmp_path / "q.sqlite", max_receive_count=config.pop("retries", 3), clock=self.clock
        )
        self.storage = bucket or FolderStorage(tmp_path / "bucket")
        raw: dict[str, Any] = {
            "app_name": "W",
            "recipe": {"name": "command", "argv": argv, "output_prefix": "out/{name}"},
            "queue": {"visibility": config.pop("visibility", 30)},
        }
        raw.update(config)
        self.config = Config.model_validate(raw)
        backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.scratch = tmp_path / "scratch"
        self.worker = Worker(
            self.config,
            backend,
            CommandRecipe(),
            SubprocessRunner(grace_seconds=2),
            WorkerSettings(name="w1", run_id="r1", scratch_root=self.scratch, poll_interval=0.01),
            clock=self.clock,
            sleep=lambda _s: None,
        )
        self.records = RunRecords(self.storage, "W", "r1")

    def submit(self, *groups: dict[str, Any]) -> list[Task]:
        tasks = [Task(body={"group": g}) for g in groups]
        self.queue.send_batch([(t.id, t.body_json()) for t in tasks])
        return tasks

    def keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.storage.list(prefix)]


def write(text: str) -> list[str]:
    """argv of a command writing ``text`` (a template) into the output folder."""
    return [
        PY,
        "-c",
        "import sys; open(sys.argv[1] + '/r.txt', 'w').write(sys.argv[2])",
        "{output_dir}",
        text,
    ]


def scratch_files(scratch: Path) -> list[Path]:
    """What tasks left in the workers' scratch: anything but each worker's folder and its
    (empty) inputs/ and outputs/."""
    allowed = {w for w in scratch.iterdir() if w.is_dir()}
    allowed |= {w / name for w in allowed for name in ("inputs", "outputs")}
    return [p for p in scratch.rglob("*") if p not in allowed or not p.is_dir()]


def test_done_uploads_outputs_marks_done_deletes_and_cleans_scratch(tmp_path: Path) -> None:
    rig = Rig(tmp_path, write("hello {name}"))
    (task,) = rig.submit({"name": "a"})
    assert rig.worker.step() is Outcome.DONE
    assert rig.storage.get_bytes("out/a/r.txt") == b"hello a"
    marker = rig.records.read_done(task.id)
    assert marker is not None and marker.outputs == ["out/a/r.txt"] and marker.attempt == 1
    assert rig.queue.counts().drained
    assert scratch_files(rig.scratch) == []  # emptied for the next task, removed at exit
    rig.worker.close()
    assert list(rig.scratch.iterdir()) == []
    # The command printed nothing: a log of only our header is not stored.
    assert rig.records.logs_of(task.id) == []


def test_a_log_is_stored_when_the_command_printed_or_failed(tmp_path: Path) -> None:
    printing = [PY, "-c", "import sys; print('made', sys.argv[1])", "{name}"]
    rig = Rig(tmp_path, printing)
    (task,) = rig.submit({"name": "p"})
    assert rig.worker.step() is Outcome.DONE
    ((_, log),) = rig.records.logs_of(task.id)
    assert log.startswith(f"ds: task {task.id} attempt 1 on w1\n") and "argv" in log
    assert log.endswith("made p\n")
    quiet_failure = Rig(tmp_path / "f", [PY, "-c", "raise SystemExit(3)"])
    (failed,) = quiet_failure.submit({"name": "f"})
    assert quiet_failure.worker.step() is Outcome.FAILED
    ((_, kept),) = quiet_failure.records.logs_of(failed.id)
    assert "argv" in kept  # a failure's log is kept even when the command printed nothing


def test_inputs_are_staged_before_the_command(tmp_path: Path) -> None:
    argv = [
        PY,
        "-c",
        "import shutil,sys; shutil.copy(sys.argv[1], sys.argv[2])",
        "{input_dir}/data/{name}.txt",
        "{output_dir}/copy.txt",
    ]
    rig = Rig(tmp_path, argv)
    rig.config.recipe.inputs = ["data/{name}.txt"]
    rig.storage.put_bytes("data/b.txt", b"input bytes")
    rig.submit({"name": "b"})
    assert rig.worker.step() is Outcome.DONE
    assert rig.storage.get_bytes("out/b/copy.txt") == b"input bytes"


def test_missing_input_is_dead_at_once_unless_not_found_is_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["true"])
    rig.config.recipe.inputs = ["data/{name}.txt"]
    (task,) = rig.submit({"name": "nope"})
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert "data/nope.txt" in failure.error
    assert (failure.cause, failure.final) == ("not_found", True)
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight, counts.dead) == (0, 0, 0)  # deleted: no retry
    # queue.retry.retry_on.not_found = true: released with a backoff like any failure.
    retry_missing = {"retry": {"retry_on": {"not_found": True}}}
    retried = Rig(tmp_path / "retried", ["true"], queue=retry_missing)
    retried.config.recipe.inputs = ["data/{name}.txt"]
    (again,) = retried.submit({"name": "nope"})
    assert retried.worker.step() is Outcome.FAILED
    (failure,) = retried.records.failures_of(again.id)
    assert (failure.cause, failure.final) == ("not_found", False)
    counts = retried.queue.counts()
    assert (counts.visible, counts.in_flight) == (0, 1)  # held back by the retry delay
    retried.clock.advance(10)
    assert retried.queue.counts().visible == 1


def test_a_task_failing_before_its_command_started_has_a_stored_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [PY, "-c", "print('never runs')"])
    rig.config.recipe.inputs = ["data/{name}.txt"]
    (task,) = rig.submit({"name": "gone"})
    assert rig.worker.step() is Outcome.FAILED
    ((_, log),) = rig.records.logs_of(task.id)
    (failure,) = rig.records.failures_of(task.id)
    assert log == (
        f"ds: task {task.id} attempt 1 on w1\n"
        f"ds: failed before the command started: {failure.error}\n"
    )
    assert "data/gone.txt" in log and "never runs" not in log
    # A plan the recipe refuses (a template naming a missing key) is kept the same way.
    refused = Rig(tmp_path / "plan", ["echo", "{missing_key}"])
    (bad,) = refused.submit({"name": "b"})
    assert refused.worker.step() is Outcome.FAILED
    ((_, kept),) = refused.records.logs_of(bad.id)
    assert kept.startswith(f"ds: task {bad.id} attempt 1 on w1\n") and "missing_key" in kept


def test_a_command_failure_log_is_not_rewritten_by_the_failure(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [PY, "-c", "import sys; print('tool said no'); sys.exit(4)"])
    (task,) = rig.submit({"name": "t"})
    assert rig.worker.step() is Outcome.FAILED
    ((_, log),) = rig.records.logs_of(task.id)
    assert "argv" in log and log.endswith("tool said no\n")
    assert "failed before the command started" not in log


class GoneQueue(SqliteQueue):
    """A queue deleted under the worker (SQS after `ds cleanup`)."""

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        raise QueueGone("SQS ReceiveMessage on queue WQueue failed: NonExistentQueue")


def test_a_worker_stops_when_its_queue_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, ["true"])
    gone = GoneQueue(tmp_path / "gone.sqlite", max_receive_count=3, clock=rig.clock)
    rig.worker.backend = replace(rig.worker.backend, queue=gone)
    slept: list[float] = []
    rig.worker._sleep = slept.append
    caplog.set_level(logging.INFO, logger="ds.worker")
    assert rig.worker.step() is Outcome.DRAINED
    assert slept == []  # at once: no backoff, no retry
    assert rig.worker.run().counts == {"drained": 1}
    said = [r.getMessage() for r in caplog.records if "no longer exists" in r.getMessage()]
    assert said == ["the queue WQueue no longer exists: the run is over"] * 2
    # Any other receive error stays a retry.
    rig.worker.backend = replace(rig.worker.backend, queue=rig.queue)

    def throttled(*_args: object) -> list[Message]:
        raise BackendError("SQS ReceiveMessage failed: Throttling")

    rig.queue.receive = throttled  # type: ignore[method-assign]
    assert rig.worker.step() is Outcome.IDLE and slept


def test_a_failed_attempt_whose_message_cannot_be_handed_back_is_recorded_once(
    tmp_path: Path,
) -> None:
    # `ds cleanup` deleted the queue while the command ran: the command failed, its attempt
    # was recorded failed, then handing its message back raised QueueGone. That is not a
    # second attempt (found by the accounting walk on AWS: 2 attempts, 1 execution).
    rig = Rig(tmp_path, [PY, "-c", "import sys; sys.exit(3)"])
    (task,) = rig.submit({"name": "f"})

    def gone(*_args: object, **_kwargs: object) -> None:
        raise QueueGone("SQS ChangeMessageVisibility on queue WQueue failed: QueueDoesNotExist")

    rig.queue.release = gone  # type: ignore[method-assign]
    assert rig.worker.step() is Outcome.FAILED
    attempts = rig.records.attempt_keys(task.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "failed")]
    assert [f.exit_code for f in rig.records.failures_of(task.id)] == [3]


def test_failure_keeps_outputs_out_and_dead_letters_after_retries(tmp_path: Path) -> None:
    argv = [
        PY,
        "-c",
        "import sys; open(sys.argv[1] + '/x', 'w').write('partial');"
        "print('boom on stderr', file=sys.stderr); sys.exit(3)",
        "{output_dir}",
    ]
    rig = Rig(tmp_path, argv, retries=2)
    (task,) = rig.submit({"name": "p"})
    assert rig.worker.step() is Outcome.FAILED
    rig.clock.advance(1000)
    assert rig.worker.step() is Outcome.FAILED
    rig.clock.advance(1000)
    # The third receive finds the limit reached: the queue dead-letters it.
    assert rig.worker.step() is Outcome.DRAINED
    (dead,) = rig.queue.list_dead()
    assert dead.task_id == task.id and "code 3" in dead.error
    failures = rig.records.failures_of(task.id)
    assert [f.attempt for f in failures] == [1, 2]
    assert failures[-1].exit_code == 3 and "boom on stderr" in failures[-1].log_tail
    assert rig.keys("out/") == []
    assert rig.records.read_done(task.id) is None


def test_done_marker_skips_without_running(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["false"])
    (task,) = rig.submit({"name": "d"})
    rig.records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "old", "out/d"))
    assert rig.worker.step() is Outcome.SKIPPED
    assert rig.records.count_skipped() == 1
    assert rig.queue.counts().drained


def test_check_if_done_disabled_runs_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, write("again"), check_if_done={"enabled": False})
    (task,) = rig.submit({"name": "d"})
    rig.records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "old", "out/d"))
    assert rig.worker.step() is Outcome.DONE
    marker = rig.records.read_done(task.id)
    assert marker is not None and marker.worker == "w1"  # ran again and marked anew
    assert rig.storage.get_bytes("out/d/r.txt") == b"again"


def test_a_second_completion_is_kept_in_the_marker(tmp_path: Path) -> None:
    rig = Rig(tmp_path, write("twice"), visibility=1)
    (task,) = rig.submit({"name": "t"})
    # A worker completed the task, then vanished before deleting the message.
    first = rig.queue.receive(1, 1)[0]
    rig.records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 5.0, "gone", "out/t"))
    rig.clock.advance(5)  # its lease ran out: the task is received again (attempt 2)
    assert first.receive_count == 1
    rig.config.check_if_done.enabled = False
    assert rig.worker.step() is Outcome.DONE
    marker = rig.records.read_done(task.id)
    assert marker is not None and marker.attempt == 2 and len(marker.completions) == 2


class WorkerVanished(BaseException):
    """The worker process ends here (as under SIGKILL): nothing after this line runs."""


@pytest.mark.parametrize("closed_by", ["", "monitor", "monitor-resent"])
def test_a_completion_whose_worker_vanished_before_recording_it_counts_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_by: str
) -> None:
    # The window the chaos test met once: the done marker written, then the worker killed
    # before it closed the attempt record or deleted the message. The redelivery must not
    # report as skipped (done before this run) a task this run's first attempt completed.
    rig = Rig(tmp_path, write("once"), visibility=1)
    (task,) = rig.submit({"name": "v"})
    rig.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "v"})])

    def vanish(*args: Any) -> None:
        raise WorkerVanished

    with monkeypatch.context() as patch:
        patch.setattr(rig.worker.records, "close_attempt", vanish)
        with pytest.raises(WorkerVanished):
            rig.worker.step()
    (open_attempt,) = rig.records.attempt_keys(task.id)
    assert open_attempt.outcome == "running" and rig.records.read_done(task.id) is not None
    if closed_by:  # the monitor saw the worker gone first
        rig.records.close_stale(open_attempt, "lost", rig.clock())
    if closed_by == "monitor-resent":  # and sent the task again as a fresh message
        rig.clock.advance(5)
        (held,) = rig.queue.receive(1, 60)  # (as from the dead-letter store)
        rig.queue.delete(held)
        rig.queue.send_batch([(task.id, held.body)])
    assert read_ledger(rig.records).tasks[task.id].state != "done"
    rig.clock.advance(5)  # the lease runs out: attempt 2 finds the marker this run wrote
    assert rig.worker.step() is Outcome.SKIPPED
    assert rig.queue.counts().drained
    (settled,) = rig.records.attempt_keys(task.id)
    assert (settled.attempt, settled.outcome) == (1, "done")
    entry = read_ledger(rig.records).tasks[task.id]
    assert (entry.state, entry.attempts, entry.duplicate) == ("done", 1, False)
    assert rig.records.count_skipped() == 0
    assert rig.storage.get_bytes("out/v/r.txt") == b"once"  # ran once


def test_a_vanished_workers_task_comes_back_in_ten_minutes_whatever_the_visibility(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legacy config's SQS_MESSAGE_VISIBILITY of hours (the family's workers never extend
    their lease) is not the lease ds's worker takes: a worker that vanishes mid-task (its
    container killed) leaves the task hidden for at most `MAX_LEASE_SECONDS`."""
    rig = Rig(tmp_path, ["true"], visibility=4 * 3600)
    rig.submit({"name": "v"})

    def vanish(*args: Any, **kwargs: Any) -> None:
        raise WorkerVanished

    with monkeypatch.context() as patch:
        patch.setattr(rig.worker.runner, "run", vanish)
        with pytest.raises(WorkerVanished):
            rig.worker.step()
    assert rig.queue.receive(1, 60) == []  # still leased to the vanished worker
    rig.clock.advance(MAX_LEASE_SECONDS - 1)
    assert rig.queue.receive(1, 60) == []
    rig.clock.advance(2)
    (again,) = rig.queue.receive(1, 60)
    assert again.receive_count == 2


def test_on_the_local_bucket_a_tasks_end_is_one_write_with_the_next_start(
    tmp_path: Path,
) -> None:
    # There, the window above cannot open: the done marker, the attempt's closed record and
    # the removal of its open one are one transaction, made with the next attempt's start
    # (or at once when no task follows). Refused (a full disk), none is made, not even the
    # marker, and the message stays: the records are tried again, and only once they are
    # written is the message deleted. (One write after the other, the marker would be
    # stored and the attempt left open.)
    records_file = tmp_path / "records.sqlite"
    bucket = LocalBucket(FolderStorage(tmp_path / "bucket"), SqliteObjects(records_file))
    rig = Rig(tmp_path, write("x {name}"), bucket=bucket)
    first, second = rig.submit({"name": "a"}, {"name": "b"})
    rig.records.write_manifest(
        "p0", [ManifestEntry(first.id, {"name": "a"}), ManifestEntry(second.id, {"name": "b"})]
    )
    assert rig.worker.step() is Outcome.DONE
    (running,) = rig.records.attempt_keys(first.id)
    assert running.outcome == "running"  # kept for the next start...
    assert rig.worker.step() is Outcome.DONE
    (closed,) = rig.records.attempt_keys(first.id)
    assert closed.outcome == "done" and rig.records.read_done(first.id) is not None
    refuse = sqlite3.connect(records_file, isolation_level=None)
    refuse.execute(
        "CREATE TRIGGER full BEFORE INSERT ON objects WHEN new.key LIKE '%/attempts/%.done.json' "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    assert rig.worker.step() is Outcome.IDLE  # ...or written when none follows: refused
    assert rig.records.read_done(second.id) is None
    assert [a.outcome for a in rig.records.attempt_keys(second.id)] == ["running"]
    assert rig.queue.counts().in_flight == 1  # the message waits for its records
    refuse.execute("DROP TRIGGER full")
    assert rig.worker.step() is Outcome.DRAINED  # written at the next try, then deleted
    ledger = read_ledger(rig.records)
    assert [(ledger.tasks[t.id].state, ledger.tasks[t.id].attempts) for t in (first, second)] == [
        ("done", 1),
        ("done", 1),
    ]


@pytest.mark.parametrize("check_if_done", [True, False])
def test_a_done_tasks_message_goes_with_the_next_receive_or_at_exit(
    tmp_path: Path, check_if_done: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However loaded the machine, these tasks count as short (a long one makes the deletes
    # at once: test_a_long_task_does_not_keep_the_last_tasks_message_waiting).
    monkeypatch.setattr(loop_module, "SHORT_TASK_SECONDS", 30.0)
    rig = Rig(tmp_path, write("x {name}"), visibility=1)
    rig.worker.runner.poll_seconds = 30.0  # type: ignore[attr-defined]
    first, second = rig.submit({"name": "a"}, {"name": "b"})
    other = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=rig.clock)
    assert rig.worker.step() is Outcome.DONE
    # Deleted by the next receive, not by a transaction of its own...
    assert other.counts().in_flight == 1
    assert rig.worker.step() is Outcome.DONE
    assert other.counts().in_flight == 1  # (the second one's, now)
    rig.worker.close()  # ...or when the worker exits
    assert other.counts().drained
    # A worker that dies before leaves the message to come back when its lease ends: its
    # next delivery finds the task done by this run, and nothing runs twice, even when
    # check_if_done is off (it is about what earlier runs did).
    rig2 = Rig(
        tmp_path / "2",
        ["sh", "-c", 'echo "$0" >> ../../ledger', "{name}"],
        visibility=1,
        check_if_done={"enabled": check_if_done},
    )
    (task,) = rig2.submit({"name": "c"})
    rig2.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "c"})])
    assert rig2.worker.step() is Outcome.DONE
    rig2.queue._soon.clear()  # the process ends here: its pending delete is lost
    rig2.clock.advance(5)
    assert rig2.worker.step() is Outcome.SKIPPED
    assert rig2.worker.step() is Outcome.DRAINED
    entry = read_ledger(rig2.records).tasks[task.id]
    assert (entry.state, entry.attempts) == ("done", 1) and rig2.records.count_skipped() == 0
    assert (tmp_path / "2" / "ledger").read_text() == "c\n"  # it ran once
    assert all(rig.records.read_done(t.id) is not None for t in (first, second))


def test_a_marker_of_another_run_is_still_a_skip_on_redelivery(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["false"], visibility=1)
    (task,) = rig.submit({"name": "o"})
    rig.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "o"})])
    rig.records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "old", "out/o", run_id="r0"))
    rig.queue.receive(1, 1)  # a first delivery whose worker vanished before looking
    rig.clock.advance(5)
    assert rig.worker.step() is Outcome.SKIPPED
    assert rig.records.count_skipped() == 1
    assert read_ledger(rig.records).tasks[task.id].state == "skipped"


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ({"out/e/a.csv": b"1", "out/e/b.csv": b"2"}, Outcome.SKIPPED),
        ({"out/e/a.csv": b"1", "out/e/b.txt": b"2"}, Outcome.DONE),  # necessary string
        ({"out/e/a.csv": b"1", "out/e/b.csv": b""}, Outcome.DONE),  # too small
        ({"out/ee/a.csv": b"1", "out/ee/b.csv": b"1"}, Outcome.DONE),  # other prefix
    ],
)
def test_family_check_if_done_rule(
    tmp_path: Path, objects: dict[str, bytes], expected: Outcome
) -> None:
    rule = {"expected_number_files": 2, "min_file_size_bytes": 1, "necessary_string": ".csv"}
    rig = Rig(tmp_path, write("x"), check_if_done=rule)
    for key, data in objects.items():
        rig.storage.put_bytes(key, data)
    rig.submit({"name": "e"})
    assert rig.worker.step() is expected


def test_stop_hands_the_task_back_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [PY, "-c", "import time; time.sleep(60)"])
    (task,) = rig.submit({"name": "s"})
    timer = threading.Timer(0.5, rig.worker.stop)
    timer.start()
    started = time.monotonic()
    assert rig.worker.step() is Outcome.STOPPED
    assert time.monotonic() - started < 15
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight) == (1, 0)
    assert rig.records.failures_of(task.id) == []
    assert scratch_files(rig.scratch) == []


def test_a_command_that_ended_on_its_own_as_the_stop_came_is_carried_to_its_end(
    tmp_path: Path,
) -> None:
    """The stop (Ctrl-C of `ds run`, `ds cleanup`, a spot interruption) arrives just as the
    command finished by itself: its result is kept (outputs uploaded, task done), not
    dropped to be run again; the worker then stops."""
    rig = Rig(tmp_path, write("kept {name}"))
    real = rig.worker.runner

    class StoppedAtTheEnd:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            result = real.run(*args, **kwargs)
            rig.worker.stop()  # the stop comes as the command has just exited
            return result

    rig.worker.runner = StoppedAtTheEnd()  # type: ignore[assignment]
    (task,) = rig.submit({"name": "k"}, {"name": "later"})[:1]
    assert rig.worker.step() is Outcome.DONE
    assert rig.storage.get_bytes("out/k/r.txt") == b"kept k"
    marker = rig.records.read_done(task.id)
    assert marker is not None and marker.outputs == ["out/k/r.txt"]
    assert rig.worker.step() is Outcome.STOPPED  # the next task is not started
    rig.worker.close()
    assert rig.queue.counts().visible == 1 and rig.queue.counts().in_flight == 0


def test_where_the_stop_reaches_the_command_a_zero_exit_after_it_is_handed_back(
    tmp_path: Path,
) -> None:
    """On Slurm, scancel (and `ds cleanup`) signals every process of the job: a shell script
    without ``set -e`` loses its child to the SIGTERM and still exits 0. A command that ends
    after the stop arrived there is no evidence of a complete run: handed back, rerun,
    neither done nor failed."""
    rig = Rig(tmp_path, write("cut {name}"))
    rig.worker.backend.stop_reaches_command = True
    real = rig.worker.runner

    class StoppedDuringTheRun:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            result = real.run(*args, **kwargs)  # its child cut by scancel, it exits 0
            rig.worker.stop()  # the worker's own SIGTERM is handled as it ends
            assert result.exit_code == 0 and not result.interrupted
            return result

    rig.worker.runner = StoppedDuringTheRun()  # type: ignore[assignment]
    (task,) = rig.submit({"name": "c"})
    assert rig.worker.step() is Outcome.STOPPED
    rig.worker.close()
    assert rig.records.read_done(task.id) is None
    assert rig.records.failures_of(task.id) == []
    assert "out/c/r.txt" not in rig.keys("out/")
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight) == (1, 0)


def test_where_the_stop_reaches_the_command_one_that_ended_before_it_keeps_its_result(
    tmp_path: Path,
) -> None:
    """The stop arrives after the command's end was taken (its outputs being uploaded): the
    command was not cut, its result is kept."""
    rig = Rig(tmp_path, write("kept {name}"))
    rig.worker.backend.stop_reaches_command = True
    upload = rig.worker._upload_outputs

    def stop_then_upload(*args: Any) -> list[str]:
        rig.worker.stop()
        return upload(*args)

    rig.worker._upload_outputs = stop_then_upload  # type: ignore[method-assign]
    (task,) = rig.submit({"name": "k"})
    assert rig.worker.step() is Outcome.DONE
    assert rig.records.read_done(task.id) is not None
    assert rig.storage.get_bytes("out/k/r.txt") == b"kept k"


@pytest.mark.parametrize(("backend", "reaches"), [("local", False), ("slurm", True)])
def test_only_slurm_says_its_stop_reaches_the_command(
    tmp_path: Path, backend: str, reaches: bool
) -> None:
    """`ds cleanup --backend local` signals the worker alone, whose command runs in a session
    of its own (out of a terminal's Ctrl-C too), as ECS signals only the container's PID 1;
    Slurm's scancel signals every process of the job."""
    from conftest import write_project
    from distributed_something.backends import open_backend
    from distributed_something.usecases.project import open_project

    extra: dict[str, Any] = {"backend": backend}
    if backend == "slurm":
        extra["slurm"] = {"shared_dir": str(tmp_path / "shared")}
    folder = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "a"}], extra=extra)
    project = open_project(folder / "ds.toml")
    assert getattr(open_backend(project), "stop_reaches_command", False) is reaches


SELF_TERM = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]
#: A shell (or a JVM) that gets SIGTERM exits 128 + 15 rather than dying of it.
SHELL_TERM = [PY, "-c", "raise SystemExit(143)"]


@pytest.mark.parametrize(("argv", "code"), [(SELF_TERM, -15), (SHELL_TERM, 143)])
def test_a_command_killed_by_the_stops_own_signal_is_handed_back(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    """scancel and a terminal's Ctrl-C signal the whole job: the command may die of the
    stop's signal (or exit 128 + it) before the worker's handler has run. The worker waits a
    moment for its own stop, and hands the task back instead of counting the stop as the
    task's failure."""
    rig = Rig(tmp_path, argv)
    (task,) = rig.submit({"name": "t"})
    real = rig.worker.runner

    class StopComesAfterTheCommandDied:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            result = real.run(*args, **kwargs)
            assert result.exit_code == code and not result.interrupted
            threading.Timer(0.2, rig.worker.stop).start()
            return result

    rig.worker.runner = StopComesAfterTheCommandDied()  # type: ignore[assignment]
    assert rig.worker.step() is Outcome.STOPPED
    rig.worker.close()
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight) == (1, 0)
    assert rig.records.failures_of(task.id) == []


def test_a_command_killed_by_sigterm_without_a_stop_fails(tmp_path: Path) -> None:
    """Without a stop coming, a command that died of SIGTERM is the task's failure (after
    the short wait)."""
    rig = Rig(tmp_path, SELF_TERM)
    (task,) = rig.submit({"name": "t"})
    started = time.monotonic()
    assert rig.worker.step() is Outcome.FAILED
    assert time.monotonic() - started >= loop_module.STOP_SIGNAL_GRACE_SECONDS
    (failure,) = rig.records.failures_of(task.id)
    assert failure.exit_code == -15


def test_which_exit_codes_say_a_stopping_signal_ended_the_command() -> None:
    stopped = loop_module.stopped_by_signal
    assert stopped(-15) and stopped(-2) and stopped(-1) and stopped(143) and stopped(130)
    assert not stopped(0) and not stopped(1) and not stopped(-9) and not stopped(137)
    assert not stopped(None) and not stopped(15)


def test_lost_lease_drops_the_result(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            PY,
            "-c",
            "import time,sys; time.sleep(1.5);open(sys.argv[1] + '/late', 'w').write('x')",
            "{output_dir}",
        ],
        visibility=1,
    )
    (task,) = rig.submit({"name": "l"})

    def steal() -> None:
        time.sleep(0.1)
        rig.clock.advance(5)  # the lease runs out...
        assert rig.queue.receive(1, 100)  # ...and another worker takes the task

    thief = threading.Thread(target=steal)
    thief.start()
    assert rig.worker.step() is Outcome.LOST
    thief.join()
    assert rig.keys("out/") == []
    assert rig.records.read_done(task.id) is None


def test_lease_is_extended_while_the_command_runs(tmp_path: Path) -> None:
    clock_driver_stop = threading.Event()
    rig = Rig(tmp_path, [PY, "-c", "import time; time.sleep(2)"], visibility=1)
    rig.submit({"name": "long"})

    stolen: list[object] = []

    def tick() -> None:  # fake time follows real time; two 1 s leases pass during the run
        while not clock_driver_stop.wait(0.25):
            rig.clock.advance(0.25)
            stolen.extend(rig.queue.receive(1, 100))  # another worker polling

    driver = threading.Thread(target=tick)
    driver.start()
    try:
        assert rig.worker.step() is Outcome.DONE
    finally:
        clock_driver_stop.set()
        driver.join()
    assert stolen == []
    assert rig.queue.counts().drained


def test_drained_only_when_nothing_in_flight(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["true"])
    rig.submit({"name": "x"})
    held = rig.queue.receive(1, 60)  # another worker is busy with it
    assert held
    assert rig.worker.step() is Outcome.IDLE
    rig.queue.delete(held[0])
    assert rig.worker.step() is Outcome.DRAINED


def test_job_values_never_reach_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    rig = Rig(tmp_path, write("{name}"))
    rig.config.recipe.output_prefix = "out/safe"
    evil = f"$(touch {marker}); touch {marker} && `touch {marker}`"
    rig.submit({"name": evil})
    assert rig.worker.step() is Outcome.DONE
    assert rig.storage.get_bytes("out/safe/r.txt").decode() == evil
    assert not marker.exists()


def test_malformed_message_is_a_task_failure_not_a_crash(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["true"])
    rig.queue.send_batch([("bad", "not json")])
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of("bad")
    assert "JSON" in failure.error or "Expecting" in failure.error


def test_run_returns_when_drained(tmp_path: Path) -> None:
    rig = Rig(tmp_path, write("{name}"))
    rig.submit({"name": "1"}, {"name": "2"}, {"name": "3"})
    summary = rig.worker.run()
    assert summary.counts == {"done": 3, "drained": 1}
    assert json.loads(json.dumps(rig.keys("out/"))) == ["out/1/r.txt", "out/2/r.txt", "out/3/r.txt"]


def test_one_workdir_serves_every_task_and_starts_empty(tmp_path: Path) -> None:
    # Each task lists what its output folder held before it wrote, and leaves a stray file.
    argv = [
        PY,
        "-c",
        "import os,sys; d=sys.argv[1]; seen=repr(sorted(os.listdir(d)));"
        " open(d+'/seen.txt','w').write(seen);"
        " open(os.path.join(d,'..','stray.txt'),'w').write('x')",
        "{output_dir}",
    ]
    rig = Rig(tmp_path, argv)
    tasks = rig.submit({"name": "a"}, {"name": "b"}, {"name": "c"})
    for _ in tasks:
        assert rig.worker.step() is Outcome.DONE
    for task in tasks:
        marker = rig.records.read_done(task.id)
        assert marker is not None
        (key,) = marker.outputs
        assert rig.storage.get_bytes(key) == b"[]"  # nothing of the task before it
    assert scratch_files(rig.scratch) == []
    assert len(list(rig.scratch.iterdir())) == 1


def test_a_workdir_that_cannot_be_emptied_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed_something.recipes.base as base

    rig = Rig(tmp_path, write("x"))
    first = rig.worker._workdir.root
    rig.submit({"name": "a"}, {"name": "b"})
    # Nothing can be removed (as when a command leaves a folder it made read-only).
    monkeypatch.setattr(base, "_remove", lambda entry: None)
    assert rig.worker.step() is Outcome.DONE
    second = rig.worker._workdir.root
    assert second != first and (first / "outputs" / "r.txt").exists()
    monkeypatch.undo()
    assert rig.worker.step() is Outcome.DONE
    assert rig.worker._workdir.root == second  # emptied fine: kept
    assert sorted(o.key for o in rig.storage.list("out/")) == ["out/a/r.txt", "out/b/r.txt"]


def test_a_scratch_folder_is_emptied_for_the_next_task_and_says_when_it_could_not_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = Workdir(tmp_path / "w")
    workdir.create()
    (workdir.output_dir / "deep" / "er").mkdir(parents=True)
    (workdir.output_dir / "deep" / "er" / "a.tif").write_bytes(b"x")
    (workdir.input_dir / "in.csv").write_text("x")
    (workdir.root / "task.log").write_text("log")
    (workdir.root / "stray").mkdir()

    assert workdir.clear()
    assert sorted(p.name for p in workdir.root.iterdir()) == ["inputs", "outputs"]
    assert not any(workdir.input_dir.iterdir()) and not any(workdir.output_dir.iterdir())
    assert workdir.clear()  # nothing to remove: still clean

    (workdir.output_dir / "stuck.tif").write_bytes(b"x")
    (workdir.root / "stuck.log").write_text("x")
    monkeypatch.setattr(base, "_remove", lambda entry: None)  # removals that fail
    assert not workdir.clear()


class ReceiveSpy(SqliteQueue):
    """The local queue, noting how many messages each receive asked for and got, and what
    was given back (with the open attempts of the ledger at that moment)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[int, int]] = []
        self.given_back: list[list[str]] = []
        self.on_give_back: Any = None

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        got = super().receive(max_messages, lease_seconds)
        self.asked.append((max_messages, len(got)))
        return got

    def give_back(self, messages: Any) -> None:
        self.given_back.append([m.task_id for m in messages])
        if self.on_give_back is not None:
            self.on_give_back()
        super().give_back(messages)


class FlushSpy(SqliteQueue):
    """The local queue, calling ``on_flush`` after each `flush`."""

    on_flush: Any = None

    def flush(self) -> None:
        super().flush()
        if self.on_flush is not None:
            self.on_flush()


def test_a_long_task_does_not_keep_the_last_tasks_message_waiting(
    tmp_path: Path, short_tasks: None
) -> None:
    # The delete of a finished task's message rides on the next receive; when the task
    # after it runs long, it is made as soon as that shows (its lease is not extended:
    # it would come back, to be found done).
    rig = Rig(tmp_path, ["sleep", "{secs}"])
    rig.worker.runner.poll_seconds = 0.4  # type: ignore[attr-defined]
    spy = FlushSpy(tmp_path / "q.sqlite", max_receive_count=3, clock=rig.clock)
    rig.queue = rig.worker.backend.queue = spy
    rig.worker._heartbeat.queue = spy
    _, long = rig.submit({"secs": "0", "name": "a"}, {"secs": "1.2", "name": "b"})
    other = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=rig.clock)
    seen: list[Any] = []

    def while_long_runs() -> None:
        outcomes = [a.outcome for a in rig.records.attempt_keys(long.id)]
        seen.append((outcomes, other.counts()))

    spy.on_flush = while_long_runs
    assert rig.worker.step() is Outcome.DONE
    assert rig.worker.step() is Outcome.DONE
    # Flushed while the long one ran: the first one's message gone, only the long one's left.
    assert (["running"], QueueCounts(visible=0, in_flight=1, dead=0)) in seen
    other.close()


@pytest.fixture
def short_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task counts as short by its whole time, however loaded the machine: only the
    runner's ``on_long`` (at its poll interval, which each test sets) says one is long."""
    monkeypatch.setattr(loop_module, "SHORT_TASK_SECONDS", 30.0)


def spied_rig(
    tmp_path: Path, argv: list[str], *, poll: float = 30.0, **config: Any
) -> tuple[Rig, ReceiveSpy]:
    """A `Rig` whose queue notes its receives and give-backs, and whose runner says a
    command is long after ``poll`` seconds."""
    rig = Rig(tmp_path, argv, **config)
    spy = ReceiveSpy(tmp_path / "q.sqlite", max_receive_count=3, clock=rig.clock)
    rig.queue = rig.worker.backend.queue = spy
    rig.worker._heartbeat.queue = spy
    rig.worker.runner.poll_seconds = poll  # type: ignore[attr-defined]
    return rig, spy


def test_short_tasks_are_received_several_at_once_and_each_recorded_as_it_runs(
    tmp_path: Path, short_tasks: None
) -> None:
    rig, spy = spied_rig(tmp_path, ["sh", "-c", 'echo "$0" >> ../../ledger', "{name}"])
    tasks = rig.submit(*({"name": f"t{i}"} for i in range(40)))
    summary = rig.worker.run()
    assert summary.counts == {"done": 40, "drained": 1}
    # Each short task doubles what the next receive asks for, up to MAX_HELD_TASKS: 40
    # tasks in 5 receives.
    asked = [n for n, got in spy.asked if got]
    assert asked == [1, 2, 8, MAX_HELD_TASKS, MAX_HELD_TASKS]
    assert spy.given_back == []
    lines = (tmp_path / "ledger").read_text().split()
    assert sorted(lines) == sorted(f"t{i}" for i in range(40))  # each ran once
    for task in tasks:
        (attempt,) = rig.records.attempt_keys(task.id)
        assert (attempt.outcome, attempt.attempt) == ("done", 1)
    assert rig.queue.counts().drained


def test_a_long_task_hands_back_what_the_worker_held_while_it_runs(
    tmp_path: Path, short_tasks: None
) -> None:
    rig, spy = spied_rig(tmp_path, ["sleep", "{secs}"], poll=0.4)
    quick = rig.submit(*({"secs": "0", "name": f"q{i}"} for i in range(3)))
    (long,) = rig.submit({"secs": "1.2", "name": "long"})
    after = rig.submit(*({"secs": "0", "name": f"a{i}"} for i in range(3)))
    other = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=rig.clock)
    seen: list[Any] = []

    def while_long_runs() -> None:
        (attempt,) = rig.records.attempt_keys(long.id)
        seen.append((attempt.outcome, rig.records.read_done(long.id)))

    spy.on_give_back = while_long_runs
    # Receives 1 (q0), then 2 (q1, holding q2), then 8: four came, the long one first.
    assert [rig.worker.step() for _ in range(4)] == [Outcome.DONE] * 4
    assert spy.asked == [(1, 1), (2, 2), (8, 4)]
    # Handed back as soon as the long one had run a poll interval, while it still ran.
    assert spy.given_back == [[t.id for t in after]]
    assert seen == [("running", None)]
    # Back to one at a time; what was handed back comes first, its receive undone.
    assert other.counts().visible == 3
    assert rig.worker.run().counts == {"done": 3, "drained": 1}
    for task in [*quick, long, *after]:
        (attempt,) = rig.records.attempt_keys(task.id)
        assert (attempt.outcome, attempt.attempt) == ("done", 1)
    assert [n for n, got in spy.asked if got] == [1, 2, 8, 1, 2]
    other.close()


def test_a_stopping_worker_hands_back_what_it_held(tmp_path: Path, short_tasks: None) -> None:
    rig, spy = spied_rig(tmp_path, ["true"])
    rig.submit(*({"name": f"t{i}"} for i in range(6)))
    assert rig.worker.step() is Outcome.DONE
    assert rig.worker.step() is Outcome.DONE  # received 2: one held
    assert len(rig.worker._held) == 1
    rig.worker.stop()
    assert rig.worker.step() is Outcome.STOPPED
    rig.worker.close()
    assert len(spy.given_back) == 1
    assert rig.queue.counts() == QueueCounts(visible=4, in_flight=0, dead=0)
    assert {m.receive_count for m in rig.queue.receive(10, 30)} == {1}


def test_a_message_held_for_half_its_lease_goes_back_instead_of_running(
    tmp_path: Path, short_tasks: None
) -> None:
    # A held message's lease is not extended: past half of it, it is handed back (and taken
    # again with a fresh lease) rather than run on a lease that may have run out.
    rig, spy = spied_rig(tmp_path, ["true"], visibility=10)
    *_, third = rig.submit(*({"name": f"t{i}"} for i in range(3)))
    assert rig.worker.step() is Outcome.DONE
    assert rig.worker.step() is Outcome.DONE  # received second and third; third held
    rig.clock.advance(6)
    assert rig.worker.step() is Outcome.DONE
    assert spy.given_back == [[third.id]]
    assert spy.asked[-1] == (4, 1)  # received again, with a fresh lease
    (attempt,) = rig.records.attempt_keys(third.id)
    assert (attempt.outcome, attempt.attempt) == ("done", 1)
