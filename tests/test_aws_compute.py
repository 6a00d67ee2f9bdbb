"""EcsSpotCompute on moto: workers ↔ ECS tasks, fleet target without terminations, alarms."""

from __future__ import annotations

from datetime import UTC, datetime

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.compute import (
    PLACEMENT_EVENT_SECONDS,
    EcsSpotCompute,
    placement_problem,
    status_from_service,
)
from distributed_something.backends.aws.resources import AwsResources
from distributed_something.interfaces.compute import Compute, ComputeStatus
from testkit import OTHER_APP_ALARM, World, build_world, put_alarm


def compute_of(world: World, workers_per_task: int = 3) -> EcsSpotCompute:
    return EcsSpotCompute(
        AwsSettings(region="us-east-1"),
        world.names,
        lambda: world.resources,
        workers_per_task=workers_per_task,
    )


def desired_tasks(world: World) -> int:
    services = world.clients.ecs.describe_services(
        cluster=world.names.cluster, services=[world.names.service]
    )["services"]
    count: int = services[0]["desiredCount"]
    return count


def fleet_target(world: World) -> int:
    configs = world.clients.ec2.describe_spot_fleet_requests(
        SpotFleetRequestIds=[world.resources.fleet_request_id]
    )["SpotFleetRequestConfigs"]
    target: int = configs[0]["SpotFleetRequestConfig"]["TargetCapacity"]
    return target


def test_status_counts_workers_as_tasks_times_processes(aws: str) -> None:
    world = build_world(with_monitor=False, service_tasks=2)
    compute = compute_of(world, workers_per_task=3)
    assert compute.status() == ComputeStatus(desired=6, running=0)  # tasks still pending
    compute.scale(12)
    # moto runs nothing, but after an update it reports runningCount = desiredCount.
    assert compute.status() == ComputeStatus(desired=12, running=12)


def test_scale_rounds_workers_up_to_whole_tasks_and_is_idempotent(aws: str) -> None:
    world = build_world(with_monitor=False, service_tasks=2)
    compute = compute_of(world, workers_per_task=3)

    assert compute.resize_service(7) is True
    assert desired_tasks(world) == 3
    assert compute.resize_service(9) is False  # still 3 tasks: no call needed
    assert desired_tasks(world) == 3

    compute.scale(1)  # the Compute protocol's spelling
    assert desired_tasks(world) == 1
    compute.stop()
    assert desired_tasks(world) == 0
    compute.cleanup()  # again: nothing to do, no error
    assert compute.status() == ComputeStatus(0, 0)


def test_without_a_recorded_service_nothing_is_scaled(aws: str) -> None:
    world = build_world(with_monitor=False, service_tasks=2)
    world.resources = AwsResources(cluster=world.names.cluster)  # nothing else recorded
    compute = compute_of(world)

    assert compute.resize_service(30) is False
    assert compute.status() == ComputeStatus(0, 0)
    assert compute.resize_fleet(5) is False
    assert compute.fleet_status() == (0, 0.0, [])
    assert desired_tasks(world) == 2  # the unrecorded service was left alone


def test_scale_machines_sets_the_target_without_terminating(aws: str) -> None:
    world = build_world(with_monitor=False)
    compute = compute_of(world)
    assert compute.fleet_status() == (2, 2.0, world.instance_ids)

    assert compute.resize_fleet(1) is True
    assert fleet_target(world) == 1
    assert compute.resize_fleet(1) is False  # already the target
    # "noTermination": both machines keep running (busy ones must finish their task).
    reservations = world.clients.ec2.describe_instances(InstanceIds=world.instance_ids)
    states = {i["State"]["Name"] for r in reservations["Reservations"] for i in r["Instances"]}
    assert states == {"running"}
    assert sorted(compute.fleet_status().instance_ids) == sorted(world.instance_ids)

    compute.scale_machines(3)  # the Compute protocol's spelling
    assert fleet_target(world) == 3


def test_a_cancelled_fleet_is_not_scaled(aws: str) -> None:
    world = build_world(with_monitor=False)
    world.clients.ec2.cancel_spot_fleet_requests(
        SpotFleetRequestIds=[world.resources.fleet_request_id], TerminateInstances=True
    )
    compute = compute_of(world)
    assert compute.resize_fleet(4) is False
    assert compute.fleet_status() == (0, 0.0, [])


