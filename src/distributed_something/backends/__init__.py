"""Backends: bundles of Queue, Storage, Compute and Provisioner. This module is the one
lookup of a backend by its name (the config's ``backend``): `backend_kind` gives what a
backend is (`BackendKind`), `open_backend` opens the one the project's config names.
Nothing outside this package imports a backend's own modules (tests/test_layering.py)."""

from __future__ import annotations

import importlib
import sys

from distributed_something.errors import InputError
from distributed_something.interfaces.backend import Backend, BackendKind
from distributed_something.project import Project

#: Each backend package defines ``KIND`` in its ``__init__`` (imported only when asked for:
#: the AWS one needs boto3 once opened).
NAMES = ("local", "aws", "slurm")

__all__ = [
    "NAMES",
    "Backend",
    "BackendKind",
    "backend_kind",
    "in_command",
    "no_run_here",
    "open_backend",
    "set_command",
    "set_interactive",
]


def backend_kind(name: str) -> BackendKind:
    """The backend called ``name`` ("local", "aws" or "slurm"). Raises `InputError` for
    another name (the config's model already refuses one)."""
    if name not in NAMES:
        raise InputError(
            "config", "backend", f"{name!r} is not a backend", 'use "local", "aws" or "slurm"'
        )
    module_name = f"{__name__}.{name}"
    first = module_name not in sys.modules
    kind: BackendKind = importlib.import_module(module_name).KIND
    if first and _interactive and kind.set_interactive is not None:
        kind.set_interactive(True)  # told when set_interactive ran before it was imported
    return kind


def open_backend(project: Project) -> Backend:
    """Open the backend the project's config names. Creates nothing remote."""
    return backend_kind(project.config.backend).open(project)


def no_run_here(project: Project) -> bool:
    """True when the project certainly has no run: its backend keeps every run under the
    project's state folder (`BackendKind.state_in_project`) and that folder does not exist.
    Commands that only read a run ask this first: opening the backend would make the folder."""
    kind = backend_kind(project.config.backend)
    return kind.state_in_project and not project.state_dir.exists()


#: what `set_interactive` last said (a backend imported later is told when it is imported)
_interactive = False


def set_interactive(on: bool) -> None:
    """Tell every backend that has remote services whether a person waits for the answer
    (`BackendKind.set_interactive`). Backends not imported yet are not imported for it (a
    command pays only for the backend it uses): `backend_kind` tells them on import."""
    global _interactive
    _interactive = on
    for name in NAMES:
        module = sys.modules.get(f"{__name__}.{name}")
        kind: BackendKind | None = getattr(module, "KIND", None)
        if kind is not None and kind.set_interactive is not None:
            kind.set_interactive(on)


#: whether this process is a `ds` command (`set_command`)
_command = False


def set_command(on: bool) -> None:
    """Say whether this process is a `ds` command (the CLI says so while one runs). Only
    then may a backend start its workers by forking this process (`in_command`): a program
    that uses the package is not forked behind its back."""
    global _command
    _command = on


def in_command() -> bool:
    """Whether this process is a `ds` command (`set_command`)."""
    return _command
