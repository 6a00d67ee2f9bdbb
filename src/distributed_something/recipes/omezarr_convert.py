"""The builtin OME-Zarr converter: TIFF files → OME-Zarr images or an HCS plate, with pyramids.

The `omezarr` recipe's ``builtin`` engine runs it inside each task (the worker stays generic)::

    python -m distributed_something.recipes.omezarr_convert convert INPUT OUTPUT [options]
    python -m distributed_something.recipes.omezarr_convert add-levels ZARR [--levels N]

``convert`` reads INPUT — a TIFF file, a folder of TIFF files (searched recursively) or a
Harmony/Opera Phenix ``Index.idx.xml`` — and writes one OME-Zarr (NGFF 0.4 by default, as
bioformats2raw does; ``--ngff-version 0.5`` for Zarr v3) into the folder OUTPUT:

- **which file is what** comes from its path relative to INPUT, matched with ``--pattern``: a
  regular expression whose named groups ``row``, ``column`` (or ``well``, e.g. ``B03``),
  ``field``, ``channel``, ``z`` and ``t`` place the file. Without a pattern, Harmony file names
  (``r01c01f01p01-ch1sk1fk1fl1.tiff``) are recognised; any other set of files is read as the
  channels of one image, named by what differs between the file names (``01_POS002_D.TIF``,
  ``01_POS002_F.TIF`` → channels ``D``, ``F``). A single multi-dimensional TIFF (OME-TIFF,
  ImageJ hyperstack, RGB) keeps its own T, C, Z axes.
- **layout**: ``image`` writes one multiscale image at OUTPUT; ``plate`` writes an HCS plate
  (``OUTPUT/<row>/<column>/<field index>``, rows ``A``, ``B`` …, columns as named) with plate
  and well metadata; ``auto`` (default) picks ``plate`` when the files have rows or columns.
- **pyramid**: ``--resolutions N`` levels in all (level 0 = the full image), each half the size
  of the one before in Y and X (sizes rounded down, Z and the other axes kept); without it, as
  many as bioformats2raw makes: halve until neither Y nor X exceeds ``--target-min-size``
  (256). Levels never go below 1 × 1 pixel. ``--downsample mean`` (default: the mean of each
  2 × 2 block, rounded for integers) or ``nearest`` (every second pixel, like bioformats2raw's
  default). Scales are 1 at level 0 and ``2**k`` in Y and X at level k (no physical units).
- **chunks**: ``--tile-width``/``--tile-height`` (default 1024, as bioformats2raw) are the X/Y
  chunk sizes (capped at the level's size); every other axis is chunked by 1.
- axes are ``t`` (only when there is more than one time point), ``c``, ``z`` (only when more
  than one plane), ``y``, ``x``; the pixel values and dtype are the TIFFs' own (a palette TIFF
  keeps its indices). Channel names and display windows go to the ``omero`` metadata.

``add-levels`` appends N more levels (each ``--factor`` times smaller than the last, default
2) to every image of an existing OME-Zarr image, plate or bioformats2raw output, as
Distributed-OmeZarrCreator's ``add_downsampling.py`` does (``add_downsampling.py ZARR 8`` is
``add-levels ZARR --levels 1 --factor 8``); the new level keeps the last level's chunks and
compression, and its scale is the last one's times the factor in Y and X.

Exit codes: 0 done, 1 the conversion failed (unreadable or inconsistent files), 2 wrong usage.
numpy, tifffile, zarr and ome-zarr (the ``omezarr`` extra) are imported only when converting,
so this module (and its option parser, which the recipe uses to check job values) imports
without them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ConvertError",
    "ConvertOptions",
    "ConvertResult",
    "Discovery",
    "SourceFile",
    "UsageError",
    "add_levels",
    "assemble",
    "build_parser",
    "check_convert_flags",
    "compile_pattern",
    "convert",
    "discover",
    "downsample",
    "harmony_index",
    "image_groups",
    "level_count",
    "main",
    "natural_key",
    "options_from",
    "read_tiff",
    "row_name",
    "write_image",
]

PROG = "python -m distributed_something.recipes.omezarr_convert"
TIFF_SUFFIXES = (".tif", ".tiff")
#: bioformats2raw's defaults: chunk (tile) size and the largest side of the smallest level.
DEFAULT_TILE = 1024
DEFAULT_TARGET_MIN_SIZE = 256
NGFF_VERSIONS = ("0.4", "0.5")
LAYOUTS = ("auto", "image", "plate")
METHODS = ("mean", "nearest")
PATTERN_GROUPS = ("row", "column", "well", "field", "channel", "z", "t")
#: Harmony / Opera Phenix export names: r<row>c<col>f<field>p<plane>-ch<channel>sk<time>…
HARMONY_NAME = re.compile(
    r"r(?P<row>\d+)c(?P<column>\d+)f(?P<field>\d+)p(?P<z>\d+)-ch(?P<channel>\d+)"
    r"sk(?P<t>\d+)fk\d+fl\d+\.tiff?",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[A-Za-z0-9]+$")
_COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


class ConvertError(Exception):
    """The input cannot be converted as asked (exit code 1); the message says why and what to
    change."""


class UsageError(Exception):
    """The command line is wrong (exit code 2); the message names the option."""


# --- options ------------------------------------------------------------------------------


class _Exit(Exception):
    """``--help`` was shown: the command line ends with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so callers (the recipe, at
    validation time) can check arguments without ending the process."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise _Exit(status)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not ≥ 1")
    return value


