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


@pytest.mark.parametrize(
    ("says", "answers"),
    [
        ("Slurmctld(primary) at c1 is UP\nSlurmctld(backup) at c2 is DOWN\n", True),
        ("Slurmctld(primary) at c1 is DOWN\nSlurmctld(backup) at c2 is UP\n", True),
        ("Slurmctld(primary) at c1 is DOWN\n", False),
    ],
)
def test_a_backup_controller_down_beside_one_up_is_a_working_cluster(
    tmp_path: Path, says: str, answers: bool
) -> None:
    # scontrol ping prints one line per controller; a site whose backup is down works.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED_COMMANDS:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\nprintf '{says}'\n")
        tool.chmod(0o755)
    result = validate(project(tmp_path), path=f"{bin_dir}:/usr/bin:/bin")
    problems = [line for line in error_lines(result) if "does not answer" in line]
    assert (problems == []) == answers, result.stderr


@pytest.mark.slow
def test_jobs_slurm_would_refuse_are_one_error_before_anything_is_submitted(
    slurm_cluster: str, tmp_path: Path
) -> None:
    # More memory than any node has: every job of the run would be refused at start-cluster
    # (or, on a real site, an account or QOS the user lacks, a time over the partition's).
    # `sbatch --test-only` (which submits nothing) asks Slurm at validate.
    folder = project(tmp_path, memory="900000000M")
    before = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout
    result = validate(folder)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "Slurm would refuse the run's jobs (sbatch --test-only:" in line
    assert "Fix: change what [slurm] asks for" in line and "sacctmgr" in line
    after = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout
    assert after == before  # nothing was submitted
    (folder / "ds.toml").write_text((folder / "ds.toml").read_text().replace("900000000M", "100M"))
    ok = validate(folder)
    assert ok.returncode == 0, ok.stderr


def test_a_refusal_names_slurms_reason_and_a_busy_controller_is_no_refusal(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED_COMMANDS:
        (bin_dir / name).write_text("#!/bin/sh\necho 'Slurmctld(primary) at c1 is UP'\n")
        (bin_dir / name).chmod(0o755)
    sbatch = bin_dir / "sbatch"
    for number, (says, refused) in enumerate(
        [
            ("sbatch: error: Invalid account or account/partition combination specified", True),
            ("sbatch: error: Batch job submission failed: Socket timed out on send/recv", False),
        ]
    ):
        sbatch.write_text(f"#!/bin/sh\necho '{says}' >&2\nexit 1\n")
        result = validate(project(tmp_path / str(number)), path=f"{bin_dir}:/usr/bin:/bin")
        lines = [line for line in error_lines(result) if "would refuse" in line]
        assert bool(lines) == refused, result.stderr
        if refused:
            assert "Invalid account or account/partition combination" in lines[0]
            assert result.returncode == 2
