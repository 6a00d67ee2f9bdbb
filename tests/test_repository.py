"""The checkout itself: no merge left half-done in any tracked file."""

from __future__ import annotations

import subprocess

from conftest import REPO

MARKERS = ("<<<<<<< ", ">>>>>>> ")


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def test_no_tracked_file_holds_merge_conflict_markers() -> None:
    files = tracked_files()
    assert "Makefile" in files and "pyproject.toml" in files  # the listing works
    found = []
    for name in files:
        path = REPO / name
        if not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue  # binary data
        found += [f"{name}:{n}" for n, line in enumerate(lines, 1) if line.startswith(MARKERS)]
    assert found == [], f"merge conflict markers: {found}"
