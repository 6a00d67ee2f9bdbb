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
import tempfile
from pathlib import Path
from typing import IO, Any

from distributed_something.atomicfile import PRIVATE_FILE_MODE
from distributed_something.report.build import RunReport, TaskReport, task_json
from distributed_something.report.html import TSV_COLUMNS, tsv_row

#: One encoder for every task (json.dumps with options makes one per call).
_TASK_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
#: Tasks encoded and written together: one encoder call per batch, not per task.
_BATCH = 500


class TaskFiles:
    """Streams a report's tasks to ``<stem>.json`` and ``<stem>.tsv`` (see the module)."""

    def __init__(self, json_path: Path, tsv_path: Path) -> None:
        self.json_path, self.tsv_path = json_path, tsv_path
        self._json, self._json_temp = _open_temp(json_path)
        self._tsv, self._tsv_temp = _open_temp(tsv_path)
        self._json.write('{"tasks":[')
        self._tsv.write("\t".join(TSV_COLUMNS) + "\n")
        self._first = True
        self._batch: list[TaskReport] = []

    def add(self, task: TaskReport) -> None:
        """One task's JSON object and TSV row (written with the next batch)."""
        self._batch.append(task)
        if len(self._batch) >= _BATCH:
            self._write_batch()

    def _write_batch(self) -> None:
        if not self._batch:
            return
        text = _TASK_JSON.encode([task_json(t) for t in self._batch])[1:-1]
        self._json.write(text if self._first else "," + text)
        self._first = False
        self._tsv.write("".join([tsv_row(t) + "\n" for t in self._batch]))
        self._batch.clear()

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


def _open_temp(path: Path) -> tuple[IO[Any], Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, PRIVATE_FILE_MODE)
    return os.fdopen(handle, "w", encoding="utf-8", buffering=1 << 20), Path(name)
