"""The local run's records in one SQLite file instead of one file each.

A worker writes four or five records per task (an intent, the attempt opened and closed, the
done marker); as files in the bucket folder each one cost a temporary file, a rename, often
a folder, and a listing of the task's folder — most of a short task's time went to the
kernel. In SQLite each is one short transaction, and listing a task's attempts is a range
scan of an index.

`SqliteObjects` is a `Storage` over one table. `LocalBucket` is the main local bucket: keys
under ``_ds/`` (the records area) go to the table, except task logs and the run report
(``_ds/<app>/runs/<run>/logs/…`` and ``…/report.*``), which stay files in the folder where
users open them; everything else is the folder, as before. Runs recorded as files by an
earlier version are moved into the table the first time a process touches the records
(`LocalBucket.adopt_files`).
"""

from __future__ import annotations

import builtins
import hashlib
import heapq
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed_something.backends.local.sqlite_file import SqliteFile
from distributed_something.backends.local.storage import (
    FolderStorage,
    check_object_key,
    write_atomically,
)
from distributed_something.errors import BackendError
from distributed_something.interfaces.storage import (
    NoConditionalWrites,
    ObjectInfo,
    Tagged,
    write_in_order,
)
from distributed_something.keys import check_prefix
from distributed_something.records import META_ROOT

