"""Run progress from cheap reads (queue counts and key listings, no object reads)."""

from __future__ import annotations

from dataclasses import dataclass

from distributed_something.interfaces.queue import QueueCounts
from distributed_something.records import RunRecords
from distributed_something.state import RunState


@dataclass(frozen=True)
class Progress:
    """Where a run stands. ``failed`` counts tasks that failed at least once and are not
    dead (they are being retried, or succeeded on a retry)."""

    total: int
    done: int
    skipped: int
    failed: int
    dead: int
    visible: int
    in_flight: int

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.dead


def measure(counts: QueueCounts, records: RunRecords, state: RunState) -> Progress:
    """Combine queue counts with the run's records into a `Progress`."""
    dead = max(counts.dead - state.dead_at_start, 0)
    skipped = records.count_skipped()
    finished_ok = max(state.submitted - counts.visible - counts.in_flight - dead, 0)
    failed = max(len(records.failed_task_ids()) - dead, 0)
    return Progress(
        total=state.submitted,
        done=max(finished_ok - skipped, 0),
        skipped=min(skipped, finished_ok),
        failed=failed,
        dead=dead,
        visible=counts.visible,
        in_flight=counts.in_flight,
    )
