"""Local compute: `ds worker` processes on this machine, tracked in a small JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from distributed_something.atomicfile import write_text_atomically
from distributed_something.backends.local.forking import fork_worker
from distributed_something.crash_loop import WorkerFailure, crash_loop_message, crash_looping
from distributed_something.errors import BackendError
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.project import Project
from distributed_something.worker.procgroups import proc_info, reap_dead_workers, scratch_root_of


def _alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) `ds worker` process: the one that started at
    ``start`` (clock ticks after boot, as recorded when it was started: a pid is reused),
    or, for an entry recorded without it, a process whose command line or name is ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    info = proc_info(pid)
    if info is None:
        return not Path("/proc").is_dir()  # no /proc: the signal check is all there is
    if info.exited:
        return False
    if start is not None:
        return info.start == start
    try:
        # A worker forked from `ds` keeps its parent's command line, under its own name.
        return b"distributed_something" in Path(f"/proc/{pid}/cmdline").read_bytes() or (
            Path(f"/proc/{pid}/comm").read_bytes().strip() == b"ds-worker"
        )
    except OSError:
        return False


class _Child(Protocol):
    """A worker this process started: forked (`ForkedWorker`) or a new interpreter (Popen)."""

    pid: int

    def poll(self) -> int | None: ...


class LocalCompute:
    """Starts `ds worker` processes for a project; implements the Compute contract.

    Workers are detached (their own session) so `ds start-cluster` can return while they
    work; each is forked from this process where that is safe (`forking.fork_worker`: no
    interpreter to start), else a new interpreter. Their pids live in
    ``<state_dir>/workers.json`` so any later `ds` command can see or stop them. Each
    worker's stdout/stderr go to ``<state_dir>/workers/<name>.log``.
    """

    def __init__(
        self,
        project: Project,
        stop_grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.project = project
        self.stop_grace = stop_grace
        self._procs: dict[int, _Child] = {}
        self._clock = clock
        #: the workers this process started that exited with an error (`crash_looping`)
        self._failures: list[WorkerFailure] = []

    @property
    def _file(self) -> Path:
        return self.project.state_dir / "workers.json"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._file.read_text())
        except (OSError, ValueError):
            data = {"desired": 0, "next_index": 0, "workers": []}
        return data

    def _save(self, data: dict[str, Any]) -> None:
        write_text_atomically(self._file, json.dumps(data, indent=1))

    def _is_alive(self, worker: dict[str, Any]) -> bool:
        pid = int(worker["pid"])
        proc = self._procs.get(pid)
        if proc is not None:
            return proc.poll() is None
        start = worker.get("start")
        return _alive(pid, None if start is None else int(start))

    def _live(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        return [w for w in data["workers"] if self._is_alive(w)]

    def start(self, n: int) -> None:
        """Start ``n`` more workers; the k-th process of each container waits
        ``k × seconds_to_start`` first (the family's SECONDS_TO_START stagger)."""
        data = self._load()
        self._spawn(data, n)
        data["desired"] = len(self._live(data))
        self._save(data)

    def _spawn(self, data: dict[str, Any], n: int) -> None:
        config = self.project.config
        per_container = max(config.cluster.docker_cores, 1)
        logs = self.project.state_dir / "workers"
        # Owner only: a worker's log holds its environment's effects (paths, errors, names).
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        logs.chmod(0o700)  # mkdir's mode is cut by the umask and ignored if it exists
        for _ in range(n):
            index = int(data["next_index"])
            data["next_index"] = index + 1
            name = f"local-{index}"
            delay = (index % per_container) * config.cluster.seconds_to_start
            argv = [
                sys.executable,
                "-m",
                "distributed_something",
                "worker",
                "--config",
                str(self.project.config_path.resolve()),
                "--name",
                name,
                "--start-delay",
                str(delay),
            ]
            with _private_log(logs / f"{name}.log") as out:
                proc: _Child | None = fork_worker(argv[4:], out)
                if proc is None:  # (not safe to fork here: a new interpreter)
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            self._procs[proc.pid] = proc
            entry: dict[str, Any] = {"name": name, "pid": proc.pid, "started_at": time.time()}
            info = proc_info(proc.pid)  # it cannot be reaped yet: it is our child
            if info is not None:
                entry["start"] = info.start  # with the pid, names this process for good
            data["workers"].append(entry)

    def scale(self, n: int) -> None:
        """Start workers up to ``n`` running. Never stops one: a busy local worker cannot be
        told apart from an idle one from outside, and idle ones exit when the queue drains."""
        data = self._load()
        live = self._live(data)
        self._note_failures(data["workers"], live)
        data["workers"] = live
        if n > len(live):
            if crash_looping(self._failures, self._clock(), n):
                raise BackendError(crash_loop_message(self._failures))
            self._spawn(data, n - len(live))
        data["desired"] = max(n, 0)
        self._save(data)

    def _note_failures(self, entries: list[dict[str, Any]], live: list[dict[str, Any]]) -> None:
        """Remember the workers this process started that exited with an error since the
        last look (each is dropped from the list then, so it is seen once)."""
        now = self._clock()
        for entry in entries:
            proc = self._procs.get(int(entry["pid"]))
            if entry in live or proc is None:
                continue
            code = proc.poll()
            if code is not None and code > 0:  # a signal's death is the watchdog's to settle
                log = self.project.state_dir / "workers" / f"{entry['name']}.log"
                self._failures.append(WorkerFailure(now, str(entry["name"]), code, log))

    def scale_machines(self, n: int) -> None:
        """One machine, this one: nothing to resize."""

    @property
    def scratch_root(self) -> Path:
        """The workers' scratch root (they inherit our environment, so ``DS_SCRATCH`` too)."""
        return scratch_root_of(self.project.state_dir, os.environ)

    def housekeeping(self) -> None:
        """Kill what dead workers left running (their tasks' process groups) and remove their
        scratch folders: a worker killed by the OOM killer must not leave its task's
        background processes competing with the task's next attempt."""
        reap_dead_workers(self.scratch_root)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until a worker this process started exits (the queue may be
        drained: `ds run` then ends at once instead of at its next tick)."""
        live = [proc.pid for proc in self._procs.values() if proc.poll() is None]
        _wait_for_an_exit(live, seconds, unwatched=seconds)

    def status(self) -> ComputeStatus:
        data = self._load()
        return ComputeStatus(desired=int(data["desired"]), running=len(self._live(data)))

    def stop(self) -> None:
        """SIGTERM every worker (each hands its task back), then wait; SIGKILL stragglers.
        Then kill what dead workers (those just killed included) left running and remove
        their scratch folders. Workers this object started but has not recorded yet (an
        interrupted `start`) are stopped too."""
        data = self._load()
        listed = {int(w["pid"]) for w in data["workers"]}
        unlisted = [{"pid": pid} for pid in self._procs if pid not in listed]
        live = [w for w in [*data["workers"], *unlisted] if self._is_alive(w)]
        for worker in live:
            self._signal(int(worker["pid"]), signal.SIGTERM)
        self._await_exits(live, self.stop_grace)
        killed = [w for w in live if self._is_alive(w)]
        for worker in killed:
            self._signal(int(worker["pid"]), signal.SIGKILL)
        # SIGKILL is not instant: a worker still exiting would look alive to the reaper.
        self._await_exits(killed, 10)
        for proc in self._procs.values():
            proc.poll()
        reap_dead_workers(self.scratch_root)
        data["desired"] = 0
        data["workers"] = []
        self._save(data)

    def _await_exits(self, workers: list[dict[str, Any]], seconds: float) -> None:
        """Wait until none of ``workers`` is alive, at most ``seconds``: woken as each exits
        (a run's last `ds run` step waits for its workers' ends, not for a polling step)."""
        deadline = time.monotonic() + seconds
        while True:
            alive = [int(w["pid"]) for w in workers if self._is_alive(w)]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                return
            _wait_for_an_exit(alive, left, unwatched=min(left, 0.05))

    def cleanup(self) -> None:
        self.stop()
        self._file.unlink(missing_ok=True)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_for_an_exit(pids: list[int], seconds: float, *, unwatched: float) -> None:
    """Wait ``seconds``, or until one of ``pids`` exits, each watched through a pidfd (it
    reads ready when its process exits; any process's, not only a child's). Where one
    cannot be watched (no pidfds, or it is gone), wait ``unwatched`` seconds instead."""
    fds: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(OSError, AttributeError):
                fds.append(os.pidfd_open(pid))
        if fds and len(fds) == len(pids):
            select.select(fds, [], [], seconds)
        else:
            time.sleep(unwatched)
    finally:
        for fd in fds:
            os.close(fd)


def _private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, created owner-only (0600), made so if it was not."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")
