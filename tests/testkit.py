"""Test data, fakes and helpers shared by several test files: the family's fleet file, a
fake clock, the no-op compute and provisioner, and `wait_for` (polling for real state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from distributed_something.interfaces.compute import ComputeStatus

#: Seconds before a wait for real state gives up (never reached when things work).
WAIT = 20.0


def wait_for(condition: Callable[[], object], timeout: float = WAIT) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass (a generous upper
    bound); the result is asserted by the caller."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dcp_fleet(*, valid_until: str | None = None) -> dict[str, Any]:
    """A fresh copy of Distributed-CellProfiler's files/exampleFleet_us-east-1.json with its
    placeholders filled in; with ``valid_until``, the file also carries that ``ValidUntil``
    (as copies of the family's file do, long expired). Callers may change the copy freely."""
    validity = {"ValidUntil": valid_until} if valid_until is not None else {}
    return {
        "IamFleetRole": "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
        "AllocationStrategy": "lowestPrice",
        "TerminateInstancesWithExpiration": True,
        **validity,
        "LaunchSpecifications": [
            {
                "ImageId": "ami-fad25980",
                "KeyName": "your_key_file_name",
                "IamInstanceProfile": {
                    "Arn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"
                },
                "BlockDeviceMappings": [
                    {
                        "DeviceName": "/dev/xvda",
                        "Ebs": {
                            "DeleteOnTermination": True,
                            "VolumeType": "gp2",
                            "VolumeSize": 8,
                            "SnapshotId": "snap-04007a196c0f3f398",
                        },
                    },
                    {
                        "DeviceName": "/dev/xvdcz",
                        "Ebs": {"DeleteOnTermination": True, "VolumeType": "gp2"},
                    },
                ],
                "NetworkInterfaces": [
                    {
                        "DeviceIndex": 0,
                        "SubnetId": "subnet-0123abcd",
                        "DeleteOnTermination": True,
                        "AssociatePublicIpAddress": True,
                        "Groups": ["sg-0123abcd"],
                    }
                ],
            }
        ],
        "Type": "maintain",
    }


#: The ValidUntil of the family file as users' copies carry it: long expired.
FAMILY_VALID_UNTIL = "2019-01-01T00:00:00Z"


def moto_family_fleet(ec2: Any) -> dict[str, Any]:
    """The family's fleet file (expired ValidUntil included) pointed at moto's default
    subnet and security group, read through the EC2 client ``ec2``."""
    data = dcp_fleet(valid_until=FAMILY_VALID_UNTIL)
    interface = data["LaunchSpecifications"][0]["NetworkInterfaces"][0]
    interface["SubnetId"] = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    interface["Groups"] = [ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]]
    return data


class FakeClock:
    """A clock that moves only when something sleeps: call it for the time, pass ``sleep``
    as the sleep function; ``sleeps`` lists every sleep asked for, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        # Not zero by default: code that takes 0 for "no time yet" would pass unnoticed.
        self.start = start
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move time on without recording a sleep."""
        self.now += seconds


class NoCompute:
    """A `Compute` with no workers, for a worker driven by hand."""

    def start(self, n: int) -> None: ...
    def scale(self, n: int) -> None: ...
    def status(self) -> ComputeStatus:
        return ComputeStatus(0, 0)

    def scale_machines(self, n: int) -> None: ...
    def housekeeping(self) -> None: ...
    def stop(self) -> None: ...
    def cleanup(self) -> None: ...


class NoProvisioner:
    """A `Provisioner` that creates nothing."""

    def setup(self, state: Any, save: Any) -> None: ...
    def start(self, state: Any, fleet: Any, workers: int, save: Any) -> None: ...
    def teardown(self, state: Any, save: Any) -> None: ...
