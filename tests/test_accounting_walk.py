"""Truthful accounting over random command sequences, as users type them: setup and submit
(again, or a second job file sharing tasks with the first), start-cluster, `ds status
--watch`, a worker SIGKILLed mid-task, `ds run` (whole, or Ctrl-C'd), `ds dead redrive`, `ds
monitor`, `ds cleanup`, in an order drawn from a seeded random walk. Each task's command
writes a dated line to an oracle when it starts and when it succeeds (`ds runs` dates each
run, so each line belongs to one); whenever the run is quiet (nothing running), what `ds
status`, `ds report` and its trace say is compared with each other and with the oracle:

- status and report give the same counts, which add up to the total;
- the report's attempts of a task are the trace's; each that ended with an exit code ran
  its command in this run, and no command ran without an attempt (one cut short, its worker
  killed or Ctrl-C'd, may have been ended before its command wrote its line);
- a done task's command succeeded in this run; a command that succeeded left its task done
  unless its attempt was cut short.

The same walk runs on the real one-node Slurm cluster, and on AWS against moto's server on
127.0.0.1, where the test plays the ECS agent (tests/aws_agent.py): `start-cluster` is
followed by one `ds worker` per desired task of the service, and `ds run` (not how AWS runs
are driven) becomes `start-cluster` then `ds monitor`. ``DS_WALK_SEEDS``,
``DS_WALK_SLURM_SEEDS`` and ``DS_WALK_AWS_SEEDS`` (comma-separated) walk other seeds than
those `make test` walks.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aws_agent import start_tasks
from conftest import write_project
from moto_projects import REGION, aws_client
from testkit import moto_family_fleet, wait_for

pytestmark = pytest.mark.slow

Ds = Callable[..., subprocess.CompletedProcess[str]]

SEEDS = [int(s) for s in os.environ.get("DS_WALK_SEEDS", "22,24").split(",") if s.strip()]
SLURM_SEEDS = [int(s) for s in os.environ.get("DS_WALK_SLURM_SEEDS", "3").split(",") if s.strip()]
AWS_SEEDS = [int(s) for s in os.environ.get("DS_WALK_AWS_SEEDS", "4").split(",") if s.strip()]
STEPS = 14
# What a user may type next: with workers running, without, or with no run set up.
WITH_WORKERS = ("kill", "kill", "settle", "submit", "redrive", "cleanup", "monitor")
WITHOUT = ("start", "run", "run-interrupted", "monitor", "submit", "redrive", "cleanup")
NO_RUN = ("submit", "run", "run-interrupted")
# On AWS (the test plays the ECS agent): `ds run` becomes start-cluster, then `ds monitor`.
AWS_WITHOUT = ("start", "start", "start-monitor", "submit", "redrive", "cleanup")
AWS_NO_RUN = ("submit",)

# "start <name> <time>" when it starts, "ok <name> <time>" when it succeeds; fails while it
# has started fewer than ``fails`` times before (the oracle is its memory, across runs).
TASK_SCRIPT = """
import os, sys, time
name, fails, oracle, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = open(oracle).read().splitlines() if os.path.exists(oracle) else []
before = sum(1 for line in lines if line.startswith("start %s " % name))
with open(oracle, "a") as f:
    f.write("start %s %f\\n" % (name, time.time()))
time.sleep(0.4)
if before < fails:
    sys.exit(3)
open(out + "/r.txt", "w").write(name)
with open(oracle, "a") as f:
    f.write("ok %s %f\\n" % (name, time.time()))
