"""What there is to know about runs: status, the list of runs, task logs, dead tasks (and
their redrive), traces.

Every count here comes from the run's ledger (ledger.py), never from queue depth: the
queue's counts appear only as a hint of what it holds.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from distributed_something.backends import no_run_here, open_backend
from distributed_something.errors import InputError
from distributed_something.interfaces.backend import Backend
from distributed_something.interfaces.storage import Storage
from distributed_something.ledger import Ledger, read_counts_running, read_ledger
from distributed_something.monitor.progress import Progress, from_counts
from distributed_something.project import Project
from distributed_something.recipes.cellprofiler import parse_metadata
from distributed_something.records import Attempt, AttemptKey, RunRecords, attempts_ran_by
from distributed_something.report.build import attempt_cause, failure_cause, first_error_line
from distributed_something.sending import unsent
from distributed_something.state import (
    RunState,
    all_runs,
    load_state,
    require_state,
    save_state,
    state_of_run,
)
from distributed_something.usecases import lifecycle
from distributed_something.usecases.lifecycle import backend_of_run, records_for

#: At most this many running tasks are looked up for `ds status` (one listing each on S3,
#: every refresh of `--watch`).
RUNNING_LOOKUP_MAX = 50


@dataclass(frozen=True)
class RunningTask:
    """A task with an attempt open: which attempt, and since when (epoch seconds)."""

    task_id: str
    attempt: int
    started_at: float


@dataclass(frozen=True)
class Status:
    """A snapshot of a run. ``queued``/``in_flight`` are the queue's own (approximate)
    counts, a hint of what it holds; every count of tasks is in ``progress``."""

    app_name: str
    run_id: str
    active: bool
    progress: Progress
    workers_desired: int
    workers_running: int
    elapsed: float
    eta_seconds: float | None
    queued: int = 0
    in_flight: int = 0
    #: problems machines recorded (e.g. containers that cannot reach the instance metadata)
    machine_problems: list[str] = field(default_factory=list)
    #: pending tasks an interrupted submit did not send yet (`sending`)
    unsent: int = 0
    #: what the backend's own watchers found (`Backend.run_notes`)
    backend_notes: list[str] = field(default_factory=list)
    #: tasks running now, longest running first (at most `RUNNING_LOOKUP_MAX` looked up)
    running_tasks: list[RunningTask] = field(default_factory=list)
    #: why workers asked for are not running, as the backend says it ("": it says nothing)
    workers_waiting: str = ""
    #: how many job files were submitted to the run (`ds run` resumes a run of one)
    job_files: int = 1
    #: messages in the dead-letter queue (queue counts; 0 when not read)
    dead_letters: int = 0

    @property
    def waiting_for_monitor(self) -> int:
        """Pending tasks that nothing can run: nothing queued, in flight or left to send,
        while dead letters wait. Their messages were dead-lettered (their worker died at
        every receive) or lost, and only a monitor (`ds monitor`, the unattended one) gives
        them their outcome: counted pending till then, from the records."""
        nothing_to_run = not (self.queued or self.in_flight or self.unsent)
        pending = self.progress.counts()["pending"]
        return pending if self.active and nothing_to_run and self.dead_letters else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "app_name": self.app_name,
            "run_id": self.run_id,
            "active": self.active,
            "counts": self.progress.counts(),
            "finished": self.progress.finished,
            "corrupt_records": self.progress.corrupt,
            "workers": {
                "running": self.workers_running,
                "desired": self.workers_desired,
                "waiting": self.workers_waiting,
            },
            "queue": {
                "queued": self.queued,
                "in_flight": self.in_flight,
                "unsent": self.unsent,
                "dead_letters": self.dead_letters,
            },
            "waiting_for_monitor": self.waiting_for_monitor,
            "elapsed": self.elapsed,
            "eta_seconds": self.eta_seconds,
            "machine_problems": self.machine_problems,
            "notes": self.backend_notes,
            "running_tasks": [asdict(task) for task in self.running_tasks],
        }


def status(
    project: Project,
    backend: Backend | None = None,
    run_id: str | None = None,
    lookups: RunningLookups | None = None,
) -> Status:
    """Counts by state (from the ledger), workers, and an ETA from the throughput so far.
    ``lookups`` keeps the running tasks' lookups from one call to the next (`--watch`)."""
    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    current = _is_current(project, backend, state)
    settle_ended = getattr(backend.compute, "settle_ended", None)
    if current and state.active and settle_ended is not None:
        # Where no process of ours watches the workers (Slurm: no monitor need run), the
        # tasks of those that ended without a word are settled first: counted pending, not
        # running.
        settle_ended()
    task_counts, corrupt, running_ids = read_counts_running(records)
    progress = from_counts(task_counts, len(corrupt))
    compute = backend.compute.status() if current and state.active else None
    queued = in_flight = dead_letters = 0
    if current and state.active:
        counts = backend.queue.counts()
        queued, in_flight, dead_letters = counts.visible, counts.in_flight, counts.dead
    started = state.workers_started_at or state.created_at
    elapsed = max((state.finished_at or time.time()) - started, 0.0)
    remaining = progress.total - progress.finished
    eta = None
    working = compute is not None and compute.running > 0 and bool(queued or in_flight)
    if working and progress.finished and remaining > 0 and elapsed > 0:
        eta = remaining / (progress.finished / elapsed)
    return Status(
        app_name=project.config.app_name,
        run_id=state.run_id,
        active=state.active,
        progress=progress,
        workers_desired=compute.desired if compute else 0,
        workers_running=compute.running if compute else 0,
        workers_waiting=compute.waiting if compute else "",
        elapsed=elapsed,
        eta_seconds=eta,
        queued=queued,
        in_flight=in_flight,
        machine_problems=records.machine_problems(),
        unsent=unsent(records) if state.active else 0,
        backend_notes=backend.run_notes() if current and state.active else [],
        running_tasks=running_tasks(records, running_ids, lookups),
        job_files=len(set(state.job_files)),
        dead_letters=dead_letters,
    )


