"""One SQLite file shared by many local processes: the local queue's and the local records'.

Every write runs in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock
up front, so a read-modify-write is never interleaved with another process's. WAL mode lets
readers proceed while a writer works; writers wait their turn (`begin_immediate`) instead of
failing. The file and its -wal/-shm are owner-only (0600) and so is their folder (0700),
whatever the umask: they hold job values, errors and the run's records.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed_something.errors import BackendError

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a process waits for another one's write transaction before giving up."""

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private_file(path: Path) -> None:
    """Make ``path``'s folder (created if missing) 0700 and ``path`` (created empty if
    missing, an empty file being a valid SQLite database) 0600, whatever the umask. SQLite
    creates the -wal and -shm files with the database file's mode, so they are 0600 too.
    An existing folder or file not owned by us is left as it is.

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, those of its open SQLite connections too, and a
    connection that lost its lock lets another process, closing last, delete the WAL under
    it (its next read: "database disk image is malformed"; a write could be lost)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _chmod_if_ours(folder, PRIVATE_FOLDER_MODE)
    try:
        # Read-only is enough to create the file and to fchmod it.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        _chmod_if_ours(path, PRIVATE_FILE_MODE)  # by its path: no descriptor
        return
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def _narrow_companions(path: Path) -> None:
    """Make the database's existing -wal, -shm and -journal files 0600 (when ours)."""
    for suffix in _COMPANIONS:
        _chmod_if_ours(path.with_name(path.name + suffix), PRIVATE_FILE_MODE)


def _chmod_if_ours(path: Path, mode: int) -> None:
    try:
        status = path.stat()
        if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass  # a companion file that does not exist (yet)


class SqliteFile:
    """The connection of this process to the SQLite file ``path`` whose tables ``schema``
    creates (``CREATE … IF NOT EXISTS`` statements); ``what`` names it in errors.

    One connection is opened on first use and reopened in a forked child, so an instance may
    be created before forking workers; a process that forks a child that writes should
    `close_all` first (see there). An instance may be shared by threads: its statements
    run one at a time. Errors of SQLite come out as `BackendError` naming the file.
    """

    def __init__(self, path: Path, schema: str, what: str) -> None:
        _ALL.add(self)
        self.path = Path(path)
        self.what = what
        self._schema = schema
        self.conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Connections inherited through fork are never closed in the child: closing them
        # could disturb the parent's use of the same file. They are kept here so that the
        # garbage collector does not close them either.
        self.inherited: list[sqlite3.Connection] = []

    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            if self.conn is not None:
                self.inherited.append(self.conn)
            self.conn = None
            self._pid = pid
            # The parent's lock may have been held by a thread that does not exist here.
            self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            make_private_file(self.path)
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,  # for statements other than BEGIN IMMEDIATE
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # SQLite gives -wal/-shm the database file's mode; files left by an older
                # version with wider permissions are narrowed too.
                _narrow_companions(self.path)
                # In WAL mode NORMAL survives process crashes; only power loss may lose the
                # last commits, and it makes each commit much cheaper.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("BEGIN IMMEDIATE")  # SQLite's own wait, once per connection
                for statement in self._schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
                # From now on every wait for a lock is ours (`wait_for_lock`), in short steps.
                conn.execute("PRAGMA busy_timeout = 0")
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    @contextmanager
    def _connected(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, used by one thread at a time; SQLite's errors in the
        block come out as `BackendError`."""
        self._check_fork()
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as error:
                raise BackendError(f"{self.what} {self.path}: {error}") from error

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its start."""
        with self._connected() as conn:
            begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                # SQLite may already have rolled back (e.g. after an I/O error).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot without taking the write lock. The
        snapshot is taken first: in WAL mode that is the only step of a read that can meet
        a lock (another process opening, recovering or closing the file), waited for here."""
        with self._connected() as conn:
            conn.execute("BEGIN")
            try:
                wait_for_lock(lambda: conn.execute(_SNAPSHOT).fetchall())
                yield conn
            finally:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connection; the next call opens a new one."""
        self._check_fork()
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


#: Every `SqliteFile` of this process (`close_all`).
_ALL: weakref.WeakSet[SqliteFile] = weakref.WeakSet()


def close_all() -> None:
    """Close every connection of this process's `SqliteFile`s (each opens again on its next
    use). Needed before a fork whose child uses SQLite: SQLite keeps, per process, which
    locks it holds on each file, and a child would inherit that bookkeeping without the
    locks (POSIX locks are not inherited), so its own connections would skip taking locks
    they need, and writes could be lost."""
    for db in list(_ALL):
        db.close()


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock of ``conn`` (a `SqliteFile` connection: SQLite's busy handler
    off), waiting for another process's transaction to end (`wait_for_lock`)."""
    wait_for_lock(lambda: conn.execute("BEGIN IMMEDIATE"))


#: a read that starts a read transaction (takes the snapshot)
_SNAPSHOT = "SELECT 1 FROM sqlite_master LIMIT 1"


def wait_for_lock(step: Callable[[], object]) -> None:
    """Run ``step`` until it does not fail for a lock another connection holds.

    SQLite's own busy handler sleeps at least a millisecond at the first conflict, longer
    than the transactions here last (a receive or a delete takes ~0.05 ms): several workers
    would spend more time asleep than working. This waits in steps growing from 50 µs, up
    to `BUSY_TIMEOUT_SECONDS` in all. Connections have SQLite's handler off for the same
    reason; setting it per transaction instead cost two statements each.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 50e-6
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
