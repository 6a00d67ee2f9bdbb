"""The Storage contract (interfaces/storage.py), run against every implementation.

Each implementation contributes a fixture named ``<name>_storage_factory`` that gives a
function taking the test's ``tmp_path`` and returning an empty storage, and its name in
`IMPLEMENTATIONS`. Tests named ``test_folder_*`` are for the folder storage only. The S3
variant runs on a moto server (tests/conftest.py's ``aws`` fixture).
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import TEMP_PREFIX, FolderStorage
from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.storage import (
    READ_MANY_CHUNK,
    NoConditionalWrites,
    ObjectInfo,
    Storage,
    list_keys,
    list_keys_of,
    read_many,
    write_all,
)
from distributed_something.keys import check_key, check_prefix

StorageFactory = Callable[[Path], Storage]


@pytest.fixture
def folder_storage_factory() -> StorageFactory:
    return lambda tmp_path: FolderStorage(tmp_path / "root")


@pytest.fixture
def sqlite_storage_factory() -> StorageFactory:
    """The local records' table (records_store.py), on its own."""
    return lambda tmp_path: SqliteObjects(tmp_path / "records" / "objects.sqlite")


@pytest.fixture
def local_bucket_storage_factory() -> StorageFactory:
    """The local backend's main bucket: keys under the records area in SQLite (these tests'
    keys are put there by `RecordsAreaOnly`), the rest in files."""
    return lambda tmp_path: RecordsAreaOnly(
        LocalBucket(FolderStorage(tmp_path / "root"), SqliteObjects(tmp_path / "r.sqlite"))
    )


class RecordsAreaOnly:
    """A storage whose keys are the inner one's under ``_ds/t/`` (the records area, where
    `LocalBucket` keeps keys in its table), so the contract's keys test that side."""

    read_concurrency = 1
    prefix = "_ds/t/"

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def _key(self, key: str) -> str:
        check_key(key)  # the contract's bad keys are refused as keys, not as parts of one
        return self.prefix + key

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(self._key(key), data)

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(self._key(key), path)

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        self.inner.put_files([(self._key(key), path) for key, path in items])

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.inner.get_bytes(self._key(key))
        except KeyError:
            raise KeyError(key) from None

    def get_file(self, key: str, path: Path) -> None:
        try:
            self.inner.get_file(self._key(key), path)
        except KeyError:
            raise KeyError(key) from None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        inner: Any = self.inner  # a LocalBucket
        return list(inner.get_many([self._key(key) for key in keys]))

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)  # at once, as the contract says
        after = self.prefix + start_after if start_after else ""
        listed = self.inner.list(self.prefix + prefix, after)
        return (ObjectInfo(i.key.removeprefix(self.prefix), i.size) for i in listed)

    def list_keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        check_prefix(prefix)
        after = self.prefix + start_after if start_after else ""
        inner: Any = self.inner  # a LocalBucket
        return (
            key.removeprefix(self.prefix) for key in inner.list_keys(self.prefix + prefix, after)
        )

    def list_keys_many(self, prefixes: Sequence[str]) -> list[list[str]]:
        for prefix in prefixes:
            check_prefix(prefix)
        inner: Any = self.inner  # a LocalBucket
        listed = inner.list_keys_many([self.prefix + prefix for prefix in prefixes])
        return [[key.removeprefix(self.prefix) for key in keys] for keys in listed]

    def exists(self, key: str) -> bool:
        return self.inner.exists(self._key(key))

    def delete(self, key: str) -> None:
        self.inner.delete(self._key(key))


AWS = AwsSettings(region="us-east-1")


@pytest.fixture
def s3_storage_factory(aws: str) -> StorageFactory:
    names = itertools.count()

    def make(tmp_path: Path) -> Storage:
        bucket = f"ds-contract-{next(names)}"
        client("s3", AWS).create_bucket(Bucket=bucket)
        return S3Storage(AWS, bucket)

    return make


IMPLEMENTATIONS = ["folder", "s3", "sqlite", "local_bucket"]


@pytest.fixture(params=IMPLEMENTATIONS)
def storage_factory(request: pytest.FixtureRequest) -> StorageFactory:
    factory: StorageFactory = request.getfixturevalue(f"{request.param}_storage_factory")
    return factory


