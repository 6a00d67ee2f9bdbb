"""Truthful accounting of further command sequences, tried as users do through the real `ds`:
the task command appends one line per execution to an oracle file, and what `ds status`,
`ds report` (JSON and TSV) and `ds dead list` say is compared with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project

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


def test_a_task_redriven_in_its_active_run_that_then_succeeds_counts_every_attempt(
    tmp_path: Path, ds: Ds
) -> None:
    # "flaky" fails twice (dead with job_retries = 2), is redriven into the same run, then
    # succeeds: three executions in one run, and the report says three, as the ledger does.
    proj = project(
        tmp_path,
        [{"name": "flaky", "fails": 2}, {"name": "fine", "fails": 0}],
        queue={"job_retries": 2},
    )
    ok(ds("setup", cwd=proj))
    ok(ds("submit", "job.json", cwd=proj))
    ok(ds("start-cluster", cwd=proj))
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
