"""The layering promise of `interfaces/__init__.py`: nothing outside `backends/` names a
concrete backend. Every module under worker/, monitor/, usecases/, recipes/ and cli/ is read
(its AST, so imports inside functions count too) and none may import the AWS, local or Slurm
backend's own modules; the lookup by name (`distributed_something.backends`) is allowed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import distributed_something

PACKAGE = Path(distributed_something.__file__).parent
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
