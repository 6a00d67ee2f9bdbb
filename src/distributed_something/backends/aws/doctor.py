"""`ds doctor` on AWS: is this AWS account ready to run the project? Checks, never changes.

Credentials and region; the roles and instance profile `ds aws bootstrap` creates (or those
the fleet file names); the fleet file's subnets, security groups, key pair and AMI; the
buckets; and, while a run is recorded, that the fleet's instances joined the ECS cluster.
Each finding says what is wrong and how to fix it (`Finding`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed_something.backends.aws import doctor_checks as checks
from distributed_something.backends.aws.bootstrap import BootstrapNames
from distributed_something.backends.aws.clients import AwsClients, settings_from
from distributed_something.backends.aws.name_limits import check_bootstrap_prefix
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.fleet import load_fleet
from distributed_something.interfaces.backend import Finding
from distributed_something.project import Project
from distributed_something.state import load_state


def doctor(
    project: Project, fleet_path: Path | None = None, prefix: str | None = None
) -> list[Finding]:
    """Every finding about the project's AWS account, in the order they were checked.

    Raises `InputError` when the fleet file is not a valid spot fleet request
    (`fleet.load_fleet`). When the credentials do not work, that is the only finding (every
    other check would fail the same way).
    """
    config = project.config
    fleet = load_fleet(fleet_path, key_name=config.aws.ssh_key_name) if fleet_path else None
    clients = AwsClients(settings_from(config.aws.region, config.aws.profile))
    found = checks.check_identity(clients, config.aws.region)
    if not found[0].ok:
        return found
    chosen = prefix if prefix is not None else config.app_name
    check_bootstrap_prefix(chosen, default=prefix is None)
    names = BootstrapNames(chosen)
    bootstrap_fix = "run `ds aws bootstrap`" + (f" --prefix {chosen}" if prefix else "")
    roles: list[tuple[str, str]] = []
    profiles: list[tuple[str, str]] = []
    if fleet is not None:
        where = str(fleet_path)
        role = str(fleet.get("IamFleetRole", "")).rsplit("/", 1)[-1]
        roles.append((role, f"create it or correct IamFleetRole in {where}"))
        for spec_profile in _profiles(fleet):
            profiles.append((spec_profile, f"create it or correct IamInstanceProfile in {where}"))
    else:
        roles.append((names.spot_fleet_role, bootstrap_fix))
        profiles.append((names.instance_profile, bootstrap_fix))
    roles.append((names.instance_role, bootstrap_fix))
    if config.aws.auto_monitor:
        roles.append((names.monitor_role, bootstrap_fix))
    found += checks.check_roles(clients, dict.fromkeys(roles), dict.fromkeys(profiles))
    wanted = list(_ec2_resources(fleet, str(fleet_path), config.aws.ssh_key_name))
    if config.aws.image_id:
        wanted.append(("AMI", config.aws.image_id, "aws.image_id"))
    found += checks.check_ec2(clients, wanted)
    found.append(checks.check_machines(clients, config, str(project.config_path)))
    storage = config.storage
    buckets = [
        (storage.bucket, "storage.bucket"),
        (storage.source_bucket, "storage.source_bucket"),
        (storage.workspace_bucket, "storage.workspace_bucket"),
        (storage.destination_bucket, "storage.destination_bucket"),
    ]
    seen: set[str] = set()
    unique = []
    for name, field in buckets:
        if name and name not in seen:
            seen.add(name)
            unique.append((name, field))
    if not unique:
        found.append(
            Finding("bucket", False, "no bucket is set", 'set storage.bucket = "your-bucket"')
        )
    found += checks.check_buckets(clients, unique)
    state = load_state(project)
    resources = AwsResources.of(state.resources) if state is not None else None
    if state is not None and state.active and resources is not None and resources.cluster:
        found += checks.check_cluster(clients, resources.cluster, resources.fleet_request_id)
    else:
        cluster = resources.cluster if resources and resources.cluster else AwsNames(config).cluster
        found.append(Finding(f"cluster {cluster}", True, "no run in progress"))
    return found


def _profiles(fleet: dict[str, Any]) -> Iterator[str]:
    """The instance profile names the fleet's launch specifications give (by ARN or name)."""
    for spec in fleet.get("LaunchSpecifications", []):
        profile = spec.get("IamInstanceProfile") or {}
        name = profile.get("Name") or str(profile.get("Arn", "")).rsplit("/", 1)[-1]
        if name:
            yield name


def _ec2_resources(
    fleet: dict[str, Any] | None, where: str, key_name: str
) -> Iterator[tuple[str, str, str]]:
    """(kind, id, where it is named) of the fleet file's subnets, security groups, key pair
    and AMIs (the config's ``aws.ssh_key_name`` replaces the file's ``KeyName``)."""
    if key_name:
        yield ("key pair", key_name, "aws.ssh_key_name")
    if fleet is None:
        return
    for index, spec in enumerate(fleet.get("LaunchSpecifications", [])):
        at = f"{where}: LaunchSpecifications[{index}]"
        for subnet in str(spec.get("SubnetId") or "").split(","):
            if subnet.strip():
                yield ("subnet", subnet.strip(), f"{at}.SubnetId")
        for group in spec.get("SecurityGroups") or []:
            if group.get("GroupId"):
                yield ("security group", str(group["GroupId"]), f"{at}.SecurityGroups")
        for n, interface in enumerate(spec.get("NetworkInterfaces") or []):
            for subnet in str(interface.get("SubnetId") or "").split(","):
                if subnet.strip():
                    yield ("subnet", subnet.strip(), f"{at}.NetworkInterfaces[{n}]")
            for group in interface.get("Groups") or []:
                yield ("security group", str(group), f"{at}.NetworkInterfaces[{n}].Groups")
        if spec.get("KeyName") and not key_name:
            yield ("key pair", str(spec["KeyName"]), f"{at}.KeyName")
        if spec.get("ImageId"):
            yield ("AMI", str(spec["ImageId"]), f"{at}.ImageId")
