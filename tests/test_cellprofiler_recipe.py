"""The `cellprofiler` recipe without CellProfiler: job files, LoadData rewriting, image
selection, the command, the in-task helper, and how a run's success is judged."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import Config, RecipeConfig, StorageConfig, ToolConfig
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.jobs.parse import parse_job_text
from distributed_something.recipes import cellprofiler as cp
from distributed_something.recipes import cellprofiler_task, loaddata
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Input, Workdir
from distributed_something.recipes.cellprofiler import (
    DONE_FILE,
    TASK_ERROR_FILE,
    TASK_MODULE,
    CellProfilerRecipe,
    TaskPaths,
)
from distributed_something.recipes.registry import get_recipe
from distributed_something.worker.loop import Worker

ROOT = "/home/ubuntu/bucket"
IMAGES = f"{ROOT}/demo_project_folder/images"
FLY_CSV = (
    "FileName_OrigBlue,FileName_OrigGreen,FileName_OrigRed,Metadata_Position,"
    "PathName_OrigBlue,PathName_OrigGreen,PathName_OrigRed\n"
    + "".join(
        f"01_POS{p}_D.TIF,01_POS{p}_F.TIF,01_POS{p}_R.TIF,{p},{IMAGES},{IMAGES},{IMAGES}\n"
        for p in ("002", "076", "218")
    )
)
# DCP's exampleJob.json for ExampleFly
EXAMPLE_JOB: dict[str, Any] = {
    "_comment1": "Paths in this file are relative to the root of your S3 bucket",
    "pipeline": "demo_project_folder/workspace/ExampleFly.cppipe",
    "data_file": "demo_project_folder/workspace/load_data.csv",
    "input": "demo_project_folder/workspace/",
    "output": "demo_project_folder/output",
    "output_structure": "Metadata_Position",
    "groups": [
        {"Metadata": "Metadata_Position=2"},
        {"Metadata": "Metadata_Position=76"},
        {"Metadata": "Metadata_Position=218"},
    ],
}
WORKDIR = Workdir(Path("/scratch/t1"))


def tasks_of(job: dict[str, Any]) -> list[Task]:
    return parse_job_text(json.dumps(job), source="job.json", suffix=".json").tasks


def job(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE_JOB, **changes}


def config(**sections: Any) -> Config:
    recipe = RecipeConfig(name="cellprofiler", **sections.pop("recipe", {}))
    return Config(app_name="Fly", recipe=recipe, **sections)


def table(text: str) -> loaddata.LoadDataTable:
    return loaddata.read_load_data(text)


# --- job files and metadata ------------------------------------------------------------------


def test_the_example_job_gives_one_task_per_position_with_dcp_output_folders() -> None:
    tasks = tasks_of(EXAMPLE_JOB)
    jobs = [cp.job_of(t) for t in tasks]
    assert [j.metadata for j in jobs] == [
        (("Metadata_Position", "2"),),
        (("Metadata_Position", "76"),),
        (("Metadata_Position", "218"),),
    ]
    assert {j.kind for j in jobs} == {"csv"}
    assert [cp.output_prefix(j) for j in jobs] == [
        "demo_project_folder/output/2",
        "demo_project_folder/output/76",
        "demo_project_folder/output/218",
    ]


def test_print_groups_dicts_and_bare_groups_are_metadata_too() -> None:
    printed = job(
        output_structure="Metadata_Plate/Metadata_Well-Metadata_Site",
        groups=[{"Metadata": {"Metadata_Plate": "P1", "Metadata_Well": "A01", "Metadata_Site": 3}}],
    )
    (one,) = [cp.job_of(t) for t in tasks_of(printed)]
    assert one.metadata == (
        ("Metadata_Plate", "P1"),
        ("Metadata_Well", "A01"),
        ("Metadata_Site", "3"),
    )
    assert one.group == "Metadata_Plate=P1,Metadata_Well=A01,Metadata_Site=3"
    assert cp.output_prefix(one) == "demo_project_folder/output/P1/A01-3"
    # DCP's files/exampleJob.json: groups are the metadata dict itself, no output_structure
    bare = job(output_structure="", groups=[{"Well": "A01", "Site": 1}])
    (two,) = [cp.job_of(t) for t in tasks_of(bare)]
    assert two.group == "Well=A01,Site=1"
    assert cp.output_prefix(two) == "demo_project_folder/output/A01-1"


@pytest.mark.parametrize(
    ("metadata", "structure", "expected"),
    [
        ("Metadata_Plate=P1,Metadata_Well=A01", "", "P1-A01"),
        ("Metadata_Plate=P1,Metadata_Well=A01", "Metadata_Plate/Metadata_Well", "P1/A01"),
        # a key the structure does not name is left out, as DCP does
        ("Metadata_Plate=P1,Metadata_Well=A01", "Metadata_Plate", "P1"),
        # keys are replaced in the group's order, in the text replaced so far
        ("Metadata_Well=B02,Metadata_WellRow=B", "Metadata_WellRow-x", "B02Row-x"),
    ],
)
def test_metadata_id_follows_dcp(metadata: str, structure: str, expected: str) -> None:
    assert cp.metadata_id(cp.parse_metadata(metadata), structure) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        "",
        "Metadata_Position",
        "Metadata_Position=",
        "=2",
        "a=1=2",
        "a=1,a=2",
        "a=1, b=2",
        True,
        {},
        5,
    ],
)
def test_bad_metadata_is_an_input_error(metadata: Any) -> None:
    with pytest.raises(InputError) as error:
        cp.parse_metadata(metadata)
    assert error.value.fix


def test_dict_values_that_the_group_argument_cannot_carry_are_refused() -> None:
    assert cp.parse_metadata({"Metadata_Site": 1.5}) == [("Metadata_Site", "1.5")]
    for value in ("a,b", "a=b", "", None, [1], False):
        with pytest.raises(InputError):
            cp.parse_metadata({"Metadata_Site": value})


def test_an_output_structure_naming_no_key_would_merge_every_task_and_is_refused() -> None:
    (task,) = tasks_of(
        job(output_structure="results", groups=[{"Metadata": "Metadata_Position=2"}])
    )
    with pytest.raises(InputError) as error:
        cp.output_prefix(cp.job_of(task))
    assert error.value.field == "output_structure" and "same folder" in error.value.problem


def test_metadata_that_would_escape_the_output_folder_is_refused() -> None:
    task = example_task(groups=[{"Metadata": "Metadata_Position=.."}])
    with pytest.raises(InputError) as error:
        CellProfilerRecipe().plan(config(), task, WORKDIR)
    assert error.value.field == "output"


@pytest.mark.parametrize(
    ("data_file", "pipeline", "kind"),
    [
        ("w/load_data.csv", "w/p.cppipe", "csv"),
        ("w/files.TXT", "w/p.cppipe", "txt"),
        ("w/Batch_data.h5", "w/Batch_data.h5", "h5"),
        ("", "w/Batch_data.h5", "h5"),
    ],
)
def test_the_data_file_kind_comes_from_its_suffix(data_file: str, pipeline: str, kind: str) -> None:
    task = example_task(data_file=data_file, pipeline=pipeline)
    assert cp.job_of(task).kind == kind


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"data_file": ""}, "data_file"),
        ({"data_file": "w/load_data.xlsx"}, "data_file"),
        ({"pipeline": "../p.cppipe"}, "pipeline"),
        ({"input": "/abs"}, "input"),
    ],
)
def test_bad_job_values_are_input_errors_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    task = example_task(**changes)
    with pytest.raises(InputError) as error:
        CellProfilerRecipe().plan(config(), task, PLACEHOLDER_WORKDIR)
    assert error.value.field == field


def test_a_job_that_is_not_a_dcp_job_is_refused_with_the_missing_key() -> None:
    task = Task(body={"group": {"image": "a.tif"}})
    with pytest.raises(InputError) as error:
        CellProfilerRecipe().plan(config(), task, PLACEHOLDER_WORKDIR)
    assert error.value.field == "pipeline" and "Distributed-CellProfiler" in error.value.problem


# --- LoadData CSVs ---------------------------------------------------------------------------


def test_rewrite_points_path_columns_at_the_local_images_and_keeps_the_rest() -> None:
    out = loaddata.rewrite_load_data(FLY_CSV, "/scratch/t1/inputs/images")
    local = "/scratch/t1/inputs/images/demo_project_folder/images"
    assert out == FLY_CSV.replace(IMAGES, local)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["Metadata_Position"] for r in rows] == ["002", "076", "218"]  # padding kept


def test_rewrite_keeps_quotes_line_endings_bom_and_unusual_cells_byte_for_byte() -> None:
    text = (
        "\ufeffImage_PathName_DNA,FileName_DNA,Metadata_Note,Metadata_Well,ObjectsPathName_Nuc\r\n"
        f'"{ROOT}/p, with comma",a.tif,"said ""hi""",A01,{ROOT}\r\n'
        f',b.tif,"multi\nline", 007 ,"labels/x"\r\n'
        "\r\n"
        f"{ROOT}/p,c.tif,x,B02,"
    )
    out = loaddata.rewrite_load_data(text, "/L")
    assert out == (
        "\ufeffImage_PathName_DNA,FileName_DNA,Metadata_Note,Metadata_Well,ObjectsPathName_Nuc\r\n"
        '"/L/p, with comma",a.tif,"said ""hi""",A01,/L\r\n'
        ',b.tif,"multi\nline", 007 ,/L/labels/x\r\n'
        "\r\n"
        "/L/p,c.tif,x,B02,"
    )


