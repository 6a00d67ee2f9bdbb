"""AWS's limits on the lengths of the names ds derives from the config, checked before anything
is created.

The config allows an app name of up to 80 characters (SQS's limit on a queue name), but some
names derived from it have lower limits, and moto enforces none of them: on AWS, `ds setup`
with the unattended monitor failed at its EventBridge rule after creating the queues, and
`ds aws bootstrap` at its first IAM role. The limits are the API reference's (the members of
the calls that create the names); tests/test_aws_name_limits.py holds each to botocore's
service model where the model states it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from distributed_something.backends.aws.bootstrap import BootstrapNames
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.config.model import Config
from distributed_something.errors import InputError

#: events:PutRule Name
RULE = 64
#: lambda:CreateFunction FunctionName (a name; an ARN may be longer)
FUNCTION = 64
#: lambda:AddPermission StatementId
STATEMENT = 100
#: iam:CreateRole RoleName
ROLE = 64
#: iam:CreateInstanceProfile InstanceProfileName, iam:PutRolePolicy PolicyName
PROFILE = POLICY = 128
#: sns:CreateTopic Name
TOPIC = 256
#: ecs:CreateService serviceName, ecs:RegisterTaskDefinition family and container names
ECS = 255
#: cloudwatch:PutMetricAlarm AlarmName, cloudwatch:PutDashboard DashboardName
ALARM = DASHBOARD = 255
#: logs:CreateLogGroup logGroupName
LOG_GROUP = 512
#: an EC2 instance id, the longest form ("i-" and 17 hexadecimal digits), in alarm names
INSTANCE_ID = 19


@dataclass(frozen=True)
class Name:
    """One derived name: what it is (for people), the name, its limit, and the config field
    whose value it is derived from."""

    what: str
    name: str
    limit: int
    field: str


def run_names(config: Config) -> Iterator[Name]:
    """The names `ds setup` and `ds start-cluster` create for ``config``'s runs (the queues'
    80 characters are the config's own check)."""
    names = AwsNames(config)
    yield Name("ECS service", names.service, ECS, "app_name")
    yield Name("task definition family", names.task_family, ECS, "app_name")
    yield Name("container name", names.container, ECS, "app_name")
    yield Name("dashboard", names.dashboard, DASHBOARD, "app_name")
    alarm = names.instance_alarm("i-" + "0" * (INSTANCE_ID - 2))
    yield Name("idle alarm", alarm, ALARM, "app_name")
    log_field = "aws.log_group_name" if config.aws.log_group_name else "app_name"
    for group in names.log_group_names:
        yield Name("log group", group, LOG_GROUP, log_field)
    if config.aws.auto_monitor:
        from distributed_something.backends.aws.schedule import schedule_names

        rule, statement = schedule_names(names)
        yield Name("monitor schedule rule", rule, RULE, "app_name")
        yield Name("monitor permission statement", statement, STATEMENT, "app_name")


def bootstrap_names(prefix: str) -> Iterator[Name]:
    """The names `ds aws bootstrap --prefix PREFIX` creates."""
    boot = BootstrapNames(prefix)
    for role in (boot.instance_role, boot.spot_fleet_role, boot.monitor_role):
        yield Name("IAM role", role, ROLE, "--prefix")
    yield Name("instance profile", boot.instance_profile, PROFILE, "--prefix")
    yield Name("role policy", boot.inline_policy, POLICY, "--prefix")
    yield Name("SNS topic", boot.topic, TOPIC, "--prefix")
    yield Name("monitor function", boot.function, FUNCTION, "--prefix")


def _too_long(names: Iterator[Name]) -> Name | None:
    return next((n for n in names if len(n.name) > n.limit), None)


def longest_prefix() -> int:
    """The longest prefix whose bootstrap names all fit."""
    return min(n.limit - (len(n.name) - 1) for n in bootstrap_names("x"))


def check_run_names(config: Config, *, source: str) -> None:
    """Raise `InputError` (naming the config field to shorten, as ds.toml names it: the CLI
    names a config.py's variable, `legacy_error`) when a name the run would create is longer
    than AWS allows."""
    found = _too_long(run_names(config))
    if found is None:
        return
    excess = len(found.name) - found.limit
    raise InputError(
        source,
        found.field,
        f"the {found.what} derived from it, {found.name!r}, has {len(found.name)} characters; "
        f"AWS allows at most {found.limit}",
        f"shorten it by {excess} character{'s' if excess > 1 else ''} or more",
    )


def check_bootstrap_prefix(prefix: str, *, default: bool) -> None:
    """Raise `InputError` when a name `ds aws bootstrap` would create with ``prefix`` is
    longer than AWS allows; ``default`` when the prefix is the app name (no --prefix)."""
    found = _too_long(bootstrap_names(prefix))
    if found is None:
        return
    most = longest_prefix()
    fix = f"give `--prefix` of at most {most} characters"
    if default:
        fix += (
            " (the app name is the default); runs find its roles by aws.monitor_function = "
            '"PREFIX-monitor" in ds.toml'
        )
    raise InputError(
        "argument",
        "--prefix",
        f"the {found.what} {found.name!r} would have {len(found.name)} characters; "
        f"AWS allows at most {found.limit}",
        fix,
    )
