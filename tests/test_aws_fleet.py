"""What `ds start-cluster` makes on AWS: the spot fleet request built from a family fleet file,
the capacity wait (moto server on 127.0.0.1, and fakes for what moto cannot show), the
legacy monitor file and the dashboard."""

from __future__ import annotations

import base64
import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from distributed_something.backends.aws import fleet as spot
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.dashboard import dashboard_body, put_dashboard
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.config.model import Config
from distributed_something.errors import BackendError, InputError
from distributed_something.fleet import load_fleet
from testkit import FAMILY_FLEET, FakeClock, moto_family_fleet

REGION = "us-east-1"
SETTINGS = AwsSettings(region=REGION)
NEW_AMI = "ami-0123456789abcdef0"

# Distributed-CellProfiler's files/exampleFleet_us-east-1.json, placeholders filled in, with the
# long-expired ValidUntil a copied file carries (the request must drop it).


def make_config(**aws: Any) -> Config:
    return Config.model_validate(
        {
            "app_name": "Demo",
            "backend": "aws",
            "image": "org/tool:1.0",
            "cluster": {"machines": 3, "tasks_per_machine": 2},
            "storage": {"bucket": "demo-bucket"},
            "aws": {
                "region": REGION,
                "ecs_cluster": "DemoCluster",
                "machine_type": ["m5.large", "m5a.large", "c5.xlarge"],
                "machine_price": 0.15,
                "ebs_vol_size": 40,
                **aws,
            },
        }
    )


