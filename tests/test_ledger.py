"""The ledger: one state per task from the run's records, and the invariant that holds it
true across any sequence of setup / submit / work / worker crash / monitor / cleanup /
redrive (a Hypothesis state machine on the real local queue and folder storage)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from conftest import write_project
from distributed_something import summary
from distributed_something.backends import Backend, open_backend
from distributed_something.errors import InputError
from distributed_something.ledger import (
    build_ledger,
    count_tasks,
    read_counts,
    read_ledger,
    read_outcomes,
    task_state,
)
from distributed_something.monitor.settle import settle
from distributed_something.project import Project
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import (
    Attempt,
    AttemptKey,
    ManifestEntry,
    Mark,
    RunRecords,
    Skip,
)
from distributed_something.report.build import build_report
from distributed_something.state import RunState, load_state
from distributed_something.usecases import lifecycle, run_info
from distributed_something.usecases.project import open_project
from distributed_something.worker.loop import Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from testkit import NoCompute

# --- the pure decision ----------------------------------------------------------------------


def test_a_completed_attempt_is_done_whatever_followed() -> None:
    attempts = [(1, "failed"), (2, "done"), (3, "duplicate"), (4, "lost")]
    assert task_state(skipped=False, attempts=attempts, marks=[]) == "done"


def test_the_latest_event_decides_and_stood_down_duplicates_do_not_count() -> None:
    assert task_state(skipped=False, attempts=[], marks=[]) == "pending"
    assert task_state(skipped=True, attempts=[], marks=[]) == "skipped"
    assert task_state(skipped=False, attempts=[(1, "running")], marks=[]) == "running"
    # a second delivery stood down while the first runs: still running
    running = [(1, "running"), (2, "duplicate")]
    assert task_state(skipped=False, attempts=running, marks=[]) == "running"
    assert task_state(skipped=False, attempts=[(1, "failed")], marks=[]) == "failed"
    assert task_state(skipped=False, attempts=[(1, "failed"), (5, "dead")], marks=[]) == "dead"
    # redriven after it died: pending again, until its next attempt
    died = [(1, "dead")]
    assert task_state(skipped=False, attempts=died, marks=[(9, "redrive")]) == "pending"
    assert task_state(skipped=False, attempts=[*died, (10, "running")], marks=[(9, "redrive")]) == (
        "running"
    )
    # a worker that vanished: lost, so pending; found in the dead letters later: dead
    assert task_state(skipped=False, attempts=[(1, "lost")], marks=[]) == "pending"
    assert task_state(skipped=False, attempts=[(1, "running")], marks=[(5, "dead")]) == "dead"
    assert task_state(skipped=False, attempts=[(1, "released")], marks=[]) == "pending"


# --- the state machine -----------------------------------------------------------------------

NAMES = [f"g{i}" for i in range(6)]
POISON = {"g5"}  # always fails: dead after its attempts

# The command appends "<name>" to the oracle file only when it completes: what really ran.
ORACLE_ARGV = [
    sys.executable,
    "-c",
    "import sys; n = sys.argv[1]; f = sys.argv[2]; "
    "n == 'g5' and sys.exit(7); "
    "open(sys.argv[3] + '/r.txt', 'w').write(n); open(f, 'a').write(n + '\\n')",
    "{name}",
    "{oracle}",
    "{output_dir}",
]


class Accounting(RuleBasedStateMachine):
    """Any sequence of the lifecycle's steps keeps the ledger truthful:

    - every distinct task id of the run's manifest has exactly one state, and totals count
      distinct tasks;
    - nothing is counted done (or skipped as done) whose command never completed;
    - status and report give the same counts;
    - at most one execution of a task is open at a time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(TMP_ROOT) / f"m{time.monotonic_ns()}"
        self.oracle = self.root / "oracle.txt"
        self.oracle.parent.mkdir(parents=True)
        self.oracle.touch()
        proj = write_project(
            self.root / "p",
            argv=ORACLE_ARGV,
            groups=[],
            # one attempt each: a poison task dies at once (a retry waits seconds of backoff)
            extra={"queue": {"visibility": 30, "job_retries": 1}},
        )
        self.project: Project = open_project(proj / "ds.toml")
        real = open_backend(self.project)
        self.backend: Backend = dataclasses.replace(real, compute=NoCompute())
        self.set_up = False

    # helpers ---------------------------------------------------------------------------
    def state(self) -> Any:
        return load_state(self.project, self.backend.storage)

    def records(self) -> RunRecords:
        state = self.state()
        assert state is not None
        return lifecycle.records_for(self.project, self.backend, state)

    def job(self, names: list[str]) -> Path:
        path = self.root / "p" / "job.json"
        groups = [{"name": n, "oracle": str(self.oracle)} for n in names]
        path.write_text(json.dumps({"groups": groups}))
        return path

    def worker(self) -> Worker:
        state = self.state()
        return Worker(
            self.project.config,
            self.backend,
            CommandRecipe(),
            SubprocessRunner(grace_seconds=1),
            WorkerSettings(
                name=f"w{time.monotonic_ns()}",
                run_id=state.run_id,
                scratch_root=self.root / "scratch",
                poll_interval=0.01,
            ),
            sleep=lambda _s: None,
        )

    # rules -----------------------------------------------------------------------------
    @initialize(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=6))
    def first_run(self, names: list[str]) -> None:
        lifecycle.setup(self.project, self.backend)
        lifecycle.submit(self.project, self.job(names), backend=self.backend, show_progress=False)
        self.set_up = True

    @rule()
    def setup(self) -> None:
        lifecycle.setup(self.project, self.backend)
        self.set_up = True

    @precondition(lambda self: self.set_up)
    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4), force=st.booleans())
    def submit(self, names: list[str], force: bool) -> None:
        state = self.state()
        try:
            lifecycle.submit(
                self.project,
                self.job(names),
                backend=self.backend,
                show_progress=False,
                force=force,
            )
        except InputError as error:
            assert not state.active, error  # only a finished run refuses tasks
            return
        assert state.active

    @precondition(lambda self: self.set_up)
    @rule(steps=st.integers(1, 4))
    def work(self, steps: int) -> None:
        worker = self.worker()
        try:
            for _ in range(steps):
                worker.step()
        finally:
            worker.close()

    @precondition(lambda self: self.set_up)
    @rule()
    def worker_killed_mid_task(self) -> None:
        """A worker takes a task, records its start, and dies (SIGKILL: no word)."""
        messages = self.backend.queue.receive(1, 0.05)  # its lease soon runs out
        if messages:
            m = messages[0]
            attempt = Attempt(m.task_id, m.receive_count, m.message_id, "killed", time.time())
            self.records().open_attempt(attempt)
            time.sleep(0.06)

    @precondition(lambda self: self.set_up)
    @rule()
    def monitor_tick(self) -> None:
        """What the monitor does once the queue stays empty: settle or finish."""
        state = self.state()
        if not state.active or not self.backend.queue.counts().drained:
            return
        ledger = read_ledger(self.records())
        if ledger.finished:
            lifecycle.finish(self.project, self.backend, state)
        else:
            settle(self.records(), self.backend.queue, ledger, time.time())

    @precondition(lambda self: self.set_up)
    @rule()
    def message_lost(self) -> None:
        """A task's message leaves the queue with no worker's word (a purge, a lost
        message): the task has no outcome, and the monitor sends it again."""
        messages = self.backend.queue.receive(1, 60)
        if messages:
            self.backend.queue.delete(messages[0])

    @precondition(lambda self: self.set_up)
    @rule()
    def two_monitors_tick(self) -> None:
        """Two monitors of the run (`ds run`'s and a `ds monitor` in another terminal)
        settle from the same reading: what one sends again, the other does not."""
        state = self.state()
        if not state.active or not self.backend.queue.counts().drained:
            return
        ledger = read_ledger(self.records())
        if ledger.finished:
            return
        settle(self.records(), self.backend.queue, ledger, time.time())
        second = settle(self.records(), self.backend.queue, ledger, time.time())
        assert second.requeue == []

    @precondition(lambda self: self.set_up)
    @rule()
    def cleanup(self) -> None:
        lifecycle.cleanup(self.project, self.backend)

    @precondition(lambda self: self.set_up)
    @rule()
    def redrive(self) -> None:
        before = len(run_info.dead_list(self.project, self.backend))
        moved = run_info.dead_redrive(self.project, None, self.backend)
        assert moved == before  # exactly one message per dead task

    # the invariant ---------------------------------------------------------------------
    @invariant()
    def the_ledger_tells_the_truth(self) -> None:
        state = self.state()
        if state is None:
            return
        records = self.records()
        ledger = read_ledger(records)
        manifest_ids = {e.task_id for e in records.manifest()}
        assert set(ledger.tasks) == manifest_ids
        counts = ledger.counts
        assert counts["total"] == len(manifest_ids)
        states = ("done", "skipped", "running", "failed", "pending", "dead")
        assert sum(counts[s] for s in states) == counts["total"]
        completed = set(self.oracle.read_text().split())
        for task in ledger.tasks.values():
            if task.state in ("done", "skipped"):
                assert task.group["name"] in completed, (task, completed)
            if task.group["name"] in POISON:
                assert task.state != "done"
        report = build_report(records, state)
        assert {k: report.counts[k] for k in counts} == counts
        # ds status counts without an entry per task: the same numbers.
        status_counts, corrupt = read_counts(self.records())
        assert status_counts == counts
        # The monitors end a run on a lean whole reading: the same counts and unfinished.
        whole_counts, unfinished = read_outcomes(self.records())
        assert whole_counts == counts
        assert unfinished.ids_in("pending", "running", "failed") == ledger.ids_in(
            "pending", "running", "failed"
        )
        assert corrupt == ledger.corrupt
        # Every attempt a live worker opened is closed by the time its step returns: the
        # open records left are killed workers' (however many: each forced submit is one
        # more message a killed worker may take), closed at their message's next delivery
        # or by the monitor.
        opened = [k for k in records.attempt_keys() if k.outcome == "running"]
        for key in opened:
            data = json.loads(records.storage.get_bytes(records.key_of(key)))
            assert data["worker"] == "killed", (key, data)


