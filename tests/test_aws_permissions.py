"""Least privilege, checked against what the code really calls.

A whole run on moto (bootstrap → setup → submit → start-cluster → a worker on a fleet
instance → the unattended monitor until teardown) is recorded operation by operation
(conftest `aws_calls`: botocore's ``before-parameter-build`` event on every client
`clients.client` makes). Each recorded operation is turned into the IAM requests AWS
would authorize (action, resource ARN, condition context) and evaluated against the
inline policies `ds aws bootstrap` wrote, read back from IAM: every worker-side request
must be allowed by the instance role's policy, every monitor request by the monitor
role's, and every grant must be used (or be listed below with the reason it is not
exercised here). The config uses legacy names outside the bootstrap prefix
(``DeadMessages_Erin``, its own queue and log group).

Why not moto's access-control mode: it does check credentials of a role assumed through
moto's STS, but only actions, not resources — a policy scoped to ``arn:aws:sqs:*:*:ds-*``
denies ``ds-allowed`` too (shared/notes/moto-server.md) — and it knows none of the
condition keys used here (``ec2:SourceInstanceARN``, ``aws:TagKeys``, ``s3:prefix``). So it
can show neither a wrong resource scope nor a wrong condition; the small evaluator below
can, for exactly the policy features these policies use (and raises on any other).

Also here: `policy_check` (the one-line warning of `ds validate`/`ds setup`) and the loud
warning and storage record of a worker whose container cannot reach the instance metadata
(hop limit 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from conftest import AwsCall, AwsCallRecorder
from distributed_something.backends.aws import principals
from distributed_something.backends.aws.bootstrap import (
    BootstrapNames,
    bootstrap,
    decode_policy,
    instance_policy,
    monitor_policy,
    trust_policy,
)
from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.backends.aws.policy_check import (
    allows,
    coverage_problems,
    coverage_warning,
)
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.config.model import Config
from imds_server import imds_server
from testkit import moto_family_fleet

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "erin-lab-bucket"
PREFIX = "Plate"  # `ds aws bootstrap` in this folder: the app name

# --- a small, honest IAM policy evaluator --------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for an operation: ``action`` on ``resource`` with the
    request's condition ``context`` (keys as AWS names them; lists for multi-valued keys)."""

    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class Unresolved(Exception):
    """A policy variable whose key the request context lacks: the statement cannot apply."""


def _lookup(context: Mapping[str, Any], key: str) -> Any:
    for name, value in context.items():
        if name.lower() == key.lower():  # condition keys are case-insensitive
            return value
    return None


def _substitute(text: str, context: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        found = _lookup(context, match.group(1))
        if not isinstance(found, str):
            raise Unresolved(match.group(1))
        return found

    return _VARIABLE.sub(value, text)


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, Any]) -> bool:
    present = _lookup(context, key)
    values = [str(v) for v in _as_list(wanted)]
    if operator == "Null":
        (flag,) = values
        return (present is None) == (flag.lower() == "true")
    if operator in ("StringEquals", "StringLike"):
        if present is None or isinstance(present, list):
            return False
        try:
            expected = [_substitute(v, context) for v in values]
        except Unresolved:
            return False
        if operator == "StringEquals":
            return present in expected
        return any(_glob(v, present) for v in expected)
    if operator == "ForAllValues:StringEquals":
        # Every value of the request's (multi-valued) key is among the wanted ones; a key
        # the request lacks holds vacuously (AWS's documented behaviour).
        return present is None or all(v in values for v in _as_list(present))
    raise AssertionError(f"the evaluator does not know the condition operator {operator}")


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    assert "NotAction" not in statement and "NotResource" not in statement, statement
    if not any(_glob(a, request.action, case=False) for a in _as_list(statement["Action"])):
        return False
    context = {**request.context, "aws:ARN": request.resource}
    try:
        patterns = [_substitute(r, context) for r in _as_list(statement["Resource"])]
    except Unresolved:
        return False
    if not any(_glob(p, request.resource) for p in patterns):
        return False
    for operator, entries in statement.get("Condition", {}).items():
        for key, wanted in entries.items():
            if not _condition_holds(operator, key, wanted, context):
                return False
    return True


def evaluate(documents: Sequence[Mapping[str, Any]], request: Request) -> list[str]:
    """The Sids of the Allow statements granting ``request`` (empty: denied); any
    applying Deny statement denies."""
    granted: list[str] = []
    for document in documents:
        for statement in _as_list(document["Statement"]):
            if not _statement_applies(statement, request):
                continue
            if statement["Effect"] == "Deny":
                return []
            granted.append(statement.get("Sid", "?"))
    return granted


def test_the_evaluator_itself() -> None:
    document = instance_policy(ACCOUNT, REGION, "ds", ["b"], queues=["DeadMessages_Erin"])
    me = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"
    other = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-2"
    source = {"ec2:SourceInstanceARN": me}
    assert evaluate([document], Request("ec2:TerminateInstances", me, source))
    assert not evaluate([document], Request("ec2:TerminateInstances", other, source))
    assert not evaluate([document], Request("ec2:TerminateInstances", me))  # a task role
    name_tag = {**source, "aws:TagKeys": ["Name"]}
    assert evaluate([document], Request("ec2:CreateTags", me, name_tag))
    app_tag = {**source, "aws:TagKeys": ["Name", "ds:app"]}
    assert not evaluate([document], Request("ec2:CreateTags", me, app_tag))
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:"
    assert evaluate([document], Request("sqs:ReceiveMessage", queue + "dsQueue"))
    assert evaluate([document], Request("sqs:receivemessage", queue + "DeadMessages_Erin"))
    assert not evaluate([document], Request("sqs:ReceiveMessage", queue + "DeadMessages_Bob"))
    assert not evaluate([document], Request("sqs:DeleteQueue", queue + "dsQueue"))
    acl = {"s3:x-amz-acl": "public-read"}
    assert not evaluate([document], Request("s3:PutObjectAcl", "arn:aws:s3:::b/k", acl))
    monitor = monitor_policy(ACCOUNT, REGION, "ds", ["b"])
    listing = Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "_ds/ds/runs/"})
    assert evaluate([monitor], listing)
    # A condition on a key the request lacks does not hold: a GetObject's 404 check.
    prefixed = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b"}
    prefixed["Condition"] = {"StringLike": {"s3:prefix": ["_ds/*"]}}
    assert evaluate([{"Statement": [prefixed]}], listing)
    assert not evaluate([{"Statement": [prefixed]}], Request("s3:ListBucket", "arn:aws:s3:::b"))
    assert evaluate([monitor], Request("s3:ListBucket", "arn:aws:s3:::b"))
    assert evaluate([monitor], Request("s3:GetObject", "arn:aws:s3:::b/_ds/ds/state.json"))
    assert not evaluate([monitor], Request("s3:GetObject", "arn:aws:s3:::b/out/a.csv"))
    deny = {"Effect": "Deny", "Action": "sqs:*", "Resource": "*"}
    assert not evaluate(
        [document, {"Statement": [deny]}], Request("sqs:ReceiveMessage", queue + "dsQueue")
    )


