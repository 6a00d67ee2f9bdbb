"""The object storage contract (S3 semantics on string keys)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol


class NoConditionalWrites(Exception):
    """A storage's conditional write (``put_new``, ``put_tagged``) cannot be made here: the
    AWS Lambda runtime's own botocore may predate S3's conditional PutObject (2024)."""


class Tagged(NamedTuple):
    """A version of an object read for a conditional write: its content, its tag, and its
    ``age``: the seconds since it was written by the storage's own clock (S3's ``Date``
    less its ``Last-Modified``), or None where the storage does not say (the local records:
    one machine, whose clock every writer and reader shares). Comparing a time written in
    the content with the reader's clock instead would let two machines' clocks disagree."""

    data: bytes
    tag: str
    age: float | None = None


class ConditionalWrites(Protocol):
    """What a storage with conditional writes adds (S3's ``If-None-Match`` / ``If-Match``;
    the local records' table): versions are named by tags, as S3's ETags."""

    def put_new(self, key: str, data: bytes) -> str | None:
        """Store ``data`` as ``key`` only if there is no object ``key``: its tag, or None
        (there is one, or another conditional write to it was under way)."""
        ...

    def get_tagged(self, key: str) -> Tagged:
        """The content of ``key``, its tag and its age (`Tagged`); KeyError when missing."""
        ...

    def put_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        """Replace ``key`` with ``data`` only if it is still the version ``tag``: the new
        tag, or None (it changed, is gone, or is being written)."""
        ...


def conditional_writes(storage: object) -> ConditionalWrites | None:
    """``storage`` as `ConditionalWrites` when it makes them, else None (a folder, an S3
    stand-in without them): callers then do without (see `worker.claims`,
    `monitor.settle`). A call may still raise `NoConditionalWrites` (an old botocore)."""
    names = ("put_new", "get_tagged", "put_tagged")
    if all(callable(getattr(storage, name, None)) for name in names):
        return storage  # type: ignore[return-value]  # checked above, method by method
    return None


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key and size in bytes."""

    key: str
    size: int


class Storage(Protocol):
    """Objects addressed by S3-like keys (``a/b/c.txt``).

    Contract (tests/test_storage_contract.py holds every implementation to it):
    - Keys are relative, ``/``-separated, never empty, never containing ``..`` segments, never
      absolute; any other key raises ``InputError`` before anything is touched.
    - ``put_bytes``/``put_file`` write whole objects atomically: readers see the old object or
      the new one, never part of one.
    - ``get_bytes``/``get_file`` raise ``KeyError`` for a missing key.
    - ``list`` yields every object whose key starts with ``prefix`` (a plain string prefix, as
      in S3), in key order, however many there are; with ``start_after``, only those whose
      key sorts after it (S3's StartAfter), without reading the ones before.
    - ``exists`` and ``delete`` (no error when missing) do what they say.
    - ``put_files`` stores many ``(key, path)`` pairs, as ``put_file`` would each; it may
      work concurrently and returns when all are stored (or raises at the first failure).
    - ``read_concurrency`` is how many reads at once pay off for a caller reading many objects
      (1 for a local folder; a network store answers many round trips at once).
    - Optionally, ``write_batch(puts, deletes)`` stores ``(key, data)`` pairs and deletes keys
      in one atomic write (all or nothing); `write_all` uses it where it exists.
    - Optionally, ``get_many(keys)`` returns the content of each key (None for a missing
      one), in order, in one read; `read_many` uses it where it exists.
    - Optionally, ``list_keys(prefix, start_after)`` yields the keys ``list`` would, without
      their sizes (where reading a size costs); `list_keys` uses it where it exists.
    - Optionally, ``list_keys_many(prefixes)`` returns, for each prefix in order, the list of
      keys ``list_keys`` would give, read in one snapshot (one read instead of one per prefix);
      every prefix is checked first. `list_keys_of` uses it where it exists.
    - Optionally, ``write_and_list(puts, deletes, prefix)`` makes the writes as ``write_batch``
      does and returns the keys under ``prefix`` as they stand right after them, read in the
      same transaction (every write committed before shows, none after), or None where it
      cannot for these keys (it has then made the writes; the caller lists on its own).
    """

    read_concurrency: int

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, path: Path) -> None: ...

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


def write_all(
    storage: Storage, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str] = ()
) -> None:
    """Store ``puts`` then delete ``deletes``, in that order. A storage with a
    ``write_batch`` method (the local records' SQLite table) does it all in one atomic
    write; any other does them one by one, in order, so that a crash midway leaves what the
    order allows (the first writes without the later ones)."""
    batch = getattr(storage, "write_batch", None)
    if batch is not None:
        batch(puts, deletes)
        return
    write_in_order(storage, puts, deletes)


def list_keys(storage: Storage, prefix: str, start_after: str = "") -> Iterator[str]:
    """The key of every object ``storage.list`` gives, in its order: from the storage's own
    ``list_keys`` where it has one (the local records read no sizes), else from ``list``."""
    keys = getattr(storage, "list_keys", None)
    if keys is not None:
        return keys(prefix, start_after)  # type: ignore[no-any-return]
    return (info.key for info in storage.list(prefix, start_after))


def list_keys_of(storage: Storage, prefixes: Sequence[str]) -> list[list[str]]:
    """For each of ``prefixes``, in order, the keys `list_keys` gives: with the storage's
    ``list_keys_many`` a chunk of prefixes at a time where it has one (the local records: one
    read snapshot per chunk, not one per prefix), else ``read_concurrency`` listings at once
    (on S3 each is a round trip), else one listing after the other."""
    many = getattr(storage, "list_keys_many", None)
    if many is None:

        def listed(prefix: str) -> list[str]:
            return list(list_keys(storage, prefix))

        workers = min(storage.read_concurrency, len(prefixes))
        if workers < 2:
            return [listed(prefix) for prefix in prefixes]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(listed, prefixes))
    found: list[list[str]] = []
    for start in range(0, len(prefixes), READ_MANY_CHUNK):
        found += many(prefixes[start : start + READ_MANY_CHUNK])
    return found


#: Keys (prefixes) per ``get_many`` (``list_keys_many``) call of `read_many` (`list_keys_of`):
#: each call is one read snapshot, kept short.
READ_MANY_CHUNK = 1000


def read_many(storage: Storage, keys: Sequence[str]) -> Iterator[bytes | None]:
    """The content of each of ``keys`` (None for a missing one), in order: with the
    storage's ``get_many`` a chunk of keys at a time where it has one (the local records:
    one read per chunk instead of one per key), else ``read_concurrency`` reads at once (on
    S3 each read is a round trip), else one after the other."""
    many = getattr(storage, "get_many", None)
    if many is not None:
        for start in range(0, len(keys), READ_MANY_CHUNK):
            yield from many(keys[start : start + READ_MANY_CHUNK])
        return

    def get(key: str) -> bytes | None:
        try:
            return storage.get_bytes(key)
        except KeyError:
            return None

    workers = min(storage.read_concurrency, len(keys))
    if workers < 2:
        yield from map(get, keys)
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(get, keys)


def write_in_order(
    storage: Storage, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str] = ()
) -> None:
    """``put_bytes`` each of ``puts``, then ``delete`` each of ``deletes``, one at a time."""
    for key, data in puts:
        storage.put_bytes(key, data)
    for key in deletes:
        storage.delete(key)
