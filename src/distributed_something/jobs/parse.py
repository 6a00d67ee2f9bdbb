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
import io
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from distributed_something.errors import InputError
from distributed_something.jobs.model import (
    MAX_MESSAGE_BYTES,
    Duplicate,
    JobFile,
    JobFormat,
    Task,
    canonical_json,
)
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
    if suffix.lower().lstrip(".") == "csv":
        return _dedupe(source, "csv", "rows", _csv_tasks(text, source))
    data = _load_json(text, source)
    fmt, list_key, group_key = _detect(data, source)
    shared = {k: _drop_comments(v) for k, v in data.items() if k != list_key and not _is_comment(k)}
    elements = data[list_key]
    _check_elements(elements, list_key, source)
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
    tasks: list[Task] = []
    for index, element in enumerate(elements):
        group = _drop_comments(element)
        if fmt == "dcp":
            _check_dcp_group(group, index, source)
            # DCP sends a group's "Metadata" string, or the group itself (--print-groups form).
            if isinstance(group, dict) and "Metadata" in group:
                group = group["Metadata"]
        tasks.append(Task(body={**shared, group_key: group}, group_key=group_key))
    return _dedupe(source, fmt, list_key, tasks)


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
        # Some of json's messages end in " at" ("Unterminated string starting at"): the
        # position follows them.
        problem = error.msg.removesuffix(" at")
        _fail(
            source,
            None,
            f"is not valid JSON: {problem} at line {error.lineno}, column {error.colno}",
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
    size = len(canonical_json(shared).encode())
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
    data: Any, source: str, *, limit: int = MAX_JSON_DEPTH, fix: str = _DEPTH_FIX
) -> None:
    """Raise `InputError` (``source``, the JSON path) when objects and lists in ``data`` (as
    `json.loads` returns it) nest more than ``limit`` levels deep, with ``fix``. The path
    names where the deep part starts, e.g. ``groups[3].meta.a.b…``: its first few steps,
    then an ellipsis.

    The walk is iterative: checking a deep value cannot exhaust Python's stack, which is what
    the recursive code downstream (comment removal, task ids, message bodies) would do.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
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


def _check_elements(elements: Any, list_key: str, source: str) -> None:
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
                f"{list_key}[{index}]",
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
        if not shared[key].strip():
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


def _check_metadata_string(metadata: str, field: str, source: str) -> None:
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


def _csv_tasks(text: str, source: str) -> list[Task]:
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
    tasks: list[Task] = []
    for line, row in rows[1:]:
        if len(row) != len(columns):
            _fail(
                source,
                f"line {line}",
                f"has {len(row)} cells but the header has {len(columns)} columns",
                "give every row one cell per column (an empty cell is written as nothing "
                "between two commas; a comma inside a value needs quotes)",
            )
        tasks.append(Task(body={"group": dict(zip(columns, row, strict=True))}))
    return tasks


# --- shared -------------------------------------------------------------------------------


def _dedupe(source: str, fmt: JobFormat, list_key: str, tasks: Iterable[Task]) -> JobFile:
    unique: list[Task] = []
    duplicates: list[Duplicate] = []
    first_index: dict[str, int] = {}
    for index, task in enumerate(tasks):
        size = len(task.body_json().encode())
        if size > MAX_MESSAGE_BYTES:
            _fail(
                source,
                f"{list_key}[{index}]",
                f"makes a task message of {size:,} bytes, over the queue's limit of "
                f"{MAX_MESSAGE_BYTES:,} bytes",
                _SIZE_FIX,
            )
        if task.id in first_index:
            duplicates.append(Duplicate(index, first_index[task.id], task.id))
            continue
        first_index[task.id] = index
        unique.append(task)
    return JobFile(path=source, format=fmt, tasks=unique, duplicates=duplicates)
