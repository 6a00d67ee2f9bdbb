"""`ds worker`: the container entrypoint, and what local compute starts."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from distributed_something.backends import Backend, open_backend
from distributed_something.config.environment import config_from_environment
from distributed_something.errors import InputError
from distributed_something.project import Project
from distributed_something.recipes.registry import get_recipe
from distributed_something.records import RunRecords
from distributed_something.state import load_state
from distributed_something.usecases.project import open_project
from distributed_something.worker.loop import (
    AttemptHook,
    Holding,
    Worker,
    WorkerSettings,
    WorkerSummary,
)
from distributed_something.worker.procgroups import (
    GroupRecorder,
    reap_dead_workers,
    scratch_root_of,
)
from distributed_something.worker.runner import SubprocessRunner, tracing_enabled
from distributed_something.worker.settle import holding_of, settle

log = logging.getLogger("ds.worker")


def worker_project(config_path: Path | None) -> Project:
    """The worker's project: ``--config``, else the task definition's environment (a
    container has no config file), else the current folder's ds.toml / config.py."""
    if config_path is None:
        config = config_from_environment(os.environ)
        if config is not None:
            # No file: state and scratch live under the system's temporary folder.
            root = Path(tempfile.gettempdir()) / "ds-worker"
            return Project(config=config, config_path=root / "environment")
    return open_project(config_path)


