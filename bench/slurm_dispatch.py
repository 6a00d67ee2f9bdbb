"""Benchmark `slurm_dispatch`: 400 tasks of 50 ms on Slurm, through ds and by a plain script.

Needs a Slurm cluster whose clients work here (``scripts/slurm-local.sh start`` and
``eval "$(scripts/slurm-local.sh env)"`` give a one-node one; MaxArraySize 5 there).

Ours: a real ``ds run --backend slurm`` (a subprocess, as users type it) of a command-recipe
project (``sleep 0.05`` per task), check-if-done off, ``--interval 1``, with as many tasks per
Slurm job as the baseline gives each element, ``slurm.max_jobs = 2``; timed from the
process's start to its exit (setup, submit, sbatch, the run, monitor, report, cleanup). Also
with the default ``tasks_per_job`` (10), for what the grouping costs.
Baseline: one plain ``sbatch --array=0-K%2`` shell script (K+1 = MaxArraySize elements at
most), each element looping over its share of the 400 ``sleep 0.05``; timed from sbatch to
the array leaving squeue. No records, no retries, no report: the floor of what a hand-written
array does.
Unit: seconds, lower is better; ratio = baseline / ours (above 1 would beat the floor).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLEEP = 0.05


def max_array_size() -> int:
    text = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 1001


def time_ours(folder: Path, n: int, tasks_per_job: int, jobs: int) -> float:
    folder.mkdir(parents=True)
    (folder / "ds.toml").write_text(
        "\n".join(
            [
                'app_name = "SlurmBench"',
                'backend = "slurm"',
                "[recipe]",
                'name = "command"',
                f'argv = ["sleep", "{SLEEP}"]',
                'output_prefix = "out/{i}"',
                "[check_if_done]",
                "enabled = false",
                "[slurm]",
                f"max_jobs = {jobs}",
                f"tasks_per_job = {tasks_per_job}",
                "",
            ]
        )
    )
    (folder / "job.json").write_text(json.dumps({"groups": [{"i": i} for i in range(n)]}))
    argv = [sys.executable, "-m", "distributed_something", "run", str(folder), "--json"]
    started = time.perf_counter()
    done = subprocess.run([*argv, "--interval", "1"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ds run failed ({done.returncode}): {done.stderr[-2000:]}")
    counts = json.loads(done.stdout)["counts"]
    assert counts["done"] == n, counts
    return seconds


BASELINE = """#!/bin/sh
i=0
while [ "$i" -lt "$PER" ]; do sleep {sleep}; i=$((i + 1)); done
"""


def time_baseline(folder: Path, n: int, elements: int, jobs: int) -> float:
    folder.mkdir(parents=True)
    script = folder / "array.sh"
    script.write_text(BASELINE.replace("{sleep}", str(SLEEP)))
    per = -(-n // elements)
    started = time.perf_counter()
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--job-name=plain-bench",
            f"--array=0-{elements - 1}%{jobs}",
            f"--output={folder}/%A_%a.out",
            f"--export=ALL,PER={per}",
            str(script),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    job = out.split(";")[0]
    while subprocess.run(
        ["squeue", "--noheader", f"--jobs={job}"], capture_output=True, text=True
    ).stdout.strip():
        time.sleep(0.2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2, help="Slurm jobs at once")
    args = parser.parse_args()
    elements = min(max_array_size(), 40)
    per = -(-args.tasks // elements)
    with tempfile.TemporaryDirectory(prefix="ds-bench-slurm-") as scratch:
        root = Path(scratch)
        baseline = time_baseline(root / "plain", args.tasks, elements, args.jobs)
        ours = time_ours(root / "ours", args.tasks, per, args.jobs)
        default = time_ours(root / "ours-default", args.tasks, 10, args.jobs)
    work = args.tasks * SLEEP / args.jobs
    print(f"{args.tasks} tasks of {SLEEP * 1000:.0f} ms, {args.jobs} Slurm jobs at once")
    print(f"the work itself: {work:.1f} s")
    print(f"plain sbatch --array ({elements} elements of {per} tasks): {baseline:.1f} s")
    print(f"ds run --backend slurm ({per} tasks per job): {ours:.1f} s")
    print(f"ds run --backend slurm (10 tasks per job, the default): {default:.1f} s")
    print(
        f"RESULT slurm_dispatch ours={ours:.2f} baseline={baseline:.2f} "
        f"ratio={baseline / ours:.2f} unit=s"
    )


if __name__ == "__main__":
    main()
