"""The local object storage: S3-like keys mapped to files under one folder.

Keys are checked with `check_key` and every path is resolved and required to stay under
the root, so neither a key nor a symbolic link inside the root can reach other files.
Writes go to a temporary file in the target's folder and are renamed into place, so a
reader sees the old object or the new one, never part of one. The records area (keys under
``_ds/``) is owner-only: its objects are written 0600 and its folders 0700, whatever the umask.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.keys import check_key, check_prefix, plainly_valid
from distributed_something.records import META_ROOT

TEMP_PREFIX = ".ds-tmp."
"""Names of in-progress writes start with this; they are never listed and never valid keys."""

PRIVATE_ROOT = META_ROOT
"""Objects whose key starts with this name (the records area, ``_ds/``) are owner-only."""
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700

_COPY_BUFFER = 1024 * 1024
# A concurrent delete may remove a just-created empty folder before our temporary file
# lands in it; creating the folder again a few times always wins that race in practice.
_FOLDER_ATTEMPTS = 5
#: Most private folders a `FolderStorage` remembers as made (see `write_atomically`).
_KNOWN_FOLDERS = 1024


_TEMP_NUMBERS = itertools.count()


def _open_temp(folder: Path, mode: int | None = None) -> tuple[int, Path]:
    """Create a new, empty temporary file in ``folder``: with exactly ``mode`` (whatever the
    umask), or with the permissions the umask gives when ``mode`` is None."""
    # This process's pid and a count name it: unique without asking for random bytes; a
    # name taken (a leftover of a dead process with our pid, or someone else's file) is never
    # opened (O_EXCL) and the next try uses a random name.
    name = f"{TEMP_PREFIX}{os.getpid():x}-{next(_TEMP_NUMBERS):x}"
    while True:
        temp = folder / name
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            fd = os.open(temp, flags, 0o666 if mode is None else mode)
        except FileExistsError:
            name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            continue
        if mode is not None:
            try:
                os.fchmod(fd, mode)  # the umask may have taken bits away from ``mode``
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
        return fd, temp


def check_object_key(key: str) -> str:
    """``key`` unchanged when a local store may hold it (`check_key`, and no name starting
    with `TEMP_PREFIX`, which in-progress writes use); else `InputError`."""
    if isinstance(key, str) and plainly_valid(key):
        return key  # no name of a plain key starts with "." (TEMP_PREFIX does)
    check_key(key)
    if any(name.startswith(TEMP_PREFIX) for name in key.split("/")):
        raise InputError(
            "storage key",
            None,
            f"key {key!r} has a name starting with {TEMP_PREFIX!r}, which is reserved",
            "rename the file or folder",
        )
    return key


def _make_private_folders(root: Path, parts: Sequence[str]) -> None:
    """Make ``root/parts[0]/…/parts[-1]`` exist with every one of those folders owner-only
    (0700), whatever the umask; ``root`` itself is left alone. Folders made by an earlier
    version with wider permissions are narrowed when they are ours."""
    folder = root
    for part in parts:
        folder = folder / part
        try:
            folder.mkdir(PRIVATE_FOLDER_MODE)
        except FileExistsError:
            status = folder.lstat()
            if not stat.S_ISDIR(status.st_mode) or stat.S_IMODE(status.st_mode) == (
                PRIVATE_FOLDER_MODE
            ):
                continue  # a file or link on the path fails the write later, as elsewhere
            if status.st_uid != os.geteuid():
                continue  # someone else's folder: not ours to change
        folder.chmod(PRIVATE_FOLDER_MODE)  # the umask may have taken bits away


def write_atomically(
    target: Path,
    fill: Callable[[BinaryIO], object] | bytes,
    *,
    private_from: Path | None = None,
    known: set[Path] | None = None,
) -> None:
    """Write ``target`` through a temporary file in its folder renamed over it at the end.
    ``fill`` writes the content into the file, or is the content.

    With ``private_from`` (a folder above ``target``), the folders from its child down to
    ``target``'s parent are made owner-only (0700) and ``target`` is written owner-only
    (0600), whatever the umask; otherwise permissions are as the umask says.

    ``known`` holds private folders this process made or checked already: writing there
    again goes straight to the temporary file (a folder removed since is made again).

    Raises FileExistsError/NotADirectoryError when a parent of ``target`` is a file and
    IsADirectoryError when ``target`` is a folder; the temporary file never survives.
    """
    mode = None if private_from is None else PRIVATE_FILE_MODE
    for attempt in range(_FOLDER_ATTEMPTS):
        try:
            if known is not None and attempt == 0 and target.parent in known:
                pass  # made (or narrowed) by this process already
            elif private_from is None:
                target.parent.mkdir(parents=True, exist_ok=True)
            elif known is not None and attempt == 0 and target.parent.parent in known:
                # A new folder in a known one (a task's records folder): only it is made.
                _make_private_folders(target.parent.parent, (target.parent.name,))
            else:
                private_from.mkdir(parents=True, exist_ok=True)
                _make_private_folders(private_from, target.parent.relative_to(private_from).parts)
            fd, temp = _open_temp(target.parent, mode)
        except FileNotFoundError:
            if attempt == _FOLDER_ATTEMPTS - 1:
                raise
            continue
        if known is not None and private_from is not None:
            if len(known) >= _KNOWN_FOLDERS:
                known.clear()  # bounded: a worker that ran a million tasks holds a few
            known.add(target.parent)
            above = target.parent.parent
            if above != private_from and above.is_relative_to(private_from):
                known.add(above)  # made or checked on the way too
        break
    try:
        if isinstance(fill, bytes):
            # Written straight to the descriptor: no buffered file object to set up.
            try:
                view = memoryview(fill)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "wb") as out:
                fill(out)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class _Bounds(NamedTuple):
    """What a listing wants: keys starting with ``prefix`` and sorting after ``after``."""

    prefix: str
    after: str


class FolderStorage:
    """A `Storage` (see interfaces/storage.py for the contract) in the folder ``root``.

    The key ``a/b/c.txt`` is the file ``root/a/b/c.txt``. The root is created if missing.
    Unlike S3, a key cannot be both an object and a folder of other objects (``a`` and
    ``a/b``): writing such a key raises `BackendError`. Keys with a name starting with
    ``.ds-tmp.`` are reserved for in-progress writes and refused.
    """

    #: reading local files from threads only adds their overhead
    read_concurrency = 1
    #: how late (s) a journal intent may land after the time in its key (summary.py): one
    #: clock, and a local write takes milliseconds
    journal_margin = 2.0

    def __init__(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        #: private folders made or narrowed by this process (see `write_atomically`)
        self._private_folders: set[Path] = set()

    def path_of(self, key: str) -> Path:
        """The file that holds ``key``, after checking the key and that it stays in the root.

        Raises `InputError` for an invalid key or when a symbolic link would lead outside
        the root. The file need not exist.
        """
        parts = check_object_key(key).split("/")
        path = self.root.joinpath(*parts)
        if parts[0] == PRIVATE_ROOT and path.parent in self._private_folders:
            # A private folder this process made or checked: owner-only all the way down
            # from the root, so no one else can have put a link in it since.
            return path
        if not self._has_link(parts):
            return path  # checked keys have no "..": without a link the path stays inside
        try:
            inside = path.resolve().is_relative_to(self.root)
        except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop
            inside = False
        if not inside:
            raise InputError(
                "storage key",
                None,
                f"key {key!r} leads outside the storage folder {self.root} through a symbolic link",
                "remove the link or use another key",
            )
        return path

    def _has_link(self, parts: list[str]) -> bool:
        """Whether a folder or file on the key's path below the root is a symbolic link.

        One lstat per existing part (resolving the whole path costs several times more, on
        every read and write); only a path with a link is resolved and checked.
        """
        current = str(self.root)
        for part in parts:
            current = f"{current}{os.sep}{part}"  # strings: no Path objects on a hot path
            try:
                mode = os.lstat(current).st_mode
            except OSError:  # missing, or under a file: nothing further down exists
                return False
            if stat.S_ISLNK(mode):
                return True
        return False

    # -- writing ---------------------------------------------------------------------------

    def _put(self, key: str, fill: Callable[[BinaryIO], object] | bytes) -> None:
        path = self.path_of(key)
        # The records area (done markers, logs with job values, run state) is the owner's
        # only: other local users can neither read it nor forge a done marker in it.
        private = self.root if key.split("/", 1)[0] == PRIVATE_ROOT else None
        try:
            write_atomically(path, fill, private_from=private, known=self._private_folders)
        except (FileExistsError, NotADirectoryError) as error:
            raise BackendError(
                f"cannot store key {key!r} in {self.root}: a folder on its path is a file "
                "(folder storage cannot hold both 'a' and 'a/b')"
            ) from error
        except IsADirectoryError as error:
            raise BackendError(
                f"cannot store key {key!r} in {self.root}: it is a folder of other keys "
                "(folder storage cannot hold both 'a' and 'a/b')"
            ) from error

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key``, replacing any object atomically."""
        if not data and self._create_empty(key):
            return
        self._put(key, bytes(data))

    def _create_empty(self, key: str) -> bool:
        """Create ``key`` as a new empty object in a private folder this process made
        already: one exclusive create, no temporary file (an empty file is never seen
        partly written). False when that does not apply (then the usual write does it)."""
        path = self.path_of(key)
        if key.split("/", 1)[0] != PRIVATE_ROOT or path.parent not in self._private_folders:
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except OSError:  # it exists, or its folder is gone: the usual write decides
            return False
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits away
        finally:
            os.close(fd)
        return True

    def put_file(self, key: str, path: Path) -> None:
        """Store the content of the local file ``path`` as ``key``, atomically.

        Raises FileNotFoundError when ``path`` does not exist; nothing is stored then.
        """
        with Path(path).open("rb") as source:
            self._put(key, lambda out: shutil.copyfileobj(source, out, _COPY_BUFFER))

    # -- reading ---------------------------------------------------------------------------

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Store each file in turn (local copies gain nothing from threads). Every key is
        checked first, so a bad key writes nothing."""
        for key, _ in items:
            self.path_of(key)
        for key, path in items:
            self.put_file(key, path)

    def _open(self, key: str) -> BinaryIO:
        try:
            return self.path_of(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def get_bytes(self, key: str) -> bytes:
        """The content of ``key``; KeyError when there is no such object."""
        with self._open(key) as source:
            return source.read()

    def get_file(self, key: str, path: Path) -> None:
        """Copy ``key`` to the local file ``path`` (parents created); KeyError when missing.

        ``path`` is replaced atomically: it never holds part of the object.
        """
        with self._open(key) as source:
            write_atomically(Path(path), lambda out: shutil.copyfileobj(source, out, _COPY_BUFFER))

    def exists(self, key: str) -> bool:
        """Whether an object ``key`` exists (a folder of other keys is not an object)."""
        return self.path_of(key).is_file()

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a string prefix), in key order;
        with ``start_after``, only those after it (the names before it are passed over
        without a look at the file: a journal minute of 60,000 intents read from its end).

        Only the folder named by the part of ``prefix`` before its last ``/`` is walked.
        Files of in-progress writes, files whose names are not valid keys and symbolic
        links leading outside the root are left out. The prefix is checked at once.
        """
        check_prefix(prefix)
        folder_key, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder_key.split("/")) if folder_key else self.root
        known: tuple[int, int] | None = None
        if folder_key and not self._has_link(folder_key.split("/")):
            # No link on the way: the folder is inside the root, no need to resolve it (one
            # task's records are listed this way, many times over when counting).
            try:
                status = start.stat()
            except OSError:
                return iter(())
            known = (status.st_dev, status.st_ino)
        return self._walk(
            str(start),
            f"{folder_key}/" if folder_key else "",
            _Bounds(prefix, start_after),
            frozenset(),
            known,
        )

    def _walk(
        self,
        folder: str,
        folder_key: str,
        bounds: _Bounds,
        ancestors: frozenset[tuple[int, int]],
        known: tuple[int, int] | None,
    ) -> Iterator[ObjectInfo]:
        """Objects under ``folder`` (whose keys start with ``folder_key``) within ``bounds``.

        ``ancestors`` holds the folders being walked (device, inode), so a link back to one
        of them is not followed forever. ``known`` is the folder's own (device, inode) when
        it was reached without a symbolic link from a folder inside the root: then it is
        inside the root too, and neither resolved nor looked up again (a run's records are
        a hundred thousand folders: that was most of the time of a listing).
        """
        try:
            if known is None:
                if not Path(folder).resolve().is_relative_to(self.root):
                    return
                status = Path(folder).stat()
                known = (status.st_dev, status.st_ino)
            if known in ancestors:
                return
            with os.scandir(folder) as scan:
                entries = list(scan)
        except (OSError, RuntimeError):  # gone, not a folder, or a symbolic link loop
            return
        ancestors = ancestors | {known}
        # A folder sorts as its name + "/": then sorting siblings sorts every key below
        # them, because all keys under "d/" fall between "d/" and the next sibling.
        prefix, after = bounds
        found: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            key = folder_key + entry.name + ("/" if is_dir else "")
            # Before `after` and not a folder it falls in: nothing here is wanted.
            if after and key <= after and not (is_dir and after.startswith(key)):
                continue
            try:
                is_file = not is_dir and entry.is_file()
                link = entry.is_symlink()
                if link and not Path(entry.path).resolve().is_relative_to(self.root):
                    continue
            except (OSError, RuntimeError):
                continue
            if is_dir:
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
            elif not is_file or not key.startswith(prefix):
                continue
            try:
                check_key(key[:-1] if is_dir else key)
            except InputError:
                continue  # a file put there by other means, with a name no key can have
            found.append((key, entry, link))
        found.sort(key=lambda item: item[0])
        for key, entry, link in found:
            if key.endswith("/"):
                # A plain folder's identity comes with the listing (same device as its parent,
                # barring a mount point, which only makes a loop take one more level to stop).
                ident = None if link else (known[0], entry.inode())
                yield from self._walk(entry.path, key, bounds, ancestors, ident)
                continue
            try:
                size = entry.stat().st_size
            except OSError:
                continue  # deleted while we were listing
            yield ObjectInfo(key=key, size=size)

    # -- deleting --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete ``key`` (nothing happens if missing) and the folders it leaves empty."""
        path = self.path_of(key)
        if path.is_dir() and not path.is_symlink():
            return  # a folder of other keys, not an object
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or already gone): folders above are not empty either
            parent = parent.parent
