"""The worker's decisions, as pure functions: is a task done already, how long to back off,
what a failed attempt's cause means for its task."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from distributed_something.config.model import CheckIfDoneConfig, RetryConfig
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.worker.causes import FREE_CAUSES


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


#: The longest lease a worker takes on a task (seconds), whatever ``queue.visibility`` says.
MAX_LEASE_SECONDS = 600.0


def lease_seconds(visibility: float) -> float:
    """The lease a worker takes on each task it receives: ``queue.visibility``, at most
    `MAX_LEASE_SECONDS`. Pure.

    The worker extends its lease while the command runs (`heartbeat_interval`), so the lease
    only says how soon a task comes back after its worker vanished without handing it back
    (a container killed for its memory, a machine lost). The family's configs set
    ``SQS_MESSAGE_VISIBILITY`` longer than a task because their workers never extend it
    (hours, for CellProfiler); taken as the lease, a vanished worker's task would stay
    hidden that long. Ten minutes still leaves two extensions (every 200 s) to fail before a
    running task's lease runs out. The queue's own visibility stays the config's: a family
    image's own worker, which does not extend, relies on it."""
    return min(float(visibility), MAX_LEASE_SECONDS)


def heartbeat_interval(lease_seconds: float) -> float:
    """How often a busy worker extends its lease: a third of it, so two extensions can
    fail before the lease runs out."""
    return max(lease_seconds / 3.0, 0.2)


#: Whether a cause is retried when `queue.retry.retry_on` does not say (docs/configuration.md
#: shows this table): what cannot succeed on a retry is not.
DEFAULT_RETRY_ON: Mapping[str, bool] = {
    "exit": True,
    "signal": True,
    "timeout": True,
    "memory": True,
    "not_found": False,
    "upload": True,
    "tool": True,
}

RetryAction = Literal["retry", "release", "resend", "dead_letter", "dead"]


@dataclass(frozen=True)
class RetryDecision:
    """What becomes of the message of an attempt that failed or was handed back.

    ``action``:

    - ``retry``: hand it back with a backoff (`retry_delay`);
    - ``release``: hand it back at once (an interruption: the task did nothing wrong);
    - ``resend``: the queue's receive count is spent (the next receive would dead-letter
      it; SQS cannot reset it) although the task has retries left: send the task again as a
      fresh message, then delete this one (exactly one message stays);
    - ``dead_letter``: the last allowed attempt failed and the queue will dead-letter the
      message at its next receive: hand it back at once (it lands in the dead letters with
      its last error);
    - ``dead``: no retry: delete the message (the ledger records the attempt as dead; a
      redrive re-sends the task from the run's manifest).

    ``outcome`` is the attempt record's outcome (``failed``, ``dead`` or ``released``);
    ``counted`` says whether the attempt used up one of ``queue.job_retries``.
    """

    action: RetryAction
    outcome: str
    counted: bool


def retryable(cause: str, exit_code: int | None, rule: RetryConfig) -> bool:
    """Whether a failure of this cause (and exit code) may succeed on a retry, by
    ``rule`` (`queue.retry`) over `DEFAULT_RETRY_ON`. Free causes always are."""
    if cause in FREE_CAUSES:
        return True
    if exit_code is not None and exit_code in rule.never_retry_exit_codes:
        return False
    for name, retry in rule.retry_on.items():
        if name == cause:
            return retry
    return DEFAULT_RETRY_ON.get(cause, True)


def retry_decision(
    cause: str,
    exit_code: int | None,
    rule: RetryConfig,
    *,
    used: int,
    receive_count: int,
    max_attempts: int,
    permanent: bool = False,
) -> RetryDecision:
    """What to do with an attempt's message after it ended with ``cause``.

    ``used`` counts the task's earlier attempts that used up a retry (`retries_used`);
    ``receive_count`` is this message's receive count and ``max_attempts`` the queue's
    ``max_receive_count`` (= ``queue.job_retries``). ``permanent``: the worker knows no retry
    can help (an output no storage can take), whatever the rule says.

    - ``interrupted`` / ``lost``: never counted; released at once, or re-sent when the
      receive count is spent.
    - not retryable (``permanent``, `retryable` false): dead now.
    - this was the last allowed attempt (``used + 1 >= max_attempts``): dead — handed back
      to be dead-lettered by the queue when the receive count is spent too, else deleted.
    - otherwise retried with a backoff, or re-sent when the receive count is spent (free
      attempts before it did not use retries, but did use receives).
    """
    if cause in FREE_CAUSES and not permanent:
        if receive_count >= max_attempts:
            return RetryDecision("resend", "released", counted=False)
        return RetryDecision("release", "released", counted=False)
    if permanent or not retryable(cause, exit_code, rule):
        return RetryDecision("dead", "dead", counted=True)
    if used + 1 >= max_attempts:
        if receive_count >= max_attempts:
            return RetryDecision("dead_letter", "dead", counted=True)
        return RetryDecision("dead", "dead", counted=True)
    if receive_count >= max_attempts:
        return RetryDecision("resend", "failed", counted=True)
    return RetryDecision("retry", "failed", counted=True)


def retries_used(attempts: Iterable[tuple[int, str]]) -> int:
    """How many retries a task has used up in its run, from its attempt records' (start
    time, outcome) pairs in any order, with its redrives as (time, ``"redrive"``): the
    ``failed`` attempts after its latest ``dead`` one or redrive (a redrive starts the count
    again, also of a task dead-lettered without a dead attempt: its worker vanished on the
    last receive). Attempts handed back, lost, still running or standing down as duplicates
    do not count."""
    used = 0
    for _, outcome in sorted(attempts):
        if outcome in ("dead", "redrive"):
            used = 0
        elif outcome == "failed":
            used += 1
    return used
