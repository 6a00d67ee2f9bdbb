"""Output prefixes: every task writes into its own folder, never into the records area.

docs/design.md §6: outputs never land in the records area (``_ds/``) and no two tasks share
an output prefix. A prefix shared by two tasks lets the second overwrite the first, and a prefix
that contains another task's (``results`` above ``results/a``) makes check-if-done count the other
task's files; a prefix under ``_ds/`` can forge done markers and records. These checks run on
the prefixes the recipe planned, at `ds validate` / `ds submit` (`check_job`), before anything
is created; the worker checks the records area again at upload (`in_records_area`).

Everything here is pure and, for a job of n tasks, takes O(n log n) time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from distributed_something.errors import InputError
from distributed_something.jobs.model import JobFile
from distributed_something.keys import MAX_NAME_BYTES, RESERVED_NAME_PREFIX, storable_key_problem
from distributed_something.records import META_ROOT

__all__ = [
    "OutputClash",
    "clash_error",
    "element_position",
    "element_positions",
    "find_clash",
    "find_clash_in_keys",
    "in_records_area",
    "list_key_of",
    "output_key",
    "prefix_problem",
]

_LIST_KEYS = {"dozc": "plates", "csv": "rows"}


def in_records_area(key: str) -> bool:
    """Whether the storage key or prefix ``key`` lies in the records area: its first
    ``/``-separated name is ``_ds``. Refused in every bucket, not only the main one (where the
    records live): a run's buckets may be one bucket under other names."""
    return key.split("/", 1)[0] == META_ROOT


def prefix_problem(prefix: str) -> str | None:
    """What makes ``prefix`` unusable as one task's output prefix, or None when it is fine.

    Refused: the empty prefix (the bucket's root), a prefix with an empty name (``a//b``, a
    leading or trailing ``/`` — what a template field rendering to ``""`` leaves), and a
    prefix in the records area (`in_records_area`), and one no storage can hold
    (`storable_key_problem`: a reserved name, a name over 255 bytes).
    """
    if prefix == "":
        return "is empty, so the task's outputs would land at the bucket's root among all others"
    if "//" in prefix or prefix[0] == "/" or prefix[-1] == "/":  # an empty name
        return (
            "has an empty name ('//' or a leading or trailing '/'), as when a template field "
            "renders to an empty value"
        )
    if prefix.startswith(META_ROOT) and in_records_area(prefix):
        return (
            f"lies under {META_ROOT}/, the records area (done markers, logs, run state): outputs "
            "there could forge or overwrite the run's records"
        )
    # What every storage can hold (a reserved name, a name over 255 bytes): the outputs
    # would be refused after the command ran. A short prefix without the reserved name
    # cannot break either rule (4 bytes a character at most): most skip the look.
    if RESERVED_NAME_PREFIX in prefix or len(prefix) > MAX_NAME_BYTES // 4:
        return storable_key_problem(prefix)
    return None


def list_key_of(job: JobFile) -> str:
    """The name of the job file's list of elements: ``plates`` (DOZC), ``rows`` (CSV) or
    ``groups``, as parse errors name them."""
    return _LIST_KEYS.get(job.format, "groups")


def element_positions(job: JobFile) -> list[int]:
    """For each of ``job.tasks``, its 0-based position among the file's elements (duplicates,
    which were dropped, still count)."""
    dropped = {dup.index for dup in job.duplicates}
    positions = (i for i in range(len(job.tasks) + len(dropped)) if i not in dropped)
    return list(positions)


def element_position(job: JobFile, index: int) -> int:
    """``element_positions(job)[index]``, without a list of every task's."""
    position = index
    for dup in sorted(d.index for d in job.duplicates):
        if dup <= position:
            position += 1
    return position


@dataclass(frozen=True)
class OutputClash:
    """Two tasks (indexes into ``JobFile.tasks``, ``first < second``) whose output prefixes
    in ``bucket`` are equal, or of which ``outer``'s contains ``inner``'s."""

    bucket: str
    first: int
    second: int
    outer: int
    inner: int
    equal: bool


