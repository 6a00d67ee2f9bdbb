"""Put the Fiji example's inputs into a local bucket folder.

Usage: ``python prepare.py BUCKET_DIR [--examplefly DIR | --stand-ins]``

`ds setup` runs this once (the example's ``local.prepare`` step). It writes

- ``BUCKET_DIR/images/01_POS002_D.TIF``, ``01_POS076_D.TIF``, ``01_POS218_D.TIF``: the DNA
  channel of the three ExampleFly fields of view. They are copied from the ExampleFly images
  when the folder is found (``--examplefly DIR``, else ``$DS_EXAMPLEFLY``, else
  ``../shared/data/examplefly`` next to this repository); otherwise stand-ins of the same
  layout are generated (or always, with ``--stand-ins``): same names, 1000 x 1006 pixels,
  8-bit grey, a few hundred bright nuclei-like discs on a dim noisy background, from fixed
  random seeds;
- ``BUCKET_DIR/scripts/count_nuclei.ijm``: the macro every task runs.

Files whose bytes are already right are left untouched. Exit codes: 0 done, 1 a file could
not be written, 2 wrong usage. Needs nothing but Python.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MACRO = HERE / "count_nuclei.ijm"
POSITIONS = ("002", "076", "218")
NAMES = [f"01_POS{position}_D.TIF" for position in POSITIONS]
WIDTH, HEIGHT = 1000, 1006


def has_images(folder: Path) -> bool:
    """True when ``folder/images`` holds the three DNA images."""
    return all((folder / "images" / name).is_file() for name in NAMES)


def find_examplefly() -> Path | None:
    """The ExampleFly folder from ``$DS_EXAMPLEFLY`` or next to this repository, or None."""
    candidates = [os.environ.get("DS_EXAMPLEFLY")]
    candidates.append(str(HERE.parents[1].parent / "shared" / "data" / "examplefly"))
    for candidate in candidates:
        if candidate and has_images(Path(candidate)):
            return Path(candidate)
    return None


def tiff_bytes(pixels: bytes, width: int, height: int) -> bytes:
    """A minimal baseline TIFF: one uncompressed strip of 8-bit grey (0 = black)."""
    entries = [
        (256, 3, 1, width),  # ImageWidth
        (257, 3, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # PhotometricInterpretation: BlackIsZero
        (273, 4, 1, 0),  # StripOffsets (filled in below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 3, 1, height),  # RowsPerStrip
        (279, 4, 1, width * height),  # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + pixels


def stand_in_image(seed: int) -> bytes:
    """A nuclei-like 8-bit image: 150 to 350 discs of radius 5 to 10 pixels, brightness 90
    to 220, on a background of 10 to 30, from a fixed seed."""
    rng = random.Random(seed)
    noise = bytes(10 + value * 21 // 256 for value in range(256))
    pixels = bytearray(rng.randbytes(WIDTH * HEIGHT).translate(noise))
    for _ in range(rng.randint(150, 350)):
        radius = rng.uniform(5.0, 10.0)
        cy, cx = rng.uniform(12, HEIGHT - 12), rng.uniform(12, WIDTH - 12)
        brightness = rng.randint(90, 220)
        for y in range(int(cy - radius), int(cy + radius) + 1):
            half = (radius * radius - (y - cy) ** 2) ** 0.5 if abs(y - cy) <= radius else -1
            if half < 0:
                continue
            start, end = int(cx - half), int(cx + half) + 1
            pixels[y * WIDTH + start : y * WIDTH + end] = bytes([brightness]) * (end - start)
    return tiff_bytes(bytes(pixels), WIDTH, HEIGHT)


def write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless it already holds exactly these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="prepare.py", description=__doc__.splitlines()[0])
    parser.add_argument("bucket_dir", type=Path, help="the local bucket folder to fill")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--examplefly", type=Path, help="the ExampleFly folder (with images/)")
    choice.add_argument("--stand-ins", action="store_true", help="always generate the images")
    args = parser.parse_args(argv)
    images = args.bucket_dir / "images"
    if args.examplefly is not None and not has_images(args.examplefly):
        parser.error(f"{args.examplefly}/images does not hold {', '.join(NAMES)}")
    try:
        source = None if args.stand_ins else (args.examplefly or find_examplefly())
        for index, name in enumerate(NAMES):
            target = images / name
            if source is not None:
                write_if_changed(target, (source / "images" / name).read_bytes())
            else:
                write_if_changed(target, stand_in_image(7000 + index))
        write_if_changed(args.bucket_dir / "scripts" / MACRO.name, MACRO.read_bytes())
    except OSError as error:
        print(f"prepare.py: {error}", file=sys.stderr)
        return 1
    origin = f"copied from {source}" if source is not None else "generated stand-ins"
    print(f"prepare.py: {len(NAMES)} images ({origin}) and the macro in {args.bucket_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
