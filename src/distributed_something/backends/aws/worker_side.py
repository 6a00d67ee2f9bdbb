"""What a worker does on an EC2 instance besides the task loop: name tag, idle-CPU alarm,
idle shutdown, resource log, spot interruption notices, per-task CloudWatch log streams —
and, when the instance metadata is out of the container's reach, a loud warning and a record
of it in storage (`instance_record_key`) that `ds status` can show."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    find_imds,
    tag_instance_name,
    terminate_instance,
)
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.sqs_queue import received_body
from distributed_something.backends.aws.task_logs import CloudWatchTaskLog, task_stream_name
from distributed_something.config.model import Config
from distributed_something.errors import DSError
from distributed_something.interfaces.backend import TaskLogFactory
from distributed_something.records import Machine
from distributed_something.worker.loop import Worker

log = logging.getLogger("ds.worker")

#: Under a run's records: one object per instance (or container) with something to report.
INSTANCES_DIR = "instances"


def instance_record_key(run_prefix: str, machine: str) -> str:
    """``<run prefix>instances/<machine>.json`` (run prefix: ``_ds/<app>/runs/<run>/``)."""
    return f"{run_prefix}{INSTANCES_DIR}/{machine}.json"


def report_unreachable_imds(worker: Worker, problem: str) -> str | None:
    """Log ``problem`` once as a WARNING and record it for `ds status`; returns the key.

    The record is ``{"machine", "worker", "imds": "unreachable", "problem", "at"}`` under
    `instance_record_key`. Without metadata the instance id is unknown, so the machine is
    named by this container's host name (``host-<name>``). A failed write is logged, never
    raised: the worker goes on working without its instance features.
    """
    log.warning("%s", problem)
    machine = f"host-{socket.gethostname() or 'unknown'}"
    key = instance_record_key(worker.records.run_prefix, machine)
    record = {
        "machine": machine,
        "worker": worker.settings.name,
        "imds": "unreachable",
        "problem": problem,
        "at": time.time(),
    }
    try:
        worker.records.storage.put_bytes(key, json.dumps(record, indent=1).encode())
    except Exception as exc:  # noqa: BLE001 - a record must never stop the worker
        log.warning("could not record the metadata problem at %s: %s", key, exc)
        return None
    return key


def record_machine(worker: Worker, imds: Imds) -> None:
    """Record which machine this worker runs on (instance id, type and Availability Zone,
    from the instance metadata: `records.Machine`), so the report prices its attempts at
    that machine's spot prices. A failure is logged, never raised: the report then uses
    ``aws.machine_price``."""
    try:
        machine = Machine(
            worker=worker.settings.name,
            instance_id=imds.instance_id(),
            instance_type=imds.instance_type(),
            availability_zone=imds.availability_zone(),
            at=time.time(),
        )
        worker.records.write_machine(machine)
    except Exception as exc:  # noqa: BLE001 - pricing must never stop the work
        log.warning("could not record this worker's machine (the report's cost): %s", exc)


def task_log_factory(
    config: Config,
    settings: AwsSettings,
    *,
    bodies: Callable[[str], str | None] = received_body,
) -> TaskLogFactory:
    """Ship each attempt's log to its own stream of the app's log group (``LOG_GROUP_NAME``,
    where the family's workers wrote theirs), named by `task_stream_name`: the family's
    name for the task first (``Plate1-A01/<task id>-0001`` for a DCP group), else
    ``<task id>-<attempt>``. ``bodies`` gives the message body of a task id this process
    received (the loop hands the factory only the id)."""
    logs = client("logs", settings)
    group = AwsNames(config).log_group

    def factory(task_id: str, attempt: int, path: Path) -> CloudWatchTaskLog:
        stream = task_stream_name(task_id, attempt, _body(bodies(task_id)))
        return CloudWatchTaskLog(logs, group, stream, path)

    return factory


def _body(text: str | None) -> dict[str, Any] | None:
    """A message body as JSON, or None (no body known, or not a JSON object)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


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
    """The worker's part in the machine's idle shutdown (docs/design.md §2), not yet started.

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
    """While the worker runs: resource log every 30 s; on EC2 when the container cannot use
    the instance metadata (hop limit), a WARNING and a record (`report_unreachable_imds`);
    and on EC2 (instance metadata answers) a Name tag, an idle-CPU alarm that terminates a
    stalled instance, spot interruption polling that hands the current task back at once
    and stops the worker, and — when ``DS_IDLE_DIR`` names the machine's shared folder —
    the idle shutdown (`idle_shutdown`; its check interval and staleness bound in seconds)."""
    scratch.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(ResourceLogger(scratch))
        lookup = find_imds()
        imds = lookup.imds
        if lookup.problem is not None:
            report_unreachable_imds(worker, lookup.problem)
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
            record_machine(worker, imds)

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
