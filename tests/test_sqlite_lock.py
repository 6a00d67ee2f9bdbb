"""The local SQLite files' wait for the write lock: short steps, the same overall timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from distributed_something.backends.local import queue as local_queue
from distributed_something.backends.local import sqlite_file


def _connect(path: Path) -> sqlite3.Connection:
    # As `SqliteFile` leaves its connections: SQLite's own busy handler off.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_begin_waits_for_another_writer_in_short_steps(tmp_path: Path) -> None:
    holder, waiter = _connect(tmp_path / "q.db"), _connect(tmp_path / "q.db")
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    sqlite_file.begin_immediate(waiter)  # blocks until the holder commits
    waited = time.monotonic() - started
    released.join()
    assert waiter.in_transaction
    assert 0.04 <= waited < 1  # it really waited for the lock, and no longer than needed
    waiter.execute("COMMIT")


def test_a_read_that_meets_a_lock_waits_for_it(tmp_path: Path) -> None:
    # In WAL mode a reader meets a lock only while another process holds the whole file
    # (opening, recovering or closing it), which a test cannot hold still; an exclusive
    # transaction of the rollback journal makes the same error. `SqliteFile.reading` takes
    # its snapshot through `wait_for_lock`, which waits it out instead of failing.
    holder = sqlite3.connect(
        tmp_path / "r.db", isolation_level=None, timeout=0, check_same_thread=False
    )
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (1)")
    reader = sqlite3.connect(tmp_path / "r.db", isolation_level=None, timeout=0)
    rows: list[tuple[int]] = []

    def read() -> None:
        rows.extend(reader.execute("SELECT COUNT(*) FROM t").fetchall())

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        read()
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    sqlite_file.wait_for_lock(read)
    released.join()
    assert rows == [(1,)] and time.monotonic() - started >= 0.04


def test_begin_gives_up_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_file, "BUSY_TIMEOUT_SECONDS", 0.2)
    holder, waiter = _connect(tmp_path / "q.db"), _connect(tmp_path / "q.db")
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_file.begin_immediate(waiter)
    assert 0.2 <= time.monotonic() - started < 5
    assert not waiter.in_transaction
    holder.execute("COMMIT")


def test_a_locked_queue_becomes_one_backend_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed_something.errors import BackendError

    monkeypatch.setattr(sqlite_file, "BUSY_TIMEOUT_SECONDS", 0.2)
    queue = local_queue.SqliteQueue(tmp_path / "q.db", max_receive_count=3)
    queue.send_batch([("t1", "{}")])
    holder = _connect(tmp_path / "q.db")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(BackendError, match="locked"):
        queue.receive(1, 30)
    holder.execute("COMMIT")
    assert [m.task_id for m in queue.receive(1, 30)] == ["t1"]


def test_a_second_connection_in_a_process_keeps_the_first_ones_lock(tmp_path: Path) -> None:
    """Opening a second `SqliteFile` of a file in a process must not drop the POSIX locks of
    the first one's connection (closing any descriptor of a file drops them all): another
    process, closing its connection last, would then delete the WAL under the first, whose
    next read failed ("database disk image is malformed", as a notebook or `ds status`
    held open beside `ds run` saw). The other process's writes are seen, none lost."""
    import subprocess
    import sys

    from distributed_something.backends.local.records_store import SqliteObjects

    path = tmp_path / "r.sqlite"
    first = SqliteObjects(path)
    first.put_bytes("a/1", b"one")
    second = SqliteObjects(path)  # a second instance: `ds` commands open the backend anew
    assert second.get_bytes("a/1") == b"one"
    writer = (
        "import sys\n"
        "from distributed_something.backends.local.records_store import SqliteObjects\n"
        "objects = SqliteObjects(sys.argv[1])\n"
        "for i in range(200):\n"
        "    objects.put_bytes(f'b/{i}', b'x' * 4000)\n"
        "objects.close()\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True, timeout=60)
    assert path.with_name("r.sqlite-wal").exists()  # we still have it open: not deleted
    assert first.get_bytes("b/199") == b"x" * 4000
    assert sorted(first.list_keys("b/"))[:2] == ["b/0", "b/1"]
    first.put_bytes("a/2", b"two")
    assert SqliteObjects(path).get_bytes("a/2") == b"two"
