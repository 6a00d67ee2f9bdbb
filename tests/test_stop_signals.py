"""`ds run` stopped by SIGTERM (`timeout`, `kill`, a batch system's time limit) or SIGHUP
(its terminal closed) stops as on Ctrl-C: its workers stop and hand their tasks back, it
says how to resume, and it exits 128 + the signal. It used to die at once and silently,
its workers running on unwatched and the run left in progress with nobody to end it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from testkit import running

Ds = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_ds_run_stops_its_workers_and_says_how_to_resume(
    tmp_path: Path, stop: signal.Signals, ds: Ds
) -> None:
    ledger = tmp_path / "ledger"
    argv = ["/bin/sh", "-c", f'echo "$1" >> {ledger}; sleep 2', "sh", "{name}"]
    proj = write_project(tmp_path / "proj", argv=argv, groups=[{"name": f"t{i}"} for i in range(6)])
    run = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", "run", str(proj)],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (ledger.exists() and ledger.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ledger.exists(), "no task started"
        os.kill(run.pid, stop)  # the `ds run` process only, not its workers
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 128 + stop, err
    text = " ".join(err.split())
    assert f"interrupted ({stop.name})" in text
    assert "stopping workers" in text and "run the same `ds run` again" in text

    status = json.loads(ds("status", "--json", cwd=proj).stdout)
    assert status["workers"]["running"] == 0  # none left running unwatched
    started = len(ledger.read_text().split())
    time.sleep(2.5)  # a worker left running would start another task meanwhile
    assert len(ledger.read_text().split()) == started

    # Resumed: every task ends done, none lost.
    resumed = ds("run", str(proj), "--json", cwd=proj)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["counts"]["done"] == 6


def test_a_ds_run_interrupted_while_its_workers_start_stops_those_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first worker may run a task before the second is started: a Ctrl-C (or SIGTERM)
    # then landed outside the part of `ds run` that stops workers, and those started ran on
    # unwatched. Here it lands as the second worker is being recorded (neither is saved in
    # the workers' file yet): both must be stopped, and the run said how to resume.
    from distributed_something.backends.local import compute
    from distributed_something.usecases import lifecycle
    from distributed_something.usecases.project import open_project

    argv = ["/bin/sh", "-c", "sleep 30", "sh", "{name}"]
    proj = write_project(tmp_path / "proj", argv=argv, groups=[{"name": f"t{i}"} for i in range(4)])
    started: list[int] = []
    looked_up = compute.proc_info

    def interrupted_at_the_second(pid: int) -> Any:
        started.append(pid)
        if len(started) == 2:
            raise KeyboardInterrupt
        return looked_up(pid)

    monkeypatch.setattr(compute, "proc_info", interrupted_at_the_second)
    project = open_project(proj / "ds.toml")
    try:
        with pytest.raises(KeyboardInterrupt):
            lifecycle.run(project, proj / "job.json", show_progress=False, interval=0.2)
        assert len(started) == 2
        for pid in started:
            assert not running(pid), f"worker {pid} still runs"
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
