"""Slurm compute: job arrays whose elements each run one `ds worker` over one slice.

Every slice with work left gets one live array element (pending or running in Slurm), never
two: `scale` submits elements only for slices no live element serves, and a worker takes
its slice's lock before touching it. Arrays are cut to the cluster's MaxArraySize and
throttled with ``%N`` so that at most the configured number run at once (more arrays than
that run in lanes, each after the one before it). What was submitted is recorded in
``<shared>/slurm/jobs.json``, so any later `ds` command on the login node can follow,
cancel or repair it; ds runs nothing on the cluster besides these jobs.

When an element has left Slurm's queue, `housekeeping` settles it: whatever its worker
still held goes back to the slice's queue, and when Slurm killed it (time limit, memory,
node failure) the attempt records of the task it was running say so. An element pending
again after its worker held a slice was requeued by Slurm (a node failure, `scontrol
requeue`): its worker is gone, and what it left is settled the same way while Slurm keeps the
element to run again (`_settle_requeued`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from distributed_something.atomicfile import write_text_atomically
from distributed_something.backends.slurm import commands
from distributed_something.backends.slurm.slices import (
    SLICE_ENV,
    WORKER_ENV,
    SliceQueue,
    locked,
)
from distributed_something.config.model import Config
from distributed_something.crash_loop import WorkerFailure, crash_loop_message, crash_looping
from distributed_something.errors import BackendError
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.records import Attempt, Failure, RunRecords
from distributed_something.state import load_state
from distributed_something.worker.loop import LOG_TAIL_BYTES

#: how long `stop` waits for cancelled jobs to leave Slurm's queue
STOP_WAIT_SECONDS = 60.0
#: a cluster starts jobs more slowly than a machine starts processes: failures this far
#: apart still make a crash loop (`crash_looping`)
SLURM_CRASH_WINDOW_SECONDS = 600.0
#: how long an element gone from squeue may have no known end (sacct lagging, and the
#: controller no longer or not yet saying) before it is settled as UNKNOWN: Slurm's default
#: MinJobAge, for which the controller keeps an ended job
END_STATE_WAIT_SECONDS = 300.0
#: states whose tasks used up a try (the others — node failure, preemption — are like a
#: lost machine: the task goes back without blame)
_BLAMED = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "DEADLINE"})
# A shebang longer than this is cut by older kernels: then /bin/sh runs the interpreter.
_MAX_SHEBANG = 120


@dataclass
class ArrayRecord:
    """One submitted job array: its Slurm job id, the slice each index serves, the run
    whose records its workers write, and the indices already settled after they ended."""

    job_id: str
    slices: list[str]
    run_id: str
    submitted_at: float
    settled: list[int] = field(default_factory=list)
    #: its workers name the slice they hold in held/ (arrays of earlier versions do not)
    held_files: bool = False
    #: its ``%N``: how many of its elements Slurm runs at once (0: not recorded)
    throttle: int = 0
    #: index (as text) -> when (time.time) it was first found ended with no source knowing
    #: how (`commands.end_states`): settled as UNKNOWN only after `END_STATE_WAIT_SECONDS`
    unknown_since: dict[str, float] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return len(self.settled) < len(self.slices)


def sbatch_options(config: Config) -> list[str]:
    """The sbatch options of every job of the run of ``config`` (its [slurm] settings)."""
    slurm = config.slurm
    options = [f"--cpus-per-task={slurm.cpus_per_task}"]
    for flag, value in (
        ("--partition", slurm.partition),
        ("--account", slurm.account),
        ("--qos", slurm.qos),
        ("--time", slurm.time),
        ("--mem", slurm.memory),
    ):
        if value:
            options.append(f"{flag}={value}")
    return [*options, *slurm.sbatch_args]


class SlurmCompute:
    """The Compute of the Slurm backend (see `interfaces.compute`); ``queue`` is the slice
    queue on the login node, ``storage`` the main bucket (run records)."""

    def __init__(
        self,
        project: Project,
        queue: SliceQueue,
        storage: Storage,
        shared: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.project = project
        self.queue = queue
        self.storage = storage
        self.dir = shared / "slurm"
        self._max_array: int | None = None
        self._jobcomp: Path | bool | None = False  # False: not looked up yet
        self._cached: tuple[float, dict[tuple[str, int], str]] | None = None
        #: squeue's reason for each pending element of the last reading (`_live`)
        self._reasons: dict[tuple[str, int], str] = {}
        #: when (time.time) squeue was last read: the reading `_live` keeps
        self._read_at = 0.0
        self._clock = clock
        #: elements whose worker failed (Slurm state FAILED), and those already looked at
        self._failures: list[WorkerFailure] = []
        self._seen_ended: set[tuple[str, int]] = set()

    # -- what was submitted ----------------------------------------------------------------

    @property
    def job_name(self) -> str:
        """The name of every Slurm job of this app (what admins see in squeue)."""
        return f"ds-{self.project.config.app_name}"

    def _load(self) -> list[ArrayRecord]:
        try:
            data = json.loads((self.dir / "jobs.json").read_text())
        except FileNotFoundError:
            return []
        names = {f.name for f in fields(ArrayRecord)}
        return [ArrayRecord(**{k: v for k, v in a.items() if k in names}) for a in data["arrays"]]

    def _save(self, arrays: list[ArrayRecord]) -> None:
        text = json.dumps({"arrays": [asdict(a) for a in arrays]}, indent=1)
        write_text_atomically(self.dir / "jobs.json", text)

    @contextlib.contextmanager
    def _registry(self) -> Iterator[list[ArrayRecord]]:
        """The submitted arrays, locked against other `ds` commands, saved at the end."""
        with locked(self.dir / "jobs.lock", wait=True):
            arrays = self._load()
            try:
                yield arrays
            finally:
                self._save(arrays)

    def job_ids(self) -> list[str]:
        """Every array job id submitted for this app and not yet settled."""
        return [a.job_id for a in self._load() if a.open]

    def _live(self, arrays: list[ArrayRecord], fresh: bool = False) -> dict[tuple[str, int], str]:
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._cached[0] < 1.0:
            return self._cached[1]
        read_at = time.time()
        found = commands.squeue_elements(self.job_name, [a.job_id for a in arrays if a.open])
        self._read_at = read_at
        live = {key: state for key, (state, _) in found.items()}
        self._reasons = {key: why for key, (state, why) in found.items() if state == "PENDING"}
        self._cached = (now, live)
        return live

    # -- the Compute contract --------------------------------------------------------------

    def start(self, n: int) -> None:
        """Submit array elements for every slice with work (at most ``n`` running at once,
        or ``slurm.max_jobs``) and return: Slurm runs them, whether a monitor runs or not."""
        self.scale(n)

    def scale(self, n: int) -> None:
        """Give every slice with work left a live element (settling ended ones first);
        never cancels one. A busy cluster keeps elements pending: nothing is resubmitted."""
        cap = self.project.config.slurm.max_jobs or max(n, 1)
        with self._registry() as arrays:
            live = self._live(arrays, fresh=True)
            self._settle(arrays, live)
            served = {a.slices[index] for a in arrays for (job, index) in live if job == a.job_id}
            needy = [
                sid
                for sid in self.queue.slices_with_work()
                if sid not in served and self.queue.is_free(sid)
            ]
            if needy:
                if crash_looping(self._failures, self._clock(), n, SLURM_CRASH_WINDOW_SECONDS):
                    # Jobs that fail as they start would be submitted tick after tick.
                    raise BackendError(crash_loop_message(self._failures))
                # A new array's %N cannot see the arrays already submitted: it gets the
                # room they leave, and none while they fill the cap (their running jobs go
                # on to these slices; a later tick submits what is left once there is room).
                room = cap - self._in_use(arrays, live, cap)
                if room > 0:
                    self._submit(arrays, needy, room)
                    self._cached = None

    def _in_use(self, arrays: list[ArrayRecord], live: dict[tuple[str, int], str], cap: int) -> int:
        """How many jobs the submitted arrays run now or will start without a new submit:
        per array, its running elements and those pending in line (not held, not waiting
        for an array of their lane to end), at most its ``%N`` (``cap`` if not recorded)."""
        used = 0
        for array in arrays:
            keys = [key for key in live if key[0] == array.job_id]
            if not keys:
                continue
            running = sum(1 for key in keys if live[key] != "PENDING")
            waiting = sum(
                1
                for key in keys
                if live[key] == "PENDING" and not _on_hold(self._reasons.get(key, ""))
            )
            used += min(array.throttle or cap, running + waiting)
        return used

    def scale_machines(self, n: int) -> None:
        """Slurm places the jobs: there are no machines of ours to resize."""

    def housekeeping(self) -> None:
        """Settle the elements that left Slurm's queue (see the module docstring), and
        cancel the pending ones whose slice has no work left (a running job went on to
        it): Slurm would start them for nothing."""
        with self._registry() as arrays:
            live = self._live(arrays)
            self._settle(arrays, live)
            self._cancel_idle(arrays, live)

    def settle_ended(self) -> None:
        """Settle the elements that left Slurm's queue, as `housekeeping` does but
        cancelling nothing: `ds status` does it before counting, so with no monitor running
        the task of a worker killed outright shows pending, not running for ever."""
        arrays = self._load()
        live = self._live(arrays, fresh=True)
        if not any(
            (array.job_id, i) not in live and i not in array.settled
            for array in arrays
            if array.open
            for i in range(len(array.slices))
        ) and not any(self._requeued(array, live) for array in arrays):
            return
        with self._registry() as locked_arrays:
            self._settle(locked_arrays, self._live(locked_arrays))

    def _cancel_idle(self, arrays: list[ArrayRecord], live: dict[tuple[str, int], str]) -> None:
        pending = [key for key, state in live.items() if state == "PENDING"]
        if not pending:
            return
        work = set(self.queue.slices_with_work())
        by_id = {a.job_id: a for a in arrays}
        idle: dict[str, list[int]] = {}
        for job, index in pending:
            array = by_id.get(job)
            if array is not None and array.slices[index] not in work:
                idle.setdefault(job, []).append(index)
        for job, indices in idle.items():
            commands.cancel_elements(job, sorted(indices))
        if idle:
            self._cached = None

    def pause(self, seconds: float) -> None:
        """The monitor's interval, whole: its workers are not this process's children."""
        time.sleep(seconds)

    def status(self) -> ComputeStatus:
        """desired: elements pending or running in Slurm; running: those running; waiting:
        why pending ones wait, as squeue says, unless it is only ds's own pacing (the
        array's throttle, the lanes): a drained node or a held job is said, not hidden."""
        live = self._live(self._load())
        running = sum(1 for state in live.values() if state != "PENDING")
        reasons = sorted(
            {
                why
                for key, why in self._reasons.items()
                if key in live and why not in commands.OWN_PENDING_REASONS
            }
        )
        waiting = f"Slurm jobs pending ({'; '.join(reasons)})" if reasons else ""
        return ComputeStatus(desired=len(live), running=running, waiting=waiting)

    def stop(self) -> None:
        """Cancel every array (each worker gets SIGTERM and hands its task back), wait for
        them to leave Slurm's queue, then settle them."""
        with self._registry() as arrays:
            ids = [a.job_id for a in arrays if a.open]
            commands.cancel(ids)
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            live = self._live(arrays, fresh=True)
            while live and time.monotonic() < deadline:
                time.sleep(0.1)
                live = self._live(arrays, fresh=True)
            self._settle(arrays, live)

    def cleanup(self) -> None:
        """`stop`; the job scripts go, Slurm's output files stay (``slurm/logs``)."""
        self.stop()
        for script in (self.dir / "scripts").glob("*.py"):
            script.unlink(missing_ok=True)

    # -- submitting --------------------------------------------------------------------------

    def max_array_size(self) -> int:
        if self._max_array is None:
            self._max_array = commands.max_array_size()
        return self._max_array

    def _submit(self, arrays: list[ArrayRecord], slices: list[str], cap: int) -> None:
        """Submit ``slices`` as arrays of at most MaxArraySize elements; with k arrays and
        a cap of ``cap`` jobs at once, k ≤ cap arrays share the cap through their ``%N``
        throttles, and beyond that array j starts after array j - cap ended (lanes)."""
        size = self.max_array_size()
        chunks = [slices[i : i + size] for i in range(0, len(slices), size)]
        k = len(chunks)
        run_id = self._run_id()
        submitted: list[str] = []
        for j, chunk in enumerate(chunks):
            throttle = 1 if k > cap else cap // k + (1 if j < cap % k else 0)
            after = submitted[j - cap] if k > cap and j >= cap else None
            script = self._write_script(chunk, run_id)
            job_id = commands.submit_array(
                commands.ArrayRequest(
                    script=script,
                    job_name=self.job_name,
                    size=len(chunk),
                    throttle=throttle,
                    output=str(self.dir / "logs" / "%A_%a.out"),
                    workdir=self.project.base_dir,
                    options=tuple(self._options()),
                    after=after,
                )
            )
            submitted.append(job_id)
            # Recorded at once: a crash after this line still lets cleanup cancel it.
            arrays.append(
                ArrayRecord(job_id, chunk, run_id, time.time(), held_files=True, throttle=throttle)
            )
            self._save(arrays)

    def _run_id(self) -> str:
        state = load_state(self.project, self.storage)
        return state.run_id if state is not None else "default"

    def _options(self) -> list[str]:
        return sbatch_options(self.project.config)

    def _write_script(self, slices: list[str], run_id: str) -> Path:
        """The batch script of one array: Python, so no shell ever sees a value. It holds
        only our own names (slice ids, run id, paths): no job value."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        path = self.dir / "scripts" / f"{time.time_ns()}-{secrets.token_hex(3)}.py"
        python = sys.executable
        if len(python) < _MAX_SHEBANG and not set(python) & set(" \t"):
            head = [f"#!{python}"]
        elif not set(python) & set('"$`\\'):
            # sh runs `exec python this-file`; to Python the line is a string expression.
            head = ["#!/bin/sh", f'"exec" "{python}" "$0" "$@"']
        else:
            head = ["#!/usr/bin/env python3"]
        lines = [
            *head,
            "# One element of a ds job array (written by ds; see docs/slurm.md).",
            "import os, sys",
            f"SLICES = {slices!r}",
            f"PYTHON = {python!r}",
            f"CONFIG = {str(self.project.config_path)!r}",
            f"APP = {self.project.config.app_name!r}",
            "env = os.environ",
            "job, index = env['SLURM_ARRAY_JOB_ID'], int(env['SLURM_ARRAY_TASK_ID'])",
            f"env[{SLICE_ENV!r}] = SLICES[index]",
            f"env[{WORKER_ENV!r}] = name = f'slurm-{{job}}_{{index}}'",
            "env['DS_BACKEND'] = 'slurm'",
            f"env['DS_RUN_ID'] = {run_id!r}",
            "tmp = env.get('TMPDIR') or '/tmp'",
            # Node-local scratch: the next worker on this node reaps what a killed one left.
            "scratch = os.path.join(tmp, f'ds-scratch-{os.getuid()}', APP)",
            "env['DS_SCRATCH'] = env.get('DS_SLURM_SCRATCH') or scratch",
            "argv = [PYTHON, '-m', 'distributed_something', 'worker', '--config', CONFIG,",
            "        '--name', name]",
            "sys.stdout.flush()",
            "os.execv(PYTHON, argv)",
        ]
        write_text_atomically(path, "\n".join(lines) + "\n", mode=0o700)
        return path

    # -- settling ended elements -----------------------------------------------------------

    def _jobcomp_file(self) -> Path | None:
        if self._jobcomp is False:
            try:
                self._jobcomp = commands.jobcomp_file()
            except Exception:  # noqa: BLE001 - an unreadable config only costs the detail
                self._jobcomp = None
        return self._jobcomp if isinstance(self._jobcomp, Path) else None

    def _settle(self, arrays: list[ArrayRecord], live: dict[tuple[str, int], str]) -> None:
        for array in arrays:
            for index in self._requeued(array, live):
                self._settle_requeued(array, index)
            ended = [
                i
                for i in range(len(array.slices))
                if i not in array.settled and (array.job_id, i) not in live
            ]
            if not ended:
                continue
            ends = commands.end_states(array.job_id, ended, self._jobcomp_file())
            self._note_failures(array, ended, ends)
            if array.held_files:
                # An element whose worker never held a slice (cancelled while pending, or
                # refused and with nothing to go on to) left nothing to repair.
                idle = [i for i in ended if not self.queue.held_by(_worker_name(array, i))]
                for index in idle:
                    self.queue.forget_worker(_worker_name(array, index))
                    array.settled.append(index)
                ended = [i for i in ended if i not in set(idle)]
            for index in ended:
                end = ends.get(index)
                if end is None:
                    # sacct behind the controller, which forgot the job already or has not
                    # ended it: how it ended decides whether a try was used (TIMEOUT,
                    # OUT_OF_MEMORY): asked again at the next tick, for a while.
                    first = array.unknown_since.setdefault(str(index), time.time())
                    if time.time() - first < END_STATE_WAIT_SECONDS:
                        continue
                    end = commands.EndState("UNKNOWN")
                if self._settle_one(array, index, end):
                    array.settled.append(index)
                    array.unknown_since.pop(str(index), None)

    def _requeued(self, array: ArrayRecord, live: dict[tuple[str, int], str]) -> list[int]:
        """The elements of ``array`` pending in Slurm whose worker said it held a slice: a
        pending element runs no worker, so that one is gone and Slurm requeued the element
        (after a node failure, or `scontrol requeue`), which keeps its id and so its
        worker's name."""
        if not array.open or not array.held_files:
            return []
        pending = [
            i
            for i in range(len(array.slices))
            if i not in array.settled and live.get((array.job_id, i)) == "PENDING"
        ]
        if not pending:
            return []
        held = self.queue.held_workers()
        return [i for i in pending if _worker_name(array, i) in held]

    def _settle_requeued(self, array: ArrayRecord, index: int) -> None:
        """Repair what the worker of requeued element ``index`` left: its slice's messages
        go back, its attempts started before squeue said the element pending are closed as
        lost (a node failure is no fault of the task). The element is not settled: Slurm
        runs it again, under the same worker name, and it ends later."""
        worker = _worker_name(array, index)
        sid = self.queue.held_by(worker)
        if not sid:
            return  # it held no slice (or handed it back and said so): nothing to repair
        why = self._reasons.get((array.job_id, index), "")
        error = (
            f"its Slurm job {array.job_id}_{index} was requeued while it ran"
            f" (pending again{': ' + why if why else ''}); Slurm runs the job again"
        )
        records = RunRecords(self.storage, self.project.config.app_name, array.run_id)
        # The element may have started again since squeue was read: its new worker's
        # attempts (started later) are not this one's.
        before = self._read_at
        attempts = [
            a for a in self._attempts_of(records, sid, worker, False) if a.started_at < before
        ]
        if self.queue.reclaim(sid, error) is None:
            return  # a live process holds the slice (the element ran again): not ours
        now = time.time()
        for attempt in attempts:
            _close(records, attempt, "lost", error, now, "lost")
        if self.queue.held_by(worker) == sid:
            self.queue.forget_worker(worker)

    def _note_failures(
        self, array: ArrayRecord, ended: list[int], ends: dict[int, commands.EndState]
    ) -> None:
        """Note the elements whose worker exited with an error (Slurm's FAILED), each once
        (`crash_looping`)."""
        now = self._clock()
        for index in ended:
            key = (array.job_id, index)
            if key in self._seen_ended or index not in ends:
                continue  # seen, or Slurm does not say yet
            self._seen_ended.add(key)
            if ends[index].state == "FAILED":
                log = self.dir / "logs" / f"{array.job_id}_{index}.out"
                self._failures.append(WorkerFailure(now, _worker_name(array, index), None, log))

    def _settle_one(self, array: ArrayRecord, index: int, end: commands.EndState) -> bool:
        """Repair what element ``index`` of ``array`` left; False when its slice is still
        locked (its worker has not exited yet): tried again at the next tick."""
        worker = _worker_name(array, index)
        # The slice its worker held last: its own, or one it went on to (slices.py).
        held = self.queue.held_by(worker)
        sid = array.slices[index] if held is None else held
        if not sid:
            self.queue.forget_worker(worker)
            return True  # it held no slice, so no task either
        records = RunRecords(self.storage, self.project.config.app_name, array.run_id)
        killed_by_slurm = end.state in commands.KILLED_STATES
        why = _kill_reason(end, self.project.config.slurm.memory) if killed_by_slurm else ""
        # The attempts this element left open, or handed back when Slurm's SIGTERM came.
        # A worker that exited on its own (COMPLETED) closed its attempts: nothing to read.
        attempts = (
            []
            if end.state == "COMPLETED"
            else self._attempts_of(records, sid, worker, killed_by_slurm)
        )
        killed = {a.task_id: why for a in attempts} if killed_by_slurm else {}
        # A time or memory kill uses up a try (the worker saw only a SIGTERM, which it
        # does not count): the last allowed one makes the task dead.
        limit = self.queue.max_receive_count
        final = frozenset(
            a.task_id
            for a in attempts
            if end.state in _BLAMED and _retries_used(records, a) + 1 >= limit
        )
        vanished = f"its Slurm job {array.job_id}_{index} ended ({end.state}) while it ran"
        if self.queue.reclaim(sid, why or vanished, killed, final) is None:
            return False
        if final:
            # The worker may have sent its task again before it exited: no more tries.
            self.queue.bury_copies({task_id: why for task_id in final})
        now = time.time()
        for attempt in attempts:
            if killed_by_slurm:
                _blame(records, attempt, why, end.state, attempt.task_id in final, now)
            elif attempt.outcome == "running":
                _close(records, attempt, "lost", vanished, now, "lost")
        self.queue.forget_worker(worker)
        return True

    def _attempts_of(
        self, records: RunRecords, sid: str, worker: str, handed_back_too: bool
    ) -> list[Attempt]:
        """The attempts of ``worker`` on the tasks of slice ``sid`` left running (or, with
        ``handed_back_too``, handed back: Slurm's SIGTERM makes a worker hand back) — of
        those handed back, only each task's latest: an element requeued (`scontrol
        requeue`) keeps its worker's name, and the attempt it handed back at the requeue
        is not this end's."""
        outcomes = {"running", "released"} if handed_back_too else {"running"}
        found: list[Attempt] = []
        names = {f.name for f in fields(Attempt)}
        for task_id in dict.fromkeys(m["task_id"] for m in self.queue.messages_of(sid)):
            handed_back: Attempt | None = None
            for key in records.attempt_keys(task_id):  # oldest first
                if key.outcome not in outcomes:
                    continue
                try:
                    data = json.loads(self.storage.get_bytes(records.key_of(key)))
                except (KeyError, ValueError):
                    continue
                if data.get("worker") != worker:
                    continue
                attempt = Attempt(**{k: v for k, v in data.items() if k in names})
                if key.outcome == "released":
                    handed_back = attempt
                else:
                    found.append(attempt)
            if handed_back is not None:
                found.append(handed_back)
        return found


