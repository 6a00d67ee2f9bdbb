"""Unchanged Distributed-Fiji, -OmeZarrCreator and -CellProfiler projects, run here.

Each test writes the family's own config.py template (tests/family_templates.py; only the
values a user fills in are filled in) and a job file in the family's format, puts the bucket's
files where the local backend keeps buckets, and runs `ds run --backend local --job …` with the
real tool: Debian's ImageJ for a DF macro, our OME-Zarr converter for a DOZC plate; and a DCP
project with `--backend slurm` on the local one-node Slurm, CellProfiler in a Slurm job. One
position of the ExampleFly data each, to stay short.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from conftest import NO_SHARED_DATA, REPO, SHARED_DATA
from distributed_something.recipes.cellprofiler import find_executable
from family_templates import (
    DCP_JOB,
    DOZC_JOB,
    check_dcp_example_outputs,
    project,
    stage_dcp_example,
)
from testkit import omezarr_modules, serve_folder

Ds = Callable[..., CompletedProcess[str]]
FLY_IMAGES = SHARED_DATA / "examplefly" / "images"
IMAGEJ_JAR = Path("/usr/share/java/ij.jar")
CHANNELS = ("D", "F", "R")

needs_fly_images = pytest.mark.skipif(
    not (FLY_IMAGES / "01_POS002_D.TIF").is_file(),
    reason=f"{NO_SHARED_DATA} the ExampleFly images are not in ../shared/data",
)


def copy_position(target: Path, position: str = "002") -> None:
    """The three channel images of one ExampleFly position into the folder ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for channel in CHANNELS:
        name = f"01_POS{position}_{channel}.TIF"
        shutil.copyfile(FLY_IMAGES / name, target / name)


