"""One-time account setup for `ds` on AWS (`ds aws bootstrap|destroy`).

Creates, idempotently: the ECS instance role and its instance profile, the spot fleet role,
the monitor function's role, an SNS topic, and the unattended monitor (a Lambda function
running `lambda_monitor.handler`). Each role gets AWS's managed policy for its job plus an
inline policy scoped with ARNs to this account, region and app prefix: an app's queues,
alarms, log groups, rules and services are the ones whose names start with
``app_prefix`` (the default "ds"; pass an app's name to scope to that app alone, or ""
for any app) — plus the exact queue and log group names a config chose itself (a legacy
config's ``SQS_DEAD_LETTER_QUEUE = "DeadMessages_Erin"``, its own ``LOG_GROUP_NAME``),
kept across bootstraps like the buckets.

The policy documents are pure functions (tested alone); `bootstrap` and `destroy` only
call IAM, SNS, STS and Lambda.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import platform
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.clients import AwsClients, partition
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.resources import FAMILY_EXPORT_ROOT
from distributed_something.backends.aws.tagging import create_tagged
from distributed_something.errors import BackendError, InputError
from distributed_something.records import META_ROOT

HANDLER = "distributed_something.backends.aws.lambda_monitor.handler"
INSTANCE_MANAGED_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"
SPOT_FLEET_MANAGED_POLICY = "service-role/AmazonEC2SpotFleetTaggingRole"
LAMBDA_MANAGED_POLICY = "service-role/AWSLambdaBasicExecutionRole"
#: Pure-Python (or prebuilt) packages the monitor needs beyond the Lambda runtime's boto3.
BUNDLED_PACKAGES = (
    "distributed_something",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same code gives the same zip and hash
_VERSION = "2012-10-17"


@dataclass(frozen=True)
class BootstrapNames:
    """The names of the account-level resources for one prefix."""

    prefix: str

    @property
    def instance_role(self) -> str:
        return f"{self.prefix}-ecs-instance-role"

    @property
    def instance_profile(self) -> str:
        return f"{self.prefix}-ecs-instance-profile"

    @property
    def spot_fleet_role(self) -> str:
        return f"{self.prefix}-spot-fleet-role"

    @property
    def monitor_role(self) -> str:
        return f"{self.prefix}-monitor-role"

    @property
    def topic(self) -> str:
        return f"{self.prefix}-notices"

    @property
    def function(self) -> str:
        return f"{self.prefix}-monitor"

    @property
    def inline_policy(self) -> str:
        return f"{self.prefix}-least-privilege"


# --- policy documents (pure) -------------------------------------------------------------
def trust_policy(service: str) -> dict[str, Any]:
    """A role trust policy letting ``service`` (e.g. "ec2.amazonaws.com") assume the role."""
    return {
        "Version": _VERSION,
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }


def _statement(sid: str, actions: Iterable[str], resources: Iterable[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": list(resources)}


def _bucket_arns(p: str, buckets: Sequence[str], keys: str) -> tuple[list[str], list[str]]:
    names = sorted(set(b for b in buckets if b))
    return [f"arn:{p}:s3:::{b}" for b in names], [f"arn:{p}:s3:::{b}/{keys}" for b in names]


def _outside(app_prefix: str, names: Sequence[str]) -> list[str]:
    """The names the ``<prefix>*`` patterns do not already cover, sorted, without repeats."""
    return sorted({n for n in names if n and not n.startswith(app_prefix)})


def _queue_arns(
    p: str, region: str, account: str, app_prefix: str, queues: Sequence[str]
) -> list[str]:
    base = f"arn:{p}:sqs:{region}:{account}:"
    return [base + f"{app_prefix}*"] + [base + q for q in _outside(app_prefix, queues)]


def _log_group_arns(
    p: str, region: str, account: str, app_prefix: str, groups: Sequence[str], *, streams: bool
) -> list[str]:
    base = f"arn:{p}:logs:{region}:{account}:log-group:"
    arns: list[str] = []
    for group in [f"{app_prefix}*", *_outside(app_prefix, groups)]:
        arns.append(base + group)
        if streams:
            arns.append(f"{base}{group}:log-stream:*")
    return arns


#: CloudWatch's service-linked role for alarm actions on EC2 (the idle alarm terminates its
#: instance): its service and its path, as IAM names it.
ALARM_ACTIONS_SERVICE = "events.amazonaws.com"
ALARM_ACTIONS_ROLE_PATH = (
    f"aws-service-role/{ALARM_ACTIONS_SERVICE}/AWSServiceRoleForCloudWatchEvents*"
)

#: The condition that makes an EC2 statement apply only to the instance the request comes
#: from: instance-profile credentials carry ``ec2:SourceInstanceARN`` (the instance's ARN),
#: and ``aws:ARN`` is the ARN of the instance acted on. Credentials from anywhere else (a
#: task role, a person) have no ec2:SourceInstanceARN, so the statement never applies.
SELF_ONLY = {"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}


def instance_policy(
    account: str,
    region: str,
    app_prefix: str,
    buckets: Sequence[str] = (),
    *,
    queues: Sequence[str] = (),
    log_groups: Sequence[str] = (),
) -> dict[str, Any]:
    """The inline policy of the ECS instance role (workers without a task role use it).

    Allows: the per-instance idle alarm on alarms named ``<prefix>*``, describing instances
    (the family images read their own), terminating and Name-tagging the instance the request
    comes from and no other (`SELF_ONLY`; the Name tag only), writing the app's log groups,
    working the app's queues, and reading/writing objects in ``buckets`` (no S3 access when
    none are given). Queues are those named ``<prefix>*`` plus ``queues``; log groups those
    named ``<prefix>*`` plus ``log_groups`` (names a config set itself, such as a legacy
    per-person dead-letter queue). Uploads may carry the ``bucket-owner-full-control``
    canned ACL (``storage.upload_flags = "--acl bucket-owner-full-control"``): a PutObject
    with an ACL also needs s3:PutObjectAcl, granted for that ACL only (statement
    ``OwnerFullControlAcl``), so no other ACL (public-read …) can be set.
    """
    p, name = partition(region), f"{app_prefix}*"
    instances = [f"arn:{p}:ec2:{region}:{account}:instance/*"]
    statements = [
        _statement(
            "InstanceAlarms",
            ["cloudwatch:PutMetricAlarm"],  # deleting alarms is the monitor's and cleanup's
            [f"arn:{p}:cloudwatch:{region}:{account}:alarm:{name}"],
        ),
        # "The iam:CreateServiceLinkedRole permission for all alarms with EC2 actions"
        # (PutMetricAlarm): CloudWatch's role for them, made on first use in an account; this
        # role may create that one role and no other.
        {
            **_statement(
                "AlarmActionsRole",
                ["iam:CreateServiceLinkedRole"],
                [f"arn:{p}:iam::{account}:role/{ALARM_ACTIONS_ROLE_PATH}"],
            ),
            "Condition": {"StringEquals": {"iam:AWSServiceName": ALARM_ACTIONS_SERVICE}},
        },
        # The family images' run-worker.sh reads its instance (the owner id for its alarm);
        # this read supports no resource scoping.
        _statement("DescribeInstances", ["ec2:DescribeInstances"], ["*"]),
        # The idle shutdown (and the check PutMetricAlarm makes for a terminate action)
        # terminates the worker's own instance; a container must not end its neighbours.
        {
            **_statement("TerminateOwnInstance", ["ec2:TerminateInstances"], instances),
            "Condition": SELF_ONLY,
        },
        {
            **_statement("NameOwnInstance", ["ec2:CreateTags"], instances),
            # Only the Name tag: no other tag (ds:app, cost tags) can be rewritten.
            "Condition": {**SELF_ONLY, "ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]}},
        },
        _statement(
            "AppLogs",
            # Setup creates the groups (and their retention) with the operator's rights;
            # DescribeLogStreams is for the family images' watchtower log handler.
            ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
            _log_group_arns(p, region, account, app_prefix, log_groups, streams=True),
        ),
        _statement(
            "AppQueues",
            # Workers send a task again as a fresh message when they hand it back (or it
            # failed with tries left) on the last receive the queue allows: received once
            # more, it would be dead-lettered (worker/loop.py `_resend`; a dead worker's
            # watchdog, worker/settle.py). The resource scope cannot tell the task queue
            # from its dead-letter queue: both are the run's.
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            _queue_arns(p, region, account, app_prefix, queues),
        ),
    ]
    bucket_arns, object_arns = _bucket_arns(p, buckets, "*")
    if bucket_arns:
        statements.append(_statement("BucketList", ["s3:ListBucket"], bucket_arns))
        # AbortMultipartUpload is its own action, not PutObject's: the transfer manager
        # aborts an upload of a large output that fails half-way (a spot interruption), or
        # its parts stay in the bucket, billed, with no end.
        statements.append(
            _statement(
                "BucketObjects",
                ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                object_arns,
            )
        )
        # A worker replaces an attempt's open record by its closed one (records.py
        # close_attempt, close_stale): deletes only in the records area, never outputs.
        statements.append(
            _statement(
                "RunRecordsDelete",
                ["s3:DeleteObject"],
                _bucket_arns(p, buckets, f"{META_ROOT}/*")[1],
            )
        )
        statements.append(
            {
                **_statement("OwnerFullControlAcl", ["s3:PutObjectAcl"], object_arns),
                # The one ACL an upload may carry: it grants the bucket's owner (another
                # account's bucket) full control, and nothing to anyone else.
                "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
            }
        )
    return {"Version": _VERSION, "Statement": statements}


def monitor_policy(
    account: str,
    region: str,
    app_prefix: str,
    buckets: Sequence[str] = (),
    *,
    topic_arn: str | None = None,
    function_name: str | None = None,
    queues: Sequence[str] = (),
    log_groups: Sequence[str] = (),
) -> dict[str, Any]:
    """The inline policy of the monitor function's role: observe, scale and tear down.

    Scoped to the app prefix where AWS allows it (queues, services, alarms, dashboards, log
    groups, rules), plus the exact ``queues`` and ``log_groups`` a config named itself; the
    spot fleet, task definition and describe calls support no resource scoping. Lists
    ``buckets`` (key names), reads and writes run state and log exports only under ``_ds/``
    of them, and exports the logs
    of runs of the family's images where their run.py did, under ``exportedlogs/``
    (CreateExportTask needs the caller's own right to write the destination).
    """
    p, name = partition(region), f"{app_prefix}*"
    bucket_arns, object_arns = _bucket_arns(p, buckets, f"{META_ROOT}/*")
    statements = [
        _statement(
            "AppQueues",
            # Receive/ChangeMessageVisibility read the dead letters and SendMessage re-sends
            # tasks that left the queue without an outcome (monitor/settle.py); a redrive of
            # those dead-lettered with tries left sends each back, then deletes its dead
            # letter (DeleteMessageBatch is authorised as sqs:DeleteMessage).
            # The queue URLs come from the run state; GetQueueUrl finds the job queue by
            # name for a teardown of a setup that stopped before recording its URL.
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            _queue_arns(p, region, account, app_prefix, queues),
        ),
        _statement(
            "AppServices",
            ["ecs:DeleteService", "ecs:DescribeServices", "ecs:UpdateService"],
            [f"arn:{p}:ecs:{region}:{account}:service/*/{name}"],
        ),
        _statement(
            "Clusters",
            ["ecs:DeleteCluster", "ecs:DescribeClusters"],
            [f"arn:{p}:ecs:{region}:{account}:cluster/*"],
        ),
        _statement(
            "StoppedTasks",
            # While workers are missing: why the service's tasks stopped (failed_tasks.py).
            ["ecs:DescribeTasks", "ecs:ListTasks"],
            ["*"],  # ListTasks names no task; read only
        ),
        _statement(
            "TaskDefinitions",
            # Describe: a teardown resumed after deregistering reads which worker ran.
            [
                "ecs:DeregisterTaskDefinition",
                "ecs:DescribeTaskDefinition",
                "ecs:ListTaskDefinitions",
            ],
            ["*"],  # no resource scoping for these
        ),
        _statement(
            "SpotFleet",
            [
                "ec2:CancelSpotFleetRequests",
                "ec2:DescribeInstances",
                "ec2:DescribeSpotFleetInstances",
                "ec2:DescribeSpotFleetRequests",
                "ec2:ModifySpotFleetRequest",
            ],
            ["*"],  # no resource scoping for these
        ),
        {
            **_statement(
                "TerminateFleetInstances",
                ["ec2:TerminateInstances"],
                [f"arn:{p}:ec2:{region}:{account}:instance/*"],
            ),
            "Condition": {"Null": {"ec2:ResourceTag/aws:ec2spot:fleet-request-id": "false"}},
        },
        _statement("DescribeAlarms", ["cloudwatch:DescribeAlarms"], ["*"]),
        _statement(
            "AppAlarmsAndDashboards",
            ["cloudwatch:DeleteAlarms", "cloudwatch:DeleteDashboards"],
            [
                f"arn:{p}:cloudwatch:{region}:{account}:alarm:{name}",
                f"arn:{p}:cloudwatch::{account}:dashboard/{name}",
            ],
        ),
        _statement(
            "ExportLogs",
            ["logs:CreateExportTask"],
            _log_group_arns(p, region, account, app_prefix, log_groups, streams=False),
        ),
        _statement("ExportStatus", ["logs:DescribeExportTasks"], ["*"]),
        _statement(
            "MonitorRules",
            ["events:DeleteRule", "events:ListTargetsByRule", "events:RemoveTargets"],
            [f"arn:{p}:events:{region}:{account}:rule/{name}"],
        ),
    ]
    if function_name:
        statements.append(
            _statement(
                "OwnInvokePermissions",
                ["lambda:RemovePermission"],
                [f"arn:{p}:lambda:{region}:{account}:function:{function_name}"],
            )
        )
    if topic_arn:
        statements.append(_statement("Notices", ["sns:Publish"], [topic_arn]))
    if object_arns:
        statements.append(
            _statement(
                "FamilyLogExports",
                ["s3:PutObject"],
                _bucket_arns(p, buckets, f"{FAMILY_EXPORT_ROOT}/*")[1],
            )
        )
        # Delete: the ledger summary's journal, once a checkpoint covers it (summary.py).
        statements.append(
            _statement("RunState", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], object_arns)
        )
        # The run's ledger is read by listing its records. Not limited to an s3:prefix of
        # _ds/: S3 answers a GetObject of a missing key 404 only to a caller allowed to list
        # the bucket, and a GetObject has no s3:prefix, so a conditional grant gets 403
        # (AccessDenied) where the run state, a checkpoint or a record is not there yet.
        # Listing shows key names only; objects outside _ds/ stay unreadable.
        statements.append(_statement("BucketList", ["s3:ListBucket"], bucket_arns))
    return {"Version": _VERSION, "Statement": statements}


# --- the monitor function's code ----------------------------------------------------------
def function_zip() -> bytes:
    """The monitor function's code: this package and its pure dependencies, zipped.

    The Lambda runtime provides boto3. pydantic_core is compiled, so the zip is only valid
    for this machine's OS/CPU and Python version: `bootstrap` checks they match a Lambda
    runtime. The zip is byte-for-byte reproducible, so unchanged code is not re-uploaded.
    """
    files: dict[str, Path] = {}
    for package in BUNDLED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise BackendError(
                f"cannot package the monitor function: {package} is not installed here. "
                "Install distributed-something[aws] and run `ds aws bootstrap` again"
            )
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            root = origin.parent
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    files[f"{package}/{path.relative_to(root).as_posix()}"] = path
        else:
            files[origin.name] = origin
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname in sorted(files):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[arcname].read_bytes())
    return buffer.getvalue()


def lambda_platform() -> tuple[str, str]:
    """The Lambda (runtime, architecture) matching this interpreter, whose compiled
    dependencies the function zip carries. Raises `InputError` off Linux."""
    machine = platform.machine().lower()
    architectures = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
    if sys.platform != "linux" or machine not in architectures:
        raise InputError(
            "ds aws bootstrap",
            None,
            f"the monitor function must be packaged on Linux (x86_64 or arm64), not "
            f"{sys.platform}/{machine}, because it bundles compiled code from this machine",
            "run `ds aws bootstrap` on Linux, e.g. in AWS CloudShell",
        )
    return f"python{sys.version_info.major}.{sys.version_info.minor}", architectures[machine]


# --- bootstrap / destroy ------------------------------------------------------------------
def bootstrap(
    clients: AwsClients,
    app_prefix: str = "ds",
    *,
    buckets: Sequence[str] = (),
    queues: Sequence[str] = (),
    log_groups: Sequence[str] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    role_wait: float = 120.0,
) -> dict[str, str]:
    """Create (or bring up to date) the account resources; returns their ARNs by kind.

    Keys: ``instance_role``, ``instance_profile``, ``spot_fleet_role``, ``monitor_role``,
    ``topic``, ``function``. Safe to run again: existing resources are kept and their
    policies and code updated. ``buckets`` are the buckets workers and the monitor may use;
    ``queues`` and ``log_groups`` the queue, dead-letter queue and log group names of a
    config (`AwsNames.queue_names`, `AwsNames.log_group_names`); those starting with
    ``app_prefix`` are covered anyway, the others are granted by exact name. All three are
    added to what the roles' inline policies already name (`policy_buckets`,
    `policy_queues`, `policy_log_groups`): a second app bootstrapped under the same prefix
    must not take the first app's buckets or queues away.
    A new role takes a few seconds to be usable by Lambda: creating the function is retried
    for up to ``role_wait`` seconds of ``clock``.
    """
    runtime, architecture = lambda_platform()
    names = BootstrapNames(app_prefix)
    region = clients.settings.region
    p = partition(region)
    with aws_call("create the account resources for ds"):
        account = str(clients.sts.get_caller_identity()["Account"])
        # PutRolePolicy replaces the whole document: keep every name granted before.
        before = [
            _current_policy(clients.iam, role, names.inline_policy)
            for role in (names.instance_role, names.monitor_role)
        ]
        instance_granted = _merged(before[0], buckets, queues, log_groups)
        monitor_granted = _merged(before[1], buckets, queues, log_groups)
        instance_document = instance_policy(
            account,
            region,
            app_prefix,
            instance_granted.buckets,
            queues=instance_granted.queues,
            log_groups=instance_granted.log_groups,
        )

        def monitor_document(topic_arn: str) -> dict[str, Any]:
            return monitor_policy(
                account,
                region,
                app_prefix,
                monitor_granted.buckets,
                topic_arn=topic_arn,
                function_name=names.function,
                queues=monitor_granted.queues,
                log_groups=monitor_granted.log_groups,
            )

        # Before anything is created: CreateTopic's ARN is this one.
        topic_arn = f"arn:{p}:sns:{region}:{account}:{names.topic}"
        check_policy_size(names.instance_role, instance_document, app_prefix)
        check_policy_size(names.monitor_role, monitor_document(topic_arn), app_prefix)
        topic_arn = str(clients.sns.create_topic(Name=names.topic)["TopicArn"])
        instance_role = _ensure_role(
            clients.iam,
            names.instance_role,
            principals.EC2,
            [f"arn:{p}:iam::aws:policy/{INSTANCE_MANAGED_POLICY}"],
            (names.inline_policy, instance_document),
        )
        profile_arn = _ensure_profile(clients.iam, names.instance_profile, names.instance_role)
        fleet_role = _ensure_role(
            clients.iam,
            names.spot_fleet_role,
            principals.SPOT_FLEET,
            [f"arn:{p}:iam::aws:policy/{SPOT_FLEET_MANAGED_POLICY}"],
            None,
        )
        monitor_role = _ensure_role(
            clients.iam,
            names.monitor_role,
            principals.LAMBDA,
            [f"arn:{p}:iam::aws:policy/{LAMBDA_MANAGED_POLICY}"],
            (names.inline_policy, monitor_document(topic_arn)),
        )
        function_arn = _ensure_function(
            clients.lambda_,
            names.function,
            monitor_role,
            runtime,
            architecture,
            {"DS_TOPIC_ARN": topic_arn},
            clock=clock,
            sleep=sleep,
            role_wait=role_wait,
        )
    return {
        "instance_role": instance_role,
        "instance_profile": profile_arn,
        "spot_fleet_role": fleet_role,
        "monitor_role": monitor_role,
        "topic": topic_arn,
        "function": function_arn,
    }


def destroy(clients: AwsClients, app_prefix: str = "ds") -> list[str]:
    """Remove what `bootstrap` created (function, topic, profile, roles with their policies).

    Idempotent: what is already gone is skipped. Returns the names of what was removed.
    """
    names = BootstrapNames(app_prefix)
    removed: list[str] = []
    with aws_call("remove the account resources of ds"):
        try:
            clients.lambda_.delete_function(FunctionName=names.function)
            removed.append(names.function)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
        account = str(clients.sts.get_caller_identity()["Account"])
        region = clients.settings.region
        topic_arn = f"arn:{partition(region)}:sns:{region}:{account}:{names.topic}"
        topics = clients.sns.get_paginator("list_topics").paginate()
        if any(t["TopicArn"] == topic_arn for page in topics for t in page.get("Topics", [])):
            clients.sns.delete_topic(TopicArn=topic_arn)
            removed.append(names.topic)
        if _remove_profile(clients.iam, names.instance_profile):
            removed.append(names.instance_profile)
        for role in (names.instance_role, names.spot_fleet_role, names.monitor_role):
            if _remove_role(clients.iam, role):
                removed.append(role)
    return removed


# --- helpers ------------------------------------------------------------------------------
def _resources(document: dict[str, Any]) -> Iterator[str]:
    """Every string in the Resource elements of a policy document (malformed parts skipped)."""
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for statement in statements if isinstance(statements, list) else []:
        resources = statement.get("Resource", []) if isinstance(statement, dict) else []
        for resource in [resources] if isinstance(resources, str) else resources:
            if isinstance(resource, str):
                yield resource


def policy_buckets(document: dict[str, Any]) -> list[str]:
    """The bucket names a policy document's S3 resources name (``arn:<p>:s3:::bucket`` and
    ``arn:<p>:s3:::bucket/keys``), sorted; wildcards and non-S3 resources are ignored."""
    found: set[str] = set()
    for resource in _resources(document):
        head, sep, rest = resource.partition(":s3:::")
        bucket = rest.split("/", 1)[0]
        if sep and head.startswith("arn:") and bucket and "*" not in bucket:
            found.add(bucket)
    return sorted(found)


def policy_queues(document: dict[str, Any]) -> list[str]:
    """The queue names a policy document's SQS resources name exactly
    (``arn:<p>:sqs:<region>:<account>:<name>``), sorted; patterns are ignored."""
    found: set[str] = set()
    for resource in _resources(document):
        parts = resource.split(":", 5)
        is_sqs = len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs"
        if is_sqs and parts[5] and not set(parts[5]) & {"*", "?"}:
            found.add(parts[5])
    return sorted(found)


def policy_log_groups(document: dict[str, Any]) -> list[str]:
    """The log group names a policy document's CloudWatch Logs resources name exactly
    (``…:log-group:<name>`` and ``…:log-group:<name>:log-stream:*``), sorted; patterns are
    ignored."""
    found: set[str] = set()
    for resource in _resources(document):
        head, sep, rest = resource.partition(":log-group:")
        group = rest.split(":log-stream:", 1)[0]
        if sep and head.startswith("arn:") and group and not set(group) & {"*", "?", ":"}:
            found.add(group)
    return sorted(found)


@dataclass(frozen=True)
class Granted:
    """The names a role's inline policy grants by name (beyond the prefix patterns)."""

    buckets: list[str]
    queues: list[str]
    log_groups: list[str]


