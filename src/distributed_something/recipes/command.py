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

import difflib
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from operator import itemgetter
from typing import Any

from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.keys import check_key, check_prefix
from distributed_something.recipes.base import Input, TaskPlan, Workdir, plainly_safe_key
from distributed_something.templates import (
    MissingField,
    TemplateError,
    compile_templates,
    format_value,
    render,
)
from distributed_something.worker.causes import command_ended

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

    def planner(
        self, config: Config, workdir: Workdir, shared: Mapping[str, Any], group_key: str
    ) -> Callable[[str, Any], TaskPlan | None] | None:
        """``plan`` for the tasks of one job (shared keys ``shared``, each task's element
        under ``group_key``), with the templates parsed once: ``(task id, element) -> plan``.

        The result is ``plan``'s for the task ``Task({**shared, group_key: element}, id)``,
        or None when ``plan`` must decide (a field not found, a dotted name, a key that is not
        plainly safe): ``plan`` then gives the plan or raises its `InputError`. None (no
        planner) when a template is malformed or the argv is empty, which ``plan`` reports.
        """
        recipe = config.recipe
        if not recipe.argv:
            return None
        prefix_template = recipe.output_prefix or DEFAULT_OUTPUT_PREFIX
        try:
            compiled = compile_templates([*recipe.argv, prefix_template, *recipe.inputs])
        except TemplateError:
            return None
        argc = len(recipe.argv)
        builtins = builtin_fields(_NO_TASK, workdir)
        missing = _MISSING
        formats = compiled.formats
        # Each name's text, in `plan`'s order (`Task.fields` plus the built-ins, which win):
        # the built-ins' are known now; the task id's and the element's are filled per task.
        base: list[str] = [builtins.get(name, "") for name in compiled.names]
        task_id_at = [i for i, name in enumerate(compiled.names) if name == "task_id"]
        looked_up = [(i, name) for i, name in enumerate(compiled.names) if name not in builtins]
        # When the element is an object holding every looked-up name (the usual case), one
        # itemgetter call fetches them all.
        positions = [i for i, _ in looked_up]
        fetch = itemgetter(*(name for _, name in looked_up)) if looked_up else None
        single = len(looked_up) == 1

        def value(name: str, group: Any) -> Any:
            if isinstance(group, Mapping) and name in group:
                return group[name]
            if name == group_key:
                return group
            if name in shared:
                return shared[name]
            return missing  # perhaps a dotted name: plan decides

        def plan(task_id: str, group: Any) -> TaskPlan | None:
            texts = base.copy()
            for i in task_id_at:
                texts[i] = task_id
            if fetch is not None:
                found: Any
                try:
                    found = fetch(group) if type(group) is dict else None
                except KeyError:
                    found = None
                if found is None:
                    found = [value(name, group) for _, name in looked_up]
                    if missing in found:
                        return None
                elif single:
                    found = (found,)
                for i, item in zip(positions, found, strict=True):
                    texts[i] = item if type(item) is str else format_value(item)
            rendered = [f.format(*texts) for f in formats]
            output_prefix = rendered[argc]
            keys = rendered[argc + 1 :]
            if not plainly_safe_key(output_prefix) or not all(map(plainly_safe_key, keys)):
                return None
            return TaskPlan.of(rendered[:argc], output_prefix, [Input(k, k) for k in keys])

        return plan

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
        """None when the command exited 0, else ``"command exited with code N"`` (``was
        killed by signal N (SIGNAME)``: `command_ended`)."""
        return None if exit_code == 0 else command_ended("command", exit_code)

    @staticmethod
    def _render(template: str, fields: dict[str, Any], task: Task, field: str) -> str:
        try:
            return render(template, fields, group="")
        except MissingField as error:
            close = difflib.get_close_matches(error.field, [str(k) for k in fields], n=1)
            meant = f" (did you mean `{{{close[0]}}}`?)" if close else ""
            raise InputError(
                _JOB_SOURCE,
                error.field,
                f"the group {task.describe()} (task {task.id}) has no field `{error.field}` "
                f"used by {field}",
                f"add `{error.field}` to the group or the shared keys, or change the "
                f"template{meant}",
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


#: Stands for a task in `builtin_fields` when only the workdir's fields are wanted.
_NO_TASK = Task(body={}, id="-")
_MISSING = object()


def _argv_fix(config: Config) -> str:
    description = type(config.recipe).model_fields["argv"].description or ""
    return f"set recipe.argv to {description}" if description else "set recipe.argv"
