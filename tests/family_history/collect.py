"""Collect every distinct version of the family's config.py, job and fleet files.

Run from the repository root with the family's repositories cloned (bare or not) under one
folder: ``python tests/family_history/collect.py /work/.mirror``, where each repository is at
``<folder>/DistributedScience+<name>/repo``. It writes one file per distinct version (by git
blob) under ``tests/family_history/<name>/`` and ``index.json``, which lists them oldest first
with the commit and date that first had them, and copies each repository's LICENSE (BSD-style:
redistribution keeps the notice). tests/test_family_history.py reads what it wrote; this
script is kept so that the set can be brought up to date when the family's repositories move.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPOSITORIES = (
    "Distributed-CellProfiler",
    "Distributed-Fiji",
    "Distributed-OMEZarrCreator",
    "Distributed-Something",
)
WANTED = re.compile(r"(^|/)config\.py$|[Jj]ob[^/]*\.json$|[Ff]leet[^/]*\.json$")
HERE = Path(__file__).resolve().parent


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True, check=True
    ).stdout


def main(mirrors: Path) -> None:
    index = []
    for name in REPOSITORIES:
        git_dir = mirrors / f"DistributedScience+{name}" / "repo"
        (HERE / name).mkdir(exist_ok=True)
        (HERE / name / "LICENSE").write_text(git(git_dir, "show", "HEAD:LICENSE"))
        paths = sorted(
            {
                p
                for p in git(git_dir, "log", "--all", "--name-only", "--format=").split()
                if WANTED.search(p)
            }
        )
        for path in paths:
            seen: set[str] = set()
            commits = git(git_dir, "log", "--all", "--reverse", "--format=%H %cs", "--", path)
            for line in commits.splitlines():
                commit, date = line.split()
                try:
                    blob = git(git_dir, "rev-parse", "-q", "--verify", f"{commit}:{path}").strip()
                except subprocess.CalledProcessError:
                    continue  # the commit deleted it
                if blob in seen:
                    continue
                seen.add(blob)
                stored = f"{name}/{path.replace('/', '_')}.{len(seen):02d}_{commit[:10]}"
                (HERE / stored).write_bytes(
                    subprocess.run(
                        ["git", f"--git-dir={git_dir}", "cat-file", "-p", blob],
                        capture_output=True,
                        check=True,
                    ).stdout
                )
                index.append(
                    {"repo": name, "path": path, "commit": commit, "date": date, "file": stored}
                )
    (HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(index)} versions written to {HERE}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
