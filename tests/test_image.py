"""The worker image: its Dockerfile, the build command, and the message when no engine runs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from distributed_something.usecases.image import build_argv, find_engine, source_root

DOCKERFILE = REPO / "docker" / "Dockerfile"


def test_dockerfile_builds_on_any_base_with_ds_worker_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    assert lines[lines.index("ARG BASE_IMAGE=python:3.11-slim") + 1] == "FROM ${BASE_IMAGE}"
    assert lines[-1] == 'ENTRYPOINT ["ds", "worker"]'
    lowered = text.lower()
    assert "s3fs" not in lowered.replace("no s3fs", "")
    assert "--privileged" not in lowered
    # Everything the image copies exists in the checkout.
    for line in lines:
        if line.startswith("COPY "):
            for part in line.split()[1:-1]:
                assert (REPO / part).exists(), part


def test_build_argv_uses_the_dockerfile_and_base(tmp_path: Path) -> None:
    argv = build_argv("docker", base="fiji/fiji:latest", tag="me/ds-fiji:1", root=source_root())
    assert argv[:2] == ["docker", "build"]
    assert argv[argv.index("-f") + 1] == str(DOCKERFILE)
    assert "BASE_IMAGE=fiji/fiji:latest" in argv and argv[argv.index("-t") + 1] == "me/ds-fiji:1"
    assert argv[-1] == str(REPO)


def test_no_engine_gives_one_clear_line(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}:{Path(sys.executable).parent}"}
    result = subprocess.run(
        [sys.executable, "-m", "distributed_something", "image", "build", "--tag", "x/y:1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "no container engine answers" in result.stderr and "Cannot connect" in result.stderr


def _engine_answers() -> bool:
    try:
        find_engine()
    except Exception:  # noqa: BLE001 - any failure: no engine
        return False
    return True


@pytest.mark.docker
@pytest.mark.skipif(not _engine_answers(), reason="no Docker/podman engine answers here")
def test_image_builds_and_runs_ds(tmp_path: Path) -> None:  # pragma: no cover - needs an engine
    engine = shutil.which("docker") or shutil.which("podman")
    assert engine
    tag = "ds-test/worker:latest"
    argv = build_argv(engine, base="python:3.11-slim", tag=tag, root=source_root())
    assert subprocess.run(argv, check=False).returncode == 0
    out = subprocess.run(
        [engine, "run", "--rm", "--entrypoint", "ds", tag, "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and "ds" in out.stdout
