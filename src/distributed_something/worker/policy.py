"""The worker's decisions, as pure functions: is a task done already, how long to back off."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from distributed_something.config.model import CheckIfDoneConfig
from distributed_something.interfaces.storage import ObjectInfo


def skip_reason(
    rule: CheckIfDoneConfig,
    *,
    has_marker: Callable[[], bool],
    outputs: Callable[[], Iterable[ObjectInfo]],
    where: str,
) -> str | None:
    """Why a received (or about to be submitted) task counts as done already, or None to run it.

    The one check-if-done decision, used by the worker and by submit:

    - ``rule.enabled`` false: never skip.
    - ``rule.expected_number_files`` set: the family's count rule alone decides, over the
      objects ``outputs()`` lists under the task's output prefix ``where``
      (`outputs_look_done`). A done marker does not override it, so deleting outputs to
      force a rerun gets a rerun, as in the family.
    - otherwise: the task's done marker decides (``has_marker()``).

    ``has_marker`` and ``outputs`` are called only when the rule needs them (each costs a
    storage request), and at most once.
    """
    if not rule.enabled:
        return None
    if rule.expected_number_files is not None:
        if outputs_look_done(outputs(), rule):
            return f"outputs under {where} meet the check-if-done rule"
        return None
    return "done marker present" if has_marker() else None


def outputs_look_done(objects: Iterable[ObjectInfo], rule: CheckIfDoneConfig) -> bool:
    """The family's check-if-done rule over the objects under a task's output prefix.

    True when at least ``expected_number_files`` objects are ``min_file_size_bytes`` or larger
    and, when ``necessary_string`` is set, have it in their name. Without an expected number
    the rule never fires (the done marker alone decides). Consumes only as many objects as it
    needs, so a paginated listing stops early.
    """
    if rule.expected_number_files is None:
        return False
    found = 0
    for obj in objects:
        if obj.size < rule.min_file_size_bytes:
            continue
        if rule.necessary_string and rule.necessary_string not in obj.key.rsplit("/", 1)[-1]:
            continue
        found += 1
        if found >= rule.expected_number_files:
            return True
    return False


def retry_delay(
    receive_count: int,
    max_receive_count: int,
    *,
    base: float = 2.0,
    cap: float = 300.0,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds before a failed task is visible again.

    Exponential (``base * 2**(n-1)``, at most ``cap``) with up to 50 % random jitter so
    failures do not retry in lockstep. After the last allowed receive the delay is 0: the
    queue then dead-letters the task on the next receive instead of holding it back.
    """
    if receive_count >= max_receive_count:
        return 0.0
    delay = min(cap, base * 2.0 ** max(receive_count - 1, 0))
    return delay * (1.0 + 0.5 * jitter())


def heartbeat_interval(lease_seconds: float) -> float:
    """How often a busy worker extends its lease: a third of it, so two extensions can
    fail before the lease runs out."""
    return max(lease_seconds / 3.0, 0.2)
