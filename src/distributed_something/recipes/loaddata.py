"""LoadData CSVs and file lists, the data files of Distributed-CellProfiler jobs: reading
them, the images of one group, and rewriting their paths to where the images were
downloaded. Pure: text in, text or values out.

Paths in a data file name folders under DCP's bucket mount (`DATA_ROOT`), or relative ones
(`folder_key`: to the job's input folder in a LoadData CSV, as CellProfiler resolves them;
to the bucket root in a file list); a LoadData CSV is read as CellProfiler's LoadData module
reads it (column types, ``Image_`` prefixes, quoting), and a rewrite changes only the cells
it means to.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote
from urllib.request import pathname2url

from distributed_something.errors import InputError
from distributed_something.keys import check_key, join_key

#: Where DCP's workers mounted the bucket; LoadData CSVs and file lists written for DCP name
#: their images under it.
DATA_ROOT = "/home/ubuntu/bucket"

ColumnType = Literal["integer", "float", "text"]

_PATH_FIX = (
    f"write each PathName_ value as {DATA_ROOT}/<folder in the bucket> (as for "
    "Distributed-CellProfiler) or as the folder's key relative to the bucket root"
)

# Column prefixes as CellProfiler's LoadData names them (an "Image_" prefix is dropped first).
_PATH_PREFIXES = ("PathName_", "ObjectsPathName_")
_FILE_PREFIXES = {"PathName_": "FileName_", "ObjectsPathName_": "ObjectsFileName_"}
_LOADDATA_PREFIXES = (
    "PathName_",
    "FileName_",
    "URL_",
    "ObjectsFileName_",
    "ObjectsPathName_",
    "ObjectsURL_",
)
_INT32 = (-(2**31), 2**31 - 1)
#: Columns of image URLs, which LoadData reads before (and instead of) PathName/FileName.
_URL_PREFIXES = ("URL_", "ObjectsURL_")


def group_argument(metadata: Sequence[tuple[str, str]]) -> str:
    """CellProfiler's ``-g`` value for the pairs: ``"k=v,k=v"`` in their order."""
    return ",".join(f"{key}={value}" for key, value in metadata)


def folder_key(path: str, base: str = "") -> str:
    """The storage key of a folder named in a LoadData ``PathName_`` cell or file list.

    ``/home/ubuntu/bucket/<key>`` (DCP's mount) means ``<key>`` in the source bucket; a
    relative ``<path>`` means ``<base>/<path>`` (``base``: where CellProfiler resolves it,
    LoadData's default base image location, the job's ``input`` folder on DCP's mount; ""
    for a file list: the bucket root); the bucket root itself is ``""``. Raises
    ``ValueError`` for any other absolute path or a URL (nothing says which bucket object it
    is) and for keys that could escape (``..``).
    """
    text = path.strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    if text == DATA_ROOT or text == DATA_ROOT + "/":
        return ""
    if text.startswith(DATA_ROOT + "/"):
        text = text[len(DATA_ROOT) + 1 :]
    elif text.startswith("/") or "://" in text:
        raise ValueError(f"{path!r} is neither under {DATA_ROOT} nor relative to the bucket")
    elif base.strip("/"):
        text = f"{base.strip('/')}/{text}"
    text = text.strip("/")
    while "//" in text:
        text = text.replace("//", "/")
    if text in ("", "."):
        return ""
    try:
        return check_key(text)
    except InputError as error:
        raise ValueError(f"{path!r} names the key {text!r}, which {error.problem}") from None


