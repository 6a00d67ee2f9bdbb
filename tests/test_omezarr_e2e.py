"""`ds run examples/omezarr` end to end: DOZC job → one OME-Zarr per position, read back with
ome-zarr's reader and compared with the TIFFs; and the same images as one HCS plate."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import numpy as np
import pytest
import tifffile
import tomli_w

from conftest import REPO, SHARED_DATA
from distributed_something.config.loader import load_config

_MISSING = "the omezarr extra is not installed: pip install -e '.[omezarr]' (make examples)"
zarr = pytest.importorskip("zarr", reason=_MISSING)
pytest.importorskip("ome_zarr", reason=_MISSING)

from ome_zarr.io import parse_url  # type: ignore[import-untyped]  # noqa: E402
from ome_zarr.reader import Reader  # type: ignore[import-untyped]  # noqa: E402

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]
EXAMPLE = REPO / "examples" / "omezarr"
FLY_IMAGES = SHARED_DATA / "examplefly" / "images"
POSITIONS = ("002", "076", "218")
CHANNELS = ("D", "F", "R")


def copy_example(tmp_path: Path, job_changes: dict[str, Any] | None = None) -> Path:
    """The example in a tmp folder; its prepare step copies the real ExampleFly images when
    this machine has them (into the tmp bucket, never into the repository)."""
    folder = tmp_path / "omezarr"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ds"))
    if FLY_IMAGES.is_dir():
        config = load_config(folder / "ds.toml").model_dump(mode="json", exclude_none=True)
        config["local"]["prepare"] += ["--source", str(FLY_IMAGES)]
        (folder / "ds.toml").write_text(tomli_w.dumps(config))
    if job_changes:
        job = json.loads((folder / "job.json").read_text())
        (folder / "job.json").write_text(json.dumps({**job, **job_changes}))
    return folder


def run(ds: Ds, folder: Path, tmp_path: Path) -> dict[str, Any]:
    result = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path)
    assert result.returncode == 0, (
        f"ds run failed (a DOZC job without a file list needs the worker's listed_inputs hook, "
        f"see docs/recipes/omezarr.md):\n{result.stderr}"
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def bucket(folder: Path) -> Path:
    return folder / ".ds" / "OmeZarrFly" / "buckets" / "examplefly"


def position_stack(root: Path, position: str) -> np.ndarray:
    """The three channel TIFFs of a position in the bucket, as tifffile reads them."""
    folder = root / "images" / f"POS{position}"
    return np.stack([tifffile.imread(folder / f"01_POS{position}_{c}.TIF") for c in CHANNELS])


def check_position_image(root: Path, position: str) -> None:
    """The position's OME-Zarr: 3 levels, level 0 = the TIFFs, level 1 half the size."""
    image = root / "images_zarr" / f"POS{position}.ome.zarr"
    nodes = list(Reader(parse_url(str(image)))())
    node = nodes[0]
    levels = [np.asarray(level) for level in node.data]
    expected = position_stack(root, position)
    assert expected.shape == (3, 1006, 1000) and expected.dtype == np.uint8
    np.testing.assert_array_equal(levels[0], expected)
    assert [level.shape for level in levels] == [(3, 1006, 1000), (3, 503, 500), (3, 251, 250)]
    assert levels[1].dtype == np.uint8
    assert node.metadata["channel_names"] == list(CHANNELS)
    multiscale = json.loads((image / ".zattrs").read_text())["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert multiscale["name"] == f"POS{position}"
    assert zarr.open_array(str(image / "0")).chunks == (1, 512, 512)  # tile_width/height


def test_ds_run_example_converts_each_position_to_an_ome_zarr_image(tmp_path: Path, ds: Ds) -> None:
    folder = copy_example(tmp_path)
    report = run(ds, folder, tmp_path)
    assert report["counts"]["done"] == 3 and report["counts"]["dead"] == 0
    root = bucket(folder)
    for task in report["tasks"]:
        assert all(k.startswith(f"images_zarr/{task['group']}.ome.zarr/") for k in task["outputs"])
    for position in POSITIONS:
        check_position_image(root, position)
        if FLY_IMAGES.is_dir():  # the real images, not stand-ins
            original = tifffile.imread(FLY_IMAGES / f"01_POS{position}_D.TIF")
            stored = zarr.open_array(str(root / "images_zarr" / f"POS{position}.ome.zarr/0"))
            np.testing.assert_array_equal(stored[0], original)


def test_a_file_list_in_the_job_needs_no_listing(tmp_path: Path, ds: Ds) -> None:
    files = [f"01_{{plate}}_{c}.TIF" for c in CHANNELS]
    folder = copy_example(tmp_path, {"files": files})
    report = run(ds, folder, tmp_path)
    assert report["counts"]["done"] == 3
    for position in POSITIONS:
        check_position_image(bucket(folder), position)


def test_the_three_positions_as_one_plate(tmp_path: Path, ds: Ds) -> None:
    changes = {
        "input_location": "",
        "resolutions": 2,
        "files": [f"POS{p}/01_POS{p}_{c}.TIF" for p in POSITIONS for c in CHANNELS],
        "additional_flags": r"--layout plate --pattern POS(?P<column>\d+)/.*_(?P<channel>\w)\.",
        "plates": ["images"],
    }
    folder = copy_example(tmp_path, changes)
    report = run(ds, folder, tmp_path)
    assert report["counts"]["done"] == 1
    root = bucket(folder)
    plate = root / "images_zarr" / "images.ome.zarr"
    node = next(iter(Reader(parse_url(str(plate)))()))
    assert "Plate" in [type(spec).__name__ for spec in node.specs]
    metadata = json.loads((plate / ".zattrs").read_text())["plate"]
    assert [w["path"] for w in metadata["wells"]] == ["A/2", "A/76", "A/218"]
    for position in POSITIONS:
        field = plate / "A" / str(int(position)) / "0"
        levels = [np.asarray(level) for level in next(iter(Reader(parse_url(str(field)))())).data]
        np.testing.assert_array_equal(levels[0], position_stack(root, position))
        assert levels[1].shape == (3, 503, 500)