@pytest.mark.parametrize("path", ["/Users/me/images", "s3://bucket/images", f"{ROOT}/../etc"])
def test_a_path_that_names_no_bucket_key_is_reported_with_its_column_and_line(path: str) -> None:
    text = f"FileName_DNA,PathName_DNA\na.tif,{ROOT}/ok\nb.tif,{path}\n"
    with pytest.raises(InputError) as error:
        loaddata.rewrite_load_data(text, "/L", source="load_data.csv")
    assert error.value.source == "load_data.csv"
    assert error.value.field == "PathName_DNA (line 3)"


_CELL = st.text(alphabet=st.characters(blacklist_characters="\x00\r"), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_CELL, _CELL, st.sampled_from(["", "imgs", f"{ROOT}/a b"])), max_size=6)
)
def test_rewrite_changes_nothing_but_the_path_cells(rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Metadata_A", "FileName_X", "PathName_X"])
    writer.writerows(rows)
    out = loaddata.rewrite_load_data(buffer.getvalue(), "/L")
    before = list(csv.reader(io.StringIO(buffer.getvalue())))
    after = list(csv.reader(io.StringIO(out)))
    assert [r[:2] for r in after] == [r[:2] for r in before]
    for old, new in zip(before[1:], after[1:], strict=True):
        expected = {"": "", "imgs": "/L/imgs", f"{ROOT}/a b": "/L/a b"}[old[2]]
        assert new[2] == expected


def test_zero_padded_numbers_match_the_group_as_numbers() -> None:
    fly = table(FLY_CSV)
    assert loaddata.select_group_rows(fly, [("Metadata_Position", "2")]) == [0]
    assert loaddata.select_group_rows(fly, [("Metadata_Position", "076")]) == [1]
    assert loaddata.select_group_rows(fly, [("Metadata_Position", "218.0")]) == [2]
    assert loaddata.group_images(fly, [("Metadata_Position", "2")]) == [
        "demo_project_folder/images/01_POS002_D.TIF",
        "demo_project_folder/images/01_POS002_F.TIF",
        "demo_project_folder/images/01_POS002_R.TIF",
    ]
    # what CellProfiler's -g needs: it compares the text of the numbers it read
    assert loaddata.cellprofiler_group(fly, [("Metadata_Position", "002")]) == [
        ("Metadata_Position", "2")
    ]


def test_text_columns_compare_as_text_like_cellprofiler() -> None:
    # one non-number makes LoadData read the whole column as text: 01 is then not 1
    text = "FileName_X,PathName_X,Metadata_Site,Metadata_Well\na,p,01,A01\nb,p,1,A1\nc,p,x,A01\n"
    rows = table(text)
    assert loaddata.column_type(rows.column("Metadata_Site")) == "text"
    assert loaddata.select_group_rows(rows, [("Metadata_Site", "1")]) == [1]
    assert loaddata.select_group_rows(rows, [("Metadata_Well", "A01")]) == [0, 2]
    assert loaddata.select_group_rows(
        rows, [("Metadata_Well", "A01"), ("Metadata_Site", "01")]
    ) == [0]
    assert loaddata.cellprofiler_group(rows, [("Metadata_Site", "01")]) == [("Metadata_Site", "01")]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["1", "002", "-3"], "integer"),
        (["1", "2.5"], "float"),
        (["1", "nan"], "float"),
        (["1", ""], "text"),
        (["1", str(2**31)], "text"),  # LoadData keeps integers beyond 32 bits as text
        (["A01"], "text"),
    ],
)
def test_column_types_follow_loaddata(values: list[str], kind: str) -> None:
    assert loaddata.column_type(values) == kind


def test_url_columns_on_dcps_mount_are_downloaded_and_pointed_at_the_local_file() -> None:
    """CellProfiler's image set listing writes URL_ columns beside PathName_/FileName_, and
    LoadData reads the URL first: left at file:///home/ubuntu/bucket/… every task would fail.
    Other URLs (https, s3) are CellProfiler's to fetch: kept, not downloaded."""
    text = (
        "Metadata_Well,URL_DNA,PathName_DNA,FileName_DNA,URL_Cells,ObjectsURL_Nuc\n"
        f"A01,file://{ROOT}/proj/img/a%20b.tif,{ROOT}/proj/img,a b.tif,"
        f"https://example.org/c.tif,file://{ROOT}/proj/labels/n.png\n"
        f"B01,file://{ROOT}/proj/img/z.tif,{ROOT}/proj/img,z.tif,,\n"
    )
    assert loaddata.group_images(table(text), [("Metadata_Well", "A01")]) == [
        "proj/img/a b.tif",  # once, from its URL and its path columns alike
        "proj/labels/n.png",
    ]
    out = list(csv.DictReader(io.StringIO(loaddata.rewrite_load_data(text, "/s/images"))))
    assert out[0]["URL_DNA"] == "file:///s/images/proj/img/a%20b.tif"
    assert out[0]["PathName_DNA"] == "/s/images/proj/img"
    assert out[0]["URL_Cells"] == "https://example.org/c.tif"
    assert out[0]["ObjectsURL_Nuc"] == "file:///s/images/proj/labels/n.png"
    # A file:// URL off DCP's mount names no object of the bucket.
    elsewhere = "Metadata_Well,URL_DNA\nA01,file:///Users/me/images/a.tif\n"
    with pytest.raises(InputError) as caught:
        loaddata.group_images(table(elsewhere), [("Metadata_Well", "A01")])
    assert caught.value.field == "URL_DNA (line 2)"
    with pytest.raises(InputError):
        loaddata.rewrite_load_data(elsewhere, "/s/images")