@pytest.fixture
def storage(storage_factory: StorageFactory, tmp_path: Path) -> Storage:
    return storage_factory(tmp_path)


def keys(storage: Storage, prefix: str = "") -> list[str]:
    """The keys ``list`` gives, checked to be those `list_keys` gives (the storage's own
    ``list_keys`` where it has one)."""
    listed = [info.key for info in storage.list(prefix)]
    assert list(list_keys(storage, prefix)) == listed
    return listed


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


# -- put and get -----------------------------------------------------------------------------


def test_put_and_get_bytes(storage: Storage) -> None:
    data = bytes(range(256)) * 10
    storage.put_bytes("a/b/c.bin", data)
    assert storage.get_bytes("a/b/c.bin") == data
    assert list(storage.list("")) == [ObjectInfo(key="a/b/c.bin", size=len(data))]


def test_put_and_get_empty_object(storage: Storage) -> None:
    storage.put_bytes("empty", b"")
    assert storage.get_bytes("empty") == b""
    assert list(storage.list("")) == [ObjectInfo(key="empty", size=0)]


def test_put_file_and_get_file(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"hello\nworld\n")
    storage.put_file("docs/hello.txt", source)
    assert storage.get_bytes("docs/hello.txt") == b"hello\nworld\n"

    target = tmp_path / "download" / "deep" / "hello.txt"
    storage.get_file("docs/hello.txt", target)
    assert target.read_bytes() == b"hello\nworld\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["hello.txt"]  # no temp left


