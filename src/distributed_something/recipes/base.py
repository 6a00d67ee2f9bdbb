"""The recipe contract: how a task becomes a command, its inputs and its outputs."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from distributed_something.config.model import Config
from distributed_something.interfaces.storage import ObjectInfo
from distributed_something.jobs.model import Task


@dataclass(frozen=True)
class Workdir:
    """A task's scratch folders: inputs are staged into ``input_dir``; everything the
    command leaves in ``output_dir`` is uploaded under the plan's output prefix."""

    root: Path

    # Made once per workdir (a worker reuses one task after task): a path join per use cost
    # more than the use.
    @functools.cached_property
    def input_dir(self) -> Path:
        return self.root / _INPUTS

    @functools.cached_property
    def output_dir(self) -> Path:
        return self.root / _OUTPUTS

    def create(self) -> None:
        for folder in (self.input_dir, self.output_dir):
            # Looked at first: a worker reuses its folders, and mkdir's "exists" error costs
            # more than the look.
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)

    def clear(self) -> bool:
        """Empty the folders for the next task, keeping ``input_dir`` and ``output_dir``
        themselves (a worker reuses one workdir: creating and removing three folders per
        task cost more than a short task). True when nothing is left behind. A link put in
        the root's place (by the task's command) is removed, never followed: False."""
        try:
            if not stat.S_ISDIR(os.lstat(self.root).st_mode):
                with contextlib.suppress(OSError):
                    self.root.unlink()
                return False
        except FileNotFoundError:
            return True
        kept = _KEPT
        clean = True
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name in kept and entry.is_dir(follow_symlinks=False):
                    removed = False
                    with os.scandir(entry.path) as children:
                        for child in children:
                            _remove(child)
                            removed = True
                    # Looked at again only when something was in it (most folders are empty).
                    clean = clean and (not removed or _is_empty(entry.path))
                else:
                    _remove(entry)
                    clean = clean and not os.path.lexists(entry.path)
        return clean


def read_own_file(path: Path, limit: int = 1 << 20) -> str | None:
    """The text of the regular file ``path`` (its first ``limit`` bytes), or None when it is
    missing, a link or anything but a regular file: a recipe reads the results its tool
    left in the task's folder, where the task's command could have put a link to any file
    of the machine instead."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read(limit).decode(errors="replace")


_INPUTS = "inputs"
_OUTPUTS = "outputs"
_KEPT = frozenset((_INPUTS, _OUTPUTS))


def _is_empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(entry.path)  # noqa: PTH108 - no Path made per file (one per task)


#: A placeholder workdir used to plan tasks at validation time.
PLACEHOLDER_WORKDIR = Workdir(Path("/ds-scratch"))


@dataclass(frozen=True)
class Input:
    """A storage object to download before the command runs, to ``input_dir / path``.
    ``optional``: one missing from storage is passed over, said in the worker's log (the
    tool deals with its absence: CellProfiler with ``--always-continue`` skips the image
    set, as it does on DCP's bucket mount); else it fails the task (``not_found``)."""

    key: str
    path: str
    bucket: str = ""
    optional: bool = False


@dataclass(frozen=True)
class TaskPlan:
    """What the worker does for one task.

    ``argv`` runs without a shell; ``inputs`` are staged first; the contents of the
    workdir's ``output_dir`` are uploaded under ``output_prefix`` (in ``output_bucket``, or
    the config's destination bucket, else the main bucket, when empty) only after
    ``Recipe.check_success`` accepts the run. ``output_prefix`` is the task's own folder:
    `ds validate` refuses it empty, with an empty name, under ``_ds/`` (the records area) or
    equal to / inside another task's (see `distributed_something.jobs.prefixes`).
    """

    argv: list[str]
    output_prefix: str
    inputs: list[Input] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    output_bucket: str = ""

    @classmethod
    def of(
        cls, argv: list[str], output_prefix: str, inputs: list[Input], output_bucket: str = ""
    ) -> TaskPlan:
        """``TaskPlan(argv, output_prefix, inputs, output_bucket=output_bucket)`` (no env),
        made without the frozen dataclass's setattr per field: planners make a million at
        validate, and that was as much as rendering them."""
        plan = object.__new__(cls)
        plan.__dict__.update(
            argv=argv,
            output_prefix=output_prefix,
            inputs=inputs,
            env={},
            output_bucket=output_bucket,
        )
        return plan


def plainly_safe_key(key: str) -> bool:
    """Whether ``key`` is certainly a valid storage key and output prefix (as `check_key`,
    `check_prefix` and `prefix_problem` without the records area judge): short ASCII with no
    empty, ``.`` or ``..`` name, no backslash or NUL. False only means the full checks must
    decide (planners then leave the task to ``Recipe.plan``)."""
    return (
        0 < len(key) <= 255
        and key.isascii()
        and key[0] not in "./"
        and key[-1] != "/"
        and "//" not in key
        and "/." not in key
        and "\\" not in key
        and "\x00" not in key
    )


class Recipe(Protocol):
    """Turns tasks into plans. Pure: it never touches storage or the queue.

    - ``plan`` raises ``InputError`` naming the field and the group when the task lacks
      something the recipe needs; `ds validate` calls it for every task with
      ``PLACEHOLDER_WORKDIR``, so a plan that works there works in the worker.
    - ``check_success`` gets the exit code and the workdir after the command ends and returns
      None when the run succeeded, else the reason it failed.
    """

    name: str

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan: ...

    def check_success(self, exit_code: int, workdir: Workdir) -> str | None: ...


