"""What a dead worker held, and settling it: its attempt closed as lost, its messages back.

A worker killed without a word (SIGKILL, the OOM killer) leaves its task's attempt open and
its messages leased. Left alone, ``ds status`` counts that task as running until someone
closes the record (the next worker to receive the message once its lease runs out, or the
run's teardown), the task, and the tasks the worker held to run next, wait for their leases
to run out before anyone runs them, and what the task wrote to its log is lost with the
worker's scratch folder. The worker's watchdog sees the death at once
(`procgroups.Watchdog`); with what the worker recorded as it started its attempt
(`holding_of`, kept in its process-group record), it settles it (`settle`).

Settling keeps the task's log as the worker would have (`ds logs TASK`), and is safe whatever
happened since: the attempt is closed only while its open record
is still there (a worker that wrote the attempt's end before dying has nothing to settle,
and neither has a record another delivery closed already), and a message is handed back
only under the receipt it was received with (a message received again since, or deleted, is
left alone: the queue ignores a stale receipt).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distributed_something.interfaces.queue import Message, Queue
from distributed_something.records import (
    AttemptKey,
    RunRecords,
    parse_attempt_key,
    worker_deaths,
)
from distributed_something.worker.loop import (
    LOG_KEEP_HEAD_BYTES,
    LOG_KEEP_TAIL_BYTES,
    Holding,
    capped_log,
)

log = logging.getLogger("ds.worker")


def holding_of(run_id: str, holding: Holding) -> dict[str, Any]:
    """What a worker holds as an attempt starts (`Holding`: the attempt, its message, the
    messages held to run after it, those of finished tasks not deleted yet, the task's log
    file), as plain JSON for the worker's record."""
    attempt, message = holding.attempt, holding.message
    return {
        "run": run_id,
        "attempt": f"{attempt.task_id}/{attempt.stem}",
        "message": [message.handle, message.task_id, message.receive_count],
        "held": [[m.handle, m.task_id, m.receive_count] for m in holding.held],
        "done": holding.done,
        "log": str(holding.log),
    }


@dataclass(frozen=True)
class Settled:
    """What `settle` did."""

    #: the task whose open attempt it closed as lost, "" when none was open
    task_id: str
    #: how many held messages it gave back (their receives undone) or released
    held: int
    #: how many messages of finished tasks it deleted (their ends were written)
    done: int = 0
    #: True when the attempt it closed had completed its task (its done marker written)
    completed: bool = False


def _store_log(records: RunRecords, key: AttemptKey, log_file: Any, worker_pid: int) -> None:
    """Keep what the task wrote to its log before its worker died, where the worker would
    have kept it (`ds logs TASK` shows it), with a last line saying where it stopped. A log
    that is gone or cannot be stored is only logged: the attempt is settled without it."""
    if not isinstance(log_file, str) or not log_file:
        return
    path = Path(log_file)
    try:
        size = path.stat().st_size
        data = (
            capped_log(path, size)
            if size > LOG_KEEP_HEAD_BYTES + LOG_KEEP_TAIL_BYTES
            else (path.read_bytes())
        )
        note = f"\n[ds] the log ends here: its worker (pid {worker_pid}) died\n".encode()
        started = key.started_us / 1e6
        records.storage.put_bytes(records.log_key(key.task_id, key.attempt, started), data + note)
    except OSError as exc:
        log.info("the log of task %s was not kept: %s", key.task_id, exc)
    except Exception as exc:  # noqa: BLE001 - the attempt is settled without its log
        log.warning("could not store the log of task %s: %s", key.task_id, exc)


def _message(item: Any) -> Message:
    handle, task_id, receive_count = item
    return Message(
        handle=str(handle), task_id=str(task_id), body="", receive_count=int(receive_count)
    )


