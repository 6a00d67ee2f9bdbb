"""The cellprofiler recipe end to end with the real CellProfiler, as users run it.

Two runs only (each CellProfiler start costs seconds): the ExampleFly example, and a pipeline
that saves an image and then fails, which must upload nothing and end dead-lettered.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import tomli_w

from conftest import REPO, SHARED_DATA
from testkit import needs_cellprofiler

pytestmark = [pytest.mark.slow, needs_cellprofiler]

Ds = Callable[..., CompletedProcess[str]]
EXAMPLE = REPO / "examples" / "cellprofiler"
EXAMPLEFLY = SHARED_DATA / "examplefly"
TABLES = ("Cells.csv", "Cytoplasm.csv", "Image.csv", "Nuclei.csv")


def report_of(result: CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_ds_run_examplefly_measures_each_position_in_its_own_task(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cellprofiler"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ds", "__pycache__"))
    real = (EXAMPLEFLY / "workspace" / "ExampleFly.cppipe").is_file()
    if real:  # the copy is outside the repository, so prepare.py is told where the data is
        monkeypatch.setenv("DS_EXAMPLEFLY_DIR", str(EXAMPLEFLY))
    else:
        monkeypatch.delenv("DS_EXAMPLEFLY_DIR", raising=False)

    result = ds("run", str(folder), "--json", "--interval", "0.5", cwd=tmp_path, timeout=600)

    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert report["counts"]["done"] == 3 and report["counts"]["dead"] == 0
    bucket = folder / ".ds" / "FlyExample" / "buckets" / "default"
    positions = {"2": "002", "76": "076", "218": "218"}
    for task in report["tasks"]:
        name = task["group"].split("=")[1] if isinstance(task["group"], str) else None
        assert name in positions, task["group"]
        prefix = f"demo_project_folder/output/{name}"
        assert sorted(task["outputs"]) == [f"{prefix}/{table}" for table in TABLES]
        (image,) = rows(bucket / prefix / "Image.csv")
        # each task measured its own field of view, read from the downloaded image
        assert image["FileName_OrigBlue"] == f"01_POS{positions[name]}_D.TIF"
        assert image["Metadata_Position"] == str(int(positions[name]))
        nuclei = rows(bucket / prefix / "Nuclei.csv")
        assert float(image["Count_Nuclei"]) == len(nuclei) > 50
    # nothing but the outputs was uploaded: no done file, no inputs
    outputs = {
        p.name for p in (bucket / "demo_project_folder" / "output").rglob("*") if p.is_file()
    }
    assert outputs == set(TABLES)


FAILING_PIPELINE = """\
CellProfiler Pipeline: http://www.cellprofiler.org
Version:5
DateRevision:500
GitHash:
ModuleCount:2
HasImagePlaneDetails:False

LoadData:[module_num:1|svn_version:'Unknown'|variable_revision_number:6|show_window:False|\
notes:[]|batch_state:array([], dtype=uint8)|enabled:True|wants_pause:False]
    Input data file location:Default Input Folder|
    Name of the file:load_data.csv
    Load images based on this data?:Yes
    Base image location:Default Input Folder|
    Process just a range of rows?:No
    Rows to process:1,100000
    Group images by metadata?:Yes
    Select metadata tags for grouping:Plate
    Rescale intensities?:Yes

SaveImages:[module_num:2|svn_version:'Unknown'|variable_revision_number:16|show_window:False|\
notes:[]|batch_state:array([], dtype=uint8)|enabled:True|wants_pause:False]
    Select the type of image to save:Image
    Select the image to save:DNA
    Select method for constructing file names:From image filename
    Select image name for file prefix:DNA
    Enter single file name:DNA
    Number of digits:4
    Append a suffix to the image file name?:No
    Text to append to the image name:
    Saved file format:png
    Output file location:Default Output Folder|
    Image bit depth:8-bit integer
    Overwrite existing files without warning?:Yes
    When to save:Every cycle
    Record the file and path information to the saved image?:No
    Create subfolders in the output folder?:No
    Base image folder:Elsewhere...|
    How to save the series:T (Time)
    Save with lossless compression?:Yes
"""


def test_a_pipeline_that_fails_uploads_nothing_and_is_retried_then_dead_lettered(
    tmp_path: Path, ds: Ds
) -> None:
    tifffile = pytest.importorskip("tifffile")
    numpy = pytest.importorskip("numpy")
    project = tmp_path / "broken"
    project.mkdir()
    config = {
        "app_name": "Broken",
        "recipe": {"name": "cellprofiler"},
        # three buckets, as DCP's WORKSPACE_BUCKET, SOURCE_BUCKET and DESTINATION_BUCKET
        "storage": {"workspace_bucket": "ws", "source_bucket": "img", "destination_bucket": "out"},
        "cluster": {"docker_cores": 1},
        "queue": {"visibility": 60, "job_retries": 2},
        "local": {"poll_interval": 0.05},
    }
    (project / "ds.toml").write_text(tomli_w.dumps(config))
    job = {
        "pipeline": "proj/fail.cppipe",
        "data_file": "proj/load_data.csv",
        "input": "proj/",
        "output": "proj/output",
        "groups": [{"Metadata": "Metadata_Plate=P1"}],
    }
    (project / "job.json").write_text(json.dumps(job))
    buckets = project / ".ds" / "Broken" / "buckets"
    (buckets / "ws" / "proj").mkdir(parents=True)
    (buckets / "ws" / "proj" / "fail.cppipe").write_text(FAILING_PIPELINE)
    # The first image set is fine (SaveImages writes good.png); the second cannot be read.
    (buckets / "ws" / "proj" / "load_data.csv").write_text(
        "FileName_DNA,PathName_DNA,Metadata_Plate,Metadata_Site\n"
        "good.tif,/home/ubuntu/bucket/images,P1,1\n"
        "bad.tif,/home/ubuntu/bucket/images,P1,2\n"
    )
    (buckets / "img" / "images").mkdir(parents=True)
    pixels = numpy.random.default_rng(0).integers(0, 4000, (64, 64), dtype=numpy.uint16)
    tifffile.imwrite(buckets / "img" / "images" / "good.tif", pixels)
    (buckets / "img" / "images" / "bad.tif").write_bytes(b"not a TIFF at all")

    result = ds("run", str(project), "--json", "--interval", "0.3", cwd=tmp_path, timeout=300)

    assert result.returncode == 1, result.stderr  # a run with dead tasks fails
    report = report_of(result)
    assert report["counts"]["dead"] == 1 and report["counts"]["done"] == 0
    (task,) = report["tasks"]
    assert task["attempts"] == 2 and task["outcome"] == "dead"
    assert "reported Failure in its done file" in task["error"]
    assert not task["outputs"]
    uploaded = [p for p in (buckets / "out").rglob("*") if p.is_file()]
    assert uploaded == []  # good.png was written locally, and never uploaded
    log = ds("logs", task["id"][:8], cwd=project)
    assert "module SaveImages" in log.stdout and "bad.tif" in log.stdout
    dead = json.loads(ds("dead", "list", "--json", cwd=project).stdout)
    assert [d["task_id"] for d in dead] == [task["id"]]
