"""`backend = "slurm"` end to end on a real one-node Slurm cluster (scripts/slurm-local.sh,
MaxArraySize=5): `ds` as users run it on a login node, Slurm running the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from conftest import REPO, write_project
from distributed_something.backends.slurm.commands import parse_duration
from distributed_something.backends.slurm.slices import SliceQueue
from distributed_something.config.loader import load_config
from distributed_something.errors import BackendError, InputError, QueueGone
from distributed_something.interfaces.queue import QueueCounts
from testkit import FakeClock

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]
DS = [sys.executable, "-m", "distributed_something"]

# A task by its name: "flaky…" fails its first run, "poison…" every run, "slow…" runs for
# minutes, "once…" too but only the first time; the others sleep a little. Each run is
# written to the ledger file.
WORK = (
    "import sys, time, os\n"
    "out, name, ledger = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "with open(ledger, 'a') as f: f.write(name + '\\n')\n"
    "runs = open(ledger).read().split().count(name)\n"
    "if name.startswith('poison') or (name.startswith('flaky') and runs == 1):\n"
    "    print('bad input', name, file=sys.stderr); sys.exit(7)\n"
    "long = name.startswith('slow') or (name.startswith('once') and runs == 1)\n"
    "time.sleep(300 if long else 0.2)\n"
    "open(os.path.join(out, 'result.txt'), 'w').write('result of ' + name)\n"
)


def slurm_project(tmp_path: Path, names: list[str], **slurm: Any) -> Path:
    """A command-recipe project on the Slurm backend; its shared folder is in tmp_path."""
    ledger = tmp_path / "ledger.txt"
    argv = [sys.executable, "-c", WORK, "{output_dir}", "{name}", str(ledger)]
    return write_project(
        tmp_path / "proj",
        argv=argv,
        groups=[{"name": n} for n in names],
        extra={
            "backend": "slurm",
            "queue": {"visibility": 30, "job_retries": 2},
            "slurm": {"shared_dir": str(tmp_path / "shared"), "max_jobs": 2, **slurm},
        },
    )


def report_of(result: CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def our_jobs(shared: Path) -> list[str]:
    """The jobs of the project whose shared folder is ``shared`` that Slurm still holds
    (pending or running), as squeue lists them."""
    ids = [a["job_id"] for a in arrays_of(shared)]
    out = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%F %i %T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.split(" ")[0] in ids]


def arrays_of(shared: Path) -> list[dict[str, Any]]:
    arrays: list[dict[str, Any]] = json.loads((shared / "slurm" / "jobs.json").read_text())[
        "arrays"
    ]
    return arrays


def test_quickstart_runs_on_slurm_and_a_rerun_skips_what_is_done(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    folder = tmp_path / "quickstart"
    subprocess.run(["cp", "-r", str(REPO / "examples" / "quickstart"), str(folder)], check=True)
    subprocess.run(["rm", "-rf", str(folder / ".ds")], check=True)
    result = ds("run", str(folder), "--backend", "slurm", "--json", "--interval", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert report["backend"] == "slurm"
    assert report["counts"]["done"] == 6 and report["counts"]["total"] == 6
    shared = folder / ".ds" / "Quickstart" / "slurm"
    bucket = shared / "buckets" / "default"
    for task in report["tasks"]:
        assert (bucket / "results" / task["group"]["name"] / "summary.json").is_file()
    # The workers ran inside Slurm jobs: 6 tasks in 2 slices (tasks_per_job is 10, but the
    # example allows 2 workers at once), one array element each.
    (array,) = arrays_of(shared)
    assert len(array["slices"]) == 2
    logs = "".join(p.read_text() for p in (shared / "slurm" / "logs").glob("*.out"))
    assert logs.count("done in") == 6
    assert our_jobs(shared) == []
    again = ds("run", str(folder), "--backend", "slurm", "--json", "--interval", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert report_of(again)["counts"]["skipped"] == 6
    # skipped as done before any ran: no attempt claimed (the report once said 1)
    assert [t["attempts"] for t in report_of(again)["tasks"]] == [0] * 6
    status = ds("status", "--backend", "slurm", "--json", cwd=folder)
    assert status.returncode == 0, status.stderr


def test_retries_dead_letters_and_arrays_split_above_max_array_size(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    names = ["flaky-1", "poison-1", *(f"ok-{i}" for i in range(9))]
    proj = slurm_project(tmp_path, names, tasks_per_job=1)
    result = ds("run", str(proj), "--json", "--interval", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a dead task fails the run
    report = report_of(result)
    assert report["backend"] == "slurm"
    counts = report["counts"]
    assert (counts["done"], counts["dead"], counts["total"]) == (10, 1, 11)
    by_name = {t["group"]["name"]: t for t in report["tasks"]}
    assert by_name["flaky-1"]["outcome"] == "done" and by_name["flaky-1"]["attempts"] == 2
    assert by_name["poison-1"]["attempts"] == 2
    assert "exit" in by_name["poison-1"]["error"] or "7" in by_name["poison-1"]["error"]
    dead = ds("dead", "list", "--json", cwd=proj)
    assert dead.returncode == 0, dead.stderr
    assert [d["task_id"] for d in json.loads(dead.stdout)] == [by_name["poison-1"]["id"]]
    # 11 slices of one task: MaxArraySize is 5 here, so three arrays of 5, 5 and 1.
    arrays = arrays_of(tmp_path / "shared")
    assert [len(a["slices"]) for a in arrays[:3]] == [5, 5, 1]
    # Each task ran in a Slurm job of its own slice (the flaky one twice, in one job).
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert sorted(ledger) == sorted([*names, "flaky-1", "poison-1"])
    assert our_jobs(tmp_path / "shared") == []


def test_jobs_whose_workers_fail_as_they_start_are_not_submitted_without_end(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """A compute node where the worker cannot start (here: a scratch folder it cannot
    make) fails every job Slurm runs: `ds run` stops submitting after a few, with the cause
    and the job's log, instead of a new job for every tick. Fixed, `ds run` resumes."""
    proj = slurm_project(tmp_path, ["ok-1", "ok-2"], tasks_per_job=1)
    ds = [sys.executable, "-m", "distributed_something"]
    broken = {**os.environ, "DS_SLURM_SCRATCH": "/proc/no-scratch-here"}
    failed = subprocess.run(
        [*ds, "run", "--interval", "1"],
        cwd=proj,
        env=broken,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert failed.returncode == 3, failed.stderr
    assert "workers keep failing" in failed.stderr and "no-scratch-here" in failed.stderr
    submitted = sum(len(a["slices"]) for a in arrays_of(tmp_path / "shared"))
    assert submitted <= 8  # a few rounds (4 failures, at least), not one per tick
    assert not (tmp_path / "ledger.txt").exists()
    done = subprocess.run(
        [*ds, "run", "--json", "--interval", "1"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert report_of(done)["counts"]["done"] == 2
    assert sorted((tmp_path / "ledger.txt").read_text().split()) == ["ok-1", "ok-2"]
    assert our_jobs(tmp_path / "shared") == []


def test_cleanup_mid_run_cancels_every_job(slurm_cluster: str, tmp_path: Path, ds: Ds) -> None:
    proj = slurm_project(tmp_path, ["slow-1", "slow-2", "slow-3"], tasks_per_job=1)
    for step in (["setup"], ["submit", "job.json"], ["start-cluster"]):
        done = ds(*step, cwd=proj)
        assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        "RUNNING" in j for j in our_jobs(tmp_path / "shared")
    ):
        time.sleep(0.5)
    assert any("RUNNING" in j for j in our_jobs(tmp_path / "shared"))
    # wait for a task to start: its open attempt must be closed by the cleanup
    while time.monotonic() < deadline and not (tmp_path / "ledger.txt").exists():
        time.sleep(0.2)
    cleaned = ds("cleanup", cwd=proj)
    assert cleaned.returncode == 0, cleaned.stderr
    assert our_jobs(tmp_path / "shared") == []
    status = ds("status", "--json", cwd=proj)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)["counts"]
    assert counts["running"] == 0 and counts["pending"] == 3
    state = json.loads((proj / ".ds" / "T" / "state.json").read_text())
    assert state["cleaned_up"] and state["resources"]["slurm"]["jobs"] == []


def test_ctrl_c_on_ds_run_cancels_every_job(slurm_cluster: str, tmp_path: Path) -> None:
    proj = slurm_project(tmp_path, ["slow-1", "slow-2", "slow-3"], tasks_per_job=1)
    run = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", "run", str(proj), "--interval", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "ledger.txt").exists():
        time.sleep(0.2)
    assert any("RUNNING" in j for j in our_jobs(tmp_path / "shared"))
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode != 0 and "stopping workers" in stderr
    assert our_jobs(tmp_path / "shared") == []
    state = json.loads((proj / ".ds" / "T" / "state.json").read_text())
    assert state["resources"]["slurm"]["jobs"]  # what it submitted, recorded


def test_a_script_whose_work_scancel_cut_is_rerun_not_recorded_done(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """scancel signals every process of the job: a shell script that traps SIGTERM and goes
    on (or, racing the signal, one without `set -e`) loses its `sleep` and still exits 0.
    That run is handed back, not recorded done, and the task runs again to its end."""
    ledger = tmp_path / "ledger.txt"
    # The first run sleeps long enough for scancel to reach it mid-sleep on a loaded machine
    # (a signal arriving after a script's end is a stop the worker cannot tell from a cut,
    # and also hands the task back); the rerun, 3 s.
    script = (
        f"trap 'echo term >> {ledger}' TERM; first=30; [ -e {ledger} ] && first=3; "
        f"echo start >> {ledger}; sleep $first; echo end >> {ledger}"
    )
    proj = write_project(
        tmp_path / "proj",
        argv=["sh", "-c", script],
        groups=[{"name": "cut"}],
        extra={
            "backend": "slurm",
            "queue": {"visibility": 30, "job_retries": 2},
            "slurm": {"shared_dir": str(tmp_path / "shared"), "max_jobs": 1},
        },
    )
    run = subprocess.Popen(
        [*DS, "run", str(proj), "--json", "--interval", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ledger.exists():
        time.sleep(0.1)
    time.sleep(1)
    (array,) = arrays_of(tmp_path / "shared")
    subprocess.run(["scancel", array["job_id"]], check=True)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    (task,) = json.loads(out)["tasks"]
    assert task["outcome"] == "done" and task["attempts"] == 2, task
    # the cut run's script went on to its last line and exited 0; the rerun did all its work
    assert ledger.read_text().split() == ["start", "term", "end", "start", "end"]
    assert task["duration"] >= 3, task


def test_a_worker_killed_outright_loses_no_task(slurm_cluster: str, tmp_path: Path) -> None:
    """SIGKILL to a Slurm job's worker (as a node's OOM killer or a crash would): its open
    attempt is closed as lost, its task goes back and a new Slurm job runs it."""
    proj = slurm_project(tmp_path, ["once-1", "ok-1"], tasks_per_job=1)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed_something",
            "run",
            str(proj),
            "--json",
            "--interval",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = tmp_path / "ledger.txt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "once-1" not in (
        ledger.read_text() if ledger.exists() else ""
    ):
        time.sleep(0.2)
    (array,) = [a for a in arrays_of(tmp_path / "shared") if len(a["slices"]) == 2]
    queue = SliceQueue(tmp_path / "shared" / "queue", max_receive_count=2)
    (once,) = [sid for sid in array["slices"] if "once-1" in queue.messages_of(sid)[0]["body"]]
    # The worker holding once-1's slice (its own job's, or one that went on to it), as it
    # says in held/; its process killed as the kernel's OOM killer would: no word.
    (worker,) = [w for w in (queue.root / "held").iterdir() if w.read_text() == once]
    name = worker.name.encode()
    (pid,) = [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and name in _cmdline(proc)
    ]
    os.kill(pid, signal.SIGKILL)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    by_name = {t["group"]["name"]: t for t in json.loads(out)["tasks"]}
    assert by_name["once-1"]["outcome"] == "done" and by_name["once-1"]["attempts"] == 2
    lost = list((tmp_path / "shared").rglob("*.lost.json"))
    assert len(lost) == 1
    job = worker.name.removeprefix("slurm-")
    assert f"Slurm job {job} ended" in json.loads(lost[0].read_text())["error"]
    assert our_jobs(tmp_path / "shared") == []


def test_a_job_that_finished_its_slice_goes_on_to_the_next(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    """One Slurm job at a time, six slices of one task (two arrays: MaxArraySize is 5): the
    first job runs every task, since the others cannot start before it ends, and it ends
    only when no slice is left; the rest are cancelled or find nothing to do."""
    names = [f"ok-{i}" for i in range(6)]
    proj = slurm_project(tmp_path, names, tasks_per_job=1, max_jobs=1)
    result = ds("run", str(proj), "--json", "--interval", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert report["counts"]["done"] == 6
    arrays = arrays_of(tmp_path / "shared")
    assert [len(a["slices"]) for a in arrays] == [5, 1]
    attempts = [
        json.loads(p.read_text())
        for p in (tmp_path / "shared" / "buckets").rglob("attempts/*/*.json")
    ]
    assert len(attempts) == 6
    assert {a["worker"] for a in attempts} == {f"slurm-{arrays[0]['job_id']}_0"}
    assert sorted((tmp_path / "ledger.txt").read_text().split()) == sorted(names)
    assert our_jobs(tmp_path / "shared") == []


def _one_slow_task_running(tmp_path: Path, ds: Ds) -> tuple[Path, int]:
    """Start a run of one slow task, one per job, and wait for it to start; returns the
    project and the pid of the worker running it (found by the slice it holds)."""
    proj = slurm_project(tmp_path, ["slow-1"], tasks_per_job=1)
    for step in (["setup"], ["submit", "job.json"], ["start-cluster"]):
        assert ds(*step, cwd=proj).returncode == 0
    ledger = tmp_path / "ledger.txt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ledger.exists():
        time.sleep(0.2)
    (held,) = list((tmp_path / "shared" / "queue" / "held").iterdir())
    name = held.name.encode()
    (worker,) = [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and name in _cmdline(proc) and b"worker" in _cmdline(proc)
    ]
    return proj, worker


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, theirs, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text() if proc.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(proc.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return sorted(set(found))


def test_ds_status_shows_the_task_of_a_job_requeued_after_a_node_failure_pending(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    """A node dies under a running worker (nothing handed back, its attempt left open) and
    Slurm requeues the element: it is PENDING again (BeginTime), with the same id. ds sees
    an element pending whose worker said it held a slice: that worker is gone. `ds status`
    closes its attempt as lost and shows the task pending, not running until the lease runs
    out after the element runs again."""
    proj, worker = _one_slow_task_running(tmp_path, ds)
    stepd = int((Path("/proc") / str(worker) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    conf = Path(slurm_cluster)
    slurmd = int((conf.parent / "slurmd.pid").read_text())
    node = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format=%N"], capture_output=True, text=True
    ).stdout.split()[0]
    # The node dies: its slurmd and the job's processes end with no word to anyone.
    os.kill(slurmd, signal.SIGKILL)
    os.kill(stepd, signal.SIGSTOP)
    for pid in [worker, *_descendants(worker)]:
        os.kill(pid, signal.SIGKILL)
    try:
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=down", "reason=ds-test"], check=True
        )
        os.kill(stepd, signal.SIGKILL)
        (job,) = our_jobs(tmp_path / "shared")
        assert job.endswith("PENDING"), job  # requeued by Slurm
        status = json.loads(ds("status", "--json", cwd=proj).stdout)
    finally:
        subprocess.run(["/usr/sbin/slurmd", "-f", str(conf)], check=True)
    assert ds("cleanup", cwd=proj).returncode == 0
    assert (status["counts"]["running"], status["counts"]["pending"]) == (0, 1), status
    assert status["running_tasks"] == []
    (lost,) = list((tmp_path / "shared").rglob("*.lost.json"))
    assert "requeued" in json.loads(lost.read_text())["error"]


def test_a_task_killed_by_the_time_limit_is_reported_as_such(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    proj = slurm_project(tmp_path, ["slow-1", "ok-1"], time="1")
    toml = (proj / "ds.toml").read_text().replace("job_retries = 2", "job_retries = 1")
    (proj / "ds.toml").write_text(toml)
    # A 1-minute limit, and Slurm's own grace before the kill: minutes on a busy machine.
    result = ds("run", str(proj), "--json", "--interval", "1", cwd=tmp_path, timeout=480)
    assert result.returncode == 1, result.stderr
    by_name = {t["group"]["name"]: t for t in report_of(result)["tasks"]}
    assert by_name["ok-1"]["outcome"] == "done"
    slow = by_name["slow-1"]
    assert slow["outcome"] == "dead"
    assert slow["error"].startswith("killed by Slurm: TIMEOUT (time limit 1 min")
    shown = ds("dead", "show", slow["id"][:10], cwd=proj)
    assert "killed by Slurm: TIMEOUT" in shown.stdout + shown.stderr
    assert our_jobs(tmp_path / "shared") == []


def test_slurm_commands_see_no_job_values(slurm_cluster: str, tmp_path: Path, ds: Ds) -> None:
    """A job value full of shell syntax reaches the command as one argument, and the batch
    scripts hold none of it."""
    name = 'x\'; touch pwned; echo $(id) `id` "q"'
    proj = slurm_project(tmp_path, [name])
    result = ds("run", str(proj), "--json", "--interval", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ledger.txt").read_text().split("\n")[0] == name
    assert not any(p.name == "pwned" for p in tmp_path.rglob("pwned"))
    assert not (Path.cwd() / "pwned").exists()


# --- the slice queue and the config, without Slurm ---------------------------------------


def test_a_kill_is_blamed_on_the_attempt_it_ended_not_on_one_handed_back_at_a_requeue(
    tmp_path: Path,
) -> None:
    """An element requeued by an admin (`scontrol requeue`) keeps its worker's name: its
    first attempt was handed back at the requeue, and only the one the time limit then
    ended is this end's (each blamed one uses up a try)."""
    from types import SimpleNamespace

    from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
    from distributed_something.backends.local.storage import FolderStorage
    from distributed_something.backends.slurm.compute import SlurmCompute
    from distributed_something.records import Attempt, RunRecords

    storage = LocalBucket(FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite"))
    records = RunRecords(storage, "T", "r1")
    worker = "slurm-5_0"
    for number, (who, started) in enumerate(
        [(worker, 100.0), ("slurm-6_1", 150.0), (worker, 200.0)], start=1
    ):
        records.close_attempt(
            Attempt("t1", number, f"m{number}", who, started, started + 5, "released")
        )
    running = Attempt("t2", 1, "m9", worker, 210.0)
    records.open_attempt(running)
    compute = SimpleNamespace(
        queue=SimpleNamespace(messages_of=lambda sid: [{"task_id": "t1"}, {"task_id": "t2"}]),
        storage=storage,
    )

    found = SlurmCompute._attempts_of(compute, records, "s1", worker, True)  # type: ignore[arg-type]

    assert sorted((a.task_id, a.attempt) for a in found) == [("t1", 3), ("t2", 1)]


def test_slice_queue_leases_retries_dead_letters_and_reclaims(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    login = SliceQueue(tmp_path, max_receive_count=2, tasks_per_slice=2, clock=clock)
    assert login.send_batch([("a", "A"), ("b", "B"), ("c", "C")]) == 3
    first, second = login.slice_ids()
    assert login.counts() == QueueCounts(3, 0, 0)
    worker = SliceQueue(tmp_path, max_receive_count=2, slice_id=first, clock=clock)
    a, b = worker.receive(5, 30)
    assert (a.task_id, b.task_id, a.receive_count) == ("a", "b", 1)
    # one owner per slice: a second worker on it reads it empty and drained
    other = SliceQueue(tmp_path, max_receive_count=2, slice_id=first, clock=clock)
    assert other.receive(1, 30) == [] and other.counts().drained
    assert login.counts() == QueueCounts(1, 2, 0)
    assert worker.extend_lease(a, 60)
    worker.delete(a)
    worker.release(b, 10, "exit code 7")
    assert worker.counts() == QueueCounts(0, 1, 0)
    clock.advance(10)
    (b2,) = worker.receive(1, 30)
    assert b2.receive_count == 2 and b2.message_id == b.message_id
    assert not worker.extend_lease(b, 30)  # the first receive's handle is stale
    worker.release(b2, 0)
    assert worker.receive(1, 30) == []  # received twice already: dead-lettered
    assert worker.counts().drained
    assert [(d.task_id, d.error) for d in login.list_dead()] == [("b", "exit code 7")]
    # while the worker lives its slice cannot be reclaimed; once it is gone it can
    assert login.reclaim(first, "gone") is None
    assert not login.is_free(first) and login.is_free(second)
    worker.close()
    assert login.is_free(first)
    assert login.reclaim(first, "gone") == []
    assert login.redrive(["b"]) == 1
    assert login.list_dead() == [] and login.counts() == QueueCounts(2, 0, 0)
    # a job killed while holding a task: made visible again with Slurm's reason, or dead
    # when that was its last receive
    killed = SliceQueue(tmp_path, max_receive_count=1, slice_id=second, clock=clock)
    assert [m.task_id for m in killed.receive(1, 30)] == ["c"]
    killed.close()
    reclaimer = SliceQueue(tmp_path, max_receive_count=1, clock=clock)
    killed = {"c": "killed by Slurm: TIMEOUT"}
    (back,) = reclaimer.reclaim(second, "its job ended", killed, frozenset({"c"})) or []
    assert back.task_id == "c" and back.dead
    assert [d.error for d in reclaimer.list_dead()] == ["killed by Slurm: TIMEOUT"]
    # a copy the stopped worker sent again is dead-lettered too, once that try was the last
    reclaimer.send_batch([("c", "C")])
    assert reclaimer.bury_copies(killed) == 1
    assert [d.task_id for d in reclaimer.list_dead()] == ["c", "c"]
    assert reclaimer.drop_dead(["c"]) == 2 and reclaimer.counts().dead == 0
    reclaimer.send_batch([("c", "C")])
    reclaimer.bury_copies(killed)
    # cleanup drops what is unfinished; dead letters stay
    reclaimer.purge()
    assert reclaimer.counts() == QueueCounts(0, 0, 1)
    assert reclaimer.drop_dead(["c"]) == 1 and reclaimer.counts() == QueueCounts(0, 0, 0)


def test_a_worker_goes_on_to_slices_no_one_holds_while_it_may(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    login = SliceQueue(tmp_path, max_receive_count=2, tasks_per_slice=1, clock=clock)
    login.send_batch([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")])
    first, second, third, fourth = login.slice_ids()
    asked: list[float] = []

    def allow(longest: float) -> bool:
        asked.append(longest)
        return len(asked) <= 1  # one slice more, then no more

    held = tmp_path / "held"
    a = SliceQueue(
        tmp_path, max_receive_count=2, slice_id=first, clock=clock, worker="w-a", take_more=allow
    )
    (task,) = a.receive(5, 30)
    assert task.task_id == "a" and (held / "w-a").read_text() == first
    # another worker holds the third slice: the first goes on to the second, then the fourth
    c = SliceQueue(tmp_path, max_receive_count=2, slice_id=third, clock=clock, worker="w-c")
    assert [m.task_id for m in c.receive(1, 30)] == ["c"]
    a.delete(task)
    (task,) = a.receive(5, 30)
    assert task.task_id == "b" and (held / "w-a").read_text() == second
    assert login.is_free(first) and not login.is_free(second)
    assert login.held_by("w-a") == second and login.held_by("nobody") is None
    a.delete(task)
    assert a.receive(5, 30) == []  # take_more said no: drained, the worker exits
    assert a.counts().drained and len(asked) == 2
    assert login.counts() == QueueCounts(1, 1, 0)  # c leased, d untouched
    # a worker refused its own slice (another holds it) goes on to one no one holds
    late = SliceQueue(
        tmp_path,
        max_receive_count=2,
        slice_id=third,
        clock=clock,
        worker="w-late",
        take_more=lambda longest: True,
    )
    assert [m.task_id for m in late.receive(5, 30)] == ["d"]
    assert login.held_by("w-late") == fourth
    # without take_more (a worker not in a Slurm job) a refused slice stays refused
    other = SliceQueue(tmp_path, max_receive_count=2, slice_id=third, clock=clock, worker="w-o")
    assert other.receive(5, 30) == [] and login.held_by("w-o") == ""
    login.forget_worker("w-o")
    assert login.held_by("w-o") is None


def test_a_small_run_is_spread_over_the_jobs_it_may_run(tmp_path: Path) -> None:
    queue = SliceQueue(tmp_path, max_receive_count=2, tasks_per_slice=10, spread=4)
    queue.send_batch([(str(i), "{}") for i in range(6)])  # 6 tasks, 4 jobs: slices of 2
    assert [len(queue.messages_of(s)) for s in queue.slice_ids()] == [2, 2, 2]
    big = SliceQueue(tmp_path / "big", max_receive_count=2, tasks_per_slice=10, spread=4)
    big.send_batch([(str(i), "{}") for i in range(100)])  # enough for full slices
    assert [len(big.messages_of(s)) for s in big.slice_ids()] == [10] * 10


def test_slurm_durations_are_read_as_squeue_writes_them() -> None:
    assert parse_duration("UNLIMITED") is None and parse_duration("NOT_SET") is None
    assert parse_duration("59") == 59
    assert parse_duration("4:05") == 245
    assert parse_duration("1:00:00") == 3600
    assert parse_duration("2-03:04:05") == 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert parse_duration("INVALID") == 0 and parse_duration("") == 0


def test_a_worker_without_a_slice_stops_at_once(tmp_path: Path) -> None:
    queue = SliceQueue(tmp_path, max_receive_count=2)
    with pytest.raises(QueueGone, match="ds start-cluster"):
        queue.receive(1, 30)


def test_legacy_config_on_slurm_caps_jobs_at_machines_times_cores(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        "APP_NAME = 'Legacy'\nCLUSTER_MACHINES = 3\nTASKS_PER_MACHINE = 4\nDOCKER_CORES = 2\n"
        "SLURM_PARTITION = 'short'\nSLURM_TIME = '2:00:00'\n"
    )
    config = load_config(path, backend="slurm")
    assert config.backend == "slurm"
    assert config.slurm.max_jobs == 6
    assert (config.slurm.partition, config.slurm.time) == ("short", "2:00:00")
    assert load_config(path).backend == "aws"
    path.write_text("APP_NAME = 'Legacy'\nSLURM_MAX_JOBS = 50\n")
    assert load_config(path, backend="slurm").slurm.max_jobs == 50


def test_a_wrong_slurm_value_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "ds.toml"
    path.write_text('app_name = "T"\nbackend = "slurm"\n[slurm]\ntime = "1 hour"\n')
    with pytest.raises(InputError, match=r"slurm\.time"):
        load_config(path)


def test_a_task_sent_again_fresh_after_its_job_was_killed_counts_every_run(
    tmp_path: Path,
) -> None:
    """A worker stopped by Slurm (node failure, scancel, requeue) at the task's last allowed
    receive sends it again as a fresh message, whose receive count starts again at 1: the
    report's attempts of the task done on that message are the runs its records show (2),
    not the done marker's receive count (1)."""
    from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
    from distributed_something.backends.local.storage import FolderStorage
    from distributed_something.records import Attempt, DoneMarker, ManifestEntry, RunRecords
    from distributed_something.report.build import build_report
    from distributed_something.state import RunState

    storage = LocalBucket(FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite"))
    records = RunRecords(storage, "T", "r1")
    records.write_manifest("a", [ManifestEntry("t1", {"n": 1})])
    # Handed back when Slurm stopped its job (receive 1 of 1), then run on the fresh copy.
    records.close_attempt(
        Attempt("t1", 1, "m1", "slurm-5_0", 100.0, 105.0, "released", cause="interrupted")
    )
    done = Attempt("t1", 1, "m2", "slurm-7_0", 110.0)
    records.open_attempt(done)
    done.outcome, done.ended_at = "done", 122.0
    marker = DoneMarker("t1", 1, 12.0, ["out/t1.txt"], 110.0, 122.0, "slurm-7_0", "out/t1")
    records.write(records.closing(done, marker))
    state = RunState(app_name="T", run_id="r1", backend="slurm", created_at=90.0)

    report = build_report(RunRecords(storage, "T", "r1"), state)

    (task,) = report.tasks
    assert (task.outcome, task.attempts) == ("done", 2)


def test_status_says_why_slurm_jobs_wait_unless_it_is_ds_own_pacing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drained node or a held job keeps elements pending for ever: `ds status`, `ds run`
    and `ds monitor` say squeue's reason (as they say ECS's on AWS) instead of showing
    workers 1/4 and nothing else. Waiting behind the array's own throttle is not news."""
    from types import SimpleNamespace

    from distributed_something.backends.slurm import commands
    from distributed_something.backends.slurm.compute import SlurmCompute

    shared = tmp_path / "shared"
    (shared / "slurm").mkdir(parents=True)
    array = {"job_id": "12", "slices": ["a", "b", "c", "d"], "run_id": "r", "submitted_at": 0}
    (shared / "slurm" / "jobs.json").write_text(json.dumps({"arrays": [array]}))
    drained = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority"
    answers = {
        "stuck": f"12|0|RUNNING|None\n12|1|PENDING|JobArrayTaskLimit\n12|2|PENDING|{drained}\n"
        "12|3|PENDING|JobHeldAdmin\n99|0|PENDING|JobHeldUser\n",
        "paced": "12|0|RUNNING|None\n12|1|PENDING|JobArrayTaskLimit\n12|2|PENDING|Dependency\n",
    }
    asked: list[str] = []
    monkeypatch.setattr(commands, "run", lambda argv, **kw: answers[asked[-1]])
    project = SimpleNamespace(config=SimpleNamespace(app_name="T"))

    asked.append("stuck")
    stuck = SlurmCompute(project, None, None, shared).status()  # type: ignore[arg-type]
    asked.append("paced")
    paced = SlurmCompute(project, None, None, shared).status()  # type: ignore[arg-type]

    assert (stuck.desired, stuck.running) == (4, 1)
    assert stuck.waiting == f"Slurm jobs pending (JobHeldAdmin; {drained})"
    assert (paced.desired, paced.running, paced.waiting) == (3, 1, "")


def test_ds_status_alone_shows_the_task_of_a_killed_worker_pending_not_running(
    slurm_cluster: str, tmp_path: Path, ds: Ds
) -> None:
    """`ds start-cluster`, then log off: no monitor runs. A worker killed outright (its
    Slurm job ends FAILED, nothing handed back) leaves its task's attempt open; `ds status`
    settles the job that ended, so it shows the task pending (nothing runs it), not running
    for ever beside "no workers are running"."""
    proj, pid = _one_slow_task_running(tmp_path, ds)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and our_jobs(tmp_path / "shared"):
        time.sleep(0.2)
    status = json.loads(ds("status", "--json", cwd=proj).stdout)
    assert ds("cleanup", cwd=proj).returncode == 0
    assert (status["counts"]["running"], status["counts"]["pending"]) == (0, 1), status
    assert status["running_tasks"] == []


@pytest.mark.parametrize("done", [0, 3])
def test_ds_status_says_slurm_reasons_only_while_tasks_are_left(done: int) -> None:
    """squeue's reason is said under the table while tasks are left, without ECS's fix;
    once every task is done (elements still pending on a drained node are no news), not."""
    from distributed_something.backends import backend_kind
    from distributed_something.cli.commands import _status_frame
    from distributed_something.monitor.progress import from_counts
    from distributed_something.usecases.run_info import Status

    counts = dict.fromkeys(("skipped", "running", "failed", "dead", "duplicates"), 0)
    counts.update(done=done, pending=3 - done, total=3)
    why = "Slurm jobs pending (ReqNodeNotAvail, UnavailableNodes:n1)"
    st = Status("App", "r1", True, from_counts(counts, 0), 2, 0, 10.0, None, workers_waiting=why)
    frame = _status_frame(st, backend_kind("slurm"))
    text = " ".join(str(getattr(part, "plain", "")) for part in frame)
    assert (f"workers not started: {why}" in text) == (done < 3)
    assert "docs/aws.md" not in text and "run was interrupted" not in text


def test_a_slice_sent_again_waits_for_room_under_max_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task handed back at its last receive (scancel, requeue) is sent again in a new
    slice; its new array's own ``%N`` cannot see the arrays already running, so it was
    submitted at once and max_jobs = 1 ran 2 jobs. It now waits while the run's arrays fill
    max_jobs (their running jobs go on to it), and is submitted once there is room."""
    from types import SimpleNamespace

    from distributed_something.backends.slurm import commands
    from distributed_something.backends.slurm.compute import SlurmCompute

    shared = tmp_path / "shared"
    (shared / "slurm").mkdir(parents=True)
    array = {
        "job_id": "12",
        "slices": ["a", "b"],
        "run_id": "r",
        "submitted_at": 0,
        "held_files": True,
        "throttle": 1,
    }
    (shared / "slurm" / "jobs.json").write_text(json.dumps({"arrays": [array]}))
    squeue: dict[tuple[str, int], tuple[str, str]] = {
        ("12", 0): ("RUNNING", "None"),
        ("12", 1): ("PENDING", "JobArrayTaskLimit"),
    }
    submitted: list[commands.ArrayRequest] = []
    monkeypatch.setattr(commands, "squeue_elements", lambda name, ids: dict(squeue))
    monkeypatch.setattr(commands, "end_states", lambda array_id, wanted, jobcomp: {})
    monkeypatch.setattr(commands, "max_array_size", lambda: 5)
    monkeypatch.setattr(commands, "submit_array", lambda request: submitted.append(request) or "13")
    project = SimpleNamespace(
        config=SimpleNamespace(app_name="T", slurm=SimpleNamespace(max_jobs=1)),
        base_dir=tmp_path,
    )
    queue = SimpleNamespace(
        slices_with_work=lambda: ["b", "c"],  # c: the task sent again
        is_free=lambda sid: True,
        held_by=lambda worker: None,
        held_workers=lambda: set(),
        forget_worker=lambda worker: None,
    )
    compute = SlurmCompute(project, queue, None, shared)  # type: ignore[arg-type]
    monkeypatch.setattr(compute, "_run_id", lambda: "r")
    monkeypatch.setattr(compute, "_write_script", lambda slices, run_id: tmp_path / "s.py")
    monkeypatch.setattr(compute, "_options", lambda: [])
    compute._jobcomp = None

    compute.scale(1)
    assert submitted == []  # 12_0 runs, 12_1 will: max_jobs is used up

    del squeue[("12", 0)]  # 12_0 ended; 12_1 is about to start
    compute.scale(1)
    assert submitted == []

    squeue.clear()  # the array ended (b unfinished here): room for one job at a time
    compute.scale(1)
    assert [(r.size, r.throttle) for r in submitted] == [(2, 1)]


def test_a_busy_controller_is_asked_again_and_sbatch_never_is(tmp_path: Path) -> None:
    """ "Socket timed out on send/recv operation" is what a busy slurmctld answers now and
    then: one such answer ended `ds run`'s monitor (exit 3) and `ds status`. Commands that
    change nothing are asked again; sbatch never is (one that timed out may have submitted
    its job); other errors are not retried, and name Slurm's reason from any of the last
    lines."""
    from distributed_something.backends.slurm import commands

    tries = tmp_path / "tries"
    fake = tmp_path / "fake"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo x >> {tries}\n"
        f'if [ "$(wc -l < {tries})" -le "$1" ]; then\n'
        '  echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1\n'
        "fi\n"
        "echo answered\n"
    )
    fake.chmod(0o755)
    pauses: list[float] = []
    for name in ("squeue", "sbatch"):
        (tmp_path / name).symlink_to(fake)

    def ask(name: str, failures: int) -> str:
        tries.unlink(missing_ok=True)
        return commands.run([str(tmp_path / name), str(failures)], sleep=pauses.append)

    assert ask("squeue", 2) == "answered\n" and pauses == [1.0, 3.0]
    with pytest.raises(BackendError, match="Socket timed out"):
        ask("squeue", 9)  # still failing after every pause
    assert len(tries.read_text().split()) == 1 + len(commands.RETRY_PAUSES)
    pauses.clear()
    with pytest.raises(BackendError, match="Socket timed out"):
        ask("sbatch", 1)
    assert pauses == [] and len(tries.read_text().split()) == 1
    refusal = "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2\n'
        f'echo "{refusal}" >&2\n'
        "exit 1\n"
    )
    with pytest.raises(BackendError) as refused:
        commands.run([str(tmp_path / "sbatch")])
    assert "QOSMaxSubmitJobPerUserLimit" in str(refused.value)
    assert "Job violates accounting/QOS policy" in str(refused.value)


def test_an_sbatch_that_failed_after_submitting_is_found_by_its_comment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch's answer timed out, but the controller had taken the array: it ran untracked
    (a second array was submitted for the same slices) and cleanup left it queued. Each
    submission carries a comment of its own, looked for after a failure."""
    from distributed_something.backends.slurm import commands

    said = tmp_path / "submitted"
    for name, text in {
        "sbatch": (
            f"[ -e {tmp_path}/takes ] && "
            f'for a in "$@"; do case "$a" in --comment=*) echo "77|${{a#--comment=}}" > {said};; '
            "esac; done\n"
            'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv '
            'operation" >&2\nexit 1\n'
        ),
        "squeue": f"cat {said} 2>/dev/null; echo '12|ds:someone-else'\n",
    }.items():
        (tmp_path / name).write_text("#!/bin/sh\n" + text)
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(commands, "RETRY_PAUSES", ())
    request = commands.ArrayRequest(tmp_path / "s.py", "ds-T", 3, 1, "o", tmp_path)

    (tmp_path / "takes").touch()  # the controller takes the array, the answer is lost
    assert commands.submit_array(request) == "77"
    assert said.read_text().startswith("77|ds:")
    said.unlink()
    (tmp_path / "takes").unlink()  # nothing taken: nothing to find, the error stands
    with pytest.raises(BackendError, match="Socket timed out"):
        commands.submit_array(request)


def test_an_end_sacct_does_not_know_yet_is_asked_of_the_controller_then_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slurmdbd records a job's end late: sacct says RUNNING for a while after the job left
    squeue. Taken as its end, a TIMEOUT was never seen (the try not used up, the task run
    again at every time limit, for ever). Only an end state counts: the controller is asked,
    and an element nobody knows the end of yet is settled at a later tick, or as UNKNOWN
    once `END_STATE_WAIT_SECONDS` passed."""
    import time as clock
    from types import SimpleNamespace

    from distributed_something.backends.slurm import commands, compute
    from distributed_something.backends.slurm.compute import SlurmCompute

    answers = {
        "sacct": "12_0|RUNNING|00:01:00\n12_1|COMPLETED|00:01:00\n",
        "scontrol": "JobId=13 ArrayJobId=12 ArrayTaskId=0 JobState=TIMEOUT TimeLimit=00:01:00\n",
    }
    monkeypatch.setattr(commands, "run", lambda argv, **kw: answers[argv[0]])
    monkeypatch.setattr(commands, "_accounting_disabled", False)
    ends = commands.end_states("12", [0, 1], None)
    assert ends == {
        0: commands.EndState("TIMEOUT", "00:01:00"),
        1: commands.EndState("COMPLETED", "00:01:00"),
    }
    answers["scontrol"] = "JobId=13 ArrayJobId=12 ArrayTaskId=0 JobState=COMPLETING\n"
    assert commands.end_states("12", [0, 1], None).keys() == {1}

    shared = tmp_path / "shared"
    (shared / "slurm").mkdir(parents=True)
    array = {"job_id": "12", "slices": [""], "run_id": "r", "submitted_at": 0}
    (shared / "slurm" / "jobs.json").write_text(json.dumps({"arrays": [array]}))
    monkeypatch.setattr(commands, "squeue_elements", lambda name, ids: {})
    monkeypatch.setattr(commands, "end_states", lambda array_id, wanted, jobcomp: {})
    project = SimpleNamespace(config=SimpleNamespace(app_name="T"), base_dir=tmp_path)
    queue = SimpleNamespace(held_by=lambda worker: None, forget_worker=lambda worker: None)
    slurm = SlurmCompute(project, queue, None, shared)  # type: ignore[arg-type]
    slurm._jobcomp = None

    def settled() -> list[int]:
        return [
            int(i)
            for i in json.loads((shared / "slurm" / "jobs.json").read_text())["arrays"][0][
                "settled"
            ]
        ]

    slurm.housekeeping()
    assert settled() == []  # not known yet: waited for
    later = clock.time() + compute.END_STATE_WAIT_SECONDS + 1
    monkeypatch.setattr(compute.time, "time", lambda: later)
    slurm.housekeeping()
    assert settled() == [0]  # nobody will know: settled as UNKNOWN


@pytest.mark.parametrize("live_holder", [False, True])
def test_a_requeued_element_s_worker_is_settled_while_slurm_keeps_it_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_holder: bool
) -> None:
    """An element pending in squeue whose worker said in held/ that it held a slice was
    requeued (node failure): what its worker left is repaired at once, attempts it started
    before squeue was read closed as lost, while one started since (the element ran again,
    under the same name) is left alone, and the element is not settled (it runs again).
    A process still holding the slice's lock means nothing is touched."""
    from types import SimpleNamespace

    from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
    from distributed_something.backends.local.storage import FolderStorage
    from distributed_something.backends.slurm import commands
    from distributed_something.backends.slurm.compute import SlurmCompute
    from distributed_something.records import Attempt, RunRecords

    shared = tmp_path / "shared"
    (shared / "slurm").mkdir(parents=True)
    array = {"job_id": "12", "slices": ["a"], "run_id": "r", "submitted_at": 0}
    (shared / "slurm" / "jobs.json").write_text(
        json.dumps({"arrays": [array | {"held_files": True}]})
    )
    monkeypatch.setattr(
        commands, "squeue_elements", lambda name, ids: {("12", 0): ("PENDING", "BeginTime")}
    )
    storage = LocalBucket(FolderStorage(tmp_path / "b"), SqliteObjects(tmp_path / "r.sqlite"))
    records = RunRecords(storage, "T", "r")
    now = time.time()
    records.open_attempt(Attempt("t1", 1, "m1", "slurm-12_0", now - 100))  # the dead worker's
    records.open_attempt(Attempt("t2", 1, "m2", "slurm-12_0", now + 100))  # since: a new one
    reclaimed: list[str] = []
    forgotten: list[str] = []
    queue = SimpleNamespace(
        held_workers=lambda: {"slurm-12_0"},
        held_by=lambda worker: "a",
        messages_of=lambda sid: [{"task_id": "t1"}, {"task_id": "t2"}],
        reclaim=lambda sid, error: None if live_holder else reclaimed.append(error) or [],
        forget_worker=forgotten.append,
    )
    project = SimpleNamespace(config=SimpleNamespace(app_name="T"), base_dir=tmp_path)
    compute = SlurmCompute(project, queue, storage, shared)  # type: ignore[arg-type]

    compute.settle_ended()  # as `ds status` does

    outcomes = {t: [k.outcome for k in records.attempt_keys(t)] for t in ("t1", "t2")}
    if live_holder:
        assert outcomes == {"t1": ["running"], "t2": ["running"]} and forgotten == []
        return
    assert outcomes == {"t1": ["lost"], "t2": ["running"]}
    assert forgotten == ["slurm-12_0"]
    (error,) = reclaimed
    assert "12_0 was requeued" in error and "BeginTime" in error
    saved = json.loads((shared / "slurm" / "jobs.json").read_text())["arrays"][0]
    assert saved.get("settled", []) == []  # Slurm runs it again; it ends later


def test_every_state_squeue_lists_is_a_live_element(monkeypatch: pytest.MonkeyPatch) -> None:
    # squeue lists only jobs that have not ended; an element in a state ds did not know
    # (stopped by scontrol, held after a special exit, staging out) was taken for ended and
    # its slice repaired under a live job.
    from distributed_something.backends.slurm import commands

    said = "".join(
        f"12|{i}|{state}|None\n"
        for i, state in enumerate(["RUNNING", "STOPPED", "SPECIAL_EXIT", "STAGE_OUT", "SIGNALING"])
    )
    monkeypatch.setattr(commands, "run", lambda argv, **kw: said)
    live = commands.squeue_elements("ds-T", ["12"])
    assert sorted(index for _, index in live) == [0, 1, 2, 3, 4]


def test_a_job_without_time_for_one_more_task_leaves_it_for_the_next_job(
    tmp_path: Path,
) -> None:
    # 8 tasks of 25 s in a job of 60 s: the third started with 10 s left and was cut by the
    # time limit (TIMEOUT: a try used for a task that fits any job). A worker now takes one
    # more task only while its job has the time for one as long as the longest it ran;
    # then its slice reads drained (the worker exits) and the tasks wait for the next job.
    import time as clock_module

    from distributed_something.backends.slurm.compute import TimeLeft

    login = SliceQueue(tmp_path, max_receive_count=2, tasks_per_slice=3)
    login.send_batch([("a", "A"), ("b", "B"), ("c", "C")])
    (sid,) = login.slice_ids()
    asked: list[float] = []

    def time_for(longest: float) -> bool:
        asked.append(longest)
        return len(asked) < 2  # time for the second task, not for the third

    worker = SliceQueue(tmp_path, max_receive_count=2, slice_id=sid, time_for=time_for)
    (first,) = worker.receive(1, 30)  # nothing ran yet: nothing to judge by
    assert asked == []
    clock_module.sleep(0.05)
    worker.delete(first)
    (second,) = worker.receive(1, 30)
    assert len(asked) == 1 and asked[0] >= 0.05  # judged by the task that ran
    worker.delete(second)
    assert worker.receive(1, 30) == [] and worker.counts().drained
    assert login.counts() == QueueCounts(1, 0, 0)  # the third waits, untouched

    limit = TimeLeft("1")
    limit._read, limit._ends_at = True, clock_module.monotonic() + 60
    assert limit.covers(25) and not limit.covers(50)  # 25 + 10 s of margin; 50 + 12.5
    unlimited = TimeLeft("2")
    unlimited._read = True
    assert unlimited.covers(10_000)


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (
            "MaxArraySize            = 100001\nSchedulerParameters     = max_array_tasks=1000\n",
            1000,
        ),
        ("MaxArraySize = 500\nSchedulerParameters = bf_continue,max_array_tasks=9000\n", 500),
        ("MaxArraySize = 500\nSchedulerParameters = (null)\n", 500),
        ("SchedulerParameters = bf_max_job_array_resv=20\n", 1001),
    ],
)
def test_arrays_are_cut_at_the_smaller_of_max_array_size_and_max_array_tasks(
    monkeypatch: pytest.MonkeyPatch, config: str, size: int
) -> None:
    from distributed_something.backends.slurm import commands

    monkeypatch.setattr(commands, "run", lambda argv, **kw: config)
    assert commands.max_array_size() == size
