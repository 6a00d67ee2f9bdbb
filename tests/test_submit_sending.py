"""An interrupted submit is finished later, each task sent once (usecases/sending.py).

`ds submit` writes the manifest (every task it may queue) before it sends. Interrupted
mid-way (Ctrl-C, a network failure), the tasks not sent yet used to be counted pending and
sit in no queue: a second submit left them out as pending, and `ds run` resumed without
them. Now `ds status` says how many are unsent, and `ds submit`, `ds monitor` and `ds run`
send exactly those first. The oracle is the queue itself: every task in it once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from distributed_something import sending
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.errors import BackendError
from distributed_something.jobs.parse import parse_job_text
from distributed_something.ledger import read_ledger
from distributed_something.records import RunRecords
from distributed_something.usecases import lifecycle
from distributed_something.usecases.project import open_project
from testkit import E2E_WORK, age_s3, moto_queue_and_bucket

CHUNK = 4


class FlakyQueue(SqliteQueue):
    """The local queue, whose ``fail_at``-th `send_batch` (1-based) raises (or, with
    ``interrupt``, sends its batch and then meets a Ctrl-C arriving meanwhile)."""

    fail_at = 0
    interrupt = False

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_receive_count=3)
        self.calls = 0

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int:
        self.calls += 1
        if self.calls == self.fail_at:
            if not self.interrupt:
                raise BackendError("the queue's endpoint went away")
            sent = super().send_batch(items)
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once, to the main thread
            return sent
        return super().send_batch(items)

    def task_ids(self) -> list[str]:
        with self._reading() as conn:
            return [row[0] for row in conn.execute("SELECT task_id FROM messages ORDER BY id")]


@pytest.fixture
def chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sending, "SUBMIT_CHUNK", CHUNK)


def make(tmp_path: Path, n: int) -> tuple[RunRecords, FlakyQueue, Any]:
    storage = LocalBucket(FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite"))
    records = RunRecords(storage, "T", "r1")
    job = parse_job_text(
        json.dumps({"groups": [{"i": i} for i in range(n)]}), source="job.json", suffix=".json"
    )
    return records, FlakyQueue(tmp_path / "q.sqlite"), job.tasks


def manifest(records: RunRecords, part: str, tasks: Any) -> None:
    records.write_manifest_json(
        part,
        ((tasks.id_at(i), tasks.group_json(i)) for i in range(len(tasks))),
        shared=tasks.shared,
        group_key=tasks.group_key,
    )


def submit_failing_at_the_second_batch(
    project: Any, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ds setup`, then `ds submit` in this process, whose second batch fails to send (the
    disk is full); the queue works again afterwards."""
    real = SqliteQueue.send_batch
    calls = {"n": 0}

    def failing(self: SqliteQueue, items: Sequence[tuple[str, str]]) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise BackendError("the disk is full")
        return real(self, items)

    lifecycle.setup(project)
    with monkeypatch.context() as patch:
        patch.setattr(SqliteQueue, "send_batch", failing)
        with pytest.raises(BackendError):
            lifecycle.submit(project, job, show_progress=False)


@pytest.mark.parametrize("interrupt", [False, True], ids=["queue-error", "ctrl-c"])
def test_an_interrupted_sending_is_finished_by_resume_each_task_once(
    tmp_path: Path, chunked: None, interrupt: bool
) -> None:
    records, queue, tasks = make(tmp_path, 22)
    manifest(records, "p1", tasks)
    left_out = {tasks.id_at(5), tasks.id_at(17)}  # e.g. pending from an earlier submit
    to_send = tasks.without(left_out)
    queue.fail_at, queue.interrupt = 3, interrupt
    with pytest.raises(KeyboardInterrupt if interrupt else BackendError):
        sending.send_part(records, queue, "p1", to_send, left_out)
    sent_first = 2 * CHUNK + (CHUNK if interrupt else 0)  # a batch sent is counted sent
    assert queue.task_ids() == list(to_send.ids())[:sent_first]
    assert sending.unsent(records) == len(to_send) - sent_first
    [(part, progress, _)] = records.sendings()
    assert part == "p1" and progress["stopped"] and progress["sent"] == sent_first

    assert sending.resume(records, FlakyQueue(tmp_path / "q.sqlite")) == len(to_send) - sent_first
    assert queue.task_ids() == list(to_send.ids())  # every task once, none left out
    assert records.sendings() == [] and sending.unsent(records) == 0
    assert sending.resume(records, queue) == 0  # nothing twice


