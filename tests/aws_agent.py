"""The test plays the ECS agent: it runs the service's desired tasks as `ds worker` processes
with exactly the environment of the registered task definition (read back through the ECS
API), plus the endpoint of the moto server and fake credentials (a task role's, on AWS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import FAKE_AWS_ENV


def task_definition_environment(ecs: Any, cluster: str, service: str) -> tuple[int, dict[str, str]]:
    """(desired tasks, container environment) of the service's current task definition."""
    svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    taskdef = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
    (container,) = taskdef["containerDefinitions"]
    env = {item["name"]: item["value"] for item in container.get("environment", [])}
    return int(svc["desiredCount"]), env


def start_tasks(
    ecs: Any,
    cluster: str,
    service: str,
    endpoint: str,
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Start one `ds worker` per desired task (each with DOCKER_CORES processes' worth of
    work: here one process per task keeps moto's SQS small)."""
    desired, env = task_definition_environment(ecs, cluster, service)
    procs = []
    for index in range(desired):
        scratch = workdir / f"task-{index}"
        scratch.mkdir(parents=True, exist_ok=True)
        full_env = {
            "PATH": os.environ["PATH"],
            **env,
            **FAKE_AWS_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": str(workdir / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "none"),
            "DS_SCRATCH": str(scratch),
            **(extra_env or {}),
        }
        log = (workdir / f"task-{index}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed_something",
                    "worker",
                    "--name",
                    f"task-{index}",
                ],
                cwd=scratch,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs
