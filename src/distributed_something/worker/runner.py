"""Runners execute a recipe's argv. Never through a shell: job values stay literal arguments."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distributed_something.worker.procgroups import (
    TOKEN_ENV,
    GroupRecorder,
    group_alive,
    group_member_starts,
    read_small,
)

_PROC = Path("/proc")

#: ``DS_TRACE=off`` in a worker's environment turns the per-attempt measurement of memory and
#: OOM kills off (bench/trace_cost.py measures what it costs; nothing else should set it).
TRACE_ENV = "DS_TRACE"


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """False when ``environ`` says ``DS_TRACE=off`` (see `TRACE_ENV`), else True."""
    return environ.get(TRACE_ENV, "").strip().lower() != "off"


_CGROUP_ROOT = Path("/sys/fs/cgroup")
_MB = 1024 * 1024


@dataclass(frozen=True)
class RunResult:
    """How a command ended. ``interrupted`` is True when it was stopped from outside
    (``stop``), ``timed_out`` when it was killed at its time limit.

    ``peak_memory_mb`` is the peak resident memory of the task's processes (MB; the sum over
    its process group, sampled while it ran, and at least the largest process's own peak);
    ``cpu_seconds`` the user + system CPU time of the command and the children it waited
    for. ``oom_killed`` says the kernel's OOM killer ended a process of this machine's (or
    container's) memory cgroup while the command ran; ``memory_limit_mb`` is the local limit
    the command ran under (None: none). ``start_error`` (with ``start_errno``) says why the
    command could not be started (its exit code is then 127, as a shell would say).
    """

    exit_code: int
    duration: float
    interrupted: bool
    timed_out: bool = False
    peak_memory_mb: float | None = None
    cpu_seconds: float | None = None
    oom_killed: bool = False
    #: False when the OOM kills could not be counted (no readable cgroup counter)
    oom_checked: bool = False
    memory_limit_mb: int | None = None
    start_error: str | None = None
    start_errno: int | None = None


class Runner(Protocol):
    """Runs one argv to completion.

    ``header`` is appended to ``log_path`` first; then the command's stdout and stderr are
    streamed, interleaved, into it as they are written. When ``stop`` is set the command is
    terminated (then killed after a grace period) and the result is marked interrupted; the
    same happens ``timeout`` seconds after it started (the result is marked timed out).
    ``memory_limit_mb`` asks for a memory limit per process of the command where the
    platform allows (see `SubprocessRunner`). Nothing the command started outlives `run`,
    whether it exits 0, fails or is stopped. ``on_long``, if given, is called once, from
    `run`'s thread, when the command turns out not to be short: it has run a poll interval
    (the worker then hands back the tasks it held to run next).
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        stop: threading.Event,
        header: bytes = b"",
        timeout: float | None = None,
        memory_limit_mb: int | None = None,
        on_long: Callable[[], object] | None = None,
    ) -> RunResult: ...


