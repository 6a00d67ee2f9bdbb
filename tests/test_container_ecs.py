"""The worker image and the task definition together, started the way ECS starts them.

ECS runs a container's entrypoint followed by its command: the task definition's
``entryPoint`` if it has one, else the image's ENTRYPOINT; then the task definition's
``command`` (tests/aws_agent.py, `ecs_argv`). An image whose ENTRYPOINT is ``ds worker`` with
a task definition whose command is ``ds worker`` ran ``ds worker ds worker`` and exited 2 on
every machine, which a plain-process stand-in for the ECS agent never shows. So:

- fast: the request `ds setup` builds, combined with docker/Dockerfile's ENTRYPOINT, runs
  exactly ``ds worker``;
- end to end (marker ``podman``): two Debian base images made with debootstrap (cached across
  runs) — a tool image with an older glibc and Python than ds needs, and one with Python 3.11
  to bundle from — the worker image built from them by `ds image build --engine podman`,
  `ds setup` and
  `ds submit` against moto, and the registered task definition — read back through the ECS
  API — started under podman as ECS would start it, until the tasks have their done markers.
  Without podman it skips, except under ``CI=true``, where it fails: a CI run must not pass
  without the one test that starts the real image. `scripts/install-podman.sh` (run by
  ``make test``) installs podman, runc and debootstrap.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, NoReturn

import boto3
import pytest
import tomli_w
from botocore.exceptions import ClientError

from aws_agent import (
    WORKER_ARGV,
    dockerfile_start,
    ecs_argv,
    podman_run_argv,
    service_task_definition,
)
from conftest import REPO
from distributed_something.backends.aws import setup
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.taskenv import task_environment
from distributed_something.config.model import Config

Ds = Callable[..., CompletedProcess[str]]
REGION = "us-east-1"
BUCKET = "ds-container"
APP = "Ctr"

CONTAINERS_CONF = REPO / "scripts" / "containers.conf"


@dataclass(frozen=True)
class LocalBase:
    """A base image made here with debootstrap (no registry is reachable), once per machine."""

    image: str
    suite: str
    packages: str


#: Where the bundled Python comes from: Debian 12's Python 3.11 on glibc 2.36 (plays
#: python:3.11-slim-bookworm, `ds image build --python-image`).
PYTHON_BASE = LocalBase(
    "localhost/ds-test/debian-python:bookworm", "bookworm", "python3,python3-venv,ca-certificates"
)
#: The tool image: Debian 11, an older glibc (2.31) and an older Python (3.9) than ds needs, as
#: the family's images have (CellProfiler 4 ships Python 3.8).
TOOL_BASE = LocalBase("localhost/ds-test/debian-tool:bullseye", "bullseye", "python3")
WORKER_IMAGE = "localhost/ds-test/worker:latest"
#: PATH as Debian's published images set it (an imported file system has none).
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ds-tests"

# Runs inside the container: reads its downloaded input, writes one output file.
WORK = (
    "import pathlib, sys\n"
    "src, out, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]\n"
    "(out / 'result.txt').write_text(name + ':' + src.read_text().upper())\n"
)


# --- fast: the request, against the Dockerfile ----------------------------------------------


class RecordingEcs:
    """An ECS client that has no task definition yet and records what is registered."""

    def __init__(self) -> None:
        self.registered: list[dict[str, Any]] = []

    def describe_task_definition(self, **_: Any) -> NoReturn:
        error = {"Code": "ClientException", "Message": "Unable to describe task definition."}
        raise ClientError({"Error": error}, "DescribeTaskDefinition")

    def register_task_definition(self, **request: Any) -> dict[str, Any]:
        self.registered.append(request)
        arn = f"arn:aws:ecs:{REGION}:123456789012:task-definition/{request['family']}:1"
        return {"taskDefinition": {"taskDefinitionArn": arn}}


def registered_container(image: str, *, keep_entrypoint: bool) -> dict[str, Any]:
    """The container definition `register_task_definition` sends for a run of ``image``
    (with a recipe unless ``keep_entrypoint``, as `ds setup` decides)."""
    recipe = {} if keep_entrypoint else {"name": "command", "argv": ["true"]}
    config = Config.model_validate(
        {"app_name": APP, "backend": "aws", "image": image, "recipe": recipe}
    )
    env = task_environment(config, queue_url="http://127.0.0.1:1/123/CtrQueue", run_id="r1")
    ecs = RecordingEcs()
    setup.register_task_definition(
        ecs, AwsNames(config), config, env, task_role_arn=None, keep_entrypoint=keep_entrypoint
    )
    (request,) = ecs.registered
    (container,) = request["containerDefinitions"]
    result: dict[str, Any] = container
    return result


def test_the_registered_task_runs_ds_worker_exactly_once_in_our_image() -> None:
    entrypoint, cmd = dockerfile_start()
    assert (entrypoint, cmd) == (["ds", "worker"], [])  # `docker run IMAGE` runs the worker

    container = registered_container("me/ds-tool:1", keep_entrypoint=False)

    assert container["entryPoint"] == ["ds", "worker"] and "command" not in container
    assert ecs_argv(container, entrypoint, cmd) == WORKER_ARGV
    # Whatever entrypoint and CMD the image has, e.g. a tool image with `ds` added:
    assert ecs_argv(container, ["/usr/bin/tini", "--"], ["cellprofiler"]) == WORKER_ARGV


def test_the_old_request_is_the_double_worker_this_rule_catches() -> None:
    entrypoint, cmd = dockerfile_start()
    old = {"command": ["ds", "worker"]}  # what setup registered before: appended to ENTRYPOINT
    assert ecs_argv(old, entrypoint, cmd) == ["ds", "worker", "ds", "worker"]


def test_family_images_keep_their_own_entrypoint_and_command() -> None:
    container = registered_container(
        "cellprofiler/distributed-cellprofiler:2.0.0_4.2.1", keep_entrypoint=True
    )
    assert "entryPoint" not in container and "command" not in container
    assert ecs_argv(container, ["./run-worker.sh"], []) == ["./run-worker.sh"]


def test_dockerfile_start_follows_docker_for_cmd_and_shell_form(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'FROM x\nCMD ["--help"]\n# ENTRYPOINT ["no"]\nENTRYPOINT tool \\\n    --flag\n'
    )
    assert dockerfile_start(dockerfile) == (["/bin/sh", "-c", "tool --flag"], ["--help"])
    dockerfile.write_text('FROM x\nCMD ["a"]\n')
    with pytest.raises(ValueError, match="no ENTRYPOINT"):
        dockerfile_start(dockerfile)


# --- end to end: the image under podman ------------------------------------------------------


def unavailable(reason: str) -> NoReturn:
    """Skip — or fail under CI=true, where the container test must run."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def podman_env() -> dict[str, str]:
    """This process's environment with scripts/containers.conf (the settings podman needs on
    these machines: runc, cgroupfs, fixed ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(argv: list[str], *, timeout: float, **kwargs: Any) -> CompletedProcess[str]:
    """Run ``argv`` with `podman_env`; fails the test with its output when it fails."""
    result = subprocess.run(
        argv,
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv[:4])} … exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def require_podman() -> str:
    """The podman executable, checked to run here."""
    podman = shutil.which("podman")
    if podman is None:
        unavailable("podman is not installed (scripts/install-podman.sh installs it)")
    probe = subprocess.run(
        [podman, "info"], env=podman_env(), capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.fail(f"podman is installed but `podman info` fails: {probe.stderr[-2000:]}")
    return podman


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for bookworm (one-line and deb822 sources),
    else deb.debian.org. (The mirror serves every suite: bullseye's too.)"""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in [p for p in files if p.is_file()]:
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line).split()  # drop "[signed-by=…]" options
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return words[1]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (key.strip(), value.strip())
                for key, _, value in (ln.partition(":") for ln in stanza.splitlines())
                if not key.startswith("#")
            )
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every test run on this machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base_image(podman: str, base: LocalBase) -> float:
    """Make ``base`` unless podman has it (debootstrap, ~40-70 s, once per machine);
    returns the seconds spent."""
    started = time.monotonic()
    with machine_lock("base-image"):
        exists = subprocess.run(
            [podman, "image", "exists", base.image], env=podman_env(), timeout=60, check=False
        )
        if exists.returncode == 0:
            return time.monotonic() - started
        debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
        if debootstrap is None:
            unavailable("debootstrap is not installed (scripts/install-podman.sh installs it)")
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={base.packages}",
                    base.suite,
                    str(rootfs),
                    debian_mirror(),
                ],
                timeout=1200,
            )
            with subprocess.Popen(
                ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
            ) as tar:
                run(
                    [podman, "import", "--change", f"ENV PATH={DEBIAN_PATH}", "-", base.image],
                    stdin=tar.stdout,
                    timeout=600,
                )
            assert tar.returncode == 0
        finally:
            remove_rootfs(rootfs)
    return time.monotonic() - started