def find_clash(
    outputs: Sequence[tuple[str, str]], *, allow_equal: bool = False
) -> OutputClash | None:
    """A pair of tasks whose output folders overlap in one bucket, or None.

    ``outputs[i]`` is ``(bucket, prefix)`` of task i (prefixes checked by `prefix_problem`).
    Two prefixes overlap when they are equal or one is a parent folder of the other
    (``res`` and ``res/a``; not ``res`` and ``resb``). With ``allow_equal``, equal prefixes
    are accepted (a family format that puts several tasks in one folder on purpose) and only
    strict nesting is a clash. Deterministic: the clash whose folders sort first.

    O(n log n): with a trailing ``/`` on each prefix, every folder under a prefix sorts in one
    run right after it, so a prefix contains some other iff it contains its sorted neighbour.
    """
    return find_clash_in_keys(
        [output_key(bucket, prefix) for bucket, prefix in outputs], allow_equal=allow_equal
    )


def output_key(bucket: str, prefix: str) -> str:
    """The text `find_clash_in_keys` compares for a task writing under ``prefix`` in
    ``bucket``: "bucket NUL prefix/". No bucket name holds a NUL, so keys of different
    buckets never start one another."""
    return f"{bucket}\x00{prefix}/"


def find_clash_in_keys(keys: Sequence[str], *, allow_equal: bool = False) -> OutputClash | None:
    """`find_clash` of the tasks whose `output_key` s are ``keys`` (in task order): one
    string per task, and a sorted copy of them, are all it holds (a million tasks' tuples and
    indexes took hundreds of MB)."""
    ordered = sorted(keys)
    for rank, (outer_key, inner_key) in enumerate(pairwise(ordered)):
        if not inner_key.startswith(outer_key):
            continue
        equal = inner_key == outer_key
        if equal and allow_equal:
            continue
        # Which tasks: a stable sort keeps equal keys in task order, so the k-th of a run of
        # equal keys is the k-th task with that key.
        outer = _nth_index(keys, outer_key, rank - bisect_left(ordered, outer_key))
        inner = _nth_index(keys, inner_key, rank + 1 - bisect_left(ordered, inner_key))
        bucket = outer_key.split("\x00", 1)[0]
        return OutputClash(bucket, min(outer, inner), max(outer, inner), outer, inner, equal)
    return None


def _nth_index(keys: Sequence[str], key: str, nth: int) -> int:
    """The index of the ``nth`` (0-based) occurrence of ``key`` in ``keys``."""
    seen = -1
    for index, candidate in enumerate(keys):
        if candidate == key:
            seen += 1
            if seen == nth:
                return index
    raise ValueError(f"{key!r} is not in the keys {nth + 1} times")


def clash_error(
    job: JobFile, clash: OutputClash, outputs: Sequence[tuple[str, str]], *, source: str
) -> InputError:
    """The `InputError` for ``clash`` that names both groups (position and value), the
    prefixes, the bucket and the fix; ``source`` names the job file."""
    list_key = list_key_of(job)

    def label(index: int) -> str:
        return f"{list_key}[{element_position(job, index)}] {job.tasks[index].describe()}"

    bucket = f"bucket {clash.bucket!r}" if clash.bucket else "the main bucket"
    if clash.equal:
        problem = (
            f"{label(clash.first)} and {label(clash.second)} both write their outputs under "
            f"{outputs[clash.first][1]!r} in {bucket}, so one would overwrite the other"
        )
    else:
        problem = (
            f"{label(clash.inner)} writes under {outputs[clash.inner][1]!r}, inside "
            f"{outputs[clash.outer][1]!r} where {label(clash.outer)} writes, in {bucket}: "
            "check-if-done and cleanup of the outer task would see the inner one's files"
        )
    return InputError(
        source,
        f"{list_key}[{element_position(job, clash.first)}]",
        problem,
        "give every group its own output folder: make the groups' values differ where the "
        "output prefix uses them, or put more fields (or {task_id}) in the output prefix "
        "template, so that no two tasks render the same folder or one inside another",
    )