@dataclass
class RunningLookups:
    """The open attempts `running_tasks` found, kept between the refreshes of one
    `ds status --watch`: a task still running is not looked up again (on S3, one listing
    each: 50 running tasks every 2 seconds were 90,000 requests an hour) until its lookup is
    `max_age` seconds old, so an attempt that ended and was retried between two refreshes
    shows its new attempt within that time."""

    max_age: float = 60.0
    clock: Callable[[], float] = time.monotonic
    #: task id -> its open attempt, and when it was looked up (``clock``)
    found: dict[str, tuple[RunningTask, float]] = field(default_factory=dict)

    def stale(self, task_ids: list[str]) -> list[str]:
        """Those of ``task_ids`` to look up (the others' lookups are kept); forgets the
        tasks no longer among them. Pure but for the clock."""
        now = self.clock()
        wanted = set(task_ids)
        self.found = {t: seen for t, seen in self.found.items() if t in wanted}
        return [
            t for t in task_ids if t not in self.found or now - self.found[t][1] >= self.max_age
        ]

    def keep(self, tasks: list[RunningTask], looked_up: list[str]) -> None:
        """Remember what a lookup of ``looked_up`` found (``tasks``)."""
        now = self.clock()
        for task_id in looked_up:
            self.found.pop(task_id, None)
        for task in tasks:
            self.found[task.task_id] = (task, now)

    def known(self, task_ids: list[str]) -> list[RunningTask]:
        return [self.found[t][0] for t in task_ids if t in self.found]


