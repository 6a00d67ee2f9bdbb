"""Failures explained, retried by cause, and bounded (issue 12, the worker's side).

Pure decisions first (causes, error lines, retry rules, the heartbeat's deadline on a fake
clock), then every cause on the local backend with real processes, then `exit` and
`interrupted` on SQS + S3 (moto on 127.0.0.1) with a loopback instance-metadata service.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from distributed_something.backends import Backend
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.legacy import LEGACY_FIELDS
from distributed_something.config.model import Config, RetryConfig
from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.queue import Message, Queue
from distributed_something.interfaces.storage import Storage
from distributed_something.jobs.model import Task
from distributed_something.recipes.base import Workdir
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import ManifestEntry, RunRecords
from distributed_something.worker.causes import (
    CAUSES,
    classify_exception,
    classify_run,
    command_ended,
    describe,
    first_meaningful_line,
    killed_by_sigkill,
    memory_error,
    out_of_memory_line,
    signal_name,
    start_failure,
)
from distributed_something.worker.heartbeat import Heartbeat
from distributed_something.worker.loop import Holding, Outcome, Worker, WorkerSettings, capped_log
from distributed_something.worker.policy import (
    DEFAULT_RETRY_ON,
    retries_used,
    retry_decision,
    retryable,
)
from distributed_something.worker.runner import (
    RunResult,
    SubprocessRunner,
    parse_oom_kills,
    parse_stat_rss,
)
from distributed_something.worker.settle import holding_of, settle
from testkit import FakeClock, NoCompute, NoProvisioner, moto_queue_and_bucket, running

PY = sys.executable
LINUX = sys.platform.startswith("linux")


# --- pure: causes and error lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "flags", "cause"),
    [
        (0, {}, None),
        (0, {"tool_failed": True}, "tool"),
        (3, {}, "exit"),
        (3, {"tool_failed": True}, "exit"),  # a non-zero exit explains itself
        (-10, {}, "signal"),
        (137, {}, "exit"),  # 137 alone is an exit code; with an OOM kill it is memory
        (137, {"oom_killed": True}, "memory"),
        (-9, {"oom_killed": True}, "memory"),
        (0, {"oom_killed": True}, None),  # another process was killed; this one succeeded
        (1, {"out_of_memory": True}, "memory"),
        (-9, {"timed_out": True}, "timeout"),
        (-15, {"timed_out": True, "oom_killed": True}, "timeout"),
        (127, {"start_errno": 2}, "not_found"),  # ENOENT
        (127, {"start_errno": 13}, "not_found"),  # EACCES
        (127, {"start_errno": 7}, "exit"),  # E2BIG: not a missing command
    ],
)
def test_classify_run(exit_code: int, flags: dict[str, Any], cause: str | None) -> None:
    assert classify_run(exit_code, **flags) == cause
    assert cause is None or cause in CAUSES


def test_classify_exception_by_phase() -> None:
    missing = FileNotFoundError("input 'a' is not in storage")
    assert classify_exception(missing, "stage") == "not_found"
    assert classify_exception(KeyError("a"), "stage") == "not_found"
    refused = InputError("job file", "x", "the group has no field `x`", "add it")
    assert classify_exception(refused, "plan") == "not_found"
    assert classify_exception(BackendError("S3 PutObject failed"), "upload") == "upload"
    assert classify_exception(missing, "upload") == "upload"
    assert classify_exception(BackendError("S3 GetObject: SlowDown"), "stage") == "exit"
    assert classify_exception(ValueError("Expecting value"), "plan") == "exit"


def test_killed_by_sigkill() -> None:
    assert killed_by_sigkill(-9) and killed_by_sigkill(137)
    assert not killed_by_sigkill(-15) and not killed_by_sigkill(1)


def test_first_meaningful_line_skips_our_header_and_finds_the_error() -> None:
    header = "ds: task abc attempt 1 on w1\nds: argv ['x']\n"
    assert first_meaningful_line(header) == ""
    assert first_meaningful_line(header + "\n  \n") == ""
    traceback = (
        header + "loading\n"
        "Traceback (most recent call last):\n"
        '  File "run.py", line 3, in <module>\n'
        "    raise ValueError('no such well: Z99')\n"
        "ValueError: no such well: Z99\n"
    )
    assert first_meaningful_line(traceback) == "ValueError: no such well: Z99"
    tool = header + "step 1 ok\nERROR: cannot open image A01.tif\nstep 2 failed too\n"
    assert first_meaningful_line(tool) == "ERROR: cannot open image A01.tif"
    quiet = header + "reading\nwriting\nbye\n"
    assert first_meaningful_line(quiet) == "bye"  # no error line: the last words
    long = first_meaningful_line("error: " + "x" * 5000)
    assert len(long) == 500 and long.endswith("…")


def test_the_error_line_is_an_error_stated_else_the_last_words_before_the_exit() -> None:
    # A line merely naming "error" comes first; the tool's reason comes last, on stderr.
    script = (
        "Loading model (error-correction: on)\n"
        "checked 12 inputs: 0 errors\n"
        "Segmentation did not converge on image 3; aborting run\n"
    )
    assert first_meaningful_line(script) == (
        "Segmentation did not converge on image 3; aborting run"
    )
    # An error stated outright (a level, `error:`, an exception's name) is the root cause.
    stated = "step 1: could not cache\nsegfault.c: error: no such plate\nthen failed\n"
    assert first_meaningful_line(stated) == "segfault.c: error: no such plate"
    java = 'Exception in thread "main" java.lang.IllegalStateException: no wells\n\tat a.b(C.java)'
    assert first_meaningful_line("reading\n" + java) == java.splitlines()[0]
    # A command line echoing a JVM flag states nothing.
    echo = "exec: java -XX:+ExitOnOutOfMemoryError -jar tool.jar\nfailed to read data.csv\n"
    assert first_meaningful_line(echo) == "failed to read data.csv"
    # Without an error-like line, the last words, unless they are not wanted.
    assert first_meaningful_line("task k9 starting\n") == "task k9 starting"
    assert first_meaningful_line("task k9 starting\n", last_words=False) == ""
    assert first_meaningful_line("0 errors\n", last_words=False) == ""


def test_out_of_memory_lines() -> None:
    assert out_of_memory_line("ds: argv ['MemoryError']\nfine\n") is None  # ours: skipped
    assert out_of_memory_line("a\nMemoryError\n") == "MemoryError"
    java = "Exception in thread main java.lang.OutOfMemoryError: Java heap space"
    assert out_of_memory_line(java) == java
    numpy = "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 7.45 GiB"
    assert out_of_memory_line(numpy) == numpy
    assert out_of_memory_line("terminate called after std::bad_alloc") is not None
    # Rust's and the JVM's own words, and Node's.
    rust = "memory allocation of 629145600 bytes failed"
    assert out_of_memory_line(rust) == rust
    jvm = "# There is insufficient memory for the Java Runtime Environment to continue."
    assert out_of_memory_line("#\n" + jvm + "\n# Native memory allocation (mmap) failed") == jvm
    node = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
    assert out_of_memory_line(node) == node
    # A flag named after the error is not the error; nor is a line long before the end.
    assert out_of_memory_line("exec: java -XX:+ExitOnOutOfMemoryError -jar x.jar\nERROR: x") is None
    assert out_of_memory_line("-XX:+HeapDumpOnOutOfMemoryError") is None
    early = "retrying after MemoryError\n" + "working\n" * 60 + "ERROR: bad column\n"
    assert out_of_memory_line(early) is None


def test_how_a_command_ended_and_could_not_start() -> None:
    assert command_ended("command", 3) == "command exited with code 3"
    assert command_ended("command", -9) == "command was killed by signal 9 (SIGKILL)"
    assert command_ended("the converter", -6) == "the converter was killed by signal 6 (SIGABRT)"
    assert signal_name(200) == "signal 200"
    denied = start_failure("cannot start '/x/run.sh': Permission denied", errno.EACCES)
    assert denied.endswith("Fix: make it executable (chmod +x), or run it with its interpreter")
    assert "#! first line" in start_failure("cannot start 'x': Exec format error", errno.ENOEXEC)
    assert start_failure("cannot start 'x': odd", errno.EIO) == "cannot start 'x': odd"


def test_describe_and_memory_error() -> None:
    assert describe("exit", "command exited with code 3", "") == "command exited with code 3"
    assert describe("exit", "command exited with code 3", "bad") == (
        "command exited with code 3: bad"
    )
    assert describe("tool", "", "bad") == "bad"
    said = memory_error(612.4, 512, docker_cores=2, per="container", detail="MemoryError")
    assert "peak 612 MB" in said and "limit 512 MB per container" in said
    assert "docker_cores = 2" in said and "MemoryError" in said
    assert "raise cluster.memory or lower cluster.docker_cores" in said
    assert "peak unknown" in memory_error(None, None, docker_cores=1)
    assert said.startswith("killed for memory (")
    # An allocation refused under the limit: the tool exited; nothing was killed.
    refused = memory_error(250, 256, docker_cores=1, detail="MemoryError", killed=False)
    assert refused.startswith("out of memory: an allocation was refused (peak 250 MB")


# --- pure: retries by cause -------------------------------------------------------------------


def test_default_retry_rules_and_overrides() -> None:
    rule = RetryConfig()
    assert {c for c, r in DEFAULT_RETRY_ON.items() if not r} == {"not_found"}
    for cause in ("exit", "signal", "timeout", "memory", "upload", "tool", "interrupted", "lost"):
        assert retryable(cause, 1, rule)
    assert not retryable("not_found", None, rule)
    strict = RetryConfig(
        retry_on={"memory": False, "not_found": True}, never_retry_exit_codes=[2, 127]
    )
    assert not retryable("memory", -9, strict) and retryable("not_found", None, strict)
    assert not retryable("exit", 2, strict) and retryable("exit", 3, strict)
    assert retryable("interrupted", 2, strict)  # never counted, never refused
    with pytest.raises(ValidationError):
        RetryConfig.model_validate({"retry_on": {"mem": False}})


@pytest.mark.parametrize(
    ("cause", "code", "used", "received", "action", "outcome", "counted"),
    [
        ("exit", 3, 0, 1, "retry", "failed", True),
        ("exit", 3, 1, 2, "retry", "failed", True),
        ("exit", 3, 2, 3, "dead_letter", "dead", True),  # last: the queue dead-letters it
        ("exit", 3, 2, 1, "dead", "dead", True),  # last, on a fresh message: deleted
        ("exit", 3, 1, 3, "resend", "failed", True),  # receives spent, a retry left
        ("not_found", None, 0, 1, "dead", "dead", True),
        ("interrupted", None, 0, 1, "release", "released", False),
        ("interrupted", None, 2, 3, "resend", "released", False),
        ("lost", None, 1, 3, "resend", "released", False),
    ],
)
def test_retry_decision(
    cause: str,
    code: int | None,
    used: int,
    received: int,
    action: str,
    outcome: str,
    counted: bool,
) -> None:
    decision = retry_decision(
        cause, code, RetryConfig(), used=used, receive_count=received, max_attempts=3
    )
    assert (decision.action, decision.outcome, decision.counted) == (action, outcome, counted)


def test_a_permanent_failure_is_dead_whatever_the_rule() -> None:
    rule = RetryConfig(retry_on={"upload": True})
    decision = retry_decision(
        "upload", None, rule, used=0, receive_count=1, max_attempts=5, permanent=True
    )
    assert decision.action == "dead"


def test_retries_used_counts_failures_since_the_last_dead_attempt() -> None:
    assert retries_used([]) == 0
    events = [(5, "failed"), (1, "failed"), (3, "released"), (4, "lost"), (6, "duplicate")]
    assert retries_used(events) == 2
    assert retries_used([*events, (7, "dead"), (8, "failed"), (9, "running")]) == 1
    # A redrive starts again, with or without a dead attempt before it.
    assert retries_used([*events, (7, "lost"), (8, "redrive"), (9, "failed")]) == 1


# --- pure: the heartbeat's deadline, on a fake clock -------------------------------------------


class CountingQueue:
    """Just enough of a `Queue` for the heartbeat: counts extensions."""

    max_receive_count = 3

    def __init__(self) -> None:
        self.extensions = 0

    def extend_lease(self, message: Message, seconds: float) -> bool:
        self.extensions += 1
        return True


def test_the_heartbeat_stops_a_hung_task_at_its_deadline() -> None:
    clock = FakeClock(0.0)
    queue = CountingQueue()
    beat = Heartbeat(queue, clock, background=False)  # type: ignore[arg-type]
    stop = threading.Event()
    message = Message("h", "t", "{}", 1)
    with beat.keep(message, 30.0, stop, deadline=25.0) as lease:
        clock.advance(10)
        assert beat.tick() == pytest.approx(10.0)  # extended; next beat at 20
        clock.advance(10)
        assert beat.tick() == pytest.approx(5.0)  # extended; the next beat is the deadline
        assert queue.extensions == 2 and not stop.is_set()
        clock.advance(5)
        assert beat.tick() is None
        assert stop.is_set() and lease.timed_out and lease.ended and not lease.lost.is_set()
        clock.advance(100)
        assert beat.tick() is None and queue.extensions == 2  # never extended again
    with beat.keep(message, 30.0, threading.Event()) as free:
        clock.advance(1000)
        beat.tick()
        assert not free.timed_out and free.ended is None


# --- pure: bounded logs, /proc and cgroup parsing -----------------------------------------------


def test_capped_log_keeps_the_start_and_the_end(tmp_path: Path) -> None:
    path = tmp_path / "task.log"
    path.write_bytes(b"A" * 100 + b"B" * 1000 + b"C" * 100)
    kept = capped_log(path, path.stat().st_size, head=100, tail=100)
    assert kept.startswith(b"A" * 100) and kept.endswith(b"C" * 100)
    assert b"1,000 bytes cut" in kept and b"BB" not in kept


def test_proc_and_cgroup_parsing() -> None:
    stat = "123 (a (b) c) S 1 777 777 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 99 1000 2500 18446744"
    assert parse_stat_rss(stat) == (777, 2500)
    assert parse_oom_kills("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n") == 2
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n") == 5
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n") is None


def test_config_fields() -> None:
    config = Config.model_validate(
        {
            "app_name": "C",
            "recipe": {"timeout": 90},
            "queue": {"retry": {"retry_on": {"timeout": False}, "never_retry_exit_codes": [2]}},
        }
    )
    assert config.recipe.timeout == 90 and config.queue.retry.never_retry_exit_codes == [2]
    assert Config.model_validate({"app_name": "C"}).recipe.timeout is None
    with pytest.raises(ValidationError):
        Config.model_validate({"app_name": "C", "recipe": {"timeout": 0}})
    assert LEGACY_FIELDS["TASK_TIMEOUT"] == "recipe.timeout"


# --- the local backend, real processes ---------------------------------------------------------


class Rig:
    """A worker on a local SQLite queue (fake clock for leases and delays) and folder
    storage, running real commands."""

    def __init__(
        self,
        tmp_path: Path,
        argv: list[str],
        *,
        retries: int = 3,
        tool: CommandRecipe | None = None,
        **config: Any,
    ) -> None:
        self.clock = FakeClock(1_000_000.0)
        self.queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=retries, clock=self.clock)
        self.storage = FolderStorage(tmp_path / "bucket")
        raw: dict[str, Any] = {
            "app_name": "F",
            "recipe": {"name": "command", "argv": argv, "output_prefix": "out/{name}"},
        }
        for key, value in config.items():
            raw[key] = {**raw.get(key, {}), **value}
        self.config = Config.model_validate(raw)
        self.backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.scratch = tmp_path / "scratch"
        self.recipe = tool or CommandRecipe()
        self.worker = self.new_worker()
        self.records = RunRecords(self.storage, "F", "r1")

    def new_worker(self) -> Worker:
        return Worker(
            self.config,
            self.backend,
            self.recipe,
            SubprocessRunner(grace_seconds=1),
            WorkerSettings(name="w1", run_id="r1", scratch_root=self.scratch, poll_interval=0.01),
            clock=self.clock,
            sleep=lambda _s: None,
        )

    def submit(self, **group: Any) -> Task:
        task = Task(body={"group": {"name": "t", **group}})
        self.queue.send_batch([(task.id, task.body_json())])
        return task

    def attempts(self, task: Task) -> list[dict[str, Any]]:
        """The task's attempt records, oldest first."""
        prefix = f"{self.records.run_prefix}attempts/{task.id}/"
        found = [json.loads(self.storage.get_bytes(o.key)) for o in self.storage.list(prefix)]
        return sorted(found, key=lambda a: a["started_at"])

    def state(self, task: Task) -> str:
        from distributed_something.ledger import build_ledger
        from distributed_something.records import ManifestEntry

        ledger = build_ledger(
            "r1", [ManifestEntry(task.id, {})], set(), self.records.attempt_keys(), []
        )
        return ledger.tasks[task.id].state


