"""Removing a run's AWS resources: ordered, recorded, resumable steps.

The order puts what costs money first (workers, then the fleet), and what only helps a
post-mortem (log export) last. Each finished step is appended to ``AwsResources.cleaned``
and saved at once, so a teardown killed at any point — a laptop closed, a Lambda timing
out — finishes the job when run again: done steps are skipped, and every step tolerates
its resource being gone already. The dead-letter queue is never deleted: it holds the
failures, and `ds dead` reads it after the run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.clients import (
    AwsClients,
    first_line,
    unreadable_answers,
)
from distributed_something.backends.aws.compute import (
    ECS_GONE,
    FLEET_GONE,
    delete_alarms,
    describe_fleet,
    instance_alarms,
)
from distributed_something.backends.aws.errors import chunks, error_code
from distributed_something.backends.aws.fleet import unseen_grace
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.errors import BackendError

log = logging.getLogger(__name__)

TEARDOWN_STEPS: tuple[str, ...] = (
    "service_to_zero",
    "cancel_fleet",
    "delete_instance_alarms",
    "delete_queue",
    "delete_service",
    "deregister_task_definitions",
    "delete_cluster",
    "delete_dashboard",
    "delete_monitor_objects",
    "export_logs",
)

#: Keys of ``AwsResources.monitor_objects`` (what start-cluster records for the unattended
#: monitor). A key is recognised by its prefix, so several rules or alarms can be recorded
#: ("rule", "rule_alarm", …). Permissions are statement ids on the function named by
#: ``MONITOR_FUNCTION`` (the account-level function itself belongs to `ds aws bootstrap`
#: and is never deleted here).
MONITOR_RULE = "rule"
MONITOR_ALARM = "alarm"
MONITOR_PERMISSION = "permission"
MONITOR_FUNCTION = "function"

SQS_GONE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
NOT_FOUND = frozenset({"ResourceNotFoundException", "ResourceNotFound"})
#: Deregistering a revision that does not exist (any more) is a ClientException in ECS.
TASK_DEFINITION_GONE = frozenset({"ClientException", "InvalidParameterException"})
#: Fleet states after which cancelling is neither possible nor needed.
FLEET_CANCELLED = ("cancelled", "cancelled_terminating", "cancelled_running")
_ALIVE = ["pending", "running", "stopping", "stopped"]
_FLEET_TAG = "aws:ec2spot:fleet-request-id"


def teardown(
    clients: AwsClients,
    names: AwsNames,
    resources: AwsResources,
    *,
    bucket: str,
    run_id: str,
    save: Callable[[AwsResources], None],
    clean_dashboard: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    wait_timeout: float = 300.0,
    poll_interval: float = 5.0,
) -> None:
    """Remove everything the run created, in `TEARDOWN_STEPS` order, resumably.

    Runs each step not yet in ``resources.cleaned``; after each one appends it there and
    calls ``save(resources)`` (export tasks are also saved as soon as they are created), so
    running this again after a crash resumes where it stopped, without repeating work.
    Steps tolerate their resource being gone. Kept: the dead-letter queue, the bucket and
    the run records; the dashboard too when ``clean_dashboard`` is False.

    Waits (a cluster emptying, a log export finishing) poll every ``poll_interval``
    seconds for at most ``wait_timeout`` seconds of ``clock``. A cluster still holding
    instances after that is left in place (an empty ECS cluster costs nothing); an export
    still running raises `BackendError` and the next run waits for it again.
    Raises `BackendError` for any AWS failure, naming the step; re-running resumes there.
    """
    run = _Teardown(clients, names, resources, bucket=bucket, run_id=run_id, save=save)
    run.clean_dashboard = clean_dashboard
    run.clock, run.sleep = clock, sleep
    run.wait_timeout, run.poll_interval = wait_timeout, poll_interval
    for step in TEARDOWN_STEPS:
        if step in resources.cleaned:
            continue
        try:
            getattr(run, step)()
        except (ClientError, BotoCoreError, *unreadable_answers()) as exc:
            raise BackendError(
                f"AWS cleanup step {step!r} failed: {first_line(exc)}. The steps before "
                "it are done and recorded; fix the cause (permissions, throttling) and run "
                "`ds cleanup` again to resume from this step"
            ) from exc
        resources.cleaned.append(step)
        save(resources)


def _runs_image_worker(task_definition: dict[str, Any]) -> bool:
    """Whether a task definition runs the image's own worker (the family's images, as
    run.py ran them): setup sets ``entryPoint`` (``ds worker``) only when a recipe is set."""
    containers = task_definition.get("containerDefinitions") or []
    return bool(containers) and not any(c.get("entryPoint") for c in containers)


class _Teardown:
    """The steps, one method each (named as in `TEARDOWN_STEPS`)."""

    def __init__(
        self,
        clients: AwsClients,
        names: AwsNames,
        resources: AwsResources,
        *,
        bucket: str,
        run_id: str,
        save: Callable[[AwsResources], None],
    ) -> None:
        self.aws = clients
        self.names = names
        self.res = resources
        self.bucket = bucket
        self.run_id = run_id
        self.save = save
        self.clean_dashboard = True
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], object] = time.sleep
        self.wait_timeout = 300.0
        self.poll_interval = 5.0

    @property
    def cluster(self) -> str:
        return self.res.cluster or self.names.cluster

    @property
    def service(self) -> str:
        # Falls back to the derived name: a crash between creating the service and recording
        # it must not leave the service running.
        return self.res.service or self.names.service

    # --- steps --------------------------------------------------------------------------
    def service_to_zero(self) -> None:
        try:
            self.aws.ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=0)
        except ClientError as exc:
            if error_code(exc) not in ECS_GONE:
                raise

    def cancel_fleet(self) -> None:
        fleet_id = self.res.fleet_request_id
        if not fleet_id:
            return
        fleet = describe_fleet(self.aws.ec2, fleet_id)
        state = fleet.get("SpotFleetRequestState") if fleet else None
        # Cancelled even when EC2 says it does not know the id, if it was made moments ago:
        # a new request may not be visible to describe calls yet (eventual consistency).
        fresh = unseen_grace(self.res.fleet_requested_at, time.time()) > 0
        if (fleet is not None or fresh) and state not in FLEET_CANCELLED:
            try:
                response = self.aws.ec2.cancel_spot_fleet_requests(
                    SpotFleetRequestIds=[fleet_id], TerminateInstances=True
                )
            except ClientError as exc:
                if error_code(exc) not in FLEET_GONE:
                    raise
                response = {}
            for failed in response.get("UnsuccessfulFleetRequests", []):
                code = failed.get("Error", {}).get("Code", "")
                if code not in ("fleetRequestIdDoesNotExist", "fleetRequestNotInCancellableState"):
                    raise BackendError(
                        f"AWS: could not cancel spot fleet {fleet_id}: {code} "
                        f"{failed.get('Error', {}).get('Message', '')}. Cancel it in the EC2 "
                        "console (Spot Requests), then run `ds cleanup` again"
                    )
        if state == "cancelled_running":
            # Someone cancelled it without terminating: its instances still cost money.
            self._terminate(self._fleet_instances(fleet_id))
        # Safety net for instances the fleet launched but no longer lists.
        self._terminate(self._tagged_instances(fleet_id))

    def delete_instance_alarms(self) -> None:
        alarms = set(instance_alarms(self.aws.cloudwatch, self.names)) | set(self.res.alarms)
        delete_alarms(self.aws.cloudwatch, sorted(alarms))

    def delete_queue(self) -> None:
        url = self.res.queue_url or self._queue_url(self.names.queue)
        if not url or url == self.res.dead_letter_queue_url:
            return
        try:
            self.aws.sqs.delete_queue(QueueUrl=url)
        except ClientError as exc:
            if error_code(exc) not in SQS_GONE:
                raise
            return
        # The next run of this app waits until SQS frees the name (`setup.queue_name_wait`).
        self.res.queue_deleted_at = time.time()

    def delete_service(self) -> None:
        try:
            self.aws.ecs.delete_service(cluster=self.cluster, service=self.service, force=True)
        except ClientError as exc:
            if error_code(exc) not in ECS_GONE:
                raise

    def deregister_task_definitions(self) -> None:
        arns = list(dict.fromkeys(self.res.task_definition_arns))
        family = re.compile(r".*:task-definition/" + re.escape(self.names.task_family) + r":\d+")
        paginator = self.aws.ecs.get_paginator("list_task_definitions")
        pages = paginator.paginate(familyPrefix=self.names.task_family, status="ACTIVE")
        for page in pages:
            # familyPrefix may match longer family names: keep this family's revisions only.
            arns.extend(a for a in page.get("taskDefinitionArns", []) if family.fullmatch(a))
        for arn in dict.fromkeys(arns):
            try:
                response = self.aws.ecs.deregister_task_definition(taskDefinition=arn)
            except ClientError as exc:
                if error_code(exc) not in TASK_DEFINITION_GONE:
                    raise
                continue
            # The answer describes the revision: note which worker the run's containers ran
            # (where export_logs puts the logs), without another call or permission. The
            # last revision the run recorded decides; others only when it recorded none.
            if arn in self.res.task_definition_arns or self.res.family_worker is None:
                self.res.family_worker = _runs_image_worker(response.get("taskDefinition", {}))

    def delete_cluster(self) -> None:
        cluster = self.res.cluster
        if not self.res.cluster_created or not cluster or cluster == "default":
            return
        deadline = self.clock() + self.wait_timeout
        while True:
            described = self.aws.ecs.describe_clusters(clusters=[cluster]).get("clusters", [])
            if not described or described[0].get("status") == "INACTIVE":
                return
            info = described[0]
            busy = (
                max(int(info.get("registeredContainerInstancesCount", 0)), 0)
                + max(int(info.get("runningTasksCount", 0)), 0)
                + max(int(info.get("pendingTasksCount", 0)), 0)
            )
            if busy == 0:
                break
            if self.clock() >= deadline:
                # Instances of the cancelled fleet deregister once terminated; an ECS cluster
                # costs nothing, so leaving it beats blocking the rest of the cleanup.
                log.warning(
                    "ECS cluster %s still has instances or tasks after %.0f s; left in place "
                    "(it costs nothing). Delete it in the ECS console once it is empty.",
                    cluster,
                    self.wait_timeout,
                )
                return
            self.sleep(self.poll_interval)
        try:
            self.aws.ecs.delete_cluster(cluster=cluster)
        except ClientError as exc:
            if error_code(exc) != "ClusterNotFoundException":
                raise

    def delete_dashboard(self) -> None:
        if not self.clean_dashboard:
            return
        # The recorded one (APP_NAME for a config.py, as run.py named it), and the
        # "<app>Dashboard" an older ds made for a config.py too.
        names = dict.fromkeys([self.res.dashboard or self.names.dashboard, self.names.dashboard])
        for name in names:
            try:
                self.aws.cloudwatch.delete_dashboards(DashboardNames=[name])
            except ClientError as exc:
                if error_code(exc) not in NOT_FOUND:
                    raise

    def delete_monitor_objects(self) -> None:
        objects = self.res.monitor_objects
        # The schedule first, so the monitor stops being invoked before its parts go.
        for key, rule in sorted(objects.items()):
            if key.startswith(MONITOR_RULE):
                self._delete_rule(rule)
        alarms = [name for key, name in objects.items() if key.startswith(MONITOR_ALARM)]
        delete_alarms(self.aws.cloudwatch, alarms)
        function = objects.get(MONITOR_FUNCTION)
        for key, statement in sorted(objects.items()):
            if key.startswith(MONITOR_PERMISSION) and function:
                try:
                    self.aws.lambda_.remove_permission(FunctionName=function, StatementId=statement)
                except ClientError as exc:
                    if error_code(exc) not in NOT_FOUND:
                        raise

    def export_logs(self) -> None:
        groups = list(
            dict.fromkeys(
                [self.names.log_group, self.names.instance_log_group, *self.res.log_groups]
            )
        )
        recorded = self._recorded_exports()
        for group in groups:
            task_id, status = recorded.get(group, (None, None))
            if status == "COMPLETED":
                continue
            if task_id is None or status in ("FAILED", "CANCELLED"):
                task_id = self._start_export(group)
                if task_id is None:
                    continue  # no such log group: nothing to export
                self.res.export_tasks.append(task_id)
                self.save(self.res)
            self._wait_export(group, task_id)

    # --- helpers ------------------------------------------------------------------------
    def _bucket_policy_fix(self) -> str:
        """What the bucket policy must allow for log exports (docs/aws.md shows it whole)."""
        service = principals.LOGS.replace("logs.", f"logs.{self.aws.settings.region}.", 1)
        return (
            f"The bucket policy must let {service} call s3:GetBucketAcl on the bucket and "
            "s3:PutObject on its objects (docs/aws.md, Troubleshooting, 'Log export fails "
            "at cleanup'); fix it and run `ds cleanup` again"
        )

    def _queue_url(self, name: str) -> str | None:
        try:
            url: str = self.aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if error_code(exc) in SQS_GONE:
                return None
            raise
        return url

    def _fleet_instances(self, fleet_id: str) -> list[str]:
        ids: list[str] = []
        try:
            paginator = self.aws.ec2.get_paginator("describe_spot_fleet_instances")
            for page in paginator.paginate(SpotFleetRequestId=fleet_id):
                ids.extend(i["InstanceId"] for i in page.get("ActiveInstances", []))
        except ClientError as exc:
            if error_code(exc) not in FLEET_GONE:
                raise
        return ids

    def _tagged_instances(self, fleet_id: str) -> list[str]:
        paginator = self.aws.ec2.get_paginator("describe_instances")
        filters = [
            {"Name": f"tag:{_FLEET_TAG}", "Values": [fleet_id]},
            {"Name": "instance-state-name", "Values": _ALIVE},
        ]
        return [
            instance["InstanceId"]
            for page in paginator.paginate(Filters=filters)
            for reservation in page.get("Reservations", [])
            for instance in reservation.get("Instances", [])
        ]

    def _terminate(self, instance_ids: list[str]) -> None:
        for batch in chunks(instance_ids, 500):
            try:
                self.aws.ec2.terminate_instances(InstanceIds=batch)
            except ClientError as exc:
                if error_code(exc) != "InvalidInstanceID.NotFound":
                    raise

    def _delete_rule(self, rule: str) -> None:
        events = self.aws.events
        try:
            ids = [
                target["Id"]
                for page in events.get_paginator("list_targets_by_rule").paginate(Rule=rule)
                for target in page.get("Targets", [])
            ]
            for batch in chunks(ids, 10):  # RemoveTargets takes at most 10 ids
                events.remove_targets(Rule=rule, Ids=batch, Force=True)
            events.delete_rule(Name=rule, Force=True)
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND:
                raise

    def _recorded_exports(self) -> dict[str, tuple[str, str]]:
        """Log group → (task id, status) of the export tasks this teardown started before."""
        found: dict[str, tuple[str, str]] = {}
        for task_id in self.res.export_tasks:
            try:
                tasks = self.aws.logs.describe_export_tasks(taskId=task_id).get("exportTasks", [])
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:
                    continue
                raise
            for task in tasks:
                status = task.get("status", {}).get("code", "")
                previous = found.get(task["logGroupName"])
                # A later, better attempt for the same group wins over a failed one.
                if previous is None or previous[1] != "COMPLETED":
                    found[task["logGroupName"]] = (task_id, status)
        return found

    def _described_worker(self) -> bool:
        """`_runs_image_worker` of the run's last recorded task definition, described (a
        deregistered revision still can be) — for a cleanup that stopped after deregistering
        and before recording what it saw. False when it cannot be described."""
        for arn in reversed(self.res.task_definition_arns):
            try:
                described = self.aws.ecs.describe_task_definition(taskDefinition=arn)
            except ClientError as exc:
                log.warning("could not describe task definition %s: %s", arn, first_line(exc))
                continue
            return _runs_image_worker(described.get("taskDefinition", {}))
        return False

    def _start_export(self, group: str) -> str | None:
        """Start exporting ``group`` into the bucket; None when the group does not exist.

        The prefix is the family's ``exportedlogs/<group>`` when the run's containers ran
        the image's own worker (``AwsResources.family_worker``, noted when the task
        definitions were deregistered), else ``_ds/<app>/runs/<run>/logs-export/<group>``
        (`AwsNames.log_export_prefix`). AWS runs one export per account at a time: while
        another is active, wait for it.
        """
        if self.res.family_worker is None:
            self.res.family_worker = self._described_worker()
        prefix = self.names.log_export_prefix(group, self.run_id, family=self.res.family_worker)
        deadline = self.clock() + self.wait_timeout
        while True:
            try:
                task_id: str = self.aws.logs.create_export_task(
                    taskName=f"{self.names.app}-{self.run_id}"[:512],
                    logGroupName=group,
                    fromTime=0,
                    to=int(time.time() * 1000),
                    destination=self.bucket,
                    destinationPrefix=prefix,
                )["taskId"]
                return task_id
            except ClientError as exc:
                code = error_code(exc)
                if code in NOT_FOUND:
                    return None
                if code == "InvalidParameterException" and "ermission" in str(exc):
                    # CloudWatch Logs checks the bucket's ACL and policy before exporting.
                    raise BackendError(
                        f"AWS: CloudWatch Logs may not write log group {group} to "
                        f"s3://{self.bucket} ({first_line(exc)}). {self._bucket_policy_fix()}"
                    ) from exc
                if code != "LimitExceededException" or self.clock() >= deadline:
                    raise
            self.sleep(self.poll_interval)

    def _wait_export(self, group: str, task_id: str) -> None:
        deadline = self.clock() + self.wait_timeout
        while True:
            tasks = self.aws.logs.describe_export_tasks(taskId=task_id).get("exportTasks", [])
            status = tasks[0].get("status", {}) if tasks else {}
            code = status.get("code", "")
            if code == "COMPLETED":
                return
            if code in ("FAILED", "CANCELLED") or not tasks:
                raise BackendError(
                    f"AWS: exporting log group {group} to s3://{self.bucket} ended "
                    f"{code or 'unknown'}: {status.get('message', '')}. "
                    f"{self._bucket_policy_fix()}"
                )
            if self.clock() >= deadline:
                raise BackendError(
                    f"AWS: exporting log group {group} is still running after "
                    f"{self.wait_timeout:.0f} s; everything else is cleaned up. Run "
                    "`ds cleanup` again to wait for it"
                )
            self.sleep(self.poll_interval)