def running_tasks(
    records: RunRecords, task_ids: list[str], lookups: RunningLookups | None = None
) -> list[RunningTask]:
    """The open attempts of ``task_ids`` (the first `RUNNING_LOOKUP_MAX` by id), longest
    running first; a task whose attempt closed meanwhile is left out. With ``lookups``
    (`ds status --watch`), only the tasks it has no recent lookup of are looked up."""
    wanted = sorted(task_ids)[:RUNNING_LOOKUP_MAX]
    asked = wanted if lookups is None else lookups.stale(wanted)
    found = []
    for task_id, attempts in zip(asked, records.attempt_keys_of(asked), strict=True):
        open_ = [a for a in attempts if a.outcome == "running"]
        if open_:
            latest = open_[-1]
            number = attempts_ran_by(attempts, latest.started_us)
            found.append(RunningTask(task_id, number, latest.started_us / 1e6))
    if lookups is not None:
        lookups.keep(found, asked)
        found = lookups.known(wanted)
    return sorted(found, key=lambda task: task.started_at)


def _is_current(project: Project, backend: Backend, state: RunState) -> bool:
    current = load_state(project, backend.storage)
    return current is not None and current.run_id == state.run_id


@dataclass(frozen=True)
class RunSummary:
    """One run of a project, for `ds runs`."""

    run_id: str
    created_at: float
    finished_at: float | None
    job_files: list[str]
    counts: dict[str, int]
    state: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def runs(project: Project, backend: Backend | None = None) -> list[RunSummary]:
    """Every run of the project, oldest first, with its counts from its ledger."""
    if backend is None and no_run_here(project):
        return []
    backend = backend or open_backend(project)
    out = []
    for state in all_runs(project.config.app_name, backend.storage):
        ledger = read_ledger(records_for(project, backend, state))
        if state.active:
            label = "active"
        elif ledger.finished:
            label = "finished"
        else:
            label = "stopped"  # cleaned up with tasks left without an outcome
        out.append(
            RunSummary(
                run_id=state.run_id,
                created_at=state.created_at,
                finished_at=state.finished_at,
                job_files=state.job_files,
                counts=ledger.counts,
                state=label,
            )
        )
    return out


@dataclass(frozen=True)
class TaskLog:
    """One stored log of one attempt of a task (its text is read by `stream_log`)."""

    run_id: str
    key: str
    size: int


@dataclass(frozen=True)
class TaskLogs:
    """The stored logs of one task, oldest first, its state in each run it is in, and the
    storage that holds them (for `stream_log`)."""

    task_id: str
    states: dict[str, str]
    logs: list[TaskLog]
    storage: Storage = field(repr=False, compare=False)


def task_logs(
    project: Project, task: str, backend: Backend | None = None, run_id: str | None = None
) -> TaskLogs:
    """Every stored log of a task (its id or a unique prefix of it, or ``key=value[,…]``
    naming its group's values), in every run (or in run ``run_id``), oldest first; no logs
    when the task never printed anything (a quiet success keeps none) or never ran. Only
    lists: nothing is read until `stream_log`. Raises `InputError` when no task of the
    project has that id, or the values name no task or several."""
    backend = backend_of_run(project, backend)
    if run_id is not None:
        run_states = [state_of_run(project, backend.storage, run_id)]
    else:
        run_states = all_runs(project.config.app_name, backend.storage)
    runs = [(state, records_for(project, backend, state)) for state in run_states]
    ledgers = [read_ledger(records) for _, records in runs]  # each read once
    if "=" in task:
        task = _task_of_group(project, ledgers, task)
    found: dict[str, list[TaskLog]] = {}
    known: set[str] = set()
    states: dict[str, dict[str, str]] = {}
    for (state, records), ledger in zip(runs, ledgers, strict=True):
        prefix = f"{records.run_prefix}logs/"
        for obj in backend.storage.list(prefix + task):
            tid = obj.key[len(prefix) :].split("/", 1)[0]
            found.setdefault(tid, []).append(TaskLog(state.run_id, obj.key, obj.size))
        for entry in ledger.tasks.values():
            if entry.id.startswith(task):
                known.add(entry.id)
                states.setdefault(entry.id, {})[state.run_id] = entry.state
    ids = set(found) | known
    if not task or not ids:
        where = f"run {run_id}" if run_id else "any run"
        keys = _keys_with_value(ledgers, task) if task else []
        fix = "copy a task id from `ds report --json` (every task) or `ds dead list`"
        if keys:  # `ds logs first` meant the group whose name is "first"
            named = " or ".join(f"`ds logs {key}={task}`" for key in keys[:3])
            fix = f"to name a task by its group's value, give the key too: {named}"
        raise InputError(
            "argument",
            "TASK",
            f"no task id starting with {task!r} in {where} of {project.config.app_name}",
            fix,
        )
    if len(ids) > 1:
        raise InputError(
            "argument", "TASK", f"{task!r} matches {len(ids)} tasks", "give more of the task id"
        )
    (tid,) = ids
    logs = sorted(found.get(tid, []), key=lambda log: (log.run_id, log.key))
    return TaskLogs(tid, states.get(tid, {}), logs, backend.storage)


