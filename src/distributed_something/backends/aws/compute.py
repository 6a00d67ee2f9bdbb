"""Compute on AWS: an ECS service whose tasks run on an EC2 Spot fleet.

Workers are counted in processes: one ECS task (container) runs ``workers_per_task`` worker
processes, so ``scale(n)`` asks ECS for ``ceil(n / workers_per_task)`` tasks. The fleet's
machines are sized separately (``scale_machines``): the monitor shrinks the fleet target as
the queue drains, with the "noTermination" policy so a busy machine is never killed by a
shrink — idle machines leave on their own (the worker's idle shutdown, the idle-CPU alarm).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from distributed_something.backends.aws.clients import (
    AwsSettings,
    client,
)
from distributed_something.backends.aws.errors import aws_call, chunks, error_code
from distributed_something.backends.aws.failed_tasks import (
    DESCRIBE_BATCH,
    ECS_CRASH_WINDOW_SECONDS,
    ecs_crash_message,
    task_failure,
)
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.crash_loop import WorkerFailure, crash_looping
from distributed_something.errors import BackendError
from distributed_something.interfaces.compute import ComputeStatus

log = logging.getLogger("ds.aws")

#: Error codes meaning "that ECS service or cluster is not there (any more)".
ECS_GONE = frozenset(
    {"ServiceNotFoundException", "ServiceNotActiveException", "ClusterNotFoundException"}
)
#: Error codes meaning "this principal may not do that".
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
#: Error codes meaning "that spot fleet request is not there (any more)".
FLEET_GONE = frozenset({"InvalidSpotFleetRequestId.NotFound", "InvalidSpotFleetRequestId"})
#: describe_alarms/delete_alarms take at most 100 names per call.
ALARM_BATCH = 100


def status_from_service(
    service: Mapping[str, Any] | None, workers_per_task: int, now: float | None = None
) -> ComputeStatus:
    """Workers desired and running, from an ECS service description (None: no service), and
    why some are missing when ECS said so lately (`placement_problem`).

    A deleted (INACTIVE) service runs nothing, whatever its last counts say.
    """
    if service is None or service.get("status") == "INACTIVE":
        return ComputeStatus(desired=0, running=0)
    per_task = max(workers_per_task, 1)
    desired = int(service.get("desiredCount", 0))
    running = int(service.get("runningCount", 0))
    waiting = placement_problem(service, time.time() if now is None else now)
    return ComputeStatus(
        desired=desired * per_task,
        running=running * per_task,
        waiting=waiting if running < desired else "",
    )


#: How recent (seconds) ECS's "unable to place" event must be to explain missing workers: ECS
#: repeats it while the problem lasts (at most every few minutes).
PLACEMENT_EVENT_SECONDS = 15 * 60


def placement_problem(service: Mapping[str, Any], now: float) -> str:
    """ECS's newest service event when it says a worker could not be placed (no machine has
    its memory or CPU units free, or an attribute it needs) and is under
    `PLACEMENT_EVENT_SECONDS` old, else "". Its "(service …)" prefix is dropped. Pure."""
    events = service.get("events") or []
    if not events:
        return ""
    newest = max(events, key=lambda e: _epoch(e.get("createdAt")))
    message = str(newest.get("message", ""))
    if "unable to place a task" not in message:
        return ""
    if now - _epoch(newest.get("createdAt")) > PLACEMENT_EVENT_SECONDS:
        return ""
    return re.sub(r"^\(service [^)]*\)\s*", "", message)


def _epoch(value: Any) -> float:
    """An event's ``createdAt`` (botocore: an aware datetime) in epoch seconds; 0 if absent."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return float(value.timestamp())


def instance_alarms(cloudwatch: Any, names: AwsNames) -> dict[str, str]:
    """The per-instance alarms of this app: alarm name → instance id (all pages).

    Only names of the exact form ``<alarm_prefix><instance id>`` count, so another app whose
    name merely starts with this one (``T`` and ``T_2``) keeps its alarms.
    """
    pattern = re.compile(re.escape(names.alarm_prefix) + r"(i-[0-9a-f]+)")
    found: dict[str, str] = {}
    paginator = cloudwatch.get_paginator("describe_alarms")
    for page in paginator.paginate(AlarmNamePrefix=names.alarm_prefix):
        for alarm in page.get("MetricAlarms", []):
            match = pattern.fullmatch(alarm["AlarmName"])
            if match:
                found[alarm["AlarmName"]] = match.group(1)
    return found


