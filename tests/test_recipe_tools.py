"""Each family recipe says what its tasks could not start here (`NeedsTools`), and `ds run`
stops on it before anything is created: otherwise every task fails its tries on it."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from distributed_something.config.model import Config, RecipeConfig, StorageConfig
from distributed_something.recipes import omezarr
from distributed_something.recipes.base import missing_tool, program_problem
from distributed_something.recipes.registry import get_recipe

Ds = Callable[..., CompletedProcess[str]]


def config(recipe: str, **fields: Any) -> Config:
    return Config(
        app_name="Tools",
        recipe=RecipeConfig(name=recipe, **fields),
        storage=StorageConfig(workspace_bucket="workspace"),
    )


def tool(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def problem_of(recipe: str, cfg: Config, path: str | None) -> tuple[str, str] | None:
    return missing_tool(get_recipe(recipe, source="ds.toml"), cfg, path)


def test_a_program_is_found_on_the_path_or_as_an_executable_file(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "thing")
    assert program_problem("thing", str(bin_dir)) is None
    assert program_problem("thing", str(tmp_path)) == "is not on PATH"
    assert program_problem(str(tmp_path / "nope"), None) == "does not exist"
    (tmp_path / "plain").write_text("")
    assert program_problem(str(tmp_path / "plain"), None) == "is not executable"
    assert program_problem(str(tmp_path), None) == "is a folder, not a program"
    # A script without #! fails every task with "Exec format error" (no shell runs it).
    bare = tmp_path / "bare.sh"
    bare.write_text("echo hi\n")
    bare.chmod(0o755)
    assert program_problem(str(bare), None) == (
        "is a script without a #! first line, which cannot be started (Exec format error)"
    )
    bare.write_text("#!/bin/sh\necho hi\n")
    assert program_problem(str(bare), None) is None
    # Binary formats are the kernel's to judge (ELF here; binfmt_misc may run others).
    assert program_problem(sys.executable, None) is None
    blob = tmp_path / "blob"
    blob.write_bytes(b"PK\x03\x04 a jar run by binfmt_misc")
    blob.chmod(0o755)
    assert program_problem(str(blob), None) is None


def test_cellprofiler_must_be_installed(tmp_path: Path) -> None:
    missing = problem_of("cellprofiler", config("cellprofiler", executable="/no/cp"), None)
    assert missing is not None
    assert "CellProfiler ('/no/cp') does not exist" in missing[0] and "make examples" in missing[1]
    installed = tool(tmp_path, "cellprofiler")
    assert (
        problem_of("cellprofiler", config("cellprofiler", executable=str(installed)), None) is None
    )


def test_imagej_needs_its_jar_java_and_xvfb_run(tmp_path: Path) -> None:
    jar = tmp_path / "ij.jar"
    cfg = config("fiji", engine="imagej", executable=str(jar), script="m.ijm")
    bin_dir = tmp_path / "bin"
    missing = problem_of("fiji", cfg, str(bin_dir))
    assert missing is not None
    assert f"ImageJ's jar {str(jar)!r} and java and xvfb-run are not installed" in missing[0]
    jar.write_bytes(b"PK")
    tool(bin_dir, "java")
    missing = problem_of("fiji", cfg, str(bin_dir))
    assert missing is not None and missing[0].startswith("xvfb-run is not installed")
    tool(bin_dir, "xvfb-run")
    assert problem_of("fiji", cfg, str(bin_dir)) is None
    launcher = config("fiji", engine="fiji", executable=str(tmp_path / "Fiji"), script="m.ijm")
    missing = problem_of("fiji", launcher, None)
    assert missing is not None and "Fiji's launcher" in missing[0]


def test_the_converter_needs_its_packages_or_bioformats2raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def without_zarr(name: str, *args: Any) -> Any:
        return None if name == "zarr" else real(name, *args)

    builtin = config("omezarr", engine="builtin")
    with monkeypatch.context() as patch:
        patch.setattr(omezarr.importlib.util, "find_spec", without_zarr)
        missing = problem_of("omezarr", builtin, None)
        assert missing is not None and "needs zarr," in missing[0]
        assert "distributed-something[omezarr]" in missing[1]
        # Another Python runs the converter: its packages are not looked at here.
        other = config("omezarr", engine="builtin", executable="/opt/py/bin/python")
        assert problem_of("omezarr", other, None) is None
    b2r = config("omezarr", engine="bioformats2raw")
    missing = problem_of("omezarr", b2r, str(tmp_path))
    assert missing is not None and "bioformats2raw ('bioformats2raw') is not on PATH" in missing[0]
    tool(tmp_path, "bioformats2raw")
    assert problem_of("omezarr", b2r, str(tmp_path)) is None


def test_ds_run_stops_before_anything_when_cellprofiler_is_missing(tmp_path: Path, ds: Ds) -> None:
    """The DCP example's files, but a CellProfiler that is not installed: one error naming
    the fix, exit 2, no run set up (it used to run all 3 tasks 3 times each, then report
    them dead)."""
    proj = tmp_path / "fly"
    proj.mkdir()
    (proj / "ds.toml").write_text(
        'app_name = "Fly"\n[recipe]\nname = "cellprofiler"\nexecutable = "/no/cellprofiler"\n'
    )
    job = {
        "pipeline": "p.cppipe",
        "data_file": "load_data.csv",
        "input": "images",
        "output": "out",
        "output_structure": "Metadata_Position",
        "groups": [{"Metadata": "Metadata_Position=2"}],
    }
    (proj / "job.json").write_text(json.dumps(job))
    result = ds("run", ".", cwd=proj)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CellProfiler ('/no/cellprofiler') does not exist" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (proj / ".ds").exists()  # nothing created, nothing submitted
