"""Create calls with tags, for an identity that may create but not tag (no ECS TagResource, etc.).

AWS authorizes tags given on creation as a tagging action of its own ("if the user attempts
to create a resource with tags, the request fails if the user does not have permissions to
use the ecs:TagResource action", ECS; logs:TagResource for CreateLogGroup, events:TagResource
for PutRule, ec2:CreateTags for RequestSpotFleet's TagSpecifications). moto checks no
permissions, so each client here is a real botocore client with a Stubber answering the
tagged request with the service's refusal and the untagged one with success; nothing is sent
(the endpoint is a closed loopback port).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from distributed_something.backends.aws import tagging
from distributed_something.backends.aws.fleet import request_fleet
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.schedule import schedule_monitor
from distributed_something.backends.aws.setup import (
    ensure_cluster,
    ensure_log_groups,
    ensure_service,
    register_task_definition,
)
from distributed_something.config.model import Config
from distributed_something.errors import BackendError

REGION = "us-east-1"
ACCOUNT = "123456789012"


def stubbed(service: str) -> tuple[Any, Stubber, list[dict[str, Any]]]:
    """A client of ``service`` (fake credentials, a closed loopback endpoint), its Stubber,
    and the parameters of every request made with it, as the code built them."""
    client = boto3.client(
        service,
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    client.meta.events.register("before-parameter-build.*.*", record)
    return client, Stubber(client), seen


@pytest.fixture
def config() -> Config:
    return Config.model_validate(
        {
            "app_name": "Tags",
            "backend": "aws",
            "image": "org/tool:1.0",
            "aws": {"region": REGION, "ecs_cluster": "TagsCluster"},
        }
    )


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The warnings about untagged resources, each permission warned about afresh."""
    said: list[str] = []
    monkeypatch.setattr(tagging, "_warned", set())
    monkeypatch.setattr(tagging, "_warn", lambda: said.append)
    yield said


def refused(stub: Stubber, method: str, code: str) -> None:
    stub.add_client_error(method, service_error_code=code, service_message="not authorized")


def test_ecs_resources_are_made_untagged_when_ecs_tag_resource_is_missing(
    config: Config, warnings: list[str]
) -> None:
    names = AwsNames(config)
    ecs, stub, seen = stubbed("ecs")
    task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{names.task_family}:1"
    stub.add_response("describe_clusters", {"clusters": []})
    refused(stub, "create_cluster", "AccessDeniedException")
    stub.add_response("create_cluster", {"cluster": {"clusterName": names.cluster}})
    stub.add_client_error(
        "describe_task_definition", "ClientException", "Unable to describe task definition."
    )
    refused(stub, "register_task_definition", "AccessDeniedException")
    registered = {"taskDefinition": {"taskDefinitionArn": task_arn}}
    stub.add_response("register_task_definition", registered)
    stub.add_response("describe_services", {"services": []})
    refused(stub, "create_service", "AccessDeniedException")
    stub.add_response("create_service", {"service": {"serviceName": names.service}})
    with stub:
        assert ensure_cluster(ecs, names) is True
        arn = register_task_definition(
            ecs, names, config, {}, task_role_arn=None, keep_entrypoint=True
        )
        assert ensure_service(ecs, names, names.cluster, arn) == names.service
        stub.assert_no_pending_responses()
    assert arn == task_arn
    creates = [p for p in seen if "clusterName" in p or "family" in p or "serviceName" in p]
    # Each create: first with the app tag (refused), then the same call without tags.
    assert [bool(p.get("tags")) for p in creates] == [True, False] * 3
    for tagged, untagged in zip(creates[::2], creates[1::2], strict=True):
        assert {k: v for k, v in tagged.items() if k != "tags"} == untagged
    # One warning for the three, naming the missing permission.
    assert len(warnings) == 1
    assert "untagged" in warnings[0] and "ecs:TagResource" in warnings[0]


def test_log_groups_are_made_untagged_when_logs_tag_resource_is_missing(
    config: Config, warnings: list[str]
) -> None:
    names = AwsNames(config)
    logs, stub, seen = stubbed("logs")
    for _group in (names.log_group, names.instance_log_group):
        stub.add_response("describe_log_groups", {"logGroups": []})
        refused(stub, "create_log_group", "AccessDeniedException")
        stub.add_response("create_log_group", {})
        stub.add_response("put_retention_policy", {})
    with stub:
        groups = ensure_log_groups(logs, names)
        stub.assert_no_pending_responses()
    assert groups == [names.log_group, names.instance_log_group]
    creates = [p for p in seen if "logGroupName" in p and "retentionInDays" not in p]
    creates = [p for p in creates if "logGroupNamePrefix" not in p]
    assert [("tags" in p, p["logGroupName"]) for p in creates] == [
        (True, names.log_group),
        (False, names.log_group),
        (True, names.instance_log_group),
        (False, names.instance_log_group),
    ]
    assert len(warnings) == 1 and "logs:TagResource" in warnings[0]


def test_the_monitor_rule_is_made_untagged_when_events_tag_resource_is_missing(
    config: Config, warnings: list[str]
) -> None:
    names = AwsNames(config)
    events, events_stub, seen = stubbed("events")
    lambda_, lambda_stub, _ = stubbed("lambda")
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ds-monitor"
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/Tags-monitor-schedule"
    found = {"Configuration": {"FunctionName": "ds-monitor", "FunctionArn": function_arn}}
    lambda_stub.add_response("get_function", found)
    refused(events_stub, "put_rule", "AccessDeniedException")
    events_stub.add_response("put_rule", {"RuleArn": rule_arn})
    events_stub.add_response("put_targets", {"FailedEntryCount": 0, "FailedEntries": []})
    lambda_stub.add_response("add_permission", {"Statement": "{}"})
    with events_stub, lambda_stub:
        schedule_monitor(events, lambda_, names, config, region=REGION, function="ds-monitor")
        events_stub.assert_no_pending_responses()
        lambda_stub.assert_no_pending_responses()
    rules = [p for p in seen if "ScheduleExpression" in p]
    assert ["Tags" in p for p in rules] == [True, False]
    assert len(warnings) == 1 and "events:TagResource" in warnings[0]


