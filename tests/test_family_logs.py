"""Logs where the family put them, early failures with a log, and workers that stop when
their queue is gone (issue 10, items 5–7) — names checked as values, the rest on moto."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from distributed_something.backends import Backend
from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.lazy_queue import LazySqsQueue
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.aws.setup import register_task_definition
from distributed_something.backends.aws.sqs_queue import SqsQueue
from distributed_something.backends.aws.task_logs import (
    MAX_STREAM_NAME,
    family_stream_name,
    task_stream_name,
)
from distributed_something.backends.aws.worker_side import task_log_factory
from distributed_something.config.model import Config
from distributed_something.errors import QueueGone
from distributed_something.jobs.model import Task
from distributed_something.recipes.command import CommandRecipe
from distributed_something.usecases import lifecycle, run_info
from distributed_something.usecases.project import open_project
from distributed_something.worker.loop import Outcome, Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from moto_projects import REGION, aws_client
from testkit import NoCompute, NoProvisioner

BUCKET = "ds-family-logs"
PY = sys.executable

DCP_BODY: dict[str, Any] = {
    "pipeline": "projects/analysis.cppipe",
    "data_file": "projects/load_data.csv",
    "input": "projects/input",
    "output": "projects/output",
    "output_structure": "",
    "Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01,Metadata_Site=2",
}


# --- stream names -------------------------------------------------------------------------


def test_family_stream_names_are_the_family_workers_names() -> None:
    # cp-worker.py: '-'.join of the metadata values, or output_structure with the keys
    # replaced by their values; a --print-groups dict the same way.
    assert family_stream_name(DCP_BODY) == "Plate1-A01-2"
    structured = {**DCP_BODY, "output_structure": "Metadata_Plate/Metadata_Well-Metadata_Site"}
    assert family_stream_name(structured) == "Plate1/A01-2"
    printed = {**DCP_BODY, "Metadata": {"Metadata_Plate": "Plate1", "Metadata_Well": "B02"}}
    assert family_stream_name(printed) == "Plate1-B02"
    # fiji-worker.py: stringify_metadata_dict, "k='v', k='v'"
    fiji = {
        "output_file_location": "out",
        "shared_metadata": {"x": "1"},
        "Metadata": {"plate": "P1", "well": "A01"},
    }
    assert family_stream_name(fiji) == "plate='P1', well='A01'"
    # B2R-worker.py: the plate
    assert family_stream_name({"input_location": "in", "plate": "PLATEA"}) == "PLATEA"
    assert family_stream_name({"plate": {"name": "PLATEB", "files": ["a"]}}) == "PLATEB"
    # The DS template named no stream; a malformed Metadata cannot be named either.
    assert family_stream_name({"group": {"name": "a"}}) is None
    assert family_stream_name({**DCP_BODY, "Metadata": "no pairs"}) is None
    assert family_stream_name({"plate": True}) is None


def test_stream_names_are_valid_and_one_per_attempt() -> None:
    task_id = "0123456789abcdef0123"
    assert task_stream_name(task_id, 1) == f"{task_id}-0001"
    assert task_stream_name(task_id, 2, {"group": {"a": "b"}}) == f"{task_id}-0002"
    assert task_stream_name(task_id, 1, DCP_BODY) == f"Plate1-A01-2/{task_id}-0001"
    assert task_stream_name(task_id, 3, DCP_BODY) == f"Plate1-A01-2/{task_id}-0003"
    # CloudWatch refuses ':' and '*' (fiji-worker.py replaced '*' with '.').
    starred = {"shared_metadata": {}, "Metadata": {"well": "A*:1"}}
    assert task_stream_name(task_id, 1, starred) == f"well='A..1'/{task_id}-0001"
    assert task_stream_name(task_id, 1, {"plate": "P\tQ\n"}) == f"P.Q./{task_id}-0001"
    # At most 512 characters, the task id and attempt kept whole.
    long = task_stream_name(task_id, 1, {"plate": "P" * 2000})
    assert len(long) == MAX_STREAM_NAME and long.endswith(f"/{task_id}-0001")
    assert ":" not in long and "*" not in long
    assert task_stream_name(task_id, 1, {"plate": ":*"}) == f"../{task_id}-0001"


# --- per-task streams on moto -------------------------------------------------------------


def aws_backend(queue: Any, storage: S3Storage) -> Backend:
    return Backend("aws", queue, storage, NoCompute(), lambda _n: storage, NoProvisioner())


def make_queues(app: str, retries: int = 3) -> tuple[str, str]:
    sqs = aws_client("sqs")
    dlq = sqs.create_queue(QueueName=f"{app}DeadMessages")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": retries})
    url = sqs.create_queue(QueueName=f"{app}Queue", Attributes={"RedrivePolicy": redrive})
    return url["QueueUrl"], dlq


def stream_events(group: str) -> dict[str, list[str]]:
    logs = aws_client("logs")
    out: dict[str, list[str]] = {}
    for stream in logs.describe_log_streams(logGroupName=group)["logStreams"]:
        name = stream["logStreamName"]
        events = logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True)
        out[name] = [e["message"] for e in events["events"]]
    return out


def test_worker_ships_each_task_to_a_stream_named_as_the_family_did(
    aws: str, tmp_path: Path
) -> None:
    config = Config.model_validate(
        {
            "app_name": "Fam",
            "backend": "aws",
            "recipe": {
                "name": "command",
                "argv": [PY, "-c", "import sys; print('analysing', sys.argv[1])", "{output}"],
                "output_prefix": "results/{output}",
            },
            "storage": {"bucket": BUCKET},
            "aws": {"region": REGION, "log_group_name": "FamLogs"},
        }
    )
    names = AwsNames(config)
    aws_client("s3").create_bucket(Bucket=BUCKET)
    aws_client("logs").create_log_group(logGroupName=names.log_group)
    url, dlq = make_queues("Fam")
    settings = AwsSettings(REGION)
    queue = SqsQueue(settings, url, dlq, max_receive_count=3)
    dcp = Task(body=DCP_BODY, group_key="Metadata")
    plain = Task(body={"output": "plain", "group": {"name": "p"}})
    queue.send_batch([(dcp.id, dcp.body_json()), (plain.id, plain.body_json())])
    worker = Worker(
        config,
        aws_backend(queue, S3Storage(settings, BUCKET)),
        CommandRecipe(),
        SubprocessRunner(grace_seconds=2),
        WorkerSettings(name="w1", run_id="r1", scratch_root=tmp_path / "s", poll_interval=0.05),
        task_log=task_log_factory(config, settings),
    )
    summary = worker.run()
    assert summary.counts.get("done") == 2, summary.counts

    streams = stream_events("FamLogs")  # LOG_GROUP_NAME, as cp-worker.py wrote
    assert set(streams) == {f"Plate1-A01-2/{dcp.id}-0001", f"{plain.id}-0001"}
    assert "analysing projects/output" in streams[f"Plate1-A01-2/{dcp.id}-0001"]
    assert "analysing plain" in streams[f"{plain.id}-0001"]


def test_container_output_goes_to_the_per_instance_group() -> None:
    config = Config.model_validate({"app_name": "Fam", "aws": {"log_group_name": "Logs"}})
    names = AwsNames(config)
    assert names.log_group == "Logs"  # task streams: LOG_GROUP_NAME
    assert names.container_log_group == "Logs_perInstance" == names.instance_log_group


def test_the_task_definition_sends_container_output_to_the_per_instance_group(
    aws: str,
) -> None:
    config = Config.model_validate(
        {
            "app_name": "Fam",
            "backend": "aws",
            "image": "example/ds-worker:1",
            "recipe": {"name": "command", "argv": ["true"], "output_prefix": "o/{name}"},
            "storage": {"bucket": BUCKET},
            "aws": {"region": REGION},
        }
    )
    names = AwsNames(config)
    ecs = aws_client("ecs")
    arn = register_task_definition(
        ecs, names, config, {}, task_role_arn=None, keep_entrypoint=False
    )
    (container,) = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"][
        "containerDefinitions"
    ]
    options = container["logConfiguration"]["options"]
    assert options["awslogs-group"] == "Fam_perInstance"


# --- a task that failed before its command started: dead list and ds logs on moto ---------


Ds = Callable[..., subprocess.CompletedProcess[str]]


def test_early_failure_is_listed_dead_with_its_error_and_has_a_log(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    folder = tmp_path / "proj"
    (folder / "files").mkdir(parents=True)
    config = {
        "app_name": "Early",
        "backend": "aws",
        "image": "example/ds-worker:1",
        "recipe": {
            "name": "command",
            "argv": [PY, "-c", "print('never runs')"],
            "inputs": ["data/{name}.txt"],
            "output_prefix": "out/{name}",
        },
        "queue": {"visibility": 30, "job_retries": 1},
        "storage": {"bucket": BUCKET},
        "aws": {"region": REGION, "ecs_cluster": "EarlyCluster"},
    }
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "files" / "job.json").write_text(json.dumps({"groups": [{"name": "lost"}]}))
    aws_client("s3").create_bucket(Bucket=BUCKET)
    project = open_project(folder / "ds.toml")
    lifecycle.setup(project)
    lifecycle.submit(project, folder / "files" / "job.json", show_progress=False)
    state = json.loads((project.state_dir / "state.json").read_text())

    from distributed_something.backends import open_backend

    worker = Worker(
        project.config,
        open_backend(project),
        CommandRecipe(),
        SubprocessRunner(grace_seconds=2),
        WorkerSettings(
            name="early-worker",
            run_id=state["run_id"],
            scratch_root=tmp_path / "scratch",
            poll_interval=0.05,
        ),
    )
    assert worker.step() is Outcome.FAILED
    worker.close()

    (entry,) = run_info.dead_list(project)
    assert "data/lost.txt" in entry.error and "is not in storage" in entry.error
    listed = ds("dead", "list", "--json", cwd=folder)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["task_id"] == entry.task_id and row["error"] == entry.error

    shown = ds("logs", entry.task_id, cwd=folder)
    assert shown.returncode == 0, shown.stderr
    assert f"ds: task {entry.task_id} attempt 1 on early-worker" in shown.stdout
    assert "failed before the command started" in shown.stdout
    assert "data/lost.txt" in shown.stdout


# --- workers whose queue is gone ------------------------------------------------------------


def gone_worker(config: Config, queue: Any, tmp_path: Path) -> Worker:
    settings = AwsSettings(REGION)
    return Worker(
        config,
        aws_backend(queue, S3Storage(settings, BUCKET)),
        CommandRecipe(),
        SubprocessRunner(grace_seconds=2),
        WorkerSettings(name="late", run_id="r1", scratch_root=tmp_path / "s", poll_interval=0.5),
    )


def late_config() -> Config:
    return Config.model_validate(
        {
            "app_name": "Late",
            "backend": "aws",
            "recipe": {"name": "command", "argv": ["true"], "output_prefix": "o/{name}"},
            "storage": {"bucket": BUCKET},
            "aws": {"region": REGION},
        }
    )


def test_a_worker_whose_queue_was_deleted_exits_at_once(
    aws: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    aws_client("s3").create_bucket(Bucket=BUCKET)
    url, dlq = make_queues("Late")
    queue = SqsQueue(AwsSettings(REGION), url, dlq, max_receive_count=3)
    aws_client("sqs").delete_queue(QueueUrl=url)  # `ds cleanup` ran before this worker started
    with pytest.raises(QueueGone):
        queue.receive(1, 30)
    caplog.set_level(logging.INFO, logger="ds.worker")
    worker = gone_worker(late_config(), queue, tmp_path)
    started = time.monotonic()
    assert worker.step() is Outcome.DRAINED  # not IDLE: no poll every 5 s until killed
    said = [r.getMessage() for r in caplog.records if "no longer exists" in r.getMessage()]
    assert said == ["the queue LateQueue no longer exists: the run is over"]
    assert not any("receive failed" in r.getMessage() for r in caplog.records)
    summary = worker.run()
    assert time.monotonic() - started < 10
    assert summary.counts == {"drained": 1}


def test_a_worker_that_looks_its_queue_up_after_cleanup_exits_at_once(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQS_QUEUE_URL", raising=False)
    aws_client("s3").create_bucket(Bucket=BUCKET)
    url, _ = make_queues("Late")
    aws_client("sqs").delete_queue(QueueUrl=url)
    config = late_config()
    lazy = LazySqsQueue(AwsSettings(REGION), AwsNames(config), 3, lambda: AwsResources())
    with pytest.raises(QueueGone):
        lazy.receive(1, 30)
    worker = gone_worker(config, lazy, tmp_path)
    assert worker.step() is Outcome.DRAINED
    assert worker.run().counts == {"drained": 1}


def test_ds_worker_exits_0_when_its_queue_is_gone(aws: str, tmp_path: Path) -> None:
    aws_client("s3").create_bucket(Bucket=BUCKET)
    url, _ = make_queues("Late")
    aws_client("sqs").delete_queue(QueueUrl=url)
    folder = tmp_path / "proj"
    folder.mkdir()
    data = late_config().model_dump(mode="json", exclude_none=True)
    (folder / "ds.toml").write_text(tomli_w.dumps(data))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "distributed_something", "worker", "--processes", "1"],
        cwd=folder,
        env={**os.environ, "SQS_QUEUE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    assert done.stderr.count("no longer exists: the run is over") == 1, done.stderr
    assert "receive failed" not in done.stderr