def _task_of_group(project: Project, ledgers: list[Ledger], selector: str) -> str:
    """The id of the one task whose group has every ``key=value`` of ``selector`` (values
    compared as text: ``Metadata_Well=A01,Metadata_Site=1``), in the runs' ``ledgers``."""
    wanted: dict[str, str] = {}
    for part in selector.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(
                "argument",
                "TASK",
                f"{part!r} is not key=value",
                "give a task id, or the group's values as key=value,key=value",
            )
        wanted[key.strip()] = value.strip()
    matches: dict[str, Any] = {}
    for ledger in ledgers:
        for entry in ledger.tasks.values():
            values = _group_values(entry.group)
            if wanted.keys() <= values.keys() and all(values[k] == v for k, v in wanted.items()):
                matches.setdefault(entry.id, entry.group)
    if len(matches) == 1:
        return next(iter(matches))
    if not matches:
        raise InputError(
            "argument",
            "TASK",
            f"no task's group has {selector!r} in the runs of {project.config.app_name}",
            "copy the values from the job file (keys as written there), or an id from `ds report`",
        )
    first = list(matches.items())[:3]
    shown = "; ".join(f"{tid[:12]} {json.dumps(group, sort_keys=True)}" for tid, group in first)
    raise InputError(
        "argument",
        "TASK",
        f"{selector!r} names {len(matches)} tasks ({shown}{'; …' if len(matches) > 3 else ''})",
        "add more of the group's values (key=value,key=value), or give a task id",
    )


def _keys_with_value(ledgers: list[Ledger], value: str) -> list[str]:
    """The keys (sorted) under which some task's group in ``ledgers`` has ``value``."""
    keys: set[str] = set()
    for ledger in ledgers:
        for entry in ledger.tasks.values():
            keys.update(k for k, v in _group_values(entry.group).items() if v == value)
    return sorted(keys)


def _group_values(group: Any) -> dict[str, str]:
    """A group's values as text by key; a DCP group's ``Metadata`` (``k=v,k=v``) adds its
    pairs, so ``Metadata_Well=A01`` names a DCP task as it is written in the job file."""
    if not isinstance(group, dict):
        return {}
    values = {str(k): str(v) for k, v in group.items()}
    metadata = group.get("Metadata")
    if metadata is not None:
        with contextlib.suppress(InputError):
            values.update(parse_metadata(metadata))
    return values


#: How much of a log's start and end `stream_log` prints when not asked for all of it.
LOG_HEAD_BYTES = 1 << 20
LOG_TAIL_BYTES = 1 << 20
_CHUNK = 1 << 16

# Terminal control sequences: CSI (colours, cursor moves), OSC (titles, links; ended by BEL
# or ST), other ESC sequences, and C1 controls; then the C0 controls but \t and \n.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-Z\\^-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ESCAPE_START = re.compile(r"[\x1b\x9b]")
#: A sequence still open at a chunk's end longer than this is not a sequence: let it go.
_MAX_SEQUENCE = 4096


