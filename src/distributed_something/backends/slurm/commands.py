"""Slurm's client commands (sbatch, squeue, scancel, scontrol, sacct), called without a
shell and parsed. Nothing here knows about tasks; `compute.SlurmCompute` does."""

from __future__ import annotations

import getpass
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distributed_something.errors import BackendError

#: Slurm's default MaxArraySize (the largest array index is one less)
DEFAULT_MAX_ARRAY_SIZE = 1001
#: states in which a job still runs, or may (squeue lists only those by default; squeue(1),
#: JOB STATE CODES)
LIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "RESV_DEL_HOLD",
        "SIGNALING",
        "SPECIAL_EXIT",
        "STAGE_OUT",
        "STOPPED",
    }
)
#: how a Slurm job ends when Slurm kills it (not our scancel, not the worker's exit)
KILLED_STATES = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE"})
#: the states a job has once it ended (squeue(1), JOB STATE CODES): anything else a source
#: says of a job gone from squeue is not yet its end (slurmdbd records ends late: sacct still
#: says RUNNING for a while after the job ended)
FINAL_STATES = KILLED_STATES | {"BOOT_FAIL", "CANCELLED", "COMPLETED", "FAILED", "REVOKED"}

_TIMEOUT = 60.0
#: commands asked again when the controller does not answer: they change nothing, or do
#: the same again (a second scancel of a job cancels nothing more). Never sbatch: one that
#: timed out may have submitted its job.
_REPEATABLE = frozenset({"squeue", "sacct", "scontrol", "sinfo", "scancel"})
#: what a busy controller (or slurmdbd) answers for a while, then not: asked again
_TRANSIENT = (
    "socket timed out",
    "unable to contact slurm controller",
    "connection refused",
    "connection timed out",
    "resource temporarily unavailable",
    "zero bytes were transmitted or received",
    "slurm_persist_conn_open",
)
#: the pauses (s) between the tries of a repeatable command that met a transient error
RETRY_PAUSES = (1.0, 3.0, 9.0)


def run(
    argv: Sequence[str],
    *,
    timeout: float = _TIMEOUT,
    pauses: Sequence[float] | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> str:
    """Run a Slurm command (an argv, never a shell) and return its stdout; `BackendError`
    with Slurm's own message when it fails or is not installed. A command that changes
    nothing (`_REPEATABLE`) is tried again after each of ``pauses`` (default `RETRY_PAUSES`)
    while it fails as a busy controller makes it fail (`_TRANSIENT`: "Socket timed out on
    send/recv operation", "Unable to contact slurm controller"), so that one slow answer
    does not end a run's monitor; no answer within ``timeout`` is not tried again."""
    repeatable = Path(argv[0]).name in _REPEATABLE
    waits = list(RETRY_PAUSES if pauses is None else pauses) if repeatable else []
    while True:
        try:
            return _run_once(argv, timeout)
        except BackendError as error:
            if not waits or not any(t in str(error).lower() for t in _TRANSIENT):
                raise
            sleep(waits.pop(0))


def _run_once(argv: Sequence[str], timeout: float) -> str:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise BackendError(
            f"{argv[0]} not found: run ds on a login node of the Slurm cluster (its commands "
            "on PATH, e.g. after `module load slurm`)"
        ) from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        # The reason is often on the first line and the last says only "failed" (sbatch:
        # "Batch job submission failed: Job violates accounting/QOS policy" after it).
        message = "; ".join(line.strip() for line in lines[-3:] if line.strip())
        raise BackendError(
            f"{' '.join(argv[:2])} failed (exit {done.returncode}): {message or 'no message'}"
        )
    return done.stdout


def max_array_size() -> int:
    """How many elements one job array may have: the cluster's MaxArraySize (array indices
    run from 0 to it minus one), or its ``SchedulerParameters=max_array_tasks`` when that is
    smaller (slurm.conf(5): a site may allow indices up to 100000 but 1000 tasks an array)."""
    text = run(["scontrol", "show", "config"])
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    size = int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE
    tasks = re.search(r"^SchedulerParameters\s*=.*\bmax_array_tasks=(\d+)", text, re.MULTILINE)
    return min(size, int(tasks.group(1))) if tasks and int(tasks.group(1)) > 0 else size


def jobcomp_file() -> Path | None:
    """The jobcomp/filetxt log, when the cluster writes one and we can read it."""
    text = run(["scontrol", "show", "config"])
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", text, re.MULTILINE)
    where = re.search(r"^JobCompLoc\s*=\s*(\S+)", text, re.MULTILINE)
    if kind is None or where is None or kind.group(1) != "jobcomp/filetxt":
        return None
    path = Path(where.group(1))
    return path if path.is_file() else None


@dataclass(frozen=True)
class ArrayRequest:
    """One `sbatch --array` submission."""

    script: Path
    job_name: str
    size: int
    throttle: int
    output: str
    workdir: Path
    options: tuple[str, ...] = ()
    after: str | None = None


def submit_array(request: ArrayRequest) -> str:
    """Submit a job array of ``size`` elements (0 … size-1), at most ``throttle`` running
    at once, after job ``after`` ended (if given). Returns the array's job id.

    sbatch that fails may still have submitted the array (its answer timed out: "Socket
    timed out on send/recv operation"): each submission carries a comment of its own, and
    after a failure squeue is asked for it; an array found so is the submission's (else it
    would run untracked, and cleanup would leave it queued)."""
    comment = f"ds:{secrets.token_hex(8)}"
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={request.job_name}",
        f"--array=0-{request.size - 1}%{max(request.throttle, 1)}",
        f"--output={request.output}",
        f"--chdir={request.workdir}",
        "--export=ALL",
        f"--comment={comment}",
        *request.options,
    ]
    if request.after is not None:
        argv.append(f"--dependency=afterany:{request.after}")
    argv.append(str(request.script))
    try:
        out = run(argv).strip()
    except BackendError:
        found = _submitted_with(request.job_name, comment)
        if found is None:
            raise
        return found
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise BackendError(f"sbatch answered {out!r} instead of a job id")
    return job_id