def run_job(ds: Ds, folder: Path) -> dict[str, Any]:
    """`ds run --backend local --job files/exampleJob.json` in the project folder."""
    result = ds(
        "run", "--backend", "local", "--job", "files/exampleJob.json", "--json",
        "--interval", "0.3", cwd=folder, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# --- Distributed-Fiji ----------------------------------------------------------------------

# A Distributed-Fiji macro reads its images where the job's shared_metadata says, as DF's
# scripts read the mounted bucket: the example's count_nuclei.ijm, reading
# <input_file_location>/POS<Position> instead of the task's input folder.
DF_MACRO = (
    (REPO / "examples" / "fiji" / "count_nuclei.ijm")
    .read_text()
    .replace(
        'input = requiredArgument("input");',
        'input = requiredArgument("input_file_location");\n'
        'input = input + File.separator + "POS" + requiredArgument("Position");',
    )
)


@pytest.fixture
def script_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of an HTTP server on 127.0.0.1 serving a folder, as the
    SCRIPT_DOWNLOAD_URL of a DF config points at a web server."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as url:
        yield url, root


@pytest.mark.slow
@needs_fly_images
@pytest.mark.skipif(
    not IMAGEJ_JAR.is_file() or shutil.which("xvfb-run") is None or shutil.which("java") is None,
    reason="ImageJ, java or xvfb-run missing: scripts/install-imagej.sh (or `make examples`)",
)
def test_ds_run_backend_local_runs_an_unchanged_df_project(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch, script_server: tuple[str, Path]
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    monkeypatch.setenv("DS_CACHE_DIR", str(tmp_path / "cache"))  # the downloaded script
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    base_url, www = script_server
    (www / "count_nuclei.ijm").write_text(DF_MACRO)
    folder = tmp_path / "DistributedFiji"
    # The bucket as DF's workers mounted it (/home/ubuntu/bucket) is a folder here.
    bucket = folder / ".ds" / "DistributedFiji" / "buckets" / "lab-bucket"
    copy_position(bucket / "projects" / "input" / "POS002")
    job = {
        "output_file_location": "projects/output/",
        "shared_metadata": {
            "input_file_location": str(bucket / "projects" / "input"),
            "sigma": "2",
            "min_size": "20",
        },
        "groups": [{"Position": "002"}],
    }
    url = f"{base_url}/count_nuclei.ijm"
    folder = project(
        folder,
        "df",
        job=job,
        edit=lambda text: text.replace("'https://example.org/scripts/stitch.py'", repr(url)),
    )
    before = (folder / "config.py").read_bytes()

    report = run_job(ds, folder)

    assert report["counts"]["done"] == 1 and report["counts"]["dead"] == 0
    (task,) = report["tasks"]
    stems = [f"01_POS002_{channel}" for channel in CHANNELS]
    # EXPECTED_NUMBER_FILES = 7 (the template's value) is the least a success writes: here a
    # table and a mask per channel, and summary.csv.
    kinds = ("mask.png", "particles.csv")
    named = [f"{stem}_{kind}" for stem in stems for kind in kinds] + ["summary.csv"]
    assert sorted(task["outputs"]) == sorted(f"projects/output/002/{name}" for name in named)
    result_dir = bucket / "projects" / "output" / "002"
    with (result_dir / "summary.csv").open(newline="") as stream:
        rows = {row["image"]: int(row["particles"]) for row in csv.DictReader(stream)}
    assert sorted(rows) == stems
    with (result_dir / "01_POS002_D_particles.csv").open(newline="") as stream:
        assert len(list(csv.DictReader(stream))) == rows["01_POS002_D"]
    # Blur sigma 2 + Otsu + size >= 20 px finds 267 nuclei on POS002 (../shared/notes).
    assert 240 <= rows["01_POS002_D"] <= 300, rows
    assert (folder / "config.py").read_bytes() == before


# --- Distributed-OmeZarrCreator ------------------------------------------------------------


@pytest.mark.slow
@needs_fly_images
def test_ds_run_backend_local_runs_an_unchanged_dozc_project(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    np, tifffile, reader, ome_io = omezarr_modules()
    monkeypatch.delenv("DS_BACKEND", raising=False)
    # DOZC's job file, its placeholders filled in: the bucket, the project's folders, a plate
    # of TIFFs (no Index.idx.xml: path_to_metadata false), one plate.
    job = {
        **DOZC_JOB,
        "input_bucket": "lab-bucket",
        "input_location": "projects/fly/images/",
        "path_to_metadata": False,
        "output_bucket": "lab-zarr",  # a bucket of its own, not the config's
        "output_location": "projects/fly/images_zarr/",
        "plates": ["POS002"],
    }
    folder = project(tmp_path / "DistributedBioFormats2Raw", "dozc", job=job)
    before = (folder / "config.py").read_bytes()
    buckets = folder / ".ds" / "DistributedBioFormats2Raw" / "buckets"
    copy_position(buckets / "lab-bucket" / "projects" / "fly" / "images" / "POS002")

    report = run_job(ds, folder)

    assert report["counts"]["done"] == 1 and report["counts"]["dead"] == 0
    (task,) = report["tasks"]
    prefix = "projects/fly/images_zarr/POS002.ome.zarr/"
    assert task["outputs"] and all(key.startswith(prefix) for key in task["outputs"])
    assert task["output_bucket"] == "lab-zarr"
    image = buckets / "lab-zarr" / prefix
    # The report's page links the task's outputs in the bucket they went to.
    page = (folder / ".ds" / "DistributedBioFormats2Raw" / "report.html").read_text()
    assert f'href="{image.as_uri()}/"' in page
    node = next(iter(reader.Reader(ome_io.parse_url(str(image)))()))
    levels = [np.asarray(level) for level in node.data]
    expected = np.stack(
        [tifffile.imread(FLY_IMAGES / f"01_POS002_{channel}.TIF") for channel in CHANNELS]
    )
    np.testing.assert_array_equal(levels[0], expected)
    # No resolutions in the job: halved until the smallest side is at most 256 pixels.
    assert [level.shape for level in levels] == [(3, 1006, 1000), (3, 503, 500), (3, 251, 250)]
    assert node.metadata["channel_names"] == list(CHANNELS)
    assert (folder / "config.py").read_bytes() == before


# --- Distributed-CellProfiler on Slurm -----------------------------------------------------


@pytest.mark.slow
@needs_fly_images
@pytest.mark.skipif(
    shutil.which(find_executable()) is None, reason="CellProfiler is not installed (make examples)"
)
def test_ds_run_backend_slurm_runs_an_unchanged_dcp_project(
    slurm_cluster: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    job = {**DCP_JOB, "groups": DCP_JOB["groups"][:1]}  # one position: Metadata_Position=2
    folder = project(tmp_path / "DistributedCP", "dcp", job=job)
    before = (folder / "config.py").read_bytes()
    # No SLURM_SHARED_DIR in the config: the run's shared folder is .ds/DistributedCP/slurm,
    # and the buckets are folders in it.
    buckets = folder / ".ds" / "DistributedCP" / "slurm" / "buckets"
    stage_dcp_example(buckets, SHARED_DATA / "examplefly")

    result = ds(
        "run", "--backend", "slurm", "--job", "files/exampleJob.json", "--json",
        "--interval", "1", cwd=folder, timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "slurm"
    assert report["counts"]["done"] == 1 and report["counts"]["dead"] == 0
    (task,) = report["tasks"]
    check_dcp_example_outputs(task, buckets)
    # CellProfiler ran inside a Slurm job (an array element's log), not on the login node.
    logs = sorted((buckets.parent / "slurm" / "logs").glob("*.out"))
    assert logs and "exits: {'done': 1" in logs[0].read_text()
    assert (folder / "config.py").read_bytes() == before
