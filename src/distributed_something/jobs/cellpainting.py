"""Cell Painting job files, as Distributed-CellProfiler's ``run_batch_general.py`` makes them.

A `CellPaintingSpec` names a step of the Cell Painting workflow, the plates, the wells and
sites, and where things live in the bucket; `job` turns it into a DCP job file (the format
`jobs.parse` reads as ``"dcp"``) and `write_jobs` writes it. Everything here is pure except
the two ``write_*`` functions.

What each step does, as in DCP 2.2's ``run_batch_general.py``:

================== ======================= ============================ ======================
step               one task per            pipeline / LoadData CSV      output (+ structure)
================== ======================= ============================ ======================
zproj              plate × well × site     Zproj.cppipe /               images_projected
                                           load_data_unprojected.csv    (Metadata_Plate)
illum              plate                   illum.cppipe / load_data.csv illum
qc                 plate × well            qc.cppipe / load_data.csv    qc/…/results
qc_persite         plate × well × site     as qc                        as qc
assaydev           plate × well            assaydev.cppipe /            assaydev
                                           load_data_with_illum.csv
assaydev_persite   plate × well × site     as assaydev                  as assaydev
analysis           plate × well × site     analysis.cppipe /            analysis (Metadata_Plate/
                                           load_data_with_illum.csv     analysis/Plate-Well-Site)
================== ======================= ============================ ======================

Groups are ``"Metadata_Plate=P,Metadata_Well=A01,Metadata_Site=1"`` strings (only the keys the
step groups by), plate-major, wells row-major (A01, A02, … A24, B01, …), then sites.

One DCP job file has a single ``data_file`` for all its groups, while DCP keeps one LoadData
CSV per plate (``load_data_csv/<batch>/<plate>/<name>.csv``). So a spec with several plates
that reads LoadData CSVs needs one job file per plate: `job_files` plans them and
`write_jobs` writes them (``{plate}`` in the path is replaced by the plate, otherwise
``_<plate>`` is added to the file name). With batch files (``Batch_data_<step>.h5``) one file
serves every plate.

Differences from ``run_batch_general.py``, on purpose: nothing is sent to a queue (the job
file goes through ``ds submit``); values are checked before anything is written (a 96-well
plate has no row K, sites start at 1, a gallery path needs its dataset and source); explicit
wells are written with the same padding as generated ones; ``--rows``/``--columns`` select
within the plate format instead of being silently replaced by it; ``cpg`` is accepted as a
spelling of the ``gallery`` path style.

The command line (``ds jobs cellpainting``) is described by `ARGUMENTS` and turned into a
spec by `spec_from_options`; the command itself adds only the output path and ``--force``.
"""

from __future__ import annotations

import json
import posixpath
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from distributed_something.errors import InputError
from distributed_something.userfiles import write_user_file

__all__ = [
    "ARGUMENTS",
    "DEFAULT_SITES",
    "OPTION_NAMES",
    "STEPS",
    "Argument",
    "CellPaintingSpec",
    "PathStyle",
    "Step",
    "groups",
    "job",
    "job_files",
    "sites",
    "spec_from_options",
    "wells",
    "write_job",
    "write_jobs",
]

Step = Literal["zproj", "illum", "qc", "qc_persite", "assaydev", "assaydev_persite", "analysis"]
PathStyle = Literal["default", "gallery"]

#: The steps, in the order of the Cell Painting workflow.
STEPS: tuple[str, ...] = get_args(Step)

SOURCE = "argument"

_T = TypeVar("_T")

#: rows, columns of each supported plate format.
_LAYOUTS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24)}

#: DCP's default number of sites per well (``--sites 1,…,9``).
DEFAULT_SITES = 9

_PLATE = "Metadata_Plate"
_WELL = "Metadata_Well"
_SITE = "Metadata_Site"