def _submitted_with(job_name: str, comment: str) -> str | None:
    """The job id of this user's job ``job_name`` whose comment is ``comment``, if Slurm has
    one (None also when squeue cannot tell)."""
    try:
        out = run(
            [
                "squeue",
                "--noheader",
                f"--user={getpass.getuser()}",
                f"--name={job_name}",
                "--format=%F|%k",
            ]
        )
    except BackendError:
        return None
    for line in out.splitlines():
        job_id, _, said = line.strip().partition("|")
        if said.strip() == comment and job_id.isdigit():
            return job_id
    return None


#: why an element is pending when that is ds's own pacing, not a problem: the array's ``%N``
#: throttle, the lanes' dependencies, or a job Slurm has not looked at yet
OWN_PENDING_REASONS = frozenset({"JobArrayTaskLimit", "Dependency", "None", ""})


def squeue_elements(
    job_name: str, job_ids: Sequence[str]
) -> dict[tuple[str, int], tuple[str, str]]:
    """The array elements of ``job_ids`` (named ``job_name``, ours) that Slurm still holds
    as pending or running, with squeue's reason (why a pending one waits: ``Resources``,
    ``JobHeldAdmin``, a drained node …): (array job id, index) → (state, reason)."""
    if not job_ids:
        return {}
    out = run(
        [
            "squeue",
            "--noheader",
            "--array",
            f"--user={getpass.getuser()}",
            f"--name={job_name}",
            "--format=%F|%K|%T|%r",
        ]
    )
    wanted = set(job_ids)
    live: dict[tuple[str, int], tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or parts[0] not in wanted:
            continue
        array_id, index, state, reason = parts
        if index.isdigit() and state in LIVE_STATES:
            live[(array_id, int(index))] = (state, reason.strip())
    return live


def time_left(job_id: str) -> float | None:
    """Seconds job ``job_id`` has left before its time limit (None: no limit), as squeue's
    ``%L`` says; 0 when Slurm cannot tell."""
    try:
        text = run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%L"]).strip()
    except BackendError:
        return 0.0
    return parse_duration(text.splitlines()[0] if text else "")


def parse_duration(text: str) -> float | None:
    """Slurm's ``[days-]hours:minutes:seconds`` (or fewer fields) in seconds; None for
    UNLIMITED or NOT_SET; 0 for what is not a duration."""
    text = text.strip()
    if text in ("UNLIMITED", "NOT_SET"):
        return None
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not (days == "" or days.isdigit()) or not all(p.isdigit() for p in parts):
        return 0.0
    if len(parts) > 3:
        return 0.0
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds + int(days or 0) * 86400)


