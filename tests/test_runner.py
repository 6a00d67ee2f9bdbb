"""The subprocess runner: log header then output, waiting on a pidfd or by polling, stop,
and nothing of the task outliving it (its process group, its death with the worker)."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributed_something.worker import runner as runner_module
from distributed_something.worker.procgroups import (
    RECORD_BYTES,
    TOKEN_ENV,
    GroupRecorder,
    end_taken_over,
    record_path,
)
from distributed_something.worker.runner import SubprocessRunner
from testkit import read_pid, run_from_a_small_process, running, wait_for

PY = sys.executable
LINUX = sys.platform.startswith("linux")


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test started; whatever still runs at the end is killed (a failing test must not
    leave `sleep 300` behind on a shared machine)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["pidfd", "polling"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":
        monkeypatch.setattr(runner_module, "_pidfd", lambda pid: None)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open on this platform (Linux has it)")
    return str(request.param)


def test_header_comes_first_then_the_output_and_the_exit_code(tmp_path: Path, waiting: str) -> None:
    log = tmp_path / "task.log"
    argv = [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]
    result = SubprocessRunner().run(
        argv, cwd=tmp_path, env={}, log_path=log, stop=threading.Event(), header=b"ds: hi\n"
    )
    assert result.exit_code == 3 and not result.interrupted
    text = log.read_text()
    assert text.startswith("ds: hi\n") and "out\n" in text and "err\n" in text


def test_a_missing_program_is_exit_127_with_the_header_kept(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    result = SubprocessRunner().run(
        ["/nonexistent/tool"],
        cwd=tmp_path,
        env={},
        log_path=log,
        stop=threading.Event(),
        header=b"ds: header\n",
    )
    assert result.exit_code == 127
    assert log.read_text().startswith("ds: header\nds: cannot start '/nonexistent/tool'")
    assert result.start_errno == 2 and result.start_error is not None  # ENOENT: not_found
    assert "No such file or directory" in result.start_error


def test_a_program_named_without_a_folder_is_found_on_the_tasks_path(tmp_path: Path) -> None:
    # The runner looks the program up once per worker (not in the child, entry by entry, for
    # every task) but must run what the child's own search would, as the user typed it.
    def run(argv: list[str], path: str, cwd: Path = tmp_path) -> tuple[int, str]:
        log = tmp_path / "task.log"
        log.unlink(missing_ok=True)
        result = SubprocessRunner().run(
            argv, cwd=cwd, env={"PATH": path}, log_path=log, stop=threading.Event()
        )
        return result.exit_code, log.read_text(errors="replace")

    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        folder.mkdir()
        program = folder / "prog"
        program.write_text(f"#!/bin/sh\necho from {folder.name}\n")
        program.chmod(0o755)
    path = ":".join(str(folder) for folder in folders)
    assert run(["prog"], path) == (0, "from first\n")  # the first on PATH, as execvp
    (folders[0] / "prog").unlink()
    assert run(["prog"], path) == (0, "from second\n")  # gone: looked up again
    # The program sees the name it was given (argv[0]), not the file found for it.
    code, text = run(["cat", "/proc/self/cmdline"], os.environ["PATH"])
    assert code == 0 and text == "cat\0/proc/self/cmdline\0"
    # A relative PATH entry is the child's to resolve, in the task's folder.
    work = tmp_path / "work"
    (work / "tools").mkdir(parents=True)
    (work / "tools" / "prog").write_text("#!/bin/sh\necho from tools\n")
    (work / "tools" / "prog").chmod(0o755)
    assert run(["prog"], "tools", cwd=work) == (0, "from tools\n")
    code, text = run(["no-such-program-here"], path)
    assert code == 127 and "cannot start 'no-such-program-here'" in text


def test_a_timeout_ends_the_whole_group_and_says_so(
    tmp_path: Path, waiting: str, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "bg.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    started = time.monotonic()
    result = SubprocessRunner(grace_seconds=2).run(
        [PY, "-c", script, str(pidfile)],
        cwd=tmp_path,
        env={},
        log_path=tmp_path / "task.log",
        stop=threading.Event(),
        timeout=0.5,
    )
    took = time.monotonic() - started
    leftovers.append(read_pid(pidfile))
    assert result.timed_out and not result.interrupted and result.exit_code != 0
    assert 0.5 <= took < 5
    assert wait_for(lambda: not running(leftovers[0]), 5)
    fast = SubprocessRunner().run(
        ["true"],
        cwd=tmp_path,
        env={},
        log_path=tmp_path / "t.log",
        stop=threading.Event(),
        timeout=30,
    )
    assert fast.exit_code == 0 and not fast.timed_out


@pytest.mark.skipif(not LINUX, reason="/proc and wait4's ru_maxrss in KB are Linux's")
def test_peak_memory_and_cpu_time_are_measured(tmp_path: Path, waiting: str) -> None:
    # Held only for a moment: a sample may miss it, wait4's peak of the process may not.
    # Started from a small process (a worker is one): wait4's peak is the command's only
    # above its spawner's own (`_Child.peak_mb`), and this test process is large.
    script = "x = b'x' * (80 << 20); del x; sum(range(3_000_000))"
    exit_code, peak, cpu = run_from_a_small_process([PY, "-c", script], tmp_path)
    assert exit_code == 0
    assert peak is not None and 80 <= peak < 400
    assert cpu is not None and cpu > 0


@pytest.mark.skipif(not LINUX, reason="/proc and wait4's ru_maxrss in KB are Linux's")
def test_a_small_command_is_not_given_its_spawners_memory(tmp_path: Path) -> None:
    """wait4's peak of a command counts its spawner's memory (vfork: the child runs in the
    spawner's address space until exec, whose high-water mark Linux keeps): a tiny command
    started from this large test process is not reported as large as it."""
    spawner_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert spawner_mb > 60  # pytest with the suite loaded
    result = SubprocessRunner().run(
        ["true"], cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
    )
    assert result.exit_code == 0
    assert result.peak_memory_mb is None or result.peak_memory_mb < spawner_mb / 2


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA counts mappings from Linux 4.7 on")
@pytest.mark.parametrize("how", ["inherited", "preexec"])
def test_a_memory_limit_refuses_allocations_over_it(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker lowers its own limit while it starts the child when its own memory is well
    # below it (inherited), else the child sets it (preexec): both must hold the child to it.
    monkeypatch.setattr(runner_module, "_OWN_DATA", {})  # read afresh, not from a second ago
    if how == "inherited":
        own = runner_module.own_data_mb()
        assert own is not None
        limit = max(200, int(own) + runner_module.LIMIT_HEADROOM_MB + 50)
    else:
        monkeypatch.setattr(runner_module, "own_data_mb", lambda: 1e9)
        limit = 200
    used: list[bool] = []
    real_setup = runner_module._child_setup

    def spy(limit: int | None, *, pdeathsig: bool = True) -> object:
        used.append(limit is not None)
        return real_setup(limit, pdeathsig=pdeathsig)

    monkeypatch.setattr(runner_module, "_child_setup", spy)
    before = resource.getrlimit(resource.RLIMIT_DATA)
    log = tmp_path / "t.log"
    script = f"x = b'x' * (50 << 20); y = b'y' * ({limit + 100} << 20)"
    limited = SubprocessRunner().run(
        [PY, "-c", script],
        cwd=tmp_path,
        env={},
        log_path=log,
        stop=threading.Event(),
        memory_limit_mb=limit,
    )
    assert limited.exit_code == 1 and limited.memory_limit_mb == limit
    assert "MemoryError" in log.read_text()
    assert used == [how == "preexec"]
    assert resource.getrlimit(resource.RLIMIT_DATA) == before  # the worker's own is back
    free = SubprocessRunner().run(
        [PY, "-c", script], cwd=tmp_path, env={}, log_path=log, stop=threading.Event()
    )
    assert free.exit_code == 0 and free.memory_limit_mb is None


def test_stop_terminates_a_long_command_promptly(tmp_path: Path, waiting: str) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    result = SubprocessRunner(grace_seconds=5).run(
        [PY, "-c", "import time; time.sleep(60)"],
        cwd=tmp_path,
        env={},
        log_path=tmp_path / "task.log",
        stop=stop,
    )
    assert result.interrupted and result.exit_code != 0
    assert time.monotonic() - started < 10


def test_a_short_command_returns_as_soon_as_it_exits(tmp_path: Path, waiting: str) -> None:
    started = time.monotonic()
    for _ in range(20):
        result = SubprocessRunner(poll_seconds=5).run(
            ["true"], cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
        )
        assert result.exit_code == 0
    # A wait that slept out its poll interval even once would take 5 s here.
    assert time.monotonic() - started < 4.5


def test_a_background_child_dies_when_the_task_exits_0(
    tmp_path: Path, waiting: str, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "bg.pid"
    argv = ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; exit 0"]
    result = SubprocessRunner(grace_seconds=5).run(
        argv, cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
    )
    background = read_pid(pidfile)
    leftovers.append(background)
    assert result.exit_code == 0 and not result.interrupted
    assert "started" in (tmp_path / "t.log").read_text()
    assert not running(background)  # already gone when run() returned: no waiting here


def test_a_background_child_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "bg.pid"
    # An ignored signal stays ignored in children, so the background sleep ignores SIGTERM.
    argv = ["sh", "-c", f"trap '' TERM; sleep 300 & echo $! > {pidfile}; exit 3"]
    result = SubprocessRunner(grace_seconds=0.5).run(
        argv, cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
    )
    background = read_pid(pidfile)
    leftovers.append(background)
    assert result.exit_code == 3
    # SIGKILL was sent before run() returned; the kernel may take a moment to finish it.
    assert wait_for(lambda: not running(background))


def test_stop_ends_the_background_children_too(
    tmp_path: Path, waiting: str, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "bg.pid"
    stop = threading.Event()
    argv = ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; sleep 300"]

    def stop_once_started() -> None:
        try:
            read_pid(pidfile)
        finally:
            stop.set()

    threading.Thread(target=stop_once_started).start()
    result = SubprocessRunner(grace_seconds=5).run(
        argv, cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=stop
    )
    background = read_pid(pidfile)
    leftovers.append(background)
    assert result.interrupted
    assert not running(background)


# Runs one task through SubprocessRunner in a process of its own, which the test then kills.
RUN_IN_A_WORKER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from distributed_something.worker.runner import SubprocessRunner
    folder = Path(sys.argv[1])
    SubprocessRunner().run(
        ["sh", "-c", f"echo $$ > {folder / 'child.pid'}; exec sleep 300"],
        cwd=folder, env={}, log_path=folder / "t.log", stop=threading.Event(),
    )
    """
)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
def test_the_direct_child_dies_with_a_worker_killed_by_sigkill(
    tmp_path: Path, leftovers: list[int]
) -> None:
    worker = subprocess.Popen([PY, "-c", RUN_IN_A_WORKER, str(tmp_path)])
    try:
        child = read_pid(tmp_path / "child.pid")
        leftovers.append(child)
        assert running(child)
    finally:
        worker.kill()
        worker.wait()
    assert wait_for(lambda: not running(child))