@dataclass(frozen=True)
class _StepInfo:
    keys: tuple[str, ...]  # the Metadata keys one task groups by, in order
    pipeline: str
    data_file: str
    batch_file: str
    output: str  # key of the output folder in _paths()
    output_structure: str


_STEP_INFO: dict[str, _StepInfo] = {
    "zproj": _StepInfo(
        (_PLATE, _WELL, _SITE),
        "Zproj.cppipe",
        "load_data_unprojected.csv",
        "Batch_data_zproj.h5",
        "zproj",
        _PLATE,
    ),
    "illum": _StepInfo(
        (_PLATE,), "illum.cppipe", "load_data.csv", "Batch_data_illum.h5", "illum", ""
    ),
    "qc": _StepInfo((_PLATE, _WELL), "qc.cppipe", "load_data.csv", "Batch_data_qc.h5", "qc", ""),
    "qc_persite": _StepInfo(
        (_PLATE, _WELL, _SITE), "qc.cppipe", "load_data.csv", "Batch_data_qc.h5", "qc", ""
    ),
    "assaydev": _StepInfo(
        (_PLATE, _WELL),
        "assaydev.cppipe",
        "load_data_with_illum.csv",
        "Batch_data_assaydev.h5",
        "assaydev",
        "",
    ),
    "assaydev_persite": _StepInfo(
        (_PLATE, _WELL, _SITE),
        "assaydev.cppipe",
        "load_data_with_illum.csv",
        "Batch_data_assaydev.h5",
        "assaydev",
        "",
    ),
    "analysis": _StepInfo(
        (_PLATE, _WELL, _SITE),
        "analysis.cppipe",
        "load_data_with_illum.csv",
        "Batch_data_analysis.h5",
        "analysis",
        "Metadata_Plate/analysis/Metadata_Plate-Metadata_Well-Metadata_Site",
    ),
}

#: spec field → the command-line option users write (errors name the option).
OPTION_NAMES: dict[str, str] = {
    "step": "step",
    "project": "--project",
    "batch": "--batch",
    "plates": "--plates",
    "plate_format": "--plate-format",
    "rows": "--rows",
    "columns": "--columns",
    "wells": "--wells",
    "pad_wells": "--pad-wells",
    "exclude_wells": "--exclude-wells",
    "sites": "--sites",
    "path_style": "--path-style",
    "dataset": "--dataset",
    "source": "--source",
    "pipeline": "--pipeline",
    "pipeline_path": "--pipeline-path",
    "data_file": "--data-file",
    "data_file_path": "--data-file-path",
    "use_batch": "--use-batch",
    "batch_file": "--batch-file",
    "batch_file_path": "--batch-file-path",
    "input_path": "--input-path",
    "output_path": "--output-path",
    "output_structure": "--output-structure",
    "site_count": "--site-count",
}

_NAME_FIX = "use letters, digits, '-', '_' and '.' (no spaces or '/')"
_KEY_FIX = (
    "write a path relative to the bucket root, without spaces, '..' or a leading '/' "
    "(e.g. projects/MyProject/workspace/pipelines/Batch1)"
)

#: The fix for a value pydantic rejects, per field.
_FIXES: dict[str, str] = {
    "step": f"use one of {', '.join(STEPS)}",
    "project": "give --project NAME: the folder under projects/ in the bucket",
    "batch": "give --batch NAME: the batch folder, e.g. 2020_11_04_CPJUMP1",
    "plates": "give --plates P1,P2 (the plate names of the LoadData CSVs' Metadata_Plate)",
    "plate_format": "use --plate-format 96 or --plate-format 384",
    "rows": "give row letters, e.g. --rows A,B,C or --rows A-H",
    "columns": "give column numbers, e.g. --columns 1,2,3 or --columns 1-12",
    "wells": "give wells such as --wells A01,B07 (or A1,B7)",
    "pad_wells": "use --pad-wells (A01) or --no-pad-wells (A1)",
    "exclude_wells": "give wells such as --exclude-wells A01,P24",
    "sites": "give site numbers from 1, e.g. --sites 1-9 or --sites 1,2,5, or a count",
    "path_style": "use --path-style default or --path-style gallery",
    "dataset": "give --dataset NAME, e.g. cpg0016-jump",
    "source": "give --source NAME, e.g. source_4",
    "use_batch": "use --use-batch to read Batch_data_<step>.h5 files",
}


