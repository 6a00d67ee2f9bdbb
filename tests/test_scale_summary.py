"""The ledger summary (checkpoint + journal, summary.py) and the streamed report: counts
always equal a whole reading of the ledger, whatever was torn, late or never written."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from distributed_something import records as records_module
from distributed_something import summary
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.ledger import DONE_ATTEMPT, event_codes, read_counts, read_ledger
from distributed_something.records import Attempt, Failure, ManifestEntry, RunRecords, Skip
from distributed_something.report import build
from distributed_something.report import files as files_module
from distributed_something.report.build import build_report
from distributed_something.report.files import TaskFiles
from distributed_something.state import RunState
from distributed_something.usecases import run_info


def make_records(tmp_path: Path, n: int = 12) -> tuple[RunRecords, list[str]]:
    records = RunRecords(FolderStorage(tmp_path / "bucket"), "App", "r1")
    ids = [f"t{i:03d}" for i in range(n)]
    records.write_manifest("a", [ManifestEntry(t, {"n": i}) for i, t in enumerate(ids)])
    return records, ids


def run_attempt(records: RunRecords, task_id: str, outcome: str, n: int = 1) -> Attempt:
    attempt = Attempt(task_id, n, f"msg-{task_id}-{n}-{time.time()}", "w1", time.time())
    records.open_attempt(attempt)
    if outcome != "running":
        attempt.outcome, attempt.ended_at = outcome, time.time()
        records.close_attempt(attempt)
    return attempt


def whole(records: RunRecords) -> dict[str, int]:
    """The counts of a whole reading of the ledger (what `ds report` counts)."""
    fresh = RunRecords(records.storage, "App", records.run_id)
    return read_ledger(fresh).counts


def summarised(records: RunRecords) -> dict[str, int]:
    fresh = RunRecords(records.storage, "App", records.run_id)
    return read_counts(fresh)[0]


@pytest.fixture
def rolled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading rolls the checkpoint forward (with the storage's own margin)."""
    monkeypatch.setattr(summary, "ROLL_TASKS", -1)


