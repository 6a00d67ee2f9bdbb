"""The run report for people: a terminal summary (stderr)."""

from __future__ import annotations

from rich.table import Table

from distributed_something.records import CORRUPT_FIX
from distributed_something.report.build import OUTCOMES, RunReport
from distributed_something.ui import console

COLORS = {
    "done": "green",
    "skipped": "cyan",
    "running": "blue",
    "failed": "yellow",
    "dead": "red",
    "pending": "white",
}


def print_summary(report: RunReport, outputs_hint: str | None = None) -> None:
    """Counts by outcome, timing, and the tasks that need attention."""
    table = Table(title=f"{report.app_name} · run {report.run_id}", show_header=True)
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right", style=COLORS[outcome])
    table.add_column("total", justify="right")
    table.add_row(*(str(report.counts[o]) for o in OUTCOMES), str(report.counts["total"]))
    console.print(table)
    stats = report.duration_stats
    if stats:
        console.print(
            f"task time: median {stats['median']:.1f}s, p90 {stats['p90']:.1f}s, "
            f"max {stats['max']:.1f}s, total {stats['total']:.1f}s"
        )
    if report.counts["duplicates"]:
        console.print(
            f"[yellow]{report.counts['duplicates']} task(s) were delivered twice[/] "
            "(the second delivery stood down, or a worker vanished mid-task and the task "
            "completed twice with identical outputs)"
        )
    if report.corrupt:
        console.print(f"[red]{len(report.corrupt)} record(s) could not be read:[/]")
        for key, problem in list(report.corrupt.items())[:10]:
            console.print(f"  {key}: {problem}")
        console.print(f"  fix: {CORRUPT_FIX}")
    trouble = [t for t in report.tasks if t.outcome in ("dead", "failed", "running", "pending")]
    if trouble:
        bad = Table(title="tasks needing attention", show_header=True)
        for col in ("task", "outcome", "attempts", "error"):
            bad.add_column(col)
        for task in trouble[:20]:
            bad.add_row(task.id, task.outcome, str(task.attempts), (task.error or "")[:100])
        console.print(bad)
        if len(trouble) > 20:
            console.print(f"… and {len(trouble) - 20} more (see the JSON report)")
        console.print("see `ds dead list`, `ds logs TASK`, `ds dead redrive`")
    if outputs_hint:
        console.print(outputs_hint)
