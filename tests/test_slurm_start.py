"""What `ds start-cluster` and `ds status` say of Slurm workers whose jobs are still queued,
with Slurm's commands faked on PATH (stand-in scripts; squeue answers what a test writes).
No real Slurm is used: these run alongside anything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from conftest import write_project
from distributed_something.backends import backend_kind
from distributed_something.cli.commands import _status_frame, workers_line
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.monitor.progress import from_counts
from distributed_something.usecases.run_info import Status

Ds = Callable[..., CompletedProcess[str]]

#: The job id the fake sbatch gives every array.
JOB = "41"

FAKES = {
    "sbatch": f"#!/bin/sh\necho {JOB}\n",
    # Each line: array job id|index|state|reason, as `squeue --format=%F|%K|%T|%r` prints
    # them.
    "squeue": '#!/bin/sh\ncat "$DS_FAKE_SQUEUE" 2>/dev/null\nexit 0\n',
    "scontrol": (
        '#!/bin/sh\ncase "$1" in\n'
        "  ping) echo 'Slurmctld(primary) at fake is UP' ;;\n"
        "  show) echo 'MaxArraySize = 1001' ;;\n"
        "esac\nexit 0\n"
    ),
    "scancel": "#!/bin/sh\nexit 0\n",
    "sacct": "#!/bin/sh\nexit 0\n",
    "sinfo": "#!/bin/sh\nexit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Slurm's commands as stand-ins first on PATH; returns the file squeue prints."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        tool = bin_dir / name
        tool.write_text(text)
        tool.chmod(0o755)
    answers = tmp_path / "squeue.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("DS_FAKE_SQUEUE", str(answers))
    return answers


def squeue_says(answers: Path, *states: str) -> None:
    # "None": the reason squeue gives a job it has not looked at yet (no problem to say)
    answers.write_text("".join(f"{JOB}|{i}|{state}|None\n" for i, state in enumerate(states)))


def test_start_cluster_says_how_many_jobs_run_and_how_many_are_queued(
    tmp_path: Path, ds: Ds, fake_slurm: Path
) -> None:
    folder = write_project(
        tmp_path / "proj",
        argv=["true"],
        groups=[{"name": n} for n in ("a", "b", "c")],
        extra={
            "backend": "slurm",
            "cluster": {"docker_cores": 3},
            "slurm": {"shared_dir": str(tmp_path / "shared"), "tasks_per_job": 1},
        },
    )
    for args in (("setup",), ("submit", "job.json")):
        done = ds(*args, cwd=folder)
        assert done.returncode == 0, done.stderr
    squeue_says(fake_slurm, "PENDING", "PENDING", "PENDING")
    started = ds("start-cluster", cwd=folder)
    assert started.returncode == 0, started.stderr
    # It said "0 worker(s) running": true, but it read as if nothing had been started.
    line = "3 worker(s) submitted as Slurm jobs: 0 running, 3 queued (PENDING in squeue)"
    assert line in started.stderr, started.stderr
    status = ds("status", cwd=folder)
    assert status.returncode == 0, status.stderr
    assert line in status.stderr and "no workers are running" not in status.stderr
    squeue_says(fake_slurm, "RUNNING", "RUNNING", "PENDING")
    assert "2 running, 1 queued" in ds("status", cwd=folder).stderr
    squeue_says(fake_slurm, "RUNNING", "RUNNING", "RUNNING")
    assert "queued" not in ds("status", cwd=folder).stderr


def test_the_workers_line_in_each_backends_words() -> None:
    slurm, aws, local = (backend_kind(name) for name in ("slurm", "aws", "local"))
    assert workers_line(ComputeStatus(desired=4, running=1), slurm) == (
        "4 worker(s) submitted as Slurm jobs: 1 running, 3 queued (PENDING in squeue)"
    )
    assert workers_line(ComputeStatus(desired=4, running=4), slurm) == "4 worker(s) running"
    assert workers_line(ComputeStatus(desired=0, running=0), slurm) == "0 worker(s) running"
    assert workers_line(ComputeStatus(desired=8, running=6), aws) == (
        "8 worker(s) asked of ECS: 6 running, 2 waiting to start on a machine"
    )
    # Local workers start at once: one asked for and not running has exited.
    assert workers_line(ComputeStatus(desired=2, running=2), local) == "2 worker(s) running"
    assert workers_line(ComputeStatus(desired=2, running=0), local) == "0 worker(s) running"


def test_status_of_a_local_run_without_workers_still_says_how_to_resume() -> None:
    counts = dict.fromkeys(("done", "skipped", "running", "failed", "dead", "duplicates"), 0)
    counts.update(pending=3, total=3)
    st = Status("App", "r1", True, from_counts(counts, 0), 2, 0, 10.0, None)
    text = " ".join(str(getattr(p, "plain", "")) for p in _status_frame(st, backend_kind("local")))
    assert "no workers are running" in text and "queued" not in text