class SubprocessRunner:
    """Runs the argv as a child process in its own process group, and leaves nothing behind.

    - The whole group is ended when the task ends, however it ends: exit 0 included, so a
      background child the command started does not outlive it. Ending a group means SIGTERM to
      the group, then SIGKILL to what is left after ``grace_seconds``.
    - With a ``recorder`` the task's environment carries the worker's token
      (`procgroups.TOKEN_ENV`), and its group is recorded once it has run ``poll_seconds``
      (until it ends), or when its leader exits before that leaving other processes in it,
      so that once this worker is dead its watchdog (at once) or a reaper (later) kills what
      the task started (see `procgroups`). A short task leaving nothing behind is not
      recorded (a /proc read and a write less): should the worker die in that moment, its
      watchdog still kills every process holding the token.
    - Without a recorder that has a watchdog, on Linux, the direct child gets
      PR_SET_PDEATHSIG (SIGKILL): if the worker dies without ending the group (SIGKILL, the
      OOM killer), the child dies with it. The kernel sends it when the *thread* that started
      the child exits, so `run` must be called from a thread that lives as long as the task;
      `run` blocks until the task ends, so any caller that does not hand the child over to
      another thread qualifies. It is set by a ``preexec_fn``, which makes subprocess fork
      the whole worker instead of using ``vfork`` (milliseconds per task): the watchdog
      makes it unnecessary.
    - A ``timeout`` ends the group the same way once it has run that long (``timed_out``).
    - Memory is always measured: the resident memory of the group's processes is added up
      from /proc a few times a second (100 ms after the start, then every 0.2, 0.4 and 0.5 s:
      a sample reads every process's stat, ~1-2 ms, too much for a 50 ms task), and the
      leader is reaped with ``wait4``, whose peak of the largest process is the floor (it
      catches a spike between two samples) and whose CPU times give ``cpu_seconds``. That
      peak counts, from the start, the memory of the process that started it (Linux records
      the old address space's high-water mark at ``exec``, and a ``vfork``ed or forked child
      runs in its spawner's until then): a peak not above the worker's own is not the
      command's, and the samples alone say it.
    - ``memory_limit_mb`` is enforced with RLIMIT_DATA on the child: an allocation over it
      fails (Python's MemoryError, C++'s bad_alloc); cgroups are not used. The child
      inherits it from the worker, which lowers its own limit only while it starts the child
      (`_inherited_data_limit`), when its own memory is well below the limit; otherwise a
      ``preexec_fn`` sets it (`_child_setup`). The kernel's OOM kills in the worker's own
      memory cgroup (a container's limit) are counted before and after the command
      (``oom_killed``); the count after a task, read under a second before the next one
      starts, stands for that one's count before.
    - ``measure=False`` (``DS_TRACE=off``, for bench/trace_cost.py only) skips the memory
      samples and the OOM counts: the result then has no peak memory and no CPU time.
    """

    def __init__(
        self,
        grace_seconds: float = 10.0,
        poll_seconds: float = 0.05,
        *,
        recorder: GroupRecorder | None = None,
        measure: bool = True,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.recorder = recorder
        self.measure = measure
        #: the OOM kill count read after the last task, and when (time.monotonic)
        self._oom_last: tuple[int | None, float] = (None, -1e9)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        stop: threading.Event,
        header: bytes = b"",
        timeout: float | None = None,
        memory_limit_mb: int | None = None,
        on_long: Callable[[], object] | None = None,
    ) -> RunResult:
        started = time.monotonic()
        oom_before = self._oom_count_before(started) if self.measure else None
        # A bare descriptor: a buffered file object costs more than the one write made here.
        # Never through a link: the log is the worker's file, not one the task points at.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        log = os.open(log_path, flags, 0o666)
        try:
            if header:
                os.write(log, header)  # before the child writes to the same file
            child_env = dict(env)
            recorder = self.recorder
            if recorder is not None:
                child_env[TOKEN_ENV] = recorder.token
            # Should the watchdog be gone (killed), the kernel's signal stands in for it.
            pdeathsig = recorder is None or not recorder.watched
            try:
                with _inherited_data_limit(memory_limit_mb) as inherited:
                    proc = subprocess.Popen(
                        list(argv),
                        executable=_program(argv[0], child_env),
                        cwd=cwd,
                        env=child_env,
                        stdin=_devnull(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_child_setup(
                            None if inherited else memory_limit_mb, pdeathsig=pdeathsig
                        ),
                    )
            except OSError as exc:
                # A missing or non-executable program is the task's failure, not the worker's.
                problem = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
                os.write(log, f"ds: {problem}\n".encode())
                return RunResult(
                    127,
                    time.monotonic() - started,
                    False,
                    memory_limit_mb=memory_limit_mb,
                    start_error=problem,
                    start_errno=exc.errno,
                )
            child = _Child(proc, sample=self.measure, recorder=self.recorder)
            deadline = None if timeout is None else started + timeout
            ended_by = None
            try:
                ended_by = self._wait(child, stop, deadline, on_long)
            finally:
                # Also on an exception in the wait (KeyboardInterrupt): nothing may outlive us.
                self._end(child)
                child.forget()
        finally:
            os.close(log)
        oom_after = oom_kill_count() if self.measure else None
        self._oom_last = (oom_after, time.monotonic())
        measured = self.measure
        return RunResult(
            proc.returncode,
            time.monotonic() - started,
            ended_by == "stop",
            timed_out=ended_by == "timeout",
            peak_memory_mb=child.peak_mb() if measured else None,
            cpu_seconds=child.cpu_seconds() if measured else None,
            oom_killed=oom_before is not None and oom_after is not None and oom_after > oom_before,
            oom_checked=oom_before is not None and oom_after is not None,
            memory_limit_mb=memory_limit_mb,
        )

    def _oom_count_before(self, now: float) -> int | None:
        """The OOM kill count before a task: the last task's count after, when read under a
        second ago (one /proc read per task instead of two), else read now."""
        count, at = self._oom_last
        return count if count is not None and now - at < 1.0 else oom_kill_count()

    def _wait(
        self,
        child: _Child,
        stop: threading.Event,
        deadline: float | None,
        on_long: Callable[[], object] | None = None,
    ) -> str | None:
        """Wait for the child, checking ``stop`` and the deadline at least every
        ``poll_seconds`` and sampling its group's memory now and then; ``on_long`` is called
        at the first poll interval that passes. Returns None when it exited, ``"stop"`` or
        ``"timeout"`` when it must be ended (`_end` does)."""
        pidfd = _pidfd(child.proc.pid)
        if pidfd is None:
            return self._wait_polling(child, stop, deadline, on_long)
        # The pidfd turns readable when the child exits: no sleep-and-retry, which costs a
        # short task up to half a millisecond (Popen.wait's first sleep) or more.
        poller = select.poll()  # not select.select: it fails for descriptors above 1023
        poller.register(pidfd, select.POLLIN)
        try:
            while True:
                if poller.poll(self.poll_seconds * 1000):
                    child.reap(block=True)
                    return None
                reason = _between_polls(child, stop, deadline, on_long)
                on_long = None
                if reason is not None:
                    return reason
        finally:
            os.close(pidfd)

    def _wait_polling(
        self,
        child: _Child,
        stop: threading.Event,
        deadline: float | None,
        on_long: Callable[[], object] | None = None,
    ) -> str | None:
        """`_wait` where pidfds are missing (not Linux, or a kernel before 5.3)."""
        wait = self.poll_seconds
        while True:
            if child.reap_within(wait):
                return None
            reason = _between_polls(child, stop, deadline, on_long)
            on_long = None
            if reason is not None:
                return reason
            # Short waits at first keep short tasks fast; longer ones spare the CPU.
            wait = min(wait * 2, 0.5)

    def _end(self, child: _Child) -> None:
        """End the child's whole process group: SIGTERM, then SIGKILL to whatever is left
        after the grace period. Returns once the child is reaped and the group has no live
        member (or has been sent SIGKILL)."""
        proc = child.proc
        pgid = proc.pid
        deadline = time.monotonic() + self.grace_seconds
        terminated = not child.reap(block=False)
        if terminated:
            child.record()  # it may take the grace period to end: recorded meanwhile
            child.sample()  # what it holds now, before it is stopped
            _signal_group(pgid, signal.SIGTERM)
            if not child.reap_within(self.grace_seconds):
                _signal_group(pgid, signal.SIGKILL)  # the whole group, not just the leader
                child.reap(block=True)
                _reap_orphans(pgid)
                return
        # The leader is reaped now; the group lives on while a member does, and its number
        # stays reserved meanwhile (a pid is not reused while a group of that number exists).
        # A second SIGTERM could turn a graceful shutdown into an abrupt one: only one each.
        if not terminated and not _signal_group(pgid, signal.SIGTERM):
            return  # the usual case: nothing left, one system call
        child.record_lingering()  # what the leader left may take the grace period to end
        wait = 0.005
        while True:
            _reap_orphans(pgid)
            if not group_alive(pgid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(wait)
            wait = min(wait * 2, 0.1)
        _signal_group(pgid, signal.SIGKILL)
        _reap_orphans(pgid)


def _why_end(stop: threading.Event, deadline: float | None) -> str | None:
    if stop.is_set():
        return "stop"
    if deadline is not None and time.monotonic() >= deadline:
        return "timeout"
    return None


class _Child:
    """The task's leader process, reaped with ``wait4`` so its resource usage is kept, and
    the peak memory of its process group, sampled from /proc.

    Popen's own ``wait``/``poll`` must not be used on it (they reap without the usage);
    `reap` sets ``proc.returncode`` as they would.
    """

    #: seconds between memory samples: short at first (short tasks), then at most this
    MAX_SAMPLE_INTERVAL = 0.5

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        sample: bool = True,
        recorder: GroupRecorder | None = None,
    ) -> None:
        self.proc = proc
        self.sampling = sample
        self.recorder = recorder
        #: whether the group is in the recorder's record (`record`)
        self.recorded = False
        self.usage: resource.struct_rusage | None = None
        self.peak_bytes = 0
        #: the starting process's own peak: what ``wait4``'s peak of the leader may be made of
        self.spawner_peak = _own_peak_bytes()
        self._interval = 0.1
        self._next_sample = time.monotonic() + self._interval

    def record(self) -> None:
        """Record the group (once), while the leader is not reaped: its pid (= the group
        id) cannot be reused before."""
        if self.recorder is not None and not self.recorded and self.proc.returncode is None:
            self.recorder.task_started(self.proc.pid)
            self.recorded = True

    def record_lingering(self) -> None:
        """Record the group (once) after its leader was reaped, while other members live:
        guarded by the earliest member's start (a read of all /proc, for such groups only)."""
        if self.recorder is not None and not self.recorded:
            starts = group_member_starts(self.proc.pid)
            if starts:
                self.recorder.task_started(self.proc.pid, start=min(starts))
                self.recorded = True

    def forget(self) -> None:
        """The group is ended: take it out of the record (if it was recorded)."""
        if self.recorder is not None and self.recorded:
            self.recorder.task_ended()
            self.recorded = False

    def reap(self, *, block: bool) -> bool:
        """Reap the leader if it exited (waiting for it with ``block``); True once reaped."""
        if self.proc.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (SIGCHLD ignored): no status, no usage; 0 as Popen says.
            self.proc.returncode = 0
            return True
        if pid == 0:
            return False
        self.usage = usage
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def reap_within(self, seconds: float) -> bool:
        """Reap the leader if it exits within ``seconds``; True once reaped."""
        deadline = time.monotonic() + seconds
        wait = 0.001
        while not self.reap(block=False):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(wait, left))
            wait = min(wait * 2, 0.05)
        return True

    def maybe_sample(self) -> None:
        if not self.sampling:
            return
        now = time.monotonic()
        if now >= self._next_sample:
            self.sample()
            self._interval = min(self._interval * 2, self.MAX_SAMPLE_INTERVAL)
            self._next_sample = time.monotonic() + self._interval

    def sample(self) -> None:
        """Add up the resident memory of the group's live processes; keep the peak."""
        if not self.sampling:
            return
        total = group_rss_bytes(self.proc.pid)
        if total is not None:
            self.peak_bytes = max(self.peak_bytes, total)

    def peak_mb(self) -> float | None:
        own = self.usage.ru_maxrss * _maxrss_unit() if self.usage is not None else 0
        if own <= self.spawner_peak:
            own = 0  # the spawner's memory, counted at exec: not the command's
        peak = max(self.peak_bytes, own)
        return round(peak / _MB, 1) if peak else None

    def cpu_seconds(self) -> float | None:
        if self.usage is None:
            return None
        return round(self.usage.ru_utime + self.usage.ru_stime, 3)


