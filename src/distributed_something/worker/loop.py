"""The worker loop: receive → check done → stage → run → upload → mark done → delete.

One iteration is `Worker.step`, with time and sleep injectable, so the loop is tested a step
at a time; `Worker.run` repeats it until the queue is drained or the worker is told to stop.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from distributed_something.backends import Backend
from distributed_something.config.model import Config
from distributed_something.errors import DSError, InputError
from distributed_something.interfaces.queue import Message
from distributed_something.interfaces.storage import ObjectInfo, Storage
from distributed_something.jobs.model import Task
from distributed_something.jobs.prefixes import in_records_area
from distributed_something.keys import join_key
from distributed_something.recipes.base import (
    Input,
    Recipe,
    TaskPlan,
    Workdir,
    listed_inputs,
    more_inputs,
)
from distributed_something.records import (
    META_ROOT,
    Attempt,
    DoneMarker,
    Failure,
    RunRecords,
    Skip,
)
from distributed_something.worker.heartbeat import Heartbeat
from distributed_something.worker.policy import retry_delay, skip_reason
from distributed_something.worker.runner import Runner

log = logging.getLogger("ds.worker")
_WORKDIR_NUMBERS = itertools.count(1)

LOG_TAIL_BYTES = 4000


#: Makes the context in which a task's log (a growing file) is shipped elsewhere while the
#: command runs, e.g. to a CloudWatch log stream: (task id, attempt, log path) → context.
TaskLogFactory = Callable[[str, int, Path], contextlib.AbstractContextManager[object]]


class Outcome(enum.Enum):
    """What one step of the loop did."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    IDLE = "idle"
    DRAINED = "drained"
    STOPPED = "stopped"
    LOST = "lost"
    DUPLICATE = "duplicate"


@dataclass
class WorkerSettings:
    """How this worker behaves (not what it runs: that is the config and the recipe)."""

    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: the run whose records this worker writes (skips, failures, logs)
    run_id: str = "default"
    scratch_root: Path = field(default_factory=lambda: Path("/tmp/ds-scratch"))
    poll_interval: float = 0.5
    start_delay: float = 0.0
    #: most seconds between polls when the queue keeps coming back empty
    max_poll_interval: float = 5.0


