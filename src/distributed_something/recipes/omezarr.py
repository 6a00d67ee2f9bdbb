"""The `omezarr` recipe: Distributed-OmeZarrCreator (DOZC) job files → OME-Zarr, one per plate.

A DOZC job file has shared keys and ``plates``; each plate is one task whose message is the
shared keys plus ``"plate": <element>``, exactly as DOZC's run.py sent it::

    {
      "input_bucket": "my-images",   "input_location": "projects/P/B/images/",
      "path_to_metadata": "Images/Index.idx.xml",
      "output_bucket": "my-results", "output_location": "projects/P/B/images_zarr/",
      "upload_flags": false, "resolutions": false, "tile_width": false, "tile_height": false,
      "target-min-size": false, "additional_flags": false,
      "plates": ["PLATEA", "PLATEB"]
    }

For each plate, as DOZC's worker did:

- **inputs**: everything in ``input_bucket`` under ``input_location/<plate>/`` (DOZC's
  ``aws s3 cp --recursive``), staged to ``{input_dir}/<plate>/``. A listing is the only way to
  know those files, so they come from the optional ``listed_inputs`` hook, which the worker
  calls with a storage lister after planning. An explicit list avoids the listing:
  ``"files": [...]`` as a shared key or in a plate written as an object, ``{"name": "PLATEA",
  "files": [...]}``; names are relative to the plate's folder and may use ``{plate}``.
- **command**: the engine (``recipe.engine``) converts ``{input_dir}/<plate>/<path_to_metadata>``
  into ``{output_dir}``:

  - ``bioformats2raw`` (default on AWS; the bioformats2raw image):
    ``bioformats2raw INPUT OUTPUT --overwrite [--resolutions N] [--tile_width W]
    [--tile_height H] [--target-min-size S] [additional_flags…]`` — ``--overwrite`` because
    the worker has created the (empty) output folder already;
  - ``builtin`` (default locally): our converter on tifffile + zarr + ome-zarr,
    ``{python} -m distributed_something.recipes.omezarr_convert convert INPUT OUTPUT --name
    <plate> [--resolutions N] [--tile-width W] [--tile-height H] [--target-min-size S]
    [additional_flags…]``; INPUT may also be the plate folder itself (``path_to_metadata``
    false). Its ``additional_flags`` are its own options (e.g. ``--layout plate --pattern …``).
- **outputs**: ``output_location/<plate>.ome.zarr/…`` in ``output_bucket`` (DOZC's layout),
  uploaded only after `check_success` found valid OME-Zarr metadata there.

Values: buckets are names (false or "" = the config's source / destination bucket); locations
and ``path_to_metadata`` are relative keys; ``resolutions``, ``tile_width``, ``tile_height``
and ``target-min-size`` are whole numbers ≥ 1 or false; ``upload_flags`` and
``additional_flags`` are strings or false. ``upload_flags`` are applied by ds to every upload
of the run, so on AWS they must equal the config's ``storage.upload_flags``. A plate written
as an object may also override any shared key for that plate.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from distributed_something.backends import backend_kind
from distributed_something.config.model import Config
from distributed_something.config.upload_flags import upload_args_from_flags
from distributed_something.errors import InputError
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.jobs.model import Task
from distributed_something.keys import check_key, join_key
from distributed_something.recipes.base import (
    Input,
    TaskPlan,
    ToolProblem,
    Workdir,
    program_problem,
)
from distributed_something.templates import MissingField, TemplateError, render
from distributed_something.worker.causes import command_ended

__all__ = [
    "BIOFORMATS2RAW",
    "BUILTIN",
    "CONVERTER_MODULE",
    "ENGINES",
    "REQUIRED_KEYS",
    "DozcPlate",
    "Lister",
    "OmeZarrRecipe",
    "bioformats2raw_argv",
    "builtin_argv",
    "engine_for",
    "omezarr_problem",
    "read_plate",
    "split_flags",
]

BUILTIN = "builtin"
BIOFORMATS2RAW = "bioformats2raw"
ENGINES = (BUILTIN, BIOFORMATS2RAW)
CONVERTER_MODULE = "distributed_something.recipes.omezarr_convert"
#: What the builtin converter imports beyond ds itself (the omezarr extra).
_CONVERTER_PACKAGES = ("numpy", "tifffile", "zarr", "ome_zarr")

#: Keys every DOZC task must have (DOZC's worker read each of them; a missing one failed
#: every attempt). Their values may be false where the rules above say so.
REQUIRED_KEYS = (
    "input_bucket",
    "input_location",
    "path_to_metadata",
    "output_bucket",
    "output_location",
)
#: Settings that may be left out (false: not set).
OPTIONAL_KEYS = (
    "upload_flags",
    "resolutions",
    "tile_width",
    "tile_height",
    "target-min-size",
    "additional_flags",
)
#: bioformats2raw's flag for each numeric key, spelt as DOZC's worker passed them.
_B2R_FLAGS = {
    "resolutions": "--resolutions",
    "tile_width": "--tile_width",
    "tile_height": "--tile_height",
    "target-min-size": "--target-min-size",
}
_BUILTIN_FLAGS = {
    "resolutions": "--resolutions",
    "tile_width": "--tile-width",
    "tile_height": "--tile-height",
    "target-min-size": "--target-min-size",
}
# Bucket names become folder names locally: no '/', no '..', nothing hidden.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
#: Required keys whose value may be false (the config's bucket; no metadata file).
_MAY_BE_FALSE = ("input_bucket", "output_bucket", "path_to_metadata")
_JOB = "job file"
_CONFIG = "config"
_FALSE_FIX = "(write false to leave it unset)"


def _normal(key: str) -> str:
    return key.lower().replace("-", "_")


@dataclass(frozen=True)
class DozcPlate:
    """One DOZC task, checked: where its files are, where its OME-Zarr goes, the settings.

    ``input_bucket``/``output_bucket`` are '' for the config's source/destination bucket;
    ``input_location``/``output_location`` have no leading or trailing '/' ('' = the bucket's
    root); ``path_to_metadata`` is '' when unset; numbers are None when unset; ``files`` is
    None unless the job lists the plate's files (relative to the plate's folder).
    """

    plate: str
    input_bucket: str
    input_location: str
    path_to_metadata: str
    output_bucket: str
    output_location: str
    upload_flags: str = ""
    resolutions: int | None = None
    tile_width: int | None = None
    tile_height: int | None = None
    target_min_size: int | None = None
    additional_flags: tuple[str, ...] = ()
    files: tuple[str, ...] | None = None

    @property
    def plate_prefix(self) -> str:
        """The storage prefix of the plate's folder, ending in '/'."""
        return join_key(self.input_location, self.plate, source=_JOB) + "/"

    @property
    def output_prefix(self) -> str:
        """``output_location/<plate>.ome.zarr``: where the OME-Zarr is uploaded."""
        return join_key(self.output_location, f"{self.plate}.ome.zarr", source=_JOB)

    def number(self, key: str) -> int | None:
        """The value of a numeric key (``resolutions``, ``tile_width``, … as in the job)."""
        return {
            "resolutions": self.resolutions,
            "tile_width": self.tile_width,
            "tile_height": self.tile_height,
            "target-min-size": self.target_min_size,
        }[key]

    def input_path(self, workdir: Workdir) -> Path:
        """Where the engine reads: the staged plate folder, or the metadata file in it."""
        folder = workdir.input_dir / Path(*PurePosixPath(self.plate).parts)
        if not self.path_to_metadata:
            return folder
        return folder / Path(*PurePosixPath(self.path_to_metadata).parts)

    def explicit_inputs(self) -> list[Input]:
        """The plate's listed files as inputs (empty when the job lists none)."""
        return [
            Input(
                key=join_key(self.input_location, self.plate, name, source=_JOB),
                path=join_key(self.plate, name, source=_JOB),
                bucket=self.input_bucket,
            )
            for name in self.files or ()
        ]