def code(text: str) -> list[str]:
    return [PY, "-c", text]


def test_exit_names_the_code_and_the_first_error_line_with_usage(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        code(
            "import sys; print('starting'); "
            "print('ValueError: the plate P1 has no well Z99', file=sys.stderr); sys.exit(3)"
        ),
    )
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.exit_code, failure.final) == ("exit", 3, False)
    assert failure.error == "command exited with code 3: ValueError: the plate P1 has no well Z99"
    # A short, small command started from this large test process: wait4's peak would be
    # this process's own (`_Child.peak_mb`), and no sample came in time: unknown, not that.
    assert failure.peak_memory_mb is None or failure.peak_memory_mb < 50
    assert failure.cpu_seconds is not None and failure.cpu_seconds > 0
    (attempt,) = rig.attempts(task)
    assert (attempt["outcome"], attempt["cause"], attempt["error"]) == (
        "failed",
        "exit",
        failure.error,
    )
    assert attempt["peak_memory_mb"] == failure.peak_memory_mb
    assert rig.queue.counts().in_flight == 1  # held back for a retry


def test_signal(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        code("import os, signal; print('task t starting', flush=True); os.kill(os.getpid(), 9)"),
    )
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.exit_code) == ("signal", -int(signal.SIGKILL))
    # Killed, not exited; by whom is unknown, but not by ds; its last words are no error.
    assert failure.error == "command was killed by signal 9 (SIGKILL), which ds did not send"
    # Its stored log ends with how the attempt ended, after the command's own output.
    (log,) = rig.storage.list(f"{rig.records.run_prefix}logs/{task.id}/")
    lines = rig.storage.get_bytes(log.key).decode().splitlines()
    assert lines[-2:] == [
        "task t starting",
        f"ds: attempt 1 ended: failed (signal): {failure.error}",
    ]


