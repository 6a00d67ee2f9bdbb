"""The report of a big local run read by two processes (`build_report`'s ``fork``): the
second half of the manifest in a forked child, joined in order. Whatever the split, and
whatever happens to the child, the report and its per-task files are those one reading
alone makes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed_something import backends
from distributed_something.backends.local import forking
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.interfaces.fork import ForkedCall
from distributed_something.records import (
    Attempt,
    DoneMarker,
    Failure,
    ManifestEntry,
    RunRecords,
    Skip,
)
from distributed_something.report import build
from distributed_something.report.build import RunReport, build_report
from distributed_something.report.files import TaskFiles
from distributed_something.state import RunState

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="not applicable: no fork here")

TASKS = 40


@pytest.fixture
def as_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as a `ds` command with one thread (as `ds report` is), and every run big
    enough to split; a sample of 3 tasks per outcome, so the halves' samples are merged."""
    backends.set_command(True)
    monkeypatch.setattr(forking.threading, "active_count", lambda: 1)
    monkeypatch.setattr(build, "SPLIT_MIN_TASKS", 1)
    monkeypatch.setattr(build, "SAMPLE", 3)
    yield
    backends.set_command(False)


def local_records(tmp_path: Path) -> RunRecords:
    """A run of `TASKS` tasks in the local records (SQLite, read again after the fork) with
    every kind of outcome, on both sides of the split."""
    storage = LocalBucket(FolderStorage(tmp_path / "bucket"), SqliteObjects(tmp_path / "r.db"))
    records = RunRecords(storage, "App", "r1")
    ids = [f"t{i:03d}" for i in range(TASKS)]
    records.write_manifest("a", [ManifestEntry(t, {"n": i}) for i, t in enumerate(ids)])
    now = time.time()
    for i, task_id in enumerate(ids):
        kind = i % 8
        if kind == 7:
            continue  # pending
        if kind == 6:
            records.write_skip(Skip(task_id, now, "outputs found", "w1"))
            continue
        attempt = Attempt(task_id, 1, f"m{i}", "w1", now + i)
        records.open_attempt(attempt)
        if kind == 5:
            continue  # running
        attempt.outcome = {0: "done", 1: "done", 2: "done", 3: "failed", 4: "dead"}[kind]
        attempt.ended_at = now + i + 0.5
        marker = None
        if attempt.outcome == "done":
            bucket = "other" if i % 3 == 0 else ""
            marker = DoneMarker(
                task_id, 1, 0.5 + i, [f"out/{i}.txt"], now + i, now + i + 1.5, "w1",
                f"out/{i}", run_id="r1", output_bucket=bucket,
            )  # fmt: skip
        else:
            records.write_failure(
                Failure(task_id, 1, f"exit 3 in {task_id}", 3, "Error: no such file\n", now, "w1")
            )
        records.write(records.closing(attempt, marker))
    records.storage.put_bytes(records.done_key(ids[9]), b"{not json")  # a corrupt marker
    return records


STATE = RunState(app_name="App", run_id="r1", backend="local", created_at=1_700_000_000.0)


def read(
    tmp_path: Path, records: RunRecords, name: str, fork: Callable[..., ForkedCall | None] | None
) -> tuple[RunReport, bytes, bytes, dict[str, str]]:
    """The report read ``fork``'s way (None: alone), its files, and what it found corrupt."""
    fresh = RunRecords(records.storage, "App", "r1")
    files = TaskFiles(tmp_path / f"{name}.json", tmp_path / f"{name}.tsv")
    report = build_report(fresh, STATE, None, files.add, fork=fork, parts=files)
    files.finish(report)
    json_bytes = (tmp_path / f"{name}.json").read_bytes()
    return report, json_bytes, (tmp_path / f"{name}.tsv").read_bytes(), fresh.corrupt


def same(one: tuple[RunReport, bytes, bytes, dict[str, str]], other: Any) -> None:
    report, json_bytes, tsv_bytes, corrupt = one
    assert report.to_json() == other[0].to_json()
    assert list(report.all_durations) == list(other[0].all_durations)
    assert list(report.all_finish_times) == list(other[0].all_finish_times)
    assert (json_bytes, tsv_bytes, corrupt) == other[1:]


def forks_counted(calls: list[ForkedCall | None]) -> Callable[..., ForkedCall | None]:
    def fork(fn: Callable[[], Any]) -> ForkedCall | None:
        calls.append(forking.call_forked(fn))
        return calls[-1]

    return fork


def test_a_split_report_is_the_one_read_alone(tmp_path: Path, as_command: None) -> None:
    records = local_records(tmp_path)
    alone = read(tmp_path, records, "alone", None)
    calls: list[ForkedCall | None] = []
    split = read(tmp_path, records, "split", forks_counted(calls))
    assert len(calls) == 1 and calls[0] is not None  # the child read the second half
    same(split, alone)
    report = split[0]
    # The halves' samples joined as one reading lists them: every dead, failed and running
    # task, and the first three of each other outcome.
    listed = [(t.id, t.outcome) for t in report.tasks]
    assert [i for i, o in listed if o == "dead"] == [f"t{i:03d}" for i in range(4, TASKS, 8)]
    assert [i for i, o in listed if o == "done"] == ["t000", "t001", "t002"]
    assert report.counts["done"] == 15 and report.counts["pending"] == 5
    assert report.bucket_locations.keys() == {"other"}
    assert f"{records.prefix}done/t009.json" in split[3]  # found by the parent's half
    assert not list(tmp_path.glob(".split*")), "fragments left behind"


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_failed_child_has_its_half_read_by_the_parent(
    tmp_path: Path, as_command: None, how: str
) -> None:
    records = local_records(tmp_path)
    alone = read(tmp_path, records, "alone", None)

    def broken() -> object:
        if how == "raises":
            raise RuntimeError("the disk went away")
        os._exit(3)

    split = read(tmp_path, records, "split", lambda fn: forking.call_forked(broken))
    same(split, alone)
    assert not list(tmp_path.glob(".split*")), "fragments left behind"


def test_no_split_where_forking_is_not_safe(tmp_path: Path, as_command: None) -> None:
    records = local_records(tmp_path)
    backends.set_command(False)  # a program using the package: never forked
    calls: list[ForkedCall | None] = []
    alone = read(tmp_path, records, "alone", None)
    same(read(tmp_path, records, "split", forks_counted(calls)), alone)
    assert calls == [None]


def test_a_failing_parent_stops_its_child(tmp_path: Path, as_command: None) -> None:
    records = local_records(tmp_path)
    calls: list[ForkedCall | None] = []
    files = TaskFiles(tmp_path / "r.json", tmp_path / "r.tsv")

    def on_task(task: object) -> None:
        raise KeyError("the parent's half fails")

    with pytest.raises(KeyError):
        build_report(records, STATE, None, on_task, fork=forks_counted(calls), parts=files)
    files.abandon()
    child = calls[0]
    assert isinstance(child, forking._ForkedCall)
    with pytest.raises(ChildProcessError):  # killed and reaped: no zombie left
        os.waitpid(child.pid, os.WNOHANG)
    assert not list(tmp_path.glob(".r.*")), "fragments left behind"


def test_the_forked_child_writes_nothing_to_the_parents_streams(
    tmp_path: Path, as_command: None, capfd: pytest.CaptureFixture[str]
) -> None:
    records = local_records(tmp_path)
    print("before the fork", end="")  # buffered: must be written once, not twice
    sys.stdout.flush()
    read(tmp_path, records, "split", forking.call_forked)
    out, _ = capfd.readouterr()
    assert out == "before the fork"
