"""A worker must fit on the machines of aws.machine_type (`machine_fit`): moto places any
task on any instance; ECS places a worker only where its memory and CPU units are free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.fleet import InstanceFacts, instance_facts
from distributed_something.backends.aws.machine_fit import machine_fit
from distributed_something.config.model import Config
from distributed_something.errors import InputError

M5_XLARGE = InstanceFacts("x86_64", 16384, 4)
T3_MICRO = InstanceFacts("x86_64", 1024, 2)
C5_LARGE = InstanceFacts("x86_64", 4096, 2)


def config(**cluster: Any) -> Config:
    return Config.model_validate(
        {"app_name": "Fit", "backend": "aws", "image": "x/y:1", "cluster": cluster}
    )


def fit(facts: dict[str, InstanceFacts], *, legacy: bool = False, **cluster: Any) -> list[str]:
    source = "config.py" if legacy else "ds.toml"
    return machine_fit(config(**cluster), facts, source=source)


def test_the_familys_default_worker_fits_an_m5_xlarge() -> None:
    # Distributed-CellProfiler's config: MEMORY 15000, DOCKER_CORES 4, one task a machine.
    assert fit({"m5.xlarge": M5_XLARGE}, memory=15000, docker_cores=4) == []


def test_a_worker_larger_than_every_machine_is_refused_naming_the_field() -> None:
    with pytest.raises(InputError) as raised:
        fit({"m5.xlarge": M5_XLARGE}, memory=17000)
    assert raised.value.field == "cluster.memory"
    assert "m5.xlarge (16,384 MiB, 4 vCPUs" in raised.value.problem
    with pytest.raises(InputError) as legacy:
        fit({"m5.xlarge": M5_XLARGE}, legacy=True, memory=17000)
    assert legacy.value.field == "MEMORY" and "MACHINE_TYPE" in legacy.value.fix
    with pytest.raises(InputError) as cpu:
        fit({"c5.large": C5_LARGE}, memory=2000, docker_cores=4)  # 4,096 units on 2,048
    assert cpu.value.field == "cluster.cpu_shares"


def test_a_worker_at_the_installed_memory_may_not_fit() -> None:
    (warning,) = fit({"m5.xlarge": M5_XLARGE}, memory=16000)
    assert "may not fit on m5.xlarge" in warning and "15,892 MiB or less" in warning
    (legacy,) = fit({"m5.xlarge": M5_XLARGE}, legacy=True, memory=16000)  # a config.py's names
    assert "(MEMORY)" in legacy and "cluster.memory" not in legacy


def test_fewer_workers_to_a_machine_than_asked_are_said() -> None:
    (warning,) = fit({"m5.xlarge": M5_XLARGE}, memory=6000, tasks_per_machine=4)
    assert "only 2 of cluster.tasks_per_machine = 4 workers fit on m5.xlarge" in warning
    (cpu,) = fit({"m5.xlarge": M5_XLARGE}, memory=1000, docker_cores=2, tasks_per_machine=3)
    assert "only 2 of" in cpu


def test_a_type_too_small_beside_others_is_named_and_unknown_sizes_pass() -> None:
    warnings = fit({"m5.xlarge": M5_XLARGE, "t3.micro": T3_MICRO}, memory=4000)
    assert len(warnings) == 1 and "no worker fits on t3.micro" in warnings[0]
    assert fit({"x9.huge": InstanceFacts("x86_64")}, memory=500_000) == []


def test_instance_facts_read_memory_and_vcpus_from_ec2(aws: str) -> None:
    ec2 = client("ec2", AwsSettings(region="us-east-1"))
    facts = instance_facts(ec2, ["m5.xlarge", "m6g.large"])
    assert facts["m5.xlarge"] == M5_XLARGE
    assert facts["m6g.large"] == InstanceFacts("arm64", 8192, 2)


def test_setup_refuses_a_worker_no_machine_can_hold_before_anything_exists(
    aws: str, tmp_path: Path
) -> None:
    from moto_projects import aws_client, aws_project, ds_ok

    folder = aws_project(
        tmp_path / "p",
        app="FitApp",
        bucket="fit-bucket",
        names=["a"],
        argv=["true"],
        cluster={"memory": 20000},
        queue={},
    )
    text = (folder / "ds.toml").read_text()
    (folder / "ds.toml").write_text(text.replace("[aws]", '[aws]\nmachine_type = ["m5.xlarge"]'))
    result = ds_ok("setup", cwd=folder, ok=(2,))
    assert "cluster.memory" in result.stderr and "larger than every machine" in result.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