@dataclass
class WorkerSummary:
    """Counts of what a worker did in its life, by outcome."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.value] = self.counts.get(outcome.value, 0) + 1


class Worker:
    """Processes tasks from ``backend.queue`` until the queue is drained or it is stopped."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        recipe: Recipe,
        runner: Runner,
        settings: WorkerSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        task_log: TaskLogFactory | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.recipe = recipe
        self.runner = runner
        self.settings = settings
        self.clock = clock
        self.records = RunRecords(backend.storage, config.app_name, settings.run_id)
        self.stopping = threading.Event()
        self._abort = threading.Event()
        #: bytes of the header `_execute` wrote to the current task's log (-1: none yet)
        self._log_header_size = -1
        self._heartbeat = Heartbeat(backend.queue)
        #: the environment every command starts from (read once: copying os.environ per
        #: task decodes every variable again)
        self._base_env = {**os.environ, **config.env}
        self._workdir = self._new_workdir()
        self._sleep = sleep or self.stopping.wait
        self._idle_polls = 0
        self._task_log = task_log
        #: when (by ``clock``) polls started coming back empty; None while holding a task
        #: or before the first poll (read by the idle shutdown, aws/idle.py)
        self.idle_since: float | None = None
        #: the attempt in progress (its open record is in storage), None between tasks
        self._attempt: Attempt | None = None

    # control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking work; the task in progress (if any) is handed back at once."""
        self.stopping.set()
        self._abort.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker (ECS and `ds` stop workers with SIGTERM)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: handing back the current task and stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> WorkerSummary:
        """Loop until the queue is drained (nothing visible, nothing in flight) or stopped."""
        summary = WorkerSummary()
        if self.settings.start_delay > 0:
            self._sleep(self.settings.start_delay)
        try:
            while not self.stopping.is_set():
                outcome = self.step()
                summary.add(outcome)
                if outcome in (Outcome.DRAINED, Outcome.STOPPED):
                    break
        finally:
            self.close()
        log.info("worker %s exits: %s", self.settings.name, summary.counts)
        return summary

    def close(self) -> None:
        """Stop the heartbeat thread and remove the scratch folder (`run` does this)."""
        self._heartbeat.close()
        shutil.rmtree(self._workdir.root, ignore_errors=True)

    def _new_workdir(self) -> Workdir:
        # One per Worker object (tests run several in one process), reused task after task.
        name = f"w{os.getpid()}-{next(_WORKDIR_NUMBERS)}"
        return Workdir(self.settings.scratch_root / name)

    # one iteration ---------------------------------------------------------------------
    def step(self) -> Outcome:
        """Take at most one task and carry it to an outcome."""
        if self.stopping.is_set():
            return Outcome.STOPPED
        lease = float(self.config.queue.visibility)
        try:
            messages = self.backend.queue.receive(1, lease)
        except DSError as exc:
            log.warning("receive failed: %s", exc)
            self._idle()
            return Outcome.IDLE
        if not messages:
            if self.backend.queue.counts().drained:
                return Outcome.DRAINED
            if self.idle_since is None:
                self.idle_since = self.clock()
            self._idle()
            return Outcome.IDLE
        self._idle_polls = 0
        self.idle_since = None
        return self._process(messages[0], lease)

    def _idle(self) -> None:
        # Back off while the queue stays empty but not drained (tasks in flight elsewhere).
        self._idle_polls += 1
        interval = min(
            self.settings.poll_interval * 2 ** min(self._idle_polls - 1, 6),
            self.settings.max_poll_interval,
        )
        self._sleep(interval)

    def _process(self, message: Message, lease: float) -> Outcome:
        self._abort.clear()
        if self.stopping.is_set():
            self.backend.queue.release(message, 0)
            return Outcome.STOPPED
        workdir = self._workdir
        log_path = workdir.root / "task.log"
        started = self.clock()
        self._log_header_size = -1
        self._attempt = None
        outcome = Outcome.FAILED
        try:
            workdir.create()
            task = Task.from_body(message.body)
            plan = self.recipe.plan(self.config, task, workdir)
            if self._already_done(task, plan):
                self.backend.queue.delete(message)
                return Outcome.SKIPPED
            if self._begin_attempt(message, started):
                outcome = Outcome.DUPLICATE
                return outcome
            outcome = self._execute(message, task, plan, workdir, log_path, lease, started)
            return outcome
        except Exception as exc:  # noqa: BLE001 - any error is this task's failure, not ours
            error = str(exc) if isinstance(exc, DSError) else f"{type(exc).__name__}: {exc}"
            log.warning("task %s failed before/after running: %s", message.task_id, error)
            log.debug("%s", traceback.format_exc())
            self._fail(message, error, None, log_path)
            return Outcome.FAILED
        finally:
            self._store_log(message, log_path, started, succeeded=outcome is Outcome.DONE)
            if not workdir.clear():
                # Something the command left cannot be removed: the next task must not see it.
                log.warning("could not empty %s; using a new scratch folder", workdir.root)
                self._workdir = self._new_workdir()

    def _begin_attempt(self, message: Message, started: float) -> bool:
        """Record the attempt's start; True when another delivery of the task is already
        running, in which case this one stands down (its message is deleted: the other
        message carries the task to its end).

        Write first, then look: of two deliveries that start at once, both see both records,
        and the later (by start time, then message) stands down, so exactly one runs. An
        open record of this same message is a delivery whose worker vanished: closed as lost.
        """
        attempt = self._new_attempt(message, started)
        self.records.open_attempt(attempt)
        self._attempt = attempt
        mine = (round(started * 1e6), attempt.stem)
        for other in self.records.attempt_keys(message.task_id):
            if other.outcome != "running" or other.stem == attempt.stem:
                continue
            if other.message == attempt.stem.rsplit("-", 1)[1]:
                self.records.close_stale(other, "lost", self.clock())
            elif (other.started_us, other.stem) < mine:
                log.warning(
                    "task %s is already running (attempt %s): this delivery stands down",
                    message.task_id,
                    other.stem,
                )
                self._end_attempt("duplicate", error="another delivery was already running")
                self.backend.queue.delete(message)
                return True
        return False

    def _new_attempt(self, message: Message, started: float) -> Attempt:
        return Attempt(
            task_id=message.task_id,
            attempt=message.receive_count,
            message_id=message.message_id or message.handle,
            worker=self.settings.name,
            started_at=started,
        )

    def _end_attempt(self, outcome: str, *, exit_code: int | None = None, error: str = "") -> None:
        """Close the open attempt record (if any) with its outcome."""
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        attempt.outcome = outcome
        attempt.ended_at = self.clock()
        attempt.exit_code = exit_code
        attempt.error = error
        try:
            self.records.close_attempt(attempt)
        except Exception as exc:  # noqa: BLE001 - a record lost must not lose the task
            log.warning("could not record the end of task %s: %s", attempt.task_id, exc)

    def _already_done(self, task: Task, plan: TaskPlan) -> bool:
        prefix = plan.output_prefix.rstrip("/") + "/"
        if in_records_area(prefix):
            return False  # never judged by the records area's objects; the upload refuses it
        reason = skip_reason(
            self.config.check_if_done,
            has_marker=lambda: self.records.read_done(task.id) is not None,
            outputs=lambda: self._bucket(plan.output_bucket, "destination").list(prefix),
            where=prefix,
        )
        if reason is None:
            return False
        self.records.write_skip(Skip(task.id, self.clock(), reason, self.settings.name))
        log.info("task %s skipped: %s", task.id, reason)
        return True

    def _execute(
        self,
        message: Message,
        task: Task,
        plan: TaskPlan,
        workdir: Workdir,
        log_path: Path,
        lease: float,
        started: float,
    ) -> Outcome:
        self._stage_inputs(task, plan, workdir)
        header = (
            f"ds: task {task.id} attempt {message.receive_count} on {self.settings.name}\n"
            f"ds: argv {plan.argv!r}\n"
        ).encode()
        self._log_header_size = len(header)
        env = {**self._base_env, **plan.env, "DS_TASK_ID": task.id}
        shipping = (
            self._task_log(task.id, message.receive_count, log_path)
            if self._task_log is not None
            else contextlib.nullcontext()
        )
        with shipping, self._heartbeat.keep(message, lease, self._abort) as beat:
            result = self.runner.run(
                plan.argv,
                cwd=workdir.root,
                env=env,
                log_path=log_path,
                stop=self._abort,
                header=header,
            )
        if self.stopping.is_set():
            self.backend.queue.release(message, 0)
            self._end_attempt("released", error="handed back: the worker was stopping")
            log.info("task %s handed back (worker stopping)", task.id)
            return Outcome.STOPPED
        if beat.lost.is_set():
            # Someone else holds the task now; uploading would race with them.
            self._end_attempt("lost", error="the lease was lost; the result was dropped")
            log.warning("task %s: lease lost, result dropped", task.id)
            return Outcome.LOST
        if beat.ended is not None:
            # The lease reached its hard end (SQS: 12 h after receipt): the command was stopped
            # in time and the task is still held, so record why and hand it back as a failure.
            self._fail(message, beat.ended, result.exit_code, log_path)
            return Outcome.FAILED
        reason = self.recipe.check_success(result.exit_code, workdir)
        if reason is not None:
            self._fail(message, reason, result.exit_code, log_path)
            return Outcome.FAILED
        outputs = self._upload_outputs(plan, workdir)
        self.records.write_done(
            DoneMarker(
                task_id=task.id,
                attempt=message.receive_count,
                duration=round(result.duration, 3),
                outputs=outputs,
                started_at=started,
                finished_at=self.clock(),
                worker=self.settings.name,
                output_prefix=plan.output_prefix,
                run_id=self.settings.run_id,
            )
        )
        self._end_attempt("done", exit_code=result.exit_code)
        self.backend.queue.delete(message)
        log.info("task %s done in %.1fs (%d outputs)", task.id, result.duration, len(outputs))
        return Outcome.DONE

    def _bucket(self, name: str, role: str) -> Storage:
        """The bucket a plan names, else the config's source or destination bucket."""
        storage = self.config.storage
        default = storage.destination_bucket if role == "destination" else storage.source_bucket
        return self.backend.bucket(name or default)

    def _stage_inputs(self, task: Task, plan: TaskPlan, workdir: Workdir) -> None:
        self._download(plan.inputs, workdir)
        # Some recipes' inputs are "everything under a prefix" (DOZC copies a plate folder).
        self._download(listed_inputs(self.recipe, self.config, task, workdir, self._list), workdir)
        # Some recipes learn what else to fetch only from the first inputs (a LoadData CSV
        # lists the images); they are fetched the same way, before the command runs.
        self._download(more_inputs(self.recipe, self.config, task, workdir), workdir)

    def _list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """The objects under ``prefix`` in a bucket named as in `Input.bucket`."""
        return self._bucket(bucket, "source").list(prefix)

    def _download(self, inputs: list[Input], workdir: Workdir) -> None:
        for item in inputs:
            source = self._bucket(item.bucket, "source")
            target = workdir.input_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                source.get_file(item.key, target)
            except KeyError:
                raise FileNotFoundError(f"input {item.key!r} is not in storage") from None

    def _upload_outputs(self, plan: TaskPlan, workdir: Workdir) -> list[str]:
        with os.scandir(workdir.output_dir) as entries:
            if next(entries, None) is None:
                return []  # nothing written: no listing, no bucket
        destination = self._bucket(plan.output_bucket, "destination")
        items = [
            (join_key(plan.output_prefix, path.relative_to(workdir.output_dir).as_posix()), path)
            for path in sorted(p for p in workdir.output_dir.rglob("*") if p.is_file())
        ]
        # DESIGN §6: outputs never land in the records area, whatever slipped past
        # validation (a message sent by other means, an older `ds`): fail before any upload.
        forged = next((key for key, _ in items if in_records_area(key)), None)
        if forged is not None:
            raise InputError(
                "output prefix",
                None,
                f"the output {forged!r} (prefix {plan.output_prefix!r}) would land under "
                f"{META_ROOT}/, the records area; nothing was uploaded",
                "give the task an output prefix outside _ds/ (check the job values and "
                "recipe.output_prefix with `ds validate`)",
            )
        destination.put_files(items)
        return [key for key, _ in items]

    def _fail(self, message: Message, error: str, exit_code: int | None, log_path: Path) -> None:
        tail = ""
        if log_path.exists():
            with log_path.open("rb") as fh:
                fh.seek(max(0, log_path.stat().st_size - LOG_TAIL_BYTES))
                tail = fh.read().decode(errors="replace")
        final = message.receive_count >= self.backend.queue.max_receive_count
        try:
            self.records.write_failure(
                Failure(
                    task_id=message.task_id,
                    attempt=message.receive_count,
                    error=error,
                    exit_code=exit_code,
                    log_tail=tail,
                    at=self.clock(),
                    worker=self.settings.name,
                    final=final,
                )
            )
            if self._attempt is None:  # failed before its start was recorded
                self._attempt = self._new_attempt(message, self.clock())
            self._end_attempt("dead" if final else "failed", exit_code=exit_code, error=error)
        finally:
            delay = retry_delay(message.receive_count, self.backend.queue.max_receive_count)
            self.backend.queue.release(message, delay, error)
        log.warning("task %s attempt %d failed: %s", message.task_id, message.receive_count, error)

    def _store_log(
        self, message: Message, log_path: Path, started: float, *, succeeded: bool
    ) -> None:
        """Keep the task's log in storage, except a success's log that holds only our
        header (the command printed nothing): one write per task less, nothing lost."""
        try:
            size = log_path.stat().st_size
        except FileNotFoundError:
            return
        if succeeded and size == self._log_header_size:
            return
        try:
            self.backend.storage.put_file(
                self.records.log_key(message.task_id, message.receive_count, started), log_path
            )
        except Exception as exc:  # noqa: BLE001 - a lost log must not lose the task
            log.warning("could not store the log of task %s: %s", message.task_id, exc)