# --- reading a task -----------------------------------------------------------------------


def _fail(task: Task, field: str, problem: str, fix: str) -> InputError:
    return InputError(_JOB, field, f"{problem} (plate {task.describe()}, task {task.id})", fix)


def _plate_name(task: Task) -> tuple[str, Mapping[str, Any]]:
    """The plate's name and the keys that apply to it (the plate object's win)."""
    if task.group_key != "plate":
        # DOZC's first drafts (2022-03) listed {"Plate": …} under "groups".
        raise _fail(
            task,
            "groups",
            "the omezarr recipe runs Distributed-OMEZarrCreator job files, whose tasks are "
            'listed under "plates" (one plate folder each); this file lists "groups"',
            'rename "groups" to "plates" and write each plate as its folder name, e.g. '
            '"plates": ["PLATEA", "PLATEB"]',
        )
    element = task.group
    shared = {k: v for k, v in task.body.items() if k != task.group_key}
    if isinstance(element, Mapping):
        name = element.get("name")
        overrides = {k: v for k, v in element.items() if k != "name"}
        settings: Mapping[str, Any] = {**shared, **overrides}
    else:
        name, settings = element, shared
    if isinstance(name, bool) or not isinstance(name, str | int) or name == "":
        raise _fail(
            task,
            "plates",
            f"the plate {name!r} is not a name",
            'write each plate as a folder name, e.g. "PLATEA", or as {"name": "PLATEA", '
            '"files": [...]}',
        )
    plate = str(name).strip("/")
    try:
        check_key(plate, source=_JOB)
    except InputError as error:
        raise _fail(
            task, "plates", f"the plate {plate!r} is not a folder name: {error.problem}", _KEY_FIX
        ) from None
    return plate, settings


