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

# What tools print when an allocation failed (Python, C/C++, Java, the JVM itself, glibc,
# numpy, R, Rust, Node …). Exception names must stand alone: a command line echoing
# `-XX:+ExitOnOutOfMemoryError` says nothing of memory.
_OUT_OF_MEMORY = re.compile(
    r"\bMemoryError\b|\bOutOfMemoryError\b|Cannot allocate memory|std::bad_alloc"
    r"|\bout of memory\b|Unable to allocate|cannot allocate vector|memory allocation failed"
    r"|memory allocation of \d+ bytes failed|insufficient memory for the Java Runtime"
    r"|\bENOMEM\b|\berrno=12\b",
    re.IGNORECASE,
)
#: The last lines of a log where a failed allocation is looked for: it ends the run.
OUT_OF_MEMORY_LINES = 40
# Lines that state an error outright: a log level (ERROR, FATAL …), "error:" / "fatal:", or
# an exception's name ending the line or followed by its message (ValueError: …).
_STATED = re.compile(
    r"\b(?:ERROR|FATAL|CRITICAL|PANIC)\b"
    r"|(?i:\b(?:error|fatal|panic)\s*:)"
    r"|\b[A-Z]\w*(?:Error|Exception)(?::|$)"
)
# Lines that say an error happened.
_ERRORISH = re.compile(
    r"error|exception|fatal|fail|cannot|can't|could not|couldn't|unable to|not found"
    r"|no such|denied|refused|killed|abort|panic|invalid|missing|segmentation fault"
    r"|out of memory",
    re.IGNORECASE,
)
# Lines that count errors and found none ("checked 12 inputs: 0 errors").
_NO_ERRORS = re.compile(
    r"\b(?:0|no|zero|without)\s+(?:errors?|failures?|exceptions?)\b", re.IGNORECASE
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


def first_meaningful_line(text: str, *, last_words: bool = True) -> str:
    """The line of a log that best says what went wrong, "" when there is none.

    Our own header lines (``ds: …``) and blank lines are skipped. A Python traceback gives
    its exception line (the first unindented line after ``Traceback …:``). Otherwise the
    first line that states an error (``ERROR …``, ``error:``, ``ValueError: …``) wins, the
    root cause before its consequences; else the last line that reads like one (failed,
    not found, denied, aborting …: the words before the exit), passing over lines that
    count no errors ("0 errors"); else, with ``last_words``, the last line printed (a
    tool's final words). At most `MAX_ERROR_CHARS` characters.
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
    lines = [line.strip() for line in raw]
    candidates = [line for line in lines if not _PREAMBLE.match(line)]
    stated = next((line for line in candidates if _STATED.search(line)), None)
    if stated is not None:
        return _clip(stated)
    errorish = [
        line for line in candidates if _ERRORISH.search(line) and not _NO_ERRORS.search(line)
    ]
    if errorish:
        return _clip(errorish[-1])
    return _clip(lines[-1]) if last_words else ""


def out_of_memory_line(text: str) -> str | None:
    """The first line of the last `OUT_OF_MEMORY_LINES` of ``text`` saying an allocation
    failed, or None."""
    lines = [line for line in text.splitlines() if not line.startswith(OWN_PREFIX)]
    for line in lines[-OUT_OF_MEMORY_LINES:]:
        if _OUT_OF_MEMORY.search(line):
            return _clip(line.strip())
    return None


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 64`` for a number without a name here."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def command_ended(what: str, exit_code: int) -> str:
    """How ``what`` (``command``, ``the OME-Zarr converter`` …) ended: ``exited with code
    3``, or for a negative code ``was killed by signal 9 (SIGKILL)``."""
    if exit_code < 0:
        return f"{what} was killed by signal {-exit_code} ({signal_name(-exit_code)})"
    return f"{what} exited with code {exit_code}"


_START_FIXES = {
    errno.ENOENT: "install it, or give its full path as the command's first word",
    errno.ENOTDIR: "check the program's path: a part of it is not a folder",
    errno.EACCES: "make it executable (chmod +x), or run it with its interpreter",
    errno.ENOEXEC: (
        "give the script a #! first line (e.g. #!/bin/sh) or run it with its interpreter; "
        "a program must be built for this machine"
    ),
}


def start_failure(error: str, start_errno: int | None) -> str:
    """The error of a command that could not be started (``error``: the runner's ``cannot
    start 'x': Permission denied``), with the fix its errno calls for: the program never
    ran, so no exit code is named."""
    fix = _START_FIXES.get(start_errno) if start_errno is not None else None
    return f"{error}. Fix: {fix}" if fix else error


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
    killed: bool = True,
) -> str:
    """The error of an attempt that ran out of memory: ``killed`` by the kernel's OOM
    killer (or the container's limit), else an allocation the limit refused (the tool
    said so and exited); its peak, the limit (``per`` what it applies to: a task process, a
    container) and the fix."""
    peak = f"peak {peak_mb:,.0f} MB" if peak_mb is not None else "peak unknown"
    limit = f"limit {limit_mb:,.0f} MB per {per}" if limit_mb is not None else "limit unknown"
    share = (
        f" (cluster.memory shared by docker_cores = {docker_cores} processes)"
        if docker_cores > 1
        else ""
    )
    said = f"; the log says: {detail}" if detail else ""
    what = "killed for memory" if killed else "out of memory: an allocation was refused"
    return (
        f"{what} ({peak}, {limit}{share}){said}. Fix: raise cluster.memory or "
        "lower cluster.docker_cores"
    )


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _clip(line: str) -> str:
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
