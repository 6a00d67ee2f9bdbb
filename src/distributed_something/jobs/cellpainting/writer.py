"""Writing a `CellPaintingSpec` as DCP job files: the paths, the job, one file per plate
when LoadData CSVs are read."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

from distributed_something.errors import InputError
from distributed_something.jobs.cellpainting.plate import groups, sites, wells
from distributed_something.jobs.cellpainting.spec import (
    SITE_KEY,
    STEP_INFO,
    WELL_KEY,
    CellPaintingSpec,
    fail,
)
from distributed_something.userfiles import write_user_file


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
    keys = STEP_INFO[spec.step].keys
    parts = [f"{len(spec.plates)} plate{'s' if len(spec.plates) != 1 else ''}"]
    if WELL_KEY in keys:
        parts.append(f"{len(wells(spec))} wells")
    if SITE_KEY in keys:
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
        fail(
            "plates",
            f"{len(spec.plates)} plates each read their own LoadData CSV, but one DCP job file "
            "has a single data_file",
            "write one job file per plate (put {plate} in the output file name), or use "
            "--use-batch with an .h5 batch file",
        )
    info = STEP_INFO[spec.step]
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