def _on_hold(reason: str) -> bool:
    """Whether a pending element with squeue's ``reason`` waits for someone (a hold) or for
    another array of its lane to end, rather than in line to run."""
    return reason.startswith("JobHeld") or reason.startswith("Dependency")


def _worker_name(array: ArrayRecord, index: int) -> str:
    """The name the worker of element ``index`` runs under (the job script sets it)."""
    return f"slurm-{array.job_id}_{index}"


def _retries_used(records: RunRecords, attempt: Attempt) -> int:
    """The tries the task of ``attempt`` used before it in this run, as the worker counts
    them (`worker.policy.retries_used`): failed attempts since its latest dead one."""
    used = 0
    for key in records.attempt_keys(attempt.task_id):
        if key.started_us >= round(attempt.started_at * 1e6):
            continue
        if key.outcome == "dead":
            used = 0
        elif key.outcome == "failed":
            used += 1
    return used


def _kill_reason(end: commands.EndState, memory: str) -> str:
    limit = end.time_limit
    if limit.isdigit():
        limit = f"{limit} min"
    detail = {
        "TIMEOUT": f"time limit {limit or 'of the partition'}",
        "OUT_OF_MEMORY": f"memory limit {memory or 'of the cluster'}",
        "NODE_FAIL": "its node failed",
        "PREEMPTED": "preempted by a job of higher priority",
        "DEADLINE": "its deadline passed",
    }.get(end.state, end.state)
    return f"killed by Slurm: {end.state} ({detail})"


