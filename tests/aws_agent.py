"""The test plays the ECS agent: it starts the service's desired tasks from the registered task
definition (read back through the ECS API), with exactly its environment, plus the endpoint of
the moto server and fake credentials (a task role's, on AWS).

How ECS starts a container (it hands ``entryPoint`` and ``command`` to Docker's container
create call, and Docker merges them with the image's config): the task definition's
``entryPoint`` if it has one, else the image's ENTRYPOINT; followed by the task definition's
``command``, else — only when the entrypoint is the image's — the image's CMD. `ecs_argv` is
that rule. Two stand-ins use it:

- `start_tasks` (fast): one plain `ds worker` process per task. It first composes the argv ECS
  would start in our image (docker/Dockerfile's ENTRYPOINT and CMD) and refuses to stand in
  for anything but exactly ``ds worker``.
- `podman_run_argv` (tests/test_container_ecs.py): the real image under podman, given the
  task definition's ``entryPoint``/``command`` the way ECS gives them to Docker, so the
  engine itself does the merge.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conftest import FAKE_AWS_ENV, REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
#: What our image must end up running.
WORKER_ARGV = ["ds", "worker"]


def service_task_definition(ecs: Any, cluster: str, service: str) -> tuple[int, dict[str, Any]]:
    """(desired tasks, task definition) of the service, as the ECS API returns them."""
    svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    taskdef: dict[str, Any] = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])[
        "taskDefinition"
    ]
    return int(svc["desiredCount"]), taskdef


def task_definition_environment(ecs: Any, cluster: str, service: str) -> tuple[int, dict[str, str]]:
    """(desired tasks, container environment) of the service's current task definition."""
    desired, taskdef = service_task_definition(ecs, cluster, service)
    (container,) = taskdef["containerDefinitions"]
    env = {item["name"]: item["value"] for item in container.get("environment", [])}
    return desired, env


def ecs_argv(
    container: Mapping[str, Any], image_entrypoint: Sequence[str], image_cmd: Sequence[str]
) -> list[str]:
    """The argv a container definition ``container`` starts with in an image whose config has
    ``image_entrypoint`` and ``image_cmd`` (ECS's rule, see the module docstring)."""
    entry_point = list(container.get("entryPoint") or [])
    command = list(container.get("command") or [])
    if entry_point:
        return [*entry_point, *command]  # an explicit entrypoint drops the image's CMD
    return [*image_entrypoint, *(command or image_cmd)]


def dockerfile_start(path: Path = DOCKERFILE) -> tuple[list[str], list[str]]:
    """(ENTRYPOINT, CMD) of the image built from the single-stage Dockerfile ``path``.

    The last ENTRYPOINT and CMD instructions win; exec form is JSON, shell form becomes
    ``/bin/sh -c TEXT``. A Dockerfile that sets ENTRYPOINT but no CMD has an empty CMD
    (Docker resets the base image's CMD then). Raises ValueError when the file sets no
    ENTRYPOINT: the image's would come from its base, which this file does not show.
    """
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    for instruction in _instructions(path.read_text()):
        keyword, _, argument = instruction.partition(" ")
        if keyword.upper() == "ENTRYPOINT":
            entrypoint = _exec_form(argument)
        elif keyword.upper() == "CMD":
            cmd = _exec_form(argument)
    if entrypoint is None:
        raise ValueError(f"{path} sets no ENTRYPOINT: its base image's applies")
    return entrypoint, cmd or []


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        instructions.append((current + line).strip())
        current = ""
    if current:
        instructions.append(current.strip())
    return instructions


def _exec_form(argument: str) -> list[str]:
    argument = argument.strip()
    if argument.startswith("["):
        parsed = json.loads(argument)
        if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
            return parsed
    return ["/bin/sh", "-c", argument]


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
    work: here one process per task keeps moto's SQS small).

    Raises AssertionError when the task definition, started in our image (docker/Dockerfile),
    would run anything but exactly ``ds worker``: a process stand-in would hide that.
    """
    desired, taskdef = service_task_definition(ecs, cluster, service)
    (container,) = taskdef["containerDefinitions"]
    argv = ecs_argv(container, *dockerfile_start())
    assert argv == WORKER_ARGV, f"in docker/Dockerfile's image this task runs {shlex.join(argv)}"
    env = {item["name"]: item["value"] for item in container.get("environment", [])}
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
                # `ds` is this checkout's, run by this interpreter; --name tells logs apart.
                [
                    sys.executable,
                    "-m",
                    "distributed_something",
                    *argv[1:],
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


def podman_run_argv(
    podman: str,
    taskdef: Mapping[str, Any],
    *,
    name: str,
    endpoint: str,
    host_root: Path,
    extra_env: Mapping[str, str] | None = None,
) -> list[str]:
    """The `podman run` of one task of ``taskdef`` (as the ECS API returns it), as ECS
    starts it on an instance.

    The task definition's ``entryPoint`` (if any) becomes ``--entrypoint`` and its
    ``command`` the arguments after the image, so podman merges them with the image's
    ENTRYPOINT/CMD as Docker does for ECS; ``linuxParameters.initProcessEnabled`` becomes
    ``--init``. Also: its environment, memory (MiB) and CPU
    shares, its host volumes (``sourcePath`` under ``host_root``, which stands for the
    instance's file system), the host network; then what the agent adds: the moto
    ``endpoint`` as AWS_ENDPOINT_URL, fake credentials (a task role's on AWS), no instance
    metadata, and ``extra_env``. The container is named ``name`` and kept after it exits
    (inspect, then remove it).
    """
    (container,) = taskdef["containerDefinitions"]
    argv = [podman, "run", "--name", name, "--network=host"]
    if container.get("memory"):
        argv.append(f"--memory={container['memory']}m")
    if container.get("cpu"):
        argv.append(f"--cpu-shares={container['cpu']}")
    if container.get("entryPoint"):
        argv += ["--entrypoint", json.dumps(container["entryPoint"])]
    if (container.get("linuxParameters") or {}).get("initProcessEnabled"):
        argv.append("--init")  # docker run --init, as ECS maps it (podman: catatonit)
    sources = {
        volume["name"]: str((volume.get("host") or {}).get("sourcePath", ""))
        for volume in taskdef.get("volumes") or []
    }
    for mount in container.get("mountPoints") or []:
        host = host_root / sources[mount["sourceVolume"]].lstrip("/")
        host.mkdir(parents=True, exist_ok=True)
        mode = ":ro" if mount.get("readOnly") else ""
        argv += ["--volume", f"{host}:{mount['containerPath']}{mode}"]
    environment = {item["name"]: item["value"] for item in container.get("environment", [])}
    environment.update(FAKE_AWS_ENV)
    environment["AWS_ENDPOINT_URL"] = endpoint
    environment.update(extra_env or {})
    for key, value in environment.items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, container["image"], *(container.get("command") or [])]
