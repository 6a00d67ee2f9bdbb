"""Cell Painting job files: wells, groups per step, DCP paths, overrides, files and errors.

The expected paths and names are those of Distributed-CellProfiler 2.2's run_batch_general.py.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distributed_something.errors import InputError
from distributed_something.jobs import cellpainting as cp
from distributed_something.jobs.cellpainting import (
    ARGUMENTS,
    STEPS,
    CellPaintingSpec,
    groups,
    job,
    job_files,
    sites,
    spec_from_options,
    wells,
    write_job,
    write_jobs,
)
from distributed_something.jobs.parse import load_job_file, parse_job_text

PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"

#: The Metadata keys each step groups by (one task per plate / well / site).
STEP_KEYS: dict[str, tuple[str, ...]] = {
    "zproj": (PLATE, WELL, SITE),
    "illum": (PLATE,),
    "qc": (PLATE, WELL),
    "qc_persite": (PLATE, WELL, SITE),
    "assaydev": (PLATE, WELL),
    "assaydev_persite": (PLATE, WELL, SITE),
    "analysis": (PLATE, WELL, SITE),
}


def spec(**values: Any) -> CellPaintingSpec:
    base: dict[str, Any] = {"step": "analysis", "project": "Proj", "batch": "B1", "plates": ["P1"]}
    base.update(values)
    return CellPaintingSpec(**{k: v for k, v in base.items() if v is not None})


def metadata(group: str) -> dict[str, str]:
    return dict(pair.split("=") for pair in group.split(","))


def parse(content: dict[str, Any]) -> Any:
    return parse_job_text(json.dumps(content), source="job.json", suffix=".json")


def error_of(**values: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        spec(**values)
    assert caught.value.source == "argument"
    return caught.value


# --- wells --------------------------------------------------------------------------------


@pytest.mark.parametrize(("plate_format", "n_rows", "n_columns"), [(96, 8, 12), (384, 16, 24)])
def test_wells_cover_the_plate_row_major(plate_format: int, n_rows: int, n_columns: int) -> None:
    result = wells(spec(plate_format=plate_format))
    assert len(result) == plate_format == n_rows * n_columns
    assert len(set(result)) == len(result)
    expected = [
        f"{row}{column:02d}"
        for row in string.ascii_uppercase[:n_rows]
        for column in range(1, n_columns + 1)
    ]
    assert result == expected
    assert result[:2] == ["A01", "A02"]
    assert result[n_columns] == "B01"
    assert result[-1] == f"{string.ascii_uppercase[n_rows - 1]}{n_columns}"


def test_default_plate_format_is_384() -> None:
    assert len(wells(spec())) == 384


def test_wells_without_padding() -> None:
    result = wells(spec(plate_format=96, pad_wells=False))
    assert result[:3] == ["A1", "A2", "A3"]
    assert "A10" in result
    assert result[-1] == "H12"
    assert not any(well[1] == "0" for well in result)


def test_rows_and_columns_select_within_the_layout_in_plate_order() -> None:
    result = wells(spec(plate_format=96, rows=["c", "A"], columns=[11, 2]))
    assert result == ["A02", "A11", "C02", "C11"]


def test_rows_only_keep_every_column() -> None:
    result = wells(spec(plate_format=384, rows=["P"]))
    assert result == [f"P{column:02d}" for column in range(1, 25)]


def test_explicit_wells_keep_their_order_and_follow_the_padding() -> None:
    given = ["C7", "a01", "B03", "A1"]  # A1 repeats a01
    assert wells(spec(wells=given)) == ["C07", "A01", "B03"]
    assert wells(spec(wells=given, pad_wells=False)) == ["C7", "A1", "B3"]


def test_excluded_wells_are_left_out() -> None:
    result = wells(spec(plate_format=96, exclude_wells=["A1", "h12"]))
    assert len(result) == 94
    assert "A01" not in result
    assert "H12" not in result
    assert "A02" in result


def test_exclusions_apply_to_explicit_wells() -> None:
    assert wells(spec(wells=["A01", "B02", "C03"], exclude_wells=["B2"])) == ["A01", "C03"]


def test_sites_default_to_nine_and_accept_a_count() -> None:
    assert sites(spec()) == list(range(1, 10))
    assert sites(spec(sites=4)) == [1, 2, 3, 4]
    assert sites(spec(sites=[3, 1, 3])) == [3, 1]


# --- groups per step ----------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_groups_per_step(step: str) -> None:
    the_spec = spec(step=step, plates=["P1", "P2"], plate_format=96, sites=3)
    result = groups(the_spec)
    keys = STEP_KEYS[step]
    expected = 2 * (96 if WELL in keys else 1) * (3 if SITE in keys else 1)
    assert len(result) == expected
    assert len(set(result)) == len(result)
    for group in result:
        assert tuple(metadata(group)) == keys
    assert {metadata(group)[PLATE] for group in result} == {"P1", "P2"}


def test_groups_run_plate_then_well_then_site() -> None:
    result = groups(spec(plates=["P1", "P2"], plate_format=96, sites=2))
    assert result[:3] == [
        "Metadata_Plate=P1,Metadata_Well=A01,Metadata_Site=1",
        "Metadata_Plate=P1,Metadata_Well=A01,Metadata_Site=2",
        "Metadata_Plate=P1,Metadata_Well=A02,Metadata_Site=1",
    ]
    assert result[96 * 2] == "Metadata_Plate=P2,Metadata_Well=A01,Metadata_Site=1"


def test_illum_groups_are_plates_whatever_the_wells() -> None:
    result = groups(spec(step="illum", plates=["P1", "P2"], rows=["A"], sites=3))
    assert result == ["Metadata_Plate=P1", "Metadata_Plate=P2"]


def test_groups_use_the_unpadded_spelling_when_asked() -> None:
    result = groups(spec(step="qc", plate_format=96, pad_wells=False))
    assert result[0] == "Metadata_Plate=P1,Metadata_Well=A1"


# --- the job ------------------------------------------------------------------------------

ROOT = "projects/Proj"
DEFAULTS: dict[str, dict[str, str]] = {
    "zproj": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/Zproj.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data_unprojected.csv",
        "output": f"{ROOT}/B1/images_projected",
        "output_structure": "Metadata_Plate",
    },
    "illum": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/illum.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data.csv",
        "output": f"{ROOT}/B1/illum",
        "output_structure": "",
    },
    "qc": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/qc.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data.csv",
        "output": f"{ROOT}/workspace/qc/B1/results",
        "output_structure": "",
    },
    "qc_persite": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/qc.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data.csv",
        "output": f"{ROOT}/workspace/qc/B1/results",
        "output_structure": "",
    },
    "assaydev": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/assaydev.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data_with_illum.csv",
        "output": f"{ROOT}/workspace/assaydev/B1",
        "output_structure": "",
    },
    "assaydev_persite": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/assaydev.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data_with_illum.csv",
        "output": f"{ROOT}/workspace/assaydev/B1",
        "output_structure": "",
    },
    "analysis": {
        "pipeline": f"{ROOT}/workspace/pipelines/B1/analysis.cppipe",
        "data_file": f"{ROOT}/workspace/load_data_csv/B1/P1/load_data_with_illum.csv",
        "output": f"{ROOT}/workspace/analysis/B1",
        "output_structure": "Metadata_Plate/analysis/Metadata_Plate-Metadata_Well-Metadata_Site",
    },
}


@pytest.mark.parametrize("step", STEPS)
def test_default_layout_matches_run_batch_general(step: str) -> None:
    content = job(spec(step=step))
    for key, value in DEFAULTS[step].items():
        assert content[key] == value, key
    assert content["input"] == f"{ROOT}/workspace/qc/B1/rules"


GALLERY = "cpg0000-jump-pilot/source_4"


@pytest.mark.parametrize(
    ("step", "output"),
    [
        ("zproj", f"{GALLERY}/images/B1/images_projected"),
        ("illum", f"{GALLERY}/images/B1/illum"),
        ("qc", f"{GALLERY}/workspace/qc/B1/results"),
        ("assaydev_persite", f"{GALLERY}/workspace/assaydev/B1"),
        ("analysis", f"{GALLERY}/workspace/analysis/B1"),
    ],
)
def test_gallery_layout(step: str, output: str) -> None:
    content = job(
        spec(
            step=step,
            project=None,
            path_style="gallery",
            dataset="cpg0000-jump-pilot",
            source="source_4",
        )
    )
    assert content["output"] == output
    assert content["input"] == f"{GALLERY}/workspace/qc/B1/rules"
    assert content["pipeline"].startswith(f"{GALLERY}/workspace/pipelines/B1/")
    assert content["data_file"].startswith(f"{GALLERY}/workspace/load_data_csv/B1/P1/")


def test_cpg_is_accepted_for_the_gallery_style() -> None:
    the_spec = spec(project=None, path_style="cpg", dataset="cpg0016-jump", source="source_2")
    assert the_spec.path_style == "gallery"
    assert job(the_spec)["output"] == "cpg0016-jump/source_2/workspace/analysis/B1"


def test_overrides_replace_the_defaults() -> None:
    content = job(
        spec(
            step="qc",
            pipeline="my_qc.cppipe",
            pipeline_path="shared/pipelines/",
            data_file="load_data_custom.csv",
            data_file_path="shared/csvs",
            input_path="shared/input",
            output_path="shared/out",
            output_structure="Metadata_Plate/Metadata_Well",
        )
    )
    assert content["pipeline"] == "shared/pipelines/my_qc.cppipe"
    assert content["data_file"] == "shared/csvs/P1/load_data_custom.csv"
    assert content["input"] == "shared/input"
    assert content["output"] == "shared/out"
    assert content["output_structure"] == "Metadata_Plate/Metadata_Well"


def test_an_empty_output_structure_asks_for_dcps_default() -> None:
    assert job(spec(output_structure=""))["output_structure"] == ""


def test_batch_files_serve_as_pipeline_and_data_file() -> None:
    content = job(spec(step="illum", use_batch=True, plates=["P1", "P2"]))
    expected = f"{ROOT}/workspace/batchfiles/B1/Batch_data_illum.h5"
    assert content["pipeline"] == content["data_file"] == expected
    assert len(content["groups"]) == 2


def test_batch_file_overrides_imply_batch_mode() -> None:
    named = job(spec(batch_file="Batch_custom.h5"))
    assert named["data_file"] == f"{ROOT}/workspace/batchfiles/B1/Batch_custom.h5"
    placed = job(spec(batch_file_path="elsewhere/h5"))
    assert placed["pipeline"] == "elsewhere/h5/Batch_data_analysis.h5"


def test_gallery_batch_files_need_their_folder() -> None:
    gallery = {"project": None, "path_style": "gallery", "dataset": "cpg1", "source": "s1"}
    error = error_of(use_batch=True, **gallery)
    assert error.field == "--batch-file-path"
    content = job(spec(use_batch=True, batch_file_path="cpg1/s1/workspace/batchfiles", **gallery))
    assert content["data_file"] == "cpg1/s1/workspace/batchfiles/Batch_data_analysis.h5"


@pytest.mark.parametrize("step", STEPS)
def test_the_job_parses_as_dcp_with_one_task_per_group(step: str) -> None:
    the_spec = spec(step=step, plate_format=96, sites=2, exclude_wells=["A01"])
    content = job(the_spec)
    parsed = parse(content)
    assert parsed.format == "dcp"
    assert parsed.duplicates == []
    assert len(parsed.tasks) == len(groups(the_spec))
    assert [task.body["Metadata"] for task in parsed.tasks] == groups(the_spec)
    first = parsed.tasks[0].body
    for key in ("pipeline", "data_file", "input", "output", "output_structure"):
        assert first[key] == content[key]
    assert "_comment" not in first


def test_several_plates_with_load_data_csvs_need_one_file_each() -> None:
    the_spec = spec(plates=["P1", "P2"], plate_format=96, sites=1)
    with pytest.raises(InputError) as caught:
        job(the_spec)
    assert caught.value.field == "--plates"
    files = job_files(the_spec, Path("out/analysis.json"))
    assert list(files) == [Path("out/analysis_P1.json"), Path("out/analysis_P2.json")]
    for plate, content in zip(["P1", "P2"], files.values(), strict=True):
        assert content["data_file"].endswith(f"/{plate}/load_data_with_illum.csv")
        parsed = parse(content)
        assert len(parsed.tasks) == 96
        assert {metadata(t.body["Metadata"])[PLATE] for t in parsed.tasks} == {plate}


def test_a_plate_placeholder_names_the_files() -> None:
    files = job_files(spec(plates=["P1", "P2"]), Path("jobs/{plate}/analysis.json"))
    assert list(files) == [Path("jobs/P1/analysis.json"), Path("jobs/P2/analysis.json")]
    # With batch files one file would do, but the placeholder still splits by plate.
    split = job_files(spec(plates=["P1", "P2"], use_batch=True), Path("a_{plate}.json"))
    assert list(split) == [Path("a_P1.json"), Path("a_P2.json")]
    together = job_files(spec(plates=["P1", "P2"], use_batch=True), Path("a.json"))
    assert list(together) == [Path("a.json")]
    assert len(together[Path("a.json")]["groups"]) == 2 * 384 * 9


# --- writing ------------------------------------------------------------------------------


def test_write_job_writes_json_that_reads_back(tmp_path: Path) -> None:
    target = tmp_path / "files" / "illum.json"
    the_spec = spec(step="illum", plates=["P1"])
    assert write_job(the_spec, target) == target
    assert json.loads(target.read_text(encoding="utf-8")) == job(the_spec)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    loaded = load_job_file(target)
    assert loaded.format == "dcp"
    assert [task.body["Metadata"] for task in loaded.tasks] == ["Metadata_Plate=P1"]


def test_written_files_keep_one_group_per_line(tmp_path: Path) -> None:
    target = tmp_path / "qc.json"
    write_job(spec(step="qc", plate_format=96), target)
    lines = target.read_text(encoding="utf-8").splitlines()
    group_lines = [line for line in lines if '"Metadata":' in line]
    assert len(group_lines) == 96
    assert len(load_job_file(target).tasks) == 96


def test_write_job_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "qc.json"
    target.write_text("keep me", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        write_job(spec(step="qc"), target)
    assert caught.value.source == str(target)
    assert "--force" in caught.value.fix
    assert target.read_text(encoding="utf-8") == "keep me"
    write_job(spec(step="qc"), target, force=True)
    assert json.loads(target.read_text(encoding="utf-8"))["pipeline"].endswith("qc.cppipe")


def test_write_job_refuses_a_spec_needing_several_files(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_job(spec(plates=["P1", "P2"]), tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


def test_write_jobs_writes_nothing_when_one_target_exists(tmp_path: Path) -> None:
    (tmp_path / "a_P2.json").write_text("old", encoding="utf-8")
    the_spec = spec(plates=["P1", "P2"], plate_format=96)
    with pytest.raises(InputError) as caught:
        write_jobs(the_spec, tmp_path / "a.json")
    assert caught.value.source == str(tmp_path / "a_P2.json")
    assert not (tmp_path / "a_P1.json").exists()
    written = write_jobs(the_spec, tmp_path / "a.json", force=True)
    assert written == [tmp_path / "a_P1.json", tmp_path / "a_P2.json"]
    for path in written:
        parse(json.loads(path.read_text(encoding="utf-8")))


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "in_problem"),
    [
        ({"step": "segment"}, "step", "segment"),
        ({"plate_format": 96, "rows": ["K"]}, "--rows", "96-well"),
        ({"plate_format": 96, "columns": [13]}, "--columns", "13"),
        ({"plate_format": 96, "wells": ["A01", "I01"]}, "--wells", "I1"),
        ({"wells": ["Q1"]}, "--wells", "Q1"),
        ({"wells": ["1A"]}, "--wells", "1A"),
        ({"exclude_wells": ["Z99"]}, "--exclude-wells", "Z99"),
        ({"wells": ["A01"], "rows": ["A"]}, "--wells", "--rows"),
        ({"rows": ["AA"]}, "--rows", "AA"),
        ({"sites": 0}, "--sites", "0"),
        ({"sites": [1, 0]}, "--sites", "0"),
        ({"sites": []}, "--sites", "empty"),
        ({"plate_format": 48}, "--plate-format", "48"),
        ({"plates": []}, "--plates", "empty"),
        ({"plates": ["P1,P2"]}, "--plates", "P1,P2"),
        ({"plates": ["my plate"]}, "--plates", "my plate"),
        ({"batch": None}, "--batch", "required"),
        ({"project": None}, "--project", "required"),
        ({"dataset": "cpg1"}, "--dataset", "gallery"),
        ({"project": None, "path_style": "gallery", "source": "s"}, "--dataset", "required"),
        ({"project": None, "path_style": "gallery", "dataset": "d"}, "--source", "required"),
        ({"path_style": "gallery", "dataset": "d", "source": "s"}, "--project", "gallery"),
        ({"path_style": "s3"}, "--path-style", "s3"),
        ({"data_file": "load_data.txt"}, "--data-file", "csv"),
        ({"batch_file": "batch.cppipe"}, "--batch-file", "h5"),
        ({"use_batch": True, "pipeline": "a.cppipe"}, "--pipeline", "batch file"),
        ({"output_path": "/home/ubuntu/bucket/out"}, "--output-path", "relative"),
        ({"input_path": "s3://bucket/in"}, "--input-path", "URL"),
        ({"pipeline_path": "projects/../other"}, "--pipeline-path", ".."),
        ({"data_file_path": "my csvs"}, "--data-file-path", "whitespace"),
        (
            {"step": "qc", "output_structure": "Metadata_Plate/Metadata_Site"},
            "--output-structure",
            "Metadata_Site",
        ),
        (
            {"plate_format": 96, "rows": ["A"], "exclude_wells": [f"A{c}" for c in range(1, 13)]},
            "--exclude-wells",
            "every",
        ),
    ],
)
def test_bad_values_name_the_option(values: dict[str, Any], field: str, in_problem: str) -> None:
    error = error_of(**values)
    assert error.field == field
    assert in_problem in error.problem
    assert error.fix


def test_an_unknown_field_is_reported() -> None:
    error = error_of(platelist=["P1"])
    assert error.field == "platelist"
    assert "plates" in error.fix


def test_the_error_message_reads_on_one_line() -> None:
    message = str(error_of(plate_format=96, rows=["K"]))
    assert message.startswith("argument: --rows: ")
    assert "Fix: " in message
    assert "\n" not in message


# --- command-line options -----------------------------------------------------------------


def test_options_split_commas_repeats_and_ranges() -> None:
    the_spec = spec_from_options(
        {
            "step": "qc_persite",
            "plates": ("P1,P2", "P3"),
            "batch": "B1",
            "project": "Proj",
            "plate_format": "96",
            "rows": ("A-C", "h"),
            "columns": ("1-3,12",),
            "sites": ("1-2", "5"),
            "pad_wells": False,
            "wells": (),
            "dataset": None,
        }
    )
    assert the_spec.plates == ["P1", "P2", "P3"]
    assert the_spec.plate_format == 96
    assert wells(the_spec)[:4] == ["A1", "A2", "A3", "A12"]
    assert {well[0] for well in wells(the_spec)} == {"A", "B", "C", "H"}
    assert sites(the_spec) == [1, 2, 5]


def test_site_count_option() -> None:
    base = {"step": "analysis", "plates": ("P1",), "batch": "B1", "project": "Proj"}
    assert sites(spec_from_options({**base, "site_count": "4"})) == [1, 2, 3, 4]
    with pytest.raises(InputError) as both:
        spec_from_options({**base, "site_count": "4", "sites": ("1",)})
    assert both.value.field == "--sites"
    with pytest.raises(InputError) as zero:
        spec_from_options({**base, "site_count": "0"})
    assert zero.value.field == "--site-count"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"columns": ("1-x",)}, "--columns"),
        ({"columns": ("12-1",)}, "--columns"),
        ({"rows": ("H-A",)}, "--rows"),
        ({"rows": ("A-11",)}, "--rows"),
        ({"sites": ("one",)}, "--sites"),
        ({"plate_format": "ninety-six"}, "--plate-format"),
        ({"site_count": "many"}, "--site-count"),
    ],
)
def test_bad_option_text_names_the_option(values: dict[str, Any], field: str) -> None:
    base = {"step": "analysis", "plates": ("P1",), "batch": "B1", "project": "Proj"}
    with pytest.raises(InputError) as caught:
        spec_from_options({**base, **values})
    assert caught.value.source == "argument"
    assert caught.value.field == field


def test_an_unknown_option_key_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        spec_from_options({"step": "illum", "platelist": "P1"})


def test_arguments_describe_every_spec_field() -> None:
    names = [argument.name for argument in ARGUMENTS]
    assert len(names) == len(set(names))
    assert set(names) == set(CellPaintingSpec.model_fields) | {"site_count"}
    assert {argument.declaration.split("/")[0] for argument in ARGUMENTS} >= {
        cp.OPTION_NAMES[name] for name in CellPaintingSpec.model_fields
    }


def _ds_jobs_cellpainting(tmp_path: Path, args: list[str]) -> tuple[int, str, Path]:
    """Run the real `ds jobs cellpainting` (in-process); returns exit code, output, job path."""
    from distributed_something.cli import commands, jobs  # noqa: F401 - registers them
    from distributed_something.cli.main import cli

    out = tmp_path / "job.json"
    result = CliRunner().invoke(cli, ["jobs", "cellpainting", *args, "-o", str(out)])
    return result.exit_code, result.output, out


def test_ds_jobs_cellpainting_writes_the_same_job(tmp_path: Path) -> None:
    code, output, out = _ds_jobs_cellpainting(
        tmp_path,
        [
            "assaydev",
            "--plates",
            "P1",
            "--batch",
            "B1",
            "--project",
            "Proj",
            "--plate-format",
            "96",
            "--rows",
            "A-B",
            "--no-pad-wells",
            "--exclude-wells",
            "A1",
        ],
    )
    assert code == 0, output
    expected = job(
        spec(
            step="assaydev", plate_format=96, rows=["A", "B"], pad_wells=False, exclude_wells=["A1"]
        )
    )
    assert json.loads(out.read_text()) == expected
    assert len(expected["groups"]) == 23


def test_ds_jobs_cellpainting_reports_input_errors(tmp_path: Path) -> None:
    from distributed_something.cli import commands, jobs  # noqa: F401 - registers them
    from distributed_something.cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "jobs",
            "cellpainting",
            "qc",
            "--plates",
            "P1",
            "--batch",
            "B1",
            "--project",
            "Proj",
            "--plate-format",
            "96",
            "--rows",
            "K",
            "-o",
            str(tmp_path / "job.json"),
        ],
    )
    assert isinstance(result.exception, InputError)
    assert result.exception.field == "--rows"
    assert not (tmp_path / "job.json").exists()