def family_fleet(tmp_path: Path, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fleet file as `ds` reads it: written to disk and loaded by `load_fleet`."""
    path = tmp_path / "exampleFleet_us-east-1.json"
    path.write_text(json.dumps(data or FAMILY_FLEET, indent=2))
    return load_fleet(path)


def build(
    tmp_path: Path, config: Config, *, image_id: str | None = NEW_AMI, **kwargs: Any
) -> dict[str, Any]:
    return spot.build_fleet_request(
        family_fleet(tmp_path, kwargs.pop("data", None)),
        config,
        AwsNames(config),
        user_data=spot.ecs_user_data("DemoCluster"),
        image_id=image_id,
        **kwargs,
    )


def decode(user_data: str) -> str:
    return base64.b64decode(user_data).decode()


# --- user data and AMI --------------------------------------------------------------------


def test_user_data_configures_the_ecs_agent_for_the_cluster() -> None:
    script = decode(spot.ecs_user_data("DemoCluster", extra_agent_config={"ECS_LOGLEVEL": "debug"}))

    assert script.startswith("#!/bin/bash\n")
    lines = script.splitlines()
    for setting in (
        "ECS_CLUSTER=DemoCluster",
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
        "ECS_ENABLE_CONTAINER_METADATA=true",
        'ECS_AVAILABLE_LOGGING_DRIVERS=["json-file","awslogs"]',
        "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",
        "ECS_ENABLE_TASK_IAM_ROLE=true",
        "ECS_LOGLEVEL=debug",
    ):
        assert setting in lines
    assert "/etc/ecs/ecs.config" in script
    for legacy in ("s3fs", "privileged", "yum install", "dm.basesize"):
        assert legacy not in script


@pytest.mark.parametrize(
    ("cluster", "extra"),
    [("bad name; reboot", {}), ("DemoCluster", {"ECS_X": "a\nrm -rf /"}), ("Demo", {"X": "1"})],
)
def test_user_data_refuses_what_cannot_be_written_safely(
    cluster: str, extra: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        spot.ecs_user_data(cluster, extra_agent_config=extra)


def test_current_ecs_ami_comes_from_the_ssm_public_parameter(aws: str) -> None:
    ssm = client("ssm", SETTINGS)
    expected = ssm.get_parameter(
        Name="/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
    )["Parameter"]["Value"]

    assert spot.current_ecs_ami(ssm) == expected
    assert expected.startswith("ami-")
    arm = spot.current_ecs_ami(ssm, variant="arm64")
    assert arm is not None and arm != expected
    assert spot.current_ecs_ami(ssm, variant="no-such-variant") is None


# --- the request --------------------------------------------------------------------------


def test_request_from_a_family_fleet_file(tmp_path: Path) -> None:
    config = make_config()
    fleet = family_fleet(tmp_path)
    original = copy.deepcopy(fleet)

    request = spot.build_fleet_request(
        fleet,
        config,
        AwsNames(config),
        user_data=spot.ecs_user_data("DemoCluster"),
        image_id=NEW_AMI,
        client_token="run-7",
    )

    assert original == fleet  # the user's fleet is not modified
    assert request["IamFleetRole"] == FAMILY_FLEET["IamFleetRole"]
    assert request["TargetCapacity"] == 3
    assert request["SpotPrice"] == "0.15"
    assert request["Type"] == "maintain"
    assert request["ExcessCapacityTerminationPolicy"] == "noTermination"
    assert request["AllocationStrategy"] == "lowestPrice"  # the file's choice is kept
    assert request["TerminateInstancesWithExpiration"] is True
    assert "ValidUntil" not in request  # a stale date from a copied file would kill the run
    assert request["ClientToken"] == "run-7"
    assert {"Key": "ds:app", "Value": "Demo"} in _tags(request, "spot-fleet-request")
    specs = request["LaunchSpecifications"]
    assert [s["InstanceType"] for s in specs] == ["m5.large", "m5a.large", "c5.xlarge"]
    for spec in specs:
        assert spec["ImageId"] == NEW_AMI
        assert "ECS_CLUSTER=DemoCluster" in decode(spec["UserData"]).splitlines()
        assert spec["KeyName"] == "your_key_file_name"
        assert (
            spec["IamInstanceProfile"]
            == FAMILY_FLEET["LaunchSpecifications"][0]["IamInstanceProfile"]
        )
        # One root volume of the configured size; the old AMI's snapshot and its unsized
        # Docker volume are gone.
        assert spec["BlockDeviceMappings"] == [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"DeleteOnTermination": True, "VolumeType": "gp2", "VolumeSize": 40},
            }
        ]
        [interface] = spec["NetworkInterfaces"]
        assert interface == {
            "DeviceIndex": 0,
            "SubnetId": "subnet-0123abcd",
            "DeleteOnTermination": True,
            "AssociatePublicIpAddress": True,  # the fleet file's: aws.assign_ip is unset
            "Groups": ["sg-0123abcd"],
        }
        tags = _tags(spec, "instance")
        assert {"Key": "Name", "Value": "DemoWorker"} in tags
        assert {"Key": "ds:app", "Value": "Demo"} in tags


def _tags(holder: dict[str, Any], resource_type: str) -> list[dict[str, str]]:
    [found] = [t for t in holder["TagSpecifications"] if t["ResourceType"] == resource_type]
    tags: list[dict[str, str]] = found["Tags"]
    return tags


def test_public_ip_and_key_pair_follow_the_config(tmp_path: Path) -> None:
    request = build(tmp_path, make_config(assign_ip=True, ssh_key_name="lab-key"))

    for spec in request["LaunchSpecifications"]:
        assert spec["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is True
        assert spec["KeyName"] == "lab-key"
    # The key file's name, as the family's templates give it: the key pair's name is sent.
    request = build(tmp_path, make_config(ssh_key_name="lab-key.pem"))
    assert {spec["KeyName"] for spec in request["LaunchSpecifications"]} == {"lab-key"}


def test_keeping_the_files_image_keeps_its_root_snapshot(tmp_path: Path) -> None:
    request = build(tmp_path, make_config(machine_type=["m5.large"]), image_id=None)

    [spec] = request["LaunchSpecifications"]
    assert spec["ImageId"] == "ami-fad25980"
    root = spec["BlockDeviceMappings"][0]
    assert root["Ebs"]["SnapshotId"] == "snap-04007a196c0f3f398"
    assert root["Ebs"]["VolumeSize"] == 40


def test_a_minimal_file_gets_a_root_volume_an_interface_and_a_strategy(tmp_path: Path) -> None:
    minimal = {
        "IamFleetRole": FAMILY_FLEET["IamFleetRole"],
        "LaunchSpecifications": [
            {
                "ImageId": "ami-fad25980",
                "IamInstanceProfile": {"Name": "ecsInstanceRole"},
                "SubnetId": "subnet-0123abcd",
                "SecurityGroups": [{"GroupId": "sg-0123abcd"}],
                "SpotPrice": "9.99",
                "InstanceType": "t2.micro",
            },
            {"ImageId": "ami-fad25980", "IamInstanceProfile": {"Name": "ecsInstanceRole"}},
        ],
    }

    request = build(tmp_path, make_config(machine_type=["m5.large"], assign_ip=False), data=minimal)

    assert request["AllocationStrategy"] == spot.DEFAULT_ALLOCATION_STRATEGY
    first, second = request["LaunchSpecifications"]
    assert first["InstanceType"] == second["InstanceType"] == "m5.large"
    assert "SpotPrice" not in first  # the config's price applies to every type
    assert first["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"VolumeType": "gp3", "VolumeSize": 40, "DeleteOnTermination": True},
        }
    ]
    # Subnet and groups move into the interface that carries the public IP choice.
    assert "SubnetId" not in first and "SecurityGroups" not in first
    assert first["NetworkInterfaces"] == [
        {
            "DeviceIndex": 0,
            "SubnetId": "subnet-0123abcd",
            "AssociatePublicIpAddress": False,
            "DeleteOnTermination": True,
            "Groups": ["sg-0123abcd"],
        }
    ]
    # Without a subnet there is nothing to attach an interface to: the default applies.
    assert "NetworkInterfaces" not in second


def test_a_fleet_file_without_instance_profile_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    data = copy.deepcopy(FAMILY_FLEET)
    del data["LaunchSpecifications"][0]["IamInstanceProfile"]

    with pytest.raises(InputError) as caught:
        family_fleet(tmp_path, data)  # load_fleet, which `ds validate` and every command use
    assert caught.value.field == "LaunchSpecifications[0].IamInstanceProfile"
    assert family_fleet(tmp_path)["LaunchSpecifications"]  # the family's file passes


# --- on moto ------------------------------------------------------------------------------


def moto_fleet(ec2: Any, tmp_path: Path) -> dict[str, Any]:
    """The family file pointed at moto's default subnet and security group."""
    return family_fleet(tmp_path, moto_family_fleet(ec2))


def test_requested_fleet_reaches_ready_with_tagged_instances(aws: str, tmp_path: Path) -> None:
    ec2 = client("ec2", SETTINGS)
    config = make_config()
    names = AwsNames(config)
    request = spot.build_fleet_request(
        moto_fleet(ec2, tmp_path),
        config,
        names,
        user_data=spot.ecs_user_data(names.cluster),
        image_id=spot.current_ecs_ami(client("ssm", SETTINGS)),
    )
    clock = FakeClock()

    fleet_id = spot.request_fleet(ec2, request)
    state = spot.wait_for_capacity(ec2, fleet_id, timeout=600, clock=clock, sleep=clock.sleep)

    assert state.state == "active"
    assert (state.target, state.fulfilled) == (3, 3)
    described = ec2.describe_instances(InstanceIds=list(state.instance_ids))["Reservations"]
    instances = [i for r in described for i in r["Instances"]]
    assert len(instances) == 3
    for instance in instances:
        assert {"Key": "Name", "Value": "DemoWorker"} in instance["Tags"]
        assert {"Key": "ds:app", "Value": "Demo"} in instance["Tags"]
    [config_out] = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet_id])[
        "SpotFleetRequestConfigs"
    ]
    assert {"Key": "ds:app", "Value": "Demo"} in config_out["Tags"]


