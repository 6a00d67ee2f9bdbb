"""End to end on the local backend: `ds` as users run it, with real worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from conftest import write_project
from testkit import E2E_WORK, local_bucket, running, wait_for

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]


def work_project(tmp_path: Path, names: list[str], seconds: float, **extra: Any) -> Path:
    ledger = tmp_path / "ledger.txt"
    argv = [sys.executable, "-c", E2E_WORK, "{output_dir}", "{name}", str(ledger), str(seconds)]
    return write_project(
        tmp_path / "proj", argv=argv, groups=[{"name": n} for n in names], extra=extra
    )


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return path.read_text().split() if path.exists() else []


def report_of(result: CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def outputs(proj: Path) -> dict[str, str]:
    root = proj / ".ds" / "T" / "buckets" / "default" / "out"
    return {p.parent.name: p.read_text() for p in root.glob("*/result.txt")}


def test_run_completes_every_task_and_resubmission_skips_them(tmp_path: Path, ds: Ds) -> None:
    names = [f"t{i}" for i in range(6)]
    proj = work_project(tmp_path, names, 0.1)
    first = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rep = report_of(first)
    assert {k: rep["counts"][k] for k in ("done", "skipped", "failed", "dead")} == {
        "done": 6,
        "skipped": 0,
        "failed": 0,
        "dead": 0,
    }
    assert {t["outcome"] for t in rep["tasks"]} == {"done"}
    assert all(t["attempts"] == 1 and t["outputs"] for t in rep["tasks"])
    assert outputs(proj) == {n: f"result of {n}" for n in names}
    assert sorted(ledger(tmp_path)) == sorted(names)
    html = (proj / ".ds" / "T" / "report.html").read_text()
    assert rep["run_id"] in html and "<svg" in html

    again = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rep2 = report_of(again)
    assert rep2["counts"]["skipped"] == 6 and rep2["counts"]["done"] == 0
    assert rep2["run_id"] != rep["run_id"]
    assert sorted(ledger(tmp_path)) == sorted(names)  # nothing ran twice


def test_submit_twice_then_ds_run_runs_each_task_once(tmp_path: Path, ds: Ds) -> None:
    """The family's habit: `ds setup`, `ds submit` (twice, by mistake), then `ds run` to
    watch it through. The second submit sends nothing, and `ds run` resumes the run (it used
    to refuse it as "in progress with job.json, job.json")."""
    names = [f"t{i}" for i in range(5)]
    proj = work_project(tmp_path, names, 0.0)
    assert ds("setup", cwd=proj).returncode == 0
    assert ds("submit", "job.json", cwd=proj).returncode == 0
    again = ds("submit", "job.json", "--json", cwd=proj)
    assert again.returncode == 0 and json.loads(again.stdout)["sent"] == 0
    result = ds("run", "--json", "--interval", "0.2", cwd=proj)
    assert result.returncode == 0, result.stderr
    assert report_of(result)["counts"]["done"] == 5
    assert sorted(ledger(tmp_path)) == sorted(names)  # each ran once


def test_worker_killed_mid_task_and_the_task_still_completes_once(tmp_path: Path, ds: Ds) -> None:
    names = [f"k{i}" for i in range(4)]
    proj = work_project(tmp_path, names, 2.0, queue={"visibility": 2})
    assert ds("setup", cwd=proj).returncode == 0
    assert ds("submitJob", "job.json", cwd=proj).returncode == 0  # the family's alias
    assert ds("startCluster", cwd=proj).returncode == 0
    workers = json.loads((proj / ".ds" / "T" / "workers.json").read_text())["workers"]
    deadline = time.monotonic() + 20
    while len(ledger(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ledger(tmp_path)) >= 2, "both workers should be busy"
    os.kill(workers[0]["pid"], signal.SIGKILL)  # mid-task: no chance to hand it back
    result = ds("monitor", "--json", "--interval", "0.2", cwd=proj)
    assert result.returncode == 0, result.stderr
    rep = report_of(result)
    assert rep["counts"]["done"] == 4 and rep["counts"]["duplicates"] == 0
    assert outputs(proj) == {n: f"result of {n}" for n in names}
    # The killed worker's task started twice but completed once (one done marker).
    assert len(ledger(tmp_path)) == 5
    assert sorted(t["attempts"] for t in rep["tasks"]) == [1, 1, 1, 2]


def ds_script(*args: str, cwd: Path) -> CompletedProcess[str]:
    """`ds ARGS` through the console script, as users type it (the `ds` fixture runs
    ``python -m distributed_something``): a worker forked from it keeps its command line."""
    script = Path(sys.executable).parent / "ds"
    assert script.exists(), f"no console script next to {sys.executable}"
    return subprocess.run(
        [str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_killed_workers_task_is_pending_at_once_and_runs_again_before_its_lease_ends(
    tmp_path: Path, ds: Ds
) -> None:
    """SIGKILL a worker mid-task, with a lease (visibility) of 5 minutes: its watchdog closes
    the attempt as lost and hands the message back, so `ds status` stops counting the task
    as running at once and the other worker runs it next, long before the lease would end.
    Workers started by the `ds` console script (forked: their command line is `ds`'s) are
    seen as running by a later `ds status`, and stopped by `ds cleanup`."""
    names = [f"k{i}" for i in range(4)]
    proj = work_project(tmp_path, names, 1.5, queue={"visibility": 300})
    for args in (("setup",), ("submit", "job.json"), ("start-cluster",)):
        assert ds_script(*args, cwd=proj).returncode == 0, args
    workers = json.loads((proj / ".ds" / "T" / "workers.json").read_text())["workers"]
    assert wait_for(lambda: len(ledger(tmp_path)) >= 2), "both workers should be busy"
    status = json.loads(ds_script("status", "--json", cwd=proj).stdout)
    assert status["workers"]["running"] == 2 and status["counts"]["running"] == 2
    # Which tasks run, and since when: each of the two by id, in its first attempt.
    busy = status["running_tasks"]
    assert len({t["task_id"] for t in busy}) == 2 and {t["attempt"] for t in busy} == {1}
    assert all(time.time() - 60 < t["started_at"] <= time.time() for t in busy)
    shown = ds("status", cwd=proj).stderr  # the table is for people: stderr
    assert "running longest:" in shown
    # (Its tasks by their short ids; checked against the run's tasks below: on a loaded
    # machine a task may have ended and the next begun since the JSON reading above.)
    named = re.findall(r"\b[0-9a-f]{12}\b", shown.split("running longest:", 1)[1])
    victim = workers[0]["pid"]
    os.kill(victim, signal.SIGKILL)  # mid-task: no chance to hand it back
    killed_at = time.time()

    def settled() -> dict[str, Any] | None:
        now = json.loads(ds("status", "--json", cwd=proj).stdout)
        return now if now["counts"]["running"] <= 1 else None

    assert wait_for(settled, timeout=20), "the dead worker's task is still counted running"
    status = settled()
    assert status is not None and status["workers"]["running"] == 1
    assert status["counts"]["done"] + status["counts"]["running"] + status["counts"]["pending"] == 4
    result = ds("monitor", "--json", "--interval", "0.2", cwd=proj)
    assert result.returncode == 0, result.stderr
    rep = report_of(result)
    assert rep["counts"]["done"] == 4 and rep["counts"]["duplicates"] == 0
    assert 1 <= len(named) <= 2 and set(named) <= {t["id"][:12] for t in rep["tasks"]}
    assert len(ledger(tmp_path)) == 5
    # From the records: the killed attempt was closed as lost, saying why, and the task ran
    # again before its lease would have ended.
    from distributed_something.records import RunRecords

    records = RunRecords(local_bucket(proj), "T", rep["run_id"])
    twice = [t for t in rep["tasks"] if t["attempts"] == 2]
    assert len(twice) == 1
    first, second = records.attempt_keys(twice[0]["id"])
    assert (first.outcome, second.outcome) == ("lost", "done")
    assert second.started_us / 1e6 < killed_at + 60
    lost = records.read_json_many([records.key_of(first)])[0]
    assert lost is not None and f"pid {victim}) died" in lost["error"]
    assert lost["cause"] == "lost"
    log = (proj / ".ds" / "T" / "workers" / f"{workers[0]['name']}.log").read_text()
    assert "its attempt is closed as lost" in log

    # Workers forked by the console script are seen, and stopped, by later commands.
    for args in (("setup",), ("submit", "job.json", "--no-skip-done"), ("start-cluster",)):
        assert ds_script(*args, cwd=proj).returncode == 0, args
    workers = json.loads((proj / ".ds" / "T" / "workers.json").read_text())["workers"]
    assert wait_for(lambda: len(ledger(tmp_path)) >= 7)
    assert json.loads(ds_script("status", "--json", cwd=proj).stdout)["workers"]["running"] == 2
    assert ds_script("cleanup", cwd=proj).returncode == 0
    assert wait_for(lambda: not any(running(w["pid"]) for w in workers), timeout=10)


def test_a_task_that_kills_its_worker_is_dead_after_its_receives_not_after_its_leases(
    tmp_path: Path, ds: Ds
) -> None:
    """Under `ds run`, whose monitor wakes the moment a worker exits and reaps it: the
    dead worker's watchdog still settles what it held (the monitor leaves the record to
    it), so each of the task's deliveries follows the last at once, not a 300 s lease
    later, and the task ends dead saying its worker died; the other tasks are done."""
    argv = [
        "sh",
        "-c",
        'echo "working on {name}"; if [ "{name}" = "bad" ]; then kill -9 $PPID; sleep 5; fi;'
        " echo ok > {output_dir}/r.txt",
    ]
    proj = write_project(
        tmp_path / "proj",
        argv=argv,
        groups=[{"name": n} for n in ("a", "bad", "b")],
        extra={"queue": {"visibility": 300, "job_retries": 3}},
    )
    result = ds("run", "--json", "--interval", "0.2", cwd=proj, timeout=200)
    rep = report_of(result)
    assert rep["counts"]["done"] == 2 and rep["counts"]["dead"] == 1, result.stderr
    [bad] = [t for t in rep["tasks"] if t["outcome"] == "dead"]
    assert bad["group"] == {"name": "bad"}
    assert "died before recording the task's end" in bad["error"]
    from distributed_something.records import RunRecords

    attempts = RunRecords(local_bucket(proj), "T", rep["run_id"]).attempt_keys(bad["id"])
    assert [a.outcome for a in attempts] == ["lost"] * 3
    starts = [a.started_us / 1e6 for a in attempts]
    assert starts[-1] - starts[0] < 60  # each came back at once, not after its lease
    # What the task wrote before its worker died is kept, each time.
    logs = ds("logs", bad["id"], cwd=proj)
    assert logs.returncode == 0, logs.stderr
    assert "working on bad" in logs.stdout and "[ds] the log ends here: its worker" in logs.stdout


def test_ds_cleanup_beside_a_running_ds_run_ends_it(tmp_path: Path, ds: Ds) -> None:
    """`ds cleanup` in another terminal ends the run `ds run` watches: the monitor stops at
    its next tick instead of sending the handed-back tasks again and starting workers anew
    (it used to run the whole job to its end, the cleanup undone)."""
    names = [f"c{i}" for i in range(12)]
    proj = work_project(tmp_path, names, 1.0)
    script = Path(sys.executable).parent / "ds"
    run = subprocess.Popen(
        [str(script), "run", "--json", "--interval", "0.2"],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: len(ledger(tmp_path)) >= 2), "the workers should be busy"
        assert ds_script("cleanup", cwd=proj).returncode == 0
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert "was ended by another command" in err
    report = json.loads(out)
    started = len(ledger(tmp_path))
    assert report["counts"]["done"] + report["counts"]["pending"] == 12
    assert report["counts"]["pending"] > 0 and started < 12
    status = json.loads(ds("status", "--json", cwd=proj).stdout)
    assert status["active"] is False and status["counts"] == report["counts"]
    time.sleep(1.5)  # no worker was started again after the cleanup
    assert len(ledger(tmp_path)) == started


def test_poison_task_is_dead_lettered_with_its_error_then_redriven(tmp_path: Path, ds: Ds) -> None:
    proj = work_project(tmp_path, ["good1", "poison", "good2"], 0.0, queue={"job_retries": 2})
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a run with dead tasks fails
    rep = report_of(result)
    assert rep["counts"]["done"] == 2 and rep["counts"]["dead"] == 1
    (dead,) = [t for t in rep["tasks"] if t["outcome"] == "dead"]
    assert dead["group"] == {"name": "poison"} and "code 7" in dead["error"]

    listed = json.loads(ds("dead", "list", "--json", cwd=proj).stdout)
    assert [d["task_id"] for d in listed] == [dead["id"]]
    shown = json.loads(ds("dead", "show", dead["id"][:8], "--json", cwd=proj).stdout)
    assert "poisoned input poison" in shown["failures"][-1]["log_tail"]
    logs = ds("logs", dead["id"][:8], cwd=proj)
    assert logs.returncode == 0 and "poisoned input" in logs.stdout

    (tmp_path / "ledger.txt.cured").write_text("fixed")  # the user fixes the cause
    unknown = ds("dead", "redrive", "name=good1", cwd=proj)  # done, not dead: nothing sent
    assert unknown.returncode == 2 and "no dead task" in unknown.stderr
    redrive = ds("dead", "redrive", "name=poison", cwd=proj)  # by its group's value
    assert redrive.returncode == 0, redrive.stderr
    status = json.loads(ds("status", "--json", cwd=proj).stdout)
    # Exactly the one task, once, pending in the new run that continues the finished one.
    assert status["counts"]["pending"] == 1 and status["counts"]["dead"] == 0
    assert status["counts"]["total"] == 1 and status["queue"]["queued"] == 1
    assert "1 task(s) back" in redrive.stderr
    assert ds("start-cluster", cwd=proj).returncode == 0
    final = ds("monitor", "--json", "--interval", "0.2", cwd=proj)
    assert final.returncode == 0, final.stderr
    rep = report_of(final)
    # The finished run's redriven task went to a new run, which did just that task.
    assert rep["counts"]["done"] == 1 and rep["counts"]["dead"] == 0
    assert [t["group"] for t in rep["tasks"]] == [{"name": "poison"}]
    assert outputs(proj)["poison"] == "result of poison"


def test_two_ds_runs_of_one_project_run_each_task_once(tmp_path: Path, ds: Ds) -> None:
    """`ds run` typed again in a second terminal while the first runs: the second resumes
    the same run (no task sent or run twice); when one monitor sees the run finish and
    ends it, the other says the run was finished by another command, not cleaned up."""
    names = [f"d{i}" for i in range(6)]
    proj = work_project(tmp_path, names, 0.5)
    first = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", "run", "--json", "--interval", "0.2"],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: len(ledger(tmp_path)) >= 1), "the first run should be busy"
        # Its monitor's next tick comes after the first has seen the run finish.
        second = ds("run", "--json", "--interval", "3", cwd=proj)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    assert "resuming run" in second.stderr
    assert sorted(ledger(tmp_path)) == names  # each task ran once
    for report in (json.loads(out), report_of(second)):
        assert report["counts"]["done"] == 6 and report["counts"]["total"] == 6
    assert "finished by another `ds run` or `ds monitor`" in second.stderr
    assert "`ds cleanup`" not in err + second.stderr


def test_groups_added_to_the_job_file_before_ds_run_resumes_are_run(tmp_path: Path, ds: Ds) -> None:
    """Interrupted, the user adds groups to job.json and types `ds run` again: the resumed
    run sends exactly the added ones (it used to end "complete" without them)."""
    names = [f"g{i}" for i in range(4)]
    proj = work_project(tmp_path, names, 1.0)
    run = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", "run", "--interval", "0.2"],
        cwd=proj,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: len(ledger(tmp_path)) >= 1), "the run should be busy"
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)
    assert run.returncode == 130
    # Two groups added, one removed (it was sent: it still runs, and the resume says so).
    more = [*names[:3], "h1", "h2"]
    (proj / "job.json").write_text(json.dumps({"groups": [{"name": n} for n in more]}))
    again = ds("run", "--json", "--interval", "0.2", cwd=proj)
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stderr.split())
    assert "resuming run" in said and "2 group(s) the run did not have: sent 2" in said
    assert "1 task(s) of this run are no longer in job.json" in said
    report = report_of(again)
    assert report["counts"]["done"] == 6 and report["counts"]["total"] == 6
    assert set(ledger(tmp_path)) == {*names, "h1", "h2"}
    assert ledger(tmp_path).count("h1") == 1 and ledger(tmp_path).count("h2") == 1


def test_ds_run_again_after_a_redrive_runs_exactly_the_redriven_tasks(
    tmp_path: Path, ds: Ds
) -> None:
    """A `ds run` user fixes the cause, redrives and types `ds run` again: the new run that
    continues the finished one is resumed (it is the run of the same job file), and only
    the redriven task runs."""
    proj = work_project(tmp_path, ["good", "poison"], 0.0, queue={"job_retries": 1})
    first = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert first.returncode == 1 and report_of(first)["counts"]["dead"] == 1
    (tmp_path / "ledger.txt.cured").write_text("fixed")
    redrive = ds("dead", "redrive", cwd=proj)
    assert redrive.returncode == 0 and "`ds run` again" in redrive.stderr, redrive.stderr
    again = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming run" in again.stderr
    assert "the run did not have" not in again.stderr  # it continues the first run's file
    rep = report_of(again)
    assert rep["run_id"] != report_of(first)["run_id"]
    assert rep["counts"]["done"] == 1 and rep["counts"]["total"] == 1
    assert sorted(ledger(tmp_path)) == ["good", "poison", "poison"]  # the redriven one again
    assert outputs(proj)["poison"] == "result of poison"
    runs = json.loads(ds("runs", "--json", cwd=proj).stdout)
    assert [r["job_files"] for r in runs] == [[str(proj / "job.json")]] * 2


def test_task_longer_than_the_visibility_timeout_runs_once(tmp_path: Path, ds: Ds) -> None:
    proj = work_project(tmp_path, ["slow"], 4.0, queue={"visibility": 1})
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert report_of(result)["counts"]["done"] == 1
    assert ledger(tmp_path) == ["slow"]


def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path: Path, ds: Ds) -> None:
    proj = work_project(tmp_path, ["a"], 0.0)
    (proj / "job.json").write_text('{"groups": [{"nam": "a"}]}')
    result = ds("run", str(proj), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "job.json" in lines[0] and "name" in lines[0]
    assert not (proj / ".ds").exists()

    (proj / "ds.toml").write_text('app_name = "T"\n[queue]\nvisibility = "soon"\n')
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2 and "queue.visibility" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (proj / ".ds").exists()


def test_run_and_submit_make_validates_checks_before_anything_is_created(
    tmp_path: Path, ds: Ds
) -> None:
    """`ds run` and `ds submit` check what `ds validate` checks (the program is installed,
    the inputs are in storage): a command that is not installed is one error naming the
    fix, not a run whose every task dies of it."""
    proj = write_project(
        tmp_path / "p", argv=["no-such-program-here", "{name}"], groups=[{"name": "a"}]
    )
    result = ds("run", str(proj), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'no-such-program-here' is not on PATH" in result.stderr
    assert not (proj / ".ds").exists()  # nothing set up, nothing sent

    proj = write_project(
        tmp_path / "q",
        argv=[sys.executable, "-c", "pass"],
        groups=[{"name": "a"}, {"name": "b"}],
        inputs=["images/{name}.tif"],
    )
    assert ds("setup", cwd=proj).returncode == 0
    images = proj / ".ds" / "T" / "buckets" / "default" / "images"
    images.mkdir(parents=True)
    (images / "a.tif").write_bytes(b"x")  # b's is missing
    result = ds("submit", "job.json", cwd=proj)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'images/b.tif'" in result.stderr and "is not in storage" in result.stderr
    status = json.loads(ds("status", "--json", cwd=proj).stdout)
    assert status["counts"]["total"] == 0  # nothing was sent
    (images / "b.tif").write_bytes(b"x")
    assert ds("submit", "job.json", cwd=proj).returncode == 0


def test_python_dash_m_and_help(tmp_path: Path, ds: Ds) -> None:
    result = ds("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "submit", "start-cluster", "monitor", "dead", "worker", "validate"):
        assert command in result.stdout


def test_worker_runs_several_processes_like_docker_cores(tmp_path: Path, ds: Ds) -> None:
    names = [f"p{i}" for i in range(4)]
    proj = work_project(tmp_path, names, 0.5)
    assert ds("setup", cwd=proj).returncode == 0
    assert ds("submit", "job.json", cwd=proj).returncode == 0
    result = ds("worker", "--processes", "2", "--name", "box", cwd=proj)
    assert result.returncode == 0, result.stderr
    bucket = local_bucket(proj)
    markers = [o.key for o in bucket.list("_ds/T/done/")]
    workers = {json.loads(bucket.get_bytes(key))["worker"] for key in markers}
    assert workers == {"box-0", "box-1"}
    assert sorted(ledger(tmp_path)) == names


def test_logs_of_a_quiet_success_say_why_there_are_none(tmp_path: Path, ds: Ds) -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.argv[1] == 'loud' and print('said', sys.argv[1])",
        "{name}",
    ]
    proj = write_project(tmp_path / "p", argv=argv, groups=[{"name": "quiet"}, {"name": "loud"}])
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = {t["group"]["name"]: t["id"] for t in report_of(result)["tasks"]}
    loud = ds("logs", ids["loud"][:10], cwd=proj)
    assert loud.returncode == 0 and "said loud" in loud.stdout
    quiet = ds("logs", ids["quiet"][:10], cwd=proj)
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert "finished and printed nothing" in quiet.stderr
    unknown = ds("logs", "ffffffffffff", cwd=proj)
    assert unknown.returncode == 2 and "no task id starting with" in unknown.stderr
