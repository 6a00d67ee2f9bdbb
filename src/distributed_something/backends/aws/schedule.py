"""The unattended monitor of a run: an EventBridge schedule invoking the monitor Lambda."""

from __future__ import annotations

import json
from typing import Any

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.lambda_monitor import MonitorSettings
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.teardown import (
    MONITOR_FUNCTION,
    MONITOR_PERMISSION,
    MONITOR_RULE,
)
from distributed_something.config.model import Config
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


def schedule_monitor(
    events: Any, lambda_: Any, names: AwsNames, config: Config, *, region: str, function: str
) -> dict[str, str]:
    """A once-a-minute rule targeting ``function`` with this app's settings; returns what to
    record in ``AwsResources.monitor_objects`` (teardown removes rule and permission)."""
    rule, statement = schedule_names(names)
    with aws_call(f"finding the monitor function {function} (run `ds aws bootstrap` first)"):
        arn: str = lambda_.get_function(FunctionName=function)["Configuration"]["FunctionArn"]
    with aws_call(f"scheduling the unattended monitor {rule}"):
        rule_arn: str = events.put_rule(
            Name=rule,
            ScheduleExpression="rate(1 minute)",
            State="ENABLED",
            Description=f"ds monitor of {names.app}",
            Tags=[names.tag],
        )["RuleArn"]
        events.put_targets(
            Rule=rule,
            Targets=[
                {
                    "Id": "ds-monitor",
                    "Arn": arn,
                    "Input": json.dumps(monitor_settings(config, region=region).as_event()),
                }
            ],
        )
    from botocore.exceptions import ClientError

    with aws_call(f"allowing {rule} to invoke {function}"):
        try:
            lambda_.add_permission(
                FunctionName=function,
                StatementId=statement,
                Action="lambda:InvokeFunction",
                Principal=principals.EVENTS,
                SourceArn=rule_arn,
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceConflictException":  # already allowed: fine
                raise
    return {MONITOR_RULE: rule, MONITOR_FUNCTION: function, MONITOR_PERMISSION: statement}