def test_a_resumed_sending_interrupted_again_is_resumed_from_where_it_stopped(
    tmp_path: Path, chunked: None
) -> None:
    records, queue, tasks = make(tmp_path, 30)
    manifest(records, "p1", tasks)
    queue.fail_at = 2
    with pytest.raises(BackendError):
        sending.send_part(records, queue, "p1", tasks, [])
    again = FlakyQueue(tmp_path / "q.sqlite")
    again.fail_at = 3
    with pytest.raises(BackendError):
        sending.resume(records, again)
    assert queue.task_ids() == list(tasks.ids())[: 3 * CHUNK]
    assert sending.resume(records, queue) == 30 - 3 * CHUNK
    assert Counter(queue.task_ids()) == Counter(tasks.ids())


def test_a_sending_under_way_elsewhere_is_left_to_its_sender(tmp_path: Path, chunked: None) -> None:
    records, queue, tasks = make(tmp_path, 10)
    manifest(records, "p1", tasks)
    here = sending._sender()
    # This very process, still alive, "sends" it: not abandoned.
    records.write_sending("p1", {"to_send": 10, "sent": 4, "sender": here, "at": 0.0})
    assert sending.resume(records, queue) == 0 and sending.unsent(records) == 0
    assert queue.task_ids() == []


def test_abandoned_decides_from_the_progress_alone() -> None:
    here = {"boot_id": "b1", "pid": 1}
    mine = {"boot_id": "b1", "pid": 7, "pid_start": 99}
    other = {"boot_id": "b2", "pid": 7, "pid_start": 99}

    def alive(pid: int, start: int | None) -> bool:
        return (pid, start) == (7, 99)

    def dead(pid: int, start: int | None) -> bool:
        return False

    now = 10_000.0
    assert not sending.abandoned({"sender": mine, "at": 0.0}, here, alive, now)
    assert sending.abandoned({"sender": mine, "at": now}, here, dead, now)
    assert sending.abandoned({"sender": mine, "at": now, "stopped": True}, here, alive, now)
    fresh = now - sending.STALE_AFTER + 1
    assert not sending.abandoned({"sender": other, "at": fresh}, here, dead, now)
    assert sending.abandoned({"sender": other, "at": fresh - 2}, here, alive, now)
    assert sending.abandoned({}, here, alive, now)  # no sender, no time: long gone
    # Where the storage says how old the record is (S3), its age decides, not the clocks.
    assert not sending.abandoned({"sender": other, "at": 0.0}, here, dead, now, age=1.0)
    late = sending.STALE_AFTER + 1
    assert sending.abandoned({"sender": other, "at": now}, here, alive, now, age=late)
    assert not sending.abandoned({"sender": mine, "at": 0.0}, here, alive, now, age=late)


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_on_s3_a_sending_from_another_machine_is_judged_by_s3s_clock(aws: str, skew: float) -> None:
    """A `ds submit` on a laptop whose clock is an hour off sends a large job while the
    unattended monitor looks: S3 says its progress was written a moment ago, so it is under
    way (nothing sent twice); once S3 says it wrote nothing for `STALE_AFTER`, it was
    abandoned and its tasks are sent by whoever resumes it."""
    queue, storage = moto_queue_and_bucket("Sending")
    records = RunRecords(storage, "T", "r1")
    job = parse_job_text(
        json.dumps({"groups": [{"i": i} for i in range(6)]}), source="job.json", suffix=".json"
    )
    manifest(records, "p1", job.tasks)
    laptop = {"host": "laptop", "boot_id": "elsewhere", "pid": 7, "pid_start": 1}
    at = time.time() + skew
    records.write_sending("p1", {"to_send": 6, "sent": 2, "sender": laptop, "at": at})
    assert sending.under_way(records) and sending.resume(records, queue) == 0
    assert queue.receive(10, 30) == []
    age_s3(storage, sending.STALE_AFTER + 1)
    assert not sending.under_way(records) and sending.unsent(records) == 4
    assert sending.resume(records, queue) == 4
    got = queue.receive(10, 30)
    assert sorted(m.task_id for m in got) == sorted(list(job.tasks.ids())[2:])


