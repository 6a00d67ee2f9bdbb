"""First contact (issue 15): the project folder given the same way to every command, and
what a new user meets first (bare `ds`, JSON errors, progress in a log, init names)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

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


def test_validate_checks_the_job_json_beside_it(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    (folder / "job.json").write_text(json.dumps([{"name": "a"}]))  # a list: not a job file
    result = ds("validate", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "job.json" in result.stderr


def test_run_dry_run_prints_the_argv_and_creates_nothing(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    result = ds("run", "--dry-run", "--show", "2", "proj", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "hello first" in lines[0] and "hello second" in lines[1]
    assert not (folder / ".ds").exists()


@pytest.mark.slow
def test_run_force_reruns_done_tasks_and_workers_do_not_skip(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    first = ds("run", "proj", "--json", "--interval", "0.2", "-j", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["done"] == 3
    again = ds("run", "proj", "--json", "--interval", "0.2", cwd=tmp_path)
    assert json.loads(again.stdout)["counts"]["skipped"] == 3
    forced = ds("run", "proj", "--json", "--interval", "0.2", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    counts = json.loads(forced.stdout)["counts"]
    assert counts["done"] == 3 and counts["skipped"] == 0, counts
    assert (folder / ".ds/P/buckets/default/results/first/hello.txt").is_file()
