"""`ds image build`: the worker image on top of any tool image, with docker or podman."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from distributed_something.errors import BackendError, InputError

ENGINES = ("docker", "podman")
#: Where the bundled Python comes from by default (docker/bundle_python.py): any glibc image
#: with Python >= 3.11 does; the tool image's own Python is never used.
PYTHON_IMAGE = "python:3.11-slim-bookworm"


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


def build_argv(
    engine: str,
    *,
    base: str,
    tag: str,
    root: Path,
    extras: str = "aws",
    volumes: Sequence[str] = (),
    python_image: str = PYTHON_IMAGE,
) -> list[str]:
    """The build command: docker/Dockerfile from ``root`` on top of ``base``, tagged ``tag``,
    with `ds` and its own Python bundled from ``python_image``.

    ``engine`` is the engine's name or path. Each of ``volumes`` (``HOST:CONTAINER[:OPTIONS]``)
    becomes a ``--volume`` of the build: mounted into every RUN step, not part of the image
    (e.g. the host's CA bundle, when the package index is reached through a TLS-re-signing
    proxy). Only podman builds take them: raises `InputError` for ``volumes`` with docker,
    or naming a host path that does not exist.
    """
    mounts: list[str] = []
    for volume in volumes:
        mounts += ["--volume", _checked_volume(engine, volume)]
    return [
        engine,
        "build",
        "-f",
        str(root / "docker" / "Dockerfile"),
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"PYTHON_IMAGE={python_image}",
        "--build-arg",
        f"DS_EXTRAS={extras}",
        *mounts,
        "-t",
        tag,
        str(root),
    ]


def _checked_volume(engine: str, volume: str) -> str:
    """``volume`` when podman can mount it into the build; `InputError` otherwise."""
    if Path(engine).name != "podman":
        raise InputError(
            "argument",
            "--volume",
            f"{Path(engine).name} build cannot mount host files into the build steps",
            "build with --engine podman, or drop --volume",
        )
    host, _, container = volume.partition(":")
    if not host or not container.strip(":"):
        raise InputError(
            "argument",
            "--volume",
            f"{volume!r} is not HOST:CONTAINER[:OPTIONS]",
            "e.g. --volume /etc/ssl/certs/ca-certificates.crt:"
            "/etc/ssl/certs/ca-certificates.crt:ro",
        )
    if not Path(host).exists():
        raise InputError(
            "argument",
            "--volume",
            f"{host} does not exist on this machine",
            "give an existing path",
        )
    return volume


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


def build_image(
    *,
    base: str,
    tag: str,
    engine: str | None = None,
    extras: str = "aws",
    volumes: Sequence[str] = (),
    python_image: str = PYTHON_IMAGE,
) -> str:
    """Build the worker image with ``engine`` (default: the first of docker, podman whose
    daemon answers); returns the tag. Output streams to stderr.

    ``volumes`` and ``python_image`` as in `build_argv` (volumes: podman only). Raises
    `InputError` for bad arguments
    (checked before the engine is probed when ``engine`` is named), `BackendError` when no
    engine answers or the build fails.
    """
    root = source_root()

    def argv_for(engine_path: str) -> list[str]:
        return build_argv(
            engine_path,
            base=base,
            tag=tag,
            root=root,
            extras=extras,
            volumes=volumes,
            python_image=python_image,
        )

    if engine is not None:  # bad arguments are input errors, whatever the engine's state
        argv_for(engine)
    argv = argv_for(find_engine(engine))
    done = subprocess.run(argv, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BackendError(f"image build failed with exit code {done.returncode}: {' '.join(argv)}")
    return tag
