"""The unattended monitor's handler, run in-process against moto (moto cannot run Lambdas)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.backends.aws.lambda_monitor import (
    MonitorSettings,
    handler,
    monitor_once,
    observation_from,
)
from distributed_something.backends.aws.resources import AwsResources
from distributed_something.backends.aws.teardown import TEARDOWN_STEPS
from distributed_something.errors import InputError
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts
from distributed_something.state import RunState
from testkit import BUCKET, RUN_ID, World, build_world

STATE_KEY = "_ds/T/state.json"
ENV = {
    "DS_APP_NAME": "T",
    "DS_REGION": "us-east-1",
    "DS_STATE_BUCKET": BUCKET,
    "DS_WORKERS": "12",
    "DS_WORKERS_PER_TASK": "3",
    "DS_WORKERS_PER_MACHINE": "6",  # 2 containers of 3 processes per machine: 2 machines
    "DS_DRAIN_CONFIRM_SECONDS": "0",
}


class Context:
    """The part of the Lambda context the handler reads."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def notices_inbox(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a queue subscribed to the monitor's SNS topic (``DS_TOPIC_ARN``): the
    notices it sends land there (`received`)."""
    sns, sqs = world.clients.sns, world.clients.sqs
    topic = sns.create_topic(Name="T-notices")["TopicArn"]
    inbox = sqs.create_queue(QueueName="T-inbox")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"])
    monkeypatch.setenv("DS_TOPIC_ARN", topic)
    return str(inbox)


def received(world: World, inbox: str) -> list[dict[str, Any]]:
    """The notices in ``inbox`` (`notices_inbox`), at most 10."""
    answer = world.clients.sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)
    return list(answer.get("Messages", []))


def put_state(world: World, **fields: Any) -> RunState:
    now = time.time()
    state = RunState(
        run_id=RUN_ID,
        app_name="T",
        backend="aws",
        created_at=now,
        workers_started_at=now,
        **fields,
    )
    world.resources.into(state.resources)
    world.clients.s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=state.model_dump_json())
    return state


def read_state(world: World) -> RunState:
    body = world.clients.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()
    return RunState.model_validate_json(body)


def send(world: World, n: int) -> None:
    entries = [{"Id": str(i), "MessageBody": f"task {i}"} for i in range(n)]
    world.clients.sqs.send_message_batch(QueueUrl=world.resources.queue_url, Entries=entries)


def desired_tasks(world: World) -> int:
    services = world.clients.ecs.describe_services(
        cluster=world.names.cluster, services=[world.names.service]
    )["services"]
    count: int = services[0]["desiredCount"]
    return count


@pytest.fixture
def world(aws: str, monkeypatch: pytest.MonkeyPatch) -> World:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return build_world(service_tasks=0)


def test_handler_scales_up_then_tears_down_a_drained_run(world: World) -> None:
    send(world, 5)
    put_state(world)

    summary = handler({}, Context())

    assert summary["status"] == "running"
    assert summary["counts"] == {"visible": 5, "in_flight": 0, "dead": 0}
    assert summary["actions"] == ["workers=12"]  # fleet already at 2 machines: unchanged
    assert desired_tasks(world) == 4  # 12 workers / 3 per container
    assert not read_state(world).cleaned_up

    world.clients.sqs.purge_queue(QueueUrl=world.resources.queue_url)
    summary = handler({}, Context())

    assert summary["status"] == "torn-down"
    state = read_state(world)
    assert state.cleaned_up and state.finished_at is not None
    assert AwsResources.of(state.resources).cleaned == list(TEARDOWN_STEPS)
    with pytest.raises(world.clients.sqs.exceptions.QueueDoesNotExist):
        world.clients.sqs.get_queue_url(QueueName=world.names.queue)
    assert world.clients.sqs.get_queue_url(QueueName=world.names.dead_letter_queue)
    with pytest.raises(world.clients.events.exceptions.ResourceNotFoundException):
        world.clients.events.describe_rule(Name="T-monitor")

    assert handler({}, Context())["status"] == "finished"  # later ticks do nothing


def test_tail_shrinks_the_fleet_to_the_busy_machines(world: World) -> None:
    send(world, 2)
    world.clients.sqs.receive_message(
        QueueUrl=world.resources.queue_url, MaxNumberOfMessages=2, VisibilityTimeout=300
    )
    put_state(world)

    summary = handler({}, Context())

    assert summary["counts"] == {"visible": 0, "in_flight": 2, "dead": 0}
    assert summary["actions"] == ["machines=1"]  # 2 tasks in flight fit one machine
    fleet = world.clients.ec2.describe_spot_fleet_requests(
        SpotFleetRequestIds=[world.resources.fleet_request_id]
    )["SpotFleetRequestConfigs"][0]
    assert fleet["SpotFleetRequestConfig"]["TargetCapacity"] == 1


def test_handler_prunes_alarms_of_terminated_instances(world: World) -> None:
    send(world, 1)
    put_state(world)
    live, dead = world.instance_ids
    world.clients.ec2.terminate_instances(InstanceIds=[dead])

    summary = handler({}, Context())

    assert summary["pruned_alarms"] == [world.names.instance_alarm(dead)]
    names = [a["AlarmName"] for a in world.clients.cloudwatch.describe_alarms()["MetricAlarms"]]
    assert world.names.instance_alarm(live) in names


def test_teardown_waits_until_the_queue_stayed_drained(world: World) -> None:
    put_state(world)
    env = {**ENV, "DS_DRAIN_CONFIRM_SECONDS": "60"}
    settings = MonitorSettings.from_sources(env)
    clients = AwsClients(AwsSettings(region="us-east-1"))
    t0 = time.time()

    assert monitor_once(settings, clients, now=t0)["status"] == "confirming-drained"
    assert monitor_once(settings, clients, now=t0 + 30)["status"] == "confirming-drained"
    assert world.clients.sqs.get_queue_url(QueueName=world.names.queue)  # not deleted yet

    send(world, 1)  # work shows up: the drained clock starts over
    assert monitor_once(settings, clients, now=t0 + 40)["status"] == "running"
    world.clients.sqs.purge_queue(QueueUrl=world.resources.queue_url)
    assert monitor_once(settings, clients, now=t0 + 70)["status"] == "confirming-drained"
    assert monitor_once(settings, clients, now=t0 + 120)["status"] == "confirming-drained"
    assert monitor_once(settings, clients, now=t0 + 130)["status"] == "torn-down"
    assert read_state(world).cleaned_up


def test_a_teardown_in_progress_is_left_alone(world: World) -> None:
    now = time.time()
    put_state(world, resources={"lambda_monitor": {"teardown_started_at": now - 10}})

    assert handler({}, Context())["status"] == "teardown-in-progress"
    assert world.clients.sqs.get_queue_url(QueueName=world.names.queue)


def test_no_state_in_the_bucket_means_no_run(world: World) -> None:
    assert handler({}, Context())["status"] == "no-run"


def test_a_run_without_a_recorded_queue_is_not_torn_down(world: World) -> None:
    world.resources.queue_url = None  # as if setup were still creating it
    put_state(world)

    assert handler({}, Context())["status"] == "not-set-up"
    assert world.clients.sqs.get_queue_url(QueueName=world.names.queue)
    assert read_state(world).resources["aws"]["cleaned"] == []


def test_event_settings_override_the_environment() -> None:
    env = {**ENV, "AWS_REGION": "eu-west-1", "DS_REGION": ""}
    settings = MonitorSettings.from_sources(env, {"DS_APP_NAME": "Other", "DS_CHEAPEST": True})
    assert settings.app_name == "Other"
    assert settings.region == "eu-west-1"
    assert settings.cheapest is True
    assert settings.state_key == "_ds/Other/state.json"
    assert (settings.workers, settings.workers_per_task, settings.workers_per_machine) == (
        12,
        3,
        6,
    )
    assert MonitorSettings.from_sources({}, settings.as_event()) == settings


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DS_REGION": "us-east-1", "DS_STATE_BUCKET": "b"}, "DS_APP_NAME"),
        ({"DS_APP_NAME": "T", "DS_REGION": "us-east-1"}, "DS_STATE_BUCKET"),
        ({**ENV, "DS_CHEAPEST": "maybe"}, "DS_CHEAPEST"),
        ({**ENV, "DS_WORKERS": "many"}, "DS_WORKERS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as caught:
        MonitorSettings.from_sources(env)
    assert caught.value.field == field


def test_observation_from_raw_attributes() -> None:
    queue = {
        "ApproximateNumberOfMessages": "7",
        "ApproximateNumberOfMessagesNotVisible": "2",
        "ApproximateNumberOfMessagesDelayed": "1",
    }
    service = {"status": "ACTIVE", "desiredCount": 3, "runningCount": 2}
    obs = observation_from(
        queue, {"ApproximateNumberOfMessages": "4"}, service, 100.0, 40.0, workers_per_task=2
    )
    assert obs.counts == QueueCounts(visible=7, in_flight=3, dead=4)
    assert obs.compute == ComputeStatus(desired=6, running=4)
    assert (obs.now, obs.started_at) == (100.0, 40.0)

    gone = observation_from(None, None, None, 1.0, 0.0)
    assert gone.counts.drained and gone.compute == ComputeStatus(0, 0)
    status = ComputeStatus(desired=5, running=5)
    assert observation_from(queue, None, status, 1.0, 0.0).compute == status


def test_the_ledger_not_the_queue_says_when_the_run_is_over(world: World) -> None:
    """An empty queue with a task that has no outcome in the records: the task left the
    queue unseen. The unattended monitor sends it again instead of tearing down, and tears
    down only once the records say it is done (the same drain check as `ds monitor`)."""
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.jobs.model import Task
    from distributed_something.records import Attempt, ManifestEntry, RunRecords

    put_state(world)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    task = Task(body={"group": {"name": "lost"}})
    records.write_manifest("1", [ManifestEntry(task.id, task.group)])

    summary = handler({}, Context())

    assert summary["status"] == "reconciled" and not read_state(world).cleaned_up
    got = world.clients.sqs.receive_message(QueueUrl=world.resources.queue_url)["Messages"]
    assert [m["Body"] for m in got] == [task.body_json()]  # sent again, exactly as submitted
    world.clients.sqs.delete_message(
        QueueUrl=world.resources.queue_url, ReceiptHandle=got[0]["ReceiptHandle"]
    )
    attempt = Attempt(task.id, 1, "m1", "w", time.time(), outcome="done")
    records.close_attempt(attempt)  # a worker completed it

    assert handler({}, Context())["status"] == "torn-down"


def test_two_invocations_at_once_send_a_lost_task_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invocations at once (EventBridge delivered the event twice) both find the queue
    empty and a task without an outcome. Only the first to save the state it read sends
    the task again; the other stops ("state-changed"), rather than sending it a second time
    (two messages of one task: it would run twice where check-if-done is off)."""
    from distributed_something.backends.aws import lambda_monitor
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.jobs.model import Task
    from distributed_something.records import ManifestEntry, RunRecords

    put_state(world)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    task = Task(body={"group": {"name": "lost"}})
    records.write_manifest("1", [ManifestEntry(task.id, task.group)])
    confirm = lambda_monitor.confirm_ending
    other: list[dict[str, Any]] = []

    def both_looked_first(*args: Any) -> Any:
        # This invocation has read the state, the queue and the records; the other one,
        # which read them at the same time, now runs to its end.
        if not other:
            other.append({})
            other[0] = handler({}, Context())
        return confirm(*args)

    monkeypatch.setattr(lambda_monitor, "confirm_ending", both_looked_first)
    summary = handler({}, Context())

    assert other[0]["status"] == "reconciled"
    assert summary["status"] == "state-changed" and "reconciled" not in summary["actions"]
    url = world.resources.queue_url
    got = world.clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == [task.body_json()]  # sent again once