def url_key(url: str) -> str | None:
    """The storage key of the image a LoadData ``URL_`` cell names, or None for a URL that
    CellProfiler fetches itself (``https://``, ``s3://``…). A ``file://`` URL is a path on
    DCP's mount: ``file:///home/ubuntu/bucket/<key>`` is ``<key>`` (%-escapes decoded, as
    CellProfiler writes them); raises ``ValueError`` for one elsewhere."""
    text = url.strip()
    if not text.lower().startswith("file:"):
        return None
    path = unquote(text[len("file:") :])
    if path.startswith("//"):  # file://<host>/path: the host is empty on Linux
        path = path[2:]
        path = path[path.find("/") :] if "/" in path else path
    if not path.startswith("/"):
        raise ValueError(f"{url!r} is not a file:// URL of an absolute path")
    key = folder_key(path)
    if not key:
        raise ValueError(f"{url!r} names the bucket root, not an image")
    return key


def _file_key(folder: str, name: str) -> str:
    try:
        return join_key(folder, name)
    except InputError as error:
        raise ValueError(f"the image {folder}/{name} {error.problem}") from None


# --- LoadData CSVs -------------------------------------------------------------------------

# One CSV field: an optional quoted part, then anything up to the next delimiter (csv's
# lenient reading of `"ab"c`). Raw spans are kept so a rewrite changes only the cells it means to.
_FIELD = re.compile(r'(?:"(?:[^"]|"")*")?[^,\r\n]*')


@dataclass(frozen=True)
class _Record:
    fields: list[str]  # raw text of each field, quotes included
    end: str  # the record's line ending ("" for the last record without one)
    line: int  # 1-based line of the file where the record starts


def _records(text: str) -> list[_Record]:
    records: list[_Record] = []
    position, line, size = 0, 1, len(text)
    while position < size:
        fields: list[str] = []
        start_line = line
        while True:
            match = _FIELD.match(text, position)
            assert match is not None  # the pattern matches the empty string
            raw = match.group()
            if raw.startswith('"') and not re.match(r'"(?:[^"]|"")*"', raw):
                raise ValueError(f"line {start_line}: a quoted value is not closed")
            line += raw.count("\n") + raw.count("\r") - raw.count("\r\n")
            fields.append(raw)
            position = match.end()
            if position < size and text[position] == ",":
                position += 1
                continue
            break
        end = ""
        if text.startswith("\r\n", position):
            end = "\r\n"
        elif position < size:
            end = text[position]
        position += len(end)
        line += 1 if end else 0
        records.append(_Record(fields, end, start_line))
    return records


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    match = re.match(r'"((?:[^"]|"")*)"', raw)
    assert match is not None  # checked by _records
    return match.group(1).replace('""', '"') + raw[match.end() :]


def _quote(value: str) -> str:
    if any(char in value for char in ',"\r\n') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def _column_name(header: str) -> str:
    name = header.strip().removeprefix("\ufeff")
    for prefix in _LOADDATA_PREFIXES:
        if name.startswith("Image_" + prefix):
            return name[len("Image_") :]
    return name


@dataclass(frozen=True)
class LoadDataTable:
    """A LoadData CSV read as text: column names as CellProfiler sees them (an ``Image_``
    prefix dropped) and every row's cells as written (``002`` stays ``002``), with the file
    line each row starts on. Short rows are padded with empty cells."""

    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        """Every row's cell in column ``name`` (``KeyError`` when there is no such column)."""
        index = self.columns.index(name) if name in self.columns else -1
        if index < 0:
            raise KeyError(name)
        return [row[index] for row in self.rows]


def read_load_data(text: str, *, source: str = "data_file") -> LoadDataTable:
    """Parse a LoadData CSV; raises ``InputError`` (``source`` = the file) when it has no
    header or a quote is not closed. Blank lines are skipped."""
    try:
        records = _records(text)
    except ValueError as error:
        raise InputError(source, None, f"is not valid CSV: {error}", "close the quote") from None
    records = [r for r in records if r.fields != [""]]
    if not records:
        raise InputError(
            source, None, "is empty", "write a header line, then one row per image set"
        )
    columns = [_column_name(_unquote(raw)) for raw in records[0].fields]
    rows: list[list[str]] = []
    for record in records[1:]:
        cells = [_unquote(raw) for raw in record.fields]
        rows.append(cells + [""] * (len(columns) - len(cells)))
    _add_synthetic_well(columns, rows)
    return LoadDataTable(columns, rows, [r.line for r in records[1:]])


