"""The spot fleet `ds start-cluster` requests: user data, request, capacity wait, monitor file.

The user's fleet file (checked by `distributed_something.fleet.load_fleet`) supplies the
account-specific parts — fleet role, instance profile, subnets, security groups, key pair.
The run config supplies everything that changes per run — instance types, price, capacity,
disk size, public IP choice — and we supply the image (a current ECS-optimized Amazon Linux
2023 AMI, unless the caller keeps the file's) and the user data that joins the cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distributed_something.backends.aws.clients import unreadable_answers
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.tagging import create_tagged
from distributed_something.config.model import ECS_AMI_ROOT_GIB, ECS_CLUSTER_PATTERN, Config
from distributed_something.errors import BackendError, InputError
from distributed_something.platforms import guess_architecture

#: The SSM public parameter holding the recommended ECS-optimized Amazon Linux 2023 AMI.
ECS_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/{variant}recommended/image_id"
#: AWS's recommended spot strategy (AWS defaults to lowestPrice, moto requires one).
#: capacityOptimizedPrioritized is not used: AWS accepts it only with launch templates.
DEFAULT_ALLOCATION_STRATEGY = "priceCapacityOptimized"
#: The root device of the Amazon Linux 2023 ECS AMIs (Docker's storage lives on it).
ROOT_DEVICE = "/dev/xvda"
#: Request states after which the fleet will never start a machine.
DEAD_STATES = frozenset(
    {"failed", "cancelled", "cancelled_running", "cancelled_terminating", "missing"}
)

_AGENT_NAME = re.compile(r"^ECS_[A-Z0-9_]+$")
_CLUSTER_NAME = re.compile(ECS_CLUSTER_PATTERN)
# Error events that say "no capacity (yet)" rather than "this request cannot work".
_CAPACITY_EVENT = re.compile(r"capacity", re.IGNORECASE)


# --- instance bootstrap -------------------------------------------------------------------


def ecs_user_data(cluster: str, *, extra_agent_config: dict[str, str] | None = None) -> str:
    """Base64 user data for the ECS-optimized Amazon Linux 2023 AMI joining ``cluster``.

    A shell script that appends to ``/etc/ecs/ecs.config`` before the ECS agent starts:
    the cluster, spot-instance draining (an interruption notice stops the tasks, whose
    workers hand their tasks back), container metadata, the json-file and awslogs log
    drivers, image pulls that prefer the cached image, and task roles (bridge networking).
    ``extra_agent_config`` adds
    agent settings (names ``ECS_…``). Nothing is installed, mounted or run privileged.
    Raises `ValueError` for a cluster name or setting that cannot be written safely.
    """
    if not _CLUSTER_NAME.fullmatch(cluster):
        raise ValueError(f"{cluster!r} is not a valid ECS cluster name")
    settings = {
        "ECS_CLUSTER": cluster,
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING": "true",
        "ECS_ENABLE_CONTAINER_METADATA": "true",
        "ECS_AVAILABLE_LOGGING_DRIVERS": '["json-file","awslogs"]',
        "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
        # The task role in bridge mode: on by default on the ECS-optimized AMIs, but not in
        # the agent's own defaults; an AMI of the fleet file's would leave the containers
        # the instance role's credentials instead, silently.
        "ECS_ENABLE_TASK_IAM_ROLE": "true",
    }
    for name, value in (extra_agent_config or {}).items():
        if not _AGENT_NAME.fullmatch(name) or "\n" in value or "\r" in value:
            raise ValueError(f"{name}={value!r} is not a valid ECS agent setting")
        settings[name] = value
    lines = "\n".join(f"{name}={value}" for name, value in settings.items())
    # A quoted here-document: the shell expands nothing inside it.
    script = (
        "#!/bin/bash\n"
        "# ECS agent settings written by distributed-something (ds start-cluster)\n"
        "set -euo pipefail\n"
        "mkdir -p /etc/ecs\n"
        "cat >> /etc/ecs/ecs.config <<'DS_ECS_CONFIG'\n"
        f"{lines}\n"
        "DS_ECS_CONFIG\n"
    )
    return base64.b64encode(script.encode()).decode("ascii")


def current_ecs_ami(ssm: Any, *, variant: str = "") -> str | None:
    """The recommended ECS-optimized Amazon Linux 2023 AMI of the client's region, or None.

    Read from the SSM public parameter ``ECS_AMI_PARAMETER``; ``variant`` is "" (x86_64),
    "arm64" (Graviton instance types) or "gpu". None when the parameter does not exist in
    the region or the caller may not read it (the fleet file's ImageId is then used).
    Raises `BackendError` for other failures.
    """
    from botocore.exceptions import ClientError

    name = ECS_AMI_PARAMETER.format(variant=f"{variant}/" if variant else "")
    with aws_call(f"read the current ECS AMI from SSM parameter {name}"):
        try:
            value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as error:
            code = error_code(error)
            if code in ("ParameterNotFound", "AccessDeniedException", "AccessDenied"):
                return None
            raise
    return str(value) if value else None


# --- the request --------------------------------------------------------------------------


def build_fleet_request(
    fleet: dict[str, Any],
    config: Config,
    names: AwsNames,
    *,
    user_data: str,
    image_id: str | None,
    client_token: str | None = None,
    type_images: Mapping[str, str | None] | None = None,
    root_size: int | None = None,
) -> dict[str, Any]:
    """The ``SpotFleetRequestConfig`` for a run, from the user's fleet file (not modified).

    From the config: ``TargetCapacity`` = machines, ``SpotPrice`` = machine price (for every
    instance type: per-specification prices are removed), one launch specification per
    instance type of ``aws.machine_type`` for each of the file's specifications (the file's
    ``InstanceType`` is replaced), ``KeyName`` when ``aws.ssh_key_name`` is set, the root
    volume size, and the public IP choice. Fixed: ``Type`` "maintain" (interrupted machines
    are replaced), ``ExcessCapacityTerminationPolicy`` "noTermination" (lowering the target
    never terminates a busy machine), ``AllocationStrategy`` the file's or
    ``DEFAULT_ALLOCATION_STRATEGY``. ``ValidFrom``/``ValidUntil`` of a copied file are
    dropped (the request lasts until cleanup cancels it); ``ClientToken`` is
    ``client_token`` (making a retried request idempotent) or none.

    Each specification gets ``ImageId`` = ``type_images[its instance type]`` when given
    (the AMI of that type's architecture: arm64 for Graviton types), else ``image_id``, else
    the file's; ``UserData`` =
    ``user_data``, and tags ``Name`` = "<app>Worker" plus the app tag on its instances (the
    request itself gets the app tag). Disk: the root mapping (``/dev/xvda``, else the first
    EBS mapping when the file's image is kept; added when absent) gets ``root_size`` GB
    (default ``aws.ebs_vol_size``; see `root_volume_size`); when the image is replaced its
    ``SnapshotId`` (which belongs to the old image) is removed; mappings with neither size
    nor snapshot (the family's Docker volume for its old AMI, sized by run.py and unused by
    Amazon Linux 2023) are dropped.
    Public IP: when ``aws.assign_ip`` is set, ``AssociatePublicIpAddress`` = it on the primary
    network interface; a specification without interfaces but with one ``SubnetId`` (and
    security groups given by id) gets one, so the choice holds; otherwise the subnet's default
    holds. Unset (a config.py without ASSIGN_IP, or with ASSIGN_IP = 'True', as the family's
    run.py), the file's network settings are kept as they are.
    """
    request = copy.deepcopy(fleet)
    for key in ("ValidFrom", "ValidUntil", "ClientToken"):
        request.pop(key, None)
    request["TargetCapacity"] = config.cluster.machines
    request["SpotPrice"] = str(config.aws.machine_price)
    request["Type"] = "maintain"
    request["ExcessCapacityTerminationPolicy"] = "noTermination"
    request.setdefault("AllocationStrategy", DEFAULT_ALLOCATION_STRATEGY)
    if client_token:
        request["ClientToken"] = client_token
    app_tag = {names.tag["Key"]: names.tag["Value"]}
    request["TagSpecifications"] = _with_tags(
        request.get("TagSpecifications", []), "spot-fleet-request", app_tag
    )
    images = type_images or {}
    request["LaunchSpecifications"] = [
        _launch_specification(
            spec,
            instance_type,
            config,
            user_data=user_data,
            image_id=images.get(instance_type) or image_id,
            tags={"Name": f"{names.app}Worker", **app_tag},
            root_size=root_size or config.aws.ebs_vol_size,
        )
        for spec in fleet["LaunchSpecifications"]
        for instance_type in dict.fromkeys(config.aws.machine_type)  # a type listed twice: once
    ]
    return request


#: "The number of launch specifications per fleet: 50" (EC2's Spot Fleet quotas; botocore's
#: model states no limit, and moto takes more).
MAX_LAUNCH_SPECIFICATIONS = 50


def check_launch_specifications(config: Config, fleet: dict[str, Any], *, source: str) -> None:
    """Raise `InputError` (on ``aws.machine_type`` of the config at ``source``) when the
    request `build_fleet_request` makes of ``fleet`` would have more launch specifications
    than a spot fleet takes: one per specification of the file and instance type."""
    specs = len(fleet["LaunchSpecifications"])
    types = len(dict.fromkeys(config.aws.machine_type))
    if specs * types <= MAX_LAUNCH_SPECIFICATIONS:
        return
    raise InputError(
        source,
        "aws.machine_type",
        f"the spot fleet request would have {specs * types} launch specifications (the fleet "
        f"file's {specs} for each of {types} instance types); a spot fleet takes at most "
        f"{MAX_LAUNCH_SPECIFICATIONS}",
        "list fewer instance types, or write fewer launch specifications in the fleet file "
        '(one can name several subnets, comma-separated, in its "SubnetId")',
    )


def fleet_instance_types(fleet: dict[str, Any]) -> list[str]:
    """The launch specifications' ``InstanceType`` values, in order (repeats kept)."""
    specs = [s for s in fleet.get("LaunchSpecifications", []) if isinstance(s, dict)]
    return [s["InstanceType"] for s in specs if isinstance(s.get("InstanceType"), str)]


def with_fleet_machines(config: Config, fleet: dict[str, Any]) -> Config:
    """``config`` with the fleet file's instance types and price where a ``config.py`` names
    none: DCP's config.py had no MACHINE_TYPE or MACHINE_PRICE before DCP 2.0 (2020), and
    its run.py sent the file's ``InstanceType`` and ``SpotPrice`` as written.

    ``aws.machine_type`` (when the config did not set it) becomes the launch
    specifications' ``InstanceType`` values, in order, without repeats; ``aws.machine_price``
    (when not set) the request's ``SpotPrice``, else the highest of the specifications'.
    ``config`` itself when the file has neither (the defaults then apply)."""
    aws = config.aws
    update: dict[str, Any] = {}
    specs = [s for s in fleet.get("LaunchSpecifications", []) if isinstance(s, dict)]
    if "machine_type" not in aws.model_fields_set:
        types = fleet_instance_types(fleet)
        if types:
            update["machine_type"] = list(dict.fromkeys(types))
    if "machine_price" not in aws.model_fields_set:
        price = fleet.get("SpotPrice")
        if price is None:
            prices = [float(s["SpotPrice"]) for s in specs if s.get("SpotPrice") is not None]
            price = max(prices) if prices else None
        if price is not None:
            update["machine_price"] = float(price)
    if not update:
        return config
    return config.model_copy(update={"aws": aws.model_copy(update=update)})


def _launch_specification(
    spec: dict[str, Any],
    instance_type: str,
    config: Config,
    *,
    user_data: str,
    image_id: str | None,
    tags: dict[str, str],
    root_size: int,
) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["InstanceType"] = instance_type
    out.pop("SpotPrice", None)
    replaced = bool(image_id) and image_id != spec.get("ImageId")
    if image_id:
        out["ImageId"] = image_id
    out["UserData"] = user_data
    if config.aws.ssh_key_name:
        out["KeyName"] = config.aws.ssh_key_name
    out["BlockDeviceMappings"] = _block_devices(
        out.get("BlockDeviceMappings", []), root_size, image_replaced=replaced
    )
    _set_public_ip(out, config.aws.assign_ip)
    out["TagSpecifications"] = _with_tags(out.get("TagSpecifications", []), "instance", tags)
    return out


def _block_devices(
    mappings: list[dict[str, Any]], size: int, *, image_replaced: bool
) -> list[dict[str, Any]]:
    root = next((m for m in mappings if m.get("DeviceName") == ROOT_DEVICE), None)
    if root is None and not image_replaced:
        root = next((m for m in mappings if isinstance(m.get("Ebs"), dict)), None)
    if root is None:
        root = {"DeviceName": ROOT_DEVICE, "Ebs": {"VolumeType": "gp3"}}
        mappings = [root, *mappings]
    root.pop("NoDevice", None)
    ebs = root.setdefault("Ebs", {})
    ebs["VolumeSize"] = size
    ebs.setdefault("DeleteOnTermination", True)
    if image_replaced:
        ebs.pop("SnapshotId", None)
    return [
        m
        for m in mappings
        if m is root
        or not isinstance(m.get("Ebs"), dict)
        or "VolumeSize" in m["Ebs"]
        or "SnapshotId" in m["Ebs"]
    ]


def _set_public_ip(spec: dict[str, Any], assign: bool | None) -> None:
    if assign is None:
        return  # the fleet file's own choice (or the subnet's default) stands
    interfaces: list[dict[str, Any]] = spec.get("NetworkInterfaces") or []
    if interfaces:
        primary = next((i for i in interfaces if i.get("DeviceIndex", 0) == 0), interfaces[0])
        primary.setdefault("DeviceIndex", 0)
        for other in interfaces:
            # AWS accepts the flag only on the primary interface.
            other.pop("AssociatePublicIpAddress", None)
        primary["AssociatePublicIpAddress"] = assign
        return
    subnet = spec.get("SubnetId")
    groups: list[dict[str, Any]] = spec.get("SecurityGroups") or []
    if not isinstance(subnet, str) or "," in subnet or any("GroupId" not in g for g in groups):
        return  # cannot be expressed as one interface: the subnet's default decides
    interface: dict[str, Any] = {
        "DeviceIndex": 0,
        "SubnetId": subnet,
        "AssociatePublicIpAddress": assign,
        "DeleteOnTermination": True,
    }
    if groups:
        interface["Groups"] = [g["GroupId"] for g in groups]
    # AWS refuses a subnet or security groups both on the specification and an interface.
    spec.pop("SubnetId", None)
    spec.pop("SecurityGroups", None)
    spec["NetworkInterfaces"] = [interface]


def _with_tags(
    specifications: list[dict[str, Any]], resource_type: str, tags: dict[str, str]
) -> list[dict[str, Any]]:
    """Tag specifications with ``tags`` added to (or replacing) those of ``resource_type``."""
    result = copy.deepcopy(specifications)
    target = next((s for s in result if s.get("ResourceType") == resource_type), None)
    if target is None:
        target = {"ResourceType": resource_type, "Tags": []}
        result.append(target)
    kept = [t for t in target.get("Tags", []) if t.get("Key") not in tags]
    target["Tags"] = kept + [{"Key": k, "Value": v} for k, v in tags.items()]
    return result


class TokenInUse(BackendError):
    """EC2 refused a spot fleet request's ``ClientToken``: an earlier request with other
    parameters used it (IdempotentParameterMismatch)."""


def client_token(app: str) -> str:
    """A new ``ClientToken`` for one spot fleet request attempt: the app name (cut to 23
    characters) and 32 random hex digits, at most 57 ASCII characters (EC2 allows 64).

    EC2 answers a request whose token it has seen with that earlier request (even when it was
    cancelled) or, for other parameters, IdempotentParameterMismatch: each attempt needs its
    own token, kept only for retries of that same attempt.
    """
    return f"{app[:23]}-{secrets.token_hex(16)}"


def request_fleet(ec2: Any, request: dict[str, Any]) -> str:
    """Submit the spot fleet request; return its id. Raises `TokenInUse` when EC2 says the
    request's ``ClientToken`` was used with other parameters, `BackendError` otherwise (a
    request AWS refuses outright usually means a wrong fleet file: role, image, subnet,
    key pair). A request refused as unauthorized is made once more without its own tags
    (``TagSpecifications``: the caller's ec2:CreateTags), `tagging.create_tagged`."""
    from botocore.exceptions import ClientError

    with aws_call("request the spot fleet (check the fleet file and aws.machine_type)"):
        try:
            # The request's own tags need the caller's ec2:CreateTags; the instances' tags
            # (in the launch specifications) are put on by the fleet's role, so they stay.
            untagged = {k: v for k, v in request.items() if k != "TagSpecifications"}
            response = create_tagged(
                lambda tagged: ec2.request_spot_fleet(
                    SpotFleetRequestConfig=request if tagged else untagged
                ),
                permission="ec2:CreateTags",
                what="spot fleet requests",
            )
        except ClientError as error:
            if error_code(error) == "IdempotentParameterMismatch":
                raise TokenInUse(
                    f"could not request the spot fleet: its ClientToken "
                    f"{request.get('ClientToken')!r} was used by an earlier request with "
                    "other parameters"
                ) from None
            raise
    return str(response["SpotFleetRequestId"])


def fleet_with_token(ec2: Any, token: str) -> str | None:
    """The id of the spot fleet request made with ``token`` that is not cancelled or failed
    yet, or None (every page of DescribeSpotFleetRequests). Raises `BackendError`."""
    with aws_call("list the spot fleet requests"):
        for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
            for described in page.get("SpotFleetRequestConfigs", []):
                settings = described.get("SpotFleetRequestConfig", {})
                state = str(described.get("SpotFleetRequestState", ""))
                if settings.get("ClientToken") == token and state not in DEAD_STATES:
                    return str(described["SpotFleetRequestId"])
    return None


def cancel_fleet(ec2: Any, fleet_id: str) -> None:
    """Cancel a spot fleet request and terminate its instances (gone already: no error).
    Raises `BackendError`."""
    _cancel(ec2, fleet_id)


# --- architectures, images and the root volume --------------------------------------------


@dataclass(frozen=True)
class InstanceFacts:
    """What DescribeInstanceTypes says of an instance type: its architecture ("arm64" or
    "x86_64"), its installed memory (MiB) and vCPUs; None for what it did not say."""

    architecture: str
    memory_mib: int | None = None
    vcpus: int | None = None


def instance_facts(ec2: Any, instance_types: Sequence[str]) -> dict[str, InstanceFacts]:
    """{instance type: `InstanceFacts`} from DescribeInstanceTypes, 100 types per call.

    A type the region does not know, or a refusal of the call (no
    ec2:DescribeInstanceTypes), gets `guess_architecture` and no sizes: the fleet request
    itself reports an unknown type. Other failures raise `BackendError`.
    """
    from botocore.exceptions import ClientError

    found: dict[str, InstanceFacts] = {}
    unique = list(dict.fromkeys(instance_types))
    for start in range(0, len(unique), 100):
        batch = unique[start : start + 100]
        with aws_call("look up aws.machine_type's instance types"):
            try:
                answer = ec2.describe_instance_types(InstanceTypes=batch)
            except ClientError as error:
                code = error_code(error)
                if code not in ("InvalidInstanceType", "UnauthorizedOperation", "AccessDenied"):
                    raise
                answer = {}
        for item in answer.get("InstanceTypes", []):
            supported = item.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
            memory = item.get("MemoryInfo", {}).get("SizeInMiB")
            vcpus = item.get("VCpuInfo", {}).get("DefaultVCpus")
            found[str(item["InstanceType"])] = InstanceFacts(
                "arm64" if "arm64" in supported else "x86_64",
                int(memory) if memory else None,
                int(vcpus) if vcpus else None,
            )
    return {t: found.get(t) or InstanceFacts(guess_architecture(t)) for t in unique}


@dataclass(frozen=True)
class ImageFacts:
    """What DescribeImages says of an AMI: its architecture and root snapshot size (GiB);
    None for what it does not say."""

    architecture: str | None
    root_gib: int | None


def describe_image(ec2: Any, image_id: str) -> ImageFacts:
    """The architecture and root snapshot size of ``image_id`` (DescribeImages; the mapping
    of ``RootDeviceName``, else the first EBS one). Unknown (both None) when the image is not
    found or the call is refused; other failures raise `BackendError`."""
    from botocore.exceptions import ClientError

    with aws_call(f"describe image {image_id}"):
        try:
            images = ec2.describe_images(ImageIds=[image_id]).get("Images", [])
        except ClientError as error:
            if error_code(error) not in (
                "InvalidAMIID.NotFound",
                "InvalidAMIID.Malformed",
                "InvalidAMIID.Unavailable",
                "UnauthorizedOperation",
                "AccessDenied",
            ):
                raise
            images = []
    if not images:
        return ImageFacts(None, None)
    image = images[0]
    mappings = [m for m in image.get("BlockDeviceMappings", []) if isinstance(m.get("Ebs"), dict)]
    root = next(
        (m for m in mappings if m.get("DeviceName") == image.get("RootDeviceName")),
        mappings[0] if mappings else None,
    )
    size = root["Ebs"].get("VolumeSize") if root else None
    architecture = image.get("Architecture")
    return ImageFacts(
        str(architecture) if architecture else None, int(size) if size is not None else None
    )


def root_volume_size(
    config: Config, required: int | None, *, legacy: bool, source: str
) -> tuple[int, str | None]:
    """The root volume size to request, and a one-line warning or None.

    ``required`` is the image's root snapshot size (None: unknown, ``aws.ebs_vol_size`` is
    used). A size below it makes every launch fail, so: a legacy config.py (whose comments
    say "minimum allowed is 22") gets the snapshot size and a warning saying so; a ds.toml
    raises `InputError` naming the field and the size to set (``source`` is the config file).
    """
    asked = config.aws.ebs_vol_size
    if required is None or asked >= required:
        return asked, None
    if legacy:
        return required, (
            f"EBS_VOL_SIZE = {asked} is smaller than the image's {required} GiB root "
            f"snapshot: using {required} GiB (set EBS_VOL_SIZE = {required} or more)"
        )
    raise InputError(
        source,
        "aws.ebs_vol_size",
        f"{asked} GB is smaller than the {required} GiB root snapshot of the instances' "
        "image, so every instance would fail to launch",
        f"set aws.ebs_vol_size = {required} or more",
    )


def check_root_volume(config: Config, *, legacy: bool, source: str, ec2: Any = None) -> None:
    """Setup's check of ``aws.ebs_vol_size`` for a ds.toml (a legacy config is adjusted at
    start-cluster instead, `root_volume_size`): at least `ECS_AMI_ROOT_GIB` for the
    ECS-optimized AMI, at least the snapshot of ``aws.image_id`` (read with ``ec2`` when
    given). Raises `InputError`; AWS failures to read the image skip that part."""
    if legacy:
        return
    required: int | None = ECS_AMI_ROOT_GIB
    if config.aws.image_id:
        required = None
        if ec2 is not None:
            try:
                required = describe_image(ec2, config.aws.image_id).root_gib
            except BackendError:
                required = None
    root_volume_size(config, required, legacy=False, source=source)


# --- capacity -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetState:
    """A spot fleet request as AWS reports it.

    ``state`` is the request state (``submitted``, ``active``, ``modifying``, ``failed``,
    ``cancelled…``, or ``missing`` when AWS no longer knows the id); ``activity_status`` is
    ``pending_fulfillment``, ``fulfilled``, ``error`` or None; ``errors`` holds
    "subtype: description" of the request's error events (read only when the activity
    status is ``error``).
    """

    fleet_id: str
    state: str
    activity_status: str | None
    target: int
    fulfilled: float
    instance_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)


def fleet_state(ec2: Any, fleet_id: str) -> FleetState:
    """Read the request's state, capacity and instances (every page). Raises `BackendError`."""
    from botocore.exceptions import ClientError

    with aws_call(f"describe spot fleet request {fleet_id}"):
        try:
            configs = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet_id]).get(
                "SpotFleetRequestConfigs", []
            )
        except ClientError as error:
            if "NotFound" not in error_code(error):
                raise
            configs = []
    if not configs:
        return FleetState(fleet_id, "missing", None, 0, 0.0)
    described = configs[0]
    settings = described.get("SpotFleetRequestConfig", {})
    activity = described.get("ActivityStatus")
    errors: tuple[str, ...] = ()
    if activity == "error":
        errors = _error_events(ec2, fleet_id, described.get("CreateTime"))
    return FleetState(
        fleet_id=fleet_id,
        state=str(described.get("SpotFleetRequestState", "submitted")),
        activity_status=activity,
        target=int(settings.get("TargetCapacity", 0)),
        fulfilled=float(settings.get("FulfilledCapacity", 0.0)),
        instance_ids=tuple(_instance_ids(ec2, fleet_id)),
        errors=errors,
    )


