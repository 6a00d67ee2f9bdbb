"""A large submit's SendMessageBatch calls, spread over a few processes.

botocore spends about a millisecond of CPU building, signing and parsing each call, all
under one interpreter lock: a million messages (100,000 calls) sent from one process are
CPU-bound however many threads wait on the network. A `SendPool` hands slices of the calls
to worker processes, each with its own client and threads, so a submit uses every core.

Processes cost a second or so to start (an interpreter, botocore), so a queue uses them only
for a big submit: after `PROCESSES_AFTER` messages went out the usual way, and for a call of
`MIN_CALLS` batches or more. The messages, their batching and the retries of failed entries
are the same as without processes; only where the calls are made changes.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.errors import BackendError

if TYPE_CHECKING:
    from distributed_something.backends.aws.sqs_queue import SqsQueue

#: Messages a queue object sends through its own threads before it starts processes.
PROCESSES_AFTER = 20_000
#: Fewer batch calls than this in one `send_batch` are sent through threads.
MIN_CALLS = 100
#: At most this many sending processes, whatever the cores.
MAX_PROCESSES = 4

_Batch = Sequence[dict[str, Any]]
#: (indexes of the entries sent, SQS's failure records of those not sent) of one batch.
BatchResult = tuple[list[int], list[dict[str, Any]]]


def process_count(cores: int | None = None) -> int:
    """How many sending processes this machine is worth: one per core up to
    `MAX_PROCESSES`; 0 (threads only) on one core, where processes gain nothing."""
    cores = os.cpu_count() if cores is None else cores
    count = min(cores or 1, MAX_PROCESSES)
    return count if count > 1 else 0


@dataclass(frozen=True)
class QueueSpec:
    """What a sending process needs to make its own `SqsQueue` (clients do not pickle)."""

    settings: AwsSettings
    queue_url: str
    dead_letter_queue_url: str
    max_receive_count: int
    threads: int
    send_attempts: int


# One queue object per process and spec: a pool's process serves every call of a submit.
_queues: dict[QueueSpec, SqsQueue] = {}


def _send_slice(spec: QueueSpec, batches: Sequence[_Batch]) -> list[BatchResult]:
    """In a sending process: send ``batches`` (entries without ids) through this process's
    queue object and its threads; one result per batch, in order."""
    from distributed_something.backends.aws.sqs_queue import SqsQueue

    queue = _queues.get(spec)
    if queue is None:
        queue = _queues[spec] = SqsQueue(
            spec.settings,
            spec.queue_url,
            spec.dead_letter_queue_url,
            max_receive_count=spec.max_receive_count,
            threads=spec.threads,
            send_attempts=spec.send_attempts,
        )
    return queue.send_batches(batches)


def _slices(batches: Sequence[_Batch], count: int) -> list[Sequence[_Batch]]:
    """``batches`` cut into at most ``count`` contiguous slices of near-equal length."""
    size = -(-len(batches) // count)
    return [batches[start : start + size] for start in range(0, len(batches), size)]


class SendPool:
    """Processes that send batches for one queue; started on first use, stopped with the
    queue object (or at exit). Errors raised in a process (`SqsError` and its kinds) are
    raised again here, unchanged."""

    def __init__(self, spec: QueueSpec, processes: int) -> None:
        self.spec = spec
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the processes (once). Raises OSError or NotImplementedError where a
        process pool cannot exist (no semaphores, as in AWS Lambda): send with threads."""
        if self._pool is None:
            # "spawn": the submitting process has threads (progress bar, boto3), which a
            # fork would copy in whatever state they were.
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn")
            )
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

    def send(self, batches: Sequence[_Batch]) -> list[BatchResult]:
        """Send ``batches`` over the processes; one result per batch, in order. A process
        that dies (killed, out of memory) raises `BackendError`: some of the batches may
        have been sent."""
        self.start()
        assert self._pool is not None
        futures = [
            self._pool.submit(_send_slice, self.spec, part)
            for part in _slices(batches, self.processes)
        ]
        try:
            return [result for future in futures for result in future.result()]
        except BrokenProcessPool as error:
            self._pool = None  # a new pool for the next call
            raise BackendError(
                f"SQS SendMessageBatch on {self.spec.queue_url}: a sending process stopped "
                f"({error}); some of these {sum(len(b) for b in batches)} messages may not "
                "have been sent. Fix: nothing is lost: the tasks not sent stay pending in the "
                "run, and the monitor (`ds monitor`) sends them again once the queue empties"
            ) from error
