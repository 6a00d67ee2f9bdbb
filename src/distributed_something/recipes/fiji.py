"""The `fiji` recipe: Distributed-Fiji's job files, run by Fiji or by ImageJ 1.

A Distributed-Fiji (DF) job file::

    {
      "output_file_location": "projects/output/",
      "shared_metadata": {"image_size": "1024", "rows": "2"},
      "groups": [{"Well": "A1", "Plate": "Plate_1"}, {"Well": "A2", "Plate": "Plate_1"}]
    }

gives one task per group, whose message is ``{"Metadata": group, "output_file_location": …,
"shared_metadata": …}`` exactly as DF's run.py sent it. For each task the script (a Fiji
script or an ImageJ macro) is run once with DF's single argument string, the folders first::

    input='<input folder>', output='<output folder>', image_size='1024', rows='2',
    Well='A1', Plate='Plate_1'

(one line, ``", "`` between the pairs).

Differences from DF, on purpose:

- every task has its own output prefix, ``output_file_location`` + the group's values joined
  with ``-`` (``projects/output/A1-Plate_1``), so check-if-done counts only that task's files
  (DF uploaded every task to one flat prefix and counted stale files of earlier tasks);
- the images a task needs are listed in ``recipe.inputs`` (templates over the shared metadata
  and the group) and downloaded into the input folder, instead of reading a FUSE-mounted
  bucket;
- success is checked (see `FijiRecipe.check_success`) before anything is uploaded.

The plan runs `distributed_something.recipes.fiji_task`, a small in-task helper that fetches
the script when it comes from ``tool.script_download_url``, runs the engine, watches for macro
errors and records the outcome in ``STATUS_FILE``. Everything in this module is pure.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from distributed_something.backends import backend_kind
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.keys import check_key, check_prefix, join_key
from distributed_something.recipes.base import (
    Input,
    TaskPlan,
    ToolProblem,
    Workdir,
    program_problem,
    read_own_file,
)
from distributed_something.secrets_scan import PRESIGNED_SCRIPT_FIX, credential_kind
from distributed_something.templates import MissingField, TemplateError, render
from distributed_something.worker.causes import command_ended

__all__ = [
    "DATA_FOLDER",
    "DEFAULT_EXECUTABLES",
    "ENGINES",
    "FOLDER_KEYS",
    "SCRIPT_FOLDER",
    "STATUS_FILE",
    "FijiRecipe",
    "argument_string",
    "engine_argv",
    "engine_for",
    "format_argument_value",
    "script_arguments",
    "script_name_from_url",
    "task_part",
]

#: The engines: Fiji's launcher (the AWS images) or Debian's ImageJ 1 under a virtual display.
ENGINES = ("fiji", "imagej")
#: What the imagej engine runs: ImageJ macros (ImageJ 1's -batch reads these as macro text).
MACRO_SUFFIXES = (".ijm", ".txt", ".macro")

#: What runs when ``recipe.executable`` is empty: Fiji's launcher on PATH, or ImageJ 1's jar.
DEFAULT_EXECUTABLES = {"fiji": "ImageJ-linux64", "imagej": "/usr/share/java/ij.jar"}

#: The argument-string keys the recipe sets itself; a job key of the same name is refused.
FOLDER_KEYS = ("input", "output")

#: Under the workdir's input folder: the task's inputs (the script's ``input`` folder) …
DATA_FOLDER = "data"
#: … and, apart from them so a script that lists its input folder never sees itself, the script.
SCRIPT_FOLDER = "script"

#: Written by the helper into the workdir root (never uploaded): the run's outcome as JSON.
STATUS_FILE = "fiji-status.json"

_HELPER_MODULE = "distributed_something.recipes.fiji_task"
_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A quote would end the value early and a backslash is an escape in Fiji's (SciJava's) parser;
# control characters (newlines) break the one-line argument. Refusing them keeps every value
# inside its quotes for any parser that splits on quotes, so a job value cannot add a key.
_FORBIDDEN_CHARACTERS = re.compile(r"['\\\x00-\x1f\x7f]")
_CONFIG = "config"
_JOB = "job file"
_VALUE_FIX = (
    "remove quotes ('), backslashes (\\) and line breaks from the value (Fiji and ImageJ read "
    "the arguments as key='value' pairs, where they would end or change the value)"
)


def engine_for(config: Config) -> str:
    """The engine a config selects: ``recipe.engine``, else ``"fiji"`` on AWS and ``"imagej"``
    locally. Raises ``InputError`` (source ``"config"``, field ``recipe.engine``) for any other
    value."""
    engine = config.recipe.engine or ("fiji" if backend_kind(config.backend).in_image else "imagej")
    if engine not in ENGINES:
        raise InputError(
            _CONFIG,
            "recipe.engine",
            f"{engine!r} is not an engine of the fiji recipe",
            'set it to "fiji" (Fiji\'s ImageJ-linux64, as in the Distributed-Fiji images) or '
            '"imagej" (Debian\'s imagej package under xvfb-run), or leave it empty',
        )
    return engine


def engine_argv(
    engine: str, *, executable: str, script: str, argument: str, runner: str = ""
) -> list[str]:
    """The command that runs ``script`` with ``argument`` (one argv element, never split).

    - ``"fiji"``: ``[executable, "--ij2", "--headless", "--console", "--run", script,
      argument]``, as Distributed-Fiji's worker runs it (``executable`` defaults to
      ``ImageJ-linux64``).
    - ``"imagej"``: ``["xvfb-run", "-a", "java", "-cp", executable, runner, script, argument]``:
      ImageJ 1 (``executable`` is its jar, default ``/usr/share/java/ij.jar``) needs an X
      display even for macros, and ``runner`` is the helper's Java source file that runs the
      macro as ``ij.jar -batch`` does but ends the run when ImageJ opens a dialog (a macro
      error), which under a virtual display would otherwise wait forever. ``runner`` must be
      given for this engine.

    Raises ``ValueError`` for an unknown engine or a missing runner.
    """
    exe = executable or DEFAULT_EXECUTABLES.get(engine, "")
    if engine == "fiji":
        return [exe, "--ij2", "--headless", "--console", "--run", script, argument]
    if engine == "imagej":
        if not runner:
            raise ValueError("the imagej engine needs the runner's source file")
        return ["xvfb-run", "-a", "java", "-cp", exe, runner, script, argument]
    raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")


def format_argument_value(value: Any) -> str:
    """A metadata value as the text between its quotes: strings as they are, integers and
    finite floats as JSON writes them, booleans as ``true``/``false`` (what Fiji's boolean
    parameters read). Raises ``ValueError`` for anything else (objects, lists, null) and for
    text that contains a quote, a backslash or a control character."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        kind = "null" if value is None else type(value).__name__
        raise ValueError(f"is a {kind}; only strings, numbers and booleans can be passed")
    bad = _FORBIDDEN_CHARACTERS.search(text)
    if bad is not None:
        raise ValueError(f"{text!r} contains the character {bad.group()!r}")
    return text


