"""The quickstart's analysis: make_inputs.py and segment_nuclei.py, run as the worker runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the quickstart needs numpy (pip install -e '.[dev]')")
tifffile = pytest.importorskip(
    "tifffile", reason="the quickstart needs tifffile (pip install -e '.[dev]')"
)
pytest.importorskip("skimage", reason="the quickstart needs scikit-image (pip install -e '.[dev]')")

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
MAKE_INPUTS = QUICKSTART / "make_inputs.py"
SEGMENT = QUICKSTART / "segment_nuclei.py"
EXAMPLEFLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "examplefly"
IMAGE_NAMES = [f"nuclei_{i:02d}" for i in range(1, 7)]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def read_outputs(output_dir: Path) -> tuple[np.ndarray, list[dict[str, str]], dict[str, object]]:
    labels = tifffile.imread(output_dir / "labels.tif")
    with (output_dir / "nuclei.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    summary = json.loads((output_dir / "summary.json").read_text())
    return labels, rows, summary


def assert_consistent(
    labels: np.ndarray, rows: list[dict[str, str]], summary: dict[str, object]
) -> None:
    """labels.tif, nuclei.csv and summary.json describe the same nuclei."""
    assert labels.dtype in (np.uint16, np.uint32)
    present = sorted(int(v) for v in np.unique(labels) if v != 0)
    # One row per label, labels numbered 1..N without gaps.
    assert [int(r["label"]) for r in rows] == present == list(range(1, len(present) + 1))
    areas = np.bincount(labels.ravel().astype(np.int64))
    assert [int(r["area"]) for r in rows] == [int(areas[n]) for n in present]
    height, width = labels.shape
    for row in rows:
        assert 0 <= float(row["centroid_y"]) < height and 0 <= float(row["centroid_x"]) < width
        assert float(row["max_intensity"]) >= float(row["mean_intensity"]) > 0
        assert 0 <= float(row["eccentricity"]) < 1 and 0 < float(row["solidity"]) <= 1
    assert summary["nuclei"] == len(rows)
    mean_area = sum(int(r["area"]) for r in rows) / len(rows)
    assert summary["mean_area"] == pytest.approx(mean_area, abs=0.01)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bucket folder filled by make_inputs.py."""
    bucket_dir = tmp_path_factory.mktemp("bucket")
    result = run(MAKE_INPUTS, bucket_dir)
    assert result.returncode == 0, result.stderr
    return bucket_dir


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_synthetic_count_is_within_15_percent_of_truth(
    bucket: Path, tmp_path: Path, name: str
) -> None:
    truth = json.loads((bucket / "images" / f"{name}.truth.json").read_text())
    result = run(
        bucket / "scripts" / "segment_nuclei.py", bucket / "images" / f"{name}.tif", tmp_path
    )
    assert result.returncode == 0, result.stderr
    labels, rows, summary = read_outputs(tmp_path)
    assert abs(len(rows) - truth["nuclei"]) <= 0.15 * truth["nuclei"], (len(rows), truth)
    assert labels.shape == (512, 512)
    assert summary["image"] == f"{name}.tif"
    assert_consistent(labels, rows, summary)


def test_synthetic_images_hold_20_to_60_nuclei_some_touching(bucket: Path) -> None:
    truths = [json.loads((bucket / "images" / f"{n}.truth.json").read_text()) for n in IMAGE_NAMES]
    assert all(20 <= t["nuclei"] <= 60 for t in truths)
    assert all(t["touching"] > 0 for t in truths)
    # Different seeds give different images, not six copies of one.
    assert len({(bucket / "images" / f"{n}.tif").read_bytes() for n in IMAGE_NAMES}) == 6
    image = tifffile.imread(bucket / "images" / "nuclei_01.tif")
    assert image.shape == (512, 512) and image.dtype == np.uint16


def test_make_inputs_copies_the_script_it_stages(bucket: Path) -> None:
    assert (bucket / "scripts" / "segment_nuclei.py").read_bytes() == SEGMENT.read_bytes()


def test_make_inputs_is_deterministic_and_idempotent(bucket: Path, tmp_path: Path) -> None:
    first = files_of(bucket)
    assert len(first) == 13  # 6 images, 6 truth files, the script
    again = run(MAKE_INPUTS, tmp_path / "other")
    assert again.returncode == 0, again.stderr
    assert files_of(tmp_path / "other") == first
    rerun = run(MAKE_INPUTS, bucket)
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(bucket) == first


def test_make_inputs_usage_error_exits_2(tmp_path: Path) -> None:
    result = run(MAKE_INPUTS)
    assert result.returncode == 2
    assert "usage: make_inputs.py BUCKET_DIR" in result.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run(MAKE_INPUTS, a_file)
    assert result.returncode == 2
    assert "not a folder" in result.stderr


def test_real_drosophila_dna_image(tmp_path: Path) -> None:
    image = EXAMPLEFLY / "images" / "01_POS076_D.TIF"
    if not image.is_file():
        pytest.skip(
            f"no shared data: the examplefly data is not at {EXAMPLEFLY} (shared/data/README.md)"
        )
    result = run(SEGMENT, image, tmp_path)
    assert result.returncode == 0, result.stderr
    labels, rows, summary = read_outputs(tmp_path)
    # This dense field of Kc167 nuclei holds about 900: checked by eye on an overlay. Without
    # splitting touching nuclei the count falls to ~700; over-splitting pushes it past 1000.
    assert 800 <= len(rows) <= 1000
    assert labels.shape == (1006, 1000)
    # Nuclei here are ~18 pixels across; the typical one must be nucleus-sized.
    median_diameter = float(np.median([float(r["equivalent_diameter"]) for r in rows]))
    assert 14 <= median_diameter <= 24
    assert_consistent(labels, rows, summary)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"this is not an image", "not a readable TIFF"), (None, "no such file")],
    ids=["garbage", "missing"],
)
def test_unreadable_image_exits_1_with_a_message(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    image = tmp_path / "broken.tif"
    if content is not None:
        image.write_bytes(content)
    result = run(SEGMENT, image, tmp_path / "out")
    assert result.returncode == 1
    assert "broken.tif" in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "labels.tif").exists()


def test_a_stack_of_several_planes_is_refused(tmp_path: Path) -> None:
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 32, 32), dtype=np.uint16), photometric="minisblack")
    result = run(SEGMENT, stack, tmp_path / "out")
    assert result.returncode == 1
    assert "expected a 2-D image" in result.stderr
