"""The task queue contract (SQS semantics), shared by the SQLite queue and SQS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One received task. ``handle`` is the receipt handle of this receive only;
    ``message_id`` names the message itself, the same at every delivery of it (so a
    second delivery of one message can be told from a second message of the same task)."""

    handle: str
    task_id: str
    body: str
    receive_count: int
    message_id: str = ""


@dataclass(frozen=True)
class QueueCounts:
    """Approximate counts, as SQS reports them.

    ``in_flight`` counts received messages not yet deleted, including those released with a
    delay (SQS's NotVisible); ``dead`` counts the dead-letter store.
    """

    visible: int
    in_flight: int
    dead: int

    @property
    def drained(self) -> bool:
        """Nothing left to run and nothing running."""
        return self.visible == 0 and self.in_flight == 0


@dataclass(frozen=True)
class DeadTask:
    """A dead-lettered task with the last error the queue knows (may be empty for SQS)."""

    task_id: str
    body: str
    receive_count: int
    error: str


class Queue(Protocol):
    """A queue of tasks with leases (visibility timeouts) and a dead-letter store.

    Contract (tests/test_queue_contract.py holds every implementation to it):
    - ``send_batch`` enqueues ``(task_id, body)`` pairs, visible at once; returns how many
      were sent.
    - ``receive`` returns up to ``max_messages`` visible messages, each leased for
      ``lease_seconds``: invisible to other receivers until the lease ends, then visible again.
      Every receive increments the message's receive count. A message whose receive count
      already reached ``max_receive_count`` is moved to the dead-letter store instead of
      being returned (SQS moves it on the receive after the limit).
    - ``extend_lease`` makes a leased message invisible for ``seconds`` from now; returns
      False when the lease was lost (the message was deleted or received by someone else).
    - ``delete`` removes a received message for good.
    - ``release`` makes a received message visible again after ``delay_seconds`` (0: at once),
      keeping ``error`` as its last error.
    - ``counts`` reports visible / in flight / dead.
    - ``list_dead`` lists the dead-letter store; ``redrive`` moves dead tasks (all, or those
      whose ids are given) back to the queue with a fresh receive count, returning how many.
    - ``drop_dead`` deletes every copy of the given tasks from the dead-letter store,
      returning how many copies it deleted.
    - ``purge`` deletes every message of the queue (not the dead-letter store).
    - Optionally, ``delete_soon(message)`` deletes it in the instance's next write (or at its
      ``flush``, any read or ``close``): the worker's acknowledgement then costs no round of
      its own (`Worker._acknowledge`).
    Safe to use from many processes at once.
    """

    max_receive_count: int

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int: ...

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]: ...

    def extend_lease(self, message: Message, seconds: float) -> bool: ...

    def delete(self, message: Message) -> None: ...

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None: ...

    def counts(self) -> QueueCounts: ...

    def list_dead(self) -> list[DeadTask]: ...

    def redrive(self, task_ids: Sequence[str] | None = None) -> int: ...

    def drop_dead(self, task_ids: Sequence[str]) -> int: ...

    def purge(self) -> None: ...
