"""What a dead worker held, and settling it: its attempt closed as lost, its messages back.

A worker killed without a word (SIGKILL, the OOM killer) leaves its task's attempt open and
its messages leased. Left alone, ``ds status`` counts that task as running until someone
closes the record (the next worker to receive the message once its lease runs out, or the
run's teardown), and the task, and the tasks the worker held to run next, wait for their
leases to run out before anyone runs them. The worker's watchdog sees the death at once
(`procgroups.Watchdog`); with what the worker recorded as it started its attempt
(`holding_of`, kept in its process-group record), it settles it (`settle`).

Settling is safe whatever happened since: the attempt is closed only while its open record
is still there (a worker that wrote the attempt's end before dying has nothing to settle,
and neither has a record another delivery closed already), and a message is handed back
only under the receipt it was received with (a message received again since, or deleted, is
left alone: the queue ignores a stale receipt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distributed_something.interfaces.queue import Message, Queue
from distributed_something.records import Attempt, RunRecords, parse_attempt_key


def holding_of(
    run_id: str, attempt: Attempt, message: Message, held: list[Message]
) -> dict[str, Any]:
    """What a worker holds as ``attempt`` starts (its open record written): the attempt, its
    message and the messages held to run after it, as plain JSON for the worker's record."""
    return {
        "run": run_id,
        "attempt": f"{attempt.task_id}/{attempt.stem}",
        "message": [message.handle, message.task_id, message.receive_count],
        "held": [[m.handle, m.task_id, m.receive_count] for m in held],
    }


@dataclass(frozen=True)
class Settled:
    """What `settle` did."""

    #: the task whose open attempt it closed as lost, "" when none was open
    task_id: str
    #: how many held messages it gave back (their receives undone) or released
    held: int


def _message(item: Any) -> Message:
    handle, task_id, receive_count = item
    return Message(
        handle=str(handle), task_id=str(task_id), body="", receive_count=int(receive_count)
    )


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
    that kills its worker every time ends in the dead-letter store); give the held messages
    back unstarted (`give_back`, their receive undone, where the queue can; else released).
    Raises ValueError for a ``holding`` that is not `holding_of`'s; errors of the storage and
    queue pass through."""
    key = parse_attempt_key(f"{holding['attempt']}.running.json")
    if key is None:
        raise ValueError(f"not an attempt: {holding['attempt']!r}")
    message = _message(holding["message"])
    held = [_message(item) for item in holding["held"]]
    error = (
        f"its worker (pid {worker_pid}) died while the task ran (killed: the worker's log "
        "may say by what; a task that kills its worker every time ends dead)"
    )
    closed = records.close_stale(key, "lost", at, error)
    if closed:
        queue.release(message, 0, error)
    if held:
        give_back = getattr(queue, "give_back", None)
        if give_back is not None:
            give_back(held)
        else:
            for item in held:
                queue.release(item, 0)
    return Settled(key.task_id if closed else "", len(held))
