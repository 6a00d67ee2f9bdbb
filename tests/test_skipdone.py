"""Submit-time check-if-done: two listings decide for every task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import CheckIfDoneConfig, Config
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.jobs.model import Task
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import DoneMarker, RunRecords, Skip
from distributed_something.usecases.skipdone import common_root, done_by_outputs, finished_tasks


def test_common_root_is_a_folder() -> None:
    assert common_root(["out/a/", "out/ab/", "out/b/"]) == "out/"
    assert common_root(["res/plate1/A01/", "res/plate1/A02/"]) == "res/plate1/"
    assert common_root(["x/", "y/"]) == ""
    assert common_root([]) == ""


def test_done_by_outputs_groups_objects_by_task_prefix() -> None:
    rule = CheckIfDoneConfig(expected_number_files=2, min_file_size_bytes=1)
    prefixes = {"out/a/": ["ta"], "out/ab/": ["tab"], "out/a/deep/": ["tdeep"]}
    objects = [
        ObjectInfo("out/a/1.csv", 5),
        ObjectInfo("out/a/2.csv", 5),
        ObjectInfo("out/ab/1.csv", 5),  # only one object: not done, and not counted for out/a/
        ObjectInfo("out/a/deep/x", 0),  # too small for tdeep, but counts for out/a/ too
    ]
    assert done_by_outputs(objects, prefixes, rule) == {"ta"}


class CountingStorage(FolderStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listings: list[str] = []

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.listings.append(prefix)
        return super().list(prefix)


@pytest.mark.parametrize("rule", [{}, {"expected_number_files": 1}])
def test_finished_tasks_uses_at_most_two_listings(tmp_path: Path, rule: dict[str, Any]) -> None:
    storage = CountingStorage(tmp_path / "bucket")
    config = Config.model_validate(
        {
            "app_name": "S",
            "recipe": {"name": "command", "argv": ["true"], "output_prefix": "res/{n}"},
            "check_if_done": rule,
        }
    )
    tasks = [Task(body={"group": {"n": str(i)}}) for i in range(300)]
    records = RunRecords(storage, "S", "run1")
    for task in tasks[:100]:  # finished with a done marker
        records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "w", "x"))
    for i in range(100, 200):  # finished, outputs only (a run of the family's scripts)
        storage.put_bytes(f"res/{i}/result.csv", b"data")
    storage.listings.clear()

    done = finished_tasks(config, CommandRecipe(), tasks, records, lambda _name: storage)

    expected = 200 if rule else 100
    assert len(done) == expected
    assert {t.id for t in tasks[:expected]} == set(done)
    assert len(storage.listings) == (2 if rule else 1)
    if rule:
        assert storage.listings[1] == "res/"


class WriteCountingStorage(FolderStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put_bytes(key, data)


def test_submit_time_skips_are_one_object_and_counted_with_the_workers(tmp_path: Path) -> None:
    storage = WriteCountingStorage(tmp_path / "bucket")
    records = RunRecords(storage, "S", "run1")
    records.write_skips("1", (Skip(f"t{i}", 1.0, "done (at submit)", "submit") for i in range(900)))
    assert storage.writes == ["_ds/S/runs/run1/skipped-1.jsonl"]
    records.write_skips("2", [])  # nothing skipped: nothing written
    assert len(storage.writes) == 1
    # A worker skips a task the submit skipped too (a second submit's copy) and a new one.
    records.write_skip(Skip("t5", 2.0, "done marker", "w1"))
    records.write_skip(Skip("w-only", 2.0, "done marker", "w1"))
    assert records.count_skipped() == 901
    skips = {s.task_id: s for s in records.all_skips()}
    assert len(skips) == 901
    assert skips["t5"].reason == "done (at submit)"  # each id once, the submit's record first
    assert skips["w-only"].worker == "w1"
    # Another run's records are not counted.
    assert RunRecords(storage, "S", "run2").count_skipped() == 0


class ReadCountingStorage(FolderStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get_bytes(key)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_done_markers_of_many_tasks_are_read_only_where_they_exist(
    tmp_path: Path, concurrency: int
) -> None:
    storage = ReadCountingStorage(tmp_path / "bucket")
    storage.read_concurrency = concurrency  # 8: read from a thread pool, as on S3
    records = RunRecords(storage, "S", "run1")
    for i in range(0, 60, 2):  # every other task is done
        records.write_done(DoneMarker(f"t{i}", 1, 0.5, [f"out/{i}"], 1.0, 2.0 + i, "w", "out/"))
    wanted = [f"t{i}" for i in range(60)] + ["t0"]  # a repeated id is read once
    markers = records.read_done_many(wanted)
    assert sorted(markers) == sorted(f"t{i}" for i in range(0, 60, 2))
    assert markers["t10"].finished_at == 12.0 and markers["t10"].outputs == ["out/10"]
    assert len(storage.reads) == 30  # no read for a task without a marker
    assert markers == {t: m for t in wanted if (m := records.read_done(t)) is not None}
