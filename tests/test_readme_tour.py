"""The README's tour, run literally: the ```sh blocks of its "A tour" section run one after
the other in one bash (`set -e`), as a reader types them into one terminal, from a copy of the
repository's examples, with `.venv` being this Python's environment, so the tour cannot rot.
The reference block (a plain ``` fence) is not run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tour_blocks(readme: str) -> list[str]:
    """The ```sh blocks between "## A tour" and the next "## " heading."""
    start = readme.index("\n## A tour")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else None]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def test_the_tour_has_blocks_that_use_plain_ds() -> None:
    blocks = tour_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 3
    assert blocks[0].lstrip().startswith(". .venv/bin/activate")
    assert any(line.startswith("ds ") for b in blocks for line in b.splitlines())


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file() or not (venv / "bin" / "ds").is_file():
        pytest.skip(f"{venv} is not a virtualenv with ds installed (make dev makes one)")
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".ds"))
    (tmp_path / ".venv").symlink_to(venv)
    env = {**os.environ, "COLUMNS": "80", "DS_PROGRESS_INTERVAL": "1"}
    script = "\n".join(tour_blocks((REPO / "README.md").read_text()))
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert "Traceback" not in result.stderr
    # What each block promised happened: six tasks done, then skipped, and argv printed.
    assert '"done": 6' in result.stdout or '"skipped": 6' in result.stdout
    assert "segment_nuclei.py" in result.stdout