def output_prefixes_may_repeat(recipe: object) -> bool:
    """Whether several tasks of ``recipe`` may write into one output prefix by design.

    False unless the recipe sets the class attribute ``output_prefixes_may_repeat = True``
    (a family format that groups several tasks' outputs in one folder, as a DCP
    ``output_structure`` of ``Metadata_Plate`` does for every well of a plate). `ds validate`
    then accepts equal prefixes; a prefix inside another task's is refused for every recipe.
    """
    return getattr(recipe, "output_prefixes_may_repeat", False) is True


#: What a recipe says about a tool its tasks need that is not here: (problem, fix).
ToolProblem = tuple[str, str]


@runtime_checkable
class NeedsTools(Protocol):
    """A recipe whose tasks start a tool that must be installed where the workers run
    (CellProfiler, ImageJ, a converter's Python packages).

    ``missing_tool(config, path)`` says, without running anything, what the tasks could not
    start here — ``(problem, fix)`` — or None when they can; ``path`` is the workers' PATH.
    `ds validate`, `ds submit` and `ds run` ask it where the workers run on this machine,
    before anything is created: otherwise every task would fail its tries on it.
    """

    def missing_tool(self, config: Config, path: str | None) -> ToolProblem | None: ...


def missing_tool(recipe: object, config: Config, path: str | None) -> ToolProblem | None:
    """`NeedsTools.missing_tool` of ``recipe``; None for a recipe that does not say."""
    hook = getattr(recipe, "missing_tool", None)
    return hook(config, path) if callable(hook) else None


#: Bytes a text file holds: a script, which without a ``#!`` first line fails to start with
#: "Exec format error" (a shell would run it as a shell script; ds starts programs without
#: one). Binary formats (ELF, Mach-O, whatever binfmt_misc runs) are left to the kernel.
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def program_problem(program: str, path: str | None) -> str | None:
    """Why ``program`` (a name looked up on ``path``, or an absolute path) cannot be started
    here, as the end of a sentence about it ("is not on PATH"); None when it can."""
    if "/" in program:
        file = Path(program)
        if file.is_dir():
            return "is a folder, not a program"
        if not file.is_file():
            return "does not exist"
        if not os.access(file, os.X_OK):
            return "is not executable"
        found = program
    else:
        which = shutil.which(program, path=path)
        if which is None:
            return "is not on PATH"
        found = which
    try:
        with open(found, "rb") as fh:
            start = fh.read(64)
    except OSError:
        return None  # unreadable yet executable: the kernel may still start it
    if start and not start.startswith(b"#!") and set(start) <= _TEXT_BYTES:
        return "is a script without a #! first line, which cannot be started (Exec format error)"
    return None


@runtime_checkable
class StagesMoreInputs(Protocol):
    """A recipe that learns some inputs only from others (a LoadData CSV lists the images).

    The worker calls ``more_inputs`` after it staged ``plan.inputs`` into
    ``workdir.input_dir`` and before the command runs, and stages what it returns the same
    way. It may read files under ``workdir`` but never storage or the queue; an exception
    fails the task (retried, then dead-lettered with its message) like a failed command.
    """

    def more_inputs(self, config: Config, task: Task, workdir: Workdir) -> list[Input]: ...


def more_inputs(recipe: object, config: Config, task: Task, workdir: Workdir) -> list[Input]:
    """The second round of inputs of ``recipe`` for ``task``: ``[]`` unless it implements
    `StagesMoreInputs`."""
    # What isinstance(recipe, StagesMoreInputs) checks, without its cost on every task.
    hook = getattr(recipe, "more_inputs", None)
    return list(hook(config, task, workdir)) if callable(hook) else []


#: Lists one bucket's objects under a prefix, in key order: ``(bucket, prefix) -> objects``.
#: The bucket is named as in `Input.bucket` ('' = the config's source bucket).
Lister = Callable[[str, str], Iterable[ObjectInfo]]


@runtime_checkable
class ListsInputs(Protocol):
    """A recipe whose inputs only a storage listing can name (every file in a plate's folder,
    as Distributed-OmeZarrCreator copies it with ``aws s3 cp --recursive``).

    The worker calls ``listed_inputs`` once ``plan.inputs`` are staged, with a ``lister`` of
    the run's buckets, and stages what it returns the same way, before
    `StagesMoreInputs.more_inputs` (which may read them). An exception fails the task like a
    failed command. `ds validate` does not call it (it lists nothing), so ``plan`` must still
    check every job value.
    """

    def listed_inputs(
        self, config: Config, task: Task, workdir: Workdir, lister: Lister
    ) -> list[Input]: ...


def listed_inputs(
    recipe: object, config: Config, task: Task, workdir: Workdir, lister: Lister
) -> list[Input]:
    """The inputs ``recipe`` finds by listing storage for ``task``: ``[]`` unless it implements
    `ListsInputs`."""
    hook = getattr(recipe, "listed_inputs", None)  # as isinstance(recipe, ListsInputs)
    return list(hook(config, task, workdir, lister)) if callable(hook) else []