def _instance_ids(ec2: Any, fleet_id: str) -> list[str]:
    """The request's active instances; none while EC2 does not know the id yet (or any
    more)."""
    from botocore.exceptions import ClientError

    ids: list[str] = []
    kwargs: dict[str, Any] = {"SpotFleetRequestId": fleet_id}
    with aws_call(f"list the instances of spot fleet request {fleet_id}"):
        while True:
            try:
                page = ec2.describe_spot_fleet_instances(**kwargs)
            except ClientError as error:
                if "NotFound" not in error_code(error):
                    raise
                return ids
            ids.extend(i["InstanceId"] for i in page.get("ActiveInstances", []))
            token = page.get("NextToken")
            if not token:
                return ids
            kwargs["NextToken"] = token


def _error_events(ec2: Any, fleet_id: str, since: Any) -> tuple[str, ...]:
    """The request's error events, best effort (the history API is optional here)."""
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs: dict[str, Any] = {
        "SpotFleetRequestId": fleet_id,
        "EventType": "error",
        "StartTime": since or time.time() - 24 * 3600,
    }
    events: list[str] = []
    try:
        while True:
            page = ec2.describe_spot_fleet_request_history(**kwargs)
            for record in page.get("HistoryRecords", []):
                info = record.get("EventInformation", {})
                events.append(
                    f"{info.get('EventSubType', 'error')}: {info.get('EventDescription', '')}"
                )
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    except (ClientError, BotoCoreError, *unreadable_answers()):
        pass  # the events only explain a failure found otherwise
    return tuple(events)