def test_a_progress_that_cannot_be_read_is_left_and_reported_by_nobody_as_sent(
    tmp_path: Path,
) -> None:
    records, queue, tasks = make(tmp_path, 5)
    manifest(records, "p1", tasks)
    records.write_sending("p1", {"sent": "many", "stopped": True})
    assert sending.resume(records, queue) == 0
    assert [part for part, *_ in records.sendings()] == ["p1"]  # left for a person to see


def test_a_second_submit_sends_what_the_first_left_and_nothing_twice(
    tmp_path: Path, chunked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = write_project(
        tmp_path / "proj", argv=["true"], groups=[{"name": f"n{i}"} for i in range(10)]
    )
    project = open_project(proj)
    submit_failing_at_the_second_batch(project, proj / "job.json", monkeypatch)
    result = lifecycle.submit(project, proj / "job.json", show_progress=False)
    assert (result.resumed, result.sent, result.left_out) == (10 - CHUNK, 0, 10)
    queue = FlakyQueue(proj / ".ds" / "T" / "queue.sqlite")
    assert sorted(queue.task_ids()) == sorted(
        lifecycle.checked_job(project, proj / "job.json")[0].tasks.ids()
    )


def test_ds_status_says_what_is_unsent_and_ds_run_sends_it_each_task_running_once(
    tmp_path: Path, chunked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: a submit fails mid-way (in-process, as `ds submit` runs it); `ds status`
    counts the unsent tasks; `ds run` (a subprocess, as users type it) sends them and runs
    every task exactly once (the tasks' own ledger)."""
    ledger = tmp_path / "ledger.txt"
    argv = [sys.executable, "-c", E2E_WORK, "{output_dir}", "{name}", str(ledger), "0"]
    names = [f"n{i}" for i in range(11)]
    proj = write_project(tmp_path / "proj", argv=argv, groups=[{"name": n} for n in names])
    project = open_project(proj)
    submit_failing_at_the_second_batch(project, proj / "job.json", monkeypatch)
    env = {**os.environ, "COLUMNS": "200"}

    def ds(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "distributed_something", *args]
        return subprocess.run(cmd, cwd=proj, capture_output=True, text=True, env=env, timeout=240)

    status = json.loads(ds("status", "--json").stdout)
    assert status["counts"]["pending"] == 11 and status["queue"]["queued"] == CHUNK
    assert status["queue"]["unsent"] == 11 - CHUNK
    assert "not sent yet" in ds("status").stderr + ds("status").stdout
    result = ds("run", "--json", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert f"sent {11 - CHUNK} tasks an interrupted submit had left unsent" in result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 11 and report["counts"]["duplicates"] == 0
    assert sorted(ledger.read_text().split()) == sorted(names)  # each ran once
    records = RunRecords(
        LocalBucket(
            FolderStorage(proj / ".ds" / "T" / "buckets" / "default"),
            SqliteObjects(proj / ".ds" / "T" / "records" / "default.sqlite"),
        ),
        "T",
        report["run_id"],
    )
    assert records.sendings() == [] and read_ledger(records).counts["done"] == 11


def test_the_monitor_waits_for_a_sending_under_way_and_finishes_an_interrupted_one(
    tmp_path: Path, chunked: None
) -> None:
    """The monitor's reconciliation (tasks without an outcome, the queue empty) must not
    send again, one by one with a requeue mark each, what a submit is still sending, nor
    what an interrupted one left: it waits for the first and finishes the second."""
    from distributed_something.monitor.settle import settle

    records, queue, tasks = make(tmp_path, 9)
    manifest(records, "p1", tasks)
    records.write_sending("p1", {"to_send": 9, "sent": 0, "sender": sending._sender(), "at": 0.0})
    plan = settle(records, queue, read_ledger(records), 1000.0)
    assert (plan.dead, plan.requeue) == ({}, []) and queue.task_ids() == []
    records.write_sending("p1", {"to_send": 9, "sent": 4, "stopped": True})
    plan = settle(records, queue, read_ledger(records), 1001.0)
    assert (plan.dead, plan.requeue) == ({}, [])
    assert queue.task_ids() == list(tasks.ids())[4:] and records.sendings() == []
    assert all(entry.requeues == 0 for entry in read_ledger(records).tasks.values())
    # With no sending left, the usual reconciliation (messages lost: a purge).
    queue.purge()
    plan = settle(records, queue, read_ledger(records), 1002.0)
    assert sorted(plan.requeue) == sorted(tasks.ids())
