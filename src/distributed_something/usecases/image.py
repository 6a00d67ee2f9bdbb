"""`ds image build`: the worker image on top of any tool image, with docker or podman."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from distributed_something.errors import BackendError, InputError

ENGINES = ("docker", "podman")


def source_root() -> Path:
    """The source checkout holding docker/Dockerfile (images are built from a checkout)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "docker" / "Dockerfile").is_file() or not (root / "pyproject.toml").is_file():
        raise InputError(
            "argument",
            None,
            "`ds image build` runs from a source checkout of distributed-something",
            "clone the repository and run it there (it builds docker/Dockerfile)",
        )
    return root


def build_argv(engine: str, *, base: str, tag: str, root: Path, extras: str = "aws") -> list[str]:
    """The build command: docker/Dockerfile from ``root`` on top of ``base``, tagged ``tag``."""
    return [
        engine,
        "build",
        "-f",
        str(root / "docker" / "Dockerfile"),
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"DS_EXTRAS={extras}",
        "-t",
        tag,
        str(root),
    ]


def find_engine(preferred: str | None = None) -> str:
    """The first container engine whose daemon answers; BackendError when none does."""
    tried = []
    for engine in (preferred,) if preferred else ENGINES:
        path = shutil.which(engine)
        if path is None:
            tried.append(f"{engine}: not installed")
            continue
        probe = subprocess.run(
            [path, "info"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return path
        reason = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        tried.append(f"{engine}: {reason}")
    raise BackendError(
        "no container engine answers here (" + "; ".join(tried) + "). Fix: start Docker or "
        "podman, or build on a machine that has one: docker build -f docker/Dockerfile "
        "--build-arg BASE_IMAGE=<tool image> -t <tag> ."
    )


def build_image(*, base: str, tag: str, engine: str | None = None, extras: str = "aws") -> str:
    """Build the worker image; returns the tag. Output streams to stderr."""
    root = source_root()
    argv = build_argv(find_engine(engine), base=base, tag=tag, root=root, extras=extras)
    done = subprocess.run(argv, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BackendError(f"image build failed with exit code {done.returncode}: {' '.join(argv)}")
    return tag
