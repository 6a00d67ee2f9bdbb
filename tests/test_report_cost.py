"""Estimated cost and the timeline from a run's attempt records (report/cost.py, trace.py).

Attempt records are written through `RunRecords` into a folder storage, as workers write
them; the report reads them back: each finished attempt priced at the machine price × its
wall time ÷ the task slots of a machine, per task and per run; no price, no cost.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import Config
from distributed_something.errors import BackendError
from distributed_something.interfaces.backend import Backend
from distributed_something.records import Attempt, Machine, ManifestEntry, RunRecords
from distributed_something.report.build import RunReport, TaskReport, tally
from distributed_something.report.context import ReportContext, report_context
from distributed_something.report.cost import Pricing, SpotHistory, pricing_for, with_spot_prices
from distributed_something.report.trace import attach_attempts, write_trace
from distributed_something.state import RunState
from distributed_something.usecases.pricing import priced_report_context, run_pricing
from testkit import NoCompute, NoProvisioner

T0 = 1_700_000_000.0


def aws_config(**cluster: int) -> Config:
    return Config.model_validate(
        {
            "app_name": "Priced",
            "backend": "aws",
            "aws": {"machine_price": 0.36},
            "cluster": {"tasks_per_machine": 2, "docker_cores": 3, **cluster},
        }
    )


def test_pricing_is_the_machine_price_shared_by_task_slots() -> None:
    pricing = pricing_for(aws_config(), "aws")
    assert pricing is not None
    assert pricing.slots == 6  # 2 containers × 3 worker processes
    # An hour of one slot costs a sixth of the machine-hour.
    assert pricing.attempt_cost(3600) == pytest.approx(0.06)
    assert pricing.attempt_cost(-5) == 0
    assert "aws.machine_price $0.36/h" in pricing.basis and "upper bound" in pricing.basis
    assert pricing_for(aws_config(), "local") is None
    assert pricing_for(aws_config(), "slurm") is None


def records_with_attempts(tmp_path: Path) -> RunRecords:
    records = RunRecords(FolderStorage(tmp_path / "bucket"), "Priced", "run-1")
    records.write_manifest("part-0", [ManifestEntry("a", {"g": 1}), ManifestEntry("b", {"g": 2})])
    plan = [  # task, attempt, worker, start, end (None: still open), outcome
        ("a", 1, "w1", 0.0, 600.0, "failed"),
        ("a", 2, "w2", 700.0, 1900.0, "done"),
        ("b", 1, "w1", 650.0, 2450.0, "done"),
        ("b", 2, "w2", 2500.0, None, "running"),
    ]
    for task, number, worker, start, end, outcome in plan:
        attempt = Attempt(task, number, f"m-{task}-{number}", worker, T0 + start)
        records.open_attempt(attempt)
        if end is not None:
            attempt.outcome, attempt.ended_at = outcome, T0 + end
            records.close_attempt(attempt)
    return records


def report_for(tasks: list[TaskReport], backend: str = "aws") -> RunReport:
    counts, stats = tally(tasks)
    return RunReport("Priced", "run-1", backend, T0, T0 + 3000, counts, tasks, stats)


def test_run_and_task_costs_add_up_the_priced_attempts(tmp_path: Path) -> None:
    records = records_with_attempts(tmp_path)
    pricing = Pricing(usd_per_hour=0.36, slots=6, basis="test")
    report = report_for(
        [TaskReport("a", {"g": 1}, "done", 2), TaskReport("b", {"g": 2}, "running", 2)]
    )
    attach_attempts(report, records, ReportContext("s3://out/", "s3://main/", pricing))
    per_second = 0.36 / 3600 / 6
    a, b = report.tasks
    assert a.cost_usd == pytest.approx((600 + 1200) * per_second)
    assert b.cost_usd == pytest.approx(1800 * per_second)  # the open attempt is not priced
    assert report.cost is not None
    assert report.cost["usd"] == pytest.approx((600 + 1200 + 1800) * per_second)
    assert report.cost["attempts"] == 3 and report.cost["open_attempts"] == 1
    assert report.cost_note == ""
    # The timeline has every attempt, the open one without an end.
    spans = sorted((s.worker, s.task_id, s.start - T0, s.end, s.outcome) for s in report.timeline)
    assert spans == [
        ("w1", "a", 0.0, T0 + 600, "failed"),
        ("w1", "b", 650.0, T0 + 2450, "done"),
        ("w2", "a", 700.0, T0 + 1900, "done"),
        ("w2", "b", 2500.0, None, "running"),
    ]
    assert report.logs_location == "s3://main/_ds/Priced/runs/run-1/logs/"
    assert report.to_json()["tasks"][0]["cost_usd"] == pytest.approx(a.cost_usd)
    assert "timeline" not in report.to_json()


def test_without_a_price_there_is_no_cost_only_a_reason(tmp_path: Path) -> None:
    records = records_with_attempts(tmp_path)
    report = report_for([TaskReport("a", {}, "done", 2)], backend="local")
    config = Config.model_validate({"app_name": "Priced"})
    context = report_context(config, "local", lambda name: str(tmp_path / (name or "main")))
    attach_attempts(report, records, context)
    assert report.cost is None
    assert report.tasks[0].cost_usd is None
    assert report.cost_note.startswith("no price is known for the local backend")
    assert len(report.timeline) == 4
    assert report.logs_location == str(tmp_path / "main" / "_ds/Priced/runs/run-1/logs") + "/"


def test_too_many_attempts_give_notes_instead_of_a_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed_something.report.trace as trace

    monkeypatch.setattr(trace, "MAX_REPORT_ATTEMPTS", 3)
    records = records_with_attempts(tmp_path)
    report = report_for([TaskReport("a", {}, "done", 2)])
    attach_attempts(report, records, ReportContext(pricing=Pricing(0.36, 6, "test")))
    assert report.timeline == [] and report.cost is None
    assert "4 attempts" in report.timeline_note and "ds report --trace" in report.cost_note


def test_the_trace_prices_each_finished_attempt(tmp_path: Path) -> None:
    records = records_with_attempts(tmp_path)
    path = tmp_path / "trace.tsv"
    assert write_trace(records, path, Pricing(0.36, 6, "test")) == 4
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    costs = {(r["task_id"], r["attempt"]): r["cost_usd"] for r in rows}
    assert float(costs[("a", "1")]) == pytest.approx(600 * 0.36 / 3600 / 6)
    assert float(costs[("b", "1")]) == pytest.approx(1800 * 0.36 / 3600 / 6)
    assert costs[("b", "2")] == ""  # still running
    write_trace(records, path)
    with path.open(newline="") as fh:
        assert {r["cost_usd"] for r in csv.DictReader(fh, delimiter="\t")} == {""}


def test_a_streamed_report_prices_every_task_from_its_one_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # build_report keeps the attempt keys from the listing that gives the tasks' states:
    # the attempts are not listed a second time, and each task has its cost as it streams
    # by (into report.json and report.tsv), listed in memory or not.
    import distributed_something.report.build as build
    from distributed_something.report.html import render_html
    from distributed_something.state import RunState

    records = records_with_attempts(tmp_path)
    monkeypatch.setattr(build, "SAMPLE", 1)  # of the two done tasks only a is listed
    monkeypatch.setattr(RunRecords, "attempt_keys", lambda *a: pytest.fail("listed twice"))
    state = RunState(run_id="run-1", app_name="Priced", backend="aws", created_at=T0)
    streamed: list[TaskReport] = []
    context = ReportContext(pricing=Pricing(0.36, 6, "test"))
    report = build.build_report(records, state, context, on_task=streamed.append)
    per_second = 0.36 / 3600 / 6
    # b's second attempt is a redelivery still open: b is done by its first.
    assert [(t.id, t.outcome) for t in streamed] == [("a", "done"), ("b", "done")]
    assert streamed[0].cost_usd == pytest.approx((600 + 1200) * per_second)
    assert streamed[1].cost_usd == pytest.approx(1800 * per_second)
    assert [t.id for t in report.tasks] == ["a"] and not report.listed_all
    assert report.cost is not None and report.cost["tasks"] == 2
    assert len(report.timeline) == 4
    text = " ".join(render_html(report).split())
    assert "for 3 attempts of 2 tasks" in text


def test_a_streamed_report_of_too_many_attempts_keeps_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed_something.report.build as build
    import distributed_something.report.trace as trace
    from distributed_something.state import RunState

    monkeypatch.setattr(trace, "MAX_REPORT_ATTEMPTS", 3)
    monkeypatch.setattr(trace, "read_attempts", lambda *a: pytest.fail("attempts read"))
    records = records_with_attempts(tmp_path)
    state = RunState(run_id="run-1", app_name="Priced", backend="aws", created_at=T0)
    report = build.build_report(records, state, ReportContext(pricing=Pricing(0.36, 6, "t")))
    assert report.timeline == [] and report.cost is None
    assert all(t.cost_usd is None for t in report.tasks)
    assert "4 attempts" in report.timeline_note and "ds report --trace" in report.cost_note
    assert report.counts["done"] == 2


# --- the spot prices the machines actually had ----------------------------------------------


def test_a_spot_history_prices_each_span_at_the_prices_in_effect() -> None:
    history = SpotHistory([(T0 + 1000, 0.12), (T0, 0.36)])  # sorted here
    assert history.cost(T0, T0 + 1000) == pytest.approx(0.36 * 1000 / 3600)
    # Across a change: 500 s at each price.
    assert history.cost(T0 + 500, T0 + 1500) == pytest.approx((0.36 + 0.12) * 500 / 3600)
    # After the last change its price holds; before the first, the first price is taken.
    assert history.cost(T0 + 5000, T0 + 8600) == pytest.approx(0.12)
    assert history.cost(T0 - 3600, T0) == pytest.approx(0.36)
    assert history.cost(T0 + 10, T0 + 10) == 0 and SpotHistory([]).cost(T0, T0 + 60) == 0


def test_attempts_are_priced_at_their_own_machines_spot_prices() -> None:
    base = pricing_for(aws_config(), "aws")
    assert base is not None
    machines = {"w1": ("m5.xlarge", "us-east-1a"), "w2": ("c5.xlarge", "us-east-1b")}
    history = {("m5.xlarge", "us-east-1a"): SpotHistory([(T0, 0.06), (T0 + 1800, 0.12)])}
    pricing = with_spot_prices(base, machines, history)
    # w1 ran half an hour at $0.06 and half an hour at $0.12, on one of 6 slots.
    assert pricing.attempt_cost(3600, worker="w1", start=T0) == pytest.approx(0.09 / 6)
    # w2's machine has no history, and an unknown worker no machine: the configured price.
    assert pricing.attempt_cost(3600, worker="w2", start=T0) == pytest.approx(0.36 / 6)
    assert pricing.attempt_cost(3600, worker="w9", start=T0) == pytest.approx(0.36 / 6)
    assert "spot price history" in pricing.basis and "m5.xlarge in us-east-1a" in pricing.basis
    assert "1 worker without a known machine price at aws.machine_price $0.36/h" in pricing.basis
    assert with_spot_prices(base, machines, {}) is base  # nothing known: unchanged


class SpotMarket:
    """A backend's spot price reader that answers from a table and records what it was
    asked (or fails with ``error``)."""

    def __init__(self, steps: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
        self.steps = steps
        self.asked: list[Any] = []
        self.error = ""

    def __call__(
        self, machines: Any, start: float, end: float
    ) -> dict[tuple[str, str], list[tuple[float, float]]]:
        self.asked.append((sorted(machines), start, end))
        if self.error:
            raise BackendError(self.error)
        return {m: s for m, s in self.steps.items() if m in machines}


def aws_backend(tmp_path: Path, records: RunRecords, market: SpotMarket) -> Backend:
    return Backend(
        "aws",
        SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3),
        records.storage,
        NoCompute(),
        lambda _name: records.storage,
        NoProvisioner(),
        location=lambda name: f"s3://{name or 'priced'}/",
        spot_prices=market,
    )


def test_the_report_prices_attempts_at_the_spot_prices_their_workers_machines_had(
    tmp_path: Path,
) -> None:
    records = records_with_attempts(tmp_path)
    records.write_machine(Machine("w1", "i-1", "m5.xlarge", "us-east-1a", T0))
    records.write_machine(Machine("w2", "i-2", "m5.xlarge", "us-east-1b", T0))
    market = SpotMarket(
        {("m5.xlarge", "us-east-1a"): [(T0 - 100, 0.06)], ("m5.xlarge", "us-east-1b"): []}
    )
    state = RunState(
        run_id="run-1", app_name="Priced", backend="aws", created_at=T0, finished_at=T0 + 3000
    )
    context = priced_report_context(
        aws_config(), aws_backend(tmp_path, records, market), records, state
    )
    # One reading for the run's whole time, both machines at once.
    assert market.asked == [
        ([("m5.xlarge", "us-east-1a"), ("m5.xlarge", "us-east-1b")], T0, T0 + 3000)
    ]
    tasks = [TaskReport("a", {"g": 1}, "done", 2), TaskReport("b", {"g": 2}, "done", 2)]
    report = report_for(tasks)
    attach_attempts(report, records, context)
    a, b = report.tasks
    slot = 1 / 6 / 3600
    # a: 600 s on w1 at $0.06, 1200 s on w2 (no history there: $0.36); b: 1800 s on w1.
    assert a.cost_usd == pytest.approx(600 * 0.06 * slot + 1200 * 0.36 * slot)
    assert b.cost_usd == pytest.approx(1800 * 0.06 * slot)
    assert report.cost is not None and report.cost["spot_attempts"] == 2
    assert "spot price history" in report.cost["basis"]


def test_without_spot_prices_the_configured_price_stays_and_the_report_says_why(
    tmp_path: Path,
) -> None:
    records = records_with_attempts(tmp_path)
    market = SpotMarket({})
    state = RunState(
        run_id="run-1", app_name="Priced", backend="aws", created_at=T0, finished_at=T0 + 3000
    )
    backend = aws_backend(tmp_path, records, market)
    pricing = run_pricing(aws_config(), backend, records, state)
    assert pricing is not None and not pricing.spot and market.asked == []
    assert "no worker recorded its machine" in pricing.basis
    records.write_machine(Machine("w1", "i-1", "m5.xlarge", "us-east-1a", T0))
    market.error = "could not read the spot price history: UnauthorizedOperation: denied"
    pricing = run_pricing(aws_config(), backend, records, state)
    assert pricing is not None and not pricing.spot
    assert "spot prices not used: could not read the spot price history" in pricing.basis
    assert pricing.attempt_cost(3600, worker="w1", start=T0) == pytest.approx(0.06)
