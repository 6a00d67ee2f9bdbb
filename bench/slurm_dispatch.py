"""Benchmark `slurm_dispatch`: 400 tasks of 50 ms on Slurm, through ds and by a plain script.

The cluster: the one ``scripts/slurm-local.sh start`` runs (one node, 2 CPUs at most,
MaxArraySize 5); the script starts it when it is not running and stops it at the end if it
started it. On a real cluster, point SLURM_CONF at it and pass ``--no-local-cluster``.

Baseline: one plain ``sbatch --array=0-K%2`` shell script (K+1 = MaxArraySize elements, at
most 40), each element looping over its share of the 400 ``sleep 0.05``; timed from sbatch
to the array leaving squeue (polled every 0.2 s). No records, no retries, no report: the
floor of what a hand-written array does.
Ours: a real ``ds run --backend slurm`` (a subprocess, as users type it) of a command-recipe
project (``sleep 0.05`` per task), check-if-done off, ``--interval 1``, ``slurm.max_jobs =
2`` (the baseline's ``%2``), timed from the process's start to its exit (setup, submit,
sbatch, the run, monitor, report, cleanup). Twice: with the default ``tasks_per_job`` (10,
what users get; this is the RESULT), and with as many tasks per Slurm job as the baseline
gives each element (the same job shape).
The three run in turn, ``--rounds`` times (3), on the same cluster; each time is the median
of its rounds, so a burst of other load on the machine does not pick the winner.
Unit: seconds, lower is better; ratio = baseline / ours (above 1 would beat the floor).
Target: ratio >= 0.9 (ds adds no more than 10% over the plain array).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLEEP = 0.05
TARGET = 0.9
REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "scripts" / "slurm-local.sh"


def max_array_size() -> int:
    text = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 1001


def cluster_answers() -> bool:
    try:
        done = subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def start_local_cluster() -> bool:
    """Point the clients at scripts/slurm-local.sh's cluster and start it; True when this
    call started it (so it is stopped at the end)."""
    line = subprocess.run([str(LOCAL), "env"], capture_output=True, text=True, check=True)
    os.environ["SLURM_CONF"] = line.stdout.strip().partition("SLURM_CONF=")[2]
    was_running = Path(os.environ["SLURM_CONF"]).is_file() and cluster_answers()
    started = subprocess.run([str(LOCAL), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise SystemExit(f"{LOCAL} start failed: {started.stderr[-2000:]}")
    return not was_running


def time_ours(folder: Path, n: int, tasks_per_job: int | None, jobs: int) -> float:
    folder.mkdir(parents=True)
    per_job = [] if tasks_per_job is None else [f"tasks_per_job = {tasks_per_job}"]
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
                *per_job,
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-local-cluster",
        action="store_true",
        help="use the cluster SLURM_CONF names instead of scripts/slurm-local.sh's",
    )
    args = parser.parse_args()
    started_here = False if args.no_local_cluster else start_local_cluster()
    try:
        elements = min(max_array_size(), 40)
        per = -(-args.tasks // elements)
        times: dict[str, list[float]] = {"baseline": [], "ours": [], "same shape": []}
        with tempfile.TemporaryDirectory(prefix="ds-bench-slurm-") as scratch:
            root = Path(scratch)
            for r in range(args.rounds):
                times["baseline"].append(
                    time_baseline(root / f"plain-{r}", args.tasks, elements, args.jobs)
                )
                times["ours"].append(time_ours(root / f"ours-{r}", args.tasks, None, args.jobs))
                times["same shape"].append(
                    time_ours(root / f"shape-{r}", args.tasks, per, args.jobs)
                )
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{name} {t[-1]:.1f} s" for name, t in times.items()),
                    flush=True,
                )
    finally:
        if started_here:
            subprocess.run([str(LOCAL), "stop"], capture_output=True, check=False)
    baseline, ours, shape = (statistics.median(t) for t in times.values())
    work = args.tasks * SLEEP / args.jobs
    print(f"{args.tasks} tasks of {SLEEP * 1000:.0f} ms, {args.jobs} Slurm jobs at once")
    print(f"the work itself: {work:.1f} s (medians of {args.rounds} rounds below)")
    print(f"plain sbatch --array ({elements} elements of {per} tasks): {baseline:.1f} s")
    print(f"ds run --backend slurm (tasks_per_job 10, the default): {ours:.1f} s")
    print(
        f"ds run --backend slurm ({per} tasks per job, the baseline's shape): {shape:.1f} s "
        f"(ratio {baseline / shape:.2f})"
    )
    ratio = baseline / ours
    print(
        f"TARGET met={'yes' if ratio >= TARGET else 'no'} ratio {ratio:.2f} with the default "
        f"tasks_per_job, {baseline / shape:.2f} with the baseline's shape (target >= {TARGET})"
    )
    print(
        "LIMIT a Slurm job that finished its slice goes on to the next slice no job holds, "
        "so the work is not held up by Slurm scheduling one array element per slice; what is "
        "left is ds's own cost per task (records, a Python child per task), the worker's "
        "start in each job, and the monitor's end-of-run check (one --interval to see the "
        "queue empty, one more to confirm it)"
    )
    print(f"RESULT slurm_dispatch ours={ours:.2f} baseline={baseline:.2f} ratio={ratio:.2f} unit=s")


if __name__ == "__main__":
    main()
