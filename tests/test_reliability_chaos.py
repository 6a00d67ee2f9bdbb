"""Chaos runs: workers SIGKILLed at random, spot interruption notices and poison tasks, on the
local backend (500 tasks) and on moto's server (60 tasks: moto's SQS slows down with depth).

Each run must end with every task accounted for: every good task done once (or reported as a
duplicate whose outputs are identical, read back from storage), every poison task
dead-lettered with its error, no task pending, and (on AWS) nothing left after `ds monitor`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aws_agent import task_definition_environment
from conftest import FAKE_AWS_ENV, write_project
from distributed_something.jobs.model import task_id_of
from imds_server import FakeImds, imds_server
from moto_projects import (
    assert_nothing_left,
    aws_client,
    aws_project,
    ds_ok,
    leftovers,
    s3_objects,
)
from reliability_figures import Figures
from reliability_figures import figures as figures  # the session fixture
from testkit import expected_output, local_bucket

pytestmark = pytest.mark.slow

SEED = 20240611

# The task: records each start in a ledger, fails for ever when its name says poison,
# otherwise sleeps 50-200 ms (from its name) and writes an output derived from its name.
TASK_CODE = (
    "import sys, os, time, hashlib\n"
    "out, name, ledger = sys.argv[1:4]\n"
    "digest = hashlib.sha256(name.encode()).hexdigest()\n"
    "with open(ledger, 'a') as f: f.write(name + '\\n')\n"
    "if name.startswith('poison'):\n"
    "    print('poisoned input', name, file=sys.stderr); sys.exit(7)\n"
    "time.sleep(0.05 + int(digest[:4], 16) % 151 / 1000)\n"
    "open(os.path.join(out, 'result.txt'), 'w').write('output of ' + name + ' ' + digest)\n"
)


def job_names(total: int, poison_share: float, rng: random.Random) -> tuple[list[str], set[str]]:
    """``total`` task names in a shuffled order, ``ceil(total × poison_share)`` (at least one)
    of them poison; returns (all names, poison names)."""
    poisons = max(1, math.ceil(total * poison_share))
    names = [f"poison-{i:02d}" for i in range(poisons)]
    names += [f"task-{i:03d}" for i in range(total - poisons)]
    rng.shuffle(names)
    return names, {n for n in names if n.startswith("poison")}


def id_of(name: str) -> str:
    """The task id `ds` gives the group ``{"name": name}`` of a DS job file."""
    return task_id_of({"group": {"name": name}})


def ledger_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def our_processes(marker: str) -> list[int]:
    """Pids of live `ds` processes whose command line contains ``marker`` (a path unique to
    the test), found in /proc."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and is_our_worker(int(entry.name), marker)
    ]


