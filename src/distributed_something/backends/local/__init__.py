"""The local backend: SQLite queue, folder storage (its records area in SQLite), worker
processes on this machine."""

from __future__ import annotations

from functools import cache

from distributed_something.backends.local.compute import LocalCompute
from distributed_something.backends.local.forking import call_forked
from distributed_something.backends.local.provisioner import (
    LocalProvisioner,
    bucket_dir,
    records_file,
)
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.interfaces.backend import Backend, BackendKind
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project


def open_local(project: Project) -> Backend:
    """Open the local backend of a project (folders and the queue file appear on first use)."""

    @cache
    def bucket(name: str) -> Storage:
        folder = bucket_dir(project, name)
        if name and folder == bucket_dir(project):
            return bucket("")  # the main bucket by its name: one view of its records
        if name:
            return FolderStorage(folder)
        return LocalBucket(FolderStorage(folder), SqliteObjects(records_file(project)))

    queue = SqliteQueue(
        project.state_dir / "queue.sqlite",
        max_receive_count=project.config.queue.job_retries,
    )
    compute = LocalCompute(project)
    return Backend(
        name="local",
        queue=queue,
        storage=bucket(""),
        compute=compute,
        bucket=bucket,
        provisioner=LocalProvisioner(project, queue, compute),
        location=lambda name: str(bucket_dir(project, name)),
        poll_interval=1.0,
        drain_confirm_floor=0.0,  # the SQLite queue's counts are exact: one reading ends a run
        max_workers=project.config.local.workers,
        monitor_shares_cpu=True,
        fork_call=call_forked,
    )


def _unread_input(project: Project, bucket: str, key: str) -> str:
    return f"it is not in local storage yet ({bucket_dir(project, bucket) / key})"


KIND = BackendKind(
    name="local",
    open=open_local,
    runs_here=True,
    state_in_project=True,
    bucket_folder=bucket_dir,
    folder_storage=FolderStorage,
    unread_input=_unread_input,
)