def _fail(field: str | None, problem: str, fix: str) -> NoReturn:
    raise InputError(SOURCE, OPTION_NAMES.get(field, field) if field else None, problem, fix)


class CellPaintingSpec(BaseModel):
    """What to make jobs for: one step over plates × wells × sites, and where files live.

    Constructing a spec checks everything and raises `InputError` (source ``"argument"``,
    field = the command-line option, e.g. ``--rows``) for the first problem; a spec that
    exists always makes valid job files (`job_files`). Values are normalised: rows
    upper-case, wells stored unpadded (``"B7"``; `wells` formats them), duplicates dropped
    (first kept), ``sites`` given as a count ``n`` stored as ``[1, …, n]``, path style
    ``"cpg"`` stored as ``"gallery"``, trailing ``/`` dropped from paths.

    - ``rows``/``columns`` select within ``plate_format`` (default: all of them); ``wells``
      lists wells explicitly instead (not together with rows/columns); ``exclude_wells`` are
      then removed. All must lie on the plate.
    - ``sites``: None means DCP's 1–9. Used only by the per-site steps.
    - ``path_style="default"`` needs ``project`` (``projects/<project>/…``);
      ``"gallery"`` needs ``dataset`` and ``source`` (``<dataset>/<source>/…``).
    - Overrides replace DCP's defaults: ``pipeline``/``data_file``/``batch_file`` are file
      names inside ``pipeline_path``/``data_file_path/<plate>``/``batch_file_path``.
      Batch-file mode (``use_batch``, implied by ``batch_file`` or ``batch_file_path``) uses
      ``batch_file_path/batch_file`` as both pipeline and data file and rejects the LoadData
      overrides.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Step
    batch: str
    plates: list[str]
    project: str | None = None
    plate_format: Literal[96, 384] = 384
    rows: list[str] | None = None
    columns: list[int] | None = None
    wells: list[str] | None = None
    pad_wells: bool = True
    exclude_wells: list[str] = []
    sites: list[int] | None = None
    path_style: PathStyle = "default"
    dataset: str | None = None
    source: str | None = None
    pipeline: str | None = None
    pipeline_path: str | None = None
    data_file: str | None = None
    data_file_path: str | None = None
    use_batch: bool = False
    batch_file: str | None = None
    batch_file_path: str | None = None
    input_path: str | None = None
    output_path: str | None = None
    output_structure: str | None = None

    # --- conversion of pydantic's errors ---------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _errors_as_input_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Our own checks raise InputError directly (pydantic lets it through); only type
        # errors found by pydantic itself arrive here.
        try:
            return handler(data)
        except ValidationError as error:
            raise _input_error(error) from None

    # --- per-field normalisation -----------------------------------------------------------

    @field_validator("path_style", mode="before")
    @classmethod
    def _cpg_is_gallery(cls, value: Any) -> Any:
        # run_batch_general.py spells the gallery layout "cpg".
        return "gallery" if value == "cpg" else value

    @field_validator("plate_format", mode="before")
    @classmethod
    def _plate_format_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("project", "batch", "dataset", "source")
    @classmethod
    def _folder_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_name(value, str(info.field_name))
        return value

    @field_validator("plates")
    @classmethod
    def _plate_names(cls, value: list[str]) -> list[str]:
        if not value:
            _fail("plates", "is empty: there are no plates", _FIXES["plates"])
        for plate in value:
            _check_name(plate, "plates")
            if "," in plate or "=" in plate:
                _fail(
                    "plates",
                    f"{plate!r} contains ',' or '=', which would break the group's "
                    "Metadata_Plate=…,Metadata_Well=… text",
                    "rename the plate (it must match Metadata_Plate in the LoadData CSV)",
                )
        return _unique(value)

    @field_validator("rows")
    @classmethod
    def _row_letters(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        rows = [row.strip().upper() for row in value]
        for row in rows:
            if len(row) != 1 or row not in string.ascii_uppercase:
                _fail("rows", f"{row!r} is not a row letter", _FIXES["rows"])
        return _unique(rows)

    @field_validator("columns")
    @classmethod
    def _column_numbers(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else _unique(value)

    @field_validator("wells", "exclude_wells")
    @classmethod
    def _well_names(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        return _unique(_parse_well(well, str(info.field_name)) for well in value)

    @field_validator("sites", mode="before")
    @classmethod
    def _site_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                _fail("sites", f"a count of {value} sites selects none", _FIXES["sites"])
            return list(range(1, value + 1))
        return value

    @field_validator("sites")
    @classmethod
    def _site_numbers(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            _fail("sites", "is empty: no sites are selected", _FIXES["sites"])
        for site in value:
            if site < 1:
                _fail("sites", f"site {site} does not exist (sites start at 1)", _FIXES["sites"])
        return _unique(value)

    @field_validator(
        "pipeline_path", "data_file_path", "batch_file_path", "input_path", "output_path"
    )
    @classmethod
    def _bucket_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_key(value, str(info.field_name))

    @field_validator("pipeline", "data_file", "batch_file")
    @classmethod
    def _file_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = _check_key(value, str(info.field_name))
        # DCP's worker picks the mode from the data file's ending.
        if info.field_name == "data_file" and not value.endswith(".csv"):
            _fail(
                "data_file",
                f"{value!r} is not a LoadData .csv file",
                "give the CSV's file name (e.g. load_data_with_illum.csv); for an .h5 batch "
                "file use --batch-file",
            )
        if info.field_name == "batch_file" and not value.endswith(".h5"):
            _fail(
                "batch_file",
                f"{value!r} is not an .h5 batch file (as CreateBatchFiles writes)",
                "give the batch file's name, e.g. Batch_data_analysis.h5",
            )
        return value

    @field_validator("output_structure")
    @classmethod
    def _structure_text(cls, value: str | None) -> str | None:
        # "" asks for DCP's own default: the Metadata values joined by "-".
        if not value:
            return value
        return _check_key(value, "output_structure")

    # --- checks across fields --------------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> CellPaintingSpec:
        self._check_layout()
        self._check_paths()
        self._check_batch_mode()
        self._check_output_structure()
        return self

    def _check_layout(self) -> None:
        n_rows, n_columns = _LAYOUTS[self.plate_format]
        letters = string.ascii_uppercase[:n_rows]
        layout = f"a {self.plate_format}-well plate (rows A–{letters[-1]}, columns 1–{n_columns})"
        other = 384 if self.plate_format == 96 else 96
        for row in self.rows or []:
            if row not in letters:
                _fail(
                    "rows",
                    f"row {row} is not on {layout}",
                    f"use rows A–{letters[-1]}, or --plate-format {other} if the plates are "
                    f"{other}-well",
                )
        for column in self.columns or []:
            if not 1 <= column <= n_columns:
                _fail(
                    "columns",
                    f"column {column} is not on {layout}",
                    f"use columns 1–{n_columns}, or --plate-format {other} if the plates are "
                    f"{other}-well",
                )
        for field in ("wells", "exclude_wells"):
            for well in getattr(self, field) or []:
                row, column = well[0], int(well[1:])
                if row not in letters or not 1 <= column <= n_columns:
                    _fail(
                        field,
                        f"well {well} is not on {layout}",
                        "list wells that exist on the plate, or change --plate-format",
                    )
        if self.wells is not None and (self.rows is not None or self.columns is not None):
            _fail(
                "wells",
                "was given together with --rows/--columns",
                "give either --wells or --rows/--columns, not both",
            )
        if not wells(self):
            _fail(
                "exclude_wells",
                "excludes every selected well: there is nothing to process",
                "exclude fewer wells, or select more",
            )

    def _check_paths(self) -> None:
        if self.path_style == "default":
            if self.project is None:
                _fail("project", "is required for --path-style default", _FIXES["project"])
            for field in ("dataset", "source"):
                if getattr(self, field) is not None:
                    _fail(
                        field,
                        "is only used with --path-style gallery",
                        f"drop {OPTION_NAMES[field]}, or add --path-style gallery",
                    )
        else:
            for field in ("dataset", "source"):
                if getattr(self, field) is None:
                    _fail(field, "is required for --path-style gallery", _FIXES[field])
            if self.project is not None:
                _fail(
                    "project",
                    "is not used with --path-style gallery (paths start <dataset>/<source>/)",
                    "drop --project and give --dataset and --source",
                )

    def _check_batch_mode(self) -> None:
        if not self.batch_mode:
            return
        for field in ("pipeline", "pipeline_path", "data_file", "data_file_path"):
            if getattr(self, field) is not None:
                _fail(
                    field,
                    "is not used with a batch file (the .h5 file holds the pipeline and the "
                    "image list)",
                    f"drop {OPTION_NAMES[field]}, or drop --use-batch/--batch-file/"
                    "--batch-file-path to use LoadData CSVs",
                )
        if self.path_style == "gallery" and self.batch_file_path is None:
            _fail(
                "batch_file_path",
                "is required with batch files and --path-style gallery (the gallery layout "
                "has no folder for them)",
                "give --batch-file-path: the bucket prefix holding Batch_data_<step>.h5",
            )

    def _check_output_structure(self) -> None:
        if self.output_structure is None:
            return
        keys = _STEP_INFO[self.step].keys
        for token in re.findall(r"Metadata_\w+", self.output_structure):
            if token not in keys:
                _fail(
                    "output_structure",
                    f"uses {token}, but {self.step} tasks are grouped by {', '.join(keys)} only "
                    f"(it would stay as the text {token!r} in the output path)",
                    f"use only {', '.join(keys)}",
                )

    @property
    def batch_mode(self) -> bool:
        """True when tasks read CreateBatchFiles ``.h5`` files instead of LoadData CSVs."""
        return self.use_batch or self.batch_file is not None or self.batch_file_path is not None


def _input_error(error: ValidationError) -> InputError:
    problems = error.errors(include_url=False)
    first = problems[0]
    loc = first["loc"]
    field = str(loc[0]) if loc else None
    if first["type"] == "extra_forbidden":
        known = ", ".join(CellPaintingSpec.model_fields)
        return InputError(SOURCE, field, "is not a Cell Painting option", f"use one of {known}")
    if first["type"] == "missing":
        problem = "is required"
    else:
        message = first["msg"]
        problem = f"{message[:1].lower()}{message[1:]} (got {first.get('input')!r})"
    fix = _FIXES.get(field or "", "correct the value")
    return InputError(SOURCE, OPTION_NAMES.get(field or "", field), problem, fix)


# --- value checks ---------------------------------------------------------------------------


def _unique(values: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(values))


def _check_name(value: str, field: str) -> None:
    if not value.strip():
        _fail(field, "is empty", _FIXES.get(field, _NAME_FIX))
    if value in {".", ".."} or re.search(r"[\s/\\]", value):
        _fail(field, f"{value!r} is not a usable folder or file name", _NAME_FIX)


def _check_key(value: str, field: str) -> str:
    """A path relative to the bucket root, without trailing slashes."""
    if value.startswith(("s3://", "S3://")):
        _fail(
            field,
            f"{value!r} is a URL; paths in a DCP job are relative to the bucket root",
            "drop the s3://bucket/ prefix",
        )
    if value.startswith("/"):
        _fail(
            field,
            f"{value!r} starts with '/'; paths in a DCP job are relative to the bucket root",
            _KEY_FIX,
        )
    key = value.rstrip("/")
    if not key:
        _fail(field, "is empty", _KEY_FIX)
    if re.search(r"\s", key):
        # DCP's worker splits its command line on spaces.
        _fail(field, f"{value!r} contains whitespace, which DCP's worker cannot pass", _KEY_FIX)
    if ".." in key.split("/") or "" in key.split("/"):
        _fail(field, f"{value!r} has an empty or '..' part", _KEY_FIX)
    return key


_WELL_TEXT = re.compile(r"([A-Za-z])0*([0-9]+)")


def _parse_well(text: str, field: str) -> str:
    """``"b07"`` → ``"B7"``; the plate-format check comes later."""
    match = _WELL_TEXT.fullmatch(text.strip())
    if match is None:
        _fail(field, f"{text!r} is not a well name", _FIXES[field])
    return f"{match.group(1).upper()}{int(match.group(2))}"


# --- layout and groups ----------------------------------------------------------------------


def _format_well(spec: CellPaintingSpec, row: str, column: int) -> str:
    return f"{row}{column:02d}" if spec.pad_wells else f"{row}{column}"


def wells(spec: CellPaintingSpec) -> list[str]:
    """The wells to process, formatted as the LoadData CSVs spell them.

    Row-major as DCP makes them (A01, A02, … A24, B01, …), limited to ``rows``/``columns``;
    or the explicit ``wells`` in the order given. ``exclude_wells`` are left out. ``A01``
    with ``pad_wells`` (DCP's default), ``A1`` without.
    """
    n_rows, n_columns = _LAYOUTS[spec.plate_format]
    if spec.wells is not None:
        chosen = [(well[0], int(well[1:])) for well in spec.wells]
    else:
        rows = set(spec.rows) if spec.rows is not None else None
        columns = set(spec.columns) if spec.columns is not None else None
        chosen = [
            (row, column)
            for row in string.ascii_uppercase[:n_rows]
            if rows is None or row in rows
            for column in range(1, n_columns + 1)
            if columns is None or column in columns
        ]
    excluded = {(well[0], int(well[1:])) for well in spec.exclude_wells}
    return [
        _format_well(spec, row, column) for row, column in chosen if (row, column) not in excluded
    ]


def sites(spec: CellPaintingSpec) -> list[int]:
    """The sites (fields of view) per well: ``spec.sites``, or DCP's default 1–9."""
    return list(spec.sites) if spec.sites is not None else list(range(1, DEFAULT_SITES + 1))


def groups(spec: CellPaintingSpec) -> list[str]:
    """The ``Metadata`` of every task, in DCP's order: plate, then well, then site.

    Only the keys the step groups by appear: ``Metadata_Plate=P`` for illum,
    ``Metadata_Plate=P,Metadata_Well=A01`` for qc and assaydev, and
    ``Metadata_Plate=P,Metadata_Well=A01,Metadata_Site=1`` for zproj, the ``_persite``
    steps and analysis. The strings are unique.
    """
    keys = _STEP_INFO[spec.step].keys
    the_wells, the_sites = wells(spec), sites(spec)
    result: list[str] = []
    for plate in spec.plates:
        if _WELL not in keys:
            result.append(f"{_PLATE}={plate}")
            continue
        for well in the_wells:
            if _SITE not in keys:
                result.append(f"{_PLATE}={plate},{_WELL}={well}")
                continue
            result.extend(f"{_PLATE}={plate},{_WELL}={well},{_SITE}={site}" for site in the_sites)
    return result


# --- paths and the job ----------------------------------------------------------------------


def _paths(spec: CellPaintingSpec) -> dict[str, str]:
    """DCP's default folders for the spec's path style (keys relative to the bucket root)."""
    batch = spec.batch
    if spec.path_style == "gallery":
        root = posixpath.join(str(spec.dataset), str(spec.source))
        images = posixpath.join(root, "images", batch)
        batch_files = ""  # the gallery has none: _check_batch_mode requires an override
    else:
        root = posixpath.join("projects", str(spec.project))
        images = posixpath.join(root, batch)
        batch_files = posixpath.join(root, "workspace", "batchfiles", batch)
    workspace = posixpath.join(root, "workspace")
    return {
        "pipelines": posixpath.join(workspace, "pipelines", batch),
        "load_data": posixpath.join(workspace, "load_data_csv", batch),
        "batch_files": batch_files,
        "input": posixpath.join(workspace, "qc", batch, "rules"),
        "zproj": posixpath.join(images, "images_projected"),
        "illum": posixpath.join(images, "illum"),
        "qc": posixpath.join(workspace, "qc", batch, "results"),
        "assaydev": posixpath.join(workspace, "assaydev", batch),
        "analysis": posixpath.join(workspace, "analysis", batch),
    }


def _per_plate(spec: CellPaintingSpec) -> bool:
    """True when the plates need separate job files (one LoadData CSV per plate)."""
    return not spec.batch_mode and len(spec.plates) > 1


def _describe(spec: CellPaintingSpec) -> str:
    keys = _STEP_INFO[spec.step].keys
    parts = [f"{len(spec.plates)} plate{'s' if len(spec.plates) != 1 else ''}"]
    if _WELL in keys:
        parts.append(f"{len(wells(spec))} wells")
    if _SITE in keys:
        parts.append(f"{len(sites(spec))} sites")
    return " × ".join(parts)


def job(spec: CellPaintingSpec) -> dict[str, Any]:
    """The DCP job file for the spec, as a JSON-ready dict.

    Keys: ``_comment`` (how it was made; dropped by every reader), ``pipeline``,
    ``data_file``, ``input``, ``output``, ``output_structure`` (``""`` means DCP's default,
    the Metadata values joined by ``-``) and ``groups`` = ``[{"Metadata": …}]`` from `groups`.
    `jobs.parse.parse_job_text` reads it as format ``"dcp"`` with one task per group.

    Raises `InputError` (field ``--plates``) when the spec has several plates that read
    LoadData CSVs: each plate has its own CSV but a job file has one ``data_file``; use
    `job_files` / `write_jobs`, which make one file per plate.
    """
    if _per_plate(spec):
        _fail(
            "plates",
            f"{len(spec.plates)} plates each read their own LoadData CSV, but one DCP job file "
            "has a single data_file",
            "write one job file per plate (put {plate} in the output file name), or use "
            "--use-batch with an .h5 batch file",
        )
    info = _STEP_INFO[spec.step]
    paths = _paths(spec)
    if spec.batch_mode:
        batch_file = posixpath.join(
            spec.batch_file_path or paths["batch_files"], spec.batch_file or info.batch_file
        )
        pipeline = data_file = batch_file
    else:
        pipeline = posixpath.join(
            spec.pipeline_path or paths["pipelines"], spec.pipeline or info.pipeline
        )
        data_file = posixpath.join(
            spec.data_file_path or paths["load_data"],
            spec.plates[0],
            spec.data_file or info.data_file,
        )
    output_structure = (
        spec.output_structure if spec.output_structure is not None else info.output_structure
    )
    return {
        "_comment": (
            f"Made by `ds jobs cellpainting {spec.step}`: {_describe(spec)}. Paths are "
            "relative to the bucket root."
        ),
        "pipeline": pipeline,
        "data_file": data_file,
        "input": spec.input_path or paths["input"],
        "output": spec.output_path or paths[info.output],
        "output_structure": output_structure,
        "groups": [{"Metadata": metadata} for metadata in groups(spec)],
    }


_PLATE_FIELD = "{plate}"


def job_files(spec: CellPaintingSpec, path: Path) -> dict[Path, dict[str, Any]]:
    """The job files to write for the spec: file path → `job` of that file, in plate order.

    One file at ``path`` when a single file serves every plate (one plate, or batch files).
    Otherwise, and whenever ``path`` contains ``{plate}``, one file per plate: ``{plate}``
    is replaced by the plate name, or, when absent, ``_<plate>`` is added before the suffix
    (``analysis.json`` → ``analysis_Plate1.json``).
    """
    if _PLATE_FIELD not in str(path) and not _per_plate(spec):
        return {path: job(spec)}
    files: dict[Path, dict[str, Any]] = {}
    for plate in spec.plates:
        if _PLATE_FIELD in str(path):
            target = Path(str(path).replace(_PLATE_FIELD, plate))
        else:
            target = path.with_name(f"{path.stem}_{plate}{path.suffix}")
        files[target] = job(spec.model_copy(update={"plates": [plate]}))
    return files


def write_job(spec: CellPaintingSpec, path: Path, *, force: bool = False) -> Path:
    """Write the spec's single job file (`job`) to ``path``, used as given, and return it.

    Raises `InputError` when the spec needs one file per plate (as `job` does; `write_jobs`
    handles that case), and for an existing file or an unwritable folder as `write_jobs`.
    """
    content = job(spec)
    _refuse_existing([path], force)
    write_user_file(path, _json_text(content))
    return path


def write_jobs(spec: CellPaintingSpec, path: Path, *, force: bool = False) -> list[Path]:
    """Write every file of `job_files` and return their paths, in plate order.

    Nothing is written when any target exists and ``force`` is false (`InputError` naming
    that file, fix ``--force``). Missing folders are created. Each file is written
    atomically (a temporary file renamed into place), as indented JSON with one group per
    line.
    A folder that cannot be written is an `InputError` naming the file.
    """
    files = job_files(spec, path)
    _refuse_existing(list(files), force)
    for target, content in files.items():
        write_user_file(target, _json_text(content))
    return list(files)


def _json_text(content: dict[str, Any]) -> str:
    # Indented, but one group per line: a 384-well plate × 9 sites stays 3,456 lines that
    # read like DCP's example job files.
    def text(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    shared = [f"  {text(key)}: {text(value)}," for key, value in content.items() if key != "groups"]
    elements = ",\n".join(f"    {text(group)}" for group in content["groups"])
    return "{\n" + "\n".join(shared) + '\n  "groups": [\n' + elements + "\n  ]\n}\n"


def _refuse_existing(targets: list[Path], force: bool) -> None:
    if force:
        return
    for target in targets:
        if target.exists():
            raise InputError(
                str(target),
                None,
                "the file already exists",
                "pass --force to overwrite it, or choose another output path",
            )


# --- the command line -----------------------------------------------------------------------


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
            values[name] = _number(str(value).strip(), "--plate-format", _FIXES["plate_format"])
        else:
            values[name] = value
    if "site_count" in values:
        count = values.pop("site_count")
        if "sites" in values:
            _fail("sites", "was given with --site-count", "give either --sites or --site-count")
        if count < 1:
            _fail(
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
            low = _number(first.strip(), option, _FIXES[field])
            high = _number(last.strip(), option, _FIXES[field])
            if high < low:
                _fail(field, f"the range {item!r} runs backwards", f"write it as {high}-{low}")
            result.extend(range(low, high + 1))
        else:
            result.append(_number(item, option, _FIXES[field]))
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
            _fail("rows", f"{item!r} is not a range of row letters", _FIXES["rows"])
        if last < first:
            _fail("rows", f"the range {item!r} runs backwards", f"write it as {last}-{first}")
        result.extend(letters[letters.index(first) : letters.index(last) + 1])
    return result