#: IAM: "Role policy size cannot exceed 10,240 characters" (a role's inline policies
#: together, whitespace not counted); moto takes more.
MAX_ROLE_POLICY_CHARACTERS = 10_240


def check_policy_size(role: str, document: dict[str, Any], app_prefix: str) -> None:
    """Raise `InputError` when ``document``, the inline policy of ``role``, is longer than
    IAM takes: it names every bucket, queue and log group granted by earlier bootstraps
    under ``app_prefix`` (some 40 buckets, or 15 apps with names of their own, fill it)."""
    size = len(json.dumps(document, separators=(",", ":")))
    if size <= MAX_ROLE_POLICY_CHARACTERS:
        return
    raise InputError(
        "argument",
        "--prefix",
        f"the inline policy of {role} would have {size:,} characters (it keeps every bucket, "
        f"queue and log group granted under the prefix {app_prefix!r}); IAM takes at most "
        f"{MAX_ROLE_POLICY_CHARACTERS:,}",
        "bootstrap this project under a prefix of its own (`ds aws bootstrap --prefix NAME`, "
        'and aws.monitor_function = "NAME-monitor" in ds.toml), or name its queues and log '
        "groups with the prefix (they then need no grant of their own)",
    )


def _merged(
    document: dict[str, Any] | None,
    buckets: Sequence[str],
    queues: Sequence[str],
    log_groups: Sequence[str],
) -> Granted:
    """The names given plus those ``document`` (a role's current inline policy) names."""
    old = document or {}

    def union(found: list[str], given: Sequence[str]) -> list[str]:
        return sorted(set(found) | {n for n in given if n})

    return Granted(
        union(policy_buckets(old), buckets),
        union(policy_queues(old), queues),
        union(policy_log_groups(old), log_groups),
    )