def test_group_images_covers_every_file_column_once_in_row_order() -> None:
    text = (
        "FileName_DNA,PathName_DNA,ObjectsFileName_Nuc,ObjectsPathName_Nuc,Metadata_Well\n"
        f"a.tif,{ROOT}/img,a_nuc.png,labels,A01\n"
        f"b.tif,{ROOT}/img,,labels,A01\n"
        f"a.tif,{ROOT}/img,c.png,labels,B01\n"
        f"a.tif,{ROOT}/img/,a_nuc.png,labels/,A01\n"
    )
    assert loaddata.group_images(table(text), [("Metadata_Well", "A01")]) == [
        "img/a.tif",
        "labels/a_nuc.png",
        "img/b.tif",
    ]


@pytest.mark.parametrize(
    ("text", "group", "words"),
    [
        ("FileName_X,PathName_X,Metadata_Well\na,p,A01\n", [("Metadata_Well", "B01")], "no row"),
        (
            "FileName_X,PathName_X,Metadata_Well\na,p,A01\n",
            [("Metadata_Plate", "P")],
            "not a column",
        ),
        ("FileName_X,Metadata_Well\na,A01\n", [("Metadata_Well", "A01")], "PathName_X"),
        ("FileName_X,PathName_X,Metadata_Well\na, ,A01\n", [("Metadata_Well", "A01")], "is empty"),
        ('FileName_X,PathName_X\n"a,p\n', [("Metadata_Well", "A01")], "not closed"),
    ],
)
def test_selection_problems_are_input_errors_that_say_what_is_wrong(
    text: str, group: list[tuple[str, str]], words: str
) -> None:
    with pytest.raises(InputError) as error:
        loaddata.group_images(loaddata.read_load_data(text), group)
    assert words in str(error.value)


def test_file_lists_name_every_file_and_are_rewritten_line_by_line() -> None:
    text = f"{ROOT}/plate/a.tif\r\n\r\nplate/b.tif\r\nfile://{ROOT}/plate/a.tif\r\n"
    assert loaddata.file_list_images(text) == ["plate/a.tif", "plate/b.tif"]
    assert loaddata.rewrite_file_list(text, "/L") == (
        "/L/plate/a.tif\r\n\r\n/L/plate/b.tif\r\n/L/plate/a.tif\r\n"
    )
    with pytest.raises(InputError) as error:
        loaddata.file_list_images("/data/x.tif\n")
    assert error.value.field == "line 1"


# --- the command -----------------------------------------------------------------------------


def example_task(**changes: Any) -> Task:
    return tasks_of(job(**changes))[0]


def cp_part(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1 :]


def test_plan_downloads_workspace_files_and_runs_the_helper_then_cellprofiler() -> None:
    cfg = config(
        recipe={"executable": "/opt/cp/bin/cellprofiler"},
        storage=StorageConfig(
            bucket="logs", workspace_bucket="ws", source_bucket="img", destination_bucket="out"
        ),
    )
    plan = CellProfilerRecipe().plan(cfg, example_task(), WORKDIR)
    ws = "/scratch/t1/inputs/workspace/demo_project_folder/workspace"
    assert plan.inputs == [
        Input(EXAMPLE_JOB["pipeline"], f"workspace/{EXAMPLE_JOB['pipeline']}", "ws"),
        Input(EXAMPLE_JOB["data_file"], f"workspace/{EXAMPLE_JOB['data_file']}", "ws"),
    ]
    assert plan.output_bucket == "out"
    assert plan.output_prefix == "demo_project_folder/output/2"
    assert plan.argv[:3] == [sys.executable, "-m", TASK_MODULE]
    assert cp_part(plan.argv) == [
        "/opt/cp/bin/cellprofiler",
        "-c",
        "-r",
        "-p",
        f"{ws}/ExampleFly.cppipe",
        "-i",
        ws,
        "-o",
        "/scratch/t1/outputs",
        "-d",
        f"/scratch/t1/{DONE_FILE}",
        "--data-file=/scratch/t1/data_file/load_data.csv",
        "-g",
        "Metadata_Position=2",
        "-e",
        "imageio_reader",
    ]
    helper = plan.argv[: plan.argv.index("--")]
    assert helper[helper.index("--data-file") + 1] == f"{ws}/load_data.csv"
    assert helper[helper.index("--image-dir") + 1] == "/scratch/t1/inputs/images"