def test_a_hung_task_times_out_dies_with_its_group_and_ends_dead(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = [
        *code(
            "import os, signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # ignores the polite stop
            "child = subprocess.Popen(['sleep', '300'])\n"
            "open(sys.argv[1], 'w').write('%d %d' % (os.getpid(), child.pid))\n"
            "print('waiting for a lock', flush=True)\n"
            "time.sleep(300)\n"
        ),
        str(pids),
    ]
    rig = Rig(tmp_path, hang, retries=1, recipe={"timeout": 1.5})
    task = rig.submit()
    started = time.monotonic()
    assert rig.worker.step() is Outcome.FAILED
    took = time.monotonic() - started
    assert 1.5 <= took < 10  # the limit, then the runner's 1 s grace, not 300 s
    assert pids.exists(), "the task never started"
    for pid in map(int, pids.read_text().split()):
        # SIGKILL is sent to the whole group by now; its delivery may take a moment.
        deadline = time.monotonic() + 5
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running(pid), f"process {pid} outlived its task's timeout"
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.final) == ("timeout", True)
    assert "timed out after 1.5 s" in failure.error and "recipe.timeout" in failure.error
    assert rig.state(task) == "dead"
    # The heartbeat let go: the message is back (the last attempt: at once), and the queue
    # dead-letters it at its next receive.
    assert rig.worker.step() is Outcome.DRAINED
    assert [d.task_id for d in rig.queue.list_dead()] == [task.id]


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA counts mappings from Linux 4.7 on")
def test_memory_over_the_local_limit_says_peak_limit_and_fix(tmp_path: Path) -> None:
    greedy = code(
        "import time\nkept = b'x' * (120 << 20)\ntime.sleep(0.3)\nmore = b'y' * (400 << 20)\n"
    )
    rig = Rig(tmp_path, greedy, cluster={"memory": 300})
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert failure.cause == "memory", failure.error
    # The 120 MB kept, not the 400 MB refused (RSS also counts the interpreter's own pages,
    # which RLIMIT_DATA does not: the peak may pass the limit by a few MB).
    assert failure.peak_memory_mb is not None and 120 <= failure.peak_memory_mb < 400
    assert f"peak {failure.peak_memory_mb:,.0f} MB" in failure.error
    assert "limit 300 MB per task process" in failure.error
    assert "raise cluster.memory or lower cluster.docker_cores" in failure.error
    assert "MemoryError" in failure.error
    # Shared by two processes per container, each task gets half.
    halves = Rig(tmp_path / "halves", greedy, cluster={"memory": 600, "docker_cores": 2})
    halves.submit()
    assert halves.worker.step() is Outcome.FAILED


