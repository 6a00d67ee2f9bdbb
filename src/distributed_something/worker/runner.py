"""Runners execute a recipe's argv. Never through a shell: job values stay literal arguments."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distributed_something.worker.procgroups import GroupRecorder, group_alive


@dataclass(frozen=True)
class RunResult:
    """How a command ended. ``interrupted`` is True when it was stopped from outside."""

    exit_code: int
    duration: float
    interrupted: bool


class Runner(Protocol):
    """Runs one argv to completion.

    ``header`` is appended to ``log_path`` first; then the command's stdout and stderr are
    streamed, interleaved, into it as they are written. When ``stop`` is set the command is
    terminated (then killed after a grace period) and the result is marked interrupted.
    Nothing the command started outlives `run`, whether it exits 0, fails or is stopped.
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
    ) -> RunResult: ...


class SubprocessRunner:
    """Runs the argv as a child process in its own process group, and leaves nothing behind.

    - The whole group is ended when the task ends, however it ends: exit 0 included, so a
      background child the command started does not outlive it. Ending a group means SIGTERM to
      the group, then SIGKILL to what is left after ``grace_seconds``.
    - On Linux the direct child gets PR_SET_PDEATHSIG (SIGKILL): if the worker dies without
      ending the group (SIGKILL, the OOM killer), the child dies with it. The kernel sends it
      when the *thread* that started the child exits, so `run` must be called from a thread
      that lives as long as the task; `run` blocks until the task ends, so any caller that
      does not hand the child over to another thread qualifies.
    - Grandchildren get no such signal; with a ``recorder`` the task's group is recorded for
      the task's duration so that a reaper can kill it once this worker is dead
      (see `procgroups`).
    """

    def __init__(
        self,
        grace_seconds: float = 10.0,
        poll_seconds: float = 0.05,
        *,
        recorder: GroupRecorder | None = None,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.recorder = recorder

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        stop: threading.Event,
        header: bytes = b"",
    ) -> RunResult:
        started = time.monotonic()
        with log_path.open("ab") as log:
            if header:
                log.write(header)
                log.flush()  # before the child writes to the same file
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                # A missing or non-executable program is the task's failure, not the worker's.
                log.write(f"ds: cannot start {argv[0]!r}: {exc}\n".encode())
                return RunResult(127, time.monotonic() - started, False)
            # The leader is not reaped before this: its pid (= the group id) cannot be reused.
            if self.recorder is not None:
                self.recorder.task_started(proc.pid)
            try:
                interrupted = self._wait(proc, stop)
            finally:
                # Also on an exception in the wait (KeyboardInterrupt): nothing may outlive us.
                self._end(proc)
                if self.recorder is not None:
                    self.recorder.task_ended()
        return RunResult(proc.returncode, time.monotonic() - started, interrupted)

    def _wait(self, proc: subprocess.Popen[bytes], stop: threading.Event) -> bool:
        """Wait for the child, checking ``stop`` at least every ``poll_seconds``."""
        pidfd = _pidfd(proc.pid)
        if pidfd is None:
            return self._wait_polling(proc, stop)
        # The pidfd turns readable when the child exits: no sleep-and-retry, which costs a
        # short task up to half a millisecond (Popen.wait's first sleep) or more.
        poller = select.poll()  # not select.select: it fails for descriptors above 1023
        poller.register(pidfd, select.POLLIN)
        try:
            while True:
                if poller.poll(self.poll_seconds * 1000):
                    proc.wait()
                    return False
                if stop.is_set():
                    return True  # `_end` stops it
        finally:
            os.close(pidfd)

    def _wait_polling(self, proc: subprocess.Popen[bytes], stop: threading.Event) -> bool:
        """`_wait` where pidfds are missing (not Linux, or a kernel before 5.3)."""
        wait = self.poll_seconds
        while True:
            try:
                proc.wait(timeout=wait)
                return False
            except subprocess.TimeoutExpired:
                # Short waits at first keep short tasks fast; longer ones spare the CPU.
                wait = min(wait * 2, 0.5)
            if stop.is_set():
                return True  # `_end` stops it

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        """End the child's whole process group: SIGTERM, then SIGKILL to whatever is left
        after the grace period. Returns once the child is reaped and the group has no live
        member (or has been sent SIGKILL)."""
        pgid = proc.pid
        deadline = time.monotonic() + self.grace_seconds
        terminated = proc.poll() is None
        if terminated:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)  # the whole group, not just the leader
                proc.wait()
                _reap_orphans(pgid)
                return
        # The leader is reaped now; the group lives on while a member does, and its number
        # stays reserved meanwhile (a pid is not reused while a group of that number exists).
        # A second SIGTERM could turn a graceful shutdown into an abrupt one: only one each.
        if not terminated and not _signal_group(pgid, signal.SIGTERM):
            return  # the usual case: nothing left, one system call
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


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when the thread that started it
    exits (PR_SET_PDEATHSIG), or None where that is not available.

    It runs in the forked child before exec, so it only makes system calls (no locks another
    thread of the parent might have held at the fork)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            # The worker died between the fork and the prctl: the signal will never come.
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


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