# --- recorded operations → IAM requests ----------------------------------------------------


@dataclass
class World:
    """What the requests of a recorded call depend on beyond its parameters."""

    region: str = REGION
    account: str = ACCOUNT
    #: instance id → spot fleet request id (the tag AWS puts on fleet instances)
    fleet_of: dict[str, str] = field(default_factory=dict)
    #: the instance the worker runs on (its credentials carry ec2:SourceInstanceARN)
    worker_instance: str = ""

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{resource}"

    def instance(self, instance_id: str) -> str:
        return self.arn("ec2", f"instance/{instance_id}")


# Operations whose IAM action supports no resource scoping: AWS wants "Resource": "*".
_UNSCOPED = {
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeInstanceStatus"),
    ("ec2", "DescribeSpotFleetInstances"),
    ("ec2", "DescribeSpotFleetRequests"),
    ("ec2", "ModifySpotFleetRequest"),
    ("ec2", "CancelSpotFleetRequests"),
    ("ecs", "ListTaskDefinitions"),
    ("ecs", "DeregisterTaskDefinition"),
    ("ecs", "DescribeTaskDefinition"),
    # The service's stopped tasks (backends/aws/failed_tasks.py): granted on "*", read only.
    ("ecs", "ListTasks"),
    ("ecs", "DescribeTasks"),
    ("cloudwatch", "DescribeAlarms"),
    ("logs", "DescribeExportTasks"),
}
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_S3_ACTION = {
    "GetObject": "GetObject",
    "HeadObject": "GetObject",
    "PutObject": "PutObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "AbortMultipartUpload": "AbortMultipartUpload",
    "DeleteObject": "DeleteObject",
}


def requests_of(call: AwsCall, world: World) -> list[Request]:
    """The IAM authorizations AWS makes for ``call`` (per the Service Authorization
    Reference); an operation not described here fails the test, so it gets described."""
    service, op, p = call.service, call.operation, call.params
    source = {"ec2:SourceInstanceARN": world.instance(world.worker_instance)}
    if call.actor != "worker" or not world.worker_instance:
        source = {}
    if (service, op) == ("sts", "GetCallerIdentity"):
        return []  # needs no permission
    if (service, op) in _UNSCOPED:
        return [Request(f"{service}:{op}", "*")]
    if service == "sqs":
        name = p["QueueName"] if op == "GetQueueUrl" else p["QueueUrl"].rstrip("/").rsplit("/")[-1]
        return [Request(f"sqs:{_SQS_BATCH.get(op, op)}", world.arn("sqs", name))]
    if service == "s3":
        if op == "ListObjectsV2":
            context = {"s3:prefix": p.get("Prefix", "")}
            return [Request("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", context)]
        if op in _S3_ACTION:
            target = f"arn:aws:s3:::{p['Bucket']}/{p['Key']}"
            found = [Request(f"s3:{_S3_ACTION[op]}", target)]
            if op in ("GetObject", "HeadObject"):
                # "If you have the s3:ListBucket permission on the bucket, Amazon S3 returns
                # an HTTP status code 404 (Not Found) error. If you don't have the
                # s3:ListBucket permission, Amazon S3 returns an HTTP status code 403"
                # (GetObject, HeadObject): every read of a key that may be missing (the
                # code takes 404 as "not there") needs that, with this request's context,
                # which has no s3:prefix.
                found.append(Request("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}"))
            if "ACL" in p:  # a canned ACL on an upload is also a PutObjectAcl
                found.append(Request("s3:PutObjectAcl", target, {"s3:x-amz-acl": p["ACL"]}))
            return found
    if service == "logs":
        group = world.arn("logs", f"log-group:{p.get('logGroupName', '')}")
        if op in ("CreateLogStream", "PutLogEvents"):
            return [Request(f"logs:{op}", f"{group}:log-stream:{p['logStreamName']}")]
        if op == "CreateExportTask":
            # "you must use credentials that have permission to write to the S3 bucket that
            # you specify as the destination" (CreateExportTask): CloudWatch first writes
            # its aws-logs-write-test object under the prefix.
            prefix = p.get("destinationPrefix", "exportedlogs")
            written = f"arn:aws:s3:::{p['destination']}/{prefix}/aws-logs-write-test"
            return [Request(f"logs:{op}", group), Request("s3:PutObject", written)]
        if op in ("CreateLogGroup", "PutRetentionPolicy"):
            return [Request(f"logs:{op}", group)]
    if service == "cloudwatch":
        if op == "PutMetricAlarm":
            found = [
                Request(
                    "cloudwatch:PutMetricAlarm", world.arn("cloudwatch", f"alarm:{p['AlarmName']}")
                )
            ]
            # PutMetricAlarm with a terminate action also checks the caller may terminate
            # the instance, and "the iam:CreateServiceLinkedRole permission for all alarms
            # with EC2 actions" (CloudWatch API reference, PutMetricAlarm).
            if any(a.endswith(":ec2:terminate") for a in p.get("AlarmActions", [])):
                found.append(
                    Request(
                        "iam:CreateServiceLinkedRole",
                        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{principals.EVENTS}/"
                        "AWSServiceRoleForCloudWatchEvents",
                        {"iam:AWSServiceName": principals.EVENTS},
                    )
                )
                for dimension in p.get("Dimensions", []):
                    if dimension["Name"] == "InstanceId":
                        found.append(terminate(dimension["Value"], world, source))
            return found
        if op == "DeleteAlarms":
            return [
                Request("cloudwatch:DeleteAlarms", world.arn("cloudwatch", f"alarm:{name}"))
                for name in p["AlarmNames"]
            ]
        if op == "DeleteDashboards":
            return [
                Request(
                    "cloudwatch:DeleteDashboards",
                    world.arn("cloudwatch", f"dashboard/{name}", region=False),
                )
                for name in p["DashboardNames"]
            ]
    if service == "ec2":
        if op == "TerminateInstances":
            return [terminate(i, world, source) for i in p["InstanceIds"]]
        if op == "CreateTags":
            keys = [t["Key"] for t in p["Tags"]]
            return [
                Request("ec2:CreateTags", world.instance(i), {**source, "aws:TagKeys": keys})
                for i in p["Resources"]
            ]
    if service == "ecs":
        cluster = p.get("cluster", "default")
        if op in ("DescribeServices", "UpdateService", "DeleteService"):
            services = p["services"] if op == "DescribeServices" else [p["service"]]
            return [
                Request(f"ecs:{op}", world.arn("ecs", f"service/{cluster}/{s}")) for s in services
            ]
        if op in ("DescribeClusters", "DeleteCluster"):
            clusters = p["clusters"] if op == "DescribeClusters" else [cluster]
            return [Request(f"ecs:{op}", world.arn("ecs", f"cluster/{c}")) for c in clusters]
    if service == "events" and op in ("DeleteRule", "ListTargetsByRule", "RemoveTargets"):
        rule = p["Name"] if op == "DeleteRule" else p["Rule"]
        return [Request(f"events:{op}", world.arn("events", f"rule/{rule}"))]
    if service == "lambda" and op == "RemovePermission":
        name = p["FunctionName"]
        arn = name if name.startswith("arn:") else world.arn("lambda", f"function:{name}")
        return [Request("lambda:RemovePermission", arn)]
    if service == "sns" and op == "Publish":
        return [Request("sns:Publish", p["TopicArn"])]
    raise AssertionError(f"no IAM mapping for {service}:{op} ({call.actor}): describe it here")


