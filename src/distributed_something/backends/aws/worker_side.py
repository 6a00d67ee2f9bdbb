"""What a worker does on an EC2 instance besides the task loop: name tag, idle-CPU alarm,
resource log, spot interruption notices, per-task CloudWatch log streams."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from distributed_something.backends.aws.clients import AwsSettings, client, settings_from
from distributed_something.backends.aws.instance import (
    InterruptionWatcher,
    ResourceLogger,
    ensure_idle_alarm,
    imds_from_env,
    tag_instance_name,
)
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.task_logs import CloudWatchTaskLog
from distributed_something.config.model import Config
from distributed_something.errors import DSError
from distributed_something.worker.loop import TaskLogFactory, Worker

log = logging.getLogger("ds.worker")


def task_log_factory(config: Config, settings: AwsSettings) -> TaskLogFactory:
    """Ship each task's log to its own stream ``<task id>-<attempt>`` of the app's log group."""
    logs = client("logs", settings)
    group = AwsNames(config).log_group

    def factory(task_id: str, attempt: int, path: Path) -> CloudWatchTaskLog:
        return CloudWatchTaskLog(logs, group, f"{task_id}-{attempt:04d}", path)

    return factory


@contextlib.contextmanager
def on_instance(config: Config, worker: Worker, scratch: Path) -> Iterator[None]:
    """While the worker runs: resource log every 30 s; and on EC2 (instance metadata
    answers) a Name tag, an idle-CPU alarm that terminates a stalled instance, and spot
    interruption polling that hands the current task back at once and stops the worker."""
    scratch.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(ResourceLogger(scratch))
        imds = imds_from_env()
        if imds is not None:
            settings = settings_from(config.aws.region, None)
            names = AwsNames(config)
            try:
                instance_id = imds.instance_id()
                tag_instance_name(client("ec2", settings), instance_id, f"{names.app}Worker")
                ensure_idle_alarm(
                    client("cloudwatch", settings),
                    alarm_name=names.instance_alarm(instance_id),
                    instance_id=instance_id,
                    region=config.aws.region,
                    tags=(names.tag,),
                )
            except DSError as exc:
                # A missing permission must not stop the work: say so and carry on.
                log.warning("instance setup incomplete: %s", exc)

            def interrupted(action: str) -> None:
                log.warning("spot interruption notice (%s): handing the task back", action)
                worker.stop()

            stack.enter_context(InterruptionWatcher(imds, interrupted))
        started = time.monotonic()
        yield
        log.info("worker ran %.0fs", time.monotonic() - started)
