"""Find and measure the nuclei in one fluorescence image (a DNA stain such as DAPI or Hoechst).

Usage: ``python segment_nuclei.py IMAGE OUTPUT_DIR [--diameter PIXELS]``

Steps: read the image (TIFF; a stack with one plane is squeezed, RGB is averaged, a palette
image is mapped through its colour table) → normalise to [0, 1] between robust percentiles →
gaussian smoothing → Otsu threshold → drop specks smaller than a nucleus could be and fill
holes inside nuclei → split touching nuclei (distance transform weighted by the smoothed
brightness, one seed per peak found by ``peak_local_max``, watershed) → measure each nucleus.

It writes three files into OUTPUT_DIR (created if missing):

- ``labels.tif``: the label image (0 = background, 1..N = nuclei), uint16 (uint32 above 65535
  nuclei), zlib-compressed;
- ``nuclei.csv``: one row per nucleus: label, area, centroid_y, centroid_x, mean_intensity,
  max_intensity (in the image's own units), eccentricity, solidity, perimeter,
  equivalent_diameter (lengths and areas in pixels);
- ``summary.json``: the image name, the nucleus count, their mean area and the threshold (in
  the image's units and normalised), plus the parameters used.

``--diameter`` is the typical nucleus diameter in pixels (default 18); the smoothing, the
smallest kept object and the seed spacing are derived from it, so set it when your nuclei are
much larger or smaller. Exit codes: 0 done, 1 the image cannot be read or is not a 2-D image,
2 wrong usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import regionprops
from skimage.segmentation import watershed

CSV_COLUMNS = (
    "label",
    "area",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
    "max_intensity",
    "eccentricity",
    "solidity",
    "perimeter",
    "equivalent_diameter",
)


class ImageError(Exception):
    """The input cannot be used as a 2-D image; the message says why."""


@dataclass(frozen=True)
class Parameters:
    """Segmentation settings, all derived from the typical nucleus diameter in pixels."""

    diameter: float

    @property
    def smoothing_sigma(self) -> float:
        """Gaussian sigma before thresholding: enough to flatten chromatin texture and noise."""
        return max(1.0, self.diameter / 12)

    @property
    def min_area(self) -> int:
        """Objects smaller than a disc of a third of the diameter are debris, not nuclei."""
        return max(4, round(math.pi * (self.diameter / 6) ** 2))

    @property
    def max_hole_area(self) -> int:
        """Holes up to half a nucleus are filled; larger ones are background ringed by cells."""
        return max(4, round(math.pi * (self.diameter / 2) ** 2 / 2))

    @property
    def seed_sigma(self) -> float:
        """Gaussian sigma of the brightness that shapes the seeds: blurs texture, not seams."""
        return self.diameter / 8

    @property
    def min_distance(self) -> int:
        """The closest two nucleus centres may be, in pixels."""
        return max(2, round(self.diameter / 4))


@dataclass(frozen=True)
class Result:
    """The segmentation of one image."""

    labels: np.ndarray
    threshold: float | None
    threshold_normalised: float | None


def read_image(path: Path) -> np.ndarray:
    """Read ``path`` as a 2-D float image in its own intensity units.

    A stack with one plane is squeezed, RGB(A) samples are averaged and a palette image is
    mapped through its colour table. Raises ``ImageError`` with the reason otherwise.
    """
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = np.asarray(series.asarray())
            axes = series.axes
            page = tif.pages.first
            colormap = page.colormap if page.photometric == tifffile.PHOTOMETRIC.PALETTE else None
    except (OSError, ValueError, IndexError) as error:
        raise ImageError(f"{path}: not a readable TIFF image ({error})") from error
    if colormap is not None:
        # Palette images store indices; the colour table holds the real intensities.
        data = np.asarray(colormap, dtype=np.float64)[:, data].mean(axis=0)
    elif "S" in axes and data.shape[axes.index("S")] in (3, 4):
        # RGB(A): the brightness is the mean of the colour samples (alpha is not light).
        samples = np.moveaxis(data, axes.index("S"), 0)[:3]
        data = samples.astype(np.float64).mean(axis=0)
    data = np.squeeze(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3].astype(np.float64).mean(axis=-1)
    if data.ndim != 2:
        raise ImageError(
            f"{path}: expected a 2-D image, got shape {tuple(series.shape)} (axes {axes}); "
            "save one plane or channel per file"
        )
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ImageError(f"{path}: pixel type {data.dtype} is not a real number")
    image = data.astype(np.float64)
    if not np.isfinite(image).all():
        raise ImageError(f"{path}: the image holds NaN or infinite pixels")
    return image


def _remove_small_objects(mask: np.ndarray, min_area: int) -> np.ndarray:
    labels, count = ndi.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False
    return np.asarray(keep[labels])


def _fill_small_holes(mask: np.ndarray, max_hole_area: int) -> np.ndarray:
    # Background pieces that do not touch the border and are small are holes in a nucleus.
    background, count = ndi.label(~mask)
    sizes = np.bincount(background.ravel(), minlength=count + 1)
    border = np.unique(
        np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    )
    fill = sizes <= max_hole_area
    fill[0] = False
    fill[border] = False
    return np.asarray(mask | fill[background])


def segment(image: np.ndarray, params: Parameters) -> Result:
    """Label the nuclei of a 2-D image (0 = background, 1..N = nuclei, in reading order)."""
    low, high = np.percentile(image, [0.5, 99.9])
    if high <= low:
        # A flat image has no nuclei; say so rather than thresholding noise-free nothing.
        return Result(np.zeros(image.shape, dtype=np.int32), None, None)
    # Clipping at robust percentiles keeps a few saturated specks from squeezing the histogram.
    normalised = np.clip((image - low) / (high - low), 0.0, 1.0)
    smoothed = gaussian(normalised, sigma=params.smoothing_sigma, preserve_range=True)
    threshold = float(threshold_otsu(smoothed))
    mask = smoothed > threshold
    mask = _remove_small_objects(mask, params.min_area)
    mask = _fill_small_holes(mask, params.max_hole_area)

    # Seeds and basins: the distance to the background (touching nuclei meet at a neck) times
    # the smoothed brightness (and at a dimmer seam), so clumps split along both cues.
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask), sigma=1.0)
    brightness = gaussian(normalised, sigma=params.seed_sigma, preserve_range=True)
    surface = distance * brightness
    components, _ = ndi.label(mask)
    peaks = peak_local_max(
        surface,
        min_distance=params.min_distance,
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Every foreground component gets a seed (at its highest point) even when no peak was
    # found in it, or the watershed would silently drop that nucleus.
    count = int(components.max())
    unseeded = np.setdiff1d(np.arange(1, count + 1), components[markers > 0])
    for offset, position in enumerate(ndi.maximum_position(surface, components, unseeded)):
        markers[tuple(int(i) for i in position)] = len(peaks) + 1 + offset
    labels = watershed(-surface, markers, mask=mask)
    # Watershed can leave slivers where seeds crowd; they are not nuclei.
    sizes = np.bincount(labels.ravel())
    small = sizes < params.min_area
    small[0] = False
    labels[small[labels]] = 0
    relabelled = _relabel_in_reading_order(labels)
    return Result(relabelled, threshold * (high - low) + low, threshold)


def _relabel_in_reading_order(labels: np.ndarray) -> np.ndarray:
    # Number nuclei 1..N by their first pixel (top to bottom, left to right), so the same
    # image always gives the same labels and the numbering has no gaps.
    values, first_index = np.unique(labels.ravel(), return_index=True)
    nuclei = values > 0
    order = values[nuclei][np.argsort(first_index[nuclei], kind="stable")]
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup[labels]


def measure(labels: np.ndarray, image: np.ndarray) -> list[dict[str, float | int]]:
    """One row per nucleus with the ``CSV_COLUMNS`` measurements, in label order.

    Intensities are in ``image``'s own units; lengths and areas in pixels.
    """
    rows: list[dict[str, float | int]] = []
    for region in regionprops(labels.astype(np.int32), intensity_image=image):
        centroid_y, centroid_x = region.centroid
        rows.append(
            {
                "label": int(region.label),
                "area": int(region.area),
                "centroid_y": float(centroid_y),
                "centroid_x": float(centroid_x),
                "mean_intensity": float(region.intensity_mean),
                "max_intensity": float(region.intensity_max),
                "eccentricity": float(region.eccentricity),
                "solidity": float(region.solidity),
                "perimeter": float(region.perimeter),
                "equivalent_diameter": float(region.equivalent_diameter_area),
            }
        )
    return rows


def write_outputs(
    output_dir: Path,
    image_name: str,
    result: Result,
    rows: list[dict[str, float | int]],
    params: Parameters,
) -> None:
    """Write ``labels.tif``, ``nuclei.csv`` and ``summary.json`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    count = len(rows)
    dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32
    tifffile.imwrite(output_dir / "labels.tif", result.labels.astype(dtype), compression="zlib")
    with (output_dir / "nuclei.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            )
    summary = {
        "image": image_name,
        "nuclei": count,
        "mean_area": round(sum(float(r["area"]) for r in rows) / count, 2) if count else None,
        "threshold": None if result.threshold is None else round(result.threshold, 4),
        "threshold_normalised": (
            None if result.threshold_normalised is None else round(result.threshold_normalised, 6)
        ),
        "parameters": {
            "diameter": params.diameter,
            "smoothing_sigma": params.smoothing_sigma,
            "min_area": params.min_area,
            "max_hole_area": params.max_hole_area,
            "seed_sigma": params.seed_sigma,
            "min_distance": params.min_distance,
        },
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="segment_nuclei.py", description="Find and measure the nuclei in a 2-D image."
    )
    parser.add_argument("image", type=Path, help="a 2-D fluorescence image (TIFF)")
    parser.add_argument("output_dir", type=Path, help="the folder to write the results to")
    parser.add_argument(
        "--diameter",
        type=float,
        default=18.0,
        help="the typical nucleus diameter in pixels (default: 18)",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.diameter <= 1000:
        parser.error("--diameter must be between 2 and 1000 pixels")
    params = Parameters(diameter=args.diameter)
    try:
        image = read_image(args.image)
    except ImageError as error:
        print(f"segment_nuclei.py: cannot use the image: {error}", file=sys.stderr)
        return 1
    result = segment(image, params)
    rows = measure(result.labels, image)
    try:
        write_outputs(args.output_dir, args.image.name, result, rows, params)
    except OSError as error:
        print(f"segment_nuclei.py: cannot write the results: {error}", file=sys.stderr)
        return 1
    noun = "nucleus" if len(rows) == 1 else "nuclei"
    print(f"segment_nuclei.py: {args.image.name}: {len(rows)} {noun} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
