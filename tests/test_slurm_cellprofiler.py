"""`ds run examples/cellprofiler --backend slurm`: the cellprofiler example, unchanged, with
the real CellProfiler running inside Slurm jobs of the local one-node cluster
(scripts/slurm-local.sh)."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from conftest import REPO, SHARED_DATA
from testkit import needs_cellprofiler

pytestmark = [pytest.mark.slow, needs_cellprofiler]

Ds = Callable[..., CompletedProcess[str]]
EXAMPLE = REPO / "examples" / "cellprofiler"
EXAMPLEFLY = SHARED_DATA / "examplefly"
TABLES = ("Cells.csv", "Cytoplasm.csv", "Image.csv", "Nuclei.csv")
POSITIONS = {"2": "002", "76": "076", "218": "218"}


def test_ds_run_examples_cellprofiler_on_slurm_completes_every_task(
    slurm_cluster: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cellprofiler"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ds", "__pycache__"))
    real = (EXAMPLEFLY / "workspace" / "ExampleFly.cppipe").is_file()
    if real:  # the copy is outside the repository, so prepare.py is told where the data is
        monkeypatch.setenv("DS_EXAMPLEFLY_DIR", str(EXAMPLEFLY))
    else:  # prepare.py writes stand-ins of the same layout
        monkeypatch.delenv("DS_EXAMPLEFLY_DIR", raising=False)
    monkeypatch.delenv("DS_BACKEND", raising=False)

    result = ds(
        "run", str(folder), "--backend", "slurm", "--json", "--interval", "1",
        cwd=tmp_path, timeout=900,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "slurm"
    counts = report["counts"]
    assert (counts["done"], counts["dead"], counts["total"]) == (3, 0, 3)
    # No slurm.shared_dir in the example: the shared folder is .ds/FlyExample/slurm.
    shared = folder / ".ds" / "FlyExample" / "slurm"
    bucket = shared / "buckets" / "default"
    seen = set()
    for task in report["tasks"]:
        position = task["group"].split("=")[1]
        seen.add(position)
        prefix = f"demo_project_folder/output/{position}"
        assert sorted(task["outputs"]) == [f"{prefix}/{table}" for table in TABLES]
        with (bucket / prefix / "Image.csv").open(newline="") as stream:
            (image,) = list(csv.DictReader(stream))
        # each task measured its own field of view
        assert image["FileName_OrigBlue"] == f"01_POS{POSITIONS[position]}_D.TIF"
        with (bucket / prefix / "Nuclei.csv").open(newline="") as stream:
            assert float(image["Count_Nuclei"]) == len(list(csv.DictReader(stream))) > 0
    assert seen == set(POSITIONS)
    # CellProfiler ran in Slurm jobs (the array elements' logs hold the worker's), not here.
    logs = "".join(p.read_text() for p in (shared / "slurm" / "logs").glob("*.out"))
    assert logs.count("done in") == 3
    # Nothing of the run is left in Slurm's queue.
    arrays = json.loads((shared / "slurm" / "jobs.json").read_text())["arrays"]
    assert arrays and all(len(a["settled"]) == len(a["slices"]) for a in arrays)
