"""The worker image: its Dockerfile, the build command, the message when no engine runs, and
the images known not to contain `ds`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from distributed_something.backends.aws.image_check import (
    build_command,
    check_run_image,
    check_worker_image,
    family_image,
    split_image,
)
from distributed_something.backends.aws.setup import check_setup_inputs
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.usecases.image import build_argv, source_root

DOCKERFILE = REPO / "docker" / "Dockerfile"


def test_dockerfile_builds_on_any_base_with_ds_worker_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    # Python is bundled in a stage of its own; the tool image gets only /opt/ds from it.
    assert froms == ["FROM ${PYTHON_IMAGE} AS bundle", "FROM ${BASE_IMAGE}"]
    final = lines[lines.index("FROM ${BASE_IMAGE}") :]
    assert "COPY --from=bundle /opt/ds /opt/ds" in final
    assert not any(ln.startswith("RUN") and ("apt-get" in ln or "apk" in ln) for ln in final)
    assert lines[-1] == 'ENTRYPOINT ["ds", "worker"]'
    lowered = text.lower()
    assert "s3fs" not in lowered.replace("no s3fs", "")
    assert "--privileged" not in lowered
    # Everything the image copies exists in the checkout.
    for line in lines:
        if line.startswith("COPY ") and not line.startswith("COPY --from="):
            for part in line.split()[1:-1]:
                assert (REPO / part).exists(), part


def test_build_argv_uses_the_dockerfile_and_base(tmp_path: Path) -> None:
    argv = build_argv("docker", base="fiji/fiji:latest", tag="me/ds-fiji:1", root=source_root())
    assert argv[:2] == ["docker", "build"]
    assert argv[argv.index("-f") + 1] == str(DOCKERFILE)
    assert "BASE_IMAGE=fiji/fiji:latest" in argv and argv[argv.index("-t") + 1] == "me/ds-fiji:1"
    assert "PYTHON_IMAGE=python:3.11-slim-bookworm" in argv
    assert argv[-1] == str(REPO)
    argv = build_argv("docker", base="b", tag="t:1", root=source_root(), python_image="me/py:3.12")
    assert "PYTHON_IMAGE=me/py:3.12" in argv


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


def test_podman_builds_take_host_files_as_build_volumes(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("certificates")
    volume = f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"
    argv = build_argv("/usr/bin/podman", base="b", tag="t:1", root=source_root(), volumes=[volume])
    assert argv[argv.index("--volume") + 1] == volume
    assert argv[-1] == str(REPO) and argv.index("--volume") < argv.index("-t")


@pytest.mark.parametrize(
    ("engine", "volume", "wanted"),
    [
        ("docker", "/etc/hostname:/x:ro", "docker build cannot mount host files"),
        ("podman", "/etc/hostname", "is not HOST:CONTAINER"),
        ("podman", "/no/such/file:/x:ro", "/no/such/file does not exist"),
    ],
)
def test_bad_build_volumes_are_input_errors(engine: str, volume: str, wanted: str) -> None:
    with pytest.raises(InputError) as caught:
        build_argv(engine, base="b", tag="t:1", root=source_root(), volumes=[volume])
    assert caught.value.field == "--volume" and wanted in str(caught.value)


def test_a_docker_volume_is_refused_before_any_engine_is_asked(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{tmp_path}:{Path(sys.executable).parent}"}  # no engine
    args = [
        "image",
        "build",
        "--tag",
        "x/y:1",
        "--engine",
        "docker",
        "--volume",
        "/etc/hostname:/x",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "distributed_something", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--volume" in result.stderr and "Traceback" not in result.stderr


# The image built and started as ECS starts it: tests/test_container_ecs.py (podman).

# --- images known not to contain `ds` -------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "cellprofiler/distributed-cellprofiler:2.0.0_4.2.1",
        "cellprofiler/distributed-fiji:latest",
        "docker.io/cellprofiler/distributed-omezarrcreator",
        "CellProfiler/Distributed-Something:1@sha256:abc",
    ],
)
def test_the_familys_published_images_are_known_to_lack_ds(image: str) -> None:
    assert family_image(image)
    with pytest.raises(InputError) as caught:
        check_worker_image(image)
    message = str(caught.value)
    assert "\n" not in message and caught.value.field == "image"
    assert f"ds image build --base {image} --tag " in message


@pytest.mark.parametrize(
    "image",
    [
        "cellprofiler/cellprofiler:4.2.8",  # the tool image: a base for `ds image build`
        "me/distributed-cellprofiler:ds-1",  # anyone's own build may have `ds`
        "ghcr.io/cellprofiler/distributed-fiji:latest",  # not where the family publishes
        "localhost:5000/cellprofiler/distributed-fiji",
        "registry.example.org:5000/lab/distributed-cellprofiler:1",  # a private registry
        "",
    ],
)
def test_other_images_are_not_refused(image: str) -> None:
    assert not family_image(image)
    check_worker_image(image)


def test_split_image_reads_references_as_docker_does() -> None:
    assert split_image("cellprofiler/distributed-fiji:latest") == (
        "",
        "cellprofiler/distributed-fiji",
        "latest",
    )
    assert split_image("localhost:5000/a/b") == ("localhost:5000", "a/b", "")
    assert split_image("ghcr.io/me/tool@sha256:00") == ("ghcr.io", "me/tool", "")
    assert build_command("cellprofiler/distributed-fiji") == (
        "ds image build --base cellprofiler/distributed-fiji --tag <your-repository>/ds-fiji:1"
    )


def family_config(recipe: dict[str, Any], backend: str = "aws") -> Config:
    return Config.model_validate(
        {
            "app_name": "Fam",
            "backend": backend,
            "image": "cellprofiler/distributed-cellprofiler:2.0.0_4.2.1",
            "recipe": recipe,
        }
    )


def test_setup_refuses_ds_worker_on_a_family_image_before_creating_anything() -> None:
    with pytest.raises(InputError) as caught:
        check_setup_inputs(family_config({"name": "cellprofiler"}))
    assert "ds image build --base cellprofiler/distributed-cellprofiler:2.0.0_4.2.1" in str(
        caught.value
    )
    check_setup_inputs(family_config({}))  # no recipe: the image's own worker runs
    check_run_image(family_config({"name": "cellprofiler"}, backend="local"))  # no image used


def test_validate_names_the_command_that_builds_a_worker_image(
    tmp_path: Path, ds: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (tmp_path / "ds.toml").write_text(
        'app_name = "Fam"\nbackend = "aws"\n'
        'image = "cellprofiler/distributed-cellprofiler:2.0.0_4.2.1"\n'
        '[recipe]\nname = "command"\nargv = ["true"]\n'
    )
    result = ds("validate", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ds image build --base cellprofiler/distributed-cellprofiler:2.0.0_4.2.1" in (
        " ".join(result.stderr.split())
    )