def _factor(text: str) -> int:
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is not ≥ 2")
    return value


def _add_convert_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a TIFF file, a folder of TIFFs or a Harmony Index.idx.xml")
    parser.add_argument("output", help="the OME-Zarr folder to write (absent or empty)")
    parser.add_argument("--name", default="", help="the image's or plate's name")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto")
    parser.add_argument(
        "--pattern",
        default="",
        help="a regular expression with named groups row, column, well, field, channel, z, t",
    )
    parser.add_argument("-r", "--resolutions", type=_positive, default=None)
    parser.add_argument(
        "--target-min-size", "--target_min_size", type=_positive, default=DEFAULT_TARGET_MIN_SIZE
    )
    parser.add_argument("-w", "--tile-width", "--tile_width", type=_positive, default=DEFAULT_TILE)
    parser.add_argument(
        "-H", "--tile-height", "--tile_height", type=_positive, default=DEFAULT_TILE
    )
    parser.add_argument("--downsample", choices=METHODS, default="mean")
    parser.add_argument("--ngff-version", choices=NGFF_VERSIONS, default="0.4")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace what OUTPUT holds already"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``convert`` and ``add-levels``); it raises `UsageError`
    instead of exiting."""
    parser = _Parser(prog=PROG, description="TIFF → OME-Zarr, and pyramid levels for OME-Zarr.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_convert_options(commands.add_parser("convert", help="convert TIFF files to OME-Zarr"))
    add = commands.add_parser("add-levels", help="add downsampled levels to an OME-Zarr")
    add.add_argument("zarr", help="an OME-Zarr image, plate or bioformats2raw output")
    add.add_argument("--levels", type=_positive, default=1, help="how many levels to add")
    add.add_argument("--factor", type=_factor, default=2, help="size ratio between levels")
    add.add_argument("--downsample", choices=METHODS, default="mean")
    return parser


@dataclass(frozen=True)
class ConvertOptions:
    """How `convert` writes; the defaults are the command line's."""

    name: str = ""
    layout: str = "auto"
    pattern: str = ""
    resolutions: int | None = None
    target_min_size: int = DEFAULT_TARGET_MIN_SIZE
    tile_width: int = DEFAULT_TILE
    tile_height: int = DEFAULT_TILE
    downsample: str = "mean"
    ngff_version: str = "0.4"
    overwrite: bool = False


