"""A task whose worker dies on every attempt ends dead with cause ``lost``, its lost attempts
as its history (docs/configuration.md, queue.retry).

Its worker died each time, so no failure record exists: `ds dead list`, `ds dead show` and
`ds report` took the cause and history from failure records only and showed none.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from conftest import write_project
from distributed_something.records import Attempt
from distributed_something.report.build import attempt_cause

Ds = Callable[..., CompletedProcess[str]]

#: Kills its worker (the command's parent) on group "k", after a moment; else succeeds.
KILLER = 'sleep 0.2; if [ "$1" = k ]; then kill -9 $PPID; sleep 2; fi'


def test_a_task_that_kills_its_worker_every_time_is_dead_with_cause_lost(
    tmp_path: Path, ds: Ds
) -> None:
    proj = write_project(
        tmp_path / "p",
        argv=["/bin/sh", "-c", KILLER, "sh", "{name}"],
        groups=[{"name": "ok"}, {"name": "k"}],
        extra={"queue": {"job_retries": 2}},
    )
    run = ds("run", "--json", "--interval", "0.2", cwd=proj, timeout=120)
    assert run.returncode == 1, run.stderr
    (dead,) = [t for t in json.loads(run.stdout)["tasks"] if t["outcome"] == "dead"]
    assert dead["group"] == {"name": "k"} and dead["attempts"] == 2
    assert dead["cause"] == "lost"
    assert "died before recording the task's end" in dead["error"]

    report = json.loads(ds("report", "--json", cwd=proj).stdout)
    (again,) = [t for t in report["tasks"] if t["outcome"] == "dead"]
    assert again["cause"] == "lost"
    # The TSV and HTML tables' cause column.
    rows = list(csv.DictReader((proj / ".ds" / "T" / "report.tsv").open(), delimiter="\t"))
    assert [r["cause"] for r in rows if r["outcome"] == "dead"] == ["lost"]
    assert "<td>lost</td>" in (proj / ".ds" / "T" / "report.html").read_text()

    (entry,) = json.loads(ds("dead", "list", "--json", cwd=proj).stdout)
    assert entry["task_id"] == dead["id"] and entry["cause"] == "lost"
    history: list[dict[str, Any]] = entry["history"]
    assert [h["attempt"] for h in history] == [1, 2]
    assert [h["cause"] for h in history] == ["lost", "lost"]
    assert all("died before recording the task's end" in h["error"] for h in history)
    assert all(h["exit_code"] is None and h["first_error"] for h in history)
    assert history[0]["at"] <= history[1]["at"]
    listed = ds("dead", "list", cwd=proj).stderr
    row = next(line for line in listed.splitlines() if dead["id"][:12] in line)
    assert "lost" in row

    shown = json.loads(ds("dead", "show", dead["id"][:8], "--json", cwd=proj).stdout)
    assert shown["cause"] == "lost" and len(shown["history"]) == 2
    assert [f["cause"] for f in shown["failures"]] == ["lost", "lost"]
    text = ds("dead", "show", dead["id"][:8], cwd=proj).stdout
    assert "cause   lost" in text
    assert "#1 " in text and "#2 " in text and "cause lost" in text


def test_attempt_cause_is_the_recorded_one_else_lost_for_a_lost_attempt() -> None:
    def attempt(outcome: str, cause: str) -> Attempt:
        return Attempt("t", 1, "m", "w", 1.0, 2.0, outcome, None, "gone", cause)

    assert attempt_cause(attempt("lost", "lost")) == "lost"
    assert attempt_cause(attempt("lost", "")) == "lost"  # closed before causes were kept
    assert attempt_cause(attempt("released", "interrupted")) == "interrupted"
    assert attempt_cause(attempt("failed", "")) is None