#: How long a request just made may be unknown to EC2's describe calls: "if you run a
#: command to modify or describe the resource that you just created, its ID might not have
#: propagated throughout the system" (EC2 eventual consistency). AWS gives no bound; seconds
#: are usual, and a request unseen this long is taken as gone.
UNSEEN_GRACE_SECONDS = 120.0


def unseen_grace(requested_at: float | None, now: float) -> float:
    """What is left at ``now`` of `UNSEEN_GRACE_SECONDS` for a request made at
    ``requested_at`` (epoch seconds; None: a request recorded without its time, seen
    long ago). Pure."""
    if requested_at is None:
        return 0.0
    return min(max(UNSEEN_GRACE_SECONDS - (now - requested_at), 0.0), UNSEEN_GRACE_SECONDS)


def judge_capacity(
    state: FleetState,
    waited: float,
    *,
    patience: float,
    unseen_grace: float = UNSEEN_GRACE_SECONDS,
) -> Literal["ready", "waiting", "config_error", "no_capacity"]:
    """What a fleet request's state means after ``waited`` seconds of waiting (pure).

    - ``waiting``: EC2 does not know the id (``missing``) while ``waited`` is under
      ``unseen_grace`` (what is left of `UNSEEN_GRACE_SECONDS` since the request was made:
      eventual consistency), whatever ``patience`` is;
    - ``config_error``: the request failed, was cancelled or is gone; or its activity is
      ``error`` with no machine running and an error that is not about capacity (or none
      known) — it will not get better by waiting;
    - ``ready``: at least one machine is fulfilled (the rest may follow);
    - ``no_capacity``: nothing fulfilled after ``patience`` seconds;
    - ``waiting``: otherwise.
    """
    if state.state == "missing" and waited < unseen_grace:
        return "waiting"
    if state.state in DEAD_STATES:
        return "config_error"
    if state.fulfilled >= 1 or state.instance_ids:
        return "ready"
    if state.activity_status == "error":
        about_capacity = bool(state.errors) and all(_CAPACITY_EVENT.search(e) for e in state.errors)
        if not about_capacity:
            return "config_error"
    if waited >= patience:
        return "no_capacity"
    return "waiting"


