"""Truthful accounting of further command sequences, tried as users do through the real `ds`:
the task command appends one line per execution to an oracle file, and what `ds status`,
`ds report` (JSON and TSV) and `ds dead list` say is compared with it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from distributed_something.records import RunRecords
from testkit import local_bucket, running, wait_for

pytestmark = pytest.mark.slow

Ds = Callable[..., subprocess.CompletedProcess[str]]

# One line per execution ("<name>") in the oracle; fails while the task has run fewer than
# ``fails`` times before (the oracle is its memory), else writes its output.
TASK_SCRIPT = """
import sys
name, fails, oracle, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
before = open(oracle).read().split().count(name) if __import__("os").path.exists(oracle) else 0
open(oracle, "a").write(name + "\\n")
if before < fails:
    sys.exit(3)
open(out + "/r.txt", "w").write(name)
"""


def project(tmp_path: Path, groups: list[dict[str, Any]], **extra: Any) -> Path:
    oracle = tmp_path / "oracle.txt"
    script = tmp_path / "task.py"
    script.write_text(TASK_SCRIPT)
    return write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), "{name}", "{fails}", str(oracle), "{output_dir}"],
        groups=groups,
        extra=extra,
    )


def executions(tmp_path: Path) -> Counter[str]:
    """name → how many times the task's command really ran (the oracle)."""
    return Counter((tmp_path / "oracle.txt").read_text().split())


def js(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def start(proj: Path, ds: Ds) -> None:
    """Set the run up, submit job.json and start its workers, as a user types it."""
    for step in (["setup"], ["submit", "job.json"], ["start-cluster"]):
        ok(ds(*step, cwd=proj))


def start_slow(tmp_path: Path, ds: Ds, oracle: Path, script_text: str, **queue: Any) -> Path:
    """Start a run of one task of ``script_text`` (it writes to ``oracle``) with a lease of
    2 s, so that a worker stopped a few seconds loses it (``queue``: more [queue] settings);
    returns the project folder."""
    script = tmp_path / "slow.py"
    script.write_text(script_text)
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), str(oracle), "{output_dir}"],
        groups=[{"name": "slow"}],
        extra={"queue": {"visibility": 2, **queue}},
    )
    start(proj, ds)
    return proj


def flaky_project(tmp_path: Path) -> Path:
    """ "flaky" fails twice (dead with job_retries = 2); "fine" succeeds at once."""
    return project(
        tmp_path,
        [{"name": "flaky", "fails": 2}, {"name": "fine", "fails": 0}],
        queue={"job_retries": 2},
    )


