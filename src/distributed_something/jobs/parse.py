"""Job files of every accepted format → validated, de-duplicated tasks.

Formats (detected from the content; CSV from the ``.csv`` suffix):

- ``ds``: a JSON object of shared keys plus ``"groups"``; task body = shared keys +
  ``{"group": element}``.
- ``dcp`` (Distributed-CellProfiler): the same shape, recognised by ``"pipeline"`` or
  ``"data_file"``; ``pipeline``, ``input`` and ``output`` are required and each group's
  ``Metadata`` is checked (``"k=v,k=v"`` or a dict as printed by ``cellprofiler --print-groups``).
  Body = the message DCP's run.py sends: shared keys (``data_file`` and ``output_structure``
  default to ``""``) + ``{"Metadata": the group's Metadata, or the group itself}``.
- ``df`` (Distributed-Fiji): the same shape, recognised by ``"output_file_location"`` or
  ``"shared_metadata"``; body = shared keys + ``{"Metadata": element}``, as DF's run.py.
- ``dozc`` (Distributed-OmeZarrCreator): shared keys plus ``"plates"``; body = shared keys +
  ``{"plate": element}``.
- ``csv``: header = group keys, one row per task; body = ``{"group": {column: text}}``.

Keys containing ``_comment`` are dropped at every level of the shared keys and of object
groups, so comments neither reach workers nor change task ids. Element indexes in messages
and in ``Duplicate`` are 0-based positions in ``groups`` / ``plates`` / the CSV's data rows,
written ``groups[3]``; CSV errors also give the file line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import json.scanner
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from distributed_something.errors import InputError
from distributed_something.jobs.model import (
    ID_CHARS,
    MAX_MESSAGE_BYTES,
    Duplicate,
    JobFile,
    JobFormat,
    TaskList,
    body_frame,
    canonical_json,
    compact_json,
    json_texts,
)
from distributed_something.secrets_scan import first_credential, may_hold_credential
from distributed_something.userfiles import read_user_text

__all__ = [
    "MAX_JSON_DEPTH",
    "check_json_depth",
    "deep_json_position",
    "load_job_file",
    "parse_job_text",
]

#: How deep objects and lists may nest in a job or fleet file. The family's files nest 3 or 4
#: levels; far deeper ones only exhaust the parsers (Python's stack) further on.
MAX_JSON_DEPTH = 64
_DEPTH_FIX = (
    f"nest objects and lists at most {MAX_JSON_DEPTH} levels deep: keep each group a flat "
    "object of values"
)
# A JSON string (skipped: brackets inside it do not count) or a bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')

_COMMENT = "_comment"
_DCP_MARKERS = ("pipeline", "data_file")
_DCP_REQUIRED = ("pipeline", "input", "output")
_DF_MARKERS = ("output_file_location", "shared_metadata")

_GROUP_FIX = (
    'write each element as an object (e.g. {"Plate": "P1", "Well": "A01"}), a string or a number'
)
_SIZE_FIX = (
    "move large values (lists of files, embedded tables) to a file in storage and put its key "
    "in the job file instead"
)
# JSON text written with ensure_ascii off escapes control characters but not U+FFFE and
# U+FFFF, the only others SQS refuses in a message body (it takes #x9, #xA, #xD,
# #x20-#xD7FF, #xE000-#xFFFD and #x10000-#x10FFFF; surrogates are refused apart).
_NONCHARACTER_U = "\ufffe".encode()
_NONCHARACTER_V = "\uffff".encode()
_NONCHARACTER_PROBLEM = (
    "holds U+FFFE or U+FFFF, which are not text (Unicode noncharacters; a queue message "
    "cannot carry them)"
)
_NONCHARACTER_FIX = "remove them, or put U+FFFD (the replacement character) in their place"


# A JSON text may write them as escapes too.
_NONCHARACTER_ESCAPE = re.compile(r"\\u[fF]{3}[eEfF]")


def _nonchar(data: bytes) -> bool:
    return _NONCHARACTER_U in data or _NONCHARACTER_V in data


def _may_hold_nonchar(text: str) -> bool:
    """Whether a job file's ``text`` may give a task U+FFFE or U+FFFF: one look at the whole
    text, so that the bodies are searched one by one (to name the group) only then."""
    if "\ufffe" in text or "\uffff" in text:
        return True
    return "\\u" in text and _NONCHARACTER_ESCAPE.search(text) is not None


def load_job_file(path: Path) -> JobFile:
    """Read and parse a job file; every problem is an ``InputError`` with ``source = path``.

    The text is read as UTF-8 (a leading byte-order mark, as spreadsheet programs write, is
    ignored); the format is detected as in ``parse_job_text``.
    """
    text = read_user_text(path)
    return parse_job_text(text, source=str(path), suffix=path.suffix)


def parse_job_text(text: str, *, source: str, suffix: str) -> JobFile:
    """Parse a job file's text into unique tasks in file order.

    ``suffix`` is the file's suffix (``".csv"`` selects CSV, case-insensitively, with or without
    the dot; anything else is read as JSON and its format detected from its keys). ``source``
    names the file in errors and becomes ``JobFile.path``.

    Raises ``InputError`` (``source`` = the file) for: invalid JSON (line and column), a top
    level that is not an object, no ``groups``/``plates`` (or both), an empty list, an element
    that is not an object/string/number, a key repeated in one object, a shared key that
    clashes with ``group``/``plate``, missing DCP keys or malformed DCP ``Metadata``, CSV rows
    of the wrong width (naming the line), and a message body over ``MAX_MESSAGE_BYTES``
    (naming the element and its size). A task whose id repeats an earlier one is kept once
    (the first) and listed in ``JobFile.duplicates``.
    """
    text = text.removeprefix("\ufeff")
    look = _may_hold_nonchar(text)
    secrets = may_hold_credential(text)  # else no element is looked at for one
    if suffix.lower().lstrip(".") == "csv":
        columns, rows = _csv_rows(text, source)
        rows_json = (json_texts(dict(zip(columns, row, strict=True))) for row in rows)
        return _compact(
            source, "csv", "rows", {}, "group", rows_json, nonchar=look, secrets=secrets
        )
    parsed = _stream_json(text)
    if parsed is None:  # not valid JSON, or unusual: the whole-document path says why
        data = _load_json(text, source)
        top = list(data.items())
        list_key = "plates" if "plates" in data else "groups"
        elements: list[str] | None = None
        canonical: dict[int, str] = {}
    else:
        top, list_key, elements, canonical = parsed
        _check_depth(top, list_key, elements, source)
        data = dict(top)
    del text
    fmt, list_key, group_key = _detect(data, source)
    shared = {k: _drop_comments(v) for k, v in top if k != list_key and not _is_comment(k)}
    _check_elements(data[list_key], list_key, source)
    if elements is None:
        elements = []
        for index, element in enumerate(data[list_key]):
            kept, sorted_text = json_texts(_drop_comments(element))
            elements.append(kept)
            if sorted_text is not kept:
                canonical[index] = sorted_text
    del data, top
    if group_key in shared:
        _fail(
            source,
            group_key,
            f"`{group_key}` is reserved: each task's own element is sent under it",
            f"rename the shared key `{group_key}`",
        )
    if fmt == "dozc" and "group" in shared:
        # A body with "group" would be read back as a groups task by Task.from_body.
        _fail(source, "group", "a plates job file cannot have a shared key `group`", "rename it")
    if fmt == "dcp":
        _check_dcp_shared(shared, source)
    if fmt == "dcp":
        # The message Distributed-CellProfiler's run.py sends (its workers read these keys).
        shared = {"data_file": "", "output_structure": "", **shared}
    _check_shared_size(shared, source)
    if fmt == "dcp":
        texts = _dcp_groups(elements, canonical, source)
    else:
        texts = ((text, canonical.get(i, text)) for i, text in enumerate(elements))
    return _compact(source, fmt, list_key, shared, group_key, texts, nonchar=look, secrets=secrets)


#: How the compact JSON text of a DCP group of a Metadata string starts.
_PLAIN_GROUP_START = '{"Metadata":"'


def _dcp_groups(
    elements: list[str], canonical: dict[int, str], source: str
) -> Iterator[tuple[str, str]]:
    """Each DCP element checked, as DCP sends it: a group's "Metadata", or the group itself
    (--print-groups form); its `json_texts`."""
    scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    for index, text in enumerate(elements):
        elements[index] = ""  # not held beside what is kept of it (a million texts)
        if text.startswith(_PLAIN_GROUP_START) and text.endswith('"}'):
            # {"Metadata":"..."} (compact JSON) whose string has no quote and no escape: the
            # string's JSON text is in the element's text as it is; nothing to parse.
            metadata = text[len(_PLAIN_GROUP_START) : -2]
            if '"' not in metadata and "\\" not in metadata:
                if not _PLAIN_METADATA.fullmatch(metadata):
                    _check_metadata_string(metadata, f"groups[{index}].Metadata", source)
                kept = text[len(_PLAIN_GROUP_START) - 1 : -1]
                yield kept, kept
                continue
        group = scan(text, 0)[0]  # the element's own JSON text: json.loads without its checks
        _check_dcp_group(group, index, source)
        if isinstance(group, dict) and "Metadata" in group:
            yield json_texts(group["Metadata"])
        else:
            yield text, canonical.get(index, text)


# --- streaming ----------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_LIST_KEYS = ("groups", "plates")


def _ws(text: str, pos: int) -> int:
    """The position of the first non-whitespace character at or after ``pos``."""
    match = _WS.match(text, pos)
    return match.end() if match is not None else pos


class _Elements(list[Any]):
    """Stands for the element list in the top-level data of a streamed file, for
    `_check_elements`: how many elements there are and the first that is not an object,
    string or number (its index and value), not the elements themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.bad: tuple[int, Any] | None = None


