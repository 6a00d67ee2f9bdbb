"""What AWS does and moto does not (issue 16): each test holds the code to the API reference.

moto enforces neither IAM nor idempotency tokens nor many limits. Where it cannot show a
behaviour, the test looks at the request the code builds (botocore's event system) or lets
botocore answer as the API reference says AWS answers (`Ec2AsDocumented`, `refuse`), on the
moto server on 127.0.0.1; the 12-hour lease ceiling runs on a fake clock.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from distributed_something.backends.aws import principals, worker_side
from distributed_something.backends.aws import provisioner as provisioner_module
from distributed_something.backends.aws.bootstrap import (
    BootstrapNames,
    bootstrap,
    instance_policy,
    policy_buckets,
    trust_policy,
)
from distributed_something.backends.aws.clients import AwsClients, AwsSettings, client, partition
from distributed_something.backends.aws.fleet import (
    ECS_AMI_PARAMETER,
    client_token,
    guess_architecture,
)
from distributed_something.backends.aws.instance import ensure_idle_alarm, terminate_action
from distributed_something.backends.aws.provisioner import AwsProvisioner
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.role_check import trusts_ecs_tasks
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.aws.sqs_queue import (
    CEILING_NOTICE_SECONDS,
    MAX_VISIBILITY_SECONDS,
    SqsQueue,
)
from distributed_something.config.model import Config
from distributed_something.config.upload_flags import upload_args_from_flags
from distributed_something.errors import BackendError, InputError
from distributed_something.project import Project
from distributed_something.state import RunState
from distributed_something.worker.heartbeat import WRAP_UP_SECONDS, Heartbeat
from imds_server import imds_server
from testkit import FakeClock, moto_family_fleet

REGION = "us-east-1"
SETTINGS = AwsSettings(region=REGION)
ACCOUNT = "123456789012"
#: IAM service principals (names in trust policies, not addresses).
EC2_PRINCIPAL = principals.EC2
ECS_TASKS_PRINCIPAL = principals.ECS_TASKS


# --- helpers ---------------------------------------------------------------------------------


def capture(
    client_: Any, operation: str, into: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every request's parameters of ``operation`` (e.g. "PutMetricAlarm") on ``client_``,
    as the code built them, before botocore serializes them (appended to ``into``)."""
    seen: list[dict[str, Any]] = [] if into is None else into
    service = client_.meta.service_model.service_id.hyphenize()

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    client_.meta.events.register(f"before-parameter-build.{service}.{operation}", record)
    return seen