def test_a_fleet_that_disappeared_is_a_clear_error(aws: str, tmp_path: Path) -> None:
    ec2 = client("ec2", SETTINGS)
    config = make_config()
    names = AwsNames(config)
    request = spot.build_fleet_request(
        moto_fleet(ec2, tmp_path), config, names, user_data="", image_id=None
    )
    fleet_id = spot.request_fleet(ec2, request)
    ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[fleet_id], TerminateInstances=True)
    clock = FakeClock()

    with pytest.raises(BackendError, match=f"{fleet_id} no longer exists"):
        spot.wait_for_capacity(ec2, fleet_id, timeout=600, clock=clock, sleep=clock.sleep)


# --- judging capacity (pure) --------------------------------------------------------------


def state_of(**changes: Any) -> spot.FleetState:
    base: dict[str, Any] = {
        "fleet_id": "sfr-1",
        "state": "active",
        "activity_status": "pending_fulfillment",
        "target": 4,
        "fulfilled": 0.0,
    }
    return spot.FleetState(**(base | changes))


@pytest.mark.parametrize(
    ("changes", "waited", "verdict"),
    [
        ({}, 10, "waiting"),
        ({"state": "submitted"}, 10, "waiting"),
        ({}, 900, "no_capacity"),
        ({"fulfilled": 1.0}, 10, "ready"),
        ({"fulfilled": 1.0}, 9000, "ready"),
        ({"instance_ids": ("i-1",)}, 10, "ready"),
        ({"state": "failed"}, 0, "config_error"),
        ({"state": "cancelled_terminating", "fulfilled": 2.0}, 0, "config_error"),
        # A request EC2 does not know: not yet, for a while after it is made (eventual
        # consistency), whatever the patience; gone after that.
        ({"state": "missing"}, 0, "waiting"),
        ({"state": "missing"}, 119, "waiting"),
        ({"state": "missing"}, 120, "config_error"),
        ({"activity_status": "error"}, 0, "config_error"),
        (
            {"activity_status": "error", "errors": ("iamFleetRoleInvalid: no permission",)},
            0,
            "config_error",
        ),
        # Errors that only say "no capacity" wait like any capacity shortage.
        (
            {
                "activity_status": "error",
                "errors": (
                    "allLaunchSpecsTemporarilyBlacklisted: There is no Spot capacity available",
                ),
            },
            10,
            "waiting",
        ),
        (
            {
                "activity_status": "error",
                "errors": ("allLaunchSpecsTemporarilyBlacklisted: InsufficientInstanceCapacity",),
            },
            900,
            "no_capacity",
        ),
        # A working machine proves the specification good despite an error event.
        ({"activity_status": "error", "fulfilled": 1.0}, 0, "ready"),
    ],
)
def test_judge_capacity(changes: dict[str, Any], waited: float, verdict: str) -> None:
    assert spot.judge_capacity(state_of(**changes), waited, patience=900) == verdict