"""


class Walk:
    """One project, its oracle, and what was said."""

    def __init__(self, tmp_path: Path, ds: Ds, extra: dict[str, Any] | None = None) -> None:
        self.ds = ds
        self.oracle = tmp_path / "oracle.txt"
        script = tmp_path / "task.py"
        script.write_text(TASK_SCRIPT)
        fails = [0, 0, 1, 2, 9, 0]
        self.proj = write_project(
            tmp_path / "p",
            argv=[
                sys.executable,
                str(script),
                "{name}",
                "{fails}",
                str(self.oracle),
                "{output_dir}",
            ],
            groups=[{"name": f"t{i}", "fails": f} for i, f in enumerate(fails)],
            # A lease of 3 s: a killed worker's task comes back within the walk.
            extra={"queue": {"visibility": 3, "job_retries": 3}, **(extra or {})},
        )
        # A second job file that shares t3-t5 with job.json and adds t6 and t7.
        more = [{"name": f"t{i}", "fails": f} for i, f in enumerate(fails)][3:]
        more += [{"name": "t6", "fails": 0}, {"name": "t7", "fails": 1}]
        (self.proj / "more.json").write_text(json.dumps({"groups": more}))
        self.active = False  # a run is set up and not ended, as far as the walk knows
        self.said: list[str] = []

    def lines(self) -> list[str]:
        return self.oracle.read_text().splitlines() if self.oracle.exists() else []

    def run_ds(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.ds(*args, cwd=self.proj, timeout=timeout)
        self.said.append(f"ds {' '.join(args)} -> {result.returncode}")
        return result

    def workers(self) -> list[int]:
        """The pids of this project's `ds worker` processes (forked from the `ds` command
        that started them, named ``ds-worker``, or new interpreters)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                name = (entry / "comm").read_text().strip()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                cwd = str((entry / "cwd").readlink())
            except OSError:
                continue
            worker = name == "ds-worker" or (b"worker" in argv and b"distributed_something" in argv)
            # Started in the project (forked or not), or by Slurm with the project's config.
            ours = [cwd, *(arg.decode(errors="replace") for arg in argv)]
            if worker and any(path.startswith(str(self.proj)) for path in ours):
                found.append(int(entry.name))
        return found

    def next_step(self, rng: random.Random) -> str:
        if self.workers():
            return rng.choice(WITH_WORKERS)
        return rng.choice(WITHOUT if self.active else NO_RUN)

    def step(self, kind: str, rng: random.Random) -> bool:
        """Take one step; True when the run is quiet after it (nothing runs)."""
        if kind == "submit":
            if not self.active:
                self.run_ds("setup")
            self.active = True
            self.run_ds("submit", rng.choice(["job.json", "more.json"]))
        elif kind == "start":
            if self.run_ds("start-cluster").returncode == 0:
                wait_for(self.workers, timeout=10)  # Slurm starts its jobs in a moment
        elif kind == "settle":
            try:
                settled = self.run_ds("status", "--watch", "0.5", timeout=25).returncode == 0
            except subprocess.TimeoutExpired:  # no worker running: it watches on
                return False
            return settled and not self.workers()
        elif kind == "kill":
            workers = self.workers()
            if workers:
                time.sleep(0.2 + 0.6 * rng.random())  # tasks take 0.4 s: often mid-task
                victim = rng.choice(workers)
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(victim, signal.SIGKILL)
                self.said.append(f"SIGKILL worker {victim}")
        elif kind in ("run", "run-interrupted"):
            self.active = True
            argv = [sys.executable, "-m", "distributed_something", "run", ".", "--json"]
            proc = subprocess.Popen(
                [*argv, "--interval", "0.2"],
                cwd=self.proj,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            if kind == "run-interrupted":
                time.sleep(0.5 + 2.5 * rng.random())
                proc.send_signal(signal.SIGINT)  # Ctrl-C
            proc.communicate(timeout=120)
            self.said.append(f"ds run ({kind}) -> {proc.returncode}")
            if proc.returncode in (0, 1):  # ran to its end (1: a task is dead)
                self.active = False
                return True
        elif kind == "cleanup":
            self.run_ds("cleanup")
            self.active = False
            return True
        elif kind == "redrive":
            self.run_ds("dead", "redrive")
        elif kind == "monitor":
            if self.run_ds("monitor", "--json", "--interval", "0.2").returncode in (0, 1):
                self.active = False
            return True
        return False

    def executions_in(self, run_id: str) -> list[tuple[str, str]]:
        """(what, task name) of the oracle's lines written while run ``run_id`` was the
        project's latest (from its creation to the next run's), as `ds runs` dates them."""
        runs = json.loads(self.ds("runs", "--json", cwd=self.proj).stdout)
        starts = sorted(float(run["created_at"]) for run in runs)
        begin = next(float(run["created_at"]) for run in runs if run["run_id"] == run_id)
        end = min((t for t in starts if t > begin), default=float("inf"))
        found = []
        for line in self.lines():
            what, name, at = line.split()
            if begin <= float(at) < end:
                found.append((what, name))
        return found

    def check(self, trace: Path) -> list[str]:
        """What the run's status, report and trace say against each other and the oracle."""
        status = self.ds("status", "--json", cwd=self.proj)
        report = self.ds("report", "--json", "--trace", str(trace), cwd=self.proj)
        if "no run of" in status.stderr:
            return []  # nothing set up yet
        assert status.returncode in (0, 1), status.stderr
        assert report.returncode in (0, 1), report.stderr
        said, told = json.loads(status.stdout), json.loads(report.stdout)
        problems = []
        if said["counts"] != told["counts"]:
            problems.append(f"status {said['counts']} != report {told['counts']}")
        counts = told["counts"]
        if sum(v for k, v in counts.items() if k != "total") != counts["total"]:
            problems.append(f"the counts do not add up: {counts}")
        outcomes = attempt_outcomes(trace)
        ran = self.executions_in(told["run_id"])
        started = Counter(name for what, name in ran if what == "start")
        succeeded = Counter(name for what, name in ran if what == "ok")
        for task in told["tasks"]:
            name, outcome = task["group"]["name"], task["outcome"]
            attempts = [o for o in outcomes.get(name, []) if o != "duplicate"]
            # Ended with an exit code: its command surely wrote its first line. Cut short
            # (its worker killed, or stopped by Ctrl-C) it may have been ended before.
            ended = sum(1 for o in attempts if o in ("done", "failed", "dead"))
            cut = sum(1 for o in attempts if o in ("lost", "released"))
            if task["attempts"] != len(attempts) or not ended <= started[name] <= ended + cut:
                problems.append(f"{name}: attempts {attempts}, ran {started[name]}: {task}")
            if outcome == "done" and not succeeded[name]:
                problems.append(f"{name}: done, but no execution in this run succeeded")
            if succeeded[name] and outcome != "done" and not cut:
                # Only an attempt cut short after its command's success (its worker killed,
                # or its command stopped on its way out) may leave the task undone.
                problems.append(f"{name}: succeeded, but {outcome}: {attempts}")
        return problems


class AwsWalk(Walk):
    """The walk on AWS (moto's server): the test plays the ECS agent, starting one
    `ds worker` per desired task of the service after each `start-cluster`
    (`aws_agent.start_tasks`). A killed worker is not restarted (a stopped ECS task whose
    machine is gone); `start` starts the service's tasks again. `ds run` is not how a run
    on AWS is driven: its steps are `start` and `start-monitor` (start-cluster, then
    `ds monitor` until the run ends)."""

    BUCKET = "ds-walk"

    def __init__(self, tmp_path: Path, ds: Ds, endpoint: str) -> None:
        extra = {
            "backend": "aws",
            "image": "example/ds-worker:1",
            "cluster": {"machines": 1, "tasks_per_machine": 2, "docker_cores": 1},
            "storage": {"bucket": self.BUCKET},
            "aws": {"region": REGION, "ecs_cluster": "TCluster"},
        }
        super().__init__(tmp_path, ds, extra)
        self.endpoint = endpoint
        self.agent = tmp_path / "agent"
        self.procs: list[subprocess.Popen[bytes]] = []
        fleet = moto_family_fleet(aws_client("ec2"))
        (self.proj / "fleet.json").write_text(json.dumps(fleet))
        aws_client("s3").create_bucket(Bucket=self.BUCKET)

    def workers(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.poll() is None]

    def next_step(self, rng: random.Random) -> str:
        if self.workers():
            return rng.choice(WITH_WORKERS)
        return rng.choice(AWS_WITHOUT if self.active else AWS_NO_RUN)

    def start(self) -> bool:
        """`ds start-cluster`, then the service's desired tasks; True when it started."""
        if self.run_ds("start-cluster", "fleet.json").returncode != 0:
            return False
        ecs = aws_client("ecs")
        workdir = self.agent / str(len(self.procs))
        self.procs += start_tasks(ecs, "TCluster", "TService", self.endpoint, workdir)
        self.said.append(f"agent: {len(self.workers())} workers running")
        return True

    def quiet(self) -> bool:
        """True once every worker has exited (they stop when the queue is drained or gone)."""
        return wait_for(lambda: not self.workers(), timeout=30)

    def minute_passes(self) -> None:
        """The user waits out the minute SQS holds a cleaned-up queue's name before `ds setup`
        may create it again (setup waits for it, said by the run state's
        ``queue_deleted_at``): the walk moves that deletion a minute back instead."""
        s3 = aws_client("s3")
        try:
            body = s3.get_object(Bucket=self.BUCKET, Key="_ds/T/state.json")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return
        state = json.loads(body)
        aws = state.get("resources", {}).get("aws", {})
        if aws.get("queue_deleted_at") is None:
            return
        aws["queue_deleted_at"] -= 70
        text = json.dumps(state, indent=1)
        s3.put_object(Bucket=self.BUCKET, Key="_ds/T/state.json", Body=text.encode())
        local = self.proj / ".ds" / "T" / "state.json"
        if local.exists():
            local.write_text(text)
        self.said.append("a minute passes (the queue's name is free again)")

    def step(self, kind: str, rng: random.Random) -> bool:
        if kind == "submit" and not self.active:
            self.minute_passes()
        if kind == "start":
            self.start()
            return False
        if kind == "start-monitor":
            if not self.start():
                return False
            kind = "monitor"
        if kind == "settle":
            try:
                settled = self.run_ds("status", "--watch", "0.5", timeout=25).returncode == 0
            except subprocess.TimeoutExpired:
                return False
            return settled and self.quiet()
        quiet = super().step(kind, rng)
        if kind in ("monitor", "cleanup"):
            return quiet and self.quiet()  # their workers stop once the queue is gone
        return quiet

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def attempt_outcomes(trace: Path) -> dict[str, list[str]]:
    """Task name → the outcomes of its attempts, in order, from `ds report --trace`'s TSV."""
    lines = trace.read_text().splitlines()
    header = lines[0].split("\t")
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=True))
        name = row["group"].split(",")[0].removeprefix("name=")
        found.setdefault(name, []).append(row["outcome"])
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_random_command_sequences_keep_status_report_and_reality_in_agreement(
    tmp_path: Path, ds: Ds, seed: int
) -> None:
    walk_and_compare(Walk(tmp_path, ds), random.Random(seed), tmp_path / "trace.tsv")


