"""The run report as one self-contained HTML page: counts, duration histogram, throughput.

The page has no external assets, no JavaScript and needs no network: the CSS is inline and
the charts are inline SVG drawn here (no plotting dependency). Every piece of text that comes
from the run -- app name, task ids, group values, errors -- is HTML-escaped, because groups and
errors are written by users (or by the programs they run) and must never become markup.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from distributed_something.atomicfile import write_text_atomically
from distributed_something.records import CORRUPT_FIX
from distributed_something.report.build import OUTCOMES, RunReport, TaskReport

MAX_ROWS = 5000
"""Most rows shown in each task table; larger runs get a note pointing at the JSON report."""

MAX_BINS = 30
"""Most bars in the duration histogram."""

COLORS = {
    "done": "#2e7d32",
    "skipped": "#00838f",
    "failed": "#f9a825",
    "dead": "#c62828",
    "pending": "#757575",
    "running": "#1e88e5",
    "total": "#37474f",
    "duplicates": "#6a1b9a",
}

# Chart geometry (SVG user units). The plot area is the box inside the margins.
_WIDTH = 720
_HEIGHT = 280
_LEFT = 60
_RIGHT = 20
_TOP = 20
_BOTTOM = 50
_PLOT_W = _WIDTH - _LEFT - _RIGHT
_PLOT_H = _HEIGHT - _TOP - _BOTTOM
_GROUP_CHARS = 300
_ERROR_CHARS = 2000
_TAIL_CHARS = 8000

MAX_FAILURES = 200
"""Most tasks shown with their log tails in the failures section (each tail is a few KB)."""

_CSS = (
    """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
  max-width: 1100px; color: #212121; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
