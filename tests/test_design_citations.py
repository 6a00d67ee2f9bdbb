"""Docstrings and comments cite the design as "docs/design.md §N": every cited section
exists there, and no citation names the old, absent "DESIGN" document."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"docs/design\.md §(\d+)")
SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)


def cited() -> dict[str, list[str]]:
    """Section number → the files citing it, over src/, tests/ and bench/."""
    found: dict[str, list[str]] = {}
    for folder in ("src", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number in CITATION.findall(path.read_text(encoding="utf-8")):
                found.setdefault(number, []).append(str(path.relative_to(ROOT)))
    return found


def test_cited_sections_exist() -> None:
    sections = set(SECTION.findall((ROOT / "docs" / "design.md").read_text(encoding="utf-8")))
    citations = cited()
    assert citations, "no citation found: the pattern no longer matches the code's"
    missing = {n: files for n, files in citations.items() if n not in sections}
    assert missing == {}


def test_no_citation_of_the_absent_design_document() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for folder in ("src", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "DESIGN §" in path.read_text(encoding="utf-8")
    ]
    assert stale == []
