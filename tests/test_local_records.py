"""The local backend's records in SQLite (records_store.py): which keys go where, listings
that span the table and the folder, and runs recorded as files by an earlier version."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import write_project
from distributed_something.backends.local.records_store import (
    LocalBucket,
    SqliteObjects,
    _after_prefix,
    _files_may_hold,
    in_table,
)
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.storage import write_all
from testkit import local_bucket

Ds = Callable[..., subprocess.CompletedProcess[str]]

RUN = "_ds/App/runs/r1/"


def bucket_at(tmp_path: Path) -> LocalBucket:
    return LocalBucket(FolderStorage(tmp_path / "bucket"), SqliteObjects(tmp_path / "r.sqlite"))


def files_in(tmp_path: Path) -> set[str]:
    root = tmp_path / "bucket"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("key", "table"),
    [
        ("_ds/App/done/t1.json", True),
        (f"{RUN}attempts/t1/0001.running.json", True),
        (f"{RUN}journal/00000001/00000000000000001.a.x.t1", True),
        ("_ds/App/state.json", True),
        (f"{RUN}logs/t1/00000000000000001-0001.log", False),
        (f"{RUN}report.html", False),
        (f"{RUN}report.tsv", False),
        (f"{RUN}logs", True),  # not a log: a record named "logs"
        ("_ds/logs/runs/r1/logs/t1/x.log", False),  # an app named "logs"
        ("_ds/App/runsx/r1/logs/t1/x.log", True),
        ("out/_ds/t1.txt", False),
        ("results/t1.txt", False),
    ],
)
def test_records_go_to_the_table_logs_reports_and_outputs_to_files(
    tmp_path: Path, key: str, table: bool
) -> None:
    bucket = bucket_at(tmp_path)
    bucket.put_bytes(key, b"x")
    assert in_table(key) is table
    assert (key in files_in(tmp_path)) is not table
    assert [o.key for o in bucket.records.list("")] == ([key] if table else [])
    assert bucket.get_bytes(key) == b"x"
    assert [o.key for o in bucket.list("")] == [key]


def test_a_listing_over_both_sides_is_in_key_order_after_start_after(tmp_path: Path) -> None:
    bucket = bucket_at(tmp_path)
    keys = [
        "_ds/App/done/t1.json",
        f"{RUN}attempts/t1/a.done.json",
        f"{RUN}logs/t1/1.log",
        f"{RUN}logs/t2/1.log",
        f"{RUN}marks/t1/1.dead",
        f"{RUN}report.html",
        f"{RUN}report.json",
        "_ds/App/state.json",
        "a.txt",
        "z/b.txt",
    ]
    for key in reversed(keys):
        bucket.put_bytes(key, key.encode())
    assert [o.key for o in bucket.list("")] == sorted(keys)
    assert [o.key for o in bucket.list(RUN)] == sorted(k for k in keys if k.startswith(RUN))
    after = f"{RUN}logs/t1/1.log"
    assert [o.key for o in bucket.list("_ds/", start_after=after)] == [
        k for k in sorted(keys) if k.startswith("_ds/") and k > after
    ]
    assert [(o.key, o.size) for o in bucket.list(f"{RUN}report")] == [
        (f"{RUN}report.html", len(f"{RUN}report.html")),
        (f"{RUN}report.json", len(f"{RUN}report.json")),
    ]


def test_listing_a_tasks_records_never_walks_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = bucket_at(tmp_path)
    bucket.put_bytes(f"{RUN}attempts/t1/a.running.json", b"{}")
    bucket.put_bytes(f"{RUN}logs/t1/1.log", b"log")

    def walked(prefix: str, start_after: str = "") -> object:
        raise AssertionError(f"the folder was listed for {prefix!r}")

    monkeypatch.setattr(bucket.files, "list", walked)
    assert [o.key for o in bucket.list(f"{RUN}attempts/t1/")] == [
        f"{RUN}attempts/t1/a.running.json"
    ]
    assert list(bucket.list(f"{RUN}journal/00000001/")) == []
    assert list(bucket.list("_ds/App/done/")) == []
    for prefix in (RUN, f"{RUN}l", f"{RUN}logs/", f"{RUN}rep", "_ds/App/r", ""):
        assert _files_may_hold(prefix), prefix
    for prefix in (f"{RUN}attempts/", "_ds/App/done/", "_ds/App/state.json", f"{RUN}x"):
        assert not _files_may_hold(prefix), prefix


def test_after_prefix_bounds_every_key_with_the_prefix() -> None:
    assert _after_prefix("") is None
    assert _after_prefix("a/") == "a0"
    assert _after_prefix("ab") == "ac"
    assert _after_prefix("a\U0010ffff") == "b"
    assert _after_prefix("\U0010ffff") is None


def test_a_listing_reads_pages_and_sees_writes_made_while_it_iterates(tmp_path: Path) -> None:
    records = SqliteObjects(tmp_path / "r.sqlite")
    for i in range(2500):
        records.put_bytes(f"p/{i:05d}", b"x")
    seen = []
    for info in records.list("p/"):
        seen.append(info.key)
        if info.key == "p/00010":
            records.delete("p/02499")  # a later page no longer holds it
            records.put_bytes("p/02500", b"y")
    assert seen == [f"p/{i:05d}" for i in range(2499)] + ["p/02500"]


# --- runs recorded as files by an earlier version ----------------------------------------


def old_version_records(tmp_path: Path) -> dict[str, bytes]:
    """Records as an earlier version left them: files under ``_ds/`` in the bucket folder."""
    files = FolderStorage(tmp_path / "bucket")
    written = {
        "_ds/App/done/t1.json": b'{"task_id": "t1"}',
        "_ds/App/state.json": b'{"run_id": "r1"}',
        f"{RUN}attempts/t1/a.done.json": b"{}",
        f"{RUN}logs/t1/1.log": b"its log",
        f"{RUN}report.json": b"{}",
    }
    for key, data in written.items():
        files.put_bytes(key, data)
    return written


def test_a_batch_of_records_is_one_write_all_or_nothing(tmp_path: Path) -> None:
    bucket = bucket_at(tmp_path)
    done, closed, opened = (
        f"{RUN}done/t1.json",
        f"{RUN}attempts/t1/a.done.json",
        (f"{RUN}attempts/t1/a.running.json"),
    )
    bucket.put_bytes(opened, b"{}")
    # A bad key anywhere: refused before anything is written.
    with pytest.raises(InputError):
        bucket.write_batch([(done, b"1")], ["../escape"])
    assert not bucket.exists(done)
    # The database refusing the last step (as a full disk would) undoes the first ones.
    refuse = sqlite3.connect(tmp_path / "r.sqlite", isolation_level=None)
    refuse.execute(
        "CREATE TRIGGER full BEFORE DELETE ON objects BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    with pytest.raises(BackendError, match="full"):
        write_all(bucket, [(done, b"1"), (closed, b"2")], [opened])
    assert [bucket.exists(key) for key in (done, closed, opened)] == [False, False, True]
    refuse.execute("DROP TRIGGER full")
    write_all(bucket, [(done, b"1"), (closed, b"2")], [opened])
    assert [bucket.exists(key) for key in (done, closed, opened)] == [True, True, False]
    # A batch that touches a file (a task's log) is written in order, one key at a time.
    log = f"{RUN}logs/t1/00000000000000001-0001.log"
    write_all(bucket, [(log, b"log"), (opened, b"{}")], [closed])
    assert bucket.get_bytes(log) == b"log" and f"{RUN}logs/t1/00000000000000001-0001.log" in (
        files_in(tmp_path)
    )
    assert bucket.exists(opened) and not bucket.exists(closed)


def test_records_left_as_files_move_into_the_table_once(tmp_path: Path) -> None:
    written = old_version_records(tmp_path)
    bucket = bucket_at(tmp_path)
    assert {k: bucket.get_bytes(k) for k in written} == written
    assert [o.key for o in bucket.list("")] == sorted(written)
    # Moved, not copied: only the log and the report are files still.
    assert files_in(tmp_path) == {f"{RUN}logs/t1/1.log", f"{RUN}report.json"}
    assert bucket.records.fact("files adopted") == "3 records"
    # A file an older process writes afterwards is not looked for again (once per file).
    FolderStorage(tmp_path / "bucket").put_bytes("_ds/App/done/t9.json", b"{}")
    again = bucket_at(tmp_path)
    assert not again.exists("_ds/App/done/t9.json")


def test_a_record_written_since_wins_over_its_old_file(tmp_path: Path) -> None:
    old_version_records(tmp_path)
    records = SqliteObjects(tmp_path / "r.sqlite")
    records.put_bytes("_ds/App/state.json", b'{"run_id": "r2"}')  # newer, no adoption yet
    bucket = bucket_at(tmp_path)
    assert bucket.get_bytes("_ds/App/state.json") == b'{"run_id": "r2"}'
    assert "_ds/App/state.json" not in files_in(tmp_path)


def test_a_process_that_read_old_files_adds_nothing_once_the_move_is_done(
    tmp_path: Path,
) -> None:
    old_version_records(tmp_path)
    first, late = bucket_at(tmp_path), bucket_at(tmp_path)
    first.adopt_files()
    first.delete("_ds/App/done/t1.json")  # deleted after the move
    # A process that read the file before the first one deleted it, inserting now:
    assert not late.records.adopt([("_ds/App/done/t1.json", b"{}")], "files adopted", None)
    assert not first.exists("_ds/App/done/t1.json")


def test_a_move_stopped_midway_is_finished_by_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = old_version_records(tmp_path)
    bucket = bucket_at(tmp_path)
    deletes = 0

    def crash_after_one(key: str) -> None:
        nonlocal deletes
        if deletes == 1:
            raise OSError("killed")
        deletes += 1
        FolderStorage.delete(bucket.files, key)

    monkeypatch.setattr(bucket.files, "delete", crash_after_one)
    with pytest.raises(OSError, match="killed"):
        bucket.get_bytes("_ds/App/done/t1.json")
    assert bucket.records.fact("files adopted") is None
    later = bucket_at(tmp_path)
    assert {k: later.get_bytes(k) for k in written} == written
    assert files_in(tmp_path) == {f"{RUN}logs/t1/1.log", f"{RUN}report.json"}


def test_an_unreadable_old_record_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_version_records(tmp_path)
    unreadable = tmp_path / "bucket" / "_ds/App/done/t1.json"
    read_bytes = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    bucket = bucket_at(tmp_path)
    with pytest.raises(BackendError, match=r"cannot move the record .*t1\.json.*Fix: make it"):
        bucket.exists("_ds/App/state.json")
    assert unreadable.exists()  # nothing lost: its batch was not moved


def test_a_project_run_before_the_upgrade_keeps_its_done_tasks(tmp_path: Path, ds: Ds) -> None:
    """A user's project whose run was recorded as files: after the upgrade, status counts
    its task done, and running it again skips it (check-if-done reads the moved marker)."""
    proj = write_project(tmp_path / "p", argv=["{python}", "-c", "pass"], groups=[{"name": "a"}])
    assert ds("run", cwd=proj).returncode == 0
    bucket = local_bucket(proj)
    # Turn the run into what an earlier version left: every record a file, no table.
    for info in list(bucket.records.list("")):
        bucket.files.put_bytes(info.key, bucket.records.get_bytes(info.key))
    bucket.records.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{bucket.records.path}{suffix}").unlink(missing_ok=True)
    status = ds("status", "--json", cwd=proj)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["done"] == 1
    again = ds("run", "--json", cwd=proj)  # a new run: the task was done before it
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["skipped"] == 1
    assert not (bucket.files.root / "_ds" / "T" / "done").exists()
