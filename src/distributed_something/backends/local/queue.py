"""The local task queue: SQS semantics in one SQLite file, shared by many worker processes.

Every read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's
single write lock up front: two processes can never pick the same visible message, so a
message is delivered to one receiver at a time while its lease holds. WAL mode lets readers
(``counts``) proceed while a writer works; the busy timeout makes writers wait their turn
instead of failing. The file and its -wal/-shm are owner-only (0600) and so is their folder
(0700), whatever the umask: they hold every task's job values and errors.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from distributed_something.backends.local.sqlite_file import SqliteFile
from distributed_something.interfaces.queue import DeadTask, Message, QueueCounts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    token TEXT,
    sent_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_visible_at ON messages (visible_at, id);
CREATE INDEX IF NOT EXISTS messages_by_task_id ON messages (task_id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    last_error TEXT,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_task_id ON dead (task_id);
"""

# SQLite limits the number of "?" in one statement; stay far below every version's limit.
_CHUNK = 500


def _encode_handle(message_id: int, token: str) -> str:
    return f"{message_id}.{token}"


def _decode_handle(handle: str) -> tuple[int, str]:
    """Split a receipt handle into message id and token; ValueError for a foreign handle."""
    message_id, sep, token = handle.partition(".")
    if not sep or not token or not message_id.isdigit():
        raise ValueError(f"not a receipt handle of the local queue: {handle!r}")
    return int(message_id), token