def argument_string(pairs: list[tuple[str, Any]]) -> str:
    """DF's argument string: ``key='value'`` pairs joined with ``", "``, in order.

    Keys must be identifiers (letters, digits, ``_``, not starting with a digit: Fiji's
    ``#@`` parameters and macro variables). Values go through `format_argument_value`. A key
    may appear once. Raises ``ValueError`` naming the key otherwise; the recipe turns it into
    an ``InputError``.
    """
    seen: set[str] = set()
    parts: list[str] = []
    for key, value in pairs:
        if not isinstance(key, str) or not _KEY_PATTERN.match(key):
            raise ValueError(f"the key {key!r} is not a name of letters, digits and _")
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen.add(key)
        try:
            text = format_argument_value(value)
        except ValueError as error:
            raise ValueError(f"the value of {key!r} {error}") from None
        parts.append(f"{key}='{text}'")
    return ", ".join(parts)


def script_arguments(
    input_dir: str, output_dir: str, shared: Mapping[str, Any], group: Mapping[str, Any]
) -> str:
    """The argument string of one task: ``input`` and ``output`` first, then the shared
    metadata, then the group (DF's order). A group key that is also a shared key keeps the
    shared key's place and takes the group's value (the group is the more specific). Raises
    ``ValueError`` for a key in ``FOLDER_KEYS`` or for anything `argument_string` refuses."""
    merged: dict[str, Any] = dict(shared)
    merged.update(group)
    for key in FOLDER_KEYS:
        if key in merged:
            raise ValueError(
                f"the key {key!r} is reserved: the recipe passes the task's {key} folder as it"
            )
    return argument_string([("input", input_dir), ("output", output_dir), *merged.items()])


