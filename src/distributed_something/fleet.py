"""Validate the AWS spot fleet request file the family's users already have.

The file is checked before anything is created (a bad fleet file used to surface only as a
failed or empty spot request, after the queue and service already cost money). It is returned
as given: the AWS backend fills in the image, user data, tags and capacity at start-cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from distributed_something.errors import InputError
from distributed_something.jobs.parse import (
    MAX_JSON_DEPTH,
    check_json_depth,
    deep_json_position,
    json_mistake,
)
from distributed_something.userfiles import read_user_text

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
_PROFILE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:instance-profile/.+$")
_FLEET_TYPES = ("request", "maintain", "instant")
_ALLOCATION_STRATEGIES = (
    "lowestPrice",
    "diversified",
    "capacityOptimized",
    "capacityOptimizedPrioritized",
    "priceCapacityOptimized",
)
_INTERRUPTION_BEHAVIORS = ("hibernate", "stop", "terminate")
# EC2 ids are a prefix and 8 or 17 lower-case hex digits; the family's example fleet files
# ship with placeholders such as "subnet-WWWWWWWW" and "sg-ZZZZZZZZZ" that AWS rejects only
# after the queue and the service exist.
_EC2_ID = re.compile(r"^(?:ami|subnet|sg)-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_ID_FIXES = {
    "subnet": 'set it to the id of a subnet of your VPC, e.g. "subnet-0123456789abcdef0" '
    "(`aws ec2 describe-subnets` lists them)",
    "sg": 'set it to the id of a security group of that VPC, e.g. "sg-0123456789abcdef0" '
    "(`aws ec2 describe-security-groups` lists them)",
    "ami": 'set it to an AMI id, e.g. "ami-0123456789abcdef0" (ds uses the current '
    "ECS-optimized AMI instead unless aws.image_id is set or that lookup fails)",
}
_DEPTH_FIX = "write the spot fleet request as AWS documents it (a few levels deep)"
#: A spot fleet request is a few KB (AWS caps user data at 16 KB); far more is the wrong file.
_MAX_FLEET_CHARACTERS = 1_000_000
#: Where tags of each kind go in a spot fleet request made of launch specifications.
_TAG_PLACE = {
    "spot-fleet-request": (
        "tags for the instances go in each launch specification's TagSpecifications with "
        '"ResourceType": "instance"; here only "spot-fleet-request" (the request\'s own tags)'
    ),
    "instance": (
        'use "instance" (tags of the request itself go in the top-level TagSpecifications '
        'with "ResourceType": "spot-fleet-request"; other resources cannot be tagged here)'
    ),
}
_ID_KINDS = {"subnet": "a subnet id", "sg": "a security group id", "ami": "an AMI id"}
# Key pair names as example files and templates write them ("your_key_file_name").
_KEY_PLACEHOLDER = re.compile(r"(?i)^your[-_ ]|key[-_ ]?file|^<.*>$|^x+$")


def load_fleet(path: Path, *, key_name: str | None = None) -> dict[str, Any]:
    """Read and check a spot fleet request JSON file; return its object unchanged.

    Placeholder ids left from the family's example files (``subnet-WWWWWWWW``,
    ``sg-ZZZZZZZZZ``, an ``ami-`` id that is not hex) are errors. ``key_name`` is the key
    pair the config puts in every launch specification (``aws.ssh_key_name``): when it is
    ``""`` the file's own ``KeyName`` is used, so a placeholder there (``your_key_file_name``)
    is an error too; None (the caller does not say) leaves ``KeyName`` unchecked.

    Required: ``IamFleetRole`` (an IAM role ARN) and ``LaunchSpecifications`` (a non-empty
    list of objects, each with an ``ImageId``). The known optional keys (``KeyName``,
    ``IamInstanceProfile``, ``BlockDeviceMappings``, ``NetworkInterfaces``, ``SubnetId``,
    ``SecurityGroups``, ``InstanceType``, ``TagSpecifications``, ``UserData`` in a launch
    specification; ``ValidFrom``, ``ValidUntil``, ``TargetCapacity``, ``SpotPrice``, ``Type``,
    ``AllocationStrategy``, ``TerminateInstancesWithExpiration`` … at the top) must have the
    types AWS expects; other keys are passed through unchecked. Raises `InputError` naming the
    file and the JSON path of the first bad field (e.g. ``LaunchSpecifications[0].ImageId``),
    or the line and column of a JSON syntax error.
    """
    checker = _Checker(str(path))
    request = checker.obj(checker.parse(path), "", "a JSON object of spot fleet settings")
    checker.require(request, "", "IamFleetRole", "the ARN of your spot fleet role")
    checker.matches(
        request["IamFleetRole"],
        "IamFleetRole",
        _ROLE_ARN,
        "the ARN of your spot fleet role, e.g. "
        "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role",
    )
    checker.require(request, "", "LaunchSpecifications", "a list of launch specifications")
    specs = checker.array(
        request["LaunchSpecifications"],
        "LaunchSpecifications",
        "a non-empty list of launch specifications",
    )
    if not specs:
        checker.fail(
            "LaunchSpecifications",
            "the list is empty",
            "add one launch specification with at least an ImageId",
        )
    for index, spec in enumerate(specs):
        _check_launch_specification(checker, spec, f"LaunchSpecifications[{index}]")
    _check_request_options(checker, request)
    if key_name == "":
        # Last, so that a structural error of the file is reported before it.
        for index, spec in enumerate(specs):
            if "KeyName" in spec:
                _check_key_name(checker, spec["KeyName"], f"LaunchSpecifications[{index}].KeyName")
    checker.placeholders_left()
    return request


def _check_key_name(checker: _Checker, name: str, path: str) -> None:
    if _KEY_PLACEHOLDER.search(name):
        checker.placeholder(
            path,
            f"{json.dumps(name)} is a placeholder, not the name of an EC2 key pair",
            "set it to the name of one of your key pairs (`aws ec2 describe-key-pairs`) "
            "(a ds.toml's aws.ssh_key_name replaces it; a config.py's SSH_KEY_NAME does "
            "not: run.py never read it)",
        )


def _check_request_options(checker: _Checker, request: dict[str, Any]) -> None:
    optional: dict[str, Callable[[Any, str], object]] = {
        "ValidFrom": checker.timestamp,
        "ValidUntil": checker.timestamp,
        "TargetCapacity": lambda v, p: checker.integer(v, p, "a whole number of instances ≥ 0"),
        "OnDemandTargetCapacity": lambda v, p: checker.integer(
            v, p, "a whole number of instances ≥ 0"
        ),
        "SpotPrice": checker.price,
        "Type": lambda v, p: checker.choice(v, p, _FLEET_TYPES),
        "AllocationStrategy": lambda v, p: checker.choice(v, p, _ALLOCATION_STRATEGIES),
        "InstanceInterruptionBehavior": lambda v, p: checker.choice(v, p, _INTERRUPTION_BEHAVIORS),
        "TerminateInstancesWithExpiration": checker.boolean,
        "ReplaceUnhealthyInstances": checker.boolean,
        "ClientToken": lambda v, p: checker.string(v, p, "a string"),
        "InstancePoolsToUseCount": lambda v, p: checker.integer(
            v, p, "a whole number of pools ≥ 1", minimum=1
        ),
        "TagSpecifications": lambda v, p: checker.tag_specifications(v, p, "spot-fleet-request"),
    }
    for key, check in optional.items():
        if key in request:
            check(request[key], key)


def _check_launch_specification(checker: _Checker, value: Any, path: str) -> None:
    spec = checker.obj(value, path, "an object with at least an ImageId")
    checker.require(spec, path, "ImageId", 'an AMI id, e.g. "ami-0123456789abcdef0"')
    image = checker.string(spec["ImageId"], f"{path}.ImageId", "an AMI id")
    if not image.startswith("ami-"):
        checker.fail(
            f"{path}.ImageId",
            f"{json.dumps(image)} is not an AMI id",
            'set it to an AMI id, e.g. "ami-0123456789abcdef0"',
        )
    checker.ec2_id(image, f"{path}.ImageId", "ami")
    strings = {
        "KeyName": "the name of an EC2 key pair",
        "SubnetId": 'a subnet id, e.g. "subnet-0123abcd"',
        "InstanceType": 'an EC2 instance type, e.g. "m5.large"',
        "UserData": "base64 text",
        "SpotPrice": "a price in USD per hour as a string",
    }
    for key, description in strings.items():
        if key in spec:
            checker.string(spec[key], f"{path}.{key}", description)
    if "SubnetId" in spec:
        # EC2 takes several subnets here, separated by commas.
        for subnet in spec["SubnetId"].split(","):
            checker.ec2_id(subnet.strip(), f"{path}.SubnetId", "subnet")
    if "IamInstanceProfile" not in spec:
        # Without it instances start, cost money and never join the ECS cluster.
        checker.fail(
            f"{path}.IamInstanceProfile",
            "it is missing, so instances could not join the ECS cluster",
            'add {"Arn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"} '
            "(the instance profile `ds aws bootstrap` or the ECS console created)",
        )
    _check_instance_profile(checker, spec["IamInstanceProfile"], f"{path}.IamInstanceProfile")
    if "BlockDeviceMappings" in spec:
        where = f"{path}.BlockDeviceMappings"
        for index, item in enumerate(checker.array(spec["BlockDeviceMappings"], where)):
            _check_block_device(checker, item, f"{where}[{index}]")
    if "NetworkInterfaces" in spec:
        where = f"{path}.NetworkInterfaces"
        for index, item in enumerate(checker.array(spec["NetworkInterfaces"], where)):
            _check_network_interface(checker, item, f"{where}[{index}]")
    if "SecurityGroups" in spec:
        where = f"{path}.SecurityGroups"
        for index, item in enumerate(checker.array(spec["SecurityGroups"], where)):
            group = checker.obj(item, f"{where}[{index}]", 'an object like {"GroupId": "sg-…"}')
            if "GroupId" not in group and "GroupName" not in group:
                checker.fail(
                    f"{where}[{index}]",
                    "it has neither GroupId nor GroupName",
                    'write {"GroupId": "sg-0123abcd"}',
                )
            for key in ("GroupId", "GroupName"):
                if key in group:
                    checker.string(group[key], f"{where}[{index}].{key}", "a string")
            if "GroupId" in group:
                checker.ec2_id(group["GroupId"], f"{where}[{index}].GroupId", "sg")
    if "TagSpecifications" in spec:
        checker.tag_specifications(
            spec["TagSpecifications"], f"{path}.TagSpecifications", "instance"
        )


def _check_instance_profile(checker: _Checker, value: Any, path: str) -> None:
    profile = checker.obj(value, path, 'an object like {"Arn": "arn:aws:iam::…"}')
    if "Arn" not in profile and "Name" not in profile:
        checker.fail(
            path,
            "it has neither Arn nor Name",
            'write {"Arn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"}',
        )
    if "Arn" in profile:
        checker.matches(
            profile["Arn"],
            f"{path}.Arn",
            _PROFILE_ARN,
            "an instance profile ARN, e.g. "
            "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole",
        )
    if "Name" in profile:
        checker.string(profile["Name"], f"{path}.Name", "an instance profile name")


def _check_block_device(checker: _Checker, value: Any, path: str) -> None:
    device = checker.obj(value, path, 'an object like {"DeviceName": "/dev/xvda", "Ebs": {…}}')
    checker.require(device, path, "DeviceName", 'a device name, e.g. "/dev/xvda"')
    checker.string(device["DeviceName"], f"{path}.DeviceName", 'a device name, e.g. "/dev/xvda"')
    if "Ebs" not in device:
        return
    ebs = checker.obj(device["Ebs"], f"{path}.Ebs", "an object of EBS settings")
    if "VolumeSize" in ebs:
        checker.integer(ebs["VolumeSize"], f"{path}.Ebs.VolumeSize", "a size in GB ≥ 1", minimum=1)
    if "DeleteOnTermination" in ebs:
        checker.boolean(ebs["DeleteOnTermination"], f"{path}.Ebs.DeleteOnTermination")
    if "Encrypted" in ebs:
        checker.boolean(ebs["Encrypted"], f"{path}.Ebs.Encrypted")
    for key in ("VolumeType", "SnapshotId"):
        if key in ebs:
            checker.string(ebs[key], f"{path}.Ebs.{key}", "a string")


def _check_network_interface(checker: _Checker, value: Any, path: str) -> None:
    interface = checker.obj(value, path, "an object of network interface settings")
    if "DeviceIndex" in interface:
        checker.integer(interface["DeviceIndex"], f"{path}.DeviceIndex", "a whole number ≥ 0")
    if "SubnetId" in interface:
        checker.string(interface["SubnetId"], f"{path}.SubnetId", 'a subnet id, e.g. "subnet-…"')
        # Several too, as the EC2 console's spot requests wrote them (DCP's exampleFleet.json
        # of 2016 has "subnet-WWWWWWWW, subnet-XXXXXXXX, …" here).
        for subnet in interface["SubnetId"].split(","):
            checker.ec2_id(subnet.strip(), f"{path}.SubnetId", "subnet")
    for key in ("DeleteOnTermination", "AssociatePublicIpAddress"):
        if key in interface:
            checker.boolean(interface[key], f"{path}.{key}")
    if "Groups" in interface:
        groups = checker.array(interface["Groups"], f"{path}.Groups", 'a list like ["sg-…"]')
        for index, group in enumerate(groups):
            checker.string(group, f"{path}.Groups[{index}]", 'a security group id, e.g. "sg-…"')
            checker.ec2_id(group, f"{path}.Groups[{index}]", "sg")


class _Checker:
    """Type checks that raise `InputError` with the file and the JSON path of the value."""

    def __init__(self, source: str) -> None:
        self.source = source
        #: placeholders found (path, problem, fix): reported together by `placeholders_left`,
        #: so a template's four of them take one round to fix, not four
        self.placeholders: list[tuple[str, str, str]] = []

    def fail(self, path: str, problem: str, fix: str) -> NoReturn:
        raise InputError(self.source, path or None, problem, fix)

    def placeholder(self, path: str, problem: str, fix: str) -> None:
        """Note a placeholder left from a template (`placeholders_left` reports them)."""
        self.placeholders.append((path, problem, fix))

    def placeholders_left(self) -> None:
        """One `InputError` for every placeholder noted: the first's field, problem and fix,
        naming the others."""
        if not self.placeholders:
            return
        (path, problem, fix), rest = self.placeholders[0], self.placeholders[1:]
        if rest:
            others = ", ".join(p for p, _, _ in rest)
            problem += f" (and {len(rest)} more placeholder(s): {others})"
            fix += "; the same for each of them"
        self.fail(path, problem, fix)

    def parse(self, path: Path) -> Any:
        text = read_user_text(path, missing_fix="check the path to your fleet file")
        if len(text) > _MAX_FLEET_CHARACTERS:
            self.fail(
                "",
                f"is {len(text):,} characters long; a spot fleet request is a few kilobytes",
                "give the spot fleet request file (the family's exampleFleet.json shape)",
            )
        try:
            data = json.loads(text)
        except RecursionError:  # nested deeper than json's C parser goes: say where
            self.fail(
                deep_json_position(text) or "",
                f"objects and lists are nested more than {MAX_JSON_DEPTH} levels deep",
                _DEPTH_FIX,
            )
        except json.JSONDecodeError as error:
            self.fail(
                f"line {error.lineno}, column {error.colno}",
                f"this is not valid JSON ({json_mistake(text, error)})",
                "correct the JSON there (keys and strings in double quotes, no trailing commas)",
            )
        # Deep nesting would exhaust Python's stack later (the request is sent as JSON).
        check_json_depth(data, self.source, fix=_DEPTH_FIX)
        return data

    def _wrong(self, value: Any, path: str, kind: str, description: str) -> NoReturn:
        self.fail(path, f"should be {kind} (got {_show(value)})", f"set it to {description}")

    def require(self, value: dict[str, Any], path: str, key: str, description: str) -> None:
        if key not in value:
            where = f"{path}.{key}" if path else key
            self.fail(where, "this required field is missing", f"add it: {description}")

    def obj(self, value: Any, path: str, description: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self._wrong(value, path, "an object", description)
        return value

    def array(self, value: Any, path: str, description: str = "a list") -> list[Any]:
        if not isinstance(value, list):
            self._wrong(value, path, "a list", description)
        return value

    def string(self, value: Any, path: str, description: str) -> str:
        if not isinstance(value, str):
            self._wrong(value, path, "a string", description)
        if not value.strip():
            self.fail(path, "it is empty", f"set it to {description}, or remove it")
        return value

    def matches(self, value: Any, path: str, pattern: re.Pattern[str], description: str) -> str:
        text = self.string(value, path, description)
        if not pattern.fullmatch(text):
            # The family's example files ship with placeholders like XXXXXXXXXXXX.
            self.fail(path, f"{json.dumps(text)} is not a valid ARN", f"set it to {description}")
        return text

    def ec2_id(self, value: str, path: str, kind: str) -> None:
        """``value`` (a string) must be an EC2 id of ``kind`` ("ami", "subnet" or "sg"):
        the prefix and 8 or 17 lower-case hex digits (else noted: `placeholders_left`)."""
        if not (value.startswith(f"{kind}-") and _EC2_ID.fullmatch(value)):
            self.placeholder(
                path,
                f"{json.dumps(value)} is a placeholder, not {_ID_KINDS[kind]}",
                _ID_FIXES[kind],
            )

    def integer(self, value: Any, path: str, description: str, *, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self._wrong(value, path, "a whole number", description)
        if value < minimum:
            self.fail(path, f"{value} is below {minimum}", f"set it to {description}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self._wrong(value, path, "true or false", "true or false (no quotes)")
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        options = ", ".join(f'"{c}"' for c in choices)
        text = self.string(value, path, f"one of {options}")
        if text not in choices:
            self.fail(
                path, f"{json.dumps(text)} is not a known value", f"set it to one of {options}"
            )
        return text

    def price(self, value: Any, path: str) -> None:
        description = 'a price in USD per hour, e.g. "0.10"'
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._wrong(value, path, "a price", description)
        try:
            amount = float(value)
        except ValueError:
            self._wrong(value, path, "a price", description)
        if not amount > 0:
            self.fail(path, f"{_show(value)} is not above 0", f"set it to {description}")

    def timestamp(self, value: Any, path: str) -> None:
        description = 'an ISO 8601 UTC time, e.g. "2024-05-01T12:00:00Z"'
        text = self.string(value, path, description)
        try:
            datetime.fromisoformat(text)
        except ValueError:
            self.fail(path, f"{json.dumps(text)} is not a valid time", f"set it to {description}")

    def tag_specifications(self, value: Any, path: str, resource_type: str) -> None:
        """Tag specifications whose ``ResourceType`` (when given) is ``resource_type``: EC2
        takes only "spot-fleet-request" at the top of a spot fleet request ("otherwise the
        Spot Fleet request fails", SpotFleetRequestConfigData) and only "instance" in a
        launch specification (SpotFleetTagSpecification)."""
        for index, item in enumerate(self.array(value, path, "a list of tag specifications")):
            where = f"{path}[{index}]"
            spec = self.obj(item, where, 'an object like {"ResourceType": …, "Tags": […]}')
            if "ResourceType" in spec:
                kind = self.string(
                    spec["ResourceType"], f"{where}.ResourceType", f'"{resource_type}"'
                )
                if kind != resource_type:
                    self.fail(
                        f"{where}.ResourceType",
                        f"{json.dumps(kind)} is refused here by EC2, which takes only "
                        f'"{resource_type}" in these tag specifications',
                        _TAG_PLACE[resource_type],
                    )
            tags = self.array(spec.get("Tags", []), f"{where}.Tags", "a list of Key/Value tags")
            for number, tag in enumerate(tags):
                tag_path = f"{where}.Tags[{number}]"
                entry = self.obj(tag, tag_path, 'an object like {"Key": "k", "Value": "v"}')
                self.require(entry, tag_path, "Key", "the tag's key")
                self.string(entry["Key"], f"{tag_path}.Key", "the tag's key")
                if "Value" in entry and not isinstance(entry["Value"], str):
                    self._wrong(entry["Value"], f"{tag_path}.Value", "a string", "the tag's value")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
