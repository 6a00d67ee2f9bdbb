"""What the family's own worker images and fleet files get from an unchanged family project,
compared with what the family's run.py gave them: the task definition's WORKSPACE_BUCKET and
CHECK_IF_DONE_BOOL, the queue's dead-letter limit (JOB_RETRIES), and the fleet request's
AssociatePublicIpAddress (ASSIGN_IP), KeyName (SSH_KEY_NAME) and instance types and price
(MACHINE_TYPE, MACHINE_PRICE, or the fleet file's before they existed)."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws import fleet as spot
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.taskenv import task_environment
from distributed_something.config.model import Config
from distributed_something.jobs.model import Task
from distributed_something.jobs.parse import load_job_file
from distributed_something.recipes.fiji import task_part
from family_templates import DCP_JOB, DF_JOB, FAMILY_FLEET, filled, project
from moto_projects import aws_client
from testkit import moto_family_fleet

Ds = Callable[..., subprocess.CompletedProcess[str]]


def _drop(name: str) -> Callable[[str], str]:
    """An edit removing the ``NAME = …`` line, as in a template written before NAME existed."""
    return lambda text: "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith(f"{name} ")
    )


def _config(folder: Path) -> Config:
    from distributed_something.usecases.project import open_project

    return open_project(folder / "config.py").config


def _environment(config: Config) -> dict[str, str]:
    return task_environment(config, queue_url="http://127.0.0.1:9/123456789012/q", run_id="r1")


def _public_ips(config: Config, fleet: dict[str, Any]) -> list[Any]:
    """AssociatePublicIpAddress of each launch specification's first interface (None when
    the request has none)."""
    request = spot.build_fleet_request(
        fleet, config, AwsNames(config), user_data="", image_id="ami-0123456789abcdef0"
    )
    return [
        (spec.get("NetworkInterfaces") or [{}])[0].get("AssociatePublicIpAddress")
        for spec in request["LaunchSpecifications"]
    ]


def _fleet_with_public_ip(value: bool) -> dict[str, Any]:
    fleet = copy.deepcopy(FAMILY_FLEET)
    for spec in fleet["LaunchSpecifications"]:
        spec["NetworkInterfaces"][0]["AssociatePublicIpAddress"] = value
    return fleet


# --- the queue messages ----------------------------------------------------------------------


def test_a_message_keeps_the_job_files_key_order_as_run_py_sent_it(tmp_path: Path) -> None:
    """run.py sent ``json.dumps`` of the job file's own dicts: DF's worker names its log
    stream and builds the script's argument string from the group's and shared_metadata's
    pairs in that order, DCP's turns a --print-groups Metadata dict into ``-g`` and a
    stream name in that order, and ds's fiji recipe names a task's output folder after the
    group's values in that order. A message whose keys were sorted made the worker's
    folder ``Plate_1-A1`` where the submit (and its check for done tasks) saw ``A1-Plate_1``."""
    folder = project(tmp_path / "df", "df")
    shared = {"input_file_location": "/in", "rows": "2", "columns": "2"}
    (folder / "files" / "exampleJob.json").write_text(
        json.dumps({**DF_JOB, "shared_metadata": shared})
    )
    job = load_job_file(folder / "files" / "exampleJob.json")

    for sent in (job.tasks.body_json_at(0), job.tasks[0].body_json()):
        body = json.loads(sent)
        assert list(body["Metadata"]) == ["Well", "Plate"]
        assert list(body["shared_metadata"]) == ["input_file_location", "rows", "columns"]
        received = Task.from_body(sent)  # what a worker makes of it
        assert received.id == job.tasks.id_at(0)  # ids do not depend on the order
        assert task_part(received.group) == task_part(job.tasks[0].group) == "A1-Plate_1"

    dcp = {**DCP_JOB, "groups": [{"Metadata_Well": "A01", "Metadata_Plate": "P1"}]}
    (folder / "files" / "dcp.json").write_text(json.dumps(dcp))
    sent = load_job_file(folder / "files" / "dcp.json").tasks.body_json_at(0)
    assert list(json.loads(sent)["Metadata"]) == ["Metadata_Well", "Metadata_Plate"]


# --- WORKSPACE_BUCKET ----------------------------------------------------------------------


def test_a_dcp_config_without_workspace_bucket_gives_the_source_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP's run.py leaves WORKSPACE_BUCKET out when unset, and cp-worker.py then reads the
    pipeline and data file from SOURCE_BUCKET: the task definition says SOURCE_BUCKET."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path / "dcp", "dcp", edit=_drop("WORKSPACE_BUCKET"))

    env = _environment(_config(folder))

    assert (env["AWS_BUCKET"], env["SOURCE_BUCKET"]) == ("lab-logs", "lab-images")
    assert env["WORKSPACE_BUCKET"] == "lab-images"
    # Set, it is used; with neither bucket set, the main one.
    assert _environment(_config(project(tmp_path / "set", "dcp")))["WORKSPACE_BUCKET"] == (
        "lab-workspace"
    )
    config = _config(folder)
    config.storage.source_bucket = ""
    assert _environment(config)["WORKSPACE_BUCKET"] == "lab-logs"


def test_false_for_a_bucket_or_upload_flags_means_unset_as_in_run_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP's run.py defaults SOURCE_BUCKET, WORKSPACE_BUCKET and UPLOAD_FLAGS to 'False' and
    leaves them out of the task definition when they say false (in any case): the worker
    then reads AWS_BUCKET (SOURCE_BUCKET for the workspace) and adds no flags. They are not
    a bucket named "False" and an upload flag "False"."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    unset = {
        "SOURCE_BUCKET": "'False'",
        "WORKSPACE_BUCKET": "'false'",
        "DESTINATION_BUCKET": "'False'",
        "UPLOAD_FLAGS": "'False'",
    }
    folder = project(tmp_path / "dcp", "dcp", edit=lambda text: filled(text, unset))
    config = _config(folder)
    env = _environment(config)

    assert (config.storage.source_bucket, config.storage.upload_flags) == ("", "")
    buckets = ("SOURCE_BUCKET", "WORKSPACE_BUCKET", "DESTINATION_BUCKET")
    assert [env[name] for name in buckets] == ["lab-logs"] * 3
    assert env["UPLOAD_FLAGS"] == ""


# --- CHECK_IF_DONE_BOOL --------------------------------------------------------------------


def test_family_images_are_told_to_check_if_done_only_where_their_check_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B2R-worker.py's check (DOZC) raises a TypeError it does not catch as soon as anything
    is under output_location (``message["plate"] in i`` on an object's size): told True, the
    image would fail every plate once one is converted. It is told False (a count changes
    nothing: it reads none); DCP's and DF's only with a count."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    for value, count in (("True", "''"), ("False", "''"), ("True", "3")):
        folder = project(
            tmp_path / f"{value}{count}",
            "dozc",
            edit=lambda text, v=value, n=count: (
                filled(text, {"CHECK_IF_DONE_BOOL": repr(v)}) + f"EXPECTED_NUMBER_FILES = {n}\n"
            ),
        )
        config = _config(folder)
        assert config.recipe.name is None  # the family image's own worker runs
        assert config.check_if_done.enabled is (value == "True")

        assert _environment(config)["CHECK_IF_DONE_BOOL"] == "False"

    # cp-worker.py and fiji-worker.py read int(EXPECTED_NUMBER_FILES) when checking: without
    # a count their images are told not to check.
    for family in ("dcp", "df"):
        for count, expected in (("7", "True"), ("''", "False")):

            def edit(text: str, count: str = count, family: str = family) -> str:
                if family == "df":
                    text += "CHECK_IF_DONE_BOOL = 'True'\n"
                else:
                    text = filled(text, {"CHECK_IF_DONE_BOOL": "'True'"})
                return filled(text, {"EXPECTED_NUMBER_FILES": count})

            folder = project(tmp_path / f"{family}{expected}", family, edit=edit)
            env = _environment(_config(folder))
            assert env["CHECK_IF_DONE_BOOL"] == expected, (family, count)


def test_setup_on_moto_writes_the_family_environment(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered task definitions, through `ds setup`: a 2023 DCP config (no
    WORKSPACE_BUCKET) and a DOZC config checking for done plates (its image is not told to:
    its check crashes)."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    s3 = aws_client("s3")
    for bucket in ("lab-logs", "lab-images", "lab-workspace", "lab-results", "lab-bucket"):
        s3.create_bucket(Bucket=bucket)
    no_monitor = {"AUTO_MONITOR": "'False'"}
    dcp = project(
        tmp_path / "dcp",
        "dcp",
        edit=lambda text: _drop("WORKSPACE_BUCKET")(filled(text, no_monitor)),
    )
    dozc = project(
        tmp_path / "dozc",
        "dozc",
        edit=lambda text: filled(text, {**no_monitor, "CHECK_IF_DONE_BOOL": "'True'"}),
    )
    ecs = aws_client("ecs")
    for folder, app in ((dcp, "DistributedCP"), (dozc, "DistributedBioFormats2Raw")):
        result = ds("setup", cwd=folder)
        assert result.returncode == 0, result.stderr
        (container,) = ecs.describe_task_definition(taskDefinition=f"{app}Task")["taskDefinition"][
            "containerDefinitions"
        ]
        env = {item["name"]: item["value"] for item in container["environment"]}
        if app == "DistributedCP":
            assert env["WORKSPACE_BUCKET"] == env["SOURCE_BUCKET"] == "lab-images"
        else:
            assert env["CHECK_IF_DONE_BOOL"] == "False"
        # The redrive limit: DCP's JOB_RETRIES = 3; DOZC's config has none, so run.py's 10.
        queue_url = aws_client("sqs").get_queue_url(QueueName=f"{app}Queue")["QueueUrl"]
        redrive = aws_client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        expected = 3 if app == "DistributedCP" else 10
        assert int(json.loads(redrive)["maxReceiveCount"]) == expected
        assert json.loads(env["DS_CONFIG"])["app_name"] == app


# --- plugins -------------------------------------------------------------------------------


def test_plugin_settings_reach_the_image_as_run_py_wrote_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP's run.py: ``if REQUIREMENTS_FILE: REQUIREMENTS = REQUIREMENTS_FILE`` (configs of
    2022–2024 name the file so; the image reads REQUIREMENTS, and its own fallback to
    REQUIREMENTS_FILE is a shell error), and PLUGINS_COMMIT as written, 'False' for "no
    particular commit" (images of mid-2024 check out anything but 'False', an empty name
    included, and exit)."""
    monkeypatch.delenv("DS_BACKEND", raising=False)

    def config_2023(text: str) -> str:  # DCP's config.py plugin lines of 0295eb5 (2023)
        text = "".join(
            line
            for line in text.splitlines(keepends=True)
            if not line.startswith(("REQUIREMENTS ", "PLUGINS_COMMIT ", "USE_PLUGINS "))
        )
        return text + (
            "USE_PLUGINS = 'True'\nPLUGINS_COMMIT = ''\nREQUIREMENTS_FILE = 'requirements.txt'\n"
        )

    env = _environment(_config(project(tmp_path / "2023", "dcp", edit=config_2023)))
    assert (env["REQUIREMENTS"], env["PLUGINS_COMMIT"]) == ("requirements.txt", "False")
    # Today's template: USE_PLUGINS = 'False'. As run.py, no plugin setting then (images of
    # 2023-2024 act on INSTALL_REQUIREMENTS alone, and exit at start when it is 'True').
    env = _environment(_config(project(tmp_path / "today", "dcp")))
    assert env["USE_PLUGINS"] == "False"
    for name in ("UPDATE_PLUGINS", "PLUGINS_COMMIT", "INSTALL_REQUIREMENTS", "REQUIREMENTS"):
        assert name not in env
    used = {"USE_PLUGINS": "'True'"}
    env = _environment(
        _config(project(tmp_path / "used", "dcp", edit=lambda text: filled(text, used)))
    )
    assert (env["REQUIREMENTS"], env["PLUGINS_COMMIT"]) == ("", "False")
    pinned = {"USE_PLUGINS": "'True'", "PLUGINS_COMMIT": "'v1.2'", "REQUIREMENTS": "'[cellpose]'"}
    env = _environment(
        _config(project(tmp_path / "pinned", "dcp", edit=lambda text: filled(text, pinned)))
    )
    assert (env["REQUIREMENTS"], env["PLUGINS_COMMIT"]) == ("[cellpose]", "v1.2")


