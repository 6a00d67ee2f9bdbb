"""The Compute and Provisioner contracts (interfaces/compute.py, interfaces/provisioner.py),
run against every backend: local (processes on this machine), AWS (ECS on a Spot fleet, on
the moto server of tests/conftest.py's ``aws`` fixture) and Slurm (the ``slurm_cluster``
fixture's one-node cluster).

Each backend contributes a project factory in `PROJECTS`; the tests open the backend the
project names, as every command does (`open_backend`), and check each clause of the two
docstrings against what the backend reports. Workers are asked for with an empty queue, so a
worker that does start finds nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from distributed_something.backends import open_backend
from distributed_something.interfaces.backend import Backend
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.jobs.parse import parse_job_text
from distributed_something.project import Project
from distributed_something.state import RunState, new_state, save_state
from distributed_something.usecases.project import open_project
from testkit import moto_family_fleet, wait_for

REGION = "us-east-1"
BUCKET = "contract-bucket"


def write(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    return folder / "ds.toml"


def base(backend: str) -> dict[str, Any]:
    return {
        "app_name": "Contract",
        "backend": backend,
        "image": "example/ds-worker:1",
        "recipe": {"name": "command", "argv": ["true"], "output_prefix": "out/{name}"},
        "cluster": {"machines": 1, "tasks_per_machine": 1, "docker_cores": 2},
        "queue": {"visibility": 30, "job_retries": 2},
        "storage": {"bucket": BUCKET},
        "local": {"poll_interval": 0.2},
    }


def local_project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Any]:
    return write(tmp_path / "proj", base("local")), None


def aws_project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Any]:
    request.getfixturevalue("aws")
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    config = base("aws") | {"aws": {"region": REGION, "ecs_cluster": "ContractCluster"}}
    return write(tmp_path / "proj", config), moto_family_fleet(boto3.client("ec2", REGION))


def slurm_project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Any]:
    request.getfixturevalue("slurm_cluster")
    config = base("slurm") | {"slurm": {"shared_dir": str(tmp_path / "shared"), "max_jobs": 2}}
    return write(tmp_path / "proj", config), None


ProjectFactory = Callable[[pytest.FixtureRequest, Path], tuple[Path, Any]]

#: Each backend's project (its ds.toml's path) and fleet file (None where none is read).
PROJECTS = [
    pytest.param(local_project, id="local"),
    pytest.param(aws_project, id="aws"),
    pytest.param(slurm_project, id="slurm", marks=pytest.mark.slow),
]


class Run:
    """An opened backend, the run's state and every state each ``save`` call was given
    (saved where the commands save it too: the backend reads its resources from there)."""

    def __init__(self, project: Project, backend: Backend, state: RunState, fleet: Any) -> None:
        self.project = project
        self.backend = backend
        self.state = state
        self.fleet = fleet
        self.saved: list[dict[str, Any]] = []

    def save(self, state: RunState) -> None:
        assert state is self.state
        save_state(self.project, state, self.backend.storage)
        self.saved.append(json.loads(json.dumps(state.resources, default=str)))

    def setup(self) -> None:
        self.backend.provisioner.setup(self.state, self.save)

    def send_work(self, count: int) -> None:
        """Queue ``count`` tasks (a backend may start workers only for work, as Slurm does)."""
        groups = [{"name": f"t{index}"} for index in range(count)]
        job = parse_job_text(json.dumps({"groups": groups}), source="job.json", suffix=".json")
        self.backend.queue.send_batch([(task.id, task.body_json()) for task in job.tasks])


@pytest.fixture(params=PROJECTS)
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run]:
    factory: ProjectFactory = request.param
    path, fleet = factory(request, tmp_path)
    project = open_project(path)
    backend = open_backend(project)
    found = Run(project, backend, new_state(project, backend.name, dead_at_start=0), fleet)
    yield found
    # Whatever a test left running is stopped and removed (a shared machine, a real cluster).
    backend.compute.stop()
    backend.provisioner.teardown(found.state, found.save)


# --- Provisioner ------------------------------------------------------------------------------


def test_setup_saves_what_it_creates_and_is_idempotent(run: Run) -> None:
    run.setup()
    assert run.saved, "setup never called save"
    assert run.saved[-1] == json.loads(json.dumps(run.state.resources, default=str))
    first = dict(run.state.resources)
    calls = len(run.saved)
    run.setup()
    assert len(run.saved) > calls
    assert run.state.resources == first  # nothing new the second time


def test_teardown_saves_after_its_steps_and_is_idempotent(run: Run) -> None:
    run.setup()
    run.saved.clear()
    run.backend.provisioner.teardown(run.state, run.save)
    assert run.saved, "teardown never called save"
    after = dict(run.state.resources)
    run.backend.provisioner.teardown(run.state, run.save)
    assert run.state.resources == after
    assert run.backend.compute.status().running == 0


def test_teardown_keeps_outputs_and_records(run: Run) -> None:
    # (The dead-letter store is each backend's own: test_aws_teardown, test_slurm, test_ledger.)
    run.setup()
    storage = run.backend.storage
    storage.put_bytes("_ds/Contract/runs/r1/record.json", b"{}")
    storage.put_bytes("out/a/result.txt", b"result")
    run.backend.provisioner.teardown(run.state, run.save)
    assert storage.get_bytes("_ds/Contract/runs/r1/record.json") == b"{}"
    assert storage.get_bytes("out/a/result.txt") == b"result"


def test_start_brings_up_capacity_for_the_workers(run: Run) -> None:
    run.setup()
    run.send_work(4)
    run.backend.provisioner.start(run.state, run.fleet, 2, run.save)
    assert run.saved
    # Workers for the work, at most the 2 asked for (2 processes per ECS task; Slurm's
    # max_jobs is 2 here).
    assert 1 <= run.backend.compute.status().desired <= 2


# --- Compute ----------------------------------------------------------------------------------


def test_nothing_runs_before_start(run: Run) -> None:
    run.setup()
    assert run.backend.compute.status() == ComputeStatus(desired=0, running=0)


def test_scale_sets_the_workers_wanted(run: Run) -> None:
    if run.backend.name == "slurm":
        pytest.skip(
            "not applicable: Slurm's array elements serve the slices with work, up to "
            "slurm.max_jobs (SlurmCompute.scale), not a count of workers"
        )
    run.setup()
    run.send_work(4)
    run.backend.provisioner.start(run.state, run.fleet, 2, run.save)
    compute = run.backend.compute
    compute.scale(4)
    assert compute.status().desired == 4
    compute.scale(2)
    assert compute.status().desired == 2


def test_scale_machines_and_housekeeping_are_safe_to_repeat(run: Run) -> None:
    run.setup()
    compute = run.backend.compute
    before = compute.status()
    for _ in range(2):
        compute.scale_machines(0)
        compute.housekeeping()
    assert compute.status() == before


def test_stop_leaves_no_worker_wanted_and_cleanup_twice_is_safe(run: Run) -> None:
    run.setup()
    run.send_work(2)
    run.backend.provisioner.start(run.state, run.fleet, 2, run.save)
    compute = run.backend.compute
    compute.stop()
    assert compute.status().desired == 0
    assert wait_for(lambda: compute.status().running == 0, 60)
    compute.cleanup()
    compute.cleanup()
    assert compute.status() == ComputeStatus(desired=0, running=0)
