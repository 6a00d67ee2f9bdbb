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
import stat
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from distributed_something.config.model import Config
from distributed_something.errors import DSError, InputError, PermanentTaskError, QueueGone
from distributed_something.interfaces.backend import Backend, TaskLogFactory
from distributed_something.interfaces.queue import Message
from distributed_something.interfaces.storage import ObjectInfo, Storage
from distributed_something.jobs.model import Task
from distributed_something.jobs.prefixes import in_records_area
from distributed_something.keys import (
    MAX_NAME_BYTES,
    RESERVED_NAME_PREFIX,
    join_key,
    shown_name,
    storable_key_problem,
)
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
    AttemptKey,
    DoneMarker,
    Failure,
    RunRecords,
    Skip,
    Writes,
    attempts_ran_by,
)
from distributed_something.secrets_scan import redact
from distributed_something.worker import claims, procgroups
from distributed_something.worker.causes import (
    FREE_CAUSES,
    classify_exception,
    classify_run,
    describe,
    first_meaningful_line,
    killed_by_sigkill,
    memory_error,
    out_of_memory_line,
    start_failure,
    timeout_error,
)
from distributed_something.worker.heartbeat import Heartbeat
from distributed_something.worker.policy import (
    lease_seconds,
    retries_used,
    retry_decision,
    retry_delay,
    skip_reason,
)
from distributed_something.worker.runner import Runner, RunResult

log = logging.getLogger("ds.worker")
_WORKDIR_NUMBERS = itertools.count(1)

LOG_TAIL_BYTES = 4000
#: Of a task's log, at most this much of its start and of its end is stored per attempt (the
#: middle is cut, with a note saying how much): a task printing 200 MB stores 2 MiB.
LOG_KEEP_HEAD_BYTES = 1024 * 1024
LOG_KEEP_TAIL_BYTES = 1024 * 1024
#: How much of a log's start and end is searched for its error line.
_ERROR_SEARCH_HEAD = 256 * 1024
_ERROR_SEARCH_TAIL = 64 * 1024
#: Seconds past ``recipe.timeout`` (and the runner's grace) after which the heartbeat stops
#: the command and its lease itself, should the runner not have ended it in time.
TIMEOUT_MARGIN_SECONDS = 30.0
#: Where the queue can give messages back unstarted (the local queue: ``give_back``), a
#: worker running short tasks receives several at once, doubling up to this many while
#: each task takes under `SHORT_TASK_SECONDS`, and holds the rest to run next: one receive
#: for all of them (see `Worker.step`). Each still records its start when it starts.
MAX_HELD_TASKS = 16
#: how long a worker waits for its own stop after its command died of a stopping signal
#: (`_await_stop`)
STOP_SIGNAL_GRACE_SECONDS = 1.0
#: the signals `ds cleanup`, Slurm's scancel, ECS and a terminal's Ctrl-C stop a job with
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
SHORT_TASK_SECONDS = 0.05


def stopped_by_signal(exit_code: int | None) -> bool:
    """Whether an exit code says a stopping signal (`_STOP_SIGNALS`) ended the command:
    killed by it (``-signal``), or exiting with ``128 + signal`` as shells and JVMs do when
    they get it. Pure."""
    if exit_code is None:
        return False
    return -exit_code in _STOP_SIGNALS or exit_code - 128 in _STOP_SIGNALS


@dataclass(frozen=True)
class Holding:
    """What a worker holds the moment an attempt's open record is written (`Worker`'s
    ``on_attempt``: what its watchdog settles should it die)."""

    attempt: Attempt
    message: Message
    #: messages received with it, to run next
    held: list[Message]
    #: receipt handles of messages whose tasks' ends are written but which are not deleted
    #: yet (the delete rides on the next receive: `Worker._acknowledge`)
    done: list[str]
    #: where the task's log is written
    log: Path


#: `Worker`'s ``on_attempt``; must not raise.
AttemptHook = Callable[[Holding], None]