#: the failure cause (worker/causes.py) of each way Slurm kills a job
_CAUSES = {
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "memory",
    "NODE_FAIL": "lost",
    "PREEMPTED": "interrupted",
}


def _set_cause(record: Attempt | Failure, cause: str) -> None:
    # Records carry a cause where this version of the records has the field.
    if hasattr(record, "cause"):
        setattr(record, "cause", cause)  # noqa: B010 - the field may not exist


def _close(
    records: RunRecords, attempt: Attempt, outcome: str, error: str, now: float, cause: str
) -> None:
    """Close ``attempt`` (open, or closed as handed back) as ``outcome`` with ``error``."""
    previous = records.attempt_key(attempt)
    attempt.outcome = outcome
    attempt.error = error
    attempt.ended_at = attempt.ended_at or now
    _set_cause(attempt, cause)
    records.close_attempt(attempt)  # writes the new record, removes an open one
    if previous != records.attempt_key(attempt):
        records.storage.delete(previous)


def _blame(
    records: RunRecords, attempt: Attempt, why: str, state: str, dead: bool, now: float
) -> None:
    """Record that Slurm killed ``attempt``: a failure record (time and memory limits use up
    a try, like the worker's own timeouts) and the attempt closed with Slurm's reason."""
    cause = _CAUSES.get(state, "lost")
    if state not in _BLAMED:
        _close(records, attempt, "lost", why, now, cause)
        return
    try:  # the task's own log, as the worker stored it when it was stopped
        log = records.storage.get_bytes(
            records.log_key(attempt.task_id, attempt.attempt, attempt.started_at)
        )
    except KeyError:
        log = b""
    failure = Failure(
        task_id=attempt.task_id,
        attempt=attempt.attempt,
        error=why,
        exit_code=None,
        log_tail=log[-LOG_TAIL_BYTES:].decode(errors="replace"),
        at=now,
        worker=attempt.worker,
        final=dead,
    )
    _set_cause(failure, cause)
    records.write_failure(failure)
    _close(records, attempt, "dead" if dead else "failed", why, now, cause)


