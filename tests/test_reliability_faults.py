"""Faults in AWS: calls throttled or failing at random during a whole run, answers lost after
AWS did the work, and the teardown killed with SIGKILL at random moments, then run again.

Faults are injected on ds's own boto3 sessions (a botocore ``before-send`` hook, installed
where `clients` makes sessions): a throttled or failed request never reaches moto; a "lost"
one is sent, then its connection drops before the answer, so botocore sends it again.
Nothing in the product knows about it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session

from distributed_something.backends import open_backend
from distributed_something.backends.aws import clients
from distributed_something.backends.aws.clients import AwsSettings, settings_from
from distributed_something.backends.aws.instance import ensure_idle_alarm
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.teardown import TEARDOWN_STEPS
from distributed_something.backends.aws.worker_side import task_log_factory
from distributed_something.monitor.loop import watch
from distributed_something.recipes.command import CommandRecipe
from distributed_something.report.build import RunReport
from distributed_something.state import require_state
from distributed_something.usecases import lifecycle
from distributed_something.usecases.project import open_project
from distributed_something.worker.loop import Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from moto_projects import (
    REGION,
    assert_nothing_left,
    aws_client,
    aws_project,
    ds_ok,
    leftovers,
    s3_objects,
)
from reliability_figures import Figures
from reliability_figures import figures as figures  # the session fixture
from testkit import expected_output

pytestmark = pytest.mark.slow

SEED = 20240611
TEST_FILE = "tests/test_reliability_faults.py"

# Writes an output derived from the task's name (no sleep: the faults make the run slow enough).
WRITE_OUTPUT = (
    "import sys, os, hashlib\n"
    "out, name = sys.argv[1:3]\n"
    "digest = hashlib.sha256(name.encode()).hexdigest()\n"
    "open(os.path.join(out, 'result.txt'), 'w').write('output of ' + name + ' ' + digest)\n"
)

# --- transient faults ----------------------------------------------------------------------

#: The services a run talks to, by the hyphenated id botocore puts in event names.
SERVICES = ("sqs", "s3", "ecs", "ec2", "logs", "cloudwatch", "events", "ssm")
#: throttle: ThrottlingException & co; server: a 500; reset: the connection drops before the
#: request arrives; lost: AWS does the work but the connection drops before the answer.
KINDS = ("throttle", "server", "reset", "lost")


#: Calls whose answer is never "lost" here, because moto differs from AWS: it answers a
#: repeated CancelSpotFleetRequests with HTTP 500 (AWS: fleetRequestNotInCancellableState,
#: which ds handles), and it ignores RequestSpotFleet's ClientToken (AWS returns the same
#: fleet for a repeated token, and ds sends one), so a repeat would start a second fleet.
NOT_LOST_ON_MOTO = frozenset({"CancelSpotFleetRequests", "RequestSpotFleet"})
#: Operations that change something (their answer lost, the retry repeats the change).
MUTATING = (
    "Create", "Put", "Register", "Request", "Send", "Update", "Modify", "Set", "Tag",
    "Delete", "Deregister", "Cancel", "Terminate", "Purge", "Change",
)  # fmt: skip


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    if len(data) < 24:
        return bytes([0x60 + len(data)]) + data
    return bytes([0x78, len(data)]) + data


def _cbor_map(values: dict[str, str]) -> bytes:
    """A CBOR map of short text keys and values (what the rpc-v2-cbor protocol sends)."""
    out = bytes([0xA0 + len(values)])
    for key, value in values.items():
        out += _cbor_text(key) + _cbor_text(value)
    return out


class _Body:
    """The raw body of a fake HTTP response, as botocore reads it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def error_response(protocol: str, kind: str, url: str) -> AWSResponse:
    """The answer AWS gives, in ``protocol``, to a throttled request or a server fault."""
    throttle = kind == "throttle"
    headers = HeadersDict({"x-amzn-RequestId": "fault-injected"})
    if protocol == "rest-xml":  # S3
        code, status = ("SlowDown", 503) if throttle else ("InternalError", 500)
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    elif protocol == "ec2":
        code, status = ("RequestLimitExceeded", 503) if throttle else ("InternalError", 500)
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error>"
            "</Errors><RequestID>fault</RequestID></Response>"
        ).encode()
    elif protocol == "query":
        code, status = ("Throttling", 400) if throttle else ("InternalFailure", 500)
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected"
            "</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        ).encode()
    elif protocol == "smithy-rpc-v2-cbor":  # CloudWatch
        code, status = ("ThrottlingException", 400) if throttle else ("InternalFailure", 500)
        headers["smithy-protocol"] = "rpc-v2-cbor"
        headers["Content-Type"] = "application/cbor"
        body = _cbor_map({"__type": code, "message": "injected"})
    else:  # json
        code, status = ("ThrottlingException", 400) if throttle else ("InternalFailure", 500)
        headers["x-amzn-ErrorType"] = code
        headers["Content-Type"] = "application/x-amz-json-1.0"
        body = json.dumps({"__type": code, "message": "injected"}).encode()
    return AWSResponse(url, status, headers, _Body(body))


