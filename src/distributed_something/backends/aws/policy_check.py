"""Does the bootstrap's role policy cover the names this run uses? (`ds validate`, `ds setup`)

`ds aws bootstrap` scopes its roles to names starting with its prefix, plus the exact queue,
dead-letter queue and log group names of the config it was run with. A config that names its
own (a legacy ``SQS_DEAD_LETTER_QUEUE = "DeadMessages_Erin"``, its own ``LOG_GROUP_NAME``)
and was never bootstrapped from would fail only on AWS: inside a container every receive is
denied and the worker idles for ever; the monitor function fails every tick. This module reads
the roles' inline policies (iam:ListRolePolicies, iam:GetRolePolicy) and says so in one line
before anything is created. When the policies cannot be read (no permission, no such role,
AWS unreachable), it says nothing: the check is a help, not a gate.

The evaluation is deliberately small: Allow statements without conditions, Action and
Resource patterns with ``*`` and ``?``; a matching Deny makes a name uncovered. Statements
with conditions, NotAction or NotResource are not counted as covering anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from distributed_something.backends.aws import name_limits
from distributed_something.backends.aws.bootstrap import (
    BootstrapNames,
    as_list,
    decode_policy,
    missing_grants,
)
from distributed_something.backends.aws.clients import (
    AwsSettings,
    client,
    partition,
    settings_from,
    unreadable_answers,
)
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.schedule import schedule_names
from distributed_something.config.model import Config


@dataclass(frozen=True)
class Need:
    """One thing a role must be allowed: ``action`` on ``arn``; ``what`` names it for people
    (e.g. "queue DeadMessages_Erin")."""

    what: str
    action: str
    arn: str


def bootstrap_prefix(config: Config) -> str:
    """The prefix the run's roles were bootstrapped with: ``P`` of a monitor function named
    ``P-monitor`` (what `ds aws bootstrap --prefix P` makes), else the app name (the
    bootstrap's default)."""
    function = config.aws.monitor_function or ""
    if function.endswith("-monitor") and len(function) > len("-monitor"):
        return function.removesuffix("-monitor")
    return config.app_name


def worker_needs(names: AwsNames, region: str, account: str) -> list[Need]:
    """What a worker does with the instance role by name: work both queues (the dead-letter
    queue is looked up and read for counts), write task logs to the app's log group, and
    set its instance's idle alarm."""
    p = partition(region)
    needs: list[Need] = []
    for queue in names.queue_names:
        arn = f"arn:{p}:sqs:{region}:{account}:{queue}"
        needs += [
            Need(f"queue {queue}", "sqs:GetQueueUrl", arn),
            Need(f"queue {queue}", "sqs:GetQueueAttributes", arn),
            Need(f"queue {queue}", "sqs:ReceiveMessage", arn),
        ]
    group = names.log_group
    stream = f"arn:{p}:logs:{region}:{account}:log-group:{group}:log-stream:task-0001"
    needs.append(Need(f"log group {group}", "logs:PutLogEvents", stream))
    alarm = f"arn:{p}:cloudwatch:{region}:{account}:alarm:{names.instance_alarm('i-0')}"
    needs.append(Need(app_name_need(names), "cloudwatch:PutMetricAlarm", alarm))
    return needs


def app_name_need(names: AwsNames) -> str:
    """`Need.what` of the names made from the app name alone (its ECS service, idle alarms,
    dashboard and monitor schedule), which the bootstrap grants by its prefix only: an app
    name outside the prefix is not fixed by bootstrapping again."""
    return f"app name {names.app}"


def monitor_needs(names: AwsNames, region: str, account: str) -> list[Need]:
    """What the monitor function does by name: read both queues' counts, delete the job
    queue at teardown, export both log groups; scale the app's service, delete its idle
    alarms, its dashboard and its schedule."""
    p = partition(region)
    needs: list[Need] = []
    for queue in names.queue_names:
        arn = f"arn:{p}:sqs:{region}:{account}:{queue}"
        needs.append(Need(f"queue {queue}", "sqs:GetQueueAttributes", arn))
    queue_arn = f"arn:{p}:sqs:{region}:{account}:{names.queue}"
    needs.append(Need(f"queue {names.queue}", "sqs:DeleteQueue", queue_arn))
    for group in names.log_group_names:
        arn = f"arn:{p}:logs:{region}:{account}:log-group:{group}"
        needs.append(Need(f"log group {group}", "logs:CreateExportTask", arn))
    app = app_name_need(names)
    rule = schedule_names(names)[0]
    needs += [
        Need(app, "ecs:UpdateService", f"arn:{p}:ecs:{region}:{account}:service/*/{names.service}"),
        Need(
            app,
            "cloudwatch:DeleteAlarms",
            f"arn:{p}:cloudwatch:{region}:{account}:alarm:{names.instance_alarm('i-0')}",
        ),
        Need(
            app,
            "cloudwatch:DeleteDashboards",
            f"arn:{p}:cloudwatch::{account}:dashboard/{names.dashboard}",
        ),
        Need(app, "events:DeleteRule", f"arn:{p}:events:{region}:{account}:rule/{rule}"),
    ]
    return needs


def _matches(patterns: Iterable[Any], value: str, *, case: bool) -> bool:
    for pattern in patterns:
        if not isinstance(pattern, str) or "${" in pattern:
            continue  # a policy variable's value is unknown here: do not count it
        if case:
            if fnmatch.fnmatchcase(value, pattern):
                return True
        elif fnmatch.fnmatchcase(value.lower(), pattern.lower()):
            return True
    return False


def _statements(documents: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for document in documents:
        for statement in as_list(document.get("Statement")):
            if isinstance(statement, dict):
                yield statement


def allows(documents: Sequence[dict[str, Any]], action: str, arn: str) -> bool:
    """Whether the policy ``documents`` certainly allow ``action`` on ``arn``: an Allow
    statement without conditions whose Action and Resource patterns match, and no Deny
    statement whose Action and Resource match (whatever its conditions)."""
    allowed = False
    for statement in _statements(documents):
        if not _matches(as_list(statement.get("Action")), action, case=False):
            continue
        if not _matches(as_list(statement.get("Resource")), arn, case=True):
            continue
        if statement.get("Effect") == "Deny":
            return False
        if statement.get("Effect") == "Allow" and not statement.get("Condition"):
            allowed = True
    return allowed


def uncovered(documents: Sequence[dict[str, Any]], needs: Sequence[Need]) -> list[str]:
    """The names (``Need.what``, in order, once each) some need of which ``documents`` do
    not allow."""
    missing: list[str] = []
    for need in needs:
        if need.what not in missing and not allows(documents, need.action, need.arn):
            missing.append(need.what)
    return missing


def role_policies(iam: Any, role: str) -> list[dict[str, Any]] | None:
    """The inline policy documents of ``role`` (iam:ListRolePolicies, iam:GetRolePolicy), or
    None when they cannot be read (no permission, no such role, AWS unreachable). A name
    longer than IAM allows (a long app name as the bootstrap's prefix) is no role: not asked."""
    from botocore.exceptions import BotoCoreError, ClientError

    if len(role) > name_limits.ROLE:
        return None
    try:
        documents: list[dict[str, Any]] = []
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
            for name in page.get("PolicyNames", []):
                answer = iam.get_role_policy(RoleName=role, PolicyName=name)
                documents.append(decode_policy(answer["PolicyDocument"]))
    except (ClientError, BotoCoreError, ValueError, *unreadable_answers()):
        return None
    return documents


@dataclass(frozen=True)
class RoleProblems:
    """What the bootstrap's roles lack for this run, by role name: ``uncovered`` names of
    this run (`uncovered`), and ``outdated`` grants this version of ds uses that a role made
    by an older one has not (`bootstrap.missing_grants`)."""

    uncovered: dict[str, list[str]]
    outdated: dict[str, list[str]]


def role_problems(iam: Any, config: Config, *, region: str, account: str) -> RoleProblems:
    """`RoleProblems` of the instance role (workers without a task role use it) and, with
    ``aws.auto_monitor``, the monitor role. Roles whose policies cannot be read are left
    out."""
    names = AwsNames(config)
    prefix = bootstrap_prefix(config)
    boot = BootstrapNames(prefix)
    checks: list[tuple[str, Any, Literal["instance", "monitor"]]] = []
    if not config.aws.task_role_arn:
        checks.append((boot.instance_role, worker_needs, "instance"))
    if config.aws.auto_monitor:
        checks.append((boot.monitor_role, monitor_needs, "monitor"))
    problems = RoleProblems({}, {})
    for role, needs_of, kind in checks:
        documents = role_policies(iam, role)
        if documents is None:
            continue
        missing = uncovered(documents, needs_of(names, region, account))
        if missing:
            problems.uncovered[role] = missing
        statements = [s for d in documents for s in as_list(d.get("Statement"))]
        lacking = missing_grants(
            kind, {"Statement": statements}, account=account, region=region, app_prefix=prefix
        )
        if lacking:
            problems.outdated[role] = lacking
    return problems


def coverage_problems(
    iam: Any, config: Config, *, region: str, account: str
) -> dict[str, list[str]]:
    """{role name: names of this run its inline policies do not cover} (`role_problems`)."""
    return role_problems(iam, config, region=region, account=account).uncovered


def coverage_warning(config: Config, settings: AwsSettings | None = None) -> str | None:
    """One line saying which names of this run the bootstrap's roles do not cover, and the
    fix; None when all are covered or when the roles cannot be read (then nothing is said).

    ``settings`` default to the config's region and profile. Calls sts:GetCallerIdentity,
    iam:ListRolePolicies and iam:GetRolePolicy; never raises for AWS errors.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from distributed_something.errors import DSError

    settings = settings or settings_from(config.aws.region, config.aws.profile)
    # A help, not a gate: offline, give up after two attempts rather than ten.
    settings = replace(settings, max_attempts=min(settings.max_attempts, 2))
    try:
        account = str(client("sts", settings).get_caller_identity()["Account"])
        problems = role_problems(
            client("iam", settings), config, region=settings.region, account=account
        )
    except (ClientError, BotoCoreError, DSError, *unreadable_answers()):
        return None
    prefix = bootstrap_prefix(config)
    command = "ds aws bootstrap" + ("" if prefix == config.app_name else f" --prefix {prefix}")
    said = []
    if problems.uncovered:
        parts = [
            f"{role} does not allow {', '.join(what)}" for role, what in problems.uncovered.items()
        ]
        said.append(
            f"the role policies do not cover this run's names ({'; '.join(parts)}): workers "
            "and the monitor would be denied them"
        )
    if problems.outdated:
        parts = [f"{role} lacks {', '.join(what)}" for role, what in problems.outdated.items()]
        said.append(f"the roles were made by an older ds ({'; '.join(parts)})")
    if not said:
        return None
    fix = f"run `{command}` again with this config to grant them"
    app = app_name_need(AwsNames(config))
    if any(app in what for what in problems.uncovered.values()):
        # Queues and log groups are granted by name; the rest only by the prefix.
        fix = (
            f"start app_name with {prefix!r} (the bootstrap grants the app's service, alarms, "
            f"dashboard and schedule by that prefix only), then {fix}"
        )
    return f"{'; and '.join(said)}; {fix}"