#: CellProfiler's well row and well column metadata names (cellprofiler_core's
#: is_well_row_token / is_well_column_token), after ``Metadata_``.
_WELL_ROW = frozenset({"wellrow", "well_row", "row"})
_WELL_COLUMN = frozenset({"wellcol", "well_col", "wellcolumn", "well_column", "column", "col"})


def _add_synthetic_well(columns: list[str], rows: list[list[str]]) -> None:
    """As LoadData does: a CSV with a well row and a well column but no ``Metadata_Well``
    gets one, the row's text followed by the column's (``B`` + ``03`` → ``B03``), which a
    group may then name (``Metadata_Well=B03``)."""
    row_at = column_at = None
    for index, name in enumerate(columns):
        category, _, feature = name.partition("_")
        if category != "Metadata":
            continue
        if feature.lower() == "well":
            return
        if feature.lower() in _WELL_ROW:
            row_at = index
        elif feature.lower() in _WELL_COLUMN:
            column_at = index
    if row_at is None or column_at is None:
        return
    columns.append("Metadata_Well")
    for row in rows:
        row.append(row[row_at] + row[column_at])


def rewrite_load_data(
    text: str, image_dir: str | Path, *, source: str = "data_file", base: str = ""
) -> str:
    """``text`` with every ``PathName_*`` / ``ObjectsPathName_*`` cell pointing into
    ``image_dir``, the local mirror of the source bucket, and every ``file://`` cell of a
    ``URL_*`` / ``ObjectsURL_*`` column at the downloaded file (`url_key`; other URLs are
    CellProfiler's to fetch); every other byte is kept.

    A cell naming ``/home/ubuntu/bucket/<key>`` (or ``<path>``, relative to ``base``)
    becomes ``<image_dir>/<key>`` (see `folder_key`); empty cells stay empty. Metadata and
    every other column keep their exact text (no number parsing, so ``002`` stays
    ``002``), as do quotes, line endings and a byte-order mark. Raises ``InputError`` naming
    the column and line of a path that does not map to a key.
    """
    try:
        records = _records(text)
    except ValueError as error:
        raise InputError(source, None, f"is not valid CSV: {error}", "close the quote") from None
    header = next((r for r in records if r.fields != [""]), None)
    if header is None:
        return text
    names = [_column_name(_unquote(raw)) for raw in header.fields]
    targets = [i for i, name in enumerate(names) if name.startswith(_PATH_PREFIXES)]
    urls = [i for i, name in enumerate(names) if name.startswith(_URL_PREFIXES)]
    targets += urls
    root = str(image_dir).rstrip("/") or "/"
    out: list[str] = []
    for record in records:
        fields = record.fields
        if record is not header and targets and fields != [""]:
            fields = list(fields)
            for index in targets:
                if index >= len(fields):
                    continue
                value = _unquote(fields[index])
                if not value.strip():
                    continue
                try:
                    if index in urls:
                        key = url_key(value)
                        if key is not None:  # the downloaded file's own URL
                            local = pathname2url(posixpath.join(root, key))
                            fields[index] = _quote(f"file://{local}")
                        continue
                    key = folder_key(value, base)
                except ValueError as error:
                    raise InputError(
                        source, f"{names[index]} (line {record.line})", str(error), _PATH_FIX
                    ) from None
                fields[index] = _quote(posixpath.join(root, key) if key else root)
        out.append(",".join(fields) + record.end)
    return "".join(out)


def column_type(values: Sequence[str]) -> ColumnType:
    """How CellProfiler's LoadData reads a column: ``integer`` when every cell is a 32-bit
    integer, else ``float`` when every cell is a number, else ``text``."""
    kind: ColumnType = "integer"
    for value in values:
        try:
            number = int(value)
        except ValueError:
            try:
                float(value)
            except ValueError:
                return "text"
            kind = "float"
            continue
        if not _INT32[0] <= number <= _INT32[1]:
            return "text"
    return kind