def shared_dir(project: Project) -> Path:
    """The run's folder on the shared filesystem: ``slurm.shared_dir`` (relative to the
    config), else ``<state_dir>/slurm``."""
    configured = project.config.slurm.shared_dir
    if not configured:
        return project.state_dir / "slurm"
    path = Path(configured).expanduser()
    return path if path.is_absolute() else project.base_dir / path


def environment_slice() -> str | None:
    """The slice this process serves, when it is a worker in a Slurm job."""
    return os.environ.get(SLICE_ENV) or None


def environment_worker() -> str | None:
    """This worker's name, when it is a worker in a Slurm job."""
    return os.environ.get(WORKER_ENV) or None


#: a job goes on to one more slice only with this much time left beyond twice the longest
#: slice it ran (a slice cut by the time limit would cost its task a try)
MORE_MARGIN_SECONDS = 30.0
#: a job starts one more task only with this much time left beyond the longest task it ran
#: (or a quarter of that task's time, if more)
TASK_MARGIN_SECONDS = 10.0


class TimeLeft:
    """Whether the Slurm job ``job_id`` has time for one more slice: its time limit is read
    once (squeue), then counted down here."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._read = False
        self._ends_at: float | None = None  # monotonic; None: no limit

    def __call__(self, longest_slice_seconds: float) -> bool:
        """True when the job's time left covers twice ``longest_slice_seconds`` plus
        `MORE_MARGIN_SECONDS` (always, without a time limit)."""
        left = self._left()
        return left is None or left >= 2 * longest_slice_seconds + MORE_MARGIN_SECONDS

    def covers(self, longest_task_seconds: float) -> bool:
        """True when the job's time left covers one more task as long as
        ``longest_task_seconds`` with a margin (a quarter of it, at least
        `TASK_MARGIN_SECONDS`): a task the time limit cuts costs a try (TIMEOUT); one not
        started waits for the next job. Always, without a time limit."""
        left = self._left()
        margin = max(TASK_MARGIN_SECONDS, longest_task_seconds / 4)
        return left is None or left >= longest_task_seconds + margin

    def _left(self) -> float | None:
        """Seconds left before the job's time limit (None: no limit)."""
        if not self._read:
            left = commands.time_left(self.job_id)
            self._ends_at = None if left is None else time.monotonic() + left
            self._read = True
        return None if self._ends_at is None else self._ends_at - time.monotonic()
