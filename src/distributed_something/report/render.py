"""The run report for people: a terminal summary (stderr), and a dead task as text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from distributed_something.ledger import COUNT_COLUMNS
from distributed_something.records import CORRUPT_FIX
from distributed_something.report.build import RunReport, short_group
from distributed_something.report.scales import format_duration, format_usd, plural
from distributed_something.ui import console
from distributed_something.worker.causes import signal_name

COLORS = {
    "done": "green",
    "skipped": "cyan",
    "running": "blue",
    "failed": "yellow",
    "dead": "red",
    "pending": "white",
}

#: What `ds status` and `ds report` say of a run in progress that has no task yet.
NO_TASK_YET = (
    "no task submitted to this run yet: `ds submit job.json` sends them (`ds run` does every step)"
)


def print_summary(report: RunReport, outputs_hint: str | None = None) -> None:
    """Counts by outcome, timing, and the tasks that need attention."""
    table = Table(title=f"{report.app_name} · run {report.run_id}", show_header=True)
    for column in COUNT_COLUMNS:
        table.add_column(column, justify="right", style=COLORS.get(column, ""))
    table.add_row(*(str(report.counts[c]) for c in COUNT_COLUMNS))
    console.print(table)
    if report.counts["total"] == 0:  # not a table of zeros alone
        console.print(
            NO_TASK_YET
            if report.finished_at is None
            else "this run ended with no task submitted: `ds run` starts a new one (or "
            "`ds setup`, then `ds submit job.json`)"
        )
    stats = report.duration_stats
    if stats:
        console.print(
            f"task time: median {format_duration(stats['median'])}, "
            f"p90 {format_duration(stats['p90'])}, max {format_duration(stats['max'])}, "
            f"total {format_duration(stats['total'])}"
        )
    if report.cost is not None:
        console.print(
            f"estimated cost of task time: {format_usd(report.cost['usd'])} "
            f"({plural(int(report.cost['attempts']), 'attempt')}; at most "
            f"aws.machine_price per machine-hour, see the HTML report)"
        )
    if report.counts["duplicates"]:
        console.print(
            f"[yellow]{plural(report.counts['duplicates'], 'task')} "
            f"{'was' if report.counts['duplicates'] == 1 else 'were'} delivered twice or ran "
            "to the end twice[/] (a second delivery stood down; or a worker vanished "
            "mid-task and the task completed twice with identical outputs; or it was "
            "submitted again once done, with check_if_done off, or with --force)"
        )
    retried = report.retried_text()
    if retried:
        console.print(
            f"{retried}: `ds report --trace trace.tsv` lists every attempt, "
            "`ds logs TASK` their logs"
        )
    short = report.short_text()
    if short:
        console.print(f"[yellow]{short}[/]")
    if report.corrupt:
        console.print(f"[red]{plural(len(report.corrupt), 'record')} could not be read:[/]")
        for key, problem in list(report.corrupt.items())[:10]:
            console.print(f"  {key}: {problem}")
        console.print(f"  fix: {CORRUPT_FIX}")
    trouble = [t for t in report.tasks if t.outcome in ("dead", "failed", "running", "pending")]
    if trouble:
        bad = Table(title="tasks needing attention", show_header=True)
        for col in ("task", "group", "outcome", "tries", "cause", "error"):
            bad.add_column(col, overflow="fold")
        for task in trouble[:20]:
            bad.add_row(
                short_id(task.id),
                escape(short_group(task.group)),
                task.outcome,
                str(task.attempts),
                escape(task.cause or ""),
                escape(clip(task.first_error or task.error or "", 160)),
            )
        console.print(bad)
        # The report lists a sample of a big run's pending tasks: the counts say how many.
        needing = sum(report.counts[k] for k in ("dead", "failed", "running", "pending"))
        if needing > 20:
            console.print(f"… and {needing - 20} more (see the JSON report)")
        # The dead-letter commands only where a task is dead: a run ended with tasks still
        # pending (cleaned up, interrupted) has none to list or redrive.
        if report.counts["dead"]:
            console.print("see `ds dead list`, `ds logs TASK`, `ds dead redrive`")
        else:
            console.print(
                "see `ds logs TASK`; tasks not finished run when the run goes on (`ds run` "
                "again resumes an interrupted run; one cleaned up needs a new `ds run`)"
            )
    if outputs_hint:
        console.print(outputs_hint)


#: Characters of a task id a table shows: a prefix every command taking TASK accepts.
SHORT_ID = 12


def short_id(task_id: str) -> str:
    """A task id as tables show it (its first `SHORT_ID` characters)."""
    return task_id[:SHORT_ID]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with ``…``."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_task_text(shown: dict[str, Any]) -> str:
    """`ds dead show` for people: the task, its group, the cause and first error line of its
    last failure, each failed attempt (time, cause, exit code, error) and the last attempt's
    log tail as real lines, without terminal control sequences. ``shown`` is
    `run_info.dead_show`'s answer (what ``--json`` prints)."""
    from distributed_something.usecases.run_info import strip_controls

    failures: list[dict[str, Any]] = list(shown.get("failures") or [])
    lines = [
        f"task    {shown.get('task_id', '')}",
        f"run     {shown.get('run_id', '')}",
        f"group   {_json(shown.get('group'))}",
        f"state   dead after {plural(int(shown.get('attempts') or 0), 'attempt')}",
        f"cause   {shown.get('cause') or 'not recorded'}",
    ]
    error, first = str(shown.get("error") or ""), str(shown.get("first_error") or "")
    if first and first not in error:  # the command's own line first, then ds's reason
        lines += [f"error   {first}", f"        ({error})"]
    else:
        lines.append(f"error   {error or first}")
    lines += ["", "attempts:"]
    if not failures:
        lines.append("  (no failure was recorded: the task was found in the dead-letter store)")
    for f in failures:
        lines.append(
            f"  #{f.get('attempt')}  {_when(f.get('at'))}  cause {f.get('cause') or '-'}  "
            f"{_ended(f.get('exit_code'))}  {f.get('error', '')}"
            + (f"  on {f['worker']}" if f.get("worker") else "")
        )
        first = str(f.get("first_error") or "")
        if first and first not in str(f.get("error") or ""):
            lines.append(f"      {first}")
    tail = str(failures[-1].get("log_tail") or "") if failures else ""
    if tail:
        lines += ["", f"log tail of attempt {failures[-1].get('attempt')}:"]
        lines += [f"  | {line}" for line in strip_controls(tail).rstrip("\n").split("\n")]
    lines += ["", f"see `ds logs {shown.get('task_id', '')[:SHORT_ID]}` for the whole log"]
    return "\n".join(lines) + "\n"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _ended(exit_code: object) -> str:
    """An attempt's exit as `ds dead show` lists it: ``exit 3``, ``signal SIGTERM`` for a
    command killed by a signal (its negative code), ``exit -`` when it has none."""
    if not isinstance(exit_code, int):
        return "exit -"
    return f"signal {signal_name(-exit_code)}" if exit_code < 0 else f"exit {exit_code}"


def _when(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