def _as_read(value: str, kind: ColumnType) -> str | None:
    """``value`` as CellProfiler compares it in a column of ``kind`` (None: it cannot be)."""
    if kind == "text":
        return value
    try:
        number = float(value)
    except ValueError:
        return None
    if kind == "float":
        return str(number)
    try:
        return str(int(value))
    except ValueError:
        return str(int(number)) if number.is_integer() else None


def cellprofiler_group(
    table: LoadDataTable, metadata: Sequence[tuple[str, str]], *, source: str = "data_file"
) -> list[tuple[str, str]]:
    """The group as CellProfiler matches it against ``table``.

    LoadData reads a column of whole numbers as numbers, and ``-g`` compares the text of
    those numbers: ``Metadata_Position=002`` would match nothing where ``=2`` matches the
    rows written ``002``. Each value is therefore given in the column's own reading (``2``
    for ``002`` or ``2.0`` in an integer column); text columns keep the value as written.
    Raises ``InputError`` when the table lacks one of the group's columns.
    """
    result: list[tuple[str, str]] = []
    for key, value in metadata:
        try:
            cells = table.column(key)
        except KeyError:
            known = ", ".join(c for c in table.columns if c.startswith("Metadata_")) or "none"
            raise InputError(
                source,
                key,
                f"is a key of the group but not a column of the data file (its metadata "
                f"columns: {known})",
                "use the data file's Metadata_ column names in the job's Metadata",
            ) from None
        read = _as_read(value, column_type(cells))
        result.append((key, value if read is None else read))
    return result


def select_group_rows(
    table: LoadDataTable, metadata: Sequence[tuple[str, str]], *, source: str = "data_file"
) -> list[int]:
    """Indexes of the rows of ``table`` in the group, compared as CellProfiler does (see
    `cellprofiler_group`: numbers as numbers, so ``2`` matches ``002``; text as text).

    Raises ``InputError`` when a key is not a column or when no row matches (CellProfiler
    would have nothing to run).
    """
    wanted = cellprofiler_group(table, metadata, source=source)
    tests: list[tuple[list[str], ColumnType, str]] = []
    for key, value in wanted:
        cells = table.column(key)
        tests.append((cells, column_type(cells), value))
    rows = [
        index
        for index in range(len(table.rows))
        if all(_as_read(cells[index], kind) == value for cells, kind, value in tests)
    ]
    if not rows:
        raise InputError(
            source,
            None,
            f"has no row in the group {group_argument(metadata)}",
            "check the group's Metadata against the data file's Metadata_ columns",
        )
    return rows


def group_matcher(
    table: LoadDataTable, keys: Sequence[str]
) -> Callable[[Sequence[tuple[str, str]]], bool]:
    """A test of whether a group of these ``keys`` (in this order) selects a row of ``table``,
    compared as `select_group_rows` does; each column's type is read once, so checking many
    groups costs one pass over the table. Raises ``KeyError`` naming a key that is not a
    column."""
    kinds = [column_type(table.column(key)) for key in keys]
    columns = [table.column(key) for key in keys]
    present = {
        tuple(_as_read(cells[row], kind) for cells, kind in zip(columns, kinds, strict=True))
        for row in range(len(table.rows))
    }

    def matches(metadata: Sequence[tuple[str, str]]) -> bool:
        wanted = []
        for (_, value), kind in zip(metadata, kinds, strict=True):
            read = _as_read(value, kind)
            wanted.append(value if read is None else read)
        return tuple(wanted) in present

    return matches


