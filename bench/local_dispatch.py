"""Benchmark `local_dispatch`: 2,000 no-op tasks (`true`) with 2 workers on this machine.

Ours: a real ``ds run`` (a subprocess, as users type it) of a command-recipe project in a
temporary folder — local backend (SQLite queue, folder storage, 2 worker processes),
check-if-done off, ``local.poll_interval = 0.01`` s, the monitor at its default interval (it
reads again at once when a worker exits, so the run ends with its last worker) —
timed from the process's start to its exit (the report is written by then: validate,
setup, submit, start workers, run, monitor, report, cleanup).
Baseline (the floor): ``xargs -P 2 -I{} true`` over the same 2,000 lines: 2,000 ``true``
processes, two at a time, with no bookkeeping at all.
Also the same with short real tasks (``--short-tasks`` 400 of ``sleep 0.05``), once each,
where the per-task bookkeeping meets a task that takes time.
Also the Python floor: 2 Python processes that only start ``true`` as our runner does (own
session, output to a file) and wait — what any worker written in Python pays per task.
Also the records floor: the same, plus the SQLite writes our worker makes per task (a
receive of up to 16 tasks carrying the last tasks' deletes; the last task's end with this
one's start and a read of its attempts, in one transaction) — what a Python worker keeping
our durable records pays, and nothing else; and the same with the starts of the 16 tasks
received together written in one transaction (records committed in batches).
Also, when ``pip install lithops`` works here: Lithops' localhost executor with 2 worker
processes, each task calling ``subprocess.run(["true"])``, in a throwaway venv under /tmp
(``--lithops-tasks`` of them, 200 by default: it takes ~0.2 s a task; compared by rate).

Also a large run (``--large-tasks``, 100,000 of ``true``, once each side): the issue's
second target, where ``ds run``'s fixed cost no longer counts.

Each side runs ``--repeat`` times (3); the median counts.
Unit: seconds, lower is better; ratio = baseline / ours (xargs' time over ours: above 1
would mean faster than the floor, which nothing is). Target: ours within 1.5x of xargs,
i.e. ratio >= 0.67.

A profile of one `ds worker` (cProfile, 500 tasks, one worker) follows the numbers: the
per-task cost of the product's functions, which is what limits this benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed_something.backends.local.queue import SqliteQueue

TARGET_FACTOR = 1.5
LITHOPS_VENV = Path("/tmp/ds-bench-lithops")
LITHOPS_SCRIPT = """
import subprocess, sys, time
started = time.perf_counter()
import lithops

def run_true(i):
    return subprocess.run(["true"]).returncode

