"""Benchmark `pending_memory`: resident memory per pending task in the long-lived processes.

Issue 14's target: at most 300 bytes per pending task in every process that lives as long as
the run — the monitor, each worker and ``ds run``. A process that held a Python object per
task (a dict, a dataclass, a JSON string: 200 to 1,000 bytes each) would miss it.

Setup, for each of two sizes (``--small``, ``--large``: 10,000 and 100,000 tasks): a local
command-recipe project in a temporary folder whose tasks run ``sleep 600``, so the workers
each hold one task and every other task stays pending for the whole measurement.

- ``monitor``: ``ds setup``, ``ds submit``, then ``ds monitor`` (which starts the workers);
  the monitor's and each worker's resident memory (VmRSS of /proc/<pid>/status) is sampled
  every 0.5 s for ``--seconds`` (10) after ``--settle`` (8) seconds; the peak counts.
- ``ds run``: the same in another project with ``ds run --job`` (submit, workers and the
  monitor in one command): the ``ds run`` process is sampled the same way. Its figure
  includes what the submit left in the process's heap.

Bytes per pending task = (peak at the large size - peak at the small size) / (the difference
in pending tasks): what each process adds per pending task, without what any process
carries anyway. The tasks counted pending are those not held by a worker.

There is no other tool to compare with: the baseline is the target. RESULT: ours = the
largest bytes per pending task among the processes, baseline = 300, ratio = 300 / ours
(above 1: within the target).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_BYTES = 300.0
DS = [sys.executable, "-m", "distributed_something"]
APP = "Pending"


def write_project(folder: Path, n: int) -> None:
    """ds.toml (tasks that sleep 10 minutes; 2 workers) and job.json with ``n`` groups."""
    folder.mkdir(parents=True)
    (folder / "ds.toml").write_text(
        f'app_name = "{APP}"\n\n[recipe]\nname = "command"\n'
        'argv = ["sleep", "600", "{i}"]\noutput_prefix = "out/{i}"\n\n'
        "[cluster]\nmachines = 1\ntasks_per_machine = 2\n"
    )
    with (folder / "job.json").open("w") as fh:
        fh.write('{"groups": [')
        fh.write(",".join(f'{{"i":{i}}}' for i in range(n)))
        fh.write("]}")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker_pids(folder: Path) -> list[int]:
    try:
        listed = json.loads((folder / ".ds" / APP / "workers.json").read_text())["workers"]
    except (OSError, ValueError, KeyError):
        return []
    return [int(w["pid"]) for w in listed]


def sample(
    main: subprocess.Popen[bytes], folder: Path, settle: float, seconds: float, workers: set[int]
) -> dict[str, float]:
    """Peak RSS (MB) of ``main`` and of its workers (the largest of them) over ``seconds``
    after ``settle``; the workers' PIDs are added to ``workers``."""
    time.sleep(settle)
    peak = {"main": 0.0, "worker": 0.0}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if main.poll() is not None:
            raise SystemExit(f"{main.args} exited early with {main.returncode}")
        peak["main"] = max(peak["main"], rss_mb(main.pid) or 0.0)
        for pid in worker_pids(folder):
            workers.add(pid)
            peak["worker"] = max(peak["worker"], rss_mb(pid) or 0.0)
        time.sleep(0.5)
    if not workers:
        raise SystemExit(f"no worker started in {folder}")
    return {**peak, "workers": len(workers)}


def stop(proc: subprocess.Popen[bytes], folder: Path, seen: set[int]) -> None:
    """Stop the monitor or ``ds run`` (it stops its workers), then any worker of ``seen``
    (PIDs read while it ran) still there, by PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    subprocess.run([*DS, "cleanup"], cwd=folder, capture_output=True, timeout=120)
    for pid in seen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def measure(n: int, root: Path, settle: float, seconds: float) -> dict[str, float]:
    """Peak MB of the monitor, a worker and ``ds run`` with ``n`` tasks submitted."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    folder = root / f"monitor-{n}"
    write_project(folder, n)
    for step in (["setup"], ["submit", "job.json"]):
        subprocess.run([*DS, *step], cwd=folder, capture_output=True, check=True)
    seen: set[int] = set()
    monitor = subprocess.Popen([*DS, "monitor", "--interval", "1"], cwd=folder, **quiet)
    try:
        peaks = sample(monitor, folder, settle, seconds, seen)
    finally:
        stop(monitor, folder, seen)
    folder = root / f"run-{n}"
    write_project(folder, n)
    run = subprocess.Popen(
        [*DS, "run", "--job", "job.json", "--interval", "1"], cwd=folder, **quiet
    )
    seen = set()
    try:
        run_peaks = sample(run, folder, settle, seconds, seen)
    finally:
        stop(run, folder, seen)
    return {
        "monitor": peaks["main"],
        "worker": peaks["worker"],
        "ds run": run_peaks["main"],
        "workers": peaks["workers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ds-bench-pending-") as tmp:
        small = measure(args.small, Path(tmp), args.settle, args.seconds)
        large = measure(args.large, Path(tmp), args.settle, args.seconds)
    held = int(large["workers"])  # tasks held by workers are not pending
    extra = (args.large - held) - (args.small - held)
    print(f"pending tasks: {args.small - held:,} and {args.large - held:,} ({held} held)")
    per_task = {}
    for name in ("monitor", "worker", "ds run"):
        per_task[name] = max(0.0, (large[name] - small[name]) * 1024 * 1024 / extra)
        print(
            f"{name}: peak RSS {small[name]:.1f} MB -> {large[name]:.1f} MB: "
            f"{per_task[name]:.0f} bytes per pending task"
        )
    worst = max(per_task, key=lambda k: per_task[k])
    ours = per_task[worst]
    met = ours <= TARGET_BYTES
    print(
        f"TARGET met={'yes' if met else 'no'} {ours:.0f} bytes per pending task at most "
        f"({worst}; target <= {TARGET_BYTES:.0f})"
    )
    if per_task["ds run"] > per_task["monitor"]:
        print(
            "LIMIT ds run: what its submit step left in the heap (the monitor alone adds "
            f"{per_task['monitor']:.0f} bytes per pending task)"
        )
    print(
        f"RESULT pending_memory ours={max(ours, 1.0):.0f} baseline={TARGET_BYTES:.0f} "
        f"ratio={TARGET_BYTES / max(ours, 1.0):.2f} unit=bytes"
    )


if __name__ == "__main__":
    main()
