"""Owner-only local files, whatever the umask: the SQLite queue (and its folder, -wal and
-shm), the run state, and the records area (`_ds/`) of folder storage."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import write_project
from distributed_something.atomicfile import write_text_atomically
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from testkit import local_bucket

Ds = Callable[..., subprocess.CompletedProcess[str]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o077], ids=["umask022", "umask000", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under each umask (0o000: nothing taken away, so only an explicit mode
    keeps files private), then restore the process's umask."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


# --- the queue -------------------------------------------------------------------------


def test_queue_file_wal_shm_and_folder_are_owner_only(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "state" / "queue.sqlite"
    queue = SqliteQueue(path, max_receive_count=3)
    queue.send_batch([("t1", "{}")])
    assert queue.counts().visible == 1
    wal, shm = path.with_name("queue.sqlite-wal"), path.with_name("queue.sqlite-shm")
    assert wal.exists() and shm.exists()  # WAL mode, connection still open
    assert {p.name: mode(p) for p in (path, wal, shm)} == {
        "queue.sqlite": 0o600,
        "queue.sqlite-wal": 0o600,
        "queue.sqlite-shm": 0o600,
    }
    assert mode(path.parent) == 0o700
    queue.close()


def test_an_older_wider_queue_is_narrowed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "state" / "queue.sqlite"
    first = SqliteQueue(path, max_receive_count=3)
    first.send_batch([("t1", "{}")])
    wal = path.with_name("queue.sqlite-wal")
    for p in (path, wal):
        p.chmod(0o644)  # as an earlier version left them
    path.parent.chmod(0o755)
    second = SqliteQueue(path, max_receive_count=3)
    assert second.counts().visible == 1  # the data is intact
    assert (mode(path), mode(wal), mode(path.parent)) == (0o600, 0o600, 0o700)
    first.close()
    second.close()


# --- the run state ---------------------------------------------------------------------


def test_atomic_writes_get_exactly_their_mode(tmp_path: Path, umask: int) -> None:
    private = write_text_atomically(tmp_path / "a" / "state.json", "{}")
    assert mode(private) == 0o600 and private.read_text() == "{}"
    shared = write_text_atomically(tmp_path / "a" / "report.json", "{}", mode=0o644)
    assert mode(shared) == 0o644  # exact, even where the umask would take bits away
    private.write_text("old")
    private.chmod(0o666)
    write_text_atomically(private, "new")
    assert (mode(private), private.read_text()) == (0o600, "new")


# --- folder storage --------------------------------------------------------------------


def test_records_area_objects_and_folders_are_owner_only(tmp_path: Path, umask: int) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    storage.put_bytes("_ds/T/done/abc.json", b"{}")
    source = tmp_path / "log.txt"
    source.write_text("log")
    storage.put_file("_ds/T/runs/r1/logs/abc.log", source)
    storage.put_files([("_ds/T/runs/r1/x.json", source)])
    root = storage.root
    for key in ("_ds/T/done/abc.json", "_ds/T/runs/r1/logs/abc.log", "_ds/T/runs/r1/x.json"):
        assert mode(root / key) == 0o600, key
    for folder in ("_ds", "_ds/T", "_ds/T/done", "_ds/T/runs", "_ds/T/runs/r1/logs"):
        assert mode(root / folder) == 0o700, folder
    assert storage.get_bytes("_ds/T/done/abc.json") == b"{}"
    assert [o.key for o in storage.list("_ds/T/done/")] == ["_ds/T/done/abc.json"]


def test_outputs_outside_the_records_area_keep_the_umask(tmp_path: Path, umask: int) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    storage.put_bytes("out/a/r.txt", b"x")
    storage.put_bytes("out/_ds/r.txt", b"x")  # `_ds` below the top is an ordinary name
    assert mode(storage.root / "out/a/r.txt") == 0o666 & ~umask
    assert mode(storage.root / "out/_ds/r.txt") == 0o666 & ~umask
    assert mode(storage.root / "out/a") == 0o777 & ~umask


def test_an_older_wider_records_folder_is_narrowed_on_the_next_write(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    (storage.root / "_ds" / "T").mkdir(parents=True)
    (storage.root / "_ds").chmod(0o755)
    (storage.root / "_ds" / "T").chmod(0o775)
    storage.put_bytes("_ds/T/state.json", b"{}")
    assert (mode(storage.root / "_ds"), mode(storage.root / "_ds/T")) == (0o700, 0o700)
    assert mode(storage.root / "_ds/T/state.json") == 0o600


# --- through the CLI -------------------------------------------------------------------


def test_setup_and_submit_leave_owner_only_queue_state_and_records(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(tmp_path / "p", argv=["{python}", "-c", "pass"], groups=[{"name": "a"}])
    old = os.umask(0o000)  # the `ds` subprocesses inherit it: the most permissive umask
    try:
        for args in (["setup"], ["submit", "job.json"]):
            result = ds(*args, cwd=proj)
            assert result.returncode == 0, result.stderr
    finally:
        os.umask(old)
    state_dir = proj / ".ds" / "T"
    assert mode(state_dir) == 0o700
    assert mode(state_dir / "queue.sqlite") == 0o600
    assert mode(state_dir / "state.json") == 0o600
    # The records area (the state copy and the manifest, at least) is one SQLite file.
    keys = [o.key for o in local_bucket(proj).list("_ds/T/")]
    assert "_ds/T/state.json" in keys and any("/manifest-" in key for key in keys)
    records = state_dir / "records"
    written = list(records.iterdir())
    assert records / "default.sqlite" in written
    assert mode(records) == 0o700
    assert {p.name: mode(p) for p in written} == {p.name: 0o600 for p in written}
    assert not (state_dir / "buckets" / "default" / "_ds").exists()
