"""Giving an outcome to tasks that left the queue without one (the drain check's
"reconcile" verdict). Shared by `ds monitor` and the unattended monitor, so it prints nothing
and needs nothing but the records and the queue."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace

from distributed_something import sending, summary
from distributed_something.interfaces.queue import Queue
from distributed_something.interfaces.storage import NoConditionalWrites, conditional_writes
from distributed_something.ledger import Ledger, read_counts, read_outcomes
from distributed_something.monitor.policy import DrainCheck, Reconciliation, reconcile
from distributed_something.records import AttemptKey, RunRecords, worker_deaths


def confirm_ending(
    records: RunRecords, check: DrainCheck, counts: dict[str, int]
) -> tuple[DrainCheck, Ledger | None]:
    """The drain check made safe: a monitor counts from the ledger summary (``counts``),
    but a run ends on a whole reading of its records. When ``check`` says ``finished`` or
    ``reconcile``, every record is read once, held lean (`read_outcomes`): the verdict is
    ``finished`` when that reading gives every task an outcome, else ``reconcile``, with a
    `Ledger` of the tasks without one returned (for `settle`). When its counts differ from
    the summary's (records written without an intent, by a worker of an earlier version),
    the summary is made again from the records (`summary.recount`). Shared by `ds monitor`
    and the unattended monitor."""
    if check.verdict not in ("finished", "reconcile"):
        return check, None
    # A fresh reader: ``records`` lives as long as the monitor, and would keep what it read
    # once (`RunRecords._read_once`: skip lists, manifest parts without an index).
    fresh = RunRecords(records.storage, records.app_name, records.run_id)
    whole_counts, unfinished = read_outcomes(fresh)
    if whole_counts != counts:
        summary.recount(records)
    if not unfinished.tasks:
        return replace(check, verdict="finished"), None
    return replace(check, verdict="reconcile"), unfinished


def settle(records: RunRecords, queue: Queue, ledger: Ledger, now: float) -> Reconciliation:
    """Give every task without an outcome one, once the queue stayed empty (see
    `monitor.policy.reconcile`): dead-lettered ones are marked dead, the others are sent
    again (and marked), so no task is left pending in a run nobody works on. Returns what
    was decided.

    Tasks a submit has not sent yet are no lost messages: while a sending is under way
    (`sending.under_way`) nothing is decided (a later tick sees its tasks queued); an
    interrupted one is finished instead (`sending.resume`): nothing else is decided then
    either, as the queue holds those tasks now."""
    if sending.under_way(records) or sending.resume(records, queue):
        return Reconciliation({}, [])
    unfinished = ledger.ids_in("pending", "running", "failed")
    dead_letters = {d.task_id: d.error for d in queue.list_dead()}
    requeues = {tid: ledger.tasks[tid].requeues for tid in unfinished}
    handed_back = _handed_back(records, [t for t in unfinished if t in dead_letters], queue)
    plan = reconcile(unfinished, dead_letters, requeues, handed_back=set(handed_back))
    for task_id, why in plan.dead.items():
        records.write_mark(task_id, "dead", now, {"error": why})
    plan = replace(plan, requeue=_slots_taken(records, plan.requeue, requeues, now))
    redriven = [tid for tid in plan.requeue if tid in dead_letters]
    if redriven:
        # Nobody runs them (their message is dead-lettered, not in flight): attempts still
        # open are closed as lost first, or the next delivery would stand down for them.
        _close_open(records, [key for tid in redriven for key in handed_back[tid]], now)
        queue.redrive(redriven)
        why = "dead-lettered by hand-backs, with tries left"
        for task_id in redriven:
            records.write_mark(task_id, "requeue", now, {"why": why})
    unseen = [tid for tid in plan.requeue if tid not in dead_letters]
    if unseen:
        bodies = records.bodies(unseen)
        queue.send_batch([(tid, bodies[tid]) for tid in unseen if tid in bodies])
        for task_id in unseen:
            if task_id in bodies:
                records.write_mark(task_id, "requeue", now, {"why": "left the queue unseen"})
            else:  # nothing to send: said so, rather than a requeue that never comes
                records.write_mark(task_id, "dead", now, {"error": NO_BODY})
        if len(bodies) < len(unseen):
            dead = {**plan.dead, **{tid: NO_BODY for tid in unseen if tid not in bodies}}
            plan = Reconciliation(dead, [tid for tid in plan.requeue if tid not in dead])
    return plan


#: Why a task that left the queue unseen is dead rather than sent again.
NO_BODY = (
    "it left the queue without an outcome, and its message cannot be rebuilt from the run's "
    "manifest (written by an older version of ds): submit the job file again (`ds submit`: "
    "what is done or under way is left out, and this task is sent again)"
)


#: How old a requeue slot must be for another monitor to take it over: its taker stopped
#: (killed, a Lambda timed out) before the task's requeue mark was written.
SLOT_STALE_SECONDS = 600.0


def _slots_taken(
    records: RunRecords, task_ids: list[str], requeues: Mapping[str, int], now: float
) -> list[str]:
    """Of ``task_ids``, to be sent again, those whose slot for their next requeue
    (`RunRecords.requeue_slot_key`, numbered from the ``requeues`` the ledger counted) this
    monitor takes. Two monitors of one run (`ds monitor` beside the unattended one, or an
    event delivered twice), deciding from the same reading, would each send the task: two
    messages, two executions. A conditional create (S3's ``If-None-Match``) lets exactly one
    take the slot; the other sends nothing. A slot older than `SLOT_STALE_SECONDS` whose
    requeue the ledger does not count is taken over (its taker stopped before writing the
    mark): its age is the storage's (S3's clock), or else ``now`` less the time written in
    it. A storage without conditional writes takes every one."""
    writes = conditional_writes(records.storage)
    if writes is None:
        return list(task_ids)
    data = json.dumps({"at": now}).encode()
    taken: list[str] = []
    for number, task_id in enumerate(task_ids):
        key = records.requeue_slot_key(task_id, requeues.get(task_id, 0) + 1)
        try:
            made = writes.put_new(key, data)
        except NoConditionalWrites:
            # (An old botocore in the Lambda runtime.) Sent as before: rather twice than never.
            return taken + task_ids[number:]
        if made is not None:
            taken.append(task_id)
            continue
        try:
            current = writes.get_tagged(key)
        except KeyError:
            continue  # removed meanwhile (a cleanup): the next reconciliation decides
        # Its age by the storage's clock where it says (S3): a laptop's clock minutes off
        # the Lambda's must not take over a slot just taken, nor wait on a stale one.
        age = current.age if current.age is not None else now - _slot_time(current.data)
        if age >= SLOT_STALE_SECONDS and writes.put_tagged(key, data, current.tag):
            taken.append(task_id)
    return taken


def _slot_time(data: bytes) -> float:
    """When a requeue slot was taken; 0 (long ago) for what is not a slot."""
    try:
        at = json.loads(data).get("at")
    except (ValueError, AttributeError):
        return 0.0
    return float(at) if isinstance(at, int | float) else 0.0


def _handed_back(
    records: RunRecords, dead_lettered: list[str], queue: Queue
) -> dict[str, list[AttemptKey]]:
    """Of ``dead_lettered`` tasks without an outcome, those whose last message lost fewer of
    its receives to its worker's death than the queue allows (`records.worker_deaths`), each
    with its attempts: the rest went to hand-backs (a worker stopping, a spot interruption)
    or failures with tries left (which use up no receive of their own: the worker counts
    them), and the task's worker then vanished with nobody to settle it (no watchdog: a
    container or a machine gone). The watchdog sends such a task again itself
    (`worker.settle`)."""
    found: dict[str, list[AttemptKey]] = {}
    for task_id, keys in zip(dead_lettered, records.attempt_keys_of(dead_lettered), strict=True):
        # The dead-lettered message is the last that ran (a delivery that stood down had
        # another message, deleted then).
        ran = [k for k in keys if k.outcome != "duplicate"]
        if not ran:
            continue  # no record at all: dead as before
        last = max(ran, key=lambda k: k.started_us)
        if worker_deaths(ran, last.message) < queue.max_receive_count:
            found[task_id] = keys
    return found


def _close_open(records: RunRecords, keys: list[AttemptKey], now: float) -> int:
    """Close as lost those of the attempts ``keys`` still open (nobody runs them any more).
    Returns how many."""
    stale = [key for key in keys if key.outcome == "running"]
    for key in stale:
        records.close_stale(key, "lost", now)
    return len(stale)


def record_image_outcomes(records: RunRecords, queue: Queue, ledger: Ledger, now: float) -> int:
    """For a run whose tasks the family image's own worker ran (it keeps no records, and
    deletes a message only when its task succeeded): once the queue is drained, mark each
    task without an outcome dead when it is in the dead letters, else done (``deleted``).
    Returns how many were marked."""
    unfinished = ledger.ids_in("pending", "running", "failed")
    if not unfinished:
        return 0
    dead_letters = {d.task_id: d.error for d in queue.list_dead()}
    for task_id in unfinished:
        if task_id in dead_letters:
            error = dead_letters[task_id] or "dead-lettered by the image's own worker"
            records.write_mark(task_id, "dead", now, {"error": error})
        else:
            records.write_mark(task_id, "deleted", now, {"why": "its message left the queue"})
    return len(unfinished)


def close_open_attempts(records: RunRecords) -> int:
    """Close the attempts still open once the run's workers are stopped (a worker killed
    without a word leaves one): they are lost, and their tasks pending. Returns how many.
    Every teardown ends with it (`ds cleanup`, `ds monitor`, the unattended monitor)."""
    return _close_open(records, records.attempt_keys(), time.time())


def end_retries(records: RunRecords) -> int:
    """Mark ``ended`` the tasks of a run torn down while they waited for a retry (failed):
    no retry will come, so the ledger counts them pending (unfinished), their last failure
    kept, rather than failed with a retry said to follow. Returns how many. Every teardown
    ends with it, after `close_open_attempts`."""
    if read_counts(records)[0]["failed"] == 0:
        return 0  # most runs: no reading of every task
    now = time.time()
    waiting = read_outcomes(records)[1].ids_in("failed")
    for task_id in waiting:
        records.write_mark(task_id, "ended", now, {"why": "the run ended before its retry"})
    return len(waiting)
