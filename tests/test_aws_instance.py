"""The worker's instance features: IMDSv2, spot notices, resource log, name tag, idle alarms,
and task logs shipped to CloudWatch Logs — against a loopback metadata server and moto."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.compute import delete_alarms, describe_fleet
from distributed_something.backends.aws.instance import (
    REBALANCE_PATH,
    SPOT_ACTION_PATH,
    Imds,
    InterruptionWatcher,
    ResourceLogger,
    alarms_of_terminated,
    cpu_percent,
    ensure_idle_alarm,
    format_bytes,
    imds_from_env,
    parse_meminfo,
    parse_proc_stat,
    tag_instance_name,
    terminate_instance,
)
from distributed_something.backends.aws.task_logs import (
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    CloudWatchTaskLog,
    batches,
    split_message,
)
from distributed_something.errors import BackendError
from imds_server import FakeImds, imds_server
from testkit import WAIT, wait_for

REGION = "us-east-1"


@pytest.fixture
def fake_imds() -> Any:
    with imds_server() as fake:
        yield fake


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- IMDSv2 ---------------------------------------------------------------------------------


def test_fake_imds_refuses_a_get_without_token(fake_imds: FakeImds) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{fake_imds.url}/latest/meta-data/instance-id", timeout=5)
    assert info.value.code == 401


def test_token_then_gets_with_the_token(fake_imds: FakeImds) -> None:
    imds = Imds(fake_imds.url, token_ttl=300)
    assert imds.instance_id() == fake_imds.instance_id
    assert imds.instance_type() == "m5.large"
    assert imds.region() == "us-east-1"

    methods = [(m, p) for m, p, _ in fake_imds.requests]
    assert methods[0] == ("PUT", "/latest/api/token")
    assert fake_imds.requests[0][2]["x-aws-ec2-metadata-token-ttl-seconds"] == "300"
    # One token serves every GET, and every GET carries it.
    assert fake_imds.count("PUT", "/latest/api/token") == 1
    tokens = {h.get("x-aws-ec2-metadata-token") for m, _, h in fake_imds.requests if m == "GET"}
    assert len(tokens) == 1 and None not in tokens
    assert tokens <= fake_imds.tokens


def test_missing_path_is_none(fake_imds: FakeImds) -> None:
    imds = Imds(fake_imds.url)
    assert imds.get(SPOT_ACTION_PATH) is None
    assert imds.get("no/such/thing") is None
    assert fake_imds.requests[-1][1] == "/latest/meta-data/no/such/thing"


def test_token_is_renewed_on_401(fake_imds: FakeImds) -> None:
    imds = Imds(fake_imds.url)
    imds.instance_id()
    fake_imds.expire_tokens()
    assert imds.instance_type() == "m5.large"
    assert fake_imds.count("PUT", "/latest/api/token") == 2
    assert [m for m, _, _ in fake_imds.requests[-3:]] == ["GET", "PUT", "GET"]


def test_token_is_renewed_before_it_expires(fake_imds: FakeImds) -> None:
    now = [0.0]
    imds = Imds(fake_imds.url, token_ttl=600, clock=lambda: now[0])
    imds.instance_id()
    now[0] = 100.0
    imds.instance_id()
    assert fake_imds.count("PUT", "/latest/api/token") == 1
    now[0] = 600.0
    imds.instance_id()
    assert fake_imds.count("PUT", "/latest/api/token") == 2
    # Renewed before use: no GET was refused and retried.
    assert [m for m, _, _ in fake_imds.requests] == ["PUT", "GET", "GET", "PUT", "GET"]


def test_unhealthy_service_is_a_backend_error(fake_imds: FakeImds) -> None:
    imds = Imds(fake_imds.url)
    imds.instance_id()
    fake_imds.fail_with = 500
    with pytest.raises(BackendError, match="HTTP 500"):
        imds.instance_type()


def test_no_service_is_a_backend_error() -> None:
    imds = Imds(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(BackendError, match="did not answer"):
        imds.instance_id()


def test_imds_from_env_uses_ds_metadata_url(
    fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DS_METADATA_URL", fake_imds.url)
    imds = imds_from_env()
    assert imds is not None
    assert imds.instance_id() == fake_imds.instance_id


def test_imds_from_env_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS_METADATA_URL", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "TRUE")
    assert imds_from_env() is None


def test_imds_from_env_none_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_METADATA_URL", f"http://127.0.0.1:{free_port()}")
    assert imds_from_env(timeout=2) is None


# --- spot interruption --------------------------------------------------------------------------


def test_watcher_calls_on_notice_once(fake_imds: FakeImds) -> None:
    notices: list[str] = []
    called = threading.Event()

    def on_notice(action: str) -> None:
        notices.append(action)
        watcher.stop()  # as a worker does: from inside the watcher's thread
        called.set()

    watcher = InterruptionWatcher(Imds(fake_imds.url), on_notice, interval=0.02)
    watcher.start()
    try:
        assert wait_for(lambda: fake_imds.count("GET", SPOT_ACTION_PATH) >= 2)
        assert notices == []
        fake_imds.interrupt("stop")
        assert called.wait(WAIT)
        watcher.stop()
    finally:
        watcher.stop()
    assert not watcher.running
    assert len(notices) == 1
    assert json.loads(notices[0])["action"] == "stop"
    assert watcher.notice == notices[0]


def test_watcher_survives_errors_and_logs_rebalance(
    fake_imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ds.instance")
    called = threading.Event()

    def on_notice(action: str) -> None:
        called.set()
        raise RuntimeError("handler bug")

    fake_imds.fail_with = 503
    with InterruptionWatcher(Imds(fake_imds.url), on_notice, interval=0.02) as watcher:
        assert wait_for(lambda: len(fake_imds.requests) >= 3)
        assert watcher.running
        fake_imds.fail_with = None
        fake_imds.recommend_rebalance()
        assert wait_for(lambda: watcher.rebalance is not None)
        assert not called.is_set()
        fake_imds.interrupt()
        assert called.wait(WAIT)
    assert fake_imds.count("GET", REBALANCE_PATH) >= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("check failed" in m and "503" in m for m in messages)
    assert sum("rebalance recommendation" in m for m in messages) == 1
    assert any("handler failed" in m for m in messages)


# --- resource log -------------------------------------------------------------------------------

MEMINFO = """\
MemTotal:       16314212 kB
MemFree:         1200000 kB
MemAvailable:    8157106 kB
Buffers:          200000 kB
Cached:          5000000 kB
HugePages_Total:       0
"""

STAT_1 = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n"
STAT_2 = "cpu  160 0 70 900 70 0 0 0 0 0\ncpu0 80 0 35 450 35 0 0 0 0 0\nintr 1 2 3\n"


def test_parse_meminfo() -> None:
    info = parse_meminfo(MEMINFO + "garbage line\nEmpty:\n")
    assert info["MemTotal"] == 16314212 * 1024
    assert info["MemAvailable"] == 8157106 * 1024
    assert info["HugePages_Total"] == 0
    assert "Empty" not in info and "garbage line" not in info


def test_cpu_percent_math() -> None:
    prev = parse_proc_stat(STAT_1)
    cur = parse_proc_stat(STAT_2)
    assert prev == (100, 0, 50, 800, 50, 0, 0, 0, 0, 0)
    # total +200 jiffies, idle+iowait +120 → 80 busy → 40 %
    assert cpu_percent(prev, cur) == pytest.approx(40.0)
    assert cpu_percent(prev, prev) == 0.0
    assert cpu_percent((), cur) == 0.0
    # guest time (fields 9-10) is already in user: it must not count twice
    guest = (160, 0, 70, 900, 70, 0, 0, 0, 500, 0)
    assert cpu_percent(prev, guest) == pytest.approx(40.0)
    assert cpu_percent((0, 0, 0, 0), (10, 0, 0, 0)) == pytest.approx(100.0)


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_resource_logger_logs_disk_memory_cpu(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "stat").write_text(STAT_1)
    records: list[str] = []
    logged = threading.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())
            logged.set()

    logger = logging.getLogger("test.resources")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    try:
        resources = ResourceLogger(tmp_path, interval=0.02, log=logger, proc_root=proc)
        with resources:
            (proc / "stat").write_text(STAT_2)
            assert logged.wait(WAIT)
    finally:
        logger.removeHandler(handler)
    line = records[0]
    assert f"disk {tmp_path}: used " in line and "free " in line
    used = format_bytes((16314212 - 8157106) * 1024)
    assert f"memory: used {used}, available {format_bytes(8157106 * 1024)}" in line
    assert "cpu 40.0%" in line


def test_resource_logger_without_proc(tmp_path: Path) -> None:
    resources = ResourceLogger(tmp_path, proc_root=tmp_path / "nothing")
    line = resources.summary()
    assert line.startswith(f"disk {tmp_path}: used ")
    assert "memory" not in line and "cpu" not in line


# --- tags and alarms (moto) ---------------------------------------------------------------------


def _clients() -> tuple[Any, Any]:
    settings = AwsSettings(REGION)
    return client("ec2", settings), client("cloudwatch", settings)


def _run_instances(ec2: Any, count: int) -> list[str]:
    # moto does not check that the AMI exists (describing its catalogue is slow)
    reply = ec2.run_instances(
        ImageId="ami-12345678", MinCount=count, MaxCount=count, InstanceType="t3.micro"
    )
    return [i["InstanceId"] for i in reply["Instances"]]


def test_tag_instance_name(aws: str) -> None:
    ec2, _ = _clients()
    (instance_id,) = _run_instances(ec2, 1)
    tag_instance_name(ec2, instance_id, "MyApp worker")
    tags = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "Tags"
    ]
    assert {"Key": "Name", "Value": "MyApp worker"} in tags


def test_aws_failure_is_a_one_line_backend_error() -> None:
    from botocore.exceptions import ClientError

    class Refusing:
        def create_tags(self, **kwargs: Any) -> None:
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}, "CreateTags"
            )

    with pytest.raises(BackendError, match="ec2:CreateTags") as info:
        tag_instance_name(Refusing(), "i-0abc", "x")
    assert "i-0abc" in str(info.value) and "\n" not in str(info.value)


def test_ensure_idle_alarm_reads_back_and_is_idempotent(aws: str) -> None:
    _, cloudwatch = _clients()
    for _ in range(2):
        ensure_idle_alarm(
            cloudwatch, alarm_name="App_i-1", instance_id="i-1", region="eu-west-1", minutes=15
        )
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix="App_")["MetricAlarms"]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["AlarmName"] == "App_i-1"
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/EC2", "CPUUtilization")
    # As the family's workers set it (Maximum: an instance busy at all in a minute is not idle).
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Period"] == 60
    assert alarm["EvaluationPeriods"] == 15
    assert alarm["Threshold"] == 1.0
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["AlarmActions"] == ["arn:aws:automate:eu-west-1:ec2:terminate"]
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": "i-1"}]

    # Calling again with other settings updates the same alarm.
    ensure_idle_alarm(
        cloudwatch,
        alarm_name="App_i-1",
        instance_id="i-1",
        region="eu-west-1",
        minutes=5,
        threshold_percent=2.5,
    )
    (alarm,) = cloudwatch.describe_alarms(AlarmNamePrefix="App_")["MetricAlarms"]
    assert (alarm["EvaluationPeriods"], alarm["Threshold"]) == (5, 2.5)


def test_alarms_of_terminated_and_delete(aws: str) -> None:
    ec2, cloudwatch = _clients()
    live, dead = _run_instances(ec2, 2)
    gone = "i-0fffffffffffffff0"  # never existed (or terminated long ago)
    for instance_id in (live, dead, gone):
        ensure_idle_alarm(
            cloudwatch, alarm_name=f"App_{instance_id}", instance_id=instance_id, region=REGION
        )
    ensure_idle_alarm(cloudwatch, alarm_name=f"Other_{dead}", instance_id=dead, region=REGION)
    cloudwatch.put_metric_alarm(  # an alarm of the app without an instance: not ours to judge
        AlarmName="App_queue",
        Namespace="AWS/SQS",
        MetricName="ApproximateNumberOfMessagesVisible",
        Dimensions=[{"Name": "QueueName", "Value": "q"}],
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
    )
    assert alarms_of_terminated(cloudwatch, ec2, "App_") == [f"App_{gone}"]

    ec2.terminate_instances(InstanceIds=[dead])
    stale = alarms_of_terminated(cloudwatch, ec2, "App_")
    assert stale == sorted([f"App_{dead}", f"App_{gone}"])

    delete_alarms(cloudwatch, [*stale, "App_never_created"])
    left = {a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert left == {f"App_{live}", f"Other_{dead}", "App_queue"}
    assert alarms_of_terminated(cloudwatch, ec2, "App_") == []


def test_delete_alarms_in_batches_of_100() -> None:
    from botocore.exceptions import ClientError

    calls: list[list[str]] = []

    class Recorder:
        def delete_alarms(self, AlarmNames: list[str]) -> None:
            calls.append(AlarmNames)
            if "missing" in AlarmNames and len(AlarmNames) > 1:
                raise ClientError(
                    {"Error": {"Code": "ResourceNotFound", "Message": "no"}}, "DeleteAlarms"
                )

    names = [f"a{i:03d}" for i in range(250)]
    delete_alarms(Recorder(), names + names[:10])
    assert [len(c) for c in calls] == [100, 100, 50]
    assert sorted(n for c in calls for n in c) == sorted(names)

    calls.clear()
    delete_alarms(Recorder(), ["x", "missing", "y"])
    assert calls == [["missing", "x", "y"], ["missing"], ["x"], ["y"]]


def test_terminate_instance(aws: str) -> None:
    ec2, _ = _clients()
    mine, other = _run_instances(ec2, 2)
    terminate_instance(ec2, mine)
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=[mine, other])["Reservations"]
        for i in r["Instances"]
    }
    assert states[mine] in ("shutting-down", "terminated") and states[other] == "running"


def test_a_refused_termination_names_the_permission() -> None:
    from botocore.exceptions import ClientError

    class Refusing:
        def terminate_instances(self, **kwargs: Any) -> None:
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}},
                "TerminateInstances",
            )

    with pytest.raises(BackendError, match="ec2:TerminateInstances") as info:
        terminate_instance(Refusing(), "i-0abc")
    assert "i-0abc" in str(info.value) and "\n" not in str(info.value)


# --- unparseable answers (a proxy's HTML page instead of AWS) --------------------------------

#: Not well-formed XML (an unclosed <br>), as proxies' and captive portals' pages often are.
HTML_PAGE = b"<html><body><h1>Proxy</h1><p>Please sign in<br></body></html>"


@pytest.fixture
def html_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Every AWS call goes to a loopback server that answers any request with HTML."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML_PAGE)))
            self.end_headers()
            self.wfile.write(HTML_PAGE)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    from distributed_something.backends.aws import clients

    clients._sessions.clear()  # no session of another test's endpoint or credentials
    yield
    server.shutdown()
    server.server_close()
    thread.join(10)


def assert_one_line(error: BaseException, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message and "<html>" not in message, message
    assert "Unable to parse response" in message, message
    for part in parts:
        assert part in message, message


def test_unparseable_answers_are_one_line_backend_errors(html_endpoint: Any) -> None:
    from botocore.parsers import ResponseParserError

    ec2 = client("ec2", AwsSettings(REGION))
    with pytest.raises(ResponseParserError):  # what botocore makes of the page
        ec2.describe_instances()
    with pytest.raises(BackendError) as tagged:
        tag_instance_name(ec2, "i-0abc", "x")
    assert_one_line(tagged.value, "could not tag instance i-0abc", "ec2:CreateTags")
    with pytest.raises(BackendError) as terminated:
        terminate_instance(ec2, "i-0abc")
    assert_one_line(terminated.value, "could not terminate instance i-0abc")
    with pytest.raises(BackendError) as described:
        describe_fleet(ec2, "sfr-00000000-0000-0000-0000-000000000000")
    assert_one_line(described.value, "could not describe the spot fleet request")


def test_an_unparseable_alarm_deletion_is_a_one_line_backend_error() -> None:
    from botocore.parsers import ResponseParserError

    class Garbled:
        def delete_alarms(self, AlarmNames: list[str]) -> None:
            raise ResponseParserError(
                "Unable to parse response (not well-formed), invalid XML received. Further "
                "retries may succeed:\n" + HTML_PAGE.decode()
            )

    with pytest.raises(BackendError) as info:
        delete_alarms(Garbled(), ["App_i-1"])
    assert_one_line(info.value, "could not delete alarm App_i-1")


def test_an_unparseable_answer_during_teardown_names_the_step(aws: str) -> None:
    from distributed_something.backends.aws.resources import AwsNames, AwsResources
    from distributed_something.backends.aws.teardown import AwsClients, teardown
    from distributed_something.config.model import Config

    clients = AwsClients(AwsSettings(REGION))

    def html_instead(response_dict: dict[str, Any], **kwargs: Any) -> None:
        # moto's real answer is replaced by a proxy's page before botocore parses it.
        response_dict["body"] = HTML_PAGE

    clients.ec2.meta.events.register("before-parse.ec2.DescribeInstances", html_instead)
    resources = AwsResources(
        region=REGION,
        fleet_request_id="sfr-00000000-0000-0000-0000-000000000000",
        cleaned=["service_to_zero"],
    )
    config = Config.model_validate({"app_name": "Garbled", "backend": "aws"})
    with pytest.raises(BackendError) as info:
        teardown(clients, AwsNames(config), resources, bucket="b", run_id="r", save=lambda r: None)
    assert_one_line(info.value, "AWS cleanup step 'cancel_fleet' failed", "ds cleanup")
    assert resources.cleaned == ["service_to_zero"]


# --- task logs to CloudWatch Logs ---------------------------------------------------------------


def _events(logs: Any, group: str, stream: str) -> list[str]:
    """The stream's messages; none while it does not exist (made with the first lines)."""
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)
    if stream not in [s["logStreamName"] for s in streams["logStreams"]]:
        return []
    reply = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"] for e in reply["events"]]