def test_tool_settings_add_plugins_always_continue_and_the_engine_choice() -> None:
    tool = ToolConfig(
        use_plugins=True,
        always_continue=True,
        update_plugins=True,
        plugins_commit="v1.2",
        install_requirements=True,
        requirements="cellpose",
    )
    cfg = config(
        tool=tool,
        recipe={"engine": "bioformats"},
        env={"CELLPROFILER_PLUGINS_REPO": "/srv/plugins"},
    )
    argv = CellProfilerRecipe().plan(cfg, example_task(), WORKDIR).argv
    command = cp_part(argv)
    assert command[-2:] == ["--plugins-directory=/srv/plugins/active_plugins", "--always-continue"]
    assert "-e" not in command
    helper = argv[: argv.index("--")]
    assert helper[helper.index("--plugins-repo") + 1] == "/srv/plugins"
    assert helper[helper.index("--plugins-commit") + 1] == "v1.2"
    assert helper[helper.index("--requirements") + 1] == "cellpose"
    assert {"--update-plugins", "--install-requirements"} <= set(helper)
    # DCP's PLUGINS_COMMIT = 'False' means "do not check out"
    off = config(tool=ToolConfig(use_plugins=True, plugins_commit="False"))
    assert "--plugins-commit" not in CellProfilerRecipe().plan(off, example_task(), WORKDIR).argv


def test_file_lists_and_batch_files_change_the_data_flag_and_the_inputs() -> None:
    txt = CellProfilerRecipe().plan(config(), example_task(data_file="w/files.txt"), WORKDIR)
    assert "--file-list=/scratch/t1/data_file/files.txt" in cp_part(txt.argv)
    batch = example_task(pipeline="w/Batch_data.h5", data_file="w/Batch_data.h5")
    plan = CellProfilerRecipe().plan(config(), batch, WORKDIR)
    command = cp_part(plan.argv)
    assert not any(a.startswith(("--data-file", "--file-list")) for a in command)
    assert command[command.index("-p") + 1].endswith("workspace/w/Batch_data.h5")
    assert plan.inputs == [Input("w/Batch_data.h5", "workspace/w/Batch_data.h5", "")]


def test_the_default_engine_is_imageio_off_aws_and_every_reader_on_aws() -> None:
    """Locally and on Slurm (often offline) Bio-Formats' downloads fail: imageio. On AWS,
    every reader, as DCP's image runs CellProfiler (4.2, which has no -e option at all)."""
    for backend, flags in (
        ("local", ["-e", "imageio_reader"]),
        ("slurm", ["-e", "imageio_reader"]),
    ):
        command = cp_part(
            CellProfilerRecipe().plan(config(backend=backend), example_task(), WORKDIR).argv
        )
        assert command[-2:] == flags
    on_aws = cp_part(CellProfilerRecipe().plan(config(backend="aws"), example_task(), WORKDIR).argv)
    assert "-e" not in on_aws
    asked = config(backend="aws", recipe={"engine": "imageio"})
    assert cp_part(CellProfilerRecipe().plan(asked, example_task(), WORKDIR).argv)[-2:] == [
        "-e",
        "imageio_reader",
    ]


def test_an_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(InputError) as error:
        CellProfilerRecipe().plan(config(recipe={"engine": "fiji"}), example_task(), WORKDIR)
    assert error.value.source == "config" and error.value.field == "recipe.engine"


def test_the_executable_is_the_configured_one_then_path_then_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path, venv = tmp_path / "path", tmp_path / "venv" / "bin"
    on_path.mkdir()
    venv.mkdir(parents=True)
    for folder in (on_path, venv):
        tool = folder / "cellprofiler"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    assert cp.find_executable("/opt/cp") == "/opt/cp"
    assert cp.find_executable() == str(on_path / "cellprofiler")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cp.find_executable() == str(venv / "cellprofiler")
    (venv / "cellprofiler").unlink()
    assert cp.find_executable() == "cellprofiler"


def test_the_recipe_is_registered() -> None:
    assert isinstance(get_recipe("cellprofiler", source="ds.toml"), CellProfilerRecipe)


# --- the second round of inputs --------------------------------------------------------------


def staged(tmp_path: Path, task: Task, text: str) -> Workdir:
    workdir = Workdir(tmp_path / "task")
    paths = TaskPaths.of(cp.job_of(task), workdir)
    assert paths.data_file is not None
    paths.data_file.parent.mkdir(parents=True)
    paths.data_file.write_text(text)
    return workdir


def test_more_inputs_are_the_group_images_from_the_source_bucket(tmp_path: Path) -> None:
    task = example_task(groups=[{"Metadata": "Metadata_Position=76"}])
    workdir = staged(tmp_path, task, FLY_CSV)
    cfg = config(storage=StorageConfig(source_bucket="img"))
    assert CellProfilerRecipe().more_inputs(cfg, task, workdir) == [
        Input(
            f"demo_project_folder/images/01_POS076_{c}.TIF",
            f"images/demo_project_folder/images/01_POS076_{c}.TIF",
            "img",
        )
        for c in "DFR"
    ]


