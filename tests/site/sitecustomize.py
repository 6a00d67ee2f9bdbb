"""Loaded by every Python the tests start (the suite puts this folder on PYTHONPATH).

With ``DS_TEST_NETWORK_LOG``, the process may connect to loopback addresses only
(tests/loopback_guard.py). When ``DS_TEST_AWS_VIOLATIONS`` names a file (AWS tests), each AWS
client `ds` makes in that process has the requests it builds checked against the API
reference's limits (tests/aws_constraints.py), and every violation is appended to the file,
which the test reads at its end: nothing of that is imported until `ds` imports its AWS
clients module, so processes that make no AWS call pay nothing."""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path
from typing import Any

_TARGET = "distributed_something.backends.aws.clients"
_TESTS = Path(__file__).resolve().parent.parent
_SINK = os.environ.get("DS_TEST_AWS_VIOLATIONS", "")


def _load(name: str) -> Any:
    """tests/<name>.py, loaded without putting the tests' folder on sys.path (its modules
    must not shadow anything of the process)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install(module: Any) -> None:
    aws_constraints = _load("aws_constraints")

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


if os.environ.get("DS_TEST_NETWORK_LOG"):
    _load("loopback_guard").install(os.environ["DS_TEST_NETWORK_LOG"])

if _SINK:
    sys.meta_path.insert(0, _Finder())
