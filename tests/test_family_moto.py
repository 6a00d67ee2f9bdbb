"""Unchanged Distributed-Fiji and Distributed-OmeZarrCreator projects on moto's server, through
the family's commands: `ds setup`, `ds submitJob files/exampleJob.json`, `ds startCluster
files/exampleFleet.json`, the workers, `ds monitor files/<APP>SpotFleetRequestId.json`.

Each project is the family's own config.py template (tests/family_templates.py) with the
values a user fills in: the buckets, the key pair, one machine, no unattended monitor, and
``DOCKERHUB_TAG`` naming the worker image the user built with ``ds image build --base <the
family's image> --tag registry.lab.example/ds-worker:1`` (a name that says nothing about the
tool). It names no ``RECIPE``: the job file's format implies it (DF → fiji, DOZC → omezarr),
so the registered task definition runs ``ds worker``. Two lines are added, as
docs/migrating.md tells users moving to a ``ds`` image: ``RECIPE_ENGINE`` (the engine the
image has: here Debian's ImageJ 1 and our OME-Zarr converter, not Fiji and bioformats2raw)
and, for DF, ``INPUTS`` (a ``ds`` worker downloads what a task reads instead of mounting the
bucket at /home/ubuntu/bucket).

The test plays the ECS agent (tests/aws_agent.py): the service's tasks run as ``ds worker``
processes with exactly the registered task definition's environment, and they run the real
tools on the ExampleFly images uploaded to moto's S3. The outputs in S3 are compared with
what the local run writes; the counts of `ds monitor` and `ds status --json` come from the
run's records; and nothing of the run is left after the monitor.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from aws_agent import service_task_definition, start_tasks
from conftest import NO_SHARED_DATA, REPO, SHARED_DATA
from family_templates import DF_JOB, DOZC_JOB, filled, project
from moto_projects import (
    aws_client,
    check_family_nothing_left,
    check_monitor_file,
    run_clean,
)
from testkit import moto_family_fleet, omezarr_modules, serve_folder

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]

#: What `ds image build --tag` named the user's worker image (`ds-`: the name ds suggests).
IMAGE = "registry.lab.example/ds-worker:1"
FLY_IMAGES = SHARED_DATA / "examplefly" / "images"
IMAGEJ_JAR = Path("/usr/share/java/ij.jar")
CHANNELS = ("D", "F", "R")
POSITIONS = ("002", "076")
KEY_PAIR = "lab-key"
DEAD_LETTER_QUEUE = "user_DeadMessages"  # the templates' value
#: The values every project here fills in besides its buckets.
COMMON_VALUES = {
    "DOCKERHUB_TAG": f"'{IMAGE}'",
    "SSH_KEY_NAME": f"'{KEY_PAIR}.pem'",
    "CLUSTER_MACHINES": "1",
    # The unattended monitor's Lambda function is what `ds aws bootstrap` makes; here the
    # user runs `ds monitor`.
    "AUTO_MONITOR": "'False'",
}

needs_fly_images = pytest.mark.skipif(
    not all((FLY_IMAGES / f"01_POS{p}_{c}.TIF").is_file() for p in POSITIONS for c in CHANNELS),
    reason=f"{NO_SHARED_DATA} the ExampleFly images are not in ../shared/data",
)


@pytest.fixture
def script_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a web server on 127.0.0.1, where SCRIPT_DOWNLOAD_URL points."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as url:
        yield url, root


def use_moto_network(folder: Path) -> None:
    """The fleet file as a user fills it in for their account: here moto's default subnet and
    security group; and the key pair SSH_KEY_NAME names."""
    ec2 = aws_client("ec2")
    fleet = moto_family_fleet(ec2, KEY_PAIR)
    (folder / "files" / "exampleFleet.json").write_text(json.dumps(fleet, indent=4))
    ec2.create_key_pair(KeyName=KEY_PAIR)


def upload_positions(bucket: str, prefix: str) -> None:
    """The ExampleFly images of `POSITIONS` to ``s3://bucket/<prefix>POS<position>/``."""
    s3 = aws_client("s3")
    for position in POSITIONS:
        for channel in CHANNELS:
            name = f"01_POS{position}_{channel}.TIF"
            s3.upload_file(str(FLY_IMAGES / name), bucket, f"{prefix}POS{position}/{name}")


