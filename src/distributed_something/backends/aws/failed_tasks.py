"""ECS tasks of the run's service that stopped with an error, for `crash_loop.crash_looping`.

A worker image that cannot be pulled, a container that cannot start, or a worker that exits
with an error as it starts (no permission for the queue, a wrong entrypoint) makes ECS
start and stop tasks without end while the machines run and cost: the monitor would show
pending tasks and missing workers forever. `EcsSpotCompute.check_failing_tasks` reads the
service's stopped tasks (ListTasks, DescribeTasks) at each tick of either monitor while the
service wants tasks, and stops the run with ECS's own reason once they keep failing (the
unattended monitor also sets the service and the fleet to 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed_something.crash_loop import WorkerFailure, describe_failure

#: DescribeTasks' ``stopCode`` of a task ECS could not start (image pull, resources, …)
FAILED_TO_START = "TaskFailedToStart"
#: ECS keeps restarting failing tasks more and more slowly (its service throttle): failures
#: this far apart still make a crash loop
ECS_CRASH_WINDOW_SECONDS = 1800.0
#: DescribeTasks takes at most 100 tasks per call
DESCRIBE_BATCH = 100


def task_failure(task: Mapping[str, Any]) -> WorkerFailure | None:
    """The failure a task of DescribeTasks' answer was, or None when it was not one: not
    stopped, or stopped by a scale-down, a spot interruption or ds (exit code 0, or 128 + a
    signal: SIGTERM's 143, SIGKILL's 137 when its memory ran out, which the task's own
    retries account for). A task ECS could not start is one whatever its exit code. Pure."""
    if task.get("lastStatus") != "STOPPED":
        return None
    containers = task.get("containers") or [{}]
    container: Mapping[str, Any] = containers[0]
    code = container.get("exitCode")
    code = code if isinstance(code, int) else None
    failed_start = task.get("stopCode") == FAILED_TO_START
    if not failed_start and not (code is not None and 0 < code < 128):
        return None
    stopped: Any = task.get("stoppedAt") or task.get("createdAt") or 0.0
    # boto3 gives datetimes; a JSON answer, epoch seconds
    at = stopped.timestamp() if hasattr(stopped, "timestamp") else float(stopped)
    reasons = [str(task.get("stoppedReason") or ""), str(container.get("reason") or "")]
    said = "; ".join(r for r in reasons if r)
    task_id = str(task.get("taskArn", "")).rsplit("/", 1)[-1]
    return WorkerFailure(at, f"ECS task {task_id}", code, None, said)


def ecs_crash_message(
    failures: list[WorkerFailure], log_group: str, stream_prefix: str, *, stopped: bool = False
) -> str:
    """The error that stops a run whose ECS tasks keep failing; ``stopped``: the unattended
    monitor set the service and the fleet to 0 (else the machines still run)."""
    last = failures[-1]
    task_id = last.name.rsplit(" ", 1)[-1]
    machines = (
        "The unattended monitor set the service's tasks and the fleet's machines to 0: "
        "nothing runs or costs but the queue and the bucket. Remove the cause (`ds image "
        "build`/push, the roles of `ds aws bootstrap`), then `ds start-cluster` (or `ds run` "
        "again) starts them again; `ds cleanup` ends the run"
        if stopped
        else "The machines are still running and cost money: `ds cleanup` stops them; or "
        "remove the cause (`ds image build`/push, the roles of `ds aws bootstrap`), then "
        "`ds run` again resumes the run"
    )
    return (
        f"the run's ECS tasks keep failing: {len(failures)} stopped with an error, the last "
        f"{describe_failure(last)}. Fix: its output is in CloudWatch Logs, group {log_group}, "
        f"stream {stream_prefix}/{task_id} (none if it never started: then ECS's reason says "
        f"why, e.g. the image cannot be pulled). {machines}"
    )
