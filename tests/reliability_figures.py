"""The figures of the reliability suite, and RELIABILITY.md written from them.

Each reliability test opens a `Scenario` (its setup and the assertion it makes), records what
it measured as it goes, and calls `Scenario.held` once every assertion passed. The
session-scoped `figures` fixture writes the report once, when the session ends, if at least
one scenario was recorded: to build/RELIABILITY.md (ignored by git), so `make test` never
rewrites a tracked file; `make reliability` writes the tracked RELIABILITY.md
(``DS_RELIABILITY_REPORT`` names the file). A scenario that was not run in that
session keeps its section from the previous file, so running one test does not erase the
figures of the others. The layout is fixed (scenario order, row order, number formats, no
dates), so the file only changes where a measured figure changed.

Test modules use the fixture by importing it:
``from reliability_figures import figures as figures``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The tracked report: the starting point of sections not run in a session.
TRACKED_REPORT = REPO / "RELIABILITY.md"
REPORT_PATH = Path(os.environ.get("DS_RELIABILITY_REPORT") or REPO / "build" / "RELIABILITY.md")

#: Scenario keys in the order their sections appear in the file.
ORDER = (
    "local-chaos",
    "moto-chaos",
    "bad-input",
    "bad-input-moto",
    "transient-faults",
    "lost-answers",
    "cleanup-crashes",
    "credentials",
    "key-escape",
    "shell-injection",
)

Value = int | float | str

HEADER = """\
# Reliability

What the reliability suite (`tests/test_reliability_*.py`, part of `make test`) does to `ds`,
and what it measured the last time each scenario ran. This file is written by `make reliability`
(`tests/reliability_figures.py`, at the end of a pytest session that ran these tests; `make
test` writes the same figures to build/RELIABILITY.md and leaves this file alone); do not
edit it by hand. Counts come from the run reports and from reading storage back; times are
wall-clock seconds on the machine that ran the suite (a 2-core VM when committed). Every
random choice (which tasks are poison, when a worker dies, whether a call fails) comes from a
fixed seed; timings and the interleaving of processes and threads still differ between runs,
so a choice may land on another worker or call and the counts move a little. To run the
suite alone: `make reliability`.
"""

_BLOCK = re.compile(r"<!-- scenario: (\S+) -->\n.*?<!-- /scenario: \1 -->\n", re.DOTALL)
_TITLE = re.compile(r"^## (.+)$", re.MULTILINE)
_RESULT = re.compile(r"^Result: \*\*(\w+)\*\*", re.MULTILINE)


def _cell(value: Value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass
class Scenario:
    """One reliability scenario: its setup, what was measured, what was asserted."""

    key: str
    title: str
    test: str
    assertion: str
    setup: dict[str, Value] = field(default_factory=dict)
    measured: dict[str, Value] = field(default_factory=dict)
    passed: bool = False

    def measure(self, name: str, value: Value) -> None:
        """Record (or replace) one measured figure; rows keep their first-recorded order."""
        self.measured[name] = value

    def held(self) -> None:
        """Every assertion of the scenario passed."""
        self.passed = True

    def markdown(self) -> str:
        """The scenario's section of RELIABILITY.md, between its markers."""
        lines = [
            f"<!-- scenario: {self.key} -->",
            f"## {self.title}",
            "",
            f"Test: `{self.test}`",
            "",
            "| setup | |",
            "|---|---|",
            *(f"| {name} | {_cell(value)} |" for name, value in self.setup.items()),
            "",
            "| measured | |",
            "|---|---|",
            *(f"| {name} | {_cell(value)} |" for name, value in self.measured.items()),
            "",
            f"Asserted: {self.assertion}",
            "",
            "Result: "
            + ("**held**" if self.passed else "**FAILED** (see the test output of that run)"),
            f"<!-- /scenario: {self.key} -->",
            "",
        ]
        return "\n".join(lines)


class Figures:
    """Collects scenarios during a session and writes them to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scenarios: dict[str, Scenario] = {}
        self._lock = threading.Lock()

    def scenario(
        self, key: str, title: str, *, test: str, assertion: str, setup: dict[str, Value]
    ) -> Scenario:
        """Open the scenario ``key`` (one of `ORDER`) for this session and return it."""
        if key not in ORDER:
            raise ValueError(f"unknown scenario {key!r}: add it to reliability_figures.ORDER")
        with self._lock:
            scenario = Scenario(key, title, test, assertion, dict(setup))
            self.scenarios[key] = scenario
            return scenario

    def render(self, previous: str = "") -> str:
        """The whole file: this session's scenarios, and the other sections of ``previous``."""
        kept = {m.group(1): m.group(0) for m in _BLOCK.finditer(previous)}
        sections = {**kept, **{k: s.markdown() for k, s in self.scenarios.items()}}
        keys = [k for k in ORDER if k in sections]
        summary = ["", "| scenario | result |", "|---|---|"]
        for key in keys:
            title = _TITLE.search(sections[key])
            result = _RESULT.search(sections[key])
            summary.append(
                f"| {title.group(1) if title else key} | {result.group(1) if result else '?'} |"
            )
        return HEADER + "\n".join(summary) + "\n" + "".join("\n" + sections[k] for k in keys)

    def write(self) -> None:
        """Write the file when something was recorded in this session."""
        if not self.scenarios:
            return
        source = self.path if self.path.is_file() else TRACKED_REPORT
        previous = source.read_text() if source.is_file() else ""
        text = self.render(previous)
        if text != previous or not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(text)


_collector = Figures(REPORT_PATH)
_users = [0]


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """The session's figures; RELIABILITY.md is written when the last user is torn down.

    Every module that imports this fixture gets its own session-scoped instance (pytest
    registers imported fixtures per module), so they share one collector and the last one
    torn down at the end of the session writes the file.
    """
    _users[0] += 1
    try:
        yield _collector
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _collector.write()
