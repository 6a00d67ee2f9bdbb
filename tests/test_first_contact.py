"""First contact (issue 15): the project folder given the same way to every command, and
what a new user meets first (bare `ds`, JSON errors, progress in a log, init names)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

Ds = Callable[..., CompletedProcess[str]]


def _project(tmp_path: Path, ds: Ds) -> Path:
    folder = tmp_path / "proj"
    assert ds("init", "proj", "--app-name", "P", cwd=tmp_path).returncode == 0
    return folder


def test_every_command_takes_the_folder_with_dash_c(tmp_path: Path, ds: Ds) -> None:
    _project(tmp_path, ds)
    for args in (
        ["-C", "proj", "validate", "--job", "job.json"],
        ["validate", "-C", "proj", "--job", "job.json"],
        ["validate", "--config", "proj", "--job", "proj/job.json"],
    ):
        result = ds(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "tasks=3" in result.stderr
    # Commands that need a run say so, rather than "no ds.toml" or "is a directory".
    for args in (["status", "-C", "proj"], ["status", "--config", "proj"]):
        result = ds(*args, cwd=tmp_path)
        assert result.returncode == 2 and "ds setup" in result.stderr, result.stderr
    missing = ds("status", cwd=tmp_path)
    assert missing.returncode == 2 and "-C DIR" in missing.stderr
    nowhere = ds("status", "-C", "nowhere", cwd=tmp_path)
    assert nowhere.returncode == 2 and "not a folder" in nowhere.stderr