def _stream_json(
    text: str,
) -> tuple[list[tuple[str, Any]], str, list[str], dict[int, str]] | None:
    """The job file read element by element: ``(top-level items, list key, each element's
    `compact_json`, the `canonical_json` of those whose keys are not in order)``; the list
    is never held as objects (a million groups as dicts take 350 MB). In the items, the
    list's value is an `_Elements` saying what `_check_elements` needs.

    Comments are dropped from the elements and repeated keys refused as `_load_json` does.
    None for anything unusual (invalid JSON, a repeated top-level key, no element list, a
    group nested deeper than the scanner goes): `_load_json` then reads the whole document
    and says what is wrong exactly as before.
    """
    # A key holding "_comment" is in the text as such unless escaped (\\u): without either,
    # objects need no look at their keys.
    commented = _COMMENT in text or "\\u" in text
    decoder = json.JSONDecoder(
        object_pairs_hook=_object_without_comments if commented else _object_once,
        parse_constant=_reject_constant,
        parse_float=_finite_float,
    )
    scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]
    try:
        pos = _ws(text, 0)
        if text[pos] != "{":
            return None
        pos = _ws(text, pos + 1)
        top: list[tuple[str, Any]] = []
        seen: set[str] = set()
        list_key = ""
        elements: list[str] = []
        canonical: dict[int, str] = {}
        if text[pos] == "}":
            return None
        while True:
            if text[pos] != '"':
                return None
            key, pos = scan(text, pos)
            if key in seen and not _is_comment(key):
                return None
            seen.add(key)
            pos = _ws(text, pos)
            if text[pos] != ":":
                return None
            pos = _ws(text, pos + 1)
            if key in _LIST_KEYS and not list_key and text[pos] == "[":
                list_key = key
                kinds, pos = _stream_elements(text, pos + 1, scan, elements, canonical)
                top.append((key, kinds))
            else:
                value, pos = scan(text, pos)
                top.append((key, value))
            pos = _ws(text, pos)
            if text[pos] == ",":
                pos = _ws(text, pos + 1)
                continue
            if text[pos] != "}":
                return None
            break
        if _ws(text, pos + 1) != len(text) or not list_key:
            return None
    except (StopIteration, IndexError, ValueError, RecursionError, _RepeatedKey):
        return None
    return top, list_key, elements, canonical