def missing_grants(
    role: Literal["instance", "monitor"],
    document: dict[str, Any],
    *,
    account: str,
    region: str,
    app_prefix: str,
) -> list[str]:
    """The grants ("Sid: action") this version's `bootstrap` would write into ``role``'s
    inline policy that ``document`` (the policy the account's role has) lacks: a role made
    by an older ds, which `ds aws bootstrap` run again brings up to date. The names
    ``document`` grants are kept, as bootstrap keeps them (`_merged`). Pure."""
    granted = _merged(document, (), (), ())
    names = BootstrapNames(app_prefix)
    if role == "instance":
        wanted = instance_policy(
            account,
            region,
            app_prefix,
            granted.buckets,
            queues=granted.queues,
            log_groups=granted.log_groups,
        )
    else:
        wanted = monitor_policy(
            account,
            region,
            app_prefix,
            granted.buckets,
            topic_arn=f"arn:{partition(region)}:sns:{region}:{account}:{names.topic}",
            function_name=names.function,
            queues=granted.queues,
            log_groups=granted.log_groups,
        )

    def grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
        found = set()
        for statement in as_list(policy.get("Statement")):
            if isinstance(statement, dict) and statement.get("Effect") == "Allow":
                for action in as_list(statement.get("Action")):
                    found.add((str(statement.get("Sid", "")), str(action)))
        return found

    have = grants(document)
    return [f"{sid}: {action}" for sid, action in sorted(grants(wanted) - have)]