TMP_ROOT = ""

_OUTCOMES = st.sampled_from(["running", "done", "failed", "dead", "released", "lost", "duplicate"])
_TASK = st.sampled_from([f"t{i}" for i in range(8)])
#: (task, time, kind) of up to 8 marks (times from 1: a record's time is never 0)
_MARKS = st.lists(
    st.tuples(
        _TASK, st.integers(1, 20), st.sampled_from(["redrive", "requeue", "dead", "deleted"])
    ),
    max_size=8,
)


def _attempts(most: int) -> st.SearchStrategy[list[tuple[str, int, str]]]:
    """(task, start time, outcome) of up to ``most`` attempts."""
    return st.lists(st.tuples(_TASK, st.integers(1, 20), _OUTCOMES), max_size=most)


@settings(max_examples=300, deadline=None)
@given(
    manifest=st.lists(_TASK, max_size=12),
    skipped=st.sets(_TASK),
    attempts=_attempts(15),
    marks=_MARKS,
)
def test_counting_without_entries_gives_the_ledgers_counts(
    manifest: list[str],
    skipped: set[str],
    attempts: list[tuple[str, int, str]],
    marks: list[tuple[str, int, str]],
) -> None:
    attempt_keys = [AttemptKey(t, at, n, "m", o) for n, (t, at, o) in enumerate(attempts)]
    mark_list = [Mark(t, kind, at) for t, at, kind in marks]
    entries = [ManifestEntry(t, None) for t in manifest]
    ledger = build_ledger("r", entries, skipped, attempt_keys, mark_list)
    assert count_tasks(manifest, skipped, attempt_keys, mark_list) == ledger.counts