def remove_rootfs(rootfs: Path) -> None:
    """Delete a debootstrap target, first unmounting what a failed debootstrap may have left
    mounted inside it (/proc, /sys): deleting through those would reach the host's."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(f"{rootfs}/")
    ]
    for mount in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, timeout=60)
    shutil.rmtree(rootfs, ignore_errors=True)


def pip_volumes(tmp_path: Path) -> list[str]:
    """``--volume`` values that let pip inside the build reach this machine's package index:
    its CA bundle (the index may be reached through a TLS-re-signing gateway whose CA only
    the host trusts) and a pip.conf with its index settings (/etc/pip.conf, PIP_* variables)."""
    conf = configparser.ConfigParser()
    if Path("/etc/pip.conf").is_file():
        conf.read("/etc/pip.conf")
    if not conf.has_section("global"):
        conf.add_section("global")
    for variable, key in (
        ("PIP_INDEX_URL", "index-url"),
        ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
        ("PIP_TRUSTED_HOST", "trusted-host"),
    ):
        if os.environ.get(variable):
            conf.set("global", key, os.environ[variable])
    bundle = os.environ.get("PIP_CERT") or conf.get("global", "cert", fallback="") or CA_BUNDLE
    volumes = []
    if Path(bundle).is_file():
        conf.set("global", "cert", CA_BUNDLE)  # where the bundle is mounted in the build
        volumes.append(f"{bundle}:{CA_BUNDLE}:ro")
    for key in ("find-links", "find_links"):
        conf.remove_option("global", key)  # host folders the build cannot see
    pip_conf = tmp_path / "pip.conf"
    with pip_conf.open("w") as handle:
        conf.write(handle)
    return [*volumes, f"{pip_conf}:/etc/pip.conf:ro"]


def image_id(podman: str, image: str) -> str | None:
    found = subprocess.run(
        [podman, "image", "inspect", "--format", "{{.Id}}", image],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if found.returncode != 0:
        return None
    return found.stdout.strip() or None


def make_project(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "proj"
    (folder / "files").mkdir(parents=True)
    config: dict[str, Any] = {
        "app_name": APP,
        "backend": "aws",
        "image": WORKER_IMAGE,
        "recipe": {
            "name": "command",
            # {python} is the interpreter of `ds worker` inside the container.
            "argv": ["{python}", "-c", WORK, "{input_dir}/in/{name}.txt", "{output_dir}", "{name}"],
            "inputs": ["in/{name}.txt"],
            "output_prefix": "out/{name}",
        },
        "cluster": {"machines": 1, "tasks_per_machine": 1, "docker_cores": 1, "memory": 1024},
        "queue": {"visibility": 60, "job_retries": 2},
        "storage": {"bucket": BUCKET},
        "aws": {"region": REGION, "ecs_cluster": f"{APP}Cluster"},
        "local": {"poll_interval": 0.2},
    }
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "files" / "job.json").write_text(json.dumps({"groups": [{"name": n} for n in names]}))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    for name in names:
        s3.put_object(Bucket=BUCKET, Key=f"in/{name}.txt", Body=f"input of {name}".encode())
    return folder


def ds_ok(ds: Ds, *args: str, cwd: Path, timeout: float = 240) -> CompletedProcess[str]:
    result = ds(*args, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"ds {' '.join(args)}: {result.stderr[-3000:]}"
    return result


@pytest.mark.podman
@pytest.mark.slow
def test_worker_image_runs_the_registered_task_definition_like_ecs(
    aws: str, tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings: dict[str, float] = {}
    podman = require_podman()
    timings["base images"] = ensure_base_image(podman, PYTHON_BASE)
    timings["base images"] += ensure_base_image(podman, TOOL_BASE)

    monkeypatch.setenv("CONTAINERS_CONF", str(CONTAINERS_CONF))  # for `ds image build`
    # No intermediate images: each run's would stay behind; pip install dominates anyway.
    monkeypatch.setenv("BUILDAH_LAYERS", "false")
    started = time.monotonic()
    previous = image_id(podman, WORKER_IMAGE)
    build = ["image", "build", "--engine", "podman", "--base", TOOL_BASE.image, "--tag"]
    build += [WORKER_IMAGE, "--python-image", PYTHON_BASE.image]
    for volume in pip_volumes(tmp_path):
        build += ["--volume", volume]
    with machine_lock("worker-image"):
        ds_ok(ds, *build, cwd=tmp_path, timeout=900)
        built = image_id(podman, WORKER_IMAGE)
        if previous not in (None, built):  # the last run's image, now untagged: not kept
            subprocess.run([podman, "rmi", previous], env=podman_env(), capture_output=True)
    timings["worker image"] = time.monotonic() - started
    # ds brought its own Python: the tool's python3 and C library are untouched and older than
    # what ds needs, and only `ds` was added to PATH (after the tool's own folders).
    shown = "python3 --version; command -v python3; ldd --version | head -n 1; command -v ds"
    in_image = [podman, "run", "--rm", "--network", "none", "--entrypoint", "sh", WORKER_IMAGE]
    tool = run([*in_image, "-c", shown], timeout=180).stdout.splitlines()
    assert tool[0].startswith("Python 3.9.") and tool[1] == "/usr/bin/python3", tool
    assert "2.31" in tool[2] and tool[3] == "/opt/ds/bin/ds", tool

    started = time.monotonic()
    names = ["alpha", "beta", "gamma"]
    proj = make_project(tmp_path, names)
    ds_ok(ds, "setup", cwd=proj)
    ds_ok(ds, "submit", "files/job.json", cwd=proj)
    ecs = boto3.client("ecs", region_name=REGION)
    # What start-cluster does once machines are up (moto runs no tasks itself).
    ecs.update_service(cluster=f"{APP}Cluster", service=f"{APP}Service", desiredCount=1)
    desired, taskdef = service_task_definition(ecs, f"{APP}Cluster", f"{APP}Service")
    assert desired == 1
    (container,) = taskdef["containerDefinitions"]
    assert container["image"] == WORKER_IMAGE
    assert not any(
        k.startswith("AWS_ACCESS") for k in (e["name"] for e in container["environment"])
    )

    name = f"ds-test-{os.getpid()}-{time.monotonic_ns()}"
    argv = podman_run_argv(podman, taskdef, name=name, endpoint=aws, host_root=tmp_path / "host")
    try:
        ran = subprocess.run(
            argv, env=podman_env(), capture_output=True, text=True, timeout=300, check=False
        )
        log = ran.stdout + ran.stderr
        assert ran.returncode == 0, f"the container exited {ran.returncode}:\n{log[-4000:]}"
        # What the engine actually started, from the task definition and the image's config.
        (inspected,) = json.loads(run([podman, "container", "inspect", name], timeout=60).stdout)
        # ECS's initProcessEnabled is `docker run --init`: the engine's init as PID 1, then
        # exactly `ds worker` (not twice).
        engine_ran = [inspected["Path"], *inspected["Args"]]
        assert engine_ran[0].endswith("-init"), engine_ran
        assert engine_ran[1:] == ["--", *WORKER_ARGV], engine_ran
    finally:
        subprocess.run(
            [podman, "rm", "-f", name], env=podman_env(), capture_output=True, timeout=120
        )
    timings["run"] = time.monotonic() - started

    s3 = boto3.client("s3", region_name=REGION)
    for task in names:
        body = s3.get_object(Bucket=BUCKET, Key=f"out/{task}/result.txt")["Body"].read()
        assert body.decode() == f"{task}:INPUT OF {task.upper()}"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="_ds/")
        for o in page.get("Contents", [])
    ]
    assert len([k for k in keys if "/done/" in k and k.endswith(".json")]) == len(names), keys
    status = json.loads(ds_ok(ds, "status", "--json", cwd=proj).stdout)
    assert status["counts"]["done"] == len(names) and status["counts"]["dead"] == 0
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
