"""The run report as one self-contained HTML page: counts, charts, costs, tasks and failures.

The page has no external assets, no JavaScript and needs no network: the CSS is inline and
the charts are inline SVG drawn here (no plotting dependency). Axes carry "nice" ticks (1, 2
or 5 × 10^k, see `scales`) in the unit that fits (s, min, h). Every piece of text that comes
from the run -- app name, task ids, group values, errors, paths -- is HTML-escaped, because
groups and errors are written by users (or by the programs they run) and must never become
markup. The layout reads on a phone: charts scale to the screen's width and wide tables
scroll sideways inside their own box instead of widening the page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from distributed_something.atomicfile import write_text_atomically
from distributed_something.ledger import COUNT_COLUMNS
from distributed_something.records import CORRUPT_FIX
from distributed_something.report.build import AttemptSpan, RunReport, TaskReport
from distributed_something.report.context import href_of, links_under
from distributed_something.report.scales import (
    Ticks,
    format_duration,
    format_rate,
    format_usd,
    nice_ticks,
    plural,
    time_unit,
)

MAX_ROWS = 5000
"""Most rows shown in each task table; larger runs get a note pointing at the JSON report."""

MAX_BINS = 30
"""Most bars in the duration histogram."""

MAX_LANES = 64
"""Most workers the timeline draws a lane for (the first to start); the rest are noted."""

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

#: Colours of attempt outcomes on the timeline (`records.ATTEMPT_OUTCOMES`).
ATTEMPT_COLORS = {
    "done": "#2e7d32",
    "failed": "#f9a825",
    "dead": "#c62828",
    "running": "#1e88e5",
    "released": "#8d6e63",
    "lost": "#6d4c41",
    "duplicate": "#6a1b9a",
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
_LANE_LEFT = 130  # the timeline's left margin holds worker names
_LANE_CHARS = 20
_GROUP_CHARS = 300
_ERROR_CHARS = 2000
_TAIL_CHARS = 8000

MAX_FAILURES = 200
"""Most tasks shown with their log tails in the failures section (each tail is a few KB)."""

_CSS = (
    """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
  max-width: 1100px; color: #212121; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; overflow-wrap: anywhere; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; overflow-wrap: anywhere; }
