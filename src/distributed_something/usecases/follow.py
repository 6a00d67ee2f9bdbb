"""`ds logs -f`: follow a task's log while it runs, attempt after attempt, until it ends.

A worker writes the running attempt's output to ``<scratch>/<workdir>/task.log``, whose first
line is ``ds: task <id> attempt <n> on <worker>``; when the attempt ends the worker stores the
log in the run's records (`RunRecords.log_key`) and reuses the file for its next task. So a
follower on a machine that sees the workers' scratch (local runs; Slurm with the default
scratch under the project folder) streams the growing file, then prints whatever the stored
copy holds beyond what it already printed. Elsewhere (AWS) each attempt's stored log is printed
as the attempt ends.
"""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distributed_something.backends import open_backend
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.records import AttemptKey, RunRecords
from distributed_something.state import load_state, require_state
from distributed_something.usecases.lifecycle import records_for
from distributed_something.worker.procgroups import scratch_root_of

#: Outcomes after which a task runs no more in this run (a failed one waits for its retry).
FINAL_OUTCOMES = frozenset({"done", "dead"})


def live_log(scratch_root: Path, task_id: str, attempt: int) -> Path | None:
    """The growing log of ``task_id``'s attempt ``attempt`` in a worker's scratch folder under
    ``scratch_root``, or None when no worker there runs it."""
    header = f"ds: task {task_id} attempt {attempt} ".encode()
    for path in scratch_root.glob("*/task.log"):
        if _starts_with(path, header):
            return path
    return None


def _starts_with(path: Path, header: bytes) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(header)) == header
    except OSError:
        return False


@dataclass
class Follower:
    """Follows one task of one run; `poll` does one round and says whether to go on.

    ``write`` gets text (UTF-8, bad bytes replaced; the caller strips control sequences).
    """

    records: RunRecords
    storage: Storage
    task_id: str
    scratch_root: Path | None
    write: Callable[[str], object]
    #: attempts whose log was printed in full (from the stored copy, or live then stored)
    printed: set[str] = field(default_factory=set)
    _live: Path | None = None
    _live_stem: str = ""
    _offset: int = 0

    def skip_existing(self) -> None:
        """Count the attempts that have already ended as printed (their stored logs were
        shown before following began)."""
        self.printed |= {k.stem for k in self._keys() if k.outcome != "running"}

    def poll(self) -> bool:
        """Print what is new; False once the task has ended in this run."""
        keys = self._keys()
        running = [k for k in keys if k.outcome == "running"]
        for key in keys:
            if key.outcome != "running" and key.stem not in self.printed:
                self._finish(key)
        if running:
            self._stream(running[-1])
        if running or not keys:
            return True
        return keys[-1].outcome not in FINAL_OUTCOMES and not self._done()

    def _keys(self) -> list[AttemptKey]:
        return sorted(self.records.attempt_keys(self.task_id), key=lambda k: k.started_us)

    def _done(self) -> bool:
        return self.records.read_done(self.task_id) is not None

    def _stream(self, key: AttemptKey) -> None:
        if self.scratch_root is None:
            return
        if self._live_stem != key.stem:
            self._live = live_log(self.scratch_root, self.task_id, key.attempt)
            if self._live is None:
                return
            self._live_stem, self._offset = key.stem, 0
        if self._live is None:
            return
        header = f"ds: task {self.task_id} attempt {key.attempt} ".encode()
        try:
            with self._live.open("rb") as fh:
                if fh.read(len(header)) != header:
                    return  # the worker moved on: the stored copy has the rest
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only: the rest comes next round
        if end:
            self._offset += end
            self.write(data[:end].decode("utf-8", errors="replace"))

    def _finish(self, key: AttemptKey) -> None:
        """Print the ended attempt's stored log beyond what was streamed live."""
        self.printed.add(key.stem)
        offset = self._offset if key.stem == self._live_stem else 0
        # The log's key is the attempt's (same start, same number); built from the integer
        # microseconds, as a float round trip could miss it by one.
        stored = f"{self.records.run_prefix}logs/{self.task_id}/{key.started_us:017d}-"
        stored += f"{key.attempt:04d}.log"
        try:
            data = self.storage.get_bytes(stored)
        except KeyError:
            data = b""  # a quiet success keeps no log
        if offset < len(data):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self.write(decoder.decode(data[offset:], final=True))
        self.write(f"ds: attempt {key.attempt} ended: {key.outcome}\n")
        if key.stem == self._live_stem:
            self._live, self._live_stem, self._offset = None, "", 0


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
    backend = open_backend(project)
    state = require_state(project, backend.storage)
    follower = Follower(
        records_for(project, backend, state),
        backend.storage,
        task_id,
        scratch_root_of(project.state_dir, os.environ),
        write,
    )
    follower.skip_existing()

    def still_active() -> bool:
        now = load_state(project, backend.storage)
        return now is not None and now.run_id == state.run_id and now.active

    follow(follower, every=every, still_active=still_active)
