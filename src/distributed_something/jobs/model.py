"""A task: one element of a job file's groups (or plates, or CSV rows) plus the shared keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JobFormat = Literal["ds", "dcp", "df", "dozc", "csv"]

#: SQS's message size limit; bodies above it are rejected at validation.
MAX_MESSAGE_BYTES = 1024 * 1024


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def task_id_of(body: Mapping[str, Any]) -> str:
    """A task's stable id: the first 20 hex digits of the sha256 of its canonical JSON."""
    return _hash(canonical_json(body))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Task:
    """One task.

    ``body`` is the queue message exactly as the family's run.py sent it and its workers read
    it: shared keys plus ``"group"`` (DS), ``"plate"`` (DOZC) or ``"Metadata"`` (DCP, DF);
    ``group_key`` names that key. ``id`` is ``task_id_of(body)``. Slots, not a ``__dict__``:
    a million tasks in memory at submit.
    """

    body: dict[str, Any]
    group_key: str = "group"
    id: str = field(default="")
    #: the canonical JSON made for the id, kept for the first `body_json` (parsing asks for
    #: it at once: a million tasks are not serialized twice)
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            text = canonical_json(self.body)
            object.__setattr__(self, "id", _hash(text))
            object.__setattr__(self, "_json", text)

    @property
    def group(self) -> Any:
        """The task's own element (group, plate or CSV row)."""
        return self.body.get(self.group_key)

    @property
    def fields(self) -> dict[str, Any]:
        """Template fields: the shared keys, then the group's keys (group wins), and the
        group itself under its key."""
        merged: dict[str, Any] = {k: v for k, v in self.body.items() if k != self.group_key}
        group = self.group
        merged[self.group_key] = group
        if isinstance(group, Mapping):
            merged.update(group)
        return merged

    def describe(self) -> str:
        """A short human label for messages and reports."""
        return canonical_json(self.group)[:120]

    def body_json(self) -> str:
        """The message body sent to the queue."""
        text = self._json
        if text is None:
            return canonical_json(self.body)
        object.__setattr__(self, "_json", None)
        return text

    @classmethod
    def from_body(cls, body_json: str) -> Task:
        """Rebuild a task from a queue message body (the worker side)."""
        body = json.loads(body_json)
        if not isinstance(body, dict):
            raise ValueError("a task message body must be a JSON object")
        for group_key in ("group", "plate", "Metadata"):
            if group_key in body:
                return cls(body=body, group_key=group_key)
        return cls(body=body)


@dataclass(frozen=True)
class Duplicate:
    """A group that repeats an earlier one (same task id); it is submitted once."""

    index: int
    first_index: int
    task_id: str


@dataclass(frozen=True)
class JobFile:
    """A parsed, validated job file: unique tasks in file order, and the duplicates dropped."""

    path: str
    format: JobFormat
    tasks: list[Task]
    duplicates: list[Duplicate]
