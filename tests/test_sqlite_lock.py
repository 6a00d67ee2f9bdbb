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
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_begin_waits_for_another_writer_and_restores_the_busy_timeout(tmp_path: Path) -> None:
    holder, waiter = _connect(tmp_path / "q.db"), _connect(tmp_path / "q.db")
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    sqlite_file.begin_immediate(waiter)  # blocks until the holder commits
    waited = time.monotonic() - started
    assert waiter.in_transaction
    assert waited >= 0.04  # it really waited for the lock...
    waiter.execute("COMMIT")
    released.join()
    # ...and left SQLite's own busy timeout as the connection had it for other statements.
    timeout_ms = waiter.execute("PRAGMA busy_timeout").fetchone()[0]
    assert timeout_ms == int(sqlite_file.BUSY_TIMEOUT_SECONDS * 1000)


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
