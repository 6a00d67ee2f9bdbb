"""Shared test helpers: projects in tmp folders, and `ds` run as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import loopback_guard
from motoserver import start_moto, stop_moto

REPO = Path(__file__).resolve().parents[1]

#: tests/site: its sitecustomize guards every Python process the tests start (loopback only)
#: and, in AWS tests, checks their AWS requests against the API reference's limits.
SITE = Path(__file__).resolve().parent / "site"
#: Every connect to an address that is not loopback, by this process or one it started.
NETWORK_LOG = Path(tempfile.mkdtemp(prefix="ds-tests-net-")) / "refused.log"
os.environ["DS_TEST_NETWORK_LOG"] = str(NETWORK_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
# Without credentials, botocore would ask the instance metadata service (not loopback).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
loopback_guard.install(str(NETWORK_LOG))


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fail a test during which a connect left loopback (it was refused: `loopback_guard`)."""
    before = NETWORK_LOG.stat().st_size if NETWORK_LOG.exists() else 0
    yield
    if NETWORK_LOG.exists() and NETWORK_LOG.stat().st_size > before:
        with NETWORK_LOG.open(encoding="utf-8") as log:
            log.seek(before)
            lines = sorted(set(log.read().splitlines()))
        pytest.fail("tests reach only loopback; refused:\n" + "\n".join(lines))


#: A skip whose reason starts with this is a contract that does not apply to an
#: implementation (SQS keeps no release errors), not something missing on the machine.
NOT_APPLICABLE = "not applicable:"
#: A skip for the real microscopy data beside the repository (../shared/data): the machine
#: provides it, not `make test`.
NO_SHARED_DATA = "no shared data:"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true a skip is a failure: `make test` installs everything the suite needs
    (CellProfiler, ImageJ, moto, podman), so a test that skips there hides a broken setup.
    Only skips marked `NOT_APPLICABLE` or `NO_SHARED_DATA` stay skips."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI", "").strip().lower() != "true" or not report.skipped:
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
    if reason.removeprefix("Skipped: ").startswith((NOT_APPLICABLE, NO_SHARED_DATA)):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true (make test should have made it runnable): {reason}"


SHARED_DATA = REPO.parent / "shared" / "data"