def terminate(instance_id: str, world: World, source: Mapping[str, str]) -> Request:
    context = dict(source)
    if instance_id in world.fleet_of:
        context["ec2:ResourceTag/aws:ec2spot:fleet-request-id"] = world.fleet_of[instance_id]
    return Request("ec2:TerminateInstances", world.instance(instance_id), context)


# --- the recorded run ------------------------------------------------------------------------

WORK = (
    "import os, sys\n"
    "print('working on', sys.argv[2])\n"
    "if sys.argv[2] == 'poison': sys.exit(7)\n"
    "open(os.path.join(sys.argv[1], 'result.txt'), 'w').write('result of ' + sys.argv[2])\n"
)


def legacy_project(folder: Path, python: str) -> Path:
    """A ds.toml whose queue, dead-letter queue and log groups are outside the prefix."""
    folder.mkdir(parents=True)
    config = {
        "app_name": PREFIX,
        "backend": "aws",
        "image": "example/ds-worker:1",
        "recipe": {
            "name": "command",
            "argv": [python, "-c", WORK, "{output_dir}", "{name}"],
            "output_prefix": "out/{name}",
        },
        # two machines: moto cannot cancel a fleet (with termination) whose instances are all gone
        "cluster": {"machines": 2, "tasks_per_machine": 1, "docker_cores": 1},
        "queue": {
            "name": "ErinJobs",
            "dead_letter_queue": "DeadMessages_Erin",
            "visibility": 30,
            "job_retries": 2,
        },
        "storage": {"bucket": BUCKET},
        "aws": {
            "region": REGION,
            "ecs_cluster": "PlateCluster",
            "log_group_name": "erin-logs",
            "create_dashboard": True,
            "auto_monitor": True,
        },
        "local": {"poll_interval": 0.1},
    }
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "job.json").write_text(
        json.dumps({"groups": [{"name": n} for n in ("a", "b", "poison")]})
    )
    return folder


def run_ds(*args: str) -> None:
    """`ds ARGS` in this process (so its AWS calls are recorded); must succeed."""
    from distributed_something.cli.main import main

    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code in (0, None), f"ds {' '.join(args)} exited with {exc.code}"


def inline_policy(clients: AwsClients, role: str) -> dict[str, Any]:
    answer = clients.iam.get_role_policy(
        RoleName=role, PolicyName=BootstrapNames(PREFIX).inline_policy
    )
    return decode_policy(answer["PolicyDocument"])


def run_worker_on_instance(tmp_path: Path, instance_id: str, env: Mapping[str, str]) -> None:
    """A `ds worker` as ECS starts it (config from the task definition's environment) on
    the fleet instance ``instance_id``, then its idle shutdown's termination."""
    from distributed_something.backends import open_backend
    from distributed_something.backends.aws.clients import settings_from
    from distributed_something.backends.aws.instance import Imds
    from distributed_something.backends.aws.worker_side import (
        idle_shutdown,
        on_instance,
        task_log_factory,
    )
    from distributed_something.recipes.registry import get_recipe
    from distributed_something.usecases.work import worker_project
    from distributed_something.worker.loop import Worker, WorkerSettings
    from distributed_something.worker.runner import SubprocessRunner

    with imds_server() as imds:
        imds.instance_id = instance_id
        mp = pytest.MonkeyPatch()
        try:
            for key, value in {**env, "DS_METADATA_URL": imds.url}.items():
                mp.setenv(key, value)
            mp.setattr("tempfile.tempdir", str(tmp_path / "container-tmp"))
            (tmp_path / "container-tmp").mkdir()
            project = worker_project(None)
            config = project.config
            settings = WorkerSettings(
                run_id=env["DS_RUN_ID"], scratch_root=tmp_path / "scratch", poll_interval=0.1
            )

            def new_worker() -> Worker:
                return Worker(
                    config,
                    open_backend(project),
                    get_recipe(config.recipe.name, source="environment"),
                    SubprocessRunner(),
                    settings,
                    task_log=task_log_factory(config, settings_from(config.aws.region, None)),
                )

            hand_back_at_last_receive(new_worker(), mp)
            worker = new_worker()
            with on_instance(config, worker, settings.scratch_root):
                summary = worker.run()
            assert summary.counts.get("done") == 2, summary
            # The machine's last step when all its workers stay idle (shown long idle here).
            worker.idle_since = worker.clock() - 3600
            (tmp_path / "idle").mkdir()
            shutdown = idle_shutdown(config, worker, Imds(imds.url), tmp_path / "idle")
            assert shutdown.check()
        finally:
            mp.undo()


