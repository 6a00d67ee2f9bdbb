"""AWS teardown on moto: complete, keeps the dead-letter queue, and resumable after a crash."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.clients import AwsClients
from distributed_something.backends.aws.resources import AwsResources
from distributed_something.backends.aws.teardown import TEARDOWN_STEPS, teardown
from distributed_something.errors import BackendError
from testkit import (
    BUCKET,
    OTHER_APP_ALARM,
    RUN_ID,
    FakeClock,
    World,
    build_world,
)


@pytest.fixture
def world(aws: str) -> World:
    """A run's resources on moto, without the unattended monitor's objects."""
    return build_world(with_monitor=False)


def run_teardown(
    world: World,
    resources: AwsResources | None = None,
    *,
    bucket: str = BUCKET,
    save: Callable[[AwsResources], None] = lambda r: None,
    **options: Any,
) -> None:
    """`teardown` of ``world``'s run (or of ``resources`` in its place) as `ds teardown`
    calls it: exports go to ``bucket`` under RUN_ID, ``save`` sees every save (by default
    nothing does), and ``options`` (clock, waits, clean_dashboard) pass on unchanged."""
    teardown(
        world.clients,
        world.names,
        world.resources if resources is None else resources,
        bucket=bucket,
        run_id=RUN_ID,
        save=save,
        **options,
    )


def export_keys(aws: AwsClients, group: str) -> list[str]:
    prefix = f"_ds/T/runs/{RUN_ID}/logs-export/{group}/"
    pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def assert_all_gone(world: World) -> None:
    """Nothing billable or left over remains; the dead-letter queue does."""
    aws, names, res = world.clients, world.names, world.resources
    with pytest.raises(aws.sqs.exceptions.QueueDoesNotExist):
        aws.sqs.get_queue_url(QueueName=names.queue)
    assert aws.sqs.get_queue_url(QueueName=names.dead_letter_queue)["QueueUrl"]

    services = aws.ecs.describe_services(cluster=names.cluster, services=[names.service])
    assert all(s["status"] == "INACTIVE" for s in services.get("services", []))
    clusters = aws.ecs.describe_clusters(clusters=[names.cluster])["clusters"]
    assert all(c["status"] == "INACTIVE" for c in clusters)
    active = aws.ecs.list_task_definitions(status="ACTIVE")
    families = {arn.rsplit("/", 1)[1].split(":")[0] for arn in active["taskDefinitionArns"]}
    assert families == {f"{names.task_family}Other"}  # another family is not ours to remove

    fleets = aws.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert all(f["SpotFleetRequestState"].startswith("cancelled") for f in fleets)
    reservations = aws.ec2.describe_instances(InstanceIds=world.instance_ids)["Reservations"]
    states = {i["State"]["Name"] for r in reservations for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"}

    alarms = aws.cloudwatch.describe_alarms()["MetricAlarms"]
    assert [a["AlarmName"] for a in alarms] == [OTHER_APP_ALARM]
    assert aws.cloudwatch.list_dashboards()["DashboardEntries"] == []

    with pytest.raises(aws.events.exceptions.ResourceNotFoundException):
        aws.events.describe_rule(Name="T-monitor")
    with pytest.raises(aws.lambda_.exceptions.ResourceNotFoundException):
        aws.lambda_.get_policy(FunctionName="ds-monitor")

    for group in (names.log_group, names.instance_log_group):
        keys = export_keys(aws, group)
        assert any(key.endswith(".gz") for key in keys), group
    assert res.cleaned == list(TEARDOWN_STEPS)


def test_teardown_removes_everything_but_the_dead_letter_queue(aws: str) -> None:
    world = build_world()
    saves: list[list[str]] = []

    run_teardown(world, save=lambda r: saves.append(list(r.cleaned)))

    assert_all_gone(world)
    # Saved after every step, and once more as each of the two exports started.
    assert [s for s in saves if s and s[-1] == TEARDOWN_STEPS[-1]] == [list(TEARDOWN_STEPS)]
    assert len(saves) == len(TEARDOWN_STEPS) + 2
    assert len(world.resources.export_tasks) == 2


class Crash(Exception):
    """The process dies while saving (after the step's work, before it is recorded)."""


def bucket_keys(aws: AwsClients, prefix: str) -> list[str]:
    pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_logs_of_the_family_image_are_exported_where_run_py_put_them(aws: str) -> None:
    # run.py: create_export_task(..., destinationPrefix='exportedlogs/' + LOG_GROUP_NAME),
    # then the same for LOG_GROUP_NAME + '_perInstance'.
    world = build_world(family_image=True)
    requests: list[dict[str, Any]] = []
    world.clients.logs.meta.events.register(
        "provide-client-params.logs.CreateExportTask",
        lambda params, **_: requests.append(dict(params)),
    )
    run_teardown(world)
    assert world.resources.family_worker is True
    assert [r["destinationPrefix"] for r in requests] == [
        "exportedlogs/T",
        "exportedlogs/T_perInstance",
    ]
    assert all(r["destination"] == BUCKET for r in requests)
    for group in ("T", "T_perInstance"):
        keys = bucket_keys(world.clients, f"exportedlogs/{group}/")
        assert any(key.endswith(".gz") for key in keys), (group, keys)
    assert bucket_keys(world.clients, "_ds/") == []  # nothing in the records area
    assert world.resources.cleaned == list(TEARDOWN_STEPS)


def test_family_export_survives_a_crash_right_after_deregistering(aws: str) -> None:
    # Killed after the task definitions were deregistered, before that step was saved: the
    # rerun cannot read the revision from a deregistration any more, and still exports
    # where run.py did.
    world = build_world(family_image=True)
    persisted = world.resources.model_copy(deep=True)

    def crashing_save(resources: AwsResources) -> None:
        nonlocal persisted
        if resources.cleaned[-1:] == ["deregister_task_definitions"]:
            raise Crash
        persisted = resources.model_copy(deep=True)

    with pytest.raises(Crash):
        run_teardown(world, save=crashing_save)
    assert persisted.family_worker is None
    run_teardown(world, persisted)
    assert persisted.family_worker is True
    assert bucket_keys(world.clients, "exportedlogs/T/")
    assert bucket_keys(world.clients, "_ds/") == []


def test_logs_of_ds_workers_are_exported_into_the_run_records(aws: str) -> None:
    world = build_world()
    run_teardown(world)
    assert world.resources.family_worker is False
    assert bucket_keys(world.clients, "exportedlogs/") == []
    assert export_keys(world.clients, "T") and export_keys(world.clients, "T_perInstance")


# 10 steps + 2 saves as the exports start = 12 saves; crash at each of them.
@pytest.mark.parametrize("crash_at", range(1, len(TEARDOWN_STEPS) + 3))
def test_teardown_killed_at_any_save_finishes_when_run_again(aws: str, crash_at: int) -> None:
    world = build_world()
    persisted = world.resources.model_copy(deep=True)
    calls = 0

    def crashing_save(resources: AwsResources) -> None:
        nonlocal calls, persisted
        calls += 1
        if calls == crash_at:
            raise Crash
        persisted = resources.model_copy(deep=True)

    with pytest.raises(Crash):
        run_teardown(world, save=crashing_save)
    # The step whose save failed is not recorded: the rerun repeats it on gone resources.
    resumed = persisted.model_copy(deep=True)
    assert len(resumed.cleaned) < len(TEARDOWN_STEPS)
    run_teardown(world, resumed)

    world.resources = resumed
    assert_all_gone(world)


def test_teardown_twice_is_a_no_op(world: World) -> None:
    run_teardown(world)
    again = AwsResources.model_validate(
        {**world.resources.model_dump(), "cleaned": [], "export_tasks": []}
    )
    # Every step again, from scratch, on resources that are all gone: no step fails.
    run_teardown(world, again)
    assert again.cleaned == list(TEARDOWN_STEPS)


def test_dashboard_is_kept_when_clean_dashboard_is_false(world: World) -> None:
    run_teardown(world, clean_dashboard=False)
    entries = world.clients.cloudwatch.list_dashboards()["DashboardEntries"]
    assert [e["DashboardName"] for e in entries] == [world.names.dashboard]
    assert "delete_dashboard" in world.resources.cleaned


def test_cluster_not_created_by_the_run_is_kept(world: World) -> None:
    world.resources.cluster_created = False
    run_teardown(world)
    clusters = world.clients.ecs.describe_clusters(clusters=[world.names.cluster])["clusters"]
    assert [c["status"] for c in clusters] == ["ACTIVE"]


def test_cluster_with_instances_is_left_after_the_wait(world: World) -> None:
    document = json.dumps({"instanceId": world.instance_ids[0], "region": "us-east-1"})
    world.clients.ecs.register_container_instance(
        cluster=world.names.cluster, instanceIdentityDocument=document
    )
    clock = FakeClock()
    run_teardown(world, clock=clock, sleep=clock.sleep, wait_timeout=30, poll_interval=10)
    clusters = world.clients.ecs.describe_clusters(clusters=[world.names.cluster])["clusters"]
    assert [c["status"] for c in clusters] == ["ACTIVE"]
    assert clock.sleeps == [10, 10, 10]
    assert world.resources.cleaned == list(TEARDOWN_STEPS)  # the rest still ran


def test_a_failing_step_names_itself_and_resumes_there(world: World) -> None:
    saved: list[Any] = []
    with pytest.raises(BackendError, match="export_logs"):
        run_teardown(
            world, bucket="no-such-bucket-here", save=lambda r: saved.append(list(r.cleaned))
        )
    assert world.resources.cleaned == list(TEARDOWN_STEPS[:-1])
    run_teardown(world, save=lambda r: saved.append(list(r.cleaned)))
    assert world.resources.cleaned == list(TEARDOWN_STEPS)
    assert export_keys(world.clients, world.names.log_group)


def test_a_bucket_that_refuses_the_log_export_says_which_policy_fixes_it(world: World) -> None:
    """AWS checks the bucket's policy as CreateExportTask is called and refuses at once
    (moto does not): the error names the regional CloudWatch Logs principal and the two
    permissions, and the step resumes after the fix."""

    def refused(**_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        message = (
            "GetBucketAcl call on the given bucket failed. Please check if CloudWatch Logs "
            "has been granted permission to perform this operation."
        )
        body = {"Error": {"Code": "InvalidParameterException", "Message": message}}
        body["ResponseMetadata"] = {"HTTPStatusCode": 400, "HTTPHeaders": {}}
        return AWSResponse("https://127.0.0.1/", 400, {}, None), body

    world.clients.logs.meta.events.register("before-call.logs.CreateExportTask", refused)
    with pytest.raises(BackendError) as raised:
        run_teardown(world)
    text = str(raised.value)
    regional = principals.LOGS.replace("logs.", "logs.us-east-1.", 1)  # not logs.<suffix>
    assert regional in text and "s3:GetBucketAcl" in text
    assert "Log export fails at cleanup" in text and "ds cleanup" in text
    world.clients.logs.meta.events.unregister("before-call.logs.CreateExportTask", refused)
    run_teardown(world)
    assert world.resources.cleaned == list(TEARDOWN_STEPS)