def write_project(
    folder: Path,
    *,
    argv: list[str],
    groups: list[Any],
    output_prefix: str = "out/{name}",
    inputs: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    app_name: str = "T",
) -> Path:
    """Write ds.toml + job.json for the command recipe into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "app_name": app_name,
        "recipe": {
            "name": "command",
            "argv": argv,
            "output_prefix": output_prefix,
            "inputs": inputs or [],
        },
        "cluster": {"docker_cores": 2},
        "queue": {"visibility": 30, "job_retries": 3},
        "local": {"poll_interval": 0.05},
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "job.json").write_text(json.dumps({"groups": groups}))
    return folder


@pytest.fixture
def ds() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `ds ARGS` in a folder as users do; returns the completed process."""

    def run(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "distributed_something", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return run


# --- AWS on moto's server (127.0.0.1 only) ------------------------------------------------

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _start_moto(extra_env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    """A moto server (tests/motoserver.py) with this environment plus ``extra_env``;
    skips the test when moto is not installed."""
    pytest.importorskip("moto", reason="moto[server] is in the dev extra: make test installs it")
    return start_moto({**os.environ, **extra_env})


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the whole session; yields its URL."""
    url, proc = _start_moto({})
    yield url
    stop_moto(proc)


@pytest.fixture(scope="session")
def moto_iam_server() -> Iterator[str]:
    """A second moto server that knows AWS's managed policies (`ds aws bootstrap` attaches
    some). Separate because loading them makes every reset slow."""
    url, proc = _start_moto({"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})
    yield url
    stop_moto(proc)


def _use_moto(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Reset ``url``'s state and point every AWS call of this test at it, with fake
    credentials, no instance metadata and no real config or credentials files. Every
    request the code builds, in this process and in the Python processes the test starts
    (tests/site), is checked against the API reference's limits (`aws_constraints`): moto
    accepts what AWS refuses. The test fails at its end if one was broken
    (`_aws_limits_kept`)."""
    import urllib.request

    import aws_constraints

    urllib.request.urlopen(
        urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30
    ).close()
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    # moto's counts are exact: the monitor need not wait a minute to believe an empty queue
    monkeypatch.setenv("DS_DRAIN_CONFIRM_SECONDS", "1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    from distributed_something.backends.aws import clients

    clients._sessions.clear()  # sessions cache credentials; each test starts clean
    sink = tmp_path / "aws-limits-broken.txt"
    monkeypatch.setenv("DS_TEST_AWS_VIOLATIONS", str(sink))  # read by tests/site

    def report(line: str) -> None:
        with sink.open("a", encoding="utf-8") as out:
            out.write(f"this process: {line}\n")

    monkeypatch.setattr(
        clients,
        "client_observers",
        [*clients.client_observers, lambda made: aws_constraints.watch(made, report)],
    )
    return url


def _aws_limits_kept(tmp_path: Path) -> None:
    """Fail when a request of the test broke a limit of the API reference (`_use_moto`)."""
    sink = tmp_path / "aws-limits-broken.txt"
    if sink.exists():
        lines = sorted(set(sink.read_text(encoding="utf-8").splitlines()))
        pytest.fail("AWS would refuse these requests (moto took them):\n" + "\n".join(lines))


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh moto state, and an environment where every AWS call goes to it; yields the
    endpoint URL. Nothing can reach anything but 127.0.0.1."""
    yield _use_moto(moto_server, monkeypatch, tmp_path)
    _aws_limits_kept(tmp_path)


@pytest.fixture
def aws_iam(moto_iam_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Like `aws`, on the server that knows AWS's managed policies."""
    yield _use_moto(moto_iam_server, monkeypatch, tmp_path)
    _aws_limits_kept(tmp_path)


# --- every AWS operation the code performs (for the least-privilege tests) ----------------


@dataclass
class AwsCall:
    """One operation a `clients.client` client performed: who (the ``actor`` label current
    at the time), the botocore service name, the API operation and its parameters."""

    actor: str
    service: str
    operation: str
    params: dict[str, Any]


@dataclass
class AwsCallRecorder:
    """Every operation of every client made while the fixture is active, labelled with
    `actor` (set it with `acting`); thread-safe (workers call AWS from threads)."""

    calls: list[AwsCall] = field(default_factory=list)
    actor: str = "unlabelled"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def acting(self, actor: str) -> Iterator[None]:
        """Label the calls made inside the block with ``actor``."""
        before, self.actor = self.actor, actor
        try:
            yield
        finally:
            self.actor = before

    def of(self, actor: str) -> list[AwsCall]:
        """The calls made while ``actor`` was acting."""
        with self.lock:
            return [c for c in self.calls if c.actor == actor]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        call = AwsCall(self.actor, model.service_model.service_name, model.name, dict(params))
        with self.lock:
            self.calls.append(call)


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> AwsCallRecorder:
    """Record each operation of every client `clients.client` makes from now on, through
    botocore's ``before-parameter-build`` event (its parameters as the code passed them).
    Clients made before the fixture (cached sessions are cleared by `aws`) are not seen."""
    from distributed_something.backends.aws import clients

    recorder = AwsCallRecorder()

    def observe(made: Any) -> None:
        made.meta.events.register("before-parameter-build.*.*", recorder._record)

    monkeypatch.setattr(clients, "client_observers", [*clients.client_observers, observe])
    return recorder


# --- a real one-node Slurm cluster (scripts/slurm-local.sh) ----------------------------------


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A one-node Slurm cluster started by scripts/slurm-local.sh (which installs slurm-wlm
    and munge when missing) for the session, its clients pointed at it through SLURM_CONF;
    yields that path. A cluster already running (`make slurm`) is used and left running;
    one started here is stopped at the end. Skips (a failure under CI=true) when the script
    cannot start one."""
    script = REPO / "scripts" / "slurm-local.sh"
    env_line = subprocess.run(
        [str(script), "env"], capture_output=True, text=True, check=False
    ).stdout.strip()
    conf = env_line.partition("SLURM_CONF=")[2]
    if not conf:
        pytest.skip(f"{script} env printed no SLURM_CONF")
    env = {**os.environ, "SLURM_CONF": conf}
    already = (
        Path(conf).is_file()
        and subprocess.run(
            ["sinfo", "--noheader"], env=env, capture_output=True, check=False, timeout=30
        ).returncode
        == 0
        if _on_path("sinfo")
        else False
    )
    started = subprocess.run(
        [str(script), "start"], capture_output=True, text=True, check=False, timeout=600
    )
    if started.returncode != 0:
        pytest.skip(f"{script} start failed: {started.stderr.strip()[-500:]}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not already:
            subprocess.run([str(script), "stop"], capture_output=True, check=False, timeout=120)


def _on_path(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None or Path("/usr/bin", name).exists()
