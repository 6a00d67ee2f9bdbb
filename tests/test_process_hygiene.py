"""Process hygiene: nothing a task started outlives it, even when its worker is SIGKILLed.

The decisions (`judge`) are tested as pure functions; everything else with real processes:
groups started here, a real `ds worker` killed mid-task, a real `ds cleanup`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import write_project
from distributed_something.backends.local.compute import LocalCompute
from distributed_something.usecases import lifecycle
from distributed_something.usecases.project import open_project
from distributed_something.worker.procgroups import (
    TOKEN_ENV,
    GroupRecord,
    GroupRecorder,
    Machine,
    ProcInfo,
    Seen,
    after_death,
    judge,
    parse_stat,
    proc_info,
    reap_dead_workers,
    record_path,
    this_machine,
    workdir_stem,
)
from testkit import dead_worker, read_pid, record_for, running, wait_for, write_record

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process records need Linux's /proc"
)

HERE = Machine(host="box", boot_id="boot-1", pid_ns="pid:[1]")
RECORD = GroupRecord(
    host="box",
    boot_id="boot-1",
    pid_ns="pid:[1]",
    worker_pid=100,
    worker_start=5000,
    pgid=200,
    leader_start=6000,
)


def alive(start: int, pgid: int = 0) -> ProcInfo:
    return ProcInfo(start=start, state="S", pgid=pgid)


# --- the pure decision ------------------------------------------------------------------------


def test_a_live_worker_is_left_alone() -> None:
    verdict = judge(RECORD, Seen(HERE, worker=alive(5000), leader=alive(6000, 200)))
    assert not (verdict.kill_group or verdict.remove_scratch or verdict.forget)


def test_a_dead_workers_group_is_killed_when_its_leader_is_the_recorded_one() -> None:
    verdict = judge(RECORD, Seen(HERE, worker=None, leader=alive(6000, 200)))
    assert verdict.kill_group and verdict.remove_scratch and verdict.forget


def test_pid_reuse_guard_a_leader_with_another_start_time_is_not_killed() -> None:
    # The recorded group is gone and its number now leads someone else's group.
    verdict = judge(RECORD, Seen(HERE, worker=None, leader=alive(6001, 200)))
    assert not verdict.kill_group
    assert verdict.forget and verdict.remove_scratch


def test_pid_reuse_guard_a_leader_now_in_another_group_is_not_killed() -> None:
    verdict = judge(RECORD, Seen(HERE, worker=None, leader=alive(6000, 999)))
    assert not verdict.kill_group


def test_a_zombie_worker_is_dead_and_a_reused_worker_pid_keeps_its_folders() -> None:
    zombie = ProcInfo(start=5000, state="Z", pgid=100)
    verdict = judge(RECORD, Seen(HERE, worker=zombie, leader=alive(6000, 200)))
    assert verdict.kill_group and verdict.remove_scratch and verdict.forget
    # Another process has the pid now: maybe a new worker, using the same folder names.
    verdict = judge(RECORD, Seen(HERE, worker=alive(7000), leader=alive(6000, 200)))
    assert verdict.kill_group and verdict.forget and not verdict.remove_scratch


def test_a_group_whose_leader_is_gone_is_killed_only_if_no_member_is_older() -> None:
    orphans = Seen(HERE, worker=None, leader=None, member_starts=(6000, 6500))
    assert judge(RECORD, orphans).kill_group
    reused = Seen(HERE, worker=None, leader=None, member_starts=(6500, 5999))
    assert not judge(RECORD, reused).kill_group
    empty = Seen(HERE, worker=None, leader=None, member_starts=())
    assert not judge(RECORD, empty).kill_group and judge(RECORD, empty).forget


def test_records_of_other_machines_are_left_alone_and_a_reboot_makes_them_stale() -> None:
    elsewhere = Machine(host="other", boot_id="boot-2", pid_ns="pid:[1]")
    verdict = judge(RECORD, Seen(elsewhere, worker=None, leader=alive(6000, 200)))
    assert not (verdict.kill_group or verdict.remove_scratch or verdict.forget)
    container = Machine(host="box", boot_id="boot-1", pid_ns="pid:[2]")
    verdict = judge(RECORD, Seen(container, worker=None, leader=alive(6000, 200)))
    assert not (verdict.kill_group or verdict.remove_scratch or verdict.forget)
    rebooted = Machine(host="box", boot_id="boot-2", pid_ns="pid:[1]")
    verdict = judge(RECORD, Seen(rebooted, worker=None, leader=alive(6000, 200)))
    assert not verdict.kill_group and verdict.remove_scratch and verdict.forget
    # Same pid and start after the reboot: another process (maybe a worker using the folders).
    verdict = judge(RECORD, Seen(rebooted, worker=alive(5000), leader=alive(6000, 200)))
    assert not verdict.kill_group and not verdict.remove_scratch and verdict.forget


def test_group_numbers_0_and_1_are_never_killed() -> None:
    # killpg(0) would be the reaper's own group; 1 is init's.
    for pgid in (0, 1):
        record = replace(RECORD, pgid=pgid)
        assert not judge(record, Seen(HERE, worker=None, leader=alive(6000, pgid))).kill_group


def test_a_record_between_tasks_kills_nothing() -> None:
    idle = GroupRecord("box", "boot-1", "pid:[1]", worker_pid=100, worker_start=5000)
    assert GroupRecord.from_json(idle.to_json()) == idle
    verdict = judge(idle, Seen(HERE, worker=None))
    assert not verdict.kill_group and verdict.forget and verdict.remove_scratch


def test_a_dead_workers_record_holding_a_task_is_left_to_its_live_watchdog() -> None:
    """Its watchdog settles what the worker held (worker/settle.py) from the record: a
    reaper that got there first (the monitor woken by the worker's exit, a starting worker)
    kills the task's group as it always did but leaves the record and the scratch folder,
    unless that watchdog is gone (or its pid is another process's now)."""
    holding = replace(RECORD, holding={"run": "r"}, watchdog_pid=300, watchdog_start=7000)
    assert GroupRecord.from_json(holding.to_json()) == holding
    watched = judge(holding, Seen(HERE, worker=None, leader=alive(6000, 200), watchdog=alive(7000)))
    # The scratch folder (the task's log) stays too: the watchdog keeps the log, then
    # removes both.
    assert watched.kill_group and not watched.remove_scratch and watched.keep_record
    for watchdog in (None, alive(7001), ProcInfo(start=7000, state="Z", pgid=0)):
        seen = Seen(HERE, worker=None, leader=alive(6000, 200), watchdog=watchdog)
        assert not judge(holding, seen).keep_record and judge(holding, seen).remove_scratch
    empty = replace(holding, holding=None)  # nothing to settle
    assert not judge(empty, Seen(HERE, worker=None, watchdog=alive(7000))).keep_record
    alive_worker = Seen(HERE, worker=alive(5000), watchdog=alive(7000))
    assert not judge(holding, alive_worker).forget  # a live worker: left alone, as ever


def test_parse_stat_copes_with_spaces_and_parentheses_in_the_name() -> None:
    rest = " ".join(str(n) for n in range(4, 23))  # fields 4..22: ppid=4, pgrp=5, start=22
    info = parse_stat(f"42 (a b) c)) Z {rest} 23 24\n")
    assert info == ProcInfo(start=22, state="Z", pgid=5) and info.exited
    me = proc_info(os.getpid())
    assert me is not None and me.pgid == os.getpgid(0) and not me.exited


# --- reaping real processes -------------------------------------------------------------------


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[list[int]]:
    """Pids started by a test; any still running at the end are killed, and so is every
    process working in a folder of the test's (a failed test must not leave `sleep 300`s on a
    shared machine)."""
    pids: list[int] = []
    yield pids
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cwd").readlink().is_relative_to(tmp_path):
                pids.append(int(entry.name))
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_reaping_kills_a_dead_workers_group_and_removes_its_folders(
    tmp_path: Path, leftovers: list[int]
) -> None:
    scratch = tmp_path / "scratch"
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.append(group.pid)
    leader = proc_info(group.pid)
    assert leader is not None
    worker = dead_worker()
    record = record_for(worker, group.pid, leader.start)
    path = write_record(scratch, record)
    machine = Machine(record.host, record.boot_id, record.pid_ns)
    own = scratch / f"{workdir_stem(machine, worker[0])}1"
    (own / "inputs").mkdir(parents=True)
    (scratch / f"w{worker[0]}-2").mkdir()  # named as an earlier ds named them
    (scratch / "w1-1").mkdir()  # another worker's folder (pid 1 is never one of ours)
    # The same pid's folder of a worker on another machine sharing this scratch folder.
    elsewhere = scratch / f"{workdir_stem(replace(machine, boot_id='other'), worker[0])}1"
    elsewhere.mkdir()

    dead = reap_dead_workers(scratch)

    assert [r.worker_pid for r in dead] == [worker[0]]
    assert group.wait(timeout=10) == -signal.SIGKILL
    assert not path.exists() and not own.exists() and not (scratch / f"w{worker[0]}-2").exists()
    assert (scratch / "w1-1").is_dir() and elsewhere.is_dir()


def test_reaping_spares_a_group_whose_leader_start_does_not_match(
    tmp_path: Path, leftovers: list[int]
) -> None:
    scratch = tmp_path / "scratch"
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.append(group.pid)
    leader = proc_info(group.pid)
    assert leader is not None
    path = write_record(scratch, record_for(dead_worker(), group.pid, leader.start - 1))

    reap_dead_workers(scratch)

    assert not path.exists()  # the worker is dead: its record goes
    assert group.poll() is None and running(group.pid)  # but that group was not its
    group.kill()
    group.wait()


def test_reaping_kills_the_orphans_of_a_group_whose_leader_died(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # What a SIGKILLed worker leaves: PDEATHSIG killed the leader; its background child lives.
    scratch, pidfile = tmp_path / "scratch", tmp_path / "bg.pid"
    leader = subprocess.Popen(
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; exec sleep 300"], start_new_session=True
    )
    leftovers.append(leader.pid)
    info = proc_info(leader.pid)
    background = read_pid(pidfile)
    leftovers.append(background)
    assert info is not None
    leader.kill()
    leader.wait()
    write_record(scratch, record_for(dead_worker(), leader.pid, info.start))
    assert running(background)

    reap_dead_workers(scratch)

    assert wait_for(lambda: not running(background))


def test_a_live_workers_record_and_group_are_left_alone(
    tmp_path: Path, leftovers: list[int]
) -> None:
    scratch = tmp_path / "scratch"
    recorder = GroupRecorder.start(scratch)
    assert recorder is not None
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.append(group.pid)
    recorder.task_started(group.pid)
    (scratch / f"w{os.getpid()}-1").mkdir()

    assert reap_dead_workers(scratch) == []

    assert recorder.path.exists() and (scratch / f"w{os.getpid()}-1").is_dir()
    assert group.poll() is None
    group.kill()
    group.wait()
    recorder.close()


def test_an_unreadable_record_is_dropped_and_others_still_reaped(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    worker = dead_worker()
    good = write_record(scratch, replace(record_for(worker, 0, 0), pgid=None, leader_start=None))
    bad = record_path(scratch, 12345)
    bad.write_text('{"host": ')
    reap_dead_workers(scratch)
    assert not bad.exists() and not good.exists()


# --- a real `ds worker`, killed mid-task ------------------------------------------------------

Ds = Callable[..., subprocess.CompletedProcess[str]]


def start_worker(proj: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed_something", "worker"],
            cwd=proj,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def attempts(pidfile: Path) -> list[tuple[int, int]]:
    """(shell pid, background sleep pid) of each attempt that started."""
    if not pidfile.exists():
        return []
    return [
        (int(line.split()[0]), int(line.split()[1]))
        for line in pidfile.read_text().splitlines()
        if len(line.split()) == 2
    ]


def recorded_group(scratch: Path, worker_pid: int) -> int | None:
    """The task group a worker's record names now (None: none, or no record)."""
    try:
        group = json.loads(record_path(scratch, worker_pid).read_text())["pgid"]
    except (OSError, ValueError):
        return None
    return None if group is None else int(group)


def test_the_watchdog_starts_light_and_leaves_at_once_after_a_normal_exit(
    tmp_path: Path,
) -> None:
    # It runs beside every worker: what it imports before its worker is gone is all it
    # costs in the usual case (its worker removed its record and closed the pipe).
    scratch = tmp_path / "scratch"
    code = (
        "import sys\n"
        "from distributed_something.worker.watchdog import watchdog_main\n"
        "watchdog_main()\n"
        "print(sorted(m for m in sys.modules if m.startswith('distributed_something')))\n"
        "print('logging' in sys.modules, 'json' in sys.modules)\n"
    )
    record = record_path(scratch, 12345)
    done = subprocess.run(
        [sys.executable, "-c", code, str(scratch), str(record), "12345-1"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=True,
    )
    modules, heavy = done.stdout.decode().splitlines()
    assert modules == str(
        [
            "distributed_something",
            "distributed_something.worker",
            "distributed_something.worker.watchdog",
        ]
    )
    assert heavy == "False False"


def test_after_a_workers_death_its_unrecorded_task_is_killed_by_its_token(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # A task started a moment before its group was recorded: only its environment says whose.
    scratch = tmp_path / "scratch"
    worker = dead_worker()
    token = f"{worker[0]}-{worker[1]}"
    env = {**os.environ, TOKEN_ENV: token}
    mine = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "300"], env={**env, TOKEN_ENV: "1-2"})
    leftovers += [mine.pid, other.pid]
    # Closed normally (no record left): nothing is done.
    path = record_path(scratch, worker[0])
    assert not after_death(scratch, path, token)
    assert running(mine.pid)
    machine = this_machine()
    assert machine is not None
    write_record(scratch, GroupRecord(machine.host, machine.boot_id, machine.pid_ns, *worker))
    assert after_death(scratch, path, token)
    mine.wait(timeout=10)
    assert mine.returncode == -signal.SIGKILL
    assert running(other.pid)
    assert not path.exists()
    other.kill()
    other.wait()


def watchdog_of(worker_pid: int) -> int:
    """The pid of the watchdog a worker process started (`procgroups.Watchdog`)."""

    def find() -> int | None:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if entry.name.isdigit() and b"watchdog_main" in (entry / "cmdline").read_bytes():
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[1]) == worker_pid:
                        return int(entry.name)
        return None

    assert wait_for(lambda: find() is not None), f"no watchdog for worker {worker_pid}"
    found = find()
    assert found is not None
    return found


def kill_worker(worker: subprocess.Popen[bytes], *, watchdog_too: bool) -> None:
    if watchdog_too:
        os.kill(watchdog_of(worker.pid), signal.SIGKILL)
    worker.kill()
    worker.wait()


@pytest.mark.slow
def test_a_sigkilled_worker_leaves_nothing_at_once_or_once_the_next_worker_starts_or_cleanup_runs(
    tmp_path: Path, ds: Ds, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "pids.txt"
    # The argv comes from the config: the shell text is ours, not a job value.
    argv = ["sh", "-c", f"sleep 300 & echo $$ $! >> {pidfile}; sleep 300"]
    proj = write_project(
        tmp_path / "proj",
        argv=argv,
        groups=[{"name": "a"}],
        extra={"queue": {"visibility": 2, "job_retries": 5}},
    )
    scratch = proj / ".ds" / "T" / "scratch"
    assert ds("setup", cwd=proj).returncode == 0
    assert ds("submit", "job.json", cwd=proj).returncode == 0

    def start_attempt(n: int, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
        worker = start_worker(proj, log)
        assert wait_for(lambda: len(attempts(pidfile)) == n, 60), log.read_text()
        shell, background = attempts(pidfile)[n - 1]
        leftovers.extend([shell, background])
        # The runner records the group right after starting it, maybe after the shell wrote.
        assert wait_for(lambda: recorded_group(scratch, worker.pid) == shell)
        assert list(scratch.glob(f"w{worker.pid}-*"))
        return worker, shell, background

    # 1. The first worker is SIGKILLed while its task runs: its watchdog kills the whole task
    #    (the shell and its background child) at once and removes its record and folders.
    first, shell, background = start_attempt(1, tmp_path / "worker1.log")
    kill_worker(first, watchdog_too=False)
    assert wait_for(lambda: not running(shell) and not running(background))
    assert wait_for(lambda: not record_path(scratch, first.pid).exists())
    assert not list(scratch.glob(f"w{first.pid}-*"))

    # 2. Without its watchdog (killed first), a SIGKILLed worker's task lives on ...
    second, shell2, background2 = start_attempt(2, tmp_path / "worker2.log")
    kill_worker(second, watchdog_too=True)
    time.sleep(0.5)
    assert running(shell2) and running(background2)
    assert record_path(scratch, second.pid).exists()

    # 3. ... until the next worker reaps it as it starts (then retries the task) ...
    third = start_worker(proj, tmp_path / "worker3.log")
    try:
        assert wait_for(lambda: not running(shell2) and not running(background2), 30)
        # Killed first; the folders and the record go right after.
        assert wait_for(lambda: not record_path(scratch, second.pid).exists())
        assert not list(scratch.glob(f"w{second.pid}-*"))
        assert wait_for(lambda: len(attempts(pidfile)) == 3, 60), (
            tmp_path / "worker3.log"
        ).read_text()
        shell3, background3 = attempts(pidfile)[2]
        leftovers += [shell3, background3]
        assert wait_for(lambda: recorded_group(scratch, third.pid) == shell3)
    finally:
        kill_worker(third, watchdog_too=True)
    assert running(shell3) and running(background3)

    # 4. ... or `ds cleanup` reaps it.
    result = ds("cleanup", cwd=proj)
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: not running(shell3) and not running(background3))
    assert not list(scratch.glob("w*"))
    assert not list((scratch / ".groups").iterdir())


# --- local compute ----------------------------------------------------------------------------


def test_worker_logs_are_owner_only(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", argv=["true"], groups=[{"name": "a"}])
    project = open_project(proj / "ds.toml")
    logs = project.state_dir / "workers"
    logs.mkdir(parents=True, mode=0o755)
    (logs / "local-0.log").write_text("old\n")
    (logs / "local-0.log").chmod(0o644)
    compute = LocalCompute(project, stop_grace=10)
    compute.start(2)
    compute.stop()
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    for name in ("local-0.log", "local-1.log"):
        assert stat.S_IMODE((logs / name).stat().st_mode) == 0o600
    assert (logs / "local-0.log").read_text().startswith("old\n")  # appended, not replaced


def test_the_monitor_pause_ends_when_a_local_worker_exits(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", argv=["true"], groups=[{"name": "a"}])
    compute = LocalCompute(open_project(proj / "ds.toml"), stop_grace=10)
    # Stands for a worker this process started: it exits while the monitor waits.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    compute._procs[child.pid] = child
    pausing = threading.Thread(target=compute.pause, args=(600.0,), daemon=True)

    pausing.start()
    pausing.join(60)

    assert not pausing.is_alive(), "the pause waited on after the worker exited"
    assert child.poll() == 0


@pytest.mark.parametrize(
    ("floor", "interval", "confirm"), [(0.0, 1.0, 0.0), (60.0, 1.0, 60.0), (60.0, 120.0, 120.0)]
)
def test_exact_queue_counts_end_a_run_on_one_empty_reading(
    floor: float, interval: float, confirm: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(lifecycle.DRAIN_CONFIRM_ENV, raising=False)
    assert lifecycle.drain_confirm_seconds(floor, interval) == confirm