def test_more_inputs_of_file_lists_and_batch_files(tmp_path: Path) -> None:
    task = example_task(data_file="w/files.txt")
    workdir = staged(tmp_path, task, f"{ROOT}/a/1.tif\n{ROOT}/a/2.tif\n")
    assert [i.key for i in CellProfilerRecipe().more_inputs(config(), task, workdir)] == [
        "a/1.tif",
        "a/2.tif",
    ]
    batch = example_task(pipeline="w/B.h5", data_file="w/B.h5")
    assert CellProfilerRecipe().more_inputs(config(), batch, Workdir(tmp_path / "b")) == []


def test_more_inputs_fails_with_the_data_files_name_when_the_group_has_no_rows(
    tmp_path: Path,
) -> None:
    task = example_task(groups=[{"Metadata": "Metadata_Position=5"}])
    workdir = staged(tmp_path, task, FLY_CSV)
    with pytest.raises(InputError) as error:
        CellProfilerRecipe().more_inputs(config(), task, workdir)
    assert error.value.source == EXAMPLE_JOB["data_file"] and "no row" in error.value.problem


# --- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("done", "code", "error", "expected"),
    [
        ("Complete\n", 0, None, None),
        ("Complete", 0, None, None),
        ("Complete\n", 1, None, "exited with exit code 1"),
        ("Failure\n", 255, None, "reported Failure"),
        ("Failure\n", 0, None, "reported Failure"),
        (None, 0, None, "wrote no done file"),
        (None, -9, None, "killed by signal 9"),
        ("", 0, None, "not Complete"),
        (
            None,
            2,
            "the group matches no row\n",
            "task setup failed (exit code 2): the group matches",
        ),
    ],
)
def test_success_needs_exit_zero_and_complete_in_the_done_file(
    tmp_path: Path, done: str | None, code: int, error: str | None, expected: str | None
) -> None:
    workdir = Workdir(tmp_path)
    if done is not None:
        (tmp_path / DONE_FILE).write_text(done)
    if error is not None:
        (tmp_path / TASK_ERROR_FILE).write_text(error)
    reason = CellProfilerRecipe().check_success(code, workdir)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


# --- the in-task helper ------------------------------------------------------------------------


