"""The trace's switch (``DS_TRACE=off``, for bench/trace_cost.py): the runner then measures
no memory or CPU time, and still runs the command and ends its process group."""

from __future__ import annotations

import threading
from pathlib import Path

from distributed_something.worker.runner import SubprocessRunner, tracing_enabled
from testkit import run_from_a_small_process

# Allocates about 30 MB and burns a little CPU, so a measuring runner has something to see.
BUSY = ["python3", "-c", "b = bytearray(30 * 1024 * 1024); sum(range(200000))"]


def run(tmp_path: Path, measure: bool) -> tuple[float | None, float | None, int]:
    result = SubprocessRunner(measure=measure).run(
        BUSY,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "log",
        stop=threading.Event(),
    )
    return result.peak_memory_mb, result.cpu_seconds, result.exit_code


def test_measuring_runner_reports_memory_and_cpu(tmp_path: Path) -> None:
    # From a small process, as a worker is: a peak not above the spawner's own is not
    # counted (`runner._Child.peak_mb`), and this test process is large.
    code, peak, cpu = run_from_a_small_process(BUSY, tmp_path)
    assert code == 0
    assert peak is not None and peak >= 30
    assert cpu is not None


def test_trace_off_runs_the_command_without_measuring(tmp_path: Path) -> None:
    peak, cpu, code = run(tmp_path, measure=False)
    assert code == 0
    assert peak is None and cpu is None


def test_only_ds_trace_off_turns_the_trace_off() -> None:
    assert tracing_enabled({}) is True
    assert tracing_enabled({"DS_TRACE": "on"}) is True
    assert tracing_enabled({"DS_TRACE": "1"}) is True
    assert tracing_enabled({"DS_TRACE": " OFF "}) is False
