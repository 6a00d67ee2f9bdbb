"""Runners execute a recipe's argv. Never through a shell: job values stay literal arguments."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


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
    """Runs the argv as a child process in its own process group (so the whole tree stops)."""

    def __init__(self, grace_seconds: float = 10.0, poll_seconds: float = 0.05) -> None:
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds

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
                )
            except OSError as exc:
                # A missing or non-executable program is the task's failure, not the worker's.
                log.write(f"ds: cannot start {argv[0]!r}: {exc}\n".encode())
                return RunResult(127, time.monotonic() - started, False)
            interrupted = self._wait(proc, stop)
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
                    self._terminate(proc)
                    return True
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
                self._terminate(proc)
                return True

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        self._signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace_seconds)
        except subprocess.TimeoutExpired:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


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
