"""The optional CloudWatch dashboard of a run: queue, workers, fleet and errors on one page."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from distributed_something import ui
from distributed_something.backends.aws.errors import aws_call
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.config.model import Config

#: Seconds per data point of the metric widgets (SQS and ECS publish every minute).
PERIOD = 60


def dashboard_body(
    names: AwsNames,
    config: Config,
    *,
    region: str,
    fleet_id: str,
    queue_name: str,
    dlq_name: str,
    cluster: str,
    service: str,
) -> dict[str, Any]:
    """The dashboard's JSON body (``put_dashboard`` takes it serialised).

    Widgets, two rows of three then a full-width log table: tasks waiting / in progress /
    dead-lettered; tasks received vs deleted (finished) per minute; the ECS service's CPU
    and memory utilisation; the spot fleet's target vs fulfilled capacity; and a Logs
    Insights query listing the latest error lines of the run's log groups.
    """

    def metric(
        title: str, metrics: list[list[Any]], *, stat: str, x: int, y: int, stacked: bool = False
    ) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 8,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "view": "timeSeries",
                "stacked": stacked,
                "stat": stat,
                "period": PERIOD,
                "metrics": metrics,
                "yAxis": {"left": {"min": 0}},
            },
        }

    queue = ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue_name]
    in_flight = ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", queue_name]
    dead = ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dlq_name]
    ecs = ["ClusterName", cluster, "ServiceName", service]
    spot = ["FleetRequestId", fleet_id]
    sources = " | ".join(
        f"SOURCE '{group}'" for group in (names.log_group, names.instance_log_group)
    )
    query = (
        f"{sources} | fields @timestamp, @logStream, @message"
        " | filter @message like /(?i)(error|exception|traceback|failed|killed)/"
        " | sort @timestamp desc | limit 200"
    )
    widgets = [
        metric(
            f"{config.app_name}: tasks",
            [
                [*queue, {"label": "waiting"}],
                [*in_flight, {"label": "in progress"}],
                [*dead, {"label": "dead-lettered"}],
            ],
            stat="Maximum",
            x=0,
            y=0,
        ),
        metric(
            "Tasks received vs finished",
            [
                [
                    "AWS/SQS",
                    "NumberOfMessagesReceived",
                    "QueueName",
                    queue_name,
                    {"label": "received"},
                ],
                [
                    "AWS/SQS",
                    "NumberOfMessagesDeleted",
                    "QueueName",
                    queue_name,
                    {"label": "finished"},
                ],
            ],
            stat="Sum",
            x=8,
            y=0,
        ),
        metric(
            "Workers: CPU and memory (%)",
            [
                ["AWS/ECS", "CPUUtilization", *ecs, {"label": "CPU"}],
                ["AWS/ECS", "MemoryUtilization", *ecs, {"label": "memory"}],
            ],
            stat="Average",
            x=16,
            y=0,
        ),
        metric(
            "Spot fleet: machines",
            [
                ["AWS/EC2Spot", "TargetCapacity", *spot, {"label": "target"}],
                ["AWS/EC2Spot", "FulfilledCapacity", *spot, {"label": "fulfilled"}],
            ],
            stat="Average",
            x=0,
            y=6,
        ),
        {
            "type": "log",
            "x": 0,
            "y": 12,
            "width": 24,
            "height": 8,
            "properties": {
                "title": "Latest errors",
                "region": region,
                "query": query,
                "view": "table",
            },
        },
    ]
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


def put_dashboard(cloudwatch: Any, name: str, body: dict[str, Any]) -> None:
    """Create or replace the dashboard ``name``. CloudWatch's validation messages (the
    dashboard is still saved) are shown as warnings. Raises `BackendError`."""
    with aws_call(f"create CloudWatch dashboard {name}"):
        response = cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
    for message in response.get("DashboardValidationMessages", []):
        ui.info(
            "[yellow]warning:[/] "
            + escape(
                f"dashboard {name}: {message.get('DataPath', '')} {message.get('Message', '')}"
            )
        )