@pytest.mark.skipif(not LINUX, reason="the group's memory is read from /proc")
def test_peak_memory_adds_up_the_task_process_tree(tmp_path: Path) -> None:
    tree = code(
        "import subprocess, sys\n"
        "hold = [sys.executable, '-c', \"import time; x = b'x' * (100 << 20); time.sleep(3)\"]\n"
        "children = [subprocess.Popen(hold) for _ in range(2)]\n"
        "[c.wait() for c in children]\n"
    )
    rig = Rig(tmp_path, tree)
    task = rig.submit()
    assert rig.worker.step() is Outcome.DONE
    (attempt,) = rig.attempts(task)
    assert attempt["outcome"] == "done" and attempt["cause"] == ""
    # Two children of ~100 MB at once: the sum, more than either one's own peak.
    assert attempt["peak_memory_mb"] >= 200
    assert attempt["cpu_seconds"] is not None


def test_a_missing_command_is_not_found_and_dead_without_retry(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["/nonexistent/tool-that-is-not-there", "{name}"], retries=3)
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.exit_code, failure.final) == ("not_found", 127, True)
    # The program never ran: no exit code is named, and the fix is.
    assert "code 127" not in failure.error and "cannot start" in failure.error
    assert failure.error.endswith(
        "Fix: install it, or give its full path as the command's first word"
    )
    assert "No such file or directory" in failure.error
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight, counts.dead) == (0, 0, 0)  # deleted, not retried
    assert rig.worker.step() is Outcome.DRAINED
    assert rig.state(task) == "dead"
    assert [a["outcome"] for a in rig.attempts(task)] == ["dead"]


def test_a_missing_input_is_not_found(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["true"], recipe={"inputs": ["data/{name}.tif"]})
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.final) == ("not_found", True)
    assert "data/t.tif" in failure.error
    assert rig.state(task) == "dead" and rig.queue.counts().in_flight == 0


