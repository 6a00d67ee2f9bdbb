"""Storage keys: S3-like, relative, ``/``-separated strings that can never escape their root.

Every key a job file, recipe or user can influence passes through `check_key` before any
storage touches it, so that folder storage and S3 accept exactly the same keys and a key
like ``../../etc/passwd`` is refused before anything is read or written.
"""

from __future__ import annotations

import re

from distributed_something.errors import InputError

MAX_KEY_BYTES = 1024
"""The longest key S3 accepts, in bytes of UTF-8."""

MAX_NAME_BYTES = 255
"""The longest name (one ``/``-separated part) a folder storage can hold: a file name's limit
on Linux and macOS file systems (NAME_MAX), in bytes of UTF-8."""

RESERVED_NAME_PREFIX = ".ds-tmp."
"""Names starting with this are the storages' in-progress writes (folder storage and S3
downloads write through ``.ds-tmp.<random>`` files): never listed, so never a real object."""

_KEY_FIX = (
    "use a relative key of '/'-separated names, e.g. 'outputs/plate1/result.csv' "
    "(no leading '/', no '\\', no '.' or '..' names, no '//')"
)


#: Keys plainly valid at a glance: ASCII names of letters, digits, ``_``, ``-`` and ``.``,
#: none starting with ``.`` (so none is ``.``, ``..`` or a reserved name). Most keys are
#: (the records' keys are, and a worker checks several per task): one C-level match
#: instead of the checks below, which then judge only the others.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")


def plainly_valid(key: str) -> bool:
    """True when ``key`` is valid at a glance (`_PLAIN_KEY`, at most `MAX_KEY_BYTES`); False
    says nothing: the full checks decide."""
    return len(key) <= MAX_KEY_BYTES and _PLAIN_KEY.fullmatch(key) is not None


def _problem(key: str) -> str | None:
    """What is wrong with ``key`` as a storage key, or None when it is valid."""
    if isinstance(key, str) and plainly_valid(key):
        return None
    if not isinstance(key, str):
        return f"must be a string, not {type(key).__name__}"
    if key == "":
        return "is empty"
    if "\x00" in key:
        return "contains a NUL character"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if size > MAX_KEY_BYTES:
        return f"is {size} bytes long (UTF-8); at most {MAX_KEY_BYTES} are allowed"
    if "\\" in key:
        return "contains a backslash ('\\')"
    if key.startswith("/"):
        return "is absolute (starts with '/')"
    for segment in key.split("/"):
        if segment == "":
            return "has an empty name ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"has a '{segment}' name, which could point outside its folder"
    return None


def check_key(key: str, *, source: str = "storage key") -> str:
    """Return ``key`` unchanged if it is a valid storage key, else raise `InputError`.

    A valid key is a non-empty UTF-8 string of at most 1,024 bytes, made of ``/``-separated
    names, where no name is empty (no ``//``, no leading or trailing ``/``), ``.`` or ``..``,
    and which contains no backslash and no NUL. ``source`` names where the key came from
    (a file, "job file", "argument") in the error.
    """
    problem = _problem(key)
    if problem is not None:
        raise InputError(source, None, f"key {key!r} {problem}", _KEY_FIX)
    return key


def check_prefix(prefix: str, *, source: str = "storage prefix") -> str:
    """Return ``prefix`` unchanged if it is a valid listing prefix, else raise `InputError`.

    A prefix follows the rules of `check_key`, except that the empty prefix (everything) is
    valid and one trailing ``/`` is allowed (``"outputs/"``).
    """
    if prefix == "":
        return prefix
    body = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    problem = "is absolute (starts with '/')" if body == "" else _problem(body)
    if problem is not None:
        raise InputError(source, None, f"prefix {prefix!r} {problem}", _KEY_FIX)
    return prefix


def join_key(*parts: str, source: str = "storage key") -> str:
    """Join ``parts`` with ``/`` into a key, collapsing repeated slashes, and check it.

    Empty parts are skipped, so ``join_key("out/", "", "/a.txt") == "out/a.txt"``. A leading
    ``/`` on the first part or a trailing ``/`` on the last is kept and so refused by
    `check_key`, like any other invalid result.
    """
    joined = "/".join(part for part in parts if part != "")
    while "//" in joined:
        joined = joined.replace("//", "/")
    return check_key(joined, source=source)


def storable_key_problem(key: str) -> str | None:
    """What keeps ``key`` from being stored by every storage, or None when all can take it.

    Beyond `check_key` (which S3 alone would settle): a name over `MAX_NAME_BYTES` bytes
    (folder storage writes each name as a file name) and a name starting with
    `RESERVED_NAME_PREFIX` (folder storage refuses it; it would never be listed). Used on a
    task's outputs before any upload, so such a file fails its task at once, by name, rather
    than on the storage half-way through an upload.
    """
    problem = _problem(key)
    if problem is not None:
        return problem
    for name in key.split("/"):
        size = len(name.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            return (
                f"has a name of {size} bytes (UTF-8); at most {MAX_NAME_BYTES} are allowed "
                "in one name"
            )
        if name.startswith(RESERVED_NAME_PREFIX):
            return f"has a name starting with {RESERVED_NAME_PREFIX!r}, which is reserved"
    return None


def shown_name(name: str) -> str:
    """``name`` (a file name or path as the OS gave it) as text that can be printed and stored
    anywhere: bytes that are not UTF-8 (kept by Python as lone surrogates) are written as
    ``\\xNN``, so an error naming such a file can still be logged and written as JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