@pytest.mark.parametrize("seed", SLURM_SEEDS)
def test_random_command_sequences_on_slurm_keep_status_report_and_reality_in_agreement(
    slurm_cluster: str, tmp_path: Path, ds: Ds, seed: int
) -> None:
    # The same on a real one-node Slurm cluster: workers are jobs, a SIGKILLed one is a
    # worker that died on its node.
    extra = {"backend": "slurm", "slurm": {"shared_dir": str(tmp_path / "shared"), "max_jobs": 2}}
    walk_and_compare(Walk(tmp_path, ds, extra), random.Random(seed), tmp_path / "trace.tsv")


@pytest.mark.parametrize("seed", AWS_SEEDS)
def test_random_command_sequences_on_aws_keep_status_report_and_reality_in_agreement(
    aws: str, tmp_path: Path, ds: Ds, seed: int
) -> None:
    # The same on moto's server: workers are ECS tasks the test starts, a SIGKILLed one is
    # a container that vanished; its task comes back when its 3 s lease ends.
    walk = AwsWalk(tmp_path, ds, aws)
    try:
        walk_and_compare(walk, random.Random(seed), tmp_path / "trace.tsv")
    finally:
        walk.stop()


def walk_and_compare(walk: Walk, rng: random.Random, trace: Path) -> None:
    """Take `STEPS` steps, comparing what ds says with the oracle at each quiet moment."""
    checked = 0
    try:
        for number in range(STEPS):
            kind = walk.next_step(rng)
            walk.said.append(f"step {number}: {kind}")
            if walk.step(kind, rng):
                problems = walk.check(trace)
                checked += 1
                assert not problems, "\n".join([*walk.said, *problems])
    finally:
        walk.ds("cleanup", cwd=walk.proj)
    assert checked >= 2, walk.said  # the walk reached quiet moments to compare
    assert walk.lines(), walk.said  # and tasks ran
