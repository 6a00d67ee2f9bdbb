"""What `ds setup` creates on AWS (moto server on 127.0.0.1): queues, cluster, task definition,
service, log groups — idempotent, updated on change, and never carrying a credential."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws import setup
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.taskenv import task_environment, task_role_arn
from distributed_something.config.environment import config_from_environment
from distributed_something.config.model import Config
from distributed_something.errors import BackendError, InputError
from testkit import FakeClock

REGION = "us-east-1"
SETTINGS = AwsSettings(region=REGION)
QUEUE_URL = "http://127.0.0.1:9/123456789012/DemoQueue"  # a queue URL, never contacted

# Values that must never reach a task definition (distinct from the fixture's "testing").
ACCESS_KEY = "AKIAQWERTYUIOPASDFGH"
SECRET_KEY = "wJalrXUtnFEMI-secret-value-7f3a"
SESSION_TOKEN = "FwoGZXIvYXdzEJr-session-token-91c2"


def make_config(**sections: Any) -> Config:
    data: dict[str, Any] = {
        "app_name": "Demo",
        "backend": "aws",
        "image": "org/tool:1.0",
        "cluster": {"docker_cores": 2, "memory": 3000, "machines": 2, "tasks_per_machine": 1},
        "queue": {"visibility": 120, "job_retries": 4},
        "storage": {"bucket": "demo-bucket"},
        "aws": {"region": REGION, "ecs_cluster": "DemoCluster"},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return Config.model_validate(data)


def attributes(sqs: Any, url: str) -> dict[str, str]:
    found: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return found


def container_of(ecs: Any, arn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task definition, its only container) as ECS reports them."""
    definition: dict[str, Any] = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert len(definition["containerDefinitions"]) == 1
    return definition, definition["containerDefinitions"][0]


def environment_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["environment"]}


def register(
    ecs: Any,
    config: Config,
    env: dict[str, str] | None = None,
    *,
    task_role_arn: str | None = None,
    keep_entrypoint: bool = False,
) -> str:
    """`setup.register_task_definition` for ``config`` under its own names; ``env`` defaults
    to the environment of a run of ``config``. Returns the task definition's ARN."""
    if env is None:
        env = task_environment(config, queue_url=QUEUE_URL, run_id="run-1")
    return setup.register_task_definition(
        ecs,
        AwsNames(config),
        config,
        env,
        task_role_arn=task_role_arn,
        keep_entrypoint=keep_entrypoint,
    )


# --- queues -------------------------------------------------------------------------------


def test_queues_get_retention_visibility_redrive_and_tags(aws: str) -> None:
    config = make_config()
    names = AwsNames(config)
    sqs = client("sqs", SETTINGS)
    # A queue whose name merely starts like ours: the family's substring lookup could pick it.
    decoy = sqs.create_queue(QueueName="DemoQueueOld")["QueueUrl"]

    queue_url, queue_arn, dlq_url, dlq_arn = setup.ensure_queues(sqs, names, config)

    assert queue_url != decoy and queue_url.endswith("/DemoQueue")
    assert dlq_url.endswith("/DemoDeadMessages")
    dead = attributes(sqs, dlq_url)
    assert dead["QueueArn"] == dlq_arn
    assert dead["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    queue = attributes(sqs, queue_url)
    assert queue["QueueArn"] == queue_arn
    assert queue["VisibilityTimeout"] == "120"
    assert queue["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 4
    for url in (queue_url, dlq_url):
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"ds:app": "Demo"}
        # What validation allows (SQS's 1 MiB); an older queue would keep 256 KiB unless set.
        assert attributes(sqs, url)["MaximumMessageSize"] == str(1024 * 1024)


def test_queues_rerun_is_idempotent_and_updates_changed_attributes(aws: str) -> None:
    sqs = client("sqs", SETTINGS)
    config = make_config()
    first = setup.ensure_queues(sqs, AwsNames(config), config)
    assert setup.ensure_queues(sqs, AwsNames(config), config) == first

    changed = make_config(queue={"visibility": 300, "job_retries": 7})
    again = setup.ensure_queues(sqs, AwsNames(changed), changed)

    assert again == first  # same queues, not new ones
    assert sorted(sqs.list_queues()["QueueUrls"]) == sorted([first[0], first[2]])
    queue = attributes(sqs, first[0])
    assert queue["VisibilityTimeout"] == "300"
    assert int(json.loads(queue["RedrivePolicy"])["maxReceiveCount"]) == 7


def test_redrive_moves_a_task_to_the_dead_letter_queue_after_the_retries(aws: str) -> None:
    sqs = client("sqs", SETTINGS)
    config = make_config(queue={"visibility": 1, "job_retries": 1})
    queue_url, _, dlq_url, _ = setup.ensure_queues(sqs, AwsNames(config), config)
    sqs.send_message(QueueUrl=queue_url, MessageBody="task")
    received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)["Messages"]
    # Hand it back at once: the next receive finds it over the limit and moves it.
    sqs.change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None
    dead = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in dead] == ["task"]