# The same, with a recorder: the worker's watchdog ends the whole task, background child too.
RUN_IN_A_WATCHED_WORKER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from distributed_something.worker.procgroups import GroupRecorder
    from distributed_something.worker.runner import SubprocessRunner
    folder = Path(sys.argv[1])
    recorder = GroupRecorder.start(folder / "scratch")
    assert recorder is not None and recorder.watchdog is not None
    if sys.argv[2] == "kill-watchdog":
        recorder.watchdog.process.kill()
        recorder.watchdog.process.wait()
    SubprocessRunner(recorder=recorder).run(
        ["sh", "-c", f"sleep 300 & echo $$ $! > {folder / 'child.pid'}; exec sleep 300"],
        cwd=folder, env={}, log_path=folder / "t.log", stop=threading.Event(),
    )
    """
)


@pytest.mark.skipif(not LINUX, reason="the records and the watchdog need /proc")
def test_the_whole_task_dies_with_a_worker_killed_by_sigkill_through_its_watchdog(
    tmp_path: Path, leftovers: list[int]
) -> None:
    worker = subprocess.Popen([PY, "-c", RUN_IN_A_WATCHED_WORKER, str(tmp_path), "-"])
    try:
        child = read_pid(tmp_path / "child.pid")
        background = int((tmp_path / "child.pid").read_text().split()[1])
        leftovers.extend([child, background])
        assert running(child) and running(background)
        path = record_path(tmp_path / "scratch", worker.pid)
        assert wait_for(lambda: json.loads(path.read_text())["pgid"] == child)
    finally:
        worker.kill()
        worker.wait()
    assert wait_for(lambda: not running(child) and not running(background))
    assert wait_for(lambda: not path.exists())  # and the watchdog reaped the record


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
def test_without_its_watchdog_the_direct_child_still_dies_with_the_worker(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # The watchdog was killed: the runner falls back on PR_SET_PDEATHSIG for the direct child.
    argv = [PY, "-c", RUN_IN_A_WATCHED_WORKER, str(tmp_path), "kill-watchdog"]
    worker = subprocess.Popen(argv)
    try:
        child = read_pid(tmp_path / "child.pid")
        background = int((tmp_path / "child.pid").read_text().split()[1])
        leftovers.extend([child, background])
        assert running(child)
    finally:
        worker.kill()
        worker.wait()
    assert wait_for(lambda: not running(child))


@pytest.mark.skipif(not LINUX, reason="the records need /proc")
def test_a_task_is_recorded_once_it_has_run_a_poll_interval(
    tmp_path: Path, waiting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task that ends at once costs no /proc read and no write of the record; one that
    # runs on is recorded within the poll interval, and taken out when it ends.
    recorder = GroupRecorder.start(tmp_path / "scratch", watch=False)
    assert recorder is not None
    calls: list[str] = []
    monkeypatch.setattr(recorder, "task_started", lambda pgid: calls.append(f"started {pgid}"))
    monkeypatch.setattr(recorder, "task_ended", lambda: calls.append("ended"))

    def run(argv: list[str], poll_seconds: float) -> None:
        SubprocessRunner(recorder=recorder, poll_seconds=poll_seconds).run(
            argv, cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
        )

    run(["true"], poll_seconds=2)  # (a long interval: however loaded the machine)
    assert calls == []
    run(["sh", "-c", "echo $$ > pid; sleep 0.3"], poll_seconds=0.05)
    assert calls == [f"started {read_pid(tmp_path / 'pid')}", "ended"]
    recorder.close()


@pytest.mark.skipif(not LINUX, reason="the records need /proc")
def test_a_taken_over_command_too_young_for_its_group_record_is_found_by_its_token(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # A worker stopped (SIGSTOP) just after starting its command, before the command had
    # run a poll interval, has no group recorded: the delivery taking its task over finds
    # the command by the worker's token in its environment, and ends it.
    scratch = tmp_path / "scratch"
    recorder = GroupRecorder.start(scratch, watch=False)  # this process: the "worker"
    assert recorder is not None
    recorder.holding({"run": "r1", "attempt": "t1/a-1"})
    child = subprocess.Popen(
        ["sleep", "30"], env={**os.environ, TOKEN_ENV: recorder.token}, start_new_session=True
    )
    leftovers.append(child.pid)
    try:
        assert end_taken_over(scratch, "r1", "t1/other-2") == []  # not the attempt it holds
        assert end_taken_over(scratch, "r1", "t1/a-1") == [child.pid]
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        recorder.close()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_on_long_is_called_once_when_the_command_is_not_short(
    tmp_path: Path, pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker hands back the tasks it held as soon as the one running turns out long:
    # told once, while the command still runs; a command that ends at once tells nothing.
    if not pidfd:
        monkeypatch.setattr(runner_module, "_pidfd", lambda _pid: None)
    calls: list[bool] = []

    def run(argv: list[str], poll_seconds: float) -> None:
        SubprocessRunner(poll_seconds=poll_seconds).run(
            argv,
            cwd=tmp_path,
            env={},
            log_path=tmp_path / "t.log",
            stop=threading.Event(),
            on_long=lambda: calls.append((tmp_path / "ended").exists()),
        )

    run(["true"], poll_seconds=2)  # (a long interval: however loaded the machine)
    assert calls == []
    run(["sh", "-c", "sleep 0.4; touch ended"], poll_seconds=0.05)
    assert calls == [False]


def test_a_leader_that_leaves_processes_behind_has_its_group_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The leader exits at once (too soon to be recorded as it ran), leaving a process that
    # ignores SIGTERM: while the runner waits out the grace period, the group is recorded,
    # guarded by the start of its earliest member, so a reaper could end it.
    recorder = GroupRecorder.start(tmp_path / "scratch", watch=False)
    assert recorder is not None
    calls: list[tuple[int, int | None]] = []
    real = recorder.task_started

    def spy(pgid: int, start: int | None = None) -> None:
        calls.append((pgid, start))
        real(pgid, start)

    monkeypatch.setattr(recorder, "task_started", spy)
    # (ignored before the fork: a signal ignored is ignored by the child from its start)
    script = "trap '' TERM; sleep 30 & echo $$ > pid; echo $! > left; exit 0"
    SubprocessRunner(recorder=recorder, grace_seconds=0.5, poll_seconds=5).run(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={},
        log_path=tmp_path / "t.log",
        stop=threading.Event(),
    )
    left = read_pid(tmp_path / "left")
    assert wait_for(lambda: not running(left))  # killed after the grace period
    ((pgid, start),) = calls
    assert pgid == read_pid(tmp_path / "pid") and start is not None
    assert json.loads(record_path(tmp_path / "scratch", os.getpid()).read_text())["pgid"] is None
    recorder.close()


def test_the_oom_count_after_a_task_stands_for_the_next_ones_before_for_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = iter([7, 9])
    monkeypatch.setattr(runner_module, "oom_kill_count", lambda: next(reads))
    runner = SubprocessRunner()
    runner._oom_last = (3, 100.0)
    assert runner._oom_count_before(100.5) == 3  # read after the last task, just now
    assert runner._oom_count_before(101.5) == 7  # too long ago: read again
    runner._oom_last = (None, 100.0)
    assert runner._oom_count_before(100.1) == 9  # nothing known: read


def test_the_oom_counter_is_read_anew_through_the_descriptor_kept_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counter file found once is kept open and read again at each task: each read sees
    # the counter as it is now; one that cannot be read any more (its cgroup removed: ENODEV)
    # is looked for again.
    events = tmp_path / "memory.events"
    events.write_text("low 0\noom 1\noom_kill 3\n")
    monkeypatch.setattr(runner_module, "_oom_counter_candidates", lambda: [events])
    monkeypatch.setattr(runner_module, "_oom_counter", {})
    try:
        assert runner_module.oom_kill_count() == 3
        with events.open("r+") as fh:  # changed in place, as the kernel's counter changes
            fh.write("low 0\noom 2\noom_kill 4\n")
        assert runner_module.oom_kill_count() == 4
        other = tmp_path / "other.events"
        other.write_text("oom_kill 7\n")
        monkeypatch.setattr(runner_module, "_oom_counter_candidates", lambda: [other])

        def gone(fd: int, size: int, offset: int) -> bytes:
            raise OSError(errno.ENODEV, "No such device")

        with monkeypatch.context() as patched:
            patched.setattr(runner_module.os, "pread", gone)
            assert runner_module.oom_kill_count() == 7
    finally:
        runner_module._forget_oom_counter()


def test_the_record_holds_the_task_group_only_while_the_task_runs(tmp_path: Path) -> None:
    recorder = GroupRecorder.start(tmp_path / "scratch")
    assert recorder is not None
    path = record_path(tmp_path / "scratch", os.getpid())
    inode = path.stat().st_ino
    # The runner records the group just after starting it: the task waits (≤ 10 s) to see it.
    script = (
        f'for i in $(seq 1000); do grep -q "\\"pgid\\": $$" {path} && break; sleep 0.01; done; '
        f"cat {path} > {tmp_path / 'during.json'}; echo $$ > {tmp_path / 'pid'}"
    )
    argv = ["sh", "-c", script]
    SubprocessRunner(recorder=recorder).run(
        argv, cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
    )
    seen = [json.loads((tmp_path / "during.json").read_text()), json.loads(path.read_text())]
    assert seen[0]["pgid"] == int((tmp_path / "pid").read_text())
    assert seen[0]["worker_pid"] == os.getpid() and seen[0]["leader_start"] is not None
    assert seen[1]["pgid"] is None and seen[1]["leader_start"] is None
    # Updated in place at a fixed width (no file made per task), and still a whole record.
    assert path.stat().st_ino == inode and path.stat().st_size == RECORD_BYTES
    # A record removed under a running worker is written again (not lost to an open file).
    path.unlink()
    recorder.task_ended()  # nothing to clear: no write
    recorder.task_started(os.getpid())
    assert json.loads(path.read_text())["pgid"] == os.getpid()
    recorder.close()
    assert not path.exists()