def test_a_tool_failure_report_is_cause_tool(tmp_path: Path) -> None:
    class DoneFileRecipe(CommandRecipe):
        def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
            done = workdir.output_dir / "DONE"
            if exit_code == 0 and done.read_text() != "Complete":
                return f"the tool's done file says {done.read_text()!r}, not Complete"
            return super().check_success(exit_code, workdir)

    writes = code("import sys; open(sys.argv[1] + '/DONE', 'w').write('Failure')")
    argv = [*writes, "{output_dir}"]
    rig = Rig(tmp_path, argv, tool=DoneFileRecipe())
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.exit_code) == ("tool", 0)
    assert failure.error == "the tool's done file says 'Failure', not Complete"
    assert list(rig.storage.list("out/")) == []  # nothing uploaded


def test_outputs_that_cannot_be_stored_are_cause_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [*code("import sys; open(sys.argv[1] + '/r.txt', 'w').write('x')"), "{output_dir}"]
    rig = Rig(tmp_path, argv)
    task = rig.submit()

    def refuse(self: Storage, items: Any) -> None:
        raise BackendError("S3 PutObject failed: SlowDown")

    monkeypatch.setattr(FolderStorage, "put_files", refuse)
    assert rig.worker.step() is Outcome.FAILED
    (failure,) = rig.records.failures_of(task.id)
    assert (failure.cause, failure.final) == ("upload", False)  # retried: it may pass later
    assert "SlowDown" in failure.error
    # A link out of the output folder can never be stored: dead at once, still `upload`.
    linking = code("import os, sys; os.symlink('/etc/hostname', sys.argv[1] + '/h')")
    linked = Rig(tmp_path / "link", [*linking, "{output_dir}"])
    bad = linked.submit()
    assert linked.worker.step() is Outcome.FAILED
    (failure,) = linked.records.failures_of(bad.id)
    assert (failure.cause, failure.final) == ("upload", True)


def test_interrupted_attempts_use_no_retry_and_never_reach_the_dead_letters(
    tmp_path: Path,
) -> None:
    """job_retries = 2: attempt 1 fails (a retry used), attempt 2 is interrupted on the last
    allowed receive: handed back as a fresh message, so attempt 3 runs, and only its failure
    (the second counted one) makes the task dead."""
    counter = tmp_path / "runs"
    flaky = [
        *code(
            "import pathlib, sys, time\n"
            "path = pathlib.Path(sys.argv[1])\n"
            "n = int(path.read_text()) + 1 if path.exists() else 1\n"
            "path.write_text(str(n))\n"
            "if n == 2:\n"
            "    print('working', flush=True); time.sleep(60)\n"
            "sys.exit(5)\n"
        ),
        str(counter),
    ]
    rig = Rig(tmp_path, flaky, retries=2)
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    rig.clock.advance(1000)
    threading.Timer(0.5, rig.worker.stop).start()
    started = time.monotonic()
    assert rig.worker.step() is Outcome.STOPPED
    assert time.monotonic() - started < 10  # handed back at once, not after 60 s
    # Exactly one message, fresh (its receive count spent, it was re-sent), visible now.
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight, counts.dead) == (1, 0, 0)
    released = rig.attempts(task)[-1]
    assert (released["outcome"], released["cause"]) == ("released", "interrupted")
    assert rig.state(task) == "pending"
    worker = rig.new_worker()  # the stopped one is done; another machine takes over
    rig.clock.advance(1)
    assert worker.step() is Outcome.FAILED
    assert counter.read_text() == "3"
    outcomes = [(a["outcome"], a["cause"]) for a in rig.attempts(task)]
    assert outcomes == [("failed", "exit"), ("released", "interrupted"), ("dead", "exit")]
    assert rig.state(task) == "dead"
    assert [f.final for f in rig.records.failures_of(task.id)] == [False, True]
    worker.close()
    rig.worker.close()


def test_an_interruption_before_the_last_receive_is_released_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, code("import time; time.sleep(60)"), retries=3)
    task = rig.submit()
    threading.Timer(0.3, rig.worker.stop).start()
    assert rig.worker.step() is Outcome.STOPPED
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight) == (1, 0)  # no backoff
    (attempt,) = rig.attempts(task)
    assert (attempt["outcome"], attempt["cause"]) == ("released", "interrupted")
    assert rig.records.failures_of(task.id) == []
    (message,) = rig.queue.receive(1, 30)
    assert message.receive_count == 2  # the same message: its count had room


def test_a_lost_worker_is_cause_lost_and_uses_no_retry(tmp_path: Path) -> None:
    rig = Rig(tmp_path, code("import sys; sys.exit(4)"), retries=2)
    task = rig.submit()
    # A worker takes the task, records its start, and vanishes (SIGKILL, a lost machine).
    vanished = rig.queue.receive(1, 30)[0]
    rig.new_worker()._begin_attempt(vanished, rig.clock())
    rig.clock.advance(60)  # its lease runs out; the task comes back (receive 2 of 2)
    assert rig.worker.step() is Outcome.FAILED
    outcomes = [(a["outcome"], a["cause"]) for a in rig.attempts(task)]
    assert outcomes == [("lost", "lost"), ("failed", "exit")]
    (failure,) = rig.records.failures_of(task.id)
    assert failure.final is False  # the lost attempt used no retry: one is left
    counts = rig.queue.counts()  # the receive count was spent: re-sent as a fresh message
    assert (counts.visible + counts.in_flight, counts.dead) == (1, 0)
    rig.clock.advance(1000)
    assert rig.worker.step() is Outcome.FAILED
    assert rig.state(task) == "dead"
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost", "failed", "dead"]


def watched_worker_dies(rig: Rig, tmp_path: Path) -> None:
    """A worker receives the rig's task, records its start and is SIGKILLed; its watchdog
    settles what it held (`worker/settle.py`)."""
    (message,) = rig.queue.receive(1, 30)
    doomed = rig.new_worker()
    assert doomed._begin_attempt(message, rig.clock()) is False
    assert doomed._attempt is not None
    held = holding_of("r1", Holding(doomed._attempt, message, [], [], tmp_path / "no.log"))
    assert settle(rig.records, rig.queue, held, 4242, rig.clock()).task_id == message.task_id
    rig.clock.advance(1)


