"""The per-task files beside the run report, written as the tasks stream by.

``report.json`` (every task, then the counts and the rest of the report) and
``report.tsv`` (one row per task, `html.TSV_COLUMNS`) are written to temporary files in
their folder while `build.build_report` streams the tasks, and renamed into place when the
report is complete: a reader sees the old files or the new ones, never part of one, and
no list of every task is ever held in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from distributed_something.atomicfile import PRIVATE_FILE_MODE
from distributed_something.report.build import RunReport, TaskReport, task_json
from distributed_something.report.html import TSV_COLUMNS, tsv_row

#: One encoder for every task (json.dumps with options makes one per call).
_TASK_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
#: Tasks encoded and written together: one encoder call per batch, not per task.
_BATCH = 500


class _Batched:
    """Tasks written `_BATCH` at a time to a JSON stream (their objects, comma-separated)
    and a TSV stream (their rows); a subclass says which (`_streams`)."""

    def __init__(self) -> None:
        self._first = True
        self._batch: list[TaskReport] = []

    def add(self, task: TaskReport) -> None:
        """One task's JSON object and TSV row (written with the next batch)."""
        self._batch.append(task)
        if len(self._batch) >= _BATCH:
            self._write_batch()

    def _write_batch(self) -> None:
        if self._batch:
            json_out, tsv_out = self._streams()
            json_out.write(("" if self._first else ",") + _json_of(self._batch))
            self._first = False
            tsv_out.write(_tsv_of(self._batch))
            self._batch.clear()

    def _streams(self) -> tuple[TextIO, TextIO]:
        raise NotImplementedError


class TaskFiles(_Batched):
    """Streams a report's tasks to ``<stem>.json`` and ``<stem>.tsv`` (see the module); a
    `PartedSink`: another process may write the tasks of a later part of the run to a
    `part` (fragments of both files), joined here in order."""

    def __init__(self, json_path: Path, tsv_path: Path) -> None:
        self.json_path, self.tsv_path = json_path, tsv_path
        self._json, self._json_temp = _open_temp(json_path)
        self._tsv, self._tsv_temp = _open_temp(tsv_path)
        self._json.write('{"tasks":[')
        self._tsv.write("\t".join(TSV_COLUMNS) + "\n")
        super().__init__()

    def _streams(self) -> tuple[TextIO, TextIO]:
        return self._json, self._tsv

    def part(self) -> TaskFilesPart:
        """Empty fragments beside the files, for tasks that follow those given so far."""
        return TaskFilesPart(_temp_path(self.json_path, "part"), _temp_path(self.tsv_path, "part"))

    def join(self, part: TaskFilesPart) -> None:
        """Append what ``part`` holds (closed by its writer) and remove its fragments."""
        self._write_batch()
        with part.json_path.open("rb") as fragment:
            if fragment.read(1):
                self._json.write("" if self._first else ",")
                self._first = False
                self._json.flush()
                fragment.seek(0)
                shutil.copyfileobj(fragment, self._json.buffer, 1 << 20)
        self._tsv.flush()
        with part.tsv_path.open("rb") as fragment:
            shutil.copyfileobj(fragment, self._tsv.buffer, 1 << 20)
        self.drop(part)

    def drop(self, part: TaskFilesPart) -> None:
        """Remove ``part``'s fragments."""
        part.json_path.unlink(missing_ok=True)
        part.tsv_path.unlink(missing_ok=True)

    def finish(self, report: RunReport) -> None:
        """Write the rest of the report (all but its tasks) and put both files in place."""
        self._write_batch()
        rest = report.to_json()
        del rest["tasks"]
        self._json.write("]," + json.dumps(rest, separators=(",", ":"), default=str)[1:])
        for stream, temp, path in (
            (self._json, self._json_temp, self.json_path),
            (self._tsv, self._tsv_temp, self.tsv_path),
        ):
            stream.close()
            temp.replace(path)

    def abandon(self) -> None:
        """Remove the temporary files (the report failed)."""
        self._batch.clear()
        for stream, temp in ((self._json, self._json_temp), (self._tsv, self._tsv_temp)):
            stream.close()
            temp.unlink(missing_ok=True)


class TaskFilesPart(_Batched):
    """Fragments of a report's per-task files (`TaskFiles.part`): the tasks' JSON objects,
    comma-separated, and their TSV rows. Opened by the first task written, so the process
    that made it (before a fork) holds no handle."""

    def __init__(self, json_path: Path, tsv_path: Path) -> None:
        self.json_path, self.tsv_path = json_path, tsv_path
        self._opened: tuple[TextIO, TextIO] | None = None
        super().__init__()

    def _streams(self) -> tuple[TextIO, TextIO]:
        if self._opened is None:
            self._opened = (_open(self.json_path), _open(self.tsv_path))
        return self._opened

    def close(self) -> None:
        """Write what is left and close the fragments."""
        self._write_batch()
        if self._opened is not None:
            for stream in self._opened:
                stream.close()


def _json_of(tasks: list[TaskReport]) -> str:
    """The tasks' JSON objects, comma-separated (one encoder call for them all)."""
    return _TASK_JSON.encode([task_json(t) for t in tasks])[1:-1]


def _tsv_of(tasks: list[TaskReport]) -> str:
    return "".join([tsv_row(t) + "\n" for t in tasks])


def _temp_path(path: Path, kind: str = "") -> Path:
    """A new empty private file beside ``path`` (hidden, ``.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{kind}." if kind else f".{path.name}."
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    os.fchmod(handle, PRIVATE_FILE_MODE)
    os.close(handle)
    return Path(name)


def _open(path: Path) -> TextIO:
    return path.open("w", encoding="utf-8", buffering=1 << 20)


def _open_temp(path: Path) -> tuple[TextIO, Path]:
    temp = _temp_path(path)
    return _open(temp), temp