def wait_for_capacity(
    ec2: Any,
    fleet_id: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 15.0,
    unseen_grace: float = UNSEEN_GRACE_SECONDS,
) -> FleetState:
    """Poll the fleet until a machine is up; return its state then. A request EC2 does not
    know yet is waited for ``unseen_grace`` seconds (`judge_capacity`).

    A request that cannot work (`judge_capacity` says ``config_error``) is cancelled with
    its instances terminated, and `BackendError` says why (the error events when AWS gives
    them) and what to check. When nothing is fulfilled after ``timeout`` seconds,
    `BackendError` says so and that the request is kept: spot capacity may still come, and
    `ds monitor` / `ds cleanup` take it from there.
    """
    start = clock()
    while True:
        state = fleet_state(ec2, fleet_id)
        waited = clock() - start
        verdict = judge_capacity(state, waited, patience=timeout, unseen_grace=unseen_grace)
        if verdict == "ready":
            return state
        if verdict == "config_error":
            if state.state != "missing":
                _cancel(ec2, fleet_id)
            raise BackendError(_config_error_message(state))
        if verdict == "no_capacity":
            raise BackendError(
                f"no spot capacity after {timeout:g}s: spot fleet request {fleet_id} has "
                f"0 of {state.target} machines. The request is kept and starts machines when "
                "capacity appears (`ds monitor` follows it, `ds cleanup` cancels it); for "
                "capacity sooner, add instance types to aws.machine_type or raise "
                "aws.machine_price"
            )
        # "waiting" means waited < timeout, or a request not seen yet (a short wait)
        sleep(max(min(interval, timeout - waited), min(interval, 5.0)))


