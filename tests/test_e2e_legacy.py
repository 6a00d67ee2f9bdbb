"""The family's legacy path on moto's server: a Distributed-CellProfiler project folder
(config.py naming no recipe, files/exampleJob.json, files/exampleFleet.json) run with exactly
the family's four commands.

Since the config names no recipe, the task definition keeps the worker image's own
entrypoint. The test plays the ECS agent with a stand-in for that image: a small script that
reads the task definition's environment and the queue messages the way DCP's cp-worker.py
does (``message['Metadata']``, ``message['output']`` …) and writes one object per message
where DCP would upload its outputs.

Also here: how a DCP config's ``AWS_PROFILE = 'default'`` is treated when the AWS files have no
such profile (boto3's default chain, as the family's run.py used), and an unknown profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from aws_agent import service_task_definition, task_definition_environment
from conftest import FAKE_AWS_ENV
from distributed_something.jobs.parse import load_job_file
from family_templates import DCP_TEMPLATE, filled
from moto_projects import (
    REGION,
    aws_client,
    check_family_nothing_left,
    check_monitor_file,
    run_clean,
)
from testkit import moto_family_fleet

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]

APP = "DistributedCP"
IMAGE = "cellprofiler/distributed-cellprofiler:2.2.0_4.2.8"  # the template's
LOG_BUCKET = "dcp-logs"
SOURCE_BUCKET = "dcp-images"
WORKSPACE_BUCKET = "dcp-workspace"
DESTINATION_BUCKET = "dcp-results"
DEAD_LETTER_QUEUE = "user_DeadMessages"
KEY_PAIR = "dcp-key"
MONITOR_FILE = f"files/{APP}SpotFleetRequestId.json"
# The AWS documentation's example keys: what a user's ~/.aws/credentials holds.
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# Distributed-CellProfiler's config.py as shipped (it names no recipe), filled in as a user
# does: buckets, key pair, one machine, no unattended monitor (its Lambda function is what
# `ds aws bootstrap` makes; these tests run `ds monitor`); and a setting of the user's own,
# passed to the container as it is.
CONFIG_PY = (
    filled(
        DCP_TEMPLATE,
        {
            "SSH_KEY_NAME": f"'{KEY_PAIR}.pem'",
            "AWS_BUCKET": f"'{LOG_BUCKET}'",
            "SOURCE_BUCKET": f"'{SOURCE_BUCKET}'",
            "WORKSPACE_BUCKET": f"'{WORKSPACE_BUCKET}'",
            "DESTINATION_BUCKET": f"'{DESTINATION_BUCKET}'",
            "CLUSTER_MACHINES": "1",
            "AUTO_MONITOR": "'False'",
        },
    )
    + "MY_SETTING = 'x'\n"
)

# Distributed-CellProfiler's files/exampleJob.json shape.
EXAMPLE_JOB: dict[str, Any] = {
    "_comment1": "Paths in this file are relative to the root of your S3 bucket",
    "pipeline": "projects/analysis.cppipe",
    "data_file": "projects/load_data.csv",
    "input": "projects/input/",
    "output": "projects/output/",
    "output_structure": "Metadata_Plate-Metadata_Well-Metadata_Site",
    "_comment2": "The following groups are tasks, and each will be run in parallel",
    "groups": [
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01,Metadata_Site=1"},
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01,Metadata_Site=2"},
    ],
}
# Where DCP uploads each group's outputs: output/<output_structure with the values filled in>.
EXPECTED_OUTPUTS = {
    "projects/output/Plate1-A01-1/Image.csv",
    "projects/output/Plate1-A01-2/Image.csv",
}

# A stand-in for the family's worker image, without CellProfiler: its run-worker.sh sets the
# instance's idle-CPU alarm (instance id from the metadata service; here argv[1]), and its
# cp-worker.py reads the same environment and message keys, names the output folder and log
# stream the same way, uploads one object per message there, logs to the app's log group, and
# deletes the message only on success.
FAMILY_WORKER = textwrap.dedent(
    """\
    import json, os, sys, time
    import boto3

    APP_NAME = os.environ['APP_NAME']
    AWS_REGION = os.environ['AWS_REGION']
    QUEUE_URL = os.environ['SQS_QUEUE_URL']
    AWS_BUCKET = os.environ['AWS_BUCKET']
    SOURCE_BUCKET = os.environ.get('SOURCE_BUCKET', AWS_BUCKET)
    DESTINATION_BUCKET = os.environ.get('DESTINATION_BUCKET', AWS_BUCKET)
    UPLOAD_FLAGS = os.environ.get('UPLOAD_FLAGS', False)
    LOG_GROUP_NAME = os.environ['LOG_GROUP_NAME']
    CHECK_IF_DONE_BOOL = os.environ['CHECK_IF_DONE_BOOL']
    EXPECTED_NUMBER_FILES = os.environ['EXPECTED_NUMBER_FILES']
    MIN_FILE_SIZE_BYTES = int(os.environ.get('MIN_FILE_SIZE_BYTES', 1))
    NECESSARY_STRING = os.environ.get('NECESSARY_STRING', '')
    DOWNLOAD_FILES = os.environ.get('DOWNLOAD_FILES', 'False')
    USE_PLUGINS = os.environ.get('USE_PLUGINS', 'False')
    SECONDS_TO_START = int(os.environ['SECONDS_TO_START'])
    DOCKER_CORES = int(os.environ['DOCKER_CORES'])

    instance_id = sys.argv[1]
    boto3.client('cloudwatch', region_name=AWS_REGION).put_metric_alarm(
        AlarmName=APP_NAME + '_' + instance_id,
        AlarmActions=['arn:aws:swf:' + AWS_REGION + ':123456789012:action/actions/'
                      'AWS_EC2.InstanceId.Terminate/1.0'],
        Statistic='Maximum', Period=60, Threshold=1, ComparisonOperator='LessThanThreshold',
        MetricName='CPUUtilization', Namespace='AWS/EC2', EvaluationPeriods=15,
        Dimensions=[{'Name': 'InstanceId', 'Value': instance_id}],
    )

    sqs = boto3.client('sqs')
    s3 = boto3.client('s3')
    logs = boto3.client('logs')

    def log(stream, text):
        # watchtower's CloudWatchLogHandler(create_log_group=False): the group must exist
        logs.create_log_stream(logGroupName=LOG_GROUP_NAME, logStreamName=stream)
        logs.put_log_events(
            logGroupName=LOG_GROUP_NAME, logStreamName=stream,
            logEvents=[{'timestamp': int(time.time() * 1000), 'message': text}],
        )

    def metadata_id(message):
        if isinstance(message['Metadata'], dict):  # cellprofiler --print-groups output
            metadata = ','.join(k + '=' + v for k, v in message['Metadata'].items())
        else:
            metadata = message['Metadata']
        pairs = [pair.split('=') for pair in metadata.split(',')]
        if message.get('output_structure', ''):
            name = message['output_structure']
            for key, value in pairs:
                name = name.replace(key, value)
            return name, metadata
        return '-'.join(value for _, value in pairs), metadata

    while True:
        response = sqs.receive_message(QueueUrl=QUEUE_URL, WaitTimeSeconds=1)
        if 'Messages' not in response:
            print('No messages in the queue')
            break
        message = json.loads(response['Messages'][0]['Body'])
        handle = response['Messages'][0]['ReceiptHandle']
        name, metadata = metadata_id(message)
        remote_out = os.path.join(message['output'], name)
        command = (
            'cellprofiler -c -r -p ' + message['pipeline'] + ' -i ' + message['input']
            + ' --data-file=' + message['data_file'] + ' -g ' + metadata
        )
        s3.put_object(
            Bucket=DESTINATION_BUCKET, Key=remote_out + '/Image.csv', Body=command.encode()
        )
        log(name, 'Running ' + command)
        sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=handle)
        print('Batch completed successfully.')
    """
)

# What the family's images read from the task definition, and what this config gives them.
EXPECTED_ENVIRONMENT = {
    "APP_NAME": APP,
    "AWS_BUCKET": LOG_BUCKET,
    "SOURCE_BUCKET": SOURCE_BUCKET,
    "WORKSPACE_BUCKET": WORKSPACE_BUCKET,
    "DESTINATION_BUCKET": DESTINATION_BUCKET,
    "UPLOAD_FLAGS": "",
    "AWS_REGION": REGION,
    "ECS_CLUSTER": "default",
    "LOG_GROUP_NAME": APP,
    "DOCKER_CORES": "4",
    "SECONDS_TO_START": "180",
    "SQS_MESSAGE_VISIBILITY": "60",
    "SQS_DEAD_LETTER_QUEUE": DEAD_LETTER_QUEUE,
    "JOB_RETRIES": "3",
    "CHECK_IF_DONE_BOOL": "False",
    "EXPECTED_NUMBER_FILES": "7",
    "MIN_FILE_SIZE_BYTES": "1",
    "NECESSARY_STRING": "",
    "DOWNLOAD_FILES": "False",
    "ALWAYS_CONTINUE": "False",
    "USE_PLUGINS": "False",
    # As run.py: the plugin settings only with USE_PLUGINS = 'True' (images of 2023-2024
    # exited at start on INSTALL_REQUIREMENTS = 'True' without plugins).
    "UPDATE_PLUGINS": None,
    "PLUGINS_COMMIT": None,
    "INSTALL_REQUIREMENTS": None,
    "REQUIREMENTS_FILE": "",
    "REQUIREMENTS": None,
    "MY_SETTING": "x",
}
CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def use_default_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AWS CLI setup like a DCP user's: a [default] profile with keys in the shared files,
    and no keys in the environment (AWS_PROFILE = 'default' makes boto3 ignore those)."""
    folder = tmp_path / "dot-aws"
    folder.mkdir()
    (folder / "config").write_text(f"[default]\nregion = {REGION}\noutput = json\n")
    (folder / "credentials").write_text(
        "[default]\n"
        f"aws_access_key_id = {ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


def make_dcp_folder(tmp_path: Path) -> Path:
    """A DCP project folder: config.py, files/exampleJob.json, files/exampleFleet.json
    pointed at moto's default subnet and security group; and the buckets and key pair."""
    folder = tmp_path / "Distributed-CellProfiler"
    (folder / "files").mkdir(parents=True)
    (folder / "config.py").write_text(CONFIG_PY)
    (folder / "files" / "exampleJob.json").write_text(json.dumps(EXAMPLE_JOB, indent=4))
    ec2 = aws_client("ec2")
    fleet = moto_family_fleet(ec2, KEY_PAIR)
    (folder / "files" / "exampleFleet.json").write_text(json.dumps(fleet, indent=4))
    ec2.create_key_pair(KeyName=KEY_PAIR)
    s3 = aws_client("s3")
    for bucket in (LOG_BUCKET, SOURCE_BUCKET, WORKSPACE_BUCKET, DESTINATION_BUCKET):
        s3.create_bucket(Bucket=bucket)
    return folder


def run_family_worker(
    env: dict[str, str], instance_id: str, endpoint: str, workdir: Path
) -> CompletedProcess[str]:
    """Run the image stand-in as ECS would run the container on ``instance_id``: the task
    definition's environment only, plus the moto endpoint and the credentials a task role
    would give."""
    script = workdir / "cp-worker.py"
    script.write_text(FAMILY_WORKER)
    container_env = {
        "PATH": os.environ["PATH"],
        **env,
        **FAKE_AWS_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(workdir / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "none"),
    }
    return subprocess.run(
        [sys.executable, str(script), instance_id],
        cwd=workdir,
        env=container_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def destination_keys() -> set[str]:
    listed = aws_client("s3").list_objects_v2(Bucket=DESTINATION_BUCKET)
    return {item["Key"] for item in listed.get("Contents", [])}


def check_task_definition(ecs: Any) -> dict[str, str]:
    """The image's own entrypoint, the family's environment, no credential; returns the
    container environment."""
    _, definition = service_task_definition(ecs, "default", f"{APP}Service")
    (container,) = definition["containerDefinitions"]
    assert container["image"] == IMAGE
    assert (container["cpu"], container["memory"]) == (4096, 15000)
    # No recipe: the image's own entrypoint and command run (DCP's run-worker.sh).
    assert not container.get("command") and not container.get("entryPoint")
    assert not container.get("privileged")
    desired, env = task_definition_environment(ecs, "default", f"{APP}Service")
    assert desired == 1
    assert env["SQS_QUEUE_URL"].endswith(f"/{APP}Queue")
    assert {name: env.get(name) for name in EXPECTED_ENVIRONMENT} == EXPECTED_ENVIRONMENT
    # The profile has keys, but no credential reaches the task definition.
    assert not any(name in env for name in (*CREDENTIAL_NAMES, "AWS_PROFILE"))
    whole = json.dumps(definition)
    assert ACCESS_KEY_ID not in whole and SECRET_ACCESS_KEY not in whole
    return env


# A product bug found by this test (reported to the lead with file, line and fix). Strict: the
# fix makes the test pass, which fails the run until the marker is removed.


def test_dcp_job_messages_carry_what_the_family_worker_reads(tmp_path: Path) -> None:
    path = tmp_path / "exampleJob.json"
    path.write_text(json.dumps(EXAMPLE_JOB))

    job = load_job_file(path)

    assert job.format == "dcp"
    for task, group in zip(job.tasks, EXAMPLE_JOB["groups"], strict=True):
        body = json.loads(task.body_json())  # what `ds submitJob` sends
        # DCP's run.py sent, and its cp-worker.py reads, these keys at the top level.
        assert body["pipeline"] == EXAMPLE_JOB["pipeline"]
        assert body["data_file"] == EXAMPLE_JOB["data_file"]
        assert body["input"] == EXAMPLE_JOB["input"]
        assert body["output"] == EXAMPLE_JOB["output"]
        assert body["output_structure"] == EXAMPLE_JOB["output_structure"]
        assert body.get("Metadata") == group["Metadata"], f"message body: {body}"
        assert not any("_comment" in key for key in body)


def test_setup_start_and_cleanup_of_a_dcp_folder(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps around the work, which pass today: the family's setup, startCluster and
    monitor on a DCP folder with a [default] profile, nothing submitted."""
    use_default_profile(tmp_path, monkeypatch)
    folder = make_dcp_folder(tmp_path)
    # An older ds named a config.py's dashboard "<APP_NAME>Dashboard": cleanup removes it too.
    cloudwatch = aws_client("cloudwatch")
    cloudwatch.put_dashboard(DashboardName=f"{APP}Dashboard", DashboardBody='{"widgets": []}')

    run_clean(ds, "setup", cwd=folder)
    run_clean(ds, "startCluster", "files/exampleFleet.json", cwd=folder)

    fleet_id = check_monitor_file(folder, APP, LOG_BUCKET)
    check_task_definition(aws_client("ecs"))
    # Every family run.py named the dashboard APP_NAME (console bookmarks keep working).
    dashboards = cloudwatch.list_dashboards()["DashboardEntries"]
    assert sorted(d["DashboardName"] for d in dashboards) == [APP, f"{APP}Dashboard"]
    widgets = json.loads(cloudwatch.get_dashboard(DashboardName=APP)["DashboardBody"])["widgets"]
    assert widgets
    assert aws_client("ec2").describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)[
        "ActiveInstances"
    ]
    run_clean(ds, "monitor", MONITOR_FILE, "--interval", "1", cwd=folder)
    check_family_nothing_left(fleet_id, APP, DEAD_LETTER_QUEUE)


def test_family_commands_run_a_dcp_folder_on_moto(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_default_profile(tmp_path, monkeypatch)
    folder = make_dcp_folder(tmp_path)

    run_clean(ds, "setup", cwd=folder)
    submitted = run_clean(ds, "submitJob", "files/exampleJob.json", cwd=folder)
    assert "submitted 2 tasks" in submitted.stderr
    run_clean(ds, "startCluster", "files/exampleFleet.json", cwd=folder)
    fleet_id = check_monitor_file(folder, APP, LOG_BUCKET)
    env = check_task_definition(aws_client("ecs"))

    # The test plays the ECS agent: the service's one task, on the fleet's one instance.
    (instance,) = aws_client("ec2").describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)[
        "ActiveInstances"
    ]
    worker = run_family_worker(env, instance["InstanceId"], aws, tmp_path)
    assert worker.returncode == 0, f"the family's worker failed:\n{worker.stderr}"
    alarms = aws_client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert [a["AlarmName"] for a in alarms] == [f"{APP}_{instance['InstanceId']}"]
    assert destination_keys() == EXPECTED_OUTPUTS
    output = aws_client("s3").get_object(
        Bucket=DESTINATION_BUCKET, Key="projects/output/Plate1-A01-2/Image.csv"
    )
    assert output["Body"].read().decode() == (
        "cellprofiler -c -r -p projects/analysis.cppipe -i projects/input/ "
        "--data-file=projects/load_data.csv "
        "-g Metadata_Plate=Plate1,Metadata_Well=A01,Metadata_Site=2"
    )

    monitored = run_clean(ds, "monitor", MONITOR_FILE, "--interval", "1", "--json", cwd=folder)
    counts = json.loads(monitored.stdout)["counts"]
    assert (counts["total"], counts["dead"], counts["failed"], counts["pending"]) == (2, 0, 0, 0)
    # The family's worker keeps no records: what the drained queue showed was recorded, so
    # status says what the report says, after the queue is gone too.
    status = json.loads(run_clean(ds, "status", "--json", cwd=folder).stdout)
    assert status["counts"] == {k: counts[k] for k in status["counts"]} and counts["done"] == 2
    check_family_nothing_left(fleet_id, APP, DEAD_LETTER_QUEUE)
    # The family image ran its own worker: its logs are exported where run.py put them.
    exported = aws_client("s3").list_objects_v2(Bucket=LOG_BUCKET, Prefix="exportedlogs/")
    assert any(f"exportedlogs/{APP}/" in item["Key"] for item in exported.get("Contents", []))


def test_default_profile_missing_from_the_aws_files_means_the_default_chain(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    # The aws fixture: keys in the environment, no AWS config or credentials file (an
    # instance role or SSO looks the same to boto3). The family's run.py used boto3's default
    # chain whatever AWS_PROFILE said; so does ds for 'default'.
    folder = make_dcp_folder(tmp_path)

    run_clean(ds, "setup", cwd=folder)

    queues = aws_client("sqs").list_queues().get("QueueUrls", [])
    assert sorted(url.rsplit("/", 1)[1] for url in queues) == [f"{APP}Queue", DEAD_LETTER_QUEUE]


def test_an_unknown_profile_is_refused_before_anything_is_created(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    folder = make_dcp_folder(tmp_path)
    config = folder / "config.py"
    config.write_text(config.read_text().replace("AWS_PROFILE = 'default'", "AWS_PROFILE = 'lab'"))

    result = ds("setup", cwd=folder)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'lab' is not in the AWS config or credentials files" in result.stderr
    assert "AWS_PROFILE" in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
    assert aws_client("ecs").list_clusters()["clusterArns"] == []