def keys(bucket: str, prefix: str = "") -> set[str]:
    listed = (
        aws_client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return {item["Key"] for page in listed for item in page.get("Contents", [])}


def download(bucket: str, prefix: str, target: Path) -> None:
    """Every object under ``prefix`` into ``target``, at its key below the prefix."""
    s3 = aws_client("s3")
    for key in keys(bucket, prefix):
        path = target / key.removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(path))


def run_the_family_steps(
    ds: Ds, folder: Path, app: str, endpoint: str, agent: Path, recipe: str, cache: Path
) -> dict[str, Any]:
    """setup, submitJob, startCluster, the workers (the test as ECS agent), monitor; checks
    the task definition on the way and returns monitor's JSON report."""
    validated = json.loads(
        run_clean(
            ds, "validate", "--job", "files/exampleJob.json", "--fleet", "files/exampleFleet.json",
            "--json", cwd=folder,
        ).stdout
    )  # fmt: skip
    assert (validated["backend"], validated["recipe"]) == ("aws", recipe)
    assert validated["tasks"] == len(POSITIONS)

    run_clean(ds, "setup", cwd=folder)
    submitted = run_clean(ds, "submitJob", "files/exampleJob.json", cwd=folder)
    assert f"submitted {len(POSITIONS)} tasks" in submitted.stderr
    run_clean(ds, "startCluster", "files/exampleFleet.json", cwd=folder)
    fleet_id = check_monitor_file(folder, app, "lab-bucket")

    ecs = aws_client("ecs")
    desired, taskdef = service_task_definition(ecs, "default", f"{app}Service")
    (container,) = taskdef["containerDefinitions"]
    # The user's ds image runs `ds worker`, with the recipe the job file implied.
    assert container["image"] == IMAGE
    assert container["entryPoint"] == ["ds", "worker"] and not container.get("command")
    assert desired == 1
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert json.loads(env["DS_CONFIG"])["recipe"]["name"] == recipe

    # start_tasks refuses unless the task would run exactly `ds worker` in our image.
    workers = start_tasks(
        ecs, "default", f"{app}Service", endpoint, agent, extra_env={"DS_CACHE_DIR": str(cache)}
    )
    deadline = time.monotonic() + 600
    for worker in workers:
        worker.wait(timeout=max(deadline - time.monotonic(), 1))
    logs = "\n".join(path.read_text() for path in sorted(agent.glob("task-*.log")))
    assert [worker.returncode for worker in workers] == [0], logs

    report = json.loads(
        run_clean(
            ds, "monitor", f"files/{app}SpotFleetRequestId.json", "--interval", "1", "--json",
            cwd=folder,
        ).stdout
    )  # fmt: skip
    check_family_nothing_left(fleet_id, app, DEAD_LETTER_QUEUE)
    return report


def check_counts(ds: Ds, folder: Path, report: dict[str, Any]) -> None:
    """monitor's and status's counts: every group done once, from the run's records."""
    counts = report["counts"]
    assert (counts["done"], counts["dead"], counts["failed"]) == (len(POSITIONS), 0, 0), counts
    assert counts["total"] == len(POSITIONS) and counts["duplicates"] == 0
    assert sorted(task["attempts"] for task in report["tasks"]) == [1] * len(POSITIONS)
    status = json.loads(run_clean(ds, "status", "--json", cwd=folder).stdout)
    assert status["counts"]["done"] == len(POSITIONS) and status["counts"]["dead"] == 0
    assert status["counts"] == {key: counts[key] for key in status["counts"]}


# --- Distributed-Fiji ----------------------------------------------------------------------

FIJI_APP = "DistributedFiji"
#: What the macro writes per position: a table and a mask per channel, and summary.csv.
FIJI_OUTPUTS = sorted(
    [f"01_POS{{p}}_{c}_{kind}" for c in CHANNELS for kind in ("mask.png", "particles.csv")]
    + ["summary.csv"]
)
#: The lines a DF user adds to config.py for a ds image (docs/migrating.md).
FIJI_ADDED = (
    "\n# A ds worker downloads what the macro reads (DF's image mounted the bucket instead).\n"
    "INPUTS = [" + ", ".join(
        f"'projects/input/POS{{Position}}/01_POS{{Position}}_{c}.TIF'" for c in CHANNELS
    ) + "]\n"
    "RECIPE_ENGINE = 'imagej'  # the image's ImageJ 1 (Fiji's launcher: 'fiji', the default)\n"
)  # fmt: skip


