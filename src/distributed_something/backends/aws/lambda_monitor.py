"""The unattended monitor: one tick of `ds monitor`, run by AWS Lambda on a schedule.

Each invocation loads the run state from the bucket, observes the queue and the ECS
service, asks the same pure policy as `ds monitor` (`monitor.policy.decide`) what to do,
and does it: scale workers and the fleet, prune the alarms of terminated instances, and
when the queue is drained, tear everything down (saving the state back to the bucket after
each step, so a timed-out invocation is finished by the next one or by `ds cleanup`).

Settings come from environment variables, and entries of the invocation event with the
same names override them — so one function (made by `ds aws bootstrap`) can serve many
apps, each scheduled by an EventBridge rule whose target input carries its settings
(`MonitorSettings.as_event` builds that input):

- ``DS_APP_NAME`` (required), ``DS_REGION`` (default: ``AWS_REGION``),
  ``DS_STATE_BUCKET`` (required), ``DS_STATE_KEY`` (default ``_ds/<app>/state.json``);
- ``DS_WORKERS`` (worker processes the run asked for; default: the service's desired
  count), ``DS_WORKERS_PER_TASK`` (processes per container, default 1),
  ``DS_WORKERS_PER_MACHINE`` (default: workers per task), ``DS_CHEAPEST`` (true/false);
- ``DS_CLEAN_DASHBOARD`` (default true), ``DS_CLUSTER``, ``DS_LOG_GROUP`` (names the
  config would derive them from, when the state does not record them);
- ``DS_DRAIN_CONFIRM_SECONDS`` (default 60): the queue must look drained for this long
  before teardown, because SQS counts are approximate and deleting the queue of a run
  that still has tasks would lose them; and then the run's ledger (its records) must give
  every task an outcome — the same drain check as `ds monitor` (`monitor.policy.drain_check`);
  tasks that left the queue without an outcome are found in the dead letters or sent again;
- ``DS_LEDGER`` (default true; false for the family's images, whose worker keeps no
  records), ``DS_MAX_RECEIVE_COUNT`` (the queue's, default 3);
- ``DS_TOPIC_ARN`` (optional): an SNS topic told when the run has been cleaned up.

The monitor's own bookkeeping (when the queue first looked drained, when a teardown
started) is kept in the run state under ``resources["lambda_monitor"]``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from botocore.exceptions import ClientError

from distributed_something.backends.aws.clients import AwsClients, AwsSettings
from distributed_something.backends.aws.compute import EcsSpotCompute, status_from_service
from distributed_something.backends.aws.errors import aws_call, error_code
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.aws.sqs_queue import SqsQueue
from distributed_something.backends.aws.teardown import SQS_GONE, teardown
from distributed_something.config.model import Config
from distributed_something.errors import BackendError, DSError, InputError
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.queue import QueueCounts
from distributed_something.ledger import read_counts, read_ledger
from distributed_something.monitor.policy import (
    Observation,
    PolicyConfig,
    ReplaceWorkers,
    ScaleTo,
    Teardown,
    decide,
    drain_check,
)
from distributed_something.monitor.progress import from_counts
from distributed_something.monitor.settle import (
    close_open_attempts,
    confirm_ending,
    end_retries,
    record_image_outcomes,
    settle,
)
from distributed_something.records import META_ROOT, RunRecords
from distributed_something.sending import under_way
from distributed_something.state import MONITOR_BOOK, WORKERS_FAILING, RunState, run_state_key

log = logging.getLogger(__name__)

#: Where the monitor keeps its own bookkeeping inside ``RunState.resources``.
BOOKKEEPING = MONITOR_BOOK
#: A teardown started less than this long ago is assumed to be still running (the Lambda
#: time limit): an overlapping invocation leaves it alone. Judged against a `finished_at`
#: another machine wrote, the lease is as much shorter or longer as that machine's clock is
#: off AWS's: at most 15 minutes, or SigV4 would refuse its requests (RequestTimeTooSkewed;
#: botocore does not correct the skew).
TEARDOWN_LEASE_SECONDS = 15 * 60
#: Set in the bookkeeping while the teardown is this monitor's own (it said the run finished):
#: a run said finished by another command is that command's to tear down for as long.
OWN_TEARDOWN = "teardown_by_monitor"
#: Time kept back from the Lambda's remaining time for saving the state after waits.
_MARGIN_SECONDS = 30.0
_QUEUE_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
_SOURCE = "monitor function environment"


@dataclass(frozen=True)
class MonitorSettings:
    """What one app's unattended monitor needs to know (see the module docstring)."""

    app_name: str
    region: str
    state_bucket: str
    state_key: str
    workers: int | None = None
    workers_per_task: int = 1
    workers_per_machine: int | None = None
    cheapest: bool = False
    clean_dashboard: bool = True
    drain_confirm_seconds: float = 60.0
    #: the run's workers keep records (a recipe is set): its ledger decides when it is over;
    #: False for the family's images, whose own worker keeps none (the queue decides)
    ledger: bool = True
    #: the queue's maxReceiveCount (to re-send tasks that left it without an outcome)
    max_receive_count: int = 3
    cluster: str | None = None
    log_group: str | None = None
    topic_arn: str | None = None

    @classmethod
    def from_sources(
        cls, env: Mapping[str, str], event: Mapping[str, Any] | None = None
    ) -> MonitorSettings:
        """Settings from ``env``, overridden by ``DS_*`` entries of ``event``.

        Raises `InputError` naming the variable when a required one is missing or a value
        is not what it should be.
        """
        values = {k: str(v) for k, v in env.items() if k.startswith("DS_")}
        for key, value in (event or {}).items():
            if isinstance(key, str) and key.startswith("DS_") and value is not None:
                values[key] = str(value).lower() if isinstance(value, bool) else str(value)
        app = _required(values, "DS_APP_NAME", "the app name, e.g. MyProject")
        region = values.get("DS_REGION") or env.get("AWS_REGION") or ""
        if not region:
            _missing("DS_REGION", 'the AWS region, e.g. "us-east-1"')
        per_machine = _int(values, "DS_WORKERS_PER_MACHINE", None)
        return cls(
            app_name=app,
            region=region,
            state_bucket=_required(values, "DS_STATE_BUCKET", "the main bucket's name"),
            state_key=values.get("DS_STATE_KEY") or f"{META_ROOT}/{app}/state.json",
            workers=_int(values, "DS_WORKERS", None),
            workers_per_task=_int(values, "DS_WORKERS_PER_TASK", 1) or 1,
            workers_per_machine=per_machine,
            cheapest=_bool(values, "DS_CHEAPEST", False),
            clean_dashboard=_bool(values, "DS_CLEAN_DASHBOARD", True),
            drain_confirm_seconds=float(_int(values, "DS_DRAIN_CONFIRM_SECONDS", 60) or 0),
            ledger=_bool(values, "DS_LEDGER", True),
            max_receive_count=_int(values, "DS_MAX_RECEIVE_COUNT", 3) or 3,
            cluster=values.get("DS_CLUSTER") or None,
            log_group=values.get("DS_LOG_GROUP") or None,
            topic_arn=values.get("DS_TOPIC_ARN") or None,
        )

    def as_event(self) -> dict[str, str]:
        """These settings as ``DS_*`` entries: the input of an EventBridge target."""
        pairs: dict[str, object] = {
            "DS_APP_NAME": self.app_name,
            "DS_REGION": self.region,
            "DS_STATE_BUCKET": self.state_bucket,
            "DS_STATE_KEY": self.state_key,
            "DS_WORKERS": self.workers,
            "DS_WORKERS_PER_TASK": self.workers_per_task,
            "DS_WORKERS_PER_MACHINE": self.workers_per_machine,
            "DS_CHEAPEST": self.cheapest,
            "DS_CLEAN_DASHBOARD": self.clean_dashboard,
            "DS_DRAIN_CONFIRM_SECONDS": int(self.drain_confirm_seconds),
            "DS_LEDGER": self.ledger,
            "DS_MAX_RECEIVE_COUNT": self.max_receive_count,
            "DS_CLUSTER": self.cluster,
            "DS_LOG_GROUP": self.log_group,
            "DS_TOPIC_ARN": self.topic_arn,
        }
        return {
            key: (str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in pairs.items()
            if value is not None
        }

    def names(self) -> AwsNames:
        """The app's AWS names, derived as the config derives them."""
        aws: dict[str, Any] = {"region": self.region}
        if self.cluster:
            aws["ecs_cluster"] = self.cluster
        if self.log_group:
            aws["log_group_name"] = self.log_group
        return AwsNames(Config(app_name=self.app_name, backend="aws", aws=aws))


def observation_from(
    attrs_queue: Mapping[str, str] | None,
    attrs_dlq: Mapping[str, str] | None,
    service: Mapping[str, Any] | ComputeStatus | None,
    now: float,
    started_at: float,
    *,
    workers_per_task: int = 1,
) -> Observation:
    """The policy's `Observation` from raw AWS answers.

    ``attrs_queue``/``attrs_dlq`` are GetQueueAttributes ``Attributes`` (None: the queue is
    gone, which counts as empty). Delayed messages count as in flight: they are not done.
    ``service`` is an ECS service description (counts in tasks, multiplied by
    ``workers_per_task``), a `ComputeStatus` already in workers, or None (no service).
    """
    queue = attrs_queue or {}
    counts = QueueCounts(
        visible=_count(queue, "ApproximateNumberOfMessages"),
        in_flight=_count(queue, "ApproximateNumberOfMessagesNotVisible")
        + _count(queue, "ApproximateNumberOfMessagesDelayed"),
        dead=_count(attrs_dlq or {}, "ApproximateNumberOfMessages"),
    )
    if isinstance(service, ComputeStatus):
        compute = service
    else:
        compute = status_from_service(service, workers_per_task)
    return Observation(now=now, counts=counts, compute=compute, started_at=started_at)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point: one monitor tick for the app the settings name.

    Returns a summary: ``status`` ("running", "confirming-drained", "torn-down",
    "teardown-in-progress", "finished", "not-set-up", "no-run" or "state-changed"), the queue
    counts, and the actions taken. Idempotent: running it again (or late, or twice) does no
    harm: it saves the state only over the version it read (an S3 conditional write), so of
    two invocations at once, the second to save stops there ("state-changed").
    """
    logging.getLogger().setLevel(logging.INFO)
    settings = MonitorSettings.from_sources(
        os.environ, event if isinstance(event, Mapping) else None
    )
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = remaining() / 1000.0 - _MARGIN_SECONDS if callable(remaining) else 600.0
    clients = AwsClients(AwsSettings(region=settings.region))
    summary = monitor_once(settings, clients, wait_timeout=max(budget / 3, 10.0))
    log.info("%s", json.dumps(summary))
    return summary


def monitor_once(
    settings: MonitorSettings,
    clients: AwsClients,
    *,
    now: float | None = None,
    wait_timeout: float = 300.0,
) -> dict[str, Any]:
    """One tick of the unattended monitor (what `handler` runs), with injectable time.

    ``now`` is the wall-clock time of the tick (default: ``time.time()``);
    ``wait_timeout`` bounds each wait of a teardown (see `teardown`).
    """
    now = time.time() if now is None else now
    summary: dict[str, Any] = {"app": settings.app_name, "actions": []}
    try:
        return _tick(settings, clients, now, wait_timeout, summary)
    except StateChanged:
        # Another invocation (EventBridge delivered the event twice) or a command (`ds
        # cleanup`) wrote the state since this tick read it: the run is theirs now; the
        # next tick starts from what they wrote.
        log.info("the run state changed under this tick: it stops here")
        return {**summary, "status": "state-changed"}


class StateChanged(Exception):
    """The run state in the bucket is no longer the one this tick read."""


def _tick(
    settings: MonitorSettings,
    clients: AwsClients,
    now: float,
    wait_timeout: float,
    summary: dict[str, Any],
) -> dict[str, Any]:
    loaded = _load_state(clients, settings)
    if loaded is None:
        return {**summary, "status": "no-run"}
    state, etag = loaded
    summary["run_id"] = state.run_id
    if state.cleaned_up or state.backend != "aws":
        return {**summary, "status": "finished"}
    resources = AwsResources.of(state.resources)
    if not resources.queue_url:
        # Setup has not recorded the queue yet: an absent queue must not read as "drained".
        return {**summary, "status": "not-set-up"}
    book: dict[str, Any] = state.resources.setdefault(BOOKKEEPING, {})

    def save(updated: AwsResources | None = None) -> None:
        nonlocal etag
        (updated if updated is not None else resources).into(state.resources)
        # Only over the state this tick read (S3 conditional write): `StateChanged` else.
        etag = _save_state(clients, settings, state, etag)

    started = book.get("teardown_started_at")
    if isinstance(started, int | float) and now - started < TEARDOWN_LEASE_SECONDS:
        return {**summary, "status": "teardown-in-progress"}
    ended_by_other = state.finished_at is not None and not book.get(OWN_TEARDOWN)
    if ended_by_other and now - (state.finished_at or 0.0) < TEARDOWN_LEASE_SECONDS:
        # Another command said the run is over (`ds cleanup`, or `ds monitor` finishing
        # it) and is tearing it down: acting on the run (starting workers its first step
        # stopped) or saving this tick's copy of the state over its own would undo it.
        return {**summary, "status": "teardown-in-progress"}

    names = settings.names()
    compute = EcsSpotCompute(
        clients.settings, names, lambda: resources, workers_per_task=settings.workers_per_task
    )
    service = compute.describe_service()
    obs = observation_from(
        _queue_attributes(clients, resources.queue_url),
        _queue_attributes(clients, resources.dead_letter_queue_url),
        service,
        now,
        state.workers_started_at or state.created_at,
        workers_per_task=settings.workers_per_task,
    )
    counts = obs.counts
    summary["counts"] = {
        "visible": counts.visible,
        "in_flight": counts.in_flight,
        "dead": counts.dead,
    }
    workers = settings.workers if settings.workers is not None else obs.compute.desired
    cfg = PolicyConfig(
        workers=workers,
        workers_per_machine=settings.workers_per_machine or settings.workers_per_task,
        cheapest=settings.cheapest,
    )
    taken: list[str] = summary["actions"]
    # The one drain check (monitor/policy.py), as the CLI monitor makes it: the queue must
    # read empty on readings `drain_confirm_seconds` apart, and the ledger must give every
    # task an outcome. The counts come from the ledger summary, as `ds monitor`'s do (each
    # tick folds the journal since its checkpoint, so `ds status` stays quick), and the run
    # ends only on a whole reading of the records (`monitor.settle.confirm`).
    since = book.get("drained_since")
    ledger = None
    # The run's records: what submits write (manifests, sendings), and, where ds's workers
    # ran (``settings.ledger``), the attempts the ledger is read from.
    run_records = RunRecords(
        S3Storage(clients.settings, settings.state_bucket), settings.app_name, state.run_id
    )
    records = run_records if settings.ledger else None
    task_counts = None
    if records is not None:
        try:
            task_counts, _ = read_counts(records, compact=True)
        except DSError as exc:
            if counts.drained:
                raise  # the counts decide now
            log.warning("could not read the ledger summary (the tick goes on): %s", exc)
        summary["tasks"] = task_counts
    finished = task_counts is None or from_counts(task_counts).finished == task_counts["total"]
    check = drain_check(
        now=now,
        drained_since=since if isinstance(since, int | float) else None,
        queue_drained=counts.drained,
        ledger_finished=finished,
        confirm_seconds=settings.drain_confirm_seconds,
    )
    if ended_by_other:
        check = replace(check, verdict="ended")  # nothing settled, sent or waited for
    elif records is not None and task_counts is not None:
        check, ledger = confirm_ending(records, check, task_counts)

    def sqs_queue() -> SqsQueue:
        return SqsQueue(
            clients.settings,
            resources.queue_url or "",
            resources.dead_letter_queue_url or "",
            max_receive_count=settings.max_receive_count,
        )

    if check.verdict == "finished" and not settings.ledger:
        # The family image's own worker kept no records: record what the drained queue
        # shows (dead letters are dead, the rest done) before the queue is deleted.
        record_image_outcomes(run_records, sqs_queue(), read_ledger(run_records), now)
    if check.verdict == "reconcile" and records is not None and ledger is not None:
        book.pop("drained_since", None)
        # Saved before anything is sent, over the state this tick read: of two invocations
        # at once, only the first to save sends the lost tasks again (the other stops here,
        # `StateChanged`), not both (two messages of one task).
        save()
        settle(records, sqs_queue(), ledger, now)
        taken.append("reconciled")
        return {**summary, "status": "reconciled"}
    if check.verdict in ("confirming", "finished") and book.get("drained_since") is None:
        book["drained_since"] = check.drained_since
        save()
    if check.verdict == "confirming":
        return {**summary, "status": "confirming-drained"}
    actions = decide(replace(obs, finished=check.verdict == "finished"), cfg)

    if ended_by_other or any(isinstance(a, Teardown) for a in actions):
        # (Ended by another command long ago, which stopped half way: finished here, as
        # `ds monitor` finishes a teardown another command left.)
        resumed = state.finished_at is not None
        # Said first, then looked again: a submit announces itself before it reads the
        # state (`sending.announce`), so it either sees the run over and sends nothing, or
        # is seen here, and the run goes on (as `ds monitor` does, `lifecycle._ends_alone`).
        state.finished_at = state.finished_at or now
        book["teardown_started_at"] = now
        book[OWN_TEARDOWN] = True
        save()

        def go_on() -> None:
            state.finished_at = None
            for key in ("teardown_started_at", OWN_TEARDOWN, "drained_since"):
                book.pop(key, None)
            save()

        try:
            came = not resumed and _submit_came(run_records, counted=records is not None)
        except DSError:
            # Not looked (S3 throttling): the run goes on, and the next tick looks again,
            # rather than hold the lease (nothing done for 15 minutes, machines running)
            # or tear down unlooked.
            go_on()
            raise
        if came:
            go_on()
            return {**summary, "status": "tasks-submitted"}
        try:
            teardown(
                clients,
                names,
                resources,
                bucket=settings.state_bucket,
                run_id=state.run_id,
                save=save,
                clean_dashboard=settings.clean_dashboard,
                wait_timeout=wait_timeout,
            )
            if records is not None:
                close_open_attempts(records)  # workers stopped: theirs are lost (ds cleanup)
                end_retries(records)  # no retry will come (ds cleanup)
        except DSError:
            # A reported failure (not a timeout): let the next tick resume at once.
            book.pop("teardown_started_at", None)
            save()
            raise
        state.cleaned_up = True
        book.pop("teardown_started_at", None)
        save()
        taken.append("teardown")
        _notify(clients, settings, state, counts)
        return {**summary, "status": "torn-down"}

    if book.pop("drained_since", None) is not None:
        save()  # work showed up again: the drained clock starts over next time
    failing = book.get(WORKERS_FAILING)
    if failing:
        # Stopped for failing workers: nothing is started again until `ds start-cluster`
        # (which saves the run state without this mark).
        return {**summary, "status": "workers-failing", "error": failing}
    for action in actions:
        if isinstance(action, ReplaceWorkers) and compute.resize_service(action.workers):
            taken.append(f"workers={action.workers}")
        elif isinstance(action, ScaleTo) and compute.resize_fleet(action.machines):
            taken.append(f"machines={action.machines}")
    try:
        compute.check_failing_tasks(service, stopping=True)
    except BackendError as exc:
        # Nobody watches: stop what costs (the tasks, the machines) and say why.
        compute.resize_service(0)
        compute.resize_fleet(0)
        book[WORKERS_FAILING] = str(exc)
        save()
        taken.append("stopped: workers failing")
        _notify_failing(clients, settings, state, str(exc))
        return {**summary, "status": "workers-failing", "error": str(exc)}
    pruned = compute.prune_alarms()
    if pruned:
        taken.append(f"pruned_alarms={len(pruned)}")
    return {**summary, "status": "running", "pruned_alarms": pruned}


# --- helpers ------------------------------------------------------------------------------
def _load_state(clients: AwsClients, settings: MonitorSettings) -> tuple[RunState, str] | None:
    """The run state and its ETag (what a save is conditional on); None when none."""
    with aws_call(f"read the run state s3://{settings.state_bucket}/{settings.state_key}"):
        try:
            body = clients.s3.get_object(Bucket=settings.state_bucket, Key=settings.state_key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise
        text = body["Body"].read()
    return RunState.model_validate_json(text), str(body.get("ETag", ""))


#: S3's answers to a conditional write whose condition no longer holds (412), or that met
#: another write of the same key (409), or whose object is gone.
_CHANGED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey"})


def _save_state(clients: AwsClients, settings: MonitorSettings, state: RunState, etag: str) -> str:
    """Write the state over the version whose ETag is ``etag`` (raises `StateChanged` when
    it was replaced meanwhile); returns the new ETag. The run's own copy is written too,
    as `state.save_state` does: `ds runs`, `ds report --run` and `ds logs` read it once
    another run has started."""
    from botocore.exceptions import ParamValidationError

    body = state.model_dump_json(indent=1).encode()
    where = f"write the run state s3://{settings.state_bucket}/{settings.state_key}"
    put = {
        "Bucket": settings.state_bucket,
        "Key": settings.state_key,
        "Body": body,
        "ContentType": "application/json",
    }
    with aws_call(where):
        try:
            try:
                written = clients.s3.put_object(**put, **({"IfMatch": etag} if etag else {}))
            except ParamValidationError:
                # The Lambda runtime's own botocore may predate PutObject's IfMatch (2024):
                # the state is written unconditionally there, as before, rather than never.
                log.warning("this botocore has no conditional PutObject; state written as is")
                written = clients.s3.put_object(**put)
        except ClientError as exc:
            if error_code(exc) in _CHANGED:
                raise StateChanged(settings.state_key) from None
            raise
    key = run_state_key(state.app_name, state.run_id)
    with aws_call(f"write the run state s3://{settings.state_bucket}/{key}"):
        clients.s3.put_object(
            Bucket=settings.state_bucket, Key=key, Body=body, ContentType="application/json"
        )
    return str(written.get("ETag", ""))


def _queue_attributes(clients: AwsClients, url: str | None) -> dict[str, str] | None:
    if not url:
        return None
    with aws_call("read the queue's counts"):
        try:
            response = clients.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=_QUEUE_ATTRIBUTES
            )
        except ClientError as exc:
            if error_code(exc) in SQS_GONE:
                return None
            raise
    attributes: dict[str, str] = response.get("Attributes", {})
    return attributes


def _submit_came(records: RunRecords, *, counted: bool) -> bool:
    """Whether, once the run is said finished, a submit is under way (announced) or, where
    the workers keep records (``counted``; the family image's own worker keeps none), the
    records hold tasks without an outcome (a submit that finished meanwhile)."""
    if under_way(records):
        return True
    if not counted:
        return False
    counts, _ = read_counts(records, compact=True)
    progress = from_counts(counts)
    return progress.finished < progress.total


def _notify(
    clients: AwsClients, settings: MonitorSettings, state: RunState, counts: QueueCounts
) -> None:
    if not settings.topic_arn:
        return
    message = (
        f"ds: run {state.run_id} of {settings.app_name} finished and its AWS resources were "
        f"cleaned up; {counts.dead} task(s) in the dead-letter queue (see `ds dead list`)."
    )
    with aws_call("publish the end-of-run notice"):
        clients.sns.publish(
            TopicArn=settings.topic_arn, Subject=f"ds: {settings.app_name} done", Message=message
        )


def stopped_for(state: RunState) -> str | None:
    """Why the unattended monitor stopped the run's workers (the error), or None."""
    book = state.resources.get(BOOKKEEPING)
    why = book.get(WORKERS_FAILING) if isinstance(book, dict) else None
    return str(why) if why else None


def _notify_failing(
    clients: AwsClients, settings: MonitorSettings, state: RunState, error: str
) -> None:
    if not settings.topic_arn:
        return
    with aws_call("publish the workers-failing notice"):
        clients.sns.publish(
            TopicArn=settings.topic_arn,
            Subject=f"ds: {settings.app_name} stopped, its workers keep failing"[:99],
            Message=f"ds: run {state.run_id} of {settings.app_name}: {error}",
        )


def _count(attributes: Mapping[str, str], name: str) -> int:
    try:
        return max(int(attributes.get(name, 0)), 0)
    except ValueError:
        return 0


def _missing(name: str, what: str) -> NoReturn:
    raise InputError(_SOURCE, name, "is not set", f"set {name} to {what}")


def _required(values: Mapping[str, str], name: str, what: str) -> str:
    value = values.get(name, "")
    if not value:
        _missing(name, what)
    return value


def _int(values: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = values.get(name, "")
    if raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        number = -1
    if number < 0:
        raise InputError(_SOURCE, name, f"{raw!r} is not a whole number ≥ 0", "use e.g. 4")
    return number


def _bool(values: Mapping[str, str], name: str, default: bool) -> bool:
    raw = values.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise InputError(_SOURCE, name, f"{raw!r} is not a boolean", "use true or false")
