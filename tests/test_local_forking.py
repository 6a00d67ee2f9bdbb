"""Local workers forked from the `ds` command that starts them (backends/local/forking.py),
and the new interpreter they fall back to where forking is not safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from distributed_something import backends
from distributed_something.backends import open_backend
from distributed_something.backends.local import forking
from distributed_something.jobs.parse import parse_job_text
from distributed_something.usecases.project import open_project
from testkit import wait_for

LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.skipif(not LINUX, reason="not applicable: /proc says how it started")


@pytest.fixture
def as_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as a `ds` command (the CLI says so while one runs), small and with one
    thread: whatever this test process has run before (a server's thread, a big heap), it
    forks here as a `ds` command would (the guards are tested apart)."""
    backends.set_command(True)
    monkeypatch.setattr(forking.threading, "active_count", lambda: 1)
    monkeypatch.setattr(forking, "own_data_mb", lambda: 50.0)
    yield
    backends.set_command(False)


def project(tmp_path: Path, argv: list[str], tasks: int) -> object:
    folder = tmp_path / "proj"
    folder.mkdir()
    config = {
        "app_name": "Fork",
        "recipe": {"name": "command", "argv": argv, "output_prefix": "out/{name}"},
        "cluster": {"docker_cores": 1},
        "local": {"poll_interval": 0.05},
    }
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    proj = open_project(folder / "ds.toml")
    backend = open_backend(proj)
    groups = [{"name": f"t{i}"} for i in range(tasks)]
    job = parse_job_text(json.dumps({"groups": groups}), source="job.json", suffix=".json")
    backend.queue.send_batch([(task.id, task.body_json()) for task in job.tasks])
    return backend


def started(backend: object) -> tuple[int, str, bytes]:
    """(pid, name, command line) of the one worker ``backend``'s compute started, once it
    has named itself (forked) or run its new interpreter (both take a moment)."""
    compute = backend.compute  # type: ignore[attr-defined]
    compute.start(1)
    (pid,) = compute._procs
    proc = Path(f"/proc/{pid}")

    def looks() -> tuple[str, bytes]:
        try:
            return (proc / "comm").read_text().strip(), (proc / "cmdline").read_bytes()
        except OSError:  # it has exited (a short run): its record is gone
            return "", b""

    assert wait_for(lambda: looks()[0] == "ds-worker" or b"worker\0" in looks()[1], timeout=20)
    name, cmdline = looks()
    return pid, name, cmdline


def test_a_ds_command_forks_its_workers_and_they_work(
    tmp_path: Path, as_command: None, capfd: pytest.CaptureFixture[str]
) -> None:
    backend: object = project(tmp_path, ["true"], tasks=3)
    pid, name, cmdline = started(backend)
    assert name == "ds-worker"  # forked: the command line stays its parent's (this process)
    assert b"worker" not in cmdline.split(b"\0")
    compute = backend.compute  # type: ignore[attr-defined]
    assert wait_for(lambda: compute._procs[pid].poll() is not None, timeout=60)
    assert compute._procs[pid].poll() == 0
    assert backend.queue.counts().drained  # type: ignore[attr-defined]
    log = (tmp_path / "proj" / ".ds" / "Fork" / "workers" / "local-0.log").read_text()
    assert "exits: {'done': 3, 'drained': 1}" in log
    # Its output went to its log, none to this process's (inherited) stdout and stderr.
    out, err = capfd.readouterr()
    assert "ds.worker" not in out + err


def test_the_parent_closes_its_sqlite_connections_before_it_forks(
    tmp_path: Path, as_command: None
) -> None:
    # A child inheriting SQLite's bookkeeping of the parent's locks (without the locks)
    # could lose writes: every connection of the parent is closed first, and opens again.
    backend: object = project(tmp_path, ["true"], tasks=2)
    queue = backend.queue  # type: ignore[attr-defined]
    assert queue.counts().visible == 2
    assert queue._db.conn is not None
    started(backend)
    assert queue._db.conn is None
    compute = backend.compute  # type: ignore[attr-defined]
    (child,) = compute._procs.values()
    assert wait_for(lambda: child.poll() is not None, timeout=60)
    assert queue.counts().drained  # (opened again)


def test_a_forked_worker_stops_on_sigterm_and_hands_its_task_back(
    tmp_path: Path, as_command: None
) -> None:
    backend: object = project(tmp_path, ["sleep", "30"], tasks=1)
    pid, name, _ = started(backend)
    assert name == "ds-worker"
    queue = backend.queue  # type: ignore[attr-defined]
    assert wait_for(lambda: queue.counts().in_flight == 1, timeout=30)
    backend.compute.stop()  # type: ignore[attr-defined]
    assert backend.compute._procs[pid].poll() is not None  # type: ignore[attr-defined]
    assert queue.counts().visible == 1  # handed back


@pytest.mark.parametrize("why", ["not a command", "another thread", "too big", "off"])
def test_where_forking_is_not_safe_a_new_interpreter_starts(
    tmp_path: Path, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends.set_command(why != "not a command")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    if why == "another thread":
        other.start()
    if why == "too big":
        monkeypatch.setattr(forking, "own_data_mb", lambda: forking.MAX_FORK_MB + 1)
    if why == "off":
        monkeypatch.setattr(forking, "ENABLED", False)
    try:
        backend: object = project(tmp_path, ["true"], tasks=2)
        pid, name, cmdline = started(backend)
    finally:
        stop.set()
        backends.set_command(False)
    assert name != "ds-worker"
    assert b"worker" in cmdline.split(b"\0")  # `python -m distributed_something worker …`
    compute = backend.compute  # type: ignore[attr-defined]
    assert isinstance(compute._procs[pid], subprocess.Popen)
    assert wait_for(lambda: compute._procs[pid].poll() is not None, timeout=60)
    assert backend.queue.counts().drained  # type: ignore[attr-defined]


def test_a_forked_child_that_fails_exits_without_running_its_parents_code(
    tmp_path: Path, as_command: None
) -> None:
    # A worker that cannot start (its config is gone) exits with its error code and its
    # message in its log; it never comes back into the code that forked it.
    log_path = tmp_path / "w.log"
    marker = tmp_path / "came-back"
    with log_path.open("ab") as log:
        child = forking.fork_worker(["--config", str(tmp_path / "missing.toml")], log)
    assert child is not None
    with marker.open("a") as came_back:  # a child returning here would write its pid too
        came_back.write(f"{os.getpid()}\n")
    assert wait_for(lambda: child.poll() is not None, timeout=30)
    assert child.poll() == 2  # bad input
    assert "missing.toml" in log_path.read_text()
    assert marker.read_text() == f"{os.getpid()}\n"


def test_a_worker_is_known_by_its_pid_and_start_not_by_its_command_line() -> None:
    """Local compute tells its workers from strangers by the start time recorded with the
    pid: a worker forked from the `ds` console script has `ds`'s command line (no
    "distributed_something" in it), and a pid is reused."""
    from distributed_something.backends.local.compute import _alive
    from distributed_something.worker.procgroups import proc_info

    child = subprocess.Popen(["sleep", "30"])
    try:
        info = proc_info(child.pid)
        assert info is not None
        assert _alive(child.pid, info.start)
        assert not _alive(child.pid, info.start + 1)  # another process, that pid reused
        assert not _alive(child.pid)  # recorded without a start: its command line is not ours
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid, info.start)