def test_each_tick_counts_through_the_ledger_summary(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While work is queued the unattended monitor counts from the ledger summary, never
    reading every record, and so folds the journal into the checkpoint each tick (what
    keeps `ds status` quick when nobody runs `ds monitor`)."""
    from distributed_something import summary as ledger_summary
    from distributed_something.backends.aws import lambda_monitor
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.ledger import read_ledger
    from distributed_something.records import Attempt, ManifestEntry, RunRecords

    put_state(world)
    send(world, 2)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    records.write_manifest("1", [ManifestEntry(t, {"n": t}) for t in ("a", "b")])

    def whole_reading(_records: RunRecords) -> None:
        raise AssertionError("a whole reading while work is queued")

    monkeypatch.setattr(lambda_monitor, "read_ledger", whole_reading)
    first = handler({}, Context())
    assert first["status"] == "running" and first["tasks"]["pending"] == 2
    written = ledger_summary.read_checkpoint(records)
    assert written is not None and written.counts["pending"] == 2
    attempt = Attempt("a", 1, "m1", "w", time.time())
    records.open_attempt(attempt)  # intent, then the open record
    attempt.outcome, attempt.ended_at = "done", time.time()
    records.close_attempt(attempt)
    second = handler({}, Context())
    assert second["tasks"]["done"] == 1
    assert second["tasks"] == read_ledger(RunRecords(records.storage, "T", RUN_ID)).counts


def test_a_summary_saying_finished_does_not_tear_down_without_the_records(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary that says every task is done while the records do not (a bug, a record
    lost): the unattended monitor reads every record before tearing down, and sends the
    task that left the queue without an outcome again."""
    from distributed_something.backends.aws import lambda_monitor
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.jobs.model import Task
    from distributed_something.records import ManifestEntry, RunRecords

    put_state(world)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    task = Task(body={"group": {"name": "lost"}})
    records.write_manifest("1", [ManifestEntry(task.id, task.group)])
    wrong = {"done": 1, "skipped": 0, "running": 0, "failed": 0, "pending": 0, "dead": 0}
    wrong |= {"total": 1, "duplicates": 0}
    monkeypatch.setattr(lambda_monitor, "read_counts", lambda records, compact: (wrong, {}))

    summary = handler({}, Context())

    assert summary["status"] == "reconciled" and not read_state(world).cleaned_up
    got = world.clients.sqs.receive_message(QueueUrl=world.resources.queue_url)["Messages"]
    assert [m["Body"] for m in got] == [task.body_json()]


def fleet_target(world: World) -> int:
    fleet = world.clients.ec2.describe_spot_fleet_requests(
        SpotFleetRequestIds=[world.resources.fleet_request_id]
    )["SpotFleetRequestConfigs"][0]
    return int(fleet["SpotFleetRequestConfig"]["TargetCapacity"])


def test_workers_that_keep_failing_stop_what_costs_until_start_cluster(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody watches an unattended run: ECS tasks that keep failing (here eight, twice the
    four tasks wanted, as tests/test_aws_failed_tasks.py reads them from DescribeTasks: moto
    stops no task) make
    the monitor set the service and the fleet to 0, mark the run and tell the SNS topic; it
    then starts nothing until `ds start-cluster` saves the run state without the mark."""
    from distributed_something.backends.aws.compute import EcsSpotCompute
    from distributed_something.crash_loop import WorkerFailure

    inbox = notices_inbox(world, monkeypatch)
    now = time.time()
    failures = [
        WorkerFailure(now - 60 + i, f"ECS task t{i}", 2, None, "Essential container exited")
        for i in range(8)
    ]
    answers = [failures]
    monkeypatch.setattr(
        EcsSpotCompute, "_new_failures", lambda self: answers.pop(0) if answers else []
    )
    send(world, 5)
    put_state(world)
    assert handler({}, Context())["actions"] == ["workers=12"]  # the tasks are asked for

    summary = handler({}, Context())  # and keep failing

    assert summary["status"] == "workers-failing"
    assert "ECS task t7 with exit code 2" in summary["error"]
    assert desired_tasks(world) == 0 and fleet_target(world) == 0
    book = read_state(world).resources["lambda_monitor"]
    assert "keep failing" in book["workers_failing"]
    notices = received(world, inbox)
    assert len(notices) == 1 and "keep failing" in notices[0]["Body"]
    assert "`ds start-cluster`" in notices[0]["Body"]

    again = handler({}, Context())  # work is visible, but nothing is started again
    assert again["status"] == "workers-failing" and again["actions"] == []
    assert desired_tasks(world) == 0 and fleet_target(world) == 0

    put_state(world)  # `ds start-cluster` saves the run state: the mark is gone
    resumed = handler({}, Context())
    assert resumed["status"] == "running"
    assert "workers=12" in resumed["actions"] and fleet_target(world) == 2


def test_a_submit_coming_as_the_run_ends_keeps_it_going(world: World) -> None:
    """The run is drained and done, but a submit has announced its sending (it reads the
    state next): the monitor said the run finished and then saw it, so it goes on instead
    of deleting the queue the submit is about to send to."""
    from distributed_something import sending
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.records import RunRecords

    put_state(world)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    sending.announce(records, "42")

    assert handler({}, Context())["status"] == "tasks-submitted"
    state = read_state(world)
    assert state.active and not state.cleaned_up
    assert world.clients.sqs.get_queue_url(QueueName=world.names.queue)

    records.end_sending("42")  # the submit saw the run over and sent nothing
    assert handler({}, Context())["status"] == "torn-down"
    assert not read_state(world).active


def test_a_tick_during_ds_cleanup_starts_nothing_and_leaves_the_state_alone(
    world: World,
) -> None:
    """`ds cleanup` said the run finished and set the service to 0 (its first step) while
    tasks were still queued; the schedule fires before cleanup deletes it. The tick must not
    start workers again (it set the service back to 12 workers) nor write its stale copy of
    the state over cleanup's; `ds monitor` stops acting on a run another command ended."""
    send(world, 5)
    world.resources.cleaned = ["service_to_zero"]
    put_state(world, finished_at=time.time() - 5)
    before = world.clients.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()

    summary = handler({}, Context())

    assert summary["status"] == "teardown-in-progress" and summary["actions"] == []
    assert desired_tasks(world) == 0
    assert world.clients.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read() == before


def test_a_teardown_another_command_left_unfinished_is_finished(world: World) -> None:
    """`ds cleanup` (or `ds monitor`) stopped half way, long ago: the unattended monitor
    finishes the teardown, as `ds monitor` does once another command's teardown stalls."""
    send(world, 5)
    world.resources.cleaned = ["service_to_zero"]
    put_state(world, finished_at=time.time() - 3600)

    summary = handler({}, Context())

    assert summary["status"] == "torn-down" and desired_tasks(world) == 0
    assert read_state(world).cleaned_up


def test_a_failed_look_for_a_submit_lets_the_next_tick_go_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is over; the tick saves it finished, then S3 throttles its look for a submit
    coming. The next tick must go on (look again, tear down): it found the teardown lease
    taken and did nothing for 15 minutes, machines running, submits refused."""
    from distributed_something.backends.aws import lambda_monitor
    from distributed_something.errors import BackendError

    put_state(world)
    looked = lambda_monitor._submit_came

    def throttled(*args: Any, **kwargs: Any) -> bool:
        monkeypatch.setattr(lambda_monitor, "_submit_came", looked)
        raise BackendError("S3: SlowDown (reduce your request rate)")

    monkeypatch.setattr(lambda_monitor, "_submit_came", throttled)
    with pytest.raises(BackendError):
        handler({}, Context())

    summary = handler({}, Context())

    assert summary["status"] == "torn-down"
    assert read_state(world).cleaned_up


def test_the_run_torn_down_unattended_is_listed_finished(world: World) -> None:
    """`ds runs` (and `ds report --run`, `ds logs`) read each run's own copy of its state
    (`state.run_state_key`), which every CLI save writes: the unattended monitor must write
    it too, or a run it tore down stays listed active for ever once the next run starts."""
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.state import all_runs, run_state_key

    state = put_state(world)  # as `ds start-cluster` left it: both copies in progress
    world.clients.s3.put_object(
        Bucket=BUCKET, Key=run_state_key("T", RUN_ID), Body=state.model_dump_json()
    )

    assert handler({}, Context())["status"] == "torn-down"

    (listed,) = all_runs("T", S3Storage(AwsSettings(region="us-east-1"), BUCKET))
    assert listed.cleaned_up and not listed.active


def test_two_invocations_at_once_tear_down_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EventBridge may deliver a scheduled event twice, and Lambda runs both at once: both
    read the state before either writes it. The second to write must see the state changed
    under it and stop (the run is the first's), not tear the run down again over the first
    (a second end-of-run notice, log exports made twice, its stale state saved last)."""
    from distributed_something.backends.aws import lambda_monitor

    inbox = notices_inbox(world, monkeypatch)
    put_state(world)
    load = lambda_monitor._load_state
    other: list[dict[str, Any]] = []

    def both_read_first(*args: Any) -> Any:
        loaded = load(*args)
        if not other:
            other.append({})
            other[0] = handler({}, Context())  # the other delivery, run to its end now
        return loaded

    monkeypatch.setattr(lambda_monitor, "_load_state", both_read_first)
    summary = handler({}, Context())

    assert other[0]["status"] == "torn-down"
    assert summary["status"] == "state-changed" and "teardown" not in summary["actions"]
    assert read_state(world).cleaned_up
    notices = received(world, inbox)
    assert len(notices) == 1


def test_attempts_left_open_are_closed_when_the_monitor_tears_down(world: World) -> None:
    """`ds cleanup` stopped half way (its workers killed, their attempts open) and the
    unattended monitor finishes the teardown: as `ds cleanup` and `ds monitor` do, it
    closes the attempts still open, so the run's tasks read pending (lost), not running
    for ever in `ds status` and the report of a run that is over."""
    from distributed_something.backends.aws.s3_storage import S3Storage
    from distributed_something.jobs.model import Task
    from distributed_something.ledger import read_ledger
    from distributed_something.records import Attempt, ManifestEntry, RunRecords

    send(world, 1)
    world.resources.cleaned = ["service_to_zero"]
    put_state(world, finished_at=time.time() - 3600)
    records = RunRecords(S3Storage(AwsSettings(region="us-east-1"), BUCKET), "T", RUN_ID)
    task = Task(body={"group": {"name": "cut"}})
    records.write_manifest("1", [ManifestEntry(task.id, task.group)])
    records.open_attempt(Attempt(task.id, 1, "m1", "w", time.time() - 4000))

    assert handler({}, Context())["status"] == "torn-down"

    ledger = read_ledger(RunRecords(records.storage, "T", RUN_ID))
    assert ledger.counts["running"] == 0 and ledger.counts["pending"] == 1


def test_a_runtime_botocore_without_conditional_writes_still_saves_the_state() -> None:
    """The Lambda runs on its runtime's own botocore, which may predate PutObject's IfMatch:
    the state is then written unconditionally (as before conditional saves), not lost."""
    from types import SimpleNamespace

    from botocore.exceptions import ParamValidationError

    from distributed_something.backends.aws import lambda_monitor
    from distributed_something.state import RunState

    puts: list[dict[str, Any]] = []

    def put_object(**kwargs: Any) -> dict[str, str]:
        if "IfMatch" in kwargs:
            raise ParamValidationError(report='Unknown parameter in input: "IfMatch"')
        puts.append(kwargs)
        return {"ETag": '"new"'}

    clients = SimpleNamespace(s3=SimpleNamespace(put_object=put_object))
    settings = SimpleNamespace(state_bucket="b", state_key="_ds/T/state.json")
    state = RunState(app_name="T", run_id="r1", backend="aws", created_at=0.0)
    etag = lambda_monitor._save_state(clients, settings, state, '"old"')  # type: ignore[arg-type]
    assert etag == '"new"'
    assert puts[0]["Key"] == "_ds/T/state.json" and len(puts) == 2  # and the run's own copy
    assert all(RunState.model_validate_json(p["Body"]).run_id == "r1" for p in puts)
