"""Truthful accounting, tried as users do: their command sequences through the real `ds`,
with a ledger the tasks write themselves as the oracle of what really ran.

One test per observation of the issue: cleanup then submit, double submit, dead letters and
redrive, corrupt records, history across runs, and a queue emptied behind the monitor's back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from testkit import local_bucket

pytestmark = pytest.mark.slow

Ds = Callable[..., subprocess.CompletedProcess[str]]

# Appends "start <name> <t>" and "end <name> <t>" to the oracle: what really ran, and when.
TASK_SCRIPT = """
import sys, time
name, oracle, out = sys.argv[1:4]
open(oracle, "a").write("start %s %f\\n" % (name, time.time()))
time.sleep(0.2)
if name.startswith("poison"):
    sys.exit(7)
open(out + "/r.txt", "w").write(name)
open(oracle, "a").write("end %s %f\\n" % (name, time.time()))
"""


def project(tmp_path: Path, names: list[str], **extra: Any) -> Path:
    oracle = tmp_path / "oracle.txt"
    script = tmp_path / "task.py"
    script.write_text(TASK_SCRIPT)
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), "{name}", "{oracle}", "{output_dir}"],
        groups=[{"name": n, "oracle": str(oracle)} for n in names],
        extra=extra,
    )
    return proj


def set_job(proj: Path, names: list[str]) -> None:
    oracle = proj.parent / "oracle.txt"
    groups = [{"name": n, "oracle": str(oracle)} for n in names]
    (proj / "job.json").write_text(json.dumps({"groups": groups}))


def runs_of(tmp_path: Path) -> dict[str, list[tuple[float, float]]]:
    """name → (start, end) of every completed execution, from the oracle."""
    started: dict[str, list[float]] = {}
    done: dict[str, list[tuple[float, float]]] = {}
    oracle = tmp_path / "oracle.txt"
    lines = oracle.read_text().splitlines() if oracle.exists() else []
    for line in lines:
        kind, name, at = line.split()
        if kind == "start":
            started.setdefault(name, []).append(float(at))
        else:
            done.setdefault(name, []).append((started[name].pop(0), float(at)))
    return done


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def js(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def same_counts(ds: Ds, proj: Path, report: dict[str, Any]) -> dict[str, int]:
    """`ds status --json` gives the report's counts, under the same names."""
    status = js(ok(ds("status", "--json", cwd=proj)))
    counts: dict[str, int] = status["counts"]
    assert {k: report["counts"][k] for k in counts} == counts
    return counts


def test_cleanup_then_submit_refuses_then_a_new_run_does_exactly_the_new_tasks(
    tmp_path: Path, ds: Ds
) -> None:
    proj = project(tmp_path, ["a", "b", "c"])
    ok(ds("run", ".", "--interval", "0.2", cwd=proj))
    ok(ds("cleanup", cwd=proj))
    set_job(proj, ["a", "b", "c", "d", "e", "f"])
    refused = ds("submit", "job.json", cwd=proj)
    assert refused.returncode == 2 and "ds setup" in refused.stderr
    assert "Traceback" not in refused.stderr
    status = js(ok(ds("status", "--json", cwd=proj)))
    assert status["counts"]["total"] == 3 and status["counts"]["done"] == 3  # unchanged

    ok(ds("setup", cwd=proj))
    submitted = ok(ds("submit", "job.json", cwd=proj))
    assert "submitted 3 tasks" in submitted.stderr and "3 already done" in submitted.stderr
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    counts = same_counts(ds, proj, report)
    assert counts["total"] == 6 and counts["done"] == 3 and counts["skipped"] == 3
    assert {n: len(r) for n, r in runs_of(tmp_path).items()} == dict.fromkeys("abcdef", 1)