def _config_error_message(state: FleetState) -> str:
    if state.state == "missing":
        return (
            f"spot fleet request {state.fleet_id} no longer exists (was it cancelled?). "
            "Run start-cluster again to request a new one"
        )
    if state.state in DEAD_STATES:
        why = f"is {state.state}"
    else:
        why = "has an error" + (f": {'; '.join(state.errors)}" if state.errors else "")
    return (
        f"spot fleet request {state.fleet_id} {why}. It was cancelled and its instances "
        "terminated. Check the fleet file (IamFleetRole, IamInstanceProfile, ImageId, "
        "subnets, security groups, KeyName) and aws.machine_type / aws.machine_price, "
        "then run start-cluster again"
    )


def _cancel(ec2: Any, fleet_id: str) -> None:
    from botocore.exceptions import ClientError

    with aws_call(f"cancel spot fleet request {fleet_id}"):
        try:
            ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[fleet_id], TerminateInstances=True)
        except ClientError as error:
            if "NotFound" not in error_code(error):
                raise


# --- the family's monitor file ------------------------------------------------------------


def write_monitor_file(
    folder: Path,
    names: AwsNames,
    *,
    fleet_id: str,
    queue_url: str,
    cluster: str,
    service: str,
    region: str,
    bucket: str = "",
    clean_dashboard: bool = True,
    start_time_ms: int | None = None,
) -> Path:
    """Write ``<folder>/files/<APP_NAME>SpotFleetRequestId.json``; return its path.

    Valid JSON (the family's run.py wrote a file with a stray brace that JSON parsers
    refuse) with the keys the family's monitor and auto-monitor read — ``MONITOR_FLEET_ID``,
    ``MONITOR_APP_NAME``, ``MONITOR_ECS_CLUSTER``, ``MONITOR_QUEUE_NAME``,
    ``MONITOR_BUCKET_NAME``, ``MONITOR_LOG_GROUP_NAME``, ``MONITOR_START_TIME`` (epoch
    milliseconds as a string, as they wrote it), ``CLEAN_DASHBOARD`` ('True'/'False') — plus
    ``DS_QUEUE_URL``, ``DS_ECS_SERVICE``, ``DS_AWS_REGION``, ``DS_DEAD_LETTER_QUEUE_NAME``.
    Written atomically.
    """
    start = start_time_ms if start_time_ms is not None else int(time.time() * 1000)
    content = {
        "MONITOR_FLEET_ID": fleet_id,
        "MONITOR_APP_NAME": names.app,
        "MONITOR_ECS_CLUSTER": cluster,
        "MONITOR_QUEUE_NAME": names.queue,
        "MONITOR_BUCKET_NAME": bucket,
        "MONITOR_LOG_GROUP_NAME": names.log_group,
        "MONITOR_START_TIME": str(start),
        "CLEAN_DASHBOARD": "True" if clean_dashboard else "False",
        "DS_QUEUE_URL": queue_url,
        "DS_ECS_SERVICE": service,
        "DS_AWS_REGION": region,
        "DS_DEAD_LETTER_QUEUE_NAME": names.dead_letter_queue,
    }
    path = folder / names.monitor_file
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".monitor-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2)
            stream.write("\n")
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
