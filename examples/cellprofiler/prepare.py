"""Put the ExampleFly demo into the local bucket: `ds setup` runs this through `local.prepare`.

    python prepare.py BUCKET_DIR [--data EXAMPLEFLY_DIR | --stand-ins]

It writes the layout of Distributed-CellProfiler's demo bucket:

    demo_project_folder/workspace/ExampleFly.cppipe   the pipeline
    demo_project_folder/workspace/load_data.csv       LoadData CSV (paths under /home/ubuntu/bucket)
    demo_project_folder/images/01_POS<nnn>_<c>.TIF    3 positions × 3 channels

copied from the ExampleFly data (``--data``, else ``$DS_EXAMPLEFLY_DIR``, else
``../shared/data/examplefly`` beside the repository) when it is there. Otherwise it writes
stand-ins of the same layout: synthetic cells in 1000 × 1006 8-bit TIFFs, the same
load_data.csv, and a smaller pipeline of our own that finds nuclei, cells and cytoplasm and
exports the same four tables. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
from pathlib import Path

PROJECT = "demo_project_folder"
POSITIONS = ("002", "076", "218")
#: LoadData channel → file suffix (DAPI, FITC and a red stain in the demo)
CHANNELS = {"OrigBlue": "D", "OrigGreen": "F", "OrigRed": "R"}
WIDTH, HEIGHT = 1000, 1006
IMAGE_PATH = f"/home/ubuntu/bucket/{PROJECT}/images"


def has_data(folder: Path) -> bool:
    """True when ``folder`` holds the ExampleFly workspace and images."""
    return (folder / "workspace" / "ExampleFly.cppipe").is_file() and (folder / "images").is_dir()


def find_data() -> Path | None:
    """The ExampleFly folder to copy from ($DS_EXAMPLEFLY_DIR, else
    ../shared/data/examplefly beside the repository), or None when there is none."""
    repo = Path(__file__).resolve().parents[2]
    for candidate in (os.environ.get("DS_EXAMPLEFLY_DIR"), repo.parent / "shared/data/examplefly"):
        if candidate and has_data(Path(candidate)):
            return Path(candidate)
    return None


def copy_real(data: Path, bucket: Path) -> None:
    """Copy the pipeline, the LoadData CSV and the nine images into the bucket."""
    for name in ("ExampleFly.cppipe", "load_data.csv"):
        target = bucket / PROJECT / "workspace" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / "workspace" / name, target)  # not copy(): the source is read-only
    images = bucket / PROJECT / "images"
    images.mkdir(parents=True, exist_ok=True)
    for source in sorted((data / "images").glob("*.TIF")):
        shutil.copyfile(source, images / source.name)


def file_name(position: str, suffix: str) -> str:
    return f"01_POS{position}_{suffix}.TIF"


def load_data_csv() -> str:
    """The demo's LoadData CSV: one row per position, paths as DCP's mount saw them."""
    names = list(CHANNELS)
    header = [f"FileName_{c}" for c in names] + ["Metadata_Position"]
    header += [f"PathName_{c}" for c in names]
    lines = [",".join(header)]
    for position in POSITIONS:
        row = [file_name(position, CHANNELS[c]) for c in names] + [position]
        row += [IMAGE_PATH] * len(names)
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def tiff(pixels: bytes, width: int, height: int) -> bytes:
    """An uncompressed 8-bit greyscale TIFF (little-endian, one strip)."""
    entries = [  # tag, type (3 = SHORT, 4 = LONG), value
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(pixels)),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II" + struct.pack("<HI", 42, 8 + len(pixels)) + pixels + ifd


def disc(image: bytearray, cx: float, cy: float, radius: float, value: int) -> None:
    """Draw a filled disc, keeping the brighter value where discs overlap."""
    for y in range(max(0, int(cy - radius)), min(HEIGHT, int(cy + radius) + 1)):
        dy = y - cy
        span = (radius * radius - dy * dy) ** 0.5 if radius * radius >= dy * dy else -1.0
        if span < 0:
            continue
        start, stop = max(0, int(cx - span)), min(WIDTH, int(cx + span) + 1)
        row = y * WIDTH
        for x in range(start, stop):
            image[row + x] = max(image[row + x], value)


def stand_in_images(position: str) -> dict[str, bytes]:
    """Three channels of one field: nuclei (D) and the cells around them (F, R)."""
    rng = random.Random(int(position))
    nuclei: list[tuple[float, float, float]] = []
    while len(nuclei) < 120:
        x, y, r = rng.uniform(30, WIDTH - 30), rng.uniform(30, HEIGHT - 30), rng.uniform(6, 9)
        if all((x - a) ** 2 + (y - b) ** 2 > (2.6 * (r + c)) ** 2 for a, b, c in nuclei):
            nuclei.append((x, y, r))
    out: dict[str, bytes] = {}
    for channel, (scale, low, high) in {"D": (1.0, 150, 220), "F": (2.2, 70, 120)}.items():
        image = bytearray([12]) * (WIDTH * HEIGHT)
        for x, y, r in nuclei:
            disc(image, x, y, r * scale, rng.randint(low, high))
        out[channel] = tiff(bytes(image), WIDTH, HEIGHT)
    out["R"] = out["F"]
    return out


def write_stand_ins(bucket: Path) -> None:
    """Write the stand-in pipeline, CSV and images."""
    workspace = bucket / PROJECT / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "ExampleFly.cppipe").write_text(pipeline_text())
    (workspace / "load_data.csv").write_text(load_data_csv())
    images = bucket / PROJECT / "images"
    images.mkdir(parents=True, exist_ok=True)
    for position in POSITIONS:
        for suffix, data in stand_in_images(position).items():
            (images / file_name(position, suffix)).write_bytes(data)


def pipeline_text() -> str:
    """The stand-in pipeline (CellProfiler 5 text format)."""
    parts = [
        "CellProfiler Pipeline: http://www.cellprofiler.org",
        "Version:5",
        "DateRevision:500",
        "GitHash:",
        f"ModuleCount:{len(_MODULES)}",
        "HasImagePlaneDetails:False",
        "",
    ]
    for number, (name, revision, settings) in enumerate(_MODULES, start=1):
        attributes = (
            f"module_num:{number}|svn_version:'Unknown'|variable_revision_number:{revision}|"
            "show_window:False|notes:[]|batch_state:array([], dtype=uint8)|enabled:True|"
            "wants_pause:False"
        )
        parts.append(f"{name}:[{attributes}]")
        parts += [f"    {setting}" for setting in settings]
        parts.append("")
    return "\n".join(parts)


def threshold_settings(smoothing_scale: float) -> list[str]:
    """The threshold settings (version 12) that end both Identify modules: one global Minimum
    Cross-Entropy threshold, smoothed by ``smoothing_scale`` (0 for none)."""
    return [
        "Threshold setting version:12",
        "Threshold strategy:Global",
        "Thresholding method:Minimum Cross-Entropy",
        f"Threshold smoothing scale:{smoothing_scale}",
        "Threshold correction factor:1.0",
        "Lower and upper bounds on threshold:0.0,1.0",
        "Manual threshold:0.0",
        "Select the measurement to threshold with:None",
        "Two-class or three-class thresholding?:Two classes",
        "Log transform before thresholding?:No",
        "Assign pixels in the middle intensity class to the foreground or the background?"
        ":Foreground",
        "Size of adaptive window:50",
        "Lower outlier fraction:0.05",
        "Upper outlier fraction:0.05",
        "Averaging method:Mean",
        "Variance method:Standard deviation",
        "# of deviations:2.0",
        # CellProfiler 5 writes the method a second time, for the adaptive strategy.
        "Thresholding method:Minimum Cross-Entropy",
    ]


_MODULES: list[tuple[str, int, list[str]]] = [
    (
        "LoadData",
        6,
        [
            "Input data file location:Default Input Folder|",
            "Name of the file:load_data.csv",
            "Load images based on this data?:Yes",
            "Base image location:Default Input Folder|",
            "Process just a range of rows?:No",
            "Rows to process:1,100000",
            "Group images by metadata?:Yes",
            "Select metadata tags for grouping:Position",
            "Rescale intensities?:Yes",
        ],
    ),
    (
        "IdentifyPrimaryObjects",
        15,
        [
            "Select the input image:OrigBlue",
            "Name the primary objects to be identified:Nuclei",
            "Typical diameter of objects, in pixel units (Min,Max):10,40",
            "Discard objects outside the diameter range?:Yes",
            "Discard objects touching the border of the image?:Yes",
            "Method to distinguish clumped objects:Intensity",
            "Method to draw dividing lines between clumped objects:Intensity",
            "Size of smoothing filter:10",
            "Suppress local maxima that are closer than this minimum allowed distance:7.0",
            "Speed up by using lower-resolution image to find local maxima?:Yes",
            "Fill holes in identified objects?:After both thresholding and declumping",
            "Automatically calculate size of smoothing filter for declumping?:Yes",
            "Automatically calculate minimum allowed distance between local maxima?:Yes",
            "Handling of objects if excessive number of objects identified:Continue",
            "Maximum number of objects:500",
            "Use advanced settings?:No",
            *threshold_settings(1.3488),
        ],
    ),
    (
        "IdentifySecondaryObjects",
        10,
        [
            "Select the input objects:Nuclei",
            "Name the objects to be identified:Cells",
            "Select the method to identify the secondary objects:Propagation",
            "Select the input image:OrigGreen",
            "Number of pixels by which to expand the primary objects:10",
            "Regularization factor:0.05",
            "Discard secondary objects touching the border of the image?:No",
            "Discard the associated primary objects?:No",
            "Name the new primary objects:FilteredNuclei",
            "Fill holes in identified objects?:Yes",
            *threshold_settings(0.0),
        ],
    ),
    (
        "IdentifyTertiaryObjects",
        3,
        [
            "Select the larger identified objects:Cells",
            "Select the smaller identified objects:Nuclei",
            "Name the tertiary objects to be identified:Cytoplasm",
            "Shrink smaller object prior to subtraction?:Yes",
        ],
    ),
    (
        "MeasureObjectSizeShape",
        3,
        [
            "Select object sets to measure:Nuclei, Cells, Cytoplasm",
            "Calculate the Zernike features?:No",
            "Calculate the advanced features?:No",
        ],
    ),
    (
        "MeasureObjectIntensity",
        4,
        [
            "Select images to measure:OrigBlue, OrigGreen",
            "Select objects to measure:Nuclei, Cells, Cytoplasm",
        ],
    ),
    (
        "ExportToSpreadsheet",
        13,
        [
            'Select the column delimiter:Comma (",")',
            "Add image metadata columns to your object data file?:No",
            "Add image file and folder names to your object data file?:No",
            "Select the measurements to export:No",
            "Calculate the per-image mean values for object measurements?:No",
            "Calculate the per-image median values for object measurements?:No",
            "Calculate the per-image standard deviation values for object measurements?:No",
            "Output file location:Default Output Folder|",
            "Create a GenePattern GCT file?:No",
            "Select source of sample row name:Metadata",
            "Select the image to use as the identifier:None",
            "Select the metadata to use as the identifier:None",
            "Export all measurement types?:No",
            "Press button to select measurements:",
            "Representation of Nan/Inf:NaN",
            "Add a prefix to file names?:No",
            "Filename prefix:MyExpt_",
            "Overwrite existing files without warning?:Yes",
            "Data to export:Image",
            "Combine these object measurements with those of the previous object?:No",
            "File name:Image.csv",
            "Use the object name for the file name?:No",
            "Data to export:Nuclei",
            "Combine these object measurements with those of the previous object?:No",
            "File name:Nuclei.csv",
            "Use the object name for the file name?:No",
            "Data to export:Cells",
            "Combine these object measurements with those of the previous object?:No",
            "File name:Cells.csv",
            "Use the object name for the file name?:No",
            "Data to export:Cytoplasm",
            "Combine these object measurements with those of the previous object?:No",
            "File name:Cytoplasm.csv",
            "Use the object name for the file name?:No",
        ],
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bucket", type=Path, help="the local bucket folder")
    parser.add_argument("--data", type=Path, help="the ExampleFly folder (workspace/, images/)")
    parser.add_argument(
        "--stand-ins", action="store_true", help="write stand-ins even when the data is there"
    )
    args = parser.parse_args(argv)
    if args.data is not None and not has_data(args.data):
        parser.error(f"{args.data} has no workspace/ExampleFly.cppipe and images/")
    data = None if args.stand_ins else (args.data or find_data())
    if data is not None:
        copy_real(data, args.bucket)
        print(f"copied the ExampleFly demo from {data} into {args.bucket / PROJECT}")
    else:
        write_stand_ins(args.bucket)
        print(
            f"ExampleFly data not found: wrote stand-in images and pipeline into "
            f"{args.bucket / PROJECT}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