class Exec:
    """Stands in for os.execv: records what would have run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, path: str, argv: list[str]) -> None:
        self.calls.append((path, argv))


def fake_cellprofiler(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    python = folder / "python"
    python.write_text("")
    tool = folder / "cellprofiler"
    tool.write_text(f"#!{python}\n")
    tool.chmod(0o755)
    return tool


def prepared_task(
    tmp_path: Path, group: str = "Metadata_Position=002", images: bool = True
) -> tuple[Workdir, list[str]]:
    task = example_task(groups=[{"Metadata": group}])
    workdir = staged(tmp_path, task, FLY_CSV)
    workdir.create()
    cfg = config(recipe={"executable": str(fake_cellprofiler(tmp_path / "cp"))})
    recipe = CellProfilerRecipe()
    if images:
        for item in recipe.more_inputs(cfg, task, workdir):
            target = workdir.input_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"tif")
    return workdir, recipe.plan(cfg, task, workdir).argv


def test_helper_rewrites_the_csv_fixes_the_group_for_cellprofiler_and_execs_it(
    tmp_path: Path,
) -> None:
    workdir, argv = prepared_task(tmp_path)
    execv = Exec()
    assert cellprofiler_task.main(argv[3:], execv=execv) == 0
    ((path, command),) = execv.calls
    assert path == str(tmp_path / "cp" / "cellprofiler")
    assert command == [
        a if a != "Metadata_Position=002" else "Metadata_Position=2" for a in cp_part(argv)
    ]
    rewritten = (workdir.root / "data_file" / "load_data.csv").read_text()
    assert rewritten == FLY_CSV.replace(
        IMAGES, f"{workdir.input_dir}/images/demo_project_folder/images"
    )
    assert (workdir.input_dir / "workspace" / "demo_project_folder" / "workspace").is_dir()
    assert not (workdir.root / TASK_ERROR_FILE).exists()


def test_helper_stops_with_a_reason_when_images_were_not_staged(tmp_path: Path) -> None:
    workdir, argv = prepared_task(tmp_path, images=False)
    execv = Exec()
    assert cellprofiler_task.main(argv[3:], execv=execv) == 2
    assert execv.calls == []
    reason = CellProfilerRecipe().check_success(2, workdir)
    assert reason is not None and "more_inputs" in reason and "01_POS002_D.TIF" in reason


def test_helper_reports_a_missing_cellprofiler(tmp_path: Path) -> None:
    workdir, argv = prepared_task(tmp_path)
    command_at = argv.index("--") + 1
    argv[command_at] = str(tmp_path / "nowhere" / "cellprofiler")
    assert cellprofiler_task.main(argv[3:], execv=Exec()) == 2
    assert "install-cellprofiler.sh" in (workdir.root / TASK_ERROR_FILE).read_text()


def plugin_argv(tmp_path: Path, repo: Path, *flags: str) -> list[str]:
    tool = fake_cellprofiler(tmp_path / "cp")
    return [
        "--kind", "h5", "--image-dir", str(tmp_path / "img"), "--group", "Metadata_A=1",
        "--error-file", str(tmp_path / "err"), "--plugins-repo", str(repo), *flags,
        "--", str(tool), "-c", "-r", f"--plugins-directory={repo}/active_plugins",
    ]  # fmt: skip


def test_helper_runs_dcps_plugin_steps_in_the_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "CellProfiler-plugins"
    (repo / "active_plugins").mkdir(parents=True)
    calls: list[tuple[list[str], Path]] = []

    def run(argv: list[str], *, cwd: Path, check: bool) -> None:
        calls.append((argv, cwd))

    flags = (
        "--update-plugins",
        "--plugins-commit",
        "v1",
        "--install-requirements",
        "--requirements",
        "cellpose",
    )
    execv = Exec()
    assert cellprofiler_task.main(plugin_argv(tmp_path, repo, *flags), run=run, execv=execv) == 0
    python = str(tmp_path / "cp" / "python")
    assert calls == [
        (["git", "fetch", "--all"], repo),
        (["git", "checkout", "v1"], repo),
        ([python, "-m", "pip", "install", "-e", f"{repo}[cellpose]"], repo),
    ]
    assert execv.calls[0][1][-1] == f"--plugins-directory={repo}/active_plugins"


def test_helper_falls_back_to_the_checkout_and_reports_failed_plugin_steps(tmp_path: Path) -> None:
    repo = tmp_path / "plugins"
    repo.mkdir()
    (repo / "requirements.txt").write_text("")
    execv = Exec()
    assert cellprofiler_task.main(plugin_argv(tmp_path, repo), execv=execv) == 0
    assert execv.calls[0][1][-1] == f"--plugins-directory={repo}"

    def failing(argv: list[str], *, cwd: Path, check: bool) -> None:
        raise subprocess.CalledProcessError(1, argv)

    flags = ("--install-requirements", "--requirements", "requirements.txt")
    assert (
        cellprofiler_task.main(plugin_argv(tmp_path, repo, *flags), run=failing, execv=execv) == 1
    )
    assert "pip install -r" in (tmp_path / "err").read_text()
    missing = plugin_argv(tmp_path, tmp_path / "absent")
    assert cellprofiler_task.main(missing, execv=execv) == 2
    assert "CELLPROFILER_PLUGINS_REPO" in (tmp_path / "err").read_text()


def test_helper_git_steps_work_on_a_real_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "plugins"
    (repo / "active_plugins").mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    git = ["git", "-C", str(repo)]
    if subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("git is not installed")
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    (repo / "active_plugins" / "plugin_a.py").write_text("A = 1\n")
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "one"], check=True, env=env)
    subprocess.run([*git, "tag", "v1"], check=True, env=env)
    (repo / "active_plugins" / "plugin_a.py").write_text("A = 2\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True, env=env)
    flags = ("--update-plugins", "--plugins-commit", "v1")
    assert cellprofiler_task.main(plugin_argv(tmp_path, repo, *flags), execv=Exec()) == 0
    assert (repo / "active_plugins" / "plugin_a.py").read_text() == "A = 1\n"


def test_plugin_steps_run_once_per_run_and_update_pulls_as_dcp_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP's run-worker.sh fetches and pulls, checks out and installs once per container;
    run by each task of a machine at once, git and pip collided in the shared checkout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    upstream, repo = tmp_path / "upstream", tmp_path / "CellProfiler-plugins"
    (upstream / "active_plugins").mkdir(parents=True)
    (upstream / "active_plugins" / "plugin_a.py").write_text("A = 1\n")
    subprocess.run(["git", "-C", str(upstream), "init", "-q", "-b", "main"], check=True, env=env)
    subprocess.run(["git", "-C", str(upstream), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(upstream), "commit", "-qm", "one"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", str(upstream), str(repo)], check=True, env=env)
    (upstream / "active_plugins" / "plugin_a.py").write_text("A = 2\n")
    subprocess.run(["git", "-C", str(upstream), "commit", "-qam", "two"], check=True, env=env)

    monkeypatch.setenv("DS_RUN_ID", "run-1")
    argv = plugin_argv(tmp_path, repo, "--update-plugins")
    assert cellprofiler_task.main(argv, execv=Exec()) == 0
    assert (repo / "active_plugins" / "plugin_a.py").read_text() == "A = 2\n"  # pulled

    calls: list[list[str]] = []

    def run(argv: list[str], *, cwd: Path, check: bool) -> None:
        calls.append(argv)

    assert cellprofiler_task.main(argv, run=run, execv=Exec()) == 0
    assert calls == []  # the same run on this machine: done already
    monkeypatch.setenv("DS_RUN_ID", "run-2")
    assert cellprofiler_task.main(argv, run=run, execv=Exec()) == 0
    assert calls == [["git", "fetch", "--all"], ["git", "pull", "--ff-only"]]
    monkeypatch.delenv("DS_RUN_ID")  # outside a run: every time
    assert cellprofiler_task.main(argv, run=run, execv=Exec()) == 0
    assert len(calls) == 4


def test_a_relative_path_in_a_load_data_csv_is_under_the_jobs_input_folder() -> None:
    """LoadData resolves a relative PathName_ against its base image location, by default
    CellProfiler's default input folder: on DCP's mount /home/ubuntu/bucket/<input>."""
    text = f"Metadata_Well,PathName_DNA,FileName_DNA\nA01,images/P1,a.tif\nB01,{ROOT}/abs,b.tif\n"
    keys = loaddata.group_images(table(text), [("Metadata_Well", "A01")], base="projects/X/")
    assert keys == ["projects/X/images/P1/a.tif"]
    out = loaddata.rewrite_load_data(text, "/s/images", base="projects/X")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["PathName_DNA"] for r in rows] == ["/s/images/projects/X/images/P1", "/s/images/abs"]
    # The plan tells the helper where that is; the worker downloads from there.
    task = example_task()
    job = cp.job_of(task)
    argv = CellProfilerRecipe().plan(config(), task, WORKDIR).argv
    helper = argv[: argv.index("--")]
    assert helper[helper.index("--relative-to") + 1] == job.input.strip("/")


def test_with_always_continue_a_missing_image_is_cellprofilers_to_skip(tmp_path: Path) -> None:
    """DCP reads images through its bucket mount: with ALWAYS_CONTINUE, CellProfiler skips
    an image set it cannot read and the task succeeds with the others. ds downloads them:
    a missing one is passed over (optional), not the task's failure."""
    task = example_task(groups=[{"Metadata": "Metadata_Position=76"}])
    workdir = staged(tmp_path, task, FLY_CSV)
    keep_going = config(tool=ToolConfig(always_continue=True))
    assert all(i.optional for i in CellProfilerRecipe().more_inputs(keep_going, task, workdir))
    assert not any(i.optional for i in CellProfilerRecipe().more_inputs(config(), task, workdir))

    # The worker passes over a missing optional input, and fails on a missing required one.
    storage = FolderStorage(tmp_path / "bucket")
    storage.put_bytes("img/there.tif", b"tif")
    worker = object.__new__(Worker)  # its download alone, from this storage
    worker._bucket = lambda bucket, role: storage  # type: ignore[method-assign]
    worker._download([Input("img/missing.tif", "images/m.tif", "", True)], workdir)
    worker._download([Input("img/there.tif", "images/t.tif")], workdir)
    assert (workdir.input_dir / "images" / "t.tif").read_bytes() == b"tif"
    with pytest.raises(FileNotFoundError):
        worker._download([Input("img/missing.tif", "images/m.tif")], workdir)

    # The helper says which images are missing and lets CellProfiler run.
    workdir, argv = prepared_task(tmp_path / "p", images=False)
    cp_at = argv.index("--")
    argv.insert(cp_at + 3, "--always-continue")
    execv = Exec()
    assert cellprofiler_task.main(argv[3:], execv=execv) == 0 and execv.calls
    assert "--always-continue" in execv.calls[0][1]