def _streams(logs: Any, group: str) -> list[str]:
    return [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]]


def test_task_log_ships_lines_while_running_and_rest_on_exit(aws: str, tmp_path: Path) -> None:
    logs = client("logs", AwsSettings(REGION))
    logs.create_log_group(logGroupName="App")
    path = tmp_path / "task.log"
    with CloudWatchTaskLog(logs, "App", "task-1", path, interval=0.02) as shipper:
        # No stream before the first line: CreateLogStream (50 a second per account) is
        # not on the way of each command's start.
        assert _streams(logs, "App") == []
        with path.open("a") as fh:
            fh.write("first line\nsecond line\n")
        assert wait_for(lambda: _events(logs, "App", "task-1") == ["first line", "second line"])
        with path.open("a") as fh:
            fh.write("third\n\nfourth without newline")
    assert _events(logs, "App", "task-1") == [
        "first line",
        "second line",
        "third",
        "fourth without newline",
    ]
    assert shipper.lines_shipped == 4 and shipper.lines_dropped == 0

    # The stream already exists: a second attempt appends to it.
    path.write_text("again\n")
    with CloudWatchTaskLog(logs, "App", "task-1", path, interval=60):
        pass
    assert _events(logs, "App", "task-1")[-1] == "again"

    # A credential the command prints never reaches CloudWatch (as the stored log).
    path.write_text("connecting to postgres://app:Hunter2Secret@db.invalid/lab\n")
    with CloudWatchTaskLog(logs, "App", "task-1", path, interval=60):
        pass
    assert _events(logs, "App", "task-1")[-1] == (
        "connecting to postgres://app:[credential removed by ds]@db.invalid/lab"
    )

    # A task that prints nothing makes no stream at all.
    path.write_text("")
    with CloudWatchTaskLog(logs, "App", "task-2", path, interval=0.02) as quiet:
        time.sleep(0.1)
    assert _streams(logs, "App") == ["task-1"] and quiet.lines_shipped == 0


