"""The `omezarr` recipe: DOZC job files, commands of both engines, listing, success checks.

None of these tests needs the omezarr extra: the recipe only builds commands and reads JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed_something.config.model import Config, RecipeConfig, StorageConfig
from distributed_something.errors import InputError
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.jobs.model import Task
from distributed_something.jobs.parse import parse_job_text
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Input, Workdir
from distributed_something.recipes.omezarr import (
    CONVERTER_MODULE,
    REQUIRED_KEYS,
    OmeZarrRecipe,
    omezarr_problem,
    read_plate,
    split_flags,
)
from distributed_something.recipes.registry import get_recipe

WORKDIR = Workdir(Path("/scratch/task-1"))

#: Distributed-OmeZarrCreator's files/exampleJob.json, in form and values (placeholders
#: included; its comments are paraphrased).
DOZC_EXAMPLE_JOB = """{
  "_comment_on_input": "Bucket and path in the bucket to the parent folder of your plates",
  "input_bucket": "SOURCE_BUCKET",
  "input_location": "projects/PROJECTNAME/BATCHNAME/images/",
  "path_to_metadata": "Images/Index.idx.xml",
  "_comment_on_output": "Bucket and path in the bucket to the parent folder of .ome.zarr",
  "output_bucket": "DESTINATION_BUCKET",
  "output_location": "projects/PROJECTNAME/BATCHNAME/images_zarr/",
  "_comment_on_upload_flags": "Flags passed to s3 for upload, or false.",
  "upload_flags": false,
  "_comment_on_settings": "Set a value to use one, or false.",
  "resolutions": false,
  "tile_width": false,
  "tile_height": false,
  "target-min-size": false,
  "_comment_on_additional_flags": "More flags for BioFormats2Raw, or false.",
  "additional_flags": false,
  "_comment_on_plates": "Each plate is an individual task and will be run in parallel",
  "plates": ["PLATEA","PLATEB","PLATEC","PLATED"]
}
"""

SHARED: dict[str, Any] = {
    "input_bucket": "in-bucket",
    "input_location": "proj/images/",
    "path_to_metadata": "Images/Index.idx.xml",
    "output_bucket": "out-bucket",
    "output_location": "proj/images_zarr/",
    "upload_flags": False,
    "resolutions": False,
    "tile_width": False,
    "tile_height": False,
    "target-min-size": False,
    "additional_flags": False,
}


def config(backend: str = "local", **recipe: Any) -> Config:
    return Config(app_name="Zarr", backend=backend, recipe=RecipeConfig(name="omezarr", **recipe))


def task(plate: Any = "PLATEA", **changes: Any) -> Task:
    body = {**SHARED, **changes, "plate": plate}
    return Task(body={k: v for k, v in body.items() if v is not _DROP}, group_key="plate")


_DROP = object()


def plan_error(cfg: Config, t: Task) -> InputError:
    with pytest.raises(InputError) as caught:
        OmeZarrRecipe().plan(cfg, t, WORKDIR)
    return caught.value


# --- job files ------------------------------------------------------------------------------


def test_dozc_example_job_parses_into_one_task_per_plate_with_dozc_bodies() -> None:
    job = parse_job_text(DOZC_EXAMPLE_JOB, source="exampleJob.json", suffix=".json")
    assert job.format == "dozc"
    assert [t.body["plate"] for t in job.tasks] == ["PLATEA", "PLATEB", "PLATEC", "PLATED"]
    first = job.tasks[0].body
    # The message DOZC's run.py sent: shared keys (comments dropped) + the plate.
    assert not any("_comment" in key for key in first)
    assert first["target-min-size"] is False and first["input_bucket"] == "SOURCE_BUCKET"
    plate = read_plate(job.tasks[0])
    assert plate.plate == "PLATEA"
    assert plate.plate_prefix == "projects/PROJECTNAME/BATCHNAME/images/PLATEA/"
    assert plate.output_prefix == "projects/PROJECTNAME/BATCHNAME/images_zarr/PLATEA.ome.zarr"
    assert (plate.resolutions, plate.tile_width, plate.additional_flags) == (None, None, ())


def test_dozc_example_job_plans_bioformats2raw_on_aws_as_dozc_ran_it() -> None:
    job = parse_job_text(DOZC_EXAMPLE_JOB, source="exampleJob.json", suffix=".json")
    plans = [OmeZarrRecipe().plan(config("aws"), t, WORKDIR) for t in job.tasks]
    assert plans[1].argv == [
        "bioformats2raw",
        f"{WORKDIR.input_dir}/PLATEB/Images/Index.idx.xml",
        str(WORKDIR.output_dir),
        "--overwrite",
    ]
    assert plans[1].output_prefix == "projects/PROJECTNAME/BATCHNAME/images_zarr/PLATEB.ome.zarr"
    assert plans[1].output_bucket == "DESTINATION_BUCKET"
    # The plate folder can only be known by listing it: nothing is declared up front.
    assert all(p.inputs == [] for p in plans)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_missing_required_key_is_named(key: str) -> None:
    error = plan_error(config(), task(**{key: _DROP}))
    assert error.source == "job file" and error.field == key
    assert "missing" in error.problem and "PLATEA" in error.problem
    assert key in error.fix


def test_optional_settings_may_be_left_out() -> None:
    t = Task(
        body={k: SHARED[k] for k in REQUIRED_KEYS} | {"plate": "P1"},
        group_key="plate",
    )
    plan = OmeZarrRecipe().plan(config("aws"), t, WORKDIR)
    assert plan.argv[3:] == ["--overwrite"]


def test_a_misspelt_key_is_reported_with_the_dozc_spelling() -> None:
    error = plan_error(config(), task(**{"target_min_size": 64}))
    assert error.field == "target_min_size"
    assert "target-min-size" in error.fix


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"resolutions": 0}, "resolutions"),
        ({"resolutions": True}, "resolutions"),
        ({"tile_width": "wide"}, "tile_width"),
        ({"tile_height": 2.5}, "tile_height"),
        ({"input_bucket": "s3://bucket"}, "input_bucket"),
        ({"output_bucket": "../escape"}, "output_bucket"),
        ({"input_location": "../../etc"}, "input_location"),
        ({"output_location": "/abs/path"}, "output_location"),
        ({"path_to_metadata": "a/../../b"}, "path_to_metadata"),
        ({"additional_flags": "--a 'unclosed"}, "additional_flags"),
        ({"additional_flags": ["--list"]}, "additional_flags"),
        ({"upload_flags": "--acl no-such-acl"}, "upload_flags"),
    ],
)
def test_bad_values_are_input_errors_naming_the_key(changes: dict[str, Any], field: str) -> None:
    error = plan_error(config("aws"), task(**changes))
    assert error.source == "job file" and error.field == field


@pytest.mark.parametrize("plate", ["../up", "", True, None, {"files": ["a.tif"]}])
def test_a_plate_that_is_not_a_folder_name_is_refused(plate: Any) -> None:
    error = plan_error(config(), task(plate))
    assert error.field == "plates"


def test_a_groups_job_file_is_told_to_list_plates() -> None:
    """DOZC's first drafts (2022-03) listed {"Plate": "PLATEA"} under "groups"; it was
    refused as "the plate None is not a name", naming a "plates" the file does not have."""
    text = json.dumps({**SHARED, "groups": [{"Plate": "PLATEA"}, {"Plate": "PLATEB"}]})
    job = parse_job_text(text, source="job.json", suffix=".json")
    error = plan_error(config(), job.tasks[0])
    assert error.field == "groups" and 'listed under "plates"' in error.problem
    assert '"plates": ["PLATEA", "PLATEB"]' in error.fix


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("--extra-readers a.B  --max_workers 4", ["--extra-readers", "a.B", "--max_workers", "4"]),
        (r"--pattern (?P<well>\w\d+)#x", ["--pattern", r"(?P<well>\w\d+)#x"]),
        ("--name 'two words' --x \"a b\"", ["--name", "two words", "--x", "a b"]),
        ("", []),
    ],
)
def test_flags_split_at_spaces_keeping_backslashes_and_honouring_quotes(
    text: str, words: list[str]
) -> None:
    assert split_flags(text) == words


def test_numbers_written_as_text_are_accepted_like_dozc_did() -> None:
    plate = read_plate(task(resolutions="4", tile_width=512))
    assert (plate.resolutions, plate.tile_width) == (4, 512)


# --- commands -------------------------------------------------------------------------------


def test_bioformats2raw_command_carries_every_setting_with_dozc_flag_spelling() -> None:
    t = task(
        resolutions=5,
        tile_width=512,
        tile_height=256,
        **{"target-min-size": 128},
        additional_flags="--extra-readers com.glencoesoftware.bioformats2raw.MiraxReader",
    )
    plan = OmeZarrRecipe().plan(config("aws", executable="/opt/b2r/bin/bioformats2raw"), t, WORKDIR)
    assert plan.argv == [
        "/opt/b2r/bin/bioformats2raw",
        f"{WORKDIR.input_dir}/PLATEA/Images/Index.idx.xml",
        str(WORKDIR.output_dir),
        "--overwrite",
        "--resolutions",
        "5",
        "--tile_width",
        "512",
        "--tile_height",
        "256",
        "--target-min-size",
        "128",
        "--extra-readers",
        "com.glencoesoftware.bioformats2raw.MiraxReader",
    ]
    assert plan.output_prefix == "proj/images_zarr/PLATEA.ome.zarr"
    assert plan.output_bucket == "out-bucket"


def test_bioformats2raw_overwrite_is_not_given_twice() -> None:
    plan = OmeZarrRecipe().plan(
        config("aws"), task(additional_flags="--overwrite --max_workers 2"), WORKDIR
    )
    assert plan.argv.count("--overwrite") == 1
    assert plan.argv[-3:] == ["--overwrite", "--max_workers", "2"]


def test_bioformats2raw_needs_a_metadata_file() -> None:
    error = plan_error(config(engine="bioformats2raw"), task(path_to_metadata=False))
    assert error.field == "path_to_metadata"
    assert "builtin" in error.fix


def test_builtin_command_runs_our_converter_inside_the_task() -> None:
    t = task(
        path_to_metadata=False,
        resolutions=3,
        tile_width=64,
        tile_height=32,
        **{"target-min-size": 100},
        additional_flags="--layout plate --pattern '(?P<well>[A-P]\\d+)_(?P<channel>\\w+)'",
    )
    plan = OmeZarrRecipe().plan(config(), t, WORKDIR)
    assert plan.argv == [
        sys.executable,
        "-m",
        CONVERTER_MODULE,
        "convert",
        f"{WORKDIR.input_dir}/PLATEA",
        str(WORKDIR.output_dir),
        "--name",
        "PLATEA",
        "--resolutions",
        "3",
        "--tile-width",
        "64",
        "--tile-height",
        "32",
        "--target-min-size",
        "100",
        "--layout",
        "plate",
        "--pattern",
        "(?P<well>[A-P]\\d+)_(?P<channel>\\w+)",
    ]


def test_builtin_refuses_flags_it_does_not_know_at_validation() -> None:
    error = plan_error(config(engine="builtin"), task(additional_flags="--extra-readers x.Y"))
    assert error.field == "additional_flags"
    assert "--extra-readers" in error.problem and "bioformats2raw" in error.fix
    error = plan_error(config(), task(additional_flags="--pattern (?P<bogus>x)"))
    assert "bogus" in error.problem


def test_engine_defaults_follow_the_backend_and_unknown_engines_are_refused() -> None:
    assert OmeZarrRecipe().plan(config(), task(), WORKDIR).argv[0] == sys.executable
    assert OmeZarrRecipe().plan(config("aws"), task(), WORKDIR).argv[0] == "bioformats2raw"
    assert OmeZarrRecipe().plan(config("aws", engine="Builtin"), task(), WORKDIR).argv[2] == (
        CONVERTER_MODULE
    )
    error = plan_error(config(engine="imagej"), task())
    assert (error.source, error.field) == ("config", "recipe.engine")


def test_command_recipe_fields_are_refused_rather_than_ignored() -> None:
    error = plan_error(config(argv=["echo"]), task())
    assert (error.source, error.field) == ("config", "recipe.argv")
    error = plan_error(config(output_prefix="x/{plate}"), task())
    assert error.field == "recipe.output_prefix"


def test_upload_flags_must_match_the_config_on_aws_only() -> None:
    flags = "--acl bucket-owner-full-control"
    recipe = OmeZarrRecipe()
    error = plan_error(config("aws"), task(upload_flags=flags))
    assert error.field == "upload_flags" and "storage.upload_flags" in error.fix
    matching = Config(
        app_name="Zarr",
        backend="aws",
        recipe=RecipeConfig(name="omezarr"),
        storage=StorageConfig(bucket="b", upload_flags="--acl=bucket-owner-full-control"),
    )
    assert recipe.plan(matching, task(upload_flags=flags), WORKDIR).output_bucket == "out-bucket"
    assert recipe.plan(config(), task(upload_flags=flags), WORKDIR).argv


def test_false_buckets_mean_the_configs_buckets() -> None:
    plan = OmeZarrRecipe().plan(config(), task(input_bucket=False, output_bucket=""), WORKDIR)
    assert plan.output_bucket == ""


def test_a_listed_file_set_is_declared_as_inputs_in_the_plan() -> None:
    t = task(files=["{plate}_D.TIF", "sub/{plate}_F.TIF"], path_to_metadata=False)
    plan = OmeZarrRecipe().plan(config(), t, WORKDIR)
    assert plan.inputs == [
        Input(
            key="proj/images/PLATEA/PLATEA_D.TIF", path="PLATEA/PLATEA_D.TIF", bucket="in-bucket"
        ),
        Input(
            key="proj/images/PLATEA/sub/PLATEA_F.TIF",
            path="PLATEA/sub/PLATEA_F.TIF",
            bucket="in-bucket",
        ),
    ]


def test_a_plate_object_names_its_files_and_overrides_shared_keys() -> None:
    t = task({"name": "P7", "files": ["a.tif"], "resolutions": 2}, resolutions=5)
    plan = OmeZarrRecipe().plan(config(), t, PLACEHOLDER_WORKDIR)
    assert plan.inputs == [Input(key="proj/images/P7/a.tif", path="P7/a.tif", bucket="in-bucket")]
    assert plan.argv[plan.argv.index("--resolutions") + 1] == "2"
    assert plan.output_prefix == "proj/images_zarr/P7.ome.zarr"


@pytest.mark.parametrize("files", [[], "a.tif", ["../x.tif"], ["{well}.tif"], [3]])
def test_bad_file_lists_are_refused(files: Any) -> None:
    error = plan_error(config(), task(files=files))
    assert error.field is not None and error.field.startswith("files")


# --- listing the plate folder ---------------------------------------------------------------


class FakeLister:
    def __init__(self, objects: dict[str, list[str]]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str]] = []

    def __call__(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        self.calls.append((bucket, prefix))
        for key in self.objects.get(bucket, []):
            if key.startswith(prefix):
                yield ObjectInfo(key, 10)


def test_listed_inputs_lists_the_plate_folder_like_dozcs_recursive_copy() -> None:
    lister = FakeLister(
        {
            "in-bucket": [
                "proj/images/PLATEA/Images/Index.idx.xml",
                "proj/images/PLATEA/Images/r01c01f01p01-ch1sk1fk1fl1.tiff",
                "proj/images/PLATEA2/Images/Index.idx.xml",
                "proj/images/PLATEB/Images/Index.idx.xml",
            ]
        }
    )
    inputs = OmeZarrRecipe().listed_inputs(config(), task(), WORKDIR, lister)
    assert lister.calls == [("in-bucket", "proj/images/PLATEA/")]
    assert inputs == [
        Input(
            key="proj/images/PLATEA/Images/Index.idx.xml",
            path="PLATEA/Images/Index.idx.xml",
            bucket="in-bucket",
        ),
        Input(
            key="proj/images/PLATEA/Images/r01c01f01p01-ch1sk1fk1fl1.tiff",
            path="PLATEA/Images/r01c01f01p01-ch1sk1fk1fl1.tiff",
            bucket="in-bucket",
        ),
    ]


def test_listed_inputs_fails_the_task_when_the_plate_folder_is_empty() -> None:
    with pytest.raises(InputError) as caught:
        OmeZarrRecipe().listed_inputs(config(), task("PLATEZ"), WORKDIR, FakeLister({}))
    assert "proj/images/PLATEZ/" in caught.value.problem


def test_listed_inputs_does_not_list_when_the_job_lists_the_files() -> None:
    lister = FakeLister({})
    t = task(files=["a.tif"])
    assert OmeZarrRecipe().listed_inputs(config(), t, WORKDIR, lister) == []
    assert lister.calls == []


# --- success --------------------------------------------------------------------------------


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


def v2_image(root: Path, levels: int = 2, ndim: int = 3) -> None:
    axes = [{"name": n, "type": "space"} for n in "tczyx"[-ndim:]]
    datasets = [{"path": str(i)} for i in range(levels)]
    write_json(root / ".zgroup", {"zarr_format": 2})
    write_json(root / ".zattrs", {"multiscales": [{"axes": axes, "datasets": datasets}]})
    for i in range(levels):
        write_json(root / str(i) / ".zarray", {"zarr_format": 2, "shape": [4] * ndim})


def workdir_with(tmp_path: Path, build: Callable[[Path], None]) -> Workdir:
    workdir = Workdir(tmp_path / "task")
    workdir.create()
    build(workdir.output_dir)
    return workdir


def test_success_needs_exit_code_zero() -> None:
    recipe = OmeZarrRecipe()
    assert recipe.check_success(1, WORKDIR) == "the OME-Zarr converter exited with code 1"
    assert "signal 9" in (recipe.check_success(-9, WORKDIR) or "")


def test_success_needs_an_ome_zarr_to_have_been_written(tmp_path: Path) -> None:
    workdir = workdir_with(tmp_path, lambda out: None)
    reason = OmeZarrRecipe().check_success(0, workdir)
    assert reason is not None and "no OME-Zarr was written" in reason


def test_a_valid_v2_image_passes(tmp_path: Path) -> None:
    assert OmeZarrRecipe().check_success(0, workdir_with(tmp_path, v2_image)) is None


def test_a_valid_ngff_05_plate_passes(tmp_path: Path) -> None:
    def build(root: Path) -> None:
        def group(path: Path, ome: dict[str, Any]) -> None:
            attributes = {"ome": {"version": "0.5", **ome}}
            doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
            write_json(path / "zarr.json", doc)

        group(root, {"plate": {"wells": [{"path": "A/1"}, {"path": "B/2"}]}})
        for well in ("A/1", "B/2"):
            group(root / well, {"well": {"images": [{"path": "0"}]}})
            group(root / well / "0", {"multiscales": [{"datasets": [{"path": "0"}]}]})
            write_json(
                root / well / "0" / "0" / "zarr.json",
                {"zarr_format": 3, "node_type": "array", "shape": [2, 8, 8]},
            )

    assert omezarr_problem(workdir_with(tmp_path, build).output_dir) is None


def test_a_bioformats2raw_layout_passes_and_a_missing_series_fails(tmp_path: Path) -> None:
    def build(root: Path) -> None:
        write_json(root / ".zgroup", {"zarr_format": 2})
        write_json(root / ".zattrs", {"bioformats2raw.layout": 3})
        write_json(root / "OME" / ".zgroup", {"zarr_format": 2})
        write_json(root / "OME" / ".zattrs", {"series": ["0", "1"]})
        v2_image(root / "0", ndim=5)

    workdir = workdir_with(tmp_path, build)
    assert omezarr_problem(workdir.output_dir) == (
        "the series 1 of the bioformats2raw layout is missing"
    )
    v2_image(workdir.output_dir / "1", ndim=5)
    assert OmeZarrRecipe().check_success(0, workdir) is None


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda root: write_json(root / ".zattrs", "{not json"), "not readable JSON"),
        (lambda root: write_json(root / ".zattrs", "[1, 2]"), "not a JSON object"),
        (lambda root: write_json(root / ".zattrs", {"other": 1}), "neither multiscales nor plate"),
        (lambda root: (root / "1" / ".zarray").unlink(), "level '1' is not a zarr array"),
        (
            lambda root: write_json(root / "1" / ".zarray", {"shape": [4, 4]}),
            "has 2 dimensions but 3 axes",
        ),
        (
            lambda root: write_json(
                root / ".zattrs", {"multiscales": [{"datasets": [{"path": "../../etc"}]}]}
            ),
            "outside its folder",
        ),
        (
            lambda root: write_json(root / ".zattrs", {"plate": {"wells": [{"path": "A/1"}]}}),
            "well 'A/1' has no well metadata",
        ),
        (lambda root: write_json(root / ".zattrs", {"plate": {"wells": []}}), "no wells"),
    ],
)
def test_missing_or_corrupt_metadata_fails_without_raising(
    tmp_path: Path, damage: Callable[[Path], object], expected: str
) -> None:
    workdir = workdir_with(tmp_path, v2_image)
    damage(workdir.output_dir)
    reason = OmeZarrRecipe().check_success(0, workdir)
    assert reason is not None and expected in reason, reason


# --- wiring ---------------------------------------------------------------------------------


def test_the_registry_serves_the_recipe() -> None:
    recipe = get_recipe("omezarr", source="ds.toml")
    assert isinstance(recipe, OmeZarrRecipe) and recipe.name == "omezarr"


def test_the_recipe_imports_and_plans_without_the_omezarr_extra() -> None:
    # numpy, tifffile, zarr and ome_zarr made unimportable: planning must still work.
    code = (
        "import sys\n"
        "for name in ('numpy', 'tifffile', 'zarr', 'ome_zarr'):\n"
        "    sys.modules[name] = None\n"
        "from distributed_something.recipes.omezarr import OmeZarrRecipe\n"
        "from distributed_something.config.model import Config, RecipeConfig\n"
        "from distributed_something.jobs.model import Task\n"
        "from distributed_something.recipes.base import PLACEHOLDER_WORKDIR\n"
        f"body = {{**{SHARED!r}, 'plate': 'P', 'additional_flags': '--layout plate'}}\n"
        "cfg = Config(app_name='Z', recipe=RecipeConfig(name='omezarr'))\n"
        "t = Task(body=body, group_key='plate')\n"
        "plan = OmeZarrRecipe().plan(cfg, t, PLACEHOLDER_WORKDIR)\n"
        "print(plan.argv[3])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "convert"


def test_ds_validate_names_the_missing_key_and_the_job_file(
    tmp_path: Path, ds: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (tmp_path / "ds.toml").write_text('app_name = "Zarr"\n[recipe]\nname = "omezarr"\n')
    body = {k: v for k, v in SHARED.items() if k != "output_location"}
    (tmp_path / "job.json").write_text(json.dumps({**body, "plates": ["P1", "P2"]}))
    done = ds("validate", "--job", "job.json", cwd=tmp_path)
    assert done.returncode == 2
    assert "job.json: output_location: is missing" in done.stderr
    assert "Traceback" not in done.stderr