def as_list(value: Any) -> list[Any]:
    """A policy element that may be one value or a list of them, as a list (None: [])."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _current_policy(iam: Any, role: str, policy_name: str) -> dict[str, Any] | None:
    """The role's inline policy ``policy_name`` (None when the role or policy is missing)."""
    try:
        document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return None
    return decode_policy(document)


def decode_policy(document: Any) -> dict[str, Any]:
    """A policy document as IAM returned it: boto3 decodes it; a raw answer is URL-encoded
    JSON text. Anything that is not a JSON object becomes an empty document."""
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        document = json.loads(text)
    return document if isinstance(document, dict) else {}


def _ensure_role(
    iam: Any,
    name: str,
    service: str,
    managed: list[str],
    inline: tuple[str, dict[str, Any]] | None,
) -> str:
    trust = json.dumps(trust_policy(service))
    try:
        made = create_tagged(
            lambda tagged: iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=trust,
                Description="Created by `ds aws bootstrap`",
                **({"Tags": [{"Key": "ds:bootstrap", "Value": "true"}]} if tagged else {}),
            ),
            permission="iam:TagRole",
            what="IAM roles",
        )
        arn = str(made["Role"]["Arn"])
    except ClientError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        arn = str(iam.get_role(RoleName=name)["Role"]["Arn"])
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
    for policy_arn in managed:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)  # idempotent
    if inline is not None:
        policy_name, document = inline
        iam.put_role_policy(
            RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
        )
    return arn