@dataclass
class _Held:
    """A message received with another, to run after it, and when (by the worker's clock,
    the queue's: the lease is not extended while held)."""

    message: Message
    received: float


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
        on_attempt: AttemptHook | None = None,
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
        self._on_attempt = on_attempt
        #: the claim on the task in progress this worker holds (`worker.claims`), if any
        self._claimed: claims.Holder | None = None
        #: its object's key and version (`claims.renew` says it alive at each extension)
        self._claim_key = ""
        self._claim_tag: str | None = None
        #: the claim of the task in progress was taken over (`_renew_claim`)
        self._claim_lost = False
        #: when (by ``clock``) polls started coming back empty; None while holding a task
        #: or before the first poll (read by the idle shutdown, aws/idle.py)
        self.idle_since: float | None = None
        #: the attempt in progress (its open record is in storage), None between tasks
        self._attempt: Attempt | None = None
        #: the attempt of the task in progress has its end recorded (what fails after that,
        #: handing its message back or deleting it, is not a second attempt)
        self._attempt_ended = False
        #: how the attempt in progress ended, as its log's last line says it ("" until then),
        #: unless its log says so already (it failed before the command started)
        self._ending = ""
        self._ended_said = False
        #: where the task in progress is: plan, stage, run or upload (names a failure's cause)
        self._phase = "plan"
        #: retries the task in progress used up before this attempt (from its attempt
        #: records; None until its start is recorded: the receive count stands in)
        self._used: int | None = None
        #: the attempt's number as the ledger counts tries (`_attempt_label`)
        self._number: int | None = None
        #: the other attempts' (start, outcome) behind ``_used``, until redrives are counted
        self._history: list[tuple[int, str]] | None = None
        #: how the command of the task in progress ended (None before it ran)
        self._result: RunResult | None = None
        #: records of tasks carried to their end, not written yet, and their messages
        #: (`_finish`; only where the storage writes atomically)
        self._finished = Writes()
        self._finished_messages: list[Message] = []
        #: messages received with the one in progress, to run after it, oldest first
        self._held: list[_Held] = []
        #: how many messages the next receive asks for (`_adapt`); always 1 where the queue
        #: cannot give messages back (``give_back``)
        self._batch = 1
        self._batching = hasattr(backend.queue, "give_back")
        #: whether the task in progress turned out long (`_long_task`)
        self._ran_long = False

    # control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking work; the task in progress (if any) is handed back at once."""
        self.stopping.set()
        self._abort.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM, SIGINT and SIGHUP stop the worker (ECS and `ds` stop workers with
        SIGTERM; SIGHUP: the terminal of a worker started by hand closed)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: handing back the current task and stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's stays ignored
            signal.signal(signal.SIGHUP, handler)

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
        """Stop the heartbeat thread, make the deletes `_acknowledge` deferred and remove the
        scratch folder (`run` does this)."""
        self._heartbeat.close()
        self._save_finished()
        self._give_back_held()
        try:
            self._flush_deletes()
        finally:
            shutil.rmtree(self._workdir.root, ignore_errors=True)

    def _acknowledge(self, message: Message) -> None:
        """Delete the message of a task carried to its end (its records are written). Where
        the queue can (``delete_soon``, the local queue), the delete rides on the next
        receive: one transaction less per task. A worker that dies before leaves the
        message to come back when its lease ends; its next delivery finds the task done."""
        soon = getattr(self.backend.queue, "delete_soon", None)
        if soon is not None:
            soon(message)
        else:
            self.backend.queue.delete(message)

    def _new_workdir(self) -> Workdir:
        # One per Worker object (tests run several in one process), reused task after task.
        stem = procgroups.workdir_stem(procgroups.this_machine(), os.getpid())
        name = f"{stem}{next(_WORKDIR_NUMBERS)}"
        return Workdir(self.settings.scratch_root / name)

    # one iteration ---------------------------------------------------------------------
    def step(self) -> Outcome:
        """Take at most one task and carry it to an outcome.

        Where the queue can give messages back (`_batching`), a receive asks for several
        while tasks are short (`_adapt`), and those after the first are held to run next,
        each recording its start as it starts. What is held goes back to the queue, its
        receive undone, when a task turns out long (the command has run a poll interval, or
        the whole task took `SHORT_TASK_SECONDS`), when the worker stops, and before half
        the lease has passed (a held message's lease is not extended)."""
        if self.stopping.is_set():
            self._save_finished()
            self._give_back_held()
            return Outcome.STOPPED
        lease = lease_seconds(self.config.queue.visibility)
        if self._held:
            held = self._held.pop(0)
            if self.clock() - held.received < lease / 2:
                return self._timed(held.message, lease)
            # Held too long (its lease is not extended): given back, lest it run out.
            self._held.insert(0, held)
            self._give_back_held()
        gone: QueueGone | None = None
        try:
            messages = self.backend.queue.receive(self._batch, lease)
        except QueueGone as exc:
            gone, messages = exc, []
        except DSError as exc:
            log.warning("receive failed: %s", exc)
            self._idle()
            return Outcome.IDLE
        if not messages:
            self._save_finished()  # no task follows at once: not kept waiting for one
            drained = False
            try:
                drained = gone is None and self.backend.queue.counts().drained
            except QueueGone as exc:
                gone = exc
            if gone is not None:
                # Deleted by cleanup, or this worker started after it (SECONDS_TO_START):
                # no task will ever come, so stop now rather than poll it until killed.
                log.info("the queue %s no longer exists: the run is over", self.config.queue_name)
                log.debug("%s", gone)
                return Outcome.DRAINED
            if drained:
                return Outcome.DRAINED
            if self.idle_since is None:
                self.idle_since = self.clock()
            self._idle()
            return Outcome.IDLE
        self._idle_polls = 0
        self.idle_since = None
        received = self.clock()
        self._held = [_Held(message, received) for message in messages[1:]]
        return self._timed(messages[0], lease)

    def _timed(self, message: Message, lease: float) -> Outcome:
        """`_process`, then `_adapt` to how long the task took."""
        started = time.monotonic()
        self._ran_long = False
        outcome = self._process(message, lease)
        self._adapt(outcome, time.monotonic() - started)
        return outcome

    def _adapt(self, outcome: Outcome, seconds: float) -> None:
        """Receive more at once after a short task done; after a long one, one at a time
        (what is held is given back: it would wait behind long tasks)."""
        if not self._batching:
            return
        if self._ran_long or seconds >= SHORT_TASK_SECONDS:
            self._long_task()
        elif outcome is Outcome.DONE:
            self._batch = min(self._batch * 2, MAX_HELD_TASKS)

    def _long_task(self) -> None:
        """The task in progress is not short (`Runner.run`'s ``on_long``): one task per
        receive again, what is held goes back to the queue for other workers, and the
        deletes of finished tasks' messages are made now rather than with the next receive
        (their leases are not extended: they would come back)."""
        self._ran_long = True
        self._batch = 1
        self._give_back_held()
        self._flush_deletes()

    def _flush_deletes(self) -> None:
        """Make the deletes `_acknowledge` deferred (``flush``, where the queue defers)."""
        flush = getattr(self.backend.queue, "flush", None)
        try:
            if flush is not None:
                flush()
        except DSError as exc:  # the messages come back when their leases end: found done
            log.warning("could not delete the messages of finished tasks: %s", exc)

    def _give_back_held(self) -> None:
        """Give the held messages back to the queue, unstarted (their receive undone).
        Should that fail, their leases run out and they come back then."""
        held, self._held = self._held, []
        if not held:
            return
        try:
            self.backend.queue.give_back([h.message for h in held])  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - they come back when their leases run out
            log.warning("could not give back %d tasks held to run next: %s", len(held), exc)

    def _idle(self) -> None:
        # Back off while the queue stays empty but not drained (tasks in flight elsewhere).
        self._idle_polls += 1
        interval = min(
            self.settings.poll_interval * 2 ** min(self._idle_polls - 1, 6),
            self.settings.max_poll_interval,
        )
        self._sleep(interval)

    def _process(self, message: Message, lease: float) -> Outcome:
        """Carry one task to its outcome."""
        self._abort.clear()
        self._claim_lost = False
        if self.stopping.is_set():
            # Received as the worker was told to stop: handed back untouched, using no retry
            # (sent again fresh when this receive was the last the queue allows).
            if message.receive_count >= self.backend.queue.max_receive_count:
                self._resend(message, "handed back: the worker was stopping")
            else:
                self.backend.queue.release(message, 0)
            return Outcome.STOPPED
        workdir = self._workdir
        log_path = workdir.root / "task.log"
        started = self.clock()
        self._log_header_size = -1
        self._attempt = None
        self._attempt_ended = False
        self._ending = ""
        self._ended_said = False
        self._phase = "plan"
        self._used = None
        self._number = None
        self._history = None
        self._result = None
        outcome = Outcome.FAILED
        try:
            workdir.create()
            task = Task.from_body(message.body)
            plan = self.recipe.plan(self.config, task, workdir)
            if any(kept.task_id == task.id for kept in self._finished_messages):
                self._save_finished()  # the task again (a second message): its records first
            if self._already_done(message, task, plan):
                self._acknowledge(message)
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
            if self._attempt_ended:
                # Its attempt is recorded to its end already: what failed is handing the
                # message back or deleting it (the queue deleted by cleanup, say). The
                # message comes back when its lease ends, or never: no second attempt.
                return Outcome.FAILED
            self._fail(
                message,
                error,
                None,
                log_path,
                cause=classify_exception(exc, self._phase),
                final=isinstance(exc, PermanentTaskError),
            )
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

        Write first, then look. Where the storage lists in the same transaction as the
        write (`RunRecords.open_attempt_looking`: the local records, whose writes SQLite
        serialises), every open record listed was written before this one: its delivery came
        first, and this one stands down; the first to write runs. Elsewhere (S3) the listing
        follows the write, and the task's claim decides (`worker.claims`: S3's conditional
        write lets exactly one delivery hold it; one that finds another running delivery
        holding it stands down). Without claims (or with one left undecided), of two
        deliveries that start at once both see both records, and the later (by start time,
        then message) stands down. An open record of this same message is a delivery whose
        worker vanished: closed as lost.

        The same listing tells how many retries the task has used up (`retries_used`).
        """
        attempt = self._new_attempt(message, started)
        listed = self.records.open_attempt_looking(attempt, first=self._finished)
        self._attempt = attempt
        if self._on_attempt is not None:
            # The ends of the tasks carried to their end were written with this start.
            pending = getattr(self.backend.queue, "pending_deletes", list)
            done = [m.handle for m in self._finished_messages] + pending()
            held = [kept.message for kept in self._held]
            log_file = self._workdir.root / "task.log"
            self._on_attempt(Holding(attempt, message, held, done, log_file))
        self._saved_finished()
        ordered = listed is not None  # only records written before this one are listed
        if listed is None:
            listed = self.records.attempt_keys(message.task_id)
        claimed = claims.Claim() if ordered else self._claim(attempt)
        if claimed.holder is not None:
            # The same message running elsewhere (delivered twice): left as it is, as
            # deleting it would take it from under the worker running it.
            same = claimed.holder.message == attempt.message_id
            return self._stand_down(message, claimed.holder.stem, delete=not same)
        mine = (round(started * 1e6), attempt.stem)
        # Its number as the ledger counts tries (the receive count restarts at a redrive).
        others = [key for key in listed if key.stem != attempt.stem]
        self._number = attempts_ran_by(others, mine[0]) + 1
        history: list[tuple[int, str]] = []
        for other in listed:
            if other.stem == attempt.stem:
                continue
            if other.outcome != "running":
                history.append((other.started_us, other.outcome))
                continue
            if other.message == attempt.stem.rsplit("-", 1)[1]:
                self.records.close_stale(other, "lost", self.clock())
                self._end_taken_over(other)
            elif not claimed.ours and (ordered or (other.started_us, other.stem) < mine):
                return self._stand_down(message, other.stem)
        self._used = retries_used(history)
        self._history = history
        return False

    def _end_taken_over(self, other: AttemptKey) -> None:
        """End the command of ``other``, an attempt of this same message whose worker lost
        the lease, should that worker still live on this machine (stopped past its lease):
        two executions of the task must not run at once."""
        try:
            procgroups.end_taken_over(
                self.settings.scratch_root, self.settings.run_id, f"{other.task_id}/{other.stem}"
            )
        except OSError as exc:  # the records folder unreadable: nothing known to end
            log.warning("could not look for the command of %s: %s", other.stem, exc)

    def _stand_down(self, message: Message, running: str, *, delete: bool = True) -> bool:
        """This delivery stands down for the running attempt ``running``: its attempt is
        closed as a duplicate and its message deleted (the other carries the task), unless
        ``delete`` is False (it is the running attempt's own message: its lease runs out,
        and a later delivery finds the task's outcome)."""
        log.warning(
            "task %s is already running (attempt %s): this delivery stands down",
            message.task_id,
            running,
        )
        self._end_attempt("duplicate", error="another delivery was already running")
        if delete:
            self.backend.queue.delete(message)
        return True

    def _claim(self, attempt: Attempt) -> claims.Claim:
        """The task's claim for ``attempt`` (`worker.claims`), kept in ``_claimed`` when
        ours; a claim that cannot be made (the storage failing) leaves the start-time rule
        to decide."""
        now = self.clock()
        mine = claims.Holder(attempt.stem, attempt.message_id, now)
        key = self.records.claim_key(attempt.task_id)

        def outcome_of(stem: str) -> str | None:
            keys = self.records.attempt_keys(attempt.task_id)
            return next((k.outcome for k in keys if k.stem == stem), None)

        live = claims.live_for(lease_seconds(self.config.queue.visibility))
        try:
            found = claims.claim(
                self.records.storage, key, mine, outcome_of, now=now, live_seconds=live
            )
        except DSError as exc:
            log.warning("could not claim task %s: %s", attempt.task_id, exc)
            return claims.Claim()
        self._claimed = mine if found.ours else None
        self._claim_key, self._claim_tag = key, (found.tag if found.ours else None)
        return found

    def _renew_claim(self) -> None:
        """Say in the task's claim that this worker still runs it (at each lease extension,
        from the heartbeat's thread): a second delivery of the same message then stands
        down (`claims.decide`)."""
        mine, tag = self._claimed, self._claim_tag
        if mine is None or tag is None:
            return
        renewed = claims.renew(self.records.storage, self._claim_key, mine, tag, self.clock())
        if renewed is None:
            # Another delivery holds the task now (this worker was stopped past its lease):
            # its result must be dropped, as on a lost lease, whatever the queue said (SQS may
            # still take the old receipt handle's extensions).
            log.warning("the claim %s was taken over by another delivery", self._claim_key)
            self._claim_lost = True
        self._claim_tag = renewed

    def _release_claim(self, task_id: str) -> None:
        """Remove the task's claim this worker holds (its attempt ended)."""
        mine, self._claimed = self._claimed, None
        if mine is None:
            return
        try:
            claims.release(self.records.storage, self.records.claim_key(task_id), mine)
        except DSError as exc:  # the next delivery takes it over: its attempt ended
            log.warning("could not release the claim of task %s: %s", task_id, exc)

    def _new_attempt(self, message: Message, started: float) -> Attempt:
        # An open record says cause "lost": if this worker vanishes, whoever closes the
        # record (`RunRecords.close_stale`, as lost) keeps it; `_end_attempt` replaces it.
        return Attempt(
            task_id=message.task_id,
            attempt=message.receive_count,
            message_id=message.message_id or message.handle,
            worker=self.settings.name,
            started_at=started,
            cause="lost",
        )

    def _end_attempt(
        self,
        outcome: str,
        *,
        exit_code: int | None = None,
        error: str = "",
        cause: str = "",
        done: DoneMarker | None = None,
    ) -> None:
        """Close the open attempt record (if any) with its outcome, its cause (for failed,
        dead, released and lost attempts) and what the command used (when it ran).

        With ``done``, the task's done marker is stored first; should that fail, the error
        is raised and the attempt stays open (the task then fails, and `_fail` closes it).
        Once it is stored the task is done: a record that cannot be written after it is only
        logged, as any record without a marker (the task's fate does not depend on it)."""
        attempt, self._attempt = self._attempt, None
        if done is not None:
            try:
                self.records.write_done(done)
            except Exception:
                self._attempt = attempt
                raise
        if attempt is None:
            return
        self._attempt_ended = True
        self._ended(attempt, outcome, exit_code=exit_code, error=error, cause=cause)
        if not self._ended_said:
            number = self._number if self._number is not None else attempt.attempt
            self._ending = f"ds: attempt {number} ended: {outcome}"
            self._ending += (f" ({cause})" if cause else "") + (f": {error}" if error else "")
        try:
            self.records.close_attempt(attempt)
        except Exception as exc:  # noqa: BLE001 - a record lost must not lose the task
            log.warning("could not record the end of task %s: %s", attempt.task_id, exc)
        self._release_claim(attempt.task_id)

    def _ended(
        self,
        attempt: Attempt,
        outcome: str,
        *,
        exit_code: int | None = None,
        error: str = "",
        cause: str = "",
    ) -> None:
        """Fill in how ``attempt`` ended (see `_end_attempt`)."""
        attempt.outcome = outcome
        attempt.ended_at = self.clock()
        attempt.exit_code = exit_code
        attempt.error = error
        attempt.cause = cause
        if self._result is not None:
            attempt.peak_memory_mb = self._result.peak_memory_mb
            attempt.cpu_seconds = self._result.cpu_seconds

    def _finish(self, message: Message, marker: DoneMarker, exit_code: int | None) -> None:
        """Record the task done, then delete its message.

        Where the storage writes atomically (the local records), the records are kept to go
        with the next attempt's start, one write for both (`_begin_attempt`), or written at
        once when no task follows (`_save_finished`); the message is deleted only after
        them. A worker that dies in between loses them: its message comes back when its
        lease ends, and the task runs again (at least once, as any unrecorded work)."""
        attempt = self._attempt
        if attempt is None or not self.records.writes_atomically:
            self._end_attempt("done", exit_code=exit_code, done=marker)
            self._acknowledge(message)
            return
        self._ended(attempt, "done", exit_code=exit_code)
        # Raises (the attempt stays open, and the task fails) only when the task's earlier
        # done marker cannot be read.
        self._finished.add(self.records.closing(attempt, marker))
        self._finished_messages.append(message)
        self._attempt = None
        self._attempt_ended = True

    def _save_finished(self) -> None:
        """Write the records `_finish` kept, then delete their messages. Should the write
        fail, both are kept for the next try (the messages stay leased meanwhile)."""
        if not self._finished:
            return
        try:
            self.records.write(self._finished)
        except Exception as exc:  # noqa: BLE001 - kept: written at the next try
            log.warning(
                "could not record the end of %d tasks (tried again later): %s",
                len(self._finished_messages),
                exc,
            )
            return
        self._saved_finished()

    def _saved_finished(self) -> None:
        """The kept records are written: forget them and delete their messages."""
        self._finished = Writes()
        messages, self._finished_messages = self._finished_messages, []
        for message in messages:
            self._acknowledge(message)

    def _already_done(self, message: Message, task: Task, plan: TaskPlan) -> bool:
        prefix = plan.output_prefix.rstrip("/") + "/"
        if in_records_area(prefix):
            return False  # never judged by the records area's objects; the upload refuses it
        markers: list[DoneMarker | None] = []

        def has_marker() -> bool:
            markers.append(self.records.read_done(task.id))
            return markers[-1] is not None

        reason = skip_reason(
            self.config.check_if_done,
            has_marker=has_marker,
            outputs=lambda: self._bucket(plan.output_bucket, "destination").list(prefix),
            where=prefix,
        )
        redelivered = message.receive_count > 1
        if redelivered or markers:
            # A redelivery can follow an attempt of this run that completed, its worker gone
            # before its message was deleted (or its attempt recorded): not run again,
            # whatever check_if_done says (off, it means "do not skip what earlier runs did").
            # So can a fresh message of the task sent again from the dead-letter store; it is
            # known by its marker only when check_if_done read it (no read per task for it).
            marker = markers[-1] if markers else self.records.read_done(task.id)
            if self._completed_in_this_run(task.id, marker, redelivered=redelivered):
                log.info("task %s was completed by an earlier attempt of this run", task.id)
                return True
        if reason is None:
            return False
        self.records.write_skip(Skip(task.id, self.clock(), reason, self.settings.name))
        log.info("task %s skipped: %s", task.id, reason)
        return True

    def _completed_in_this_run(
        self, task_id: str, marker: DoneMarker | None, *, redelivered: bool
    ) -> bool:
        """True when ``marker`` says an attempt of this run completed the task; the attempt's
        record is then made to say so if it does not yet (its worker stopped between the done
        marker and the record: a skip would report a task this run did as done before it).
        A fresh message (not ``redelivered``) of a task recorded done is another copy of it
        (queued twice): False, so that it is recorded skipped as such."""
        if marker is None or not marker.run_id or marker.run_id != self.settings.run_id:
            return False
        attempts = self.records.attempt_keys(task_id)
        if any(a.outcome == "done" for a in attempts):
            return redelivered
        for key in attempts:
            if key.outcome in ("running", "lost") and marker.written_by(key, self.settings.run_id):
                self.records.settle_completed(key, marker)
                return True
        return False

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
        self._phase = "stage"
        self._stage_inputs(task, plan, workdir)
        self._phase = "run"
        header = (
            f"ds: task {task.id} attempt {self._attempt_label(message)} on "
            f"{self.settings.name}\n"
            f"ds: argv {plan.argv!r}\n"
        ).encode()
        self._log_header_size = len(header)
        env = {**self._base_env, **plan.env, "DS_TASK_ID": task.id}
        shipping = (
            self._task_log(task.id, message.receive_count, log_path)
            if self._task_log is not None
            else contextlib.nullcontext()
        )
        timeout = self.config.recipe.timeout
        deadline = None
        if timeout is not None:
            grace = float(getattr(self.runner, "grace_seconds", 10.0))
            deadline = timeout + grace + TIMEOUT_MARGIN_SECONDS
        with (
            shipping,
            self._heartbeat.keep(
                message, lease, self._abort, deadline=deadline, on_beat=self._renew_claim
            ) as beat,
        ):
            result = self.runner.run(
                plan.argv,
                cwd=workdir.root,
                env=env,
                log_path=log_path,
                stop=self._abort,
                header=header,
                timeout=timeout,
                memory_limit_mb=self._memory_limit_mb(),
                on_long=self._long_task if self._batching else None,
            )
            # A beat overdue now (this worker was stopped or starved past it: SIGSTOP, a
            # suspended job) is made before the result is taken: the lease may have lapsed
            # meanwhile and another worker hold the task, which only an extension tells.
            # Left to the heartbeat's thread, this thread could upload first.
            self._heartbeat.tick()
        _own_log(log_path)
        self._result = result
        self._await_stop(result)
        # A command that succeeded on its own as the stop came is carried to its end: hours
        # of work are not dropped to be done again (ECS, local: the stop signals the worker
        # alone). One that failed is handed back. Where the stop's signal reaches the
        # command too (Slurm signals the whole job), any command that ended after the stop
        # arrived is handed back: a shell script without `set -e` whose child was killed
        # still exits 0, so its zero exit says nothing of a complete run.
        if self.stopping.is_set() and (
            result.interrupted or result.exit_code != 0 or self.backend.stop_reaches_command
        ):
            self._hand_back(message)
            log.info("task %s handed back (worker stopping)", task.id)
            return Outcome.STOPPED
        if beat.lost.is_set() or self._claim_lost:
            # Someone else holds the task now; uploading would race with them.
            self._end_attempt(
                "lost", error="the lease was lost; the result was dropped", cause="lost"
            )
            log.warning("task %s: lease lost, result dropped", task.id)
            return Outcome.LOST
        if beat.ended is not None:
            # The task ran past its time limit and the runner did not end it, or the lease
            # reached its hard end (SQS: 12 h after receipt): the command was stopped while
            # the task is still held, so record why and hand it back as a failure.
            error = timeout_error(timeout) if beat.timed_out and timeout else beat.ended
            self._fail(message, error, result.exit_code, log_path, cause="timeout")
            return Outcome.FAILED
        judged = self._judge(result, workdir, log_path)
        if judged is not None:
            cause, error = judged
            self._fail(message, error, result.exit_code, log_path, cause=cause)
            return Outcome.FAILED
        self._phase = "upload"
        outputs = self._upload_outputs(plan, workdir)
        marker = DoneMarker(
            task_id=task.id,
            attempt=message.receive_count,
            duration=round(result.duration, 3),
            outputs=outputs,
            started_at=started,
            finished_at=self.clock(),
            worker=self.settings.name,
            output_prefix=plan.output_prefix,
            run_id=self.settings.run_id,
            output_bucket=plan.output_bucket,
        )
        self._finish(message, marker, result.exit_code)
        log.info("task %s done in %.1fs (%d outputs)", task.id, result.duration, len(outputs))
        return Outcome.DONE

    def _await_stop(self, result: RunResult) -> None:
        """A command killed by a stopping signal the worker has not (yet) seen: wait a moment
        for the worker's own stop. Slurm's scancel and a terminal's Ctrl-C signal the whole
        job, and the command may die before the worker's handler runs; judged at once, the
        stop's own signal would be counted the task's failure (and a try used up). A command
        that exits 128 + the signal instead (a shell, a JVM: 143 for SIGTERM) is one too."""
        if result.interrupted or self.stopping.is_set() or not stopped_by_signal(result.exit_code):
            return
        self.stopping.wait(STOP_SIGNAL_GRACE_SECONDS)

    def _bucket(self, name: str, role: str) -> Storage:
        """The bucket a plan names, else the config's source or destination bucket."""
        storage = self.config.storage
        default = storage.destination_bucket if role == "destination" else storage.source_bucket
        return self.backend.bucket(name or default)

    def _stage_inputs(self, task: Task, plan: TaskPlan, workdir: Workdir) -> None:
        self._download(plan.inputs, workdir)
        # Some recipes' inputs are "everything under a prefix" (DOZC copies a plate folder):
        # never the records area's objects, should the prefix be the bucket's root.
        listed = listed_inputs(self.recipe, self.config, task, workdir, self._list)
        self._download([item for item in listed if not in_records_area(item.key)], workdir)
        # Some recipes learn what else to fetch only from the first inputs (a LoadData CSV
        # lists the images); they are fetched the same way, before the command runs.
        self._download(more_inputs(self.recipe, self.config, task, workdir), workdir)

    def _list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """The objects under ``prefix`` in a bucket named as in `Input.bucket`."""
        return self._bucket(bucket, "source").list(prefix)

    def _download(self, inputs: list[Input], workdir: Workdir) -> None:
        for item in inputs:
            if in_records_area(item.key):
                # Validation refuses it; a message sent by other means could still ask.
                raise PermanentTaskError(
                    f"the input {item.key!r} is in the records area _ds/, which no task reads. "
                    "Fix: name an input outside _ds/"
                )
            source = self._bucket(item.bucket, "source")
            target = workdir.input_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                source.get_file(item.key, target)
            except KeyError:
                if item.optional:
                    log.warning("input %r is not in storage: passed over (optional)", item.key)
                    continue
                raise FileNotFoundError(f"input {item.key!r} is not in storage") from None

    def _upload_outputs(self, plan: TaskPlan, workdir: Workdir) -> list[str]:
        """Upload every file the command left in the output folder under the plan's output
        prefix; return their keys.

        Every output is checked before anything is uploaded; a problem no retry can change
        raises `PermanentTaskError` naming the file, and nothing is uploaded:

        - a symbolic link anywhere in the folder (or the folder itself replaced by one):
          links are never followed, so a task can neither upload a file from elsewhere on the
          machine (``out/pw -> /etc/passwd``) nor have a linked folder silently left out;
        - anything but regular files and folders (a pipe, a socket, a device);
        - a file whose key some storage cannot take (`storable_key_problem`: a backslash, a
          name that is not UTF-8, over 255 bytes or starting with ``.ds-tmp.``; a key over
          1,024 bytes).
        """
        root = workdir.output_dir
        if root.is_symlink():
            raise PermanentTaskError(
                f"the output folder {root} was replaced by a symbolic link; nothing was "
                "uploaded. Fix: write the outputs into the output folder itself"
            )
        with os.scandir(root) as entries:
            if next(entries, None) is None:
                return []  # nothing written: no listing, no bucket
        files: list[Path] = []
        folders = [root]
        while folders:  # a walk of our own: Path.rglob and os.walk would follow or drop links
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    path = Path(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(path)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(path)
                    elif entry.is_symlink():
                        target = shown_name(str(path.readlink()))
                        raise PermanentTaskError(
                            f"the output {shown_name(path.relative_to(root).as_posix())!r} is a "
                            f"symbolic link (to {target!r}); links in the output folder are "
                            "never followed, and nothing was uploaded. Fix: copy the file or "
                            "folder into the output folder instead of linking to it"
                        )
                    else:
                        raise PermanentTaskError(
                            f"the output {shown_name(path.relative_to(root).as_posix())!r} is not "
                            "a regular file or folder (a pipe, socket or device); nothing was "
                            "uploaded. Fix: remove it from the output folder before the command "
                            "ends"
                        )
        items: list[tuple[str, Path]] = []
        for path in sorted(files):
            relative = path.relative_to(root).as_posix()
            problem = storable_key_problem(relative)
            what = f"its name {problem}"
            if problem is None:
                try:
                    key = join_key(plan.output_prefix, relative)
                except InputError as error:  # the prefix and the name over 1,024 bytes
                    problem = what = error.problem
                else:  # the prefix may hold a name only S3 could take (a long job value)
                    problem = storable_key_problem(key)
                    what = f"the key {shown_name(key)!r} {problem}"
            if problem is None:
                items.append((key, path))
                continue
            raise PermanentTaskError(
                f"the output {shown_name(relative)!r} cannot be stored: {what}; nothing was "
                "uploaded. Fix: make the command write UTF-8 names without '\\', of at most "
                f"{MAX_NAME_BYTES} bytes each and not starting with {RESERVED_NAME_PREFIX!r} "
                "(and keep the output prefix's names as short)"
            )
        # docs/design.md §6: outputs never land in the records area, whatever slipped past
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
        destination = self._bucket(plan.output_bucket, "destination")
        destination.put_files(items)
        return [key for key, _ in items]

    def _judge(self, result: RunResult, workdir: Workdir, log_path: Path) -> tuple[str, str] | None:
        """(cause, error) of a command that failed, or None when it succeeded.

        Success is the recipe's to say (``check_success``), unless the command was killed at
        its time limit. The error is the recipe's reason with the first meaningful line of
        the log (`first_meaningful_line`); for ``memory`` the peak, the limit and the fix;
        for a command that could not start, why.
        """
        timeout = self.config.recipe.timeout
        if result.timed_out and timeout is not None:
            return "timeout", timeout_error(timeout)
        reason = self.recipe.check_success(result.exit_code, workdir)
        if reason is None:
            return None
        text = _log_text(log_path, self._log_header_size)
        oom_line = out_of_memory_line(text)
        # Where the kernel's OOM kills cannot be counted, a SIGKILL nobody here sent is the
        # container's memory limit (ECS reports it as exit 137, "OutOfMemoryError").
        oom_killed = result.oom_killed or (
            not result.oom_checked
            and self.backend.memory_limit == "container"
            and killed_by_sigkill(result.exit_code)
        )
        cause = classify_run(
            result.exit_code,
            oom_killed=oom_killed,
            out_of_memory=oom_line is not None,
            tool_failed=True,
            start_errno=result.start_errno,
        )
        if cause is None or cause == "tool":
            return "tool", reason
        if cause == "memory":
            limit, per = self._memory_limit_shown(result)
            return cause, memory_error(
                result.peak_memory_mb,
                limit,
                per=per,
                docker_cores=self.config.cluster.docker_cores,
                detail=oom_line or "",
                killed=oom_killed,
            )
        if result.start_error is not None:
            return cause, start_failure(result.start_error, result.start_errno)
        if cause == "signal":
            # Its last words were not about the signal: only a line reading as an error is.
            line = first_meaningful_line(text, last_words=False)
            return cause, describe(cause, f"{reason}, which ds did not send", line)
        return cause, describe(cause, reason, first_meaningful_line(text))

    def _memory_limit_mb(self) -> int | None:
        """The memory limit the worker sets on each task's processes: `cluster.memory` shared
        by the `docker_cores` processes, as a container's is on AWS; None where the backend's
        container or scheduler limits memory (`Backend.memory_limit`)."""
        if self.backend.memory_limit != "process":
            return None
        return max(self.config.cluster.memory // self.config.cluster.docker_cores, 1)

    def _memory_limit_shown(self, result: RunResult) -> tuple[float | None, str]:
        if result.memory_limit_mb is not None:
            return float(result.memory_limit_mb), "task process"
        if self.backend.memory_limit == "container":
            return float(self.config.cluster.memory), "container"
        return None, "task"

    def _hand_back(self, message: Message) -> None:
        """Hand an interrupted task back at once; it does not use up a retry. When its
        receive count is spent (the queue would dead-letter it at the next receive) it is
        sent again as a fresh message instead."""
        decision = retry_decision(
            "interrupted",
            None,
            self.config.queue.retry,
            used=self._retries_before(message),
            receive_count=message.receive_count,
            max_attempts=self.backend.queue.max_receive_count,
        )
        error = "handed back: the worker was stopping"
        # Closed first: a worker taking a fresh message while this record still says
        # "running" would take this attempt for a live delivery and stand down.
        self._end_attempt("released", error=error, cause="interrupted")
        if decision.action == "resend":
            self._resend(message, error)
        else:
            self.backend.queue.release(message, 0)

    def _resend(self, message: Message, error: str) -> None:
        """Send the task again as a fresh message (receive count 0), then delete this one:
        exactly one message of the task stays. Should the send fail, the message is handed
        back instead (it may then be dead-lettered: the monitor marks it dead)."""
        try:
            self.backend.queue.send_batch([(message.task_id, message.body)])
        except Exception as exc:  # noqa: BLE001 - keep the task in the queue either way
            log.warning("could not send task %s again: %s", message.task_id, exc)
            self.backend.queue.release(message, 0, error)
            return
        try:
            self.backend.queue.delete(message)
        except Exception as exc:  # noqa: BLE001 - the fresh copy carries the task
            # Two messages now: the one delivered second stands down (`_begin_attempt`), or
            # finds the task done; the ledger counts the task once.
            log.warning("task %s: the old message was not deleted: %s", message.task_id, exc)
            return
        log.info(
            "task %s sent again as a fresh message (its receive count was spent)", message.task_id
        )

    def _retries_before(self, message: Message) -> int:
        """Retries the task used up before this attempt: from its attempt records when its
        start was recorded, else (it failed before) every earlier receive counts.

        Failures before a redrive do not count: a task with failures has its marks read
        (once, and only then: a run without failures lists no marks) for its redrives."""
        if self._used is None:
            return max(message.receive_count - 1, 0)
        if self._used and self._history is not None:
            history, self._history = self._history, None
            try:
                marks = self.records.marks_of(message.task_id)
            except Exception as exc:  # noqa: BLE001 - counting all failures is the safe side
                log.warning("could not read the marks of task %s: %s", message.task_id, exc)
                return self._used
            redrives = [(m.at_us, "redrive") for m in marks if m.kind == "redrive"]
            self._used = retries_used([*history, *redrives])
        return self._used

    def _fail(
        self,
        message: Message,
        error: str,
        exit_code: int | None,
        log_path: Path,
        *,
        cause: str,
        final: bool = False,
    ) -> None:
        """Record a failed attempt with its ``cause`` and decide its task's fate
        (`retry_decision`): handed back with a backoff, sent again as a fresh message when
        the queue's receive count is spent but retries are not, or dead.

        With ``final`` (a `PermanentTaskError`: no retry can help), or a cause that
        `queue.retry` does not retry (``not_found`` by default), the attempt is recorded as
        dead at once and the message is deleted instead of handed back. The last allowed
        attempt is recorded as dead too, and its message handed back for the queue to
        dead-letter (or deleted, when the receive count is not spent).

        A task that failed before its command started (input missing, plan refused) has no
        log yet: one is written — the worker's header line and the error — so that
        `_store_log` keeps it and `ds logs TASK` shows why.
        """
        # The command's words go into records and reports: its credentials do not.
        error = redact(error)
        tail = ""
        if log_path.exists():
            with log_path.open("rb") as fh:
                fh.seek(max(0, log_path.stat().st_size - LOG_TAIL_BYTES))
                tail = redact(fh.read().decode(errors="replace"))
        else:
            try:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text(
                    f"ds: task {message.task_id} attempt {self._attempt_label(message)} on "
                    f"{self.settings.name}\n"
                    f"ds: failed before the command started: {error}\n",
                    encoding="utf-8",
                )
                self._ended_said = True
            except OSError as exc:  # the failure must still be recorded and handed back
                log.warning("could not write the log of task %s: %s", message.task_id, exc)
        used = self._retries_before(message)
        max_attempts = self.backend.queue.max_receive_count
        decision = retry_decision(
            cause,
            exit_code,
            self.config.queue.retry,
            used=used,
            receive_count=message.receive_count,
            max_attempts=max_attempts,
            permanent=final,
        )
        dead = decision.outcome == "dead"
        result = self._result
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
                    final=dead,
                    cause=cause,
                    peak_memory_mb=result.peak_memory_mb if result else None,
                    cpu_seconds=result.cpu_seconds if result else None,
                )
            )
            if self._attempt is None:  # failed before its start was recorded
                self._attempt = self._new_attempt(message, self.clock())
            self._end_attempt(decision.outcome, exit_code=exit_code, error=error, cause=cause)
        finally:
            if decision.action == "dead":
                # Dead in the ledger already; a redrive re-sends it from the manifest.
                self.backend.queue.delete(message)
            elif decision.action == "resend":
                self._resend(message, error)
            elif decision.action == "dead_letter":
                self.backend.queue.release(message, 0, error)
            else:
                counted = used + 1 if decision.counted else used
                self.backend.queue.release(message, retry_delay(counted, max_attempts), error)
        log.warning(
            "task %s attempt %d failed (%s%s): %s",
            message.task_id,
            message.receive_count,
            cause,
            "" if cause in FREE_CAUSES else f", {decision.action}",
            error,
        )

    def _attempt_label(self, message: Message) -> str:
        """The attempt's number in its log's header: as the ledger and the report count
        tries, across redrives, once its start is recorded; before, the receive count."""
        return str(self._number if self._number is not None else message.receive_count)

    def _store_log(
        self, message: Message, log_path: Path, started: float, *, succeeded: bool
    ) -> None:
        """Keep the task's log in storage, except a success's log that holds only our
        header (the command printed nothing): one write per task less, nothing lost. The
        log of an attempt that did not succeed ends with how it ended (``ds: attempt 2 ended:
        failed (exit): …``, as `ds logs -f` says it)."""
        try:
            _own_log(log_path)
            if not succeeded and self._ending:
                # The log says how its attempt ended, as the records do: `ds logs` tells
                # the whole story (a command's output just stops where it was killed).
                try:
                    with log_path.open("ab") as fh:
                        fh.write(f"{self._ending}\n".encode(errors="replace"))
                except FileNotFoundError:
                    raise
                except OSError as exc:  # a full disk: the log is kept without the line
                    log.warning("could not end the log of task %s: %s", message.task_id, exc)
            size = log_path.stat().st_size
        except FileNotFoundError:
            return
        if succeeded and size == self._log_header_size:
            return
        key = self.records.log_key(message.task_id, message.receive_count, started)
        try:
            if size > LOG_KEEP_HEAD_BYTES + LOG_KEEP_TAIL_BYTES:
                data = capped_log(log_path, size)
            else:
                data = log_path.read_bytes()
            # Stored where `ds logs` and anyone reading the bucket see it: no credential the
            # command printed (its environment, a connection string) is kept.
            text = data.decode(errors="surrogateescape")
            kept = redact(text)
            if kept is not text:
                data = kept.encode(errors="surrogateescape")
            self.backend.storage.put_bytes(key, data)
        except Exception as exc:  # noqa: BLE001 - a lost log must not lose the task
            log.warning("could not store the log of task %s: %s", message.task_id, exc)


def capped_log(
    path: Path, size: int, head: int = LOG_KEEP_HEAD_BYTES, tail: int = LOG_KEEP_TAIL_BYTES
) -> bytes:
    """The first ``head`` and last ``tail`` bytes of the log at ``path`` (``size`` bytes),
    with a line saying how many bytes were cut between them."""
    with path.open("rb") as fh:
        first = fh.read(head)
        fh.seek(max(size - tail, head))
        last = fh.read(tail)
    cut = max(size - len(first) - len(last), 0)
    note = f"\n… {cut:,} bytes cut (ds keeps the first and last MiB of a log) …\n".encode()
    return first + note + last


def _own_log(path: Path) -> None:
    """Make sure the task's log is the worker's regular file: what the task's command put in
    its place (a link to a file elsewhere, a FIFO) is removed and replaced by a note, so the
    worker never reads, appends to or stores anything outside the task's folder."""
    try:
        if stat.S_ISREG(path.lstat().st_mode):
            return
        path.unlink()
        # O_EXCL: a link made again meanwhile fails the open rather than being followed.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                b"ds: the task's command replaced its log (task.log) with a link or a special "
                b"file: not followed, and the output written before is lost\n"
            )
    except OSError:
        return


def _log_text(path: Path, header_size: int) -> str:
    """The text of a task's log after our header: its start and its end when it is long."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(header_size, 0))
            data = fh.read(_ERROR_SEARCH_HEAD)
            size = path.stat().st_size
            if size > max(header_size, 0) + _ERROR_SEARCH_HEAD:
                fh.seek(max(size - _ERROR_SEARCH_TAIL, fh.tell()))
                data += b"\n" + fh.read(_ERROR_SEARCH_TAIL)
    except OSError:
        return ""
    return data.decode(errors="replace")