a { color: #1565c0; }
code { overflow-wrap: anywhere; }
dl.meta { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.2em 1em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.counts { display: flex; flex-wrap: wrap; gap: 0.6em; margin: 1em 0; }
.count { color: #fff; border-radius: 6px; padding: 0.5em 1em; min-width: 6em; text-align: center; }
.count .n { font-size: 1.6em; font-weight: 700; display: block; }
.count .label { font-size: 0.85em; text-transform: uppercase; letter-spacing: 0.05em; }
.ok { color: #2e7d32; font-weight: 600; }
.bad { color: #c62828; font-weight: 600; }
.empty, .note { color: #616161; font-style: italic; }
figure { margin: 0.5em 0; }
svg { display: block; width: 100%; max-width: 100%; height: auto; background: #fafafa;
  border: 1px solid #eee; }
svg text { font-size: 11px; fill: #424242; font-family: system-ui, sans-serif; }
svg .axis { stroke: #424242; stroke-width: 1; }
svg .grid { stroke: #e0e0e0; stroke-width: 1; }
svg .bar { fill: #1565c0; }
svg .line { fill: none; stroke: #2e7d32; stroke-width: 2; }
svg .lane { fill: #f0f0f0; }
.legend { display: flex; flex-wrap: wrap; gap: 0.3em 1em; font-size: 0.85em; margin: 0.3em 0; }
.legend span::before { content: ""; display: inline-block; width: 0.9em; height: 0.9em;
  margin-right: 0.3em; vertical-align: -0.1em; background: var(--c); }
.scroll { overflow-x: auto; max-width: 100%; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #e0e0e0; padding: 0.25em 0.5em; text-align: left;
  vertical-align: top; }
th { background: #f5f5f5; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td code, td pre { font-family: ui-monospace, monospace; font-size: 0.95em; }
td:first-child code { overflow-wrap: normal; white-space: nowrap; }
td.group { min-width: 10em; }
td pre { white-space: pre-wrap; word-break: break-word; margin: 0; min-width: 16em; }
.failure { border: 1px solid #e0e0e0; border-left: 4px solid #c62828; padding: 0.4em 0.8em;
  margin: 0.6em 0; }
.failure pre { white-space: pre-wrap; word-break: break-word; background: #fafafa;
  font-family: ui-monospace, monospace; font-size: 0.85em; max-height: 24em; overflow: auto; }
.failure .first { font-family: ui-monospace, monospace; color: #c62828;
  overflow-wrap: anywhere; }
@media (max-width: 600px) {
  body { margin: 1em auto; padding: 0 0.6em; font-size: 15px; }
  h1 { font-size: 1.3em; }
  .count { min-width: 4.5em; padding: 0.4em 0.6em; }
  .count .n { font-size: 1.3em; }
  dl.meta { grid-template-columns: minmax(0, 1fr); }
  dl.meta dd { margin-bottom: 0.3em; }
  svg text { font-size: 16px; }
  svg text.worker { font-size: 13px; }
}
"""
    + "".join(f"\n.o-{name} {{ background: {color}; }}" for name, color in COLORS.items())
    + "".join(
        f"\ntd.t-{name} {{ color: {color}; font-weight: 600; }}" for name, color in COLORS.items()
    )
    + "".join(f"\nsvg .a-{name} {{ fill: {c}; }}" for name, c in ATTEMPT_COLORS.items())
)


def render_html(report: RunReport) -> str:
    """The whole report as one HTML page (a ``str``), ready to be written to a ``.html`` file.

    Sections: a header (app, run id, backend, created/finished times in UTC, wall time, where
    outputs and logs are, linked), a colour-coded strip of counts by outcome (plus total and
    duplicates), duration statistics and an SVG histogram of task durations, an SVG chart of
    cumulative tasks done against time since the run was created, a timeline of workers
    (one lane per worker, one bar per attempt coloured by how it ended), the estimated cost
    (or why there is none), a table of tasks needing attention (dead, failed, pending; with
    group, cause, first error line and log), a failures section (each failed or dead task's
    group, cause, first error line, log tail and log; at most ``MAX_FAILURES``) and a table
    of every task (with links to its outputs and log, and its cost when priced). Each table
    shows at most ``MAX_ROWS`` rows followed by a note saying how many were left out. Empty
    and one-task reports render without error. All run text is escaped, so the page holds
    no markup that did not come from this module.
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
        '<h2 id="timeline-title">Timeline of workers</h2>',
        _timeline_svg(report),
        '<h2 id="cost">Cost</h2>',
        _cost_section(report),
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
        wall = format_duration(max(0.0, report.finished_at - report.created_at))
    if _count(report, "total") == 0:  # not "every task is done" of a run without any
        verdict = '<p class="empty">No tasks were submitted to this run.</p>'
    elif _ok(report):
        verdict = '<p class="ok">Every task is done or skipped.</p>'
    else:
        verdict = '<p class="bad">Some tasks are dead, failed, running or pending: see below.</p>'
    rows = [
        ("app", _e(report.app_name)),
        ("run id", _e(report.run_id)),
        ("backend", _e(report.backend)),
        ("created", _e(_utc(report.created_at))),
        ("finished", _e(finished)),
        ("wall time", _e(wall)),
    ]
    retried = report.retried_text()
    if retried:
        rows.append(("retried", _e(retried)))
    short = report.short_text()
    if short:
        rows.append(("outputs short", _e(short)))
    if report.outputs_location:
        rows.append(("outputs", _location_link(report.outputs_location, "outputs-location")))
    if report.logs_location:
        rows.append(("logs", _location_link(report.logs_location, "logs-location")))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<h1>{_e(report.app_name)}: run report</h1>\n<dl class="meta">{items}</dl>\n{verdict}'


def _counts_strip(report: RunReport) -> str:
    boxes = []
    for name in (*COUNT_COLUMNS, "duplicates"):
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
    keys = [key for key in ("min", "median", "p90", "max", "total") if key in stats]
    cells = "".join(
        f'<td class="num" id="stat-{key}">{_e(format_duration(stats[key]))}</td>' for key in keys
    )
    heads = "".join(f"<th>{key}</th>" for key in keys)
    return (
        f'<div class="scroll"><table class="stats"><tr>{heads}</tr><tr>{cells}</tr></table></div>'
    )


def _histogram_svg(durations: Sequence[float]) -> str:
    bins = histogram_bins(durations)
    if not bins:
        return '<p class="empty">No durations to plot.</p>'
    top = max(c for _, _, c in bins)
    low, high = bins[0][0], bins[-1][1]
    unit = time_unit(high)
    xaxis = nice_ticks(low / unit.seconds, high / unit.seconds)
    if high == low:  # one bin of equal durations: a bar one tick step wide, centred
        half = xaxis.step / 2 * unit.seconds
        bins = [(low - half, low + half, bins[0][2])]
        xaxis = nice_ticks((low - half) / unit.seconds, (low + half) / unit.seconds)
    yaxis = nice_ticks(0, top, integer=True)

    def px(seconds: float) -> float:
        return _scale(seconds / unit.seconds, xaxis, _LEFT, _LEFT + _PLOT_W)

    def py(count: float) -> float:
        return _scale(count, yaxis, _TOP + _PLOT_H, _TOP)

    out = [_svg_open("histogram", "Histogram of task durations")]
    out += _y_grid(yaxis, py)
    for low_s, high_s, count in bins:
        x0, x1 = px(low_s), px(high_s)
        y = py(count)
        tip = f"{format_duration(low_s)} to {format_duration(high_s)}: {plural(count, 'task')}"
        out.append(
            f'<rect class="bar" x="{x0 + 1:.2f}" y="{y:.2f}" width="{max(x1 - x0 - 2, 1):.2f}" '
            f'height="{py(0) - y:.2f}" data-count="{count}"><title>{_e(tip)}</title></rect>'
        )
        if count:
            out.append(_text((x0 + x1) / 2, y - 3, str(count), "middle", "count"))
    out += _x_ticks(xaxis, lambda v: _scale(v, xaxis, _LEFT, _LEFT + _PLOT_W))
    out.append(_axes())
    out.append(
        _text(_LEFT + _PLOT_W / 2, _HEIGHT - 8, f"task duration ({unit.name})", "middle", "label")
    )
    out.append(_vertical_label("tasks"))
    out.append("</svg>")
    return "\n".join(out)


def _throughput_svg(report: RunReport) -> str:
    # Every done task's finish (seconds since the run was created), listed or not.
    finishes = sorted(max(0.0, at - report.created_at) for at in report.all_finish_times)
    if not finishes:
        return '<p class="empty">No task finished in this run yet.</p>'
    done = len(finishes)
    end = finishes[-1]
    if report.finished_at is not None:
        end = max(end, report.finished_at - report.created_at)
    unit = time_unit(end)
    xaxis = nice_ticks(0.0, end / unit.seconds)
    yaxis = nice_ticks(0, done, integer=True)

    def px(seconds: float) -> float:
        return _scale(seconds / unit.seconds, xaxis, _LEFT, _LEFT + _PLOT_W)

    def py(count: float) -> float:
        return _scale(count, yaxis, _TOP + _PLOT_H, _TOP)

    # A step line: flat between finishes, one step up at each finish. Finishes less than half
    # a unit apart share one rise, so a run of 100,000 tasks still draws a few thousand points.
    # `px` written out (the same arithmetic): a million finishes are placed here.
    low, span, width = xaxis.low, xaxis.high - xaxis.low, float(_PLOT_W)
    per_unit = unit.seconds
    points = [(px(0.0), py(0))]
    rise_x, rise_k = 0.0, 0  # the rise being drawn (rise_k 0: none yet), its top point last
    for k, second in enumerate(finishes, start=1):
        x = _LEFT + (second / per_unit - low) / span * width if span else float(_LEFT)
        if rise_k and x - rise_x < 0.5:
            rise_k = k  # joins the rise: its top is drawn when it ends
            continue
        if rise_k:
            points.append((rise_x, py(rise_k)))
        points.append((x, py(k - 1)))
        rise_x, rise_k = x, k
    points.append((rise_x, py(rise_k)))
    if end > finishes[-1]:
        points.append((px(end), py(done)))
    out = [_svg_open("throughput", "Cumulative tasks done over time")]
    out += _y_grid(yaxis, py)
    out += _x_ticks(xaxis, lambda v: _scale(v, xaxis, _LEFT, _LEFT + _PLOT_W))
    coords = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
    out.append(f'<polyline class="line" points="{coords}"/>')
    out.append(_axes())
    out.append(
        _text(
            _LEFT + _PLOT_W / 2,
            _HEIGHT - 8,
            f"time since the run was created ({unit.name})",
            "middle",
            "label",
        )
    )
    out.append(_vertical_label("tasks done"))
    out.append("</svg>")
    took = finishes[-1]
    return "\n".join(out) + (
        f'\n<p class="note" id="throughput-note">{_e(plural(done, "task"))} done in '
        f"{_e(format_duration(took))}; average throughput {_e(format_rate(done, took))}.</p>"
    )


def _timeline_svg(report: RunReport) -> str:
    """One lane per worker (by first start), one bar per attempt from its start to its end
    (an open attempt runs to the report's end), coloured by how the attempt ended."""
    spans = report.timeline
    if not spans:
        note = report.timeline_note or "No attempt has started in this run yet."
        return f'<p class="empty" id="timeline-note">{_e(note)}</p>'
    lanes: dict[str, list[AttemptSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        lanes.setdefault(span.worker or "(unknown worker)", []).append(span)
    shown = list(lanes.items())[:MAX_LANES]
    ends = [s.end if s.end is not None else s.start for s in spans]
    last = max([*ends, report.finished_at or 0.0]) - report.created_at
    first = min(0.0, min(s.start for s in spans) - report.created_at)
    unit = time_unit(max(last - first, 0.0))
    xaxis = nice_ticks(first / unit.seconds, max(last, first) / unit.seconds)
    right = _WIDTH - _RIGHT

    def px(at: float) -> float:
        return _scale((at - report.created_at) / unit.seconds, xaxis, _LANE_LEFT, right)

    lane_h = max(8.0, min(24.0, 360.0 / len(shown)))
    height = _TOP + lane_h * len(shown) + _BOTTOM
    bottom = _TOP + lane_h * len(shown)
    out = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height:.0f}" viewBox="0 0 {_WIDTH} {height:.0f}" role="img" '
        'aria-label="Timeline of workers"><title>Timeline of workers</title>'
    ]
    open_end = report.created_at + last
    drawn = 0
    for index, (worker, lane) in enumerate(shown):
        y = _TOP + index * lane_h
        if index % 2 == 0:
            out.append(
                f'<rect class="lane" x="{_LANE_LEFT}" y="{y:.2f}" '
                f'width="{right - _LANE_LEFT}" height="{lane_h:.2f}"/>'
            )
        label = worker if len(worker) <= _LANE_CHARS else "…" + worker[-(_LANE_CHARS - 1) :]
        out.append(
            f'<text class="worker" x="{_LANE_LEFT - 6}" y="{y + lane_h / 2:.2f}" '
            f'text-anchor="end" dominant-baseline="central">{_e(label)}'
            f"<title>{_e(worker)}</title></text>"
        )
        for bar in _merge_bars(lane, px, open_end):
            x0, x1, outcome, members = bar
            tip = (
                f"task {members[0].task_id}: {outcome}"
                if len(members) == 1
                else f"{plural(len(members), 'attempt')} ({outcome}), tasks "
                f"{members[0].task_id[:8]}… to {members[-1].task_id[:8]}…"
            )
            out.append(
                f'<rect class="attempt a-{_e(outcome)}" x="{x0:.2f}" y="{y + 1:.2f}" '
                f'width="{max(x1 - x0, 1.0):.2f}" height="{max(lane_h - 2, 1):.2f}" '
                f'data-outcome="{_e(outcome)}" data-attempts="{len(members)}">'
                f"<title>{_e(tip)}</title></rect>"
            )
            drawn += len(members)
    out += _x_ticks(xaxis, lambda v: _scale(v, xaxis, _LANE_LEFT, right), bottom=bottom)
    out.append(_line(_LANE_LEFT, bottom, right, bottom, "axis"))
    out.append(
        _text(
            (_LANE_LEFT + right) / 2,
            height - 8,
            f"time since the run was created ({unit.name})",
            "middle",
            "label",
        )
    )
    out.append("</svg>")
    present = sorted({s.outcome for s in spans}, key=lambda o: list(ATTEMPT_COLORS).index(o))
    legend = "".join(
        f'<span style="--c: {ATTEMPT_COLORS[o]}">{_e(o)}</span>'
        for o in present
        if o in ATTEMPT_COLORS
    )
    notes = [f"{plural(len(spans), 'attempt')} on {plural(len(lanes), 'worker')}."]
    if len(lanes) > len(shown):
        notes.append(
            f"Showing the first {MAX_LANES} workers to start; "
            f"{plural(len(spans) - drawn, 'attempt')} on "
            f"{plural(len(lanes) - len(shown), 'other worker')} are in "
            "<code>ds report --trace trace.tsv</code>."
        )
    return (
        "<figure>"
        + "\n".join(out)
        + f'<figcaption class="legend">{legend}</figcaption></figure>'
        + f'\n<p class="note" id="timeline-note">{" ".join(notes)}</p>'
    )


def _merge_bars(
    lane: list[AttemptSpan], px: Callable[[float], float], open_end: float
) -> list[tuple[float, float, str, list[AttemptSpan]]]:
    """The lane's bars ``(x0, x1, outcome, attempts)``: consecutive attempts with the same
    outcome less than a unit apart share one bar, so a worker that ran 10,000 short tasks
    draws a few hundred rectangles, not 10,000."""
    bars: list[tuple[float, float, str, list[AttemptSpan]]] = []
    for span in lane:
        x0 = px(span.start)
        x1 = px(span.end if span.end is not None else max(open_end, span.start))
        if bars and bars[-1][2] == span.outcome and x0 - bars[-1][1] < 1.0:
            b0, b1, outcome, members = bars[-1]
            members.append(span)
            bars[-1] = (b0, max(b1, x1), outcome, members)
        else:
            bars.append((x0, x1, span.outcome, [span]))
    return bars


def _cost_section(report: RunReport) -> str:
    cost = report.cost
    if cost is None:
        note = report.cost_note or "no price is known for this run"
        return f'<p class="note" id="cost-note">Cost not shown: {_e(note)}.</p>'
    # The tasks listed may be a sample of a big run's: the cost counts the priced ones.
    priced = int(cost.get("tasks", sum(1 for t in report.tasks if t.cost_usd is not None)))
    mean = f"; {format_usd(cost['usd'] / priced)} per task on average" if priced else ""
    open_note = (
        f" {plural(int(cost['open_attempts']), 'attempt')} still open "
        f"{'is' if cost['open_attempts'] == 1 else 'are'} not counted."
        if cost.get("open_attempts")
        else ""
    )
    return (
        f'<p id="cost-total">Estimated cost of task time: <strong>{_e(format_usd(cost["usd"]))}'
        f"</strong> for {_e(plural(int(cost['attempts']), 'attempt'))} of "
        f"{_e(plural(priced, 'task'))}{_e(mean)}.{_e(open_note)}</p>"
        f'\n<p class="note" id="cost-basis">Priced at {_e(str(cost["basis"]))}. Each task\'s '
        "cost is in the table of all tasks.</p>"
    )


def _attention_table(report: RunReport) -> str:
    # Dead and failed tasks first, so a run of a million pending tasks still shows them.
    trouble = [t for t in report.tasks if t.outcome in _ATTENTION_ORDER]
    trouble.sort(key=lambda t: _ATTENTION_ORDER[t.outcome])
    if not trouble:
        return '<h2>Tasks needing attention</h2>\n<p class="empty">None.</p>'
    rows = (
        f'<tr><td><code>{_e(t.id)}</code></td><td class="t-{_e(t.outcome)}">{_e(t.outcome)}</td>'
        f'<td class="group"><code>{_e(_group_json(t.group))}</code></td>'
        f'<td class="num">{t.attempts}</td>'
        f"<td>{_e(t.cause or '')}</td>"
        f"<td><pre>{_e(_clip(t.first_error or t.error or '', _ERROR_CHARS))}</pre></td>"
        f"<td>{_log_cell(report, t)}</td></tr>"
        for t in trouble[:MAX_ROWS]
    )
    return (
        _table(
            "Tasks needing attention",
            "attention",
            ("task", "outcome", "group", "attempts", "cause", "error", "log"),
            rows,
            len(trouble) if report.listed_all else sum(_count(report, k) for k in _ATTENTION_ORDER),
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
    return "\t".join(
        (
            _cell(t.id),
            t.outcome,
            str(t.attempts),
            f"{t.duration:.3f}" if t.duration is not None else "",
            str(len(t.outputs)),
            _cell(t.cause) if t.cause else "",
            # JSON (or Python's repr) writes tabs and line breaks escaped: nothing to replace
            _group_text(t.group),
        )
    )


def _cell(value: str) -> str:
    return value.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _failures_section(report: RunReport) -> str:
    """Each failed or dead task: group, cause, the error and first error line, the log tail
    and its whole log (a link, or the command that prints it)."""
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
            ("group", _e(_group_json(t.group))),
            ("outcome", _e(f"{t.outcome} after {plural(t.attempts, 'attempt')}")),
            ("cause", _e(t.cause or "not recorded")),
            ("error", _e(_clip(t.error or "", _ERROR_CHARS))),
            ("log", _log_cell(report, t)),
        ]
        rows = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts)
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
    priced = report.cost is not None
    heads = ["task", "group", "outcome", "attempts", "duration", "outputs", "log"]
    if priced:
        heads.append("cost")

    def row(t: TaskReport) -> str:
        cost = ""
        if priced:
            usd = format_usd(t.cost_usd) if t.cost_usd is not None else ""
            cost = f'<td class="num">{_e(usd)}</td>'
        duration = format_duration(t.duration) if t.duration is not None else ""
        return (
            f"<tr><td><code>{_e(t.id)}</code></td>"
            f'<td class="group"><code>{_e(_group_json(t.group))}</code></td>'
            f'<td class="t-{_e(t.outcome)}">{_e(t.outcome)}{_duplicate_mark(t)}</td>'
            f'<td class="num">{t.attempts}</td>'
            f'<td class="num">{_e(duration)}</td>'
            f'<td class="num">{_outputs_cell(report, t)}</td>'
            f"<td>{_log_cell(report, t)}</td>{cost}</tr>"
        )

    return _table(
        "All tasks",
        "tasks",
        heads,
        (row(t) for t in report.tasks[:MAX_ROWS]),
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
        f'<div class="scroll"><table id="{ident}"><thead><tr>{head}</tr></thead>\n<tbody>\n'
        f"{body}\n</tbody></table></div>{note}"
    )


# --- links ---------------------------------------------------------------------------------


def _location_link(location: str, ident: str) -> str:
    """A location (folder or ``s3://…``) as text, linked where a browser can open it."""
    href = href_of(location)
    if href is None:
        return f'<code id="{ident}">{_e(location)}</code>'
    return f'<a id="{ident}" href="{_e(href)}"><code>{_e(location)}</code></a>'


def _outputs_cell(report: RunReport, task: TaskReport) -> str:
    """The number of outputs, linked to the task's output prefix when its place is known."""
    count = str(len(task.outputs))
    base = (
        report.bucket_locations.get(task.output_bucket, "")
        if task.output_bucket
        else report.outputs_location
    )
    if not task.output_prefix or not base:
        return count
    where, href = links_under(base)(task.output_prefix.rstrip("/") + "/")
    if href is None:
        return f'<span title="{_e(where)}">{count}</span>'
    return f'<a class="outputs" href="{_e(href)}" title="{_e(where)}">{count}</a>'


def _log_cell(report: RunReport, task: TaskReport) -> str:
    """A link to the folder of the task's logs (one file per attempt) where a browser can
    open it (local and Slurm runs), else the command that prints them."""
    if task.attempts == 0 or task.outcome == "skipped":
        return ""
    href = None
    if report.logs_location and not report.logs_location.startswith("s3://"):
        href = links_under(report.logs_location)(task.id + "/")[1]
    command = f"<code>ds logs {_e(task.id[:12])}</code>"
    if href is None:
        return command
    return f'<a class="log" href="{_e(href)}">log</a>'


# --- SVG helpers ---------------------------------------------------------------------------


def _scale(value: float, axis: Ticks, start: float, end: float) -> float:
    """``value`` on ``axis`` mapped linearly to ``start`` (the axis' low) .. ``end``."""
    span = axis.high - axis.low
    return start + (value - axis.low) / span * (end - start) if span else start


def _svg_open(ident: str, label: str) -> str:
    return (
        f'<svg id="{ident}" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>'
    )


def _y_grid(axis: Ticks, py: Callable[[float], float]) -> list[str]:
    out = []
    for value in axis.values:
        y = py(value)
        out.append(_line(_LEFT, y, _LEFT + _PLOT_W, y, "grid"))
        out.append(_ytick(y, axis.label(value)))
    return out


def _x_ticks(
    axis: Ticks, px: Callable[[float], float], *, bottom: float = _TOP + _PLOT_H
) -> list[str]:
    out = []
    for value in axis.values:
        x = px(value)
        out.append(_line(x, bottom, x, bottom + 4, "axis"))
        out.append(_text(x, bottom + 16, axis.label(value), "middle", "xtick"))
    return out


def _axes() -> str:
    bottom = _TOP + _PLOT_H
    return _line(_LEFT, _TOP, _LEFT, bottom, "axis") + _line(
        _LEFT, bottom, _LEFT + _PLOT_W, bottom, "axis"
    )


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line class="{cls}" x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}"/>'


def _text(x: float, y: float, text: str, anchor: str, cls: str) -> str:
    return f'<text class="{cls}" x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}">{_e(text)}</text>'


def _ytick(y: float, label: str) -> str:
    # Centred on its grid line (same y), so a label's y is exactly where its value is drawn.
    return (
        f'<text class="ytick" x="{_LEFT - 6}" y="{y:.2f}" text-anchor="end" '
        f'dominant-baseline="central">{_e(label)}</text>'
    )


def _vertical_label(text: str) -> str:
    x, y = 14, _TOP + _PLOT_H / 2
    return (
        f'<text class="label" x="{x}" y="{y:.2f}" text-anchor="middle" '
        f'transform="rotate(-90 {x} {y:.2f})">{_e(text)}</text>'
    )


# --- formatting ----------------------------------------------------------------------------


def _e(text: str) -> str:
    return escape(text, quote=True)


def _count(report: RunReport, name: str) -> int:
    return int(report.counts.get(name, 0))


def _ok(report: RunReport) -> bool:
    return all(_count(report, k) == 0 for k in ("dead", "failed", "running", "pending"))


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _group_json(group: Any) -> str:
    return _clip(_group_text(group), _GROUP_CHARS)


#: One encoder for every group shown (json.dumps with options makes one per call).
_GROUP_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _group_text(group: Any) -> str:
    try:
        return _GROUP_JSON.encode(group)
    except ValueError:  # circular structures cannot be JSON; show Python's form instead
        return repr(group)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duplicate_mark(task: TaskReport) -> str:
    return ' <span title="completed twice">(duplicate)</span>' if task.duplicate else ""


__all__ = [
    "ATTEMPT_COLORS",
    "COLORS",
    "MAX_BINS",
    "MAX_FAILURES",
    "MAX_LANES",
    "MAX_ROWS",
    "TSV_COLUMNS",
    "histogram_bins",
    "render_html",
    "write_html",
    "write_tsv",
]