def test_prune_alarms_removes_only_alarms_of_dead_or_gone_instances(aws: str) -> None:
    world = build_world(with_monitor=False)
    live, dead = world.instance_ids
    gone = "i-0000000000000dead"
    put_alarm(world.clients, world.names.instance_alarm(gone))
    world.clients.ec2.terminate_instances(InstanceIds=[dead])

    pruned = compute_of(world).prune_alarms()

    expected = sorted([world.names.instance_alarm(dead), world.names.instance_alarm(gone)])
    assert pruned == expected
    left = world.clients.cloudwatch.describe_alarms()["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in left) == sorted(
        [world.names.instance_alarm(live), OTHER_APP_ALARM]
    )
    assert compute_of(world).prune_alarms() == []

    # The monitor loop's hook does the same on every tick.
    world.clients.ec2.terminate_instances(InstanceIds=[live])
    compute: Compute = compute_of(world)
    compute.housekeeping()
    left = world.clients.cloudwatch.describe_alarms()["MetricAlarms"]
    assert [a["AlarmName"] for a in left] == [OTHER_APP_ALARM]


def test_status_from_service_ignores_a_deleted_service() -> None:
    active = {"status": "ACTIVE", "desiredCount": 4, "runningCount": 1}
    assert status_from_service(active, 2) == ComputeStatus(desired=8, running=2)
    assert status_from_service({**active, "status": "INACTIVE"}, 2) == ComputeStatus(0, 0)
    assert status_from_service(None, 2) == ComputeStatus(0, 0)


UNPLACED = (
    "(service AppService) was unable to place a task because no container instance met all "
    "of its requirements. The closest matching (container-instance 5a1b) has insufficient "
    "memory available."
)


def test_ecs_saying_a_worker_cannot_be_placed_is_why_workers_are_missing() -> None:
    """moto never fails to place a task; ECS says so only in the service's events (newest
    first), repeated while it lasts. `ds status` shows the newest if recent."""
    now = 1_000_000.0
    service = {
        "status": "ACTIVE",
        "desiredCount": 2,
        "runningCount": 0,
        "events": [
            {"createdAt": datetime.fromtimestamp(now - 60, UTC), "message": UNPLACED},
            {"createdAt": datetime.fromtimestamp(now - 900, UTC), "message": "older"},
        ],
    }
    status = status_from_service(service, 1, now=now)
    assert status.waiting.startswith("was unable to place a task because")
    assert "insufficient memory" in status.waiting and "(service" not in status.waiting
    assert status_from_service({**service, "runningCount": 2}, 1, now=now).waiting == ""
    assert status_from_service(service, 1, now=now + PLACEMENT_EVENT_SECONDS).waiting == ""
    steady = {
        "createdAt": datetime.fromtimestamp(now, UTC),
        "message": "(service AppService) has reached a steady state.",
    }
    newer = {**service, "events": [steady, *service["events"]]}
    assert placement_problem(newer, now) == ""
    assert placement_problem({"events": []}, now) == ""


def test_ds_status_shows_why_workers_are_not_started() -> None:
    from distributed_something.backends import backend_kind
    from distributed_something.cli.commands import _status_frame
    from distributed_something.monitor.progress import from_counts
    from distributed_something.usecases.run_info import Status

    counts = dict.fromkeys(("done", "skipped", "running", "failed", "dead", "duplicates"), 0)
    counts.update(pending=3, total=3)
    st = Status(
        "App",
        "r1",
        True,
        from_counts(counts, 0),
        2,
        0,
        10.0,
        None,
        workers_waiting="was unable to place a task [because] of memory",
    )
    frame = _status_frame(st, backend_kind("aws"))
    text = " ".join(str(getattr(part, "plain", "")) for part in frame)
    assert "workers not started: was unable to place a task [because] of memory" in text
    assert "2 worker(s) asked of ECS: 0 running, 2 waiting to start on a machine" in text
    assert st.to_json()["workers"]["waiting"].startswith("was unable to place")