@needs_fly_images
@pytest.mark.skipif(
    not IMAGEJ_JAR.is_file() or shutil.which("xvfb-run") is None or shutil.which("java") is None,
    reason="ImageJ, java or xvfb-run missing: scripts/install-imagej.sh (or `make examples`)",
)
def test_an_unchanged_df_project_runs_on_moto_in_a_ds_image_with_the_imagej_macro(
    aws: str,
    tmp_path: Path,
    ds: Ds,
    monkeypatch: pytest.MonkeyPatch,
    script_server: tuple[str, Path],
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    base_url, www = script_server
    # The example macro, served where SCRIPT_DOWNLOAD_URL points (a web server of the lab).
    shutil.copyfile(REPO / "examples" / "fiji" / "count_nuclei.ijm", www / "count_nuclei.ijm")
    job = {
        **DF_JOB,
        "shared_metadata": {**DF_JOB["shared_metadata"], "sigma": "2", "min_size": "20"},
        "groups": [{"Position": position} for position in POSITIONS],
    }
    values = {
        **COMMON_VALUES,
        "AWS_BUCKET": "'lab-bucket'",
        "SCRIPT_DOWNLOAD_URL": repr(f"{base_url}/count_nuclei.ijm"),
    }
    folder = project(
        tmp_path / FIJI_APP, "df", job=job, edit=lambda text: filled(text, values) + FIJI_ADDED
    )
    use_moto_network(folder)
    aws_client("s3").create_bucket(Bucket="lab-bucket")
    upload_positions("lab-bucket", "projects/input/")

    report = run_the_family_steps(
        ds, folder, FIJI_APP, aws, tmp_path / "agent", "fiji", tmp_path / "cache"
    )

    check_counts(ds, folder, report)
    written = keys("lab-bucket", "projects/output/")
    assert written == {
        f"projects/output/{p}/{name.format(p=p)}" for p in POSITIONS for name in FIJI_OUTPUTS
    }
    particles = {}
    for position in POSITIONS:
        body = aws_client("s3").get_object(
            Bucket="lab-bucket", Key=f"projects/output/{position}/summary.csv"
        )["Body"]
        rows = csv.DictReader(body.read().decode().splitlines())
        particles.update({row["image"]: int(row["particles"]) for row in rows})
    assert sorted(particles) == [f"01_POS{p}_{c}" for p in POSITIONS for c in CHANNELS]
    assert all(count > 0 for count in particles.values()), particles
    # What the local run finds on POS002 (tests/test_family_runs.py, ../shared/notes).
    assert 240 <= particles["01_POS002_D"] <= 300, particles


# --- Distributed-OmeZarrCreator ------------------------------------------------------------

ZARR_APP = "DistributedBioFormats2Raw"
ZARR_ADDED = (
    "\nRECIPE_ENGINE = 'builtin'  # the image's converter is ds's own, not bioformats2raw\n"
)


def local_conversion(source: Path, target: Path, plate: str) -> None:
    """What the local run's builtin engine writes for one plate folder."""
    done = subprocess.run(
        [
            sys.executable, "-m", "distributed_something.recipes.omezarr_convert", "convert",
            str(source), str(target), "--name", plate,
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_an_unchanged_dozc_project_runs_on_moto_in_a_ds_image_with_our_converter(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not FLY_IMAGES.is_dir():
        pytest.skip(f"{NO_SHARED_DATA} the ExampleFly images are not in ../shared/data")
    np, tifffile, reader, ome_io = omezarr_modules()
    monkeypatch.delenv("DS_BACKEND", raising=False)
    # DOZC's job file with its placeholders filled in: buckets, the project's folders, a
    # folder of TIFFs per plate (no Index.idx.xml: path_to_metadata false).
    job = {
        **DOZC_JOB,
        "input_bucket": "lab-images",
        "input_location": "projects/fly/images/",
        "path_to_metadata": False,
        "output_bucket": "lab-zarr",
        "output_location": "projects/fly/images_zarr/",
        "plates": [f"POS{position}" for position in POSITIONS],
    }
    values = {**COMMON_VALUES, "AWS_BUCKET": "'lab-bucket'"}
    folder = project(
        tmp_path / ZARR_APP, "dozc", job=job, edit=lambda text: filled(text, values) + ZARR_ADDED
    )
    use_moto_network(folder)
    for bucket in ("lab-bucket", "lab-images", "lab-zarr"):
        aws_client("s3").create_bucket(Bucket=bucket)
    upload_positions("lab-images", "projects/fly/images/")

    report = run_the_family_steps(
        ds, folder, ZARR_APP, aws, tmp_path / "agent", "omezarr", tmp_path / "cache"
    )

    check_counts(ds, folder, report)
    prefix = "projects/fly/images_zarr/"
    assert {key.removeprefix(prefix).split("/", 1)[0] for key in keys("lab-zarr", prefix)} == {
        f"POS{position}.ome.zarr" for position in POSITIONS
    }
    for position in POSITIONS:
        plate = f"POS{position}"
        from_s3 = tmp_path / "from-s3" / f"{plate}.ome.zarr"
        download("lab-zarr", f"{prefix}{plate}.ome.zarr/", from_s3)
        # The same files, metadata and chunks, as the local run writes.
        source = tmp_path / "local-input" / plate
        source.mkdir(parents=True)
        for channel in CHANNELS:
            name = f"01_POS{position}_{channel}.TIF"
            shutil.copyfile(FLY_IMAGES / name, source / name)
        local = tmp_path / "local" / f"{plate}.ome.zarr"
        local_conversion(source, local, plate)
        files = sorted(str(p.relative_to(from_s3)) for p in from_s3.rglob("*") if p.is_file())
        local_files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
        assert files == local_files
        assert any(name.endswith((".zattrs", "zarr.json")) for name in files)
        node = next(iter(reader.Reader(ome_io.parse_url(str(from_s3)))()))
        levels = [np.asarray(level) for level in node.data]
        expected = np.stack(
            [tifffile.imread(FLY_IMAGES / f"01_POS{position}_{c}.TIF") for c in CHANNELS]
        )
        np.testing.assert_array_equal(levels[0], expected)
        assert node.metadata["channel_names"] == list(CHANNELS)


def test_a_ds_image_without_recipe_or_a_neutral_name_keeps_the_family_semantics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an image named as `ds image build` suggests (``…/ds-<name>``) gets the recipe
    from the files on AWS; any other image keeps its own entrypoint, as with run.py."""
    from distributed_something.usecases.project import open_project

    monkeypatch.delenv("DS_BACKEND", raising=False)
    for image, recipe in [
        (IMAGE, "fiji"),
        ("lab/ds-fiji:2", "fiji"),
        ("lab/worker:3", None),  # perhaps a family image of the lab's own: its worker runs
        ("cellprofiler/distributed-fiji:latest", None),
        ("lab/fiji-ds:1", None),
    ]:
        folder = project(
            tmp_path / image.replace("/", "_").replace(":", "_"),
            "df",
            edit=lambda text, image=image: filled(text, {"DOCKERHUB_TAG": repr(image)}),
        )
        assert open_project(folder / "config.py").config.recipe.name == recipe, image
        # Locally ds's own worker runs the tasks whatever the image.
        assert open_project(folder / "config.py", backend="local").config.recipe.name == "fiji"


def test_a_ds_image_whose_recipe_nothing_implies_is_refused_before_setup(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(
        tmp_path / FIJI_APP,
        "df",
        edit=lambda text: filled(text, {**COMMON_VALUES, "AWS_BUCKET": "'lab-bucket'"}),
    )
    (folder / "files" / "exampleJob.json").unlink()  # nothing says which tool runs
    aws_client("s3").create_bucket(Bucket="lab-bucket")

    for command in ("validate", "setup"):
        result = ds(command, cwd=folder)

        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert f"recipe.name: is not set, and {IMAGE} is a ds worker image" in result.stderr
        assert "RECIPE in config.py" in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
