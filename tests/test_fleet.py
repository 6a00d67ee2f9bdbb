"""Checking the family's spot fleet request files before anything is created."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from distributed_something.errors import InputError
from distributed_something.fleet import load_fleet
from testkit import dcp_fleet

# Distributed-CellProfiler's files/exampleFleet_us-east-1.json with its placeholders filled in.
DCP_FLEET: dict[str, Any] = dcp_fleet()


def write(tmp_path: Path, data: Any, name: str = "fleet.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2), "utf-8")
    return path


def fleet_error(tmp_path: Path, data: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        load_fleet(write(tmp_path, data))
    return caught.value


def changed(edit: Any) -> dict[str, Any]:
    data = copy.deepcopy(DCP_FLEET)
    edit(data)
    return data


def spec0(data: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = data["LaunchSpecifications"][0]
    return spec


def test_family_fleet_file_is_returned_as_given(tmp_path: Path) -> None:
    assert load_fleet(write(tmp_path, DCP_FLEET)) == DCP_FLEET


def test_full_launch_specification_and_options(tmp_path: Path) -> None:
    data = changed(
        lambda d: (
            d.update(
                ValidFrom="2024-05-01T12:00:00Z",
                ValidUntil="2024-05-02T12:00:00Z",
                TargetCapacity=2,
                SpotPrice="0.10",
                InstanceInterruptionBehavior="terminate",
                ReplaceUnhealthyInstances=False,
                SomethingNew={"kept": True},
            ),
            spec0(d).update(
                SubnetId="subnet-0123abcd, subnet-0123456789abcdef0",
                SecurityGroups=[{"GroupId": "sg-0123abcd"}, {"GroupName": "default"}],
                InstanceType="m5.large",
                UserData="IyEvYmluL2Jhc2g=",
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "x"}]}
                ],
                Monitoring={"Enabled": False},
            ),
            d["LaunchSpecifications"].append(
                {"ImageId": "ami-0fedcba9", "IamInstanceProfile": {"Name": "ecsInstanceRole"}}
            ),
        )
    )
    assert load_fleet(write(tmp_path, data)) == data


def test_numeric_spot_price_is_accepted(tmp_path: Path) -> None:
    data = changed(lambda d: d.update(SpotPrice=0.25))
    assert load_fleet(write(tmp_path, data))["SpotPrice"] == 0.25


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_fleet(tmp_path / "fleet.json")
    assert "does not exist" in caught.value.problem


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    error = fleet_error(tmp_path, '{\n  "IamFleetRole": "arn",\n  "Type": maintain\n}\n')
    assert error.field == "line 3, column 11"
    assert "not valid JSON" in error.problem


def test_a_missing_comma_names_the_line_that_lacks_it(tmp_path: Path) -> None:
    error = fleet_error(tmp_path, '{\n  "IamFleetRole": "arn"\n  "Type": "maintain"\n}\n')
    assert error.field == "line 3, column 3"
    assert "(line 2 lacks a comma at its end)" in error.problem


def test_trailing_comma_is_invalid_json(tmp_path: Path) -> None:
    error = fleet_error(tmp_path, '{"Type": "maintain",}')
    assert error.field is not None and error.field.startswith("line 1, column ")
    assert "JSON allows no trailing comma" in error.problem


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    error = fleet_error(tmp_path, "[1, 2]")
    assert error.field is None
    assert "should be an object" in error.problem


def test_message_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, changed(lambda d: spec0(d).pop("ImageId")))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_fleet(Path("fleet.json"))
    assert str(caught.value).startswith(
        "fleet.json: LaunchSpecifications[0].ImageId: this required field is missing. Fix: "
    )


@pytest.mark.parametrize(
    ("edit", "field", "needle"),
    [
        (lambda d: d.pop("IamFleetRole"), "IamFleetRole", "missing"),
        (lambda d: d.update(IamFleetRole=5), "IamFleetRole", "should be a string"),
        (
            lambda d: d.update(IamFleetRole="arn:aws:iam::XXXXXXXXXXXXX:role/fleet"),
            "IamFleetRole",
            "is not a valid ARN",
        ),
        (lambda d: d.update(IamFleetRole=""), "IamFleetRole", "it is empty"),
        (lambda d: d.pop("LaunchSpecifications"), "LaunchSpecifications", "missing"),
        (lambda d: d.update(LaunchSpecifications={}), "LaunchSpecifications", "a list"),
        (lambda d: d.update(LaunchSpecifications=[]), "LaunchSpecifications", "empty"),
        (lambda d: d.update(LaunchSpecifications=["x"]), "LaunchSpecifications[0]", "an object"),
        (
            lambda d: d["LaunchSpecifications"].append({"KeyName": "k"}),
            "LaunchSpecifications[1].ImageId",
            "missing",
        ),
        (lambda d: spec0(d).update(ImageId=123), "LaunchSpecifications[0].ImageId", "a string"),
        (lambda d: spec0(d).update(ImageId="img-1"), "LaunchSpecifications[0].ImageId", "AMI"),
        (lambda d: spec0(d).update(KeyName=1), "LaunchSpecifications[0].KeyName", "a string"),
        (
            lambda d: spec0(d).update(InstanceType=["m5"]),
            "LaunchSpecifications[0].InstanceType",
            "a string",
        ),
        (lambda d: spec0(d).update(SubnetId=None), "LaunchSpecifications[0].SubnetId", "string"),
        (lambda d: spec0(d).update(UserData=7), "LaunchSpecifications[0].UserData", "string"),
        (
            lambda d: spec0(d).update(IamInstanceProfile="role"),
            "LaunchSpecifications[0].IamInstanceProfile",
            "an object",
        ),
        (
            lambda d: spec0(d).update(IamInstanceProfile={}),
            "LaunchSpecifications[0].IamInstanceProfile",
            "neither Arn nor Name",
        ),
        (
            lambda d: spec0(d).update(IamInstanceProfile={"Arn": "arn:aws:iam::XXXX:x/y"}),
            "LaunchSpecifications[0].IamInstanceProfile.Arn",
            "not a valid ARN",
        ),
        (
            lambda d: spec0(d).update(IamInstanceProfile={"Name": 3}),
            "LaunchSpecifications[0].IamInstanceProfile.Name",
            "a string",
        ),
        (
            lambda d: spec0(d).update(BlockDeviceMappings={"DeviceName": "x"}),
            "LaunchSpecifications[0].BlockDeviceMappings",
            "a list",
        ),
        (
            lambda d: spec0(d)["BlockDeviceMappings"][1].pop("DeviceName"),
            "LaunchSpecifications[0].BlockDeviceMappings[1].DeviceName",
            "missing",
        ),
        (
            lambda d: spec0(d)["BlockDeviceMappings"][0]["Ebs"].update(VolumeSize="8"),
            "LaunchSpecifications[0].BlockDeviceMappings[0].Ebs.VolumeSize",
            "a whole number",
        ),
        (
            lambda d: spec0(d)["BlockDeviceMappings"][0]["Ebs"].update(VolumeSize=0),
            "LaunchSpecifications[0].BlockDeviceMappings[0].Ebs.VolumeSize",
            "below 1",
        ),
        (
            lambda d: spec0(d)["BlockDeviceMappings"][0]["Ebs"].update(DeleteOnTermination="true"),
            "LaunchSpecifications[0].BlockDeviceMappings[0].Ebs.DeleteOnTermination",
            "true or false",
        ),
        (
            lambda d: spec0(d)["BlockDeviceMappings"][0].update(Ebs=[]),
            "LaunchSpecifications[0].BlockDeviceMappings[0].Ebs",
            "an object",
        ),
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(Groups="sg-1"),
            "LaunchSpecifications[0].NetworkInterfaces[0].Groups",
            "a list",
        ),
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(Groups=[1]),
            "LaunchSpecifications[0].NetworkInterfaces[0].Groups[0]",
            "a string",
        ),
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(DeviceIndex=True),
            "LaunchSpecifications[0].NetworkInterfaces[0].DeviceIndex",
            "a whole number",
        ),
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(AssociatePublicIpAddress="yes"),
            "LaunchSpecifications[0].NetworkInterfaces[0].AssociatePublicIpAddress",
            "true or false",
        ),
        (
            lambda d: spec0(d).update(SecurityGroups=[{"VpcId": "v"}]),
            "LaunchSpecifications[0].SecurityGroups[0]",
            "neither GroupId nor GroupName",
        ),
        (
            lambda d: spec0(d).update(SecurityGroups=["sg-1"]),
            "LaunchSpecifications[0].SecurityGroups[0]",
            "an object",
        ),
        (
            lambda d: spec0(d).update(TagSpecifications=[{"Tags": [{"Key": "a", "Value": 1}]}]),
            "LaunchSpecifications[0].TagSpecifications[0].Tags[0].Value",
            "a string",
        ),
        (
            lambda d: spec0(d).update(TagSpecifications=[{"Tags": [{"Value": "v"}]}]),
            "LaunchSpecifications[0].TagSpecifications[0].Tags[0].Key",
            "missing",
        ),
        (lambda d: d.update(TargetCapacity=-1), "TargetCapacity", "below 0"),
        (lambda d: d.update(TargetCapacity=True), "TargetCapacity", "a whole number"),
        (lambda d: d.update(TargetCapacity=2.5), "TargetCapacity", "a whole number"),
        (lambda d: d.update(SpotPrice="cheap"), "SpotPrice", "a price"),
        (lambda d: d.update(SpotPrice="0"), "SpotPrice", "not above 0"),
        (lambda d: d.update(SpotPrice=True), "SpotPrice", "a price"),
        (lambda d: d.update(Type="sometimes"), "Type", "not a known value"),
        (lambda d: d.update(AllocationStrategy="lowestprice"), "AllocationStrategy", "known"),
        (lambda d: d.update(TerminateInstancesWithExpiration="true"), "Terminate", "true or"),
        (lambda d: d.update(ValidUntil="tomorrow"), "ValidUntil", "not a valid time"),
        (lambda d: d.update(ValidFrom=1714560000), "ValidFrom", "a string"),
        (lambda d: d.update(TagSpecifications={}), "TagSpecifications", "a list"),
    ],
)
def test_invalid_fields(tmp_path: Path, edit: Any, field: str, needle: str) -> None:
    error = fleet_error(tmp_path, changed(edit))
    assert error.field is not None and error.field.startswith(field)
    assert needle in error.problem
    assert error.source == str(tmp_path / "fleet.json")
    assert error.fix


def test_wrong_type_shows_the_value_and_fix(tmp_path: Path) -> None:
    error = fleet_error(tmp_path, changed(lambda d: d.update(TargetCapacity="two")))
    assert error.problem == 'should be a whole number (got "two")'
    assert error.fix == "set it to a whole number of instances ≥ 0"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_bytes(b'{"Type": "\xff"}')
    with pytest.raises(InputError) as caught:
        load_fleet(path)
    assert "UTF-8" in caught.value.problem


# --- the family template's placeholders ----------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "fix"),
    [
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(SubnetId="subnet-WWWWWWWW"),
            "LaunchSpecifications[0].NetworkInterfaces[0].SubnetId",
            "describe-subnets",
        ),
        (
            lambda d: spec0(d)["NetworkInterfaces"][0].update(Groups=["sg-ZZZZZZZZZ"]),
            "LaunchSpecifications[0].NetworkInterfaces[0].Groups[0]",
            "describe-security-groups",
        ),
        (
            lambda d: spec0(d).update(ImageId="ami-XXXXXXXX"),
            "LaunchSpecifications[0].ImageId",
            "ami-0123456789abcdef0",
        ),
        (
            lambda d: spec0(d).update(SubnetId="subnet-0123abcd,subnet-xxxx"),
            "LaunchSpecifications[0].SubnetId",
            "describe-subnets",
        ),
        (
            lambda d: spec0(d).update(SecurityGroups=[{"GroupId": "sg-your-group"}]),
            "LaunchSpecifications[0].SecurityGroups[0].GroupId",
            "describe-security-groups",
        ),
    ],
)
def test_placeholder_ids_are_errors(tmp_path: Path, edit: Any, field: str, fix: str) -> None:
    error = fleet_error(tmp_path, changed(edit))
    assert error.field == field
    assert "is a placeholder" in error.problem
    assert fix in error.fix
    assert error.source == str(tmp_path / "fleet.json")


def test_every_placeholder_of_a_template_is_named_in_one_error(tmp_path: Path) -> None:
    """The family's example file has four placeholders: one round of fixes, not four."""
    data = changed(
        lambda d: (
            spec0(d).update(ImageId="ami-XXXXXXXX", KeyName="your_key_file_name"),
            spec0(d)["NetworkInterfaces"][0].update(
                SubnetId="subnet-WWWWWWWW", Groups=["sg-ZZZZZZZZZ"]
            ),
        )
    )
    with pytest.raises(InputError) as caught:
        load_fleet(write(tmp_path, data), key_name="")
    error = caught.value
    assert error.field == "LaunchSpecifications[0].ImageId"  # the first, with its own fix
    assert "(and 3 more placeholder(s): " in error.problem
    for field in (
        "LaunchSpecifications[0].NetworkInterfaces[0].SubnetId",
        "LaunchSpecifications[0].NetworkInterfaces[0].Groups[0]",
        "LaunchSpecifications[0].KeyName",
    ):
        assert field in error.problem
    assert "\n" not in str(error)


