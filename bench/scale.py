"""Benchmark `scale`: `ds validate`, `ds submit`, `ds status` and `ds report` at 10,000,
100,000 (and, with ``--million``, 1,000,000) groups on the local backend.

Each size gets a fresh local project in a temporary folder: the `command` recipe
(``true {plate} {well} {output_dir}``, outputs under ``out/{plate}/{well}``) and a DS-format
job file of plates × wells (1,536 wells a plate). Then, as users run them, each in its own
process: ``ds validate --job``, ``ds setup``, ``ds submit`` (no workers start, so every task
stays pending), ``ds status --json``, ``ds report --json``. For each command the wall time
and the peak resident memory of its process (``wait4``'s ``ru_maxrss``) are measured; the
HTML report's size and the TSV beside it are checked.

``ds status`` is also measured once ``--records`` tasks (100,000) have a completed attempt,
written through the real records API (intent, open record, closed record) as workers do:
its first reading (the checkpoint ``ds submit`` wrote, and every task the journal names
since: linear in the tasks changed since the last reading), the next (the ledger summary's
checkpoint), and one after 1,000 more attempts (the checkpoint and the journal since); the
counts are checked against ``ds report``'s.

The figures of each size are kept in bench/scale-results.json (the latest of each size), from
which bench/scale.svg (time and memory against groups, log-log, with lines of linear growth)
and bench/scale.md (the section bench/run_all.py puts in BENCHMARKS.md) are written.

The targets are issue 14's, for 1,000,000 groups on this 2-core machine: validate ≤ 10 s and
≤ 500 MB, submit ≤ 30 s and ≤ 600 MB, status ≤ 1 s, report ≤ 30 s and ≤ 600 MB, HTML ≤ 5 MB.
Sizes below a million are also shown extrapolated linearly to a million (the time and memory
beyond what an idle ``ds`` process takes, measured with ``ds --help``), which is what their
ratios are taken on.

There is no other tool to run beside ours: the baseline is the target itself. RESULT is
``ds status`` at the largest size measured: ours = seconds, baseline = the 1 s target,
ratio = target / ours (above 1: within the target).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MILLION = 1_000_000
#: command → (seconds, MB) at a million groups; None: no memory target
TARGETS: dict[str, tuple[float, float | None]] = {
    "validate": (10.0, 500.0),
    "submit": (30.0, 600.0),
    "status": (1.0, None),
    "report": (30.0, 600.0),
}
HTML_LIMIT_MB = 5.0
BENCH = Path(__file__).resolve().parent
#: The figures of every size measured so far (the latest of each): the plot shows them all,
#: so a run without ``--million`` still plots the last million measured (with its date).
RESULTS = BENCH / "scale-results.json"
PLOT = BENCH / "scale.svg"
#: Markdown that bench/run_all.py puts in BENCHMARKS.md's section of this benchmark.
SECTION = BENCH / "scale.md"
COMMANDS = ("validate", "submit", "status", "report")
_COLORS = {"validate": "#1565c0", "submit": "#2e7d32", "status": "#6a1b9a", "report": "#c62828"}


def save_results(n: int, results: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Merge the figures of ``n`` groups into `RESULTS`; returns every size's."""
    saved: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[str(n)] = {
        **{name: list(value) for name, value in results.items()},
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load": round(os.getloadavg()[0], 2),
    }
    RESULTS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    return saved