def test_a_request_unseen_is_waited_for_only_while_it_is_new() -> None:
    missing = state_of(state="missing")
    # What is left of the grace: measured from the request, not from this wait.
    assert spot.unseen_grace(None, 5000.0) == 0.0  # recorded without its time: long ago
    assert spot.unseen_grace(5000.0, 5000.0) == spot.UNSEEN_GRACE_SECONDS
    assert spot.unseen_grace(5000.0, 5030.0) == spot.UNSEEN_GRACE_SECONDS - 30
    assert spot.unseen_grace(5000.0, 9000.0) == 0.0
    assert spot.judge_capacity(missing, 0, patience=10, unseen_grace=0.0) == "config_error"
    assert spot.judge_capacity(missing, 20, patience=10, unseen_grace=90.0) == "waiting"


class FakeEc2:
    """An EC2 client reporting a fixed fleet state; records cancellations."""

    def __init__(
        self,
        state: str = "active",
        activity: str | None = "pending_fulfillment",
        fulfilled: float = 0.0,
        pages: list[list[str]] | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.state, self.activity, self.fulfilled = state, activity, fulfilled
        self.pages = pages or [[]]
        self.history = history or []
        self.cancelled: list[dict[str, Any]] = []

    def describe_spot_fleet_requests(self, SpotFleetRequestIds: list[str]) -> dict[str, Any]:
        return {
            "SpotFleetRequestConfigs": [
                {
                    "SpotFleetRequestId": SpotFleetRequestIds[0],
                    "SpotFleetRequestState": self.state,
                    "ActivityStatus": self.activity,
                    "CreateTime": 0,
                    "SpotFleetRequestConfig": {
                        "TargetCapacity": 2,
                        "FulfilledCapacity": self.fulfilled,
                    },
                }
            ]
        }

    def describe_spot_fleet_instances(self, **kwargs: Any) -> dict[str, Any]:
        index = int(kwargs.get("NextToken", 0))
        page: dict[str, Any] = {"ActiveInstances": [{"InstanceId": i} for i in self.pages[index]]}
        if index + 1 < len(self.pages):
            page["NextToken"] = str(index + 1)
        return page

    def describe_spot_fleet_request_history(self, **kwargs: Any) -> dict[str, Any]:
        return {"HistoryRecords": self.history}

    def cancel_spot_fleet_requests(self, **kwargs: Any) -> dict[str, Any]:
        self.cancelled.append(kwargs)
        return {}


def test_fleet_state_reads_every_page_of_instances() -> None:
    ec2 = FakeEc2(fulfilled=3.0, pages=[["i-1", "i-2"], ["i-3"]])

    state = spot.fleet_state(ec2, "sfr-1")

    assert state.instance_ids == ("i-1", "i-2", "i-3")
    assert (state.target, state.fulfilled) == (2, 3.0)


def test_a_config_error_cancels_the_fleet_with_its_instances() -> None:
    history = [
        {
            "EventType": "error",
            "EventInformation": {
                "EventSubType": "spotFleetRequestConfigurationInvalid",
                "EventDescription": "The image id '[ami-fad25980]' does not exist",
            },
        }
    ]
    ec2 = FakeEc2(activity="error", history=history)
    clock = FakeClock()

    with pytest.raises(BackendError) as caught:
        spot.wait_for_capacity(ec2, "sfr-1", timeout=600, clock=clock, sleep=clock.sleep)

    assert ec2.cancelled == [{"SpotFleetRequestIds": ["sfr-1"], "TerminateInstances": True}]
    message = str(caught.value)
    assert "ami-fad25980" in message and "was cancelled" in message
    assert clock.sleeps == []  # no point waiting for a request that cannot work


def test_no_capacity_keeps_the_fleet_and_says_so() -> None:
    ec2 = FakeEc2()
    clock = FakeClock()

    with pytest.raises(BackendError) as caught:
        spot.wait_for_capacity(
            ec2, "sfr-1", timeout=100, clock=clock, sleep=clock.sleep, interval=30
        )

    assert ec2.cancelled == []
    assert clock.sleeps == [30, 30, 30, 10]
    message = str(caught.value)
    assert message.startswith("no spot capacity after 100s")
    assert "is kept" in message and "aws.machine_type" in message


# --- monitor file and dashboard -----------------------------------------------------------


def test_monitor_file_is_valid_json_with_the_familys_keys(tmp_path: Path) -> None:
    names = AwsNames(make_config())

    path = spot.write_monitor_file(
        tmp_path,
        names,
        fleet_id="sfr-123",
        queue_url="https://sqs/DemoQueue",
        cluster="DemoCluster",
        service="DemoService",
        region=REGION,
        bucket="demo-bucket",
        clean_dashboard=False,
        start_time_ms=1700000000000,
    )

    assert path == tmp_path / "files" / "DemoSpotFleetRequestId.json"
    content = json.loads(path.read_text())
    assert content == {
        "MONITOR_FLEET_ID": "sfr-123",
        "MONITOR_APP_NAME": "Demo",
        "MONITOR_ECS_CLUSTER": "DemoCluster",
        "MONITOR_QUEUE_NAME": "DemoQueue",
        "MONITOR_BUCKET_NAME": "demo-bucket",
        "MONITOR_LOG_GROUP_NAME": "Demo",
        "MONITOR_START_TIME": "1700000000000",
        "CLEAN_DASHBOARD": "False",
        "DS_QUEUE_URL": "https://sqs/DemoQueue",
        "DS_ECS_SERVICE": "DemoService",
        "DS_AWS_REGION": REGION,
        "DS_DEAD_LETTER_QUEUE_NAME": "DemoDeadMessages",
    }
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_dashboard_round_trips_through_cloudwatch(aws: str) -> None:
    config = make_config()
    names = AwsNames(config)
    body = dashboard_body(
        names,
        config,
        region=REGION,
        fleet_id="sfr-123",
        queue_name="DemoQueue",
        dlq_name="DemoDeadMessages",
        cluster="DemoCluster",
        service="DemoService",
    )
    cloudwatch = client("cloudwatch", SETTINGS)

    put_dashboard(cloudwatch, names.dashboard, body)

    stored = cloudwatch.get_dashboard(DashboardName="DemoDashboard")["DashboardBody"]
    assert json.loads(stored) == body
    metrics = [
        tuple(m[:2]) + tuple(x for x in m[2:] if isinstance(x, str))
        for w in body["widgets"]
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
    ]
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "DemoQueue") in metrics
    assert ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", "DemoQueue") in (
        metrics
    )
    assert (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        "DemoDeadMessages",
    ) in metrics
    assert ("AWS/SQS", "NumberOfMessagesDeleted", "QueueName", "DemoQueue") in metrics
    service = ("ClusterName", "DemoCluster", "ServiceName", "DemoService")
    assert ("AWS/ECS", "MemoryUtilization", *service) in metrics
    assert ("AWS/ECS", "CPUUtilization", *service) in metrics
    assert ("AWS/EC2Spot", "FulfilledCapacity", "FleetRequestId", "sfr-123") in metrics
    assert ("AWS/EC2Spot", "TargetCapacity", "FleetRequestId", "sfr-123") in metrics
    [logs] = [w for w in body["widgets"] if w["type"] == "log"]
    assert "SOURCE 'Demo'" in logs["properties"]["query"]
    assert "error" in logs["properties"]["query"]