def run_worker(project: Project, *, name: str | None, start_delay: float) -> WorkerSummary:
    """Work until the queue is drained or SIGTERM arrives.

    First kills what this machine's dead workers left running and removes their scratch
    folders; then records this process so that the next one can do the same for it."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    backend = open_backend(project)
    # Through the run's storage: a container has no state file, and `ds run --force` must
    # reach its workers wherever they run.
    state = load_state(project, backend.storage)
    run_id = os.environ.get("DS_RUN_ID") or (state.run_id if state else "default")
    if state is not None and state.run_id == run_id and not state.active:
        # Started as the run ended (`ds cleanup` racing a monitor that replaced workers):
        # its tasks belong to no run any more.
        log.info("run %s is over (cleaned up or finished): nothing to do", run_id)
        return WorkerSummary()
    if state is not None and state.run_id == run_id and state.resources.get("force"):
        # `ds run --force`: every task of this run runs again, done or not.
        check = project.config.check_if_done.model_copy(update={"enabled": False})
        config = project.config.model_copy(update={"check_if_done": check})
        project = replace(project, config=config)
    settings = WorkerSettings(
        run_id=run_id,
        scratch_root=scratch_root_of(project.state_dir, os.environ),
        poll_interval=project.config.local.poll_interval,
        start_delay=start_delay,
    )
    if name:
        settings.name = name
    _make_scratch_root(settings.scratch_root)
    # Before recording ourselves: a dead worker may have had our pid (and folder names).
    for dead in reap_dead_workers(settings.scratch_root):
        log.info("cleaned up after dead worker %d (task group %s)", dead.worker_pid, dead.pgid)
    # The watchdog settles what this worker holds should it die (`settle_dead_worker`): it
    # opens the same project, from the same file or the same environment.
    config_file = project.config_path.resolve()
    settle = str(config_file) if config_file.is_file() else ""
    recorder = GroupRecorder.start(
        settings.scratch_root, settle=settle if backend.watchdog_settles else None
    )
    try:
        runner = SubprocessRunner(recorder=recorder, measure=tracing_enabled(os.environ))
        hook = None
        if recorder is not None and backend.watchdog_settles:
            hook = _recording(recorder, run_id)
        return _work(project, backend, settings, runner, hook)
    finally:
        if recorder is not None:
            recorder.close()  # after `Worker.run` removed our scratch folder


def _make_scratch_root(root: Path) -> None:
    """Make the workers' scratch root, or say in one line why it cannot be (a full disk is
    left to the CLI's own message). The folders it makes are this user's alone (0700); one
    in a folder anyone may write (a Slurm node's /tmp) must be this user's and writable by
    nobody else (`scratch_problem`): another user who made it first could otherwise read
    the tasks' files, swap their folders for links, or forge the records of dead workers."""
    named = "DS_SCRATCH" if os.environ.get("DS_SCRATCH") else "scratch folder"
    try:
        # Looked at before anything is made in it, and again after (made meanwhile).
        problem = scratch_problem(root)
        if problem is None:
            missing = [p for p in (root, *root.parents) if not os.path.lexists(p)]
            for folder in reversed(missing):
                with contextlib.suppress(FileExistsError):  # another worker made it meanwhile
                    folder.mkdir(mode=0o700)
            problem = scratch_problem(root)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        problem = f"{root} cannot be made: {exc.strerror or exc}"
        fix = (
            "set DS_SCRATCH to a folder this user can write on a disk with room for the "
            "tasks' files (unset, it is the project's .ds/<app>/scratch)"
        )
    else:
        if problem is None:
            return
        problem = f"is not safe to use: {problem}"
        fix = (
            "remove that folder (it may be another user's doing), or set DS_SCRATCH (on "
            "Slurm: DS_SLURM_SCRATCH) to a folder of your own"
        )
    raise InputError("environment", named, f"the workers' scratch folder {problem}", fix)


def scratch_problem(root: Path) -> str | None:
    """Why the scratch folder ``root`` could be tampered with by another user, or None: a
    folder on its path whose parent anyone may write (``/tmp``) must be a real folder (not a
    link), this user's, and writable by nobody else (one not made yet is not looked at)."""
    me = os.geteuid()
    for folder in (root, *root.parents):
        parent = folder.parent
        try:
            if parent == folder or not parent.stat().st_mode & stat.S_IWOTH:
                continue
            st = os.lstat(folder)
        except FileNotFoundError:
            continue  # to be made, by this user
        where = f"{folder} (in {parent}, where anyone may write)"
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            return f"{where} is a link or a file, not a folder"
        if st.st_uid != me:
            return f"{where} belongs to user id {st.st_uid}, not to this user ({me})"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{where} may be written by other users"
    return None


def _recording(recorder: GroupRecorder, run_id: str) -> AttemptHook:
    """The worker's ``on_attempt``: what it holds goes into its record for its watchdog."""

    def record(holding: Holding) -> None:
        try:
            recorder.holding(holding_of(run_id, holding))
        except OSError as exc:  # the lease runs out instead, as without a watchdog
            log.warning("could not record the task held for the watchdog: %s", exc)

    return record


def settle_dead_worker(config: str, worker_pid: int, holding: Mapping[str, Any]) -> None:
    """What a worker's watchdog does once its worker died holding a task (`worker/settle.py`):
    open the worker's project (``config``: its file, "" for the environment's) and settle.
    Says what it did, or why it could not, on stderr (the worker's log); never raises: the
    lease running out settles it then."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        project = worker_project(Path(config) if config else None)
        backend = open_backend(project)
        records = RunRecords(backend.storage, project.config.app_name, str(holding["run"]))
        done = settle(records, backend.queue, holding, worker_pid, time.time())
    except Exception as exc:  # noqa: BLE001 - the leases run out and settle it instead
        log.warning("worker %d died; could not settle its task: %s", worker_pid, exc)
        return
    if done.task_id:
        log.warning(
            "worker %d died running task %s: its attempt is closed as lost and the task is "
            "back in the queue",
            worker_pid,
            done.task_id,
        )
    if done.held or done.done:
        log.info(
            "worker %d died: %d tasks it held went back to the queue; %d messages of tasks it "
            "finished were deleted",
            worker_pid,
            done.held,
            done.done,
        )


def _work(
    project: Project,
    backend: Backend,
    settings: WorkerSettings,
    runner: SubprocessRunner,
    on_attempt: AttemptHook | None = None,
) -> WorkerSummary:
    config = project.config
    worker = Worker(
        config,
        backend,
        get_recipe(config.recipe.name, source=str(project.config_path)),
        runner,
        settings,
        task_log=backend.task_log(),
        on_attempt=on_attempt,
    )
    worker.install_signal_handlers()
    # On AWS: instance tags, spot interruptions, idle shutdown (`Backend.worker_context`).
    with backend.worker_context(worker, settings.scratch_root):
        return worker.run()


def run_processes(
    config_path: Path | None, *, name: str, processes: int, seconds_to_start: float
) -> int:
    """Run ``processes`` single workers side by side, the k-th starting after
    ``k × seconds_to_start`` (the family's DOCKER_CORES and SECONDS_TO_START inside one
    container). SIGTERM/SIGINT are passed on, so each hands its task back. Returns the worst
    exit code."""
    argv = [sys.executable, "-m", "distributed_something", "worker", "--processes", "1"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    children = [
        subprocess.Popen(
            [*argv, "--name", f"{name}-{k}", "--start-delay", str(k * seconds_to_start)]
        )
        for k in range(processes)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