def test_a_well_made_of_row_and_column_is_a_column_to_group_by_as_in_loaddata() -> None:
    """CellProfiler's LoadData adds Metadata_Well (row text + column text) to a CSV that has
    a well row and a well column but no well: a DCP group may name it."""
    text = (
        "Metadata_Plate,Metadata_Row,Metadata_Col,PathName_DNA,FileName_DNA\n"
        f"P1,B,03,{ROOT}/img,a.tif\nP1,C,04,{ROOT}/img,b.tif\n"
    )
    keys = loaddata.group_images(table(text), [("Metadata_Plate", "P1"), ("Metadata_Well", "B03")])
    assert keys == ["img/a.tif"]
    # A CSV with its own Metadata_Well keeps it as written.
    own = "Metadata_Well,Metadata_Row,Metadata_Col\nX9,B,03\n"
    assert table(own).columns == ["Metadata_Well", "Metadata_Row", "Metadata_Col"]
    # The CSV handed to CellProfiler is not changed: LoadData makes the column itself.
    assert loaddata.rewrite_load_data(text, "/s").count("Metadata_Well") == 0


def test_an_empty_input_is_the_bucket_root_as_in_dcp() -> None:
    """DCP passes -i /home/ubuntu/bucket/ for "input": "": the default input folder is the
    workspace bucket's root."""
    task = example_task(input="")
    argv = cp_part(CellProfilerRecipe().plan(config(), task, WORKDIR).argv)
    assert argv[argv.index("-i") + 1] == "/scratch/t1/inputs/workspace"
    assert "--relative-to" not in CellProfilerRecipe().plan(config(), task, WORKDIR).argv
