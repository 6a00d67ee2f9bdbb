"""At most one live execution of a task: a second delivery of a running task stands down.

Two deliveries of one task can run at once when the task has two messages (a send repeated
after a failure, SQS delivering a message twice) or a lease ran out under a live worker. Each
delivery records its start, then looks at the task's attempt records:

- on the local records (SQLite) the look is part of the same write transaction, so a delivery
  sees exactly the deliveries whose start was recorded before its own: the first to record
  runs, every later one stands down, whatever their start times say;
- on a storage that writes and lists separately (S3, a folder) the later start stands down.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import sys
import threading
from pathlib import Path

import pytest

from distributed_something.backends import Backend
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.sqlite_file import close_all
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import Config
from distributed_something.interfaces.queue import Message
from distributed_something.interfaces.storage import Storage, Tagged
from distributed_something.jobs.model import Task
from distributed_something.ledger import build_ledger
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import Attempt, ManifestEntry, RunRecords
from distributed_something.worker import claims
from distributed_something.worker.loop import Outcome, Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from testkit import FakeClock, NoCompute, NoProvisioner, age_s3, moto_queue_and_bucket

PY = sys.executable


class ClaimingFolder(FolderStorage):
    """A folder with S3's conditional writes (`S3Storage.put_new`, `get_tagged`,
    `put_tagged`; their S3 requests are tested on moto): records written, then listed, as
    on S3, and the tasks' claims (`worker.claims`). The version tag is the content's hash."""

    _lock = threading.Lock()

    def put_new(self, key: str, data: bytes) -> str | None:
        with self._lock:
            if self.exists(key):
                return None
            self.put_bytes(key, data)
            return hashlib.md5(data).hexdigest()

    def get_tagged(self, key: str) -> Tagged:
        data = self.get_bytes(key)
        return Tagged(data, hashlib.md5(data).hexdigest())

    def put_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        with self._lock:
            try:
                if hashlib.md5(self.get_bytes(key)).hexdigest() != tag:
                    return None
            except KeyError:
                return None
            self.put_bytes(key, data)
            return hashlib.md5(data).hexdigest()


class Rig:
    """Workers sharing a local SQLite queue (fake clock) and a storage: the local bucket
    (records in SQLite: written and listed together), a bare folder (written, then
    listed), or a folder with conditional writes (written, then listed, and claimed: S3)."""

    def __init__(self, tmp_path: Path, storage: str) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(1_000_000.0)
        self.queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=5, clock=self.clock)
        files = (ClaimingFolder if storage == "claims" else FolderStorage)(tmp_path / "bucket")
        self.storage: Storage = (
            LocalBucket(files, SqliteObjects(tmp_path / "records.sqlite"))
            if storage == "local"
            else files
        )
        ran = tmp_path / "ran"
        ran.mkdir()
        # Each run leaves a file named for its worker: who ran the command, and how often.
        script = "import os, pathlib; pathlib.Path(os.environ['RAN'], os.environ['ME']).touch()"
        self.ran = ran
        self.config = Config.model_validate(
            {
                "app_name": "D",
                "recipe": {"name": "command", "argv": [PY, "-c", script], "output_prefix": "o/t"},
                "check_if_done": {"enabled": False},
            }
        )
        self.backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.records = RunRecords(self.storage, "D", "r1")
        self.task = Task(body={"group": {"name": "t"}})

    def worker(self, name: str) -> Worker:
        config = self.config.model_copy(update={"env": {"RAN": str(self.ran), "ME": name}})
        return Worker(
            config,
            self.backend,
            CommandRecipe(),
            SubprocessRunner(grace_seconds=1),
            WorkerSettings(
                name=name, run_id="r1", scratch_root=self.tmp_path / name, poll_interval=0.01
            ),
            clock=self.clock,
            sleep=lambda _s: None,
        )

    def send_twice(self) -> None:
        """The task sent twice: two messages, two deliveries to come."""
        body = self.task.body_json()
        self.queue.send_batch([(self.task.id, body)])
        self.queue.send_batch([(self.task.id, body)])

    def receive(self) -> Message:
        (message,) = self.queue.receive(1, 600)
        return message

    def outcomes(self) -> list[tuple[str, str]]:
        """Each attempt's worker and outcome, oldest first."""
        found = []
        for key in self.records.attempt_keys(self.task.id):
            data = self.records._get_json(self.records.key_of(key))
            assert data is not None
            found.append((data["worker"], key.outcome))
        return found

    def state(self) -> tuple[str, int, bool]:
        ledger = build_ledger(
            "r1", [ManifestEntry(self.task.id, {})], set(), self.records.attempt_keys(), []
        )
        entry = ledger.tasks[self.task.id]
        return entry.state, entry.attempts, entry.duplicate


