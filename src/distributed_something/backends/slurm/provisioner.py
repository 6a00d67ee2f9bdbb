"""Slurm provisioning: the shared folders, `local.prepare` once per run, the job arrays."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed_something.backends.slurm import commands
from distributed_something.backends.slurm.compute import SlurmCompute
from distributed_something.backends.slurm.slices import SliceQueue
from distributed_something.errors import BackendError
from distributed_something.project import Project
from distributed_something.state import RunState
from distributed_something.templates import render
from distributed_something.ui import info


class SlurmProvisioner:
    """The Provisioner of the Slurm backend (see `interfaces.provisioner`). The job ids it
    submits are recorded in ``state.resources["slurm"]`` (and in the shared folder's
    ``slurm/jobs.json``, which `ds monitor`'s later submissions add to)."""

    def __init__(
        self, project: Project, queue: SliceQueue, compute: SlurmCompute, bucket_dir: Path
    ) -> None:
        self.project = project
        self.queue = queue
        self.compute = compute
        self.bucket_dir = bucket_dir

    def setup(self, state: RunState, save: Callable[[RunState], None]) -> None:
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        self.queue.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        ready = state.resources.get("prepared") or state.resources.get("continues")
        if self.project.config.local.prepare and not ready:
            self._prepare()
            state.resources["prepared"] = True
        save(state)

    def start(
        self,
        state: RunState,
        fleet: dict[str, Any] | None,
        workers: int,
        save: Callable[[RunState], None],
    ) -> None:
        """Submit job arrays for every slice with work; returns once Slurm took them."""
        self.compute.start(workers)
        self._record(state)
        save(state)

    def teardown(self, state: RunState, save: Callable[[RunState], None]) -> None:
        """Cancel every job array of the run (workers hand their tasks back), then drop the
        queue's unfinished messages; dead letters, outputs, records and Slurm's output files
        stay."""
        recorded = state.resources.get("slurm", {}).get("jobs", [])
        self.compute.cleanup()
        leftover = [j for j in recorded if j not in set(self.compute.job_ids())]
        if leftover:
            # Arrays recorded in the run state but not in jobs.json (it was lost): cancel
            # them too; Slurm ignores ids it no longer knows.
            try:
                commands.cancel(leftover)
            except BackendError as error:
                info(f"scancel {' '.join(leftover)}: {error}")
        self.queue.purge()
        self._record(state)
        save(state)

    def _record(self, state: RunState) -> None:
        state.resources["slurm"] = {
            "job_name": self.compute.job_name,
            "jobs": self.compute.job_ids(),
            "shared_dir": str(self.compute.dir.parent),
        }

    def _prepare(self) -> None:
        project = self.project
        fields = {
            "python": sys.executable,
            "config_dir": str(project.base_dir),
            "bucket_dir": str(self.bucket_dir),
        }
        argv = [
            render(part, fields, group="local.prepare") for part in project.config.local.prepare
        ]
        info(f"preparing inputs: {' '.join(argv)}")
        done = subprocess.run(argv, cwd=project.base_dir, stdout=sys.stderr, check=False)
        if done.returncode != 0:
            raise BackendError(
                f"{project.config_path}: local.prepare exited with code {done.returncode}; "
                "see its output above"
            )
