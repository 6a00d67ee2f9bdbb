"""Shared test helpers: projects in tmp folders, and `ds` run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_project(
    folder: Path,
    *,
    argv: list[str],
    groups: list[Any],
    output_prefix: str = "out/{name}",
    inputs: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    app_name: str = "T",
) -> Path:
    """Write ds.toml + job.json for the command recipe into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "app_name": app_name,
        "recipe": {
            "name": "command",
            "argv": argv,
            "output_prefix": output_prefix,
            "inputs": inputs or [],
        },
        "cluster": {"docker_cores": 2},
        "queue": {"visibility": 30, "job_retries": 3},
        "local": {"poll_interval": 0.05},
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "job.json").write_text(json.dumps({"groups": groups}))
    return folder


@pytest.fixture
def ds() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `ds ARGS` in a folder as users do; returns the completed process."""

    def run(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "distributed_something", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return run
