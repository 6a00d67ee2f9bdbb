"""Benchmark `scale`: `ds validate`, `ds submit`, `ds status` and `ds report` at 10,000,
100,000 (and, with ``--million``, 1,000,000) groups on the local backend.

Each size gets a fresh local project in a temporary folder: the `command` recipe
(``true {plate} {well} {output_dir}``, outputs under ``out/{plate}/{well}``) and a DS-format
job file of plates × wells (1,536 wells a plate); and the same groups as a DCP
(Distributed-CellProfiler) job file, the `cellprofiler` recipe, for ``ds validate`` and
``ds submit`` (``validate_dcp``, ``submit_dcp``) and for a submit to the fake SQS and S3
endpoint of bench/fake_sqs.py answering each call after 20 ms (``submit_sqs``: the seconds of
`lifecycle.submit` with validation, in a process of its own whose peak memory is taken).
Then, as users run them, each in its own process: ``ds validate --job``, ``ds setup``,
``ds submit`` (no workers start, so every task stays pending), ``ds status --json``,
``ds report --json``. For each command the wall time
and the peak resident memory of its process (``wait4``'s ``ru_maxrss``) are measured; the
HTML report's size and the TSV beside it are checked.

``ds status`` is also measured once ``--records`` tasks (100,000) have a completed attempt,
written through the real records API (intent, open record, closed record) as workers do:
its first reading (the checkpoint ``ds submit`` wrote, and every task the journal names
since: linear in the tasks changed since the last reading), the next (the ledger summary's
checkpoint), and one after 1,000 more attempts (the checkpoint and the journal since); the
counts are checked against ``ds report``'s, whose time on that finished run is judged at the
largest count measured (``--records 1000000`` measures the million itself: about ten minutes,
most of it writing the records; below a million it is extrapolated linearly).

The figures of each size are kept in bench/scale-results.json (the latest of each size), from
which bench/scale.svg (time and memory against groups, log-log, with lines of linear growth)
and bench/scale.md (the section bench/run_all.py puts in BENCHMARKS.md) are written.

The targets are issue 14's, for 1,000,000 groups on this 2-core machine: validate ≤ 10 s and
≤ 500 MB, submit ≤ 30 s and ≤ 600 MB (in both formats), the fake-SQS submit ≤ 150 s,
status ≤ 1 s, report ≤ 30 s and ≤ 600 MB, HTML ≤ 5 MB.
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
    "validate_dcp": (10.0, 500.0),
    "submit_dcp": (30.0, 600.0),
    "submit_sqs": (150.0, None),
}
HTML_LIMIT_MB = 5.0
BENCH = Path(__file__).resolve().parent
#: The figures of every size measured so far (the latest of each): the plot shows them all,
#: so a run without ``--million`` still plots the last million measured (with its date).
RESULTS = BENCH / "scale-results.json"
PLOT = BENCH / "scale.svg"
#: Markdown that bench/run_all.py puts in BENCHMARKS.md's section of this benchmark.
SECTION = BENCH / "scale.md"
COMMANDS = (
    "validate",
    "submit",
    "status",
    "report",
    "validate_dcp",
    "submit_dcp",
    "submit_sqs",
)
_COLORS = {
    "validate": "#1565c0",
    "submit": "#2e7d32",
    "status": "#6a1b9a",
    "report": "#c62828",
    "validate_dcp": "#42a5f5",
    "submit_dcp": "#81c784",
    "submit_sqs": "#ff8f00",
}
#: The 20 ms fake SQS endpoint of bench/submit.py.
SQS_LATENCY = 0.02


def save_results(
    n: int, results: dict[str, tuple[float, float]], cpu: dict[str, float]
) -> dict[str, Any]:
    """Merge the figures of ``n`` groups (and the CPU seconds of each command) into
    `RESULTS`; returns every size's."""
    saved: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[str(n)] = {
        **{name: list(value) for name, value in results.items()},
        "cpu": {name: round(value, 2) for name, value in cpu.items()},
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
        "size; the million is measured only with `--million`). Wall seconds (CPU seconds of "
        "the process, user + system: the machine is shared, so the wall time also counts other "
        "processes' turns; see the load) / peak MB of the command's process:",
        "",
        f"| groups | {' | '.join(COMMANDS)} | HTML | measured (UTC, load) |",
        "| ---: | " + "---: | " * len(COMMANDS) + "---: | --- |",
    ]
    for n in sizes:
        row = saved[str(n)]
        cpu = row.get("cpu", {})
        cells = [
            f"{row[c][0]:.2f} s"
            + (f" (CPU {cpu[c]:.2f} s)" if c in cpu else "")
            + f" / {row[c][1]:.0f} MB"
            if c in row
            else "–"
            for c in COMMANDS
        ]
        out.append(
            f"| {n:,} | {' | '.join(cells)} | {row['html'][1]:.2f} MB | "
            f"{row['measured']}, {row['load']} |"
        )
    targets = " / ".join(
        f"{c} {t:g} s" + (f", {mb:g} MB" if mb else "") for c, (t, mb) in TARGETS.items()
    )
    out += ["", f"Targets at 1,000,000 (issue 14): {targets}; HTML <= {HTML_LIMIT_MB:g} MB.", ""]
    out += [
        "`validate`, `submit`: a DS-format job of plates × wells, the `command` recipe; "
        "`_dcp`: the same groups as a Distributed-CellProfiler job file (Metadata strings), "
        "the `cellprofiler` recipe; `submit_sqs`: that DCP job submitted to the fake SQS and S3 "
        f"endpoint of bench/fake_sqs.py answering each call after {SQS_LATENCY * 1000:.0f} ms "
        "(seconds of `lifecycle.submit`, validation included; MB of its whole process).",
        "",
    ]
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        growth = ", ".join(
            f"{c} {saved[str(b)][c][0] / max(saved[str(a)][c][0], 1e-9):.1f}x time, "
            f"{saved[str(b)][c][1] / max(saved[str(a)][c][1], 1e-9):.1f}x memory"
            for c in COMMANDS
            if c in saved[str(a)] and c in saved[str(b)]
        )
        out += [f"From {a:,} to {b:,} groups ({b / a:g}x): {growth}.", ""]
    for tasks, records in sorted(records_by_size(saved).items()):
        out += [
            f"`ds status` once {tasks:,} tasks have attempt records (written through "
            f"the records API), and the report of that finished run, measured "
            f"{records['measured']} UTC, load {records['load']}:",
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


def records_by_size(saved: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The `status_with_records` figures kept for each task count (the latest of each; a
    file written before several were kept holds one, with its count in ``tasks``)."""
    kept = saved.get("records") or {}
    if "tasks" in kept:
        return {int(kept["tasks"]): kept}
    return {int(n): figures for n, figures in kept.items()}


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
        x = left + i * 115
        out.append(f'<rect x="{x}" y="{height - 18}" width="12" height="4" fill="{_COLORS[c]}"/>')
        out.append(f'<text x="{x + 16}" y="{height - 12}">{c}</text>')
    out.append(f'<text x="{width - 10}" y="14" text-anchor="end">dotted: linear growth</text>')
    out.append("</svg>")
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


#: The shared keys of the DCP-format job (as bench/submit.py's).
DCP_SHARED = {
    "pipeline": "pipelines/analysis.cppipe",
    "data_file": "csvs/load_data.csv",
    "input": "projects/2024_screen/workspace/",
    "output": "projects/2024_screen/analysis",
    "output_structure": "Metadata_Plate-Metadata_Well",
}


def write_dcp_project(folder: Path, n: int, *, backend: str = "local") -> None:
    """ds.toml (the `cellprofiler` recipe) and job.json in the DCP format: the same plates
    × wells as `write_project`, as Distributed-CellProfiler Metadata strings."""
    folder.mkdir(parents=True)
    storage = '\n[storage]\nbucket = "bench-scale"\n' if backend == "aws" else ""
    (folder / "ds.toml").write_text(
        f'app_name = "ScaleDCP"\nbackend = "{backend}"\n{storage}\n'
        '[recipe]\nname = "cellprofiler"\n'
    )
    with (folder / "job.json").open("w") as fh:
        fh.write(json.dumps(DCP_SHARED)[:-1] + ', "groups": [')
        for i in range(n):
            sep = "," if i else ""
            fh.write(
                f'{sep}{{"Metadata": "Metadata_Plate=P{i // 1536:05d},'
                f'Metadata_Well=W{i % 1536:04d}"}}'
            )
        fh.write("]}")


def put_dcp_inputs(bucket: Path, n: int) -> None:
    """The DCP job's pipeline and LoadData CSV (one row per group) in the local bucket
    folder ``bucket``: `ds submit` checks, as `ds validate` does, that they are in storage
    and that every group selects a row of the CSV."""
    pipeline = bucket / DCP_SHARED["pipeline"]
    pipeline.parent.mkdir(parents=True, exist_ok=True)
    pipeline.write_text("CellProfiler Pipeline: http://www.cellprofiler.org\n")
    data = bucket / DCP_SHARED["data_file"]
    data.parent.mkdir(parents=True, exist_ok=True)
    with data.open("w") as fh:
        fh.write("Metadata_Plate,Metadata_Well,FileName_DNA,PathName_DNA\n")
        for i in range(n):
            plate, well = f"P{i // 1536:05d}", f"W{i % 1536:04d}"
            fh.write(f"{plate},{well},{plate}_{well}.tif,images\n")


def sqs_child(folder: Path, endpoint: str) -> None:
    """In a child process: submit ``folder``'s DCP job to the fake endpoint at ``endpoint``
    as `ds submit` does on AWS (`lifecycle.submit`, validation included, check-if-done off);
    prints the seconds of the submit and the tasks sent as JSON."""
    from fake_sqs import isolate_aws_environment, submit_backend

    isolate_aws_environment(endpoint, folder)
    from distributed_something.backends.aws.clients import AwsSettings, client
    from distributed_something.config.loader import load_config
    from distributed_something.project import Project
    from distributed_something.usecases import lifecycle

    settings = AwsSettings(region="us-east-1")
    project = Project(load_config(folder / "ds.toml"), folder / "ds.toml")
    sqs = client("sqs", settings)
    url = sqs.create_queue(QueueName="scaleQueue")["QueueUrl"]
    dead = sqs.create_queue(QueueName="scaleDeadMessages")["QueueUrl"]
    backend = submit_backend(project, settings, url, dead, project.config.storage.bucket)
    started = time.perf_counter()
    result = lifecycle.submit(
        project, folder / "job.json", backend=backend, show_progress=False, skip_done=False
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "sent": result.sent}))


def submit_sqs(n: int) -> tuple[float, float]:
    """(seconds of the submit, peak MB of its process) of an ``n``-group DCP job sent to the
    20 ms fake SQS endpoint (`sqs_child`); checks every task arrived."""
    from fake_sqs import FakeAwsServer

    with (
        tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp,
        FakeAwsServer(SQS_LATENCY) as server,
    ):
        folder = Path(tmp) / "proj"
        write_dcp_project(folder, n, backend="aws")
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--sqs-child", str(folder), server.url],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the fake-SQS submit failed: {out[-2000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        assert result["sent"] == n, result
        sent = server.stats().get("SendMessageBatch", 0)
        assert sent >= n / 10, sent
        return float(result["seconds"]), usage.ru_maxrss / 1024


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
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss / 1024, text


#: The CPU seconds (user + system) of the last process `ds` or `submit_sqs` ran: on a shared
#: machine the wall time also counts the other processes' turns.
LAST_CPU = [0.0]


def write_attempts(folder: Path, start: int, stop: int) -> float:
    """Give the tasks ``start``..``stop`` (in manifest order) of the project's run a
    completed attempt, through the real records API (intent, open record, then the done
    marker with one output, the closed record and the open one removed), as workers do;
    returns the seconds it took."""
    from distributed_something.backends import open_backend
    from distributed_something.config.loader import load_config
    from distributed_something.project import Project
    from distributed_something.records import Attempt, DoneMarker, RunRecords
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
        prefix = f"out/{start + i}"
        marker = DoneMarker(
            task_id, 1, 0.5, [f"{prefix}/result.txt"], at, at, "bench", prefix, run_id=state.run_id
        )
        records.write(records.closing(attempt, marker))
    return time.perf_counter() - began


def write_attempts_apart(folder: Path, start: int, stop: int) -> float:
    """`write_attempts` in a process of its own: in this one it would grow this process,
    and Linux counts a parent's peak memory at fork in its children's peak (``ru_maxrss``
    is kept across exec), so every `ds` measured after would seem as big."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--write-attempts", str(folder)]
    done = subprocess.run(
        [*argv, str(start), str(stop)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def status_with_records(n: int, tail: int = 1000) -> dict[str, tuple[float, float]]:
    """`ds status` once ``n - tail`` tasks have a completed attempt record: the first reading
    (the checkpoint `ds submit` wrote, and every task named in the journal since), the next
    (the last seconds of the journal listed again: the margin; their tasks are not read
    again, the checkpoint names the intents it counted), and one after ``tail`` more
    attempts; the last checked against `ds report`'s counts."""
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        folder = Path(tmp) / "proj"
        write_project(folder, n)
        ds(folder, "setup")
        ds(folder, "submit", "job.json")
        wrote = write_attempts_apart(folder, 0, n - tail)
        print(f"  (wrote {n - tail:,} attempt records in {wrote:.1f} s)")
        names = (
            f"status, {n - tail:,} tasks changed since the last reading (submit's)",
            "status, the next reading (the last seconds' intents listed again)",
        )
        for name in names:
            seconds, mb, text = ds(folder, "status", "--json")
            assert json.loads(text)["counts"]["done"] == n - tail, text
            out[name] = (seconds, mb)
        write_attempts_apart(folder, n - tail, n)
        seconds, mb, text = ds(folder, "status", "--json")
        counts = json.loads(text)["counts"]
        out[f"status, {tail:,} tasks changed since"] = (seconds, mb)
        # The report of a finished run reads every done marker: timed here, where every
        # task has one (the pending-only runs above read none).
        seconds, mb, text = ds(folder, "report", "--json")
        reported = json.loads(text)["counts"]
        assert counts == reported and counts["done"] == n, (counts, reported)
        out[report_done_name(n)] = (seconds, mb)
    return out


def report_done_name(n: int) -> str:
    return f"report, {n:,} tasks done"


def measure(n: int, cpu: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Every command's (seconds, MB) at ``n`` groups, and the HTML report's size; each
    command's CPU seconds into ``cpu``."""
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        folder = Path(tmp) / "proj"
        write_project(folder, n)
        out["validate"] = ds(folder, "validate", "--job", "job.json")[:2]
        cpu["validate"] = LAST_CPU[0]
        ds(folder, "setup")
        out["submit"] = ds(folder, "submit", "job.json")[:2]
        cpu["submit"] = LAST_CPU[0]
        seconds, mb, text = ds(folder, "status", "--json")
        counts = json.loads(text)["counts"]
        assert counts["total"] == counts["pending"] == n, counts
        out["status"] = (seconds, mb)
        cpu["status"] = LAST_CPU[0]
        # Exit 1: tasks are left without an outcome (none ran), as expected here.
        seconds, mb, text = ds(folder, "report", "--json", ok=(0, 1))
        assert json.loads(text)["counts"]["pending"] == n
        out["report"] = (seconds, mb)
        cpu["report"] = LAST_CPU[0]
        html = folder / ".ds" / "Scale" / "report.html"
        tsv = html.with_suffix(".tsv")
        out["html"] = (0.0, html.stat().st_size / 1e6)
        with tsv.open() as fh:
            rows = sum(1 for _ in fh) - 1
        assert rows == n, (rows, n)
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        folder = Path(tmp) / "dcp"
        write_dcp_project(folder, n)
        out["validate_dcp"] = ds(folder, "validate", "--job", "job.json")[:2]
        cpu["validate_dcp"] = LAST_CPU[0]
        ds(folder, "setup")
        put_dcp_inputs(folder / ".ds" / "ScaleDCP" / "buckets" / "default", n)
        out["submit_dcp"] = ds(folder, "submit", "job.json")[:2]
        cpu["submit_dcp"] = LAST_CPU[0]
        seconds, mb, text = ds(folder, "status", "--json")
        assert json.loads(text)["counts"]["pending"] == n, text
    out["submit_sqs"] = submit_sqs(n)
    cpu["submit_sqs"] = LAST_CPU[0]
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
    parser.add_argument("--sqs-child", nargs=2, metavar=("FOLDER", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--write-attempts", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sqs_child:
        sqs_child(Path(args.sqs_child[0]), args.sqs_child[1])
        return
    if args.write_attempts:
        folder, start, stop = args.write_attempts
        print(write_attempts(Path(folder), int(start), int(stop)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million and MILLION not in sizes:
        sizes.append(MILLION)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="ds-bench-scale-") as tmp:
        base_s, base_mb, _ = ds(Path(tmp), "--help")
    print(f"an idle ds process (ds --help): {base_s:.2f} s {base_mb:.0f} MB")
    worst_met = True
    finished_met = True  # the report of a finished run (with --records)
    status_s = 0.0
    for n in sizes:
        cpu: dict[str, float] = {}
        results = measure(n, cpu)
        scale = MILLION / n
        print(f"\n{n:,} groups")
        for name, (target_s, target_mb) in TARGETS.items():
            seconds, mb = results[name]
            at_m_s = base_s + max(seconds - base_s, 0.0) * scale
            at_m_mb = base_mb + max(mb - base_mb, 0.0) * scale
            ratio_s = target_s / at_m_s if at_m_s else float("inf")
            line = (
                f"  {name:12s} {seconds:7.2f} s (CPU {cpu.get(name, 0.0):6.2f} s) {mb:5.0f} MB"
                f"   at 1M: {at_m_s:7.2f} s "
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
        saved = save_results(n, results, cpu)
        PLOT.write_text(plot_svg(saved))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print(f"\nall sizes measured so far ({RESULTS.name}; plot: {PLOT.name}):")
    for size in sorted(int(k) for k in saved if k.isdigit()):
        row = saved[str(size)]
        figures = "  ".join(
            f"{c} {row[c][0]:.2f} s {row[c][1]:.0f} MB" for c in COMMANDS if c in row
        )
        when = f"{row['measured']} UTC, load {row['load']}"
        print(f"  {size:>9,}  {figures}  html {row['html'][1]:.2f} MB  ({when})")
    if args.records:
        print(f"\nds status with attempt records, {args.records:,} tasks")
        with_records = status_with_records(args.records)
        for name, (seconds, mb) in with_records.items():
            print(f"  {name:34s} {seconds:6.2f} s {mb:6.0f} MB")
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        by_size = {str(n): figures for n, figures in records_by_size(saved).items()}
        by_size[str(args.records)] = {
            "order": list(with_records),
            **{name: list(value) for name, value in with_records.items()},
            "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load": round(os.getloadavg()[0], 2),
        }
        saved["records"] = by_size
        RESULTS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    kept = records_by_size(json.loads(RESULTS.read_text())) if RESULTS.exists() else {}
    if kept:
        # Judged at the largest count measured (a million: as measured; below: extrapolated
        # linearly to a million, as the pending-only report is).
        tasks = max(kept)
        seconds, mb = kept[tasks][report_done_name(tasks)]
        scale = max(MILLION / tasks, 1.0)
        at_m_s = base_s + max(seconds - base_s, 0.0) * scale
        at_m_mb = base_mb + max(mb - base_mb, 0.0) * scale
        target_s, target_mb = TARGETS["report"]
        met = at_m_s <= target_s and target_mb is not None and at_m_mb <= target_mb
        how = "measured" if scale == 1.0 else f"extrapolated from {tasks:,}"
        print(
            f"  report of a finished run at 1M ({how}): {at_m_s:.2f} s {at_m_mb:.0f} MB "
            f"(target {target_s:g} s, {target_mb:g} MB){'' if met else '  (missed)'}"
        )
        finished_met = met
        if tasks >= MILLION:  # every `ds status` reading of that run, as measured
            slow = {
                name: value[0]
                for name, value in kept[tasks].items()
                if name.startswith("status") and value[0] > TARGETS["status"][0]
            }
            for name, seconds in slow.items():
                print(f"  {name}: {seconds:.2f} s (target {TARGETS['status'][0]:g} s)  (missed)")
            finished_met = finished_met and not slow
    SECTION.write_text(section_md(json.loads(RESULTS.read_text())))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    final = json.loads(RESULTS.read_text())
    largest = max((int(k) for k in final if k.isdigit()), default=0)
    if largest and (not sizes or largest > max(sizes)):
        # A larger size was measured before (`--million`): its figures are judged, not an
        # extrapolation from this run's smaller sizes.
        row = final[str(largest)]
        worst_met = row["html"][1] <= HTML_LIMIT_MB and all(
            c in row and row[c][0] <= t and (mb is None or row[c][1] <= mb)
            for c, (t, mb) in TARGETS.items()
        )
    worst_met = worst_met and finished_met
    print(
        f"TARGET met={'yes' if worst_met else 'no'} every figure within issue 14's targets "
        f"(judged at the largest size, {largest:,} groups; below 1M extrapolated linearly)"
    )
    print(
        "LIMIT ds validate and ds submit still plan every task in Python (a few µs a task with "
        "the command and cellprofiler planners: templates compiled once per job) and keep each "
        "group's JSON text and id (about 100 B a task); ds report reads every done marker (a "
        "thousand at a time) and lists every attempt record, so with records it is linear in "
        "them (the pending-only runs read none; the finished run measured with --records "
        "reads them all); a local run of 50,000 tasks or more is read by two processes (the "
        "second half of the manifest in a forked child): its peak MB is the larger one's"
    )
    if not worst_met:
        print(
            "FIX the figure that missed: profile its command at 100,000 groups (python -m "
            "cProfile -m distributed_something …) on an idle machine; the load average is "
            "printed beside each figure"
        )
    if not sizes and args.records:  # only the status with records was measured
        status_s = kept[args.records][f"status, {1000:,} tasks changed since"][0]
    ratio = 1.0 / status_s if status_s else float("inf")
    print(f"RESULT scale ours={status_s:.2f} baseline=1.0 ratio={ratio:.2f} unit=s")


if __name__ == "__main__":
    main()
