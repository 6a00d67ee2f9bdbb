"""Why an attempt failed: one cause per failed attempt, and the error line shown for it.

Pure functions of what the worker observed (exit code, timeout and memory flags, the
exception it caught, the log's text); the worker (`worker.loop`) gathers the observations,
`worker.policy.retry_decision` decides what a cause means for the task.

The causes (docs/design.md §2):

- ``exit``: the command exited with a non-zero code (``exit_code`` says which); also a
  failure of the worker around the command that fits no other cause (``exit_code`` None);
- ``signal``: the command was killed by a signal nobody here sent (``exit_code`` is minus
  the signal number);
- ``timeout``: it ran longer than ``recipe.timeout`` and its process group was killed;
- ``memory``: it was killed for memory: the kernel's OOM killer (the container's limit on
  AWS, a Slurm job's cgroup), or an allocation refused under the worker's local limit;
- ``not_found``: the command or one of its inputs does not exist (or a job value its
  templates need is missing): no retry can change that;
- ``upload``: the outputs could not be stored;
- ``tool``: the command exited 0 but the tool's own report says it failed (CellProfiler's
  done file, Fiji's status file, an invalid OME-Zarr): the recipe's ``check_success``;
- ``interrupted``: the worker was told to stop (spot interruption notice, SIGTERM) and
  handed the task back;
- ``lost``: the worker vanished or lost the lease; another delivery carries the task.
"""

from __future__ import annotations

import errno
import re
import signal

CAUSES = (
    "exit",
    "signal",
    "timeout",
    "memory",
    "not_found",
    "upload",
    "tool",
    "interrupted",
    "lost",
)
#: Causes that are not the task's fault: retried at once, and never use up a retry.
FREE_CAUSES = frozenset({"interrupted", "lost"})

#: A container runtime reports a process killed by SIGKILL as 128 + 9 (e.g. a shell or an
#: init between the worker and the tool, as in ECS's and Docker's exit codes).
SIGKILL_EXIT = 128 + int(signal.SIGKILL)

#: Lines of the log the worker writes itself (headers), never taken as the error line.
OWN_PREFIX = "ds: "

# What tools print when an allocation failed (Python, C/C++, Java, glibc, numpy, R ...).
_OUT_OF_MEMORY = re.compile(
    r"MemoryError|Cannot allocate memory|std::bad_alloc|OutOfMemoryError|out of memory"
    r"|Unable to allocate|cannot allocate vector|memory allocation failed|ENOMEM",
    re.IGNORECASE,
)
# Lines that say an error happened, preferred over whatever came first.
_ERRORISH = re.compile(
    r"error|exception|fatal|failed|failure|cannot|can't|could not|not found|no such"
    r"|denied|killed|abort|panic|invalid|missing|segmentation fault",
    re.IGNORECASE,
)
# Lines that only announce what follows.
_PREAMBLE = re.compile(r"^(Traceback \(most recent call last\):|During handling of|The above)")
MAX_ERROR_CHARS = 500


def classify_run(
    exit_code: int,
    *,
    timed_out: bool = False,
    oom_killed: bool = False,
    out_of_memory: bool = False,
    tool_failed: bool = False,
    start_errno: int | None = None,
) -> str | None:
    """The cause of a command's run, or None when it succeeded.

    - ``start_errno``: the command could not be started (ENOENT, ENOTDIR, EACCES, ENOEXEC:
      ``not_found``; another error: ``exit``);
    - ``timed_out``: we killed it at ``recipe.timeout`` → ``timeout`` (even if it died of
      something else meanwhile: the limit is what the user must change);
    - ``oom_killed``: the kernel's OOM killer ended a process of the task → ``memory``;
    - ``out_of_memory``: under the worker's local memory limit, the log says an allocation
      failed and the command failed → ``memory``;
    - killed by a signal (a negative code, or 137 = SIGKILL through a container runtime)
      → ``signal``; another non-zero code → ``exit``;
    - exit 0 with ``tool_failed`` (the recipe's ``check_success`` refused it) → ``tool``.
    """
    if start_errno is not None:
        missing = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ENOEXEC)
        return "not_found" if start_errno in missing else "exit"
    if timed_out:
        return "timeout"
    if oom_killed and exit_code != 0:
        return "memory"
    if out_of_memory and exit_code != 0:
        return "memory"
    if exit_code < 0:
        return "signal"
    if exit_code != 0:
        return "exit"
    return "tool" if tool_failed else None


