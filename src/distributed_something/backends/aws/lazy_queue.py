"""The SQS queue of a run, found on first use (`ds setup` creates it after the backend opens)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.sqs_queue import QUEUE_GONE_CODES, SqsQueue
from distributed_something.errors import BackendError, QueueGone
from distributed_something.interfaces.queue import DeadTask, Message, QueueCounts


class LazySqsQueue:
    """A `Queue` that resolves the job and dead-letter queue URLs when first used.

    URLs come from ``SQS_QUEUE_URL`` (a worker's task definition), else the run state, else a
    lookup by exact name. A queue that does not exist (any more) raises `QueueGone`, at the
    lookup or at the first call.
    """

    def __init__(
        self,
        settings: AwsSettings,
        names: AwsNames,
        max_receive_count: int,
        resources: Callable[[], AwsResources],
    ) -> None:
        self.settings = settings
        self.names = names
        self.max_receive_count = max_receive_count
        self._resources = resources
        self._queue: SqsQueue | None = None

    @property
    def real(self) -> SqsQueue:
        if self._queue is None:
            record = self._resources()
            url = (
                os.environ.get("SQS_QUEUE_URL")
                or record.queue_url
                or self._lookup(self.names.queue)
            )
            dlq = record.dead_letter_queue_url or self._lookup(self.names.dead_letter_queue)
            self._queue = SqsQueue(
                self.settings, url, dlq, max_receive_count=self.max_receive_count
            )
        return self._queue

    def _lookup(self, name: str) -> str:
        """The URL of the queue named ``name``. Raises `QueueGone` when SQS says there is
        no such queue, `BackendError` when the lookup fails otherwise."""
        sqs = client("sqs", self.settings)
        try:
            url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except Exception as exc:  # noqa: BLE001 - any failure means: not there (yet)
            text = f"SQS queue {name} not found in {self.settings.region} ({exc}); run `ds setup`"
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if str(code).removeprefix("AWS.SimpleQueueService.") in QUEUE_GONE_CODES:
                # A worker started after cleanup: not a failure to retry, the run is over.
                raise QueueGone(text) from None
            if code in ("AccessDenied", "AccessDeniedException"):
                # Not "run ds setup": the queue may well exist, the role may not use its name
                # (a legacy per-person dead-letter queue outside the bootstrap prefix).
                raise BackendError(
                    f"not allowed to look up SQS queue {name} in {self.settings.region} "
                    f"({code}): the role's policy does not cover this name; run `ds aws "
                    "bootstrap` again with this config (it grants the config's queue names)"
                ) from None
            raise BackendError(text) from None
        return url

    def send_batch(self, items: Sequence[tuple[str, str]]) -> int:
        return self.real.send_batch(items)

    def receive(self, max_messages: int, lease_seconds: float) -> list[Message]:
        return self.real.receive(max_messages, lease_seconds)

    def extend_lease(self, message: Message, seconds: float) -> bool:
        return self.real.extend_lease(message, seconds)

    def delete(self, message: Message) -> None:
        self.real.delete(message)

    def release(self, message: Message, delay_seconds: float, error: str | None = None) -> None:
        self.real.release(message, delay_seconds, error)

    def counts(self) -> QueueCounts:
        return self.real.counts()

    def list_dead(self) -> list[DeadTask]:
        return self.real.list_dead()

    def redrive(self, task_ids: Sequence[str] | None = None) -> int:
        return self.real.redrive(task_ids)

    def drop_dead(self, task_ids: Sequence[str]) -> int:
        return self.real.drop_dead(task_ids)

    def purge(self) -> None:
        self.real.purge()