def is_our_worker(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live, non-zombie `ds` process whose command line has
    ``marker`` (guards against killing a process that reused a dead worker's pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return b"distributed_something" in cmdline and marker.encode() in cmdline


@dataclass
class EndState:
    """What a run's report and storage say, checked against the job."""

    report: dict[str, Any]
    outputs: dict[str, str]
    done_markers: dict[str, dict[str, Any]]
    manifest: list[str]
    dead_ids: list[str]


def assert_end_state(
    end: EndState, names: list[str], poisons: set[str], created_at: float
) -> dict[str, int]:
    """Every task accounted for: good ones done (duplicates only with identical outputs),
    poison ones dead with their error, nothing pending; returns the figures."""
    report = end.report
    counts = report["counts"]
    by_id = {t["id"]: t for t in report["tasks"]}
    goods = [n for n in names if n not in poisons]
    # The manifest, the report and the job file name the same tasks, each once.
    assert sorted(end.manifest) == sorted(id_of(n) for n in names)
    assert sorted(by_id) == sorted(end.manifest)
    assert counts["total"] == len(names) == len(report["tasks"])
    assert sum(counts[k] for k in ("done", "skipped", "failed", "dead", "pending")) == len(names)
    assert counts["pending"] == 0 and counts["failed"] == 0
    assert counts["done"] == len(goods) and counts["dead"] == len(poisons)
    duplicates = 0
    for name in goods:
        task = by_id[id_of(name)]
        assert task["outcome"] == "done", (name, task)
        # Outputs read back from storage: exactly what this task's name gives.
        assert end.outputs.get(name) == expected_output(name), name
        marker = end.done_markers[id_of(name)]
        assert marker["outputs"] == task["outputs"] == [f"out/{name}/result.txt"]
        completions = [t for t in marker["completions"] if t >= created_at]
        # Done once, or reported as a duplicate (its output is the same, checked above).
        assert len(completions) == 1 or task["duplicate"], (name, marker)
        assert task["duplicate"] == (len(completions) > 1)
        duplicates += task["duplicate"]
    assert counts["duplicates"] == duplicates
    for name in poisons:
        task = by_id[id_of(name)]
        assert task["outcome"] == "dead", (name, task)
        assert "command exited with code 7" in (task["error"] or ""), task
        assert name not in end.outputs and id_of(name) not in end.done_markers
    assert sorted(end.dead_ids) == sorted(id_of(n) for n in poisons)
    assert set(end.outputs) == set(goods)  # no stray outputs
    attempts = sum(t["attempts"] for t in report["tasks"])
    return {
        "done": counts["done"],
        "duplicates": duplicates,
        "dead": counts["dead"],
        "unaccounted": counts["total"] - counts["done"] - counts["dead"] - counts["skipped"],
        "attempts": attempts,
    }


# --- local backend ---------------------------------------------------------------------------

LOCAL_TASKS = 500
LOCAL_KILLS = 20


def local_end_state(proj: Path, report: dict[str, Any], dead: list[dict[str, Any]]) -> EndState:
    storage = local_bucket(proj)
    outputs = {p.parent.name: p.read_text() for p in (storage.root / "out").glob("*/result.txt")}
    markers = {
        o.key.rsplit("/", 1)[1].removesuffix(".json"): json.loads(storage.get_bytes(o.key))
        for o in storage.list("_ds/T/done/")
    }
    parts = storage.list(f"_ds/T/runs/{report['run_id']}/manifest-")
    manifest = [
        row["task_id"]
        for part in parts
        if part.key.endswith(".jsonl")
        for row in map(json.loads, filter(bytes.strip, storage.get_bytes(part.key).splitlines()))
        if "task_id" in row  # the first line of each part holds the shared keys
    ]
    return EndState(report, outputs, markers, manifest, [d["task_id"] for d in dead])


@pytest.mark.timeout(280)
def test_local_chaos_run_accounts_for_every_task(tmp_path: Path, figures: Figures) -> None:
    rng = random.Random(SEED)
    names, poisons = job_names(LOCAL_TASKS, 0.02, rng)
    ledger = tmp_path / "ledger.txt"
    argv = ["{python}", "-c", TASK_CODE, "{output_dir}", "{name}", str(ledger)]
    proj = write_project(
        tmp_path / "proj",
        argv=argv,
        groups=[{"name": n} for n in names],
        extra={
            # 4 workers: one machine, 2 containers of 2 processes.
            "cluster": {"machines": 1, "tasks_per_machine": 2, "docker_cores": 2},
            "queue": {"visibility": 2, "job_retries": 3},
            "local": {"poll_interval": 0.05},
        },
    )
    scenario = figures.scenario(
        "local-chaos",
        "Chaos on the local backend",
        test="tests/test_reliability_chaos.py::test_local_chaos_run_accounts_for_every_task",
        assertion=(
            "every good task done once, or reported as a duplicate whose output (read back) "
            "is identical; every poison task dead-lettered with its exit code and log tail; "
            "report counts add up to the manifest with 0 pending or failed; no stray output; "
            "killed workers were replaced"
        ),
        setup={
            "tasks": LOCAL_TASKS,
            "poison tasks (exit 7 every time)": len(poisons),
            "task duration": "50-200 ms (a Python one-liner)",
            "workers": 4,
            "workers SIGKILLed at random": LOCAL_KILLS,
            "lease (visibility) / receives before dead-letter": "2 s / 3",
            "monitor": "`ds run --interval 0.2` (ReplaceWorkers restarts dead workers)",
        },
    )
    started = time.monotonic()
    out, err = (tmp_path / "run.out").open("wb"), (tmp_path / "run.err").open("wb")
    command = ["run", str(proj), "--json", "--interval", "0.2"]
    run = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", *command],
        cwd=tmp_path,
        stdout=out,
        stderr=err,
        env={**os.environ, "COLUMNS": "200"},
    )
    workers_file = proj / ".ds" / "T" / "workers.json"
    # In every worker's command line: its own (`ds worker --config …/proj/ds.toml`) or, when
    # forked from `ds run`, that of `ds run …/proj`.
    config_marker = str(proj.resolve())
    thresholds = [20 * (k + 1) for k in range(LOCAL_KILLS)]  # ledger starts: 20 … 400
    kills: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 240
        while run.poll() is None and time.monotonic() < deadline:
            if len(kills) < LOCAL_KILLS and len(ledger_lines(ledger)) >= thresholds[len(kills)]:
                try:
                    listed = json.loads(workers_file.read_text())["workers"]
                except (OSError, ValueError):
                    listed = []
                live = [w for w in listed if is_our_worker(int(w["pid"]), config_marker)]
                if live:
                    victim = rng.choice(live)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(victim["pid"]), signal.SIGKILL)
                        kills.append((int(victim["pid"]), str(victim["name"])))
            time.sleep(0.02)
        assert run.poll() is not None, "the run did not finish within 240 s"
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
        out.close()
        err.close()
        for pid in our_processes(config_marker):  # only after a failure: workers left over
            os.kill(pid, signal.SIGKILL)
    wall = time.monotonic() - started
    stderr = (tmp_path / "run.err").read_text()
    assert run.returncode == 1, stderr  # a run with dead tasks exits 1
    report = json.loads((tmp_path / "run.out").read_text())
    dead = json.loads(
        subprocess.run(
            [sys.executable, "-m", "distributed_something", "dead", "list", "--json"],
            cwd=proj,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    end = local_end_state(proj, report, dead)
    figures_ = assert_end_state(end, names, poisons, report["created_at"])
    assert len(kills) == LOCAL_KILLS
    started_workers = len(list((proj / ".ds" / "T" / "workers").glob("*.log")))
    assert started_workers > 4  # the monitor replaced killed workers
    # The poison tasks' failures were recorded with their log tails.
    storage = local_bucket(proj)
    for name in poisons:
        folder = f"_ds/T/runs/{report['run_id']}/failures/{id_of(name)}/"
        records = [storage.get_bytes(o.key) for o in storage.list(folder)]
        assert records, name
        assert any("poisoned input " + name in json.loads(r)["log_tail"] for r in records)
    # Every worker is gone once the run is over.
    assert not workers_file.exists()
    assert our_processes(config_marker) == []
    starts = ledger_lines(ledger)
    scenario.measure("done", figures_["done"])
    scenario.measure("duplicates reported (outputs identical)", figures_["duplicates"])
    scenario.measure("dead-lettered", figures_["dead"])
    scenario.measure("unaccounted (pending + failed)", figures_["unaccounted"])
    scenario.measure("workers killed", len(kills))
    scenario.measure("workers started in all", started_workers)
    scenario.measure("receives beyond the first (retries)", figures_["attempts"] - len(names))
    scenario.measure("command starts (ledger)", len(starts))
    scenario.measure("wall time (s)", wall)
    scenario.held()


# --- AWS on moto's server ----------------------------------------------------------------------

MOTO_TASKS = 60
MOTO_APP = "CHAOS"
MOTO_BUCKET = "ds-chaos"
#: (ledger starts, event): SIGKILL a worker, or an interruption notice to an instance.
MOTO_EVENTS = ((8, "kill"), (16, "notice"), (24, "kill"), (32, "notice"), (40, "kill"))


def s3_end_state(
    app: str, bucket: str, report: dict[str, Any], dead: list[dict[str, Any]]
) -> EndState:
    outputs = {
        key.split("/")[1]: body.decode()
        for key, body in s3_objects(bucket, "out/").items()
        if key.endswith("/result.txt")
    }
    markers = {
        key.rsplit("/", 1)[1].removesuffix(".json"): json.loads(body)
        for key, body in s3_objects(bucket, f"_ds/{app}/done/").items()
    }
    manifest = [
        row["task_id"]
        for key, body in sorted(s3_objects(bucket, f"_ds/{app}/runs/{report['run_id']}/").items())
        if key.rsplit("/", 1)[1].startswith("manifest-") and key.endswith(".jsonl")
        for row in map(json.loads, filter(str.strip, body.decode().splitlines()))
        if "task_id" in row  # the first line of each part holds the shared keys
    ]
    return EndState(report, outputs, markers, manifest, [d["task_id"] for d in dead])


@dataclass
class Instance:
    """A spot instance as the agent plays it: its metadata service, and what replaced it."""

    index: int
    imds: FakeImds
    interrupted_at: float | None = None
    successor: Instance | None = None


@dataclass
class AgentWorker:
    """One ECS task: a `ds worker` process on an instance."""

    name: str
    proc: subprocess.Popen[bytes]
    instance: Instance
    log: Path
    killed: bool = False
    handled: bool = False


@dataclass
class Agent:
    """Plays the ECS agent and the spot fleet for a service.

    Each worker is started as tests/aws_agent.py starts them: with exactly the environment of
    the service's registered task definition (read back through the ECS API at each start),
    fake task-role credentials, the moto endpoint, and ``DS_METADATA_URL`` pointing at its
    instance's loopback metadata server. A killed worker is restarted on the same instance
    (ECS restarts a service's stopped task); the workers of an interrupted instance are
    restarted on a new instance (the spot fleet replaces lost capacity). Workers that exit
    by themselves (the queue drained) are not restarted.
    """

    ecs: Any
    cluster: str
    service: str
    endpoint: str
    workdir: Path
    stack: contextlib.ExitStack
    instances: list[Instance] = field(default_factory=list)
    workers: list[AgentWorker] = field(default_factory=list)

    def new_instance(self) -> Instance:
        imds = self.stack.enter_context(imds_server())
        index = len(self.instances)
        imds.instance_id = f"i-{0xC4A05000 + index:017x}"
        instance = Instance(index, imds)
        self.instances.append(instance)
        return instance

    def start_worker(self, instance: Instance) -> AgentWorker:
        _, env = task_definition_environment(self.ecs, self.cluster, self.service)
        name = f"task-{len(self.workers)}"
        scratch = self.workdir / name
        scratch.mkdir(parents=True)
        full_env = {
            "PATH": os.environ["PATH"],
            **env,
            **FAKE_AWS_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": str(self.workdir / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "none"),
            "DS_SCRATCH": str(scratch),
            "DS_METADATA_URL": instance.imds.url,
        }
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "distributed_something", "worker", "--name", name],
                cwd=scratch,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = AgentWorker(name, proc, instance, log)
        self.workers.append(worker)
        return worker

    def start(self, machines: int) -> None:
        desired, _ = task_definition_environment(self.ecs, self.cluster, self.service)
        hosts = [self.new_instance() for _ in range(machines)]
        for k in range(desired):
            self.start_worker(hosts[k % machines])

    def running(self) -> list[AgentWorker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def kill(self, rng: random.Random) -> AgentWorker | None:
        """SIGKILL a random running worker (on an instance that was not interrupted)."""
        candidates = [w for w in self.running() if w.instance.interrupted_at is None]
        if not candidates:
            return None
        victim = rng.choice(candidates)
        victim.killed = True
        victim.proc.kill()
        return victim

    def interrupt(self, rng: random.Random) -> Instance | None:
        """Give a random instance that has running workers a spot interruption notice."""
        busy = sorted(
            {w.instance.index for w in self.running() if w.instance.interrupted_at is None}
        )
        if not busy:
            return None
        instance = self.instances[rng.choice(busy)]
        instance.interrupted_at = time.monotonic()
        instance.imds.interrupt()
        return instance

    def home_of(self, instance: Instance) -> Instance:
        """Where a worker of ``instance`` is restarted: there, or on its replacement."""
        while instance.interrupted_at is not None:
            if instance.successor is None:
                instance.successor = self.new_instance()
            instance = instance.successor
        return instance

    def tick(self) -> None:
        """Restart every worker that was killed or lost its instance."""
        for worker in list(self.workers):
            if worker.handled or worker.proc.poll() is None:
                continue
            worker.handled = True
            if worker.killed or worker.instance.interrupted_at is not None:
                self.start_worker(self.home_of(worker.instance))

    def stop_all(self) -> None:
        for worker in self.running():
            worker.proc.kill()
            worker.proc.wait()


@pytest.mark.timeout(280)
def test_moto_chaos_run_accounts_for_every_task_and_leaves_nothing(
    aws: str, tmp_path: Path, figures: Figures
) -> None:
    rng = random.Random(SEED + 1)
    names, poisons = job_names(MOTO_TASKS, 0.02, rng)
    ledger = tmp_path / "ledger.txt"
    proj = aws_project(
        tmp_path / "proj",
        app=MOTO_APP,
        bucket=MOTO_BUCKET,
        names=names,
        argv=["{python}", "-c", TASK_CODE, "{output_dir}", "{name}", str(ledger)],
        cluster={"machines": 2, "tasks_per_machine": 2, "docker_cores": 1},
        queue={"visibility": 4, "job_retries": 3},
    )
    kills = sum(1 for _, e in MOTO_EVENTS if e == "kill")
    notices = len(MOTO_EVENTS) - kills
    scenario = figures.scenario(
        "moto-chaos",
        "Chaos on AWS (moto server)",
        test="tests/test_reliability_chaos.py::"
        "test_moto_chaos_run_accounts_for_every_task_and_leaves_nothing",
        assertion=(
            "as on the local backend (every good task done once or a duplicate with identical "
            "output read back from S3, every poison task dead-lettered with its error, 0 "
            "pending); interrupted workers exited cleanly after handing their task back; "
            "`ds monitor` then removed everything but the dead-letter queue (queue, service, "
            "task definitions, cluster, spot fleet and its instances, per-instance alarms, "
            "dashboard)"
        ),
        setup={
            "tasks": f"{MOTO_TASKS} (fewer than locally: moto's SQS slows down with queue depth)",
            "poison tasks (exit 7 every time)": len(poisons),
            "task duration": "50-200 ms (a Python one-liner)",
            "workers": "4 (2 machines × 2 tasks), started as the ECS agent would",
            "workers SIGKILLed": kills,
            "spot interruption notices (to a whole instance)": notices,
            "lease (visibility) / receives before dead-letter": "4 s / 3",
        },
    )
    started = time.monotonic()
    ds_ok("setup", cwd=proj)
    ds_ok("submit", "files/job.json", cwd=proj)
    ds_ok("start-cluster", "files/fleet.json", cwd=proj)
    ecs = aws_client("ecs")
    events: list[str] = []
    with contextlib.ExitStack() as stack:
        agent = Agent(
            ecs, f"{MOTO_APP}Cluster", f"{MOTO_APP}Service", aws, tmp_path / "agent", stack
        )
        try:
            agent.start(machines=2)
            deadline = time.monotonic() + 200
            while time.monotonic() < deadline:
                # Restarts first: when every worker was killed or lost its instance since
                # the last look (two notices in a row, one per instance), none is running
                # until their replacements start, and the run is not over.
                agent.tick()
                if not agent.running():
                    break
                starts = len(ledger_lines(ledger))
                if len(events) < len(MOTO_EVENTS) and starts >= MOTO_EVENTS[len(events)][0]:
                    kind = MOTO_EVENTS[len(events)][1]
                    hit = agent.kill(rng) if kind == "kill" else agent.interrupt(rng)
                    if hit is not None:
                        events.append(kind)
                time.sleep(0.1)
            assert not agent.running(), "workers still running after 200 s"
        finally:
            agent.stop_all()
        alarms_during = aws_client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{MOTO_APP}_")[
            "MetricAlarms"
        ]
    assert events == [kind for _, kind in MOTO_EVENTS]
    interrupted = [i for i in agent.instances if i.interrupted_at is not None]
    for worker in agent.workers:
        if worker.killed:
            assert worker.proc.returncode == -signal.SIGKILL
        else:
            assert worker.proc.returncode == 0, worker.log.read_text()[-3000:]
        if worker.instance.interrupted_at is not None and not worker.killed:
            assert "spot interruption notice" in worker.log.read_text()
    # Every instance's worker set up its idle-CPU alarm (the metadata server gave its id).
    assert sorted(a["AlarmName"] for a in alarms_during) == sorted(
        f"{MOTO_APP}_{i.imds.instance_id}" for i in agent.instances
    )
    monitor = ds_ok(
        "monitor",
        f"files/{MOTO_APP}SpotFleetRequestId.json",
        "--interval",
        "1",
        "--json",
        cwd=proj,
        ok=(1,),  # dead tasks: the run failed, as it should
    )
    wall = time.monotonic() - started
    report = json.loads(monitor.stdout)
    dead = json.loads(ds_ok("dead", "list", "--json", cwd=proj).stdout)
    end = s3_end_state(MOTO_APP, MOTO_BUCKET, report, dead)
    figures_ = assert_end_state(end, names, poisons, report["created_at"])
    left = leftovers(MOTO_APP)
    assert_nothing_left(MOTO_APP)
    failures = s3_objects(MOTO_BUCKET, f"_ds/{MOTO_APP}/runs/{report['run_id']}/failures/")
    for name in poisons:
        tails = [json.loads(b)["log_tail"] for k, b in failures.items() if id_of(name) in k]
        assert any("poisoned input " + name in tail for tail in tails), name
    scenario.measure("done", figures_["done"])
    scenario.measure("duplicates reported (outputs identical)", figures_["duplicates"])
    scenario.measure("dead-lettered", figures_["dead"])
    scenario.measure("unaccounted (pending + failed)", figures_["unaccounted"])
    scenario.measure("workers killed", sum(w.killed for w in agent.workers))
    scenario.measure("instances interrupted", len(interrupted))
    scenario.measure("workers started in all", len(agent.workers))
    scenario.measure("instances in all", len(agent.instances))
    scenario.measure("receives beyond the first (retries)", figures_["attempts"] - len(names))
    scenario.measure("command starts (ledger)", len(ledger_lines(ledger)))
    scenario.measure(
        "resources left besides the dead-letter queue", sum(map(len, left.values())) - 1
    )
    scenario.measure("wall time (s)", wall)
    scenario.held()