def test_a_task_redriven_in_its_active_run_that_then_succeeds_counts_every_attempt(
    tmp_path: Path, ds: Ds
) -> None:
    # "flaky" fails twice (dead with job_retries = 2), is redriven into the same run, then
    # succeeds: three executions in one run, and the report says three, as the ledger does.
    proj = flaky_project(tmp_path)
    start(proj, ds)
    ok(ds("status", "--watch", "0.5", cwd=proj, timeout=120))  # until nothing more happens
    dead = js(ok(ds("dead", "list", "--json", cwd=proj)))
    assert [(d["group"]["name"], d["attempts"]) for d in dead] == [("flaky", 2)]
    ok(ds("dead", "redrive", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert report["counts"]["done"] == 2 and report["counts"]["dead"] == 0
    assert executions(tmp_path) == {"flaky": 3, "fine": 1}
    attempts = {t["group"]["name"]: t["attempts"] for t in report["tasks"]}
    assert attempts == dict(executions(tmp_path))
    tsv = (proj / ".ds" / "T" / "report.tsv").read_text().splitlines()
    header = tsv[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in tsv[1:]]
    by_name = {json.loads(r["group"])["name"]: int(r["attempts"]) for r in rows}
    assert by_name == dict(executions(tmp_path))


# Records "start <pid>" and "end <pid>" in the oracle, sleeping 3 s between.
SLOW_SCRIPT = """
import os, sys, time
oracle, out = sys.argv[1:3]
open(oracle, "a").write("start %d\\n" % os.getpid())
time.sleep(3)
open(out + "/r.txt", "w").write("r")
open(oracle, "a").write("end %d\\n" % os.getpid())
"""

# Runs until the test creates ``<oracle>.go`` (at most a minute), then ends as SLOW_SCRIPT.
GO_SCRIPT = SLOW_SCRIPT.replace(
    "time.sleep(3)",
    "deadline = time.time() + 60\n"
    "while not os.path.exists(oracle + '.go') and time.time() < deadline:\n"
    "    time.sleep(0.01)",
)


def test_a_worker_stopped_past_its_lease_drops_its_result_and_each_attempt_is_one_record(
    tmp_path: Path, ds: Ds
) -> None:
    # A worker SIGSTOPped (a suspended terminal job, a debugger) past its lease: its task
    # goes to the other worker. Its own command runs on and ends while it is stopped; when
    # it resumes, it must find its lease lost and drop the result (the other holder owns
    # the task), not record its attempt done over the lost record the other worker wrote.
    oracle = tmp_path / "oracle.txt"
    proj = start_slow(tmp_path, ds, oracle, GO_SCRIPT)

    def lines() -> list[str]:
        return oracle.read_text().splitlines() if oracle.exists() else []

    assert wait_for(lambda: lines(), timeout=30)
    first = int(lines()[0].split()[1])
    worker = int(Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGSTOP)
    # The command ends now, long before the lease can lapse: were it still running when the
    # task is taken over, the other worker would end it (the next test).
    Path(f"{oracle}.go").touch()
    try:
        # Stopped until its command ended and the other worker took the task over.
        assert wait_for(lambda: {f"end {first}"} & set(lines()) and len(lines()) >= 3, 30)
        time.sleep(0.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    starts = [line for line in lines() if line.startswith("start")]
    assert len(starts) == 2  # what really ran: two executions
    (task,) = report["tasks"]
    assert task["outcome"] == "done" and task["attempts"] == len(starts)
    records = RunRecords(local_bucket(proj), "T", report["run_id"])
    keys = records.attempt_keys(task["id"])
    assert len({k.stem for k in keys}) == len(keys), keys  # one record per attempt
    assert sorted(k.outcome for k in keys) == ["done", "lost"]


def test_tasks_skipped_as_done_count_no_attempt_and_the_others_run_once(
    tmp_path: Path, ds: Ds
) -> None:
    # check_if_done's count rule finds the outputs of "a" and "b" already there (an earlier
    # tool wrote them): skipped at submit, never run, so no attempt in the report.
    groups = [{"name": n, "fails": 0} for n in ("a", "b", "c")]
    proj = project(tmp_path, groups, check_if_done={"expected_number_files": 1})
    bucket = proj / ".ds" / "T" / "buckets" / "default"
    for name in ("a", "b"):
        (bucket / "out" / name).mkdir(parents=True)
        (bucket / "out" / name / "r.txt").write_text("earlier")
    report = js(ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj)))
    assert (report["counts"]["skipped"], report["counts"]["done"]) == (2, 1)
    ran = executions(tmp_path)
    assert ran == {"c": 1}
    assert {t["group"]["name"]: t["attempts"] for t in report["tasks"]} == {
        name: ran[name] for name in ("a", "b", "c")
    }


def test_a_dead_task_submitted_again_counts_pending_not_dead_until_it_runs(
    tmp_path: Path, ds: Ds
) -> None:
    # A second submit of the job sends its dead task again (only tasks under way are left
    # out): from then on it is queued, so pending, not dead, and `ds dead list` no longer
    # lists it (a redrive of it would send it twice). Then it runs and succeeds.
    proj = flaky_project(tmp_path)
    start(proj, ds)
    ok(ds("status", "--watch", "0.5", cwd=proj, timeout=120))
    assert js(ok(ds("status", "--json", cwd=proj)))["counts"]["dead"] == 1
    # The run's workers exit once they find the queue drained; one still looking (a loaded
    # machine) would take the task sent next and run it before `start-cluster` below.
    assert wait_for(lambda: js(ds("status", "--json", cwd=proj))["workers"]["running"] == 0)
    again = js(ok(ds("submit", "job.json", "--json", cwd=proj)))
    assert again["sent"] == 1
    counts = js(ok(ds("status", "--json", cwd=proj)))["counts"]
    assert (counts["dead"], counts["pending"], counts["done"]) == (0, 1, 1)
    assert js(ok(ds("dead", "list", "--json", cwd=proj))) == []
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert report["counts"]["done"] == 2 and report["counts"]["dead"] == 0
    assert executions(tmp_path) == {"flaky": 3, "fine": 1}


def test_a_task_taken_over_from_a_stopped_worker_never_runs_twice_at_once(
    tmp_path: Path, ds: Ds
) -> None:
    # The delivery that takes the task over from a worker stopped past its lease ends the
    # stopped worker's command (same machine: its process group is recorded), so the task
    # never runs twice at once, and the first execution never completes.
    oracle = tmp_path / "oracle.txt"
    proj = start_slow(tmp_path, ds, oracle, SLOW_SCRIPT.replace("time.sleep(3)", "time.sleep(20)"))

    def lines() -> list[str]:
        return oracle.read_text().splitlines() if oracle.exists() else []

    assert wait_for(lambda: lines(), timeout=30)
    first = int(lines()[0].split()[1])
    worker = int(Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGSTOP)
    try:
        assert wait_for(lambda: len(lines()) >= 2, timeout=30)  # taken over
        assert wait_for(lambda: not running(first), timeout=15), "the first command still runs"
    finally:
        os.kill(worker, signal.SIGCONT)
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert [line.split()[0] for line in lines()] == ["start", "start", "end"]
    assert lines()[2] != f"end {first}"
    (task,) = report["tasks"]
    assert task["outcome"] == "done" and task["attempts"] == 2 and not task["duplicate"]


def watchdog_of(worker: int) -> int:
    """The pid of ``worker``'s watchdog: its child running `watchdog_main`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == worker and b"watchdog_main" in command:
            return int(entry.name)
    raise AssertionError(f"worker {worker} has no watchdog")


def test_a_task_whose_receives_went_to_a_hand_back_and_a_vanished_worker_is_sent_again(
    tmp_path: Path, ds: Ds
) -> None:
    # job_retries = 2. The first worker is stopped (a scale-in: it hands the task back,
    # which spends a receive but no try); the second vanishes with its watchdog (a machine
    # gone), so nothing settles it. The message's next receive is past the queue's limit: it
    # goes to the dead-letter store after one real try. The monitor must send it again, not
    # leave it dead with no outcome, and the counts must match what ran.
    oracle = tmp_path / "oracle.txt"
    proj = start_slow(tmp_path, ds, oracle, GO_SCRIPT, job_retries=2)

    def starts() -> list[int]:
        text = oracle.read_text() if oracle.exists() else ""
        return [int(line.split()[1]) for line in text.splitlines() if line.startswith("start")]

    def worker_of(command: int) -> int:
        return int(Path(f"/proc/{command}/stat").read_text().rsplit(")", 1)[1].split()[1])

    assert wait_for(lambda: starts(), timeout=30)
    first = starts()[0]
    os.kill(worker_of(first), signal.SIGTERM)  # stopped: hands the task back
    assert wait_for(lambda: len(starts()) >= 2, timeout=30), "nobody took the task again"
    second = starts()[1]
    worker = worker_of(second)
    os.kill(watchdog_of(worker), signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    os.killpg(second, signal.SIGKILL)  # its command: its own group, gone with the machine
    assert wait_for(lambda: not running(second) and not running(worker), timeout=15)
    Path(f"{oracle}.go").touch()  # the next execution ends at once

    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert len(starts()) == 3 and oracle.read_text().count("end ") == 1  # what really ran
    (task,) = report["tasks"]
    assert task["outcome"] == "done" and task["attempts"] == 3, task
    assert report["counts"]["done"] == 1 and report["counts"]["dead"] == 0
    status = js(ok(ds("status", "--json", cwd=proj)))
    assert status["counts"]["done"] == 1 and status["counts"]["dead"] == 0, status["counts"]
    records = RunRecords(local_bucket(proj), "T", report["run_id"])
    outcomes = sorted(k.outcome for k in records.attempt_keys(task["id"]))
    assert outcomes.count("done") == 1 and "lost" in outcomes and len(outcomes) == 3, outcomes


# Fails at its first execution (exit 4); later ones run until ``<oracle>.go`` exists.
FAIL_THEN_GO_SCRIPT = GO_SCRIPT.replace(
    'open(oracle, "a").write("start %d\\n" % os.getpid())',
    "first = not os.path.exists(oracle)\n"
    'open(oracle, "a").write("start %d\\n" % os.getpid())\n'
    "if first:\n"
    '    open(oracle, "a").write("fail %d\\n" % os.getpid())\n'
    "    sys.exit(4)",
)


def test_a_worker_dying_on_a_tasks_last_try_uses_up_no_retry(tmp_path: Path, ds: Ds) -> None:
    # job_retries = 2: the first try fails (exit 4, a retry used), the second's worker is
    # killed (its watchdog settles it) on the last receive the queue allows. A lost attempt
    # uses up no retry (docs/configuration.md): the task runs a third time, and succeeds;
    # it was counted dead, its error the first try's.
    oracle = tmp_path / "oracle.txt"
    proj = start_slow(tmp_path, ds, oracle, FAIL_THEN_GO_SCRIPT, job_retries=2)

    def lines() -> list[str]:
        return oracle.read_text().splitlines() if oracle.exists() else []

    def starts() -> list[int]:
        return [int(line.split()[1]) for line in lines() if line.startswith("start")]

    assert wait_for(lambda: len(starts()) >= 2, timeout=60), lines()
    second = starts()[1]
    worker = int(Path(f"/proc/{second}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGKILL)  # the watchdog ends its command and settles the attempt
    assert wait_for(lambda: not running(second), timeout=15)
    Path(f"{oracle}.go").touch()  # the next execution ends at once

    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert [line.split()[0] for line in lines()] == ["start", "fail", "start", "start", "end"]
    (task,) = report["tasks"]
    assert task["outcome"] == "done" and task["attempts"] == 3, task
    assert report["counts"]["dead"] == 0
    assert js(ok(ds("status", "--json", cwd=proj)))["counts"]["done"] == 1
    records = RunRecords(local_bucket(proj), "T", report["run_id"])
    outcomes = [k.outcome for k in records.attempt_keys(task["id"])]
    assert outcomes == ["failed", "lost", "done"], outcomes


def test_a_task_redriven_into_a_new_run_is_not_dead_in_its_old_run_any_more(
    tmp_path: Path, ds: Ds
) -> None:
    # "flaky" dies in the first run (two failures), the run ends, `ds dead redrive` sends it
    # into a new run where it succeeds. The old run must not offer it again: it is no longer
    # listed dead there, and a second redrive of the old run sends nothing.
    proj = project(tmp_path, [{"name": "flaky", "fails": 2}], queue={"job_retries": 2})
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    ds("monitor", "--interval", "0.2", cwd=proj)  # exits 1: a dead task
    old = js(ok(ds("runs", "--json", cwd=proj)))[-1]["run_id"]
    assert [d["attempts"] for d in js(ok(ds("dead", "list", "--json", cwd=proj)))] == [2]
    ok(ds("dead", "redrive", "--run", old, cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert report["counts"]["done"] == 1
    assert executions(tmp_path) == {"flaky": 3}
    listed = js(ok(ds("dead", "list", "--run", old, "--json", cwd=proj)))
    assert listed == []
    again = ok(ds("dead", "redrive", "--run", old, cwd=proj))
    assert "nothing was sent" in again.stderr
    assert len(js(ok(ds("runs", "--json", cwd=proj)))) == 2  # no third run


def test_attempts_are_numbered_as_they_ran_across_a_redrive(tmp_path: Path, ds: Ds) -> None:
    # "flaky" fails four times: dead after two, redriven in its active run, dead after two
    # more. `ds dead list`/`show` and the trace number its attempts 1..4 (as "tries" counts
    # them), not by its messages' receive counts (1, 2, 1, 2), which they keep as "receive".
    proj = project(tmp_path, [{"name": "flaky", "fails": 4}], queue={"job_retries": 2})
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    ok(ds("status", "--watch", "0.5", cwd=proj, timeout=120))
    ok(ds("dead", "redrive", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    ds("monitor", "--interval", "0.2", cwd=proj)  # exits 1: a dead task
    assert executions(tmp_path) == {"flaky": 4}
    [dead] = js(ok(ds("dead", "list", "--json", cwd=proj)))
    assert dead["attempts"] == 4
    assert [h["attempt"] for h in dead["history"]] == [1, 2, 3, 4]
    assert [h["receive"] for h in dead["history"]] == [1, 2, 1, 2]
    shown = js(ok(ds("dead", "show", dead["task_id"], "--json", cwd=proj)))
    assert [f["attempt"] for f in shown["failures"]] == [1, 2, 3, 4]
    assert "#4" in ok(ds("dead", "show", dead["task_id"], cwd=proj)).stdout
    ds("report", "--trace", str(tmp_path / "trace.tsv"), cwd=proj)  # exits 1: a dead task
    lines = (tmp_path / "trace.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [r["attempt"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["receive"] for r in rows] == ["1", "2", "1", "2"]
    # Each log's header numbers its attempt the same way (it said 1, 2, 1, 2).
    logs = ok(ds("logs", dead["task_id"], cwd=proj)).stdout
    assert re.findall(r"ds: task \w+ attempt (\d+) on", logs) == ["1", "2", "3", "4"]


def test_a_task_waiting_for_a_retry_when_the_run_is_cleaned_up_counts_unfinished(
    tmp_path: Path, ds: Ds
) -> None:
    # "flaky" always fails; after its third failure it waits 8-12 s for a retry, and
    # `ds cleanup` ends the run then. No retry will come: status, `--json` and the report
    # (JSON, TSV) count it pending (unfinished), not failed, its last failure kept.
    proj = project(tmp_path, [{"name": "flaky", "fails": 9}], queue={"job_retries": 9})
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
    oracle = tmp_path / "oracle.txt"
    assert wait_for(lambda: oracle.exists() and len(oracle.read_text().split()) >= 3, 60)
    assert wait_for(lambda: js(ok(ds("status", "--json", cwd=proj)))["counts"]["failed"] == 1, 5)
    ok(ds("cleanup", cwd=proj))
    ran = executions(tmp_path)["flaky"]
    counts = js(ok(ds("status", "--json", cwd=proj)))["counts"]
    assert (counts["failed"], counts["pending"]) == (0, 1)
    assert "failed" not in ok(ds("status", cwd=proj)).stderr.split("total")[-1]
    report = js(ds("report", "--json", cwd=proj))
    assert (report["counts"]["failed"], report["counts"]["pending"]) == (0, 1)
    [task] = report["tasks"]
    assert task["outcome"] == "pending" and task["attempts"] == ran
    assert task["error"] and task["cause"] == "exit"
    tsv = (proj / ".ds" / "T" / "report.tsv").read_text().splitlines()
    assert tsv[1].split("\t")[tsv[0].split("\t").index("outcome")] == "pending"
    assert executions(tmp_path)["flaky"] == ran  # nothing ran after the cleanup


# "dd" fails at its first execution; the others wait for a release file, then succeed. One
# line per start ("<name>") and per end ("<name>:end") in the oracle.
HELD_SCRIPT = """
import os, sys, time
name, oracle, release, out = sys.argv[1:5]
ran = open(oracle).read().split().count(name) if os.path.exists(oracle) else 0
open(oracle, "a").write(name + "\\n")
if name == "dd" and ran == 0:
    sys.exit(3)
while name != "dd" and not os.path.exists(release):
    time.sleep(0.05)
open(os.path.join(out, "r.txt"), "w").write(name)
open(oracle, "a").write(name + ":end\\n")
"""


def test_a_run_continuing_a_stopped_one_runs_the_tasks_it_left_unfinished(
    tmp_path: Path, ds: Ds
) -> None:
    """`ds cleanup` stops a run with "dd" dead, "p1" running and "p2" pending; `ds dead
    redrive` continues it in a new run and says to run `ds run` again. Before, that `ds run`
    ran "dd" only and said done 1 of 1 (exit 0): "p1" and "p2", known to the stopped run,
    never ran."""
    oracle, release = tmp_path / "oracle.txt", tmp_path / "release"
    script = tmp_path / "held.py"
    script.write_text(HELD_SCRIPT)
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), "{name}", str(oracle), str(release), "{output_dir}"],
        groups=[{"name": n} for n in ("dd", "p1", "p2")],
        extra={"queue": {"job_retries": 1}, "cluster": {"docker_cores": 1}},
    )
    start(proj, ds)
    assert wait_for(lambda: oracle.exists() and "p1" in oracle.read_text().split(), 60)
    assert js(ok(ds("status", "--json", cwd=proj)))["counts"]["dead"] == 1
    ok(ds("cleanup", cwd=proj))
    said = ok(ds("dead", "redrive", cwd=proj)).stderr
    assert "ds run" in said
    release.touch()

    result = ds("run", cwd=proj)

    assert result.returncode == 0, result.stderr
    assert "left unfinished" in result.stderr
    ends = Counter(line for line in oracle.read_text().split() if line.endswith(":end"))
    assert ends == {"dd:end": 1, "p1:end": 1, "p2:end": 1}
    assert executions(tmp_path)["dd"] == 2
    counts = js(ok(ds("status", "--json", cwd=proj)))["counts"]
    assert (counts["done"], counts["dead"], counts["pending"]) == (3, 0, 0)
    outputs = proj / ".ds" / "T" / "buckets" / "default" / "out"
    assert sorted(p.parent.name for p in outputs.glob("*/r.txt")) == ["dd", "p1", "p2"]


def test_a_second_job_file_whose_task_writes_where_one_of_the_run_writes_is_refused(
    tmp_path: Path, ds: Ds
) -> None:
    """Two tasks of one run with one output folder: before, a second job file (or a group
    edited before `ds run` resumed) was sent, both ran and were reported done, and the
    second's outputs replaced the first's."""
    proj = project(tmp_path, [{"name": "x", "fails": 0}, {"name": "y", "fails": 0}])
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    (proj / "again.json").write_text(json.dumps({"groups": [{"name": "x", "fails": 1}]}))
    (proj / "other.json").write_text(json.dumps({"groups": [{"name": "z", "fails": 0}]}))
    (proj / "same.json").write_text(json.dumps({"groups": [{"name": "y", "fails": 0}]}))

    refused = ds("submit", "again.json", cwd=proj)

    assert refused.returncode == 2, refused.stderr
    assert "again.json" in refused.stderr and "groups[0]" in refused.stderr
    assert "'out/x'" in refused.stderr and "ds cleanup" in refused.stderr
    assert "Traceback" not in refused.stderr
    # `ds run` resuming with a group edited since: refused before it says or sends anything,
    # naming the group's place in the file (not in the list of groups the run lacks).
    (proj / "job.json").write_text(
        json.dumps({"groups": [{"name": "x", "fails": 0}, {"name": "y", "fails": 2}]})
    )
    resumed = ds("run", cwd=proj)
    assert resumed.returncode == 2, resumed.stderr
    assert "groups[1]" in resumed.stderr and "'out/y'" in resumed.stderr
    assert "no longer in" not in resumed.stderr
    (proj / "job.json").write_text(
        json.dumps({"groups": [{"name": "x", "fails": 0}, {"name": "y", "fails": 0}]})
    )
    assert "submitted 0 tasks" in ok(ds("submit", "same.json", cwd=proj)).stderr  # the same task
    ok(ds("submit", "other.json", cwd=proj))  # a folder of its own
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    assert report["counts"]["done"] == 3 and report["counts"]["total"] == 3
    assert executions(tmp_path) == {"x": 1, "y": 1, "z": 1}


def test_tasks_submitted_again_once_done_without_check_if_done_are_said_so(
    tmp_path: Path, ds: Ds
) -> None:
    """With check-if-done off, a second submit of done tasks runs them again (asked for):
    the report counted them as "delivered twice", and explained it by a stood-down delivery
    or a vanished worker, neither of which happened."""
    proj = project(
        tmp_path,
        [{"name": "a", "fails": 0}, {"name": "b", "fails": 0}],
        check_if_done={"enabled": False},
    )
    for step in (["setup"], ["submit", "job.json"], ["worker"], ["submit", "job.json"]):
        ok(ds(*step, cwd=proj))
    ok(ds("worker", cwd=proj))
    said = ok(ds("report", cwd=proj)).stderr
    assert executions(tmp_path) == {"a": 2, "b": 2}
    assert "2 tasks were delivered twice or ran to the end twice" in said
    assert "submitted again once done, with check_if_done off" in said


def test_pending_tasks_only_a_monitor_can_account_for_are_said_so() -> None:
    # On AWS with no monitor ticking, a task whose worker died at every receive sits in the
    # dead-letter queue: `ds status` counted it pending with an ETA, and nothing said why
    # it never ran (the counts come from the records; only a monitor writes its dead mark).
    from distributed_something.backends import backend_kind
    from distributed_something.cli.commands import _status_frame
    from distributed_something.monitor.progress import from_counts
    from distributed_something.usecases.run_info import Status

    counts = dict.fromkeys(("skipped", "running", "failed", "dead", "duplicates"), 0)
    counts.update(done=3, pending=1, total=4)

    def status(**queue: int) -> Status:
        return Status("App", "r1", True, from_counts(counts, 0), 1, 1, 10.0, None, **queue)

    stuck = status(dead_letters=1)
    assert stuck.waiting_for_monitor == 1 and stuck.to_json()["waiting_for_monitor"] == 1
    frame = _status_frame(stuck, backend_kind("aws"))
    text = " ".join(" ".join(str(getattr(part, "plain", "")).split()) for part in frame)
    assert "1 pending task(s) cannot run" in text and "`ds monitor`" in text
    # Work still queued or in flight, or no dead letters: nothing to say.
    assert status(dead_letters=1, queued=1).waiting_for_monitor == 0
    assert status(dead_letters=1, in_flight=1).waiting_for_monitor == 0
    assert status().waiting_for_monitor == 0