def test_real_ids_of_both_lengths_pass(tmp_path: Path) -> None:
    data = changed(
        lambda d: (
            spec0(d).update(ImageId="ami-0123456789abcdef0"),
            spec0(d)["NetworkInterfaces"][0].update(
                SubnetId="subnet-0123456789abcdef0", Groups=["sg-0a1b2c3d", "sg-0123456789abcdef0"]
            ),
        )
    )
    assert load_fleet(write(tmp_path, data)) == data


def test_a_network_interface_may_list_several_subnets_as_dcps_2016_file_did(
    tmp_path: Path,
) -> None:
    """DCP's exampleFleet.json of Oct 2016 - Feb 2017 (as the EC2 console wrote spot
    requests) lists "subnet-WWWWWWWW, subnet-XXXXXXXX, …" in its network interface: filled in,
    it was refused as "a placeholder"."""
    listed = "subnet-0a1b2c3d, subnet-1a2b3c4d,subnet-0123456789abcdef0"
    data = changed(lambda d: spec0(d)["NetworkInterfaces"][0].update(SubnetId=listed))
    assert load_fleet(write(tmp_path, data)) == data
    left = changed(
        lambda d: spec0(d)["NetworkInterfaces"][0].update(SubnetId="subnet-0a1b2c3d, subnet-XX")
    )
    error = fleet_error(tmp_path, left)
    assert error.field == "LaunchSpecifications[0].NetworkInterfaces[0].SubnetId"
    assert '"subnet-XX" is a placeholder' in error.problem