def hand_back_at_last_receive(worker: Any, mp: pytest.MonkeyPatch) -> None:
    """A worker stopped (SIGTERM) just as it received a task on the last receive the queue
    allows hands it back as a fresh message (`Worker._resend`: SendMessage from the
    instance), lest its next receive dead-letter a task that used no try. The other tasks'
    receives are spent too, as a worker's releases would (each ran once, handed back)."""
    from distributed_something.worker.loop import Outcome

    queue = worker.backend.queue
    for _ in range(queue.max_receive_count - 1):
        got = queue.receive(10, 30)
        assert len(got) == 3, got  # moto gives every visible message at once
        for message in got:
            queue.release(message, 0)
    receive = queue.receive

    def received_then_stopped(count: int, lease: float) -> Any:
        got = receive(count, lease)
        worker.stop()  # the signal arrives with the message
        return got

    mp.setattr(queue, "receive", received_then_stopped)
    try:
        assert worker.step() is Outcome.STOPPED
    finally:
        worker.close()


def monitor_invocation(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch, names: AwsNames
) -> dict[str, str]:
    """Set the monitor function's own environment here and return the input
    start-cluster's schedule gives it: what Lambda runs the handler with."""
    function = clients.lambda_.get_function(FunctionName=BootstrapNames(PREFIX).function)
    for key, value in function["Configuration"]["Environment"]["Variables"].items():
        monkeypatch.setenv(key, value)
    rule = f"{names.app}-monitor-schedule"
    (target,) = clients.events.list_targets_by_rule(Rule=rule)["Targets"]
    # moto's counts are exact: no need to watch a drained queue for a minute.
    return {**json.loads(target["Input"]), "DS_DRAIN_CONFIRM_SECONDS": "1"}


def run_monitor_until_torn_down(event: dict[str, str]) -> None:
    """Tick the monitor function's handler as Lambda would, until it tore the run down."""
    from distributed_something.backends.aws.lambda_monitor import handler

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    deadline = time.monotonic() + 60
    while True:
        summary = handler(event, Context())
        if summary["status"] == "torn-down":
            return
        assert time.monotonic() < deadline, summary
        time.sleep(1.1)


@dataclass
class RecordedRun:
    calls: AwsCallRecorder
    world: World
    instance: dict[str, Any]
    monitor: dict[str, Any]
    config: Config


@pytest.fixture
def recorded_run(
    aws_iam: str,
    aws_calls: AwsCallRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RecordedRun:

    from aws_agent import task_definition_environment

    folder = legacy_project(tmp_path / "proj", sys.executable)
    monkeypatch.chdir(folder)
    clients = AwsClients(AwsSettings(region=REGION))
    clients.s3.create_bucket(Bucket=BUCKET)
    (folder / "fleet.json").write_text(json.dumps(moto_family_fleet(clients.ec2)))
    config = Config.model_validate(tomllib.loads((folder / "ds.toml").read_text()))
    names = AwsNames(config)

    with aws_calls.acting("bootstrap"):
        # What `ds aws bootstrap` passes from this config (usecases/account.py).
        bootstrap(
            clients,
            PREFIX,
            buckets=[BUCKET],
            queues=names.queue_names,
            log_groups=names.log_group_names,
        )
    with aws_calls.acting("operator"):
        run_ds("setup")
        run_ds("submit", "job.json")
        run_ds("start-cluster", "fleet.json")

    fleets = clients.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    world = World()
    for fleet in fleets:
        fleet_id = fleet["SpotFleetRequestId"]
        active = clients.ec2.describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)
        for instance in active["ActiveInstances"]:
            world.fleet_of[instance["InstanceId"]] = fleet_id
    world.worker_instance = sorted(world.fleet_of)[0]
    _, env = task_definition_environment(clients.ecs, names.cluster, names.service)

    with aws_calls.acting("worker"):
        run_worker_on_instance(tmp_path, world.worker_instance, env)
    event = monitor_invocation(clients, monkeypatch, names)
    with aws_calls.acting("monitor"):
        run_monitor_until_torn_down(event)

    boot = BootstrapNames(PREFIX)
    return RecordedRun(
        aws_calls,
        world,
        inline_policy(clients, boot.instance_role),
        inline_policy(clients, boot.monitor_role),
        config,
    )


def check_actor(
    run: RecordedRun, actor: str, document: dict[str, Any]
) -> tuple[set[tuple[str, str]], list[str]]:
    """({(Sid, action)} used, denied requests described) for every recorded call of
    ``actor``."""
    used: set[tuple[str, str]] = set()
    denied: list[str] = []
    calls = run.calls.of(actor)
    assert calls, f"nothing recorded for {actor}"
    for call in calls:
        for request in requests_of(call, run.world):
            granted = evaluate([document], request)
            if not granted:
                denied.append(f"{call.operation} → {request}")
            used.update((sid, request.action) for sid in granted)
    return used, denied


