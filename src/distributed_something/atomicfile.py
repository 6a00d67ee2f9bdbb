"""Whole-file writes that readers never see half done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The default mode of files written here: owner-only (they hold run state and reports).
PRIVATE_FILE_MODE = 0o600


def write_text_atomically(path: Path, text: str, *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a unique temporary file in the same folder,
    renamed over ``path``: readers (and concurrent writers) see the old file or a new one,
    never part of one. Missing parent folders are created; the temporary file never
    survives a failure. The file gets exactly ``mode`` (default 0600, owner-only), whatever
    the umask, from its first byte on. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 (less if the umask says so); fchmod then sets ``mode``
    # exactly before anything is written.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