def test_the_spot_fleet_is_requested_untagged_when_ec2_create_tags_is_missing(
    warnings: list[str],
) -> None:
    ec2, stub, seen = stubbed("ec2")
    instance_tags = [{"ResourceType": "instance", "Tags": [{"Key": "ds:app", "Value": "Tags"}]}]
    request: dict[str, Any] = {
        "IamFleetRole": f"arn:aws:iam::{ACCOUNT}:role/fleet",
        "TargetCapacity": 1,
        "ClientToken": "Tags-0123",
        "TagSpecifications": [
            {"ResourceType": "spot-fleet-request", "Tags": [{"Key": "ds:app", "Value": "Tags"}]}
        ],
        "LaunchSpecifications": [
            {
                "ImageId": "ami-12345678",
                "InstanceType": "m5.large",
                "TagSpecifications": instance_tags,
            }
        ],
    }
    # EC2 answers UnauthorizedOperation (with an encoded message) for any missing permission.
    refused(stub, "request_spot_fleet", "UnauthorizedOperation")
    stub.add_response(
        "request_spot_fleet", {"SpotFleetRequestId": "sfr-1"}, {"SpotFleetRequestConfig": ANY}
    )
    with stub:
        assert request_fleet(ec2, request) == "sfr-1"
        stub.assert_no_pending_responses()
    sent = [p["SpotFleetRequestConfig"] for p in seen]
    assert ["TagSpecifications" in s for s in sent] == [True, False]
    # Only the request's own tags (ec2:CreateTags of the caller) go: the instances' tags are
    # put on by the fleet's role, and the token and everything else are kept.
    assert sent[1]["LaunchSpecifications"][0]["TagSpecifications"] == instance_tags
    assert {k: v for k, v in sent[0].items() if k != "TagSpecifications"} == sent[1]
    assert len(warnings) == 1 and "ec2:CreateTags" in warnings[0]


def test_a_refused_create_without_tags_too_is_the_error_shown(
    config: Config, warnings: list[str]
) -> None:
    names = AwsNames(config)
    ecs, stub, _ = stubbed("ecs")
    stub.add_response("describe_clusters", {"clusters": []})
    refused(stub, "create_cluster", "AccessDeniedException")
    stub.add_client_error(
        "create_cluster", "AccessDeniedException", "not authorized to perform: ecs:CreateCluster"
    )
    with stub, pytest.raises(BackendError, match="ecs:CreateCluster"):
        ensure_cluster(ecs, names)
    assert not warnings


def test_other_refusals_are_not_tried_again_without_tags(
    config: Config, warnings: list[str]
) -> None:
    names = AwsNames(config)
    ecs, stub, seen = stubbed("ecs")
    stub.add_response("describe_clusters", {"clusters": []})
    stub.add_client_error("create_cluster", "InvalidParameterException", "bad name")
    with stub, pytest.raises(BackendError, match="bad name"):
        ensure_cluster(ecs, names)
    assert [p for p in seen if "clusterName" in p and "tags" in p]
    assert len([p for p in seen if "clusterName" in p]) == 1
    assert not warnings


def test_bootstrap_makes_its_roles_and_function_untagged_without_the_tag_permissions(
    monkeypatch: pytest.MonkeyPatch, warnings: list[str]
) -> None:
    from distributed_something.backends.aws import bootstrap

    # The monitor's code is not what this is about (building it bundles packages).
    monkeypatch.setattr(bootstrap, "function_zip", lambda: b"PK")
    iam, iam_stub, iam_seen = stubbed("iam")
    lambda_, lambda_stub, lambda_seen = stubbed("lambda")
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/ds-monitor-role"
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ds-monitor"
    made = datetime(2026, 1, 1, tzinfo=UTC)
    role = {
        "Path": "/",
        "RoleName": "ds-monitor-role",
        "RoleId": "AROAEXAMPLEEXAMPLE123",
        "Arn": role_arn,
        "CreateDate": made,
    }
    # IAM (query protocol) answers AccessDenied without iam:TagRole; Lambda (JSON)
    # AccessDeniedException without lambda:TagResource.
    refused(iam_stub, "create_role", "AccessDenied")
    iam_stub.add_response("create_role", {"Role": role})
    lambda_stub.add_client_error("get_function", "ResourceNotFoundException", "no function")
    refused(lambda_stub, "create_function", "AccessDeniedException")
    lambda_stub.add_response("create_function", {"FunctionArn": function_arn})
    with iam_stub, lambda_stub:
        assert bootstrap._ensure_role(iam, "ds-monitor-role", "lambda", [], None) == role_arn
        arn = bootstrap._ensure_function(
            lambda_,
            "ds-monitor",
            role_arn,
            "python3.11",
            "x86_64",
            {},
            clock=lambda: 0.0,
            sleep=lambda s: None,
            role_wait=0.0,
        )
        iam_stub.assert_no_pending_responses()
        lambda_stub.assert_no_pending_responses()
    assert arn == function_arn
    assert ["Tags" in p for p in iam_seen] == [True, False]
    created = [p for p in lambda_seen if "Code" in p]
    assert ["Tags" in p for p in created] == [True, False]
    assert len(warnings) == 2
    assert "iam:TagRole" in warnings[0] and "lambda:TagResource" in warnings[1]
