"""Checks that an IAM role can be the task role of the run's containers.

ECS starts a task with a task role only if the role's trust policy lets
``ecs-tasks.amazonaws.com`` assume it; otherwise every task fails to start ("ECS was unable
to assume the role"), long after setup said all was well. A task role taken from the AWS
profile's ``role_arn`` (as the family's run.py did) is usually a role meant for people, whose
trust policy names accounts or SSO, not ECS — so setup checks it first.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.clients import first_line, unreadable_answers
from distributed_something.errors import InputError

ECS_TASKS_PRINCIPAL = principals.ECS_TASKS


def role_name(role_arn: str) -> str:
    """The role's name: the last part of ``arn:…:iam::<account>:role[/path]/<name>``."""
    return role_arn.rsplit("/", 1)[-1]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def trusts_ecs_tasks(document: dict[str, Any] | str) -> bool:
    """Whether a role trust policy lets ECS tasks assume the role: an Allow statement whose
    action covers ``sts:AssumeRole`` and whose principal names ``ecs-tasks.amazonaws.com``
    (or is ``"*"``). ``document`` is the decoded JSON, or its text (URL-encoded or not)."""
    if isinstance(document, str):
        text = document if document.lstrip().startswith("{") else unquote(document)
        document = json.loads(text)
    if not isinstance(document, dict):
        return False
    for statement in _as_list(document.get("Statement")):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = {str(a).lower() for a in _as_list(statement.get("Action"))}
        if not actions & {"sts:assumerole", "sts:*", "*"}:
            continue
        principal = statement.get("Principal")
        if principal == "*":
            return True
        if isinstance(principal, dict):
            if ECS_TASKS_PRINCIPAL in _as_list(principal.get("Service")):
                return True
            if "*" in _as_list(principal.get("AWS")):
                return True
    return False


def check_task_role(iam: Any, role_arn: str, *, source: str, field: str) -> str | None:
    """Check that ``role_arn`` trusts ``ecs-tasks.amazonaws.com`` (iam:GetRole).

    Raises `InputError` (``source``/``field`` name where the role came from) saying in one
    line how to fix it when the trust policy does not let ECS tasks assume the role. Returns
    None when the role is fine, or a one-line warning when the role cannot be read (no
    iam:GetRole, no such role, AWS unreachable): the check is then skipped, not failed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    name = role_name(role_arn)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except (ClientError, BotoCoreError, *unreadable_answers()) as exc:
        return (
            f"could not read the task role {role_arn} to check that it trusts "
            f"{ECS_TASKS_PRINCIPAL} ({first_line(exc)}); tasks fail to start if it does not"
        )
    if trusts_ecs_tasks(role.get("AssumeRolePolicyDocument") or {}):
        return None
    raise InputError(
        source,
        field,
        f"the task role {role_arn} does not trust {ECS_TASKS_PRINCIPAL}, so ECS cannot start "
        "the workers with it",
        f'add {{"Effect": "Allow", "Principal": {{"Service": "{ECS_TASKS_PRINCIPAL}"}}, '
        f'"Action": "sts:AssumeRole"}} to the trust policy of role {name}, or set '
        "aws.task_role_arn (TASK_ROLE_ARN) to a role that has it",
    )
