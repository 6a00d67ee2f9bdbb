"""Run progress for people: the ledger's counts (see ledger.py), never queue arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

from distributed_something.ledger import COUNT_COLUMNS, Ledger


@dataclass(frozen=True)
class Progress:
    """Where a run stands, by task state (each task in exactly one).

    ``failed`` counts tasks whose last attempt failed and that wait for a retry;
    ``duplicates`` tasks that were delivered twice at once or completed twice.
    """

    total: int
    done: int
    skipped: int
    running: int
    failed: int
    pending: int
    dead: int
    duplicates: int = 0
    #: records that could not be read (they are listed by `ds report`)
    corrupt: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.dead

    def counts(self) -> dict[str, int]:
        """The counts under the run report's names, in its order (`ledger.COUNT_COLUMNS`)."""
        return {name: getattr(self, name) for name in (*COUNT_COLUMNS, "duplicates")}


def measure(ledger: Ledger) -> Progress:
    """The `Progress` of a run from its ledger."""
    return from_counts(ledger.counts, len(ledger.corrupt))


def from_counts(c: dict[str, int], corrupt: int = 0) -> Progress:
    """The `Progress` of a run from the ledger's counts (`Ledger.counts`,
    `ledger.read_counts`) and how many records could not be read."""
    return Progress(
        total=c["total"],
        done=c["done"],
        skipped=c["skipped"],
        running=c["running"],
        failed=c["failed"],
        pending=c["pending"],
        dead=c["dead"],
        duplicates=c["duplicates"],
        corrupt=corrupt,
    )
