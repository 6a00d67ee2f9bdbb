"""Answers AWS documents and moto never gives: a 200 that partly failed, a conflict that is
not what it seems, a page that is empty but not the last, a list longer than one page.

botocore's Stubber answers each call with the response the API reference describes (and
checks it against the service model); nothing is sent anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.backends.aws.doctor_checks import check_cluster
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.schedule import schedule_monitor, schedule_names
from distributed_something.backends.aws.task_logs import CloudWatchLiveLog
from distributed_something.config.model import Config
from distributed_something.errors import BackendError

REGION = "us-east-1"
ACCOUNT = "123456789012"
FUNCTION = "ds-monitor"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(
        service,
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client, Stubber(client)


@pytest.fixture
def config() -> Config:
    return Config.model_validate({"app_name": "Partial", "backend": "aws"})


@pytest.fixture
def aws() -> Iterator[dict[str, tuple[Any, Stubber]]]:
    made = {name: stubbed(name) for name in ("events", "lambda", "logs", "ecs", "ec2")}
    for _client, stub in made.values():
        stub.activate()
    yield made
    for _client, stub in made.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


# --- the unattended monitor's schedule ---------------------------------------------------------


def rule_and_function(events: Stubber, lambda_: Stubber, rule: str) -> None:
    """GetFunction and PutRule answering as documented."""
    lambda_.add_response(
        "get_function",
        {"Configuration": {"FunctionName": FUNCTION, "FunctionArn": FUNCTION_ARN}},
        {"FunctionName": FUNCTION},
    )
    events.add_response(
        "put_rule", {"RuleArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"}, None
    )


def put_targets_failed(events: Stubber, code: str, message: str) -> None:
    """PutTargets' partial failure: HTTP 200 with the target listed in FailedEntries."""
    events.add_response(
        "put_targets",
        {
            "FailedEntryCount": 1,
            "FailedEntries": [
                {"TargetId": "ds-monitor", "ErrorCode": code, "ErrorMessage": message}
            ],
        },
        {"Rule": ANY, "Targets": ANY},
    )


def policy_with(*sids: str) -> dict[str, Any]:
    """GetPolicy's answer: the resource policy as a JSON string."""
    statements = [
        {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": principals.EVENTS},
            "Action": "lambda:InvokeFunction",
            "Resource": FUNCTION_ARN,
        }
        for sid in sids
    ]
    policy = {"Version": "2012-10-17", "Id": "default", "Statement": statements}
    return {"Policy": json.dumps(policy), "RevisionId": "7c0e1d53-0000-4000-8000-000000000000"}


IN_PROGRESS = (
    "The operation cannot be performed at this time. An update is in progress for resource: "
    + FUNCTION_ARN
)


@dataclass
class Scheduling:
    """`schedule_monitor` on stubbed clients whose GetFunction and PutRule answer (the
    tests add what follows): its EventBridge and Lambda stubs, rule, statement id, and the
    waits it made."""

    events: Stubber
    lambda_: Stubber
    rule: str
    statement: str
    run: Callable[[], dict[str, str]]
    waits: list[float] = field(default_factory=list)


@pytest.fixture(name="s")
def scheduling(aws: dict[str, tuple[Any, Stubber]], config: Config) -> Scheduling:
    names = AwsNames(config)
    rule, statement = schedule_names(names)
    (events, ev), (lambda_, la) = aws["events"], aws["lambda"]
    rule_and_function(ev, la, rule)
    waits: list[float] = []

    def run() -> dict[str, str]:
        return schedule_monitor(
            events, lambda_, names, config, region=REGION, function=FUNCTION, sleep=waits.append
        )

    return Scheduling(ev, la, rule, statement, run, waits)


def test_a_target_eventbridge_did_not_add_is_an_error_not_a_schedule(s: Scheduling) -> None:
    # A transient code is tried once more; failing again, the run is not left unmonitored.
    put_targets_failed(s.events, "ConcurrentModificationException", "Too many requests at once")
    put_targets_failed(s.events, "ConcurrentModificationException", "Too many requests at once")
    with pytest.raises(BackendError) as failure:
        s.run()
    text = str(failure.value)
    assert s.rule in text and "ConcurrentModificationException" in text
    assert "Too many requests at once" in text and "ds start-cluster" in text
    assert len(s.waits) == 1


def test_a_transient_put_targets_failure_is_tried_once_more(s: Scheduling) -> None:
    put_targets_failed(s.events, "InternalException", "Internal error")
    s.events.add_response("put_targets", {"FailedEntryCount": 0, "FailedEntries": []}, None)
    s.lambda_.add_response("add_permission", {"Statement": "{}"}, None)
    objects = s.run()
    assert objects["rule"] == s.rule and objects["permission"] == s.statement
    assert len(s.waits) == 1


def test_a_conflict_while_the_function_updates_is_waited_out(s: Scheduling) -> None:
    """ResourceConflictException also means "another operation is in progress": the policy
    says whether the statement is there; it is not, so AddPermission is tried again."""
    s.events.add_response("put_targets", {"FailedEntryCount": 0, "FailedEntries": []}, None)
    s.lambda_.add_client_error("add_permission", "ResourceConflictException", IN_PROGRESS, 409)
    s.lambda_.add_response("get_policy", policy_with("someone-else"), {"FunctionName": FUNCTION})
    s.lambda_.add_response(
        "add_permission",
        {"Statement": "{}"},
        {
            "FunctionName": FUNCTION,
            "StatementId": s.statement,
            "Action": "lambda:InvokeFunction",
            "Principal": ANY,
            "SourceArn": ANY,
        },
    )
    s.run()
    assert len(s.waits) == 1