# --- cluster and task definition ----------------------------------------------------------


def test_cluster_is_created_once_and_default_is_never_ours(aws: str) -> None:
    ecs = client("ecs", SETTINGS)
    names = AwsNames(make_config())

    assert setup.ensure_cluster(ecs, names) is True
    assert setup.ensure_cluster(ecs, names) is False
    [cluster] = ecs.describe_clusters(clusters=["DemoCluster"], include=["TAGS"])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert {"key": "ds:app", "value": "Demo"} in cluster["tags"]

    default = AwsNames(make_config(aws={"ecs_cluster": "default"}))
    assert setup.ensure_cluster(ecs, default) is False
    [found] = ecs.describe_clusters(clusters=["default"])["clusters"]
    assert found["status"] == "ACTIVE"


def test_task_definition_reads_back_with_image_resources_env_and_logs(aws: str) -> None:
    config = make_config()
    ecs = client("ecs", SETTINGS)
    env = task_environment(config, queue_url=QUEUE_URL, run_id="run-1")

    arn = register(ecs, config, env)

    definition, container = container_of(ecs, arn)
    assert definition["family"] == "DemoTask"
    assert "taskRoleArn" not in definition
    assert container["image"] == "org/tool:1.0"
    assert container["cpu"] == 2048  # two worker processes, one core each
    assert container["memory"] == 3000
    assert container["entryPoint"] == ["ds", "worker"] and "command" not in container
    # An init as PID 1 reaps what tasks leave in sessions of their own (ds reaps its groups).
    assert container["linuxParameters"] == {"initProcessEnabled": True}
    assert not container.get("privileged")
    assert environment_of(container) == {**env, "DS_IDLE_DIR": "/ds-idle"}  # idle shutdown
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "Demo_perInstance",
            "awslogs-region": REGION,
            "awslogs-stream-prefix": "Demo",
        },
    }
    tags = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])["tags"]
    assert {"key": "ds:app", "value": "Demo"} in tags


def test_task_definition_is_reused_when_unchanged_and_revised_when_changed(aws: str) -> None:
    config = make_config()
    ecs = client("ecs", SETTINGS)
    env = task_environment(config, queue_url=QUEUE_URL, run_id="run-1")

    first = register(ecs, config, env)
    same = register(ecs, config, env)
    second = register(ecs, make_config(image="org/tool:2.0"), env)

    assert same == first
    assert second != first and second.endswith(":2")
    assert container_of(ecs, second)[1]["image"] == "org/tool:2.0"


def test_a_revision_without_the_init_process_is_revised(aws: str) -> None:
    # Registered by an older ds: the same container, without linuxParameters.
    config = make_config()
    ecs = client("ecs", SETTINGS)
    env = task_environment(config, queue_url=QUEUE_URL, run_id="run-1")
    request = setup.task_definition_request(
        AwsNames(config), config, env, task_role_arn=None, keep_entrypoint=False
    )
    del request["containerDefinitions"][0]["linuxParameters"]
    old = ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]

    new = register(ecs, config, env)

    assert new != old and new.endswith(":2")
    assert container_of(ecs, new)[1]["linuxParameters"]["initProcessEnabled"] is True


