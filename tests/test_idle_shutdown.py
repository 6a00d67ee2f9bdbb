"""The idle shutdown (docs/design.md §2): the pure decision, the state files of a machine's workers,
and the worker's instance terminating itself on moto once every worker on it is idle."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends import Backend
from distributed_something.backends.aws import setup
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.idle import (
    CONTAINER_DIR,
    HOST_DIR,
    IDLE_DIR_ENV,
    IdleShutdown,
    WorkerState,
    read_states,
    should_shut_down,
    state_file_name,
    write_state,
)
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.backends.aws.taskenv import task_environment
from distributed_something.backends.aws.worker_side import on_instance
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config import load_config
from distributed_something.config.model import AwsConfig, Config
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.recipes.command import CommandRecipe
from distributed_something.worker.loop import Outcome, Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from imds_server import FakeImds, imds_server
from testkit import WAIT, NoCompute, NoProvisioner, wait_for

REGION = "us-east-1"
GRACE = 180.0
STALE = 120.0


# --- the decision (pure) --------------------------------------------------------------------


def idle(name: str, since: float, updated: float = 1000.0) -> WorkerState:
    return WorkerState(name, since, updated)


def busy(name: str, updated: float = 1000.0) -> WorkerState:
    return WorkerState(name, None, updated)


def decide(*states: WorkerState, now: float = 1000.0) -> bool:
    return should_shut_down(states, now, grace=GRACE, stale_after=STALE)


def test_no_fresh_worker_means_no_decision() -> None:
    assert not decide()
    # Only a stale state (a worker killed long ago): nobody here to speak for the machine.
    assert not decide(idle("gone", since=0.0, updated=1000.0 - STALE - 1))


def test_every_fresh_worker_idle_for_the_grace_period_shuts_down() -> None:
    assert decide(idle("a", since=1000.0 - GRACE), idle("b", since=0.0))
    assert decide(idle("a", since=1000.0 - GRACE - 30))


def test_one_busy_worker_keeps_the_machine() -> None:
    assert not decide(idle("a", since=0.0), busy("b"))


def test_one_worker_idle_too_short_keeps_the_machine() -> None:
    assert not decide(idle("a", since=0.0), idle("b", since=1000.0 - GRACE + 1))


def test_stale_states_are_ignored_either_way() -> None:
    # A SIGKILLed busy worker's file no longer blocks the shutdown...
    assert decide(idle("a", since=0.0), busy("killed", updated=1000.0 - STALE - 1))
    # ...and is still counted while fresh.
    assert not decide(idle("a", since=0.0), busy("slow", updated=1000.0 - STALE))


# --- state files --------------------------------------------------------------------------


def test_states_round_trip_and_foreign_files_are_ignored(tmp_path: Path) -> None:
    write_state(tmp_path / "a.json", WorkerState("a", 10.5, 20.0))
    write_state(tmp_path / "b.json", WorkerState("b", None, 21.0))
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text(json.dumps({"updated": "yesterday"}))
    (tmp_path / "flag.json").write_text(json.dumps({"updated": 1.0, "idle_since": True}))
    (tmp_path / ".a.json.x.tmp").write_text("{}")  # a write in progress
    (tmp_path / "notes.txt").write_text("hello")

    assert read_states(tmp_path) == [WorkerState("a", 10.5, 20.0), WorkerState("b", None, 21.0)]
    assert read_states(tmp_path, skip="a.json") == [WorkerState("b", None, 21.0)]
    assert list(tmp_path.glob("*.tmp")) == [tmp_path / ".a.json.x.tmp"]  # ours left nothing


def test_state_file_names_are_safe_and_distinct() -> None:
    one, two = state_file_name("host/1 a"), state_file_name("host/1 a")
    assert one != two
    assert one.startswith("host_1_a-") and one.endswith(".json") and "/" not in one


class Clock:
    def __init__(self, now: float = 50_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Seat:
    """One worker's `IdleShutdown` on a fake clock, with its idle time set by the test."""

    def __init__(self, folder: Path, name: str, clock: Clock, *, answer: bool = True) -> None:
        self.idle: float | None = None
        self.calls: list[int] = []
        self.answer = answer

        def on_idle(workers: int) -> bool:
            self.calls.append(workers)
            return self.answer

        self.shutdown = IdleShutdown(
            folder, name, lambda: self.idle, on_idle, grace=GRACE, stale_after=STALE, clock=clock
        )