def test_a_placeholder_key_name_matters_only_when_the_config_does_not_replace_it(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, DCP_FLEET)  # KeyName "your_key_file_name", as the template has it
    assert load_fleet(path) == DCP_FLEET  # the caller does not say: not checked
    assert load_fleet(path, key_name="lab-key") == DCP_FLEET  # aws.ssh_key_name replaces it
    with pytest.raises(InputError) as caught:
        load_fleet(path, key_name="")
    assert caught.value.field == "LaunchSpecifications[0].KeyName"
    assert '"your_key_file_name" is a placeholder' in caught.value.problem
    assert "aws.ssh_key_name replaces it" in caught.value.fix
    assert "SSH_KEY_NAME does not: run.py never read it" in caught.value.fix
    real = write(tmp_path, changed(lambda d: spec0(d).update(KeyName="lab-key")), "real.json")
    assert load_fleet(real, key_name="")["LaunchSpecifications"][0]["KeyName"] == "lab-key"


@pytest.mark.parametrize(
    ("edit", "field", "wanted"),
    [
        # Instance tags at the top: "The value for ResourceType must be spot-fleet-request,
        # otherwise the Spot Fleet request fails" (SpotFleetRequestConfigData).
        (
            lambda d: d.update(
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "k"}]}]
            ),
            "TagSpecifications[0].ResourceType",
            '"instance"',
        ),
        # "Currently, the only resource type that is supported is instance"
        # (SpotFleetTagSpecification).
        (
            lambda d: spec0(d).update(
                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "k"}]}]
            ),
            "LaunchSpecifications[0].TagSpecifications[0].ResourceType",
            '"volume"',
        ),
    ],
)
def test_tag_specifications_of_a_kind_ec2_refuses_there_are_errors(
    tmp_path: Path, edit: Any, field: str, wanted: str
) -> None:
    error = fleet_error(tmp_path, changed(edit))
    assert error.field == field
    assert wanted in error.problem and "refused" in error.problem
    assert "ResourceType" in error.fix


def test_tag_specifications_of_the_kinds_ec2_takes_pass(tmp_path: Path) -> None:
    data = changed(
        lambda d: (
            d.update(
                TagSpecifications=[
                    {"ResourceType": "spot-fleet-request", "Tags": [{"Key": "a", "Value": "b"}]}
                ]
            ),
            spec0(d).update(
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "c"}]}]
            ),
        )
    )
    assert load_fleet(write(tmp_path, data)) == data