def test_lines_cloudwatch_rejects_are_counted_dropped_not_shipped() -> None:
    from distributed_something.backends.aws.task_logs import rejected_count

    assert rejected_count({"tooOldLogEventEndIndex": 3}, 10) == 3
    assert rejected_count({"tooNewLogEventStartIndex": 8}, 10) == 2
    assert rejected_count({"expiredLogEventEndIndex": 4, "tooNewLogEventStartIndex": 9}, 10) == 5
    assert rejected_count({"tooOldLogEventEndIndex": 50}, 10) == 10


def test_task_log_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from botocore.exceptions import ClientError

    class Broken:
        def create_log_stream(self, **kwargs: Any) -> None:
            pass

        def put_log_events(self, **kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "x"}}, "Put")

    path = tmp_path / "task.log"
    path.write_text("a\nb\n")
    caplog.set_level(logging.WARNING, logger="ds.task_logs")
    with CloudWatchTaskLog(Broken(), "g", "s", path, interval=60) as shipper:
        pass
    assert shipper.lines_dropped == 2 and shipper.lines_shipped == 0
    assert any("dropped 2 lines" in r.getMessage() for r in caplog.records)


def test_task_log_missing_group_is_logged_not_raised(
    aws: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = client("logs", AwsSettings(REGION))
    path = tmp_path / "task.log"
    path.write_text("line\n")
    caplog.set_level(logging.WARNING, logger="ds.task_logs")
    with CloudWatchTaskLog(logs, "NoSuchGroup", "s", path, interval=0.02) as shipper:
        pass
    assert shipper.lines_shipped == 0
    assert any("NoSuchGroup" in r.getMessage() for r in caplog.records)


def test_batches_respect_put_log_events_limits() -> None:
    small = [(1000 + i, "x") for i in range(MAX_BATCH_EVENTS + 1)]
    sizes = [len(b) for b in batches(small)]
    assert sizes == [MAX_BATCH_EVENTS, 1]

    big = "y" * 100_000
    groups = list(batches((1000, big) for _ in range(25)))
    for group in groups:
        assert sum(len(e["message"]) + EVENT_OVERHEAD for e in group) <= MAX_BATCH_BYTES
    assert [len(g) for g in groups] == [10, 10, 5]

    day = 24 * 3600 * 1000
    spans = list(batches([(0, "a"), (day - 1, "b"), (day, "c")]))
    assert [[e["message"] for e in b] for b in spans] == [["a", "b"], ["c"]]

    ordered = [e["timestamp"] for b in batches(small) for e in b]
    assert ordered == sorted(ordered)


def test_split_message_keeps_characters_whole() -> None:
    assert split_message("short") == ["short"]
    text = "é" * MAX_EVENT_BYTES  # two bytes each
    pieces = split_message(text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= MAX_EVENT_BYTES for p in pieces)
    assert split_message("abcdé", limit=4) == ["abcd", "é"]
    assert split_message("aébc", limit=2) == ["a", "é", "bc"]


def test_task_log_does_not_wait_for_a_hanging_call(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Hanging:
        def create_log_stream(self, **kwargs: Any) -> None:
            pass

        def put_log_events(self, **kwargs: Any) -> dict[str, Any]:
            entered.set()
            release.wait(WAIT)
            return {}

    path = tmp_path / "task.log"
    shipper = CloudWatchTaskLog(Hanging(), "g", "s", path, interval=0.01, exit_timeout=0.05)
    try:
        with shipper:
            path.write_text("line\n")
            assert entered.wait(WAIT)
        # The block ended while the call still hung: nothing counted as shipped yet.
        assert shipper.lines_shipped == 0
    finally:
        release.set()