class ControlStripper:
    """Removes terminal control sequences from text fed in pieces (a sequence may be cut in
    two by a chunk boundary, so an unfinished one at a piece's end is held back).

    Carriage returns become line ends (``\r\n`` one, a lone ``\r`` of a progress bar
    one too), so every state a progress bar drew stays readable and nothing overwrites
    what the terminal showed before it.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """The printable part of everything fed so far that is complete."""
        text = self._held + text
        self._held = ""
        cut = len(text)
        # The first sequence near the end that is not finished is held back whole (its own
        # terminator may be an ESC, as in an OSC's ``ESC \``).
        at = max(0, cut - _MAX_SEQUENCE)
        while (found := _ESCAPE_START.search(text, at)) is not None:
            done = _ESCAPES.match(text, found.start())
            if done is None:
                cut = found.start()
                break
            at = done.end()
        if text[:cut].endswith("\r"):  # its \n may come in the next piece
            cut -= 1
        self._held = text[cut:]
        return self._clean(text[:cut])

    def flush(self) -> str:
        """Whatever was held back, cleaned (the log ended)."""
        held, self._held = self._held, ""
        return self._clean(held)

    @staticmethod
    def _clean(text: str) -> str:
        text = _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
        return _CONTROLS.sub("", text)


def strip_controls(text: str) -> str:
    """``text`` without terminal control sequences (see `ControlStripper`)."""
    stripper = ControlStripper()
    return stripper.feed(text) + stripper.flush()


@dataclass(frozen=True)
class LogCut:
    """What `stream_log` left out of the middle of a log: bytes ``start`` to ``end``."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def stream_log(
    storage: Storage,
    log: TaskLog,
    write: Callable[[str], object],
    *,
    full: bool = False,
    on_cut: Callable[[LogCut], object] | None = None,
    head: int = LOG_HEAD_BYTES,
    tail: int = LOG_TAIL_BYTES,
) -> LogCut | None:
    """Write a stored log to ``write`` in pieces, without terminal control sequences.

    The object is downloaded to a temporary file (storage streams it there) and read back
    64 KiB at a time, so memory stays small whatever the log's size. Unless ``full``, a log
    larger than ``head + tail`` bytes (and 64 KiB of slack) is printed as its first ``head``
    and last ``tail`` bytes; ``on_cut`` is called in between with what was left out, which
    is also returned.
    """
    with tempfile.TemporaryDirectory(prefix="ds-log-") as folder:
        path = Path(folder) / "log"
        storage.get_file(log.key, path)
        size = path.stat().st_size
        # Workers store at most a head and a tail of a log themselves (with a note of the
        # cut), a little over head + tail: such a log is printed whole, note included.
        cut = None if full or size <= head + tail + _CHUNK else LogCut(head, size - tail)
        with path.open("rb") as fh:
            if cut is None:
                _copy(fh, size, write)
            else:
                _copy(fh, cut.start, write)
                if on_cut is not None:
                    on_cut(cut)
                fh.seek(cut.end)
                _copy(fh, tail, write)
        return cut


def _copy(fh: BinaryIO, count: int, write: Callable[[str], object]) -> None:
    """Decode ``count`` bytes of ``fh`` (UTF-8, bad bytes replaced) and write them cleaned."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stripper = ControlStripper()
    left = count
    while left > 0:
        data = fh.read(min(_CHUNK, left))
        if not data:
            break
        left -= len(data)
        text = stripper.feed(decoder.decode(data))
        if text:
            write(text)
    text = stripper.feed(decoder.decode(b"", final=True)) + stripper.flush()
    if text:
        write(text)


@dataclass
class DeadEntry:
    """One dead task of a run: its latest failure, with the history of its attempts."""

    task_id: str
    group: Any
    run_id: str
    attempts: int
    error: str
    exit_code: int | None = None
    #: every failed attempt, oldest first (attempt, error, exit code, time, cause)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: copies of the task in the dead-letter store (more than one after a resubmit)
    copies: int = 0
    #: why the last attempt failed (``exit``, ``memory`` …), when recorded
    cause: str | None = None
    #: the first meaningful error line of the last failure's log, else its error
    first_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dead_list(
    project: Project, backend: Backend | None = None, run_id: str | None = None
) -> list[DeadEntry]:
    """The dead tasks of the current run (or of run ``run_id``): one entry per task, from
    the run's ledger, with the error of its last failure (else the dead-letter store's).
    A task redriven into a newer run (`redriven_from`) is that run's now: not listed."""
    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    moved = redriven_from(project, backend, state.run_id)
    return _dead_entries(records, read_ledger(records), backend, set(moved))


