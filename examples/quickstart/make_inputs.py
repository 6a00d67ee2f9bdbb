"""Write the quickstart's inputs into a local bucket folder.

Usage: ``python make_inputs.py BUCKET_DIR``

`ds setup` runs this once (it is the example's ``local.prepare`` step). It writes

- ``BUCKET_DIR/images/nuclei_01.tif`` … ``nuclei_06.tif``: synthetic fluorescence images of
  nuclei (512 x 512, uint16), like a DAPI channel: 20 to 60 elliptical nuclei of varied size and
  brightness, some touching, blurred by the optics, on an uneven background with photon
  (Poisson) and read (gaussian) noise;
- ``BUCKET_DIR/images/nuclei_0N.truth.json``: how many nuclei each image really holds, so the
  segmentation can be checked;
- ``BUCKET_DIR/scripts/segment_nuclei.py``: a copy of the analysis script the tasks run.

Every image comes from its own fixed random seed, so running this again writes the same bytes
(files whose bytes are already right are left untouched). Exit codes: 0 done, 1 a file could
not be written, 2 wrong usage (and 1, with one line saying which, when the
[quickstart] extra is not installed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import tifffile
    from scipy import ndimage as ndi
except ImportError as missing:  # one line a person can act on, not a traceback
    sys.exit(
        f"make_inputs.py: {missing.name} is not installed; the quickstart needs ds's "
        "[quickstart] extra: pip install -e '.[quickstart]' in the ds checkout (`make demo` "
        "does)"
    )

IMAGE_COUNT = 6
SHAPE = (512, 512)
#: Image N is drawn from seed BASE_SEED + N: fixed, so every run writes the same images.
BASE_SEED = 17000
#: The share of nuclei placed against an earlier one, so the segmentation has to split them.
TOUCHING_SHARE = 0.3
SCRIPT = Path(__file__).resolve().parent / "segment_nuclei.py"
USAGE = "usage: make_inputs.py BUCKET_DIR  (the local bucket folder to write images/ and scripts/)"


@dataclass(frozen=True)
class Nucleus:
    """One synthetic nucleus: an ellipse with semi-axes ``a`` ≥ ``b`` turned by ``angle``."""

    y: float
    x: float
    a: float
    b: float
    angle: float
    brightness: float

    def radius_towards(self, direction: float) -> float:
        """The distance from the centre to the outline along ``direction`` (radians)."""
        psi = direction - self.angle
        return self.a * self.b / float(np.hypot(self.b * np.cos(psi), self.a * np.sin(psi)))


def _gap(one: Nucleus, other: Nucleus) -> float:
    """Centre distance minus both radii along the line joining the centres (< 0: overlap)."""
    dy, dx = other.y - one.y, other.x - one.x
    direction = float(np.arctan2(dy, dx))
    return float(np.hypot(dy, dx)) - one.radius_towards(direction) - other.radius_towards(direction)


def place_nuclei(rng: np.random.Generator, count: int) -> tuple[list[Nucleus], int]:
    """Place up to ``count`` nuclei fully inside the image; return them and how many touch.

    A touching nucleus overlaps its partner by 0 to 15 % of their summed radii (a visible neck
    the segmentation can split); every other pair is at least 3 pixels apart.
    """
    height, width = SHAPE
    nuclei: list[Nucleus] = []
    touching = 0
    for _ in range(count):
        for _attempt in range(500):
            a = float(rng.uniform(7.0, 13.0))
            b = a * float(rng.uniform(0.65, 1.0))
            angle = float(rng.uniform(0.0, np.pi))
            brightness = float(rng.uniform(0.35, 1.0))
            partner: Nucleus | None = None
            if nuclei and rng.random() < TOUCHING_SHARE:
                partner = nuclei[int(rng.integers(len(nuclei)))]
                direction = float(rng.uniform(-np.pi, np.pi))
                probe = Nucleus(0.0, 0.0, a, b, angle, brightness)
                reach = partner.radius_towards(direction) + probe.radius_towards(direction + np.pi)
                distance = reach * float(rng.uniform(0.85, 1.0))
                y = partner.y + distance * float(np.sin(direction))
                x = partner.x + distance * float(np.cos(direction))
            else:
                y = float(rng.uniform(0.0, height))
                x = float(rng.uniform(0.0, width))
            candidate = Nucleus(y, x, a, b, angle, brightness)
            inside = a + 4 <= y <= height - a - 4 and a + 4 <= x <= width - a - 4
            if inside and all(_gap(candidate, n) >= 3.0 for n in nuclei if n is not partner):
                nuclei.append(candidate)
                touching += partner is not None
                break
    return nuclei, touching


def render(rng: np.random.Generator, nuclei: list[Nucleus]) -> np.ndarray:
    """Draw the nuclei as a microscope would record them, as a uint16 image."""
    height, width = SHAPE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    # Chromatin texture: smooth random variation inside every nucleus.
    texture = ndi.gaussian_filter(rng.normal(0.0, 1.0, SHAPE), 1.5)
    texture /= max(float(np.abs(texture).max()), 1e-9)
    signal = np.zeros(SHAPE)
    for n in nuclei:
        # Only the nucleus's bounding box can change (every nucleus lies inside the image).
        box = (
            slice(int(n.y - n.a) - 1, int(n.y + n.a) + 2),
            slice(int(n.x - n.a) - 1, int(n.x + n.a) + 2),
        )
        dy, dx = yy[box] - n.y, xx[box] - n.x
        cos, sin = np.cos(n.angle), np.sin(n.angle)
        u = (dx * cos + dy * sin) / n.a
        v = (-dx * sin + dy * cos) / n.b
        # A domed profile (bright centre, softer rim), as DNA stains look in wide-field.
        dome = np.clip(1.0 - (u * u + v * v), 0.0, 1.0) ** 0.35 * (1.0 + 0.4 * texture[box])
        # Touching nuclei do not add up: the brighter one wins where they meet.
        np.maximum(signal[box], 2600.0 * n.brightness * dome, out=signal[box])
    signal = ndi.gaussian_filter(signal, 1.5)
    # Uneven illumination: a gentle ramp on a camera offset.
    background = 180.0 + 60.0 * (yy / height) + 40.0 * (xx / width)
    photons = rng.poisson(signal + background).astype(np.float64)
    image = photons + rng.normal(0.0, 6.0, SHAPE)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly those bytes."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return True


def _tiff_bytes(image: np.ndarray) -> bytes:
    """The TIFF encoding of ``image``; it holds no timestamp, so equal images give equal bytes."""
    stream = BytesIO()
    tifffile.imwrite(stream, image, photometric="minisblack")
    return stream.getvalue()


def make_inputs(bucket_dir: Path) -> list[dict[str, Any]]:
    """Write every input of the quickstart under ``bucket_dir``; return the truth records."""
    truths: list[dict[str, Any]] = []
    for index in range(1, IMAGE_COUNT + 1):
        seed = BASE_SEED + index
        rng = np.random.default_rng(seed)
        nuclei, touching = place_nuclei(rng, int(rng.integers(20, 61)))
        image = render(rng, nuclei)
        name = f"nuclei_{index:02d}"
        truth: dict[str, Any] = {
            "image": f"{name}.tif",
            "nuclei": len(nuclei),
            "touching": touching,
            "seed": seed,
            "shape": list(SHAPE),
        }
        _write_if_changed(bucket_dir / "images" / f"{name}.tif", _tiff_bytes(image))
        truth_text = json.dumps(truth, indent=2, sort_keys=True) + "\n"
        _write_if_changed(bucket_dir / "images" / f"{name}.truth.json", truth_text.encode())
        truths.append(truth)
    _write_if_changed(bucket_dir / "scripts" / SCRIPT.name, SCRIPT.read_bytes())
    return truths


def main(argv: list[str]) -> int:
    """Command-line entry point; returns the exit code."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv in (["-h"], ["--help"]) else 2
    bucket_dir = Path(argv[0])
    if bucket_dir.exists() and not bucket_dir.is_dir():
        print(f"make_inputs.py: {bucket_dir} is a file, not a folder\n{USAGE}", file=sys.stderr)
        return 2
    try:
        truths = make_inputs(bucket_dir)
    except OSError as error:
        print(f"make_inputs.py: cannot write the inputs: {error}", file=sys.stderr)
        return 1
    total = sum(int(t["nuclei"]) for t in truths)
    print(f"make_inputs.py: {len(truths)} images ({total} nuclei) in {bucket_dir / 'images'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
