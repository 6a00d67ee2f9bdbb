"""The AWS calls of `ds doctor`: each check asks AWS one thing and says what is wrong and
how to fix it. Read-only: nothing here creates, changes or deletes anything.

Every check returns `Finding`s; an AWS error becomes a finding (never an exception), so one
broken piece never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from distributed_something.backends.aws.clients import AwsClients, first_line, unreadable_answers
from distributed_something.backends.aws.fleet import instance_facts
from distributed_something.backends.aws.machine_fit import machine_fit
from distributed_something.config.model import Config
from distributed_something.errors import DSError, InputError
from distributed_something.interfaces.backend import Finding


class _Failed(Exception):
    """An AWS call failed: ``code`` is AWS's error code ('' when there is none)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``fn(**kwargs)``, with every AWS failure raised as `_Failed`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise _Failed(str(error.get("Code", "")), first_line(exc)) from None
    except (BotoCoreError, *unreadable_answers()) as exc:
        raise _Failed("", first_line(exc)) from None
    except InputError as exc:  # a profile the files lack
        raise _Failed("", str(exc)) from None


def _all(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    """Every item under ``key`` on every page of ``operation`` (its paginator follows the
    next-page token), with every AWS failure raised as `_Failed`."""

    def pages(**params: Any) -> list[Any]:
        paginator = client.get_paginator(operation)
        return [item for page in paginator.paginate(**params) for item in page.get(key, [])]

    result: list[Any] = _call(pages, **kwargs)
    return result


def check_identity(clients: AwsClients, region: str) -> list[Finding]:
    """Credentials (sts:GetCallerIdentity) and the region (ec2:DescribeRegions)."""
    try:
        me = _call(clients.sts.get_caller_identity)
    except _Failed as exc:
        return [
            Finding(
                "credentials",
                False,
                f"AWS does not accept the credentials: {exc.message}",
                "run `aws configure` (or `aws sso login`), or set aws.profile / AWS_PROFILE "
                "to a profile that works",
            )
        ]
    found = [Finding("credentials", True, f"account {me.get('Account')} as {me.get('Arn')}")]
    try:
        regions = _call(clients.ec2.describe_regions, RegionNames=[region])["Regions"]
    except _Failed as exc:
        regions = []
        detail = f"region {region!r} is not known to EC2 ({exc.message})"
    else:
        detail = f"region {region!r} is not enabled for this account"
    if any(r.get("RegionName") == region for r in regions):
        found.append(Finding("region", True, region))
    else:
        found.append(
            Finding("region", False, detail, 'set aws.region to a region you use, e.g. "us-east-1"')
        )
    return found


def check_roles(
    clients: AwsClients, roles: Iterable[tuple[str, str]], profiles: Iterable[tuple[str, str]]
) -> list[Finding]:
    """Each ``(role name, fix)`` exists (iam:GetRole); each ``(instance profile name, fix)``
    exists and holds a role (iam:GetInstanceProfile)."""
    found = []
    for name, fix in roles:
        try:
            _call(clients.iam.get_role, RoleName=name)
        except _Failed as exc:
            found.append(Finding(f"role {name}", False, _missing(exc, "role"), fix))
        else:
            found.append(Finding(f"role {name}", True, "exists"))
    for name, fix in profiles:
        check = f"instance profile {name}"
        try:
            profile = _call(clients.iam.get_instance_profile, InstanceProfileName=name)
        except _Failed as exc:
            found.append(Finding(check, False, _missing(exc, "instance profile"), fix))
            continue
        held = [r.get("RoleName", "") for r in profile["InstanceProfile"].get("Roles", [])]
        if held:
            found.append(Finding(check, True, f"holds role {', '.join(held)}"))
        else:
            found.append(
                Finding(
                    check,
                    False,
                    "holds no role: instances get no credentials and never join ECS",
                    fix,
                )
            )
    return found


def _missing(exc: _Failed, what: str) -> str:
    if exc.code == "NoSuchEntity":
        return f"no such {what}"
    return f"cannot be read ({exc.message})"


#: (check name, describe operation, parameter, answer key, what it is, how to list them)
_EC2_KINDS = {
    "subnet": ("describe_subnets", "SubnetIds", "Subnets", "aws ec2 describe-subnets"),
    "security group": (
        "describe_security_groups",
        "GroupIds",
        "SecurityGroups",
        "aws ec2 describe-security-groups",
    ),
    "key pair": ("describe_key_pairs", "KeyNames", "KeyPairs", "aws ec2 describe-key-pairs"),
    "AMI": ("describe_images", "ImageIds", "Images", "aws ec2 describe-images --owners self"),
}


def check_ec2(clients: AwsClients, wanted: Iterable[tuple[str, str, str]]) -> list[Finding]:
    """Each ``(kind, id or name, where it is named)`` exists in the region (ec2:Describe*);
    ``kind`` is one of "subnet", "security group", "key pair", "AMI"."""
    found = []
    for kind, ident, where in dict.fromkeys(wanted):
        operation, parameter, answer, listing = _EC2_KINDS[kind]
        try:
            items = _call(getattr(clients.ec2, operation), **{parameter: [ident]})[answer]
        except _Failed as exc:
            items = []
            why = (
                "does not exist in this region"
                if "NotFound" in exc.code or "Malformed" in exc.code
                else f"cannot be read ({exc.message})"
            )
        else:
            why = "does not exist in this region"
        if items:
            state = items[0].get("State")
            unusable = kind in ("AMI", "subnet") and state not in (None, "available")
            found.append(
                Finding(
                    f"{kind} {ident}",
                    not unusable,
                    f"{state}" if unusable else f"exists ({where})",
                    f"use an available {kind} in {where}" if unusable else "",
                )
            )
        else:
            found.append(
                Finding(
                    f"{kind} {ident}",
                    False,
                    f"{why} (named by {where})",
                    f"correct {where}: `{listing}` lists the ones you have",
                )
            )
    return found


def check_buckets(clients: AwsClients, buckets: Iterable[tuple[str, str]]) -> list[Finding]:
    """Each ``(bucket, config field)`` is reachable with these credentials (s3:HeadBucket)."""
    found = []
    for name, field in dict.fromkeys(buckets):
        try:
            _call(clients.s3.head_bucket, Bucket=name)
        except _Failed as exc:
            if exc.code in ("404", "NoSuchBucket", "NotFound"):
                why, fix = "does not exist", f"create it (`aws s3 mb s3://{name}`) or fix {field}"
            elif exc.code in ("403", "AccessDenied", "Forbidden"):
                why = "exists but these credentials may not use it"
                fix = f"grant s3:ListBucket and object access on {name}, or fix {field}"
            else:
                why, fix = f"cannot be reached ({exc.message})", f"check {field} and the network"
            found.append(Finding(f"bucket {name}", False, f"{why} ({field})", fix))
        else:
            found.append(Finding(f"bucket {name}", True, f"reachable ({field})"))
    return found


def check_cluster(clients: AwsClients, cluster: str, fleet_id: str | None) -> list[Finding]:
    """During a run: the ECS cluster exists and the fleet's running instances registered in
    it (ecs:DescribeClusters, ecs:ListContainerInstances, ec2:DescribeSpotFleetInstances)."""
    check = f"cluster {cluster}"
    try:
        clusters = _call(clients.ecs.describe_clusters, clusters=[cluster])["clusters"]
    except _Failed as exc:
        return [Finding(check, False, f"cannot be read ({exc.message})", "check ecs access")]
    if not clusters or clusters[0].get("status") != "ACTIVE":
        return [
            Finding(
                check,
                False,
                "does not exist (or is not active) while a run is recorded",
                "run `ds setup` again, or `ds cleanup` to end the run",
            )
        ]
    try:
        # At most 100 a page: the paginator reads them all.
        arns = _all(
            clients.ecs, "list_container_instances", "containerInstanceArns", cluster=cluster
        )
    except _Failed as exc:
        return [Finding(check, False, f"cannot list its instances ({exc.message})", "")]
    running = 0
    if fleet_id:
        try:
            active = _all(
                clients.ec2,
                "describe_spot_fleet_instances",
                "ActiveInstances",
                SpotFleetRequestId=fleet_id,
            )
            running = len(active)
        except _Failed:
            running = 0  # a cancelled or unknown fleet: only the registered count is said
    detail = f"{len(arns)} instance(s) registered" + (
        f", {running} running in fleet {fleet_id}" if fleet_id else ""
    )
    if running > len(arns):
        return [
            Finding(
                check,
                False,
                detail + ": instances that do not join the cluster run no tasks",
                "check that the instance profile holds the ECS instance role, that the AMI is "
                "ECS-optimized, and that the subnet reaches ECS (a public IP: aws.assign_ip, "
                "or a NAT gateway); give new instances a few minutes",
            )
        ]
    return [Finding(check, True, detail)]


def check_machines(clients: AwsClients, config: Config, source: str) -> Finding:
    """Whether a worker fits on the machines of ``aws.machine_type``
    (`machine_fit.machine_fit`, ec2:DescribeInstanceTypes)."""
    types = list(config.aws.machine_type)
    check = f"instance types {', '.join(types)}"
    try:
        facts = instance_facts(clients.ec2, types)
        warnings = machine_fit(config, facts, source=source)
    except InputError as exc:
        return Finding(check, False, exc.problem, exc.fix or "")
    except DSError as exc:
        return Finding(check, False, f"cannot be read ({exc})", "")
    if warnings:
        return Finding(check, False, "; ".join(warnings), "see cluster.memory in docs/aws.md")
    sizes = [
        f"{t} {f.memory_mib:,} MiB / {f.vcpus} vCPUs"
        for t, f in facts.items()
        if f.memory_mib is not None and f.vcpus is not None
    ]
    return Finding(check, True, "a worker fits: " + ("; ".join(sizes) or "sizes unknown"))