def delete_alarms(cloudwatch: Any, names: Iterable[str]) -> None:
    """Delete these alarms, 100 per call (the API's limit). Alarms already gone are not an
    error. Raises BackendError."""
    for batch in chunks(sorted(set(names)), ALARM_BATCH):
        if not _delete_batch(cloudwatch, batch):
            # One missing name fails the whole batch: delete the rest one at a time.
            for name in batch:
                _delete_batch(cloudwatch, [name])


def _delete_batch(cloudwatch: Any, batch: list[str]) -> bool:
    """DeleteAlarms on ``batch``; False when AWS answers ResourceNotFound."""
    from botocore.exceptions import ClientError

    what = f"delete alarm {batch[0]}" + (f" (and {len(batch) - 1} more)" if len(batch) > 1 else "")
    with aws_call(what, "The role needs cloudwatch:DeleteAlarms."):
        try:
            cloudwatch.delete_alarms(AlarmNames=batch)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFound":
                return False
            raise
    return True


class FleetStatus(NamedTuple):
    """The spot fleet as AWS reports it: target and fulfilled capacity, instances running."""

    target: int
    fulfilled: float
    instance_ids: list[str]


class EcsSpotCompute:
    """The `Compute` of the AWS backend: an ECS service on a Spot fleet.

    ``resources_of`` returns the run's current `AwsResources` (read on every call, so a
    resource recorded after this object was made is seen). Every method is idempotent and a
    missing service, cluster or fleet is not an error: there is simply nothing to scale.
    AWS failures raise `BackendError` with the operation that failed.
    """

    def __init__(
        self,
        settings: AwsSettings,
        names: AwsNames,
        resources_of: Callable[[], AwsResources],
        *,
        workers_per_task: int,
    ) -> None:
        self.settings = settings
        self.names = names
        self.resources_of = resources_of
        self.workers_per_task = max(workers_per_task, 1)
        self._clients: dict[str, Any] = {}
        #: the service as `status` last described it (read again by `housekeeping`)
        self._service: dict[str, Any] | None = None
        #: the service's tasks that stopped with an error, and every stopped task looked at
        self._failures: list[WorkerFailure] = []
        self._seen_stopped: set[str] = set()
        #: False once AWS refused ListTasks/DescribeTasks to these credentials: the check is
        #: a help, never a reason for the monitor to fail
        self._may_look = True

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = client(service, self.settings)
        return self._clients[service]

    # --- the Compute protocol -----------------------------------------------------------
    def start(self, n: int) -> None:
        """Ask for ``n`` workers (the service's desired count; ECS places the tasks)."""
        self.scale(n)

    def scale(self, n: int) -> None:
        """Set the service's desired count to ``ceil(n / workers_per_task)`` tasks.

        ECS stops surplus tasks with SIGTERM, which a worker answers by handing its task back
        to the queue, so nothing is lost by scaling down. Nothing happens without a service.
        """
        self.resize_service(n)

    def scale_machines(self, n: int) -> None:
        """Set the spot fleet's target capacity to ``n`` machines, never terminating any
        (see `resize_fleet`)."""
        self.resize_fleet(n)

    def housekeeping(self) -> None:
        """Every monitor tick: delete the alarms of terminated instances (`prune_alarms`),
        and look at the service's stopped tasks (`check_failing_tasks`):
        raises `BackendError` with ECS's reason once they keep failing (`failed_tasks`)."""
        self.prune_alarms()
        self.check_failing_tasks()

    def check_failing_tasks(
        self, service: dict[str, Any] | None = None, *, stopping: bool = False
    ) -> None:
        """Note the service's tasks that stopped with an error since the last look, while
        the service wants tasks (a task that fails after a while may be counted running at
        each look); raise `BackendError` when they keep failing
        (`crash_loop.crash_looping` over `ECS_CRASH_WINDOW_SECONDS`). ``stopping``: the
        caller (the unattended monitor) then sets the service and the fleet to 0, and the
        message says so. ``service``: the service as described at this tick (default: as
        `status` described it, else described now)."""
        service = service or self._service or self.describe_service()
        self._service = None  # described anew at the next tick
        if not self._may_look or service is None or service.get("status") != "ACTIVE":
            return
        desired = int(service.get("desiredCount", 0))
        if desired == 0:
            return  # nothing is started, so nothing can keep failing
        with aws_call("look at the ECS service's stopped tasks"):
            try:
                new = self._new_failures()
            except ClientError as exc:
                if error_code(exc) in ECS_GONE:
                    return  # torn down meanwhile: nothing runs to fail
                if error_code(exc) not in DENIED:
                    # A help, not the monitor's job: looked at again at the next tick.
                    log.warning("could not look at the stopped ECS tasks: %s", exc)
                    return
                self._may_look = False
                log.warning(
                    "cannot look at the ECS service's stopped tasks (%s): tasks that keep "
                    "failing are not detected. Fix: allow these credentials ecs:ListTasks and "
                    "ecs:DescribeTasks",
                    error_code(exc),
                )
                return
        self._failures += new
        if crash_looping(self._failures, time.time(), desired, ECS_CRASH_WINDOW_SECONDS):
            raise BackendError(
                ecs_crash_message(
                    self._failures,
                    self.names.container_log_group,
                    self._stream,
                    stopped=stopping,
                )
            )

    @property
    def _stream(self) -> str:
        """A task's log stream is ``<this>/<task id>`` (the awslogs driver's naming)."""
        return f"{self.names.app}/{self.names.container}"

    def _new_failures(self) -> list[WorkerFailure]:
        """The failures among the service's stopped tasks not looked at before (ECS lists
        a stopped task for an hour or more), oldest first."""
        resources = self.resources_of()
        cluster = self._cluster(resources)
        ecs = self._client("ecs")
        arns: list[str] = []
        pages = ecs.get_paginator("list_tasks").paginate(
            cluster=cluster, serviceName=resources.service, desiredStatus="STOPPED"
        )
        for page in pages:
            arns += [a for a in page.get("taskArns", []) if a not in self._seen_stopped]
        found: list[WorkerFailure] = []
        for batch in chunks(arns, DESCRIBE_BATCH):
            tasks = ecs.describe_tasks(cluster=cluster, tasks=batch).get("tasks", [])
            for task in tasks:
                failure = task_failure(task)
                if failure is not None:
                    found.append(failure)
                    self._seen_stopped.add(str(task.get("taskArn")))
                elif task.get("lastStatus") == "STOPPED":
                    self._seen_stopped.add(str(task.get("taskArn")))
        return sorted(found, key=lambda f: f.at)

    def resize_service(self, n: int) -> bool:
        """`scale`, telling whether anything changed: True when the desired count was
        updated; False when it already was that, or when no (active) service exists."""
        tasks = math.ceil(max(n, 0) / self.workers_per_task)
        service = self.describe_service()
        if service is None or service.get("status") == "INACTIVE":
            return False
        if int(service.get("desiredCount", -1)) == tasks:
            return False
        resources = self.resources_of()
        with aws_call("set the ECS service's desired count"):
            try:
                self._client("ecs").update_service(
                    cluster=self._cluster(resources),
                    service=resources.service,
                    desiredCount=tasks,
                )
            except ClientError as exc:
                if error_code(exc) in ECS_GONE:
                    return False
                raise
        return True

    def pause(self, seconds: float) -> None:
        """The monitor's interval, whole: its workers are not this process's children."""
        time.sleep(seconds)

    def status(self) -> ComputeStatus:
        """Workers desired and running (ECS tasks × workers per task); zeros without a service."""
        self._service = self.describe_service()
        return status_from_service(self._service, self.workers_per_task)

    def stop(self) -> None:
        """Set the service's desired count to 0 (each worker hands its task back)."""
        self.resize_service(0)

    def cleanup(self) -> None:
        """Same as `stop`: removing the AWS resources is `teardown`'s job, step by step."""
        self.stop()

    # --- AWS specifics ------------------------------------------------------------------
    def describe_service(self) -> dict[str, Any] | None:
        """The ECS description of the run's service, or None when none is recorded or it is gone."""
        resources = self.resources_of()
        if not resources.service:
            return None
        with aws_call("describe the ECS service"):
            try:
                response = self._client("ecs").describe_services(
                    cluster=self._cluster(resources), services=[resources.service]
                )
            except ClientError as exc:
                if error_code(exc) in ECS_GONE:
                    return None
                raise
        services: list[dict[str, Any]] = response.get("services", [])
        return services[0] if services else None

    def resize_fleet(self, n: int) -> bool:
        """Set the spot fleet's target capacity to ``n`` machines, never terminating any.

        Uses ExcessCapacityTerminationPolicy "noTermination": shrinking the target only stops
        replacing machines; a busy machine keeps running until its workers are done and it
        leaves on its own. Changes nothing (returns False) when the target already is ``n``,
        when the fleet is gone or cancelled, or while it is still being modified (the next
        tick retries). Returns True when the target was changed.
        """
        fleet = self._describe_fleet()
        if fleet is None or fleet.get("SpotFleetRequestState") != "active":
            return False
        target = max(n, 0)
        if int(fleet["SpotFleetRequestConfig"].get("TargetCapacity", -1)) == target:
            return False
        with aws_call("change the spot fleet's target capacity"):
            self._client("ec2").modify_spot_fleet_request(
                SpotFleetRequestId=self.resources_of().fleet_request_id,
                TargetCapacity=target,
                ExcessCapacityTerminationPolicy="noTermination",
            )
        return True

    def fleet_status(self) -> FleetStatus:
        """The fleet's target, fulfilled capacity and active instance ids ((0, 0, []) if gone)."""
        fleet = self._describe_fleet()
        if fleet is None:
            return FleetStatus(0, 0.0, [])
        config = fleet["SpotFleetRequestConfig"]
        ids: list[str] = []
        with aws_call("list the spot fleet's instances"):
            try:
                paginator = self._client("ec2").get_paginator("describe_spot_fleet_instances")
                for page in paginator.paginate(SpotFleetRequestId=fleet["SpotFleetRequestId"]):
                    ids.extend(i["InstanceId"] for i in page.get("ActiveInstances", []))
            except ClientError as exc:
                if error_code(exc) not in FLEET_GONE:
                    raise
        return FleetStatus(
            int(config.get("TargetCapacity", 0)), float(config.get("FulfilledCapacity", 0.0)), ids
        )

    def prune_alarms(self) -> list[str]:
        """Delete the per-instance alarms of instances that are terminated or gone.

        Alarms of live instances (running, stopping, …) stay: they are what terminates a
        stalled instance. Returns the deleted alarm names, sorted.
        """
        with aws_call("prune the per-instance alarms"):
            alarms = instance_alarms(self._client("cloudwatch"), self.names)
            if not alarms:
                return []
            live = self._live_instances(sorted(set(alarms.values())))
            dead = sorted(name for name, instance in alarms.items() if instance not in live)
            delete_alarms(self._client("cloudwatch"), dead)
        return dead

    # --- helpers ------------------------------------------------------------------------
    def _cluster(self, resources: AwsResources) -> str:
        return resources.cluster or self.names.cluster

    def _describe_fleet(self) -> dict[str, Any] | None:
        fleet_id = self.resources_of().fleet_request_id
        if not fleet_id:
            return None
        return describe_fleet(self._client("ec2"), fleet_id)

    def _live_instances(self, instance_ids: list[str]) -> set[str]:
        """Those of ``instance_ids`` that exist and are not terminated."""
        live: set[str] = set()
        paginator = self._client("ec2").get_paginator("describe_instances")
        # A filter (unlike InstanceIds=) simply omits unknown ids instead of failing the call.
        for batch in chunks(instance_ids, 100):
            pages = paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}])
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        if instance.get("State", {}).get("Name") != "terminated":
                            live.add(instance["InstanceId"])
        return live


def describe_fleet(ec2: Any, fleet_id: str) -> dict[str, Any] | None:
    """The spot fleet request's description, or None when AWS no longer knows it."""
    with aws_call("describe the spot fleet request"):
        try:
            response = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet_id])
        except ClientError as exc:
            if error_code(exc) in FLEET_GONE:
                return None
            raise
    configs: list[dict[str, Any]] = response.get("SpotFleetRequestConfigs", [])
    return configs[0] if configs else None
