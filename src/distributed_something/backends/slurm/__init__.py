"""The Slurm backend: job arrays of `ds worker` over slices of the tasks, with the queue
and storage in a folder on the cluster's shared filesystem. ds runs no daemon on the
cluster: Slurm schedules, the workers write the records, the login node reads them."""

from __future__ import annotations

import os
from functools import cache

from distributed_something.backends.local.storage import FolderStorage
from distributed_something.backends.slurm.checks import validate_notes
from distributed_something.backends.slurm.compute import (
    SlurmCompute,
    TimeLeft,
    environment_slice,
    environment_worker,
    shared_dir,
)
from distributed_something.backends.slurm.provisioner import SlurmProvisioner
from distributed_something.backends.slurm.slices import SliceQueue
from distributed_something.interfaces.backend import Backend, BackendKind
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project


def open_slurm(project: Project) -> Backend:
    """Open the Slurm backend of a project. Creates nothing and calls no Slurm command; in
    a Slurm job (``DS_SLURM_SLICE`` set) the queue is bound to that job's slice."""
    shared = shared_dir(project)
    main = project.config.storage.bucket or "default"

    @cache
    def bucket(name: str) -> Storage:
        return FolderStorage(shared / "buckets" / (name or main))

    worker = environment_worker()
    job_id = os.environ.get("SLURM_JOB_ID", "")
    clock = TimeLeft(job_id) if worker and job_id else None
    queue = SliceQueue(
        shared / "queue",
        max_receive_count=project.config.queue.job_retries,
        tasks_per_slice=project.config.slurm.tasks_per_job,
        slice_id=environment_slice(),
        worker=worker,
        # A worker in a Slurm job goes on to further slices, and takes one more task,
        # while its job has the time.
        take_more=clock,
        time_for=clock.covers if clock is not None else None,
        spread=project.config.slurm.max_jobs or project.config.worker_count,
    )
    storage = bucket("")
    compute = SlurmCompute(project, queue, storage, shared)
    return Backend(
        name="slurm",
        queue=queue,
        storage=storage,
        compute=compute,
        bucket=bucket,
        provisioner=SlurmProvisioner(project, queue, compute, shared / "buckets" / main),
        location=lambda name: str(shared / "buckets" / (name or main)),
        # squeue every 10 s is light for the controller and quick enough for a tail
        poll_interval=10.0,
        drain_confirm_floor=0.0,  # the slice queue is files read whole: exact counts
        # Its compute settles a dead worker's slice with Slurm's word on how its job ended.
        watchdog_settles=False,
        memory_limit="scheduler",
        # scancel signals every process of the job: a command's zero exit after it says
        # nothing of a complete run (a script without `set -e` whose child it killed).
        stop_reaches_command=True,
    )


#: `ds validate` checks Slurm's commands and the configured partition (checks.py)
KIND = BackendKind(
    name="slurm",
    open=open_slurm,
    validate_notes=validate_notes,
    # An array element waits in Slurm's queue until the cluster (and its %N throttle) has room.
    workers_asked="submitted as Slurm jobs",
    workers_queued="queued (PENDING in squeue)",
)
