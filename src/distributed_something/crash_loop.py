"""Workers that fail as fast as they are started: when to stop replacing them.

A cause every worker meets as it starts (a full disk, a scratch folder it cannot make, a
damaged queue file, on a cluster a compute node without the project's Python) would have
the monitor start workers (local processes, Slurm jobs) without end. The computes that
start workers themselves note each that exited with an error and ask `crash_looping`
before starting more; they then stop the run with the cause instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Workers exiting with an error within this many seconds of each other …
CRASH_WINDOW_SECONDS = 60.0
#: … at least this many of them (and at least twice the workers wanted) is a crash loop.
CRASH_MIN_FAILURES = 4


@dataclass(frozen=True)
class WorkerFailure:
    """A worker that exited with an error (`ds worker` exits 2 on bad input, 3 on a backend
    error): when (seconds, by the compute's clock), which, its exit code (None: not known),
    its log file (None: elsewhere) and what was said of its end (e.g. ECS's reason)."""

    at: float
    name: str
    code: int | None
    log: Path | None
    said: str = ""


def crash_looping(
    failures: Sequence[WorkerFailure],
    now: float,
    wanted: int,
    window: float = CRASH_WINDOW_SECONDS,
) -> bool:
    """Whether replacing workers that failed is pointless: at least `CRASH_MIN_FAILURES`,
    and twice the ``wanted`` workers, exited with an error in the last ``window`` seconds.
    Failures spread over a long run are replaced. Pure."""
    recent = sum(1 for f in failures if now - f.at <= window)
    return recent >= max(CRASH_MIN_FAILURES, 2 * wanted)


def crash_loop_message(failures: Sequence[WorkerFailure]) -> str:
    """The error that stops the run: how many failed, the last one, its exit code and its
    log's last line, and the fix."""
    last = failures[-1]
    said = last_line(last.log) if last.log is not None else ""
    ending = f', its log ending "{said}"' if said else ""
    return (
        f"workers keep failing: {len(failures)} exited with an error, the last "
        f"{describe_failure(last)}{ending}. Fix: remove the cause (its log: {last.log}), "
        "then `ds run` again resumes the run (or `ds start-cluster` and `ds monitor`)"
    )


def describe_failure(failure: WorkerFailure) -> str:
    """The failure for people: its name, exit code and what was said, as far as known."""
    code = f" with exit code {failure.code}" if failure.code is not None else ""
    said = f" ({failure.said})" if failure.said else ""
    return f"{failure.name}{code}{said}"


def last_line(path: Path, tail: int = 4096) -> str:
    """The last non-empty line of the file at ``path`` ('' when there is none)."""
    try:
        with path.open("rb") as file:
            file.seek(max(file.seek(0, 2) - tail, 0))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")
