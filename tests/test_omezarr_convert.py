"""The builtin OME-Zarr converter on small synthetic TIFFs, read back with ome-zarr's reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from distributed_something.recipes.base import Workdir
from distributed_something.recipes.omezarr import OmeZarrRecipe, omezarr_problem
from distributed_something.recipes.omezarr_convert import (
    ConvertError,
    ConvertOptions,
    add_levels,
    convert,
    level_count,
    main,
)

_MISSING = "the omezarr extra is not installed: pip install -e '.[omezarr]' (make examples)"
zarr = pytest.importorskip("zarr", reason=_MISSING)
pytest.importorskip("ome_zarr", reason=_MISSING)

from ome_zarr.io import parse_url  # type: ignore[import-untyped]  # noqa: E402
from ome_zarr.reader import Reader  # type: ignore[import-untyped]  # noqa: E402


def rng_image(seed: int, shape: tuple[int, ...], dtype: Any = np.uint16) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, size=shape, dtype=dtype)


def write_tiffs(folder: Path, images: dict[str, np.ndarray], **kwargs: Any) -> None:
    for name, image in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / name, image, **kwargs)


def read_back(path: Path) -> Any:
    """The first node ome-zarr's reader finds at ``path``."""
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes, f"ome-zarr finds nothing at {path}"
    return nodes[0]


def attrs(path: Path) -> dict[str, Any]:
    """The NGFF attributes of a group (NGFF 0.4 .zattrs or NGFF 0.5 zarr.json)."""
    if (path / "zarr.json").is_file():
        doc: dict[str, Any] = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
        return doc
    result: dict[str, Any] = json.loads((path / ".zattrs").read_text())
    return result


def mean2(a: np.ndarray) -> np.ndarray:
    """2 × 2 block means over the last two axes (sizes rounded down), rounded half to even:
    written out pixel by pixel, independently of the converter's reshape."""
    h, w = a.shape[-2] // 2, a.shape[-1] // 2
    total = (
        a[..., 0 : 2 * h : 2, 0 : 2 * w : 2].astype(np.float64)
        + a[..., 1 : 2 * h : 2, 0 : 2 * w : 2]
        + a[..., 0 : 2 * h : 2, 1 : 2 * w : 2]
        + a[..., 1 : 2 * h : 2, 1 : 2 * w : 2]
    )
    return np.rint(total / 4).astype(a.dtype)


@pytest.fixture
def channels(tmp_path: Path) -> dict[str, np.ndarray]:
    """Three 37 × 50 uint16 channel files, named like ExampleFly's (…_D, …_F, …_R)."""
    images = {f"01_POS9_{c}.TIF": rng_image(i, (37, 50)) for i, c in enumerate("DFR")}
    write_tiffs(tmp_path / "in", images)
    return images


# --- one image ------------------------------------------------------------------------------


def test_channel_files_become_one_image_with_a_pyramid(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    workdir = Workdir(tmp_path / "task")
    out = workdir.output_dir
    options = ConvertOptions(name="POS9", resolutions=3, tile_width=16, tile_height=8)
    result = convert(tmp_path / "in", out, options)
    assert (result.layout, result.images, result.levels) == ("image", [""], [3])
    stack = np.stack(list(channels.values()))
    node = read_back(out)
    levels = [np.asarray(level) for level in node.data]
    assert [level.shape for level in levels] == [(3, 37, 50), (3, 18, 25), (3, 9, 12)]
    np.testing.assert_array_equal(levels[0], stack)
    np.testing.assert_array_equal(levels[1], mean2(stack))
    np.testing.assert_array_equal(levels[2], mean2(mean2(stack)))
    assert node.metadata["channel_names"] == ["D", "F", "R"]
    multiscale = attrs(out)["multiscales"][0]
    assert multiscale["version"] == "0.4" and multiscale["name"] == "POS9"
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1.0, 1.0, 1.0], [1.0, 2.0, 2.0], [1.0, 4.0, 4.0]]
    # Chunks: one channel, tile_height rows, tile_width columns, capped at the level's size.
    assert zarr.open_array(str(out / "0")).chunks == (1, 8, 16)
    assert zarr.open_array(str(out / "2")).chunks == (1, 8, 12)
    # What the recipe checks after the converter ran in a task.
    assert OmeZarrRecipe().check_success(0, workdir) is None