def group_images(
    table: LoadDataTable,
    metadata: Sequence[tuple[str, str]],
    *,
    source: str = "data_file",
    base: str = "",
) -> list[str]:
    """The storage keys of every image of the group's rows (each ``file://`` ``URL_X`` cell,
    which CellProfiler reads first; each ``FileName_X`` joined to its ``PathName_X``, and
    the same for ``Objects…``), in row then column order, once.

    Raises ``InputError`` as `select_group_rows`, and for a file name without its path
    column or a path that does not map to a key (see `folder_key`: a relative path is
    relative to ``base``).
    """
    keys: list[str] = []
    seen: set[str] = set()
    pairs: list[tuple[int, int, str]] = []
    for file_index, name in enumerate(table.columns):
        for path_prefix, file_prefix in _FILE_PREFIXES.items():
            if name.startswith(file_prefix):
                path_name = path_prefix + name[len(file_prefix) :]
                if path_name not in table.columns:
                    raise InputError(
                        source,
                        name,
                        f"has no {path_name} column, so its folder is unknown",
                        f"add a {path_name} column with each image's folder",
                    )
                pairs.append((file_index, table.columns.index(path_name), name))
    url_columns = [
        (i, name) for i, name in enumerate(table.columns) if name.startswith(_URL_PREFIXES)
    ]
    for row_index in select_group_rows(table, metadata, source=source):
        row = table.rows[row_index]
        for url_index, name in url_columns:
            if not row[url_index].strip():
                continue
            try:
                key = url_key(row[url_index])
            except ValueError as error:
                where = f"{name} (line {table.lines[row_index]})"
                raise InputError(source, where, str(error), _PATH_FIX) from None
            if key is not None and key not in seen:
                seen.add(key)
                keys.append(key)
        for file_index, path_index, name in pairs:
            file_name = row[file_index].strip()
            if not file_name:
                continue
            where = f"{name} (line {table.lines[row_index]})"
            if not row[path_index].strip():
                # CellProfiler would look in the pipeline's base image folder, which is not
                # a place in the bucket.
                raise InputError(
                    source,
                    where,
                    f"names {file_name!r} but its {table.columns[path_index]} is empty",
                    _PATH_FIX,
                )
            try:
                key = _file_key(folder_key(row[path_index], base), file_name)
            except ValueError as error:
                raise InputError(source, where, str(error), _PATH_FIX) from None
            if key not in seen:
                seen.add(key)
                keys.append(key)
    return keys


# --- file lists ----------------------------------------------------------------------------


def _file_list_lines(text: str) -> list[tuple[str, str]]:
    # (content, line ending) per line, endings kept for a byte-exact rewrite
    return [
        (line.rstrip("\r\n"), line[len(line.rstrip("\r\n")) :])
        for line in text.splitlines(keepends=True)
    ]


def file_list_images(text: str, *, source: str = "data_file") -> list[str]:
    """The storage keys of every file in a CellProfiler file list (one path per line, as
    DCP's ``/home/ubuntu/bucket/<key>`` or a relative key; blank lines skipped).

    A file list carries no metadata, so every file is needed whatever the group. Raises
    ``InputError`` naming the line of a path that does not map to a key.
    """
    keys: list[str] = []
    for number, (content, _) in enumerate(_file_list_lines(text), start=1):
        if not content.strip():
            continue
        folder, name = posixpath.split(content.strip())
        try:
            key = _file_key(folder_key(folder) if folder else "", name)
        except ValueError as error:
            raise InputError(source, f"line {number}", str(error), _PATH_FIX) from None
        if key not in keys:
            keys.append(key)
    return keys


def rewrite_file_list(text: str, image_dir: str | Path, *, source: str = "data_file") -> str:
    """``text`` with each path pointing into ``image_dir`` (see `file_list_images`); blank
    lines and line endings are kept."""
    root = str(image_dir).rstrip("/") or "/"
    file_list_images(text, source=source)  # every path maps to a key, or InputError
    out: list[str] = []
    for content, end in _file_list_lines(text):
        if content.strip():
            folder, name = posixpath.split(content.strip())
            content = posixpath.join(root, _file_key(folder_key(folder) if folder else "", name))
        out.append(content + end)
    return "".join(out)