def test_keep_entrypoint_leaves_the_images_own_command(aws: str) -> None:
    ecs = client("ecs", SETTINGS)

    arn = register(ecs, make_config(), keep_entrypoint=True)

    _, container = container_of(ecs, arn)
    assert not container.get("command")
    assert not container.get("entryPoint")
    assert not container.get("linuxParameters")  # the family's images: run as they were


def test_missing_image_is_an_input_error_before_anything_is_created(aws: str) -> None:
    config = make_config(image="")
    ecs = client("ecs", SETTINGS)

    with pytest.raises(InputError) as caught:
        setup.check_setup_inputs(config)
    assert caught.value.field == "image"
    assert "DOCKERHUB_TAG" in caught.value.fix
    with pytest.raises(InputError):
        register(ecs, config, {})
    assert ecs.list_task_definitions()["taskDefinitionArns"] == []


@pytest.fixture
def aws_files(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Moto, and in use for the test an AWS config with a keys-only profile `keys`, a role
    profile `lab` and a default role, plus the credentials file of `keys`."""
    config_file = tmp_path / "aws-config"
    config_file.write_text(
        "[profile keys]\n"
        f"region = {REGION}\n"
        f"aws_access_key_id = {ACCESS_KEY}\n"
        f"aws_secret_access_key = {SECRET_KEY}\n"
        "\n"
        "[profile lab]\n"
        "role_arn = arn:aws:iam::123456789012:role/DsTaskRole\n"
        "source_profile = keys\n"
        "\n"
        "[default]\n"
        "role_arn = arn:aws:iam::123456789012:role/DefaultRole\n"
        "source_profile = keys\n"
    )
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[keys]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))


@pytest.mark.usefixtures("aws_files")
def test_no_credential_reaches_the_task_definition(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    # The loader refuses these names; a Config built in code is the second line of defence.
    config = make_config(
        aws={"profile": "keys"},
        env={
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
            "AWS_SECURITY_TOKEN": SESSION_TOKEN,
            "DB_PASSWORD": SECRET_KEY,
            "GITHUB_TOKEN": SESSION_TOKEN,
            "KEY_IN_DISGUISE": ACCESS_KEY,
            "AWS_PROFILE": "keys",
            "OMP_NUM_THREADS": "1",
        },
    )
    settings = AwsSettings(region=REGION, profile="keys")
    ecs = client("ecs", settings)

    arn = register(ecs, config, task_role_arn=task_role_arn(config, settings))

    response = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
    text = json.dumps(response, default=str)
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, "aws_secret_access_key"):
        assert secret not in text
    environment = environment_of(response["taskDefinition"]["containerDefinitions"][0])
    assert environment["OMP_NUM_THREADS"] == "1"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        assert name not in environment
    carried = json.loads(environment["DS_CONFIG"])
    assert "profile" not in carried["aws"]
    assert carried["env"] == {"OMP_NUM_THREADS": "1"}
    assert "taskRoleArn" not in response["taskDefinition"]  # the keys profile has no role
    warnings = capsys.readouterr().err
    for name in ("DB_PASSWORD", "GITHUB_TOKEN", "KEY_IN_DISGUISE", "AWS_SECRET_ACCESS_KEY"):
        assert f"env.{name}" in warnings
    assert SECRET_KEY not in warnings and ACCESS_KEY not in warnings


@pytest.mark.usefixtures("aws_files")
def test_task_role_comes_from_config_else_the_profiles_role_arn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config()
    lab = AwsSettings(region=REGION, profile="lab")

    assert task_role_arn(config, lab) == "arn:aws:iam::123456789012:role/DsTaskRole"
    assert task_role_arn(config, AwsSettings(region=REGION, profile="keys")) is None
    assert task_role_arn(config, AwsSettings(region=REGION, profile="absent")) is None
    assert task_role_arn(config, SETTINGS) == "arn:aws:iam::123456789012:role/DefaultRole"
    monkeypatch.setenv("AWS_PROFILE", "lab")
    assert task_role_arn(config, SETTINGS) == "arn:aws:iam::123456789012:role/DsTaskRole"
    explicit = make_config(aws={"task_role_arn": "arn:aws:iam::123456789012:role/Explicit"})
    assert task_role_arn(explicit, lab) == "arn:aws:iam::123456789012:role/Explicit"

    ecs = client("ecs", SETTINGS)
    arn = register(ecs, config, task_role_arn=task_role_arn(config, lab))
    definition, _ = container_of(ecs, arn)
    assert definition["taskRoleArn"] == "arn:aws:iam::123456789012:role/DsTaskRole"


def test_environment_speaks_the_familys_variable_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(
        storage={"source_bucket": "raw-images", "upload_flags": "--acl bucket-owner"},
        check_if_done={"enabled": True, "expected_number_files": 5, "min_file_size_bytes": 10},
        tool={"use_plugins": True, "plugins_commit": "v4.2.1"},
        cluster={"seconds_to_start": 30},
        env={"SQS_QUEUE_URL": "https://elsewhere", "MY_SETTING": "x"},
    )

    env = task_environment(config, queue_url=QUEUE_URL, run_id="run-9")

    assert env["SQS_QUEUE_URL"] == QUEUE_URL  # the run's queue wins over env
    assert "env.SQS_QUEUE_URL" in capsys.readouterr().err
    assert env["MY_SETTING"] == "x"
    assert env["APP_NAME"] == "Demo"
    assert env["AWS_BUCKET"] == "demo-bucket"
    assert env["SOURCE_BUCKET"] == "raw-images"
    assert env["DESTINATION_BUCKET"] == "demo-bucket"  # unset means the main bucket
    assert env["UPLOAD_FLAGS"] == "--acl bucket-owner"
    assert env["AWS_REGION"] == REGION
    assert env["ECS_CLUSTER"] == "DemoCluster"
    assert env["LOG_GROUP_NAME"] == "Demo"
    assert env["DOCKER_CORES"] == "2"
    assert env["SECONDS_TO_START"] == "30"
    assert env["CHECK_IF_DONE_BOOL"] == "True"
    assert env["EXPECTED_NUMBER_FILES"] == "5"
    assert env["MIN_FILE_SIZE_BYTES"] == "10"
    assert env["USE_PLUGINS"] == "True"
    assert env["UPDATE_PLUGINS"] == "False"
    assert env["PLUGINS_COMMIT"] == "v4.2.1"
    assert env["SQS_MESSAGE_VISIBILITY"] == "120"
    assert env["SQS_DEAD_LETTER_QUEUE"] == "DemoDeadMessages"
    assert env["JOB_RETRIES"] == "4"
    assert env["DS_RUN_ID"] == "run-9"
    assert all(isinstance(v, str) for v in env.values())
    # `ds worker` in the container rebuilds the same config from DS_CONFIG alone.
    rebuilt = config_from_environment({"DS_CONFIG": env["DS_CONFIG"]})
    assert rebuilt == config


def test_family_done_check_is_off_without_an_expected_count() -> None:
    # The family's images crash on int("") when the check is on and no count is set.
    config = make_config(check_if_done={"enabled": True, "expected_number_files": None})

    env = task_environment(config, queue_url=QUEUE_URL, run_id="r")

    assert env["CHECK_IF_DONE_BOOL"] == "False"
    assert env["EXPECTED_NUMBER_FILES"] == ""
    assert json.loads(env["DS_CONFIG"])["check_if_done"]["enabled"] is True


# --- service ------------------------------------------------------------------------------


def test_service_is_created_empty_updated_scaled_and_recreated(aws: str) -> None:
    config = make_config()
    names = AwsNames(config)
    ecs = client("ecs", SETTINGS)
    setup.ensure_cluster(ecs, names)
    env = task_environment(config, queue_url=QUEUE_URL, run_id="r")
    first = register(ecs, config, env)

    assert setup.ensure_service(ecs, names, "DemoCluster", first) == "DemoService"
    [service] = ecs.describe_services(cluster="DemoCluster", services=["DemoService"])["services"]
    assert (service["status"], service["desiredCount"], service["launchType"]) == (
        "ACTIVE",
        0,
        "EC2",
    )
    assert service["taskDefinition"] == first

    setup.set_service_desired(ecs, "DemoCluster", "DemoService", 3)
    second = register(ecs, make_config(image="org/tool:2.0"), env)
    setup.ensure_service(ecs, names, "DemoCluster", second)
    [service] = ecs.describe_services(cluster="DemoCluster", services=["DemoService"])["services"]
    assert (service["taskDefinition"], service["desiredCount"]) == (second, 3)

    ecs.update_service(cluster="DemoCluster", service="DemoService", desiredCount=0)
    ecs.delete_service(cluster="DemoCluster", service="DemoService")
    setup.ensure_service(ecs, names, "DemoCluster", second)
    services = ecs.describe_services(cluster="DemoCluster", services=["DemoService"])["services"]
    assert [s["status"] for s in services] == ["ACTIVE"]


class DrainingEcs:
    """An ECS client whose service drains for ``polls`` lookups, then is INACTIVE."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.created: list[dict[str, Any]] = []

    def describe_services(self, cluster: str, services: list[str]) -> dict[str, Any]:
        status = "DRAINING" if self.polls > 0 else "INACTIVE"
        self.polls -= 1
        return {"services": [{"serviceName": services[0], "status": status}]}

    def create_service(self, **kwargs: Any) -> dict[str, Any]:
        self.created.append(kwargs)
        return {"service": {"serviceName": kwargs["serviceName"]}}


def test_a_draining_service_is_waited_for_then_recreated() -> None:
    names = AwsNames(make_config())
    ecs = DrainingEcs(polls=4)
    clock = FakeClock()

    setup.ensure_service(ecs, names, "DemoCluster", "arn:td", clock=clock, sleep=clock.sleep)

    assert len(clock.sleeps) == 3  # three more lookups after the first saw DRAINING
    [created] = ecs.created
    assert (created["desiredCount"], created["launchType"]) == (0, "EC2")


def test_a_service_that_never_drains_times_out_clearly() -> None:
    names = AwsNames(make_config())
    clock = FakeClock()

    with pytest.raises(BackendError, match=r"timed out after 60s waiting for .*DemoService"):
        setup.ensure_service(
            DrainingEcs(polls=10**6),
            names,
            "DemoCluster",
            "arn:td",
            timeout=60,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.now - clock.start == pytest.approx(60)


# --- log groups, waiting, errors ----------------------------------------------------------


def test_log_groups_get_retention_and_are_updated_on_rerun(aws: str) -> None:
    logs = client("logs", SETTINGS)
    names = AwsNames(make_config())
    logs.create_log_group(logGroupName="Demo")
    logs.put_retention_policy(logGroupName="Demo", retentionInDays=7)

    assert setup.ensure_log_groups(logs, names) == ["Demo", "Demo_perInstance"]
    assert setup.ensure_log_groups(logs, names, retention_days=30) == ["Demo", "Demo_perInstance"]

    groups = logs.describe_log_groups(logGroupNamePrefix="Demo")["logGroups"]
    assert {g["logGroupName"]: g.get("retentionInDays") for g in groups} == {
        "Demo": 30,
        "Demo_perInstance": 30,
    }


def test_wait_for_polls_real_state_until_true() -> None:
    clock = FakeClock()
    answers = iter([False, False, True])

    setup.wait_for(
        lambda: next(answers), timeout=30, what="x", clock=clock, sleep=clock.sleep, interval=4
    )

    assert clock.sleeps == [4, 4]


def test_wait_for_times_out_with_what_it_waited_for() -> None:
    clock = FakeClock()

    with pytest.raises(BackendError, match=r"^timed out after 10s waiting for the cluster$"):
        setup.wait_for(
            lambda: False,
            timeout=10,
            what="the cluster",
            clock=clock,
            sleep=clock.sleep,
            interval=4,
        )
    assert clock.sleeps == [4, 4, 2]  # never sleeps past the deadline


def test_aws_failures_become_one_line_backend_errors() -> None:
    from botocore.exceptions import ClientError

    class DeniedEcs:
        def describe_clusters(self, **_: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}},
                "DescribeClusters",
            )

    with pytest.raises(BackendError) as caught:
        setup.ensure_cluster(DeniedEcs(), AwsNames(make_config()))
    message = str(caught.value)
    assert message.startswith("could not look up ECS cluster DemoCluster")
    assert "AccessDeniedException: not allowed" in message
    assert "\n" not in message
