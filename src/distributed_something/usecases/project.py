"""Finding and loading a project's config, as the original run.py did (current folder).

This is the one place a project is opened, so the two things that may change a config
without editing it happen here: the backend switch (``--backend`` / ``DS_BACKEND``) and,
for a legacy ``config.py`` that names no ``RECIPE``, the recipe its files imply.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from distributed_something.backends import NAMES, backend_kind
from distributed_something.config.legacy import recipe_from_image
from distributed_something.config.loader import find_config, load_config
from distributed_something.errors import InputError
from distributed_something.image_names import ds_worker_image
from distributed_something.jobs.parse import load_job_file
from distributed_something.project import Project
from distributed_something.state import load_state

#: The environment variable that overrides the config's backend (``--backend`` sets it too,
#: so the worker processes a command starts use the same backend).
BACKEND_ENV = "DS_BACKEND"
BACKENDS = NAMES

#: The recipe each family job format is written for.
RECIPE_OF_FORMAT = {"dcp": "cellprofiler", "df": "fiji", "dozc": "omezarr"}

# A job file this large is not parsed just to guess a recipe (commands like `ds status`
# would pay for it every time).
_MAX_GUESS_BYTES = 8_000_000


def open_project(
    config_path: Path | None = None,
    folder: Path | None = None,
    *,
    backend: str | None = None,
    job: Path | None = None,
) -> Project:
    """Load ``config_path`` (a file, or a folder holding one), or the ds.toml / config.py
    of ``folder`` (default: cwd).

    ``backend`` ("local", "aws" or "slurm"; default: ``$DS_BACKEND`` if set) replaces the
    config's backend. A config without a recipe (a family ``config.py`` has no ``RECIPE``;
    its converted ds.toml no ``recipe.name``) that runs on the local or Slurm backend (ds's
    own worker runs the tasks there), or on AWS with an image named as `ds image build`
    suggests (`ds_worker_image`: ``…/ds-<tool>``, whose entrypoint is ``ds worker``), gets
    the recipe `family_recipe` finds (``job`` is the job file the command was given); with
    any other image on AWS it keeps none, so the image runs its own worker, as with run.py.
    Raises
    `InputError` for a bad config or backend name; a recipe nothing decides is reported
    later, by whatever needs the recipe.
    """
    if config_path is not None and config_path.is_dir():
        config_path = find_config(config_path)  # `--config FOLDER`: the folder's config
    path = config_path if config_path is not None else find_config(folder or Path.cwd())
    config = load_config(path, backend=backend_override(backend))
    project = Project(config=config, config_path=path.resolve())
    kind = backend_kind(config.backend)
    own_worker = not kind.in_image or ds_worker_image(config.image)
    if config.recipe.name is None and own_worker:
        name = family_recipe(project.base_dir, config.image, job, _submitted_jobs(project))
        if name is not None:
            recipe = config.recipe.model_copy(update={"name": name})
            project = replace(project, config=config.model_copy(update={"recipe": recipe}))
    return project


def backend_override(flag: str | None = None) -> str | None:
    """The backend to use instead of the config's: ``flag`` (``--backend``), else
    ``$DS_BACKEND``, else None (the config decides). Raises `InputError` for another name."""
    value = flag if flag is not None else (os.environ.get(BACKEND_ENV) or None)
    if value is None:
        return None
    if value not in BACKENDS:
        raise InputError(
            "argument" if flag is not None else "environment",
            "--backend" if flag is not None else BACKEND_ENV,
            f"{value!r} is not a backend",
            'use "local", "aws" or "slurm"',
        )
    return value


def family_recipe(
    folder: Path, image: str, job: Path | None, submitted: Sequence[Path] = ()
) -> str | None:
    """The recipe a project's family files imply, or None when nothing decides.

    With a ``job`` file at hand: its format (DCP → "cellprofiler", DF → "fiji", DOZC →
    "omezarr"), else the image name (`recipe_from_image`). Without one (``ds worker``,
    ``ds status`` …), the same from the job files ``submitted`` to the current run (so
    workers agree with the command that submitted them), else the image name, else the
    family-format job files of ``folder`` (its ``*.json`` and ``files/*.json``, as the family
    lays a project out). Several job files decide only if they agree.
    """
    if job is not None:
        return _agreed([job]) or recipe_from_image(image)
    by_run = _agreed(submitted)
    if by_run is not None:
        return by_run
    by_image = recipe_from_image(image)
    if by_image is not None:
        return by_image
    return _agreed(sorted(folder.glob("*.json")) + sorted(folder.glob("files/*.json")))


def _submitted_jobs(project: Project) -> list[Path]:
    # A worker (or `ds status`) has no job file at hand, but the current run knows its own.
    try:
        state = load_state(project)
    except (ValueError, OSError):
        return []  # an unreadable state is reported by the commands that need it
    return [Path(name) for name in state.job_files] if state is not None else []


def _agreed(paths: Iterable[Path]) -> str | None:
    found = {name for path in paths if (name := _recipe_of_job(path)) is not None}
    return found.pop() if len(found) == 1 else None


def _recipe_of_job(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_GUESS_BYTES:
            return None
        fmt = load_job_file(path).format
    except (InputError, OSError):
        return None  # not a job file (a fleet file, a monitor file), or a broken one
    return RECIPE_OF_FORMAT.get(fmt)
