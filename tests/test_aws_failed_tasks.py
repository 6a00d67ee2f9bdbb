"""ECS tasks that keep failing stop the run with ECS's reason (backends/aws/failed_tasks.py).

moto runs no ECS task, so it can neither start nor stop one the way ECS does: the requests
are checked against the real ECS service model with botocore's Stubber (which validates
every parameter and sends nothing), and the answers are shaped as the DescribeTasks API
reference gives them (``lastStatus``, ``stopCode``, ``stoppedReason``, ``stoppedAt``, the
container's ``exitCode`` and ``reason``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.compute import EcsSpotCompute
from distributed_something.backends.aws.failed_tasks import (
    FAILED_TO_START,
    task_failure,
)
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.config.model import Config
from distributed_something.errors import BackendError

CLUSTER = "labcluster"
SERVICE = "EService"
ARN = "arn:aws:ecs:us-east-1:123456789012:task/labcluster/"


def stopped(
    task_id: str,
    *,
    code: int | None = None,
    stop_code: str = "EssentialContainerExited",
    reason: str = "Essential container in task exited",
    container_reason: str = "",
    ago: float = 10.0,
) -> dict[str, Any]:
    """A stopped task as DescribeTasks describes it."""
    container: dict[str, Any] = {"name": "EContainer", "lastStatus": "STOPPED"}
    if code is not None:
        container["exitCode"] = code
    if container_reason:
        container["reason"] = container_reason
    return {
        "taskArn": ARN + task_id,
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "stopCode": stop_code,
        "stoppedReason": reason,
        "stoppedAt": dt.datetime.fromtimestamp(time.time() - ago, tz=dt.UTC),
        "containers": [container],
    }


def test_which_stopped_tasks_are_failures() -> None:
    failed = task_failure(stopped("a", code=2))
    assert failed is not None and failed.code == 2 and failed.name == "ECS task a"
    assert abs(failed.at - (time.time() - 10)) < 5
    pull = task_failure(
        stopped(
            "b",
            stop_code=FAILED_TO_START,
            reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)",
        )
    )
    assert pull is not None and pull.code is None and "CannotPullContainerError" in pull.said
    # Not failures: a clean exit, SIGTERM (scale-down, spot interruption), SIGKILL (its
    # memory: the task's retries count it), a task still running.
    assert task_failure(stopped("c", code=0, stop_code="ServiceSchedulerInitiated")) is None
    assert task_failure(stopped("d", code=143, stop_code="SpotInterruption")) is None
    assert task_failure(stopped("e", code=137, container_reason="OutOfMemoryError")) is None
    assert task_failure({**stopped("f", code=2), "lastStatus": "RUNNING"}) is None


def compute_with(stubber_tasks: list[dict[str, Any]], *, running: int) -> tuple[Any, Any]:
    """An EcsSpotCompute whose ECS client is a real client under a Stubber expecting one
    ListTasks and the DescribeTasks batches of ``stubber_tasks``; the service wants 2
    tasks and runs ``running``."""
    config = Config.model_validate({"app_name": "E", "backend": "aws"})
    resources = AwsResources(region="us-east-1", cluster=CLUSTER, service=SERVICE)
    compute = EcsSpotCompute(
        AwsSettings(region="us-east-1"), AwsNames(config), lambda: resources, workers_per_task=1
    )
    ecs = boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    compute._clients["ecs"] = ecs
    compute._service = {"status": "ACTIVE", "desiredCount": 2, "runningCount": running}
    stubber = Stubber(ecs)
    return compute, stubber


def expect_look(
    stubber: Stubber, tasks: list[dict[str, Any]], new: list[dict[str, Any]] | None = None
) -> None:
    """One ListTasks answering ``tasks``, then DescribeTasks of ``new`` (default: all of
    them), at most 100 per call."""
    stubber.add_response(
        "list_tasks",
        {"taskArns": [t["taskArn"] for t in tasks]},
        {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"},
    )
    described = tasks if new is None else new
    for start in range(0, len(described), 100):
        batch = described[start : start + 100]
        stubber.add_response(
            "describe_tasks",
            {"tasks": batch, "failures": []},
            {"cluster": CLUSTER, "tasks": [t["taskArn"] for t in batch]},
        )


def test_tasks_that_keep_failing_stop_the_run_with_ecs_reason() -> None:
    first = [stopped("t1", code=2, ago=120), stopped("t2", code=0)]
    compute, stubber = compute_with(first, running=0)
    with stubber:
        expect_look(stubber, first)
        compute.check_failing_tasks()  # one failure: ECS is left to start the next
        again = [stopped(f"t{i}", code=2, container_reason="", ago=60 - i) for i in range(3, 6)]
        expect_look(stubber, [*first, *again], again)  # only the new ones are described
        compute._service = {"status": "ACTIVE", "desiredCount": 2, "runningCount": 0}
        with pytest.raises(BackendError) as raised:
            compute.check_failing_tasks()
    message = str(raised.value)
    assert "ECS tasks keep failing: 4 stopped with an error" in message
    assert "ECS task t5 with exit code 2" in message
    assert "E_perInstance" in message and "E/EContainer/t5" in message
    assert "`ds cleanup` stops them" in message


def test_the_second_look_describes_only_new_tasks_in_batches_of_100() -> None:
    many = [stopped(f"s{i}", code=0) for i in range(150)]
    compute, stubber = compute_with(many, running=1)
    with stubber:
        expect_look(stubber, many)  # two DescribeTasks calls: 100 + 50
        compute.check_failing_tasks()
        expect_look(stubber, many, [])
        compute._service = {"status": "ACTIVE", "desiredCount": 2, "runningCount": 1}
        compute.check_failing_tasks()  # seen already: no DescribeTasks
        stubber.assert_no_pending_responses()


def test_nothing_is_asked_while_the_service_wants_no_task() -> None:
    compute, stubber = compute_with([], running=0)
    compute._service = {"status": "ACTIVE", "desiredCount": 0, "runningCount": 0}
    with stubber:
        compute.check_failing_tasks()  # the Stubber fails any call it was not told of
        stubber.assert_no_pending_responses()


def test_a_monitor_role_without_the_grant_warns_once_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials that may not list tasks: the monitor must not fail every tick for a help
    it cannot give."""
    compute, stubber = compute_with([], running=0)
    with stubber:
        stubber.add_client_error(
            "list_tasks", service_error_code="AccessDeniedException", http_status_code=400
        )
        with caplog.at_level("WARNING"):
            compute.check_failing_tasks()
        compute._service = {"status": "ACTIVE", "desiredCount": 2, "runningCount": 0}
        compute.check_failing_tasks()  # not asked again: the Stubber has no answer left
        stubber.assert_no_pending_responses()
    assert "ecs:ListTasks" in caplog.text and "AccessDeniedException" in caplog.text


