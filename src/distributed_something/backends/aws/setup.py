"""The AWS resources `ds setup` creates: queues, cluster, task definition, service, log groups.

Every function is idempotent: it looks its resource up by exact name (never by substring,
always past the first page), creates it when missing and otherwise updates it to match, so a
setup interrupted at any point completes when run again. Nothing sleeps for a fixed time:
where AWS needs time, `wait_for` polls the real state with a timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.idle import (
    CONTAINER_DIR,
    HOST_DIR,
    IDLE_DIR_ENV,
    IDLE_VOLUME,
)
from distributed_something.backends.aws.image_check import check_run_image, check_worker_image
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.tagging import create_tagged
from distributed_something.backends.aws.taskenv import (
    task_environment,
    task_role_arn,
    without_credentials,
)
from distributed_something.config.model import Config
from distributed_something.errors import BackendError, InputError
from distributed_something.jobs.model import SQS_MESSAGE_BYTES
from distributed_something.ui import info

#: 14 days, the longest SQS keeps a message: a long run must not lose waiting tasks, and the
#: dead-letter queue is kept after cleanup so failures can be inspected and redriven.
RETENTION_SECONDS = 14 * 24 * 3600
#: The task definition's ``entryPoint`` when the image's own entrypoint is not kept. ECS
#: appends ``command`` to the entrypoint (the image's, unless the task definition sets one),
#: so ``command: ["ds", "worker"]`` on an image whose ENTRYPOINT is already ``ds worker`` ran
#: ``ds worker ds worker``. Setting ``entryPoint`` and no ``command`` runs exactly ``ds worker``
#: whatever the image's ENTRYPOINT and CMD are (an explicit entrypoint drops the image's CMD).
WORKER_ENTRYPOINT = ["ds", "worker"]
#: Seconds ECS waits between SIGTERM and SIGKILL (the EC2 maximum): a worker hands its task
#: back at once, but an upload in progress gets the whole two-minute spot notice.
STOP_TIMEOUT = 120


def check_setup_inputs(config: Config) -> None:
    """Everything setup needs from the config, checked before anything is created.

    Raises `InputError` when no container image is set, or when the run has a recipe (its
    containers run ``ds worker``) and the image is one of the family's published images,
    which have no ``ds`` (`image_check.check_worker_image`).
    """
    if not config.image.strip():
        raise InputError(
            "config",
            "image",
            "no container image is set, so there is nothing for the workers to run",
            'set image = "org/tool:1.0" in ds.toml (DOCKERHUB_TAG in a legacy config.py)',
        )
    check_run_image(config)


# --- SQS --------------------------------------------------------------------------------


#: How long SQS keeps a deleted queue's name: "you must wait at least 60 seconds before
#: creating a queue with the same name" (DeleteQueue), and meanwhile "a SendMessage request
#: might succeed, but after 60 seconds the queue and the message you sent no longer exist".
QUEUE_NAME_HELD_SECONDS = 60.0
#: Beyond those 60 s: the deletion was recorded after DeleteQueue answered, and clocks differ.
QUEUE_NAME_MARGIN_SECONDS = 5.0


def queue_name_wait(deleted_at: float | None, now: float) -> float:
    """Seconds to wait at ``now`` before the name of a queue deleted at ``deleted_at``
    (epoch seconds; None: not deleted) may be used again: 0 when it may. Pure."""
    if deleted_at is None:
        return 0.0
    free_at = deleted_at + QUEUE_NAME_HELD_SECONDS + QUEUE_NAME_MARGIN_SECONDS
    # A deletion recorded in the future (a clock set back) waits no longer than the hold.
    return min(max(free_at - now, 0.0), QUEUE_NAME_HELD_SECONDS + QUEUE_NAME_MARGIN_SECONDS)


def ensure_queues(
    sqs: Any, names: AwsNames, config: Config, *, sleep: Callable[[float], None] = time.sleep
) -> tuple[str, str, str, str]:
    """Create or update the dead-letter queue and the job queue; return their URLs and ARNs.

    Returns ``(queue_url, queue_arn, dead_letter_queue_url, dead_letter_queue_arn)``. The
    dead-letter queue keeps messages 14 days; the job queue too, with visibility
    ``config.queue.visibility`` and a redrive policy sending a task to the dead-letter queue
    after ``config.queue.job_retries`` receives. Both take messages up to SQS's largest
    (`SQS_MESSAGE_BYTES`; validation allows bodies that fit it with their attribute): a
    queue created before SQS raised its default keeps 256 KiB unless told. Existing queues
    get these attributes set again (SetQueueAttributes), and both carry the app tag. A name
    SQS still holds for a queue deleted less than a minute ago (QueueDeletedRecently) is
    waited for (``sleep``), once.
    Raises `BackendError`.
    """
    tags = {names.tag["Key"]: names.tag["Value"]}
    largest = {"MaximumMessageSize": str(SQS_MESSAGE_BYTES)}
    dlq_url = _ensure_queue(
        sqs,
        names.dead_letter_queue,
        {"MessageRetentionPeriod": str(RETENTION_SECONDS), **largest},
        tags,
        sleep,
    )
    dlq_arn = _queue_arn(sqs, dlq_url, names.dead_letter_queue)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.queue.job_retries}
    queue_url = _ensure_queue(
        sqs,
        names.queue,
        {
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "VisibilityTimeout": str(config.queue.visibility),
            "RedrivePolicy": json.dumps(redrive),
            **largest,
        },
        tags,
        sleep,
    )
    return queue_url, _queue_arn(sqs, queue_url, names.queue), dlq_url, dlq_arn


def _ensure_queue(
    sqs: Any,
    name: str,
    attributes: dict[str, str],
    tags: dict[str, str],
    sleep: Callable[[float], None],
) -> str:
    from botocore.exceptions import ClientError

    url = _queue_url(sqs, name)
    if url is None:
        created = _create_queue(sqs, name, attributes, tags, sleep)
        if created is not None:
            return created
        # Created meanwhile by someone else: update it to match, as any existing queue.
        url = _queue_url(sqs, name)
        if url is None:
            raise BackendError(f"could not create queue {name}: it exists and then does not")
    with aws_call(f"update queue {name}"):
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        try:
            sqs.tag_queue(QueueUrl=url, Tags=tags)
        except ClientError as error:
            # Tags are for cost reports; a missing sqs:TagQueue permission must not stop a run.
            if error_code(error) not in ("AccessDenied", "AccessDeniedException"):
                raise
    return url


def _create_queue(
    sqs: Any,
    name: str,
    attributes: dict[str, str],
    tags: dict[str, str],
    sleep: Callable[[float], None],
) -> str | None:
    """The new queue's URL; None when a queue of that name exists already. A name SQS still
    holds (QueueDeletedRecently: deleted elsewhere, or by a cleanup not recorded) is tried
    again once, after the 60 s SQS holds it. A refused CreateQueue with tags is tried once
    without them: "To be able to tag a queue on creation, you must have the sqs:CreateQueue
    and sqs:TagQueue permissions" (CreateQueue), and a missing sqs:TagQueue must not stop a
    run (tags are for cost reports, as for an existing queue's TagQueue):
    `tagging.create_tagged`."""
    from botocore.exceptions import ClientError

    def create(tagged: bool) -> Any:
        extra: dict[str, Any] = {"tags": tags} if tagged and tags else {}
        return sqs.create_queue(QueueName=name, Attributes=attributes, **extra)

    for attempt in range(2):
        with aws_call(f"create queue {name}"):
            try:
                made = create_tagged(create, permission="sqs:TagQueue", what="SQS queues")
                return str(made["QueueUrl"])
            except ClientError as error:
                code = error_code(error)
                if "QueueAlreadyExists" in code:
                    return None
                if "QueueDeletedRecently" not in code:
                    raise
                if attempt:
                    raise BackendError(
                        f"could not create queue {name}: a queue of that name was deleted "
                        "recently, and SQS still refuses the name after a minute. Run the "
                        "command again in a minute"
                    ) from None
        info(
            f"queue {name} was deleted less than a minute ago; SQS holds its name for "
            f"60 s: waiting {QUEUE_NAME_HELD_SECONDS:.0f} s"
        )
        sleep(QUEUE_NAME_HELD_SECONDS)
    raise AssertionError("unreachable")


def _queue_url(sqs: Any, name: str) -> str | None:
    """The URL of the queue named exactly ``name``, or None."""
    from botocore.exceptions import ClientError

    with aws_call(f"look up queue {name}"):
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as error:
            if "NonExistentQueue" in error_code(error) or error_code(error) in (
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.QueueDoesNotExist",
            ):
                return None
            raise


def _queue_arn(sqs: Any, url: str, name: str) -> str:
    with aws_call(f"read the ARN of queue {name}"):
        response = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(response["Attributes"]["QueueArn"])


# --- ECS ----------------------------------------------------------------------------------


#: What ECS checks besides the create action when it is given tags.
ECS_TAGGING = "ecs:TagResource"


def _ecs_tags(names: AwsNames) -> list[dict[str, str]]:
    return [{"key": names.tag["Key"], "value": names.tag["Value"]}]


def ensure_cluster(ecs: Any, names: AwsNames) -> bool:
    """Make sure the ECS cluster ``names.cluster`` is ACTIVE; True if this call created it.

    The ``default`` cluster is shared: it is created (untagged) when the account has none
    yet, as AWS itself does on first use, but this returns False for it, so cleanup never
    deletes it. Raises `BackendError`.
    """
    with aws_call(f"look up ECS cluster {names.cluster}"):
        found = ecs.describe_clusters(clusters=[names.cluster]).get("clusters", [])
    if any(c.get("status") in ("ACTIVE", "PROVISIONING") for c in found):
        return False
    shared = names.cluster == "default"
    with aws_call(f"create ECS cluster {names.cluster}"):
        if shared:
            ecs.create_cluster(clusterName=names.cluster)
        else:
            create_tagged(
                lambda tagged: ecs.create_cluster(
                    clusterName=names.cluster, **({"tags": _ecs_tags(names)} if tagged else {})
                ),
                permission=ECS_TAGGING,
                what="ECS resources",
            )
    return not shared


def register_task_definition(
    ecs: Any,
    names: AwsNames,
    config: Config,
    env: dict[str, str],
    *,
    task_role_arn: str | None,
    keep_entrypoint: bool,
) -> str:
    """Register the run's task definition (family ``names.task_family``); return its ARN.

    One essential container ``names.container``: image ``config.image``, CPU units
    ``config.cluster.effective_cpu_shares``, memory ``config.cluster.memory`` MB, the
    environment ``env`` (credential-looking entries are dropped again here, with a warning),
    logs through the awslogs driver to ``names.log_group`` (stream prefix ``names.app``),
    not privileged. With ``keep_entrypoint`` the image's own entrypoint and command run (the
    family's images need theirs), and neither ``entryPoint`` nor ``command`` is set;
    otherwise ``entryPoint`` is ``ds worker`` and no ``command`` is set, so the container runs
    exactly ``ds worker`` (under an init process, which reaps what tasks leave behind) on any
    image that has ``ds`` on its PATH, and the host folder
    ``/var/lib/ds-idle`` is mounted at ``/ds-idle`` (``DS_IDLE_DIR``), where the workers of a
    machine tell each other they are idle (the idle shutdown, `idle`). The task role is
    ``task_role_arn`` when given.

    When the latest ACTIVE revision already says exactly this, its ARN is returned and no
    revision is added, so re-running setup does not pile up revisions. Raises `InputError`
    when no image is set, or when ``ds worker`` would run on an image known not to contain
    ``ds`` (`image_check`); `BackendError` when AWS refuses.
    """
    check_setup_inputs(config)
    if not keep_entrypoint:
        check_worker_image(config.image)
    request = task_definition_request(
        names, config, env, task_role_arn=task_role_arn, keep_entrypoint=keep_entrypoint
    )
    latest = _latest_task_definition(ecs, names.task_family)
    if latest is not None and _same_task(latest, request, task_role_arn):
        return str(latest["taskDefinitionArn"])
    untagged = {k: v for k, v in request.items() if k != "tags"}
    with aws_call(f"register task definition {names.task_family}"):
        response = create_tagged(
            lambda tagged: ecs.register_task_definition(**(request if tagged else untagged)),
            permission=ECS_TAGGING,
            what="ECS resources",
        )
    return str(response["taskDefinition"]["taskDefinitionArn"])


#: RegisterTaskDefinition refuses a task definition over 64 KiB ("Actual length: '66420'.
#: Max allowed length is '65536' bytes"); moto takes any.
MAX_TASK_DEFINITION_BYTES = 65_536


def check_task_definition_size(request: dict[str, Any], *, source: str) -> None:
    """Raise `InputError` (on ``env`` of the config at ``source``) when the task definition
    `task_definition_request` made is larger than ECS takes (its JSON, measured whole)."""
    size = len(json.dumps(request, separators=(",", ":")).encode())
    if size <= MAX_TASK_DEFINITION_BYTES:
        return
    raise InputError(
        source,
        "env",
        f"the task definition would be {size:,} bytes; ECS takes at most "
        f"{MAX_TASK_DEFINITION_BYTES:,} (each env entry is in it twice: as a variable, and in "
        "DS_CONFIG with the whole config)",
        "move large values out of env (into a file in storage that the command reads, say)",
    )


def check_task_definition_fits(config: Config, settings: AwsSettings, *, source: str) -> None:
    """`check_task_definition_size` of the task definition setup will register for
    ``config``, with a queue URL and run id of their real lengths (neither exists yet)."""
    names = AwsNames(config)
    queue_url = f"https://sqs.{settings.region}.amazonaws.com/{'0' * 12}/{names.queue}"
    run_id = "20000101-000000-000000"  # a run id's length (state.new_state)
    env = task_environment(config, queue_url=queue_url, run_id=run_id, quiet=True)
    request = task_definition_request(
        names,
        config,
        env,
        task_role_arn=task_role_arn(config, settings),
        keep_entrypoint=config.recipe.name is None,
    )
    check_task_definition_size(request, source=source)


def task_definition_request(
    names: AwsNames,
    config: Config,
    env: dict[str, str],
    *,
    task_role_arn: str | None,
    keep_entrypoint: bool,
) -> dict[str, Any]:
    """The RegisterTaskDefinition request `register_task_definition` makes (see there)."""
    environment = without_credentials(env, where="task environment")
    volumes: list[dict[str, Any]] = []
    if not keep_entrypoint:
        environment[IDLE_DIR_ENV] = CONTAINER_DIR
        volumes.append({"name": IDLE_VOLUME, "host": {"sourcePath": HOST_DIR}})
    container: dict[str, Any] = {
        "name": names.container,
        "image": config.image,
        "cpu": config.cluster.effective_cpu_shares,
        "memory": config.cluster.memory,
        "essential": True,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": names.container_log_group,
                "awslogs-region": config.aws.region,
                "awslogs-stream-prefix": names.app,
            },
        },
        "stopTimeout": STOP_TIMEOUT,
    }
    if not keep_entrypoint:
        container["entryPoint"] = list(WORKER_ENTRYPOINT)
        # An init (docker's --init) as PID 1, which hands ECS's SIGTERM to `ds worker`:
        # processes a task's command leaves in a session of their own are re-parented to
        # PID 1, and `ds worker` reaps only its tasks' process groups: they would pile up as
        # zombies, task after task, on a machine that runs for days.
        container["linuxParameters"] = {"initProcessEnabled": True}
        container["mountPoints"] = [
            {"sourceVolume": IDLE_VOLUME, "containerPath": CONTAINER_DIR, "readOnly": False}
        ]
    request: dict[str, Any] = {
        "family": names.task_family,
        "containerDefinitions": [container],
        "requiresCompatibilities": ["EC2"],
        "tags": _ecs_tags(names),
    }
    if volumes:
        request["volumes"] = volumes
    if task_role_arn:
        request["taskRoleArn"] = task_role_arn
    return request


def _latest_task_definition(ecs: Any, family: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    with aws_call(f"look up task definition {family}"):
        try:
            found: dict[str, Any] = ecs.describe_task_definition(taskDefinition=family)[
                "taskDefinition"
            ]
        except ClientError as error:
            if error_code(error) in ("ClientException", "InvalidParameterException"):
                return None  # no ACTIVE revision of this family
            raise
    return found if found.get("status", "ACTIVE") == "ACTIVE" else None


def _same_task(latest: dict[str, Any], request: dict[str, Any], role: str | None) -> bool:
    """Whether the registered revision ``latest`` says what ``request`` would register."""
    if (latest.get("taskRoleArn") or None) != (role or None):
        return False
    existing = latest.get("containerDefinitions", [])
    if len(existing) != 1:
        return False
    current, container = existing[0], request["containerDefinitions"][0]

    def environment(definition: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: e["value"] for e in definition.get("environment", [])}

    def mounts(definition: dict[str, Any]) -> list[tuple[str, str, bool]]:
        return sorted(
            (m.get("sourceVolume", ""), m.get("containerPath", ""), bool(m.get("readOnly")))
            for m in definition.get("mountPoints") or []
        )

    def volumes(definition: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted(
            (v.get("name", ""), str((v.get("host") or {}).get("sourcePath", "")))
            for v in definition.get("volumes") or []
        )

    keys = ("name", "image", "cpu", "memory", "logConfiguration", "stopTimeout")
    init = ("linuxParameters", "initProcessEnabled")
    return (
        all(current.get(k) == container.get(k) for k in keys)
        and environment(current) == environment(container)
        and mounts(current) == mounts(container)
        and volumes(latest) == volumes(request)
        and (current.get("command") or None) == (container.get("command") or None)
        and (current.get("entryPoint") or None) == (container.get("entryPoint") or None)
        and bool((current.get(init[0]) or {}).get(init[1]))
        == bool((container.get(init[0]) or {}).get(init[1]))
        and not current.get("privileged")
    )


def ensure_service(
    ecs: Any,
    names: AwsNames,
    cluster: str,
    task_definition_arn: str,
    *,
    timeout: float = 600,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Make the ECS service ``names.service`` run ``task_definition_arn``; return its name.

    A missing service is created with 0 desired tasks on the EC2 launch type; an ACTIVE one
    is updated to the task definition (its desired count is kept); a DRAINING one is waited
    for (up to ``timeout`` seconds) until it is INACTIVE, then created again. Deployments
    stop old tasks before starting new ones (a full cluster has no room for both; workers
    hand their tasks back on SIGTERM). Raises `BackendError`.
    """
    status = _service_status(ecs, cluster, names.service)
    if status == "ACTIVE":
        with aws_call(f"update ECS service {names.service}"):
            response = ecs.update_service(
                cluster=cluster,
                service=names.service,
                taskDefinition=task_definition_arn,
                deploymentConfiguration=_DEPLOYMENT,
            )
        return str(response["service"]["serviceName"])
    if status == "DRAINING":
        wait_for(
            lambda: _service_status(ecs, cluster, names.service) != "DRAINING",
            timeout=timeout,
            what=f"the previous ECS service {names.service} to finish draining",
            clock=clock,
            sleep=sleep,
            interval=5,
        )
    service: dict[str, Any] = {
        "cluster": cluster,
        "serviceName": names.service,
        "taskDefinition": task_definition_arn,
        "desiredCount": 0,
        "launchType": "EC2",
        "deploymentConfiguration": _DEPLOYMENT,
        "propagateTags": "SERVICE",
    }
    with aws_call(f"create ECS service {names.service} in cluster {cluster}"):
        response = create_tagged(
            lambda tagged: ecs.create_service(
                **service, **({"tags": _ecs_tags(names)} if tagged else {})
            ),
            permission=ECS_TAGGING,
            what="ECS resources",
        )
    return str(response["service"]["serviceName"])


_DEPLOYMENT = {"maximumPercent": 100, "minimumHealthyPercent": 0}


def _service_status(ecs: Any, cluster: str, service: str) -> str | None:
    """ACTIVE, DRAINING or INACTIVE; None when the service (or its cluster) does not exist."""
    from botocore.exceptions import ClientError

    with aws_call(f"look up ECS service {service}"):
        try:
            found = ecs.describe_services(cluster=cluster, services=[service]).get("services", [])
        except ClientError as error:
            if error_code(error) == "ClusterNotFoundException":
                return None
            raise
    statuses = [str(s.get("status")) for s in found if s.get("serviceName") == service]
    # Several records can share a name (old INACTIVE ones); the live one decides.
    for wanted in ("ACTIVE", "DRAINING", "INACTIVE"):
        if wanted in statuses:
            return wanted
    return None


def set_service_desired(ecs: Any, cluster: str, service: str, desired: int) -> None:
    """Set the service's desired task count. Raises `BackendError`."""
    with aws_call(f"set ECS service {service} to {desired} tasks"):
        ecs.update_service(cluster=cluster, service=service, desiredCount=desired)


# --- CloudWatch Logs ----------------------------------------------------------------------


def ensure_log_groups(logs: Any, names: AwsNames, retention_days: int = 60) -> list[str]:
    """Make sure ``names.log_group`` and ``names.instance_log_group`` exist, tagged, keeping
    events ``retention_days`` days; return both names (untagged when logs:TagResource is
    missing: `tagging.create_tagged`). Raises `BackendError`."""
    from botocore.exceptions import ClientError

    groups = [names.log_group, names.instance_log_group]
    tags = {names.tag["Key"]: names.tag["Value"]}

    def create(group: str) -> Callable[[bool], Any]:
        return lambda tagged: logs.create_log_group(
            logGroupName=group, **({"tags": tags} if tagged else {})
        )

    for group in groups:
        existing = _log_group(logs, group)
        if existing is None:
            with aws_call(f"create log group {group}"):
                try:
                    create_tagged(
                        create(group),
                        permission="logs:TagResource",
                        what="CloudWatch log groups",
                    )
                except ClientError as error:
                    if error_code(error) != "ResourceAlreadyExistsException":
                        raise
        if existing is None or existing.get("retentionInDays") != retention_days:
            with aws_call(f"set the retention of log group {group}"):
                logs.put_retention_policy(logGroupName=group, retentionInDays=retention_days)
    return groups


def _log_group(logs: Any, name: str) -> dict[str, Any] | None:
    """The log group named exactly ``name`` (looked up through every page), or None."""
    with aws_call(f"look up log group {name}"):
        for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name):
            for group in page.get("logGroups", []):
                if group.get("logGroupName") == name:
                    found: dict[str, Any] = group
                    return found
    return None


# --- waiting ------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 2.0,
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is true.

    Checks at once, then after each sleep; raises `BackendError` "timed out after Ns
    waiting for <what>" when ``timeout`` seconds (by ``clock``) pass first.
    """
    start = clock()
    while not predicate():
        left = timeout - (clock() - start)
        if left <= 0:
            raise BackendError(f"timed out after {timeout:g}s waiting for {what}")
        sleep(min(interval, left))