def test_a_statement_already_in_the_policy_is_accepted(s: Scheduling) -> None:
    s.events.add_response("put_targets", {"FailedEntryCount": 0, "FailedEntries": []}, None)
    s.lambda_.add_client_error(
        "add_permission",
        "ResourceConflictException",
        f"The statement id ({s.statement}) provided already exists. Please provide a new "
        "statement id, or remove the existing statement.",
        409,
    )
    s.lambda_.add_response(
        "get_policy", policy_with("other", s.statement), {"FunctionName": FUNCTION}
    )
    s.run()
    assert s.waits == []


def test_a_conflict_that_never_ends_is_an_error(s: Scheduling) -> None:
    s.events.add_response("put_targets", {"FailedEntryCount": 0, "FailedEntries": []}, None)
    for _ in range(5):
        s.lambda_.add_client_error("add_permission", "ResourceConflictException", IN_PROGRESS, 409)
        s.lambda_.add_client_error(
            "get_policy",
            "ResourceNotFoundException",
            "The resource you requested does not exist.",
            404,
        )
    with pytest.raises(BackendError) as failure:
        s.run()
    text = str(failure.value)
    assert "ResourceConflictException" in text and s.statement in text and FUNCTION in text
    assert len(s.waits) == 4


# --- `ds logs -f` --------------------------------------------------------------------------------


def log_page(
    token: str | None, messages: list[str], forward: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    request: dict[str, Any] = {"logGroupName": "G", "logStreamName": "S", "startFromHead": True}
    if token is not None:
        request["nextToken"] = token
    events = [{"timestamp": 1, "message": m, "ingestionTime": 2} for m in messages]
    return {"events": events, "nextForwardToken": forward, "nextBackwardToken": "b/0"}, request


def test_following_a_log_reads_past_an_empty_page(aws: dict[str, tuple[Any, Stubber]]) -> None:
    """GetLogEvents: an empty page is not the end while nextForwardToken differs from the
    token sent; the same token coming back is."""
    logs, stub = aws["logs"]
    for token, messages, forward in [
        (None, ["first"], "f/1"),
        ("f/1", [], "f/2"),  # empty, but not the end
        ("f/2", ["second\n"], "f/3"),
        ("f/3", [], "f/3"),  # the end: the token sent comes back
    ]:
        response, request = log_page(token, messages, forward)
        stub.add_response("get_log_events", response, request)
    live = CloudWatchLiveLog(logs, "G", "S")
    assert live.read() == "first\nsecond\n"
    response, request = log_page("f/3", ["third"], "f/4")
    stub.add_response("get_log_events", response, request)
    response, request = log_page("f/4", [], "f/4")
    stub.add_response("get_log_events", response, request)
    assert live.read() == "third\n"


# --- `ds doctor` -------------------------------------------------------------------------------


def test_doctor_counts_every_page_of_instances(aws: dict[str, tuple[Any, Stubber]]) -> None:
    """ListContainerInstances gives at most 100 a page (nextToken), DescribeSpotFleetInstances
    pages with NextToken: 120 of each is a healthy cluster, not 20 missing instances."""
    (ecs, ecs_stub), (ec2, ec2_stub) = aws["ecs"], aws["ec2"]
    cluster, fleet = "DocCluster", "sfr-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    ecs_stub.add_response(
        "describe_clusters",
        {"clusters": [{"clusterName": cluster, "status": "ACTIVE"}], "failures": []},
        {"clusters": [cluster]},
    )
    arns = [
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{i:032x}" for i in range(120)
    ]
    ecs_stub.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns[:100], "nextToken": "page-2"},
        {"cluster": cluster},
    )
    ecs_stub.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns[100:]},
        {"cluster": cluster, "nextToken": "page-2"},
    )
    instances = [
        {
            "InstanceId": f"i-{i:017x}",
            "InstanceType": "m5.large",
            "SpotInstanceRequestId": f"sir-{i:08x}",
        }
        for i in range(120)
    ]
    ec2_stub.add_response(
        "describe_spot_fleet_instances",
        {"ActiveInstances": instances[:100], "NextToken": "more", "SpotFleetRequestId": fleet},
        {"SpotFleetRequestId": fleet},
    )
    ec2_stub.add_response(
        "describe_spot_fleet_instances",
        {"ActiveInstances": instances[100:], "SpotFleetRequestId": fleet},
        {"SpotFleetRequestId": fleet, "NextToken": "more"},
    )
    clients = AwsClients(AwsSettings(REGION), {"ecs": ecs, "ec2": ec2})
    (finding,) = check_cluster(clients, cluster, fleet)
    assert finding.ok, finding
    assert finding.detail == f"120 instance(s) registered, 120 running in fleet {fleet}"


def test_doctor_names_a_cluster_paging_that_fails(aws: dict[str, tuple[Any, Stubber]]) -> None:
    """A failure on a later page is a finding, like one on the first."""
    ecs, ecs_stub = aws["ecs"]
    ecs_stub.add_response(
        "describe_clusters",
        {"clusters": [{"clusterName": "C", "status": "ACTIVE"}], "failures": []},
        {"clusters": ["C"]},
    )
    ecs_stub.add_response(
        "list_container_instances",
        {
            "containerInstanceArns": ["arn:aws:ecs:us-east-1:123456789012:container-instance/C/1"],
            "nextToken": "2",
        },
        {"cluster": "C"},
    )
    ecs_stub.add_client_error(
        "list_container_instances", "AccessDeniedException", "not authorized", 400
    )
    (finding,) = check_cluster(AwsClients(AwsSettings(REGION), {"ecs": ecs}), "C", None)
    assert not finding.ok and "not authorized" in finding.detail
