"""Reading the files users give us (configs, job files, fleet files) with one clear error."""

from __future__ import annotations

from pathlib import Path

from distributed_something.atomicfile import write_text_atomically
from distributed_something.errors import InputError


def read_user_text(path: Path, *, missing_fix: str = "check the path and try again") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark, as spreadsheets write, dropped).

    A missing file, a folder, undecodable bytes or an unreadable file raise ``InputError``
    with ``source = str(path)``; ``missing_fix`` is the fix shown for a missing file.
    """
    source = str(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(source, None, "the file does not exist", missing_fix) from None
    except IsADirectoryError:
        raise InputError(
            source, None, "is a folder, not a file", "give the path of a file"
        ) from None
    except UnicodeDecodeError as error:
        raise InputError(
            source,
            None,
            f"is not UTF-8 text (byte {error.start} cannot be decoded)",
            "save the file as UTF-8",
        ) from None
    except OSError as error:
        raise InputError(
            source, None, f"cannot be read ({error.strerror})", "check the file's permissions"
        ) from None


def write_user_file(path: Path, text: str) -> Path:
    """Write a file the user asked for (a converted config, a job file) atomically; an
    unwritable destination is an ``InputError`` naming it."""
    try:
        return write_text_atomically(path, text)
    except OSError as error:
        raise InputError(
            str(path),
            None,
            f"cannot write the file ({error.strerror})",
            "check the folder is writable, or choose another output path",
        ) from None
