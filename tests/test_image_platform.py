"""The platform (OS/architecture) of the worker image and of the machines that run it.

An image built for one architecture does not start on the other ("exec format error"; on ECS
the task only stops): `ds image build` builds for the architecture of aws.machine_type when
it can tell, and `ds setup` warns when the local image is of another architecture than the
instances'. The container engine is a script on PATH here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_something.backends.aws import provisioner as provisioner_module
from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.provisioner import AwsProvisioner
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.config.model import Config
from distributed_something.platforms import (
    image_platform_warning,
    instance_platform,
    local_image_platform,
)
from distributed_something.project import Project
from distributed_something.usecases.image import build_argv, source_root

REGION = "us-east-1"


def fake_engine(folder: Path, name: str, script: str) -> Path:
    """An executable ``name`` in ``folder`` running the shell ``script``; its arguments are
    appended, one line per call, to ``folder/<name>.calls``."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / name
    calls = folder / f"{name}.calls"
    engine.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n{script}\n')
    engine.chmod(engine.stat().st_mode | stat.S_IEXEC)
    return engine


def calls(folder: Path, name: str) -> list[str]:
    path = folder / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []


# --- the default platform -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "platform"),
    [
        (["m5.large"], "linux/amd64"),
        (["c5.xlarge", "r5.2xlarge"], "linux/amd64"),
        (["m6g.large", "c7gn.xlarge", "t4g.micro", "a1.large"], "linux/arm64"),
        # Both architectures: no one image runs on all of them, so ds cannot choose.
        (["m5.large", "m6g.large"], None),
        ([], None),
    ],
)
def test_the_default_platform_is_the_one_of_the_instance_types(
    types: list[str], platform: str | None
) -> None:
    assert instance_platform(types) == platform


def test_build_argv_passes_the_platform_to_the_engine() -> None:
    argv = build_argv("docker", base="b", tag="t:1", root=source_root(), platform="linux/arm64")
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert argv.index("--platform") < argv.index("-t") and argv[-1] == str(source_root())
    assert "--platform" not in build_argv("docker", base="b", tag="t:1", root=source_root())


