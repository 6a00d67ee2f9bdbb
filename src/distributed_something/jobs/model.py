"""A task: one element of a job file's groups (or plates, or CSV rows) plus the shared keys."""

from __future__ import annotations

import hashlib
import json
import json.encoder
import json.scanner
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Literal, overload

JobFormat = Literal["ds", "dcp", "df", "dozc", "csv"]

#: SQS's message size limit (a queue's largest MaximumMessageSize), which counts the body
#: and its message attributes together.
SQS_MESSAGE_BYTES = 1024 * 1024
#: Room for the one attribute each task message carries on SQS (its name, its type and its
#: value count: "ds-task-id", "String" and the task id).
MESSAGE_ATTRIBUTE_BYTES = 64
#: The largest task message body; bodies above it are rejected at validation.
MAX_MESSAGE_BYTES = SQS_MESSAGE_BYTES - MESSAGE_ATTRIBUTE_BYTES


# Parses a group's canonical JSON: the scanner itself, without json.loads's checks per call.
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]

# One encoder for every call: json.dumps with options builds a new encoder each time, and
# JSONEncoder.encode a new C encoder each time, which cost more than the encoding of a small
# group (a million task ids at validate). No circular-reference markers: values come from
# JSON, and a shared markers dict would make threads encoding one object at once fail.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _c_encoder(sort_keys: bool) -> Any:
    if json.encoder.c_make_encoder is None:  # type: ignore[attr-defined]
        return None
    return json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _ENCODER.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        sort_keys,
        False,
        True,
    )


_C_ENCODE = _c_encoder(True)
_C_ENCODE_AS_IS = _c_encoder(False)
_AS_IS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: A string's JSON text as the encoders above write it (ensure_ascii off).
_STRING_JSON = json.encoder.encode_basestring


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def compact_json(value: Any) -> str:
    """The JSON text of a value as `canonical_json`, but with keys in their own order (as
    the job file has them: a DCP group's Metadata pairs are used in that order)."""
    if _C_ENCODE_AS_IS is None:
        return _AS_IS.encode(value)
    return "".join(_C_ENCODE_AS_IS(value, 0))


def json_texts(value: Any) -> tuple[str, str]:
    """``(compact_json(value), canonical_json(value))``, the same object when they are equal
    (keys already in order at every level), so keeping both costs nothing then."""
    if type(value) is str:  # a DCP group's Metadata: the string's JSON, no encoder needed
        kept = _STRING_JSON(value)
        return kept, kept
    kept = compact_json(value)
    if type(value) is not dict and type(value) is not list:
        return kept, kept  # no keys to order
    canonical = canonical_json(value)
    return kept, (kept if canonical == kept else canonical)


def task_id_of(body: Mapping[str, Any]) -> str:
    """A task's stable id: the first 20 hex digits of the sha256 of its canonical JSON."""
    return _hash(canonical_json(body))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


#: Characters of a task id (`task_id_of`).
ID_CHARS = 20


def body_frame(
    shared: Mapping[str, Any], group_key: str, *, as_is: bool = False
) -> tuple[str, str]:
    """``(head, tail)`` such that ``head + canonical_json(group) + tail`` is
    ``canonical_json({**shared, group_key: group})`` for every group: the shared keys are
    encoded once per job, not once per task (``shared`` must not hold ``group_key``).

    Canonical JSON sorts the top-level keys, so the group's place among them is fixed.
    ``as_is``: the shared values' own keys keep their order (`compact_json`), as in the
    message sent to the queue (`message_json`).
    """
    keys = sorted(shared)
    before = [k for k in keys if k < group_key]
    after = [k for k in keys if k > group_key]
    encode = compact_json if as_is else canonical_json

    def items(names: list[str]) -> str:
        return ",".join(f"{canonical_json(k)}:{encode(shared[k])}" for k in names)

    head = "{" + (items(before) + "," if before else "") + canonical_json(group_key) + ":"
    tail = ("," + items(after) if after else "") + "}"
    return head, tail


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
        """The message body sent to the queue: the top-level keys sorted, every object below
        them with its keys in the job file's order, as the family's run.py sent them (its
        workers and ds's recipes use a group's pairs in that order). The id does not depend
        on that order (`task_id_of`)."""
        text = self._json
        object.__setattr__(self, "_json", None)
        if self.group_key not in self.body:
            return text if text is not None else canonical_json(self.body)
        shared = {k: v for k, v in self.body.items() if k != self.group_key}
        head, tail = body_frame(shared, self.group_key, as_is=True)
        return head + compact_json(self.group) + tail

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