class FaultInjector:
    """Fails ``rate`` of the AWS calls of ds's sessions at random: throttled
    (ThrottlingException, 503 SlowDown, RequestLimitExceeded), a server fault (500), a
    connection dropped before the request arrives, or one dropped after AWS did the work
    (the answer is lost: botocore sends the request again). Counts calls, faults and the
    retries botocore reports."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.active = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.retries = 0
        self.forced: list[str] = []
        #: lose the answer of the first call of each mutating operation (targeted mode)
        self.lose_first_answers = False
        self.lost_answers: list[str] = []
        self.http = URLLib3Session()  # sends a request whose answer is then "lost"
        session = botocore.session.get_session()
        self.protocols = {}
        for name in SERVICES:
            model = session.get_service_model(name)
            self.protocols[model.service_id.hyphenize()] = model.resolved_protocol

    def install(self, session: Any) -> None:
        session.events.register("before-send", self.before_send)
        session.events.register("after-call", self.after_call)

    def before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".")[:3]
        with self.lock:
            if not self.active:
                return None
            self.calls[service] += 1
            if self.lose_first_answers:
                if not operation.startswith(MUTATING) or operation in NOT_LOST_ON_MOTO:
                    return None
                if operation in self.lost_answers:
                    return None
                self.lost_answers.append(operation)
                kind = "lost"
            elif self.forced:
                kind = self.forced.pop(0)
            elif self.rng.random() < self.rate:
                kind = self.rng.choice(KINDS)
                if kind == "lost" and operation in NOT_LOST_ON_MOTO:
                    kind = "reset"
            else:
                return None
            self.faults[kind] += 1
        if kind == "lost":
            self.http.send(request)
        if kind in ("reset", "lost"):
            raise ConnectionClosedError(endpoint_url=request.url)
        return error_response(self.protocols.get(service, "json"), kind, request.url)

    def after_call(self, parsed: Any, **_: Any) -> None:
        attempts = int((parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts", 0))
        with self.lock:
            if self.active:
                self.retries += attempts


@pytest.fixture
def injector(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultInjector]:
    """A fault injector on every boto3 session ds makes during the test."""
    faults = FaultInjector(rate=0.10, seed=SEED)
    original = clients._new_session

    def new_session(boto3: Any, settings: AwsSettings) -> Any:
        session = original(boto3, settings)
        faults.install(session)
        return session

    monkeypatch.setattr(clients, "_new_session", new_session)
    clients._sessions.clear()
    yield faults
    faults.active = False
    clients._sessions.clear()  # later tests get sessions without the hooks


def probe(faults: FaultInjector) -> dict[str, int]:
    """Each kind of fault on each service, once: botocore must retry it and succeed."""
    settings = AwsSettings(region=REGION)
    calls = {
        "sqs": lambda c: c.list_queues(),
        "s3": lambda c: c.list_buckets(),
        "ecs": lambda c: c.list_clusters(),
        "ec2": lambda c: c.describe_spot_fleet_requests(),
        "logs": lambda c: c.describe_log_groups(),
        "cloudwatch": lambda c: c.list_dashboards(),
        "events": lambda c: c.list_rules(),
    }
    retried: dict[str, int] = {}
    faults.active = True
    try:
        for service, call in calls.items():
            client = clients.client(service, settings)
            for kind in KINDS:
                faults.forced = [kind]
                response = call(client)
                # At least the injected fault was retried (a real dropped keep-alive
                # connection to the server may add one).
                assert response["ResponseMetadata"]["RetryAttempts"] >= 1, (service, kind)
                retried[f"{service} {kind}"] = 1
    finally:
        faults.active = False
    return retried


def run_in_process(
    proj: Path, tmp_path: Path, *, workers: int
) -> tuple[RunReport, list[BaseException]]:
    """Set up, submit, start the cluster, run ``workers`` `Worker.run` threads while the
    monitor watches, then finish (report and teardown); returns the report and the errors
    the worker threads raised."""
    project = open_project(proj / "ds.toml")
    config = project.config
    lifecycle.setup(project)
    lifecycle.submit(project, proj / "files" / "job.json", show_progress=False)
    lifecycle.start_cluster(project, proj / "files" / "fleet.json")
    backend = open_backend(project)
    state = require_state(project, backend.storage)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            worker = Worker(
                config,
                open_backend(project),
                CommandRecipe(),
                SubprocessRunner(),
                WorkerSettings(
                    name=f"worker-{index}",
                    run_id=state.run_id,
                    scratch_root=tmp_path / f"scratch-{index}",
                    poll_interval=0.2,
                    max_poll_interval=1.0,
                ),
                task_log=task_log_factory(config, settings_from(config.aws.region, None)),
            )
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    watch(config, backend, state, interval=0.5, show_progress=False)
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "workers still running"
    return lifecycle.finish(project, backend, state), errors


@pytest.mark.timeout(280)
def test_a_run_with_failing_aws_calls_loses_nothing(
    injector: FaultInjector, tmp_path: Path, figures: Figures
) -> None:
    app, bucket, tasks = "FAULTY", "ds-faulty", 30
    scenario = figures.scenario(
        "transient-faults",
        "Transient AWS faults (throttling, 5xx, dropped connections)",
        test=f"{TEST_FILE}::test_a_run_with_failing_aws_calls_loses_nothing",
        assertion=(
            "every kind of injected fault is retried by botocore on every service (probe); the "
            "run (setup, submit, start-cluster, 2 workers, monitor, teardown) then completes with "
            "every task done with one output, read back and right, nothing dead, failed or "
            "pending, no error reaching the run, every injected fault retried, and nothing left "
            "but the dead-letter queue"
        ),
        setup={
            "tasks": tasks,
            "calls failed at random": f"{injector.rate:.0%} of ds's AWS calls",
            "kinds of fault": "throttled (ThrottlingException / 503 SlowDown / "
            "RequestLimitExceeded), 500 InternalError, connection dropped before the request, "
            "answer lost after AWS did the work",
            "where": "a botocore `before-send` hook on the sessions ds makes (the product "
            "has no test-only code)",
            "retry mode": "botocore standard, 10 attempts (ds's default)",
            "run": "in-process: setup, submit, start-cluster, 2 `Worker.run` threads, monitor",
        },
    )
    started = time.monotonic()
    probed = probe(injector)
    injector.calls.clear()  # count the run's calls, faults and retries only
    injector.faults.clear()
    injector.retries = 0
    names = [f"item-{i:02d}" for i in range(tasks)]
    proj = writing_project(tmp_path / "proj", app, bucket, names, machines=1, per_machine=2)
    injector.active = True
    report, errors = run_in_process(proj, tmp_path, workers=2)
    injector.active = False
    wall = time.monotonic() - started
    assert errors == []
    counts = report.counts
    assert counts["done"] == tasks and counts["total"] == tasks
    assert counts["dead"] == counts["failed"] == counts["pending"] == 0
    outputs = {key.split("/")[1]: body.decode() for key, body in s3_objects(bucket, "out/").items()}
    assert outputs == {n: expected_output(n) for n in names}
    assert [len(t.outputs) for t in report.tasks] == [1] * tasks
    faults = sum(injector.faults.values())
    assert faults > 0 and all(injector.faults[k] > 0 for k in KINDS)
    assert injector.retries >= faults  # every injected fault was retried
    left = leftovers(app)
    assert_nothing_left(app)
    calls = sum(injector.calls.values())
    scenario.measure("probe: fault kinds × services retried", len(probed))
    scenario.measure("AWS calls during the run", calls)
    for kind in KINDS:
        scenario.measure(f"faults injected: {kind}", injector.faults[kind])
    scenario.measure("fault rate observed", f"{faults / calls:.1%}")
    scenario.measure("retries botocore reported", injector.retries)
    scenario.measure("done", counts["done"])
    scenario.measure("duplicates", counts["duplicates"])
    scenario.measure("dead / failed / pending", f"{counts['dead']} / 0 / 0")
    scenario.measure("errors surfaced to the run", len(errors))
    scenario.measure(
        "resources left besides the dead-letter queue", sum(map(len, left.values())) - 1
    )
    scenario.measure("wall time (s)", wall)
    scenario.held()


@pytest.mark.timeout(200)
def test_lost_answers_of_mutating_calls_change_nothing(
    injector: FaultInjector, tmp_path: Path, figures: Figures
) -> None:
    app, bucket, tasks = "LOSTANSWER", "ds-lost-answers", 6
    scenario = figures.scenario(
        "lost-answers",
        "Answers lost after AWS did the work",
        test=f"{TEST_FILE}::test_lost_answers_of_mutating_calls_change_nothing",
        assertion=(
            "with the answer of the first call of every mutating operation lost (botocore "
            "sends it again), the run still completes: every task done once with its output, "
            "nothing dead, failed or pending, no error, and nothing left but the dead-letter "
            "queue (a repeated SendMessageBatch only queues duplicates, skipped by the done "
            "marker)"
        ),
        setup={
            "tasks": tasks,
            "fault": "the first call of each Create/Put/Register/Request/Send/Update/Modify/"
            "Set/Tag/Delete/Deregister/Terminate/Purge/Change operation is sent, then its "
            "connection drops before the answer",
            "not lost (moto differs from AWS)": "CancelSpotFleetRequests (moto answers a "
            "repeat with HTTP 500), RequestSpotFleet (moto ignores the ClientToken ds sends)",
            "run": "in-process: setup, submit, start-cluster, 1 `Worker.run` thread, monitor",
        },
    )
    started = time.monotonic()
    names = [f"lost-{i}" for i in range(tasks)]
    proj = writing_project(tmp_path / "proj", app, bucket, names, machines=1, per_machine=1)
    injector.lose_first_answers = True
    injector.active = True
    report, errors = run_in_process(proj, tmp_path, workers=1)
    injector.active = False
    assert errors == []
    counts = report.counts
    assert counts["done"] == tasks and counts["dead"] == counts["failed"] == 0
    assert counts["pending"] == 0 and counts["duplicates"] == 0
    outputs = {key.split("/")[1]: body.decode() for key, body in s3_objects(bucket, "out/").items()}
    assert outputs == {n: expected_output(n) for n in names}
    lost = injector.lost_answers
    for operation in ("CreateQueue", "CreateService", "SendMessageBatch", "DeleteQueue"):
        assert operation in lost
    # The repeated SendMessageBatch queued each task twice: the second copy was skipped.
    skips = s3_objects(bucket, f"_ds/{app}/runs/{report.run_id}/skipped/")
    assert len(skips) == tasks
    left = leftovers(app)
    assert_nothing_left(app)
    scenario.measure("operations whose first answer was lost", len(lost))
    scenario.measure("those operations", ", ".join(sorted(lost)))
    scenario.measure("done", counts["done"])
    scenario.measure("duplicate messages the worker skipped (done marker found)", len(skips))
    scenario.measure("dead / failed / pending", "0 / 0 / 0")
    scenario.measure(
        "resources left besides the dead-letter queue", sum(map(len, left.values())) - 1
    )
    scenario.measure("wall time (s)", time.monotonic() - started)
    scenario.held()


# --- teardown killed mid-way -------------------------------------------------------------------


def cleaned_steps(state_path: Path) -> list[str]:
    """The teardown steps the run state records as done ([] before any)."""
    try:
        data = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return []
    steps: list[str] = data.get("resources", {}).get("aws", {}).get("cleaned", [])
    return steps


def writing_project(
    folder: Path, app: str, bucket: str, names: list[str], *, machines: int, per_machine: int
) -> Path:
    """An AWS project whose tasks each write one output (`WRITE_OUTPUT`), lease 10 s, 3 tries."""
    return aws_project(
        folder,
        app=app,
        bucket=bucket,
        names=names,
        argv=["{python}", "-c", WRITE_OUTPUT, "{output_dir}", "{name}"],
        cluster={"machines": machines, "tasks_per_machine": per_machine, "docker_cores": 1},
        queue={"visibility": 10, "job_retries": 3},
    )


def prepare_run(folder: Path, app: str, bucket: str) -> Path:
    """A run as start-cluster and its workers leave it: queues, cluster, task definition,
    service, spot fleet with instances, log groups with events, dashboard, and the idle-CPU
    alarm of every instance."""
    proj = writing_project(folder, app, bucket, ["a"], machines=2, per_machine=1)
    project = open_project(proj / "ds.toml")
    lifecycle.setup(project)
    lifecycle.start_cluster(project, proj / "files" / "fleet.json")
    names = AwsNames(project.config)
    ec2, cloudwatch, logs = aws_client("ec2"), aws_client("cloudwatch"), aws_client("logs")
    fleet = json.loads(project.state_path.read_text())["resources"]["aws"]["fleet_request_id"]
    instances = [
        i["InstanceId"]
        for i in ec2.describe_spot_fleet_instances(SpotFleetRequestId=fleet)["ActiveInstances"]
    ]
    assert instances
    for instance in instances:
        ensure_idle_alarm(
            cloudwatch,
            alarm_name=names.instance_alarm(instance),
            instance_id=instance,
            region=REGION,
        )
    logs.create_log_stream(logGroupName=names.log_group, logStreamName="worker")
    logs.put_log_events(
        logGroupName=names.log_group,
        logStreamName="worker",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "a worker was here"}],
    )
    return proj


@pytest.mark.timeout(240)
def test_teardown_killed_at_random_moments_then_rerun_leaves_nothing(
    aws: str, tmp_path: Path, figures: Figures
) -> None:
    rng = random.Random(SEED)
    steps = len(TEARDOWN_STEPS)
    kill_after = sorted(rng.sample(range(1, steps), 5))
    scenario = figures.scenario(
        "cleanup-crashes",
        "Teardown killed mid-way (SIGKILL), then run again",
        test=f"{TEST_FILE}::test_teardown_killed_at_random_moments_then_rerun_leaves_nothing",
        assertion=(
            "after each kill the rerun exits 0, records all teardown steps, and leaves "
            "nothing but the dead-letter queue (no queue, service, task definition, cluster, "
            "spot fleet or instance, alarm or dashboard); the logs were exported to the bucket"
        ),
        setup={
            "trials": len(kill_after),
            "teardown steps": steps,
            "killed once the state records k steps, k =": ", ".join(map(str, kill_after)),
            "killed process": "`ds monitor` (its teardown) and `ds cleanup`, alternately",
            "rerun": "the same command, to completion",
            "run torn down": "queues, cluster, task definition, service, spot fleet of 2 "
            "instances with idle-CPU alarms, log groups with events, dashboard",
        },
    )
    started = time.monotonic()
    at_kill: list[int] = []
    left = 0
    for trial, k in enumerate(kill_after):
        app = f"CRASH{trial}"
        command = ["monitor", "--interval", "0.2"] if trial % 2 == 0 else ["cleanup"]
        proj = prepare_run(tmp_path / app, app, f"ds-crash-{trial}")
        state_path = proj / ".ds" / app / "state.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed_something", *command],
            cwd=proj,
            env={**os.environ, "COLUMNS": "200"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and len(cleaned_steps(state_path)) < k:
                assert time.monotonic() < deadline, "the teardown did not progress"
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        done_at_kill = cleaned_steps(state_path)
        at_kill.append(len(done_at_kill))
        assert done_at_kill == list(TEARDOWN_STEPS[: len(done_at_kill)])
        ds_ok(*command, cwd=proj, ok=(0,))
        state = json.loads(state_path.read_text())
        assert state["cleaned_up"] is True
        assert state["resources"]["aws"]["cleaned"] == list(TEARDOWN_STEPS)
        left += sum(map(len, leftovers(app).values())) - 1
        assert_nothing_left(app)
        exported = s3_objects(f"ds-crash-{trial}", f"_ds/{app}/runs/{state['run_id']}/")
        assert any("/logs-export/" in key for key in exported)
    interrupted = sum(1 for n in at_kill if n < steps)
    # The kills landed inside the teardown (not all after it had finished).
    assert interrupted >= len(kill_after) - 1
    scenario.measure("steps done when killed", ", ".join(map(str, at_kill)))
    scenario.measure("kills that interrupted the teardown", interrupted)
    scenario.measure("reruns that completed the teardown", len(kill_after))
    scenario.measure("resources left besides the dead-letter queues", left)
    scenario.measure("wall time (s)", time.monotonic() - started)
    scenario.held()
