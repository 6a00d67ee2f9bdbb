"""Run every side-by-side benchmark and write BENCHMARKS.md at the repository root.

Usage: ``.venv/bin/python bench/run_all.py [--only submit,cost] [--output FILE]``
(``make bench``). Each benchmark is a script of bench/ run as a subprocess with this
interpreter, one after the other (never at once: they share two cores). A script prints
free lines, ``TARGET met=yes|no …``, ``LIMIT …`` (what limits the result), ``FIX …``
(the product change that would meet a missed target) and, last,
``RESULT <name> ours=<x> baseline=<y> ratio=<baseline/ours> unit=<u>`` — ratio above 1
always means we are better.

BENCHMARKS.md gets the machine (CPU model, cores, RAM, Python, OS, load), the exact
command of each benchmark, the table of RESULT lines with targets and whether each is met,
what limits each result, and each script's full output. Benchmarks are not pass/fail:
the exit status is 1 only when a script fails to produce its RESULT line.

Some baselines install themselves on first use into throwaway venvs under /tmp (the AWS
CLI, Lithops) from PyPI; nothing reaches any address but 127.0.0.1 and PyPI.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    target: str
    better: str  # "lower" or "higher" for ours and baseline; the ratio is always "higher"
    timeout: float = 1800.0


BENCHMARKS = (
    Benchmark("submit", "submit.py", ">= 100x faster; 10,000 tasks in < 2 s", "higher"),
    Benchmark("resubmit", "resubmit.py", ">= 100x faster", "lower"),
    Benchmark("local_dispatch", "local_dispatch.py", "within 1.5x of xargs", "lower"),
    Benchmark("upload", "upload.py", "no slower (ratio >= 1); aim 2x", "lower"),
    Benchmark("footprint", "footprint.py", "worker <= 60 MB; monitor <= 1% of a core", "lower"),
    Benchmark("cost", "cost.py", "tail idle <= 2% of the time paid", "lower"),
    Benchmark("scale", "scale.py", "issue 14's targets at 1M groups; status <= 1 s", "lower"),
    Benchmark("pending_memory", "pending_memory.py", "<= 300 bytes per pending task", "lower"),
    Benchmark("trace_cost", "trace_cost.py", "the trace costs < 2% (ratio >= 0.98)", "lower"),
    Benchmark(
        "slurm_dispatch", "slurm_dispatch.py", "ratio >= 0.9 of a plain sbatch --array", "lower"
    ),
)

RESULT = re.compile(
    r"^RESULT (?P<name>\S+) ours=(?P<ours>\S+) baseline=(?P<baseline>\S+) "
    r"ratio=(?P<ratio>\S+) unit=(?P<unit>\S+)$"
)


@dataclass
class Outcome:
    benchmark: Benchmark
    command: str
    seconds: float
    returncode: int
    lines: list[str]
    stderr: str
    result: dict[str, str] = field(default_factory=dict)
    target: str = ""
    met: str = "?"
    limits: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)


# -- the machine --------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, str]:
    """What the benchmarks ran on, from /proc and platform."""
    cpuinfo = _read("/proc/cpuinfo").splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    model = models[0] if models else (platform.processor() or "unknown")
    logical = sum(1 for line in cpuinfo if line.startswith("processor"))
    meminfo = _read("/proc/meminfo").splitlines()
    mem_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    release = dict(
        line.split("=", 1) for line in _read("/etc/os-release").splitlines() if "=" in line
    )
    os_name = release.get("PRETTY_NAME", "").strip('"') or platform.system()
    return {
        "CPU": model,
        "cores": f"{logical or os.cpu_count()} logical (os.cpu_count() = {os.cpu_count()})",
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "Python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "OS": f"{os_name}; kernel {platform.release()} ({platform.machine()})",
    }


def versions() -> str:
    """Versions of the libraries the benchmarks exercise."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("distributed-something", "boto3", "botocore", "moto"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def revision() -> str:
    """The commit measured, and whether the product's sources differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %s")
    if not commit:
        return "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--", "src")
    return commit + (" — with uncommitted changes under src/" if changed else "")


def load() -> str:
    return " ".join(_read("/proc/loadavg").split()[:3]) or "?"


# -- running ------------------------------------------------------------------------------


def docstring(script: Path) -> str:
    return ast.get_docstring(ast.parse(script.read_text())) or ""


def run(benchmark: Benchmark) -> Outcome:
    script = BENCH / benchmark.script
    argv = [sys.executable, str(script)]
    shown = f"{_relative(Path(sys.executable))} {script.relative_to(REPO)}"
    print(f"== {benchmark.name}: {shown}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=benchmark.timeout
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code = -1
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = f"timed out after {benchmark.timeout:.0f} s"
    seconds = time.monotonic() - started
    lines = [line.rstrip() for line in out.splitlines()]
    outcome = Outcome(benchmark, shown, seconds, code, lines, err)
    nonempty = [line for line in lines if line.strip()]
    match = RESULT.match(nonempty[-1]) if nonempty else None
    if match and match["name"] == benchmark.name:
        outcome.result = match.groupdict()
    for line in lines:
        if line.startswith("TARGET "):
            met, _, text = line.removeprefix("TARGET ").partition(" ")
            outcome.met = "yes" if met == "met=yes" else "no"
            outcome.target = text
        elif line.startswith("LIMIT "):
            outcome.limits.append(line.removeprefix("LIMIT "))
        elif line.startswith("FIX "):
            outcome.fixes.append(line.removeprefix("FIX "))
    status = nonempty[-1] if nonempty else f"no output (exit {code})"
    print(f"   {status}  [{seconds:.0f} s]", flush=True)
    if not outcome.result:
        print(err[-3000:], file=sys.stderr)
    return outcome


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# -- the report ---------------------------------------------------------------------------


def report(outcomes: list[Outcome], info: dict[str, str], loads: tuple[str, str]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run_all.py` (`make bench`) on {now}. Do not edit by hand: run "
        "it again. Each benchmark runs our code and a baseline in the same run, on the same "
        "machine, against servers on 127.0.0.1 only; **ratio > 1 means we are better** "
        "(for times and sizes ratio = baseline / ours; for rates ratio = ours / baseline). "
        "Benchmarks are not part of the test suite's pass/fail. How each works: "
        "`bench/README.md` and each script's docstring (repeated below).",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
    ]
    out += [f"| {key} | {value} |" for key, value in info.items()]
    out += [
        f"| libraries | {versions()} |",
        f"| load average (1, 5, 15 min) | before: {loads[0]}; after: {loads[1]} |",
        "",
        "The machine has 2 cores: servers (moto, the fake SQS/S3 endpoint) and clients share "
        "them, and other work on the machine shows up as noise (see the load average).",
        "",
        "## Results",
        "",
        "| benchmark | ours | baseline | ratio | unit | better | target | met | time |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: |",
    ]
    for o in outcomes:
        r = o.result
        if r:
            out.append(
                f"| `{o.benchmark.name}` | {r['ours']} | {r['baseline']} | **{r['ratio']}** | "
                f"{r['unit']} | {o.benchmark.better} | {o.benchmark.target} | {o.met} | "
                f"{o.seconds:.0f} s |"
            )
        else:
            out.append(
                f"| `{o.benchmark.name}` | – | – | – | – | – | {o.benchmark.target} | failed "
                f"(exit {o.returncode}) | {o.seconds:.0f} s |"
            )
    out += ["", "RESULT lines, as printed:", "", "```"]
    out += [
        " ".join(f"{k}={v}" if k != "name" else f"RESULT {v}" for k, v in o.result.items())
        for o in outcomes
        if o.result
    ]
    out += ["```", ""]
    missed = [o for o in outcomes if o.met != "yes"]
    if missed:
        fixes = any(o.fixes for o in missed)
        heading = "and the product change that would meet them" if fixes else "and what limits them"
        out += [f"## Targets missed, {heading}", ""]
        for o in missed:
            out.append(f"- **{o.benchmark.name}** ({o.target or 'no TARGET line'}).")
            out += [f"  - Limit: {limit}" for limit in o.limits]
            out += [f"  - Fix: {fix}" for fix in o.fixes]
        out.append("")
    out += ["## Each benchmark", ""]
    for o in outcomes:
        out += [
            f"### `{o.benchmark.name}`",
            "",
            f"Command: `{o.command}` (from the repository root; {o.seconds:.0f} s).",
            "",
            f"Target: {o.benchmark.target}. Met: **{o.met}** — {o.target or 'no TARGET line'}.",
            "",
        ]
        section = BENCH / f"{o.benchmark.name}.md"
        if section.exists():  # figures and plots the script wrote for this page
            out += [section.read_text().rstrip("\n"), ""]
        if o.limits:
            out += ["What limits it:", ""] + [f"- {limit}" for limit in o.limits] + [""]
        if o.fixes:
            out += ["Product change suggested:", ""] + [f"- {fix}" for fix in o.fixes] + [""]
        out += ["<details><summary>What it measures (the script's docstring)</summary>", ""]
        out += ["```text", docstring(BENCH / o.benchmark.script), "```", "", "</details>", ""]
        out += ["Output:", "", "```text", *o.lines, "```", ""]
        if not o.result:
            out += ["stderr (end):", "", "```text", o.stderr[-3000:], "```", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    wanted = {name for name in args.only.split(",") if name}
    unknown = wanted - {b.name for b in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    chosen = [b for b in BENCHMARKS if not wanted or b.name in wanted]

    info = machine()
    info["commit measured"] = revision()
    before = load()
    outcomes = [run(benchmark) for benchmark in chosen]
    after = load()
    args.output.write_text(report(outcomes, info, (before, after)) + "\n")
    print(f"wrote {_relative(args.output)}")
    if any(not o.result for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