_GOOD_ELEMENTS = (dict, str, int, float)


def _stream_elements(
    text: str, pos: int, scan: Any, out: list[str], canonical: dict[int, str]
) -> tuple[_Elements, int]:
    """Read the elements of a list starting after its ``[`` at ``pos``: append each one's
    `compact_json` to ``out``, and its `canonical_json` to ``canonical`` when different.
    Returns what `_check_elements` needs to know of them and the position after the ``]``.
    Raises (StopIteration, IndexError, ValueError) on invalid JSON."""
    elements = _Elements()
    encode = compact_json
    sort = canonical_json
    append = out.append
    good = _GOOD_ELEMENTS
    blank = " \t\n\r"
    pos = _ws(text, pos)
    if text[pos] == "]":
        return elements, pos + 1
    while True:
        value, pos = scan(text, pos)
        if type(value) not in good and elements.bad is None:
            elements.bad = (len(out), value)
        kept = encode(value)
        kind = type(value)
        if kind is dict and kept.count("{") == 1 and "[" not in kept:
            # A flat object (the usual group): only its own keys' order can differ.
            keys = list(value)
            if keys != sorted(keys):
                canonical[len(out)] = sort(value)
        elif kind is dict or kind is list:
            sorted_text = sort(value)
            if sorted_text != kept:
                canonical[len(out)] = sorted_text
        append(kept)
        char = text[pos]
        if char in blank:
            pos = _ws(text, pos)
            char = text[pos]
        if char == ",":
            pos += 1
            if text[pos] in blank:
                pos = _ws(text, pos)
        elif char == "]":
            elements.total = len(out)
            return elements, pos + 1
        else:
            raise ValueError("expected , or ]")


