"""The layering promise of `interfaces/__init__.py`: nothing outside `backends/` names a
concrete backend. Every module under worker/, monitor/, usecases/, recipes/ and cli/ is read
(its AST, so imports inside functions count too) and none may import the AWS, local or Slurm
backend's own modules; the lookup by name (`distributed_something.backends`) is allowed.

The tests keep a layering too: no module under tests/ imports a test module (``test_*``);
what several test files share lives in helper modules (tests/testkit.py,
tests/moto_projects.py, tests/aws_agent.py …), so running one test file never collects or
depends on another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import distributed_something

PACKAGE = Path(distributed_something.__file__).parent
TESTS = Path(__file__).resolve().parent
LAYERS = ("worker", "monitor", "usecases", "recipes", "cli")
FORBIDDEN = tuple(f"distributed_something.backends.{name}" for name in ("aws", "local", "slurm"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(text: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in the module ``text`` of ``package``, at any
    depth; relative imports resolved, and ``from X import a`` yields ``X.a`` as well as
    ``X`` (``a`` may be a module)."""
    here = package.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def backend_imports(text: str, package: str) -> list[tuple[int, str]]:
    """The imports of a concrete backend among `imported_modules`."""
    return [
        (line, module)
        for line, module in imported_modules(text, package)
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)
    ]


def layer_modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (PACKAGE / layer).rglob("*.py"))


def test_every_layer_has_modules() -> None:
    # A renamed folder would otherwise make the check below pass on nothing.
    for layer in LAYERS:
        assert list((PACKAGE / layer).rglob("*.py")), layer


@pytest.mark.parametrize("path", layer_modules(), ids=module_name)
def test_no_concrete_backend_import(path: Path) -> None:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = backend_imports(path.read_text(encoding="utf-8"), package)
    assert not found, "\n".join(f"{name} (line {line}) imports {module}" for line, module in found)


@pytest.mark.parametrize(
    "source",
    [
        "import distributed_something.backends.aws.clients",
        "from distributed_something.backends.aws.clients import settings_from",
        "from distributed_something.backends import aws",
        "from distributed_something.backends import local as lb",
        "from distributed_something.backends.slurm import open_slurm",
        "from ..backends.local.storage import FolderStorage",
        "from ..backends import slurm",
        "def lazy():\n    if True:\n        from distributed_something.backends.aws import x\n",
    ],
)
def test_check_catches(source: str) -> None:
    assert backend_imports(source, "distributed_something.usecases"), source


@pytest.mark.parametrize(
    "source",
    [
        "from distributed_something.backends import backend_kind, open_backend",
        "from distributed_something.interfaces.backend import Backend",
        "from ..backends import NAMES",
        "import distributed_something.backends_extra.aws",
        "from distributed_something.backends.awsome import x",
    ],
)
def test_check_allows(source: str) -> None:
    assert backend_imports(source, "distributed_something.usecases") == [], source


# --- tests import no test module ----------------------------------------------------------------

#: Calls that import the module named by their first argument.
IMPORT_CALLS = ("import_module", "importorskip", "__import__")


def is_test_module(name: str) -> bool:
    """True when a part of the dotted module ``name`` is a test module's (``test_*``)."""
    return any(part.startswith("test_") for part in name.split("."))


def imports_of_test_modules(text: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a test module in the source ``text``, at any depth:
    ``import``, ``from … import`` (for ``from . import x``, the names), and
    ``importlib.import_module`` / ``pytest.importorskip`` / ``__import__`` of a literal
    name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.module is not None:
                if is_test_module(node.module):
                    found.append((node.lineno, node.module))
            else:
                found += [(node.lineno, a.name) for a in node.names if is_test_module(a.name)]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in IMPORT_CALLS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and is_test_module(first.value)
            ):
                found.append((node.lineno, first.value))
    return found


# Every module of tests/: helper modules must not reach into test modules either.
TEST_SOURCES = sorted(TESTS.glob("*.py"))


def test_tests_folder_has_test_modules() -> None:
    # A moved folder would otherwise make the check below pass on nothing.
    assert len([p for p in TEST_SOURCES if p.name.startswith("test_")]) > 10


def test_no_test_module_imports_another() -> None:
    found = [
        f"tests/{path.name} (line {line}) imports {module}"
        for path in TEST_SOURCES
        for line, module in imports_of_test_modules(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        "a test module is imported; move what is shared into a helper module "
        "(tests/testkit.py, tests/moto_projects.py …):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import test_e2e_aws",
        "import test_e2e_aws as e2e",
        "import os, test_cli",
        "from test_reliability_chaos import REGION, ds_ok",
        "from tests.test_e2e_legacy import check_monitor_file",
        "from . import test_cli",
        "from .test_cli import x",
        "def lazy():\n    if True:\n        from test_e2e_aws import make_project\n",
        "class T:\n    def m(self):\n        import test_cli\n",
        "import importlib\nimportlib.import_module('test_e2e_aws')",
        "import pytest\npytest.importorskip('test_cli')",
        "__import__('test_cli')",
    ],
)
def test_test_import_check_catches(source: str) -> None:
    assert imports_of_test_modules(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import testkit",
        "from testkit import wait_for",
        "from moto_projects import aws_client",
        "from conftest import write_project",
        "from distributed_something.testing import x",
        "from hypothesis import strategies as st",
        "import importlib\nimportlib.import_module(name)",
        "x = 'from test_cli import y'",
    ],
)
def test_test_import_check_allows(source: str) -> None:
    assert imports_of_test_modules(source) == [], source
