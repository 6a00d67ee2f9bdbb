"""Test data, fakes and helpers shared by several test files: the family's fleet file, a
fake clock, the no-op compute and provisioner, `wait_for` (polling for real state), process
checks, a loopback file server, the OME-Zarr test modules, and a run's AWS resources built on
moto (`build_world`; boto3 is imported only when it is called)."""

from __future__ import annotations

import contextlib
import copy
import email.utils
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws import principals
from distributed_something.backends.aws.bootstrap import trust_policy
from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.config.model import Config
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.worker.procgroups import (
    GroupRecord,
    proc_info,
    record_path,
    this_machine,
)
from family_templates import FAMILY_FLEET as SHIPPED_FLEET

#: Seconds before a wait for real state gives up (never reached when things work).
WAIT = 20.0


#: The end-to-end task: records each start in a ledger, fails while its name says poison and
#: the ledger is not "cured", sleeps, then writes its result.
E2E_WORK = (
    "import sys, time, os\n"
    "out, name, ledger, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])\n"
    "with open(ledger, 'a') as f: f.write(name + '\\n')\n"
    "if name.startswith('poison') and not os.path.exists(ledger + '.cured'):\n"
    "    print('poisoned input', name, file=sys.stderr); sys.exit(7)\n"
    "time.sleep(seconds)\n"
    "open(os.path.join(out, 'result.txt'), 'w').write('result of ' + name)\n"
)


def wait_for(condition: Callable[[], object], timeout: float = WAIT) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass (a generous upper
    bound); the result is asserted by the caller."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def running(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie has; PID 1 here may never
    reap the orphans it inherits)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not sys.platform.startswith("linux")
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def local_bucket(proj: Path, app: str = "T", bucket: str = "default") -> Any:
    """The main local bucket of the project folder ``proj`` (app ``app``) as the local
    backend opens it: its records area in SQLite (records_store.py), the rest in files."""
    from distributed_something.backends.local.records_store import LocalBucket, SqliteObjects
    from distributed_something.backends.local.storage import FolderStorage

    state = proj / ".ds" / app
    return LocalBucket(
        FolderStorage(state / "buckets" / bucket),
        SqliteObjects(state / "records" / f"{bucket}.sqlite"),
    )


#: Runs `SubprocessRunner` in a small process (as a worker is) and prints the result's exit
#: code, peak memory and CPU time: a command's wait4 peak counts only when it is above its
#: spawner's own (`runner._Child.peak_mb`), and the test process is large.
_SMALL_SPAWNER = """
import json, sys, threading
from pathlib import Path
from distributed_something.worker.runner import SubprocessRunner
result = SubprocessRunner(measure=sys.argv[2] == "measure").run(
    json.loads(sys.argv[1]), cwd=Path(sys.argv[3]), env={"PATH": "/usr/bin:/bin"},
    log_path=Path(sys.argv[3]) / "t.log", stop=threading.Event(),
)
print(json.dumps([result.exit_code, result.peak_memory_mb, result.cpu_seconds]))
"""