def killed_by_sigkill(exit_code: int) -> bool:
    """True when the exit code says SIGKILL: -9 from Python, 137 through a container."""
    return exit_code in (-int(signal.SIGKILL), SIGKILL_EXIT)


def classify_exception(exc: BaseException, phase: str) -> str:
    """The cause of an exception the worker caught while handling a task.

    ``phase`` is where it happened: ``plan`` (the recipe turning the task into a command),
    ``stage`` (downloading inputs), ``run``, ``check`` or ``upload`` (storing outputs and
    the done marker). A missing input (FileNotFoundError, KeyError from storage) and a plan
    the recipe refuses (a job value its templates need is missing: InputError) are
    ``not_found``; anything raised while storing outputs is ``upload``; the rest ``exit``
    (no exit code: the error names the exception).
    """
    from distributed_something.errors import InputError

    if phase == "upload":
        return "upload"
    if isinstance(exc, FileNotFoundError | KeyError):
        return "not_found"
    if phase == "plan" and isinstance(exc, InputError):
        return "not_found"
    return "exit"


def first_meaningful_line(text: str) -> str:
    """The line of a log that best says what went wrong, "" when there is none.

    Our own header lines (``ds: …``) and blank lines are skipped. A Python traceback gives
    its exception line (the first unindented line after ``Traceback …:``). Otherwise the
    first line that reads like an error (error, exception, failed, not found, denied, …)
    wins; without one, the last line printed (a tool's final words). At most
    `MAX_ERROR_CHARS` characters.
    """
    raw = [line.rstrip() for line in text.splitlines()]
    raw = [line for line in raw if line.strip() and not line.startswith(OWN_PREFIX)]
    if not raw:
        return ""
    for index, line in enumerate(raw):
        if line.startswith("Traceback (most recent call last):"):
            exception = next((x for x in raw[index + 1 :] if not x[0].isspace()), None)
            if exception is not None:
                return _clip(exception.strip())
    stripped = [line.strip() for line in raw]
    chosen = next(
        (line for line in stripped if _ERRORISH.search(line) and not _PREAMBLE.match(line)),
        stripped[-1],
    )
    return _clip(chosen)


def out_of_memory_line(text: str) -> str | None:
    """The first line of ``text`` saying an allocation failed, or None."""
    for line in text.splitlines():
        if not line.startswith(OWN_PREFIX) and _OUT_OF_MEMORY.search(line):
            return _clip(line.strip())
    return None


def describe(cause: str, reason: str, line: str) -> str:
    """The error recorded for a failed attempt: the reason the worker or recipe gives
    (``command exited with code 3``) and the first meaningful line of the log, when it adds
    something: ``command exited with code 3: ValueError: bad input``."""
    if not line or line in reason:
        return reason
    if not reason:
        return line
    return f"{reason}: {line}"


def timeout_error(seconds: float) -> str:
    """The error of an attempt killed at its time limit, with the fix."""
    return (
        f"timed out after {_seconds(seconds)} (recipe.timeout): its process group was killed. "
        "Fix: raise recipe.timeout, or split the task into smaller ones"
    )


def memory_error(
    peak_mb: float | None,
    limit_mb: float | None,
    *,
    docker_cores: int,
    per: str = "task",
    detail: str = "",
) -> str:
    """The error of an attempt killed for memory: its peak, the limit (``per`` what it
    applies to: a task process, a container) and the fix."""
    peak = f"peak {peak_mb:,.0f} MB" if peak_mb is not None else "peak unknown"
    limit = f"limit {limit_mb:,.0f} MB per {per}" if limit_mb is not None else "limit unknown"
    share = (
        f" (cluster.memory shared by docker_cores = {docker_cores} processes)"
        if docker_cores > 1
        else ""
    )
    said = f"; the log says: {detail}" if detail else ""
    return (
        f"killed for memory ({peak}, {limit}{share}){said}. Fix: raise cluster.memory or "
        "lower cluster.docker_cores"
    )


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _clip(line: str) -> str:
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