def test_a_machine_decides_from_its_own_and_the_other_workers_files(tmp_path: Path) -> None:
    clock = Clock()
    a, b = Seat(tmp_path, "a", clock), Seat(tmp_path, "b", clock)
    a.idle = 0.0
    b.idle = None  # b holds a task
    assert not a.shutdown.check() and not b.shutdown.check()
    on_disk = {s.worker: s for s in read_states(tmp_path)}
    assert on_disk == {
        "a": WorkerState("a", clock.now, clock.now),
        "b": WorkerState("b", None, clock.now),
    }

    clock.now += GRACE
    a.idle = GRACE
    b.shutdown.check()  # still busy, and says so
    assert not a.shutdown.check() and a.calls == []

    b.idle = 10.0  # b finished a task 10 s ago: not idle long enough yet
    b.shutdown.check()
    assert not a.shutdown.check()

    clock.now += GRACE - 10
    a.idle, b.idle = a.idle + GRACE - 10, GRACE
    b.shutdown.check()
    assert a.shutdown.check() and a.calls == [2] and a.shutdown.fired


def test_a_killed_workers_file_stops_counting_once_stale(tmp_path: Path) -> None:
    clock = Clock()
    a, killed = Seat(tmp_path, "a", clock), Seat(tmp_path, "killed", clock)
    killed.shutdown.check()  # busy, then SIGKILLed: its file stays behind, never updated
    a.idle = GRACE
    assert not a.shutdown.check()
    clock.now += STALE + 1
    a.idle += STALE + 1
    assert a.shutdown.check() and a.calls == [1]


def test_a_refused_shutdown_is_retried_after_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    a = Seat(tmp_path, "a", clock, answer=False)
    a.idle = GRACE
    assert not a.shutdown.check() and a.calls == [1]
    clock.now += GRACE - 1
    a.idle += GRACE - 1
    assert not a.shutdown.check() and a.calls == [1]  # not every 15 s
    clock.now += 1
    a.idle += 1
    a.answer = True
    assert a.shutdown.check() and a.calls == [1, 1]


def test_without_on_idle_the_state_is_only_published(tmp_path: Path) -> None:
    clock = Clock()
    shutdown = IdleShutdown(tmp_path, "quiet", lambda: 10 * GRACE, None, grace=0, clock=clock)
    assert not shutdown.check()
    assert read_states(tmp_path) == [WorkerState("quiet", clock.now - 10 * GRACE, clock.now)]


def test_thread_acts_stops_at_once_and_removes_its_file(tmp_path: Path) -> None:
    fired = threading.Event()

    def on_idle(workers: int) -> bool:
        fired.set()
        return True

    with IdleShutdown(tmp_path, "t", lambda: 5.0, on_idle, grace=1.0, interval=0.02) as shutdown:
        assert fired.wait(WAIT) and shutdown.fired
        assert [s.worker for s in read_states(tmp_path)] == ["t"]
    assert list(tmp_path.iterdir()) == []

    # A long interval does not hold up stop(): the thread waits on an event.
    slow = IdleShutdown(
        tmp_path, "slow", lambda: None, on_idle, grace=1.0, interval=3600.0, stale_after=7200.0
    )
    slow.start()
    assert wait_for(lambda: len(read_states(tmp_path)) == 1)
    slow.stop(timeout=WAIT)
    assert not slow._thread.is_alive() and list(tmp_path.iterdir()) == []


