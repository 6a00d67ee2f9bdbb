"""What a worker does on an EC2 instance besides the task loop: name tag, idle-CPU alarm,
idle shutdown, resource log, spot interruption notices, per-task CloudWatch log streams."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from distributed_something.backends.aws.clients import AwsSettings, client, settings_from
from distributed_something.backends.aws.idle import (
    CHECK_SECONDS,
    IDLE_DIR_ENV,
    STALE_SECONDS,
    IdleShutdown,
)
from distributed_something.backends.aws.instance import (
    Imds,
    InterruptionWatcher,
    ResourceLogger,
    ensure_idle_alarm,
    imds_from_env,
    tag_instance_name,
    terminate_instance,
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


def idle_for(worker: Worker) -> float | None:
    """Seconds the worker has found nothing to run (by its clock); None while busy."""
    since = worker.idle_since
    return None if since is None else max(worker.clock() - since, 0.0)


def idle_shutdown(
    config: Config,
    worker: Worker,
    imds: Imds,
    directory: Path,
    *,
    interval: float = CHECK_SECONDS,
    stale_after: float = STALE_SECONDS,
) -> IdleShutdown:
    """The worker's part in the machine's idle shutdown (DESIGN §2), not yet started.

    It publishes the worker's state in ``directory``; with ``aws.idle_shutdown_minutes`` > 0,
    once every worker of the machine has been idle that long, it logs one line, asks EC2 to
    terminate this instance (id from ``imds``) and stops the worker. A refusal (a missing
    ec2:TerminateInstances) is a warning: the idle-CPU alarm remains the fallback.
    """
    minutes = config.aws.idle_shutdown_minutes

    def terminate(workers: int) -> bool:
        try:
            instance_id = imds.instance_id()
            log.info(
                "all %d workers on %s idle for %g min: terminating the instance",
                workers,
                instance_id,
                minutes,
            )
            terminate_instance(client("ec2", settings_from(config.aws.region, None)), instance_id)
        except DSError as exc:
            log.warning("idle shutdown failed (the idle-CPU alarm remains): %s", exc)
            return False
        worker.stop()
        return True

    return IdleShutdown(
        directory,
        worker.settings.name,
        lambda: idle_for(worker),
        terminate if minutes > 0 else None,
        grace=minutes * 60.0,
        interval=interval,
        stale_after=stale_after,
    )


@contextlib.contextmanager
def on_instance(
    config: Config,
    worker: Worker,
    scratch: Path,
    *,
    idle_interval: float = CHECK_SECONDS,
    idle_stale_after: float = STALE_SECONDS,
) -> Iterator[None]:
    """While the worker runs: resource log every 30 s; and on EC2 (instance metadata
    answers) a Name tag, an idle-CPU alarm that terminates a stalled instance, spot
    interruption polling that hands the current task back at once and stops the worker,
    and — when ``DS_IDLE_DIR`` names the machine's shared folder — the idle shutdown
    (`idle_shutdown`; its check interval and staleness bound in seconds)."""
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
                )
            except DSError as exc:
                # A missing permission must not stop the work: say so and carry on.
                log.warning("instance setup incomplete: %s", exc)

            def interrupted(action: str) -> None:
                log.warning("spot interruption notice (%s): handing the task back", action)
                worker.stop()

            stack.enter_context(InterruptionWatcher(imds, interrupted))
            idle_dir = os.environ.get(IDLE_DIR_ENV, "").strip()
            if not idle_dir:
                log.info("idle shutdown off: no %s (run `ds setup` again to add it)", IDLE_DIR_ENV)
            else:
                stack.enter_context(
                    idle_shutdown(
                        config,
                        worker,
                        imds,
                        Path(idle_dir),
                        interval=idle_interval,
                        stale_after=idle_stale_after,
                    )
                )
        started = time.monotonic()
        yield
        log.info("worker ran %.0fs", time.monotonic() - started)
