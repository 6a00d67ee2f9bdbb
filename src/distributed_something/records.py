"""Run bookkeeping kept in storage: done markers, skip and failure records, logs, manifests.

Everything lives under ``_ds/<app_name>/`` in the main bucket, so any process that can reach
the bucket (local workers, containers on AWS, the monitor) sees the same picture. Done markers
are kept across runs (they make check-if-done work); everything else is kept per run under
``runs/<run_id>/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from distributed_something.interfaces.storage import Storage

META_ROOT = "_ds"


@dataclass
class DoneMarker:
    """Written after a task's outputs are uploaded; its presence means "done"."""

    task_id: str
    attempt: int
    duration: float
    outputs: list[str]
    started_at: float
    finished_at: float
    worker: str
    output_prefix: str
    #: finish times of every completion (a task runs twice only if a worker vanished).
    completions: list[float] = field(default_factory=list)


@dataclass
class Failure:
    """One failed attempt: why, with the exit code and the end of the log."""

    task_id: str
    attempt: int
    error: str
    exit_code: int | None
    log_tail: str
    at: float
    worker: str


@dataclass
class Skip:
    """A received task that check-if-done found finished already."""

    task_id: str
    at: float
    reason: str
    worker: str


@dataclass(frozen=True)
class ManifestEntry:
    """One submitted task, as the report lists it."""

    task_id: str
    group: Any