def test_no_shared_folder_means_nothing_is_written(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    with IdleShutdown(missing, "t", lambda: 1e9, lambda n: True, grace=0, interval=0.02):
        pass
    assert not missing.exists()


# --- on an instance (moto + a loopback metadata service) -----------------------------------


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


class Machine:
    """Workers sharing one real local queue, as the workers of one instance share SQS."""

    def __init__(self, root: Path, *, minutes: float) -> None:
        self.root = root
        self.queue = SqliteQueue(root / "q.sqlite", max_receive_count=3)
        self.storage = FolderStorage(root / "bucket")
        self.config = Config.model_validate(
            {
                "app_name": "Idle",
                "backend": "aws",
                "recipe": {"name": "command", "argv": SLEEPER, "output_prefix": "out/{n}"},
                "queue": {"visibility": 30},
                "aws": {"region": REGION, "idle_shutdown_minutes": minutes},
            }
        )
        self.backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.idle_dir = root / "ds-idle"
        self.idle_dir.mkdir()

    def worker(self, name: str) -> Worker:
        settings = WorkerSettings(name=name, run_id="r1", scratch_root=self.root / "scratch")
        return Worker(
            self.config,
            self.backend,
            CommandRecipe(),
            SubprocessRunner(grace_seconds=2),
            settings,
            sleep=lambda _s: None,
        )

    def submit(self, *names: str) -> None:
        tasks = [Task(body={"group": {"n": n}}) for n in names]
        self.queue.send_batch([(t.id, t.body_json()) for t in tasks])

    def states(self) -> dict[str, WorkerState]:
        return {s.worker: s for s in read_states(self.idle_dir)}


def instance_state(ec2: Any, instance_id: str) -> str:
    reply = ec2.describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


@pytest.fixture
def instance(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FakeImds]]:
    """A running moto instance, and a metadata service that answers with its id."""
    ec2 = client("ec2", AwsSettings(REGION))
    reply = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro"
    )
    with imds_server() as fake:
        fake.instance_id = reply["Instances"][0]["InstanceId"]
        monkeypatch.setenv("DS_METADATA_URL", fake.url)
        yield ec2, fake


