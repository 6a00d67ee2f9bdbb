"""The unattended monitor of a run: an EventBridge schedule invoking the monitor Lambda."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.lambda_monitor import MonitorSettings
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.tagging import create_tagged
from distributed_something.backends.aws.teardown import (
    MONITOR_FUNCTION,
    MONITOR_PERMISSION,
    MONITOR_RULE,
)
from distributed_something.config.model import Config
from distributed_something.errors import BackendError
from distributed_something.records import META_ROOT


def monitor_settings(config: Config, *, region: str) -> MonitorSettings:
    """What the monitor function needs to watch this app (passed as the event input)."""
    per_task = config.cluster.docker_cores
    return MonitorSettings(
        app_name=config.app_name,
        region=region,
        state_bucket=config.storage.bucket,
        state_key=f"{META_ROOT}/{config.app_name}/state.json",
        workers=config.worker_count,
        workers_per_task=per_task,
        workers_per_machine=config.cluster.tasks_per_machine * per_task,
        clean_dashboard=config.aws.clean_dashboard,
        ledger=config.recipe.name is not None,
        max_receive_count=config.queue.job_retries,
        cluster=config.aws.ecs_cluster,
        log_group=config.aws.log_group_name,
    )


def schedule_names(names: AwsNames) -> tuple[str, str]:
    """The monitor's EventBridge rule and the name of the function's permission for it."""
    return f"{names.app}-monitor-schedule", f"{names.app}-monitor-schedule"


def monitor_function_arn(lambda_: Any, function: str) -> str:
    """The ARN of the unattended monitor's function ``function``. Raises `BackendError`
    saying how to get one when it does not exist (`ds aws bootstrap` makes it)."""
    from botocore.exceptions import ClientError

    with aws_call(f"find the monitor function {function}"):
        try:
            found = lambda_.get_function(FunctionName=function)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            raise BackendError(
                f"the unattended monitor's function {function} does not exist in this "
                "account and region (aws.auto_monitor / AUTO_MONITOR is on): run `ds aws "
                "bootstrap` once (it makes the function), or turn auto_monitor off and keep "
                "`ds monitor` running yourself"
            ) from None
    return str(found["Configuration"]["FunctionArn"])


def schedule_monitor(
    events: Any,
    lambda_: Any,
    names: AwsNames,
    config: Config,
    *,
    region: str,
    function: str,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """A once-a-minute rule targeting ``function`` with this app's settings; returns what to
    record in ``AwsResources.monitor_objects`` (teardown removes rule and permission)."""
    rule, statement = schedule_names(names)
    arn = monitor_function_arn(lambda_, function)
    with aws_call(f"scheduling the unattended monitor {rule}"):
        rule_arn: str = create_tagged(
            lambda tagged: events.put_rule(
                Name=rule,
                ScheduleExpression="rate(1 minute)",
                State="ENABLED",
                Description=f"ds monitor of {names.app}",
                **({"Tags": [names.tag]} if tagged else {}),
            ),
            permission="events:TagResource",
            what="EventBridge rules",
        )["RuleArn"]
    target = {
        "Id": "ds-monitor",
        "Arn": arn,
        "Input": json.dumps(monitor_settings(config, region=region).as_event()),
    }
    _put_target(events, rule, target, sleep=sleep)
    _allow_invoke(lambda_, function, statement, rule, rule_arn, sleep=sleep)
    return {MONITOR_RULE: rule, MONITOR_FUNCTION: function, MONITOR_PERMISSION: statement}


#: PutTargets failure codes worth one more try (FailedEntries[].ErrorCode: too many requests
#: at once, or an EventBridge fault); any other code is final.
_TRANSIENT_TARGET_ERRORS = frozenset({"ConcurrentModificationException", "InternalException"})

#: Waits (seconds) between AddPermission tries while Lambda answers ResourceConflictException
#: for another operation in progress on the function (e.g. an update of its configuration).
_CONFLICT_WAITS = (1.0, 2.0, 4.0, 8.0)


def _put_target(
    events: Any, rule: str, target: dict[str, str], *, sleep: Callable[[float], None]
) -> None:
    """Add ``target`` to ``rule``. PutTargets can partially fail: a 200 answer whose
    ``FailedEntryCount`` is above 0 lists the targets not added in ``FailedEntries``; a
    transient code is tried once more, anything else is a `BackendError`."""
    for attempt in (1, 2):
        with aws_call(f"scheduling the unattended monitor {rule}"):
            answer = events.put_targets(Rule=rule, Targets=[target])
        failed = answer.get("FailedEntries") or []
        if not answer.get("FailedEntryCount") and not failed:
            return
        codes = {str(entry.get("ErrorCode", "")) for entry in failed}
        if attempt == 1 and failed and codes <= _TRANSIENT_TARGET_ERRORS:
            sleep(1.0)
            continue
        why = (
            "; ".join(
                f"{entry.get('ErrorCode', 'Error')}: {entry.get('ErrorMessage', '')}".rstrip(": ")
                for entry in failed
            )
            or f"{answer.get('FailedEntryCount')} target(s) not added"
        )
        raise BackendError(
            f"could not add the monitor function as the target of EventBridge rule {rule}: "
            f"{why}. The unattended monitor would never run: check events:PutTargets on the "
            f"rule and that the function exists, then run `ds start-cluster` again"
        )


def _allow_invoke(
    lambda_: Any,
    function: str,
    statement: str,
    rule: str,
    rule_arn: str,
    *,
    sleep: Callable[[float], None],
) -> None:
    """Let ``rule`` invoke ``function`` (lambda:AddPermission, statement ``statement``).
    Lambda answers ResourceConflictException both when the statement id is already in the
    function's policy and when another operation on the function is in progress: the
    policy (lambda:GetPolicy) tells which; the second is waited out and tried again."""
    from botocore.exceptions import ClientError

    what = f"allowing {rule} to invoke {function}"
    for wait in (*_CONFLICT_WAITS, None):
        with aws_call(what):
            try:
                lambda_.add_permission(
                    FunctionName=function,
                    StatementId=statement,
                    Action="lambda:InvokeFunction",
                    Principal=principals.EVENTS,
                    SourceArn=rule_arn,
                )
                return
            except ClientError as exc:
                if error_code(exc) != "ResourceConflictException":
                    raise
        if _has_statement(lambda_, function, statement, what):
            return  # allowed by an earlier run
        if wait is None:
            break
        sleep(wait)
    raise BackendError(
        f"could not {what}: Lambda kept answering ResourceConflictException and the "
        f"function's policy has no statement {statement} (another operation on {function} "
        f"is in progress, e.g. an update). Wait a minute, then run `ds start-cluster` again"
    )


def _has_statement(lambda_: Any, function: str, statement: str, what: str) -> bool:
    """Whether ``function``'s resource policy holds statement id ``statement``."""
    from botocore.exceptions import ClientError

    with aws_call(
        what,
        f"Reading the function's policy needs lambda:GetPolicy on {function} "
        "(docs/aws.md, 'Your own permissions')",
    ):
        try:
            policy = lambda_.get_policy(FunctionName=function)["Policy"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":  # no policy at all
                return False
            raise
    try:
        statements = json.loads(policy).get("Statement", [])
    except (ValueError, AttributeError):
        return False
    if isinstance(statements, dict):
        statements = [statements]
    return any(isinstance(s, dict) and s.get("Sid") == statement for s in statements)