def task_part(group: Mapping[str, Any]) -> str:
    """The task's own part of its output prefix: the group's values, in order, joined with
    ``-`` (``{"Well": "A1", "Plate": "Plate_1"}`` → ``"A1-Plate_1"``).

    Each value must make a single safe storage name: not empty, no ``/``, ``\\`` or control
    character, not ``.`` or ``..``. Raises ``ValueError`` naming the key otherwise (and for an
    empty group).
    """
    if not group:
        raise ValueError("the group is empty, so it names no task folder")
    parts: list[str] = []
    for key, value in group.items():
        try:
            text = format_argument_value(value)
        except ValueError as error:
            raise ValueError(f"the value of {key!r} {error}") from None
        if text in ("", ".", "..") or "/" in text:
            raise ValueError(f"the value of {key!r} ({text!r}) is not a folder name")
        parts.append(text)
    return "-".join(parts)


def _check_engine_runs(config: Config, name: str, field: str) -> None:
    """Raise `InputError` when the engine cannot run the script ``name`` (from the config's
    ``field``): ImageJ 1 (engine ``imagej``, the default off AWS) runs macros only, and a
    Fiji script (a DF script in Python, Groovy …) failed there on every attempt, with "Macro
    Error: Statement cannot begin with '#'", until the task was dead."""
    if engine_for(config) != "imagej" or name.lower().endswith(MACRO_SUFFIXES):
        return
    raise InputError(
        _CONFIG,
        field,
        f"names {name!r}, which is not an ImageJ macro ({', '.join(MACRO_SUFFIXES)}); the "
        "imagej engine (the default off AWS) runs macros only",
        'set recipe.engine = "fiji" (with Fiji installed: recipe.executable) to run a Fiji '
        "script, or give an ImageJ macro",
    )