def grants(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (Sid, action) a policy grants."""
    return {(s["Sid"], a) for s in document["Statement"] for a in _as_list(s["Action"])}


#: Grants this run does not exercise, each with its reason (anything else unused fails).
INSTANCE_GRANTS_NOT_EXERCISED = {
    # Only with storage.upload_flags = "--acl bucket-owner-full-control".
    ("OwnerFullControlAcl", "s3:PutObjectAcl"),
    # The transfer manager aborts a multipart upload (outputs over 8 MiB) that fails
    # half-way; this run's outputs are small and none fails.
    ("BucketObjects", "s3:AbortMultipartUpload"),
    # The family images (no recipe: their own worker, with the instance role): run-worker.sh
    # describes its instance; their watchtower log handler may read its stream.
    ("DescribeInstances", "ec2:DescribeInstances"),
    ("AppLogs", "logs:DescribeLogStreams"),
}
MONITOR_GRANTS_NOT_EXERCISED = {
    # monitor/settle.py: tasks that left the queue without an outcome are looked for in the
    # dead letters and sent again (this run's ledger accounts for every task).
    ("AppQueues", "sqs:ReceiveMessage"),
    ("AppQueues", "sqs:ChangeMessageVisibility"),
    ("AppQueues", "sqs:SendMessage"),
    # ... and redriven when dead-lettered by hand-backs with tries left
    # (test_the_monitor_may_redrive_what_hand_backs_dead_lettered).
    ("AppQueues", "sqs:DeleteMessage"),
    # teardown.delete_queue finds the job queue by name only when the run state has no URL
    # (a setup that stopped before recording it); this run's state has it.
    ("AppQueues", "sqs:GetQueueUrl"),
    # Scaling a running fleet (the tail shrink, replacing machines): this run drains at once.
    ("SpotFleet", "ec2:DescribeSpotFleetInstances"),
    ("SpotFleet", "ec2:ModifySpotFleetRequest"),
    # Teardown's safety net for instances of a fleet cancelled without termination.
    ("TerminateFleetInstances", "ec2:TerminateInstances"),
    # A teardown resumed after deregistering: which worker ran (teardown._described_worker).
    ("TaskDefinitions", "ecs:DescribeTaskDefinition"),
    # failed_tasks.py: the service's stopped tasks are looked at while workers are missing;
    # this monitor finds the run over at its first tick (tests/test_aws_lambda.py has one
    # that looks; moto stops no task, so none is ever described).
    ("StoppedTasks", "ecs:ListTasks"),
    ("StoppedTasks", "ecs:DescribeTasks"),
    # summary.prune_journal: the ledger summary's journal is deleted 30 minutes behind its
    # checkpoint; this run lasts seconds.
    ("RunState", "s3:DeleteObject"),
    # The logs of a run of the family's images go where their run.py put them (this run's
    # containers run ds's worker): test_the_monitor_may_export_a_family_runs_logs.
    ("FamilyLogExports", "s3:PutObject"),
}


@pytest.mark.slow
def test_every_operation_of_a_legacy_named_run_is_allowed_and_every_grant_used(
    recorded_run: RecordedRun,
) -> None:
    run = recorded_run
    worker_used, worker_denied = check_actor(run, "worker", run.instance)
    assert worker_denied == []
    # A worker sends too: a task handed back on its last receive goes back fresh.
    assert any(c.operation == "SendMessageBatch" for c in run.calls.of("worker"))
    assert sorted(grants(run.instance) - worker_used) == sorted(INSTANCE_GRANTS_NOT_EXERCISED)

    monitor_used, monitor_denied = check_actor(run, "monitor", run.monitor)
    assert monitor_denied == []
    assert sorted(grants(run.monitor) - monitor_used) == sorted(MONITOR_GRANTS_NOT_EXERCISED)

    # Bootstrapped without the config's names (as before), the same run is denied them.
    old = instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET])
    denied = check_actor(run, "worker", old)[1]
    assert any("DeadMessages_Erin" in d for d in denied)
    assert any("erin-logs" in d for d in denied)

    # The legacy names were really used, by name, by both sides.
    worker_ops = {(c.operation, json.dumps(c.params, default=str)) for c in run.calls.of("worker")}
    assert any(op == "GetQueueUrl" and "DeadMessages_Erin" in p for op, p in worker_ops)
    assert any("erin-logs" in p for op, p in worker_ops if op == "PutLogEvents")
    monitor_ops = [c for c in run.calls.of("monitor")]
    assert any("DeadMessages_Erin" in json.dumps(c.params) for c in monitor_ops)
    assert any(c.operation == "CreateExportTask" for c in monitor_ops)


def test_the_monitor_may_redrive_what_hand_backs_dead_lettered(
    aws: str, aws_calls: AwsCallRecorder
) -> None:
    """monitor/settle.py sends a task dead-lettered by hand-backs (with tries left) back to
    the job queue and deletes its dead letter: the monitor's role must allow every call of
    that redrive (it lacked sqs:DeleteMessage: the redrive failed half-way on AWS, the task
    in both queues; moto enforces no IAM)."""
    from distributed_something.backends.aws.clients import client
    from distributed_something.backends.aws.sqs_queue import TASK_ID_ATTRIBUTE, SqsQueue

    settings = AwsSettings(region=REGION)
    sqs = client("sqs", settings)
    dead = sqs.create_queue(QueueName=f"{PREFIX}AppDeadMessages")["QueueUrl"]
    queue = sqs.create_queue(QueueName=f"{PREFIX}AppQueue")["QueueUrl"]
    sqs.send_message(
        QueueUrl=dead,
        MessageBody='{"group": {"name": "a"}}',
        MessageAttributes={TASK_ID_ATTRIBUTE: {"DataType": "String", "StringValue": "t1"}},
    )
    with aws_calls.acting("monitor"):
        moved = SqsQueue(settings, queue, dead, max_receive_count=3).redrive(["t1"])
    assert moved == 1
    policy = monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET])
    requests = [r for call in aws_calls.of("monitor") for r in requests_of(call, World())]
    assert {r.action for r in requests} >= {"sqs:SendMessage", "sqs:DeleteMessage"}
    denied = [str(r) for r in requests if not evaluate([policy], r)]
    assert denied == []


def test_the_monitor_may_export_a_family_runs_logs() -> None:
    """A run of the family's images (their own worker) has its logs exported to
    ``exportedlogs/<group>``, as their run.py did: the monitor's role must be allowed the
    S3 write CreateExportTask makes with the caller's rights, there and in the records
    area, and nowhere else in the bucket."""
    document = monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], log_groups=["erin-logs"])

    def export(prefix: str) -> list[Request]:
        params = {
            "logGroupName": "erin-logs",
            "destination": BUCKET,
            "destinationPrefix": prefix,
            "fromTime": 0,
            "to": 1,
        }
        return requests_of(AwsCall("monitor", "logs", "CreateExportTask", params), World())

    for prefix in ("exportedlogs/erin-logs", f"_ds/{PREFIX}x/runs/r1/logs-export/erin-logs"):
        assert [evaluate([document], request) != [] for request in export(prefix)] == [True] * 2
    logs_ok, s3_denied = export("elsewhere/erin-logs")
    assert evaluate([document], logs_ok) and not evaluate([document], s3_denied)


# --- `ds validate` / `ds setup`: the one-line coverage warning -------------------------------


def legacy_config(**aws: Any) -> Config:
    return Config(
        app_name=PREFIX,
        backend="aws",
        queue={"dead_letter_queue": "DeadMessages_Erin"},
        storage={"bucket": BUCKET},
        aws={"region": REGION, "log_group_name": "erin-logs", "auto_monitor": True, **aws},
    )


#: What `ds aws bootstrap` always gives the monitor's policy (its topic and function).
MONITOR_EXTRAS: dict[str, Any] = {
    "topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{BootstrapNames(PREFIX).topic}",
    "function_name": BootstrapNames(PREFIX).function,
}


def put_roles(clients: AwsClients, prefix: str, instance: Any, monitor: Any) -> None:
    """The bootstrap's two roles with these inline policies (as an earlier bootstrap)."""
    boot = BootstrapNames(prefix)
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for role, document in ((boot.instance_role, instance), (boot.monitor_role, monitor)):
        clients.iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
        clients.iam.put_role_policy(
            RoleName=role, PolicyName=boot.inline_policy, PolicyDocument=json.dumps(document)
        )


def test_names_outside_the_prefix_are_warned_about_until_bootstrapped(aws: str) -> None:
    clients = AwsClients(AwsSettings(region=REGION))
    config = legacy_config()
    names = AwsNames(config)
    # Bootstrapped before this change (or from another app's folder): prefix only.
    put_roles(
        clients,
        PREFIX,
        instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET]),
        monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **MONITOR_EXTRAS),
    )

    warning = coverage_warning(config)

    assert warning is not None and "\n" not in warning
    assert (
        "Plate-ecs-instance-role does not allow queue DeadMessages_Erin, log group erin-logs"
        in (warning)
    )
    assert "Plate-monitor-role does not allow queue DeadMessages_Erin, log group erin-logs" in (
        warning
    )
    assert "erin-logs_perInstance" in warning  # the monitor exports that one too
    assert "run `ds aws bootstrap` again" in warning
    assert "PlateQueue" not in warning  # covered by the prefix

    granted = {"queues": names.queue_names, "log_groups": names.log_group_names}
    boot = BootstrapNames(PREFIX)
    clients.iam.put_role_policy(
        RoleName=boot.instance_role,
        PolicyName=boot.inline_policy,
        PolicyDocument=json.dumps(instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted)),
    )
    assert coverage_problems(clients.iam, config, region=REGION, account=ACCOUNT) == {
        boot.monitor_role: [
            "queue DeadMessages_Erin",
            "log group erin-logs",
            "log group erin-logs_perInstance",
        ]
    }
    clients.iam.put_role_policy(
        RoleName=boot.monitor_role,
        PolicyName=boot.inline_policy,
        PolicyDocument=json.dumps(
            monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted, **MONITOR_EXTRAS)
        ),
    )
    assert coverage_warning(config) is None