def test_all_workers_idle_terminates_the_instance(
    instance: tuple[Any, FakeImds],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ec2, fake = instance
    machine = Machine(tmp_path, minutes=0.02)  # 1.2 s of grace
    monkeypatch.setenv(IDLE_DIR_ENV, str(machine.idle_dir))
    machine.submit("elsewhere")
    assert machine.queue.receive(1, 300)  # in flight on another machine: not drained
    one, two = machine.worker("one"), machine.worker("two")
    caplog.set_level(logging.INFO, logger="ds.worker")

    with (
        on_instance(machine.config, one, tmp_path / "s1", idle_interval=0.05),
        on_instance(machine.config, two, tmp_path / "s2", idle_interval=0.05),
    ):
        # Idle from now on, both already on the machine: neither can decide alone first.
        assert one.step() is Outcome.IDLE and two.step() is Outcome.IDLE
        assert wait_for(lambda: instance_state(ec2, fake.instance_id) != "running")
        assert wait_for(lambda: one.stopping.is_set() or two.stopping.is_set())
    assert instance_state(ec2, fake.instance_id) in ("shutting-down", "terminated")
    lines = [r.getMessage() for r in caplog.records if "terminating the instance" in r.message]
    assert lines and lines[0] == (
        f"all 2 workers on {fake.instance_id} idle for 0.02 min: terminating the instance"
    )
    assert list(machine.idle_dir.iterdir()) == []  # each worker removed its file
    one.close()
    two.close()


def test_a_busy_worker_keeps_the_instance(
    instance: tuple[Any, FakeImds], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2, fake = instance
    machine = Machine(tmp_path, minutes=0.005)
    monkeypatch.setenv(IDLE_DIR_ENV, str(machine.idle_dir))
    machine.submit("elsewhere")
    assert machine.queue.receive(1, 300)  # in flight on another machine
    working, waiting = machine.worker("working"), machine.worker("waiting")
    assert working.step() is Outcome.IDLE  # idle first, then a task arrives
    machine.submit("long")
    outcome: list[Outcome] = []
    runner = threading.Thread(target=lambda: outcome.append(working.step()))
    runner.start()
    try:
        assert wait_for(lambda: machine.queue.counts().in_flight == 2)
        assert waiting.step() is Outcome.IDLE
        grace = machine.config.aws.idle_shutdown_minutes * 60

        def waited_out() -> bool:
            # The idle worker has checked well past its grace period (its file says so).
            states = machine.states()
            mine = states.get("waiting")
            return (
                mine is not None
                and mine.idle_since is not None
                and mine.updated - mine.idle_since >= grace + 0.5
                and "working" in states
            )

        with (
            on_instance(machine.config, working, tmp_path / "s1", idle_interval=0.05),
            on_instance(machine.config, waiting, tmp_path / "s2", idle_interval=0.05),
        ):
            assert wait_for(waited_out)
            assert machine.states()["working"].idle_since is None
            assert instance_state(ec2, fake.instance_id) == "running"
            assert not waiting.stopping.is_set()
    finally:
        working.stop()
        runner.join(WAIT)
        working.close()
        waiting.close()
    assert outcome == [Outcome.STOPPED]


# --- the task definition's shared folder ----------------------------------------------------


def idle_config() -> Config:
    return Config.model_validate(
        {
            "app_name": "Idle",
            "image": "org/tool:1.0",
            "backend": "aws",
            "recipe": {"name": "command", "argv": ["true"]},
        }
    )


def register(ecs: Any, config: Config, *, keep_entrypoint: bool) -> str:
    env = task_environment(config, queue_url="http://127.0.0.1:1/123/IdleQueue", run_id="r1")
    return setup.register_task_definition(
        ecs, AwsNames(config), config, env, task_role_arn=None, keep_entrypoint=keep_entrypoint
    )


def described(ecs: Any, arn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return definition, definition["containerDefinitions"][0]


def test_ds_worker_gets_the_shared_folder(aws: str) -> None:
    ecs = client("ecs", AwsSettings(REGION))
    config = idle_config()
    arn = register(ecs, config, keep_entrypoint=False)

    definition, container = described(ecs, arn)
    assert definition["volumes"] == [{"name": "ds-idle", "host": {"sourcePath": HOST_DIR}}]
    assert container["mountPoints"] == [
        {"sourceVolume": "ds-idle", "containerPath": CONTAINER_DIR, "readOnly": False}
    ]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env[IDLE_DIR_ENV] == CONTAINER_DIR
    assert register(ecs, config, keep_entrypoint=False) == arn  # unchanged: no new revision


def test_a_revision_without_the_folder_is_replaced(aws: str) -> None:
    ecs = client("ecs", AwsSettings(REGION))
    config = idle_config()
    old_arn = register(ecs, config, keep_entrypoint=False)
    old, container = described(ecs, old_arn)
    # The same definition as a ds of before the idle shutdown registered it.
    container = {k: v for k, v in container.items() if k != "mountPoints"}
    container["environment"] = [e for e in container["environment"] if e["name"] != IDLE_DIR_ENV]
    before = ecs.register_task_definition(
        family=old["family"], containerDefinitions=[container], requiresCompatibilities=["EC2"]
    )["taskDefinition"]["taskDefinitionArn"]

    arn = register(ecs, config, keep_entrypoint=False)
    assert arn not in (old_arn, before)
    assert described(ecs, arn)[1]["mountPoints"]


def test_family_images_get_no_shared_folder(aws: str) -> None:
    ecs = client("ecs", AwsSettings(REGION))
    definition, container = described(ecs, register(ecs, idle_config(), keep_entrypoint=True))
    assert not definition.get("volumes") and not container.get("mountPoints")
    assert IDLE_DIR_ENV not in {e["name"] for e in container["environment"]}


@pytest.mark.parametrize("value", ["-1", "inf", '"soon"'])
def test_a_bad_idle_shutdown_setting_names_the_field_and_the_fix(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "ds.toml"
    path.write_text(f'app_name = "Idle"\n[aws]\nidle_shutdown_minutes = {value}\n')
    with pytest.raises(InputError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "aws.idle_shutdown_minutes" in message and "0 turns the idle shutdown off" in message
    assert "\n" not in message


def test_the_idle_shutdown_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "ds.toml"
    path.write_text('app_name = "Idle"\n')
    default = load_config(path).aws.idle_shutdown_minutes
    assert default == AwsConfig.model_fields["idle_shutdown_minutes"].default > 0
    path.write_text('app_name = "Idle"\n[aws]\nidle_shutdown_minutes = 0\n')
    assert load_config(path).aws.idle_shutdown_minutes == 0
