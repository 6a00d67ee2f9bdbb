"""Workers that cannot work, and a full disk: one clear error, not a loop or a traceback.

A cause every local worker meets as it starts (a scratch folder it cannot make, a full disk,
a damaged queue file) made `ds run` start workers without end: ~70 a second, each leaving
a log file. The local compute now stops replacing them once they keep failing
(`crash_looping`) and says why, with the last failed worker's last log line. A full disk
anywhere under a command is one line naming the fix, not a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from distributed_something.crash_loop import (
    CRASH_MIN_FAILURES,
    CRASH_WINDOW_SECONDS,
    WorkerFailure,
    crash_looping,
)
from testkit import E2E_WORK


def failures(*times: float) -> list[WorkerFailure]:
    return [
        WorkerFailure(at, f"local-{i}", 3, Path(f"local-{i}.log")) for i, at in enumerate(times)
    ]


def test_crash_looping_counts_recent_failures_against_the_workers_wanted() -> None:
    now = 1000.0
    assert not crash_looping([], now, 2)
    assert not crash_looping(failures(*[now - 1] * (CRASH_MIN_FAILURES - 1)), now, 1)
    assert crash_looping(failures(*[now - 1] * CRASH_MIN_FAILURES), now, 1)
    # Twice the workers wanted: 8 workers may all fail once (a passing cause) and be replaced.
    assert not crash_looping(failures(*[now - 1] * 8), now, 8)
    assert crash_looping(failures(*[now - 1] * 16), now, 8)
    # Failures spread over hours are not a loop: only the window counts.
    old = now - CRASH_WINDOW_SECONDS - 1
    assert not crash_looping(failures(*[old] * 50, now - 1), now, 2)


def test_workers_failing_as_they_start_stop_ds_run_with_the_cause_and_it_resumes(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.txt"
    names = [f"c{i}" for i in range(4)]
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, "-c", E2E_WORK, "{output_dir}", "{name}", str(ledger), "0"],
        groups=[{"name": n} for n in names],
    )
    ds = [sys.executable, "-m", "distributed_something"]
    broken = {**os.environ, "DS_SCRATCH": "/proc/no-scratch-here"}  # no worker can make it
    failed = subprocess.run(
        [*ds, "run", "--interval", "0.2"],
        cwd=proj,
        env=broken,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 3, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "workers keep failing" in failed.stderr and "no-scratch-here" in failed.stderr
    assert "scratch folder /proc/no-scratch-here cannot be made" in failed.stderr
    logs = list((proj / ".ds" / "T" / "workers").glob("*.log"))
    assert CRASH_MIN_FAILURES <= len(logs) <= CRASH_MIN_FAILURES + 2  # not hundreds
    assert not ledger.exists()  # no task ran
    # The cause fixed, the same command resumes the run: every task runs, once.
    done = subprocess.run(
        [*ds, "run", "--json", "--interval", "0.2"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming run" in done.stderr
    assert json.loads(done.stdout)["counts"]["done"] == 4
    assert sorted(ledger.read_text().split()) == names


def test_a_full_disk_is_one_line_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed_something.cli import commands
    from distributed_something.cli.main import main

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/p/.ds/T/state.json")

    monkeypatch.setattr(commands, "open_project", full)
    with pytest.raises(SystemExit) as exited:
        main(["status", "--json"])
    assert exited.value.code == 3
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "/data/p/.ds/T/state.json" in err
    assert "free space there" in err and "resumes" in err
    assert json.loads(out)["error"]["exit_code"] == 3

    def other(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(commands, "open_project", other)
    with pytest.raises(OSError):  # anything else is not dressed up as a full disk
        main(["status"])


def test_cleanup_says_the_run_is_over_before_it_stops_the_workers(tmp_path: Path) -> None:
    """A `ds run` monitor ticking while `ds cleanup` stops the workers read the run as still
    in progress and started new workers, which ran tasks of the cleaned-up run after it
    (seen: a task run twice, its records split over two runs). The run's end is now saved
    before anything is stopped."""
    import dataclasses

    from distributed_something.backends import open_backend
    from distributed_something.state import load_state
    from distributed_something.usecases import lifecycle
    from distributed_something.usecases.project import open_project

    proj = write_project(tmp_path / "p", argv=[sys.executable, "-c", "pass"], groups=[{"n": 1}])
    project = open_project(proj)
    backend = open_backend(project)
    lifecycle.setup(project, backend)
    seen: list[bool] = []
    real = backend.provisioner

    class Watching:
        def teardown(self, state: Any, save: Any) -> None:
            now = load_state(project, backend.storage)
            seen.append(now is not None and not now.active)
            real.teardown(state, save)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    lifecycle.cleanup(project, dataclasses.replace(backend, provisioner=Watching()))
    assert seen == [True]


def test_a_worker_started_after_its_run_ended_takes_no_task(tmp_path: Path) -> None:
    """The other side of the race: a worker that starts once the run is over leaves its
    tasks alone (they belong to no run any more) and exits at once."""
    ledger = tmp_path / "ledger.txt"
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, "-c", E2E_WORK, "{output_dir}", "{name}", str(ledger), "0"],
        groups=[{"name": "a"}, {"name": "b"}],
    )
    ds = [sys.executable, "-m", "distributed_something"]
    for step in (["setup"], ["submit", "job.json"]):
        assert subprocess.run([*ds, *step], cwd=proj, capture_output=True).returncode == 0
    state_file = proj / ".ds" / "T" / "state.json"
    state = json.loads(state_file.read_text())
    state["finished_at"] = state["created_at"] + 1  # as `ds cleanup` now says it first
    state_file.write_text(json.dumps(state))
    worker = subprocess.run(
        [*ds, "worker", "--config", "ds.toml"], cwd=proj, capture_output=True, text=True
    )
    assert worker.returncode == 0, worker.stderr
    assert "is over" in worker.stderr
    assert not ledger.exists()  # no task ran
