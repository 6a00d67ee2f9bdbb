"""The AWS service principals ds names in trust policies and permissions: IAM identifiers
of services (who may assume a role or invoke a function), not addresses anything connects
to."""

from __future__ import annotations

#: The suffix of every AWS service principal.
_SERVICE = "amazonaws.com"

#: EC2 instances (the fleet's machines assume the instance role).
EC2 = f"ec2.{_SERVICE}"
#: ECS tasks (a task role must trust it).
ECS_TASKS = f"ecs-tasks.{_SERVICE}"
#: The spot fleet service (its role launches and tags the instances).
SPOT_FLEET = f"spotfleet.{_SERVICE}"
#: Lambda (the unattended monitor's role).
LAMBDA = f"lambda.{_SERVICE}"
#: EventBridge (its schedule invokes the monitor function).
EVENTS = f"events.{_SERVICE}"
#: CloudWatch Logs (an export task writes into the bucket).
LOGS = f"logs.{_SERVICE}"

__all__ = ["EC2", "ECS_TASKS", "EVENTS", "LAMBDA", "LOGS", "SPOT_FLEET"]
