"""Submit-time check-if-done: which tasks are finished already, from two listings in all.

The family's workers checked each task after receiving it (one receive, one listing, one
delete per task). Here one paginated listing of the done markers and one of the common
output root decide for every task before anything is sent.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterable

from distributed_something.config.model import CheckIfDoneConfig, Config
from distributed_something.interfaces.storage import ObjectInfo, Storage
from distributed_something.jobs.model import Task
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Recipe
from distributed_something.records import RunRecords
from distributed_something.worker.policy import outputs_look_done


def common_root(prefixes: Iterable[str]) -> str:
    """The longest folder (ending in ``/``, or '') that contains every prefix."""
    items = list(prefixes)
    if not items:
        return ""
    shared = posixpath.commonprefix(items)
    return shared[: shared.rfind("/") + 1]


def done_by_outputs(
    objects: Iterable[ObjectInfo], prefixes: dict[str, list[str]], rule: CheckIfDoneConfig
) -> set[str]:
    """Task ids whose output prefix (keys of ``prefixes``, each ending in ``/``) holds
    objects that meet the rule. Pure: ``objects`` is one listing of the common root."""
    under: dict[str, list[ObjectInfo]] = defaultdict(list)
    for obj in objects:
        # Walk the key's parent folders: one of them may be a task's output prefix.
        cut = obj.key.find("/")
        while cut != -1:
            head = obj.key[: cut + 1]
            if head in prefixes:
                under[head].append(obj)
            cut = obj.key.find("/", cut + 1)
    done: set[str] = set()
    for prefix, found in under.items():
        if outputs_look_done(found, rule):
            done.update(prefixes[prefix])
    return done


def finished_tasks(
    config: Config,
    recipe: Recipe | None,
    tasks: list[Task],
    records: RunRecords,
    bucket: Callable[[str], Storage],
) -> dict[str, str]:
    """Task id → why it counts as done, for the tasks that are finished already.

    ``bucket(name)`` opens a bucket ('' = the main one); each task's outputs are looked for in
    its plan's output bucket, else the config's destination bucket: one listing per bucket.
    """
    ids = {t.id for t in tasks}
    marker_dir = records.done_key("x")[: -len("x.json")]
    found = {
        o.key[len(marker_dir) : -len(".json")]: "done marker present"
        for o in records.storage.list(marker_dir)
        if o.key.endswith(".json")
    }
    done = {tid: why for tid, why in found.items() if tid in ids}
    rule = config.check_if_done
    if rule.expected_number_files is None or recipe is None:
        return done  # without a recipe, output prefixes are the image's business
    by_bucket: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for task in tasks:
        if task.id not in done:
            plan = recipe.plan(config, task, PLACEHOLDER_WORKDIR)
            name = plan.output_bucket or config.storage.destination_bucket
            by_bucket[name][plan.output_prefix.rstrip("/") + "/"].append(task.id)
    for name, prefixes in by_bucket.items():
        listing = bucket(name).list(common_root(prefixes))
        for tid in done_by_outputs(listing, prefixes, rule):
            done[tid] = "outputs meet the check-if-done rule"
    return done