def test_error_events_are_best_effort_even_when_the_answer_is_garbled() -> None:
    from botocore.parsers import ResponseParserError

    class Garbled:
        def describe_spot_fleet_request_history(self, **kwargs: Any) -> dict[str, Any]:
            raise ResponseParserError("Unable to parse response, invalid XML received")

    class Paged:
        def __init__(self) -> None:
            self.pages = [
                {
                    "HistoryRecords": [
                        {"EventInformation": {"EventSubType": "iamFleetRoleInvalid"}}
                    ],
                    "NextToken": "t",
                },
                {"HistoryRecords": [{"EventInformation": {"EventDescription": "no price"}}]},
            ]

        def describe_spot_fleet_request_history(self, **kwargs: Any) -> dict[str, Any]:
            return self.pages.pop(0)

    assert spot._error_events(Garbled(), "sfr-1", None) == ()
    assert spot._error_events(Paged(), "sfr-1", None) == (
        "iamFleetRoleInvalid: ",
        "error: no price",
    )


#: 17 instance types: with a fleet file of 3 launch specifications, 51 in the request.
MANY_TYPES = [
    *(f"m5.{size}" for size in ("large", "xlarge", "2xlarge", "4xlarge")),
    *(f"m5a.{size}" for size in ("large", "xlarge", "2xlarge")),
    *(f"c5.{size}" for size in ("large", "xlarge", "2xlarge", "4xlarge")),
    *(f"r5.{size}" for size in ("large", "xlarge", "2xlarge")),
    "m6i.large",
    "m6i.xlarge",
    "c6i.large",
]


