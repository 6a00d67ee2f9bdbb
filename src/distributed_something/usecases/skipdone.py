"""Submit-time check-if-done: which tasks are finished already, from one listing.

The family's workers checked each task after receiving it (one receive, one listing, one
delete per task). Here one paginated listing (of the done markers, or of the common output
root per bucket when the count rule is configured) decides for every task before anything is
sent, by the same rule as the worker's (`skip_reason`).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cache, partial

from distributed_something.config.model import CheckIfDoneConfig, Config
from distributed_something.interfaces.storage import ObjectInfo, Storage
from distributed_something.jobs.model import Task, TaskList
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Recipe
from distributed_something.records import RunRecords
from distributed_something.worker.policy import outputs_look_done, skip_reason


def common_root(prefixes: Iterable[str]) -> str:
    """The longest folder (ending in ``/``, or '') that contains every prefix."""
    items = list(prefixes)
    if not items:
        return ""
    shared = posixpath.commonprefix(items)
    return shared[: shared.rfind("/") + 1]


def outputs_by_prefix(
    objects: Iterable[ObjectInfo], prefixes: Iterable[str]
) -> dict[str, list[ObjectInfo]]:
    """The objects of one listing under each of ``prefixes`` (each ending in ``/``); an
    object under nested prefixes counts for each of them. Pure."""
    wanted = set(prefixes)
    under: dict[str, list[ObjectInfo]] = defaultdict(list)
    for obj in objects:
        # Walk the key's parent folders: one of them may be a task's output prefix.
        cut = obj.key.find("/")
        while cut != -1:
            head = obj.key[: cut + 1]
            if head in wanted:
                under[head].append(obj)
            cut = obj.key.find("/", cut + 1)
    return under


def done_by_outputs(
    objects: Iterable[ObjectInfo], prefixes: dict[str, list[str]], rule: CheckIfDoneConfig
) -> set[str]:
    """Task ids whose output prefix (keys of ``prefixes``, each ending in ``/``) holds
    objects that meet the rule. Pure: ``objects`` is one listing of the common root."""
    done: set[str] = set()
    for prefix, found in outputs_by_prefix(objects, prefixes).items():
        if outputs_look_done(found, rule):
            done.update(prefixes[prefix])
    return done


def finished_tasks(
    config: Config,
    recipe: Recipe | None,
    tasks: Sequence[Task],
    records: RunRecords,
    bucket: Callable[[str], Storage],
) -> dict[str, str]:
    """Task id → why it counts as done, for the tasks that are finished already.

    Each task is decided by `skip_reason` (the worker's rule), whatever ``enabled`` says:
    the caller decides whether to skip. With ``expected_number_files`` set, each task's
    outputs (its plan's output bucket, else the config's destination bucket) decide, from one
    listing per bucket; without a recipe the output prefixes are the image's business, so
    nothing counts as done then. Otherwise the done markers decide, from one listing of them.
    ``bucket(name)`` opens a bucket ('' = the main one).
    """
    rule = config.check_if_done.model_copy(update={"enabled": True})
    if rule.expected_number_files is not None and recipe is None:
        return {}
    prefix_of: dict[str, tuple[str, str]] = {}  # task id → (bucket name, output prefix)
    if rule.expected_number_files is not None and recipe is not None:
        for task in tasks:
            plan = recipe.plan(config, task, PLACEHOLDER_WORKDIR)
            name = plan.output_bucket or config.storage.destination_bucket
            prefix_of[task.id] = (name, plan.output_prefix.rstrip("/") + "/")

    @cache
    def marker_ids() -> frozenset[str]:
        # One listing of the done markers for all tasks, made on first use only.
        marker_dir = records.done_key("x")[: -len("x.json")]
        return frozenset(
            o.key[len(marker_dir) : -len(".json")]
            for o in records.storage.list(marker_dir)
            if o.key.endswith(".json")
        )

    @cache
    def outputs_in(name: str) -> dict[str, list[ObjectInfo]]:
        # One listing per bucket, of the folder holding every task's output prefix.
        prefixes = {prefix for bucket_name, prefix in prefix_of.values() if bucket_name == name}
        return outputs_by_prefix(bucket(name).list(common_root(prefixes)), prefixes)

    def has_marker(task_id: str) -> bool:
        return task_id in marker_ids()

    def outputs(name: str, prefix: str) -> list[ObjectInfo]:
        return outputs_in(name).get(prefix, [])

    done: dict[str, str] = {}
    # A compact job's ids without making its tasks (only ids are needed from here on).
    ids = tasks.ids() if isinstance(tasks, TaskList) else (task.id for task in tasks)
    if rule.expected_number_files is None:
        # What skip_reason decides without an expected number: the marker alone, here for a
        # million ids by one set lookup each.
        markers = marker_ids()
        reason = skip_reason(rule, has_marker=lambda: True, outputs=list, where="")
        return {task_id: str(reason) for task_id in ids if task_id in markers}
    for task_id in ids:
        name, prefix = prefix_of.get(task_id, ("", ""))
        reason = skip_reason(
            rule,
            has_marker=partial(has_marker, task_id),
            outputs=partial(outputs, name, prefix),
            where=prefix,
        )
        if reason is not None:
            done[task_id] = reason
    return done