config = {
    "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
    "localhost": {"worker_processes": 2, "runtime": sys.executable},
}
executor = lithops.FunctionExecutor(config=config)
executor.map(run_true, range(int(sys.argv[1])))
codes = executor.get_result()
seconds = time.perf_counter() - started
executor.clean()
assert codes == [0] * int(sys.argv[1]), codes
print(seconds)
"""


def write_project(folder: Path, n: int, workers: int, argv: tuple[str, ...] = ("true",)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ds.toml").write_text(
        "\n".join(
            [
                'app_name = "Dispatch"',
                "[recipe]",
                'name = "command"',
                f"argv = {json.dumps(list(argv))}",
                'output_prefix = "out/{i}"',
                "[cluster]",
                f"docker_cores = {workers}",
                "[check_if_done]",
                "enabled = false",
                "[local]",
                f"workers = {workers}",
                "poll_interval = 0.01",
                "",
            ]
        )
    )
    (folder / "job.json").write_text(json.dumps({"groups": [{"i": i} for i in range(n)]}))


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children reaped so far, theirs
    included (each side's processes all wait for theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_ours(
    scratch: Path,
    n: int,
    workers: int,
    round_: int | str,
    argv: tuple[str, ...] = ("true",),
    cpu: list[float] | None = None,
) -> float:
    """Seconds of one `ds run`; its CPU seconds (every process of it) appended to ``cpu``."""
    folder = scratch / f"ours-{round_}"
    write_project(folder, n, workers, argv)
    argv = [sys.executable, "-m", "distributed_something", "run", str(folder)]
    before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append(children_cpu() - before)
    if done.returncode != 0:
        raise SystemExit(f"ds run failed ({done.returncode}): {done.stderr[-2000:]}")
    counts = json.loads(done.stdout)["counts"]
    assert counts["done"] == n, counts
    return seconds


def time_xargs(
    n: int, workers: int, argv: tuple[str, ...] = ("true",), cpu: list[float] | None = None
) -> float:
    """Seconds of xargs running ``argv`` ``n`` times; its CPU seconds appended to ``cpu``."""
    lines = "".join(f"{i}\n" for i in range(n))
    # -I{} with no {} in the command: one run of exactly ``argv`` per line.
    before = children_cpu()
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(workers), "-I{}", *argv], input=lines, text=True)
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append(children_cpu() - before)
    return seconds


PYTHON_FLOOR = """
import subprocess, sys
with open(sys.argv[2], "ab") as log:
    for _ in range(int(sys.argv[1])):
        subprocess.Popen(
            ["true"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ).wait()
"""


def time_python_floor(n: int, workers: int, scratch: Path) -> float:
    """``workers`` Python processes that only start ``true`` the way our runner does (own
    session, output to a file) and wait: what any worker written in Python pays per task,
    before any bookkeeping."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PYTHON_FLOOR, str(n // workers), str(scratch / f"floor{i}.log")]
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - started


RECORDS_FLOOR = """
import os, subprocess, sys, time
from pathlib import Path
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.records import Attempt, DoneMarker, RunRecords, Writes
folder, n, me, batched = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "batch"
queue = SqliteQueue(folder / "queue.sqlite", max_receive_count=3)
bucket = LocalBucket(FolderStorage(folder / "bucket"), SqliteObjects(folder / "records.sqlite"))
records = RunRecords(bucket, "Floor", "r1")
work = folder / f"work-{me}"
work.mkdir(exist_ok=True)
env, kept, done = dict(os.environ), Writes(), []
started = time.perf_counter()
with open(work / "task.log", "ab") as log:
    while True:
        messages = queue.receive(16, 600)  # as a worker running short tasks does
        if not messages:
            break
        attempts = [
            Attempt(m.task_id, 1, m.message_id, me, time.time(), cause="lost") for m in messages
        ]
        if batched:  # every start of the batch in one write, with the last batch's ends
            opening = Writes(list(kept.puts), list(kept.deletes))
            for attempt in attempts:
                opening.add(records._opening(attempt, None))
            records.write(opening)
            records.attempt_keys_of([m.task_id for m in messages])
            for old in done:  # their ends are written: their messages go
                queue.delete_soon(old)
            kept, done = Writes(), []
        for message, attempt in zip(messages, attempts):
            if not batched:  # as the worker: this start with the last task's end, and a look
                records.open_attempt_looking(attempt, first=kept)
                for old in done:
                    queue.delete_soon(old)
            subprocess.Popen(
                ["true"], cwd=work, env={**env, "DS_TASK_ID": message.task_id},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ).wait()
            attempt.outcome, attempt.ended_at = "done", time.time()
            marker = DoneMarker(message.task_id, 1, 0.0, [], 0.0, time.time(), me, "out")
            if batched:
                kept.add(records.closing(attempt, marker))
                done.append(message)
            else:
                kept, done = records.closing(attempt, marker), [message]
records.write(kept)
for old in done:
    queue.delete_soon(old)
queue.close()
print(time.perf_counter() - started)
"""


def time_records_floor(n: int, workers: int, scratch: Path, *, batched: bool = False) -> float:
    """``workers`` Python processes that keep our durable records and nothing else: per
    task, the same SQLite writes as a worker running short tasks (a receive of up to 16
    tasks carrying the last tasks' deletes; the last task's end and done marker with this
    one's start and a read of its attempts in one transaction) around starting ``true`` as
    the python floor does. What a Python worker with these records pays per task before any
    of the rest (logs, limits, memory, groups): the loops' time, the processes' start left
    out. With ``batched``: the starts of the 16 tasks received together in one write (with
    the last batch's ends) and their attempts read in one snapshot, as a worker committing
    records in batches would (it would show held tasks as started)."""
    folder = scratch / "records-floor"
    folder.mkdir()
    SqliteQueue(folder / "queue.sqlite", max_receive_count=3).send_batch(
        [(f"t{i:07d}", "{}") for i in range(n)]
    )
    mode = "batch" if batched else "each"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDS_FLOOR, str(folder), str(n), f"w{i}", mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    # Each times its own loop (its interpreter's start and imports are not per task).
    seconds = max(float(proc.communicate()[0]) for proc in procs)
    shutil.rmtree(folder)
    return seconds


def lithops_python() -> Path | None:
    """The throwaway venv's python with lithops, made on first use; None if pip fails."""
    python = LITHOPS_VENV / "bin" / "python"
    check = [str(python), "-c", "import lithops"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    made = subprocess.run([sys.executable, "-m", "venv", str(LITHOPS_VENV)], capture_output=True)
    if made.returncode != 0:
        return None
    pip = [str(python), "-m", "pip", "install", "--quiet", "lithops"]
    if subprocess.run(pip, capture_output=True).returncode != 0:
        return None
    return python


def time_lithops(python: Path, n: int, scratch: Path) -> float | None:
    script = scratch / "lithops_true.py"
    script.write_text(LITHOPS_SCRIPT)
    done = subprocess.run(
        [str(python), str(script), str(n)], capture_output=True, text=True, cwd=scratch
    )
    if done.returncode != 0:
        print(f"lithops failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return float(done.stdout.strip().splitlines()[-1])


def profile_worker(scratch: Path, n: int) -> list[tuple[str, float]]:
    """Per-task milliseconds of the product's hottest functions in one `ds worker`."""
    folder = scratch / "profile"
    write_project(folder, n, 1)
    ds = [sys.executable, "-m", "distributed_something"]
    for step in (["setup"], ["submit", "job.json"]):
        subprocess.run([*ds, *step], cwd=folder, capture_output=True, check=True)
    out = scratch / "worker.prof"
    profiled = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "distributed_something"]
    subprocess.run(
        [*profiled, "worker", "--config", "ds.toml"],
        cwd=folder,
        capture_output=True,
        check=True,
    )
    stats = pstats.Stats(str(out))
    rows: list[tuple[str, float]] = []
    for (filename, line, name), (_, _, _, cumulative, _) in stats.stats.items():
        if "distributed_something" in filename or name in ("rmtree", "wait", "__init__"):
            where = filename.split("site-packages/")[-1].split("src/")[-1]
            if name in ("wait", "__init__") and not where.endswith("subprocess.py"):
                continue
            rows.append((f"{where}:{line} {name}", cumulative * 1000 / n))
    rows.sort(key=lambda row: -row[1])
    skip = ("__main__", "cli/", "run_worker", "loop.py:134", "loop.py:148", "<module>")
    return [row for row in rows if not any(s in row[0] for s in skip)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lithops-tasks", type=int, default=200)
    parser.add_argument("--no-lithops", action="store_true")
    parser.add_argument("--profile-tasks", type=int, default=500)
    parser.add_argument("--short-tasks", type=int, default=400)
    parser.add_argument("--short-seconds", type=float, default=0.05)
    parser.add_argument(
        "--large-tasks",
        type=int,
        default=100_000,
        help="also a run of this many no-op tasks, once each side (0: none)",
    )
    args = parser.parse_args()

    env_cpu = os.cpu_count()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ds-bench-dispatch-") as tmp:
        scratch = Path(tmp)
        ours: list[float] = []
        floor: list[float] = []
        python_floor: list[float] = []
        records_floor: list[float] = []
        batched_floor: list[float] = []
        ours_cpu: list[float] = []
        xargs_cpu: list[float] = []
        for r in range(args.repeat):  # alternated, so all see the same load
            ours.append(time_ours(scratch, args.tasks, args.workers, r, cpu=ours_cpu))
            floor.append(time_xargs(args.tasks, args.workers, cpu=xargs_cpu))
            python_floor.append(time_python_floor(args.tasks, args.workers, scratch))
            records_floor.append(time_records_floor(args.tasks, args.workers, scratch))
            batched_floor.append(
                time_records_floor(args.tasks, args.workers, scratch, batched=True)
            )
        # What `ds run` costs whatever the tasks: start, setup, submit, start workers, the
        # monitor's last tick, report, cleanup.
        fixed = statistics.median(time_ours(scratch, 2, args.workers, f"f{r}") for r in range(3))
        short_argv = ("sleep", f"{args.short_seconds:g}")
        short = (
            time_ours(scratch, args.short_tasks, args.workers, "short", short_argv),
            time_xargs(args.short_tasks, args.workers, short_argv),
        )
        large = None
        if args.large_tasks:
            large = (
                time_ours(scratch, args.large_tasks, args.workers, "large"),
                time_xargs(args.large_tasks, args.workers),
            )
        lithops_s = None
        if not args.no_lithops:
            python = lithops_python()
            if python is None:
                print("lithops: `pip install lithops` did not work here; not compared")
            else:
                lithops_s = time_lithops(python, args.lithops_tasks, scratch)
        hot = profile_worker(scratch, args.profile_tasks) if args.profile_tasks else []

    ours_s, xargs_s = statistics.median(ours), statistics.median(floor)
    python_s = statistics.median(python_floor)
    records_s = statistics.median(records_floor)
    batched_s = statistics.median(batched_floor)
    ratio = xargs_s / ours_s
    rate = args.tasks / ours_s
    print(
        f"machine: {env_cpu} CPUs; {args.tasks} tasks, {args.workers} workers; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (the two sides alternate, "
        "so both see the same load)"
    )
    print(f"ours (ds run): {', '.join(f'{s:.2f}' for s in ours)} s -> {ours_s:.2f} s median")
    print(f"xargs -P {args.workers}: {', '.join(f'{s:.2f}' for s in floor)} s -> {xargs_s:.2f} s")
    print(
        f"python floor ({args.workers} Python processes only starting `true` and waiting): "
        f"{', '.join(f'{s:.2f}' for s in python_floor)} s -> {python_s:.2f} s"
    )
    print(
        f"records floor ({args.workers} Python processes keeping our records around `true`, "
        f"nothing else): {', '.join(f'{s:.2f}' for s in records_floor)} s -> {records_s:.2f} s"
    )
    print(
        f"records floor, the starts of 16 tasks received together written together: "
        f"{', '.join(f'{s:.2f}' for s in batched_floor)} s -> {batched_s:.2f} s"
    )
    per_task = (ours_s - fixed) * args.workers / args.tasks * 1000
    python_ms = python_s * args.workers / args.tasks * 1000
    records_ms = records_s * args.workers / args.tasks * 1000
    print(f"fixed cost of `ds run` (the same project with 2 tasks): {fixed:.2f} s")
    ours_cpu_ms = statistics.median(ours_cpu) / args.tasks * 1000
    xargs_cpu_ms = statistics.median(xargs_cpu) / args.tasks * 1000
    print(
        f"CPU per task (every process, the tasks' own included; fixed cost included): ours "
        f"{ours_cpu_ms:.2f} ms, xargs {xargs_cpu_ms:.2f} ms; {env_cpu} CPUs give "
        f"{env_cpu} CPU-seconds a second, so where both sides keep the CPUs busy the time "
        "ratio follows the CPU ratio"
    )
    print(
        f"per task and worker slot: ours {per_task:.2f} ms (fixed cost taken out), "
        f"xargs {xargs_s * args.workers / args.tasks * 1000:.2f} ms, python floor "
        f"{python_ms:.2f} ms, records floor {records_ms:.2f} ms"
    )
    print(
        f"short tasks ({args.short_tasks} x `sleep {args.short_seconds:g}`): "
        f"ours {short[0]:.2f} s, xargs {short[1]:.2f} s: {short[0] / short[1]:.2f}x xargs' "
        "time (fixed cost included)"
    )
    if large is not None:
        print(
            f"large run ({args.large_tasks:,} x `true`, once each side): ours {large[0]:.1f} s, "
            f"xargs {large[1]:.1f} s: {large[0] / large[1]:.2f}x xargs' time (target <= "
            f"{TARGET_FACTOR}x; no fixed cost to speak of at this size)"
        )
    if lithops_s is not None:
        lithops_rate = args.lithops_tasks / lithops_s
        print(
            f"lithops localhost ({args.lithops_tasks} tasks, 2 worker processes): "
            f"{lithops_s:.1f} s ({lithops_rate:.1f} tasks/s); ours {rate:.0f} tasks/s = "
            f"{rate / lithops_rate:.0f}x Lithops' rate"
        )
    if hot:
        print(f"profile of one ds worker ({args.profile_tasks} tasks; ms per task, cumulative):")
        for where, ms in hot[:16]:
            print(f"  {ms:6.2f}  {where}")
    met = ours_s <= TARGET_FACTOR * xargs_s
    print(
        f"TARGET met={'yes' if met else 'no'} ours {ours_s / xargs_s:.1f}x xargs' time "
        f"(target <= {TARGET_FACTOR}x)"
    )
    bookkeeping = per_task - python_ms
    print(
        f"LIMIT starting and waiting for the child alone, from Python as our runner does: "
        f"{python_ms:.2f} ms per task and slot (xargs, in C, all included: "
        f"{xargs_s * args.workers / args.tasks * 1000:.2f} ms); ours is {ours_s / python_s:.1f}x "
        "that floor"
    )
    print(
        f"LIMIT our records alone (the records floor) cost {records_ms - python_ms:.2f} ms per "
        f"task and slot over the python floor; a worker keeping them and nothing else would "
        f"take {records_s / xargs_s:.2f}x xargs' time, before `ds run`'s fixed cost; with the "
        f"starts of 16 tasks written together, {batched_s / xargs_s:.2f}x (which the fixed "
        f"cost alone takes to {(batched_s + fixed) / xargs_s:.2f}x at {args.tasks:,} tasks), "
        "at the price of held tasks recorded as started before they start"
    )
    print(
        f"LIMIT what each task costs besides its child: {bookkeeping:.2f} ms per task and slot "
        "(the records floor's SQLite writes; the task log and its header; the memory limit, "
        "the OOM count and the usage of the child; the process-group record of a task that "
        "runs on; planning, the outputs' listing and emptying the scratch folder; see "
        "`profile` below), plus `ds run`'s fixed "
        f"cost ({fixed:.2f} s: start, setup, submit, start workers, report), "
        f"{fixed / (TARGET_FACTOR * xargs_s) * 100:.0f}% of the 1.5x budget "
        f"({TARGET_FACTOR * xargs_s:.2f} s) by itself; both fade as tasks get longer: with "
        f"{args.short_seconds * 1000:.0f} ms tasks ours took {short[0] / short[1]:.2f}x xargs' "
        f"time, and a 1-second task would spend {bookkeeping / 10:.2f}% of its time on the "
        "per-task part"
    )
    print(
        f"RESULT local_dispatch ours={ours_s:.2f} baseline={xargs_s:.2f} ratio={ratio:.2f} unit=s"
    )


if __name__ == "__main__":
    main()
