"""`ds validate`: check config, job file and fleet file; create nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed_something.errors import InputError
from distributed_something.fleet import load_fleet
from distributed_something.jobs.model import JobFile
from distributed_something.jobs.parse import load_job_file
from distributed_something.project import Project
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR
from distributed_something.recipes.registry import recipe_for


@dataclass
class Validated:
    """What passed validation."""

    project: Project
    job: JobFile | None = None
    fleet: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def check_job(project: Project, job_path: Path) -> JobFile:
    """Parse the job file and plan every task with the recipe (missing fields are errors)."""
    job = load_job_file(job_path)
    recipe = recipe_for(project.config, source=str(project.config_path))
    if recipe is None:
        return job  # the image's own entrypoint reads the tasks
    for task in job.tasks:
        try:
            recipe.plan(project.config, task, PLACEHOLDER_WORKDIR)
        except InputError as exc:
            # Recipes name "job file" or "config"; say which files they are.
            source = {"job file": str(job_path), "config": str(project.config_path)}
            raise InputError(
                source.get(exc.source, exc.source), exc.field, exc.problem, exc.fix
            ) from None
    return job


def validate(project: Project, job_path: Path | None, fleet_path: Path | None) -> Validated:
    """Validate everything given. Raises InputError at the first problem."""
    result = Validated(project)
    recipe_for(project.config, source=str(project.config_path))
    if job_path is not None:
        result.job = check_job(project, job_path)
        for dup in result.job.duplicates:
            result.notes.append(
                f"{job_path}: group {dup.index} repeats group {dup.first_index} "
                f"(task {dup.task_id}); it will be submitted once"
            )
    if fleet_path is not None:
        result.fleet = load_fleet(fleet_path)
    return result