# --- JOB_RETRIES ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["dcp", "df", "dozc"])
def test_without_job_retries_a_task_is_dead_lettered_after_10_receives_as_with_run_py(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DF's, DOZC's and DS's run.py wrote maxReceiveCount 10; DCP's reads JOB_RETRIES (added
    in 2024) and defaults it to 10 for older config files. A family image does not extend
    its lease: a task longer than SQS_MESSAGE_VISIBILITY is received again, and a lower
    limit dead-letters tasks that run.py's queue let finish."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path / family, family, edit=_drop("JOB_RETRIES"))
    assert _config(folder).queue.job_retries == 10
    with_setting = project(
        tmp_path / f"{family}-set",
        family,
        edit=lambda text: _drop("JOB_RETRIES")(text) + ("JOB_RETRIES = 4\n"),
    )
    assert _config(with_setting).queue.job_retries == 4


# --- SSH_KEY_NAME --------------------------------------------------------------------------


def _key_names(config: Config, fleet: dict[str, Any]) -> list[Any]:
    request = spot.build_fleet_request(
        fleet, config, AwsNames(config), user_data="", image_id="ami-0123456789abcdef0"
    )
    return [spec.get("KeyName") for spec in request["LaunchSpecifications"]]


def test_a_config_py_ssh_key_name_never_replaces_the_fleet_files_key_pair(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No run.py of the family read SSH_KEY_NAME (DCP's 130 versions, DF's 9, DOZC's 10, DS's
    24): the fleet file's KeyName named the key pair. So neither the template's
    'your-key-file.pem' nor a real SSH_KEY_NAME replaces it (validate notes a different
    one); a ds.toml's aws.ssh_key_name still does."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    fleet = copy.deepcopy(FAMILY_FLEET)
    fleet["LaunchSpecifications"][0]["KeyName"] = "lab-key"
    untouched = {"SSH_KEY_NAME": "'your-key-file.pem'"}
    folder = project(tmp_path / "template", "dcp", edit=lambda text: filled(text, untouched))
    config = _config(folder)

    assert config.aws.ssh_key_name == ""
    assert _key_names(config, fleet) == ["lab-key"]
    # A real SSH_KEY_NAME naming another key pair: the fleet file's still stands.
    other = {"SSH_KEY_NAME": "'old-laptop.pem'"}
    other_folder = project(tmp_path / "other", "dcp", edit=lambda text: filled(text, other))
    assert _key_names(_config(other_folder), copy.deepcopy(fleet)) == ["lab-key"]
    # ds.toml's own field keeps its meaning.
    assert _key_names(
        config.model_copy(
            update={"aws": config.aws.model_copy(update={"ssh_key_name": "toml-key"})}
        ),
        copy.deepcopy(fleet),
    ) == ["toml-key"]
    # Both placeholders: validate stops at the fleet file's, before anything is created.
    filled_in = copy.deepcopy(FAMILY_FLEET)
    filled_in["IamFleetRole"] = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"
    spec = filled_in["LaunchSpecifications"][0]
    spec["IamInstanceProfile"]["Arn"] = "arn:aws:iam::123456789012:instance-profile/ecs"
    spec["NetworkInterfaces"][0].update(SubnetId="subnet-0a1b2c3d", Groups=["sg-0a1b2c3d"])
    (folder / "files" / "exampleFleet.json").write_text(json.dumps(filled_in))
    result = ds("validate", "--fleet", "files/exampleFleet.json", cwd=folder)
    assert result.returncode == 2
    assert 'LaunchSpecifications[0].KeyName: "your_key_file_name" is a placeholder' in (
        result.stderr
    )
    # The fleet file's key pair filled in: validate passes and says SSH_KEY_NAME is not used.
    spec["KeyName"] = "lab-key"
    (other_folder / "files" / "exampleFleet.json").write_text(json.dumps(filled_in))
    result = ds("validate", "--fleet", "files/exampleFleet.json", cwd=other_folder)
    assert result.returncode == 0, result.stderr
    assert "SSH_KEY_NAME: 'old-laptop.pem' is not the fleet file's key pair" in result.stderr
    assert "KeyName lab-key, as with run.py" in result.stderr


# --- MACHINE_TYPE, MACHINE_PRICE -------------------------------------------------------------


def test_a_config_without_machine_type_keeps_the_fleet_files_types_and_price(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP's config.py had no MACHINE_TYPE or MACHINE_PRICE before DCP 2.0 (2020): run.py
    sent the fleet file's InstanceType and SpotPrice as written. The request ds makes has
    them too, not ds's default m5.large at $0.10."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    for bucket in ("lab-logs", "lab-images", "lab-workspace", "lab-results"):
        aws_client("s3").create_bucket(Bucket=bucket)
    aws_client("ec2").create_key_pair(KeyName="lab-key")

    def config_2020(text: str) -> str:
        text = _drop("MACHINE_PRICE")(_drop("MACHINE_TYPE")(text))
        return filled(text, {"AUTO_MONITOR": "'False'", "CREATE_DASHBOARD": "'False'"})

    folder = project(tmp_path / "dcp", "dcp", edit=config_2020)
    fleet = moto_family_fleet(aws_client("ec2"), "lab-key")
    fleet["SpotPrice"] = "0.25"
    fleet["LaunchSpecifications"][0]["InstanceType"] = "r5.xlarge"
    (folder / "files" / "exampleFleet.json").write_text(json.dumps(fleet))

    for step in (("setup",), ("startCluster", "files/exampleFleet.json")):
        result = ds(*step, cwd=folder)
        assert result.returncode == 0, result.stderr

    (request,) = aws_client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    config = request["SpotFleetRequestConfig"]
    assert [s["InstanceType"] for s in config["LaunchSpecifications"]] == ["r5.xlarge"]
    assert float(config["SpotPrice"]) == 0.25
    # Set in config.py, they replace the file's, as run.py did since DCP 2.0.
    config_py = _config(project(tmp_path / "today", "dcp"))
    request = spot.build_fleet_request(
        fleet, config_py, AwsNames(config_py), user_data="", image_id="ami-0123456789abcdef0"
    )
    assert [s["InstanceType"] for s in request["LaunchSpecifications"]] == ["m5.xlarge"]
    assert float(request["SpotPrice"]) == 0.20
    # Neither names instance types (run.py then failed): ds's defaults are used, and said.
    small = {"APP_NAME": "'BareCP'", "MEMORY": "4000", "DOCKER_CORES": "1"}
    bare = project(tmp_path / "bare", "dcp", edit=lambda t: filled(config_2020(t), small))
    del fleet["LaunchSpecifications"][0]["InstanceType"]
    (bare / "files" / "exampleFleet.json").write_text(json.dumps(fleet))
    assert ds("setup", cwd=bare).returncode == 0
    started = ds("startCluster", "files/exampleFleet.json", cwd=bare)
    assert started.returncode == 0, started.stderr
    assert "neither config.py (MACHINE_TYPE) nor the fleet file (InstanceType)" in started.stderr
    assert "m5.large is used, at most $0.25/h" in started.stderr  # the file's SpotPrice
    assert "from the fleet file" not in started.stderr


# --- ASSIGN_IP -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["dcp", "df", "dozc"])
@pytest.mark.parametrize("in_file", [True, False])
def test_without_assign_ip_the_fleet_files_public_ip_stands(
    family: str, in_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DF's and DOZC's run.py never touch AssociatePublicIpAddress; DCP's only when
    ASSIGN_IP = 'False'."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path / family, family, edit=_drop("ASSIGN_IP"))
    config = _config(folder)

    assert config.aws.assign_ip is None
    assert set(_public_ips(config, _fleet_with_public_ip(in_file))) == {in_file}


def test_dcp_assign_ip_true_keeps_the_file_and_false_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.py: ``if ASSIGN_IP.lower() == 'false': …['AssociatePublicIpAddress'] = False``;
    'True' (the template's value) leaves the fleet file's setting."""
    monkeypatch.delenv("DS_BACKEND", raising=False)
    keep = _config(project(tmp_path / "true", "dcp"))  # ASSIGN_IP = 'True'
    off = _config(
        project(tmp_path / "false", "dcp", edit=lambda t: filled(t, {"ASSIGN_IP": "'False'"}))
    )

    for in_file in (True, False):
        assert set(_public_ips(keep, _fleet_with_public_ip(in_file))) == {in_file}
        assert set(_public_ips(off, _fleet_with_public_ip(in_file))) == {False}


def test_a_ds_toml_sets_the_public_ip_only_when_assign_ip_is_set(tmp_path: Path) -> None:
    fleet = _fleet_with_public_ip(True)
    unset = Config.model_validate({"app_name": "Demo", "storage": {"bucket": "b"}})
    assert unset.aws.assign_ip is None
    assert set(_public_ips(unset, fleet)) == {True}
    for value in (True, False):
        config = Config.model_validate(
            {"app_name": "Demo", "storage": {"bucket": "b"}, "aws": {"assign_ip": value}}
        )
        assert set(_public_ips(config, _fleet_with_public_ip(not value))) == {value}
