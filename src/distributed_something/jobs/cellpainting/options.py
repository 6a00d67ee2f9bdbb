"""The command line of ``ds jobs cellpainting``: its option table (`ARGUMENTS`) and the
spec the options give (`spec_from_options`)."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from distributed_something.errors import InputError
from distributed_something.jobs.cellpainting.spec import (
    FIXES,
    OPTION_NAMES,
    SOURCE,
    STEPS,
    CellPaintingSpec,
    fail,
)


@dataclass(frozen=True)
class Argument:
    """One command-line parameter of ``ds jobs cellpainting``.

    ``name`` is the key `spec_from_options` expects (the click parameter name);
    ``declaration`` is what the user types: ``"step"`` for the positional argument,
    ``"--plates"`` for an option, ``"--pad-wells/--no-pad-wells"`` for an on/off flag.
    ``kind`` is ``"argument"``, ``"option"`` (takes text) or ``"flag"`` (boolean).
    ``multiple`` options may be repeated; each value may also hold a comma-separated list
    and, for rows, columns and sites, ranges such as ``A-H`` or ``1-9``. ``choices`` (when not
    empty) are the accepted texts. ``default`` is what click should pass when the user gives
    nothing (None / empty tuple = the spec's default).
    """

    name: str
    declaration: str
    kind: Literal["argument", "option", "flag"]
    help: str
    default: Any = None
    multiple: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None


#: The parameters of ``ds jobs cellpainting`` in help order. The command adds its own
#: output path and ``--force``; all values are passed to `spec_from_options` as click gives
#: them (text, tuples of text for ``multiple``, booleans for flags).
ARGUMENTS: tuple[Argument, ...] = (
    Argument("step", "step", "argument", "the Cell Painting step", choices=STEPS),
    Argument(
        "plates",
        "--plates",
        "option",
        "plate names (Metadata_Plate), comma-separated or repeated",
        multiple=True,
        metavar="P1,P2",
    ),
    Argument("batch", "--batch", "option", "batch name, e.g. 2020_11_04_CPJUMP1", metavar="NAME"),
    Argument(
        "project",
        "--project",
        "option",
        "project folder (projects/<project>/…); default path style only",
        metavar="NAME",
    ),
    Argument(
        "path_style",
        "--path-style",
        "option",
        "bucket layout: default (projects/<project>/…) or gallery "
        "(<dataset>/<source>/…, the Cell Painting Gallery's); cpg = gallery",
        choices=("default", "gallery", "cpg"),
    ),
    Argument(
        "dataset", "--dataset", "option", "gallery dataset, e.g. cpg0016-jump", metavar="NAME"
    ),
    Argument("source", "--source", "option", "gallery source, e.g. source_4", metavar="NAME"),
    Argument(
        "plate_format",
        "--plate-format",
        "option",
        "wells per plate [default: 384]",
        choices=("96", "384"),
    ),
    Argument(
        "rows",
        "--rows",
        "option",
        "rows to process, e.g. A,B or A-H [default: all]",
        multiple=True,
        metavar="A-H",
    ),
    Argument(
        "columns",
        "--columns",
        "option",
        "columns to process, e.g. 1,2 or 1-12 [default: all]",
        multiple=True,
        metavar="1-12",
    ),
    Argument(
        "wells",
        "--wells",
        "option",
        "explicit wells instead of rows × columns, e.g. A01,B07",
        multiple=True,
        metavar="A01,B07",
    ),
    Argument(
        "exclude_wells",
        "--exclude-wells",
        "option",
        "wells to leave out, e.g. A01,P24",
        multiple=True,
        metavar="A01,P24",
    ),
    Argument(
        "pad_wells",
        "--pad-wells/--no-pad-wells",
        "flag",
        "write wells as A01 (default) or A1, as the LoadData CSVs do",
        default=True,
    ),
    Argument(
        "sites",
        "--sites",
        "option",
        "sites per well, e.g. 1-9 or 1,2,5 [default: 1-9]; per-site steps only",
        multiple=True,
        metavar="1-9",
    ),
    Argument(
        "site_count",
        "--site-count",
        "option",
        "number of sites per well (sites 1..N); instead of --sites",
        metavar="N",
    ),
    Argument(
        "pipeline",
        "--pipeline",
        "option",
        "pipeline file name [default: the step's, e.g. analysis.cppipe]",
        metavar="FILE",
    ),
    Argument(
        "pipeline_path",
        "--pipeline-path",
        "option",
        "folder of the pipelines [default: <root>/workspace/pipelines/<batch>]",
        metavar="PATH",
    ),
    Argument(
        "data_file",
        "--data-file",
        "option",
        "LoadData CSV file name [default: the step's, e.g. load_data_with_illum.csv]",
        metavar="FILE",
    ),
    Argument(
        "data_file_path",
        "--data-file-path",
        "option",
        "folder of the per-plate CSV folders [default: <root>/workspace/load_data_csv/<batch>]",
        metavar="PATH",
    ),
    Argument(
        "use_batch",
        "--use-batch",
        "flag",
        "read CreateBatchFiles .h5 files instead of a pipeline and LoadData CSVs",
        default=False,
    ),
    Argument(
        "batch_file",
        "--batch-file",
        "option",
        "batch file name [default: Batch_data_<step>.h5]; implies --use-batch",
        metavar="FILE",
    ),
    Argument(
        "batch_file_path",
        "--batch-file-path",
        "option",
        "folder of the batch files [default: <root>/workspace/batchfiles/<batch>]; "
        "implies --use-batch",
        metavar="PATH",
    ),
    Argument(
        "input_path",
        "--input-path",
        "option",
        "CellProfiler's input folder [default: <root>/workspace/qc/<batch>/rules]",
        metavar="PATH",
    ),
    Argument(
        "output_path",
        "--output-path",
        "option",
        "output folder in the bucket [default: the step's, e.g. <root>/workspace/analysis/<batch>]",
        metavar="PATH",
    ),
    Argument(
        "output_structure",
        "--output-structure",
        "option",
        "output sub-folders from Metadata, e.g. Metadata_Plate/Metadata_Well [default: the step's]",
        metavar="TEXT",
    ),
)

_LIST_OPTIONS = {"plates", "rows", "columns", "wells", "exclude_wells", "sites"}


def spec_from_options(options: Mapping[str, Any]) -> CellPaintingSpec:
    """Build the spec from command-line values keyed by `Argument.name`.

    A value of None or an empty tuple/list means "not given" (the spec's default). Values of
    ``multiple`` options are split on commas (empty parts ignored); rows, columns and sites
    accept ranges (``A-H``, ``1-12``, ``1-9``); numbers may be given as text. Every bad value
    raises `InputError` (source ``"argument"``, field = the option). A key that is not an
    `Argument.name` is a programming error: ``KeyError``.
    """
    known = {argument.name for argument in ARGUMENTS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise KeyError(f"not options of ds jobs cellpainting: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or (isinstance(value, tuple | list) and not value):
            continue
        if name in _LIST_OPTIONS:
            items = _split(value)
            if name in {"columns", "sites"}:
                values[name] = _numbers(items, name)
            elif name == "rows":
                values[name] = _letters(items)
            else:
                values[name] = items
        elif name == "site_count":
            values["site_count"] = _number(
                str(value).strip(), "--site-count", "give e.g. --site-count 9"
            )
        elif name == "plate_format":
            values[name] = _number(str(value).strip(), "--plate-format", FIXES["plate_format"])
        else:
            values[name] = value
    if "site_count" in values:
        count = values.pop("site_count")
        if "sites" in values:
            fail("sites", "was given with --site-count", "give either --sites or --site-count")
        if count < 1:
            fail(
                "site_count",
                f"a count of {count} sites selects none",
                "give --site-count 1 or more",
            )
        values["sites"] = count
    return CellPaintingSpec(**values)


def _split(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str | int) else list(value)
    return [part.strip() for text in texts for part in str(text).split(",") if part.strip()]


def _number(text: str, option: str, fix: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InputError(SOURCE, option, f"{text!r} is not a whole number", fix)
    return int(text)


def _numbers(items: list[str], field: str) -> list[int]:
    option = OPTION_NAMES[field]
    result: list[int] = []
    for item in items:
        first, dash, last = item.partition("-")
        if dash and first:
            low = _number(first.strip(), option, FIXES[field])
            high = _number(last.strip(), option, FIXES[field])
            if high < low:
                fail(field, f"the range {item!r} runs backwards", f"write it as {high}-{low}")
            result.extend(range(low, high + 1))
        else:
            result.append(_number(item, option, FIXES[field]))
    return result


def _letters(items: list[str]) -> list[str]:
    result: list[str] = []
    for item in items:
        first, dash, last = item.upper().partition("-")
        if not dash:
            result.append(item)
            continue
        first, last = first.strip(), last.strip()
        letters = string.ascii_uppercase
        if len(first) != 1 or len(last) != 1 or first not in letters or last not in letters:
            fail("rows", f"{item!r} is not a range of row letters", FIXES["rows"])
        if last < first:
            fail("rows", f"the range {item!r} runs backwards", f"write it as {last}-{first}")
        result.extend(letters[letters.index(first) : letters.index(last) + 1])
    return result
