"""`ds logs -f`: follow a task's log while it runs, attempt after attempt, until it ends.

The running attempt's output is read where it is written: from the backend's own live log
when it ships one (`Backend.live_log`: the CloudWatch stream on AWS), else from the workers'
scratch folders (`ScratchLiveLog`: local runs, and Slurm with the default scratch under the
project folder). When an attempt ends, what its stored log holds beyond what was printed
follows, then ``ds: attempt N ended: OUTCOME``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distributed_something.interfaces.backend import LiveLog
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.records import AttemptKey, RunRecords
from distributed_something.state import load_state, require_state
from distributed_something.usecases.lifecycle import backend_of_run, records_for
from distributed_something.worker.procgroups import scratch_root_of

#: Outcomes after which a task runs no more in this run (a failed one waits for its retry).
FINAL_OUTCOMES = frozenset({"done", "dead"})


class ScratchLiveLog:
    """The growing ``task.log`` of a worker's scratch folder under ``scratch_root`` whose
    first line (``ds: task <id> attempt <n> on <worker>``, written by the worker) names the
    attempt. The worker reuses the file for its next task, so once the first line changes
    the rest is read from the stored copy, from the same byte on."""

    def __init__(self, scratch_root: Path, task_id: str, attempt: int) -> None:
        self.scratch_root = scratch_root
        self.header = f"ds: task {task_id} attempt {attempt} ".encode()
        self.path: Path | None = None
        self.offset = 0

    def read(self) -> str:
        if self.path is None:
            self.path = next(
                (p for p in self.scratch_root.glob("*/task.log") if self._ours(p)), None
            )
            if self.path is None:
                return ""
        try:
            with self.path.open("rb") as fh:
                if fh.read(len(self.header)) != self.header:
                    return ""  # the worker moved on: the stored copy has the rest
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return ""
        end = data.rfind(b"\n") + 1  # whole lines only: the rest comes next time
        self.offset += end
        return data[:end].decode("utf-8", errors="replace")

    def finish(self, stored: bytes) -> str:
        return stored[self.offset :].decode("utf-8", errors="replace")

    def _ours(self, path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                return fh.read(len(self.header)) == self.header
        except OSError:
            return False


#: Opens the live log of an attempt of the followed task: attempt number → `LiveLog`.
LiveLogs = Callable[[int], LiveLog]


@dataclass
class Follower:
    """Follows one task of one run; `poll` does one round and says whether to go on.

    ``write`` gets text (the caller strips terminal control sequences).
    """

    records: RunRecords
    storage: Storage
    task_id: str
    live_logs: LiveLogs
    write: Callable[[str], object]
    #: attempts (by key stem) whose log has been printed to its end
    printed: set[str] = field(default_factory=set)
    _live: dict[str, LiveLog] = field(default_factory=dict)

    def skip_existing(self) -> None:
        """Count the attempts that have already ended as printed (the caller printed their
        stored logs before following began)."""
        self.printed |= {k.stem for k in self._keys() if k.outcome != "running"}

    def poll(self) -> bool:
        """Print what is new; False once the task has ended in this run."""
        keys = self._keys()
        for key in keys:
            if key.stem in self.printed:
                continue
            if key.outcome == "running":
                self.write(self._open(key).read())
            else:
                self._finish(key)
        if not keys or any(k.outcome == "running" for k in keys):
            return True
        return (
            keys[-1].outcome not in FINAL_OUTCOMES and self.records.read_done(self.task_id) is None
        )

    def _keys(self) -> list[AttemptKey]:
        return sorted(self.records.attempt_keys(self.task_id), key=lambda k: k.started_us)

    def _open(self, key: AttemptKey) -> LiveLog:
        if key.stem not in self._live:
            self._live[key.stem] = self.live_logs(key.attempt)
        return self._live[key.stem]

    def _finish(self, key: AttemptKey) -> None:
        """Print the rest of an ended attempt's log, and how it ended."""
        self.printed.add(key.stem)
        # The stored log's key is the attempt's (same start, same number), built from the
        # integer microseconds: a float round trip could miss it by one.
        stored_key = f"{self.records.run_prefix}logs/{self.task_id}/"
        stored_key += f"{key.started_us:017d}-{key.attempt:04d}.log"
        try:
            stored = self.storage.get_bytes(stored_key)
        except KeyError:
            stored = b""  # a quiet success keeps no log
        self.write(self._open(key).finish(stored))
        self._live.pop(key.stem, None)
        last = stored.rstrip().rpartition(b"\n")[2]
        if not (last.startswith(b"ds: attempt ") and b" ended: " in last):
            # The worker ends a stored log with this line (and why) where it did not succeed.
            self.write(f"ds: attempt {key.attempt} ended: {key.outcome}\n")


def follow(
    follower: Follower,
    *,
    every: float = 0.5,
    sleep: Callable[[float], object] = time.sleep,
    still_active: Callable[[], bool] = lambda: True,
) -> None:
    """Poll ``follower`` every ``every`` seconds until its task has ended or the run is no
    longer active."""
    while follower.poll() and still_active():
        sleep(every)


def follow_task(
    project: Project,
    task_id: str,
    write: Callable[[str], object],
    *,
    every: float = 0.5,
) -> None:
    """Follow ``task_id`` in the project's current run (see the module's docstring), after
    the logs of its attempts that have already ended (printed by the caller)."""
    backend = backend_of_run(project)
    state = require_state(project, backend.storage)
    records = records_for(project, backend, state)
    scratch = scratch_root_of(project.state_dir, os.environ)
    body = records.bodies([task_id]).get(task_id)

    def live_logs(attempt: int) -> LiveLog:
        own = backend.live_log(task_id, attempt, body)
        return own if own is not None else ScratchLiveLog(scratch, task_id, attempt)

    follower = Follower(records, backend.storage, task_id, live_logs, write)
    follower.skip_existing()

    def still_active() -> bool:
        now = load_state(project, backend.storage)
        return now is not None and now.run_id == state.run_id and now.active

    follow(follower, every=every, still_active=still_active)