def test_without_resolutions_levels_follow_bioformats2raws_rule(tmp_path: Path) -> None:
    assert level_count(1006, 1000) == 3  # 1006 → 503 → 251 (≤ 256)
    assert level_count(600, 40, None, 256) == 3
    assert level_count(256, 256) == 1
    assert level_count(5, 9, resolutions=10) == 3  # 5×9 → 2×4 → 1×2, never 0 pixels
    write_tiffs(tmp_path / "in", {"tall.tif": rng_image(3, (600, 40), np.uint8)})
    result = convert(tmp_path / "in", tmp_path / "out")
    assert result.levels == [3]
    shapes = [level.shape for level in read_back(tmp_path / "out").data]
    assert shapes == [(1, 600, 40), (1, 300, 20), (1, 150, 10)]


def test_nearest_downsampling_keeps_every_second_pixel(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    convert(tmp_path / "in", out, ConvertOptions(resolutions=2, downsample="nearest"))
    stack = np.stack(list(channels.values()))
    np.testing.assert_array_equal(np.asarray(read_back(out).data[1]), stack[:, 0:36:2, 0:50:2])


def test_a_multidimensional_tiff_keeps_its_axes(tmp_path: Path) -> None:
    zcyx = rng_image(5, (4, 2, 20, 30))
    tifffile.imwrite(tmp_path / "stack.ome.tif", zcyx, ome=True, metadata={"axes": "ZCYX"})
    out = tmp_path / "out"
    convert(tmp_path / "stack.ome.tif", out, ConvertOptions(resolutions=1))
    multiscale = attrs(out)["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    np.testing.assert_array_equal(
        np.asarray(read_back(out).data[0]), np.transpose(zcyx, (1, 0, 2, 3))
    )


def test_an_rgb_tiff_becomes_three_channels(tmp_path: Path) -> None:
    rgb = rng_image(6, (12, 14, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    convert(tmp_path / "rgb.tif", tmp_path / "out", ConvertOptions(resolutions=1))
    np.testing.assert_array_equal(
        np.asarray(read_back(tmp_path / "out").data[0]), np.moveaxis(rgb, -1, 0)
    )


def test_ngff_05_writes_zarr_v3_that_ome_zarr_reads(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    convert(tmp_path / "in", out, ConvertOptions(resolutions=2, ngff_version="0.5"))
    doc = json.loads((out / "zarr.json").read_text())
    assert doc["zarr_format"] == 3 and doc["attributes"]["ome"]["version"] == "0.5"
    assert not (out / ".zattrs").exists()
    np.testing.assert_array_equal(
        np.asarray(read_back(out).data[0]), np.stack(list(channels.values()))
    )
    assert omezarr_problem(out) is None


# --- plates ---------------------------------------------------------------------------------


def test_a_pattern_lays_out_wells_fields_and_channels_as_a_plate(tmp_path: Path) -> None:
    names = [
        f"{well}_f{field}_{channel}.tif"
        for well in ("B03", "A10")
        for field in (1, 2)
        for channel in ("DAPI", "GFP")
    ]
    images = {name: rng_image(seed, (16, 20)) for seed, name in enumerate(names)}
    write_tiffs(tmp_path / "in", images)
    out = tmp_path / "plate.ome.zarr"
    pattern = r"(?P<well>[A-P]\d+)_f(?P<field>\d+)_(?P<channel>\w+)\.tif"
    result = convert(
        tmp_path / "in", out, ConvertOptions(name="P1", pattern=pattern, resolutions=2)
    )
    assert result.layout == "plate"
    assert result.images == ["A/10/0", "A/10/1", "B/3/0", "B/3/1"]
    plate = attrs(out)["plate"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert [c["name"] for c in plate["columns"]] == ["3", "10"]  # natural order
    assert sorted(w["path"] for w in plate["wells"]) == ["A/10", "B/3"]
    assert plate["field_count"] == 2 and plate["name"] == "P1"
    assert [i["path"] for i in attrs(out / "B" / "3")["well"]["images"]] == ["0", "1"]
    field = read_back(out / "A" / "10" / "1")
    expected = np.stack([images["A10_f2_DAPI.tif"], images["A10_f2_GFP.tif"]])
    np.testing.assert_array_equal(np.asarray(field.data[0]), expected)
    np.testing.assert_array_equal(np.asarray(field.data[1]), mean2(expected))
    assert field.metadata["channel_names"] == ["DAPI", "GFP"]
    assert "Plate" in [type(spec).__name__ for spec in read_back(out).specs]
    assert omezarr_problem(out) is None


def test_harmony_file_names_are_recognised_without_a_pattern(tmp_path: Path) -> None:
    planes = {
        (z, c): rng_image(10 * z + c, (10, 12)) for z in (1, 2) for c in (1, 2)
    }  # two planes, two channels, well B3 (r02c03), one field
    write_tiffs(
        tmp_path / "Images",
        {f"r02c03f01p{z:02d}-ch{c}sk1fk1fl1.tiff": image for (z, c), image in planes.items()},
    )
    out = tmp_path / "out"
    result = convert(tmp_path / "Images", out, ConvertOptions(resolutions=1))
    assert (result.layout, result.images) == ("plate", ["B/3/0"])
    image = attrs(out / "B" / "3" / "0")["multiscales"][0]
    assert [a["name"] for a in image["axes"]] == ["c", "z", "y", "x"]
    expected = np.stack([np.stack([planes[(1, c)], planes[(2, c)]]) for c in (1, 2)])
    np.testing.assert_array_equal(np.asarray(read_back(out / "B" / "3" / "0").data[0]), expected)


HARMONY_INDEX = """<?xml version="1.0" encoding="utf-8"?>
<EvaluationInputData xmlns="http://www.perkinelmer.com/PEHH/HarmonyV5">
  <Images>
    {images}
  </Images>
  <Maps><Map>
    <Entry ChannelID="1"><ChannelName>HOECHST 33342</ChannelName></Entry>
    <Entry ChannelID="2"><ChannelName>Alexa 488</ChannelName></Entry>
  </Map></Maps>
  <Wells><Well><id>0101</id><Image id="0101K1F1P1R1" /></Well></Wells>
</EvaluationInputData>
"""


def test_a_harmony_index_names_the_files_and_the_channels(tmp_path: Path) -> None:
    entries = []
    images = {}
    for field in (1, 2):
        for channel in (1, 2):
            name = f"r01c01f{field:02d}p01-ch{channel}sk1fk1fl1.tiff"
            images[name] = rng_image(field * 7 + channel, (8, 9))
            entries.append(
                f"<Image><id>x</id><URL>{name}</URL><Row>1</Row><Col>1</Col>"
                f"<FieldID>{field}</FieldID><PlaneID>1</PlaneID><TimepointID>0</TimepointID>"
                f"<ChannelID>{channel}</ChannelID></Image>"
            )
    write_tiffs(tmp_path / "Images", images)
    index = tmp_path / "Images" / "Index.idx.xml"
    index.write_text(HARMONY_INDEX.format(images="\n".join(entries)))
    out = tmp_path / "out"
    result = convert(index, out, ConvertOptions(resolutions=1))
    assert result.images == ["A/1/0", "A/1/1"]
    node = read_back(out / "A" / "1" / "1")
    assert node.metadata["channel_names"] == ["HOECHST 33342", "Alexa 488"]
    expected = np.stack([images[f"r01c01f02p01-ch{c}sk1fk1fl1.tiff"] for c in (1, 2)])
    np.testing.assert_array_equal(np.asarray(node.data[0]), expected)


# --- refusals -------------------------------------------------------------------------------


def test_files_that_do_not_fit_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    write_tiffs(tmp_path / "in", {"a_D.tif": rng_image(1, (8, 8)), "b.tif": rng_image(2, (8, 8))})
    with pytest.raises(ConvertError, match="do not match --pattern"):
        convert(tmp_path / "in", tmp_path / "out", ConvertOptions(pattern=r"_(?P<channel>D)"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConvertError, match="--layout plate"):
        convert(
            tmp_path / "in",
            tmp_path / "out",
            ConvertOptions(layout="image", pattern=r"(?P<field>[ab])"),
        )


@pytest.mark.parametrize(
    ("images", "pattern", "message"),
    [
        (
            {"x_D.tif": rng_image(1, (8, 8)), "x_F.tif": rng_image(2, (8, 9))},
            "",
            "same size and pixel type",
        ),
        (
            {"x_D.tif": rng_image(1, (8, 8)), "x_F.tif": rng_image(2, (8, 8), np.uint8)},
            "",
            "same size and pixel type",
        ),
        (
            {
                "z1_D.tif": rng_image(1, (8, 8)),
                "z1_F.tif": rng_image(2, (8, 8)),
                "z2_D.tif": rng_image(3, (8, 8)),
            },
            r"z(?P<z>\d)_(?P<channel>\w)",
            "no file for",
        ),
        (
            {"a1.tif": rng_image(1, (8, 8)), "a2.tif": rng_image(2, (8, 8))},
            r"(?P<channel>a)",
            "tell them apart",
        ),
    ],
)
def test_inconsistent_files_are_refused(
    tmp_path: Path, images: dict[str, np.ndarray], pattern: str, message: str
) -> None:
    write_tiffs(tmp_path / "in", images)
    with pytest.raises(ConvertError, match=message):
        convert(tmp_path / "in", tmp_path / "out", ConvertOptions(pattern=pattern))


def test_a_non_empty_output_needs_overwrite(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ConvertError, match="--overwrite"):
        convert(tmp_path / "in", out)
    assert (out / "old.txt").read_text() == "keep me"
    convert(tmp_path / "in", out, ConvertOptions(overwrite=True))
    assert not (out / "old.txt").exists() and omezarr_problem(out) is None


def test_the_command_line_exit_codes(
    tmp_path: Path, channels: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    assert main(["convert", str(tmp_path / "nowhere"), out]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "in"), out, "--resolutions", "0"]) == 2
    assert "--resolutions" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "in")]) == 2
    assert main(["convert", str(tmp_path / "in"), out, "--tile_width", "16", "-r", "2"]) == 0
    assert '"levels": [2]' in capsys.readouterr().out
    assert zarr.open_array(f"{out}/0").chunks == (1, 37, 16)


# --- adding levels --------------------------------------------------------------------------


def test_add_levels_appends_downsampled_levels_to_an_image(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    convert(tmp_path / "in", out, ConvertOptions(resolutions=2, tile_width=16, tile_height=8))
    before = attrs(out)
    assert add_levels(out, 2) == [""]
    multiscale = attrs(out)["multiscales"][0]
    assert [d["path"] for d in multiscale["datasets"]] == ["0", "1", "2", "3"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales[2:] == [[1.0, 4.0, 4.0], [1.0, 8.0, 8.0]]
    assert attrs(out)["omero"] == before["omero"]  # the rest of the metadata is kept
    levels = [np.asarray(level) for level in read_back(out).data]
    np.testing.assert_array_equal(levels[2], mean2(levels[1]))
    np.testing.assert_array_equal(levels[3], mean2(levels[2]))
    assert zarr.open_array(str(out / "2")).chunks == (1, 8, 12)
    assert json.loads((out / "3" / ".zarray").read_text())["dimension_separator"] == "/"


def test_add_levels_by_a_factor_as_dozcs_add_downsampling(tmp_path: Path) -> None:
    image = rng_image(4, (64, 80), np.uint8)
    write_tiffs(tmp_path / "in", {"a.tif": image})
    out = tmp_path / "out"
    convert(tmp_path / "in", out, ConvertOptions(resolutions=1))
    # DOZC's `add_downsampling.py ZARR 8`: one level, 8 times smaller than the last.
    assert main(["add-levels", str(out), "--levels", "1", "--factor", "8"]) == 0
    level = np.asarray(read_back(out).data[1])[0]
    expected = np.array(
        [[image[8 * y : 8 * y + 8, 8 * x : 8 * x + 8].mean() for x in range(10)] for y in range(8)]
    )
    np.testing.assert_array_equal(level, np.rint(expected).astype(np.uint8))
    scale = attrs(out)["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 8.0, 8.0]


def test_add_levels_visits_every_image_of_a_plate(tmp_path: Path) -> None:
    images = {
        f"{w}_f{f}.tif": rng_image(len(w) + f, (40, 40)) for w in ("A1", "B2") for f in (1, 2)
    }
    write_tiffs(tmp_path / "in", images)
    out = tmp_path / "plate"
    pattern = r"(?P<well>[AB]\d)_f(?P<field>\d)"
    convert(tmp_path / "in", out, ConvertOptions(pattern=pattern, resolutions=1))
    assert add_levels(out, 1) == ["A/1/0", "A/1/1", "B/2/0", "B/2/1"]
    for image in ("A/1/0", "B/2/1"):
        data = [np.asarray(level) for level in read_back(out / image).data]
        assert [d.shape for d in data] == [(1, 40, 40), (1, 20, 20)]
        np.testing.assert_array_equal(data[1], mean2(data[0]))
    assert omezarr_problem(out) is None


def test_add_levels_on_an_ome_zarr_written_by_ome_zarr_itself(tmp_path: Path) -> None:
    from ome_zarr.writer import write_image

    image = rng_image(9, (2, 64, 64))
    out = tmp_path / "theirs.zarr"
    write_image(image=image, group=zarr.open_group(str(out), mode="w"), axes="cyx")
    paths = [d["path"] for d in attrs(out)["multiscales"][0]["datasets"]]
    add_levels(out, 1, method="nearest")
    datasets = attrs(out)["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets[:-1]] == paths
    assert datasets[-1]["path"] == "s5" if paths[-1] == "s4" else datasets[-1]["path"] not in paths
    levels = [np.asarray(level) for level in read_back(out).data]
    assert len(levels) == len(paths) + 1
    h, w = levels[-2].shape[-2] // 2, levels[-2].shape[-1] // 2
    np.testing.assert_array_equal(levels[-1], levels[-2][..., 0 : 2 * h : 2, 0 : 2 * w : 2])


def test_add_levels_refuses_what_it_cannot_do_and_changes_nothing(
    tmp_path: Path, channels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    convert(tmp_path / "in", out, ConvertOptions(resolutions=2))  # last level 18 × 25
    before = (out / ".zattrs").read_text()
    with pytest.raises(ConvertError, match="too small"):
        add_levels(out, 5)
    assert (out / ".zattrs").read_text() == before and not (out / "2").exists()
    zarr.open_group(str(tmp_path / "plain"), mode="w", zarr_format=2)
    with pytest.raises(ConvertError, match="not an OME-Zarr"):
        add_levels(tmp_path / "plain", 1)
    assert main(["add-levels", str(tmp_path / "nowhere")]) == 1
    assert main(["add-levels", str(out), "--factor", "1"]) == 2


def test_the_command_line_names_each_image_it_wrote(
    tmp_path: Path, channels: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    # One image is OUTPUT itself: "." (it was "" — an image with no name).
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "in"), str(out), "-r", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(
        f"wrote {out}: " + json.dumps({"layout": "image", "images": ["."], "levels": [2]})
    )
    # A plate: each image's path under OUTPUT.
    write_tiffs(tmp_path / "plate", {"r01c01f01p01-ch1sk1fk1fl1.tiff": rng_image(1, (8, 8))})
    plate = tmp_path / "plate.zarr"
    assert main(["convert", str(tmp_path / "plate"), str(plate), "-r", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.split(f"wrote {plate}: ", 1)[1])
    assert summary == {"layout": "plate", "images": ["A/1/0"], "levels": [1]}