def test_more_launch_specifications_than_a_spot_fleet_takes_is_refused_before_it_starts(
    aws: str, tmp_path: Path
) -> None:
    """A spot fleet takes at most 50 launch specifications (EC2's quota; moto takes more):
    before, start-cluster requested 51 and AWS refused the request after the log groups
    were made. A type listed twice makes one specification per file specification."""
    from moto_projects import aws_project, ds_ok

    folder = aws_project(
        tmp_path / "p", app="Many", bucket="many-bucket", names=["a"], argv=["true"],
        cluster={}, queue={},
    )  # fmt: skip
    config = tomllib.loads((folder / "ds.toml").read_text())
    config["aws"]["machine_type"] = [*MANY_TYPES, "m5.large"]
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    fleet_path = folder / "files" / "fleet.json"
    fleet = json.loads(fleet_path.read_text())
    fleet["LaunchSpecifications"] *= 3
    fleet_path.write_text(json.dumps(fleet))
    ds_ok("setup", cwd=folder)

    result = ds_ok("start-cluster", "files/fleet.json", cwd=folder, ok=(2,))

    assert "aws.machine_type" in result.stderr and "Traceback" not in result.stderr
    assert "51 launch specifications" in result.stderr and "at most 50" in result.stderr
    assert client("ec2", SETTINGS).describe_spot_fleet_requests()["SpotFleetRequestConfigs"] == []
    groups = client("logs", SETTINGS).describe_log_groups()["logGroups"]
    assert [g["logGroupName"] for g in groups if "Many" in g["logGroupName"]] == []

    # 50 are taken: the request has one per specification and distinct type.
    config["aws"]["machine_type"] = [*MANY_TYPES[:16], "m5.large"]
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    fleet["LaunchSpecifications"] = fleet["LaunchSpecifications"][:1] * 3
    request = spot.build_fleet_request(
        fleet, Config.model_validate(config), AwsNames(Config.model_validate(config)),
        user_data="", image_id=None,
    )  # fmt: skip
    assert len(request["LaunchSpecifications"]) == 48