@pytest.fixture(params=["local", "folder", "claims"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    return Rig(tmp_path, request.param)


def test_a_second_delivery_of_a_running_task_stands_down_without_running(rig: Rig) -> None:
    rig.send_twice()
    a, b = rig.worker("a"), rig.worker("b")
    # a records its start (and would now run the command); b takes the other message later.
    assert a._begin_attempt(rig.receive(), rig.clock()) is False
    rig.clock.sleep(5)

    assert b.step() is Outcome.DUPLICATE

    assert list(rig.ran.iterdir()) == []  # b never started the command
    assert rig.outcomes() == [("a", "running"), ("b", "duplicate")]
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight) == (0, 1)  # b's message deleted, a's leased
    # Still running, one attempt: the delivery that stood down is reported as a duplicate
    # delivery, not counted as an attempt.
    assert rig.state() == ("running", 1, True)


@pytest.mark.parametrize("storage", ["local", "claims"])
def test_the_first_to_record_its_start_runs_whatever_the_start_times(
    tmp_path: Path, storage: str
) -> None:
    # b's delivery started earlier (by its clock), but a recorded its start first and is
    # running: b must stand down. Comparing start times alone, b would run too. On the
    # local records the write and the look are one transaction; on a storage written, then
    # listed (S3), the task's claim, which a holds, decides.
    rig = Rig(tmp_path, storage)
    rig.send_twice()
    first, second = rig.receive(), rig.receive()
    a, b = rig.worker("a"), rig.worker("b")
    started_b = rig.clock()
    rig.clock.sleep(5)
    assert a._begin_attempt(first, rig.clock()) is False

    assert b._begin_attempt(second, started_b) is True

    assert rig.outcomes() == [("b", "duplicate"), ("a", "running")]
    assert (rig.queue.counts().in_flight, rig.state()) == (1, ("running", 1, True))
    if storage == "claims":
        claim = rig.records.claim_key(rig.task.id)
        assert rig.storage.get_bytes(claim).startswith(b'{"stem": "')  # a's, still held


def test_where_writes_and_listings_are_apart_the_later_start_stands_down(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "folder")
    rig.send_twice()
    first, second = rig.receive(), rig.receive()
    a, b = rig.worker("a"), rig.worker("b")
    assert a._begin_attempt(first, rig.clock()) is False
    rig.clock.sleep(5)
    assert b._begin_attempt(second, rig.clock()) is True
    assert rig.outcomes() == [("a", "running"), ("b", "duplicate")]


def test_the_claim_is_released_at_the_end_and_a_left_one_taken_over(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "claims")
    rig.send_twice()
    a, b = rig.worker("a"), rig.worker("b")
    assert a.step() is Outcome.DONE  # claimed, ran, released
    claim = rig.records.claim_key(rig.task.id)
    assert not rig.storage.exists(claim)
    # A claim left behind by an attempt that ended (its worker died after closing it):
    # the next delivery (the task's second message; check-if-done is off) takes it over
    # and runs, then releases it.
    ended = rig.records.attempt_keys()[0].stem
    rig.storage.put_bytes(claim, claims.Holder(ended, "m").to_bytes())
    assert b.step() is Outcome.DONE
    assert sorted(p.name for p in rig.ran.iterdir()) == ["a", "b"]
    assert not rig.storage.exists(claim)


def test_claims_decide_from_the_holder_alone() -> None:
    holder = claims.Holder("s1", "m1")
    assert claims.decide(holder, "running", "m2") == "yield"
    assert claims.decide(holder, "running", "m1") == "take"  # its worker vanished
    for ended in ("done", "failed", "lost", "released", "duplicate", None):
        assert claims.decide(holder, ended, "m2") == "take"
    assert claims.decide(None, "running", "m2") == "take"  # a damaged claim
    assert claims.Holder.from_bytes(holder.to_bytes()) == holder
    assert claims.Holder.from_bytes(b"{") is None


def test_the_same_message_is_stood_down_for_while_its_holder_says_it_is_alive() -> None:
    """SQS may deliver a message twice while its first worker runs it; a redelivery after
    the worker vanished comes a lease after it last extended it. The holder's claim says
    when it was last alive (renewed at each extension)."""
    live = claims.live_for(600.0)
    assert live == 400.0  # two heartbeat intervals of a 10-minute lease
    alive = claims.Holder("s1", "m1", alive_at=1000.0)
    assert claims.decide(alive, "running", "m1", now=1100.0, live_seconds=live) == "yield"
    assert claims.decide(alive, "running", "m1", now=1000.0 + 600, live_seconds=live) == "take"
    assert claims.decide(alive, "done", "m1", now=1100.0, live_seconds=live) == "take"
    silent = claims.Holder("s1", "m1")  # a claim written before liveness was kept
    assert claims.decide(silent, "running", "m1", now=1100.0, live_seconds=live) == "take"
    assert claims.Holder.from_bytes(alive.to_bytes()) == alive
    assert alive.same_attempt(claims.Holder("s1", "m1", alive_at=2000.0))
    assert not alive.same_attempt(claims.Holder("s1", "m2"))
    # Where the storage says how old the claim's version is, that age is how long ago.
    assert claims.holders_now(alive, 5.0, now=99_999.0) == 1005.0
    assert claims.holders_now(alive, None, now=1100.0) == 1100.0
    assert claims.holders_now(silent, 5.0, now=1100.0) == 1100.0
    assert claims.holders_now(alive, 5.0, now=None) is None


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_on_s3_a_holders_liveness_is_judged_by_s3s_clock(aws: str, skew: float) -> None:
    """The same message delivered again, to a worker whose clock is an hour off its
    holder's: S3 says the holder renewed its claim a moment ago (stand down), and, once
    S3's clock has moved on past `live_for`, that it went silent (take it over). The
    claim's age is S3's (`Tagged.age`), not the difference of two machines' clocks."""
    _, storage = moto_queue_and_bucket("Claims")
    key = "_ds/T/claims/t.json"
    live = claims.live_for(600.0)

    def claim(stem: str, now: float) -> claims.Claim:
        mine = claims.Holder(stem, "m1", now)
        return claims.claim(storage, key, mine, lambda _: "running", now=now, live_seconds=live)

    assert claim("s1", 1000.0).ours
    again = claim("s2", 1000.0 + skew)
    assert not again.ours and again.holder is not None and again.holder.stem == "s1"
    age_s3(storage, live + 1)
    assert claim("s3", 1000.0 + skew + live + 1).ours


def test_a_message_delivered_twice_while_it_runs_is_not_run_twice(tmp_path: Path) -> None:
    """The first delivery runs, extending its lease and renewing its claim; SQS delivers
    the same message again (here: its lease is let lapse, as a duplicate delivery looks to
    the second worker). The second stands down and leaves the message: deleting it would
    take it from the running worker, whose attempt stays open (not closed as lost)."""
    rig = Rig(tmp_path, "claims")
    rig.queue.send_batch([(rig.task.id, rig.task.body_json())])
    a, b = rig.worker("a"), rig.worker("b")
    first = rig.receive()
    assert a._begin_attempt(first, rig.clock()) is False  # a runs it
    rig.clock.sleep(601)  # the message shows again (to b, a duplicate delivery)
    a._renew_claim()  # a's heartbeat: still alive

    assert b.step() is Outcome.DUPLICATE

    assert list(rig.ran.iterdir()) == []  # b never started the command
    assert rig.outcomes() == [("a", "running"), ("b", "duplicate")]
    counts = rig.queue.counts()
    assert counts.in_flight == 1  # the message is left, not deleted
    # a vanishes now: not renewed, its message comes back after b's lease, and c takes over.
    rig.clock.sleep(601)
    c = rig.worker("c")
    assert c.step() is Outcome.DONE
    c.close()
    assert [p.name for p in rig.ran.iterdir()] == ["c"]
    assert ("a", "lost") in rig.outcomes()


def test_a_stood_down_task_is_run_by_the_message_left(rig: Rig) -> None:
    rig.send_twice()
    a, b = rig.worker("a"), rig.worker("b")
    assert b._begin_attempt(rig.receive(), rig.clock()) is False  # b is running the task
    rig.clock.sleep(5)
    assert a.step() is Outcome.DUPLICATE  # a's message is deleted
    # b vanishes: its lease runs out, and its message comes back to a, which finds b's
    # open record (the same message) and closes it as lost.
    rig.clock.sleep(700)

    assert a.step() is Outcome.DONE
    a.close()  # its records and the message's delete (kept for the next task) are made

    assert [p.name for p in rig.ran.iterdir()] == ["a"]  # the command ran once
    assert rig.outcomes() == [("b", "lost"), ("a", "duplicate"), ("a", "done")]
    assert rig.state() == ("done", 2, True)  # b's lost attempt and a's
    assert rig.queue.counts().drained


def _open_and_look(path: str, index: int, task_id: str, out: multiprocessing.Queue) -> None:
    records = RunRecords(SqliteObjects(Path(path)), "D", "r1")
    attempt = Attempt(task_id, 1, f"m{index}", f"w{index}", 1000.0 + index, cause="lost")
    listed = records.open_attempt_looking(attempt)
    assert listed is not None
    out.put((index, sorted(key.message for key in listed)))


def test_records_written_and_listed_together_are_seen_in_one_order(tmp_path: Path) -> None:
    # Processes recording a start of the same task at once: each listing holds its own
    # record and those of every delivery that recorded before it, so the listings nest
    # (sizes 1, 2, ... n, each containing the one before): exactly one delivery saw no other.
    path = tmp_path / "records.sqlite"
    SqliteObjects(path).put_bytes("_ds/D/x", b"")  # created before the race
    close_all()  # no SQLite connection crosses the fork (see backends/local/forking.py)
    context = multiprocessing.get_context("fork")
    for task in range(4):
        out: multiprocessing.Queue = context.Queue()
        processes = [
            context.Process(target=_open_and_look, args=(str(path), i, f"t{task}", out))
            for i in range(4)
        ]
        for process in processes:
            process.start()
        listings = [out.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
        seen = sorted((listed for _, listed in listings), key=len)
        assert [len(listed) for listed in seen] == [1, 2, 3, 4], seen
        for smaller, larger in itertools.pairwise(seen):
            assert set(smaller) < set(larger)


def test_a_worker_whose_claim_was_taken_over_drops_its_result(tmp_path: Path) -> None:
    # A worker stopped past its lease (SIGSTOP) and resumed: another delivery took the
    # task's claim meanwhile. The queue may still take the old receipt handle's extension
    # (moto does), so the lease looked kept: the result was uploaded and recorded done over
    # the other delivery's. The claim taken over now drops it, as a lost lease does.
    rig = Rig(tmp_path, "claims")
    rig.send_twice()
    worker = rig.worker("a")
    inner = worker.runner

    class TakenOverWhileStopped:
        grace_seconds = 1.0

        def run(self, argv, **kwargs):  # type: ignore[no-untyped-def]
            result = inner.run(argv, **kwargs)
            key = rig.records.claim_key(rig.task.id)
            rig.storage.put_bytes(key, claims.Holder("other-stem", "other").to_bytes())
            worker._renew_claim()  # the beat made when it resumes, before the result counts
            return result

    worker.runner = TakenOverWhileStopped()  # type: ignore[assignment]
    assert worker.step() is Outcome.LOST
    assert [outcome for _, outcome in rig.outcomes()] == ["lost"]
    assert not rig.records.read_done(rig.task.id)
