"""The Cell Painting job spec: the steps, what each makes, and the checked values of a
`CellPaintingSpec` (one error per wrong value, naming the command-line option)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
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

Step = Literal["zproj", "illum", "qc", "qc_persite", "assaydev", "assaydev_persite", "analysis"]
PathStyle = Literal["default", "gallery"]

#: The steps, in the order of the Cell Painting workflow.
STEPS: tuple[str, ...] = get_args(Step)

SOURCE = "argument"

_T = TypeVar("_T")

#: rows, columns of each supported plate format.
LAYOUTS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24)}

#: DCP's default number of sites per well (``--sites 1,…,9``).
DEFAULT_SITES = 9

PLATE_KEY = "Metadata_Plate"
WELL_KEY = "Metadata_Well"
SITE_KEY = "Metadata_Site"


@dataclass(frozen=True)
class StepInfo:
    """What one step makes: its groups' keys, files and output."""

    keys: tuple[str, ...]  # the Metadata keys one task groups by, in order
    pipeline: str
    data_file: str
    batch_file: str
    output: str  # key of the output folder in _paths()
    output_structure: str


STEP_INFO: dict[str, StepInfo] = {
    "zproj": StepInfo(
        (PLATE_KEY, WELL_KEY, SITE_KEY),
        "Zproj.cppipe",
        "load_data_unprojected.csv",
        "Batch_data_zproj.h5",
        "zproj",
        PLATE_KEY,
    ),
    "illum": StepInfo(
        (PLATE_KEY,), "illum.cppipe", "load_data.csv", "Batch_data_illum.h5", "illum", ""
    ),
    "qc": StepInfo(
        (PLATE_KEY, WELL_KEY), "qc.cppipe", "load_data.csv", "Batch_data_qc.h5", "qc", ""
    ),
    "qc_persite": StepInfo(
        (PLATE_KEY, WELL_KEY, SITE_KEY), "qc.cppipe", "load_data.csv", "Batch_data_qc.h5", "qc", ""
    ),
    "assaydev": StepInfo(
        (PLATE_KEY, WELL_KEY),
        "assaydev.cppipe",
        "load_data_with_illum.csv",
        "Batch_data_assaydev.h5",
        "assaydev",
        "",
    ),
    "assaydev_persite": StepInfo(
        (PLATE_KEY, WELL_KEY, SITE_KEY),
        "assaydev.cppipe",
        "load_data_with_illum.csv",
        "Batch_data_assaydev.h5",
        "assaydev",
        "",
    ),
    "analysis": StepInfo(
        (PLATE_KEY, WELL_KEY, SITE_KEY),
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
FIXES: dict[str, str] = {
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


def fail(field: str | None, problem: str, fix: str) -> NoReturn:
    """Raise the `InputError` for spec field ``field``, named as its command-line option."""
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
            fail("plates", "is empty: there are no plates", FIXES["plates"])
        for plate in value:
            _check_name(plate, "plates")
            if "," in plate or "=" in plate:
                fail(
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
                fail("rows", f"{row!r} is not a row letter", FIXES["rows"])
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
                fail("sites", f"a count of {value} sites selects none", FIXES["sites"])
            return list(range(1, value + 1))
        return value

    @field_validator("sites")
    @classmethod
    def _site_numbers(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            fail("sites", "is empty: no sites are selected", FIXES["sites"])
        for site in value:
            if site < 1:
                fail("sites", f"site {site} does not exist (sites start at 1)", FIXES["sites"])
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
            fail(
                "data_file",
                f"{value!r} is not a LoadData .csv file",
                "give the CSV's file name (e.g. load_data_with_illum.csv); for an .h5 batch "
                "file use --batch-file",
            )
        if info.field_name == "batch_file" and not value.endswith(".h5"):
            fail(
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
        n_rows, n_columns = LAYOUTS[self.plate_format]
        letters = string.ascii_uppercase[:n_rows]
        layout = f"a {self.plate_format}-well plate (rows A–{letters[-1]}, columns 1–{n_columns})"
        other = 384 if self.plate_format == 96 else 96
        for row in self.rows or []:
            if row not in letters:
                fail(
                    "rows",
                    f"row {row} is not on {layout}",
                    f"use rows A–{letters[-1]}, or --plate-format {other} if the plates are "
                    f"{other}-well",
                )
        for column in self.columns or []:
            if not 1 <= column <= n_columns:
                fail(
                    "columns",
                    f"column {column} is not on {layout}",
                    f"use columns 1–{n_columns}, or --plate-format {other} if the plates are "
                    f"{other}-well",
                )
        for field in ("wells", "exclude_wells"):
            for well in getattr(self, field) or []:
                row, column = well[0], int(well[1:])
                if row not in letters or not 1 <= column <= n_columns:
                    fail(
                        field,
                        f"well {well} is not on {layout}",
                        "list wells that exist on the plate, or change --plate-format",
                    )
        if self.wells is not None and (self.rows is not None or self.columns is not None):
            fail(
                "wells",
                "was given together with --rows/--columns",
                "give either --wells or --rows/--columns, not both",
            )
        from distributed_something.jobs.cellpainting.plate import wells  # it reads this spec

        if not wells(self):
            fail(
                "exclude_wells",
                "excludes every selected well: there is nothing to process",
                "exclude fewer wells, or select more",
            )

    def _check_paths(self) -> None:
        if self.path_style == "default":
            if self.project is None:
                fail("project", "is required for --path-style default", FIXES["project"])
            for field in ("dataset", "source"):
                if getattr(self, field) is not None:
                    fail(
                        field,
                        "is only used with --path-style gallery",
                        f"drop {OPTION_NAMES[field]}, or add --path-style gallery",
                    )
        else:
            for field in ("dataset", "source"):
                if getattr(self, field) is None:
                    fail(field, "is required for --path-style gallery", FIXES[field])
            if self.project is not None:
                fail(
                    "project",
                    "is not used with --path-style gallery (paths start <dataset>/<source>/)",
                    "drop --project and give --dataset and --source",
                )

    def _check_batch_mode(self) -> None:
        if not self.batch_mode:
            return
        for field in ("pipeline", "pipeline_path", "data_file", "data_file_path"):
            if getattr(self, field) is not None:
                fail(
                    field,
                    "is not used with a batch file (the .h5 file holds the pipeline and the "
                    "image list)",
                    f"drop {OPTION_NAMES[field]}, or drop --use-batch/--batch-file/"
                    "--batch-file-path to use LoadData CSVs",
                )
        if self.path_style == "gallery" and self.batch_file_path is None:
            fail(
                "batch_file_path",
                "is required with batch files and --path-style gallery (the gallery layout "
                "has no folder for them)",
                "give --batch-file-path: the bucket prefix holding Batch_data_<step>.h5",
            )

    def _check_output_structure(self) -> None:
        if self.output_structure is None:
            return
        keys = STEP_INFO[self.step].keys
        for token in re.findall(r"Metadata_\w+", self.output_structure):
            if token not in keys:
                fail(
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
    fix = FIXES.get(field or "", "correct the value")
    return InputError(SOURCE, OPTION_NAMES.get(field or "", field), problem, fix)


# --- value checks ---------------------------------------------------------------------------


def _unique(values: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(values))


def _check_name(value: str, field: str) -> None:
    if not value.strip():
        fail(field, "is empty", FIXES.get(field, _NAME_FIX))
    if value in {".", ".."} or re.search(r"[\s/\\]", value):
        fail(field, f"{value!r} is not a usable folder or file name", _NAME_FIX)


def _check_key(value: str, field: str) -> str:
    """A path relative to the bucket root, without trailing slashes."""
    if value.startswith(("s3://", "S3://")):
        fail(
            field,
            f"{value!r} is a URL; paths in a DCP job are relative to the bucket root",
            "drop the s3://bucket/ prefix",
        )
    if value.startswith("/"):
        fail(
            field,
            f"{value!r} starts with '/'; paths in a DCP job are relative to the bucket root",
            _KEY_FIX,
        )
    key = value.rstrip("/")
    if not key:
        fail(field, "is empty", _KEY_FIX)
    if re.search(r"\s", key):
        # DCP's worker splits its command line on spaces.
        fail(field, f"{value!r} contains whitespace, which DCP's worker cannot pass", _KEY_FIX)
    if ".." in key.split("/") or "" in key.split("/"):
        fail(field, f"{value!r} has an empty or '..' part", _KEY_FIX)
    return key


_WELL_TEXT = re.compile(r"([A-Za-z])0*([0-9]+)")


def _parse_well(text: str, field: str) -> str:
    """``"b07"`` → ``"B7"``; the plate-format check comes later."""
    match = _WELL_TEXT.fullmatch(text.strip())
    if match is None:
        fail(field, f"{text!r} is not a well name", FIXES[field])
    return f"{match.group(1).upper()}{int(match.group(2))}"