class RunRecords:
    """Reads and writes the bookkeeping objects of one app in one storage."""

    def __init__(self, storage: Storage, app_name: str, run_id: str) -> None:
        self.storage = storage
        self.prefix = f"{META_ROOT}/{app_name}/"
        self.run_prefix = f"{self.prefix}runs/{run_id}/"

    # keys ------------------------------------------------------------------------------
    def done_key(self, task_id: str) -> str:
        return f"{self.prefix}done/{task_id}.json"

    def skip_key(self, task_id: str) -> str:
        return f"{self.run_prefix}skipped/{task_id}.json"

    def skips_key(self, part: str) -> str:
        return f"{self.run_prefix}skipped-{part}.jsonl"

    def failure_key(self, task_id: str, attempt: int) -> str:
        return f"{self.run_prefix}failures/{task_id}/{attempt:04d}.json"

    def log_key(self, task_id: str, attempt: int) -> str:
        return f"{self.run_prefix}logs/{task_id}/{attempt:04d}.log"

    def manifest_key(self, part: str) -> str:
        return f"{self.run_prefix}manifest-{part}.jsonl"

    def report_key(self) -> str:
        return f"{self.run_prefix}report.json"

    # writes ----------------------------------------------------------------------------
    def write_done(self, marker: DoneMarker) -> DoneMarker:
        """Store the done marker, keeping the finish times of earlier completions.

        Only a task received more than once can have completed before (a worker vanished
        mid-task), so a first attempt skips reading the old marker.
        """
        previous = self.read_done(marker.task_id) if marker.attempt > 1 else None
        history = previous.completions if previous else []
        marker.completions = [*history[-9:], marker.finished_at]
        self._put_json(self.done_key(marker.task_id), asdict(marker))
        return marker

    def write_skip(self, skip: Skip) -> None:
        """One task a worker skipped: one object, so workers never write the same key."""
        self._put_json(self.skip_key(skip.task_id), asdict(skip))

    def write_skips(self, part: str, skips: Iterable[Skip]) -> None:
        """Many tasks skipped at once (at submit): one JSON-lines object for all of them, so
        skipping 9,000 finished tasks costs one write, not 9,000."""
        lines = [json.dumps(asdict(s)) for s in skips]
        if lines:
            self.storage.put_bytes(self.skips_key(part), ("\n".join(lines) + "\n").encode())

    def write_failure(self, failure: Failure) -> None:
        self._put_json(self.failure_key(failure.task_id, failure.attempt), asdict(failure))

    def write_manifest(self, part: str, entries: Iterable[ManifestEntry]) -> None:
        lines = [json.dumps({"task_id": e.task_id, "group": e.group}) for e in entries]
        self.storage.put_bytes(self.manifest_key(part), ("\n".join(lines) + "\n").encode())

    # reads -----------------------------------------------------------------------------
    def read_done(self, task_id: str) -> DoneMarker | None:
        data = self._get_json(self.done_key(task_id))
        return DoneMarker(**data) if data is not None else None

    def read_done_many(self, task_ids: Sequence[str]) -> dict[str, DoneMarker]:
        """The done markers of those of ``task_ids`` that have one: one listing of the done
        markers, then only the markers that exist are read (several at a time)."""
        existing = {o.key for o in self.storage.list(f"{self.prefix}done/")}
        wanted = [t for t in dict.fromkeys(task_ids) if self.done_key(t) in existing]
        datas = self._read_json_many([self.done_key(t) for t in wanted])
        return {t: DoneMarker(**d) for t, d in zip(wanted, datas, strict=True) if d is not None}

    def all_done(self) -> Iterator[DoneMarker]:
        for data in self._iter_json(f"{self.prefix}done/"):
            yield DoneMarker(**data)

    def all_skips(self) -> Iterator[Skip]:
        """Every task skipped in this run, each id once (the first record of it)."""
        single, batched = self._skip_records()
        seen: set[str] = set()
        singles = (Skip(**d) for d in self._read_json_many(single) if d is not None)
        for skip in (*batched, *singles):
            if skip.task_id not in seen:
                seen.add(skip.task_id)
                yield skip

    def all_failures(self) -> Iterator[Failure]:
        for data in self._iter_json(f"{self.run_prefix}failures/"):
            yield Failure(**data)

    def failures_of(self, task_id: str) -> list[Failure]:
        return [Failure(**d) for d in self._iter_json(f"{self.run_prefix}failures/{task_id}/")]

    def count_skipped(self) -> int:
        """Tasks skipped in this run: one listing, plus one read per submit that skipped
        tasks (the per-task records of workers are counted by key, not read)."""
        single, batched = self._skip_records()
        start = len(f"{self.run_prefix}skipped/")
        return len({key[start : -len(".json")] for key in single} | {s.task_id for s in batched})

    def failed_task_ids(self) -> set[str]:
        """Tasks with at least one failed attempt in this run (a listing, no reads)."""
        start = len(f"{self.run_prefix}failures/")
        return {
            o.key[start:].split("/", 1)[0] for o in self.storage.list(self.run_prefix + "failures/")
        }

    def manifest(self) -> list[ManifestEntry]:
        """Every task submitted in the run, first submission first, each id once."""
        seen: dict[str, ManifestEntry] = {}
        for obj in self.storage.list(f"{self.run_prefix}manifest-"):
            for line in self.storage.get_bytes(obj.key).decode().splitlines():
                if line.strip():
                    row = json.loads(line)
                    seen.setdefault(row["task_id"], ManifestEntry(row["task_id"], row["group"]))
        return list(seen.values())

    def logs_of(self, task_id: str) -> list[tuple[str, str]]:
        """(key, text) of every stored log of a task, oldest attempt first."""
        out = []
        for obj in self.storage.list(f"{self.run_prefix}logs/{task_id}/"):
            out.append((obj.key, self.storage.get_bytes(obj.key).decode(errors="replace")))
        return out

    # helpers ---------------------------------------------------------------------------
    def _skip_records(self) -> tuple[list[str], list[Skip]]:
        """Keys of the workers' one-per-task skip records, and the records of every submit's
        JSON-lines object (one read each)."""
        single: list[str] = []
        batched: list[Skip] = []
        for obj in self.storage.list(f"{self.run_prefix}skipped"):
            if obj.key.startswith(f"{self.run_prefix}skipped/") and obj.key.endswith(".json"):
                single.append(obj.key)
            elif obj.key.endswith(".jsonl"):
                lines = self.storage.get_bytes(obj.key).decode().splitlines()
                batched.extend(Skip(**json.loads(line)) for line in lines if line.strip())
        return single, batched

    def _put_json(self, key: str, data: dict[str, Any]) -> None:
        self.storage.put_bytes(key, json.dumps(data, indent=1).encode())

    def _get_json(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.storage.get_bytes(key)
        except KeyError:
            return None
        loaded: dict[str, Any] = json.loads(raw)
        return loaded

    def _read_json_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """`_get_json` of each key, in order, as many at a time as the storage says pays off
        (on S3 each read is a round trip: a report of 10,000 tasks read one after the other
        would wait minutes)."""
        workers = min(self.storage.read_concurrency, len(keys))
        if workers < 2:
            return [self._get_json(key) for key in keys]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self._get_json, keys))

    def _iter_json(self, prefix: str) -> Iterator[dict[str, Any]]:
        keys = [obj.key for obj in self.storage.list(prefix) if obj.key.endswith(".json")]
        for data in self._read_json_many(keys):
            if data is not None:
                yield data


def now() -> float:
    """Wall-clock time shared by every process of a run (records compare across machines)."""
    return time.time()