def run_build(folder: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}"}
    return subprocess.run(
        [sys.executable, "-m", "distributed_something", "image", "build", "--tag", "x/y:1", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        check=False,
        timeout=60,
    )


def write_config(folder: Path, machine_types: list[str], backend: str = "aws") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    quoted = ", ".join(f'"{t}"' for t in machine_types)
    (folder / "ds.toml").write_text(
        f'app_name = "Plat"\nbackend = "{backend}"\n\n[aws]\nmachine_type = [{quoted}]\n'
    )


def builds(bin_dir: Path) -> list[list[str]]:
    return [line.split() for line in calls(bin_dir, "docker") if line.startswith("build")]


def test_image_build_builds_for_the_configured_graviton_instances(tmp_path: Path) -> None:
    bin_dir, project = tmp_path / "bin", tmp_path / "project"
    fake_engine(bin_dir, "docker", "exit 0")
    write_config(project, ["m6g.large", "c7g.xlarge"])
    done = run_build(project, bin_dir, "--engine", "docker")
    assert done.returncode == 0, done.stderr
    [argv] = builds(bin_dir)
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert "linux/arm64" in done.stderr and "aws.machine_type" in done.stderr


def test_image_build_for_x86_instances_says_amd64_and_a_given_platform_wins(
    tmp_path: Path,
) -> None:
    bin_dir, project = tmp_path / "bin", tmp_path / "project"
    fake_engine(bin_dir, "docker", "exit 0")
    write_config(project, ["m5.large"])
    assert run_build(project, bin_dir, "--engine", "docker").returncode == 0
    done = run_build(project, bin_dir, "--engine", "docker", "--platform", "linux/arm64")
    assert done.returncode == 0, done.stderr
    first, second = builds(bin_dir)
    assert first[first.index("--platform") + 1] == "linux/amd64"
    assert second[second.index("--platform") + 1] == "linux/arm64"


@pytest.mark.parametrize(
    ("types", "backend"),
    [
        (None, "aws"),  # no config here: nothing says which machines will run it
        (["m5.large", "m6g.large"], "aws"),  # both architectures
        (["m5.large"], "local"),  # the builder's own machine runs it
    ],
)
def test_image_build_without_a_known_architecture_leaves_it_to_the_builder(
    tmp_path: Path, types: list[str] | None, backend: str
) -> None:
    bin_dir, project = tmp_path / "bin", tmp_path / "project"
    fake_engine(bin_dir, "docker", "exit 0")
    project.mkdir()
    if types is not None:
        write_config(project, types, backend)
    done = run_build(project, bin_dir, "--engine", "docker")
    assert done.returncode == 0, done.stderr
    [argv] = builds(bin_dir)
    assert "--platform" not in argv


def test_a_platform_that_is_not_os_slash_arch_is_refused(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_engine(bin_dir, "docker", "exit 0")
    done = run_build(tmp_path, bin_dir, "--engine", "docker", "--platform", "arm64")
    assert done.returncode == 2 and "--platform" in done.stderr
    assert builds(bin_dir) == []


# --- the local image's platform, and the warning at setup -----------------------------------


def test_the_local_images_platform_is_what_the_engine_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    assert local_image_platform("me/ds-tool:1") is None  # no engine at all
    fake_engine(bin_dir, "docker", 'echo "Error: No such image: $4" >&2; exit 1')
    fake_engine(bin_dir, "podman", "echo linux/arm64")
    # docker does not have it; podman does.
    assert local_image_platform("me/ds-tool:1") == "linux/arm64"
    assert calls(bin_dir, "podman") == [
        "image inspect --format {{.Os}}/{{.Architecture}} me/ds-tool:1"
    ]


def test_a_mismatch_names_the_instances_and_the_build_that_fits() -> None:
    text = image_platform_warning("me/ds-tool:1", "linux/arm64", {"m5.large": "x86_64"})
    assert text is not None and "\n" not in text
    assert "me/ds-tool:1" in text and "linux/arm64" in text and "m5.large" in text
    assert "exec format error" in text and "--platform linux/amd64" in text
    assert image_platform_warning("me/ds-tool:1", "linux/amd64", {"m5.large": "x86_64"}) is None
    assert image_platform_warning("me/ds-tool:1", None, {"m5.large": "x86_64"}) is None
    # A fleet of both architectures: the types the image cannot run on are named.
    mixed = image_platform_warning(
        "me/ds-tool:1", "linux/amd64", {"m5.large": "x86_64", "m6g.large": "arm64"}
    )
    assert mixed is not None and "m6g.large" in mixed and "m5.large" not in mixed


def test_setup_warns_when_the_local_image_is_of_another_architecture(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_engine(bin_dir, "docker", "echo linux/arm64")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    said: list[str] = []
    monkeypatch.setattr(provisioner_module, "info", said.append)
    config = Config.model_validate(
        {
            "app_name": "Plat",
            "backend": "aws",
            "image": "me/ds-tool:1",
            "recipe": {"name": "command"},
            "storage": {"bucket": "plat-bucket"},
            "aws": {"region": REGION, "machine_type": ["m5.large"], "machine_price": 0.1},
        }
    )
    project = Project(config, tmp_path / "ds.toml")
    AwsProvisioner(project, AwsSettings(region=REGION), AwsNames(config)).check_inputs()
    [warning] = [s for s in said if "exec format error" in s]
    assert "me/ds-tool:1" in warning and "linux/arm64" in warning and "m5.large" in warning
    asked = "image inspect --format {{.Os}}/{{.Architecture}} me/ds-tool:1"
    assert calls(bin_dir, "docker") == [asked]