class TaskList(Sequence[Task]):
    """A job's unique tasks, kept compactly: the shared keys once, each group as its canonical
    JSON text and the ids packed in one bytes object (a million tasks in about 100 MB instead
    of a gigabyte of `Task` objects). A `Task` is made when one is asked for.

    The fast accessors (`id_at`, `group_json`, `body_json_at`, `ids`) read the compact form
    without making tasks or parsing groups.
    """

    __slots__ = ("_frame", "_groups", "_ids", "_unsorted", "group_key", "shared")

    def __init__(
        self,
        shared: dict[str, Any],
        group_key: str,
        groups: list[str],
        ids: bytes,
        unsorted: bytearray | None = None,
    ) -> None:
        """``groups``: each element's `compact_json` (its keys in the file's order); ``ids``
        the tasks' ids, concatenated; ``unsorted[i]`` true when ``groups[i]`` is not also
        its `canonical_json` (None: all are)."""
        if len(ids) != ID_CHARS * len(groups):
            raise ValueError("one id of 20 characters is needed per group")
        if unsorted is not None and len(unsorted) != len(groups):
            raise ValueError("one flag is needed per group")
        self.shared = shared
        self.group_key = group_key
        self._groups = groups
        self._ids = ids
        self._unsorted = unsorted if unsorted is not None and any(unsorted) else None
        #: the message's text around each group (`Task.body_json`)
        self._frame = body_frame(shared, group_key, as_is=True)

    def __len__(self) -> int:
        return len(self._groups)

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            return [self._task(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("task index out of range")
        return self._task(index)

    def __iter__(self) -> Iterator[Task]:
        return (self._task(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _task(self, index: int) -> Task:
        body = {**self.shared, self.group_key: self.group(index)}
        return Task(body=body, group_key=self.group_key, id=self.id_at(index))

    def id_at(self, index: int) -> str:
        """The id of task ``index``."""
        start = index * ID_CHARS
        return self._ids[start : start + ID_CHARS].decode("ascii")

    def ids(self) -> Iterator[str]:
        """Every task's id, in order."""
        text = self._ids.decode("ascii")
        return (text[i : i + ID_CHARS] for i in range(0, len(text), ID_CHARS))

    def without(self, ids: Set[str]) -> TaskList:
        """The tasks whose ids are not in ``ids``, in order (sharing this list's texts)."""
        kept = [i for i, task_id in enumerate(self.ids()) if task_id not in ids]
        if len(kept) == len(self):
            return self
        groups = [self._groups[i] for i in kept]
        packed = b"".join(self._ids[i * ID_CHARS : (i + 1) * ID_CHARS] for i in kept)
        flags = self._unsorted
        unsorted = bytearray(flags[i] for i in kept) if flags is not None else None
        return TaskList(self.shared, self.group_key, groups, packed, unsorted)

    def group(self, index: int) -> Any:
        """Task ``index``'s own element (a fresh object each call)."""
        return _SCAN(self._groups[index], 0)[0]

    def groups(self) -> Iterator[Any]:
        """Every task's element, in order (a fresh object each)."""
        scan = _SCAN
        return (scan(text, 0)[0] for text in self._groups)

    def group_json(self, index: int) -> str:
        """The JSON of task ``index``'s element, its keys in the file's order."""
        return self._groups[index]

    def body_json_at(self, index: int) -> str:
        """Task ``index``'s message body (`Task.body_json`), without making the task."""
        head, tail = self._frame
        return head + self._groups[index] + tail


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
    tasks: TaskList
    duplicates: list[Duplicate]
