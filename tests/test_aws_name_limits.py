"""AWS's limits on names, which moto does not enforce: the names ds derives from the config are
checked before anything is created (`name_limits`), and every request the AWS tests make is
held to the API reference's limits (`aws_constraints`, run by the `aws` fixture)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import tomli_w

from aws_constraints import violations
from distributed_something.backends.aws import name_limits
from distributed_something.config.legacy import legacy_error
from distributed_something.config.model import LOG_GROUP_PATTERN, Config
from distributed_something.errors import InputError
from moto_projects import REGION, aws_client, aws_project, ds_ok

_MODELS = botocore.session.get_session()


def model_max(service: str, operation: str, member: str) -> int | None:
    shape = _MODELS.get_service_model(service).operation_model(operation).input_shape
    return shape.members[member].metadata.get("max")


@pytest.mark.parametrize(
    ("service", "operation", "member", "limit"),
    [
        ("events", "PutRule", "Name", name_limits.RULE),
        ("lambda", "AddPermission", "StatementId", name_limits.STATEMENT),
        ("iam", "CreateRole", "RoleName", name_limits.ROLE),
        ("iam", "CreateInstanceProfile", "InstanceProfileName", name_limits.PROFILE),
        ("iam", "PutRolePolicy", "PolicyName", name_limits.POLICY),
        ("cloudwatch", "PutMetricAlarm", "AlarmName", name_limits.ALARM),
        ("logs", "CreateLogGroup", "logGroupName", name_limits.LOG_GROUP),
    ],
)
def test_each_limit_is_the_api_references(
    service: str, operation: str, member: str, limit: int
) -> None:
    assert model_max(service, operation, member) == limit


def test_the_function_name_limit_is_for_a_name_not_an_arn() -> None:
    # The model's 140 allows an ARN; CreateFunction's reference says a name has at most 64.
    assert model_max("lambda", "CreateFunction", "FunctionName") == 140
    assert name_limits.FUNCTION == 64


def config(app: str, **aws: Any) -> Config:
    return Config.model_validate(
        {"app_name": app, "backend": "aws", "image": "x/y:1", "aws": {"region": REGION, **aws}}
    )


def test_the_longest_bootstrap_prefix_fits_every_name_and_one_more_does_not() -> None:
    most = name_limits.longest_prefix()
    assert most == 64 - len("-ecs-instance-role")
    name_limits.check_bootstrap_prefix("p" * most, default=False)
    with pytest.raises(InputError) as raised:
        name_limits.check_bootstrap_prefix("p" * (most + 1), default=True)
    error = raised.value
    assert error.field == "--prefix"
    assert "65 characters; AWS allows at most 64" in error.problem
    assert f"at most {most} characters" in error.fix and "aws.monitor_function" in error.fix


def test_a_long_app_name_with_the_monitor_is_refused_naming_the_field() -> None:
    app = "A" * 48  # + "-monitor-schedule" is 65
    name_limits.check_run_names(config(app), source="ds.toml")  # no monitor: fine
    with pytest.raises(InputError) as raised:
        name_limits.check_run_names(config(app, auto_monitor=True), source="ds.toml")
    assert raised.value.field == "app_name"
    assert "monitor schedule rule" in raised.value.problem
    assert "65 characters; AWS allows at most 64" in raised.value.problem
    assert raised.value.fix.startswith("shorten it by 1 character ")
    with pytest.raises(InputError) as legacy:  # as the CLI shows it to a config.py's user
        name_limits.check_run_names(config(app, auto_monitor=True), source="config.py")
    assert legacy_error(legacy.value).field == "APP_NAME"


def test_a_long_log_group_name_is_refused_naming_its_own_field() -> None:
    with pytest.raises(InputError) as raised:
        name_limits.check_run_names(config("App", log_group_name="g" * 510), source="ds.toml")
    assert raised.value.field == "aws.log_group_name"
    assert "_perInstance" in raised.value.problem


def test_the_log_group_pattern_is_the_api_references() -> None:
    shape = _MODELS.get_service_model("logs").operation_model("CreateLogGroup").input_shape
    assert f"^{shape.members['logGroupName'].metadata['pattern']}$" == LOG_GROUP_PATTERN


@pytest.mark.parametrize(
    ("field", "value", "legacy"),
    [
        # CreateCluster: "Up to 255 letters (uppercase and lowercase), numbers, underscores,
        # and hyphens are allowed" (botocore's model says nothing; moto takes any).
        ("ecs_cluster", "my cluster", "ECS_CLUSTER"),
        ("ecs_cluster", "c" * 256, "ECS_CLUSTER"),
        ("log_group_name", "My Lab:logs", "LOG_GROUP_NAME"),
    ],
)
def test_a_cluster_or_log_group_name_aws_refuses_is_refused_on_load(
    tmp_path: Path, field: str, value: str, legacy: str
) -> None:
    """Before: passed `ds validate` and `ds setup`, and failed on AWS at start-cluster
    after the queues, the cluster or the service existed (a traceback for the cluster: the
    user data's own check)."""
    path = tmp_path / "ds.toml"
    path.write_text(tomli_w.dumps({"app_name": "App", "aws": {field: value}}))
    result = ds_ok("validate", cwd=tmp_path, ok=(2,))
    assert f"aws.{field}" in result.stderr and "Traceback" not in result.stderr
    path.unlink()
    (tmp_path / "config.py").write_text(f"APP_NAME = 'App'\n{legacy} = {value!r}\n")
    result = ds_ok("validate", cwd=tmp_path, ok=(2,))
    assert legacy in result.stderr and "Traceback" not in result.stderr
    ok = {"ecs_cluster": "Lab_cluster-2", "log_group_name": "/ds/Lab_logs.2#a"}[field]
    Config.model_validate({"app_name": "App", "aws": {field: ok}})


def test_setup_refuses_a_name_aws_would_refuse_before_anything_exists(
    aws: str, ds: Any, tmp_path: Path
) -> None:
    app = "L" * 50
    folder = aws_project(
        tmp_path / "p",
        app=app,
        bucket="limits-bucket",
        names=["a"],
        argv=["true"],
        cluster={},
        queue={},
    )
    config_path = folder / "ds.toml"
    data = tomllib.loads(config_path.read_text())
    data["aws"]["auto_monitor"] = True
    config_path.write_text(tomli_w.dumps(data))
    for command in (["validate", "--job", "files/job.json"], ["setup"]):
        result = ds_ok(*command, cwd=folder, ok=(2,))
        assert "app_name" in result.stderr and "monitor schedule rule" in result.stderr
        assert "at most 64" in result.stderr and "Traceback" not in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
    assert aws_client("ecs").list_task_definitions()["taskDefinitionArns"] == []


def test_a_task_definition_ecs_would_refuse_is_refused_before_anything_exists(
    aws: str, ds: Any, tmp_path: Path
) -> None:
    """ECS takes a task definition of at most 64 KiB (moto takes any), and each `env`
    entry is in it twice (a variable, and in DS_CONFIG): 32 KB of env passed validation and
    setup created the queues and the cluster before RegisterTaskDefinition was refused."""
    folder = aws_project(
        tmp_path / "p", app="Big", bucket="big-bucket", names=["a"], argv=["true"],
        cluster={}, queue={}, env={f"VALUE_{i}": "v" * 1000 for i in range(32)},
    )  # fmt: skip
    for command in (["validate", "--job", "files/job.json"], ["setup"]):
        result = ds_ok(*command, cwd=folder, ok=(2,))
        assert "env" in result.stderr and "at most 65,536" in result.stderr
        assert "Traceback" not in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
    assert aws_client("ecs").list_clusters()["clusterArns"] == []

    config = tomllib.loads((folder / "ds.toml").read_text())
    config["env"] = {f"VALUE_{i}": "v" * 1000 for i in range(28)}  # 28 KB: it fits
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    ds_ok("setup", cwd=folder)
    (arn,) = aws_client("ecs").list_task_definitions()["taskDefinitionArns"]
    described = aws_client("ecs").describe_task_definition(taskDefinition=arn)
    size = len(json.dumps(described["taskDefinition"]["containerDefinitions"]))
    assert 56_000 < size < 65_536


def test_bootstrap_with_a_long_app_name_creates_nothing(aws: str, ds: Any, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    app = "B" * 47
    (folder / "ds.toml").write_text(
        tomli_w.dumps({"app_name": app, "backend": "aws", "aws": {"region": REGION}})
    )
    (folder / "job.json").write_text(json.dumps({"groups": [{"name": "a"}]}))
    result = ds_ok("aws", "bootstrap", cwd=folder, ok=(2,))
    assert "--prefix" in result.stderr and "at most 46 characters" in result.stderr
    iam = aws_client("iam")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("B")] == []


@pytest.mark.parametrize("prefix", ["Labé", "Lab²", "Lab one"])
def test_bootstrap_with_a_prefix_iam_refuses_creates_nothing(
    aws: str, ds: Any, tmp_path: Path, prefix: str
) -> None:
    """IAM's names take ASCII letters only (moto takes any): "Labé" passed `str.isalnum`
    and reached CreateRole."""
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "ds.toml").write_text(
        tomli_w.dumps({"app_name": "Lab", "backend": "aws", "aws": {"region": REGION}})
    )
    result = ds_ok("aws", "bootstrap", "--prefix", prefix, cwd=folder, ok=(2,))
    assert "--prefix" in result.stderr and "letters, digits, - and _" in result.stderr
    assert aws_client("iam").list_roles()["Roles"] == []


