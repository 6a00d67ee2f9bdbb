"""Loaded by every Python the AWS tests start (their PYTHONPATH names this folder): when
``DS_TEST_AWS_VIOLATIONS`` names a file, each AWS client `ds` makes in that process has the
requests it builds checked against the API reference's limits (tests/aws_constraints.py), and
every violation is appended to the file, which the test reads at its end. Nothing is imported
until `ds` imports its AWS clients module, so processes that make no AWS call pay nothing."""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path
from typing import Any

_TARGET = "distributed_something.backends.aws.clients"
_SINK = os.environ.get("DS_TEST_AWS_VIOLATIONS", "")


def _install(module: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import aws_constraints

    def report(line: str) -> None:
        with open(_SINK, "a", encoding="utf-8") as sink:
            sink.write(f"pid {os.getpid()}: {line}\n")

    module.client_observers.append(lambda made: aws_constraints.watch(made, report))


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        _install(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = None
        for finder in sys.meta_path:  # whichever finds ds (a path, an editable install)
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if _SINK:
    sys.meta_path.insert(0, _Finder())