def test_an_app_name_outside_the_bootstrap_prefix_is_warned_about_even_when_bootstrapped(
    aws: str,
) -> None:
    """The app's service, idle alarms, dashboard and schedule are granted by the prefix only
    (not by name, as queues and log groups are): an app named outside the prefix of the
    roles it uses (`aws.monitor_function = "Plate-monitor"`) is denied them on AWS — the
    monitor fails at every tick on ecs:DescribeServices — however often it bootstraps."""
    clients = AwsClients(AwsSettings(region=REGION))
    config = Config(
        app_name="CellPaint1",
        backend="aws",
        storage={"bucket": BUCKET},
        aws={"region": REGION, "auto_monitor": True, "monitor_function": f"{PREFIX}-monitor"},
    )
    names = AwsNames(config)
    granted = {"queues": names.queue_names, "log_groups": names.log_group_names}
    # What `ds aws bootstrap --prefix Plate` grants with this config.
    put_roles(
        clients,
        PREFIX,
        instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted),
        monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted, **MONITOR_EXTRAS),
    )
    boot = BootstrapNames(PREFIX)
    assert coverage_problems(clients.iam, config, region=REGION, account=ACCOUNT) == {
        boot.instance_role: ["app name CellPaint1"],
        boot.monitor_role: ["app name CellPaint1"],
    }
    warning = coverage_warning(config)
    assert warning is not None
    assert "start app_name with 'Plate' (the bootstrap grants the app's service" in warning

    # Named inside the prefix, the same roles cover everything.
    inside = config.model_copy(update={"app_name": "PlateCellPaint1"})
    inside_names = AwsNames(inside)
    granted = {"queues": inside_names.queue_names, "log_groups": inside_names.log_group_names}
    for role, document in (
        (boot.instance_role, instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted)),
        (
            boot.monitor_role,
            monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted, **MONITOR_EXTRAS),
        ),
    ):
        clients.iam.put_role_policy(
            RoleName=role, PolicyName=boot.inline_policy, PolicyDocument=json.dumps(document)
        )
    assert coverage_warning(inside) is None


def test_roles_made_by_an_older_ds_are_warned_about_until_bootstrapped_again(aws: str) -> None:
    """A grant this version uses that the account's roles lack (they were bootstrapped by an
    older ds: here the instance role without AlarmActionsRole, the monitor role without
    FamilyLogExports) is said in the same one line, with the fix; the names stay covered."""
    clients = AwsClients(AwsSettings(region=REGION))
    config = legacy_config()
    names = AwsNames(config)
    granted = {"queues": names.queue_names, "log_groups": names.log_group_names}
    instance = instance_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted)
    monitor = monitor_policy(ACCOUNT, REGION, PREFIX, [BUCKET], **granted, **MONITOR_EXTRAS)
    old_instance = {
        **instance,
        "Statement": [
            # Before workers were granted SendMessage (their hand-back at the last receive).
            {**s, "Action": [a for a in s["Action"] if a != "sqs:SendMessage"]}
            for s in instance["Statement"]
            if s["Sid"] != "AlarmActionsRole"
        ],
    }
    old_monitor = {
        **monitor,
        "Statement": [s for s in monitor["Statement"] if s["Sid"] != "FamilyLogExports"],
    }
    put_roles(clients, PREFIX, old_instance, old_monitor)

    warning = coverage_warning(config)

    assert warning is not None and "\n" not in warning
    assert "made by an older ds" in warning and "does not cover" not in warning
    assert "Plate-ecs-instance-role lacks AlarmActionsRole: iam:CreateServiceLinkedRole" in warning
    assert "AppQueues: sqs:SendMessage" in warning
    assert "Plate-monitor-role lacks FamilyLogExports: s3:PutObject" in warning
    assert "run `ds aws bootstrap` again" in warning

    # What `ds aws bootstrap` writes now is up to date.
    boot = BootstrapNames(PREFIX)
    for role, document in ((boot.instance_role, instance), (boot.monitor_role, monitor)):
        clients.iam.put_role_policy(
            RoleName=role, PolicyName=boot.inline_policy, PolicyDocument=json.dumps(document)
        )
    assert coverage_warning(config) is None