class SqliteQueue:
    """A `Queue` (see interfaces/queue.py for the contract) stored in the SQLite file ``path``.

    ``max_receive_count`` is how many times a message may be received; the receive after
    that moves it to the dead-letter table with its last error. ``clock`` gives the time in
    seconds for leases and delays (tests inject a fake one).

    Each instance opens one connection on first use and reopens it in a forked child, so an
    instance may be created before forking workers. An instance may be shared by threads.
    Receipt handles are opaque: each receive issues a fresh random token, and an operation
    with the handle of an earlier receive (the message was received again since) leaves the
    newer lease alone. `last_error` and `close` are extras of this queue.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_receive_count: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_receive_count < 1:
            raise ValueError(f"max_receive_count must be at least 1, got {max_receive_count}")
        self.path = Path(path)
        self.max_receive_count = max_receive_count
        self._clock = clock
        self._db = SqliteFile(self.path, _SCHEMA, "local queue")
        self._reading = self._db.reading
        #: (id, token) of the messages `delete_soon` was asked to delete
        self._soon: list[tuple[int, str]] = []
        self._soon_lock = threading.Lock()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that first deletes what `delete_soon` left to do; should the
        transaction fail, those deletes are left for the next one."""
        with self._soon_lock:
            soon, self._soon = self._soon, []
        try:
            with self._db.transaction() as conn:
                if soon:
                    conn.executemany("DELETE FROM messages WHERE id = ? AND token = ?", soon)
                yield conn
        except BaseException:
            with self._soon_lock:
                self._soon[:0] = soon
            raise

    @property
    def _conn(self) -> sqlite3.Connection | None:
        return self._db.conn

    @property
    def _inherited(self) -> list[sqlite3.Connection]:
        return self._db.inherited

    def close(self) -> None:
        """Do what `delete_soon` left to do, then close this instance's connection; the next
        call opens a new one."""
        self.flush()
        self._db.close()

    def delete_soon(self, message: Message) -> None:
        """`delete`, in this instance's next write (a worker deleting a finished task's
        message and receiving the next one pays one transaction for both), or at `flush`,
        `close` or any read of this instance. Until then other processes see the message as
        in flight; should this process die first, it comes back when its lease runs out."""
        with self._soon_lock:
            self._soon.append(_decode_handle(message.handle))

    def pending_deletes(self) -> list[str]:
        """The receipt handles `delete_soon` was given and has not deleted yet (a worker's
        watchdog deletes them should the worker die first: `worker/settle.py`)."""
        with self._soon_lock:
            return [_encode_handle(message_id, token) for message_id, token in self._soon]

    def give_back(self, messages: Sequence[Message]) -> None:
        """Return messages received but never started (a worker held them to run next, see
        `Worker`), in one transaction: visible at once, ahead of the others as when they were
        sent, and their receive undone (the receive count back by one), so holding a message
        never uses up one of its receives. A stale handle (received again since) is left
        alone."""
        rows = [_decode_handle(message.handle) for message in messages]
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE messages SET visible_at = MIN(sent_at, visible_at), token = NULL,"
                " receive_count = MAX(receive_count - 1, 0) WHERE id = ? AND token = ?",
                rows,
            )

    def flush(self) -> None:
        """Do what `delete_soon` left to do now."""
        if self._soon:
            with self._transaction():
                pass

    # -- the Queue contract --------------------------------------------------------------

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int:
        """Enqueue ``(task_id, body)`` pairs, visible at once, in one transaction."""
        rows = list(items)
        if not rows:
            return 0
        now = self._clock()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO messages (task_id, body, visible_at, sent_at) VALUES (?, ?, ?, ?)",
                [(task_id, body, now, now) for task_id, body in rows],
            )
        return len(rows)

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        """Lease up to ``max_messages`` visible messages for ``lease_seconds``.

        Messages are taken oldest-visible first. Those already received
        ``max_receive_count`` times are moved to the dead table instead, and the search
        goes on, so dead-lettering never makes a receive come back empty while deliverable
        messages remain.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if lease_seconds < 0:
            raise ValueError(f"lease_seconds must not be negative, got {lease_seconds}")
        received: list[Message] = []
        now = self._clock()
        with self._transaction() as conn:
            while len(received) < max_messages:
                rows = conn.execute(
                    "SELECT id, task_id, body, receive_count FROM messages"
                    " WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?",
                    (now, max_messages - len(received)),
                ).fetchall()
                if not rows:
                    break
                for message_id, task_id, body, receive_count in rows:
                    if receive_count >= self.max_receive_count:
                        conn.execute(
                            "INSERT INTO dead (task_id, body, receive_count, last_error, dead_at)"
                            " SELECT task_id, body, receive_count, last_error, ?"
                            " FROM messages WHERE id = ?",
                            (now, message_id),
                        )
                        conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                        continue
                    token = secrets.token_hex(8)
                    conn.execute(
                        "UPDATE messages SET receive_count = ?, token = ?, visible_at = ?"
                        " WHERE id = ?",
                        (receive_count + 1, token, now + lease_seconds, message_id),
                    )
                    received.append(
                        Message(
                            handle=_encode_handle(message_id, token),
                            task_id=task_id,
                            body=body,
                            receive_count=receive_count + 1,
                            message_id=str(message_id),
                        )
                    )
        return received

    def extend_lease(self, message: Message, seconds: float) -> bool:
        """Hide the message for ``seconds`` from now; False when the lease was lost."""
        message_id, token = _decode_handle(message.handle)
        now = self._clock()
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE messages SET visible_at = ? WHERE id = ? AND token = ?",
                (now + seconds, message_id, token),
            )
            return cursor.rowcount == 1

    def delete(self, message: Message) -> None:
        """Remove the message for good; nothing happens when the handle is stale."""
        message_id, token = _decode_handle(message.handle)
        with self._transaction() as conn:
            conn.execute("DELETE FROM messages WHERE id = ? AND token = ?", (message_id, token))

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None:
        """Make the message visible after ``delay_seconds``, keeping ``error`` as its last error.

        With ``error=None`` the last error recorded so far is kept. Nothing happens when the
        handle is stale.
        """
        if delay_seconds < 0:
            raise ValueError(f"delay_seconds must not be negative, got {delay_seconds}")
        message_id, token = _decode_handle(message.handle)
        now = self._clock()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE messages SET visible_at = ?, last_error = COALESCE(?, last_error)"
                " WHERE id = ? AND token = ?",
                (now + delay_seconds, error, message_id, token),
            )

    def counts(self) -> QueueCounts:
        """Visible, in flight (leased or released with a delay) and dead, in one snapshot."""
        self.flush()
        now = self._clock()
        with self._reading() as conn:
            visible, in_flight = conn.execute(
                "SELECT COALESCE(SUM(visible_at <= ?), 0), COALESCE(SUM(visible_at > ?), 0)"
                " FROM messages",
                (now, now),
            ).fetchone()
            (dead,) = conn.execute("SELECT COUNT(*) FROM dead").fetchone()
        return QueueCounts(visible=int(visible), in_flight=int(in_flight), dead=int(dead))

    def list_dead(self) -> list[DeadTask]:
        """Every dead-lettered task, oldest first, with its last error ("" when none)."""
        self.flush()
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT task_id, body, receive_count, last_error FROM dead ORDER BY id"
            ).fetchall()
        return [
            DeadTask(task_id=task_id, body=body, receive_count=count, error=error or "")
            for task_id, body, count, error in rows
        ]

    def redrive(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead tasks (all, or those with the given ids) back, visible at once.

        They start again with a receive count of 0 and no last error. Returns how many
        were moved; unknown ids are ignored.
        """
        now = self._clock()
        moved = 0
        with self._transaction() as conn:
            if task_ids is None:
                chunks: list[list[str] | None] = [None]
            else:
                ids = list(dict.fromkeys(task_ids))
                chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
            for chunk in chunks:
                params: tuple[str, ...]
                if chunk is None:
                    where, params = "", ()
                else:
                    where = f" WHERE task_id IN ({', '.join('?' * len(chunk))})"
                    params = tuple(chunk)
                conn.execute(
                    "INSERT INTO messages (task_id, body, visible_at, sent_at)"
                    f" SELECT task_id, body, ?, ? FROM dead{where} ORDER BY id",
                    (now, now, *params),
                )
                moved += conn.execute(f"DELETE FROM dead{where}", params).rowcount
        return moved

    def drop_dead(self, task_ids: Sequence[str]) -> int:
        """Delete every dead copy of the given tasks; returns how many copies."""
        ids = list(dict.fromkeys(task_ids))
        dropped = 0
        with self._transaction() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                dropped += conn.execute(
                    f"DELETE FROM dead WHERE task_id IN ({', '.join('?' * len(chunk))})",
                    tuple(chunk),
                ).rowcount
        return dropped

    def purge(self) -> None:
        """Delete every message of the queue; the dead table is kept."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM messages")

    # -- extras --------------------------------------------------------------------------

    def last_error(self, task_id: str) -> str | None:
        """The last error recorded for the queued message of ``task_id`` (None if none).

        When several queued messages share the task id, the most recently sent one counts.
        """
        self.flush()
        with self._reading() as conn:
            row = conn.execute(
                "SELECT last_error FROM messages WHERE task_id = ? ORDER BY id DESC LIMIT 1",
                (task_id,),
            ).fetchone()
        if row is None:
            return None
        error: str | None = row[0]
        return error