# A rowid table, not WITHOUT ROWID: with a manifest of megabytes in a WITHOUT ROWID table every
# write elsewhere in it took milliseconds (measured: 2 ms a record beside a 10 MB object).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS facts (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID
"""

#: Rows per query of a listing: a listing streams in pages, holding no cursor open between
#: them (the caller may write to the same file while it iterates).
_PAGE = 1000
#: Keys per statement of `SqliteObjects.get_many` (SQLite limits the "?" of one statement).
_MANY = 500
#: Records moved from files per transaction by `LocalBucket.adopt_files`.
_ADOPT_BATCH = 500
_ADOPTED = "files adopted"
_RECORDS = f"{META_ROOT}/"


def _after_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no
    bound, for "" or a prefix of only the largest code point)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


class SqliteObjects:
    """A `Storage` (see interfaces/storage.py for the contract) in the SQLite file ``path``:
    one row per object. Every write is one transaction, atomic and durable across process
    crashes (WAL, synchronous=NORMAL). Unlike a folder, a key may be an object and the
    start of other keys at once (``a`` and ``a/b``), as in S3. Shared by the processes of
    a run and by threads; reopened after a fork.
    """

    read_concurrency = 1
    #: how late (s) a journal intent may land after the time in its key (summary.py): one
    #: clock, and a write takes well under a millisecond
    journal_margin = 2.0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = SqliteFile(self.path, _SCHEMA, "local records")

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """One statement's rows (a read, in its own snapshot)."""
        with self._db.reading() as conn:
            return conn.execute(sql, params).fetchall()

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key``, replacing any object atomically."""
        check_object_key(key)
        with self._db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO objects VALUES (?, ?)", (key, bytes(data)))

    def write_batch(self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str] = ()) -> None:
        """Store every ``(key, data)`` of ``puts`` and delete every key of ``deletes``, in one
        transaction: all or nothing (see `write_all`). Every key is checked first."""
        for key in [*(key for key, _ in puts), *deletes]:
            check_object_key(key)
        self._write_batch(puts, deletes)

    def _write_batch(self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str]) -> None:
        """`write_batch` of keys already checked (`LocalBucket` checks them once)."""
        with self._db.transaction() as conn:
            _write(conn, puts, deletes)

    def write_and_list(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], prefix: str
    ) -> builtins.list[str]:
        """`write_batch`, and the keys under ``prefix`` (in key order) as they stand right
        after it, read in the same transaction: every write committed before this one shows,
        none committed after it (SQLite serialises writers). Keys and prefix checked first."""
        for key in [*(key for key, _ in puts), *deletes]:
            check_object_key(key)
        check_prefix(prefix)
        return self._write_and_list(puts, deletes, prefix)

    def _write_and_list(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], prefix: str
    ) -> builtins.list[str]:
        """`write_and_list` of keys and a prefix already checked (`LocalBucket` checks them
        once: a worker writes a task's start this way, task after task)."""
        with self._db.transaction() as conn:
            _write(conn, puts, deletes)
            return [row[0] for row in conn.execute(*_range_query(prefix))]

    def put_file(self, key: str, path: Path) -> None:
        """Store the content of the file ``path`` as ``key`` (FileNotFoundError: nothing
        stored)."""
        check_object_key(key)
        self.put_bytes(key, Path(path).read_bytes())

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Store each ``(key, path)`` in one transaction; every key is checked first."""
        for key, _ in items:
            check_object_key(key)
        rows = [(key, Path(path).read_bytes()) for key, path in items]
        with self._db.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?)", rows)

    # -- conditional writes, as S3's (If-None-Match, If-Match; the version's tag is the MD5
    # of the content, as a simple PutObject's ETag): the monitors' requeue slots ----------

    def put_new(self, key: str, data: bytes) -> str | None:
        """Store ``data`` as ``key`` only if there is no object ``key``; its tag, else None."""
        check_object_key(key)
        with self._db.transaction() as conn:
            made = conn.execute("INSERT OR IGNORE INTO objects VALUES (?, ?)", (key, bytes(data)))
            return _tag(data) if made.rowcount == 1 else None

    def get_tagged(self, key: str) -> Tagged:
        """The content of ``key`` and its tag (for `put_tagged`), with no age (the writers'
        clock is the reader's); KeyError when missing."""
        data = self.get_bytes(key)
        return Tagged(data, _tag(data))

    def put_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        """Replace ``key`` with ``data`` only if it is still the version tagged ``tag``; the
        new tag, or None when it changed or is gone."""
        check_object_key(key)
        with self._db.transaction() as conn:
            row = conn.execute("SELECT data FROM objects WHERE key = ?", (key,)).fetchone()
            if row is None or _tag(_content(row[0])) != tag:
                return None
            conn.execute("UPDATE objects SET data = ? WHERE key = ?", (bytes(data), key))
        return _tag(data)

    def get_bytes(self, key: str) -> bytes:
        """The content of ``key``; KeyError when there is no such object."""
        check_object_key(key)
        rows = self._query("SELECT data FROM objects WHERE key = ?", (key,))
        if not rows:
            raise KeyError(key)
        return _content(rows[0][0])

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The content of each of ``keys`` (None for a missing one), in order, read in one
        snapshot: a reader of many records pays one read transaction, not one per key.
        Every key is checked first."""
        for key in keys:
            check_object_key(key)
        found: dict[str, bytes] = {}
        with self._db.reading() as conn:
            for start in range(0, len(keys), _MANY):
                chunk = keys[start : start + _MANY]
                rows = conn.execute(
                    f"SELECT key, data FROM objects WHERE key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update(rows)
        return [_content(data) if (data := found.get(key)) is not None else None for key in keys]

    def get_file(self, key: str, path: Path) -> None:
        """Copy ``key`` to the file ``path`` (parents created), replaced atomically;
        KeyError when missing."""
        write_atomically(Path(path), self.get_bytes(key))

    def exists(self, key: str) -> bool:
        """Whether an object ``key`` exists."""
        check_object_key(key)
        return bool(self._query("SELECT 1 FROM objects WHERE key = ?", (key,)))

    def delete(self, key: str) -> None:
        """Delete ``key`` (nothing happens if missing)."""
        check_object_key(key)
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM objects WHERE key = ?", (key,))

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (UTF-8 byte order, as
        S3's), after ``start_after`` when given. The prefix is checked at once; the rows
        are read a page at a time as the caller iterates."""
        check_prefix(prefix)
        pages = self._pages(prefix, max(prefix, start_after), "key, length(data)")
        return (ObjectInfo(key=key, size=size) for page in pages for key, size in page)

    def list_keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """The keys `list` gives, without their sizes: read from the key index alone (a
        size is read from each row, which took most of the time of listing 100,000
        attempt records)."""
        check_prefix(prefix)
        pages = self._pages(prefix, max(prefix, start_after), "key")
        return (row[0] for page in pages for row in page)

    def list_keys_many(self, prefixes: Sequence[str]) -> builtins.list[builtins.list[str]]:
        """For each of ``prefixes``, in order, the keys `list_keys` gives, all read in one
        snapshot (a reader listing the records of thousands of tasks pays one read
        transaction, not one per task). Every prefix is checked first."""
        for prefix in prefixes:
            check_prefix(prefix)
        found: builtins.list[builtins.list[str]] = []
        with self._db.reading() as conn:
            for prefix in prefixes:
                found.append([row[0] for row in conn.execute(*_range_query(prefix))])
        return found

    def _pages(
        self, prefix: str, low: str, columns: str
    ) -> Iterator[builtins.list[tuple[Any, ...]]]:
        """The rows (``columns``, the key first) of the keys starting with ``prefix`` from
        ``low`` on, in key order, a page at a time."""
        high = _after_prefix(prefix)
        # The first page includes ``low`` itself when it is the prefix (an object named
        # exactly the prefix); later pages start after the last key read.
        inclusive = low == prefix
        while True:
            where = "key >= ?" if inclusive else "key > ?"
            params: builtins.list[object] = [low]
            if high is not None:
                where += " AND key < ?"
                params.append(high)
            rows = self._query(
                f"SELECT {columns} FROM objects WHERE {where} ORDER BY key LIMIT ?",
                [*params, _PAGE],
            )
            yield rows
            if len(rows) < _PAGE:
                return
            low, inclusive = rows[-1][0], False

    def fact(self, name: str) -> str | None:
        """A value this file keeps about itself (see `LocalBucket.adopt_files`)."""
        rows = self._query("SELECT value FROM facts WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def adopt(self, rows: Sequence[tuple[str, bytes]], fact: str, value: str | None) -> bool:
        """Insert ``rows`` unless their keys exist (a row written since wins over a file
        of the same key) and, with ``value``, record the fact ``fact``, in one transaction;
        nothing (False) when ``fact`` is recorded already: another process finished the
        move, and a row deleted since must not come back from a file it read before."""
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM facts WHERE name = ?", (fact,)).fetchone():
                return False
            conn.executemany("INSERT OR IGNORE INTO objects VALUES (?, ?)", rows)
            if value is not None:
                conn.execute("INSERT INTO facts VALUES (?, ?)", (fact, value))
        return True

    def close(self) -> None:
        """Close this process's connection (the next call opens it again)."""
        self._db.close()


def _write(
    conn: sqlite3.Connection, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str]
) -> None:
    """Every put, then every delete, in the transaction ``conn`` is in."""
    conn.executemany(
        "INSERT OR REPLACE INTO objects VALUES (?, ?)", [(key, bytes(data)) for key, data in puts]
    )
    conn.executemany("DELETE FROM objects WHERE key = ?", [(key,) for key in deletes])


def _range_query(prefix: str) -> tuple[str, tuple[str, ...]]:
    """The statement and parameters selecting every key starting with ``prefix``, in key
    order."""
    high = _after_prefix(prefix)
    if high is None:
        return "SELECT key FROM objects WHERE key >= ? ORDER BY key", (prefix,)
    return "SELECT key FROM objects WHERE key >= ? AND key < ? ORDER BY key", (prefix, high)


def _tag(data: bytes) -> str:
    """A version's tag for the conditional writes: the MD5 of its content (not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _content(data: object) -> bytes:
    if type(data) is bytes:
        return data
    # Text only if someone set the row by hand with the sqlite3 program.
    return bytes(data) if isinstance(data, (bytes, memoryview)) else str(data).encode()


def kept_as_file(key: str) -> bool:
    """Whether a records-area ``key`` stays a file in the bucket folder: a task log
    (``_ds/<app>/runs/<run>/logs/…``) or the run report (``…/runs/<run>/report.*``), which
    users open where they are, and which can be large."""
    parts = key.split("/", 5)
    if len(parts) < 5 or parts[2] != "runs":
        return False
    return (parts[4] == "logs" and len(parts) == 6) or (
        len(parts) == 5 and parts[4].startswith("report.")
    )


def in_table(key: str) -> bool:
    """Whether `LocalBucket` keeps ``key`` in its SQLite table."""
    return key.startswith(_RECORDS) and not kept_as_file(key)


def _files_may_hold(prefix: str) -> bool:
    """Whether a key kept as a file can start with ``prefix`` (or ``prefix`` with it):
    False only when none can, so a listing of a task's records never walks the folder."""
    if not (prefix.startswith(_RECORDS) or _RECORDS.startswith(prefix)):
        return True  # outside the records area: everything there is a file
    parts = prefix.split("/")
    wanted = {2: ("runs",), 4: ("logs", "report.")}
    for index, part in enumerate(parts):
        names = wanted.get(index)
        if names is None:
            continue
        complete = index < len(parts) - 1
        if complete and not (part == names[0] or (index == 4 and part.startswith("report."))):
            return False
        if not complete and not any(n.startswith(part) or part.startswith(n) for n in names):
            return False
    return True


def _table_only(prefix: str) -> bool:
    """Whether every key starting with ``prefix`` is kept in the records table."""
    return prefix.startswith(_RECORDS) and not _files_may_hold(prefix)


class LocalBucket:
    """The main bucket of the local backend (a `Storage`): the records area in
    ``records`` (a `SqliteObjects`), logs, reports and every other key in ``files``.

    Listings that span both merge them in key order. The first records-area operation of a
    process moves records an earlier version left as files into the table (`adopt_files`).
    """

    read_concurrency = 1
    journal_margin = SqliteObjects.journal_margin

    def __init__(self, files: FolderStorage, records: SqliteObjects) -> None:
        self.files = files
        self.records = records
        self.root = files.root
        self._adopted = False
        self._adopt_lock = threading.Lock()

    def _table(self) -> SqliteObjects:
        """The records table, once this process has moved any old record files in."""
        if not self._adopted:
            self.adopt_files()
        return self.records

    def _side(self, key: str) -> FolderStorage | SqliteObjects:
        return self._table() if in_table(key) else self.files

    def put_bytes(self, key: str, data: bytes) -> None:
        self._side(key).put_bytes(key, data)

    def put_new(self, key: str, data: bytes) -> str | None:
        """`SqliteObjects.put_new` for a key of the records table; `NoConditionalWrites`
        for any other (a folder has none)."""
        return self._conditional(key).put_new(key, data)

    def get_tagged(self, key: str) -> Tagged:
        return self._conditional(key).get_tagged(key)

    def put_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        return self._conditional(key).put_tagged(key, data, tag)

    def _conditional(self, key: str) -> SqliteObjects:
        if not in_table(key):
            raise NoConditionalWrites(f"{key} is a file: a folder has no conditional writes")
        return self._table()

    def put_file(self, key: str, path: Path) -> None:
        self._side(key).put_file(key, path)

    def write_batch(self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str] = ()) -> None:
        """`SqliteObjects.write_batch` when every key is in the records table (one atomic
        write); else each write in order (`write_in_order`). A bad key anywhere: nothing
        is written."""
        keys = [*(key for key, _ in puts), *deletes]
        for key in keys:
            check_object_key(key)
        if all(in_table(key) for key in keys):
            self._table()._write_batch(puts, deletes)
        else:
            write_in_order(self, puts, deletes)

    def write_and_list(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], prefix: str
    ) -> builtins.list[str] | None:
        """`SqliteObjects.write_and_list` when every key and the prefix are the records
        table's alone (a task's attempt records); else `write_batch` and None (the caller
        lists on its own)."""
        keys = [*(key for key, _ in puts), *deletes]
        for key in keys:
            check_object_key(key)
        check_prefix(prefix)
        if all(in_table(key) for key in keys) and _table_only(prefix):
            return self._table()._write_and_list(puts, deletes, prefix)
        self.write_batch(puts, deletes)
        return None

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        for key, _ in items:
            check_object_key(key)  # a bad key anywhere: nothing written on either side
        table = [(key, path) for key, path in items if in_table(key)]
        if table:
            self._table().put_files(table)
        self.files.put_files([(key, path) for key, path in items if not in_table(key)])

    def get_bytes(self, key: str) -> bytes:
        return self._side(key).get_bytes(key)

    def get_many(self, keys: Sequence[str]) -> builtins.list[bytes | None]:
        """`SqliteObjects.get_many` for the keys in the records table (one snapshot), the
        others read one by one; None for a missing key."""
        table = [key for key in keys if in_table(key)]
        if len(table) == len(keys):  # the usual case: records only (the table checks them)
            return self._table().get_many(keys)
        for key in keys:
            check_object_key(key)
        found = dict(zip(table, self._table().get_many(table), strict=True)) if table else {}
        out: builtins.list[bytes | None] = []
        for key in keys:
            if key in found:
                out.append(found[key])
                continue
            try:
                out.append(self.files.get_bytes(key))
            except KeyError:
                out.append(None)
        return out

    def get_file(self, key: str, path: Path) -> None:
        self._side(key).get_file(key, path)

    def exists(self, key: str) -> bool:
        return self._side(key).exists(key)

    def delete(self, key: str) -> None:
        self._side(key).delete(key)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        if not (prefix.startswith(_RECORDS) or _RECORDS.startswith(prefix)):
            return self.files.list(prefix, start_after)
        table = self._table().list(prefix, start_after)
        if not _files_may_hold(prefix):
            return table
        files = (o for o in self.files.list(prefix, start_after) if not in_table(o.key))
        return heapq.merge(table, files, key=lambda info: info.key)

    def list_keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """The keys `list` gives (the records table's without reading sizes)."""
        check_prefix(prefix)
        if not (prefix.startswith(_RECORDS) or _RECORDS.startswith(prefix)):
            return (info.key for info in self.files.list(prefix, start_after))
        table = self._table().list_keys(prefix, start_after)
        if not _files_may_hold(prefix):
            return table
        files = (o.key for o in self.files.list(prefix, start_after) if not in_table(o.key))
        return heapq.merge(table, files)

    def list_keys_many(self, prefixes: Sequence[str]) -> builtins.list[builtins.list[str]]:
        """For each of ``prefixes``, in order, the keys `list_keys` gives: from the table in
        one snapshot (`SqliteObjects.list_keys_many`) when no file can be under any of them
        (a task's records), else one listing per prefix."""
        for prefix in prefixes:
            check_prefix(prefix)
        if all(_table_only(prefix) for prefix in prefixes):
            return self._table().list_keys_many(prefixes)
        return [builtins.list(self.list_keys(prefix)) for prefix in prefixes]

    def adopt_files(self) -> None:
        """Move the records an earlier version wrote as files under ``_ds/`` into the
        table, once per records file (a fact in the file says it was done): each batch is
        inserted (a row of the same key, written since, wins) and committed before its
        files are deleted, so a crash midway loses nothing and the next process finishes."""
        with self._adopt_lock:
            if self._adopted:
                return
            if self.records.fact(_ADOPTED) is None:
                self._adopt()
            self._adopted = True

    def _adopt(self) -> None:
        if not (self.files.root / META_ROOT).is_dir():
            self.records.adopt([], _ADOPTED, "no files")
            return
        moved = 0
        batch: builtins.list[tuple[str, Path]] = []
        for info in self.files.list(_RECORDS):
            if in_table(info.key):
                batch.append((info.key, self.files.path_of(info.key)))
            if len(batch) >= _ADOPT_BATCH:
                moved += self._adopt_batch(batch)
                batch = []
        moved += self._adopt_batch(batch)
        self.records.adopt([], _ADOPTED, f"{moved} records")

    def _adopt_batch(self, batch: builtins.list[tuple[str, Path]]) -> int:
        rows: builtins.list[tuple[str, bytes]] = []
        for key, path in batch:
            try:
                rows.append((key, path.read_bytes()))
            except FileNotFoundError:
                continue  # moved by another process meanwhile
            except OSError as error:
                raise BackendError(
                    f"cannot move the record {path} into {self.records.path}: {error}. Fix: "
                    "make it readable, or delete it if it is not needed"
                ) from error
        if rows and not self.records.adopt(rows, _ADOPTED, None):
            return 0  # moved by another process meanwhile: its files are its to delete
        for key, _ in rows:
            self.files.delete(key)
        return len(rows)