def test_double_submit_sends_each_task_once_and_forced_copies_never_run_at_once(
    tmp_path: Path, ds: Ds
) -> None:
    names = [f"t{i:02d}" for i in range(12)]
    proj = project(tmp_path, names, local={"workers": 4, "poll_interval": 0.05})
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    again = js(ok(ds("submit", "job.json", "--json", cwd=proj)))
    assert again["sent"] == 0 and again["left_out"] == 12
    assert js(ok(ds("status", "--json", cwd=proj)))["counts"]["total"] == 12
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    counts = same_counts(ds, proj, report)
    assert counts["total"] == 12 and counts["done"] == 12 and counts["duplicates"] == 0
    assert {n: len(r) for n, r in runs_of(tmp_path).items()} == dict.fromkeys(names, 1)

    # --force sends every task twice: SQS-style duplicates. They must never run at once.
    (tmp_path / "oracle.txt").unlink()
    names = [f"u{i:02d}" for i in range(12)]
    set_job(proj, names)
    ok(ds("setup", cwd=proj))
    for _ in range(2):
        assert js(ok(ds("submit", "job.json", "--json", "--force", cwd=proj)))["sent"] == 12
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    counts = same_counts(ds, proj, report)
    assert counts["total"] == 12 and counts["done"] == 12
    assert set(runs_of(tmp_path)) == set(names)
    for name, spans in runs_of(tmp_path).items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"{name} ran twice at the same time: {spans}"


def test_dead_tasks_are_listed_once_and_redrive_moves_exactly_them_without_prepare(
    tmp_path: Path, ds: Ds
) -> None:
    prepared = tmp_path / "prepared.txt"
    prepare = [sys.executable, "-c", f"open({str(prepared)!r}, 'a').write('x')"]
    proj = project(
        tmp_path,
        ["good", "poison1", "poison2"],
        queue={"job_retries": 1},
        local={"prepare": prepare, "poll_interval": 0.05},
    )
    first = ds("run", ".", "--json", "--interval", "0.2", cwd=proj)
    assert first.returncode == 1 and js(first)["counts"]["dead"] == 2
    second = ds("run", ".", "--json", "--interval", "0.2", cwd=proj)  # a rerun: dead again
    assert second.returncode == 1 and js(second)["counts"]["dead"] == 2
    assert js(second)["counts"]["skipped"] == 1
    assert prepared.read_text() == "xx"  # once per run
    dead = js(ok(ds("dead", "list", "--json", cwd=proj)))
    assert sorted(d["group"]["name"] for d in dead) == ["poison1", "poison2"]  # one row each
    assert all("code 7" in d["error"] for d in dead)
    target = next(d for d in dead if d["group"]["name"] == "poison1")
    moved = ok(ds("dead", "redrive", target["task_id"][:10], cwd=proj))
    assert "1 task(s) back on the queue" in moved.stderr
    status = js(ok(ds("status", "--json", cwd=proj)))
    assert status["counts"]["total"] == 1 and status["counts"]["pending"] == 1
    ok(ds("start-cluster", cwd=proj))
    final = ds("monitor", "--json", "--interval", "0.2", cwd=proj)
    assert final.returncode == 1  # poison1 died again
    counts = same_counts(ds, proj, js(final))
    assert counts["total"] == 1 and counts["dead"] == 1
    assert prepared.read_text() == "xx"  # the redrive prepared nothing again
    runs = js(ok(ds("runs", "--json", cwd=proj)))
    assert len(runs) == 3 and [r["counts"]["total"] for r in runs] == [3, 3, 1]


def test_a_corrupt_done_marker_is_listed_not_a_traceback_and_the_task_reruns(
    tmp_path: Path, ds: Ds
) -> None:
    proj = project(tmp_path, ["a", "b"])
    first = js(ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj)))
    storage = local_bucket(proj)
    markers = [o.key for o in storage.list("_ds/T/done/")]
    assert len(markers) == 2
    storage.put_bytes(markers[0], b"{not json")
    report = ds("report", "--json", cwd=proj)
    assert "Traceback" not in report.stderr and report.returncode == 0, report.stderr
    assert "delete this object" in report.stderr and "DELETE FROM objects" in report.stderr
    assert list(js(report)["corrupt"]) == [markers[0]]
    assert js(report)["counts"] == first["counts"]
    html = (proj / ".ds" / "T" / "report.html").read_text()
    name = markers[0].rsplit("/", 1)[1]
    assert "Records that could not be read" in html and name in html
    # The repair the message gives, as a user types it (Python's sqlite3: no CLI needed).
    records = proj / ".ds" / "T" / "records" / "default.sqlite"
    with contextlib.closing(sqlite3.connect(records)) as db, db:
        db.execute("DELETE FROM objects WHERE key = ?", (markers[0],))
    rerun = js(ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj)))
    assert rerun["counts"]["done"] == 1 and rerun["counts"]["skipped"] == 1
    assert rerun["corrupt"] == {}
    json.loads(storage.get_bytes(markers[0]))  # written again by the task's new run


