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
from distributed_something.worker.policy import skip_reason


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

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        self.listings.append(prefix)
        return super().list(prefix, start_after)


@pytest.mark.parametrize("rule", [{}, {"expected_number_files": 1}])
def test_finished_tasks_uses_one_listing(tmp_path: Path, rule: dict[str, Any]) -> None:
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
    for task in tasks[:100]:  # a done marker, but the outputs were deleted
        records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "w", "x"))
    for i in range(100, 200):  # outputs only (a run of the family's scripts)
        storage.put_bytes(f"res/{i}/result.csv", b"data")
    storage.listings.clear()

    done = finished_tasks(config, CommandRecipe(), tasks, records, lambda _name: storage)

    # With a count rule the outputs alone decide (deleting them forces a rerun, as in the
    # family); without one the done markers do.
    finished = tasks[100:200] if rule else tasks[:100]
    assert set(done) == {t.id for t in finished}
    assert len(storage.listings) == 1
    assert storage.listings[0] == ("res/" if rule else records.done_key("x")[: -len("x.json")])


def test_finished_tasks_is_what_the_rule_says_even_when_checking_is_off(tmp_path: Path) -> None:
    # `ds submit --skip-done` asks for it explicitly; `enabled` is the default of that switch.
    storage = FolderStorage(tmp_path / "bucket")
    config = Config.model_validate(
        {
            "app_name": "S",
            "recipe": {"name": "command", "argv": ["true"], "output_prefix": "res/{n}"},
            "check_if_done": {"enabled": False, "expected_number_files": 2},
        }
    )
    tasks = [Task(body={"group": {"n": str(i)}}) for i in range(3)]
    storage.put_bytes("res/0/a", b"1")
    storage.put_bytes("res/0/b", b"1")
    storage.put_bytes("res/1/a", b"1")  # one of two: not done
    records = RunRecords(storage, "S", "run1")

    done = finished_tasks(config, CommandRecipe(), tasks, records, lambda _name: storage)

    assert done == {tasks[0].id: "outputs under res/0/ meet the check-if-done rule"}


def test_without_a_recipe_the_count_rule_leaves_the_check_to_the_image(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "bucket")
    config = Config.model_validate(
        {"app_name": "S", "backend": "aws", "check_if_done": {"expected_number_files": 1}}
    )
    tasks = [Task(body={"group": {"n": "0"}})]
    records = RunRecords(storage, "S", "run1")
    records.write_done(DoneMarker(tasks[0].id, 1, 1.0, [], 0.0, 1.0, "w", "x"))

    assert finished_tasks(config, None, tasks, records, lambda _name: storage) == {}
    assert storage.listings == []


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
def test_done_markers_of_many_tasks_are_read_in_order_once_each(
    tmp_path: Path, concurrency: int
) -> None:
    storage = ReadCountingStorage(tmp_path / "bucket")
    storage.read_concurrency = concurrency  # 8: read from a thread pool, as on S3
    records = RunRecords(storage, "S", "run1")
    for i in range(0, 60, 2):  # every other task is done
        records.write_done(DoneMarker(f"t{i}", 1, 0.5, [f"out/{i}"], 1.0, 2.0 + i, "w", "out/"))
    storage.put_bytes(records.done_key("t7"), b"[]")  # not a marker: noted, not returned
    wanted = [f"t{i}" for i in range(60)]
    markers = records.read_done_of(wanted)
    assert [m.task_id if m else None for m in markers] == [
        t if int(t[1:]) % 2 == 0 else None for t in wanted
    ]
    assert markers[10] is not None and markers[10].finished_at == 12.0
    assert markers[10].outputs == ["out/10"]
    assert sorted(storage.reads) == sorted(records.done_key(t) for t in wanted)  # once each
    assert records.done_key("t7") in records.corrupt


class Calls:
    """Stand-ins for the marker read and the output listing that count their calls."""

    def __init__(self, marker: bool, objects: list[ObjectInfo]) -> None:
        self.marker, self.objects = marker, objects
        self.marker_reads = self.listings = 0

    def has_marker(self) -> bool:
        self.marker_reads += 1
        return self.marker

    def outputs(self) -> list[ObjectInfo]:
        self.listings += 1
        return self.objects


FOUR = [ObjectInfo(f"out/t/{i}.csv", 10) for i in range(4)]
SEVEN = [ObjectInfo(f"out/t/{i}.csv", 10) for i in range(7)]


@pytest.mark.parametrize(
    ("rule", "marker", "objects", "reason", "reads", "listings"),
    [
        # Off: nothing is looked at, nothing skipped.
        ({"enabled": False}, True, SEVEN, None, 0, 0),
        # No count configured: the done marker decides, outputs are not listed.
        ({}, True, [], "done marker present", 1, 0),
        ({}, False, SEVEN, None, 1, 0),
        # A count configured: it alone decides; the marker is not even read.
        ({"expected_number_files": 7}, True, FOUR, None, 0, 1),
        ({"expected_number_files": 7}, False, SEVEN, "outputs under out/t/ meet the "
         "check-if-done rule", 0, 1),
        ({"expected_number_files": 7, "min_file_size_bytes": 11}, True, SEVEN, None, 0, 1),
    ],
)  # fmt: skip
def test_skip_reason(
    rule: dict[str, Any],
    marker: bool,
    objects: list[ObjectInfo],
    reason: str | None,
    reads: int,
    listings: int,
) -> None:
    calls = Calls(marker, objects)
    got = skip_reason(
        CheckIfDoneConfig(**rule),
        has_marker=calls.has_marker,
        outputs=calls.outputs,
        where="out/t/",
    )
    assert got == reason
    assert (calls.marker_reads, calls.listings) == (reads, listings)