def _sent_again(records: RunRecords, queue: Queue, key: AttemptKey, message: Message) -> bool:
    """Send the task of the dead worker's attempt ``key`` again as a fresh message, then
    delete ``message``, when the queue would dead-letter ``message`` at its next receive (its
    receive count spent) although fewer of its receives than the queue allows ended in its
    worker's death (`records.worker_deaths`): a lost attempt uses up no retry, hand-backs
    none, and failures are the worker's to count (it sends such a task again itself rather
    than let it be dead-lettered: `_hand_back`, `_fail`). True when it did; False (the
    message is to be released) otherwise, or when the task's body cannot be rebuilt from the
    run's manifest."""
    if message.receive_count < queue.max_receive_count:
        return False
    if worker_deaths(records.attempt_keys(key.task_id), key.message) >= queue.max_receive_count:
        return False  # a task that kills its worker every time ends dead
    body = records.bodies([key.task_id]).get(key.task_id)
    if body is None:
        return False
    queue.send_batch([(key.task_id, body)])
    queue.delete(message)  # a stale handle (received again since) deletes nothing
    return True


def _completed(records: RunRecords, key: AttemptKey) -> bool:
    """True, and the dead worker's attempt ``key`` (closed as lost) recorded done instead,
    when that attempt wrote its task's done marker before its worker died: where the marker
    and the attempt's end are two writes (S3; the local records make them one), a worker can
    die between them. Sent again, as a fresh message when its receive count was spent, the
    task would run twice, or be recorded skipped (done before this run)."""
    marker = records.read_done(key.task_id)
    if marker is None or not marker.written_by(key, records.run_id):
        return False
    records.settle_completed(replace(key, outcome="lost"), marker)
    return True


def settle(
    records: RunRecords,
    queue: Queue,
    holding: Mapping[str, Any],
    worker_pid: int,
    at: float,
) -> Settled:
    """Settle what the dead worker ``worker_pid`` held (`holding_of`; ``records`` are the
    run's it names): close its attempt as lost if its record is still open, and then make
    that attempt's message visible at once (a receive used, as when a lease runs out: a task
    that kills its worker every time ends in the dead-letter store), or, when its receive
    count is spent by receives that did not count, send the task again (`_sent_again`), or,
    when the attempt had completed its task (`_completed`), record it done and delete it;
    give the held messages back unstarted (`give_back`, their receive undone, where the
    queue can; else released);
    delete the messages of tasks whose ends the worker wrote but had not deleted yet (else
    they would come back at their lease's end, only to be found done).
    Raises ValueError for a ``holding`` that is not `holding_of`'s; errors of the storage and
    queue pass through."""
    key = parse_attempt_key(f"{holding['attempt']}.running.json")
    if key is None:
        raise ValueError(f"not an attempt: {holding['attempt']!r}")
    message = _message(holding["message"])
    held = [_message(item) for item in holding["held"]]
    # "Before recording": a worker records a short task's end with the next task's start
    # (one write for both), so it may have died just after the command ended, not during it.
    error = (
        f"its worker (pid {worker_pid}) died before recording the task's end, while its "
        "command ran or just after (killed: the worker's log may say by what; a task that "
        "kills its worker every time ends dead)"
    )
    closed = records.close_stale(key, "lost", at, error)
    completed = False
    if closed:
        _store_log(records, key, holding.get("log"), worker_pid)
        completed = _completed(records, key)
        if completed:
            queue.delete(message)  # its task is done: nothing to run again
        elif not _sent_again(records, queue, key, message):
            queue.release(message, 0, error)
    if held:
        give_back = getattr(queue, "give_back", None)
        if give_back is not None:
            give_back(held)
        else:
            for item in held:
                queue.release(item, 0)
    done = [str(handle) for handle in holding.get("done", [])]
    for handle in done:  # a stale handle (received again since) deletes nothing
        queue.delete(Message(handle=handle, task_id="", body="", receive_count=0))
    return Settled(key.task_id if closed else "", len(held), len(done), completed)
