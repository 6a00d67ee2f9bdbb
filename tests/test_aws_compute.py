"""EcsSpotCompute on moto: workers ↔ ECS tasks, fleet target without terminations, alarms."""

from __future__ import annotations

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.compute import EcsSpotCompute, status_from_service
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
