"""A task's claim: one delivery of a task runs at a time where records are written, then
listed (S3).

A worker records its attempt's start and then looks at the task's attempts; another running
delivery makes it stand down (`Worker._begin_attempt`). On the local records the write and
the look are one SQLite transaction, so the first to record runs. On S3 they are two
requests: a delivery that started earlier but wrote later than another, which had looked
already, saw that one as the later start and ran too. So, after writing its open record, a
delivery also claims the task: it creates ``claims/<task>.json`` (naming its attempt and its
message) with S3's conditional write (``If-None-Match: *``), which exactly one writer wins.
A delivery that finds the claim taken reads it: when the holder's attempt is still running
and is another message's delivery, it stands down; when the holder ended (its claim left
behind), it takes the claim over, replacing it only if it is still the version it read
(``If-Match``). An earlier delivery of this same message is either a worker that vanished
(its lease ran out, so the message came back) or a worker still running it (SQS, a standard
queue, may deliver a message twice): the holder says it is alive in the claim
(``alive_at``, renewed at every lease extension, `renew`), and one alive within `live_for`
of a lease is stood down for, the message left as it is (deleting it would take it from the
running worker); an older one is taken over. The holder removes its claim when its attempt
ends. A storage without conditional writes has no claims
(`claim` says so); a claim contended past `CLAIM_TRIES` rounds is left undecided, and the
start-time rule decides as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from distributed_something.interfaces.storage import Storage, conditional_writes
from distributed_something.worker.policy import heartbeat_interval

log = logging.getLogger("ds.worker")

#: Rounds of create / read / take over before a claim is left undecided.
CLAIM_TRIES = 4


@dataclass(frozen=True)
class Holder:
    """Who holds a task's claim: an attempt (its key's stem) and its message, and when its
    worker last said it was running it (``alive_at``, by its clock; None in claims written
    before this was kept)."""

    stem: str
    message: str
    alive_at: float | None = None

    def to_bytes(self) -> bytes:
        found: dict[str, object] = {"stem": self.stem, "message": self.message}
        if self.alive_at is not None:
            found["alive_at"] = self.alive_at
        return json.dumps(found).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """None for what is not a claim (a damaged object: taken over)."""
        try:
            found = json.loads(data)
            alive = found.get("alive_at")
            return cls(
                str(found["stem"]),
                str(found["message"]),
                float(alive) if isinstance(alive, int | float) else None,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def same_attempt(self, other: Holder | None) -> bool:
        """Whether ``other`` names the same attempt (whenever it last said it was alive)."""
        return other is not None and (other.stem, other.message) == (self.stem, self.message)


def live_for(lease_seconds: float) -> float:
    """How recently a holder must have said it is alive to be taken for running: two of its
    heartbeat's intervals (`heartbeat_interval`, a third of the lease). A worker that
    vanished said so last at least a lease before its message came back. Pure."""
    return 2 * heartbeat_interval(lease_seconds)


def decide(
    holder: Holder | None,
    outcome: str | None,
    message: str,
    *,
    now: float | None = None,
    live_seconds: float | None = None,
) -> Literal["yield", "take"]:
    """What a delivery of ``message`` does at ``now`` about a claim held by ``holder`` whose
    attempt's record says ``outcome`` (None: no record of it). ``yield`` (stand down) when
    that attempt is still running and is another message's delivery, or this same
    message's whose holder said it was alive less than ``live_seconds`` ago (a message
    delivered twice); ``take`` (take the claim over) when it ended, has no record, is an
    earlier delivery of this same message not heard of since (its worker vanished), or the
    claim cannot be read. Pure."""
    if holder is None or outcome != "running":
        return "take"
    if holder.message != message:
        return "yield"
    alive = holder.alive_at
    if now is None or live_seconds is None or alive is None:
        return "take"
    return "yield" if now - alive < live_seconds else "take"


def holders_now(holder: Holder | None, age: float | None, now: float | None) -> float | None:
    """``now`` as `decide` should take it for a claim whose version is ``age`` seconds old
    by the storage's clock (`Tagged.age`): the holder's ``alive_at`` (written with that
    version) plus its age, so that how long ago it said it was alive is the storage's
    reckoning, whatever this machine's clock says; ``now`` where the age or the time is not
    known (and None for None: no liveness to judge). Pure."""
    if now is None or age is None or holder is None or holder.alive_at is None:
        return now
    return holder.alive_at + age


@dataclass(frozen=True)
class Claim:
    """What `claim` found: ``ours`` (run; ``tag`` is our claim's version, for `renew`), or
    the running ``holder`` to stand down for, or neither (no claims on this storage, or
    undecided: the start-time rule decides)."""

    ours: bool = False
    holder: Holder | None = None
    tag: str | None = None


def claim(
    storage: Storage,
    key: str,
    mine: Holder,
    outcome_of: Callable[[str], str | None],
    *,
    now: float | None = None,
    live_seconds: float | None = None,
) -> Claim:
    """Claim the task whose claim object is ``key`` for ``mine`` (see the module's
    docstring); ``outcome_of(stem)`` reads the outcome of the attempt with that stem from a
    fresh listing (None: no record); ``now`` and ``live_seconds`` as `decide` takes them.
    Errors of the storage pass through."""
    writes = conditional_writes(storage)
    if writes is None:
        return Claim()
    data = mine.to_bytes()
    for _ in range(CLAIM_TRIES):
        made = writes.put_new(key, data)
        if made is not None:
            return Claim(ours=True, tag=made)
        try:
            current = writes.get_tagged(key)
        except KeyError:
            continue  # removed by its holder meanwhile: create it again
        holder = Holder.from_bytes(current.data)
        outcome = None if holder is None else outcome_of(holder.stem)
        at = holders_now(holder, current.age, now)
        verdict = decide(holder, outcome, mine.message, now=at, live_seconds=live_seconds)
        if verdict == "yield":
            return Claim(holder=holder)
        taken = writes.put_tagged(key, data, current.tag)
        if taken is not None:
            return Claim(ours=True, tag=taken)
    log.warning("the claim %s stayed contended: the start times decide", key)
    return Claim()


def renew(storage: Storage, key: str, mine: Holder, tag: str, now: float) -> str | None:
    """Say in the claim ``key`` that ``mine`` is alive at ``now``, if it still holds the
    version ``tag``; the new version, or None when another delivery took it over."""
    writes = conditional_writes(storage)
    if writes is None:
        return None
    return writes.put_tagged(key, Holder(mine.stem, mine.message, now).to_bytes(), tag)


def release(storage: Storage, key: str, mine: Holder) -> None:
    """Remove the claim ``key`` if ``mine`` still holds it (another delivery may have taken it
    over since). A claim left behind is taken over by the next delivery (its attempt ended)."""
    writes = conditional_writes(storage)
    if writes is None:
        return
    try:
        current = writes.get_tagged(key)
    except KeyError:
        return
    if mine.same_attempt(Holder.from_bytes(current.data)):
        storage.delete(key)
