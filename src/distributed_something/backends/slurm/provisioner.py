"""Slurm provisioning: the shared folders, `local.prepare` once per run, the job arrays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed_something.backends.local.provisioner import prepare_once
from distributed_something.backends.slurm import commands
from distributed_something.backends.slurm.checks import SlurmNotReady, slurm_findings
from distributed_something.backends.slurm.compute import SlurmCompute
from distributed_something.backends.slurm.slices import SliceQueue
from distributed_something.errors import BackendError
from distributed_something.project import Project
from distributed_something.state import RunState
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

    def setup(
        self,
        state: RunState,
        save: Callable[[RunState], None],
        previous: RunState | None = None,
    ) -> None:
        """The run's folders and its prepared inputs; first what `ds validate` checks of
        this machine's Slurm (`checks.slurm_findings`: its commands, the partition, the
        controller), so `ds run` and `ds setup` stop before anything is made."""
        findings = slurm_findings(self.project)
        if findings:
            raise SlurmNotReady(findings)
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        self.queue.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        prepare_once(self.project, state, self.bucket_dir)
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
