"""Put the OME-Zarr example's images into a local bucket folder, one folder per plate.

Usage: ``python prepare_images.py BUCKET_DIR [--source FOLDER]``

`ds setup` runs this once (it is the example's ``local.prepare`` step). It writes
``BUCKET_DIR/images/POS<nnn>/01_POS<nnn>_<C>.TIF`` for the three positions 002, 076 and 218
and the three channels D, F and R: the layout of a Distributed-OmeZarrCreator input folder
(``input_location/<plate>/``), one "plate" per microscope position.

The images are copied from ``--source`` (default: ``../shared/data/examplefly/images`` next
to the repository, the ExampleFly images of Distributed-CellProfiler) when that folder holds
them; otherwise stand-ins of the same names, size (1000 × 1006 pixels) and pixel type (8-bit)
are generated from fixed seeds, so the example also runs from a fresh clone. Files whose bytes
are already right are left untouched. Exit codes: 0 done, 1 a file could not be written or
read, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from functools import cache
from io import BytesIO
from pathlib import Path

import numpy as np
import tifffile

POSITIONS = ("002", "076", "218")
CHANNELS = ("D", "F", "R")
#: ExampleFly's images are 1006 rows of 1000 pixels, 8-bit.
SHAPE = (1006, 1000)
BASE_SEED = 31000
DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "examplefly" / "images"
)


def image_name(position: str, channel: str) -> str:
    """The ExampleFly file name of one position and channel, e.g. ``01_POS002_D.TIF``."""
    return f"01_POS{position}_{channel}.TIF"


def bucket_key(position: str, channel: str) -> str:
    """Where the image goes in the bucket: ``images/POS002/01_POS002_D.TIF``."""
    return f"images/POS{position}/{image_name(position, channel)}"


@cache
def _cells(position: str) -> np.ndarray:
    """The cell-density image of one position: 120 round cells, values 0 to 1."""
    rng = np.random.default_rng(BASE_SEED + 10 * POSITIONS.index(position))
    image = np.zeros(SHAPE)
    for _ in range(120):
        y, x = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
        radius = rng.uniform(6, 14)
        # Only the cell's neighbourhood changes (3 radii): drawing whole frames is slow.
        top, left = max(int(y - 3 * radius), 0), max(int(x - 3 * radius), 0)
        bottom, right = (
            min(int(y + 3 * radius) + 1, SHAPE[0]),
            min(int(x + 3 * radius) + 1, SHAPE[1]),
        )
        yy, xx = np.mgrid[top:bottom, left:right]
        image[top:bottom, left:right] += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * radius**2))
    return np.clip(image, 0, 1)


def stand_in(position: str, channel: str) -> np.ndarray:
    """A synthetic 8-bit image for one position and channel: bright round cells on a dim,
    noisy background (different cells per position, different brightness per channel)."""
    gain = {"D": 200.0, "F": 140.0, "R": 90.0}[channel]
    noise = np.random.default_rng(BASE_SEED + 1000 + CHANNELS.index(channel)).normal(0, 4, SHAPE)
    return np.clip(np.rint(12 + gain * _cells(position) + noise), 0, 255).astype(np.uint8)


def _tiff_bytes(image: np.ndarray) -> bytes:
    stream = BytesIO()
    tifffile.imwrite(stream, image, photometric="minisblack")
    return stream.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def prepare(bucket_dir: Path, source: Path) -> str:
    """Write the nine images under ``bucket_dir``; return "copied" or "generated"."""
    originals = [source / image_name(p, c) for p in POSITIONS for c in CHANNELS]
    real = all(path.is_file() for path in originals)
    for position in POSITIONS:
        for channel in CHANNELS:
            target = bucket_dir / bucket_key(position, channel)
            if real:
                original = source / image_name(position, channel)
                if target.is_file() and target.read_bytes() == original.read_bytes():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(original, target)
            else:
                _write_if_changed(target, _tiff_bytes(stand_in(position, channel)))
    return "copied" if real else "generated"


def main(argv: list[str]) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="prepare_images.py", description=__doc__.split("\n")[0])
    parser.add_argument("bucket_dir", type=Path, help="the local bucket folder")
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="a folder of ExampleFly images"
    )
    args = parser.parse_args(argv)
    if args.bucket_dir.exists() and not args.bucket_dir.is_dir():
        print(f"prepare_images.py: {args.bucket_dir} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        how = prepare(args.bucket_dir, args.source)
    except OSError as error:
        print(f"prepare_images.py: {error}", file=sys.stderr)
        return 1
    origin = f"from {args.source}" if how == "copied" else "(stand-ins: no ExampleFly images)"
    print(f"prepare_images.py: 9 images {how} {origin} into {args.bucket_dir / 'images'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