def redriven_from(project: Project, backend: Backend, run_id: str) -> dict[str, str]:
    """task id -> the run it was redriven into, for the tasks of finished run ``run_id``
    that `ds dead redrive` sent into a run continuing it. Its ledger keeps them dead (they
    died there), but they are not its dead tasks to list or send again: they went on, and a
    second redrive would run them once more. Read from the redrive marks of the runs that
    continue it (few: one per redrive of a finished run)."""
    moved: dict[str, str] = {}
    for later in all_runs(project.config.app_name, backend.storage):
        if later.resources.get("continues") != run_id:
            continue
        later_records = records_for(project, backend, later)
        for mark in later_records.marks():
            if mark.kind == "redrive" and mark.task_id not in moved:
                detail = later_records.read_mark(mark) or {}
                if detail.get("from_run") == run_id:
                    moved[mark.task_id] = later.run_id
    return moved


def _dead_entries(
    records: RunRecords, ledger: Ledger, backend: Backend, moved: set[str] | None = None
) -> list[DeadEntry]:
    dead_ids = [tid for tid in ledger.ids_in("dead") if tid not in (moved or set())]
    if not dead_ids:
        return []
    letters: dict[str, list[str]] = {}
    for d in backend.queue.list_dead():
        letters.setdefault(d.task_id, []).append(d.error)
    failures: dict[str, list[dict[str, Any]]] = {}
    for f in records.all_failures():
        if f.task_id in ledger.tasks:
            failures.setdefault(f.task_id, []).append(
                {
                    "attempt": f.attempt,
                    "error": f.error,
                    "exit_code": f.exit_code,
                    "at": f.at,
                    "cause": failure_cause(f),
                    "first_error": first_error_line(f.log_tail, f.error),
                }
            )
    mark_errors: dict[str, str] = {}
    for mark in records.marks():
        if mark.kind == "dead" and mark.task_id not in failures:
            mark_errors[mark.task_id] = str((records.read_mark(mark) or {}).get("error", ""))
    # An attempt whose worker died leaves no failure record: a task whose worker died on
    # every attempt has its history (and cause, ``lost``) from its attempts that ended
    # without it done; any other dead task gets those lost on the way, the last of which may
    # be what made it dead (a task that killed its worker at every receive of a message).
    recorded = [tid for tid in dead_ids if tid in failures]
    unrecorded = [tid for tid in dead_ids if tid not in failures]
    for tid, attempts in records.ended_attempts_of(recorded, ("lost",)).items():
        failures[tid] += [_attempt_history(a) for a in attempts]
    for tid, attempts in records.ended_attempts_of(unrecorded).items():
        failures[tid] = [_attempt_history(a) for a in attempts]
    for tid, keys in zip(dead_ids, records.attempt_keys_of(dead_ids), strict=True):
        number_attempts(failures.get(tid, []), keys)
    out = []
    for tid in dead_ids:
        history = sorted(failures.get(tid, []), key=lambda h: float(h["at"]))
        last = history[-1] if history else None
        copies = letters.get(tid, [])
        error = (
            (last or {}).get("error")
            or mark_errors.get(tid)
            or next((e for e in reversed(copies) if e), "")
        )
        out.append(
            DeadEntry(
                task_id=tid,
                group=ledger.tasks[tid].group,
                run_id=ledger.run_id,
                attempts=ledger.tasks[tid].attempts,
                error=str(error),
                exit_code=last["exit_code"] if last else None,
                history=history,
                copies=len(copies),
                cause=(last or {}).get("cause"),
                first_error=str((last or {}).get("first_error") or error),
            )
        )
    return out