_KEY_FIX = "use '/'-separated names relative to the bucket (no leading '/', no '..')"


def _check_keys(task: Task, settings: Mapping[str, Any]) -> None:
    known = {_normal(k): k for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS, "files")}
    for key in settings:
        right = known.get(_normal(key))
        if right is not None and right != key:
            raise _fail(
                task,
                key,
                f"`{key}` is not a key DOZC reads",
                f"rename it `{right}` (DOZC spells it exactly so)"
                + (f"; the job sets `{right}` too: keep one" if right in settings else ""),
            )
    for key in REQUIRED_KEYS:
        if key not in settings:
            example = "false" if key in _MAY_BE_FALSE else '"folder/in/the/bucket/"'
            raise _fail(
                task,
                key,
                "is missing: a DOZC job file needs input_bucket, input_location, "
                "path_to_metadata, output_bucket and output_location",
                f'add "{key}": {example} (or your value) to the top level of the job file',
            )


def _unset(value: Any) -> bool:
    return value is False or value is None or value == ""


def _text(task: Task, settings: Mapping[str, Any], key: str) -> str:
    value = settings.get(key, False)
    if _unset(value):
        return ""
    if not isinstance(value, str):
        raise _fail(task, key, f"is {value!r}, not text", f'write "{key}": "..." {_FALSE_FIX}')
    return value.strip()


def _bucket(task: Task, settings: Mapping[str, Any], key: str) -> str:
    name = _text(task, settings, key)
    if name and (not _BUCKET.match(name) or ".." in name):
        raise _fail(
            task,
            key,
            f"{name!r} is not a bucket name",
            "write the bucket's name only (letters, digits, '.', '-', '_'; no 's3://', no "
            "'/'), or false for the config's bucket",
        )
    return name


