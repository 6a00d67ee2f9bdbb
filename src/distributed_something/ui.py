"""Terminal output: messages and progress on stderr (stdout is kept for `--json`)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as BarTask
from rich.text import Text

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    """A progress message for people (stderr)."""
    console.print(message)


class ThroughputColumn(ProgressColumn):
    """Tasks per minute, from rich's moving estimate of the completion speed."""

    def render(self, task: BarTask) -> Text:
        speed = task.speed
        return Text(f"{speed * 60:.1f}/min" if speed else "–/min", style="magenta")


def task_bar(description: str) -> Progress:
    """A progress bar with counts, elapsed time and ETA, drawn on stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        ThroughputColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        # The monitor updates the bar once a tick: redrawing 10 times a second cost an idle
        # monitor 1.6 % of a core for nothing.
        refresh_per_second=1,
    )