# --- finding the files --------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One input file and where it goes: ``None`` means the key is not used.

    ``row`` is a letter name (``A``, ``B`` … ``AA``), ``column`` a number without leading
    zeros when it is numeric; all keys are sorted naturally (``2`` before ``10``).
    """

    path: Path
    row: str | None = None
    column: str | None = None
    field: str | None = None
    channel: str | None = None
    z: str | None = None
    t: str | None = None

    @property
    def position(self) -> tuple[str | None, str | None, str | None]:
        """(row, column, field): the image this file belongs to."""
        return (self.row, self.column, self.field)


@dataclass
class Discovery:
    """The files of a conversion and what is known about them."""

    files: list[SourceFile]
    #: channel key → display name (Harmony index files name their channels)
    channel_names: dict[str, str] = field(default_factory=dict)


def natural_key(text: str | None) -> tuple[Any, ...]:
    """Sort key: digit runs compare as numbers (``f2`` < ``f10``), None first."""
    if text is None:
        return ()
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _row_key(name: str | None) -> tuple[Any, ...]:
    # Plate rows run A … Z, AA … AF: shorter names first.
    return (len(name or ""), natural_key(name))


def row_name(value: str) -> str:
    """A row as plates name it: ``1`` → ``A``, ``27`` → ``AA``; letters are kept (upper case)."""
    if value.isdigit():
        number = int(value)
        if number < 1:
            raise ConvertError(f"row {value!r} is not ≥ 1 (rows are counted from 1)")
        letters = ""
        while number:
            number, rest = divmod(number - 1, 26)
            letters = chr(ord("A") + rest) + letters
        return letters
    if not value.isalpha():
        raise ConvertError(f"row {value!r} is neither a number nor letters")
    return value.upper()


def _column_name(value: str) -> str:
    return str(int(value)) if value.isdigit() else value


def _split_well(well: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z]+)0*(\d+)", well)
    if match is None:
        raise ConvertError(
            f"well {well!r} is not a row letter and a column number (like B03); "
            "capture row and column separately with (?P<row>…) and (?P<column>…)"
        )
    return match.group(1).upper(), str(int(match.group(2)))


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith(".")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled; `UsageError` when it is not a regular expression or names a group
    the converter does not know."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise UsageError(f"--pattern {pattern!r} is not a regular expression: {error}") from None
    unknown = sorted(set(compiled.groupindex) - set(PATTERN_GROUPS))
    if unknown:
        raise UsageError(
            f"--pattern names the group(s) {', '.join(unknown)}; the known groups are "
            f"{', '.join(PATTERN_GROUPS)}"
        )
    if "well" in compiled.groupindex and (
        "row" in compiled.groupindex or "column" in compiled.groupindex
    ):
        raise UsageError("--pattern: use either the group well or row and column, not both")
    return compiled


def _from_match(path: Path, groups: dict[str, str | None]) -> SourceFile:
    keys = {k: v for k, v in groups.items() if v is not None and v != ""}
    row = keys.get("row")
    column = keys.get("column")
    if "well" in keys:
        row, column = _split_well(keys["well"])
    return SourceFile(
        path=path,
        row=row_name(row) if row is not None else None,
        column=_column_name(column) if column is not None else None,
        field=keys.get("field"),
        channel=keys.get("channel"),
        z=keys.get("z"),
        t=keys.get("t"),
    )


def _derived_channel_names(names: Sequence[str]) -> list[str]:
    """What differs between file names: ``a_D.tif``, ``a_F.tif`` → ``D``, ``F`` (the whole
    names without suffix when that leaves an empty or repeated name)."""
    stems = [str(PurePosixPath(n).with_suffix("")) for n in names]
    prefix = len(_common_prefix(stems))
    suffix = len(_common_prefix([s[::-1] for s in stems]))
    names = [s[prefix : len(s) - suffix] for s in stems]
    if any(not n for n in names) or len(set(names)) != len(names):
        return stems
    return names


def _common_prefix(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def harmony_index(index: Path) -> Discovery:
    """The images listed in a Harmony / Opera Phenix ``Index.idx.xml`` (or ``Index.xml``):
    their files (relative to the index's folder), rows, columns, fields, planes, channels
    and time points, and the channel names."""
    try:
        root = ET.parse(index).getroot()
    except (ET.ParseError, OSError) as error:
        raise ConvertError(f"cannot read the index {index}: {error}") from None
    files: list[SourceFile] = []
    names: dict[str, str] = {}
    for element in root.iter():
        if _local(element.tag) == "Entry" and element.get("ChannelID"):
            for child in element:
                if _local(child.tag) == "ChannelName" and child.text:
                    names.setdefault(element.get("ChannelID", ""), child.text.strip())
        if _local(element.tag) != "Image":
            continue
        values = {_local(child.tag): (child.text or "").strip() for child in element}
        url = values.get("URL", "")
        if not url:
            continue  # the <Image id=…/> references in Wells and Fields
        relative = PurePosixPath(url.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            raise ConvertError(f"{index}: the image URL {url!r} points outside its folder")
        missing = [k for k in ("Row", "Col") if not values.get(k)]
        if missing:
            raise ConvertError(f"{index}: the image {url!r} has no {', '.join(missing)}")
        channel = values.get("ChannelID") or None
        if channel and values.get("ChannelName"):
            names.setdefault(channel, values["ChannelName"])
        files.append(
            SourceFile(
                path=index.parent / Path(*relative.parts),
                row=row_name(values["Row"]),
                column=_column_name(values["Col"]),
                field=values.get("FieldID") or None,
                channel=channel,
                z=values.get("PlaneID") or None,
                t=values.get("TimepointID") or None,
            )
        )
    if not files:
        raise ConvertError(f"{index} lists no images (no <Image> with a <URL>)")
    absent = [f.path for f in files if not f.path.is_file()]
    if absent:
        raise ConvertError(
            f"{len(absent)} image(s) listed in {index} are missing, e.g. {absent[0]}"
        )
    return Discovery(files, names)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def discover(input_path: Path, pattern: str = "") -> Discovery:
    """The files to convert under ``input_path`` and their positions (see the module doc).

    Raises `ConvertError` when there is nothing to convert or a TIFF does not match the
    pattern, `UsageError` for a bad pattern.
    """
    if input_path.is_file() and input_path.suffix.lower() == ".xml":
        return harmony_index(input_path)
    compiled = compile_pattern(pattern) if pattern else None
    if input_path.is_file():
        if not _is_tiff(input_path):
            raise ConvertError(f"{input_path} is not a TIFF (.tif/.tiff) nor an index .xml")
        base, paths = input_path.parent, [input_path]
    elif input_path.is_dir():
        base = input_path
        paths = sorted(
            (p for p in input_path.rglob("*") if p.is_file() and _is_tiff(p)),
            key=lambda p: natural_key(p.relative_to(base).as_posix()),
        )
        if not paths:
            raise ConvertError(f"there are no TIFF files (.tif/.tiff) under {input_path}")
    else:
        raise ConvertError(f"{input_path} does not exist")
    relative = [p.relative_to(base).as_posix() for p in paths]
    if compiled is not None:
        files: list[SourceFile] = []
        unmatched: list[str] = []
        for path, name in zip(paths, relative, strict=True):
            match = compiled.search(name)
            if match is None:
                unmatched.append(name)
            else:
                files.append(_from_match(path, match.groupdict()))
        if unmatched:
            raise ConvertError(
                f"{len(unmatched)} TIFF file(s) do not match --pattern {pattern!r}, e.g. "
                f"{unmatched[0]!r}; change the pattern or move the files away"
            )
        return Discovery(files)
    harmony = [HARMONY_NAME.fullmatch(PurePosixPath(n).name) for n in relative]
    if all(m is not None for m in harmony):
        return Discovery(
            [
                _from_match(p, m.groupdict())
                for p, m in zip(paths, harmony, strict=True)
                if m is not None
            ]
        )
    if len(paths) == 1:
        return Discovery([SourceFile(path=paths[0])])
    channels = _derived_channel_names(relative)
    return Discovery([SourceFile(path=p, channel=c) for p, c in zip(paths, channels, strict=True)])


# --- reading and assembling ---------------------------------------------------------------

_CANONICAL = "TCZYX"


def read_tiff(path: Path) -> np.ndarray:
    """The first image series of a TIFF as a 5-D (T, C, Z, Y, X) array.

    Samples (RGB) become channels; other axes of size 1 are dropped. Raises `ConvertError`
    for an unreadable file or an axis that is none of T, C, Z, Y, X with more than one
    element (save such files as OME-TIFF or ImageJ hyperstacks, which name their axes).
    """
    import numpy as np
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ConvertError(f"{path} holds no image")
            if len(tif.series) > 1:
                print(
                    f"{PROG}: {path} holds {len(tif.series)} image series; using the first",
                    file=sys.stderr,
                )
            series = tif.series[0]
            data = np.asarray(series.asarray())
            axes = str(series.axes).upper()
    except ConvertError:
        raise
    except Exception as error:  # noqa: BLE001 - tifffile raises many types for bad files
        raise ConvertError(f"cannot read {path} as a TIFF: {error}") from None
    if len(axes) != data.ndim:
        raise ConvertError(f"{path}: axes {axes!r} do not match its {data.ndim} dimensions")
    keep = [i for i, a in enumerate(axes) if data.shape[i] > 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep).replace("S", "C")
    if len(set(axes)) != len(axes) or any(a not in _CANONICAL for a in axes):
        raise ConvertError(
            f"{path} has the axes {axes!r}; only T, C, Z, Y, X (and RGB samples) can be "
            "converted: save it as an OME-TIFF or ImageJ hyperstack that names its axes"
        )
    if "Y" not in axes or "X" not in axes:
        raise ConvertError(f"{path} is not an image (axes {axes!r})")
    present = [a for a in _CANONICAL if a in axes]
    data = np.transpose(data, [axes.index(a) for a in present])
    sizes = dict(zip(present, data.shape, strict=True))
    return data.reshape([sizes.get(a, 1) for a in _CANONICAL])


def assemble(files: Sequence[SourceFile], names: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    """The 5-D (T, C, Z, Y, X) image of one field and its channel names.

    Files are concatenated along T, C and Z in the natural order of their ``t``, ``channel``
    and ``z`` keys. Raises `ConvertError` when two files share the same keys, a combination is
    missing, or their sizes or dtypes differ.
    """
    import numpy as np

    t_keys = sorted({f.t for f in files}, key=natural_key)
    c_keys = sorted({f.channel for f in files}, key=natural_key)
    z_keys = sorted({f.z for f in files}, key=natural_key)
    grid: dict[tuple[str | None, str | None, str | None], SourceFile] = {}
    for item in files:
        key = (item.t, item.channel, item.z)
        if key in grid:
            raise ConvertError(
                f"{grid[key].path.name} and {item.path.name} are the same field, time point, "
                "channel and plane; give --pattern groups that tell them apart"
            )
        grid[key] = item
    for t in t_keys:
        for c in c_keys:
            for z in z_keys:
                if (t, c, z) not in grid:
                    raise ConvertError(
                        f"the field of {files[0].path.name} has no file for "
                        f"time point {t}, channel {c}, plane {z}"
                    )
    arrays = {key: read_tiff(item.path) for key, item in grid.items()}
    first_key = next(iter(arrays))
    first = arrays[first_key]
    for key, array in arrays.items():
        if array.dtype != first.dtype or array.shape[3:] != first.shape[3:]:
            raise ConvertError(
                f"{grid[key].path.name} is {array.shape[3]}×{array.shape[4]} {array.dtype} but "
                f"{grid[first_key].path.name} is {first.shape[3]}×{first.shape[4]} {first.dtype}: "
                "the files of one image must have the same size and pixel type"
            )
    try:
        data = np.concatenate(
            [
                np.concatenate(
                    [np.concatenate([arrays[(t, c, z)] for z in z_keys], axis=2) for c in c_keys],
                    axis=1,
                )
                for t in t_keys
            ],
            axis=0,
        )
    except ValueError as error:
        raise ConvertError(f"the files of one image do not fit together: {error}") from None
    channel_names: list[str] = []
    for c in c_keys:
        size = arrays[(t_keys[0], c, z_keys[0])].shape[1]
        label = names.get(c, c) if c is not None else None
        if size == 1:
            channel_names.append(label if label is not None else str(len(channel_names)))
        else:
            for i in range(size):
                channel_names.append(f"{label}-{i}" if label is not None else str(i))
    return data, channel_names


# --- pyramids -----------------------------------------------------------------------------


def level_count(
    height: int,
    width: int,
    resolutions: int | None = None,
    target_min_size: int = DEFAULT_TARGET_MIN_SIZE,
) -> int:
    """How many pyramid levels an image of ``height`` × ``width`` gets.

    ``resolutions`` when given; else bioformats2raw's rule: one more level while Y or X of the
    last one exceeds ``target_min_size``. Capped so the smallest level is at least 1 × 1.
    """
    if resolutions is None:
        count, h, w = 1, height, width
        while h > target_min_size or w > target_min_size:
            count, h, w = count + 1, h // 2, w // 2
    else:
        count = resolutions
    possible, h, w = 1, height, width
    while h >= 2 and w >= 2:
        possible, h, w = possible + 1, h // 2, w // 2
    return max(1, min(count, possible))


def downsample(data: np.ndarray, factor: int = 2, method: str = "mean") -> np.ndarray:
    """``data`` made ``factor`` times smaller in its last two axes (sizes rounded down).

    ``mean`` averages each ``factor`` × ``factor`` block (rounded to the nearest integer for
    integer types); ``nearest`` keeps the block's first pixel. Raises `ConvertError` when the
    result would be empty.
    """
    import numpy as np

    height, width = data.shape[-2] // factor, data.shape[-1] // factor
    if height < 1 or width < 1:
        raise ConvertError(
            f"a {data.shape[-2]}×{data.shape[-1]} level cannot be made {factor} times smaller"
        )
    cropped = data[..., : height * factor, : width * factor]
    if method == "nearest" or data.dtype == np.bool_:
        return np.ascontiguousarray(cropped[..., ::factor, ::factor])
    if method != "mean":
        raise ValueError(f"unknown downsampling method {method!r}")
    blocks = cropped.reshape(*data.shape[:-2], height, factor, width, factor)
    mean: np.ndarray = blocks.mean(axis=(-3, -1), dtype=np.float64)
    if np.issubdtype(data.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(data.dtype)


# --- writing ------------------------------------------------------------------------------


def _zarr() -> Any:
    # Imported as Any: zarr and ome-zarr are an optional extra and ome-zarr has no types.
    return importlib.import_module("zarr")


def _ome_writer() -> Any:
    return importlib.import_module("ome_zarr.writer")


def _ome_format(version: str) -> Any:
    formats = importlib.import_module("ome_zarr.format")
    return formats.FormatV05() if version == "0.5" else formats.FormatV04()


def _array_kwargs(zarr_format: int, dimension_names: Sequence[str]) -> dict[str, Any]:
    if zarr_format == 2:
        # Nested chunk keys (0/0/0), as bioformats2raw writes them.
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": list(dimension_names)}


def _axes(names: str) -> list[dict[str, str]]:
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return [{"name": n, "type": kinds[n]} for n in names]


def _omero(data: np.ndarray, channel_names: Sequence[str], axis: int) -> dict[str, Any]:
    import numpy as np

    info: Any = np.iinfo(data.dtype) if np.issubdtype(data.dtype, np.integer) else None
    channels = []
    for index, label in enumerate(channel_names):
        plane = np.take(data, index, axis=axis)
        low, high = (plane.min().item(), plane.max().item()) if plane.size else (0, 0)
        channels.append(
            {
                "label": label,
                "color": "FFFFFF" if len(channel_names) == 1 else _COLORS[index % len(_COLORS)],
                "active": True,
                "coefficient": 1,
                "family": "linear",
                "inverted": False,
                "window": {
                    "start": low,
                    "end": high,
                    "min": int(info.min) if info is not None else low,
                    "max": int(info.max) if info is not None else high,
                },
            }
        )
    model = "color" if len(channel_names) > 1 else "greyscale"
    return {"channels": channels, "rdefs": {"model": model, "defaultT": 0, "defaultZ": 0}}


def write_image(
    group: Any,
    data: np.ndarray,
    channel_names: Sequence[str],
    options: ConvertOptions,
    *,
    name: str,
) -> int:
    """Write the 5-D (T, C, Z, Y, X) ``data`` as a multiscale image into the zarr ``group``;
    return the number of levels."""
    keep = "tczyx"
    if data.shape[0] == 1:
        keep = keep.replace("t", "")
    if data.shape[2] == 1:
        keep = keep.replace("z", "")
    squeeze = tuple(i for i, a in enumerate("tczyx") if a not in keep)
    image = data.reshape([s for i, s in enumerate(data.shape) if i not in squeeze])
    fmt = _ome_format(options.ngff_version)
    levels = level_count(
        image.shape[-2], image.shape[-1], options.resolutions, options.target_min_size
    )
    datasets: list[dict[str, Any]] = []
    level = image
    for index in range(levels):
        if index:
            level = downsample(level, 2, options.downsample)
        height, width = level.shape[-2:]
        chunks = (
            *([1] * (level.ndim - 2)),
            min(options.tile_height, height),
            min(options.tile_width, width),
        )
        array = group.create_array(
            str(index),
            shape=level.shape,
            dtype=level.dtype,
            chunks=chunks,
            **_array_kwargs(fmt.zarr_format, keep),
        )
        array[...] = level
        scale = [1.0] * (level.ndim - 2) + [float(2**index)] * 2
        datasets.append(
            {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    writer = _ome_writer()
    writer.write_multiscales_metadata(group, datasets, fmt=fmt, axes=_axes(keep), name=name)
    writer.add_metadata(group, {"omero": _omero(image, channel_names, keep.index("c"))}, fmt=fmt)
    return levels


@dataclass(frozen=True)
class ConvertResult:
    """What `convert` wrote: the layout, the image paths (relative to the output; '' = the
    root) and their level counts, in order."""

    layout: str
    images: list[str]
    levels: list[int]


def _prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConvertError(f"the output {output} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise ConvertError(f"the output {output} is not empty; pass --overwrite to replace it")
        for child in output.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    output.mkdir(parents=True, exist_ok=True)


def convert(input_path: Path, output: Path, options: ConvertOptions | None = None) -> ConvertResult:
    """Convert the TIFFs at ``input_path`` into the OME-Zarr folder ``output`` (see the module
    doc for every rule). Raises `ConvertError` or `UsageError`; nothing is half-checked:
    every file's place is known before anything is written."""
    options = options or ConvertOptions()
    found = discover(input_path, options.pattern)
    positions = sorted(
        {f.position for f in found.files},
        key=lambda p: (_row_key(p[0]), natural_key(p[1]), natural_key(p[2])),
    )
    layout = options.layout
    if layout == "auto":
        layout = "plate" if any(f.row or f.column for f in found.files) else "image"
    if layout == "image" and len(positions) > 1:
        raise ConvertError(
            f"the files are {len(positions)} fields or wells, e.g. {_describe(positions[0])} and "
            f"{_describe(positions[1])}; convert them as a plate (--layout plate) or one at a time"
        )
    name = options.name or _default_name(input_path)
    _prepare_output(output, options.overwrite)
    fmt = _ome_format(options.ngff_version)
    root = _zarr().open_group(str(output), mode="w", zarr_format=fmt.zarr_format)
    if layout == "image":
        data, channels = assemble(found.files, found.channel_names)
        levels = write_image(root, data, channels, options, name=name)
        return ConvertResult("image", [""], [levels])
    return _write_plate(root, found, positions, options, name=name)


def _describe(position: tuple[str | None, str | None, str | None]) -> str:
    row, column, field_ = position
    parts = [f"well {row or 'A'}{column or '1'}"] if row or column else []
    if field_ is not None:
        parts.append(f"field {field_}")
    return " ".join(parts) or "the image"


def _default_name(input_path: Path) -> str:
    path = input_path.parent if input_path.is_file() else input_path
    return path.name or "image"


def _write_plate(
    root: Any,
    found: Discovery,
    positions: Sequence[tuple[str | None, str | None, str | None]],
    options: ConvertOptions,
    *,
    name: str,
) -> ConvertResult:
    wells: dict[tuple[str, str], list[str | None]] = {}
    for row, column, field_ in positions:
        wells.setdefault((row or "A", column or "1"), []).append(field_)
    rows = sorted({r for r, _ in wells}, key=_row_key)
    columns = sorted({c for _, c in wells}, key=natural_key)
    for label in (*rows, *columns):
        if not _NAME.match(label):
            raise ConvertError(f"row/column name {label!r} is not only letters and digits")
    fmt = _ome_format(options.ngff_version)
    writer = _ome_writer()
    writer.write_plate_metadata(
        root,
        rows,
        columns,
        [f"{r}/{c}" for r, c in wells],
        fmt=fmt,
        field_count=max(len(f) for f in wells.values()),
        name=name,
    )
    images: list[str] = []
    levels: list[int] = []
    for (row, column), fields in wells.items():
        well = root.require_group(row).require_group(column)
        writer.write_well_metadata(well, [{"path": str(i)} for i in range(len(fields))], fmt=fmt)
        for index, field_ in enumerate(fields):
            files = [
                f
                for f in found.files
                if (f.row or "A", f.column or "1", f.field) == (row, column, field_)
            ]
            data, channels = assemble(files, found.channel_names)
            image_name = f"{row}{column}" + (f" field {field_}" if field_ is not None else "")
            group = well.require_group(str(index))
            levels.append(write_image(group, data, channels, options, name=image_name))
            images.append(f"{row}/{column}/{index}")
    return ConvertResult("plate", images, levels)


# --- adding levels to an existing OME-Zarr -----------------------------------------------


def _ome_attrs(group: Any) -> tuple[dict[str, Any], bool]:
    """(the NGFF attributes of ``group``, whether they sit under ``"ome"`` as in NGFF 0.5)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        return dict(ome), True
    return attrs, False


def image_groups(root: Any) -> list[str]:
    """Paths (relative to ``root``; '' = the root) of every multiscale image in an OME-Zarr
    image, plate or bioformats2raw output. Raises `ConvertError` for anything else."""
    attrs, _ = _ome_attrs(root)
    if "plate" in attrs:
        paths: list[str] = []
        for well in attrs["plate"].get("wells", []):
            well_attrs, _ = _ome_attrs(root[well["path"]])
            for image in well_attrs.get("well", {}).get("images", []):
                paths.append(f"{well['path']}/{image['path']}")
        return paths
    if "multiscales" in attrs:
        return [""]
    if "bioformats2raw.layout" in dict(root.attrs):
        series: list[str] = []
        if "OME" in root:
            series = [str(s) for s in _ome_attrs(root["OME"])[0].get("series", [])]
        if not series:
            index = 0
            while str(index) in root:
                series.append(str(index))
                index += 1
        return series
    raise ConvertError("it is not an OME-Zarr image, plate or bioformats2raw output")


def _shown(path: str) -> str:
    """An image path ('' = the root) as printed: relative to the OME-Zarr, "." for its root."""
    return path or "."


def _next_path(last: str, existing: Sequence[str]) -> str:
    match = re.fullmatch(r"(.*?)(\d+)", last)
    candidate = f"{match.group(1)}{int(match.group(2)) + 1}" if match else str(len(existing))
    while candidate in existing:
        candidate = f"{candidate}_"
    return candidate


def _add_levels_to_image(group: Any, levels: int, factor: int, method: str) -> None:
    attrs, namespaced = _ome_attrs(group)
    multiscales = attrs["multiscales"]
    datasets: list[dict[str, Any]] = multiscales[0]["datasets"]
    for _ in range(levels):
        last = datasets[-1]
        source = group[last["path"]]
        data = downsample(source[...], factor, method)
        new_path = _next_path(last["path"], [d["path"] for d in datasets])
        metadata = source.metadata
        kwargs: dict[str, Any] = {}
        if metadata.zarr_format == 2:
            kwargs["chunk_key_encoding"] = {
                "name": "v2",
                "separator": metadata.dimension_separator,
            }
        else:
            kwargs["chunk_key_encoding"] = metadata.chunk_key_encoding
            kwargs["dimension_names"] = metadata.dimension_names
            kwargs["serializer"] = source.serializer
        array = group.create_array(
            new_path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(min(c, s) for c, s in zip(source.chunks, data.shape, strict=True)),
            compressors=source.compressors,
            filters=source.filters,
            fill_value=source.fill_value,
            **kwargs,
        )
        array[...] = data
        transforms = []
        for transform in last.get("coordinateTransformations", []):
            transform = dict(transform)
            if transform.get("type") == "scale":
                scale = list(transform["scale"])
                scale[-2:] = [scale[-2] * factor, scale[-1] * factor]
                transform["scale"] = scale
            transforms.append(transform)
        entry: dict[str, Any] = {"path": new_path}
        if transforms:
            entry["coordinateTransformations"] = transforms
        datasets.append(entry)
    if namespaced:
        ome = dict(group.attrs)["ome"]
        ome["multiscales"] = multiscales
        group.attrs["ome"] = ome
    else:
        group.attrs["multiscales"] = multiscales


def add_levels(path: Path, levels: int = 1, *, factor: int = 2, method: str = "mean") -> list[str]:
    """Append ``levels`` levels, each ``factor`` times smaller in Y and X than the last, to
    every image of the OME-Zarr at ``path``; return the image paths changed ('' = the root).

    Each new level keeps the chunks (capped at its size), compression and fill value of the
    level before, and its scale transformation is that level's times ``factor`` in Y and X.
    Raises `ConvertError` when ``path`` is no OME-Zarr or a level would be smaller than 1 × 1
    (then no image is changed).
    """
    if not path.is_dir():
        raise ConvertError(f"{path} is not a folder")
    try:
        root = _zarr().open_group(str(path), mode="r+")
    except Exception as error:  # noqa: BLE001 - zarr raises several types for a non-zarr
        raise ConvertError(f"{path} is not a zarr group: {error}") from None
    try:
        paths = image_groups(root)
    except (KeyError, TypeError, AttributeError) as error:
        raise ConvertError(f"{path}: its metadata is not valid OME-Zarr: {error}") from None
    groups = [root[p] if p else root for p in paths]
    if not groups:
        raise ConvertError(f"{path} holds no image")
    for p, group in zip(paths, groups, strict=True):
        # Check every image first, so a level that cannot be made changes nothing.
        last = _ome_attrs(group)[0]["multiscales"][0]["datasets"][-1]["path"]
        height, width = group[last].shape[-2:]
        if height // factor**levels < 1 or width // factor**levels < 1:
            raise ConvertError(
                f"{path / p}: its last level is {height}×{width}, too small for {levels} more "
                f"level(s) {factor} times smaller each"
            )
    for group in groups:
        _add_levels_to_image(group, levels, factor, method)
    return paths


# --- command line -------------------------------------------------------------------------


def options_from(args: argparse.Namespace) -> ConvertOptions:
    """The `ConvertOptions` of parsed ``convert`` arguments."""
    return ConvertOptions(
        name=args.name,
        layout=args.layout,
        pattern=args.pattern,
        resolutions=args.resolutions,
        target_min_size=args.target_min_size,
        tile_width=args.tile_width,
        tile_height=args.tile_height,
        downsample=args.downsample,
        ngff_version=args.ngff_version,
        overwrite=args.overwrite,
    )


def check_convert_flags(flags: Iterable[str]) -> None:
    """Raise `UsageError` unless ``flags`` are valid ``convert`` options, a ``--pattern``
    included (the recipe checks a job's ``additional_flags`` so before anything runs)."""
    words = list(flags)
    if "-h" in words or "--help" in words:
        raise UsageError("--help is not a conversion option")
    args = build_parser().parse_args(["convert", "INPUT", "OUTPUT", *words])
    if args.pattern:
        compile_pattern(args.pattern)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (0 done, 1 failed, 2 wrong usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.command == "convert":
            result = convert(Path(args.input), Path(args.output), options_from(args))
            # Paths relative to OUTPUT, as a user reads them: "." for an image at OUTPUT itself.
            images = [_shown(path) for path in result.images]
            summary = {"layout": result.layout, "images": images, "levels": result.levels}
            print(f"{PROG}: wrote {args.output}: {json.dumps(summary)}")
        else:
            changed = add_levels(
                Path(args.zarr), args.levels, factor=args.factor, method=args.downsample
            )
            print(f"{PROG}: added {args.levels} level(s) to {len(changed)} image(s) in {args.zarr}")
    except _Exit as done:
        return done.status
    except UsageError as error:
        print(f"{parser.format_usage().rstrip()}\n{PROG}: error: {error}", file=sys.stderr)
        return 2
    except ConvertError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        print(
            f"{PROG}: {error.name or error} is missing: install the omezarr extra "
            "(pip install -e '.[omezarr]' in the ds checkout, or 'distributed-something[omezarr]')",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