def died_then_handed_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Rig, Task]:
    """A rig whose one task's worker died (receive 1 of 3, settled by its watchdog), then a
    worker given a spot interruption notice as it received the task handed it back
    untouched (receive 2: no try used, no attempt record)."""
    rig = Rig(tmp_path, code("print('ran')"), retries=3)
    task = rig.submit()
    rig.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "t"})])
    watched_worker_dies(rig, tmp_path)  # receive 1
    stopping = rig.new_worker()
    receive = rig.queue.receive

    def receive_then_stop(count: int, lease: float) -> list[Message]:
        got = receive(count, lease)
        stopping.stop()  # the notice arrives while the receive is under way
        return got

    with monkeypatch.context() as patch:
        patch.setattr(rig.queue, "receive", receive_then_stop)
        assert stopping.step() is Outcome.STOPPED  # receive 2, handed back untouched
    return rig, task


def test_a_hand_back_as_the_worker_stopped_does_not_leave_two_deaths_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Met once by the moto chaos run (a good task counted dead, 57 done of 58): a task's
    worker was SIGKILLed (receive 1 of 3), a worker given a spot interruption notice as it
    received the task handed it back untouched (receive 2: no retry used), and the next
    worker to run it was SIGKILLed too (receive 3). The watchdog released that message with
    its receive count spent, so the queue dead-lettered a task whose worker had died twice,
    not three times. The receives the worker does not count must not dead-letter it."""
    rig, task = died_then_handed_back(tmp_path, monkeypatch)
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost"]  # receive 2 left no record
    watched_worker_dies(rig, tmp_path)  # receive 3
    assert rig.worker.step() is Outcome.DONE
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost", "lost", "done"]
    assert rig.state(task) == "done"
    counts = rig.queue.counts()
    assert (counts.visible, counts.in_flight, counts.dead) == (0, 0, 0)


def test_a_task_dead_lettered_by_hand_backs_after_an_unwatched_death_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the last worker vanishes with nobody to settle it (a container or a
    machine gone with its watchdog): its lease runs out and the queue dead-letters the task
    with two of its three receives spent on tries. Once the queue stays empty, the monitor
    sends it again (its open attempt closed as lost first, or the next delivery would stand
    down for it) rather than counting it dead; the task then runs and is done."""
    from distributed_something.ledger import read_ledger
    from distributed_something.monitor.settle import settle as settle_run

    rig, task = died_then_handed_back(tmp_path, monkeypatch)
    (message,) = rig.queue.receive(1, 30)  # receive 3: its worker vanishes, unwatched
    assert rig.new_worker()._begin_attempt(message, rig.clock()) is False
    rig.clock.advance(31)
    assert rig.worker.step() is Outcome.DRAINED  # the next receive dead-lettered it
    assert [d.task_id for d in rig.queue.list_dead()] == [task.id]

    plan = settle_run(rig.records, rig.queue, read_ledger(rig.records), rig.clock())

    assert plan.requeue == [task.id] and not plan.dead
    assert rig.queue.list_dead() == []
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost", "lost"]
    assert rig.worker.step() is Outcome.DONE
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost", "lost", "done"]
    assert rig.state(task) == "done"


def test_a_task_whose_worker_dies_on_every_receive_still_ends_dead_lettered(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, code("print('ran')"), retries=3)
    task = rig.submit()
    rig.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "t"})])
    for _ in range(3):
        watched_worker_dies(rig, tmp_path)
    assert rig.worker.step() is Outcome.DRAINED  # the next receive dead-lettered it
    assert rig.queue.counts().dead == 1
    assert [a["outcome"] for a in rig.attempts(task)] == ["lost", "lost", "lost"]
    # A delivery of another message of the task stood down meanwhile (it was sent twice):
    # the monitor judges the dead-lettered message by its own receives, and counts it dead.
    from distributed_something.ledger import read_ledger
    from distributed_something.monitor.settle import settle as settle_run
    from distributed_something.records import Attempt

    other = Attempt(task.id, 1, "another-message", "w2", rig.clock(), outcome="duplicate")
    rig.records.close_attempt(other)
    plan = settle_run(rig.records, rig.queue, read_ledger(rig.records), rig.clock())
    assert set(plan.dead) == {task.id} and plan.requeue == []


def test_a_task_dead_by_its_workers_deaths_after_a_failure_says_so(tmp_path: Path) -> None:
    # job_retries = 2. The first try fails (exit 4); then the task's worker dies at every
    # receive: the first death, on the last receive of its message, uses up no retry (the
    # task is sent again as a fresh message), and the fresh message's two deaths end it
    # dead. It is dead because it killed its worker: the report, `ds dead list` and `ds dead
    # show` say so (cause lost), not the first try's exit code, and show every attempt.
    from distributed_something.ledger import read_ledger
    from distributed_something.monitor.settle import settle as settle_run
    from distributed_something.report.build import build_report
    from distributed_something.state import RunState
    from distributed_something.usecases.run_info import _dead_entries

    rig = Rig(tmp_path, code("import sys; print('bad input'); sys.exit(4)"), retries=2)
    task = rig.submit()
    rig.records.write_manifest("p0", [ManifestEntry(task.id, {"name": "t"})])
    assert rig.worker.step() is Outcome.FAILED  # receive 1: a retry used, one left
    rig.clock.advance(1000)  # past the backoff
    watched_worker_dies(rig, tmp_path)  # receive 2 of 2: sent again, fresh
    assert rig.state(task) != "dead" and rig.queue.counts().dead == 0
    watched_worker_dies(rig, tmp_path)  # the fresh message, receive 1
    watched_worker_dies(rig, tmp_path)  # receive 2 of 2: two deaths, no more receives
    assert rig.worker.step() is Outcome.DRAINED  # the next receive dead-lettered it
    plan = settle_run(rig.records, rig.queue, read_ledger(rig.records), rig.clock())
    assert plan.requeue == [] and set(plan.dead) == {task.id}, plan
    assert [a["outcome"] for a in rig.attempts(task)] == ["failed", "lost", "lost", "lost"]
    assert read_ledger(rig.records).tasks[task.id].state == "dead"

    state = RunState(app_name="F", run_id="r1", backend="local", created_at=1.0)
    (shown,) = build_report(rig.records, state).tasks
    assert (shown.outcome, shown.cause, shown.attempts) == ("dead", "lost", 4)
    assert shown.error is not None and "worker" in shown.error and "died" in shown.error
    (entry,) = _dead_entries(rig.records, read_ledger(rig.records), rig.backend)
    assert entry.cause == "lost" and "died" in entry.error and entry.exit_code is None
    assert [h["cause"] for h in entry.history] == ["exit", "lost", "lost", "lost"]
    assert [h["attempt"] for h in entry.history] == [1, 2, 3, 4]


