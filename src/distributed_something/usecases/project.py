"""Finding and loading a project's config, as the original run.py did (current folder)."""

from __future__ import annotations

from pathlib import Path

from distributed_something.config.loader import find_config, load_config
from distributed_something.project import Project


def open_project(config_path: Path | None = None, folder: Path | None = None) -> Project:
    """Load ``config_path``, or the ds.toml / config.py of ``folder`` (default: cwd)."""
    path = config_path if config_path is not None else find_config(folder or Path.cwd())
    return Project(config=load_config(path), config_path=path.resolve())
