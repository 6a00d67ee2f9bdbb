"""`ds aws bootstrap|destroy` on moto, and the least-privilege policy documents alone."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws import bootstrap as boot
from distributed_something.backends.aws import principals
from distributed_something.backends.aws.bootstrap import (
    HANDLER,
    BootstrapNames,
    bootstrap,
    destroy,
    function_zip,
    instance_policy,
    monitor_policy,
)
from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.errors import InputError

ACCOUNT = "123456789012"


@pytest.fixture
def clients(aws_iam: str) -> AwsClients:
    """Clients on the moto server that knows AWS's managed policies."""
    return AwsClients(AwsSettings(region="us-east-1"))


def role_exists(aws: AwsClients, name: str) -> bool:
    try:
        aws.iam.get_role(RoleName=name)
    except aws.iam.exceptions.NoSuchEntityException:
        return False
    return True


def attached(aws: AwsClients, role: str) -> list[str]:
    policies = aws.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return [p["PolicyArn"] for p in policies]


def test_bootstrap_creates_roles_profile_topic_and_function(clients: AwsClients) -> None:
    names = BootstrapNames("ds")
    arns = bootstrap(clients, buckets=["my-bucket"])

    iam = clients.iam
    assert arns["instance_role"] == iam.get_role(RoleName=names.instance_role)["Role"]["Arn"]
    assert attached(clients, names.instance_role) == [
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
    ]
    assert attached(clients, names.spot_fleet_role) == [
        "arn:aws:iam::aws:policy/service-role/AmazonEC2SpotFleetTaggingRole"
    ]
    assert attached(clients, names.monitor_role) == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
    inline = iam.get_role_policy(RoleName=names.instance_role, PolicyName=names.inline_policy)
    document = inline["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document == instance_policy(ACCOUNT, "us-east-1", "ds", ["my-bucket"])
    trust = iam.get_role(RoleName=names.spot_fleet_role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": principals.SPOT_FLEET}

    profile = iam.get_instance_profile(InstanceProfileName=names.instance_profile)
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [names.instance_role]
    assert arns["instance_profile"] == profile["InstanceProfile"]["Arn"]

    topics = [t["TopicArn"] for t in clients.sns.list_topics()["Topics"]]
    assert arns["topic"] in topics

    function = clients.lambda_.get_function(FunctionName=names.function)["Configuration"]
    assert function["FunctionArn"] == arns["function"]
    assert function["Handler"] == HANDLER
    assert function["Runtime"] == "python3.11"
    assert function["Role"] == arns["monitor_role"]
    assert function["Environment"]["Variables"]["DS_TOPIC_ARN"] == arns["topic"]


def test_bootstrap_twice_keeps_everything_and_destroy_removes_it(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = BootstrapNames("lab")
    first = bootstrap(clients, "lab")
    uploads: list[Any] = []
    monkeypatch.setattr(clients.lambda_, "update_function_code", uploads.append)
    assert bootstrap(clients, "lab") == first
    assert uploads == []  # the same code (same zip hash) is not uploaded again
    profile = clients.iam.get_instance_profile(InstanceProfileName=names.instance_profile)
    assert len(profile["InstanceProfile"]["Roles"]) == 1

    removed = destroy(clients, "lab")

    assert sorted(removed) == sorted(
        [
            names.function,
            names.topic,
            names.instance_profile,
            names.instance_role,
            names.spot_fleet_role,
            names.monitor_role,
        ]
    )
    for role in (names.instance_role, names.spot_fleet_role, names.monitor_role):
        assert not role_exists(clients, role)
    with pytest.raises(clients.iam.exceptions.NoSuchEntityException):
        clients.iam.get_instance_profile(InstanceProfileName=names.instance_profile)
    assert clients.sns.list_topics()["Topics"] == []
    with pytest.raises(clients.lambda_.exceptions.ResourceNotFoundException):
        clients.lambda_.get_function(FunctionName=names.function)
    assert destroy(clients, "lab") == []  # nothing left: nothing to do, no error


def test_changed_code_is_uploaded_again(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap(clients)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("changed.py", "VERSION = 2\n")
    monkeypatch.setattr(boot, "function_zip", buffer.getvalue)

    bootstrap(clients)

    function = clients.lambda_.get_function(FunctionName="ds-monitor")["Configuration"]
    assert function["CodeSize"] == len(buffer.getvalue())


def test_a_role_not_yet_assumable_is_retried(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    real = clients.lambda_.create_function
    failures = [1, 2]

    def flaky(**kwargs: Any) -> Any:
        if failures:
            failures.pop()
            error = {"Error": {"Code": "InvalidParameterValueException", "Message": "assume"}}
            raise ClientError(error, "CreateFunction")
        return real(**kwargs)

    monkeypatch.setattr(clients.lambda_, "create_function", flaky)
    sleeps: list[float] = []
    arns = bootstrap(clients, clock=lambda: 0.0, sleep=sleeps.append)
    assert arns["function"].endswith(":function:ds-monitor")
    assert len(sleeps) == 2


# --- pure policy documents ---------------------------------------------------------------
def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = document["Statement"]
    return found


def actions_on_any_resource(document: dict[str, Any]) -> set[str]:
    return {a for s in statements(document) if s["Resource"] == ["*"] for a in s["Action"]}


def test_instance_policy_is_scoped_to_the_app_prefix_and_buckets() -> None:
    document = instance_policy(ACCOUNT, "eu-west-1", "Plate", ["imgs"])
    by_sid = {s["Sid"]: s for s in statements(document)}

    assert by_sid["InstanceAlarms"]["Resource"] == [
        "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:Plate*"
    ]
    assert by_sid["AppQueues"]["Resource"] == ["arn:aws:sqs:eu-west-1:123456789012:Plate*"]
    assert all(":log-group:Plate*" in r for r in by_sid["AppLogs"]["Resource"])
    assert by_sid["BucketObjects"]["Resource"] == ["arn:aws:s3:::imgs/*"]
    # Deletes only in the records area (a worker closes its attempt records), never outputs.
    assert by_sid["RunRecordsDelete"]["Resource"] == ["arn:aws:s3:::imgs/_ds/*"]
    # Only reads that AWS cannot scope are granted on every resource.
    assert actions_on_any_resource(document) == {"ec2:DescribeInstances"}
    every_action = [a for s in statements(document) for a in s["Action"]]
    assert not any(a.endswith("*") for a in every_action)

    without_buckets = instance_policy(ACCOUNT, "eu-west-1", "Plate")
    assert not any(a.startswith("s3:") for s in statements(without_buckets) for a in s["Action"])


def test_monitor_policy_is_scoped_and_uses_the_regions_partition() -> None:
    document = monitor_policy(
        ACCOUNT, "cn-north-1", "ds", ["b"], topic_arn="arn:aws-cn:sns:t", function_name="ds-mon"
    )
    resources = [r for s in statements(document) for r in s["Resource"] if r != "*"]
    assert all(r.startswith("arn:aws-cn:") for r in resources)
    by_sid = {s["Sid"]: s for s in statements(document)}
    assert by_sid["RunState"]["Resource"] == ["arn:aws-cn:s3:::b/_ds/*"]
    assert by_sid["OwnInvokePermissions"]["Resource"] == [
        "arn:aws-cn:lambda:cn-north-1:123456789012:function:ds-mon"
    ]
    assert by_sid["AppServices"]["Resource"] == [
        "arn:aws-cn:ecs:cn-north-1:123456789012:service/*/ds*"
    ]
    # Deleting things is always scoped (or, for instances, conditioned on the fleet tag).
    unscoped = actions_on_any_resource(document)
    deletes = {"sqs:DeleteQueue", "ecs:DeleteService", "cloudwatch:DeleteAlarms"}
    assert not unscoped & deletes
    assert "ec2:TerminateInstances" not in unscoped


def test_roles_of_an_earlier_ds_are_told_what_they_lack() -> None:
    # As an earlier ds wrote them: the monitor listed only under _ds/ (which made S3 answer
    # 403 for a missing run state) and had no GetQueueUrl; workers could not abort uploads.
    names = boot.BootstrapNames("ds")
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:{names.topic}"
    monitor = monitor_policy(
        ACCOUNT, "us-east-1", "ds", ["b"], topic_arn=topic, function_name=names.function
    )
    old_monitor = [s for s in statements(monitor) if s["Sid"] != "BucketList"]
    for statement in old_monitor:
        if statement["Sid"] == "AppQueues":
            statement["Action"] = [a for a in statement["Action"] if a != "sqs:GetQueueUrl"]
    old_monitor.append(
        {
            "Sid": "RunRecordsList",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": ["arn:aws:s3:::b"],
            "Condition": {"StringLike": {"s3:prefix": ["_ds/*"]}},
        }
    )
    lacking = boot.missing_grants(
        "monitor", {"Statement": old_monitor}, account=ACCOUNT, region="us-east-1", app_prefix="ds"
    )
    assert lacking == ["AppQueues: sqs:GetQueueUrl", "BucketList: s3:ListBucket"]
    old_instance = statements(instance_policy(ACCOUNT, "us-east-1", "ds", ["b"]))
    for statement in old_instance:
        if statement["Sid"] == "BucketObjects":
            statement["Action"] = ["s3:GetObject", "s3:PutObject"]
    lacking = boot.missing_grants(
        "instance",
        {"Statement": old_instance},
        account=ACCOUNT,
        region="us-east-1",
        app_prefix="ds",
    )
    assert lacking == ["BucketObjects: s3:AbortMultipartUpload"]


def test_an_instance_may_terminate_and_name_only_itself() -> None:
    by_sid = {s["Sid"]: s for s in statements(instance_policy(ACCOUNT, "us-east-1", "ds"))}
    self_only = {"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}
    terminate = by_sid["TerminateOwnInstance"]
    assert terminate["Action"] == ["ec2:TerminateInstances"]
    assert terminate["Resource"] == ["arn:aws:ec2:us-east-1:123456789012:instance/*"]
    assert terminate["Condition"] == self_only
    tags = by_sid["NameOwnInstance"]
    assert tags["Action"] == ["ec2:CreateTags"]
    assert tags["Condition"] == {
        **self_only,
        "ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]},
    }
    document = instance_policy(ACCOUNT, "us-east-1", "ds")
    granted = [(s["Sid"], a) for s in statements(document) for a in s["Action"]]
    assert [sid for sid, a in granted if a in ("ec2:TerminateInstances", "ec2:CreateTags")] == [
        "TerminateOwnInstance",
        "NameOwnInstance",
    ]


def test_names_outside_the_prefix_are_granted_exactly() -> None:
    document = instance_policy(
        ACCOUNT,
        "us-east-1",
        "Plate",
        queues=["PlateQueue", "DeadMessages_Erin"],
        log_groups=["erin-logs", "erin-logs_perInstance"],
    )
    by_sid = {s["Sid"]: s for s in statements(document)}
    base = "arn:aws:sqs:us-east-1:123456789012:"
    # PlateQueue is covered by the prefix pattern already: not repeated.
    assert by_sid["AppQueues"]["Resource"] == [base + "Plate*", base + "DeadMessages_Erin"]
    groups = "arn:aws:logs:us-east-1:123456789012:log-group:"
    assert by_sid["AppLogs"]["Resource"] == [
        groups + "Plate*",
        groups + "Plate*:log-stream:*",
        groups + "erin-logs",
        groups + "erin-logs:log-stream:*",
        groups + "erin-logs_perInstance",
        groups + "erin-logs_perInstance:log-stream:*",
    ]
    monitor = monitor_policy(
        ACCOUNT, "us-east-1", "Plate", queues=["DeadMessages_Erin"], log_groups=["erin-logs"]
    )
    by_sid = {s["Sid"]: s for s in statements(monitor)}
    assert by_sid["AppQueues"]["Resource"] == [base + "Plate*", base + "DeadMessages_Erin"]
    assert by_sid["ExportLogs"]["Resource"] == [groups + "Plate*", groups + "erin-logs"]
    assert boot.policy_queues(monitor) == ["DeadMessages_Erin"]
    assert boot.policy_log_groups(document) == ["erin-logs", "erin-logs_perInstance"]


def test_bootstrap_grants_a_configs_own_names_and_keeps_earlier_ones(
    clients: AwsClients,
) -> None:
    names = BootstrapNames("lab")
    bootstrap(clients, "lab", buckets=["b1"], queues=["DeadMessages_Erin"], log_groups=["erin"])
    # Another app of the same prefix, with its own names: nothing of the first is dropped.
    bootstrap(clients, "lab", buckets=["b2"], queues=["DeadMessages_Bob"], log_groups=["labX"])

    for role in (names.instance_role, names.monitor_role):
        answer = clients.iam.get_role_policy(RoleName=role, PolicyName=names.inline_policy)
        document = boot.decode_policy(answer["PolicyDocument"])
        assert boot.policy_buckets(document) == ["b1", "b2"]
        assert boot.policy_queues(document) == ["DeadMessages_Bob", "DeadMessages_Erin"]
        assert boot.policy_log_groups(document) == ["erin"]  # labX: under the prefix
    answer = clients.iam.get_role_policy(
        RoleName=names.instance_role, PolicyName=names.inline_policy
    )
    assert boot.decode_policy(answer["PolicyDocument"]) == instance_policy(
        ACCOUNT,
        "us-east-1",
        "lab",
        ["b1", "b2"],
        queues=["DeadMessages_Bob", "DeadMessages_Erin"],
        log_groups=["erin"],
    )


def test_a_policy_over_iams_size_is_refused_before_anything_changes(clients: AwsClients) -> None:
    """IAM takes a role's inline policies up to 10,240 characters (moto takes more), and a
    prefix's policies keep every bucket granted under it: the bootstrap that would pass the
    limit is refused with the fix, and changes nothing (a fresh prefix: creates nothing)."""
    names = BootstrapNames("lab")
    many = [f"lab-bucket-{i:03d}" for i in range(80)]
    with pytest.raises(InputError) as refused:
        bootstrap(clients, "lab", buckets=many)
    assert refused.value.field == "--prefix" and "at most 10,240" in refused.value.problem
    assert "--prefix NAME" in refused.value.fix
    assert not role_exists(clients, names.instance_role)
    assert not role_exists(clients, names.monitor_role)
    assert clients.sns.list_topics()["Topics"] == []

    fits = next(
        n
        for n in range(80, 0, -1)
        if all(
            len(json.dumps(d, separators=(",", ":"))) <= boot.MAX_ROLE_POLICY_CHARACTERS
            for d in (
                instance_policy(ACCOUNT, "us-east-1", "lab", many[:n]),
                monitor_policy(
                    ACCOUNT, "us-east-1", "lab", many[:n],
                    topic_arn=f"arn:aws:sns:us-east-1:{ACCOUNT}:{names.topic}",
                    function_name=names.function,
                ),
            )
        )
    )  # fmt: skip
    assert 20 < fits < 80
    bootstrap(clients, "lab", buckets=many[:fits])
    with pytest.raises(InputError):
        bootstrap(clients, "lab", buckets=[many[fits]])  # one more app's bucket
    for role in (names.instance_role, names.monitor_role):
        answer = clients.iam.get_role_policy(RoleName=role, PolicyName=names.inline_policy)
        assert boot.policy_buckets(boot.decode_policy(answer["PolicyDocument"])) == sorted(
            many[:fits]
        )


# --- the function's code ------------------------------------------------------------------
def test_function_zip_is_reproducible_and_self_contained(tmp_path: Path) -> None:
    code = function_zip()
    assert function_zip() == code
    with zipfile.ZipFile(io.BytesIO(code)) as archive:
        archive.extractall(tmp_path / "function")
    # What the Lambda runtime provides: the standard library and boto3 with its dependencies.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for package in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3"):
        module = __import__(package)
        (runtime / package).symlink_to(Path(module.__file__).parent)
    six = __import__("six")
    (runtime / "six.py").symlink_to(Path(six.__file__))
    program = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import distributed_something.backends.aws.lambda_monitor as m\n"
        "assert 'site-packages' not in m.__file__ and callable(m.handler)\n"
        "import pydantic; assert sys.argv[1] in pydantic.__file__\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", program, str(tmp_path / "function"), str(runtime)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_packaging_off_linux_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot.sys, "platform", "darwin")
    with pytest.raises(InputError, match="Linux"):
        boot.lambda_platform()


def test_the_pass_role_statements_in_the_docs_pass_each_bootstrapped_role_to_its_service(
    clients: AwsClients,
) -> None:
    """docs/aws.md ('Your own permissions') gives people who run ds iam:PassRole on the roles
    the bootstrap makes: each statement names a role and the service that role trusts (what
    AWS compares iam:PassedToService with), and the statements parse as JSON."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "aws.md").read_text()
    section = text.split("### Your own permissions", 1)[1].split("\n## ", 1)[0]
    block = section.split("```json", 1)[1].split("```", 1)[0]
    statements = json.loads(block)
    names = BootstrapNames("PREFIX")
    bootstrap(clients, "PREFIX", buckets=["my-bucket"])
    roles = {names.spot_fleet_role, names.instance_role}
    seen = set()
    for statement in statements:
        assert statement["Action"] == "iam:PassRole" and statement["Effect"] == "Allow"
        service = statement["Condition"]["StringEquals"]["iam:PassedToService"]
        resource = statement["Resource"]
        if resource == "TASK_ROLE_ARN":  # a task role must trust ECS tasks (role_check.py)
            assert service == principals.ECS_TASKS
            continue
        role = resource.removeprefix("arn:aws:iam::ACCOUNT:role/")
        assert role in roles, resource
        trust = clients.iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": service}
        seen.add(role)
    assert seen == roles