#: Brackets an element may hold and still be within `MAX_JSON_DEPTH` wherever they are (it
#: sits 2 levels down: the top-level object, the list).
_SAFE_BRACKETS = MAX_JSON_DEPTH - 2


def _check_depth(
    top: list[tuple[str, Any]], list_key: str, elements: list[str], source: str
) -> None:
    """`check_json_depth` of a streamed file: the top-level values as they are, and each
    element only when its text has enough brackets to be too deep (counting brackets in its
    strings too: an upper bound, so no deep element is missed)."""
    check_json_depth({k: v for k, v in top if k != list_key}, source)
    for index, element in enumerate(elements):
        if element.count("[") + element.count("{") > _SAFE_BRACKETS:
            check_json_depth(json.loads(element), source, base=(list_key, index))


# --- JSON ---------------------------------------------------------------------------------


def _fail(source: str, field: str | None, problem: str, fix: str) -> NoReturn:
    raise InputError(source, field, problem, fix)


def _is_comment(key: str) -> bool:
    return _COMMENT in key


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of two equal keys; a repeated "groups" or "output"
    # is almost always a mistake, so it is reported. Comments may repeat (they are dropped).
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and not _is_comment(key):
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # As _object_without_repeats, in C unless a key repeats.
    result = dict(pairs)
    return result if len(result) == len(pairs) else _object_without_repeats(pairs)