def script_name_from_url(url: str) -> str:
    """The script's file name from its download URL (the last path segment, %-decoded), as
    DF named it. Raises ``ValueError`` when the URL is not http(s), has no host or does not
    end in a usable file name."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    name = unquote(PurePosixPath(parts.path).name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "'" in name:
        raise ValueError(f"{url!r} does not end in a script file name (e.g. …/measure.ijm)")
    return name


class FijiRecipe:
    """Runs a Fiji script or ImageJ macro per Distributed-Fiji task (see `Recipe`).

    Plan, for a task with ``Metadata`` (the group: a non-empty object), optional
    ``shared_metadata`` (an object) and ``output_file_location`` (a prefix):

    - ``argv``: ``{python} -m distributed_something.recipes.fiji_task`` with the engine
      (`engine_for`), ``recipe.executable``, the script (a local path when it is a bucket key,
      or ``tool.script_download_url`` and ``tool.script_sha256``), the argument string
      (`script_arguments` with ``input = input_dir/data`` and ``output = output_dir``), the
      status file and the number of output files a success needs
      (``check_if_done.expected_number_files``, else 1).
    - ``inputs``: each ``recipe.inputs`` template rendered with the task's fields (top-level
      keys, shared metadata keys, then the group's keys; ``{task_id}`` too) and downloaded from
      the source bucket to ``input_dir/data/<key>``; plus, when the script is ``recipe.script``
      (a key in the workspace bucket), the script to ``input_dir/script/<name>``.
    - ``output_prefix``: ``recipe.output_prefix`` rendered when set, else
      ``output_file_location`` joined with `task_part` of the group.

    Every problem is an ``InputError``: source ``"config"`` for the script, engine and
    templates, ``"job file"`` for the task's values.
    """

    name: str = "fiji"

    def missing_tool(self, config: Config, path: str | None) -> ToolProblem | None:
        """Fiji's launcher, or ImageJ 1's jar with java and xvfb-run, when they cannot be
        started here (`NeedsTools`)."""
        from distributed_something.recipes.fiji_task import resolve_fiji

        engine = engine_for(config)
        executable = config.recipe.executable or DEFAULT_EXECUTABLES[engine]
        if engine == "fiji":
            problem = program_problem(resolve_fiji(executable), path)
            if problem is None:
                return None
            return (
                f"Fiji's launcher ({executable!r}) {problem}: every task would fail",
                "install Fiji (its ImageJ-linux64 on PATH or in /opt/fiji/Fiji.app), set "
                'recipe.executable to it, or use engine = "imagej" (Debian\'s imagej)',
            )
        missing = [f"ImageJ's jar {executable!r}"] if not Path(executable).is_file() else []
        missing += [tool for tool in ("java", "xvfb-run") if program_problem(tool, path)]
        if not missing:
            return None
        return (
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            "here: every task would fail",
            "install them: `make examples` does (scripts/install-imagej.sh: Debian's imagej, "
            "a Java runtime and xvfb), or set recipe.executable to ImageJ's jar",
        )

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan:
        """The plan for ``task`` in ``workdir``; pure, raises ``InputError`` as above."""
        engine = engine_for(config)
        group = self._group(task)
        shared = self._shared(task)
        fields: dict[str, Any] = {**shared, **task.fields, "task_id": task.id}
        data_dir = workdir.input_dir / DATA_FOLDER
        try:
            argument = script_arguments(str(data_dir), str(workdir.output_dir), shared, group)
        except ValueError as error:
            raise InputError(
                _JOB,
                "Metadata",
                f"the group {task.describe()} (task {task.id}) cannot be passed to the "
                f"script: {error}",
                _VALUE_FIX
                if "contains the character" in str(error)
                else "rename the key (names of letters, digits and _; not input or output) "
                "or give it a string or number value",
            ) from None
        inputs = [
            Input(key=key, path=f"{DATA_FOLDER}/{key}")
            for key in self._input_keys(config, fields, task)
        ]
        script_args, script_input = self._script(config, workdir)
        if script_input is not None:
            inputs.append(script_input)
        status = workdir.root / STATUS_FILE
        argv = [
            sys.executable,
            "-m",
            _HELPER_MODULE,
            "--engine",
            engine,
            "--executable",
            config.recipe.executable or DEFAULT_EXECUTABLES[engine],
            *script_args,
            "--argument",
            argument,
            "--output-dir",
            str(workdir.output_dir),
            "--status-file",
            str(status),
            "--min-outputs",
            str(config.check_if_done.expected_number_files or 1),
        ]
        output_prefix = self._output_prefix(config, task, group, fields)
        return TaskPlan(argv=argv, output_prefix=output_prefix, inputs=inputs)

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None:
        """None only when the helper exited 0 and its status file says the run succeeded:
        the engine exited 0, printed no ``Macro Error`` (nor opened a dialog, for ImageJ 1),
        and left at least the required number of files in the output folder. Otherwise the
        reason, taken from the status file when there is one."""
        reason = _status_reason(workdir.root / STATUS_FILE)
        if exit_code == 0 and reason is None:
            return None
        if reason is not None and reason != _NO_STATUS:
            return reason
        if exit_code != 0:
            return command_ended("the fiji task helper", exit_code)
        return "the fiji task helper exited 0 but recorded no outcome"

    # --- parts of the plan ----------------------------------------------------------------

    @staticmethod
    def _group(task: Task) -> dict[str, Any]:
        group = task.group
        if not isinstance(group, dict) or not group:
            raise InputError(
                _JOB,
                "groups",
                f"the group {task.describe()} (task {task.id}) is not a non-empty object",
                'write each group as an object of metadata, e.g. {"Well": "A1", "Plate": '
                '"Plate_1"}',
            )
        return group

    @staticmethod
    def _shared(task: Task) -> dict[str, Any]:
        shared = task.body.get("shared_metadata", {})
        if not isinstance(shared, dict):
            raise InputError(
                _JOB,
                "shared_metadata",
                f"is a {type(shared).__name__}, not an object",
                'write "shared_metadata": {"key": "value", …} (or leave it out)',
            )
        return shared

    @staticmethod
    def _input_keys(config: Config, fields: dict[str, Any], task: Task) -> list[str]:
        keys: list[str] = []
        for index, template in enumerate(config.recipe.inputs):
            field = f"recipe.inputs[{index}]"
            key = _render(template, fields, task, field)
            try:
                check_key(key)
            except InputError as error:
                raise InputError(
                    _JOB,
                    field,
                    f"for the group {task.describe()} (task {task.id}) the input key renders "
                    f"to {key!r}, which is not safe: {error.problem}",
                    "change the job values or the template so it gives a relative key",
                ) from None
            keys.append(key)
        return keys

    @staticmethod
    def _script(config: Config, workdir: Workdir) -> tuple[list[str], Input | None]:
        url = config.tool.script_download_url
        if url:
            try:
                name = script_name_from_url(url)
            except ValueError as error:
                raise InputError(
                    _CONFIG,
                    "tool.script_download_url",
                    str(error),
                    "give the script's http(s) URL, ending in its file name (e.g. "
                    "https://example.org/scripts/measure.ijm)",
                ) from None
            kind = credential_kind(url)
            if kind is not None:
                # It would be written into every task's log (the argv) and, on AWS, into the
                # task definition: refused here too, so `ds validate --job` says so for ds.toml.
                raise InputError(
                    _CONFIG,
                    "tool.script_download_url",
                    f"holds {kind}, which would be written into task logs and the task definition",
                    PRESIGNED_SCRIPT_FIX,
                )
            _check_engine_runs(config, name, "tool.script_download_url")
            args = ["--script-url", url]
            if config.tool.script_sha256:
                args += ["--script-sha256", config.tool.script_sha256.lower()]
            return args, None
        key = config.recipe.script
        if not key:
            raise InputError(
                _CONFIG,
                "recipe.script",
                "is empty and tool.script_download_url is not set: there is no script to run",
                "set recipe.script to the script's key in the workspace bucket (e.g. "
                '"scripts/measure.ijm") or tool.script_download_url to its URL',
            )
        try:
            check_key(key)
        except InputError as error:
            raise InputError(
                _CONFIG,
                "recipe.script",
                error.problem,
                "give the script's key in the workspace bucket, e.g. 'scripts/measure.ijm'",
            ) from None
        name = key.rsplit("/", 1)[-1]
        if "'" in name:
            raise InputError(
                _CONFIG, "recipe.script", f"the file name {name!r} has a quote", "rename it"
            )
        _check_engine_runs(config, name, "recipe.script")
        path = workdir.input_dir / SCRIPT_FOLDER / name
        script_input = Input(
            key=key, path=f"{SCRIPT_FOLDER}/{name}", bucket=config.storage.workspace_bucket
        )
        return ["--script", str(path)], script_input

    @staticmethod
    def _output_prefix(
        config: Config, task: Task, group: dict[str, Any], fields: dict[str, Any]
    ) -> str:
        template = config.recipe.output_prefix
        if template:
            prefix = _render(template, fields, task, "recipe.output_prefix")
            field = "recipe.output_prefix"
        else:
            location = task.body.get("output_file_location")
            if not isinstance(location, str):
                raise InputError(
                    _JOB,
                    "output_file_location",
                    "is missing" if location is None else "is not a string",
                    'add "output_file_location": "<prefix in the bucket, e.g. results/>" or '
                    "set recipe.output_prefix",
                )
            try:
                part = task_part(group)
            except ValueError as error:
                raise InputError(
                    _JOB,
                    "groups",
                    f"the group {task.describe()} (task {task.id}) gives no output folder: {error}",
                    "use values that are plain names, or set recipe.output_prefix to a "
                    'template such as "results/{Plate}/{Well}"',
                ) from None
            prefix = f"{location.rstrip('/')}/{part}" if location.strip("/") else part
            field = "output_file_location"
        problem: str | None = None
        try:
            check_prefix(prefix)
            join_key(prefix, "x")
        except InputError as error:
            problem = error.problem
        if problem is None and not prefix.strip("/"):
            problem = "it is empty"
        if problem is not None:
            raise InputError(
                _JOB,
                field,
                f"for the group {task.describe()} (task {task.id}) the output prefix is "
                f"{prefix!r}, which is not safe: {problem}",
                "use a relative prefix of '/'-separated names (no leading '/', no '..')",
            )
        return prefix.rstrip("/")


_NO_STATUS = "no status"


def _status_reason(path: Path) -> str | None:
    """None when the status file records a success; else why not (``_NO_STATUS`` when the
    file is missing or unreadable)."""
    text = read_own_file(path)
    try:
        status = json.loads(text) if text is not None else None
    except ValueError:
        return _NO_STATUS
    if not isinstance(status, dict):
        return _NO_STATUS
    if status.get("ok") is True:
        return None
    reason = status.get("reason")
    return str(reason) if reason else "the fiji task failed (no reason recorded)"


def _render(template: str, fields: dict[str, Any], task: Task, field: str) -> str:
    try:
        return render(template, fields, group="")
    except MissingField as error:
        raise InputError(
            _JOB,
            error.field,
            f"the group {task.describe()} (task {task.id}) has no field `{error.field}` used "
            f"by {field}",
            f"add `{error.field}` to the group or to shared_metadata, or change the template",
        ) from None
    except TemplateError as error:
        raise InputError(
            _CONFIG,
            field,
            str(error),
            "close every `{` with `}`, name every field, and write `{{` / `}}` for literal braces",
        ) from None
