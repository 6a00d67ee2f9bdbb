"""The local storage's fast paths for the records area: folders made once per process, and
empty objects (journal intents) created in one step — same contract as every write."""

from __future__ import annotations

import stat
from pathlib import Path

from distributed_something.backends.local.storage import FolderStorage


def test_empty_objects_are_private_whole_and_replace_as_any_object(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path)
    storage.put_bytes("_ds/app/journal/1/first", b"x")  # the folder is made: known now
    storage.put_bytes("_ds/app/journal/1/second", b"")  # the one-step create
    storage.put_bytes("_ds/app/journal/1/second", b"")  # exists: the usual write
    storage.put_bytes("_ds/app/journal/1/first", b"")  # replaces a non-empty object
    for name in ("first", "second"):
        path = tmp_path / "_ds/app/journal/1" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert storage.get_bytes(f"_ds/app/journal/1/{name}") == b""
    assert [o.key for o in storage.list("_ds/app/journal/")] == [
        "_ds/app/journal/1/first",
        "_ds/app/journal/1/second",
    ]
    assert not [p for p in (tmp_path / "_ds/app/journal/1").iterdir() if p.name.startswith(".")]


def test_a_known_folder_removed_behind_the_process_is_made_again(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path)
    storage.put_bytes("_ds/app/attempts/t1/a.json", b"{}")
    storage.delete("_ds/app/attempts/t1/a.json")  # removes the folders it leaves empty
    assert not (tmp_path / "_ds/app/attempts").exists()
    storage.put_bytes("_ds/app/attempts/t1/b.json", b"{}")
    storage.put_bytes("_ds/app/attempts/t1/c", b"")
    folder = tmp_path / "_ds/app/attempts/t1"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["b.json", "c"]


def test_listing_many_folders_follows_no_link_outside(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    storage.put_bytes("_ds/app/attempts/t1/a.json", b"{}")
    (tmp_path / "root/_ds/app/attempts/t2").symlink_to(outside)
    (tmp_path / "root/_ds/app/attempts/loop").symlink_to(tmp_path / "root/_ds/app")
    keys = [o.key for o in storage.list("_ds/app/attempts/")]
    assert keys[0] == "_ds/app/attempts/t1/a.json"
    assert not any("secret" in k for k in keys)