def answer(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    """A `before-call` answer: botocore then skips the HTTP request and returns (or raises
    for) ``parsed`` as if AWS had answered it."""
    parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": status, "HTTPHeaders": {}})
    return AWSResponse("https://127.0.0.1/", status, {}, None), parsed


def error(code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    return answer(400, {"Error": {"Code": code, "Message": message}})


class Ec2AsDocumented:
    """EC2 as its API reference describes it, where moto differs, on the clients given to
    `attach`:

    - RequestSpotFleet with a ``ClientToken`` seen before returns the first request's id when
      the parameters are the same (even if that request was cancelled since), and fails with
      IdempotentParameterMismatch when they differ; DescribeSpotFleetRequests echoes each
      request's ClientToken (moto ignores and drops tokens);
    - the ECS-optimized AMIs' root snapshot is 30 GiB (moto says 15 for every image);
    - a request just made may be unknown to describe calls for a while (EC2's eventual
      consistency: ``unseen`` describe calls answer InvalidSpotFleetRequestId.NotFound).
    """

    def __init__(self, ecs_amis: set[str]) -> None:
        self.ecs_amis = ecs_amis
        self.first: dict[str, tuple[dict[str, Any], str]] = {}
        self.requests: list[dict[str, Any]] = []
        #: raised once, right after the next successful RequestSpotFleet (a crash between
        #: the request and recording its id)
        self.crash: BaseException | None = None
        #: (code, message) AWS answers every RequestSpotFleet with (a refusal), when set
        self.refusal: tuple[str, str] | None = None
        #: how many of the next DescribeSpotFleetRequests/-Instances calls do not know the id
        self.unseen = 0
        self.unseen_answered = 0

    def attach(self, ec2: Any) -> Any:
        events = ec2.meta.events
        events.register("before-parameter-build.ec2.RequestSpotFleet", self._before_build)
        events.register("before-call.ec2.RequestSpotFleet", self._before_call)
        events.register("after-call.ec2.RequestSpotFleet", self._after_call)
        events.register("after-call.ec2.DescribeSpotFleetRequests", self._echo_tokens)
        events.register("after-call.ec2.DescribeImages", self._ecs_root)
        events.register("before-call.ec2.DescribeSpotFleetRequests", self._not_yet_known)
        events.register("before-call.ec2.DescribeSpotFleetInstances", self._not_yet_known)
        return ec2

    def _not_yet_known(self, **_: Any) -> Any:
        if self.unseen <= 0:
            return None
        self.unseen -= 1
        self.unseen_answered += 1
        return error("InvalidSpotFleetRequestId.NotFound", "The spot fleet request does not exist")

    def _before_build(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        request = copy.deepcopy(params["SpotFleetRequestConfig"])
        self.requests.append(request)
        context["ds_request"] = request
        token = request.get("ClientToken")
        if token in self.first:
            first, fleet_id = self.first[token]
            context["ds_answer"] = (
                answer(200, {"SpotFleetRequestId": fleet_id})
                if first == request
                else error("IdempotentParameterMismatch", "token used with other parameters")
            )

    def _before_call(self, context: dict[str, Any], **_: Any) -> Any:
        return error(*self.refusal) if self.refusal else context.get("ds_answer")

    def _after_call(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        request = context.get("ds_request") or {}
        token = request.get("ClientToken")
        if token and token not in self.first and "SpotFleetRequestId" in parsed:
            self.first[token] = (request, parsed["SpotFleetRequestId"])
        if self.crash is not None and "SpotFleetRequestId" in parsed:
            crash, self.crash = self.crash, None
            raise crash

    def _echo_tokens(self, parsed: dict[str, Any], **_: Any) -> None:
        by_id = {fleet_id: token for token, (_, fleet_id) in self.first.items()}
        for described in parsed.get("SpotFleetRequestConfigs", []):
            token = by_id.get(described.get("SpotFleetRequestId"))
            if token:
                described.setdefault("SpotFleetRequestConfig", {})["ClientToken"] = token

    def _ecs_root(self, parsed: dict[str, Any], **_: Any) -> None:
        for image in parsed.get("Images", []):
            if image.get("ImageId") in self.ecs_amis:
                image["RootDeviceName"] = "/dev/xvda"
                image["BlockDeviceMappings"] = [
                    {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30, "VolumeType": "gp3"}}
                ]


def ecs_amis() -> dict[str, str]:
    """The ECS-optimized AMI ids moto's SSM serves, by variant ("" and "arm64")."""
    ssm = client("ssm", SETTINGS)
    return {
        variant: ssm.get_parameter(
            Name=ECS_AMI_PARAMETER.format(variant=f"{variant}/" if variant else "")
        )["Parameter"]["Value"]
        for variant in ("", "arm64")
    }


def make_project(tmp_path: Path, *, legacy: bool = False, app: str = "Demo", **aws: Any) -> Project:
    config = Config.model_validate(
        {
            "app_name": app,
            "backend": "aws",
            "image": "org/tool:1.0",
            "cluster": {"machines": 1, "tasks_per_machine": 1},
            "storage": {"bucket": "demo-bucket"},
            "aws": {
                "region": REGION,
                "ecs_cluster": f"{app}Cluster",
                "machine_type": ["m5.large"],
                "machine_price": 0.15,
                **aws,
            },
        }
    )
    return Project(config, tmp_path / ("config.py" if legacy else "ds.toml"))


def new_state(app: str = "Demo") -> RunState:
    return RunState(run_id="20261205-000000-abcdef", app_name=app, backend="aws", created_at=0.0)


class Started:
    """A provisioner on moto whose EC2 clients answer as documented (`Ec2AsDocumented`)."""

    def __init__(self, project: Project, ec2_docs: Ec2AsDocumented) -> None:
        self.project = project
        self.clock = FakeClock()
        self.provisioner = AwsProvisioner(
            project,
            SETTINGS,
            AwsNames(project.config),
            capacity_timeout=60,
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        self.state = new_state(project.config.app_name)
        self.ec2 = ec2_docs.attach(client("ec2", SETTINGS))
        self.fleet = moto_family_fleet(self.ec2)

    def save(self, state: RunState) -> None:
        pass

    def setup(self) -> None:
        self.provisioner.setup(self.state, self.save)

    def start(self) -> None:
        self.provisioner.start(self.state, self.fleet, 1, self.save)

    @property
    def record(self) -> AwsResources:
        return AwsResources.of(self.state.resources)


@pytest.fixture
def ec2_docs(aws: str, monkeypatch: pytest.MonkeyPatch) -> Ec2AsDocumented:
    """Every EC2 client the provisioner makes answers as documented; the AWS messages it
    prints are collected in ``ec2_docs.printed``."""
    docs = Ec2AsDocumented(set(ecs_amis().values()))

    def documented_client(service: str, settings: AwsSettings) -> Any:
        made = client(service, settings)
        return docs.attach(made) if service == "ec2" else made

    monkeypatch.setattr(provisioner_module, "client", documented_client)
    printed: list[str] = []
    monkeypatch.setattr(provisioner_module, "info", printed.append)
    docs.printed = printed  # type: ignore[attr-defined]
    return docs


# --- (2) the idle alarm needs only cloudwatch:PutMetricAlarm --------------------------------


class StoppableWorker:
    """What `worker_side.on_instance` uses of a Worker without an idle folder."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


def test_the_idle_alarm_is_created_without_tags(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PutMetricAlarm with Tags also needs cloudwatch:TagResource (API reference, Tags), which
    # the instance role lacks: AWS refuses the whole call and no alarm exists.
    config = make_project(tmp_path, app="Lab1").config
    requests: list[dict[str, Any]] = []

    def capturing_client(service: str, settings: AwsSettings) -> Any:
        made = client(service, settings)
        if service == "cloudwatch":
            capture(made, "PutMetricAlarm", requests)
        return made

    monkeypatch.setattr(worker_side, "client", capturing_client)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    with imds_server() as fake:
        monkeypatch.setenv("DS_METADATA_URL", fake.url)
        with worker_side.on_instance(config, StoppableWorker(), tmp_path / "scratch"):  # type: ignore[arg-type]
            pass
    assert len(requests) == 1
    assert "Tags" not in requests[0]
    assert requests[0]["AlarmName"] == f"Lab1_{fake.instance_id}"  # the app prefix says whose
    alarms = client("cloudwatch", SETTINGS).describe_alarms(AlarmNamePrefix="Lab1_")
    assert [a["AlarmName"] for a in alarms["MetricAlarms"]] == [f"Lab1_{fake.instance_id}"]


# --- (12) the terminate action in the region's partition ---------------------------------


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("eu-west-1", "arn:aws:automate:eu-west-1:ec2:terminate"),
        ("cn-north-1", "arn:aws-cn:automate:cn-north-1:ec2:terminate"),
        ("cn-northwest-1", "arn:aws-cn:automate:cn-northwest-1:ec2:terminate"),
        ("us-gov-west-1", "arn:aws-us-gov:automate:us-gov-west-1:ec2:terminate"),
    ],
)
def test_the_terminate_action_uses_the_regions_partition(region: str, expected: str) -> None:
    assert terminate_action(region) == expected
    assert partition(region) == expected.split(":")[1]


def test_an_alarm_in_china_terminates_with_an_aws_cn_action(aws: str) -> None:
    cloudwatch = client("cloudwatch", SETTINGS)
    sent = capture(cloudwatch, "PutMetricAlarm")
    ensure_idle_alarm(cloudwatch, alarm_name="App_i-1", instance_id="i-1", region="cn-north-1")
    assert sent[0]["AlarmActions"] == ["arn:aws-cn:automate:cn-north-1:ec2:terminate"]


# --- (3) uploads with --acl bucket-owner-full-control ---------------------------------------


def allowed(document: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether an Allow statement of ``document`` grants ``action`` on ``resource`` under the
    request ``context`` (StringEquals conditions only; enough for these policies)."""
    for statement in document["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        equals = statement.get("Condition", {}).get("StringEquals", {})
        if all(context.get(key) == value for key, value in equals.items()):
            return True
    return False


def upload_actions(extra_args: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """The IAM actions a PutObject (or multipart upload) with these arguments needs, per the
    PutObject API reference: s3:PutObject always, s3:PutObjectAcl when it sets an ACL."""
    context = {"s3:x-amz-acl": extra_args["ACL"]} if "ACL" in extra_args else {}
    needed = [("s3:PutObject", context)]
    if "ACL" in extra_args:
        needed.append(("s3:PutObjectAcl", context))
    return needed


def test_the_instance_role_allows_uploads_with_the_bucket_owner_acl() -> None:
    document = instance_policy(ACCOUNT, REGION, "Lab", ["lab-out"])
    extra = upload_args_from_flags("--acl bucket-owner-full-control", source="config.py")
    for action, context in upload_actions(extra):
        assert allowed(document, action, "arn:aws:s3:::lab-out/Lab/plate1/a.csv", context)
    # Only that ACL: the role cannot make the outputs public.
    public = upload_args_from_flags("--acl public-read", source="config.py")
    assert not all(
        allowed(document, a, "arn:aws:s3:::lab-out/x", c) for a, c in upload_actions(public)
    )
    # Plain uploads as before.
    assert all(allowed(document, a, "arn:aws:s3:::lab-out/x", c) for a, c in upload_actions({}))


def test_a_refused_upload_with_an_acl_names_the_permission(aws: str) -> None:
    storage = S3Storage(SETTINGS, "lab-out", upload_args={"ACL": "bucket-owner-full-control"})
    with Stubber(storage._client) as stub:
        stub.add_client_error("put_object", "AccessDenied", "Access Denied", 403)
        with pytest.raises(BackendError) as raised:
            storage.put_bytes("out/a.txt", b"x")
    assert "s3:PutObjectAcl" in str(raised.value)


# --- (4) a new ClientToken per fleet request attempt --------------------------------------


def test_start_cluster_after_a_cancelled_fleet_gets_a_new_fleet(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    run = Started(make_project(tmp_path), ec2_docs)
    run.setup()
    run.start()
    first = run.record.fleet_request_id
    assert first is not None
    # A configuration error (or a person) cancels the fleet; start-cluster must then work.
    run.ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[first], TerminateInstances=True)
    with pytest.raises(BackendError, match="no longer exists"):
        run.start()
    assert run.record.fleet_request_id is None
    run.start()
    second = run.record.fleet_request_id
    assert second is not None and second != first
    tokens = [r["ClientToken"] for r in ec2_docs.requests]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    state = run.ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[second])
    assert state["SpotFleetRequestConfigs"][0]["SpotFleetRequestState"] == "active"


def test_a_fleet_request_ec2_does_not_know_yet_is_waited_for_and_kept(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    """Describing a request just made may answer NotFound for a while: start-cluster keeps
    waiting for it (it neither calls it a configuration error nor forgets it, which would
    leave it running unrecorded and request a second one next time)."""
    run = Started(make_project(tmp_path), ec2_docs)
    run.setup()
    ec2_docs.unseen = 4
    run.start()
    assert ec2_docs.unseen_answered == 4
    fleets = run.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestId"] for f in fleets] == [run.record.fleet_request_id]
    assert run.record.fleet_requested_at is not None
    assert len(ec2_docs.requests) == 1


def test_cleanup_cancels_a_fleet_request_ec2_does_not_show_yet(
    ec2_docs: Ec2AsDocumented, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed_something.backends.aws import clients as clients_module

    # The teardown's clients (`AwsClients`) answer as documented too.
    monkeypatch.setattr(clients_module, "client", provisioner_module.client)
    run = Started(make_project(tmp_path), ec2_docs)
    client("s3", SETTINGS).create_bucket(Bucket="demo-bucket")
    run.setup()
    run.start()
    fleet_id = run.record.fleet_request_id
    ec2_docs.unseen = 1  # the teardown's describe: not known yet
    run.provisioner.teardown(run.state, run.save)
    assert ec2_docs.unseen_answered == 1
    live = run.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert fleet_id not in [f["SpotFleetRequestId"] for f in live]  # moto drops cancelled ones


def test_a_retry_after_a_crash_reuses_the_token_and_gets_the_same_fleet(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    run = Started(make_project(tmp_path), ec2_docs)
    run.setup()
    ec2_docs.crash = RuntimeError("killed right after the request")
    with pytest.raises(RuntimeError):
        run.start()
    assert run.record.fleet_request_id is None
    assert run.record.fleet_client_token == ec2_docs.requests[0]["ClientToken"]
    run.start()
    assert [r["ClientToken"] for r in ec2_docs.requests] == [
        ec2_docs.requests[0]["ClientToken"]
    ] * 2
    fleets = run.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestId"] for f in fleets] == [run.record.fleet_request_id]


def test_a_token_used_with_other_settings_replaces_the_unrecorded_fleet(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    run = Started(make_project(tmp_path), ec2_docs)
    run.setup()
    ec2_docs.crash = RuntimeError("killed right after the request")
    with pytest.raises(RuntimeError):
        run.start()
    (orphan,) = [
        f["SpotFleetRequestId"]
        for f in run.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    ]
    # The user raises the price and runs start-cluster again.
    changed = Started(make_project(tmp_path, machine_price=0.3), ec2_docs)
    changed.state = run.state
    changed.start()
    live = changed.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestId"] for f in live] == [changed.record.fleet_request_id]
    assert changed.record.fleet_request_id != orphan  # moto drops cancelled requests
    assert ec2_docs.requests[-1]["SpotPrice"] == "0.3"
    assert any("cancelling spot fleet" in line for line in ec2_docs.printed)  # type: ignore[attr-defined]


def test_tokens_fit_ec2s_64_ascii_characters_for_the_longest_app_names(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    app = "A" * 60  # queue names (app + "DeadMessages") stay within SQS's 80
    run = Started(make_project(tmp_path, app=app), ec2_docs)
    run.setup()
    run.start()
    token = ec2_docs.requests[0]["ClientToken"]
    assert len(token) <= 64 and token.isascii()
    assert len(client_token("x" * 80)) <= 64
    assert client_token("Lab") != client_token("Lab")


# --- (5) Graviton types get the arm64 AMI -----------------------------------------------------


def test_graviton_types_get_the_arm64_ecs_ami(ec2_docs: Ec2AsDocumented, tmp_path: Path) -> None:
    amis = ecs_amis()
    run = Started(
        make_project(tmp_path, machine_type=["m5.large", "m6g.large", "t4g.xlarge"]), ec2_docs
    )
    run.setup()
    run.start()
    specs = ec2_docs.requests[0]["LaunchSpecifications"]
    image_of = {s["InstanceType"]: s["ImageId"] for s in specs}
    assert image_of == {
        "m5.large": amis[""],
        "m6g.large": amis["arm64"],
        "t4g.xlarge": amis["arm64"],
    }


@pytest.mark.parametrize(
    ("instance_type", "architecture"),
    [
        ("m6g.large", "arm64"),
        ("c7gn.xlarge", "arm64"),
        ("t4g.micro", "arm64"),
        ("a1.large", "arm64"),
        ("g5g.xlarge", "arm64"),
        ("im4gn.large", "arm64"),
        ("m5.large", "x86_64"),
        ("g4dn.xlarge", "x86_64"),
        ("c5a.large", "x86_64"),
    ],
)
def test_the_architecture_guess_when_ec2_cannot_say(instance_type: str, architecture: str) -> None:
    assert guess_architecture(instance_type) == architecture


def test_an_image_id_of_the_wrong_architecture_is_refused(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    x86 = ecs_amis()[""]
    run = Started(make_project(tmp_path, image_id=x86, machine_type=["m6g.large"]), ec2_docs)
    run.setup()
    with pytest.raises(InputError, match=r"aws\.image_id"):
        run.start()
    assert ec2_docs.requests == []


# --- (6) the root volume is never smaller than the image's snapshot --------------------------


def test_a_legacy_config_below_the_snapshot_gets_the_snapshot_size_and_one_warning(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    run = Started(make_project(tmp_path, legacy=True, ebs_vol_size=22), ec2_docs)
    run.setup()
    run.start()
    (spec,) = ec2_docs.requests[0]["LaunchSpecifications"]
    root = next(m for m in spec["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvda")
    assert root["Ebs"]["VolumeSize"] == 30
    warnings = [line for line in ec2_docs.printed if "EBS_VOL_SIZE" in line]  # type: ignore[attr-defined]
    assert len(warnings) == 1 and "30" in warnings[0]


def test_a_ds_toml_below_the_snapshot_is_refused_at_setup_before_anything_exists(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    run = Started(make_project(tmp_path, ebs_vol_size=25), ec2_docs)
    with pytest.raises(InputError, match=r"aws\.ebs_vol_size = 30"):
        run.setup()
    assert client("sqs", SETTINGS).list_queues().get("QueueUrls", []) == []


def test_a_ds_toml_below_the_snapshot_is_refused_at_start_cluster_too(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    # Setup made with a size that was fine then (say, another image); the ECS AMI says 30.
    run = Started(make_project(tmp_path, ebs_vol_size=30), ec2_docs)
    run.setup()
    small = Started(make_project(tmp_path, ebs_vol_size=24), ec2_docs)
    small.state = run.state
    with pytest.raises(InputError, match=r"aws\.ebs_vol_size"):
        small.start()
    assert ec2_docs.requests == []


# --- (7) the 12-hour ceiling on a message's lease -----------------------------------------


def refuse_past_the_ceiling(sqs: Any) -> list[int]:
    """Make ``sqs`` answer ChangeMessageVisibility as SQS does once a message has been
    hidden 12 hours since its receipt; returns the timeouts asked for."""
    asked: list[int] = []

    def refuse(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        asked.append(int(params["VisibilityTimeout"]))
        context["ds_answer"] = error(
            "InvalidParameterValue",
            f"Value {params['VisibilityTimeout']} for parameter VisibilityTimeout is invalid. "
            "Reason: Total VisibilityTimeout for the message is beyond the limit [43200 "
            "seconds].",
        )

    events = sqs.meta.events
    events.register("before-parameter-build.sqs.ChangeMessageVisibility", refuse)
    events.register(
        "before-call.sqs.ChangeMessageVisibility", lambda context, **_: context.get("ds_answer")
    )
    return asked


def sqs_queue(clock: Callable[[], float] | None = None) -> SqsQueue:
    sqs = client("sqs", SETTINGS)
    dlq = sqs.create_queue(QueueName="CeilingDead")["QueueUrl"]
    url = sqs.create_queue(QueueName="CeilingQueue")["QueueUrl"]
    timing = {} if clock is None else {"clock": clock}
    return SqsQueue(SETTINGS, url, dlq, max_receive_count=3, wait_seconds=0, **timing)


def test_sqs_refusing_an_extension_past_12_hours_stops_the_task(aws: str) -> None:
    # The heartbeat used to take this refusal for a passing error and retry it at every
    # beat, while the message became visible and a second worker ran the task.
    queue = sqs_queue()
    queue.send_batch([("t1", '{"n": 1}')])
    (message,) = queue.receive(1, 30)
    asked = refuse_past_the_ceiling(queue._client)
    beat = Heartbeat(queue)
    abort = threading.Event()
    with beat.keep(message, 0.6, abort) as lease:
        assert abort.wait(5), "the command was never stopped"
        time.sleep(0.5)
    beat.close()
    assert not lease.lost.is_set()  # still held: the worker can record the failure
    assert lease.ended is not None and "12-hour limit" in lease.ended
    assert asked == [1]  # refused once, not retried


def test_a_task_is_stopped_before_12_hours_and_never_asks_past_the_ceiling(aws: str) -> None:
    clock = FakeClock()
    queue = sqs_queue(clock)
    queue.send_batch([("t1", '{"n": 1}')])
    received_at = clock()
    (message,) = queue.receive(1, 3600)
    asked = capture(queue._client, "ChangeMessageVisibility")
    times: list[float] = []
    queue._client.meta.events.register(
        "before-parameter-build.sqs.ChangeMessageVisibility", lambda **_: times.append(clock())
    )
    beat = Heartbeat(queue, clock, background=False)
    abort = threading.Event()
    with beat.keep(message, 3600, abort) as lease:
        while (wait := beat.tick()) is not None:
            assert wait > 0
            clock.advance(wait)
            assert clock() - received_at < MAX_VISIBILITY_SECONDS, "ran past the ceiling"
    assert abort.is_set()
    stopped_at = clock() - received_at
    # Stopped with the wrap-up time left, after running nearly 12 hours.
    assert MAX_VISIBILITY_SECONDS - stopped_at == pytest.approx(WRAP_UP_SECONDS, abs=2)
    assert not lease.lost.is_set() and lease.ended is not None
    # No extension asked SQS to hide the message past 12 hours after its receipt.
    for params, at in zip(asked, times, strict=True):
        assert at - received_at + params["VisibilityTimeout"] <= MAX_VISIBILITY_SECONDS
    # The last extension kept the lease until the ceiling: time to record and hand back.
    assert times[-1] - received_at + asked[-1]["VisibilityTimeout"] > stopped_at
    assert queue.lease_time_left(message) == pytest.approx(WRAP_UP_SECONDS, abs=2)
    assert CEILING_NOTICE_SECONDS > WRAP_UP_SECONDS


def test_a_short_task_near_nothing_is_untouched_by_the_ceiling(aws: str) -> None:
    clock = FakeClock()
    queue = sqs_queue(clock)
    queue.send_batch([("t1", '{"n": 1}')])
    (message,) = queue.receive(1, 60)
    beat = Heartbeat(queue, clock, background=False)
    abort = threading.Event()
    with beat.keep(message, 60, abort) as lease:
        for _ in range(30):  # 10 minutes of beats
            wait = beat.tick()
            assert wait is not None
            clock.advance(wait)
    assert not abort.is_set() and lease.ended is None
    queue.delete(message)
    assert queue.lease_time_left(message) is None


def test_a_release_past_the_ceiling_ends_at_the_ceiling(aws: str) -> None:
    clock = FakeClock()
    queue = sqs_queue(clock)
    queue.send_batch([("t1", '{"n": 1}')])
    (message,) = queue.receive(1, 60)
    asked = capture(queue._client, "ChangeMessageVisibility")
    clock.advance(MAX_VISIBILITY_SECONDS - 100)
    queue.release(message, 3600)
    assert asked[0]["VisibilityTimeout"] <= 100


# --- (8) a second bootstrap under one prefix keeps the first app's buckets --------------------


def test_bootstrapping_a_second_app_keeps_the_first_apps_buckets(aws_iam: str) -> None:
    clients = AwsClients(SETTINGS)
    names = BootstrapNames("lab")
    bootstrap(clients, "lab", buckets=["lab-plate1"])
    bootstrap(clients, "lab", buckets=["lab-plate2"])
    for role in (names.instance_role, names.monitor_role):
        document = clients.iam.get_role_policy(RoleName=role, PolicyName=names.inline_policy)[
            "PolicyDocument"
        ]
        resources = [r for st in document["Statement"] for r in st["Resource"]]
        for bucket in ("lab-plate1", "lab-plate2"):
            assert any(r.startswith(f"arn:aws:s3:::{bucket}/") for r in resources), (role, bucket)


def test_policy_buckets_reads_bucket_and_object_arns() -> None:
    document = instance_policy(ACCOUNT, "cn-north-1", "lab", ["a", "b"])
    assert policy_buckets(document) == ["a", "b"]
    assert policy_buckets({"Statement": {"Resource": "arn:aws:s3:::*"}}) == []


# --- (9) a task role taken from the profile must trust ECS tasks ---------------------------


@pytest.fixture
def profile_role(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An AWS config whose default profile names a role (as the family's run.py read it);
    the environment's keys still sign the requests. Yields the IAM client."""
    config_file = tmp_path / "aws-config-with-role"
    config_file.write_text(f"[default]\nrole_arn = arn:aws:iam::{ACCOUNT}:role/people/Analyst\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    yield client("iam", SETTINGS)


def trust(service: str) -> str:
    return json.dumps(trust_policy(service))


def test_a_profile_role_that_does_not_trust_ecs_tasks_is_refused_at_setup(
    profile_role: Any, tmp_path: Path
) -> None:
    profile_role.create_role(
        RoleName="Analyst", Path="/people/", AssumeRolePolicyDocument=trust(EC2_PRINCIPAL)
    )
    project = make_project(tmp_path)
    provisioner = AwsProvisioner(project, SETTINGS, AwsNames(project.config))
    with pytest.raises(InputError) as raised:
        provisioner.setup(new_state(), lambda state: None)
    text = str(raised.value)
    assert ECS_TASKS_PRINCIPAL in text and "aws.task_role_arn" in text
    assert "\n" not in text
    assert client("sqs", SETTINGS).list_queues().get("QueueUrls", []) == []


def test_a_profile_role_that_trusts_ecs_tasks_passes(profile_role: Any, tmp_path: Path) -> None:
    profile_role.create_role(
        RoleName="Analyst",
        Path="/people/",
        AssumeRolePolicyDocument=trust(ECS_TASKS_PRINCIPAL),
    )
    project = make_project(tmp_path)
    AwsProvisioner(project, SETTINGS, AwsNames(project.config)).setup(new_state(), lambda s: None)
    assert len(client("sqs", SETTINGS).list_queues()["QueueUrls"]) == 2


def test_trust_policies_as_iam_writes_them() -> None:
    assert trusts_ecs_tasks(trust(ECS_TASKS_PRINCIPAL))
    assert not trusts_ecs_tasks(trust(EC2_PRINCIPAL))
    listed = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": [EC2_PRINCIPAL, ECS_TASKS_PRINCIPAL]},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ]
    }
    assert trusts_ecs_tasks(listed)
    denied = copy.deepcopy(listed)
    denied["Statement"][0]["Effect"] = "Deny"
    assert not trusts_ecs_tasks(denied)
    people = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": "sts:AssumeRole",
            }
        ]
    }
    assert not trusts_ecs_tasks(people)


# --- (10) a refusal to pass a role says what to ask for ---------------------------------------

PASS_ROLE_DENIED = (
    "User: arn:aws:iam::123456789012:user/erin is not authorized to perform: iam:PassRole on "
    "resource: arn:aws:iam::123456789012:role/Demo-spot-fleet-role because no identity-based "
    "policy allows the iam:PassRole action"
)


def test_a_fleet_request_refused_for_iam_pass_role_names_the_permission(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    # moto lets anyone pass any role; AWS checks iam:PassRole on the fleet file's roles.
    run = Started(make_project(tmp_path), ec2_docs)
    run.setup()
    ec2_docs.refusal = ("UnauthorizedOperation", PASS_ROLE_DENIED)
    with pytest.raises(BackendError) as raised:
        run.start()
    text = str(raised.value)
    assert "iam:PassRole on that role" in text and "Your own permissions" in text
    assert "Demo-spot-fleet-role" in text  # AWS's own words, naming the role
    assert run.record.fleet_request_id is None


def test_the_fixes_of_refusals_users_seldom_decode() -> None:
    from distributed_something.backends.aws.errors import DEFAULT_FIX, permission_fix

    assert permission_fix(f"AccessDeniedException: {PASS_ROLE_DENIED}") is not None
    encoded = "UnauthorizedOperation: You are not authorized to perform this operation. "
    fix = permission_fix(encoded + "Encoded authorization failure message: AbC123")
    assert fix is not None and "aws sts decode-authorization-message" in fix
    assert permission_fix("AccessDenied: Access Denied") is None  # the default fix applies
    assert "permissions" in DEFAULT_FIX


# --- a deleted queue's name: SQS holds it for 60 s ---------------------------------------------


def test_the_wait_for_a_deleted_queues_name_is_a_minute_from_its_deletion() -> None:
    from distributed_something.backends.aws.setup import queue_name_wait

    assert queue_name_wait(None, 1000.0) == 0.0
    assert queue_name_wait(1000.0, 1000.0) == 65.0  # the 60 s hold and the margin
    assert queue_name_wait(1000.0, 1030.0) == 35.0
    assert queue_name_wait(1000.0, 1065.0) == 0.0
    assert queue_name_wait(1000.0, 5000.0) == 0.0
    assert queue_name_wait(9000.0, 1000.0) == 65.0  # recorded "in the future": no more


def test_a_run_set_up_within_a_minute_of_cleanup_waits_until_sqs_frees_the_queue_name(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DeleteQueue: for 60 s "a SendMessage request might succeed, but after 60 seconds the
    queue and the message you sent no longer exist" — moto deletes at once, so the old
    queue's GetQueueUrl answering and swallowing the next run's tasks is not seen here; the
    recorded deletion and the wait before the queues are made again are."""
    project = make_project(tmp_path)
    client("s3", SETTINGS).create_bucket(Bucket="demo-bucket")
    slept: list[float] = []
    provisioner = AwsProvisioner(project, SETTINGS, AwsNames(project.config), sleep=slept.append)
    first = new_state()
    provisioner.setup(first, lambda state: None)
    before = time.time()
    provisioner.teardown(first, lambda state: None)
    deleted_at = AwsResources.of(first.resources).queue_deleted_at
    assert deleted_at is not None and before <= deleted_at <= time.time()

    made_after: list[float] = []  # how long had been waited when the queues were made
    ensure_queues = provisioner_module.create.ensure_queues

    def made(*args: Any, **kwargs: Any) -> Any:
        made_after.append(sum(slept))
        return ensure_queues(*args, **kwargs)

    monkeypatch.setattr(provisioner_module.create, "ensure_queues", made)
    second = RunState(run_id="20261205-000100-fedcba", app_name="Demo", backend="aws", created_at=0)
    provisioner.setup(second, lambda state: None, first)
    # 60 s from the deletion, and the margin, minus what this test took since.
    assert len(slept) == 1 and 55.0 <= slept[0] <= 65.0
    assert made_after == [slept[0]]
    assert AwsResources.of(second.resources).queue_url

    # A run following one cleaned up long ago, or a run in progress set up again: no wait.
    slept.clear()
    long_ago = AwsResources.of(first.resources)
    long_ago.queue_deleted_at = time.time() - 300
    long_ago.into(first.resources)
    provisioner.setup(second, lambda state: None, first)
    provisioner.setup(second, lambda state: None)
    assert slept == []


class _HeldName:
    """An SQS client for one queue name SQS still holds: CreateQueue is refused as
    QueueDeletedRecently ``refusals`` times, then succeeds."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.creates = 0

    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone"}},
            "GetQueueUrl",
        )

    def create_queue(self, QueueName: str, **kwargs: Any) -> dict[str, str]:
        from botocore.exceptions import ClientError

        self.creates += 1
        if self.creates <= self.refusals:
            raise ClientError(
                {
                    "Error": {
                        "Code": "AWS.SimpleQueueService.QueueDeletedRecently",
                        "Message": "You must wait 60 seconds after deleting a queue",
                    }
                },
                "CreateQueue",
            )
        return {"QueueUrl": f"http://127.0.0.1:9/{ACCOUNT}/{QueueName}"}  # never contacted

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        name = QueueUrl.rsplit("/", 1)[1]
        return {"Attributes": {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"}}


def test_a_queue_name_sqs_still_holds_is_waited_for_once(tmp_path: Path) -> None:
    from distributed_something.backends.aws.setup import ensure_queues

    config = make_project(tmp_path).config
    slept: list[float] = []
    sqs = _HeldName(refusals=1)
    urls = ensure_queues(sqs, AwsNames(config), config, sleep=slept.append)
    assert urls[0].endswith("/DemoQueue") and slept == [60.0]

    # Still refused after the wait: one clear error, not a loop.
    with pytest.raises(BackendError, match="still refuses the name after a minute"):
        ensure_queues(_HeldName(refusals=5), AwsNames(config), config, sleep=lambda s: None)


class _NoTagQueue(_HeldName):
    """An SQS client for an identity without sqs:TagQueue: "To be able to tag a queue on
    creation, you must have the sqs:CreateQueue and sqs:TagQueue permissions" (CreateQueue),
    so a CreateQueue with tags is refused, one without them succeeds."""

    def __init__(self) -> None:
        super().__init__(refusals=0)
        self.calls: list[dict[str, Any]] = []

    def create_queue(self, QueueName: str, **kwargs: Any) -> dict[str, str]:
        from botocore.exceptions import ClientError

        self.calls.append(kwargs)
        if "tags" in kwargs:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "CreateQueue"
            )
        return super().create_queue(QueueName, **kwargs)


def test_queues_are_made_untagged_when_tagging_on_creation_is_refused(tmp_path: Path) -> None:
    from distributed_something.backends.aws.setup import ensure_queues

    config = make_project(tmp_path).config
    sqs = _NoTagQueue()
    urls = ensure_queues(sqs, AwsNames(config), config, sleep=lambda s: None)
    assert urls[0].endswith("/DemoQueue")
    # Each queue: first asked with its tags (refused), then made without them.
    assert ["tags" in call for call in sqs.calls] == [True, False, True, False]
    assert all(call["Attributes"] for call in sqs.calls)


def test_start_cluster_without_the_monitor_function_requests_no_machines(
    ec2_docs: Ec2AsDocumented, tmp_path: Path
) -> None:
    """auto_monitor on (the DCP template's AUTO_MONITOR = 'True') in an account never
    bootstrapped: the missing function is found before the fleet is requested, not after
    machines are running with no monitor."""
    run = Started(make_project(tmp_path, auto_monitor=True), ec2_docs)
    run.setup()
    with pytest.raises(BackendError) as raised:
        run.start()
    text = str(raised.value)
    assert "Demo-monitor does not exist" in text and "ds aws bootstrap" in text
    assert ec2_docs.requests == []
    assert run.ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"] == []
    assert run.record.fleet_request_id is None
