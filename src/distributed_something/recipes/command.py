"""The `command` recipe: a templated argv from the config, no Python needed.

Example ``ds.toml``::

    [recipe]
    name = "command"
    argv = ["{python}", "-m", "mytool", "{input_dir}/images/{Plate}/{Well}.tif", "{output_dir}"]
    inputs = ["images/{Plate}/{Well}.tif"]
    output_prefix = "results/{Plate}/{Well}"

Each argv element is rendered separately and passed to the runner as one argument, never
joined into a shell string, so a job value like ``"; rm -rf ~"`` is one literal argument.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.keys import check_key, check_prefix
from distributed_something.recipes.base import Input, TaskPlan, Workdir
from distributed_something.templates import MissingField, TemplateError, render

__all__ = ["BUILTIN_FIELDS", "DEFAULT_OUTPUT_PREFIX", "CommandRecipe"]

#: Used when ``recipe.output_prefix`` is empty: every task gets its own folder.
DEFAULT_OUTPUT_PREFIX = "outputs/{task_id}"

#: Fields every template can use; they win over job values of the same name, so a job file
#: cannot redirect where outputs are written or which interpreter runs.
BUILTIN_FIELDS = ("task_id", "input_dir", "output_dir", "work_dir", "python")

_CONFIG_SOURCE = "config"
_JOB_SOURCE = "job file"


def builtin_fields(task: Task, workdir: Workdir) -> dict[str, str]:
    """The built-in template fields for ``task`` running in ``workdir``."""
    input_dir, output_dir, work_dir = _workdir_fields(workdir)
    return {
        "task_id": task.id,
        "input_dir": input_dir,
        "output_dir": output_dir,
        "work_dir": work_dir,
        "python": sys.executable,
    }


@lru_cache(maxsize=8)
def _workdir_fields(workdir: Workdir) -> tuple[str, str, str]:
    """The folders of ``workdir`` as text (one workdir serves a million plans at validate)."""
    return str(workdir.input_dir), str(workdir.output_dir), str(workdir.root)


class CommandRecipe:
    """Runs ``config.recipe.argv`` rendered with the task's fields (see `Recipe`).

    - ``argv``: each element of ``recipe.argv`` rendered with ``Task.fields`` plus the
      built-ins ``task_id``, ``input_dir``, ``output_dir``, ``work_dir`` and ``python``
      (built-ins win over job values).
    - ``output_prefix``: ``recipe.output_prefix`` rendered, or ``outputs/{task_id}`` when empty;
      it must be a valid, non-empty storage prefix.
    - ``inputs``: each rendered ``recipe.inputs`` key, downloaded to ``input_dir / key``; each
      must be a valid storage key (no ``..``, not absolute).
    - A field the task lacks, or a rendered key that is unsafe, raises ``InputError`` with
      source ``"job file"`` naming the group; an empty argv or a malformed template raises
      ``InputError`` with source ``"config"``.
    - ``check_success``: exit code 0 is success, anything else is the failure reason.
    """

    name: str = "command"

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan:
        """The plan for ``task`` in ``workdir``; pure, raises ``InputError`` as above."""
        recipe = config.recipe
        if not recipe.argv:
            raise InputError(
                _CONFIG_SOURCE,
                "recipe.argv",
                "is empty: the command recipe has nothing to run",
                _argv_fix(config),
            )
        fields: dict[str, Any] = {**task.fields, **builtin_fields(task, workdir)}
        argv = [
            self._render(template, fields, task, f"recipe.argv[{i}]")
            for i, template in enumerate(recipe.argv)
        ]
        prefix_template = recipe.output_prefix or DEFAULT_OUTPUT_PREFIX
        output_prefix = self._render(prefix_template, fields, task, "recipe.output_prefix")
        self._check_storage(output_prefix, task, "recipe.output_prefix", prefix=True)
        inputs: list[Input] = []
        for i, template in enumerate(recipe.inputs):
            field = f"recipe.inputs[{i}]"
            key = self._render(template, fields, task, field)
            self._check_storage(key, task, field, prefix=False)
            inputs.append(Input(key=key, path=key))
        return TaskPlan(argv=argv, output_prefix=output_prefix, inputs=inputs)

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
        """None when the command exited 0, else ``"command exited with code N"``."""
        if exit_code == 0:
            return None
        if exit_code < 0:
            return f"command exited with code {exit_code} (killed by signal {-exit_code})"
        return f"command exited with code {exit_code}"

    @staticmethod
    def _render(template: str, fields: dict[str, Any], task: Task, field: str) -> str:
        try:
            return render(template, fields, group="")
        except MissingField as error:
            raise InputError(
                _JOB_SOURCE,
                error.field,
                f"the group {task.describe()} (task {task.id}) has no field `{error.field}` "
                f"used by {field}",
                f"add `{error.field}` to the group or the shared keys, or change the template",
            ) from None
        except TemplateError as error:
            raise InputError(
                _CONFIG_SOURCE,
                field,
                str(error),
                "close every `{` with `}`, name every field, and write `{{` / `}}` for literal "
                "braces",
            ) from None

    @staticmethod
    def _check_storage(value: str, task: Task, field: str, *, prefix: bool) -> None:
        what = "prefix" if prefix else "key"
        problem: str | None = None
        try:
            if prefix:
                check_prefix(value)
            else:
                check_key(value)
        except InputError as error:
            problem = error.problem
        # An empty output prefix would put every task's outputs at the bucket root, where
        # done-checks and cleanup of one task would see all the others.
        if problem is None and prefix and not value:
            problem = "prefix '' is empty"
        if problem is not None:
            raise InputError(
                _JOB_SOURCE,
                field,
                f"for the group {task.describe()} (task {task.id}) the storage {what} renders "
                f"to {value!r}, which is not safe: {problem}",
                "change the job value or the template so it gives a relative key of "
                "'/'-separated names (no leading '/', no '..', not empty)",
            )


def _argv_fix(config: Config) -> str:
    description = type(config.recipe).model_fields["argv"].description or ""
    return f"set recipe.argv to {description}" if description else "set recipe.argv"