def section_md(saved: dict[str, Any]) -> str:
    """BENCHMARKS.md's figures of this benchmark: every size measured, `ds status` with
    attempt records, and the plot."""
    sizes = sorted(int(n) for n in saved if n.isdigit())
    out = [
        "Figures at every size measured so far (`bench/scale-results.json`; the latest of each "
        "size; the million is measured only with `--million`). Seconds / peak MB of the "
        "command's process:",
        "",
        "| groups | validate | submit | status | report | HTML | measured (UTC, load) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for n in sizes:
        row = saved[str(n)]
        cells = [f"{row[c][0]:.2f} s / {row[c][1]:.0f} MB" for c in COMMANDS]
        out.append(
            f"| {n:,} | {' | '.join(cells)} | {row['html'][1]:.2f} MB | "
            f"{row['measured']}, {row['load']} |"
        )
    targets = " / ".join(
        f"{c} {t:g} s" + (f", {mb:g} MB" if mb else "") for c, (t, mb) in TARGETS.items()
    )
    out += ["", f"Targets at 1,000,000 (issue 14): {targets}; HTML <= {HTML_LIMIT_MB:g} MB.", ""]
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        growth = ", ".join(
            f"{c} {saved[str(b)][c][0] / max(saved[str(a)][c][0], 1e-9):.1f}x time, "
            f"{saved[str(b)][c][1] / max(saved[str(a)][c][1], 1e-9):.1f}x memory"
            for c in COMMANDS
        )
        out += [f"From {a:,} to {b:,} groups ({b / a:g}x): {growth}.", ""]
    records = saved.get("records")
    if records:
        out += [
            f"`ds status` once {records['tasks']:,} tasks have attempt records (written through "
            f"the records API), measured {records['measured']} UTC, load {records['load']}:",
            "",
            "| reading | seconds | peak MB |",
            "| --- | ---: | ---: |",
        ]
        for name in records.get("order") or [k for k, v in records.items() if k != "order"]:
            value = records[name]
            if isinstance(value, list):
                out.append(f"| {name} | {value[0]:.2f} | {value[1]:.0f} |")
        out.append("")
    out += [
        "![time and peak memory against groups, log-log; dotted: linear growth](bench/scale.svg)",
        "",
    ]
    return "\n".join(out)


def plot_svg(saved: dict[str, Any]) -> str:
    """Two log-log panels, seconds and peak MB against groups, one line per command, and a
    dotted line of slope 1 (linear growth) through each command's largest size."""
    sizes = sorted(int(n) for n in saved if n.isdigit())
    width, height, left, top, panel_w, panel_h = 900, 380, 70, 40, 330, 270
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for col, (index, label) in enumerate(
        ((0, "time (s), log scale"), (1, "peak memory (MB), log scale"))
    ):
        x0 = left + col * (panel_w + 110)
        values = [saved[str(n)][c][index] for n in sizes for c in COMMANDS if c in saved[str(n)]]
        lo = 10 ** math.floor(math.log10(max(min(values), 1e-3)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        n_lo = 10 ** math.floor(math.log10(sizes[0]))
        n_hi = max(10 ** math.ceil(math.log10(sizes[-1])), n_lo * 10)
        hi = max(hi, lo * 10)

        def px(n: float, x0: float = x0, n_lo: float = n_lo, n_hi: float = n_hi) -> float:
            return x0 + math.log10(n / n_lo) / math.log10(n_hi / n_lo) * panel_w

        def py(v: float, lo: float = lo, hi: float = hi) -> float:
            return top + panel_h - math.log10(max(v, lo) / lo) / math.log10(hi / lo) * panel_h

        out.append(
            f'<rect x="{x0}" y="{top}" width="{panel_w}" height="{panel_h}" fill="none" '
            'stroke="#999"/>'
        )
        out.append(
            f'<text x="{x0 + panel_w / 2}" y="{top - 12}" text-anchor="middle">{label}</text>'
        )
        decade = lo
        while decade <= hi:
            y = py(decade)
            out.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_w}" y2="{y:.1f}" stroke="#eee"/>'
            )
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{decade:g}</text>')
            decade *= 10
        decade = n_lo
        while decade <= n_hi:
            x = px(decade)
            out.append(
                f'<text x="{x:.1f}" y="{top + panel_h + 16}" text-anchor="middle">'
                f"{decade:,.0f}</text>"
            )
            decade *= 10
        out.append(
            f'<text x="{x0 + panel_w / 2}" y="{top + panel_h + 34}" text-anchor="middle">'
            "groups (tasks), log scale</text>"
        )
        for c in COMMANDS:
            points = [(n, saved[str(n)][c][index]) for n in sizes if c in saved[str(n)]]
            if not points:
                continue
            line = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in points)
            color = _COLORS[c]
            out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
            for n, v in points:
                out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
            n_end, v_end = points[-1]
            # Slope 1 on log-log axes is linear growth: the reference the lines should follow.
            ref = [(n, v_end * n / n_end) for n, _ in points]
            ref_line = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in ref if v >= lo)
            out.append(
                f'<polyline points="{ref_line}" fill="none" stroke="{color}" '
                'stroke-dasharray="2,3" stroke-width="1"/>'
            )
    for i, c in enumerate(COMMANDS):
        x = left + i * 150
        out.append(f'<rect x="{x}" y="{height - 18}" width="12" height="4" fill="{_COLORS[c]}"/>')
        out.append(f'<text x="{x + 16}" y="{height - 12}">ds {c}</text>')
    out.append(f'<text x="{left + 600}" y="{height - 12}">dotted: linear growth</text></svg>')
    return "\n".join(out) + "\n"