@pytest.fixture
def always_roll(rolled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading rolls the checkpoint forward, up to the moment it began (no margin):
    only the journal since, and the tasks running, are read again."""
    monkeypatch.setattr(FolderStorage, "journal_margin", 0.0)


def test_counts_follow_every_kind_of_event_through_rolled_checkpoints(
    tmp_path: Path, always_roll: None
) -> None:
    records, ids = make_records(tmp_path)
    assert summarised(records) == whole(records)  # no checkpoint: a whole reading
    assert summary.read_checkpoint(records) is not None
    running = run_attempt(records, ids[0], "running")
    run_attempt(records, ids[1], "done")
    run_attempt(records, ids[2], "failed")
    assert summarised(records) == whole(records)
    # The running attempt ends without an intent: a task running at the checkpoint is
    # always read again.
    running.outcome, running.ended_at = "done", time.time()
    records.close_attempt(running)
    run_attempt(records, ids[2], "dead", 2)
    records.write_mark(ids[3], "dead", time.time(), {"error": "found in the dead letters"})
    records.write_mark(ids[4], "requeue", time.time(), {})
    run_attempt(records, ids[5], "released")
    run_attempt(records, ids[6], "done")
    run_attempt(records, ids[6], "duplicate", 2)
    records.write_skip(Skip(ids[7], time.time(), "done already", "w1"))
    counts = summarised(records)
    assert counts == whole(records)
    assert counts["done"] == 3 and counts["dead"] == 2 and counts["skipped"] == 1
    assert counts["duplicates"] == 1 and counts["total"] == len(ids)
    # A stale open attempt closed by cleanup (another process, no intent).
    stale = run_attempt(records, ids[8], "running")
    assert summarised(records)["running"] == 1
    key = next(a for a in records.attempt_keys(ids[8]) if a.stem == stale.stem)
    records.close_stale(key, "lost", time.time())
    assert summarised(records) == whole(records)
    assert summarised(records)["running"] == 0
    # A skip list of a later submit: counted again from the records.
    records.write_skips("s1", [Skip(ids[9], time.time(), "done (at submit)", "submit")])
    assert summarised(records) == whole(records)
    assert summarised(records)["skipped"] == 2


def test_a_torn_or_damaged_checkpoint_is_not_trusted(tmp_path: Path, always_roll: None) -> None:
    records, ids = make_records(tmp_path)
    run_attempt(records, ids[0], "done")
    summarised(records)
    key = records.checkpoint_key()
    good = records.storage.get_bytes(key)
    assert b" D 001" in good
    for damaged in (
        good[: len(good) // 2],  # torn: part of it
        good[:-1],  # torn: all but its last byte
        good.replace(b" D 001", b" X 001"),  # an unknown code
        good.replace(b"t000 D 001", b"t000 D 0x1"),  # damaged flags of a task read again
        good.replace(b'"version": 2', b'"version": 9'),
        b"not json\n",
    ):
        records.storage.put_bytes(key, damaged)
        records.storage.delete(key + ".delta")
        run_attempt(records, ids[1], "failed")
        run_attempt(records, ids[0], "duplicate", 2)  # its entry is looked up
        assert summarised(records) == whole(records)
        assert summary.read_checkpoint(records) is not None  # written again whole


def test_a_second_submit_and_a_submit_time_skip_list_are_counted(
    tmp_path: Path, always_roll: None
) -> None:
    records, ids = make_records(tmp_path, 6)
    run_attempt(records, ids[0], "done")
    assert summarised(records) == whole(records)
    records.write_manifest("b", [ManifestEntry(ids[0], {"n": 0}), ManifestEntry("new", {})])
    records.write_skips("s1", [Skip("new", time.time(), "done (at submit)", "submit")])
    counts = summarised(records)
    assert counts == whole(records)
    assert counts["total"] == 7 and counts["skipped"] == 1 and counts["done"] == 1


def test_a_task_outside_the_manifest_is_never_counted(tmp_path: Path, always_roll: None) -> None:
    records, ids = make_records(tmp_path, 3)
    summarised(records)
    run_attempt(records, "stray", "done")  # a message of another run, say
    run_attempt(records, ids[0], "running")
    assert summarised(records) == whole(records)
    assert summarised(records)["total"] == 3


def test_an_intent_whose_record_never_landed_changes_nothing(
    tmp_path: Path, always_roll: None
) -> None:
    records, ids = make_records(tmp_path)
    summarised(records)
    records.write_intent(ids[0], "a", "00000000000000001-0001-deadbeef")  # then the writer died
    records.write_intent(ids[1], "m", "dead-1")
    assert summarised(records) == whole(records)
    assert summarised(records)["pending"] == len(ids)


def test_a_record_landing_late_after_its_intent_is_still_counted(
    tmp_path: Path, rolled: None
) -> None:
    records, ids = make_records(tmp_path)
    summarised(records)
    attempt = Attempt(ids[0], 1, "m1", "w1", time.time())
    records.write_intent(ids[0], "a", attempt.stem)
    # Readers long after the intent: the checkpoint would move past it, but its record has
    # not landed, so it is held back there.
    later = time.time() + 60
    fresh = RunRecords(records.storage, "App", "r1")
    summary.read_counts(fresh, clock=lambda: later)
    summary.read_counts(fresh, clock=lambda: later + 1)
    covered = summary.read_checkpoint(records)
    assert covered is not None and covered.covered_us <= round(attempt.started_at * 1e6) + 10**6
    # The record lands (its writer was slow), and then closes without another intent.
    records.storage.put_bytes(
        records.attempt_key(attempt, "running"), json.dumps(asdict(attempt)).encode()
    )
    attempt.outcome, attempt.ended_at = "done", time.time()
    records.close_attempt(attempt)
    counts = summary.read_counts(RunRecords(records.storage, "App", "r1"), clock=lambda: later + 2)
    assert counts == whole(records)
    assert counts["done"] == 1


def test_a_reader_without_write_access_still_counts(tmp_path: Path, always_roll: None) -> None:
    records, ids = make_records(tmp_path)
    run_attempt(records, ids[0], "done")

    def refuse(key: str, data: bytes) -> None:
        raise PermissionError(key)

    fresh = RunRecords(records.storage, "App", "r1")
    original = fresh.storage.put_bytes
    fresh.storage.put_bytes = refuse  # type: ignore[method-assign]
    try:
        assert read_counts(fresh)[0] == whole(records)
    finally:
        fresh.storage.put_bytes = original  # type: ignore[method-assign]
    assert summary.read_checkpoint(records) is None


@pytest.mark.parametrize("batch", [1, 3, 500])
def test_the_streamed_report_lists_a_sample_and_writes_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(build, "SAMPLE", 2)
    monkeypatch.setattr(files_module, "_BATCH", batch)  # tasks are written in batches
    records, ids = make_records(tmp_path, 10)
    for t in ids[:4]:
        run_attempt(records, t, "done")
    for t in ids[4:7]:
        run_attempt(records, t, "dead")
        records.write_failure(Failure(t, 1, f"exit 3 in {t}", 3, "log", time.time(), "w1"))
    state = RunState(app_name="App", run_id="r1", backend="local", created_at=time.time())
    files = TaskFiles(tmp_path / "report.json", tmp_path / "report.tsv")
    report = build_report(RunRecords(records.storage, "App", "r1"), state, on_task=files.add)
    files.finish(report)
    assert report.counts == whole(records) | {"running": 0}
    assert report.counts == summarised(records)
    # Every dead task listed; two of the done and two of the pending ones.
    listed = [(t.id, t.outcome) for t in report.tasks]
    assert [i for i, o in listed if o == "dead"] == ids[4:7]
    assert [i for i, o in listed if o == "done"] == ids[:2]
    assert [i for i, o in listed if o == "pending"] == ids[7:9]
    assert not report.listed_all
    stored = json.loads((tmp_path / "report.json").read_text())
    assert [t["id"] for t in stored["tasks"]] == ids
    assert stored["counts"] == report.counts
    assert {t["id"]: t["error"] for t in stored["tasks"] if t["outcome"] == "dead"} == {
        t: f"exit 3 in {t}" for t in ids[4:7]
    }
    rows = (tmp_path / "report.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(ids)
    assert [r.split("\t")[0] for r in rows[1:]] == ids
    assert not list(tmp_path.glob(".report*"))  # no temporary file left


@pytest.mark.parametrize("rows_at_once", [1, 2, 1000])
def test_the_streamed_manifest_is_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_at_once: int
) -> None:
    monkeypatch.setattr(records_module, "_ROWS_AT_ONCE", rows_at_once)  # parsed in chunks
    records, ids = make_records(tmp_path, 5)
    # A part written by hand: blank lines and a shared line among the tasks.
    records.storage.put_bytes(
        f"{records.run_prefix}manifest-a2.jsonl",
        b'\n{"task_id": "h1", "group": {"s": "x"}}\n\n{"shared": {}}\n{"task_id": "h2"}\n',
    )
    records.write_manifest("b", [ManifestEntry(ids[0], {"n": 0}), ManifestEntry("x", {"n": 9})])
    records.storage.put_bytes(
        f"{records.run_prefix}manifest-c.jsonl", b'{"task_id": "y"}\nnot json\n'
    )
    fresh = RunRecords(records.storage, "App", "r1")
    streamed = list(fresh.iter_manifest())
    again = RunRecords(records.storage, "App", "r1")
    assert streamed == [(e.task_id, e.group) for e in again.manifest()]
    assert [t for t, _ in streamed] == [*ids, "h1", "h2", "x"]  # once each; damaged: left out
    assert f"{records.run_prefix}manifest-c.jsonl" in fresh.corrupt


def test_records_without_intents_are_counted_by_a_recount(
    tmp_path: Path, always_roll: None
) -> None:
    """A worker of an earlier version writes no intents: the summary cannot see its records
    until the monitor, finding the whole reading different, counts again."""
    records, ids = make_records(tmp_path, 3)
    summarised(records)
    attempt = Attempt(ids[0], 1, "m1", "old-worker", time.time(), time.time(), "done")
    records.storage.put_bytes(records.attempt_key(attempt), json.dumps(asdict(attempt)).encode())
    assert summarised(records) != whole(records)  # what the monitor's reconcile notices
    assert summary.recount(records) == whole(records)
    assert summarised(records) == whole(records) and whole(records)["done"] == 1


class _ManyAtOnce(FolderStorage):
    """A storage that says many reads at once pay off (as S3 does)."""

    read_concurrency = 4


def test_a_storage_read_many_at_once_counts_the_same(tmp_path: Path, always_roll: None) -> None:
    records = RunRecords(_ManyAtOnce(tmp_path / "bucket"), "App", "r1")
    ids = [f"t{i:03d}" for i in range(20)]
    records.write_manifest("a", [ManifestEntry(t, {"n": i}) for i, t in enumerate(ids)])
    summarised(records)
    for t in ids[:8]:
        run_attempt(records, t, "done")
    for t in ids[8:12]:
        run_attempt(records, t, "dead")
    run_attempt(records, ids[12], "running")
    records.write_skip(Skip(ids[13], time.time(), "done already", "w1"))
    counts = summarised(records)
    assert counts == whole(records)
    assert (counts["done"], counts["dead"], counts["running"], counts["skipped"]) == (8, 4, 1, 1)


def test_a_delta_rolls_forward_and_a_torn_one_is_not_used(
    tmp_path: Path, always_roll: None
) -> None:
    records, ids = make_records(tmp_path, 8)
    summarised(records)
    base = records.storage.get_bytes(records.checkpoint_key())
    run_attempt(records, ids[0], "done")
    summarised(records)  # rolls forward by a delta: the base is not written again
    assert records.storage.get_bytes(records.checkpoint_key()) == base
    delta_key = records.checkpoint_key() + ".delta"
    delta = records.storage.get_bytes(delta_key)
    assert ids[0].encode() in delta
    run_attempt(records, ids[1], "failed")
    for damaged in (delta[: len(delta) // 2], delta.replace(b'"D"', b'"X"'), b"[]"):
        records.storage.put_bytes(delta_key, damaged)
        assert summarised(records) == whole(records)


def test_the_monitor_writes_the_checkpoint_whole_once_the_delta_is_big(
    tmp_path: Path, always_roll: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(summary, "COMPACT_TASKS", 2)
    records, ids = make_records(tmp_path, 8)
    summarised(records)
    base = records.storage.get_bytes(records.checkpoint_key())
    for t in ids[:4]:
        run_attempt(records, t, "done")
    fresh = RunRecords(records.storage, "App", "r1")
    assert read_counts(fresh, compact=True)[0] == whole(records)
    assert records.storage.get_bytes(records.checkpoint_key()) != base  # written whole
    run_attempt(records, ids[4], "dead")
    assert summarised(records) == whole(records)  # the old delta (other base) is not used
    assert summarised(records)["done"] == 4


def _checkpoint_files(records: RunRecords) -> tuple[bytes, bytes | None]:
    """The checkpoint and its delta (None: none), as stored."""
    delta = records.checkpoint_key() + ".delta"
    base = records.storage.get_bytes(records.checkpoint_key())
    return base, records.storage.get_bytes(delta) if records.storage.exists(delta) else None


def test_writers_fold_the_journal_so_no_reader_meets_a_long_one(
    tmp_path: Path, always_roll: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no monitor running, a writer that wrote `FOLD_EVERY` intents the checkpoint does
    not cover folds them in itself (before its next intent); when a monitor keeps the
    checkpoint fresh, the writer finds it covered and writes nothing."""
    from distributed_something import records as records_module

    monkeypatch.setattr(records_module, "FOLD_EVERY", 4)
    records, ids = make_records(tmp_path)
    summarised(records)
    for t in ids[:9]:
        run_attempt(records, t, "done")
    folded = summary.read_checkpoint(records)
    # Folded before the 5th and the 9th intent: the checkpoint counts the first 8.
    assert folded is not None and folded.counts["done"] == 8
    assert summarised(records) == whole(records) and whole(records)["done"] == 9

    records, ids = make_records(tmp_path / "second")
    summarised(records)
    for t in ids[:4]:
        run_attempt(records, t, "done")
    summary.read_counts(RunRecords(records.storage, "App", "r1"), compact=True)  # a monitor
    before = _checkpoint_files(records)
    run_attempt(records, ids[4], "done")  # 4 uncovered intents: checked, found covered
    assert _checkpoint_files(records) == before
    assert summarised(records) == whole(records)


def test_the_journal_is_pruned_behind_the_checkpoint_and_an_older_one_still_counts(
    tmp_path: Path, always_roll: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compact reading deletes the journal's minutes `JOURNAL_KEEP_S` behind the
    checkpoint it wrote, after raising the floor. A checkpoint older than the floor (a slow
    reader's) is never written, and one found anyway makes the reading count from every
    record: no change is missed."""
    from distributed_something import records as records_module

    records, ids = make_records(tmp_path)
    hour_ago = time.time() - 3600
    summary.read_counts(records, clock=lambda: hour_ago - 10)  # a checkpoint an hour old
    old = _checkpoint_files(records)
    old_covered = summary.read_checkpoint(records)
    assert old_covered is not None
    # Intents written an hour ago (the records' clock), their records now.
    monkeypatch.setattr(records_module, "now", lambda: hour_ago)
    for t in ids[:3]:
        run_attempt(records, t, "done")
    records.write_mark(ids[3], "dead", time.time(), {"error": "dead-lettered"})
    monkeypatch.undo()
    monkeypatch.setattr(FolderStorage, "journal_margin", 0.0)
    monkeypatch.setattr(summary, "ROLL_TASKS", -1)
    journal = f"{records.run_prefix}journal/"
    assert len(list(records.storage.list(journal))) == 4
    # Recent intents are kept: only minutes far enough behind the checkpoint go.
    run_attempt(records, ids[4], "failed")
    fresh = RunRecords(records.storage, "App", "r1")
    assert summary.read_counts(fresh, compact=True) == whole(records)
    left = [o.key for o in records.storage.list(journal)]
    assert len(left) == 1 and ids[4] in left[0]
    assert records.journal_floor() * records_module.MINUTE_US > round(hour_ago * 1e6)
    # A reader that still holds the hour-old checkpoint: it would miss the pruned intents.
    base, delta = old
    records.storage.put_bytes(records.checkpoint_key(), base)
    records.storage.delete(records.checkpoint_key() + ".delta")
    assert delta is None
    counts = summarised(records)
    assert counts == whole(records)
    assert (counts["done"], counts["dead"], counts["failed"]) == (3, 1, 1)
    rebuilt = summary.read_checkpoint(records)
    assert rebuilt is not None and rebuilt.covered_us > old_covered.covered_us
    # And a checkpoint behind the floor is not written.
    now_files = _checkpoint_files(records)
    summary.write_checkpoint(
        records,
        old_covered.covered_us,
        dict(old_covered.counts),
        summary.signatures(records),
        [[]] * summary.SHARDS,
        [],
    )
    assert _checkpoint_files(records) == now_files


def test_the_journal_is_read_from_the_checkpoint_on_not_from_its_minute_start(
    tmp_path: Path,
) -> None:
    records, ids = make_records(tmp_path)
    base = (time.time_ns() // 1000 // 60_000_000) * 60_000_000  # a minute's start
    times = [base + step * 1_000_000 for step in range(12)]  # one intent a second
    for task_id, at_us in zip(ids, times, strict=True):
        records.storage.put_bytes(records.intent_key(task_id, at_us, "a", "x"), b"")
    listed: list[str] = []
    real_list = records.storage.list

    def counting_list(prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        for info in real_list(prefix, start_after):
            listed.append(info.key)
            yield info

    records.storage.list = counting_list  # type: ignore[method-assign]

    since = times[5]
    found = records.intents_since(since, times[-1])

    assert [(i.task_id, i.at_us) for i in found] == list(zip(ids[5:], times[5:], strict=True))
    assert len(listed) == 7, "the intents before the checkpoint's time are not even listed"


class _ListingCounter:
    """Counts the listings of attempt folders a storage serves (one per task read)."""

    def __init__(self, storage: FolderStorage) -> None:
        self.prefixes: list[str] = []
        real = storage.list

        def listing(prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
            if "/attempts/" in prefix and not prefix.endswith("/attempts/"):  # one task's
                self.prefixes.append(prefix)
            return real(prefix, start_after)

        storage.list = listing  # type: ignore[method-assign]

    def tasks_read(self) -> int:
        read, self.prefixes = len(self.prefixes), []
        return read


def test_tasks_a_reading_counted_are_not_read_again_for_the_same_intents(
    tmp_path: Path, rolled: None
) -> None:
    # The default margin (intents are listed from two seconds before the last reading) and
    # a checkpoint rolled at every reading: what a monitor ticking during a busy run does.
    records, ids = make_records(tmp_path)
    summarised(records)  # the checkpoint of the submit
    for task_id in ids[:8]:
        run_attempt(records, task_id, "done")
    counter = _ListingCounter(records.storage)  # type: ignore[arg-type]

    assert summarised(records) == whole(records)
    assert counter.tasks_read() == 8
    assert summarised(records) == whole(records)
    assert counter.tasks_read() == 0, "the last reading counted them: nothing new since"
    run_attempt(records, ids[8], "done")
    run_attempt(records, ids[0], "done", n=2)  # a second attempt: a new intent
    assert summarised(records) == whole(records)
    assert counter.tasks_read() == 2
    assert summarised(records)["duplicates"] == whole(records)["duplicates"] == 1


def test_an_intent_landing_late_among_counted_ones_is_still_counted(
    tmp_path: Path, rolled: None
) -> None:
    records, ids = make_records(tmp_path)
    summarised(records)
    first = run_attempt(records, ids[0], "done")
    assert summarised(records) == whole(records)
    # Intents whose key time is before that reading, landing only now (their writers were
    # slow): one for another task, one for a second attempt of the task just counted.
    for task_id, n in ((ids[1], 1), (ids[0], 2)):
        late = Attempt(task_id, n, f"late-{task_id}", "w2", first.started_at - 0.5)
        records.storage.put_bytes(
            records.intent_key(task_id, round(late.started_at * 1e6), "a", late.stem), b""
        )
        records.storage.put_bytes(records.attempt_key(late, "running"), b"{}")
        late.outcome, late.ended_at = "done", time.time()
        records.close_attempt(late)

    counts = summarised(records)

    assert counts == whole(records)
    assert (counts["done"], counts["duplicates"]) == (2, 1)


def test_records_read_together_are_judged_as_each_read_alone(tmp_path: Path) -> None:
    # `read_json_many` parses what we write by a quicker path; anything else must come out
    # exactly as `_get_json` gives it, with the same problems noted.
    records, _ = make_records(tmp_path, 1)
    raws = {
        "ok": b'{"a": 1, "b": [1.5, "x"]}',
        "spaced": b' {"a": 1}\n',
        "bom": b'\xef\xbb\xbf{"a": 1}',
        "utf16": '{"a": 1}'.encode("utf-16"),
        "list": b"[1, 2]",
        "cut": b'{"a": ',
        "two": b'{"a": 1}{"b": 2}',
        "latin1": '{"a": "é"}'.encode("latin-1"),
        "empty": b"",
    }
    keys = []
    for name, raw in raws.items():
        keys.append(f"{records.run_prefix}probe/{name}.json")
        records.storage.put_bytes(keys[-1], raw)
    keys.append(f"{records.run_prefix}probe/missing.json")
    together = RunRecords(records.storage, "App", "r1")
    alone = RunRecords(records.storage, "App", "r1")
    assert together.read_json_many(keys) == [alone._get_json(key) for key in keys]
    assert together.corrupt == alone.corrupt
    assert set(alone.corrupt) == {keys[i] for i in (4, 5, 6, 7, 8)}


def test_the_reports_task_codes_are_the_ledgers(tmp_path: Path) -> None:
    # `read_task_codes` takes a quick path for a task with one done attempt and no mark:
    # every task, on that path or not, has the code the ledger gives it.
    records, ids = make_records(tmp_path, 8)
    run_attempt(records, ids[0], "done")
    run_attempt(records, ids[1], "done")
    records.write_mark(ids[1], "requeue", time.time(), {})
    run_attempt(records, ids[2], "done")
    run_attempt(records, ids[2], "done", 2)  # ran twice: a duplicate
    run_attempt(records, ids[3], "failed")
    run_attempt(records, ids[3], "done", 2)
    run_attempt(records, ids[4], "duplicate")
    run_attempt(records, ids[5], "running")
    records.write_mark(ids[6], "dead", time.time(), {"error": "lost"})
    fresh = RunRecords(records.storage, "App", "r1")
    codes = build.read_task_codes(fresh)
    expected = event_codes(fresh.attempt_keys(), fresh.marks())
    assert {t: (c, d) for t, (c, d, _) in codes.items()} == expected
    assert {t: n for t, (_, _, n) in codes.items()} == {
        ids[0]: 1,
        ids[1]: 1,
        ids[2]: 2,
        ids[3]: 2,
        ids[4]: 0,
        ids[5]: 1,
        ids[6]: 0,
    }
    assert codes[ids[0]] == (DONE_ATTEMPT, False, 1)


def test_checkpoint_lookups_find_every_entry_in_order_or_not(tmp_path: Path) -> None:
    # Shards are written in task id order and searched by halves; a checkpoint written
    # before (lines in any order) is scanned. Both find exactly the entries written.
    records, _ = make_records(tmp_path, 1)
    rng = random.Random(7)
    ids = {
        "a",
        "ab",
        "a b",
        "a-b",
        "é",
        "z" * 40,
        *(f"{rng.getrandbits(64):x}" for _ in range(3000)),
    }
    codes = ["D", "running", "failed", "dead", summary.QUIET]
    entries = {t: (rng.choice(codes), rng.random() < 0.1, rng.random() < 0.1, True) for t in ids}
    shards: list[list[str]] = [[] for _ in range(summary.SHARDS)]
    for task_id, entry in entries.items():
        shards[summary.shard_of(task_id)].append(summary._encode(task_id, entry))
    counts = dict.fromkeys((*summary.STATES, "total", "duplicates"), 0)
    assert summary.write_checkpoint(records, 1, counts, summary.signatures(records), shards, [])
    absent = [
        "",
        "0",
        "a ",
        "aa",
        "ab ",
        "zz",
        "é2",
        *(f"{rng.getrandbits(64):x}" for _ in range(300)),
    ]
    raw = records.storage.get_bytes(records.checkpoint_key())
    head, _, body = raw.partition(b"\n")
    meta = json.loads(head)
    del meta["in_order"]  # as written before shards were ordered: the lines reversed
    bodies = []
    offsets = meta["offsets"]
    for index in range(summary.SHARDS):
        shard = body[offsets[index] : offsets[index + 1]].decode().splitlines(keepends=True)
        bodies.append("".join(reversed(shard)).encode())
    for name, stored in (
        ("in order", raw),
        ("any order", json.dumps(meta).encode() + b"\n" + b"".join(bodies)),
    ):
        records.storage.put_bytes(records.checkpoint_key(), stored)
        checkpoint = summary.read_checkpoint(records)
        assert checkpoint is not None and checkpoint.in_order == (name == "in order")
        found = checkpoint.lookup([*entries, *absent])
        assert found == entries, name


@pytest.mark.parametrize("roll", [False, True])
def test_the_running_tasks_are_the_ledgers_at_every_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roll: bool
) -> None:
    """`ds status` names the running tasks from the same reading as its counts: through a
    whole reading, rolled checkpoints (roll) or the journal since one (not), they are the
    tasks a whole reading of the ledger finds running."""
    if roll:
        monkeypatch.setattr(summary, "ROLL_TASKS", -1)
        monkeypatch.setattr(FolderStorage, "journal_margin", 0.0)
    records, ids = make_records(tmp_path)

    def running_now() -> list[str]:
        fresh = RunRecords(records.storage, "App", records.run_id)
        counts, running = summary.read_counts_running(fresh)
        truth = read_ledger(RunRecords(records.storage, "App", records.run_id))
        expected = sorted(e.id for e in truth.tasks.values() if e.state == "running")
        assert counts == truth.counts and counts["running"] == len(running)
        return sorted(running) if sorted(running) == expected else ["differs", *running]

    assert running_now() == []  # the first reading is a whole one
    first = run_attempt(records, ids[0], "running")
    run_attempt(records, ids[1], "running")
    run_attempt(records, ids[2], "done")
    assert running_now() == [ids[0], ids[1]]
    first.outcome, first.ended_at = "failed", time.time()
    records.close_attempt(first)
    run_attempt(records, ids[0], "running", n=2)  # its retry
    run_attempt(records, ids[3], "running")
    assert running_now() == [ids[0], ids[1], ids[3]]


def test_status_watch_looks_up_each_running_task_once_a_minute(tmp_path: Path) -> None:
    """`ds status --watch` (`RunningLookups`): a task still running is not listed again at
    every refresh (on S3 a listing each), only once its lookup is a minute old; a retry is
    then seen, and a task no longer running drops out."""
    records, ids = make_records(tmp_path)
    first = run_attempt(records, ids[0], "running")
    run_attempt(records, ids[1], "running")
    now = [1000.0]
    lookups = run_info.RunningLookups(clock=lambda: now[0])
    listed: list[list[str]] = []
    real = records.attempt_keys_of

    def counting(task_ids: list[str]) -> Any:
        listed.append(list(task_ids))
        return real(task_ids)

    records.attempt_keys_of = counting  # type: ignore[method-assign]

    def refresh(running: list[str]) -> list[tuple[str, int]]:
        found = run_info.running_tasks(records, running, lookups)
        return [(t.task_id, t.attempt) for t in found]

    assert refresh([ids[0], ids[1]]) == [(ids[0], 1), (ids[1], 1)]
    now[0] += 2
    assert refresh([ids[0], ids[1]]) == [(ids[0], 1), (ids[1], 1)]
    assert listed == [[ids[0], ids[1]], []]  # the second refresh listed nothing
    first.outcome, first.ended_at = "failed", time.time()
    records.close_attempt(first)
    run_attempt(records, ids[0], "running", n=2)  # its retry, within the minute
    run_attempt(records, ids[2], "running")
    now[0] += 2
    assert refresh([ids[0], ids[1], ids[2]]) == [(ids[0], 1), (ids[1], 1), (ids[2], 1)]
    assert listed[-1] == [ids[2]]  # only the new one
    now[0] += 60
    assert sorted(refresh([ids[0], ids[2]])) == [(ids[0], 2), (ids[2], 1)]
    assert listed[-1] == [ids[0], ids[2]]  # a minute on: looked up again; ids[1] forgotten
    assert set(lookups.found) == {ids[0], ids[2]}
    # Without lookups (a single `ds status`), every running task is listed.
    assert run_info.running_tasks(records, [ids[0]]) != []
    assert listed[-1] == [ids[0]]


def test_a_running_tasks_attempt_counts_the_attempts_that_ran_before_it(tmp_path: Path) -> None:
    """`ds status` names a running task's attempt as `ds report` and `ds dead list` count
    them (attempts that ran, stood-down duplicates not), not by its message's receive count,
    which a redrive (a new message) or a re-send starts again at 1."""
    records, ids = make_records(tmp_path)
    run_attempt(records, ids[0], "failed", n=1)
    run_attempt(records, ids[0], "dead", n=2)
    run_attempt(records, ids[0], "duplicate", n=1)
    run_attempt(records, ids[0], "running", n=1)  # redriven: a new message, receive 1
    ((task_id, attempt),) = [
        (t.task_id, t.attempt) for t in run_info.running_tasks(records, [ids[0]])
    ]
    assert (task_id, attempt) == (ids[0], 3)