@settings(max_examples=60, deadline=None)
@given(
    manifest=st.lists(_TASK, max_size=10),
    skipped=st.sets(_TASK, max_size=3),
    attempts=_attempts(12),
    marks=_MARKS,
)
def test_the_lean_whole_reading_is_the_ledgers(
    manifest: list[str],
    skipped: set[str],
    attempts: list[tuple[str, int, str]],
    marks: list[tuple[str, int, str]],
) -> None:
    """`read_outcomes` (what the monitors end a run on) gives `read_ledger`'s counts, and
    its tasks without an outcome with their states and requeues."""
    import tempfile

    from distributed_something.backends.local.storage import FolderStorage

    with tempfile.TemporaryDirectory() as tmp:
        records = RunRecords(FolderStorage(Path(tmp)), "A", "r1")
        records.write_manifest("1", [ManifestEntry(t, {"t": t}) for t in manifest])
        records.write_skips("1", [Skip(t, 0.0, "done", "submit") for t in sorted(skipped)])
        for n, (t, at, outcome) in enumerate(attempts):
            attempt = Attempt(t, n + 1, f"m{n}", "w", at, outcome=outcome)
            records.storage.put_bytes(records.attempt_key(attempt), b"{}")
        for t, at, kind in marks:
            records.write_mark(t, kind, at, {})
        ledger = read_ledger(RunRecords(records.storage, "A", "r1"))
        counts, unfinished = read_outcomes(RunRecords(records.storage, "A", "r1"))
        assert counts == ledger.counts
        expected = {
            t.id: (t.state, t.requeues)
            for t in ledger.tasks.values()
            if t.state in ("pending", "running", "failed")
        }
        assert {t.id: (t.state, t.requeues) for t in unfinished.tasks.values()} == expected


