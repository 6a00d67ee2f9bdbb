"""Starting a `ds worker` by forking the `ds` process that starts it.

A worker started as a new interpreter (``python -m distributed_something worker``) spends
about a quarter of a second of CPU starting Python and importing what `ds run` has imported
already; forked from `ds run` (or `ds start-cluster`, `ds monitor`), it starts at once. Not
every moment is safe to fork: only the thread that forks lives on in the child, so a lock
another thread held (a progress display's, a thread pool's) would stay held there for good.
`fork_worker` forks only from a `ds` command's process, when it runs a single thread and is
small (a forked worker carries its parent's memory: after the submit of a million tasks, a
new interpreter is leaner), and returns None otherwise, for the caller to start a new
interpreter.

The child has its own session, stdin from /dev/null and stdout and stderr to the worker's
log; it runs `ds worker ARGS` as the new interpreter would and leaves with ``os._exit``,
never returning into its parent's code. What it inherited is frozen for the collector
(``gc.freeze``). The parent closes its SQLite connections first (`sqlite_file.close_all`:
each opens again on its next use): SQLite's per-process bookkeeping of the locks it holds
would otherwise be inherited without the locks, and the child's own connections could lose
writes. Its command line stays its parent's (``ds run …``); its name (as
``top`` and ``ps -o comm`` show it) is ``ds-worker``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn

from distributed_something.backends import in_command
from distributed_something.backends.local.sqlite_file import close_all
from distributed_something.errors import BackendError
from distributed_something.worker.runner import own_data_mb

#: A process bigger than this (MB of private memory) starts workers as new interpreters.
MAX_FORK_MB = 256.0

#: Off: every worker is a new interpreter (tests of that path set it).
ENABLED = hasattr(os, "fork")


def may_fork() -> bool:
    """Whether a worker may be forked from this process now: forking is on, this process is
    a `ds` command (`backends.in_command`: a program using the package is not forked), and
    it runs a single thread."""
    return ENABLED and in_command() and threading.active_count() == 1


class ForkedWorker:
    """A forked worker process, as `LocalCompute` tracks its children: ``pid`` and
    ``poll()`` (the exit code once it has exited and been reaped, else None), as Popen's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_worker(args: Sequence[str], log: BinaryIO) -> ForkedWorker | None:
    """Start `ds worker ARGS` (its output to ``log``) in a child forked from this process;
    None when forking is off or not safe here (another thread runs, or this process holds
    more than `MAX_FORK_MB`, or is not a `ds` command: `may_fork`): the caller then starts
    a new interpreter."""
    if not may_fork():
        return None
    size = own_data_mb()
    if size is None or size > MAX_FORK_MB:
        return None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # else what they buffer is written twice
            stream.flush()
    close_all()  # the child must not inherit SQLite's bookkeeping of our locks
    gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        return None
    if pid == 0:
        _worker(list(args), log.fileno())  # never returns
    gc.unfreeze()
    return ForkedWorker(pid)


def _worker(args: list[str], log_fd: int) -> NoReturn:
    """The forked child: become a detached `ds worker` and exit with its code."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        # New streams on the new descriptors: the parent's may be another object (a test's
        # capture, a progress display's proxy).
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the `ds` command's is not a worker's
        logging.root.handlers.clear()  # the worker sets up its own (`run_worker`)
        _name_process(b"ds-worker")
        from distributed_something.cli.main import main

        main(["worker", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever happens, never back into the parent's code
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class _ForkedCall:
    """`ForkedCall` of `call_forked`: the child's pid and the pipe its result comes by."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid, self.pipe = pid, pipe

    def result(self) -> Any:
        with os.fdopen(self.pipe, "rb") as pipe:
            data = pipe.read()
        code = self._reap()
        try:
            ok, value = pickle.loads(data)
        except Exception:  # noqa: BLE001 - cut short: the child died writing it
            ok, value = False, f"it ended with code {code} before sending its result"
        if not ok:
            raise BackendError(f"a forked reader failed: {value}")
        return value

    def cancel(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(self.pipe)
        self._reap()

    def _reap(self) -> int:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return -1
        return os.waitstatus_to_exitcode(status)


def call_forked(fn: Callable[[], Any]) -> _ForkedCall | None:
    """`ForkCall` of the local backend: ``fn`` run in a child forked from this process, its
    return value pickled back through a pipe; None when forking is off or not safe here
    (`may_fork`). As for a forked worker, SQLite connections are closed first and the
    child never returns into its parent's code (``os._exit``); it writes nothing to the
    parent's streams (what they buffer is flushed first, not written twice)."""
    if not may_fork():
        return None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    close_all()
    gc.freeze()
    reader, writer = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        os.close(reader)
        os.close(writer)
        return None
    if pid == 0:
        os.close(reader)
        _call(fn, writer)  # never returns
    gc.unfreeze()
    os.close(writer)
    return _ForkedCall(pid, reader)


def _call(fn: Callable[[], Any], pipe: int) -> NoReturn:
    """The child of `call_forked`: run ``fn``, send (ok, its value or the error), exit."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        try:
            payload = pickle.dumps((True, fn()), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, never raised here
            payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
        with os.fdopen(pipe, "wb") as out:
            out.write(payload)
        code = 0
    finally:
        os._exit(code)


def _name_process(name: bytes) -> None:
    """Set this process's name (Linux: ``prctl(PR_SET_NAME)``, 15 bytes); nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # 15: PR_SET_NAME