def cancel_elements(array_id: str, indices: Sequence[int]) -> None:
    """Cancel some elements of array ``array_id`` (``scancel ID_[i,j,…]``), in batches."""
    for start in range(0, len(indices), 200):
        chunk = ",".join(str(i) for i in indices[start : start + 200])
        cancel([f"{array_id}_[{chunk}]"])


def cancel(job_ids: Sequence[str]) -> None:
    """Cancel whole arrays (each worker gets SIGTERM and hands its task back)."""
    if not job_ids:
        return
    try:
        run(["scancel", *job_ids])
    except BackendError as error:
        # Some versions fail on ids they no longer know (jobs that ended): nothing to cancel.
        if "invalid job id" not in str(error).lower():
            raise


@dataclass(frozen=True)
class EndState:
    """How an array element ended: its Slurm state and time limit (as Slurm writes it)."""

    state: str
    time_limit: str = ""


#: how much of the end of a jobcomp/filetxt log is read (it is the whole cluster's)
JOBCOMP_TAIL_BYTES = 8 * 1024 * 1024


def end_states(array_id: str, wanted: Sequence[int], jobcomp: Path | None) -> dict[int, EndState]:
    """How the finished elements ``wanted`` of array ``array_id`` ended: from `sacct` when
    the cluster keeps accounting, else from the end of the jobcomp/filetxt log, else from
    `scontrol` while the controller still knows them (MinJobAge). Only `FINAL_STATES` count:
    an element that a source still says runs (sacct behind the controller) is asked of the
    next. Elements no source knows the end of are left out."""
    found = _ended(_from_sacct(array_id))
    if jobcomp is not None and not set(wanted) <= found.keys():
        try:
            with jobcomp.open("rb") as log:
                log.seek(max(0, jobcomp.stat().st_size - JOBCOMP_TAIL_BYTES))
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        found = {**_ended(_from_key_values(array_id, lines)), **found}
    if not set(wanted) <= found.keys():
        try:
            lines = run(["scontrol", "--oneliner", "show", "job", array_id]).splitlines()
        except BackendError:  # forgotten already: "Invalid job id specified"
            lines = []
        found = {**_ended(_from_key_values(array_id, lines)), **found}
    return found


def _ended(found: dict[int, EndState]) -> dict[int, EndState]:
    """The elements of ``found`` whose state is an end (`FINAL_STATES`)."""
    return {index: end for index, end in found.items() if end.state in FINAL_STATES}


def _from_key_values(array_id: str, lines: list[str]) -> dict[int, EndState]:
    """Elements of ``array_id`` in lines of ``Key=Value`` words (the jobcomp/filetxt log,
    `scontrol --oneliner show job`)."""
    found: dict[int, EndState] = {}
    for line in lines:
        fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
        if fields.get("ArrayJobId") == array_id and fields.get("ArrayTaskId", "").isdigit():
            limit = fields.get("TimeLimit", "")
            found[int(fields["ArrayTaskId"])] = EndState(fields.get("JobState", ""), limit)
    return found


#: set once sacct said the cluster keeps no accounting: it is not asked again
_accounting_disabled = False


def _from_sacct(array_id: str) -> dict[int, EndState]:
    global _accounting_disabled
    found: dict[int, EndState] = {}
    if _accounting_disabled:
        return found
    try:
        out = run(
            [
                "sacct",
                "--noheader",
                "--parsable2",
                "--allocations",
                f"--jobs={array_id}",
                "--format=JobID,State,Timelimit",
            ]
        )
    except BackendError as error:
        _accounting_disabled = "accounting storage is disabled" in str(error)
        out = ""
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 3:
            continue  # "accounting storage is disabled" and the like
        job, state, limit = parts
        head, _, index = job.partition("_")
        if head == array_id and index.isdigit():
            # sacct writes "CANCELLED by 0": the state is the first word
            found[int(index)] = EndState(state.split()[0] if state else "", limit)
    return found
