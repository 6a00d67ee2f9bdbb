"""Terminal output: messages and progress on stderr (stdout is kept for `--json`)."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as BarTask
from rich.table import Column
from rich.text import Text


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


#: Where people read (stderr). Not a terminal (a log file, a pipe, a batch job's output), long
#: lines are not cut at 80 columns: a path cut in two cannot be copied back.
console = Console(stderr=True, highlight=False, soft_wrap=not _is_terminal(sys.stderr))

#: Seconds between plain progress lines when stderr is not a terminal (a log file, a batch
#: job's output): `DS_PROGRESS_INTERVAL`, default 10.
PROGRESS_INTERVAL_ENV = "DS_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 10.0


def info(message: str) -> None:
    """A progress message for people (stderr)."""
    console.print(message)


def progress_interval() -> float:
    """`DS_PROGRESS_INTERVAL` in seconds (≥ 0), or the default when unset or not a number."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_PROGRESS_INTERVAL
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_PROGRESS_INTERVAL


class ThroughputColumn(ProgressColumn):
    """Tasks per minute, from rich's moving estimate of the completion speed."""

    def render(self, task: BarTask) -> Text:
        return Text(rate_text(task), style="magenta")


def rate_text(task: BarTask) -> str:
    """The bar's rate: per minute (a decimal only below 100), per second from 10,000 a
    minute (a local submit sends millions a minute)."""
    speed = task.speed
    if not speed:
        return "–/min"
    per_minute = speed * 60
    if per_minute >= 10_000:
        return f"{speed:,.0f}/s"
    return f"{per_minute:.0f}/min" if per_minute >= 100 else f"{per_minute:.1f}/min"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def plain_line(task: BarTask) -> str:
    """One progress line without a bar, for a log: the same facts as the bar, in its order."""
    total = "?" if task.total is None else f"{task.total:.0f}"
    detail = Text.from_markup(task.fields.get("detail", "")).plain
    return (
        f"{task.description}: {task.completed:.0f}/{total} · {rate_text(task)} · "
        f"ETA {_clock(task.time_remaining)} · elapsed {_clock(task.elapsed)}"
        + (f" · {detail}" if detail else "")
    )


class TaskBar(Progress):
    """A rich progress bar on a terminal; elsewhere (stderr redirected) a plain line every
    ``interval`` seconds and one at the end, so a log shows the progress of a long run."""

    def __init__(self, *columns: ProgressColumn, plain: bool, interval: float) -> None:
        super().__init__(
            *columns,
            console=console,
            transient=False,
            # The monitor updates the bar once a tick: redrawing 10 times a second cost an
            # idle monitor 1.6 % of a core for nothing.
            refresh_per_second=1,
            disable=plain,
        )
        self.plain = plain
        self.interval = interval
        self._printed: dict[TaskID, tuple[float, str]] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        if self.plain:
            self._print(task_id, final=False)

    def stop(self) -> None:
        super().stop()
        if self.plain:
            for task in self.tasks:
                self._print(task.id, final=True)

    def _print(self, task_id: TaskID, *, final: bool) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.total is None:
            return
        line = plain_line(task)
        at, last = self._printed.get(task_id, (-math.inf, ""))
        now = time.monotonic()
        due = now - at >= self.interval
        # Counts unchanged: at the end say nothing twice (the rate and times still move).
        if (final and last.split(" · ")[0] != line.split(" · ")[0]) or (not final and due):
            console.print(line, soft_wrap=True, markup=False)
            self._printed[task_id] = (now, line)


class DetailColumn(ProgressColumn):
    """The task's ``detail`` field, cut to what is left of the line after ``before`` (the
    columns on its left), so the counts, rate and ETA are never the part that is lost."""

    def __init__(self, before: list[ProgressColumn]) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="crop"))
        self.before = before

    def render(self, task: BarTask) -> Text:
        used = 0
        for column in self.before:
            cell = column(task)
            used += console.measure(cell).maximum + 1 if not isinstance(cell, str) else len(cell)
        detail = Text.from_markup(task.fields.get("detail", ""))
        room = console.width - used - 1
        if room < 8:
            return Text("")
        detail.truncate(room, overflow="ellipsis")
        return detail


def task_bar(description: str) -> TaskBar:
    """Progress on stderr: done/total, rate and ETA first (they fit 80 columns), then the
    bar, elapsed time and the details, which are cut first on a narrow terminal."""
    before: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        MofNCompleteColumn(),
        ThroughputColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        BarColumn(bar_width=12),
        TimeElapsedColumn(),
    ]
    return TaskBar(
        *before,
        DetailColumn(before),
        plain=not console.is_terminal,
        interval=progress_interval(),
    )