#: (the process, when read by the monotonic clock, bytes) of `_own_peak_bytes`: read at
#: most once a `OWN_PEAK_MAX_AGE` (a worker starts a no-op task every millisecond or two)
_own_peak: list[float] = [0, -math.inf, 0]
OWN_PEAK_MAX_AGE = 1.0


def _own_peak_bytes() -> int:
    """This process's peak resident memory since its own ``exec`` (Linux: VmHWM of
    /proc/self/status; ``ru_maxrss`` elsewhere, which may also count its parent's): the
    high-water mark a child started now carries into its ``wait4`` peak. It only grows, and
    a worker's moves little: read again after `OWN_PEAK_MAX_AGE` seconds."""
    now, pid = time.monotonic(), os.getpid()
    if _own_peak[0] == pid and now - _own_peak[1] < OWN_PEAK_MAX_AGE:  # not a fork's parent's
        return int(_own_peak[2])
    found = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _maxrss_unit()
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    _own_peak[:] = [pid, now, found]
    return found


def _maxrss_unit() -> int:
    """Bytes per unit of ``ru_maxrss``: kilobytes on Linux, bytes on macOS."""
    return 1 if sys.platform == "darwin" else 1024


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_stat_rss(text: str) -> tuple[int, int]:
    """(process group, resident pages) from the text of /proc/<pid>/stat. Raises ValueError
    (or IndexError) on text that is not one."""
    # The command name (2nd field) may hold spaces and parentheses: split after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5) (state); field 5 is pgrp, field 24 rss (pages).
    return int(fields[2]), int(fields[21])