def _records(tmp_path: Path) -> RunRecords:
    from distributed_something.backends.local.storage import FolderStorage

    return RunRecords(FolderStorage(tmp_path / "store"), "A", "r1")


def test_the_manifest_index_counts_what_the_manifest_holds(tmp_path: Path) -> None:
    records = _records(tmp_path)
    records.write_manifest("1", [ManifestEntry("a", {"x": 1}), ManifestEntry("b", None)])
    records.write_manifest("2", [ManifestEntry("b", 2), ManifestEntry("c", 3)])
    indexes = list(records.storage.list(f"{records.run_prefix}index/"))
    assert len(indexes) == 2
    assert list(records.manifest_ids()) == [e.task_id for e in records.manifest()]
    assert list(records.manifest_ids()) == ["a", "b", "c"]


def test_a_damaged_manifest_is_counted_as_the_report_reads_it(tmp_path: Path) -> None:
    records = _records(tmp_path)
    records.write_manifest("1", [ManifestEntry("a", 1)])
    records.write_manifest("2", [ManifestEntry("b", 2), ManifestEntry("c", 3)])
    key = records.manifest_key("2")
    records.storage.put_bytes(key, records.storage.get_bytes(key)[:-9] + b"\n")
    fresh = _records(tmp_path)
    ids = fresh.manifest_ids()
    again = _records(tmp_path)
    assert list(ids) == [e.task_id for e in again.manifest()] == ["a"]
    assert fresh.corrupt == again.corrupt and key in fresh.corrupt


def test_a_manifest_without_index_is_parsed(tmp_path: Path) -> None:
    records = _records(tmp_path)
    records.write_manifest("1", [ManifestEntry("a", 1), ManifestEntry("b", 2)])
    for obj in list(records.storage.list(f"{records.run_prefix}index/")):
        records.storage.delete(obj.key)
    assert list(_records(tmp_path).manifest_ids()) == ["a", "b"]


@pytest.mark.slow
@pytest.mark.parametrize("rolled", [False, True], ids=["summary-as-is", "rolled-every-reading"])
def test_the_ledger_stays_truthful_under_any_sequence(
    tmp_path: Path, rolled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    global TMP_ROOT
    TMP_ROOT = str(tmp_path)
    if rolled:
        # Every `ds status` reading writes the checkpoint forward, with the intents it saw
        # land (read again only for a newer intent): the summary's whole path is exercised.
        monkeypatch.setattr(summary, "ROLL_TASKS", -1)
    run = settings(
        max_examples=25,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(type(f"Accounting_{rolled}", (Accounting,), {})).TestCase  # settings once per class
    run("runTest").runTest()


@pytest.mark.parametrize("storage_kind", ["folder", "sqlite"])
def test_an_attempt_closed_as_lost_then_recorded_done_is_one_attempt(
    tmp_path: Path, storage_kind: str
) -> None:
    # `ds cleanup` closes open attempts as lost without waiting for the workers to stop (on
    # AWS they are stopped asynchronously); a command that then succeeds records its end.
    # The report counted two attempts (and twice the task time) for one execution.
    from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
    from distributed_something.backends.local.storage import FolderStorage
    from distributed_something.records import DoneMarker

    storage: Any = FolderStorage(tmp_path / "b")
    if storage_kind == "sqlite":
        storage = LocalBucket(storage, SqliteObjects(tmp_path / "r.sqlite"))
    records = RunRecords(storage, "A", "r1")
    records.write_manifest("p0", [ManifestEntry("t1", {"name": "a"})])
    attempt = Attempt("t1", 1, "m1", "w1", 1000.0, cause="lost")
    records.open_attempt(attempt)
    (running,) = records.attempt_keys("t1")
    assert records.close_stale(running, "lost", 1001.0, "cleaned up")
    attempt.outcome, attempt.ended_at = "done", 1002.0
    marker = DoneMarker("t1", 1, 2.0, [], 1000.0, 1002.0, "w1", "out", run_id="r1")
    records.write(records.closing(attempt, marker))

    listed = sorted(
        o.key.rsplit(".", 2)[1] for o in storage.list(f"{records.run_prefix}attempts/t1/")
    )
    assert listed == ["done", "lost"]  # both records are there ...
    (key,) = records.attempt_keys("t1")  # ... and they are one attempt, done
    assert key.outcome == "done"
    entry = read_ledger(records).tasks["t1"]
    assert (entry.state, entry.attempts, entry.duplicate) == ("done", 1, False)
    state = RunState(app_name="A", run_id="r1", backend="local", created_at=1.0)
    (task,) = build_report(records, state).tasks
    assert (task.outcome, task.attempts) == ("done", 1)