def test_history_every_run_is_listed_and_logs_are_found_in_earlier_runs(
    tmp_path: Path, ds: Ds
) -> None:
    proj = project(tmp_path, ["a"])
    argv = [sys.executable, "-c", "import sys; print('hello', sys.argv[1])", "{name}"]
    proj = write_project(tmp_path / "h", argv=argv, groups=[{"name": "a"}])
    first = js(ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj)))
    second = js(ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj)))
    assert second["counts"]["skipped"] == 1
    task = first["tasks"][0]["id"]
    logs = ok(ds("logs", task[:8], cwd=proj))
    assert "hello a" in logs.stdout and first["run_id"] in logs.stderr
    runs = js(ok(ds("runs", "--json", cwd=proj)))
    assert [r["run_id"] for r in runs] == [first["run_id"], second["run_id"]]
    old = js(ok(ds("status", "--json", "--run", first["run_id"], cwd=proj)))
    assert old["run_id"] == first["run_id"] and old["counts"]["done"] == 1
    # A prefix names a run: one the second run's id does not share (two runs started in
    # the same second share 16 characters, and the random part's first 1 time in 16).
    size = next(n for n in range(17, 40) if not second["run_id"].startswith(first["run_id"][:n]))
    old_report = ds("report", "--json", "--run", first["run_id"][:size], cwd=proj)
    assert js(ok(old_report))["counts"]["done"] == 1
    unknown = ds("status", "--run", "nope", cwd=proj)
    assert unknown.returncode == 2 and "ds runs" in unknown.stderr


def test_logs_name_a_task_by_its_groups_values(tmp_path: Path, ds: Ds) -> None:
    """Scientists know their groups, not task ids: `ds logs name=b` (and a DCP job's
    `Metadata_Well=A01`, parsed from its Metadata) names the one task whose group has
    those values; values naming none or several are one error saying so."""
    argv = [sys.executable, "-c", "import sys; print('hello', sys.argv[1])", "{name}"]
    groups = [{"name": "a", "plate": "P1"}, {"name": "b", "plate": "P1"}]
    proj = write_project(tmp_path / "g", argv=argv, groups=groups)
    ok(ds("run", ".", "--json", "--interval", "0.2", cwd=proj))
    logs = ok(ds("logs", "name=b", cwd=proj))
    assert "hello b" in logs.stdout and "hello a" not in logs.stdout
    assert "hello a" in ok(ds("logs", "plate=P1,name=a", cwd=proj)).stdout
    several = ds("logs", "plate=P1", cwd=proj)
    assert several.returncode == 2 and "names 2 tasks" in several.stderr
    assert "Traceback" not in several.stderr
    none = ds("logs", "name=zzz", cwd=proj)
    assert none.returncode == 2 and "no task's group has 'name=zzz'" in none.stderr
    bad = ds("logs", "name=a,oops", cwd=proj)
    assert bad.returncode == 2 and "'oops' is not key=value" in bad.stderr
    # A bare value is not an id (ids are hex: "P1" starts none): the error says which
    # key=value would name it.
    bare = ds("logs", "P1", cwd=proj)
    assert bare.returncode == 2 and "`ds logs plate=P1`" in bare.stderr


def test_a_dcp_groups_metadata_values_name_it() -> None:
    from distributed_something.usecases.run_info import _group_values

    group = {"Metadata": "Metadata_Plate=BR1,Metadata_Well=A01,Metadata_Site=1"}
    values = _group_values(group)
    assert values["Metadata_Well"] == "A01" and values["Metadata_Site"] == "1"
    assert _group_values({"Metadata": "not pairs"}) == {"Metadata": "not pairs"}
    assert _group_values({"n": 3}) == {"n": "3"} and _group_values("x") == {}