def _ensure_profile(iam: Any, name: str, role: str) -> str:
    try:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if role not in {r["RoleName"] for r in profile.get("Roles", [])}:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
    return str(profile["Arn"])


def _ensure_function(
    lambda_: Any,
    name: str,
    role_arn: str,
    runtime: str,
    architecture: str,
    environment: dict[str, str],
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    role_wait: float,
) -> str:
    code = function_zip()
    settings: dict[str, Any] = {
        "Role": role_arn,
        "Runtime": runtime,
        "Handler": HANDLER,
        "Timeout": 900,  # a teardown waits for log exports
        "MemorySize": 256,
        "Environment": {"Variables": environment},
        "Description": "ds unattended monitor (created by `ds aws bootstrap`)",
    }
    try:
        current = lambda_.get_function(FunctionName=name)["Configuration"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        current = None
    if current is None:
        deadline = clock() + role_wait
        while True:
            try:
                created = create_tagged(
                    lambda tagged: lambda_.create_function(
                        FunctionName=name,
                        Code={"ZipFile": code},
                        Architectures=[architecture],
                        **({"Tags": {"ds:bootstrap": "true"}} if tagged else {}),
                        **settings,
                    ),
                    permission="lambda:TagResource",
                    what="Lambda functions",
                )
                return str(created["FunctionArn"])
            except ClientError as exc:
                # A role just created is not assumable by Lambda for a few seconds.
                retry = error_code(exc) == "InvalidParameterValueException"
                if not retry or clock() >= deadline:
                    raise
            sleep(5.0)
    if current.get("CodeSha256") != base64.b64encode(hashlib.sha256(code).digest()).decode():
        lambda_.update_function_code(FunctionName=name, ZipFile=code, Architectures=[architecture])
        lambda_.get_waiter("function_updated_v2").wait(FunctionName=name)
    lambda_.update_function_configuration(FunctionName=name, **settings)
    return str(current["FunctionArn"])


def _remove_profile(iam: Any, name: str) -> bool:
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise
    for role in profile.get("Roles", []):
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
    iam.delete_instance_profile(InstanceProfileName=name)
    return True


def _remove_role(iam: Any, name: str) -> bool:
    try:
        iam.get_role(RoleName=name)
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
        for policy in page.get("AttachedPolicies", []):
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
        for policy_name in page.get("PolicyNames", []):
            iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
    # A role still in some other instance profile cannot be deleted: remove it there too.
    pages = iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=name)
    for page in pages:
        for profile in page.get("InstanceProfiles", []):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=name
            )
    iam.delete_role(RoleName=name)
    return True
