"""The HTML run report: counts, charts, escaping, edge cases, the row cap, atomic writing."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed_something.report import html
from distributed_something.report.build import RunReport, TaskReport, tally
from distributed_something.report.context import S3_CONSOLE, href_of, join_location, links_under
from distributed_something.report.html import (
    MAX_ROWS,
    TSV_COLUMNS,
    histogram_bins,
    render_html,
    tsv_row,
    write_html,
    write_tsv,
)
from distributed_something.report.scales import nice_ticks, time_unit

CREATED = 1_700_000_000.0
VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "wbr"}


# --- a tiny DOM built with the stdlib parser, which also checks every tag is closed -----------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text() for c in self.children)

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if child.tag == tag and all(
                (v in child.attrs.get("class", "").split())
                if k == "cls"
                else child.attrs.get(k) == v
                for k, v in attrs.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def one(self, tag: str, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]
        self.start_tags: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append(tag)
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append(tag)
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if len(self.stack) == 1 or self.stack[-1].tag != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1].tag}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].texts.append(data)


def parse(page: str) -> TreeBuilder:
    """Parse ``page``, asserting that every opened tag is closed in order."""
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.problems == []
    assert [n.tag for n in builder.stack] == ["#root"], "unclosed tags"
    assert page.startswith("<!DOCTYPE html>")
    return builder


# --- reports built directly ------------------------------------------------------------------


def make_report(
    tasks: list[TaskReport], *, finished_at: float | None = None, app: str = "App"
) -> RunReport:
    counts, stats = tally(tasks)
    return RunReport(
        app_name=app,
        run_id="run-42",
        backend="local",
        created_at=CREATED,
        finished_at=finished_at,
        counts=counts,
        tasks=tasks,
        duration_stats=stats,
    )


def done(tid: str, duration: float, after: float, **kw: Any) -> TaskReport:
    return TaskReport(
        tid, {"n": tid}, "done", 1, duration, [f"out/{tid}.csv"], finished_at=CREATED + after, **kw
    )


def mixed_report() -> RunReport:
    tasks = [
        done("d1", 30.0, 60.0),
        done("d2", 45.0, 120.0, duplicate=True),
        done("d3", 90.0, 300.0),
    ]
    tasks += [TaskReport(f"s{i}", {"n": i}, "skipped", 1) for i in range(2)]
    tasks += [TaskReport("f1", {"n": "f"}, "failed", 2, error="boom")]
    tasks += [TaskReport(f"x{i}", {"n": i}, "dead", 3, error="died") for i in range(4)]
    tasks += [TaskReport(f"p{i}", {"n": i}, "pending", 0) for i in range(5)]
    return make_report(tasks, finished_at=CREATED + 600)


def svg_points(polyline: Node) -> list[tuple[float, float]]:
    return [
        (float(x), float(y)) for x, y in (p.split(",") for p in polyline.attrs["points"].split())
    ]


def ytick_y(svg: Node, value: int) -> float:
    (tick,) = [t for t in svg.find_all("text", cls="ytick") if t.text() == str(value)]
    return float(tick.attrs["y"])


def assert_finite_geometry(root: Node) -> None:
    """Every coordinate of every chart is a finite number (no NaN/inf from a zero division)."""
    for svg in root.find_all("svg"):
        for node in [svg, *(n for tag in ("rect", "line", "text") for n in svg.find_all(tag))]:
            for key in ("x", "y", "x1", "y1", "x2", "y2", "width", "height"):
                if key in node.attrs:
                    assert math.isfinite(float(node.attrs[key])), (node.tag, key)
        for line in svg.find_all("polyline"):
            assert all(math.isfinite(v) for p in svg_points(line) for v in p)


# --- tests -----------------------------------------------------------------------------------


def test_counts_strip_shows_every_count() -> None:
    report = mixed_report()
    root = parse(render_html(report)).root
    expected = {"done": 3, "skipped": 2, "failed": 1, "dead": 4, "pending": 5}
    expected |= {"total": 15, "duplicates": 1}
    for name, value in expected.items():
        box = root.one("div", id=f"count-{name}")
        assert box.one("span", cls="n").text() == str(value)
        assert box.one("span", cls="label").text() == name


def test_header_has_run_identity_and_utc_times() -> None:
    report = mixed_report()
    report.created_at = 0.0
    report.finished_at = 3725.0
    page = render_html(report)
    meta = dict(
        zip(
            (n.text() for n in parse(page).root.find_all("dt")),
            (n.text() for n in parse(page).root.find_all("dd")),
            strict=True,
        )
    )
    assert meta["app"] == "App"
    assert meta["run id"] == "run-42"
    assert meta["backend"] == "local"
    assert meta["created"] == "1970-01-01 00:00:00 UTC"
    assert meta["finished"] == "1970-01-01 01:02:05 UTC"
    assert meta["wall time"] == "1 h 02 min"


def test_unfinished_run_says_so() -> None:
    report = make_report([TaskReport("p", {}, "pending", 0)], finished_at=None)
    root = parse(render_html(report)).root
    dds = [n.text() for n in root.find_all("dd")]
    assert dds.count("not finished") == 2
    assert root.find_all("p", cls="bad")


def test_histogram_bars_match_known_durations() -> None:
    # 8 durations -> Sturges: ceil(log2 8) + 1 = 4 bins of width (10 - 1) / 4 = 2.25:
    # [1, 3.25) holds 1, 1, 1, 2, 3; [3.25, 5.5) holds 4, 5; [5.5, 7.75) is empty; 10 is last.
    durations = [1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0]
    tasks = [done(f"t{i}", d, 60.0 + i) for i, d in enumerate(durations)]
    root = parse(render_html(make_report(tasks))).root
    svg = root.one("svg", id="histogram")
    bars = svg.find_all("rect", cls="bar")
    assert [int(b.attrs["data-count"]) for b in bars] == [5, 2, 0, 1]
    assert_finite_geometry(root)
    heights = [float(b.attrs["height"]) for b in bars]
    assert heights[2] == 0
    assert heights[0] == pytest.approx(5 * heights[3])
    assert heights[1] == pytest.approx(2 * heights[3])
    # Each non-empty bar is labelled with its count.
    assert sorted(t.text() for t in svg.find_all("text", cls="count")) == ["1", "2", "5"]


def test_histogram_bins_rule() -> None:
    assert histogram_bins([]) == []
    assert histogram_bins([7.0, 7.0, 7.0]) == [(7.0, 7.0, 3)]
    bins = histogram_bins([float(i) for i in range(1000)])
    assert len(bins) == 11  # ceil(log2 1000) + 1
    assert sum(c for _, _, c in bins) == 1000
    assert bins[0][0] == 0.0
    assert bins[-1][1] == pytest.approx(999.0)


def test_throughput_polyline_ends_at_number_done() -> None:
    report = mixed_report()
    root = parse(render_html(report)).root
    svg = root.one("svg", id="throughput")
    points = svg_points(svg.one("polyline"))
    assert points[0][1] == pytest.approx(ytick_y(svg, 0))
    assert points[-1][1] == pytest.approx(ytick_y(svg, 3))
    # Cumulative: the line never goes down (SVG y grows downwards) and never goes back in time.
    assert all(b[1] <= a[1] for a, b in itertools.pairwise(points))
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(points))
    # Three finishes make three steps up.
    assert len({y for _, y in points}) == 4


def test_throughput_step_positions_follow_finish_minutes() -> None:
    # Finishes at 1, 2 and 5 minutes; the run ends at 10 minutes: x is linear in minutes.
    report = mixed_report()
    svg = parse(render_html(report)).root.one("svg", id="throughput")
    points = svg_points(svg.one("polyline"))
    x0, x_end = points[0][0], points[-1][0]
    per_minute = (x_end - x0) / 10.0
    rises = [a[0] for a, b in itertools.pairwise(points) if b[1] < a[1]]
    assert rises == pytest.approx([x0 + m * per_minute for m in (1.0, 2.0, 5.0)])


def test_throughput_of_many_tasks_stays_small() -> None:
    # 20,000 finishes over ten minutes: the line merges finishes that share a pixel column.
    tasks = [done(f"t{i}", 1.0, i * 0.03) for i in range(20_000)]
    svg = parse(render_html(make_report(tasks))).root.one("svg", id="throughput")
    points = svg_points(svg.one("polyline"))
    assert len(points) < 3000
    assert points[-1][1] == pytest.approx(ytick_y(svg, 20_000))
    assert all(b[1] <= a[1] for a, b in itertools.pairwise(points))


def reference_throughput_points(report: RunReport) -> list[tuple[float, float]]:
    """The step line as it was first drawn (one `_scale` per finish): the drawing, now
    written for a million finishes, must place every point where this did."""
    finishes = sorted(max(0.0, at - report.created_at) for at in report.all_finish_times)
    end = finishes[-1]
    if report.finished_at is not None:
        end = max(end, report.finished_at - report.created_at)
    unit = time_unit(end)
    xaxis, yaxis = nice_ticks(0.0, end / unit.seconds), nice_ticks(0, len(finishes), integer=True)
    plot_w, plot_h = html._PLOT_W, html._PLOT_H

    def px(seconds: float) -> float:
        return html._scale(seconds / unit.seconds, xaxis, html._LEFT, html._LEFT + plot_w)

    def py(count: float) -> float:
        return html._scale(count, yaxis, html._TOP + plot_h, html._TOP)

    points = [(px(0.0), py(0))]
    for k, second in enumerate(finishes, start=1):
        x = px(second)
        if len(points) > 1 and x - points[-1][0] < 0.5:
            points[-1] = (points[-1][0], py(k))
        else:
            points.append((x, py(k - 1)))
            points.append((x, py(k)))
    if end > finishes[-1]:
        points.append((px(end), py(len(finishes))))
    return [(float(f"{x:.2f}"), float(f"{y:.2f}")) for x, y in points]


@pytest.mark.parametrize("seed", range(6))
def test_throughput_points_are_where_they_always_were(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 7, 300, 5000])
    spread = rng.choice([0.0, 1.0, 600.0, 86_400.0])
    afters = [rng.random() * spread for _ in range(n)]
    afters += [afters[0]] * 3  # ties
    tasks = [done(f"t{i}", 1.0, after) for i, after in enumerate(afters)]
    finished = CREATED + spread * rng.choice([1.0, 1.5]) if seed % 2 else None
    report = make_report(tasks, finished_at=finished)
    svg = parse(render_html(report)).root.one("svg", id="throughput")
    assert svg_points(svg.one("polyline")) == reference_throughput_points(report)


def test_duration_stats_shown() -> None:
    root = parse(render_html(mixed_report())).root
    assert root.one("td", id="stat-min").text() == "30 s"
    assert root.one("td", id="stat-median").text() == "45 s"
    assert root.one("td", id="stat-max").text() == "1 min 30 s"
    assert root.one("td", id="stat-total").text() == "2 min 45 s"


def test_attention_and_full_tables() -> None:
    root = parse(render_html(mixed_report())).root
    attention = root.one("table", id="attention").one("tbody").find_all("tr")
    assert len(attention) == 10  # 1 failed + 4 dead + 5 pending
    first = [td.text() for td in attention[0].find_all("td")]
    assert first == ["f1", "failed", '{"n":"f"}', "2", "", "boom", "ds logs f1"]
    rows = root.one("table", id="tasks").one("tbody").find_all("tr")
    assert len(rows) == 15
    cells = [td.text() for td in rows[1].find_all("td")]
    assert cells == ["d2", '{"n":"d2"}', "done (duplicate)", "1", "45 s", "1", "ds logs d2"]
    assert not root.find_all("p", id="tasks-capped")


def test_user_text_is_escaped() -> None:
    evil = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
    tasks = [
        TaskReport("t<b>1</b>", {"name": evil}, "dead", 3, error=evil),
        done("ok&fine", 2.0, 10.0),
    ]
    page = render_html(make_report(tasks, app=f"App {evil}"))
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&amp;" in page
    assert "&lt;script&gt;" in page
    builder = parse(page)
    assert not {"script", "img", "b"} & set(builder.start_tags)
    # The text survives intact as text: in the title, the header, the group and the error.
    assert f"App {evil}" in builder.root.one("head").one("title").text()
    attention = builder.root.one("table", id="attention").one("tbody").one("tr")
    cells = [td.text() for td in attention.find_all("td")]
    assert cells[0] == "t<b>1</b>"
    assert evil in cells[2]
    assert cells[5] == evil
    assert "ok&fine" in builder.root.one("table", id="tasks").text()


def test_empty_report_renders() -> None:
    report = make_report([], finished_at=None)
    page = render_html(report)
    root = parse(page).root
    assert root.find_all("svg") == []
    assert root.one("div", id="count-total").one("span", cls="n").text() == "0"
    text = root.text()
    assert "No task durations recorded." in text
    assert "No task finished in this run yet." in text
    assert "No tasks were submitted." in text
    # The verdict said "Every task is done or skipped." of a run without any task.
    assert "Every task is done" not in text and not root.find_all("p", cls="ok")
    assert "No tasks were submitted to this run." in text


def test_single_task_report_renders_without_zero_division() -> None:
    # Finished at the very instant the run was created: zero time span, one duration.
    task = done("only", 5.0, 0.0)
    report = make_report([task], finished_at=CREATED)
    page = render_html(report)
    root = parse(page).root
    bars = root.one("svg", id="histogram").find_all("rect", cls="bar")
    assert [b.attrs["data-count"] for b in bars] == ["1"]
    svg = root.one("svg", id="throughput")
    points = svg_points(svg.one("polyline"))
    assert points[-1][1] == pytest.approx(ytick_y(svg, 1))
    assert_finite_geometry(root)


def test_row_cap_note_when_exceeded() -> None:
    tasks = [TaskReport(f"p{i}", {"i": i}, "pending", 0) for i in range(MAX_ROWS + 7)]
    root = parse(render_html(make_report(tasks))).root
    for ident in ("tasks", "attention"):
        rows = root.one("table", id=ident).one("tbody").find_all("tr")
        assert len(rows) == MAX_ROWS
        note = root.one("p", id=f"{ident}-capped").text()
        assert f"first {MAX_ROWS} of {MAX_ROWS + 7}" in note
        assert "7 more" in note


def test_write_html_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run.html"
    first = make_report([done("a", 1.0, 5.0)], app="First")
    assert write_html(first, target) == target
    assert "First" in target.read_text(encoding="utf-8")
    second = mixed_report()
    write_html(second, target)
    assert target.read_text(encoding="utf-8") == render_html(second)
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.html"]


def test_report_json_is_what_asdict_gives_and_round_trips() -> None:
    import dataclasses
    import json

    tasks = [
        TaskReport("a", {"plate": "P1", "sites": [1, 2]}, "done", 1, 2.5, ["out/a.csv"]),
        TaskReport("b", {"plate": "P2"}, "dead", 3, error="exit 7"),
        TaskReport("c", None, "pending", 0),
    ]
    counts, stats = tally(tasks)
    report = RunReport("App", "r1", "local", 1.0, 9.0, counts, tasks, stats)
    data = report.to_json()
    # Everything but the durations and finish times of every done task (for plots) and the
    # timeline (one entry per attempt: `ds report --trace` has them), and whether the
    # `ds run` that made it saw its run cleaned up from elsewhere (about that watch).
    left_out = ("durations", "finish_times", "timeline", "ended_elsewhere")
    assert data == {k: v for k, v in dataclasses.asdict(report).items() if k not in left_out}
    assert json.loads(json.dumps(data, separators=(",", ":"))) == data


def test_failures_section_shows_group_cause_first_error_and_log_tail() -> None:
    tail = "ds: task t1 attempt 3 on w\nreading <f07>\nERROR: empty file f07.txt\n"
    failed = TaskReport(
        "t1",
        {"name": "f07"},
        "dead",
        3,
        error="command exited with code 1",
        cause="exit",
        first_error="ERROR: empty file f07.txt",
        log_tail=tail,
    )
    root = parse(render_html(make_report([failed, done("ok", 1.0, 2.0)]))).root
    row = root.one("table", id="attention").one("tbody").one("tr")
    cells = [td.text() for td in row.find_all("td")]
    assert cells == [
        "t1",
        "dead",
        '{"name":"f07"}',
        "3",
        "exit",
        "ERROR: empty file f07.txt",
        "ds logs t1",
    ]
    section = root.one("div", id="failure-t1")
    text = section.text()
    assert '{"name":"f07"}' in text and "exit" in text and "command exited with code 1" in text
    assert section.one("p", cls="first").text() == "ERROR: empty file f07.txt"
    assert section.one("pre").text() == tail  # escaped markup comes back as the same text


def test_failures_section_is_capped_and_absent_without_failures() -> None:
    from distributed_something.report.html import MAX_FAILURES

    many = [TaskReport(f"x{i}", {"i": i}, "dead", 1, error="e") for i in range(MAX_FAILURES + 3)]
    root = parse(render_html(make_report(many))).root
    assert len(root.find_all("div", cls="failure")) == MAX_FAILURES
    assert root.one("p", id="failures-capped")
    page = render_html(make_report([done("ok", 1.0, 2.0)]))
    assert 'id="failures"' not in page


def test_dead_and_failed_tasks_come_first_among_many_pending() -> None:
    tasks = [TaskReport(f"p{i}", {"i": i}, "pending", 0) for i in range(MAX_ROWS + 3)]
    tasks.append(TaskReport("f1", {"n": "f"}, "failed", 2, error="boom"))
    tasks.append(TaskReport("d1", {"n": "d"}, "dead", 3, error="gone"))
    root = parse(render_html(make_report(tasks))).root
    rows = root.one("table", id="attention").one("tbody").find_all("tr")
    assert [r.find_all("td")[0].text() for r in rows[:2]] == ["f1", "d1"]
    note = root.one("p", id="attention-capped").text()
    assert "report.tsv" in note


def test_the_tsv_beside_the_page_lists_every_task(tmp_path: Path) -> None:
    tasks = [TaskReport(f"p{i}", {"i": i, "s": "a\tb"}, "pending", 0) for i in range(MAX_ROWS + 3)]
    tasks.append(TaskReport("d1", {"n": "d"}, "dead", 3, duration=1.5, cause="exit"))
    path = write_tsv(make_report(tasks), tmp_path / "report.tsv")
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(TSV_COLUMNS)
    assert len(lines) == len(tasks) + 1
    assert lines[-1].split("\t") == ["d1", "dead", "3", "1.500", "0", "exit", '{"n":"d"}']
    assert all(len(line.split("\t")) == len(TSV_COLUMNS) for line in lines)
    # Tabs and line breaks anywhere come out as spaces or escaped: one line, seven cells.
    odd = TaskReport("x\ty\n", {"s": "l1\nl2\r\tz"}, "failed", 1, cause="exit\r\n2")
    assert tsv_row(odd).split("\t") == [
        "x y ",
        "failed",
        "1",
        "",
        "0",
        "exit  2",
        r'{"s":"l1\nl2\r\tz"}',
    ]


# --- axes, units, words, links, timeline and cost (issues 12 and 15) -------------------------


def xtick_labels(svg: Node) -> list[str]:
    return [t.text() for t in svg.find_all("text", cls="xtick")]


def test_histogram_ticks_are_distinct_for_close_durations() -> None:
    # Durations of 1.50-1.55 s once gave ticks that all read "1.5s".
    tasks = [done(f"t{i}", 1.50 + i * 0.005, 10.0 + i) for i in range(11)]
    svg = parse(render_html(make_report(tasks))).root.one("svg", id="histogram")
    ticks = xtick_labels(svg)
    assert ticks == ["1.50", "1.52", "1.54", "1.56"]
    assert "task duration (s)" in svg.text()
    assert [t.text() for t in svg.find_all("text", cls="ytick")] == ["0", "1", "2", "3"]


def test_short_run_throughput_reads_in_seconds_with_plural_words() -> None:
    # Six tasks done within 3.2 s (the quickstart): the axis once read "0.0 0.0 0.0 0.0 0.1".
    tasks = [done(f"t{i}", 0.4, 0.5 + i * 0.54) for i in range(6)]
    report = make_report(tasks, finished_at=CREATED + 3.2)
    root = parse(render_html(report)).root
    svg = root.one("svg", id="throughput")
    assert xtick_labels(svg) == ["0", "1", "2", "3", "4"]
    assert "time since the run was created (s)" in svg.text()
    note = root.one("p", id="throughput-note").text()
    assert note.startswith("6 tasks done in 3.2 s; average throughput 1.87 tasks/s")
    one = parse(render_html(make_report([done("a", 1.0, 90.0)]))).root
    assert one.one("p", id="throughput-note").text().startswith("1 task done in 1 min 30 s")


def test_long_run_throughput_reads_in_hours() -> None:
    tasks = [done(f"t{i}", 60.0, 3600.0 * i) for i in range(1, 6)]
    svg = parse(render_html(make_report(tasks))).root.one("svg", id="throughput")
    assert xtick_labels(svg) == ["0", "1", "2", "3", "4", "5"]
    assert "(h)" in svg.text()


def test_failures_say_attempts_in_singular_and_plural() -> None:
    once = TaskReport("a", {}, "dead", 1, error="e")
    thrice = TaskReport("b", {}, "dead", 3, error="e")
    text = parse(render_html(make_report([once, thrice]))).root.one("div", id="failure-a").text()
    assert "dead after 1 attempt" in text and "attempt(s)" not in text
    text = parse(render_html(make_report([once, thrice]))).root.one("div", id="failure-b").text()
    assert "dead after 3 attempts" in text


def test_local_outputs_and_logs_are_file_links(tmp_path: Path) -> None:
    report = mixed_report()
    report.outputs_location = str(tmp_path / "bucket")
    report.logs_location = str(tmp_path / "bucket" / "_ds" / "App" / "runs" / "run-42" / "logs")
    report.tasks[0].output_prefix = "out/d1"
    root = parse(render_html(report)).root
    assert root.one("a", id="outputs-location").attrs["href"] == (tmp_path / "bucket").as_uri()
    row = root.one("table", id="tasks").one("tbody").find_all("tr")[0]
    link = row.one("a", cls="outputs")
    assert link.attrs["href"] == (tmp_path / "bucket" / "out" / "d1").as_uri() + "/"
    assert link.text() == "1"
    log = row.one("a", cls="log")
    assert log.attrs["href"] == Path(report.logs_location, "d1").as_uri() + "/"
    # A pending task never ran: no log to link.
    pending = [r for r in root.one("table", id="tasks").find_all("tr") if "p0" in r.text()]
    assert pending[0].find_all("td")[-1].text() == ""


def test_s3_outputs_link_to_the_console_and_logs_name_the_command() -> None:
    report = mixed_report()
    report.backend = "aws"
    report.outputs_location = "s3://my-results/"
    report.logs_location = "s3://my-bucket/_ds/App/runs/run-42/logs/"
    report.tasks[0].output_prefix = "projects/P 1/out/d1"
    root = parse(render_html(report)).root
    head = root.one("a", id="outputs-location")
    assert head.attrs["href"] == S3_CONSOLE + "my-results"
    assert head.text() == "s3://my-results/"
    row = root.one("table", id="tasks").one("tbody").find_all("tr")[0]
    link = row.one("a", cls="outputs")
    assert link.attrs["href"] == S3_CONSOLE + "my-results?prefix=projects/P%201/out/d1/"
    assert link.attrs["title"] == "s3://my-results/projects/P 1/out/d1/"
    assert row.find_all("td")[-1].text() == "ds logs d1"
    assert not root.find_all("a", cls="log")


def test_outputs_a_recipe_sent_to_a_bucket_of_its_own_link_to_that_bucket() -> None:
    report = mixed_report()
    report.backend = "aws"
    report.outputs_location = "s3://my-results/"
    report.bucket_locations = {"lab-zarr": "s3://lab-zarr/"}
    report.tasks[0].output_prefix = "zarr/P1.ome.zarr"
    report.tasks[0].output_bucket = "lab-zarr"
    row = parse(render_html(report)).root.one("table", id="tasks").one("tbody").find_all("tr")[0]
    link = row.one("a", cls="outputs")
    assert link.attrs["href"] == S3_CONSOLE + "lab-zarr?prefix=zarr/P1.ome.zarr/"
    # A bucket whose place is unknown gets no link rather than a wrong one.
    report.bucket_locations = {}
    row = parse(render_html(report)).root.one("table", id="tasks").one("tbody").find_all("tr")[0]
    assert not row.find_all("a", cls="outputs")


def span(worker: str, task: str, start: float, end: float | None, outcome: str) -> Any:
    from distributed_something.report.build import AttemptSpan

    return AttemptSpan(
        worker, task, CREATED + start, None if end is None else CREATED + end, outcome
    )


def test_timeline_has_a_lane_per_worker_and_a_bar_per_attempt() -> None:
    report = mixed_report()
    report.timeline = [
        span("host-1", "d1", 10.0, 70.0, "done"),
        span("host-2", "f1", 20.0, 50.0, "failed"),
        span("host-2", "x0", 200.0, 260.0, "dead"),
        span("host-1", "d3", 250.0, None, "running"),
    ]
    root = parse(render_html(report)).root
    svg = root.one("svg", id="timeline")
    assert [t.text() for t in svg.find_all("text", cls="worker")] == [
        "host-1host-1",
        "host-2host-2",
    ]
    bars = svg.find_all("rect", cls="attempt")
    assert [b.attrs["data-outcome"] for b in bars] == ["done", "running", "failed", "dead"]
    x = {b.attrs["data-outcome"]: float(b.attrs["x"]) for b in bars}
    w = {b.attrs["data-outcome"]: float(b.attrs["width"]) for b in bars}
    # Linear in time: the done bar (60 s) is twice as wide as the failed one (30 s).
    assert w["done"] == pytest.approx(2 * w["failed"])
    assert x["dead"] - x["done"] == pytest.approx(w["done"] / 60 * 190)
    # The open attempt runs to the end of the run (600 s after its creation).
    assert x["running"] + w["running"] == pytest.approx(x["done"] + w["done"] / 60 * 590)
    assert_finite_geometry(root)
    legend = root.one("figcaption").text()
    assert legend == "donefaileddeadrunning"
    assert root.one("p", id="timeline-note").text() == "4 attempts on 2 workers."


def test_timeline_merges_short_attempts_and_caps_lanes() -> None:
    from distributed_something.report.html import MAX_LANES

    many = [span("w", f"t{i}", i * 0.01, i * 0.01 + 0.009, "done") for i in range(5000)]
    many.append(span("w", "late", 3000.0, 3001.0, "failed"))
    many += [span(f"x{i:03d}", f"y{i}", 1.0, 2.0, "done") for i in range(MAX_LANES + 5)]
    report = mixed_report()
    report.timeline = many
    root = parse(render_html(report)).root
    svg = root.one("svg", id="timeline")
    bars = svg.find_all("rect", cls="attempt")
    assert len(svg.find_all("text", cls="worker")) == MAX_LANES
    lane_w = next(b for b in bars if b.attrs["data-outcome"] == "done")
    assert int(lane_w.attrs["data-attempts"]) == 5000  # one bar for 5,000 short attempts
    note = root.one("p", id="timeline-note").text()
    assert f"Showing the first {MAX_LANES} workers" in note
    assert "6 other workers" in note and "6 attempts" in note


def test_timeline_note_when_attempts_were_not_read() -> None:
    report = mixed_report()
    report.timeline_note = "this run has 30,000 attempts; the report reads at most 20,000"
    root = parse(render_html(report)).root
    assert not root.find_all("svg", id="timeline")
    assert "30,000 attempts" in root.one("p", id="timeline-note").text()


def test_cost_is_shown_per_run_and_per_task_when_priced() -> None:
    report = mixed_report()
    report.cost = {
        "usd": 0.035,
        "usd_per_hour": 0.1,
        "slots": 4,
        "attempts": 4,
        "open_attempts": 1,
        "basis": "aws.machine_price $0.1/h shared by 4 task slots per machine",
    }
    for task, usd in zip(report.tasks[:3], (0.01, 0.02, 0.005), strict=True):
        task.cost_usd = usd
    root = parse(render_html(report)).root
    total = root.one("p", id="cost-total")
    assert total.one("strong").text() == "$0.04"
    assert "for 4 attempts of 3 tasks; $0.01 per task on average." in total.text()
    assert "1 attempt still open is not counted." in total.text()
    assert "4 task slots" in root.one("p", id="cost-basis").text()
    heads = [th.text() for th in root.one("table", id="tasks").find_all("th")]
    assert heads[-1] == "cost"
    rows = root.one("table", id="tasks").one("tbody").find_all("tr")
    assert [r.find_all("td")[-1].text() for r in rows[:4]] == ["$0.01", "$0.02", "$0.0050", ""]


def test_cost_is_omitted_with_a_reason_when_unpriced() -> None:
    report = mixed_report()
    report.cost_note = "no price is known for the local backend: cost is shown for AWS runs only"
    root = parse(render_html(report)).root
    assert root.one("p", id="cost-note").text() == (
        "Cost not shown: no price is known for the local backend: cost is shown for AWS runs only."
    )
    assert "cost" not in [th.text() for th in root.one("table", id="tasks").find_all("th")]
    assert not root.find_all("p", id="cost-total")


def test_page_is_built_for_small_screens() -> None:
    page = render_html(mixed_report())
    root = parse(page).root
    assert (
        root.one("meta", name="viewport").attrs["content"] == "width=device-width, initial-scale=1"
    )
    for ident in ("tasks", "attention"):
        wrapper = [d for d in root.find_all("div", cls="scroll") if d.find_all("table", id=ident)]
        assert len(wrapper) == 1
    assert "@media (max-width: 600px)" in page
    assert "overflow-x: auto" in page


_BASES = [
    "/",
    "/tmp/b",
    "/tmp/b/",
    "/tmp/a b/%20é",
    "//tmp//b/./c/",
    "rel/folder",
    "",
    "s3://bk/p/",
]
_KEY_PARTS = st.sampled_from(["a", "b c", "é", "%", "#?&", ".", "..", "", "x.y", "☃", "\udcff"])


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(_BASES),
    parts=st.lists(_KEY_PARTS, min_size=0, max_size=4),
    lead=st.sampled_from(["", "/", "//"]),
    tail=st.sampled_from(["", "/", "//"]),
)
def test_links_under_a_base_are_those_made_one_by_one(
    base: str, parts: list[str], lead: str, tail: str
) -> None:
    # The report links each task through `links_under` (the base worked out once): every
    # key must give exactly the location and link `join_location` and `href_of` give.
    key = lead + "/".join(parts) + tail
    where = join_location(base, key)
    try:
        expected = (where, href_of(where))
    except UnicodeEncodeError:  # a name that is not UTF-8 in an S3 link: raised the same
        with pytest.raises(UnicodeEncodeError):
            links_under(base)(key)
        return
    assert links_under(base)(key) == expected, (base, key)