def group_rss_bytes(pgid: int) -> int | None:
    """The resident memory of the processes of group ``pgid`` added up (bytes), or None
    where there is no /proc. Reads /proc/<pid>/stat of every process: a few milliseconds."""
    try:
        entries = [entry.name for entry in os.scandir(_PROC)]
    except OSError:
        return None
    total = 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            group, pages = parse_stat_rss((_PROC / name / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if group == pgid:
            total += pages * _PAGE_SIZE
    return total


def parse_oom_kills(text: str) -> int | None:
    """The ``oom_kill`` counter of a cgroup's memory.events (v2) or memory.oom_control (v1)
    text, or None when it has none (kernels before 4.13)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def oom_kill_count() -> int | None:
    """How many processes the OOM killer has ended in this process's memory cgroup (the
    container's limit on ECS, a Slurm job's), or None when that cannot be read."""
    known = _oom_counter.get(os.getpid())
    if known is not None:
        # Read once per task: the file found last time is read alone, through the
        # descriptor kept open (a process does not change cgroups while it works; if the file
        # goes, the search starts again).
        try:
            count = parse_oom_kills(os.pread(known, 65536, 0).decode(errors="replace"))
        except OSError:
            count = None
        if count is not None:
            return count
    _forget_oom_counter()
    for candidate in _oom_counter_candidates():
        try:
            count = parse_oom_kills(read_small(candidate))
        except OSError:
            continue
        if count is not None:
            with contextlib.suppress(OSError):
                _oom_counter[os.getpid()] = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
            return count
    return None


def _forget_oom_counter() -> None:
    """Close this process's descriptor of the counter file (a forked child's inherited ones
    are left alone: they are its parent's to close)."""
    fd = _oom_counter.pop(os.getpid(), None)
    _oom_counter.clear()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


#: a descriptor of the counter file `oom_kill_count` found, by the pid of the process that
#: found it (a forked child looks again: it may live in another cgroup)
_oom_counter: dict[int, int] = {}


def _oom_counter_candidates() -> list[Path]:
    """The files that may hold this process's memory cgroup's OOM kill counter, best first."""
    try:
        lines = (_PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    candidates: list[Path] = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip().lstrip("/")
        if controllers == "" and line.startswith("0::"):  # cgroup v2
            root = _CGROUP_ROOT
            candidates += [root / relative / "memory.events", root / "memory.events"]
        elif "memory" in controllers.split(","):  # cgroup v1
            base = _CGROUP_ROOT / "memory"
            candidates += [base / relative / "memory.oom_control", base / "memory.oom_control"]
    return candidates


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to group ``pgid``; False when the group has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _reap_orphans(pgid: int) -> None:
    """Reap exited members of group ``pgid`` that are our children. When the worker is PID 1
    (a container without an init) or a subreaper, the group's orphans are re-parented to it,
    and nothing else would collect them. Only the group's members: other children (none of
    which this runner owns once its leader is reaped) keep their exit status."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    # prctl(int option, unsigned long arg2, ...): declared, so no argument is passed as a
    # 32-bit int where the kernel reads 64 bits.
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    function: Callable[..., int] = prctl
    return function


_PRCTL = _load_prctl()


def _between_polls(
    child: _Child,
    stop: threading.Event,
    deadline: float | None,
    on_long: Callable[[], object] | None,
) -> str | None:
    """What `SubprocessRunner._wait` does each time a poll interval passes with the child
    still running: record its group, call ``on_long`` (given at the first interval only),
    and say why it must end (``"stop"``, ``"timeout"``), else sample its memory when due."""
    child.record()
    if on_long is not None:
        on_long()
    reason = _why_end(stop, deadline)
    if reason is None:
        child.maybe_sample()
    return reason


def _child_setup(
    memory_limit_mb: int | None, *, pdeathsig: bool = True
) -> Callable[[], None] | None:
    """A ``preexec_fn`` that, with ``pdeathsig``, asks the kernel to SIGKILL the child when the
    thread that started it exits (PR_SET_PDEATHSIG, where available) and, with
    ``memory_limit_mb``, sets RLIMIT_DATA to that many MB, or None when there is nothing to
    set up (then subprocess starts the child with ``vfork``, much faster).

    RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 it counts the memory a process has made
    writable (heap, private mappings, thread stacks), close to what it can really use,
    whereas RLIMIT_AS counts reserved address space too: a JVM (Fiji, Bio-Formats) given a
    large -Xmx reserves its whole heap at once and would not start under it. The limit is per
    process: children inherit it, but are not counted together.

    It runs in the forked child before exec, so it only makes system calls (no locks another
    thread of the parent might have held at the fork)."""
    prctl = _PRCTL if pdeathsig else None
    limit = memory_limit_mb * _MB if memory_limit_mb else None
    if prctl is None and limit is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        if limit is not None:
            with contextlib.suppress(ValueError, OSError):  # never above the hard limit
                hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
                capped = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
                resource.setrlimit(resource.RLIMIT_DATA, (capped, hard))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:
                # The worker died between the fork and the prctl: the signal will never come.
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


#: Held while the worker's own RLIMIT_DATA is lowered for a child to inherit.
_LIMIT_LOCK = threading.Lock()
#: How far below a task's memory limit the worker's own writable memory must be for the
#: worker to lower its own limit to it while starting the task (its other threads keep
#: allocating meanwhile).
LIMIT_HEADROOM_MB = 256


def own_data_mb() -> float | None:
    """This process's writable private memory (VmData, what RLIMIT_DATA counts) in MB, or
    None where /proc does not say."""
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            text = os.read(fd, 16384)
        finally:
            os.close(fd)
    except OSError:
        return None
    start = text.find(b"\nVmData:")
    if start < 0:
        return None
    fields = text[start + 8 : text.find(b"\n", start + 1)].split()
    return int(fields[0]) / 1024 if fields and fields[0].isdigit() else None


def _own_data_mb_lately() -> float | None:
    """`own_data_mb`, read at most once a second (it is checked before every task; a worker's
    own memory does not grow by `LIMIT_HEADROOM_MB` in a second between two tasks)."""
    now = time.monotonic()
    value, at = _OWN_DATA.get(os.getpid(), (None, -1e9))
    if value is None or now - at >= 1.0:
        value = own_data_mb()
        _OWN_DATA[os.getpid()] = (value, now)
    return value


#: `_own_data_mb_lately`'s last reading and when, by process (a forked child reads again)
_OWN_DATA: dict[int, tuple[float | None, float]] = {}


@contextlib.contextmanager
def _inherited_data_limit(memory_limit_mb: int | None) -> Iterator[bool]:
    """With ``memory_limit_mb``, lower this process's soft RLIMIT_DATA to it for the block
    (a child started inside inherits it) and yield True; yield False (nothing changed) when
    there is no limit, no RLIMIT_DATA, or this process's own memory is not at least
    `LIMIT_HEADROOM_MB` below the limit: its other threads would then fail to allocate."""
    if not memory_limit_mb or not sys.platform.startswith("linux"):
        yield False
        return
    with _LIMIT_LOCK:
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        except (ValueError, OSError):
            yield False
            return
        limit = memory_limit_mb * _MB
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        own = _own_data_mb_lately()
        if own is None or own * _MB + LIMIT_HEADROOM_MB * _MB > limit:
            yield False
            return
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        except (ValueError, OSError):
            yield False
            return
        try:
            yield True
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


_DEVNULL: dict[int, int] = {}


def _devnull() -> int:
    """A descriptor of /dev/null for the children's stdin, opened once per process (not once
    per task, as ``subprocess.DEVNULL`` does); not inherited (children get it as stdin)."""
    pid = os.getpid()
    fd = _DEVNULL.get(pid)
    if fd is None:
        fd = _DEVNULL[pid] = os.open(os.devnull, os.O_RDONLY)
    return fd


def _program(name: str, env: Mapping[str, str]) -> str | None:
    """The file the child would run for ``name`` (its argv[0]) with ``env``'s PATH, looked
    up once per worker process: left to Popen, the child tries every PATH entry before the
    right one for every task. None for a name with a ``/`` (run as given), one not found,
    or one found through a relative PATH entry (which the child resolves in its own folder):
    Popen then searches, and reports a missing program, as before."""
    if "/" in name:
        return None
    key = (name, env.get("PATH", os.defpath), os.getpid())
    found = _PROGRAMS.get(key)
    if found is not None and os.access(found, os.X_OK):
        return found
    found = shutil.which(name, path=key[1])
    if found is None or not Path(found).is_absolute():
        return None
    _PROGRAMS[key] = found
    return found


#: `_program`'s findings, by name, PATH and process
_PROGRAMS: dict[tuple[str, str, int], str] = {}


def _pidfd(pid: int) -> int | None:
    """A file descriptor that turns readable when process ``pid`` exits, or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:  # ENOSYS on old kernels, EPERM under some sandboxes
        return None
    return fd