def _location(task: Task, settings: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = settings.get(key)
    if not required and _unset(value):
        return ""
    if not isinstance(value, str):
        raise _fail(
            task, key, f"is {value!r}, not a path", f'write "{key}": "folder/in/the/bucket/"'
        )
    location = value.strip().rstrip("/")
    if location:
        try:
            check_key(location, source=_JOB)
        except InputError as error:
            raise _fail(
                task, key, f"{value!r} is not a safe path: {error.problem}", _KEY_FIX
            ) from None
    return location


def _number(task: Task, settings: Mapping[str, Any], key: str) -> int | None:
    value = settings.get(key, False)
    if _unset(value):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(
            task, key, f"is {value!r}, not a whole number ≥ 1", f'write "{key}": 4 {_FALSE_FIX}'
        )
    return value


def split_flags(text: str) -> list[str]:
    """``text`` split into arguments at spaces, as DOZC's worker split its command, except
    that quotes ('…' or "…") may group a value with spaces. Backslashes and ``#`` are kept as
    they are (regular expressions use them). Raises ValueError for an unclosed quote."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    return list(lexer)


def _flags(task: Task, settings: Mapping[str, Any], key: str) -> tuple[str, ...]:
    text = _text(task, settings, key)
    try:
        return tuple(split_flags(text))
    except ValueError as error:
        raise _fail(
            task, key, f"cannot split {text!r} into flags: {error}", "close every quote"
        ) from None


def _files(task: Task, settings: Mapping[str, Any], plate: str) -> tuple[str, ...] | None:
    value = settings.get("files")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise _fail(
            task,
            "files",
            f"is {value!r}, not a list of file names",
            'write "files": ["{plate}/A01_DAPI.tif", ...] (paths relative to the plate\'s '
            "folder; {plate} is the plate's name), or leave it out to take every file",
        )
    names: list[str] = []
    for index, item in enumerate(value):
        field = f"files[{index}]"
        if not isinstance(item, str):
            raise _fail(task, field, f"is {item!r}, not a file name", "write it as text")
        try:
            name = render(item, {"plate": plate}, group=task.describe())
        except (MissingField, TemplateError) as error:
            raise _fail(
                task, field, f"{item!r}: {error}", "the only field here is {plate}"
            ) from None
        try:
            check_key(name, source=_JOB)
        except InputError as error:
            raise _fail(
                task, field, f"{name!r} is not a safe path: {error.problem}", _KEY_FIX
            ) from None
        names.append(name)
    return tuple(names)


def read_plate(task: Task) -> DozcPlate:
    """The checked DOZC plate of ``task``.

    Raises ``InputError`` (source "job file", field = the key) for a missing required key, a
    misspelt key (``tile-width`` for ``tile_width``), a value of the wrong kind, a path that
    could leave its folder, an unsafe bucket name or an unsplittable flag string.
    """
    plate, settings = _plate_name(task)
    _check_keys(task, settings)
    return DozcPlate(
        plate=plate,
        input_bucket=_bucket(task, settings, "input_bucket"),
        input_location=_location(task, settings, "input_location", required=True),
        path_to_metadata=_location(task, settings, "path_to_metadata", required=False),
        output_bucket=_bucket(task, settings, "output_bucket"),
        output_location=_location(task, settings, "output_location", required=True),
        upload_flags=_text(task, settings, "upload_flags"),
        resolutions=_number(task, settings, "resolutions"),
        tile_width=_number(task, settings, "tile_width"),
        tile_height=_number(task, settings, "tile_height"),
        target_min_size=_number(task, settings, "target-min-size"),
        additional_flags=_flags(task, settings, "additional_flags"),
        files=_files(task, settings, plate),
    )


# --- commands -----------------------------------------------------------------------------


def engine_for(config: Config) -> str:
    """The config's engine: ``recipe.engine``, else bioformats2raw on AWS and builtin locally.

    Raises ``InputError`` (source "config", field ``recipe.engine``) for an unknown engine.
    """
    engine = config.recipe.engine.strip().lower()
    if not engine:
        return BIOFORMATS2RAW if backend_kind(config.backend).in_image else BUILTIN
    if engine not in ENGINES:
        raise InputError(
            _CONFIG,
            "recipe.engine",
            f"{config.recipe.engine!r} is not an engine of the omezarr recipe",
            f'set it to "{BIOFORMATS2RAW}" (the bioformats2raw image) or "{BUILTIN}" (our '
            "converter for TIFF files), or leave it empty for the backend's default",
        )
    return engine


def bioformats2raw_argv(job: DozcPlate, workdir: Workdir, executable: str = "") -> list[str]:
    """The bioformats2raw command of a plate, as DOZC's worker built it (one argument per
    element), writing into ``workdir.output_dir``."""
    argv = [executable or "bioformats2raw", str(job.input_path(workdir)), str(workdir.output_dir)]
    # The worker made the output folder; bioformats2raw refuses an existing one otherwise.
    if "--overwrite" not in job.additional_flags:
        argv.append("--overwrite")
    for key, flag in _B2R_FLAGS.items():
        value = job.number(key)
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(job.additional_flags)


def builtin_argv(job: DozcPlate, workdir: Workdir, python: str = "") -> list[str]:
    """The builtin converter's command of a plate, writing into ``workdir.output_dir``."""
    argv = [python or sys.executable, "-m", CONVERTER_MODULE, "convert"]
    argv += [str(job.input_path(workdir)), str(workdir.output_dir), "--name", job.plate]
    for key, flag in _BUILTIN_FLAGS.items():
        value = job.number(key)
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(job.additional_flags)