class StoppedPastLeaseRunner:
    """Runs the command, then plays what happens to a worker SIGSTOPped while it ran: its
    lease runs out and another worker receives the task (a new lease on the same message)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.inner = SubprocessRunner(grace_seconds=1)

    def run(self, argv: Any, **kwargs: Any) -> RunResult:
        result = self.inner.run(argv, **kwargs)
        self.rig.clock.advance(60)  # stopped past its lease (30 s)
        assert len(self.rig.queue.receive(1, 30)) == 1  # the other worker's delivery
        return result


def test_a_worker_that_resumes_past_its_lease_drops_the_result(tmp_path: Path) -> None:
    # The command succeeded while its worker was stopped; meanwhile the task went to
    # another worker. Resumed, the worker must not count it done nor upload: the other
    # holder carries the task (its heartbeat thread would tell too late: the worker's own
    # thread would have uploaded and written the done marker first).
    rig = Rig(tmp_path, code("print('made it')"))
    rig.worker.runner = StoppedPastLeaseRunner(rig)
    rig.worker._heartbeat.clock = rig.clock  # the heartbeat reads the same (fake) time
    task = rig.submit()
    assert rig.worker.step() is Outcome.LOST
    assert [(a["outcome"], a["cause"]) for a in rig.attempts(task)] == [("lost", "lost")]
    assert not rig.storage.exists(rig.records.done_key(task.id))
    assert rig.queue.counts().in_flight == 1  # left to the other holder, not deleted


def test_a_redrive_after_a_dead_mark_gives_the_task_its_retries_again(tmp_path: Path) -> None:
    # Two failures, then the worker vanishes on the last receive: the queue dead-letters
    # the task and the monitor marks it dead (no dead attempt). Redriven, it gets its
    # job_retries again, as after a dead attempt: one more failure is not its last.
    rig = Rig(tmp_path, code("import sys; sys.exit(4)"), retries=3)
    task = rig.submit()
    for _ in range(2):
        assert rig.worker.step() is Outcome.FAILED
        rig.clock.advance(1000)
    vanished = rig.queue.receive(1, 30)[0]
    rig.new_worker()._begin_attempt(vanished, rig.clock())
    rig.clock.advance(60)
    assert rig.queue.receive(1, 30) == [] and rig.queue.counts().dead == 1
    (open_,) = [k for k in rig.records.attempt_keys(task.id) if k.outcome == "running"]
    rig.records.close_stale(open_, "lost", rig.clock())  # as its watchdog does
    rig.records.write_mark(task.id, "dead", rig.clock(), {"error": "dead-lettered"})
    rig.clock.advance(10)
    assert rig.queue.redrive([task.id]) == 1
    rig.records.write_mark(task.id, "redrive", rig.clock(), {"from_run": "r1"})
    rig.clock.advance(1)
    assert rig.worker.step() is Outcome.FAILED
    assert [f.final for f in rig.records.failures_of(task.id)] == [False, False, False]
    assert rig.state(task) == "failed"  # retried, not dead after one attempt


def test_a_huge_log_is_stored_capped(tmp_path: Path) -> None:
    loud = code(
        "import sys\nline = b'z' * 1023 + b'\\n'\n"
        "[sys.stdout.buffer.write(line) for _ in range(6 * 1024)]\n"
        "print('the end', flush=True); sys.exit(1)"
    )
    rig = Rig(tmp_path, loud)
    task = rig.submit()
    assert rig.worker.step() is Outcome.FAILED
    ((_, kept),) = rig.records.logs_of(task.id)
    assert len(kept.encode()) < 2 * 1024 * 1024 + 200
    assert kept.startswith(f"ds: task {task.id}") and kept.rstrip().endswith("the end")
    assert "bytes cut" in kept


# --- AWS: SQS + S3 on moto, the spot notice from a loopback metadata service --------------------


def aws_rig(
    tmp_path: Path, argv: list[str], retries: int, **extra: dict[str, Any]
) -> tuple[Worker, Queue, Storage, Config]:
    from distributed_something.backends.aws.clients import AwsSettings
    from distributed_something.backends.aws.s3_storage import S3Storage

    settings = AwsSettings(region="us-east-1")
    queue, storage = moto_queue_and_bucket("FBucket", retries)
    raw: dict[str, Any] = {
        "app_name": "F",
        "backend": "aws",
        "recipe": {"name": "command", "argv": argv, "output_prefix": "out/{name}"},
        "storage": {"bucket": "fbucket"},
        "queue": {"visibility": 30, "job_retries": retries},
    }
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    config = Config.model_validate(raw)
    backend = Backend(
        "aws",
        queue,
        storage,
        NoCompute(),
        lambda name: S3Storage(settings, name) if name else storage,
        NoProvisioner(),
        memory_limit="container",  # as the AWS bundle says
    )
    worker = Worker(
        config,
        backend,
        CommandRecipe(),
        SubprocessRunner(grace_seconds=1),
        WorkerSettings(name="ec2", run_id="r1", scratch_root=tmp_path / "scratch"),
        sleep=lambda _s: None,
    )
    return worker, queue, storage, config


def test_exit_on_sqs(aws: str, tmp_path: Path) -> None:
    argv = code("import sys; print('KeyError: Metadata_Well', file=sys.stderr); sys.exit(7)")
    worker, queue, storage, _ = aws_rig(tmp_path, argv, retries=3)
    task = Task(body={"group": {"name": "a"}})
    queue.send_batch([(task.id, task.body_json())])
    assert worker.step() is Outcome.FAILED
    records = RunRecords(storage, "F", "r1")
    (failure,) = records.failures_of(task.id)
    assert (failure.cause, failure.exit_code, failure.final) == ("exit", 7, False)
    assert failure.error == "command exited with code 7: KeyError: Metadata_Well"
    worker.close()


@pytest.mark.parametrize(
    ("case", "cause", "final"),
    [
        ("signal", "signal", False),
        ("timeout", "timeout", False),
        ("missing command", "not_found", True),
        ("missing input", "not_found", True),
        ("output bucket gone", "upload", False),
    ],
)
def test_each_cause_on_sqs_and_s3(
    aws: str, tmp_path: Path, case: str, cause: str, final: bool
) -> None:
    """The causes whose path goes through SQS and S3 (moto on 127.0.0.1): the failure record
    says the cause and the error; a final one leaves nothing in the queue to retry."""
    writes = code("import sys; open(sys.argv[1] + '/r.txt', 'w').write('x')")
    argv, extra = {
        "signal": (code("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"), {}),
        "timeout": (code("import time; time.sleep(60)"), {"recipe": {"timeout": 1}}),
        "missing command": (["/nonexistent/tool-that-is-not-there"], {}),
        "missing input": (["true"], {"recipe": {"inputs": ["images/{name}.tif"]}}),
        "output bucket gone": (
            [*writes, "{output_dir}"],
            {"storage": {"destination_bucket": "no-such-bucket"}},
        ),
    }[case]
    worker, queue, storage, _ = aws_rig(tmp_path, argv, retries=3, **extra)
    task = Task(body={"group": {"name": "a"}})
    queue.send_batch([(task.id, task.body_json())])
    assert worker.step() is Outcome.FAILED
    worker.close()
    (failure,) = RunRecords(storage, "F", "r1").failures_of(task.id)
    assert (failure.cause, failure.final) == (cause, final), failure.error
    said = {
        "signal": "signal",
        "timeout": "timed out after 1 s",
        "missing command": "No such file or directory",
        "missing input": "images/a.tif",
        "output bucket gone": "no-such-bucket",
    }[case]
    assert said in failure.error
    if final:
        assert queue.receive(10, 30) == []  # not retried


def test_interrupted_on_sqs_is_re_sent_not_dead_lettered(aws: str, tmp_path: Path) -> None:
    """maxReceiveCount 1: the first receive is the last allowed. A spot notice interrupts
    the task; handed back plainly, SQS would dead-letter it at the next receive (shown at
    the end), so the worker sends it again as a fresh message and deletes the old one."""
    from distributed_something.backends.aws.instance import Imds, InterruptionWatcher
    from imds_server import imds_server

    worker, queue, storage, _ = aws_rig(
        tmp_path, code("import time; print('working', flush=True); time.sleep(60)"), retries=1
    )
    task = Task(body={"group": {"name": "spot"}})
    queue.send_batch([(task.id, task.body_json())])
    with (
        imds_server() as imds,
        InterruptionWatcher(Imds(imds.url), lambda _action: worker.stop(), interval=0.1),
    ):
        threading.Timer(1.0, imds.interrupt).start()
        started = time.monotonic()
        assert worker.step() is Outcome.STOPPED
        assert time.monotonic() - started < 20  # at once, not after the task's 60 s
    worker.close()
    records = RunRecords(storage, "F", "r1")
    prefix = f"{records.run_prefix}attempts/{task.id}/"
    (attempt,) = [json.loads(storage.get_bytes(o.key)) for o in storage.list(prefix)]
    assert (attempt["outcome"], attempt["cause"]) == ("released", "interrupted")
    assert records.failures_of(task.id) == []
    # Exactly one message of the task, fresh, and nothing in the dead letters.
    (message,) = queue.receive(10, 30)
    assert (message.task_id, message.receive_count) == (task.id, 1)
    assert queue.receive(10, 30) == [] and queue.list_dead() == []
    # What a plain hand-back would have done: dead-lettered at the next receive.
    queue.release(message, 0)
    assert queue.receive(10, 30) == []
    assert [dead.task_id for dead in queue.list_dead()] == [task.id]


class SigkilledRunner:
    """A runner whose command was SIGKILLed by no one here, where the OOM kills could not
    be counted (as in an ECS container without a readable cgroup counter)."""

    def run(self, argv: Any, *, log_path: Path, header: bytes = b"", **_: Any) -> RunResult:
        log_path.write_bytes(header + b"allocating\n")
        return RunResult(
            exit_code=-9, duration=0.5, interrupted=False, peak_memory_mb=700.0, oom_checked=False
        )


@pytest.mark.parametrize(
    ("memory_limit", "cause"),
    [("container", "memory"), ("process", "signal"), ("scheduler", "signal")],
)
def test_an_unexplained_sigkill_is_memory_only_where_a_container_limits_it(
    tmp_path: Path, memory_limit: Literal["process", "container", "scheduler"], cause: str
) -> None:
    rig = Rig(tmp_path, code("pass"), cluster={"memory": 512, "docker_cores": 1})
    rig.backend.memory_limit = memory_limit  # what the AWS / local / Slurm bundles say
    rig.worker = Worker(
        rig.config,
        rig.backend,
        rig.recipe,
        SigkilledRunner(),  # type: ignore[arg-type]
        WorkerSettings(name="w1", run_id="r1", scratch_root=rig.scratch, poll_interval=0.01),
        clock=rig.clock,
        sleep=lambda _s: None,
    )
    task = rig.submit()
    rig.worker.step()
    (failure,) = rig.records.failures_of(task.id)
    assert failure.cause == cause
    if cause == "memory":
        assert "peak 700 MB" in failure.error and "limit 512 MB per container" in failure.error