def run_from_a_small_process(
    argv: list[str], folder: Path, *, measure: bool = True
) -> tuple[int | None, float | None, float | None]:
    """(exit code, peak memory MB, CPU seconds) of ``argv`` run by a `SubprocessRunner` in
    a small Python process of its own (see `_SMALL_SPAWNER`)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _SMALL_SPAWNER, json.dumps(argv), "measure" if measure else "off",
         str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    code, peak, cpu = json.loads(done.stdout)
    return code, peak, cpu


def read_pid(path: Path) -> int:
    """The pid a process wrote first in ``path``, once it is there."""
    assert wait_for(lambda: path.exists() and path.read_text().strip()), f"no pid in {path}"
    return int(path.read_text().split()[0])


def dcp_fleet(*, valid_until: str | None = None) -> dict[str, Any]:
    """A fresh copy of the family's files/exampleFleet_us-east-1.json (as shipped) with
    its account ids, subnet and security group filled in; with ``valid_until``, the file also
    carries that ``ValidUntil`` (as copies of the family's file do, long expired). Callers
    may change the copy freely."""
    data = copy.deepcopy(SHIPPED_FLEET)
    data["IamFleetRole"] = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"
    spec = data["LaunchSpecifications"][0]
    spec["IamInstanceProfile"]["Arn"] = "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"
    spec["NetworkInterfaces"][0]["SubnetId"] = "subnet-0123abcd"
    spec["NetworkInterfaces"][0]["Groups"] = ["sg-0123abcd"]
    if valid_until is None:
        return data
    # After TerminateInstancesWithExpiration, where the family's copies carry it.
    items = list(data.items())
    at = [key for key, _ in items].index("TerminateInstancesWithExpiration") + 1
    return dict([*items[:at], ("ValidUntil", valid_until), *items[at:]])


#: The ValidUntil of the family file as users' copies carry it: long expired.
FAMILY_VALID_UNTIL = "2019-01-01T00:00:00Z"


#: DCP's exampleFleet.json as a user's copy reads once filled in (see `dcp_fleet`).
FAMILY_FLEET: dict[str, Any] = dcp_fleet(valid_until=FAMILY_VALID_UNTIL)


def moto_family_fleet(ec2: Any, key_name: str | None = None) -> dict[str, Any]:
    """The family's fleet file (expired ValidUntil included) pointed at moto's default
    subnet and security group, read through the EC2 client ``ec2``; its KeyName
    ``key_name`` when given (a config.py's SSH_KEY_NAME does not replace it)."""
    data = dcp_fleet(valid_until=FAMILY_VALID_UNTIL)
    if key_name is not None:
        data["LaunchSpecifications"][0]["KeyName"] = key_name
    interface = data["LaunchSpecifications"][0]["NetworkInterfaces"][0]
    interface["SubnetId"] = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    interface["Groups"] = [ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]]
    return data


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the folder ``root`` while the block runs (as a
    lab's web server serves the script a DF config's SCRIPT_DOWNLOAD_URL names); yields its
    base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class AnsweringHandler(BaseHTTPRequestHandler):
    """A loopback endpoint's handler that reads each request whole and answers with
    `answer`; quiet (no request log on stderr)."""

    def read_request(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def answer(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def expected_output(name: str) -> str:
    """What the reliability tests' tasks write for ``name`` (computed independently of the
    run): "output of NAME SHA256(NAME)"."""
    return f"output of {name} {hashlib.sha256(name.encode()).hexdigest()}"


class FakeClock:
    """A clock that moves only when something sleeps: call it for the time, pass ``sleep``
    as the sleep function; ``sleeps`` lists every sleep asked for, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        # Not zero by default: code that takes 0 for "no time yet" would pass unnoticed.
        self.start = start
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move time on without recording a sleep."""
        self.now += seconds


class NoCompute:
    """A `Compute` with no workers, for a worker driven by hand."""

    def start(self, n: int) -> None: ...
    def scale(self, n: int) -> None: ...
    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def status(self) -> ComputeStatus:
        return ComputeStatus(0, 0)

    def scale_machines(self, n: int) -> None: ...
    def housekeeping(self) -> None: ...
    def stop(self) -> None: ...
    def cleanup(self) -> None: ...


class NoProvisioner:
    """A `Provisioner` that creates nothing."""

    def setup(self, state: Any, save: Any, previous: Any = None) -> None: ...
    def start(self, state: Any, fleet: Any, workers: int, save: Any) -> None: ...
    def teardown(self, state: Any, save: Any) -> None: ...


def omezarr_modules() -> tuple[Any, Any, Any, Any]:
    """numpy, tifffile, ome_zarr.reader and ome_zarr.io, or a skip naming the extra that
    installs them (`make examples` does: under CI=true the skip fails)."""
    np = pytest.importorskip("numpy")
    tifffile = pytest.importorskip("tifffile")
    missing = "the omezarr extra is not installed: pip install -e '.[omezarr]' (make examples)"
    pytest.importorskip("zarr", reason=missing)
    reader = pytest.importorskip("ome_zarr.reader", reason=missing)
    ome_io = pytest.importorskip("ome_zarr.io", reason=missing)
    return np, tifffile, reader, ome_io


# --- a run's AWS resources on moto (the `aws` fixture must be active) -------------------------

BUCKET = "ds-teardown-bucket"
RUN_ID = "20260101-000000-abcdef"
OTHER_APP_ALARM = "T_2_i-0123456789abcdef0"  # app "T_2": shares the prefix "T_", not ours


@dataclass
class World:
    """A run's AWS resources as setup and start-cluster would leave them."""

    clients: AwsClients
    names: AwsNames
    resources: AwsResources
    instance_ids: list[str]


def moto_queue_and_bucket(name: str, max_receive_count: int = 3) -> tuple[Any, Any]:
    """On moto (inside the `aws` fixture): an SQS queue ``name`` with its dead-letter queue
    (``name``-dead, after ``max_receive_count`` receives), as an `SqsQueue` that waits for
    nothing, and an S3 bucket ``name`` (lower case) as an `S3Storage`."""
    from distributed_something.backends.aws.clients import client
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.backends.aws.sqs_queue import SqsQueue

    settings = AwsSettings(region="us-east-1")
    sqs = client("sqs", settings)
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})[
        "QueueUrl"
    ]
    bucket = name.lower()
    client("s3", settings).create_bucket(Bucket=bucket)
    queue = SqsQueue(settings, url, dead, max_receive_count=max_receive_count, wait_seconds=0)
    return queue, S3Storage(settings, bucket)


def age_s3(storage: Any, seconds: float) -> None:
    """Make S3's clock (moto's), as this storage's reads see it, ``seconds`` later: the
    ``Date`` of every GetObject answer is moved on, as a real S3 would say it after that
    long. (moto's objects cannot be written in the past.)"""

    def later(parsed: dict[str, Any], **_: Any) -> None:
        headers = parsed.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if "date" in headers:
            moved = email.utils.parsedate_to_datetime(headers["date"]) + timedelta(seconds=seconds)
            headers["date"] = email.utils.format_datetime(moved, usegmt=True)

    storage._client.meta.events.register("after-call.s3.GetObject", later)


def make_config(app: str = "T", cluster: str = "TCluster") -> Config:
    return Config(app_name=app, backend="aws", aws={"ecs_cluster": cluster})


def build_world(
    *, with_monitor: bool = True, service_tasks: int = 2, family_image: bool = False
) -> World:
    """Create queue + DLQ, cluster, task definitions, service, fleet, alarms, dashboard,
    log groups with events, monitor objects and the bucket, directly with boto3.

    The task definitions run ``ds worker`` (their entryPoint, as setup writes it), or with
    ``family_image`` the image's own worker (no entryPoint, as for the family's images)."""
    aws = AwsClients(AwsSettings(region="us-east-1"))
    names = AwsNames(make_config())
    res = AwsResources(region="us-east-1")
    aws.s3.create_bucket(Bucket=BUCKET)

    dlq = aws.sqs.create_queue(QueueName=names.dead_letter_queue)["QueueUrl"]
    dlq_arn = aws.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    queue = aws.sqs.create_queue(QueueName=names.queue, Attributes={"RedrivePolicy": redrive})
    res.queue_url, res.dead_letter_queue_url = queue["QueueUrl"], dlq

    aws.ecs.create_cluster(clusterName=names.cluster)
    res.cluster, res.cluster_created = names.cluster, True
    container: list[dict[str, Any]] = [{"name": names.container, "image": "img", "memory": 128}]
    if not family_image:
        container[0]["entryPoint"] = ["ds", "worker"]
    arns = [
        aws.ecs.register_task_definition(family=names.task_family, containerDefinitions=container)[
            "taskDefinition"
        ]["taskDefinitionArn"]
        for _ in range(2)
    ]
    # Only the latest revision is recorded: the family lookup must find the other one.
    res.task_definition_arns = arns[-1:]
    aws.ecs.register_task_definition(
        family=f"{names.task_family}Other", containerDefinitions=container
    )
    aws.ecs.create_service(
        cluster=names.cluster,
        serviceName=names.service,
        taskDefinition=arns[-1],
        desiredCount=service_tasks,
    )
    res.service = names.service

    image = "ami-12c6146b"  # any id: moto does not check it (listing images is slow)
    fleet = aws.ec2.request_spot_fleet(
        SpotFleetRequestConfig={
            "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "TargetCapacity": 2,
            "AllocationStrategy": "lowestPrice",  # moto requires it (AWS defaults it)
            "LaunchSpecifications": [{"ImageId": image, "InstanceType": "m5.large"}],
        }
    )
    res.fleet_request_id = fleet["SpotFleetRequestId"]
    active = aws.ec2.describe_spot_fleet_instances(SpotFleetRequestId=res.fleet_request_id)
    instance_ids = [i["InstanceId"] for i in active["ActiveInstances"]]
    assert len(instance_ids) == 2
    for alarm in [*(names.instance_alarm(i) for i in instance_ids), OTHER_APP_ALARM]:
        put_alarm(aws, alarm)

    aws.cloudwatch.put_dashboard(DashboardName=names.dashboard, DashboardBody='{"widgets": []}')
    res.dashboard = names.dashboard
    for group in (names.log_group, names.instance_log_group):
        aws.logs.create_log_group(logGroupName=group)
        aws.logs.create_log_stream(logGroupName=group, logStreamName="stream")
        aws.logs.put_log_events(
            logGroupName=group,
            logStreamName="stream",
            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"hello {group}"}],
        )
        res.log_groups.append(group)

    if with_monitor:
        res.monitor_objects = make_monitor_objects(aws)
    return World(aws, names, res, instance_ids)