def test_get_file_replaces_an_existing_file(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("k", b"new")
    target = tmp_path / "out.txt"
    target.write_bytes(b"old content, longer than the new one")
    storage.get_file("k", target)
    assert target.read_bytes() == b"new"


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.put_bytes("k.txt", b"a long first version")
    storage.put_bytes("k.txt", b"short")
    assert storage.get_bytes("k.txt") == b"short"
    assert list(storage.list("")) == [ObjectInfo(key="k.txt", size=5)]


def test_missing_key_raises_key_error(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("a/b.txt", b"x")
    for missing in ("nope", "a/c.txt", "a", "a/b.txt/c"):
        with pytest.raises(KeyError):
            storage.get_bytes(missing)
        with pytest.raises(KeyError):
            storage.get_file(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unicode_and_space_keys(storage: Storage) -> None:
    key = "plates/Plate 1/été - ☃.tif"
    storage.put_bytes(key, b"x")
    assert keys(storage) == [key]
    assert storage.get_bytes(key) == b"x"


# -- list ------------------------------------------------------------------------------------


def test_list_is_a_plain_string_prefix(storage: Storage) -> None:
    for key in ("a/b/c", "a/bc", "a/b.txt", "a/x/y", "ab", "b"):
        storage.put_bytes(key, b"1")
    assert keys(storage, "a/b") == ["a/b.txt", "a/b/c", "a/bc"]
    assert keys(storage, "a/b/") == ["a/b/c"]
    assert keys(storage, "a/") == ["a/b.txt", "a/b/c", "a/bc", "a/x/y"]
    assert keys(storage, "a") == ["a/b.txt", "a/b/c", "a/bc", "a/x/y", "ab"]
    assert keys(storage, "a/x/y") == ["a/x/y"]
    assert keys(storage, "zzz") == []
    assert keys(storage, "nothing/here/") == []


def test_list_is_in_key_order(storage: Storage) -> None:
    # "/" sorts after "-" and "." but before letters and digits: the order of keys is not
    # the order of a folder-by-folder walk.
    wanted = ["a-b", "a.txt", "a/0", "a/b/c", "a0", "aa", "b", "é", "☃"]
    for key in reversed(wanted):
        storage.put_bytes(key, key.encode())
    listed = list(storage.list(""))
    assert [info.key for info in listed] == sorted(wanted)
    assert [info.key for info in listed] == wanted
    assert [info.size for info in listed] == [len(key.encode()) for key in wanted]


@pytest.mark.parametrize(
    "after",
    ["", "a", "a-b", "a.txt", "a/", "a/0", "a/0/", "a/a", "a/b", "a/b/c", "a0", "aa", "é", "☃"],
)
def test_list_starts_after_a_key(storage: Storage, after: str) -> None:
    # S3's StartAfter: keys sorting after ``after``, whether or not it is a key, including
    # those in a folder it falls inside.
    every = ["a-b", "a.txt", "a/0", "a/b/c", "a/b/d", "a0", "aa", "b", "é", "☃"]
    for key in every:
        storage.put_bytes(key, b"1")

    listed = [info.key for info in storage.list("", start_after=after)]
    in_a = [info.key for info in storage.list("a/", start_after=after)]

    assert listed == [key for key in every if key > after]
    assert in_a == [key for key in every if key.startswith("a/") and key > after]
    assert list(list_keys(storage, "", start_after=after)) == listed
    assert list(list_keys(storage, "a/", start_after=after)) == in_a


def test_many_prefixes_listed_together_give_each_listing(storage: Storage) -> None:
    # `list_keys_of` (a storage's own ``list_keys_many`` where it has one: one snapshot for
    # all) gives, for each prefix in order, exactly what listing it alone gives: a key equal
    # to its prefix, prefixes inside each other, repeated or empty ones, non-ASCII.
    every = ["a-b", "a.txt", "a/0", "a/b/c", "a/b/d", "a0", "aa", "b", "é/1", "☃"]
    for key in every:
        storage.put_bytes(key, b"1")
    prefixes = ["a/", "a", "a/b/", "a/b/c", "none/", "a/", "é/", "☃", "a0", "", "a/b/d/"]

    together = list_keys_of(storage, prefixes)

    assert together == [keys(storage, prefix) for prefix in prefixes]
    assert together[0] == ["a/0", "a/b/c", "a/b/d"] and together[4] == []
    assert list_keys_of(storage, []) == []


def test_many_prefixes_in_more_than_one_read(storage: Storage) -> None:
    prefixes = [f"p{i:05d}/" for i in range(READ_MANY_CHUNK + 3)]
    for prefix in prefixes[::500]:
        storage.put_bytes(f"{prefix}x", b"1")
    listed = list_keys_of(storage, prefixes)
    assert listed == [[f"{p}x"] if i % 500 == 0 else [] for i, p in enumerate(prefixes)]


def test_list_more_than_a_thousand_objects(storage: Storage) -> None:
    wanted = [f"many/{i:05d}.txt" for i in range(1_234)]
    with ThreadPoolExecutor(8) as pool:  # the listing is under test, not the writes
        list(pool.map(lambda key: storage.put_bytes(key, b"x"), wanted))
    storage.put_bytes("other/1.txt", b"x")
    assert keys(storage, "many/") == wanted
    assert len(keys(storage)) == 1_235


def test_put_files(storage: Storage, tmp_path: Path) -> None:
    items = []
    for i in range(12):
        source = tmp_path / f"file-{i}.bin"
        source.write_bytes(bytes([i]) * (i * 100))
        items.append((f"batch/{i:02d}.bin", source))
    storage.put_files(items)
    assert list(storage.list("batch/")) == [
        ObjectInfo(key=f"batch/{i:02d}.bin", size=i * 100) for i in range(12)
    ]
    assert storage.get_bytes("batch/07.bin") == bytes([7]) * 700
    storage.put_files([])
    assert len(keys(storage)) == 12


def test_put_files_refuses_invalid_keys(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"x")
    with pytest.raises(InputError):
        storage.put_files([("../escape.txt", source)])
    assert keys(storage) == []
    assert not (tmp_path / "escape.txt").exists()


# -- exists and delete -----------------------------------------------------------------------


def test_exists(storage: Storage) -> None:
    assert storage.exists("a/b.txt") is False
    storage.put_bytes("a/b.txt", b"x")
    assert storage.exists("a/b.txt") is True
    assert storage.exists("a") is False  # a prefix of other keys is not an object
    assert storage.exists("a/b") is False


def test_delete(storage: Storage) -> None:
    storage.put_bytes("a/b/c.txt", b"1")
    storage.put_bytes("a/d.txt", b"2")
    storage.delete("a/b/c.txt")
    assert storage.exists("a/b/c.txt") is False
    assert keys(storage) == ["a/d.txt"]
    with pytest.raises(KeyError):
        storage.get_bytes("a/b/c.txt")
    storage.delete("a/b/c.txt")  # missing: no error
    storage.delete("never/was")
    storage.delete("a")  # a prefix, not an object: nothing happens
    assert keys(storage) == ["a/d.txt"]
    # A deleted key can be written again.
    storage.put_bytes("a/b/c.txt", b"3")
    assert storage.get_bytes("a/b/c.txt") == b"3"


def test_write_all_stores_then_deletes(storage: Storage) -> None:
    # `write_all`: one atomic write where the storage has `write_batch`, else in order.
    storage.put_bytes("a/old.json", b"0")
    write_all(storage, [("a/new.json", b"1"), ("a/two.json", b"2")], ["a/old.json"])
    assert keys(storage) == ["a/new.json", "a/two.json"]
    assert storage.get_bytes("a/new.json") == b"1"
    write_all(storage, [("a/old.json", b"3")], ["a/old.json"])  # puts come first
    assert keys(storage) == ["a/new.json", "a/two.json"]


def test_read_many_gives_each_keys_content_in_order(storage: Storage) -> None:
    # `read_many`: one read per chunk where the storage has `get_many` (the local records),
    # else concurrent or one-by-one reads; a missing key is None, never an error.
    for i in range(0, 12, 2):
        storage.put_bytes(f"r/{i:02d}.json", str(i).encode())
    keys = [f"r/{i:02d}.json" for i in (11, 0, 4, 5, 4, 10, 3)]
    expected = [None, b"0", b"4", None, b"4", b"10", None]
    assert list(read_many(storage, keys)) == expected
    assert list(read_many(storage, [])) == []
    many = getattr(storage, "get_many", None)
    if many is not None:
        assert many(keys) == expected
        for bad in ("../x", "a//b"):
            with pytest.raises(InputError):
                many(["r/00.json", bad])


def test_read_many_reads_in_chunks_of_one_snapshot_each(tmp_path: Path) -> None:
    table = SqliteObjects(tmp_path / "objects.sqlite")
    write_all(table, [(f"k/{i:05d}", f"{i}".encode()) for i in range(2_500)])
    calls: list[int] = []
    real = table.get_many

    def counted(keys: Sequence[str]) -> list[bytes | None]:
        calls.append(len(keys))
        return real(keys)

    table.get_many = counted  # type: ignore[method-assign]
    keys = [f"k/{i:05d}" for i in range(2_600)]  # the last 100 missing
    got = list(read_many(table, keys))
    assert got[:2_500] == [f"{i}".encode() for i in range(2_500)] and got[2_500:] == [None] * 100
    assert calls == [READ_MANY_CHUNK, READ_MANY_CHUNK, 600]


def test_local_bucket_get_many_reads_both_sides(tmp_path: Path) -> None:
    bucket = LocalBucket(FolderStorage(tmp_path / "root"), SqliteObjects(tmp_path / "r.sqlite"))
    bucket.put_bytes("_ds/App/done/t1.json", b"table")
    bucket.put_bytes("out/a.txt", b"file")
    bucket.put_bytes("_ds/App/runs/r/logs/t1/1.log", b"log file")  # a records-area file
    keys = ["out/a.txt", "_ds/App/done/t1.json", "_ds/App/done/t2.json", "out/b.txt"]
    keys.append("_ds/App/runs/r/logs/t1/1.log")
    assert bucket.get_many(keys) == [b"file", b"table", None, None, b"log file"]


def test_local_bucket_list_keys_merges_both_sides(tmp_path: Path) -> None:
    # Logs and reports stay files inside the records area: a listing spanning them gives
    # the table's keys and the files' keys in one key order, as `list` does.
    bucket = LocalBucket(FolderStorage(tmp_path / "root"), SqliteObjects(tmp_path / "r.sqlite"))
    for key in (
        "_ds/App/runs/r/logs/t1/1.log",
        "_ds/App/runs/r/attempts/t1/1.done.json",
        "_ds/App/runs/r/report.json",
        "_ds/App/runs/r/marks/t1/1.redrive",
        "_ds/App/done/t1.json",
        "out/a.txt",
    ):
        bucket.put_bytes(key, b"x")
    assert bucket.files.exists("_ds/App/runs/r/logs/t1/1.log")  # the merge is under test
    assert not bucket.files.exists("_ds/App/done/t1.json")
    for prefix in ("", "_ds/", "_ds/App/runs/r/", "_ds/App/runs/r/logs/", "out/", "_ds/App/done/"):
        listed = [info.key for info in bucket.list(prefix)]
        assert list(bucket.list_keys(prefix)) == listed, prefix
        assert bucket.list_keys_many([prefix]) == [listed], prefix
    assert [k for k in bucket.list_keys("_ds/App/runs/r/")] == [
        "_ds/App/runs/r/attempts/t1/1.done.json",
        "_ds/App/runs/r/logs/t1/1.log",
        "_ds/App/runs/r/marks/t1/1.redrive",
        "_ds/App/runs/r/report.json",
    ]


# -- invalid keys ----------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "../escape.txt",
    "a/../../escape.txt",
    "a/..",
    "./a",
    "/etc/passwd",
    "/abs/escape.txt",
    "a\\..\\..\\escape.txt",
    "a//b",
    "a/",
    "nul\x00byte",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_and_nothing_is_written(
    storage: Storage, tmp_path: Path, key: str
) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"payload")
    before = files_under(tmp_path)

    with pytest.raises(InputError):
        storage.put_bytes(key, b"payload")
    with pytest.raises(InputError):
        storage.put_file(key, source)
    with pytest.raises(InputError):
        storage.get_bytes(key)
    with pytest.raises(InputError):
        storage.get_file(key, tmp_path / "out.txt")
    with pytest.raises(InputError):
        storage.exists(key)
    with pytest.raises(InputError):
        storage.delete(key)

    assert files_under(tmp_path) == before
    assert list(storage.list("")) == []
    assert source.read_bytes() == b"payload"


@pytest.mark.parametrize("prefix", ["/", "/abs", "../", "a/../b", "a//", "a\\b"])
def test_invalid_prefixes_are_refused(storage: Storage, prefix: str) -> None:
    with pytest.raises(InputError):
        storage.list(prefix)
    with pytest.raises(InputError):
        list_keys(storage, prefix)
    with pytest.raises(InputError):
        list_keys_of(storage, ["a/", prefix])


# -- folder storage only ---------------------------------------------------------------------


def test_folder_symlink_cannot_escape_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    storage = FolderStorage(tmp_path / "root")
    (tmp_path / "root" / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "root" / "file-link").symlink_to(outside / "secret.txt")
    storage.put_bytes("ok.txt", b"ok")

    for key in ("link/secret.txt", "link/new.txt", "file-link"):
        with pytest.raises(InputError, match="symbolic link"):
            storage.get_bytes(key)
        with pytest.raises(InputError):
            storage.put_bytes(key, b"overwritten")
        with pytest.raises(InputError):
            storage.exists(key)
        with pytest.raises(InputError):
            storage.delete(key)
        with pytest.raises(InputError):
            storage.path_of(key)

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert keys(storage) == ["ok.txt"]
    assert keys(storage, "link/") == []


def test_a_deep_link_made_after_earlier_writes_cannot_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"secret")
    storage = FolderStorage(tmp_path / "root")
    storage.put_bytes("plate/well/x.txt", b"mine")
    assert storage.get_bytes("plate/well/x.txt") == b"mine"
    # The folder is swapped for a link leading out (nothing is cached from the first writes).
    shutil.rmtree(tmp_path / "root" / "plate" / "well")
    (tmp_path / "root" / "plate" / "well").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        storage.get_bytes("plate/well/x.txt")
    with pytest.raises(InputError, match="symbolic link"):
        storage.put_bytes("plate/well/x.txt", b"overwritten")
    assert (outside / "x.txt").read_bytes() == b"secret"


def test_folder_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    storage.put_bytes("real/a.txt", b"a")
    (tmp_path / "root" / "alias").symlink_to(tmp_path / "root" / "real")
    (tmp_path / "root" / "real" / "loop").symlink_to(tmp_path / "root" / "real")
    assert storage.get_bytes("alias/a.txt") == b"a"
    # The loop back to an ancestor is not walked forever.
    assert keys(storage) == ["alias/a.txt", "real/a.txt"]


def test_folder_concurrent_reader_never_sees_a_partial_object(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    versions = [bytes([i]) * (4 * 1024 * 1024 + i) for i in range(4)]
    storage.put_bytes("big.bin", versions[0])
    writes = 30
    stop = threading.Event()
    seen: list[int] = []
    bad: list[int] = []

    def read_repeatedly() -> None:
        while not stop.is_set():
            data = storage.get_bytes("big.bin")
            if data in versions:
                seen.append(versions.index(data))
            else:
                bad.append(len(data))

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for i in range(writes):
            storage.put_bytes("big.bin", versions[i % len(versions)])
    finally:
        stop.set()
        reader.join()

    assert bad == []
    assert seen  # the reader did read while the writer wrote
    assert storage.get_bytes("big.bin") == versions[(writes - 1) % len(versions)]
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["big.bin"]  # no temporary file left


def test_folder_list_ignores_in_progress_writes(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    storage.put_bytes("a/done.txt", b"x")
    (tmp_path / "root" / "a" / f"{TEMP_PREFIX}1234").write_bytes(b"partial")
    assert keys(storage) == ["a/done.txt"]
    with pytest.raises(InputError):
        storage.put_bytes(f"a/{TEMP_PREFIX}x", b"x")


def test_folder_delete_removes_empty_folders_up_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = FolderStorage(root)
    storage.put_bytes("a/b/c/d.txt", b"1")
    storage.put_bytes("a/keep.txt", b"2")
    storage.delete("a/b/c/d.txt")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "a",
        "a/keep.txt",
    ]
    storage.delete("a/keep.txt")
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_folder_path_of_maps_keys_to_files(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    storage.put_bytes("a/b.txt", b"x")
    path = storage.path_of("a/b.txt")
    assert path.read_bytes() == b"x"
    assert path.resolve() == (tmp_path / "root" / "a" / "b.txt").resolve()
    assert storage.path_of("not/yet.txt").parent.name == "not"
    with pytest.raises(InputError):
        storage.path_of("../x")


def test_folder_key_that_is_also_a_folder_is_a_backend_error(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    storage.put_bytes("a/b", b"1")
    with pytest.raises(BackendError):
        storage.put_bytes("a", b"2")
    with pytest.raises(BackendError):
        storage.put_bytes("a/b/c", b"3")
    assert keys(storage) == ["a/b"]
    assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["b"]


def test_folder_files_put_there_by_hand_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "sub" / "x.txt").write_bytes(b"abc")
    (root / "in" / "bad\\name").write_bytes(b"?")
    storage = FolderStorage(root)
    assert list(storage.list("in/")) == [ObjectInfo(key="in/sub/x.txt", size=3)]


@pytest.mark.parametrize("kind", ["s3", "sqlite", "local_bucket"])
def test_conditional_writes_let_one_writer_win(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The storages with conditional writes (S3's If-None-Match / If-Match; the local
    records' table, directly or through the local bucket): `put_new` creates only what is
    not there, `put_tagged` replaces only the version read, each returning the new version's
    tag or None."""
    if kind == "local_bucket":
        storage: Any = LocalBucket(
            FolderStorage(tmp_path / "root"), SqliteObjects(tmp_path / "r.sqlite")
        )
    else:
        storage = request.getfixturevalue(f"{kind}_storage_factory")(tmp_path)
    key = "_ds/t/runs/r/requeues/t1/0001.json"
    first = storage.put_new(key, b"a")
    assert first is not None
    assert storage.put_new(key, b"b") is None  # taken
    assert storage.get_tagged(key)[:2] == (b"a", first)
    replaced = storage.put_tagged(key, b"c", first)
    assert replaced is not None and replaced != first
    assert storage.put_tagged(key, b"d", first) is None  # a stale version
    assert storage.get_bytes(key) == b"c"
    assert storage.put_tagged("_ds/t/runs/r/requeues/none.json", b"e", replaced) is None
    with pytest.raises(KeyError):
        storage.get_tagged("_ds/t/runs/r/requeues/none.json")
    if kind == "local_bucket":  # a key kept as a file: a folder has no conditional writes
        with pytest.raises(NoConditionalWrites):
            storage.put_new("_ds/t/runs/r/logs/t1/a.log", b"x")
