"""The quickstart end to end: `ds run` on the example, and the same job on real DNA images."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import tomli_w

from conftest import REPO, SHARED_DATA
from distributed_something.config.loader import load_config

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]
EXAMPLE = REPO / "examples" / "quickstart"
DNA_IMAGES = sorted((SHARED_DATA / "examplefly" / "images").glob("*_D.TIF"))


def copy_example(tmp_path: Path) -> Path:
    folder = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ds"))
    return folder


def check_outputs(result_dir: Path) -> int:
    """The three outputs of one image agree with each other; returns the nucleus count."""
    summary = json.loads((result_dir / "summary.json").read_text())
    with (result_dir / "nuclei.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert (result_dir / "labels.tif").stat().st_size > 0
    count = summary["nuclei"] if "nuclei" in summary else summary["count"]
    assert len(rows) == count
    return int(count)


def test_ds_run_quickstart_segments_every_image(tmp_path: Path, ds: Ds) -> None:
    folder = copy_example(tmp_path)
    result = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 6 and report["counts"]["dead"] == 0
    bucket = folder / ".ds" / "Quickstart" / "buckets" / "default"
    assert str(bucket) in result.stderr  # it tells where the outputs are
    for task in report["tasks"]:
        name = task["group"]["name"]
        assert sorted(task["outputs"]) == [
            f"results/{name}/labels.tif",
            f"results/{name}/nuclei.csv",
            f"results/{name}/summary.json",
        ]
        truth = json.loads((bucket / "images" / f"{name}.truth.json").read_text())
        true_count = truth["nuclei"] if "nuclei" in truth else truth["count"]
        found = check_outputs(bucket / "results" / name)
        assert abs(found - true_count) <= 0.15 * true_count


@pytest.mark.skipif(
    not DNA_IMAGES, reason="no shared data: ../shared/data/examplefly is not on this machine"
)
def test_same_job_on_the_real_examplefly_dna_images(tmp_path: Path, ds: Ds) -> None:
    folder = copy_example(tmp_path)
    config = load_config(folder / "ds.toml").model_dump(mode="json", exclude_none=True)
    config["app_name"] = "QuickstartFly"
    config["local"]["prepare"] = []  # the inputs are real images, put in place below
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    groups = [{"image": p.name, "name": p.stem} for p in DNA_IMAGES]
    (folder / "job.json").write_text(json.dumps({"groups": groups}))
    bucket = folder / ".ds" / "QuickstartFly" / "buckets" / "default"
    (bucket / "images").mkdir(parents=True)
    (bucket / "scripts").mkdir()
    for image in DNA_IMAGES:  # copied at run time into the tmp bucket, never into the repo
        shutil.copy(image, bucket / "images" / image.name)
    shutil.copy(EXAMPLE / "segment_nuclei.py", bucket / "scripts" / "segment_nuclei.py")

    result = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == len(DNA_IMAGES) == 3
    counts = {p.stem: check_outputs(bucket / "results" / p.stem) for p in DNA_IMAGES}
    # Kc167 fields of view hold hundreds of nuclei; POS076 is the densest (~900).
    assert all(200 <= n <= 1200 for n in counts.values()), counts
    assert 800 <= counts["01_POS076_D"] <= 1000
