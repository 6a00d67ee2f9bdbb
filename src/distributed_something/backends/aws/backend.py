"""Opening the AWS backend: SQS queue, S3 buckets, ECS/Spot compute, the provisioner."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import Any

from distributed_something.backends.aws.clients import settings_from
from distributed_something.backends.aws.compute import EcsSpotCompute
from distributed_something.backends.aws.lazy_queue import LazySqsQueue
from distributed_something.backends.aws.provisioner import AwsProvisioner
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.config.upload_flags import upload_args_from_flags
from distributed_something.errors import DSError, InputError
from distributed_something.interfaces.backend import Backend, LiveLog, TaskLogFactory
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.state import RunState, load_state, state_key


def open_aws(project: Project) -> Backend:
    """Open the AWS backend of a project. Creates nothing (setup does)."""
    config = project.config
    source = str(project.config_path)
    if not config.storage.bucket:
        raise InputError(
            source,
            "storage.bucket",
            "the aws backend needs a bucket for run records and logs",
            'set storage.bucket (config.py: AWS_BUCKET = "your-bucket")',
        )
    # Inside a container the task role gives credentials; a profile would not exist there.
    profile = None if os.environ.get("ECS_CONTAINER_METADATA_URI_V4") else config.aws.profile
    settings = settings_from(config.aws.region, profile)
    names = AwsNames(config)
    upload_args = upload_args_from_flags(config.storage.upload_flags, source=source)
    requester_pays = upload_args.pop("RequestPayer", "") == "requester"

    def resources() -> AwsResources:
        state = load_state(project)
        return AwsResources.of(state.resources) if state else AwsResources()

    @cache
    def bucket(name: str) -> Storage:
        return S3Storage(
            settings,
            name or config.storage.bucket,
            requester_pays=requester_pays,
            upload_args=upload_args,
        )

    def task_log() -> TaskLogFactory:
        # worker_side imports the worker loop: only a worker needs it.
        from distributed_something.backends.aws.worker_side import task_log_factory

        return task_log_factory(config, settings_from(config.aws.region, None))

    def worker_context(worker: Any, scratch: Path) -> contextlib.AbstractContextManager[object]:
        from distributed_something.backends.aws.worker_side import on_instance

        return on_instance(config, worker, scratch)

    def spot_prices(
        machines: Collection[tuple[str, str]], start: float, end: float
    ) -> dict[tuple[str, str], list[tuple[float, float]]]:
        from distributed_something.backends.aws.clients import client
        from distributed_something.backends.aws.spot_prices import spot_price_history

        return spot_price_history(client("ec2", settings), machines, start, end, now=time.time())

    def live_log(task_id: str, attempt: int, body: str | None) -> LiveLog:
        from distributed_something.backends.aws.task_logs import CloudWatchLiveLog

        return CloudWatchLiveLog.of(settings, names.log_group, task_id, attempt, body)

    def run_notes() -> list[str]:
        # The unattended monitor writes the bucket's copy of the run state only.
        from distributed_something.backends.aws.lambda_monitor import stopped_for

        try:
            remote = RunState.model_validate_json(bucket("").get_bytes(state_key(names.app)))
        except (KeyError, ValueError, DSError):
            return []  # a note, never a reason for `ds status` to fail
        why = stopped_for(remote)
        return [f"the unattended monitor stopped the run's workers: {why}"] if why else []

    return Backend(
        name="aws",
        queue=LazySqsQueue(settings, names, config.queue.job_retries, resources),
        storage=bucket(""),
        compute=EcsSpotCompute(
            settings, names, resources, workers_per_task=config.cluster.docker_cores
        ),
        bucket=bucket,
        provisioner=AwsProvisioner(project, settings, names),
        location=lambda name: f"s3://{name or config.storage.bucket}/",
        poll_interval=60.0,
        drain_confirm_floor=60.0,  # SQS's counts are approximate: a minute, as the Lambda's
        task_log=task_log,
        worker_context=worker_context,
        live_log=live_log,
        memory_limit="container",
        spot_prices=spot_prices,
        run_notes=run_notes,
    )
