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
behind), or is an earlier delivery of this same message (its worker vanished), it takes the
claim over, replacing it only if it is still the version it read (``If-Match``). The holder
removes its claim when its attempt ends. A storage without conditional writes has no claims
(`claim` says so); a claim contended past `CLAIM_TRIES` rounds is left undecided, and the
start-time rule decides as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from distributed_something.interfaces.storage import Storage

log = logging.getLogger("ds.worker")

#: Rounds of create / read / take over before a claim is left undecided.
CLAIM_TRIES = 4


@dataclass(frozen=True)
class Holder:
    """Who holds a task's claim: an attempt (its key's stem) and its message."""

    stem: str
    message: str

    def to_bytes(self) -> bytes:
        return json.dumps({"stem": self.stem, "message": self.message}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """None for what is not a claim (a damaged object: taken over)."""
        try:
            found = json.loads(data)
            return cls(str(found["stem"]), str(found["message"]))
        except (ValueError, TypeError, KeyError):
            return None


def decide(holder: Holder | None, outcome: str | None, message: str) -> Literal["yield", "take"]:
    """What a delivery of ``message`` does about a claim held by ``holder`` whose attempt's
    record says ``outcome`` (None: no record of it). ``yield`` (stand down) when that attempt
    is still running and is another message's delivery; ``take`` (take the claim over) when
    it ended, has no record, is an earlier delivery of this same message (whose worker
    vanished), or the claim cannot be read. Pure."""
    if holder is not None and outcome == "running" and holder.message != message:
        return "yield"
    return "take"


@dataclass(frozen=True)
class Claim:
    """What `claim` found: ``ours`` (run), or the running ``holder`` to stand down for, or
    neither (no claims on this storage, or undecided: the start-time rule decides)."""

    ours: bool = False
    holder: Holder | None = None


def claim(
    storage: Storage, key: str, mine: Holder, outcome_of: Callable[[str], str | None]
) -> Claim:
    """Claim the task whose claim object is ``key`` for ``mine`` (see the module's
    docstring); ``outcome_of(stem)`` reads the outcome of the attempt with that stem from a
    fresh listing (None: no record). Errors of the storage pass through."""
    put_new = getattr(storage, "put_new", None)
    get_tagged = getattr(storage, "get_tagged", None)
    put_tagged = getattr(storage, "put_tagged", None)
    if put_new is None or get_tagged is None or put_tagged is None:
        return Claim()
    data = mine.to_bytes()
    for _ in range(CLAIM_TRIES):
        if put_new(key, data) is not None:
            return Claim(ours=True)
        try:
            current, tag = get_tagged(key)
        except KeyError:
            continue  # removed by its holder meanwhile: create it again
        holder = Holder.from_bytes(current)
        outcome = None if holder is None else outcome_of(holder.stem)
        if decide(holder, outcome, mine.message) == "yield":
            return Claim(holder=holder)
        if put_tagged(key, data, tag) is not None:
            return Claim(ours=True)
    log.warning("the claim %s stayed contended: the start times decide", key)
    return Claim()


def release(storage: Storage, key: str, mine: Holder) -> None:
    """Remove the claim ``key`` if ``mine`` still holds it (another delivery may have taken it
    over since). A claim left behind is taken over by the next delivery (its attempt ended)."""
    get_tagged = getattr(storage, "get_tagged", None)
    if get_tagged is None:
        return
    try:
        current, _ = get_tagged(key)
    except KeyError:
        return
    if Holder.from_bytes(current) == mine:
        storage.delete(key)