def test_tasks_that_left_the_queue_unseen_are_sent_again_not_counted_done(
    tmp_path: Path, ds: Ds
) -> None:
    proj = project(tmp_path, ["a", "b", "c"])
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    purge = (
        "from distributed_something.usecases.project import open_project\n"
        "from distributed_something.backends import open_backend\n"
        "open_backend(open_project()).queue.purge()\n"
    )
    subprocess.run([sys.executable, "-c", purge], cwd=proj, check=True)
    ok(ds("start-cluster", cwd=proj))
    report = js(ok(ds("monitor", "--json", "--interval", "0.2", cwd=proj)))
    counts = same_counts(ds, proj, report)
    assert counts["done"] == 3 and counts["total"] == 3
    assert {n: len(r) for n, r in runs_of(tmp_path).items()} == dict.fromkeys("abc", 1)


def test_on_moto_double_submit_cleanup_and_resubmit_keep_status_and_report_equal(
    aws: str, tmp_path: Path, ds: Ds
) -> None:
    """The same rules on SQS and S3 (moto): a second submit leaves the live tasks out, the
    workers (the registered task definition's environment) do each task once, status equals
    the report, and after cleanup a submit is refused until a new run is set up."""
    from aws_agent import start_tasks
    from moto_projects import aws_client, make_e2e_project, wait_all

    proj = make_e2e_project(tmp_path, ["a", "b", "c"])
    ok(ds("setup", cwd=proj))
    ok(ds("submitJob", "files/job.json", cwd=proj))
    again = js(ok(ds("submit", "files/job.json", "--json", cwd=proj)))
    assert again["sent"] == 0 and again["left_out"] == 3
    ok(ds("startCluster", "files/fleet.json", cwd=proj))
    ecs = aws_client("ecs")
    wait_all(start_tasks(ecs, "E2ECluster", "E2EService", aws, tmp_path / "agent"))
    assert sorted((tmp_path / "ledger.txt").read_text().split()) == ["a", "b", "c"]
    monitor = ("monitor", "files/E2ESpotFleetRequestId.json", "--interval", "1", "--json")
    report = js(ok(ds(*monitor, cwd=proj)))
    counts = same_counts(ds, proj, report)
    assert counts["done"] == 3 and counts["total"] == 3 and counts["duplicates"] == 0

    refused = ds("submitJob", "files/job.json", cwd=proj)  # the queue is gone
    assert refused.returncode == 2 and "ds setup" in refused.stderr
    ok(ds("setup", cwd=proj))
    resubmitted = js(ok(ds("submit", "files/job.json", "--json", cwd=proj)))
    assert resubmitted["sent"] == 0 and resubmitted["skipped"] == 3
    status = js(ok(ds("status", "--json", cwd=proj)))
    assert status["counts"]["skipped"] == 3 and status["counts"]["total"] == 3
    ok(ds("cleanup", cwd=proj))
    assert len(js(ok(ds("runs", "--json", cwd=proj)))) == 2


class Stopped(Exception):
    """Ends a monitor loop driven by a test."""


class Watched:
    """A run of two tasks set up and submitted in this process, whose two messages vanished
    with no record written; its backend's compute notes what the monitor asks of it."""

    def __init__(self, tmp_path: Path) -> None:
        from dataclasses import replace

        from distributed_something.backends import open_backend
        from distributed_something.state import require_state
        from distributed_something.usecases import lifecycle
        from distributed_something.usecases.project import open_project
        from testkit import NoCompute

        folder = write_project(
            tmp_path / "p", argv=["true"], groups=[{"name": "a"}, {"name": "b"}], app_name="W"
        )
        self.project = open_project(folder / "ds.toml")
        lifecycle.setup(self.project)
        lifecycle.submit(self.project, folder / "job.json", show_progress=False)
        self.acted: list[str] = []
        acted = self.acted

        class Noting(NoCompute):
            def scale(self, n: int) -> None:
                acted.append(f"scale {n}")

            def stop(self) -> None:
                acted.append("stop")

        self.backend = replace(open_backend(self.project), compute=Noting())
        for message in self.backend.queue.receive(10, 30):  # gone, no record written
            self.backend.queue.delete(message)
        self.state = require_state(self.project, self.backend.storage)

    def watch(self, **options: Any) -> Any:
        """`monitor.loop.watch` of this run, ticking every second, no display."""
        from distributed_something.monitor import loop

        return loop.watch(
            self.project.config,
            self.backend,
            self.state,
            interval=1,
            confirm_seconds=0,
            **{"show_progress": False, **options},
        )