.counts { display: flex; flex-wrap: wrap; gap: 0.6em; margin: 1em 0; }
.count { color: #fff; border-radius: 6px; padding: 0.5em 1em; min-width: 6em; text-align: center; }
.count .n { font-size: 1.6em; font-weight: 700; display: block; }
.count .label { font-size: 0.85em; text-transform: uppercase; letter-spacing: 0.05em; }
.ok { color: #2e7d32; font-weight: 600; }
.bad { color: #c62828; font-weight: 600; }
.empty, .note { color: #616161; font-style: italic; }
svg { max-width: 100%; height: auto; background: #fafafa; border: 1px solid #eee; }
svg text { font-size: 11px; fill: #424242; font-family: system-ui, sans-serif; }
svg .axis { stroke: #424242; stroke-width: 1; }
svg .grid { stroke: #e0e0e0; stroke-width: 1; }
svg .bar { fill: #1565c0; }
svg .line { fill: none; stroke: #2e7d32; stroke-width: 2; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #e0e0e0; padding: 0.25em 0.5em; text-align: left;
  vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td code, td pre { font-family: ui-monospace, monospace; font-size: 0.95em; }
td pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
.failure { border: 1px solid #e0e0e0; border-left: 4px solid #c62828; padding: 0.4em 0.8em;
  margin: 0.6em 0; }
.failure pre { white-space: pre-wrap; word-break: break-word; background: #fafafa;
  font-family: ui-monospace, monospace; font-size: 0.85em; max-height: 24em; overflow: auto; }
.failure .first { font-family: ui-monospace, monospace; color: #c62828; }
"""
    + "".join(f"\n.o-{name} {{ background: {color}; }}" for name, color in COLORS.items())
    + "".join(
        f"\ntd.t-{name} {{ color: {color}; font-weight: 600; }}" for name, color in COLORS.items()
    )
)


def render_html(report: RunReport) -> str:
    """The whole report as one HTML page (a ``str``), ready to be written to a ``.html`` file.

    Sections: a header (app, run id, backend, created/finished times in UTC, wall time), a
    colour-coded strip of counts by outcome (plus total and duplicates), an SVG histogram of
    task durations, an SVG chart of cumulative tasks done against minutes since the run was
    created, duration statistics, a table of tasks needing attention (dead, failed, pending;
    with group, cause and first error line), a failures section (each failed or dead task's
    group, cause, first error line and log tail; at most ``MAX_FAILURES``) and a table of
    every task. Each table shows at most ``MAX_ROWS`` rows followed by a note
    saying how many were left out. Empty and one-task reports render without error. All run
    text is escaped, so the page holds no markup that did not come from this module.
    """
    title = f"{report.app_name} - run {report.run_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(report),
        _counts_strip(report),
        "<h2>Task durations</h2>",
        _duration_stats(report),
        _histogram_svg(report.all_durations),
        "<h2>Throughput</h2>",
        _throughput_svg(report),
        _attention_table(report),
        _failures_section(report),
        _corrupt_list(report),
        _all_tasks_table(report),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def write_html(report: RunReport, path: Path) -> Path:
    """Write ``render_html(report)`` to ``path`` (UTF-8) atomically and return ``path``.

    The page is written to a temporary file in the same folder and renamed over ``path``, so
    a reader sees the old page or the new one, never half of one. Missing parent folders are
    created; the temporary file never survives a failure.
    """
    return write_text_atomically(path, render_html(report))


def histogram_bins(durations: Sequence[float]) -> list[tuple[float, float, int]]:
    """Equal-width bins ``(low, high, count)`` covering ``durations``, lowest first.

    The number of bins follows Sturges' rule, ``ceil(log2(n)) + 1``, capped at ``MAX_BINS``;
    all bins span ``[min, max]`` and the maximum falls in the last bin. No durations give no
    bins; durations that are all equal give one bin.
    """
    if not durations:
        return []
    low, high = min(durations), max(durations)
    n = len(durations)
    bins = 1 if high == low else min(MAX_BINS, math.ceil(math.log2(n)) + 1)
    width = (high - low) / bins if high > low else 0.0
    counts = [0] * bins
    for value in durations:
        index = bins - 1 if width == 0 else min(bins - 1, int((value - low) / width))
        counts[index] += 1
    return [(low + i * width, low + (i + 1) * width, c) for i, c in enumerate(counts)]


# --- sections ------------------------------------------------------------------------------


def _header(report: RunReport) -> str:
    if report.finished_at is None:
        finished = "not finished"
        wall = "not finished"
    else:
        finished = _utc(report.finished_at)
        wall = _fmt_seconds(max(0.0, report.finished_at - report.created_at))
    verdict = (
        '<p class="ok">Every task is done or skipped.</p>'
        if _ok(report)
        else '<p class="bad">Some tasks are dead, failed, running or pending: see below.</p>'
    )
    rows = [
        ("app", report.app_name),
        ("run id", report.run_id),
        ("backend", report.backend),
        ("created", _utc(report.created_at)),
        ("finished", finished),
        ("wall time", wall),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<h1>{_e(report.app_name)}: run report</h1>\n<dl class="meta">{items}</dl>\n{verdict}'


def _counts_strip(report: RunReport) -> str:
    boxes = []
    for name in (*OUTCOMES, "total", "duplicates"):
        boxes.append(
            f'<div class="count o-{name}" id="count-{name}">'
            f'<span class="n">{_count(report, name)}</span>'
            f'<span class="label">{name}</span></div>'
        )
    return '<div class="counts">' + "".join(boxes) + "</div>"


def _duration_stats(report: RunReport) -> str:
    stats = report.duration_stats
    if not stats:
        return '<p class="empty">No task durations recorded.</p>'
    cells = "".join(
        f'<td class="num" id="stat-{key}">{_e(_fmt_seconds(stats[key]))}</td>'
        for key in ("min", "median", "p90", "max", "total")
        if key in stats
    )
    heads = "".join(
        f"<th>{key}</th>" for key in ("min", "median", "p90", "max", "total") if key in stats
    )
    return f'<table class="stats"><tr>{heads}</tr><tr>{cells}</tr></table>'


def _histogram_svg(durations: Sequence[float]) -> str:
    bins = histogram_bins(durations)
    if not bins:
        return '<p class="empty">No durations to plot.</p>'
    top = max(c for _, _, c in bins)
    bar_w = _PLOT_W / len(bins)
    out = [_svg_open("histogram", "Histogram of task durations")]
    for value in _int_ticks(top):
        y = _TOP + _PLOT_H - value / top * _PLOT_H
        out.append(_line(_LEFT, y, _LEFT + _PLOT_W, y, "grid"))
        out.append(_ytick(y, value))
    for i, (low, high, count) in enumerate(bins):
        h = count / top * _PLOT_H
        x = _LEFT + i * bar_w
        y = _TOP + _PLOT_H - h
        tip = f"{_fmt_seconds(low)} to {_fmt_seconds(high)}: {count} task(s)"
        out.append(
            f'<rect class="bar" x="{x + 1:.2f}" y="{y:.2f}" width="{max(bar_w - 2, 1):.2f}" '
            f'height="{h:.2f}" data-count="{count}"><title>{_e(tip)}</title></rect>'
        )
        if count:
            out.append(_text(x + bar_w / 2, y - 3, str(count), "middle", "count"))
    # Label the bin edges, thinned so labels never overlap on wide histograms.
    step = max(1, math.ceil(len(bins) / 8))
    edges = [low for low, _, _ in bins] + [bins[-1][1]]
    for i in range(0, len(edges), step):
        x = _LEFT + i * bar_w
        out.append(_text(x, _TOP + _PLOT_H + 16, _fmt_seconds(edges[i]), "middle", "xtick"))
    out.append(_axes())
    out.append(_text(_LEFT + _PLOT_W / 2, _HEIGHT - 8, "task duration", "middle", "label"))
    out.append(_vertical_label("tasks"))
    out.append("</svg>")
    return "\n".join(out)


def _throughput_svg(report: RunReport) -> str:
    finishes = sorted(max(0.0, at - report.created_at) / 60.0 for at in report.all_finish_times)
    if not finishes:
        return '<p class="empty">No task finished in this run yet.</p>'
    done = len(finishes)
    end = finishes[-1]
    if report.finished_at is not None:
        end = max(end, (report.finished_at - report.created_at) / 60.0)
    # A run whose tasks all finished at its creation instant still needs a non-zero x span.
    span = end if end > 0 else 1.0

    def px(minutes: float) -> float:
        return _LEFT + minutes / span * _PLOT_W

    def py(count: float) -> float:
        return _TOP + _PLOT_H - count / done * _PLOT_H

    # A step line: flat between finishes, one step up at each finish. Finishes less than half
    # a unit apart share one rise, so a run of 100,000 tasks still draws a few thousand points.
    points = [(px(0.0), py(0))]
    for k, minute in enumerate(finishes, start=1):
        x = px(minute)
        if len(points) > 1 and x - points[-1][0] < 0.5:
            points[-1] = (points[-1][0], py(k))
        else:
            points.append((x, py(k - 1)))
            points.append((x, py(k)))
    if end > finishes[-1]:
        points.append((px(end), py(done)))
    out = [_svg_open("throughput", "Cumulative tasks done over time")]
    for value in _int_ticks(done):
        y = py(value)
        out.append(_line(_LEFT, y, _LEFT + _PLOT_W, y, "grid"))
        out.append(_ytick(y, value))
    for minute in (0.0, span / 4, span / 2, 3 * span / 4, span):
        out.append(_text(px(minute), _TOP + _PLOT_H + 16, _fmt_minutes(minute), "middle", "xtick"))
    coords = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
    out.append(f'<polyline class="line" points="{coords}"/>')
    out.append(_axes())
    out.append(
        _text(_LEFT + _PLOT_W / 2, _HEIGHT - 8, "minutes since run creation", "middle", "label")
    )
    out.append(_vertical_label("tasks done"))
    out.append("</svg>")
    rate = f"{done / finishes[-1]:.2f} tasks/minute" if finishes[-1] > 0 else "n/a"
    return "\n".join(out) + (
        f'\n<p class="note">{done} task(s) done in {_e(_fmt_minutes(finishes[-1]))} '
        f"minutes; average throughput {_e(rate)}.</p>"
    )


def _attention_table(report: RunReport) -> str:
    # Dead and failed tasks first, so a run of a million pending tasks still shows them.
    trouble = [t for t in report.tasks if t.outcome in _ATTENTION_ORDER]
    trouble.sort(key=lambda t: _ATTENTION_ORDER[t.outcome])
    if not trouble:
        return '<h2>Tasks needing attention</h2>\n<p class="empty">None.</p>'
    rows = (
        f'<tr><td><code>{_e(t.id)}</code></td><td class="t-{_e(t.outcome)}">{_e(t.outcome)}</td>'
        f"<td><code>{_e(_group_json(t.group))}</code></td>"
        f'<td class="num">{t.attempts}</td>'
        f"<td>{_e(t.cause or '')}</td>"
        f"<td><pre>{_e(_clip(t.first_error or t.error or '', _ERROR_CHARS))}</pre></td></tr>"
        for t in trouble[:MAX_ROWS]
    )
    return (
        _table(
            "Tasks needing attention",
            "attention",
            ("task", "outcome", "group", "attempts", "cause", "error"),
            rows,
            len(trouble),
        )
        + (
            '\n<p class="note">See <code>ds dead list</code>, <code>ds logs TASK</code> and '
            "<code>ds dead redrive</code>.</p>"
        )
        + _corrupt_list(report)
    )


_ATTENTION_ORDER = {"dead": 0, "failed": 0, "running": 1, "pending": 2}

#: The columns of the per-task TSV written beside the HTML report (`write_tsv`).
TSV_COLUMNS = ("task", "outcome", "attempts", "duration", "outputs", "cause", "group")


def write_tsv(report: RunReport, path: Path) -> Path:
    """Every task of the report, one tab-separated row each (`tsv_row`), written atomically
    to ``path``; returns ``path``. The HTML page shows at most ``MAX_ROWS`` tasks per table:
    this file has them all (a report of a big run lists a sample: `ds report` writes the
    file as it streams the tasks, report/files.py)."""
    lines = ["\t".join(TSV_COLUMNS), *(tsv_row(t) for t in report.tasks)]
    return write_text_atomically(path, "\n".join(lines) + "\n")


def tsv_row(t: TaskReport) -> str:
    """One task as a TSV row (`TSV_COLUMNS`; tabs and line breaks in values as spaces)."""

    def cell(value: Any) -> str:
        return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")

    return "\t".join(
        (
            cell(t.id),
            t.outcome,
            str(t.attempts),
            f"{t.duration:.3f}" if t.duration is not None else "",
            str(len(t.outputs)),
            cell(t.cause or ""),
            cell(_group_text(t.group)),
        )
    )


def _failures_section(report: RunReport) -> str:
    """Each failed or dead task: group, cause, the error and first error line, the log tail."""
    failed = [t for t in report.tasks if t.outcome in ("dead", "failed") and t.error]
    if not failed:
        return ""
    items = []
    for t in failed[:MAX_FAILURES]:
        tail = t.log_tail or ""
        if len(tail) > _TAIL_CHARS:  # the end says the most: keep it
            tail = "…" + tail[-(_TAIL_CHARS - 1) :]
        first = t.first_error or ""
        facts = [
            ("group", _group_json(t.group)),
            ("outcome", f"{t.outcome} after {t.attempts} attempt(s)"),
            ("cause", t.cause or "not recorded"),
            ("error", _clip(t.error or "", _ERROR_CHARS)),
        ]
        rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
        items.append(
            f'<div class="failure" id="failure-{_e(t.id)}"><h3><code>{_e(t.id)}</code></h3>'
            f'<dl class="meta">{rows}</dl>'
            + (
                f'<p class="first">{_e(first)}</p>'
                if first and first not in (t.error or "")
                else ""
            )
            + (f"<pre>{_e(tail)}</pre>" if tail else '<p class="empty">No log tail kept.</p>')
            + "</div>"
        )
    note = ""
    if len(failed) > MAX_FAILURES:
        note = (
            f'\n<p class="note" id="failures-capped">Showing the first {MAX_FAILURES} of '
            f"{len(failed)} failed tasks; see <code>ds dead list</code>.</p>"
        )
    return '<h2 id="failures">Failures</h2>\n' + "\n".join(items) + note


def _corrupt_list(report: RunReport) -> str:
    """The records that could not be read, each with its problem, and the repair."""
    if not report.corrupt:
        return ""
    items = "".join(
        f"<li><code>{_e(key)}</code>: {_e(problem)}</li>" for key, problem in report.corrupt.items()
    )
    return (
        f'\n<h2 id="corrupt">Records that could not be read</h2>\n<ul>{items}</ul>'
        f'\n<p class="note">{_e(CORRUPT_FIX)}</p>'
    )


def _all_tasks_table(report: RunReport) -> str:
    if not report.tasks:
        return '<h2>All tasks</h2>\n<p class="empty">No tasks were submitted.</p>'
    rows = (
        f"<tr><td><code>{_e(t.id)}</code></td><td><code>{_e(_group_json(t.group))}</code></td>"
        f'<td class="t-{_e(t.outcome)}">{_e(t.outcome)}{_duplicate_mark(t)}</td>'
        f'<td class="num">{t.attempts}</td>'
        f'<td class="num">{_e(_fmt_seconds(t.duration) if t.duration is not None else "")}</td>'
        f'<td class="num">{len(t.outputs)}</td></tr>'
        for t in report.tasks[:MAX_ROWS]
    )
    return _table(
        "All tasks",
        "tasks",
        ("task", "group", "outcome", "attempts", "duration", "outputs"),
        rows,
        len(report.tasks) if report.listed_all else _count(report, "total"),
    )


def _table(title: str, ident: str, heads: Sequence[str], rows: Iterable[str], total: int) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    body = "\n".join(rows)
    note = ""
    if total > MAX_ROWS:
        note = (
            f'\n<p class="note" id="{ident}-capped">Showing the first {MAX_ROWS} of {total} '
            f"tasks; {total - MAX_ROWS} more are in the JSON report and in "
            "<code>report.tsv</code> beside this page (one row per task).</p>"
        )
    return (
        f"<h2>{_e(title)}</h2>\n"
        f'<table id="{ident}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
        f"{note}"
    )


# --- SVG helpers ---------------------------------------------------------------------------


def _svg_open(ident: str, label: str) -> str:
    return (
        f'<svg id="{ident}" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>'
    )


def _axes() -> str:
    bottom = _TOP + _PLOT_H
    return _line(_LEFT, _TOP, _LEFT, bottom, "axis") + _line(
        _LEFT, bottom, _LEFT + _PLOT_W, bottom, "axis"
    )


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line class="{cls}" x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}"/>'


def _text(x: float, y: float, text: str, anchor: str, cls: str) -> str:
    return f'<text class="{cls}" x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}">{_e(text)}</text>'


def _ytick(y: float, value: int) -> str:
    # Centred on its grid line (same y), so a label's y is exactly where its value is drawn.
    return (
        f'<text class="ytick" x="{_LEFT - 6}" y="{y:.2f}" text-anchor="end" '
        f'dominant-baseline="central">{value}</text>'
    )


def _vertical_label(text: str) -> str:
    x, y = 14, _TOP + _PLOT_H / 2
    return (
        f'<text class="label" x="{x}" y="{y:.2f}" text-anchor="middle" '
        f'transform="rotate(-90 {x} {y:.2f})">{_e(text)}</text>'
    )


def _int_ticks(top: int) -> list[int]:
    """Integer tick values from 0 to ``top`` inclusive: a 1-2-5 step, at most six ticks."""
    if top <= 0:
        return [0]
    step = next(c * 10**k for k in itertools.count() for c in (1, 2, 5) if top <= 5 * c * 10**k)
    ticks = list(range(0, top + 1, step))
    # Always label the top, so the chart's highest value can be read exactly.
    if ticks[-1] != top:
        if top - ticks[-1] < step / 2:
            ticks[-1] = top
        else:
            ticks.append(top)
    return ticks


# --- formatting ----------------------------------------------------------------------------


def _e(text: str) -> str:
    return escape(text, quote=True)


def _count(report: RunReport, name: str) -> int:
    return int(report.counts.get(name, 0))


def _ok(report: RunReport) -> bool:
    return all(_count(report, k) == 0 for k in ("dead", "failed", "running", "pending"))


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _fmt_minutes(minutes: float) -> str:
    return f"{minutes:.1f}" if minutes < 100 else f"{minutes:.0f}"


def _group_json(group: Any) -> str:
    return _clip(_group_text(group), _GROUP_CHARS)


def _group_text(group: Any) -> str:
    try:
        return json.dumps(group, separators=(",", ":"), ensure_ascii=False, default=str)
    except ValueError:  # circular structures cannot be JSON; show Python's form instead
        return repr(group)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duplicate_mark(task: TaskReport) -> str:
    return ' <span title="completed twice">(duplicate)</span>' if task.duplicate else ""