# --- did it work ----------------------------------------------------------------------------


class _Invalid(Exception):
    """Why an OME-Zarr is not valid."""


def _node(path: Path, root: Path) -> tuple[str, dict[str, Any], list[Any] | None] | None:
    """(node type, NGFF attributes, array shape) of the zarr node at ``path``, or None."""
    where = path.relative_to(root).as_posix()
    where = "the output root" if where == "." else where
    v3 = path / "zarr.json"
    if v3.is_file():
        doc = _json(v3, root)
        kind = doc.get("node_type")
        if kind not in ("group", "array"):
            raise _Invalid(f"{where}/zarr.json has no valid node_type")
        attrs = doc.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise _Invalid(f"{where}/zarr.json: attributes are not an object")
        ome = attrs.get("ome")
        merged = {**attrs, **ome} if isinstance(ome, dict) else attrs
        return kind, merged, doc.get("shape") if kind == "array" else None
    if (path / ".zarray").is_file():
        doc = _json(path / ".zarray", root)
        return "array", {}, doc.get("shape")
    if (path / ".zgroup").is_file():
        attrs_file = path / ".zattrs"
        return "group", _json(attrs_file, root) if attrs_file.is_file() else {}, None
    return None


def _json(path: Path, root: Path) -> dict[str, Any]:
    name = path.relative_to(root).as_posix()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _Invalid(f"{name} is not readable JSON ({error})") from None
    if not isinstance(doc, dict):
        raise _Invalid(f"{name} is not a JSON object")
    return doc


