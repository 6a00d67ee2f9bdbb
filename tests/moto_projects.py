"""Projects run on moto's server, shared by the moto test files: the test's own boto3 clients,
the project folders (`make_e2e_project`, `aws_project`), ways to run `ds` and check its exit,
and the checks that a run left nothing behind. The `aws` fixture (tests/conftest.py) must be
active: the clients reach moto through its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import boto3
import tomli_w

from testkit import E2E_WORK, moto_family_fleet

#: The `ds` fixture of tests/conftest.py: run `ds ARGS` in ``cwd``.
Ds = Callable[..., CompletedProcess[str]]

REGION = "us-east-1"


def aws_client(service: str) -> Any:
    """A plain boto3 client of the test (not ds's: no hooks), on the moto server."""
    return boto3.client(service, region_name=REGION)


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float = 180) -> None:
    """Wait for every process of ``procs`` to exit, ``timeout`` seconds for all together."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.wait(timeout=max(deadline - time.monotonic(), 1))


# --- running ds ---------------------------------------------------------------------------------


def run_clean(ds: Ds, *args: str, cwd: Path) -> CompletedProcess[str]:
    """`ds ARGS` through the ``ds`` fixture: asserts it exits 0 with no traceback on stderr."""
    result = ds(*args, cwd=cwd)
    assert result.returncode == 0, f"ds {' '.join(args)}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def ds_ok(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run `ds ARGS` in ``cwd`` with this test's environment; assert its exit code."""
    result = subprocess.run(
        [sys.executable, "-m", "distributed_something", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode in ok, f"ds {' '.join(args)} → {result.returncode}: {result.stderr}"
    return result


# --- the end-to-end project (app E2E) -----------------------------------------------------------

E2E_BUCKET = "ds-e2e"


def make_e2e_project(tmp_path: Path, names: list[str], seconds: float = 0.0, **extra: Any) -> Path:
    """tmp_path/proj: ds.toml (app E2E, aws backend, `E2E_WORK` with the ledger
    tmp_path/ledger.txt), files/job.json with one group per name, files/fleet.json (the
    family's fleet on moto's network); creates `E2E_BUCKET`. ``extra`` updates the config's
    tables by name."""
    folder = tmp_path / "proj"
    (folder / "files").mkdir(parents=True)
    ledger = tmp_path / "ledger.txt"
    config: dict[str, Any] = {
        "app_name": "E2E",
        "backend": "aws",
        "image": "example/ds-worker:1",
        "recipe": {
            "name": "command",
            "argv": [
                sys.executable,
                "-c",
                E2E_WORK,
                "{output_dir}",
                "{name}",
                str(ledger),
                str(seconds),
            ],
            "output_prefix": "out/{name}",
        },
        "cluster": {"machines": 1, "tasks_per_machine": 2, "docker_cores": 1},
        "queue": {"visibility": 5, "job_retries": 2},
        "storage": {"bucket": E2E_BUCKET},
        "aws": {"region": REGION, "ecs_cluster": "E2ECluster", "create_dashboard": True},
        "local": {"poll_interval": 0.2},
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value}
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "files" / "job.json").write_text(json.dumps({"groups": [{"name": n} for n in names]}))
    ec2 = aws_client("ec2")
    fleet = moto_family_fleet(ec2)
    (folder / "files" / "fleet.json").write_text(json.dumps(fleet))
    aws_client("s3").create_bucket(Bucket=E2E_BUCKET)
    return folder


# --- a family project on the shared "default" cluster -------------------------------------------


def check_monitor_file(folder: Path, app: str, bucket: str) -> str:
    """The family's monitor file of ``app`` (AWS_BUCKET ``bucket``) is valid JSON (run.py's
    was not); returns the fleet id."""
    monitor_file = json.loads((folder / f"files/{app}SpotFleetRequestId.json").read_text())
    assert monitor_file["MONITOR_APP_NAME"] == app
    assert monitor_file["MONITOR_ECS_CLUSTER"] == "default"
    assert monitor_file["MONITOR_QUEUE_NAME"] == f"{app}Queue"
    assert monitor_file["MONITOR_BUCKET_NAME"] == bucket
    assert monitor_file["MONITOR_LOG_GROUP_NAME"] == app
    assert int(monitor_file["MONITOR_START_TIME"]) > 0
    fleet_id: str = monitor_file["MONITOR_FLEET_ID"]
    assert fleet_id.startswith("sfr-")
    return fleet_id


def check_family_nothing_left(fleet_id: str, app: str, dead_letter_queue: str) -> None:
    """No job queue (the dead-letter queue stays), service, ACTIVE task definition, fleet,
    instance, alarm or dashboard of the run of ``app``; the shared "default" cluster stays."""
    sqs, ecs, ec2 = aws_client("sqs"), aws_client("ecs"), aws_client("ec2")
    cloudwatch = aws_client("cloudwatch")
    queues = [url.rsplit("/", 1)[1] for url in sqs.list_queues().get("QueueUrls", [])]
    assert queues == [dead_letter_queue]
    services = ecs.list_services(cluster="default").get("serviceArns", [])
    described = (
        ecs.describe_services(cluster="default", services=services)["services"] if services else []
    )
    assert [s["serviceName"] for s in described if s["status"] == "ACTIVE"] == []
    active = ecs.list_task_definitions(familyPrefix=f"{app}Task", status="ACTIVE")
    assert active["taskDefinitionArns"] == []
    fleets = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert all(f["SpotFleetRequestState"].startswith("cancelled") for f in fleets)
    tagged = ec2.describe_instances(
        Filters=[{"Name": "tag:aws:ec2spot:fleet-request-id", "Values": [fleet_id]}]
    )["Reservations"]
    states = {i["State"]["Name"] for r in tagged for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"}
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert cloudwatch.list_dashboards()["DashboardEntries"] == []
    (cluster,) = ecs.describe_clusters(clusters=["default"])["clusters"]
    assert cluster["status"] == "ACTIVE"  # the shared cluster is never deleted


# --- a project with its own cluster (the reliability tests) -------------------------------------


def aws_project(
    folder: Path,
    *,
    app: str,
    bucket: str,
    names: list[str],
    argv: list[str],
    cluster: dict[str, Any],
    queue: dict[str, Any],
    env: dict[str, str] | None = None,
) -> Path:
    """ds.toml (aws backend, command recipe), files/job.json and files/fleet.json (the
    family's example fleet with moto's subnet and security group) in ``folder``; creates
    the bucket. Returns ``folder``."""
    (folder / "files").mkdir(parents=True)
    config: dict[str, Any] = {
        "app_name": app,
        "backend": "aws",
        "image": "example/ds-worker:1",
        "recipe": {"name": "command", "argv": argv, "output_prefix": "out/{name}"},
        "cluster": cluster,
        "queue": queue,
        "storage": {"bucket": bucket},
        "aws": {"region": REGION, "ecs_cluster": f"{app}Cluster", "create_dashboard": True},
        "local": {"poll_interval": 0.2},
    }
    if env:
        config["env"] = env
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    job = {"groups": [{"name": n} for n in names]}
    (folder / "files" / "job.json").write_text(json.dumps(job))
    ec2 = aws_client("ec2")
    fleet = moto_family_fleet(ec2)
    (folder / "files" / "fleet.json").write_text(json.dumps(fleet))
    aws_client("s3").create_bucket(Bucket=bucket)
    return folder


def leftovers(app: str) -> dict[str, list[str]]:
    """What of ``app``'s run still exists on the moto server (billable or not), by kind:
    its queues, cluster, service, task definitions; every live spot fleet, instance, alarm
    and dashboard. The dead-letter queue is expected: it is kept on purpose."""
    sqs, ecs, ec2, cloudwatch = (aws_client(s) for s in ("sqs", "ecs", "ec2", "cloudwatch"))
    cluster = f"{app}Cluster"
    clusters = ecs.describe_clusters(clusters=[cluster])["clusters"]
    live_cluster = [c["clusterName"] for c in clusters if c["status"] == "ACTIVE"]
    services: list[str] = []
    if live_cluster:
        arns = ecs.list_services(cluster=cluster).get("serviceArns", [])
        described = (
            ecs.describe_services(cluster=cluster, services=arns)["services"] if arns else []
        )
        services = [s["serviceName"] for s in described if s["status"] == "ACTIVE"]
    fleets = ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        for i in r["Instances"]
    ]
    return {
        "queues": [
            name
            for name in (u.rsplit("/", 1)[1] for u in sqs.list_queues().get("QueueUrls", []))
            if name.startswith(app)
        ],
        "clusters": live_cluster,
        "services": services,
        "task definitions": ecs.list_task_definitions(familyPrefix=f"{app}Task", status="ACTIVE")[
            "taskDefinitionArns"
        ],
        "spot fleets": [
            f["SpotFleetRequestId"]
            for f in fleets
            if not f["SpotFleetRequestState"].startswith("cancelled")
        ],
        "instances": instances,
        "alarms": [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]],
        "dashboards": [
            d["DashboardName"] for d in cloudwatch.list_dashboards()["DashboardEntries"]
        ],
    }


def assert_nothing_left(app: str) -> None:
    """Only the dead-letter queue of ``app`` remains (see `leftovers`)."""
    assert leftovers(app) == {
        "queues": [f"{app}DeadMessages"],
        "clusters": [],
        "services": [],
        "task definitions": [],
        "spot fleets": [],
        "instances": [],
        "alarms": [],
        "dashboards": [],
    }


def s3_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` in ``bucket``: key → body."""
    s3 = aws_client("s3")
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found