def test_the_monitor_tears_down_only_on_a_whole_reading_of_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary that says every task is done while the records do not (a bug, a record lost)
    must not end the run: the monitor reads every record before tearing down, and the tasks
    that left the queue without an outcome are sent again."""
    from distributed_something.monitor import loop

    run = Watched(tmp_path)
    wrong = {"total": 2, "done": 2, "skipped": 0, "running": 0, "failed": 0, "pending": 0}
    wrong |= {"dead": 0, "duplicates": 0}
    monkeypatch.setattr(loop, "read_counts", lambda records, compact=False: (wrong, {}))
    ticks = iter(range(1000))

    def sleep(_seconds: float) -> None:
        if next(ticks) >= 4:
            raise Stopped

    with pytest.raises(Stopped):
        run.watch(clock=lambda: 1_000_000.0 + next(ticks), sleep=sleep)
    assert "stop" not in run.acted  # never torn down
    assert run.backend.queue.counts().visible == 2  # both sent again


def test_a_monitor_whose_run_was_cleaned_up_elsewhere_stops_and_acts_no_more(
    tmp_path: Path,
) -> None:
    """`ds cleanup` run beside a monitor: at its next tick the monitor sees the run ended
    (``still_active``) and returns without sending any task again or starting a worker."""
    run = Watched(tmp_path)
    asked: list[int] = []

    def still_active() -> bool:
        asked.append(1)
        return False  # ended by `ds cleanup` since the monitor started

    def sleep(_seconds: float) -> None:
        raise Stopped  # a tick that acted and then waited: the check came too late

    progress = run.watch(sleep=sleep, still_active=still_active)
    assert len(asked) == 1 and progress.pending == 2
    assert run.backend.queue.counts().visible == 0  # nothing sent again
    assert run.acted == []  # no worker started or stopped


def test_a_monitor_whose_run_another_finished_shows_the_final_counts_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `ds run` beside the first: the first finishes the run between two ticks of
    the second, whose progress line must end on the counts it then reports (2/2), not on
    its last tick's (0/2) right under the table that says 2 done."""
    from distributed_something.monitor import loop

    run = Watched(tmp_path)
    pending = {"total": 2, "done": 0, "skipped": 0, "running": 0, "failed": 0, "pending": 2}
    pending |= {"dead": 0, "duplicates": 0}
    done = {**pending, "done": 2, "pending": 0}
    readings = iter([pending])
    monkeypatch.setattr(
        loop, "read_counts", lambda records, compact=False: (next(readings, done), {})
    )
    active = iter([True])
    progress = run.watch(
        sleep=lambda _seconds: None,
        still_active=lambda: next(active, False),
        show_progress=True,
    )
    assert progress.finished == progress.total == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("W:")]
    assert lines and "2/2" in lines[-1], lines


def test_the_monitor_says_why_workers_are_not_started_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend's reason for missing workers (ECS: "unable to place a task") is said when it
    appears and again only when it changes, not at every tick."""
    from dataclasses import replace

    from distributed_something.backends import open_backend
    from distributed_something.interfaces.compute import ComputeStatus
    from distributed_something.monitor import loop
    from distributed_something.state import require_state
    from distributed_something.usecases import lifecycle
    from distributed_something.usecases.project import open_project
    from testkit import NoCompute

    folder = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "a"}], app_name="U")
    project = open_project(folder / "ds.toml")
    lifecycle.setup(project)
    lifecycle.submit(project, folder / "job.json", show_progress=False)
    reasons = iter(["", "no room: memory", "no room: memory", "no room: cpu", "", "no room: cpu"])

    class Unplaced(NoCompute):
        def status(self) -> ComputeStatus:
            return ComputeStatus(1, 0, next(reasons, ""))

    backend = replace(open_backend(project), compute=Unplaced())
    said: list[str] = []
    monkeypatch.setattr(loop, "info", said.append)
    ticks = iter(range(6))

    def sleep(_seconds: float) -> None:
        if next(ticks) >= 5:
            raise Stopped

    with pytest.raises(Stopped):
        loop.watch(
            project.config,
            backend,
            require_state(project, backend.storage),
            interval=1,
            confirm_seconds=0,
            show_progress=False,
            sleep=sleep,
        )
    waiting = [line for line in said if "workers not started" in line]
    assert [line.rsplit(" ", 1)[-1] for line in waiting] == ["memory", "cpu", "cpu"]