def _child(parent: Path, relative: Any, what: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise _Invalid(f"{what} has a path {relative!r} that is not a name")
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts:
        raise _Invalid(f"{what} has a path {relative!r} outside its folder")
    return parent.joinpath(*parts)


def _check_image(path: Path, root: Path, attrs: dict[str, Any]) -> None:
    where = path.relative_to(root).as_posix()
    where = "the image at the output root" if where == "." else f"the image {where}"
    multiscales = attrs.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise _Invalid(f"{where} has no multiscales metadata")
    datasets = multiscales[0].get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise _Invalid(f"{where} lists no resolution levels (datasets)")
    axes = multiscales[0].get("axes")
    dims: int | None = len(axes) if isinstance(axes, list) else None
    for dataset in datasets:
        if not isinstance(dataset, dict):
            raise _Invalid(f"{where} has a dataset that is not an object")
        array = _child(path, dataset.get("path"), where)
        node = _node(array, root)
        if node is None or node[0] != "array":
            raise _Invalid(f"{where}: level {dataset.get('path')!r} is not a zarr array")
        shape = node[2]
        if not isinstance(shape, list) or not shape:
            raise _Invalid(f"{where}: level {dataset.get('path')!r} has no shape")
        if dims is not None and len(shape) != dims:
            raise _Invalid(
                f"{where}: level {dataset.get('path')!r} has {len(shape)} dimensions but "
                f"{dims} axes"
            )
        dims = len(shape)


def _check_plate(root: Path, plate: Any) -> int:
    if not isinstance(plate, dict):
        raise _Invalid("the plate metadata is not an object")
    wells = plate.get("wells")
    if not isinstance(wells, list) or not wells:
        raise _Invalid("the plate lists no wells")
    images = 0
    for well in wells:
        if not isinstance(well, dict):
            raise _Invalid("the plate has a well that is not an object")
        well_path = _child(root, well.get("path"), "the plate")
        node = _node(well_path, root)
        if node is None or node[0] != "group" or not isinstance(node[1].get("well"), dict):
            raise _Invalid(f"the well {well.get('path')!r} has no well metadata")
        fields = node[1]["well"].get("images")
        if not isinstance(fields, list) or not fields:
            raise _Invalid(f"the well {well.get('path')!r} lists no images")
        for image in fields:
            if not isinstance(image, dict):
                raise _Invalid(f"the well {well.get('path')!r} has an image that is not an object")
            image_path = _child(well_path, image.get("path"), f"the well {well.get('path')!r}")
            image_node = _node(image_path, root)
            if image_node is None:
                raise _Invalid(f"the image {well.get('path')}/{image.get('path')} is missing")
            _check_image(image_path, root, image_node[1])
            images += 1
    return images


def omezarr_problem(root: Path) -> str | None:
    """None when ``root`` holds a valid OME-Zarr, else what is wrong (never raises).

    Valid means: a zarr group (``zarr.json`` or ``.zgroup``/``.zattrs``) whose NGFF metadata
    (top level, or under ``"ome"`` as in NGFF 0.5) is a plate whose every well lists images
    that are valid, or a multiscale image whose every level is an array with as many
    dimensions as there are axes, or a bioformats2raw layout whose series (``OME/`` lists
    them; else ``0``) are valid images. Only metadata is read, never pixels.
    """
    try:
        node = _node(root, root)
        if node is None:
            return f"no OME-Zarr was written: {root} has no zarr.json or .zgroup"
        kind, attrs, _ = node
        if kind != "group":
            return "the output root is a zarr array, not an OME-Zarr group"
        if "plate" in attrs:
            _check_plate(root, attrs["plate"])
        elif "multiscales" in attrs:
            _check_image(root, root, attrs)
        elif "bioformats2raw.layout" in attrs:
            series: Any = ["0"]
            ome = _node(root / "OME", root)
            if ome is not None and isinstance(ome[1].get("series"), list) and ome[1]["series"]:
                series = ome[1]["series"]
            for name in series:
                path = _child(root, str(name), "the bioformats2raw layout")
                image = _node(path, root)
                if image is None:
                    return f"the series {name} of the bioformats2raw layout is missing"
                _check_image(path, root, image[1])
        else:
            return "the output root's metadata has neither multiscales nor plate"
    except _Invalid as problem:
        return str(problem)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        return f"the OME-Zarr metadata could not be checked: {type(error).__name__}: {error}"
    return None


# --- the recipe ---------------------------------------------------------------------------

#: Lists a bucket's objects under a prefix: (bucket, prefix) → objects. The bucket is named
#: as in `Input.bucket` ('' = the config's source bucket).
Lister = Callable[[str, str], Iterable[ObjectInfo]]


class OmeZarrRecipe:
    """DOZC job files → OME-Zarr with bioformats2raw or our builtin converter (see the module
    doc for what each key means).

    - ``plan``: checks the task (`read_plate`) and the config (engine, flags), then returns
      the engine's argv, the plate's listed files as inputs (none when the job lists none:
      `listed_inputs` lists them), ``output_location/<plate>.ome.zarr`` as the output prefix and
      ``output_bucket`` as the output bucket. Raises ``InputError`` naming the key.
    - ``listed_inputs``: every object under ``input_location/<plate>/`` in ``input_bucket``
      when the job lists no files; raises ``InputError`` when there is none. (Deliberately not
      named ``more_inputs``: that hook gets no lister.)
    - ``check_success``: exit code 0 and valid OME-Zarr metadata in the output folder
      (`omezarr_problem`); otherwise the reason. Never raises.
    """

    name: str = "omezarr"

    def missing_tool(self, config: Config, path: str | None) -> ToolProblem | None:
        """bioformats2raw, or the builtin converter's Python packages (when it runs with
        ds's own Python), when they are not here (`NeedsTools`)."""
        if engine_for(config) == BIOFORMATS2RAW:
            executable = config.recipe.executable or "bioformats2raw"
            problem = program_problem(executable, path)
            if problem is None:
                return None
            return (
                f"bioformats2raw ({executable!r}) {problem}: every task would fail",
                "install bioformats2raw and put it on PATH (or set recipe.executable), or use "
                f'engine = "{BUILTIN}" for TIFF files',
            )
        if config.recipe.executable:
            return None  # another Python: its packages are not ours to look at
        missing = [name for name in _CONVERTER_PACKAGES if importlib.util.find_spec(name) is None]
        if not missing:
            return None
        return (
            f"the builtin OME-Zarr converter needs {', '.join(missing)}, not installed with ds "
            "here: every task would fail",
            "pip install -e '.[omezarr]' in the ds checkout (`make examples` does), or pip install "
            "'distributed-something[omezarr]'",
        )

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan:
        """The plan for ``task``; pure, raises ``InputError`` as above."""
        _check_recipe_config(config)
        engine = engine_for(config)
        job = read_plate(task)
        _check_upload_flags(config, task, job)
        if engine == BIOFORMATS2RAW:
            if not job.path_to_metadata:
                raise _fail(
                    task,
                    "path_to_metadata",
                    "is not set, but bioformats2raw needs the file to open",
                    'set it to the file in the plate folder, e.g. "Images/Index.idx.xml" '
                    '(or set recipe.engine = "builtin" to convert a folder of TIFFs)',
                )
            argv = bioformats2raw_argv(job, workdir, config.recipe.executable)
        else:
            _check_builtin_flags(task, job)
            argv = builtin_argv(job, workdir, config.recipe.executable)
        return TaskPlan(
            argv=argv,
            output_prefix=job.output_prefix,
            inputs=job.explicit_inputs(),
            output_bucket=job.output_bucket,
        )

    def listed_inputs(
        self, config: Config, task: Task, workdir: Workdir, lister: Lister
    ) -> list[Input]:
        """The plate folder's objects, as DOZC's recursive copy took them (only when the job
        lists no files); each is staged to ``{input_dir}/<plate>/<its path in the folder>``."""
        job = read_plate(task)
        if job.files is not None:
            return []
        prefix = job.plate_prefix
        inputs = [
            Input(
                key=item.key,
                path=join_key(job.plate, item.key[len(prefix) :]),
                bucket=job.input_bucket,
            )
            for item in lister(job.input_bucket, prefix)
            if item.key.startswith(prefix) and not item.key.endswith("/")
        ]
        if not inputs:
            bucket = job.input_bucket or "the source bucket"
            raise _fail(
                task,
                "input_location",
                f"there is nothing under {prefix} in {bucket}",
                "check input_bucket, input_location and the plate's name (the plate's files "
                "must be in input_location/<plate>/)",
            )
        return inputs

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
        """None when the converter exited 0 and wrote a valid OME-Zarr, else why not."""
        if exit_code != 0:
            return command_ended("the OME-Zarr converter", exit_code)
        problem = omezarr_problem(workdir.output_dir)
        if problem is not None:
            return f"the converter exited with 0 but its output is not a valid OME-Zarr: {problem}"
        return None


def _check_recipe_config(config: Config) -> None:
    recipe = config.recipe
    for field, value in (
        ("recipe.argv", recipe.argv),
        ("recipe.inputs", recipe.inputs),
        ("recipe.output_prefix", recipe.output_prefix),
    ):
        if value:
            raise InputError(
                _CONFIG,
                field,
                "is set, but the omezarr recipe does not use it",
                "remove it: the omezarr recipe takes its command, inputs and output prefix "
                "from the DOZC job file (outputs go to output_location/<plate>.ome.zarr)",
            )


def _check_upload_flags(config: Config, task: Task, job: DozcPlate) -> None:
    try:
        wanted = upload_args_from_flags(job.upload_flags, source=_JOB)
    except InputError as error:
        raise _fail(task, "upload_flags", error.problem, error.fix) from None
    if not job.upload_flags or not backend_kind(config.backend).upload_flags:
        return
    configured = upload_args_from_flags(config.storage.upload_flags, source=_CONFIG)
    if wanted != configured:
        raise _fail(
            task,
            "upload_flags",
            f"are {job.upload_flags!r} but the config's storage.upload_flags are "
            f"{config.storage.upload_flags!r}; ds applies one set of flags to every upload",
            f'set storage.upload_flags = "{job.upload_flags}" in ds.toml (UPLOAD_FLAGS in '
            'config.py), or write "upload_flags": false in the job file',
        )


def _check_builtin_flags(task: Task, job: DozcPlate) -> None:
    from distributed_something.recipes.omezarr_convert import UsageError, check_convert_flags

    try:
        check_convert_flags(job.additional_flags)
    except UsageError as error:
        raise _fail(
            task,
            "additional_flags",
            f"{' '.join(job.additional_flags)!r} are not options of the builtin converter: {error}",
            "use its options (--layout, --pattern, --downsample, --ngff-version; see "
            'docs/recipes/omezarr.md), or set recipe.engine = "bioformats2raw" for '
            "bioformats2raw's flags",
        ) from None