def number_attempts(history: list[dict[str, Any]], keys: list[AttemptKey]) -> None:
    """Number each failure of ``history`` (its ``attempt`` and ``at``) as its task's
    attempts ran, 1, 2, 3 … as "tries" counts them (`records.attempts_ran_by`); the
    record's own number, its message's receive count, which a redrive or a re-send starts
    again at 1, is kept as ``receive``. A failure belongs to the latest attempt started
    before it; without attempt records (a family image's task) the receive count is all
    there is."""
    for h in history:
        ordinal = attempts_ran_by(keys, float(h["at"]) * 1e6)
        h["receive"] = h["attempt"]
        h["attempt"] = ordinal or h["attempt"]


def _attempt_history(attempt: Attempt) -> dict[str, Any]:
    """A `DeadEntry.history` entry made of an attempt record (no failure record of it)."""
    at = attempt.ended_at if attempt.ended_at is not None else attempt.started_at
    return {
        "attempt": attempt.attempt,
        "error": attempt.error,
        "exit_code": attempt.exit_code,
        "at": at,
        "cause": attempt_cause(attempt),
        "first_error": first_error_line("", attempt.error),
    }


def dead_show(
    project: Project, task: str, backend: Backend | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """One dead task of the run: its group, its failures (with log tails), its last error."""
    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    if "=" in task:  # the group's values, as `ds logs` takes them
        task = _task_of_group(project, [read_ledger(records)], task)
    entries = [e for e in dead_list(project, backend, state.run_id) if e.task_id.startswith(task)]
    if len(entries) != 1:
        problem = "no dead task id starts with" if not entries else "several dead tasks match"
        problem = f"{problem} {task!r}"
        if not entries:
            # A task that is not dead: say what it is, rather than only what it is not.
            found = [t for tid, t in read_ledger(records).tasks.items() if tid.startswith(task)]
            if len(found) == 1:
                tries = f" after {found[0].attempts} attempts" if found[0].attempts > 1 else ""
                problem = f"the task {found[0].id} is not dead: it is {found[0].state}{tries}"
        raise InputError(
            "argument",
            "TASK",
            problem,
            "see `ds dead list`; `ds logs TASK` shows every attempt's log of any task",
        )
    entry = entries[0]
    failures = []
    for f in records.failures_of(entry.task_id):
        # cause and first error line even for records written before causes were kept
        shown = asdict(f)
        shown.setdefault("cause", failure_cause(f))
        shown["first_error"] = first_error_line(f.log_tail, f.error)
        failures.append(shown)
    if not failures:  # its worker died on every attempt: the attempts it lost, as failures
        failures = [{"task_id": entry.task_id, **h} for h in entry.history]
    else:  # and those its worker died on between the failures (no failure record of theirs)
        died = records.ended_attempts_of([entry.task_id], ("lost",)).get(entry.task_id, [])
        failures += [{"task_id": entry.task_id, **_attempt_history(a)} for a in died]
        failures.sort(key=lambda f: float(f["at"]))
        [keys] = records.attempt_keys_of([entry.task_id])
        number_attempts(failures, keys)
    return {**entry.to_json(), "failures": failures}


def dead_redrive(
    project: Project,
    tasks: list[str] | None = None,
    backend: Backend | None = None,
    run_id: str | None = None,
) -> int:
    """Put dead tasks of the current run (all, or those whose ids start with the given
    prefixes) back on the queue: exactly one message per task, whatever copies the
    dead-letter store holds, and a redrive mark in the run's ledger. Returns how many.

    The tasks go back to the run they belong to when it is still active. A finished run
    (its queue may be gone) is continued by a new run that takes exactly these tasks, set up
    without `local.prepare` (nothing is prepared again). `ds start-cluster` and `ds monitor`
    then process them.
    """
    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    current = require_state(project, backend.storage)
    if run_id is not None and state.run_id != current.run_id and current.active:
        raise InputError(
            "argument",
            "--run",
            f"run {current.run_id} is in progress; tasks of run {state.run_id} cannot join it",
            "finish it first (`ds monitor` or `ds cleanup`), then redrive",
        )
    records = records_for(project, backend, state)
    ledger = read_ledger(records)
    redriven = redriven_from(project, backend, state.run_id)
    entries = _dead_entries(records, ledger, backend, set(redriven))
    chosen = entries
    if tasks:
        chosen = []
        for prefix in tasks:
            if "=" in prefix:  # the group's values, as `ds logs` takes them
                prefix = _task_of_group(project, [ledger], prefix)
            found = [e for e in entries if e.task_id.startswith(prefix)]
            gone = sorted({run for tid, run in redriven.items() if tid.startswith(prefix)})
            if not found and gone:
                raise InputError(
                    "argument",
                    "TASK",
                    f"the dead task of run {state.run_id} starting with {prefix!r} was "
                    f"redriven into run {gone[0]} already",
                    f"see `ds dead list --run {gone[0]}`",
                )
            if not found:
                raise InputError(
                    "argument",
                    "TASK",
                    f"no dead task of run {state.run_id} starts with {prefix!r}",
                    "see `ds dead list`",
                )
            chosen.extend(e for e in found if e not in chosen)
    if not chosen:
        return 0
    ids = [e.task_id for e in chosen]
    bodies = records.bodies(ids)
    target = state
    if not state.active:
        target = lifecycle.setup(project, backend, continues=state.run_id)
        # The tasks come from the continued run's job files: `ds run` with the same file
        # resumes the new run, and a worker finds the recipe a family job format implies.
        target.job_files = list(state.job_files)
    target_records = records_for(project, backend, target)
    if target.run_id != state.run_id:
        parts = records.manifest_parts()
        entries_by_id = {e.task_id: e for e in chosen}
        for part in parts:
            mine = [m for m in part.entries if m.task_id in entries_by_id]
            if mine:
                target_records.write_manifest(
                    f"redrive-{time.time_ns()}", mine, shared=part.shared, group_key=part.group_key
                )
    # The dead-letter copies are removed first (a task is only ever re-sent by us, once),
    # then one fresh message per task is sent: a failure in between leaves the task dead
    # in the ledger (nothing is counted done) and `ds dead redrive` can be run again.
    backend.queue.drop_dead(ids)
    missing = [tid for tid in ids if tid not in bodies]
    if missing:
        raise InputError(
            "argument",
            "TASK",
            f"the manifest of run {state.run_id} has no body for {missing[0]}",
            "submit its job file again",
        )
    now = time.time()
    moved = backend.queue.send_batch([(tid, bodies[tid]) for tid in ids])
    for tid in ids:
        target_records.write_mark(tid, "redrive", now, {"from_run": state.run_id})
    target.submitted += 0 if target.run_id == state.run_id else moved
    save_state(project, target, backend.storage)
    return moved


def trace(
    project: Project, path: Path, backend: Backend | None = None, run_id: str | None = None
) -> int:
    """Write the per-attempt trace of the current run (or of run ``run_id``) to ``path`` as
    TSV (see `report.trace`); returns how many attempts it lists."""
    from distributed_something.report.trace import write_trace
    from distributed_something.usecases.pricing import run_pricing

    backend = backend_of_run(project, backend)
    state = state_of_run(project, backend.storage, run_id)
    records = records_for(project, backend, state)
    return write_trace(records, path, run_pricing(project.config, backend, records, state))