def test_the_coverage_check_says_nothing_when_it_cannot_read(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = legacy_config()
    assert coverage_warning(config) is None  # never bootstrapped: no roles to read

    clients = AwsClients(AwsSettings(region=REGION))
    unrelated = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}],
    }
    put_roles(clients, PREFIX, unrelated, unrelated)
    assert coverage_warning(config) is not None  # readable, grants none: every name missing

    from botocore.exceptions import ClientError

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRolePolicy")

    from distributed_something.backends.aws import policy_check

    real_client = policy_check.client

    def iam_refusing(service: str, settings: AwsSettings) -> Any:
        made = real_client(service, settings)
        if service == "iam":
            monkeypatch.setattr(made, "get_role_policy", refused)
        return made

    monkeypatch.setattr(policy_check, "client", iam_refusing)
    assert coverage_warning(config) is None


def test_the_checked_roles_follow_the_bootstrap_prefix_and_the_task_role() -> None:
    from distributed_something.backends.aws.policy_check import bootstrap_prefix

    assert bootstrap_prefix(legacy_config()) == PREFIX
    assert bootstrap_prefix(legacy_config(monitor_function="lab-monitor")) == "lab"
    documents = [instance_policy(ACCOUNT, REGION, "lab", [BUCKET])]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:labQueue"
    assert allows(documents, "sqs:ReceiveMessage", arn)
    assert not allows(documents, "sqs:ReceiveMessage", arn.replace("lab", "Plate"))
    # The self-only termination has a condition: not counted as a certain grant.
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"
    assert not allows(documents, "ec2:TerminateInstances", instance)


# --- a container that cannot reach the instance metadata (hop limit 1) ---------------------