def put_alarm(aws: AwsClients, name: str) -> None:
    aws.cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=15,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
    )


def make_monitor_objects(aws: AwsClients) -> dict[str, str]:
    """The unattended monitor's rule (with a target), alarm and invoke permission."""
    trust = json.dumps(trust_policy(principals.LAMBDA))
    role = aws.iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument=trust)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    function = aws.lambda_.create_function(
        FunctionName="ds-monitor",
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": buffer.getvalue()},
    )["FunctionArn"]
    aws.events.put_rule(Name="T-monitor", ScheduleExpression="rate(1 minute)")
    aws.events.put_targets(Rule="T-monitor", Targets=[{"Id": "monitor", "Arn": function}])
    aws.lambda_.add_permission(
        FunctionName="ds-monitor",
        StatementId="T-monitor-invoke",
        Action="lambda:InvokeFunction",
        Principal=principals.EVENTS,
    )
    put_alarm(aws, "T-queue-alarm")
    return {
        "rule": "T-monitor",
        "alarm": "T-queue-alarm",
        "function": "ds-monitor",
        "permission": "T-monitor-invoke",
    }


def _cellprofiler_missing() -> bool:
    from distributed_something.recipes.cellprofiler import find_executable

    return shutil.which(find_executable()) is None


#: Skips a test when CellProfiler is not installed (`make examples` installs it; under
#: CI=true the skip fails).
needs_cellprofiler = pytest.mark.skipif(
    _cellprofiler_missing(),
    reason="CellProfiler is not installed: install it with `make examples` "
    "(scripts/install-cellprofiler.sh PYTHON .venv/bin)",
)


# --- records of dead workers (worker/procgroups.py) ---------------------------------------


def dead_worker() -> tuple[int, int]:
    """The pid and start time of a process that has exited (a worker that died)."""
    proc = subprocess.Popen(["sleep", "60"])
    info = proc_info(proc.pid)
    proc.kill()
    proc.wait()
    assert info is not None
    return proc.pid, info.start


def record_for(worker: tuple[int, int], pgid: int, leader_start: int) -> GroupRecord:
    machine = this_machine()
    assert machine is not None
    return GroupRecord(
        machine.host, machine.boot_id, machine.pid_ns, worker[0], worker[1], pgid, leader_start
    )


def write_record(scratch: Path, record: GroupRecord) -> Path:
    path = record_path(scratch, record.worker_pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.to_json())
    return path
