"""End to end on moto's server: setup → submit → start-cluster → workers → monitor → cleanup.

The test plays the ECS agent (tests/aws_agent.py): it runs the service's desired tasks as
`ds worker` processes with exactly the environment of the registered task definition.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from aws_agent import start_tasks, task_definition_environment
from imds_server import imds_server
from moto_projects import E2E_BUCKET, aws_client, make_e2e_project, wait_all

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return path.read_text().split() if path.exists() else []


def s3_text(key: str) -> str:
    body: bytes = aws_client("s3").get_object(Bucket=E2E_BUCKET, Key=key)["Body"].read()
    return body.decode()


def run_ok(ds: Ds, *args: str, cwd: Path) -> CompletedProcess[str]:
    """`ds ARGS` through the ``ds`` fixture: asserts only that it exits 0 (unlike
    `moto_projects.run_clean`, stderr is not checked)."""
    result = ds(*args, cwd=cwd)
    assert result.returncode == 0, f"ds {' '.join(args)}: {result.stderr}"
    return result


def start_e2e_workers(
    endpoint: str, workdir: Path, metadata_url: str = ""
) -> list[subprocess.Popen[bytes]]:
    """One `ds worker` per desired task of the E2E service (`aws_agent.start_tasks`), with
    the instance metadata at ``metadata_url`` when given (a loopback fake)."""
    extra = {"DS_METADATA_URL": metadata_url} if metadata_url else None
    return start_tasks(
        aws_client("ecs"), "E2ECluster", "E2EService", endpoint, workdir, extra_env=extra
    )


def assert_e2e_nothing_left(dead_letter_kept: bool = True) -> None:
    """Of app E2E, only its dead-letter queue (if ``dead_letter_kept``) and ended fleets
    remain: no service, ACTIVE task definition, E2E_ alarm or dashboard."""
    sqs, ecs = aws_client("sqs"), aws_client("ecs")
    urls = sqs.list_queues().get("QueueUrls", [])
    assert [u.rsplit("/", 1)[1] for u in urls] == (["E2EDeadMessages"] if dead_letter_kept else [])
    services = (
        ecs.list_services(cluster="E2ECluster").get("serviceArns", [])
        if ecs.list_clusters()["clusterArns"]
        else []
    )
    active = [
        s
        for s in (
            ecs.describe_services(cluster="E2ECluster", services=services)["services"]
            if services
            else []
        )
        if s["status"] == "ACTIVE"
    ]
    assert active == []
    assert (
        ecs.list_task_definitions(familyPrefix="E2ETask", status="ACTIVE")["taskDefinitionArns"]
        == []
    )
    fleets = aws_client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert all(f["SpotFleetRequestState"].startswith("cancelled") for f in fleets)
    cloudwatch = aws_client("cloudwatch")
    assert cloudwatch.describe_alarms(AlarmNamePrefix="E2E_")["MetricAlarms"] == []
    assert cloudwatch.list_dashboards()["DashboardEntries"] == []


def claims_left() -> list[str]:
    """The task claims (`worker.claims`) left in the bucket."""
    listed = aws_client("s3").list_objects_v2(Bucket=E2E_BUCKET, Prefix="_ds/E2E/runs/")
    return [o["Key"] for o in listed.get("Contents", []) if "/claims/" in o["Key"]]


def test_full_run_on_moto_with_poison_and_redrive(aws: str, tmp_path: Path, ds: Ds) -> None:
    names = ["alpha", "beta", "poison"]
    proj = make_e2e_project(tmp_path, names)
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submitJob", "files/job.json", cwd=proj)
    run_ok(ds, "startCluster", "files/fleet.json", cwd=proj)
    monitor_file = json.loads((proj / "files" / "E2ESpotFleetRequestId.json").read_text())
    assert monitor_file["MONITOR_APP_NAME"] == "E2E"

    ecs = aws_client("ecs")
    desired, env = task_definition_environment(ecs, "E2ECluster", "E2EService")
    assert desired == 2
    assert env["APP_NAME"] == "E2E" and env["SQS_QUEUE_URL"].endswith("/E2EQueue")
    assert not any(k in env for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))

    wait_all(start_e2e_workers(aws, tmp_path / "agent"))
    assert sorted(set(ledger(tmp_path))) == sorted(names)
    assert ledger(tmp_path).count("poison") == 2  # two receives, then dead-lettered

    dead = json.loads(run_ok(ds, "dead", "list", "--json", cwd=proj).stdout)
    assert [d["group"] for d in dead] == [{"name": "poison"}]
    shown = json.loads(run_ok(ds, "dead", "show", dead[0]["task_id"], "--json", cwd=proj).stdout)
    assert "code 7" in shown["error"]
    assert "poisoned input" in shown["failures"][-1]["log_tail"]

    (tmp_path / "ledger.txt.cured").write_text("fixed")
    run_ok(ds, "dead", "redrive", cwd=proj)
    assert json.loads(run_ok(ds, "dead", "list", "--json", cwd=proj).stdout) == []
    wait_all(start_e2e_workers(aws, tmp_path / "agent2"))

    result = run_ok(
        ds, "monitor", "files/E2ESpotFleetRequestId.json", "--interval", "1", "--json", cwd=proj
    )
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 3 and report["counts"]["dead"] == 0
    for name in names:
        assert s3_text(f"out/{name}/result.txt") == f"result of {name}"
    assert_e2e_nothing_left()
    assert claims_left() == []  # each attempt claimed its task on S3 and released it
    exported = aws_client("s3").list_objects_v2(Bucket=E2E_BUCKET, Prefix="_ds/E2E/runs/")
    assert any("logs-export" in o["Key"] for o in exported.get("Contents", []))


def test_spot_interruption_hands_the_task_back(aws: str, tmp_path: Path, ds: Ds) -> None:
    proj = make_e2e_project(tmp_path, ["long"], seconds=30, cluster={"tasks_per_machine": 1})
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submit", "files/job.json", cwd=proj)
    aws_client("ecs").update_service(cluster="E2ECluster", service="E2EService", desiredCount=1)
    with imds_server() as imds:
        (worker,) = start_e2e_workers(aws, tmp_path / "agent", imds.url)
        deadline = time.monotonic() + 60
        while not ledger(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ledger(tmp_path) == ["long"]
        imds.interrupt()
        started = time.monotonic()
        worker.wait(timeout=60)
        assert time.monotonic() - started < 30  # handed back at once, not after the task
    status = json.loads(run_ok(ds, "status", "--json", cwd=proj).stdout)
    assert status["queue"]["queued"] == 1 and status["counts"]["done"] == 0
    alarms = aws_client("cloudwatch").describe_alarms(AlarmNamePrefix="E2E_")["MetricAlarms"]
    assert len(alarms) == 1  # the worker set up its instance's idle-CPU alarm
    run_ok(ds, "cleanup", cwd=proj)
    assert_e2e_nothing_left()
    # Machines for a run whose queue is gone would find nothing and cost until stopped.
    fleets = len(aws_client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"])
    again = ds("start-cluster", "files/fleet.json", cwd=proj)
    assert again.returncode == 2 and "is finished" in again.stderr, again.stderr
    after = aws_client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert len(after) == fleets
    assert_e2e_nothing_left()


def test_bad_fleet_file_is_rejected_before_anything_is_created(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    proj = make_e2e_project(tmp_path, ["a"])
    bad = json.loads((proj / "files" / "fleet.json").read_text())
    del bad["LaunchSpecifications"][0]["ImageId"]
    (proj / "files" / "bad.json").write_text(json.dumps(bad))
    result = ds("run", str(proj), "--job", "files/job.json", "--fleet", "files/bad.json", cwd=proj)
    assert result.returncode == 2
    assert "ImageId" in result.stderr and "Traceback" not in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
    assert aws_client("ecs").list_clusters()["clusterArns"] == []


def test_bootstrap_then_unattended_monitor_schedule(aws_iam: str, tmp_path: Path, ds: Ds) -> None:
    proj = make_e2e_project(tmp_path, ["a"], aws={"auto_monitor": True})
    boot = run_ok(ds, "aws", "bootstrap", "--json", cwd=proj)
    arns = json.loads(boot.stdout)
    assert arns["function"].endswith(":function:E2E-monitor")
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submit", "files/job.json", cwd=proj)
    run_ok(ds, "start-cluster", "files/fleet.json", cwd=proj)
    # Again (a resumed run): the run's fleet is kept, and says so; no second request.
    again = run_ok(ds, "start-cluster", "files/fleet.json", cwd=proj)
    assert "is kept" in again.stderr
    fleets = aws_client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert len([f for f in fleets if f["SpotFleetRequestState"] == "active"]) == 1
    events = aws_client("events")
    (target,) = events.list_targets_by_rule(Rule="E2E-monitor-schedule")["Targets"]
    assert target["Arn"] == arns["function"]
    settings = json.loads(target["Input"])
    assert settings["DS_APP_NAME"] == "E2E" and settings["DS_STATE_BUCKET"] == E2E_BUCKET
    assert events.describe_rule(Name="E2E-monitor-schedule")["ScheduleExpression"] == (
        "rate(1 minute)"
    )
    run_ok(ds, "cleanup", cwd=proj)
    assert events.list_rules(NamePrefix="E2E-")["Rules"] == []
    assert_e2e_nothing_left()
    destroyed = run_ok(ds, "aws", "destroy", cwd=proj)
    assert "removed" in destroyed.stderr
    assert aws_client("lambda").list_functions()["Functions"] == []


def test_worker_killed_mid_task_on_aws_and_the_task_completes_once(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    names = ["k1", "k2"]
    proj = make_e2e_project(tmp_path, names, seconds=4, queue={"visibility": 2})
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submit", "files/job.json", cwd=proj)
    ecs = aws_client("ecs")
    ecs.update_service(cluster="E2ECluster", service="E2EService", desiredCount=2)
    first, second = start_e2e_workers(aws, tmp_path / "agent")
    deadline = time.monotonic() + 60
    while len(ledger(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(ledger(tmp_path)) == names  # both workers are busy
    first.kill()  # SIGKILL mid-task: no chance to hand the task back
    second.wait(timeout=120)  # it finishes its own task, then the orphan once the lease ends
    result = run_ok(ds, "monitor", "--interval", "1", "--json", cwd=proj)
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 2 and report["counts"]["duplicates"] == 0
    assert sorted(t["attempts"] for t in report["tasks"]) == [1, 2]
    assert len(ledger(tmp_path)) == 3  # the killed task started twice, completed once
    for name in names:
        assert s3_text(f"out/{name}/result.txt") == f"result of {name}"
    # The killed worker's claim on its task was taken over by the task's next delivery
    # (the same message, its lease over), and every claim was released at its attempt's end.
    assert claims_left() == []


def test_run_force_reaches_the_workers_on_aws(aws: str, tmp_path: Path, ds: Ds) -> None:
    """`ds run --force` reruns done tasks on AWS too: its workers (containers with no state
    file) read the run's state from the bucket and skip nothing. Run right after a cleanup,
    it first waits for SQS to free the deleted queue's name (moto frees it at once; AWS
    would let the new tasks into the dying queue)."""
    names = ["alpha", "beta"]
    proj = make_e2e_project(tmp_path, names)
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submit", "files/job.json", cwd=proj)
    ecs = aws_client("ecs")
    ecs.update_service(cluster="E2ECluster", service="E2EService", desiredCount=1)
    wait_all(start_e2e_workers(aws, tmp_path / "agent"))
    run_ok(ds, "cleanup", cwd=proj)
    assert sorted(ledger(tmp_path)) == names

    run = ["run", "--job", "files/job.json", "--fleet", "files/fleet.json", "--force"]
    forced = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", *run, "--interval", "1", "--json"],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        desired = 0
        while desired == 0 and forced.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            services = ecs.list_services(cluster="E2ECluster").get("serviceArns", [])
            if services:
                desired, _ = task_definition_environment(ecs, "E2ECluster", "E2EService")
        assert desired > 0, "ds run --force never started its service"
        wait_all(start_e2e_workers(aws, tmp_path / "agent2"))
        out, err = forced.communicate(timeout=180)
    finally:
        if forced.poll() is None:
            forced.kill()
    assert forced.returncode == 0, err
    assert "SQS keeps a deleted queue's name for 60 s" in " ".join(err.split())
    report = json.loads(out)
    assert report["counts"]["done"] == 2 and report["counts"].get("skipped", 0) == 0
    assert sorted(ledger(tmp_path)) == sorted(names * 2)  # each ran again
    assert_e2e_nothing_left()


def test_the_report_prices_attempts_at_their_machines_spot_price(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    """A worker on an instance records its machine (type and zone from the instance
    metadata); `ds report` reads that machine's spot price history and prices the attempt
    at it, not at the configured maximum price."""
    proj = make_e2e_project(tmp_path, ["priced"], seconds=0.5, cluster={"tasks_per_machine": 1})
    run_ok(ds, "setup", cwd=proj)
    run_ok(ds, "submit", "files/job.json", cwd=proj)
    ecs = aws_client("ecs")
    ecs.update_service(cluster="E2ECluster", service="E2EService", desiredCount=1)
    with imds_server() as imds:
        wait_all(start_e2e_workers(aws, tmp_path / "agent", imds.url))
    machines = aws_client("s3").list_objects_v2(Bucket=E2E_BUCKET, Prefix="_ds/E2E/runs/")
    keys = [o["Key"] for o in machines.get("Contents", []) if "/machines/" in o["Key"]]
    (machine,) = [json.loads(s3_text(k)) for k in keys]
    assert (machine["instance_type"], machine["availability_zone"]) == ("m5.large", "us-east-1a")
    report = json.loads(run_ok(ds, "report", "--json", cwd=proj).stdout)
    cost = report["cost"]
    assert cost["spot_attempts"] == 1 and "m5.large in us-east-1a" in cost["basis"]
    (task,) = report["tasks"]
    # moto's spot price for every type and zone ($0.00001/h): far below the configured
    # maximum, which would give at least a thousand times more for the same time.
    price = aws_client("ec2").describe_spot_price_history(
        InstanceTypes=["m5.large"], AvailabilityZone="us-east-1a"
    )["SpotPriceHistory"][0]["SpotPrice"]
    slots = cost["slots"]
    wall = task["cost_usd"] * 3600 * slots / float(price)
    assert 0.5 <= wall < 30  # the attempt's own wall time, priced at the spot price
    run_ok(ds, "cleanup", cwd=proj)
