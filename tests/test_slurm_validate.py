"""`ds validate` on `backend = "slurm"`: Slurm's commands on PATH and the configured
partition, checked against the real one-node cluster (scripts/slurm-local.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_project
from distributed_something.backends.slurm.checks import REQUIRED_COMMANDS


def project(tmp_path: Path, **slurm: str) -> Path:
    return write_project(
        tmp_path / "proj",
        argv=["true"],
        groups=[{"name": "a"}],
        extra={"backend": "slurm", "slurm": {"shared_dir": str(tmp_path / "shared"), **slurm}},
    )


def validate(folder: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "distributed_something", "validate"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_a_partition_the_cluster_lacks_is_one_error_naming_the_ones_it_has(
    slurm_cluster: str, tmp_path: Path
) -> None:
    folder = project(tmp_path, partition="no-such-partition")
    result = validate(folder)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "slurm.partition" in line and "'no-such-partition'" in line
    assert "not found" in line  # scontrol's own words
    # the fix names the partition this cluster has (scripts/slurm-local.sh: "debug")
    assert "Fix: use one of debug" in line
    (folder / "ds.toml").write_text(
        (folder / "ds.toml").read_text().replace("no-such-partition", "debug")
    )
    ok = validate(folder)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stderr and "backend=slurm" in ok.stderr


def test_a_path_without_sbatch_is_one_error_with_its_fix(tmp_path: Path) -> None:
    # The other Slurm commands stay reachable (stand-ins: only their presence is checked
    # while no partition is configured); sbatch alone is missing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED_COMMANDS:
        if name != "sbatch":
            tool = bin_dir / name
            tool.write_text("#!/bin/sh\nexit 0\n")
            tool.chmod(0o755)
    folder = project(tmp_path)
    result = validate(folder, path=str(bin_dir))
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "`sbatch`" in line and "not on PATH" in line and "backend" in line
    assert "Fix: run ds on a login node of the Slurm cluster" in line
    assert shutil.which("sbatch", path=str(bin_dir)) is None


def test_without_any_slurm_command_each_is_its_own_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = validate(project(tmp_path, partition="debug"), path=str(empty))
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == len(REQUIRED_COMMANDS)
    for name, line in zip(REQUIRED_COMMANDS, lines, strict=True):
        assert f"`{name}`" in line
    # no scontrol: the partition is not asked about (no second error for it)
    assert not any("slurm.partition" in line for line in lines)


def test_a_controller_that_does_not_answer_is_one_error_with_its_fix(tmp_path: Path) -> None:
    """No slurm.conf on this machine (or slurmctld down): `scontrol ping` fails, and
    validate says so before anything is submitted (a run failed at its first Slurm command,
    with no fix)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED_COMMANDS:
        tool = bin_dir / name
        tool.write_text(
            "#!/bin/sh\necho 'scontrol: fatal: Could not establish a configuration source' >&2\n"
            "exit 1\n"
        )
        tool.chmod(0o755)
    result = validate(project(tmp_path), path=str(bin_dir))
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "does not answer" in line and "Could not establish a configuration source" in line
    assert "Fix: run ds on a login node of a running Slurm cluster" in line
