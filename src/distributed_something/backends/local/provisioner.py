"""Local provisioning: folders, the optional `local.prepare` step, worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed_something.backends.local.compute import LocalCompute
from distributed_something.errors import BackendError
from distributed_something.interfaces.queue import Queue
from distributed_something.project import Project
from distributed_something.state import RunState
from distributed_something.templates import render
from distributed_something.ui import info


def bucket_dir(project: Project, name: str = "") -> Path:
    """The folder that plays bucket ``name`` ('' = the main bucket) on this machine."""
    main = project.config.storage.bucket or "default"
    return project.state_dir / "buckets" / (name or main)


def records_file(project: Project) -> Path:
    """The SQLite file holding the main bucket's records area (`LocalBucket`)."""
    main = bucket_dir(project)
    return project.state_dir / "records" / f"{main.name}.sqlite"


class LocalProvisioner:
    """The Provisioner of the local backend (see `interfaces.provisioner`)."""

    def __init__(self, project: Project, queue: Queue, compute: LocalCompute) -> None:
        self.project = project
        self.queue = queue
        self.compute = compute

    def setup(
        self,
        state: RunState,
        save: Callable[[RunState], None],
        previous: RunState | None = None,
    ) -> None:
        bucket_dir(self.project).mkdir(parents=True, exist_ok=True)
        prepare_once(self.project, state, bucket_dir(self.project))
        save(state)

    def start(
        self,
        state: RunState,
        fleet: dict[str, Any] | None,
        workers: int,
        save: Callable[[RunState], None],
    ) -> None:
        self.compute.scale(workers)
        save(state)

    def teardown(self, state: RunState, save: Callable[[RunState], None]) -> None:
        """Stop the workers (each hands its task back) and empty the queue; the dead-letter
        store, outputs and records stay."""
        self.compute.cleanup()
        self.queue.purge()
        save(state)


def prepare_once(project: Project, state: RunState, bucket: Path) -> None:
    """Run `local.prepare` (if configured) once per run, with ``{bucket_dir}`` = ``bucket``.

    A resumed run, or one that continues another (a redrive of its dead tasks), does not
    run it again: it may rewrite inputs the tasks already used. Raises `BackendError` when
    the step fails."""
    ready = state.resources.get("prepared") or state.resources.get("continues")
    if not project.config.local.prepare or ready:
        return
    fields = {
        "python": sys.executable,
        "config_dir": str(project.base_dir),
        "bucket_dir": str(bucket),
    }
    argv = [render(part, fields, group="local.prepare") for part in project.config.local.prepare]
    info(f"preparing inputs: {' '.join(argv)}")
    # Its output is for people: stderr, so `--json` keeps stdout clean.
    done = subprocess.run(argv, cwd=project.base_dir, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BackendError(
            f"{project.config_path}: local.prepare exited with code {done.returncode}; "
            "see its output above"
        )
    state.resources["prepared"] = True