def test_the_request_checker_finds_what_aws_refuses() -> None:
    iam = _MODELS.get_service_model("iam").operation_model("CreateRole")
    assert violations(iam, {"RoleName": "r", "AssumeRolePolicyDocument": "{}"}) == []
    found = violations(iam, {"RoleName": "r" * 65, "AssumeRolePolicyDocument": "{}"})
    assert found == ["CreateRole.RoleName: 65 characters, at most 64"]
    sqs = _MODELS.get_service_model("sqs").operation_model("ReceiveMessage")
    found = violations(sqs, {"QueueUrl": "u", "MessageSystemAttributeNames": ["Nope"]})
    assert len(found) == 1 and "MessageSystemAttributeNames[0]: 'Nope' is not one of" in found[0]
    copy = _MODELS.get_service_model("ec2").operation_model("CopySnapshot")
    found = violations(
        copy, {"SourceRegion": "r", "SourceSnapshotId": "s", "CompletionDurationMinutes": 2881}
    )
    assert found == ["CopySnapshot.CompletionDurationMinutes: 2881, at most 2880"]
    group = _MODELS.get_service_model("logs").operation_model("CreateLogGroup")
    assert violations(group, {"logGroupName": "ds/app_1"}) == []
    found = violations(group, {"logGroupName": "app name"})
    assert len(found) == 1 and "'app name' does not match" in found[0]
    ecs = _MODELS.get_service_model("ecs").operation_model("RegisterTaskDefinition")
    tags = [{"key": f"k{i}", "value": "v"} for i in range(51)]
    found = violations(ecs, {"family": "f", "containerDefinitions": [], "tags": tags})
    assert found == ["RegisterTaskDefinition.tags: 51 items, at most 50"]
    # What the reference states only in its text (`DOCUMENTED`, the log batch's size).
    send = _MODELS.get_service_model("sqs").operation_model("SendMessageBatch")
    entries = [{"Id": str(i), "MessageBody": "b"} for i in range(11)]
    found = violations(send, {"QueueUrl": "u", "Entries": entries})
    assert found == ["SendMessageBatch.Entries: 11, from 1 to 10 (API reference)"]
    entries = [{"Id": "0", "MessageBody": "b", "DelaySeconds": 901}]
    found = violations(send, {"QueueUrl": "u", "Entries": entries})
    assert found == ["SendMessageBatch.Entries[0].DelaySeconds: 901, from 0 to 900 (API reference)"]
    logs = _MODELS.get_service_model("logs").operation_model("PutLogEvents")
    events = [{"timestamp": 0, "message": "x" * 1024}] * 1000
    found = violations(logs, {"logGroupName": "g", "logStreamName": "s", "logEvents": events})
    assert found == ["PutLogEvents.logEvents: 1050000 bytes, at most 1048576"]
    # A message's size counts its attributes; its body may hold only SQS's characters.
    attribute = {"ds-task-id": {"DataType": "String", "StringValue": "i" * 20}}
    entry = {"Id": "0", "MessageBody": "x" * (1_048_576 - 36), "MessageAttributes": attribute}
    assert violations(send, {"QueueUrl": "u", "Entries": [entry]}) == []
    entry["MessageBody"] += "x"
    found = violations(send, {"QueueUrl": "u", "Entries": [entry]})
    assert found == [
        "SendMessageBatch.Entries[0]: 1048577 bytes with its attributes, at most 1048576",
        "SendMessageBatch: 1048577 bytes in all, at most 1048576",
    ]
    one = _MODELS.get_service_model("sqs").operation_model("SendMessage")
    assert violations(one, {"QueueUrl": "u", "MessageBody": "é\t\n€😀\ufffd"}) == []
    found = violations(one, {"QueueUrl": "u", "MessageBody": "a\uffffb"})
    assert found == ["SendMessage.MessageBody: holds U+FFFF, which SQS refuses"]
    # AWS's patterns are Java's: \w is ASCII (an IAM role name of "é" is refused).
    found = violations(iam, {"RoleName": "rôle", "AssumeRolePolicyDocument": "{}"})
    assert len(found) == 1 and "does not match" in found[0]
    # A role's inline policy: 10,240 characters, whitespace not counted.
    put = _MODELS.get_service_model("iam").operation_model("PutRolePolicy")
    role = {"RoleName": "r", "PolicyName": "p"}
    document = json.dumps({"Statement": [{"Resource": "r" * 10_200}]}, indent=4)
    assert len(document) > 10_240 and violations(put, {**role, "PolicyDocument": document}) == []
    document = json.dumps({"Statement": [{"Resource": "r" * 10_220}]}, indent=4)
    found = violations(put, {**role, "PolicyDocument": document})
    assert found == ["PutRolePolicy.PolicyDocument: 10251 characters, at most 10240"]