def test_another_error_skips_one_look_and_the_next_tick_looks_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = [stopped(f"x{i}", code=3) for i in range(4)]
    compute, stubber = compute_with(tasks, running=0)
    with stubber:
        stubber.add_client_error(
            "list_tasks", service_error_code="ServerException", http_status_code=500
        )
        with caplog.at_level("WARNING"):
            compute.check_failing_tasks()  # not the monitor's end
        assert "could not look at the stopped ECS tasks" in caplog.text
        expect_look(stubber, tasks)
        compute._service = {"status": "ACTIVE", "desiredCount": 2, "runningCount": 0}
        with pytest.raises(BackendError, match="keep failing: 4 stopped"):
            compute.check_failing_tasks()


@pytest.mark.slow
def test_ds_status_says_the_unattended_monitor_stopped_the_workers(
    aws: str, tmp_path: Any, ds: Any
) -> None:
    """The unattended monitor writes only the bucket's copy of the run state: `ds status`
    reads its mark there and says why nothing runs; without the mark it says nothing."""
    import json

    from moto_projects import E2E_BUCKET, aws_client, make_e2e_project

    proj = make_e2e_project(tmp_path, ["a"])
    for step in (["setup"], ["submit", "files/job.json"]):
        assert ds(*step, cwd=proj).returncode == 0
    quiet = json.loads(ds("status", "--json", cwd=proj).stdout)
    assert quiet["notes"] == []
    s3 = aws_client("s3")
    key = "_ds/E2E/state.json"
    state = json.loads(s3.get_object(Bucket=E2E_BUCKET, Key=key)["Body"].read())
    why = "the run's ECS tasks keep failing: 8 stopped with an error, the last ECS task t7"
    state["resources"]["lambda_monitor"] = {"workers_failing": why}
    s3.put_object(Bucket=E2E_BUCKET, Key=key, Body=json.dumps(state).encode())
    told = ds("status", "--json", cwd=proj)
    assert told.returncode == 0, told.stderr
    (note,) = json.loads(told.stdout)["notes"]
    assert "the unattended monitor stopped the run's workers" in note and why in note
    shown = ds("status", cwd=proj)
    assert "stopped:" in shown.stderr and "keep failing" in " ".join(shown.stderr.split())

    def mark() -> object:
        body = s3.get_object(Bucket=E2E_BUCKET, Key=key)["Body"].read()
        return json.loads(body)["resources"].get("lambda_monitor", {}).get("workers_failing")

    # Another command saving the run state (a second submit) keeps the monitor's mark: the
    # workers stay stopped (it used to write its own copy over it, and the monitor started
    # the failing workers again).
    assert ds("submit", "files/job.json", "--force", cwd=proj).returncode == 0
    assert mark() == why
    # `ds start-cluster` is what clears it, saying so.
    started = ds("start-cluster", "files/fleet.json", cwd=proj)
    assert started.returncode == 0, started.stderr
    assert "had stopped this run's workers" in started.stderr
    assert mark() is None
    assert json.loads(ds("status", "--json", cwd=proj).stdout)["notes"] == []
    assert ds("cleanup", cwd=proj).returncode == 0