def write_project(folder: Path, n: int) -> None:
    """ds.toml and job.json (n groups, plates × wells) in ``folder``, the job streamed."""
    folder.mkdir(parents=True)
    (folder / "ds.toml").write_text(
        'app_name = "Scale"\n\n[recipe]\nname = "command"\n'
        'argv = ["true", "{plate}", "{well}", "{output_dir}"]\n'
        'output_prefix = "out/{plate}/{well}"\n'
    )
    with (folder / "job.json").open("w") as fh:
        fh.write('{"groups": [')
        for i in range(n):
            sep = "," if i else ""
            fh.write(f'{sep}{{"plate":"P{i // 1536:05d}","well":"W{i % 1536:04d}"}}')
        fh.write("]}")


def ds(folder: Path, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """Run ``ds ARGS`` in ``folder``; (seconds, peak MB of its process, stdout). An exit code
    outside ``ok`` stops the benchmark."""
    env = {**os.environ, "COLUMNS": "120"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed_something", *args],
            cwd=folder,
            stdout=out,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode not in ok:
        raise SystemExit(f"ds {' '.join(args)} exited {proc.returncode}: {err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, text


def write_attempts(folder: Path, start: int, stop: int) -> float:
    """Give the tasks ``start``..``stop`` (in manifest order) of the project's run a
    completed attempt, through the real records API (intent, open record, closed record),
    as workers would; returns the seconds it took."""
    from distributed_something.backends import open_backend
    from distributed_something.config.loader import load_config
    from distributed_something.project import Project
    from distributed_something.records import Attempt, RunRecords
    from distributed_something.state import load_state

    project = Project(load_config(folder / "ds.toml"), folder / "ds.toml")
    backend = open_backend(project)
    state = load_state(project, backend.storage)
    assert state is not None
    records = RunRecords(backend.storage, project.config.app_name, state.run_id)
    ids = list(records.manifest_ids())[start:stop]
    began = time.perf_counter()
    for i, task_id in enumerate(ids):
        at = time.time()
        attempt = Attempt(task_id, 1, f"bench-{start + i}", "bench", at)
        records.open_attempt(attempt)
        attempt.outcome, attempt.ended_at = "done", at
        records.close_attempt(attempt)
    return time.perf_counter() - began


def status_with_records(n: int, tail: int = 1000) -> dict[str, tuple[float, float]]:
    """`ds status` once ``n - tail`` tasks have a completed attempt record: the first reading
    (the checkpoint `ds submit` wrote, and every task named in the journal since), the next
    (the last seconds of the journal read again: the margin), and one after ``tail`` more
    attempts; the last checked against `ds report`'s counts."""
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        folder = Path(tmp) / "proj"
        write_project(folder, n)
        ds(folder, "setup")
        ds(folder, "submit", "job.json")
        wrote = write_attempts(folder, 0, n - tail)
        print(f"  (wrote {n - tail:,} attempt records in {wrote:.1f} s)")
        names = (
            f"status, {n - tail:,} tasks changed since the last reading (submit's)",
            "status, the next reading (the last seconds' intents read again)",
        )
        for name in names:
            seconds, mb, text = ds(folder, "status", "--json")
            assert json.loads(text)["counts"]["done"] == n - tail, text
            out[name] = (seconds, mb)
        write_attempts(folder, n - tail, n)
        seconds, mb, text = ds(folder, "status", "--json")
        counts = json.loads(text)["counts"]
        out[f"status, {tail:,} tasks changed since"] = (seconds, mb)
        _, _, text = ds(folder, "report", "--json")
        reported = json.loads(text)["counts"]
        assert counts == reported and counts["done"] == n, (counts, reported)
    return out


def measure(n: int) -> dict[str, tuple[float, float]]:
    """Every command's (seconds, MB) at ``n`` groups, and the HTML report's size."""
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        folder = Path(tmp) / "proj"
        write_project(folder, n)
        out["validate"] = ds(folder, "validate", "--job", "job.json")[:2]
        ds(folder, "setup")
        out["submit"] = ds(folder, "submit", "job.json")[:2]
        seconds, mb, text = ds(folder, "status", "--json")
        counts = json.loads(text)["counts"]
        assert counts["total"] == counts["pending"] == n, counts
        out["status"] = (seconds, mb)
        # Exit 1: tasks are left without an outcome (none ran), as expected here.
        seconds, mb, text = ds(folder, "report", "--json", ok=(0, 1))
        assert json.loads(text)["counts"]["pending"] == n
        out["report"] = (seconds, mb)
        html = folder / ".ds" / "Scale" / "report.html"
        tsv = html.with_suffix(".tsv")
        out["html"] = (0.0, html.stat().st_size / 1e6)
        with tsv.open() as fh:
            rows = sum(1 for _ in fh) - 1
        assert rows == n, (rows, n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also measure 1,000,000 groups")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated group counts")
    parser.add_argument(
        "--records",
        type=int,
        default=100_000,
        help="tasks given attempt records for the `ds status` measurement (0: none)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million and MILLION not in sizes:
        sizes.append(MILLION)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        base_s, base_mb, _ = ds(Path(tmp), "--help")
    print(f"an idle ds process (ds --help): {base_s:.2f} s {base_mb:.0f} MB")
    worst_met = True
    status_s = 0.0
    for n in sizes:
        results = measure(n)
        scale = MILLION / n
        print(f"\n{n:,} groups")
        for name, (target_s, target_mb) in TARGETS.items():
            seconds, mb = results[name]
            at_m_s = base_s + max(seconds - base_s, 0.0) * scale
            at_m_mb = base_mb + max(mb - base_mb, 0.0) * scale
            ratio_s = target_s / at_m_s if at_m_s else float("inf")
            line = (
                f"  {name:9s} {seconds:7.2f} s {mb:7.0f} MB   at 1M: {at_m_s:7.2f} s "
                f"{at_m_mb:6.0f} MB   target {target_s:g} s ratio {ratio_s:.2f}"
            )
            met = ratio_s >= 1
            if target_mb is not None:
                ratio_mb = target_mb / at_m_mb
                line += f", {target_mb:g} MB ratio {ratio_mb:.2f}"
                met = met and ratio_mb >= 1
            print(line + ("" if met else "  (missed)"))
            if n == sizes[-1]:  # judged at the largest size: extrapolation only guides
                worst_met = worst_met and met
        html_mb = results["html"][1]
        print(f"  html      {html_mb:.2f} MB (target <= {HTML_LIMIT_MB:g} MB; a TSV of all tasks)")
        worst_met = worst_met and html_mb <= HTML_LIMIT_MB
        status_s = results["status"][0]
        saved = save_results(n, results)
        PLOT.write_text(plot_svg(saved))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print(f"\nall sizes measured so far ({RESULTS.name}; plot: {PLOT.name}):")
    for size in sorted(int(k) for k in saved if k.isdigit()):
        row = saved[str(size)]
        figures = "  ".join(f"{c} {row[c][0]:.2f} s {row[c][1]:.0f} MB" for c in COMMANDS)
        when = f"{row['measured']} UTC, load {row['load']}"
        print(f"  {size:>9,}  {figures}  html {row['html'][1]:.2f} MB  ({when})")
    if args.records:
        print(f"\nds status with attempt records, {args.records:,} tasks")
        with_records = status_with_records(args.records)
        for name, (seconds, mb) in with_records.items():
            print(f"  {name:34s} {seconds:6.2f} s {mb:6.0f} MB")
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        saved["records"] = {
            "tasks": args.records,
            "order": list(with_records),
            **{name: list(value) for name, value in with_records.items()},
            "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load": round(os.getloadavg()[0], 2),
        }
        RESULTS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    SECTION.write_text(section_md(json.loads(RESULTS.read_text())))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    final = json.loads(RESULTS.read_text())
    largest = max((int(k) for k in final if k.isdigit()), default=0)
    if not sizes and largest:  # nothing measured now: judged on the figures kept
        row = final[str(largest)]
        worst_met = row["html"][1] <= HTML_LIMIT_MB and all(
            row[c][0] <= t and (mb is None or row[c][1] <= mb) for c, (t, mb) in TARGETS.items()
        )
    print(
        f"TARGET met={'yes' if worst_met else 'no'} every figure within issue 14's targets "
        f"(judged at the largest size, {largest:,} groups; below 1M extrapolated linearly)"
    )
    print(
        "LIMIT ds validate and ds submit plan every task with the recipe (templates rendered "
        "in Python, tens of µs a task) and hold every Task and TaskPlan in memory (about 1 KB "
        "a task); ds report reads every done marker (one object each) and lists every attempt "
        "record, so with records it is linear in them (the pending-only run here reads none)"
    )
    if not worst_met:
        print(
            "FIX recipes/command.py + templates.py: compile each template once and render it "
            "with one format call; usecases/validate.py + preflight.py: check each plan as it "
            "is made and keep only the sampled ones for the input check; jobs/parse.py + "
            "usecases/lifecycle.py submit: stream tasks from the parsed groups to the manifest "
            "and the queue instead of holding them all"
        )
    if not sizes and args.records:  # only the status with records was measured
        status_s = saved["records"][f"status, {1000:,} tasks changed since"][0]
    ratio = 1.0 / status_s if status_s else float("inf")
    print(f"RESULT scale ours={status_s:.2f} baseline=1.0 ratio={ratio:.2f} unit=s")


if __name__ == "__main__":
    main()