def _object_without_comments(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # As _object_without_repeats, dropping comments (`_drop_comments`) as objects are built.
    result = dict(pairs)
    if len(result) != len(pairs):
        result = _object_without_repeats(pairs)
    for key in [k for k in result if _COMMENT in k]:
        del result[key]
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 would become inf and be sent on as `Infinity`, which no JSON reader accepts.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large for JSON readers")
    return value


def _load_json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object_without_repeats,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError:  # nested deeper than json's C parser goes: say where it starts
        _fail(source, deep_json_position(text), *_too_deep())
    except MemoryError:
        _fail(
            source,
            None,
            f"is too large to read ({len(text):,} characters)",
            "split the job file into several, and submit each",
        )
    except json.JSONDecodeError as error:
        _fail(
            source,
            None,
            f"is not valid JSON: {json_mistake(text, error)}",
            "correct the JSON there (usually a missing comma or quote, or a trailing comma); "
            "a CSV job file must be named *.csv",
        )
    except _RepeatedKey as error:
        _fail(
            source,
            error.key,
            f"the key `{error.key}` appears twice in the same object",
            "keep one of them (JSON keeps only the last, silently)",
        )
    except ValueError as error:
        _fail(source, None, f"is not valid JSON: {error}", "write the value as a string instead")
    if not isinstance(data, dict):
        _fail(
            source,
            None,
            f"the top level is a JSON {_json_type(data)}, not an object",
            'write {"shared_key": "value", ..., "groups": [{...}, {...}]}',
        )
    check_json_depth(data, source)
    return data


def _check_shared_size(shared: dict[str, Any], source: str) -> None:
    """Refuse shared keys that alone make every message too large, before any task is built:
    each task's id and size come from its whole body, so a huge shared value would otherwise
    be serialised once per group (minutes for a large file) before the first size check."""
    try:
        data = canonical_json(shared).encode()
    except UnicodeEncodeError:
        _fail(
            source,
            None,
            "a shared key holds a \\ud800-\\udfff escape that is half of a character, not "
            "text (a queue message must be UTF-8)",
            "write the whole character (or its pair of escapes), or remove it",
        )
    if _nonchar(data):
        key = next(k for k in shared if _nonchar(canonical_json({k: shared[k]}).encode()))
        _fail(source, key, _NONCHARACTER_PROBLEM, _NONCHARACTER_FIX)
    size = len(data)
    if size <= MAX_MESSAGE_BYTES:
        return
    largest = max(shared, key=lambda key: len(canonical_json(shared[key]).encode()))
    _fail(
        source,
        largest,
        f"the shared keys alone make every task message {size:,} bytes, over the queue's limit "
        f"of {MAX_MESSAGE_BYTES:,} bytes (`{largest}` is the largest)",
        _SIZE_FIX,
    )


def _too_deep() -> tuple[str, str]:
    return f"objects and lists are nested more than {MAX_JSON_DEPTH} levels deep", _DEPTH_FIX


def check_json_depth(
    data: Any,
    source: str,
    *,
    limit: int = MAX_JSON_DEPTH,
    fix: str = _DEPTH_FIX,
    base: tuple[str | int, ...] = (),
) -> None:
    """Raise `InputError` (``source``, the JSON path) when objects and lists in ``data`` (as
    `json.loads` returns it) nest more than ``limit`` levels deep, with ``fix``. The path
    names where the deep part starts, e.g. ``groups[3].meta.a.b…``: its first few steps,
    then an ellipsis.

    The walk is iterative: checking a deep value cannot exhaust Python's stack, which is what
    the recursive code downstream (comment removal, task ids, message bodies) would do.
    ``base`` is where ``data`` sits in its document (its path's first steps).
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, base)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            children: Iterable[tuple[str | int, Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if len(path) >= limit:
            problem = f"objects and lists are nested more than {limit} levels deep"
            _fail(source, _json_path(path), problem, fix)
        stack.extend((child, (*path, key)) for key, child in children)


def _json_path(path: tuple[str | int, ...], shown: int = 4) -> str:
    """``groups[3].meta.a…`` for the first ``shown`` steps of ``path``."""
    text = ""
    for step in path[:shown]:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text + ("…" if len(path) > shown else "")


def json_mistake(text: str, error: json.JSONDecodeError) -> str:
    """json's message for ``error`` in ``text`` with its line and column, and where the usual
    cause sits when it is not there: a missing comma ends the line before the one json
    names (the family's own example job lacked one for two years), and a trailing comma
    sits before the closing bracket json stops at."""
    # Some of json's messages end in " at" ("Unterminated string starting at"): the
    # position follows them.
    said = f"{error.msg.removesuffix(' at')} at line {error.lineno}, column {error.colno}"
    before = text[: error.pos].rstrip()
    line = before.count("\n") + 1
    if error.msg == "Expecting ',' delimiter" and before and line < error.lineno:
        return f"{said} (line {line} lacks a comma at its end)"
    if before.endswith(",") and text[error.pos : error.pos + 1] in ("}", "]"):
        return (
            f"{said} (the comma on line {line} has nothing after it: JSON allows no trailing comma)"
        )
    return said


def deep_json_position(text: str, limit: int = MAX_JSON_DEPTH) -> str | None:
    """``"line L, column C"`` of the first bracket in ``text`` that opens more than ``limit``
    nested objects or lists, or None. For text too deep for `json.loads` to build, whose
    JSON path cannot be known."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group(0)
        if token in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                return f"line {line}, column {column}"
        elif token in "]}":
            depth -= 1
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _detect(data: dict[str, Any], source: str) -> tuple[JobFormat, str, str]:
    """(format, key of the element list, key of the element in each body)."""
    has_groups = "groups" in data
    has_plates = "plates" in data
    if has_groups and has_plates:
        _fail(
            source,
            "plates",
            "has both `groups` and `plates`, so it is unclear which are the tasks",
            "keep `groups` (one task per group) or `plates` (one task per plate), not both",
        )
    if has_plates:
        return "dozc", "plates", "plate"
    if not has_groups:
        _fail(
            source,
            "groups",
            "is missing: there is no list of tasks",
            'add "groups": [...] with one element per task (or "plates": [...] for OME-Zarr)',
        )
    keys = {k for k in data if not _is_comment(k)}
    if keys.intersection(_DCP_MARKERS):
        return "dcp", "groups", "Metadata"
    if keys.intersection(_DF_MARKERS):
        return "df", "groups", "Metadata"
    return "ds", "groups", "group"


def _check_elements(elements: Any, list_key: str, source: str, *, first: int = 0) -> None:
    """Refuse an element list that is not a list, is empty, or holds an element that is not
    an object, string or number (``first``: the index of ``elements[0]`` in the file)."""
    if isinstance(elements, _Elements):  # streamed: what is known of them
        if elements.total == 0:
            _fail(source, list_key, "is empty: there are no tasks", "add at least one element")
        if elements.bad is not None:
            _check_elements([elements.bad[1]], list_key, source, first=elements.bad[0])
        return
    if not isinstance(elements, list):
        _fail(
            source,
            list_key,
            f"is a JSON {_json_type(elements)}, not a list",
            f'write "{list_key}": [...] with one element per task',
        )
    if not elements:
        _fail(source, list_key, "is empty: there are no tasks", "add at least one element")
    for index, element in enumerate(elements):
        if isinstance(element, bool) or not isinstance(element, dict | str | int | float):
            _fail(
                source,
                f"{list_key}[{first + index}]",
                f"is a JSON {_json_type(element)}, not an object, string or number",
                _GROUP_FIX,
            )


def _drop_comments(value: Any) -> Any:
    """``value`` with every object key containing ``_comment`` removed, at any depth."""
    if isinstance(value, dict):
        return {k: _drop_comments(v) for k, v in value.items() if not _is_comment(k)}
    if isinstance(value, list):
        return [_drop_comments(v) for v in value]
    return value


# --- DCP ----------------------------------------------------------------------------------

_METADATA_FIX = (
    'write "Metadata": "Metadata_Plate=P1,Metadata_Well=A01" (comma-separated key=value pairs, '
    'no spaces around them) or "Metadata": {"Metadata_Plate": "P1", "Metadata_Well": "A01"}'
)


def _check_dcp_shared(shared: dict[str, Any], source: str) -> None:
    for key in _DCP_REQUIRED:
        if key not in shared:
            _fail(
                source,
                key,
                "is missing (a CellProfiler job file needs pipeline, input and output)",
                f'add "{key}": "<a path relative to the bucket root>"',
            )
    for key in (*_DCP_REQUIRED, "data_file", "output_structure"):
        if key in shared and not isinstance(shared[key], str):
            _fail(
                source,
                key,
                f"is a JSON {_json_type(shared[key])}, not a string",
                f'write "{key}": "<text>"',
            )
    for key in _DCP_REQUIRED:
        # An empty input is the bucket root (DCP: -i /home/ubuntu/bucket/).
        if key != "input" and not shared[key].strip():
            _fail(source, key, "is empty", f'set "{key}" to a path relative to the bucket root')


def _check_dcp_group(group: Any, index: int, source: str) -> None:
    field = f"groups[{index}]"
    if not isinstance(group, dict):
        _fail(source, field, f"is a JSON {_json_type(group)}, not an object", _METADATA_FIX)
    if "Metadata" not in group:
        misspelt = [k for k in group if k.lower() == "metadata"]
        if misspelt:
            _fail(
                source,
                f"{field}.{misspelt[0]}",
                "is spelt differently from `Metadata`",
                f"rename it `Metadata` ({_METADATA_FIX})",
            )
        # Legacy DCP (run.py submitJob) sends a group without "Metadata" as the metadata
        # dict itself, as `cellprofiler --print-groups` prints it.
        _check_metadata_dict(group, field, source)
        return
    metadata = group["Metadata"]
    field = f"{field}.Metadata"
    if isinstance(metadata, dict):
        _check_metadata_dict(metadata, field, source)
    elif isinstance(metadata, str):
        _check_metadata_string(metadata, field, source)
    else:
        _fail(
            source,
            field,
            f"is a JSON {_json_type(metadata)}, not a string or an object",
            _METADATA_FIX,
        )


#: A Metadata string that is certainly well formed: key=value pairs with no space, comma or
#: "=" inside a key or value (the pair loop below then has nothing to find).
_PLAIN_METADATA = re.compile(r"[^\s,=]+=[^\s,=]+(?:,[^\s,=]+=[^\s,=]+)*")


def _check_metadata_string(metadata: str, field: str, source: str) -> None:
    if _PLAIN_METADATA.fullmatch(metadata):
        return
    if not metadata:
        _fail(source, field, "is empty", _METADATA_FIX)
    for pair in metadata.split(","):
        if pair != pair.strip() or any(part != part.strip() for part in pair.split("=")):
            _fail(
                source,
                field,
                f"has spaces in the pair {pair!r} of {metadata!r}, which CellProfiler would keep "
                "as part of the name or value",
                _METADATA_FIX,
            )
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or "=" in value:
            _fail(
                source,
                field,
                f"has a bad pair {pair!r} in {metadata!r}: each comma-separated part must be "
                "key=value",
                _METADATA_FIX,
            )


def _check_metadata_dict(metadata: dict[str, Any], field: str, source: str) -> None:
    if not metadata:
        _fail(source, field, "is an empty object: it selects no image group", _METADATA_FIX)
    for key, value in metadata.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            _fail(
                source,
                f"{field}.{key}",
                f"is a JSON {_json_type(value)}; metadata values must be strings or numbers",
                _METADATA_FIX,
            )


# --- CSV ----------------------------------------------------------------------------------


def _csv_rows(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    """The header's column names and the data rows, every row as wide as the header."""
    # Cells may be as long as a whole message: the size check then names the row.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_MESSAGE_BYTES))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        previous_end = 0
        for row in reader:
            # A quoted cell may span lines: a row starts after the previous one ended.
            rows.append((previous_end + 1, row))
            previous_end = reader.line_num
    except csv.Error as error:
        _fail(
            source,
            None,
            f"is not valid CSV at line {reader.line_num}: {error}",
            'check the quotes on that line (a quote inside a value is written twice: "")',
        )
    # Fully blank lines (often a trailing one) are not rows.
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        _fail(
            source, None, "is empty", "write a header line of column names, then one row per task"
        )
    header_line, header = rows[0]
    columns = [name.strip() for name in header]
    for position, name in enumerate(columns, start=1):
        if not name:
            _fail(
                source,
                f"line {header_line}",
                f"column {position} of the header has no name",
                "give every column a name (the names become the task's fields)",
            )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        _fail(
            source,
            f"line {header_line}",
            f"the header repeats the column name(s) {', '.join(repeated)}",
            "give every column a different name",
        )
    if len(rows) == 1:
        _fail(source, None, "has a header but no rows: there are no tasks", "add one row per task")
    for line, row in rows[1:]:
        if len(row) != len(columns):
            _fail(
                source,
                f"line {line}",
                f"has {len(row)} cells but the header has {len(columns)} columns",
                "give every row one cell per column (an empty cell is written as nothing "
                "between two commas; a comma inside a value needs quotes)",
            )
    return columns, [row for _, row in rows[1:]]


# --- shared -------------------------------------------------------------------------------


def _refuse_credential(value: Any, path: str, source: str) -> None:
    """Refuse a job value holding a credential by its shape (`secrets_scan`), naming where,
    never the value: it would be copied into the task's message, its log's header, its
    records and the reports."""
    found = first_credential(value, path)
    if found is None:
        return
    where, kind = found
    _fail(
        source,
        where,
        f"holds {kind}, which would be written into the task's message, its log, its "
        "records and the reports",
        "take it out of the job file: give the command its credentials from its machine "
        "(an AWS role, or an environment variable of the worker) rather than as a job value",
    )


def _compact(
    source: str,
    fmt: JobFormat,
    list_key: str,
    shared: dict[str, Any],
    group_key: str,
    groups: Iterable[tuple[str, str]],
    *,
    nonchar: bool = True,
    secrets: bool = True,
) -> JobFile:
    """The job of ``groups`` (each element's `json_texts`, in file order) under ``shared``:
    each task's id and message size from its body's text, made from the shared keys' text
    once (`body_frame`), duplicates (a repeated id) dropped after the first. Bodies are
    searched for U+FFFE and U+FFFF unless ``nonchar`` is False (`_may_hold_nonchar`), and
    groups and shared keys for credentials (refused) unless ``secrets`` is False (the
    file's text `may_hold_credential` none)."""
    if secrets:
        _refuse_credential(shared, "", source)
    head, tail = body_frame(shared, group_key)
    sha256 = hashlib.sha256
    unique: list[str] = []
    unsorted = bytearray()
    ids = bytearray()
    # The first 16 hex digits of each id as an int: a set of a million of them is a third
    # of a dict of id strings. An equal int is then checked against the full ids.
    seen: set[int] = set()
    duplicates: list[Duplicate] = []
    for index, (group, sorted_text) in enumerate(groups):
        if secrets and may_hold_credential(group):
            _refuse_credential(json.loads(group), f"{list_key}[{index}]", source)
        body = head + sorted_text + tail
        try:
            data = body.encode()
        except UnicodeEncodeError:
            _fail(
                source,
                f"{list_key}[{index}]",
                "holds a \\ud800-\\udfff escape that is half of a character, not text "
                "(a queue message must be UTF-8)",
                "write the whole character (or its pair of escapes), or remove it",
            )
        if len(data) > MAX_MESSAGE_BYTES:
            _fail(
                source,
                f"{list_key}[{index}]",
                f"makes a task message of {len(data):,} bytes, over the queue's limit of "
                f"{MAX_MESSAGE_BYTES:,} bytes",
                _SIZE_FIX,
            )
        if nonchar and _nonchar(data):
            _fail(source, f"{list_key}[{index}]", _NONCHARACTER_PROBLEM, _NONCHARACTER_FIX)
        task_id = sha256(data).hexdigest()[:ID_CHARS]
        short = int(task_id[:16], 16)
        if short in seen:
            first = _first_with(ids, task_id)
            if first is not None:
                duplicates.append(Duplicate(index, _position(first, duplicates), task_id))
                continue
        seen.add(short)
        unique.append(group)
        unsorted.append(sorted_text is not group)
        ids += task_id.encode("ascii")
    del seen
    tasks = TaskList(shared, group_key, unique, bytes(ids), unsorted)
    return JobFile(path=source, format=fmt, tasks=tasks, duplicates=duplicates)


def _first_with(ids: bytearray, task_id: str) -> int | None:
    """The index among the unique tasks so far of the one with ``task_id``, or None."""
    wanted = task_id.encode("ascii")
    start = ids.find(wanted)
    while start != -1 and start % ID_CHARS:
        start = ids.find(wanted, start + 1)
    return None if start == -1 else start // ID_CHARS


def _position(unique_index: int, duplicates: list[Duplicate]) -> int:
    """The element position of the ``unique_index``-th unique task, given the duplicates
    dropped before it (in order)."""
    position = unique_index
    for dup in duplicates:
        if dup.index <= position:
            position += 1
    return position