@contextlib.contextmanager
def hop_limited_imds(
    put_hangs_for: float, *, get_hangs: bool = False, v1: bool = False
) -> Iterator[str]:
    """A metadata service as a bridge-networked container sees it on an instance with
    HttpPutResponseHopLimit 1: the token PUT's answer never arrives (it hangs here), while
    GETs are answered (401: IMDSv2 required) — unless ``get_hangs`` (nothing answers). With
    ``v1`` the instance takes IMDSv1 too: a GET without a token gets its answer (the hop
    limit applies to PUT responses only)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            time.sleep(put_hangs_for)

        def do_GET(self) -> None:
            if get_hangs:
                time.sleep(put_hangs_for)
                return
            answer = {"/latest/meta-data/instance-id": b"i-0v1"}.get(self.path)
            status = (200 if answer else 404) if v1 else 401
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer or b"") if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(answer or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_hop_limit_of_one_is_diagnosed_and_nothing_else_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distributed_something.backends.aws.instance import (
        ECS_NO_METADATA_PROBLEM,
        HOP_LIMIT_PROBLEM,
        find_imds,
    )

    with hop_limited_imds(put_hangs_for=2.0) as url:
        monkeypatch.setenv("DS_METADATA_URL", url)
        found = find_imds(timeout=0.3)
    assert found.imds is None and found.problem == HOP_LIMIT_PROBLEM
    assert "--http-put-response-hop-limit 2" in HOP_LIMIT_PROBLEM
    assert "ECS-optimized AMI" in HOP_LIMIT_PROBLEM
    with hop_limited_imds(put_hangs_for=2.0, get_hangs=True) as url:
        monkeypatch.setenv("DS_METADATA_URL", url)
        assert find_imds(timeout=0.3).problem is None  # nothing answers, not in ECS
        # Only its presence says "in an ECS task"; loopback, as every address in the tests.
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", "http://127.0.0.1:9/v4/x")
        assert find_imds(timeout=0.3).problem == ECS_NO_METADATA_PROBLEM
        monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4")

    # The instance takes IMDSv1 as well: read without a token, as the AWS SDKs fall back.
    with hop_limited_imds(put_hangs_for=2.0, v1=True) as url:
        monkeypatch.setenv("DS_METADATA_URL", url)
        tokenless = find_imds(timeout=0.3)
        assert tokenless.problem is None and tokenless.imds is not None
        assert tokenless.imds.instance_id() == "i-0v1"
        assert tokenless.imds.get("spot/instance-action") is None  # 404: no notice
        monkeypatch.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
        assert find_imds(timeout=0.3).problem == HOP_LIMIT_PROBLEM
        monkeypatch.delenv("AWS_EC2_METADATA_V1_DISABLED")

    import socket

    with socket.socket() as sock:  # a port nothing listens on: not on EC2
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("DS_METADATA_URL", closed)
    assert find_imds(timeout=0.3).problem is None
    with imds_server() as fake:  # a working service: no problem either
        monkeypatch.setenv("DS_METADATA_URL", fake.url)
        working = find_imds(timeout=2)
    assert working.imds is not None and working.problem is None


def test_a_worker_without_metadata_says_so_loudly_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:

    from conftest import write_project
    from distributed_something.backends import open_backend
    from distributed_something.backends.aws.worker_side import on_instance
    from distributed_something.recipes.registry import get_recipe
    from distributed_something.usecases.project import open_project
    from distributed_something.worker.loop import Worker, WorkerSettings
    from distributed_something.worker.runner import SubprocessRunner

    folder = write_project(tmp_path / "proj", argv=[sys.executable, "-c", "pass"], groups=[])
    project = open_project(folder / "ds.toml")
    backend = open_backend(project)
    settings = WorkerSettings(run_id="run-1", scratch_root=tmp_path / "scratch")
    worker = Worker(
        project.config,
        backend,
        get_recipe(project.config.recipe.name, source="test"),
        SubprocessRunner(),
        settings,
    )
    with hop_limited_imds(put_hangs_for=3.0) as url:
        monkeypatch.setenv("DS_METADATA_URL", url)
        with (
            caplog.at_level(logging.INFO, logger="ds"),
            on_instance(project.config, worker, settings.scratch_root),
        ):
            pass

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hop limit" in warnings[0].getMessage()
    assert "--http-put-response-hop-limit 2" in warnings[0].getMessage()
    (record,) = list(backend.storage.list("_ds/T/runs/run-1/instances/"))
    data = json.loads(backend.storage.get_bytes(record.key))
    assert data["imds"] == "unreachable" and data["worker"] == settings.name
    assert "hop limit" in data["problem"]
    # What `ds status` can show from it.
    (line,) = worker.records.machine_problems()
    assert line.startswith(f"{data['machine']}: instance metadata unreachable")


# --- moto's access-control mode, with the instance role's own credentials ------------------

#: Requests moto answers before it enforces IAM (the set-up below makes exactly these).
SETUP_REQUESTS = 8
ADMIN_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def enforcing_moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A moto server that enforces IAM after `SETUP_REQUESTS` requests, set up with two
    buckets and the instance role (bootstrap's inline policy for prefix "Lab", bucket
    "lab-bucket"); yields the environment of a worker holding that role's credentials
    (assumed through moto's STS)."""
    import boto3

    from conftest import FAKE_AWS_ENV
    from distributed_something.backends.aws import clients as clients_module
    from motoserver import start_moto, stop_moto

    pytest.importorskip("moto", reason="moto[server] is in the dev extra: make test installs it")
    env = {**FAKE_AWS_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    url, proc = start_moto({**os.environ, **env})
    try:
        admin = {"region_name": REGION, "endpoint_url": url, **ADMIN_KEYS}
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket="lab-bucket")  # 1
        s3.create_bucket(Bucket="other-bucket")  # 2
        record = "_ds/Lab/runs/r/attempts/a.running.json"
        s3.put_object(Bucket="lab-bucket", Key=record, Body=b"{}")  # 3
        s3.put_object(Bucket="lab-bucket", Key="out/a/result.txt", Body=b"result")  # 4
        s3.put_object(Bucket="other-bucket", Key="secret.txt", Body=b"theirs")  # 5
        iam = boto3.client("iam", **admin)
        role = BootstrapNames("Lab").instance_role
        trust = json.dumps(trust_policy(principals.EC2))
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)  # 6
        document = instance_policy(ACCOUNT, REGION, "Lab", ["lab-bucket"])
        iam.put_role_policy(
            RoleName=role, PolicyName="least-privilege", PolicyDocument=json.dumps(document)
        )  # 7
        credentials = boto3.client("sts", **admin).assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="worker"
        )["Credentials"]  # 8: from here on moto enforces the role's policy
        for key, value in {
            **FAKE_AWS_ENV,
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        clients_module._sessions.clear()
        yield {"url": url}
    finally:
        clients_module._sessions.clear()
        stop_moto(proc)


def test_a_worker_with_the_instance_role_is_denied_what_the_policy_does_not_grant(
    enforcing_moto: dict[str, str],
) -> None:
    """moto enforces actions for assumed-role credentials, and S3 bucket/object ARNs like
    AWS; it does not evaluate other services' resource ARNs (it denies even matching
    queue names) nor condition keys, which the recorded-run test above covers instead."""
    from distributed_something.backends.aws.clients import client
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.errors import BackendError

    settings = AwsSettings(region=REGION)
    assert (
        client("sts", settings)
        .get_caller_identity()["Arn"]
        .endswith(":assumed-role/Lab-ecs-instance-role/worker")
    )
    storage = S3Storage(settings, "lab-bucket")
    assert storage.get_bytes("out/a/result.txt") == b"result"
    storage.delete("_ds/Lab/runs/r/attempts/a.running.json")  # closing an attempt record
    with pytest.raises(BackendError, match=r"AccessDenied|Access Denied"):
        storage.delete("out/a/result.txt")  # outputs are never deleted
    with pytest.raises(BackendError, match=r"AccessDenied|Access Denied"):
        S3Storage(settings, "other-bucket").get_bytes("secret.txt")  # not the run's bucket

    from botocore.exceptions import ClientError

    ec2 = client("ec2", settings)
    ec2.describe_instances()  # granted on "*"
    with pytest.raises(ClientError) as raised:
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    assert raised.value.response["Error"]["Code"] in ("AccessDenied", "403")
    with pytest.raises(ClientError):
        client("sqs", settings).create_queue(QueueName="LabExtra")
    with pytest.raises(ClientError):
        client("iam", settings).list_roles()


def test_a_denied_dead_letter_queue_lookup_names_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside a container the dead-letter queue is looked up by name: a role that does not
    cover the name must say so, not "not found; run ds setup"."""
    from botocore.exceptions import ClientError

    from distributed_something.backends.aws import lazy_queue
    from distributed_something.backends.aws.resources import AwsResources
    from distributed_something.errors import BackendError

    class DeniedSqs:
        def get_queue_url(self, QueueName: str) -> Any:
            error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
            raise ClientError(error, "GetQueueUrl")

    monkeypatch.setattr(lazy_queue, "client", lambda service, settings: DeniedSqs())
    monkeypatch.setenv("SQS_QUEUE_URL", f"http://127.0.0.1:9/{ACCOUNT}/PlateQueue")
    queue = lazy_queue.LazySqsQueue(
        AwsSettings(region=REGION), AwsNames(legacy_config()), 2, AwsResources
    )
    with pytest.raises(BackendError) as raised:
        queue.real  # noqa: B018 - resolving the URLs is the point
    message = str(raised.value)
    assert "DeadMessages_Erin" in message and "AccessDenied" in message
    assert "`ds aws bootstrap`" in message and "ds setup" not in message
