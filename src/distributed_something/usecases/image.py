"""`ds image build`: the worker image on top of any tool image, with docker or podman."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from distributed_something.errors import BackendError, InputError
from distributed_something.platforms import instance_platform

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
    platform: str | None = None,
) -> list[str]:
    """The build command: docker/Dockerfile from ``root`` on top of ``base``, tagged ``tag``,
    with `ds` and its own Python bundled from ``python_image``, for ``platform`` (``os/arch``,
    ``--platform``; None: the engine's own, i.e. this machine's).

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
        *(["--platform", platform] if platform else []),
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
    platform: str | None = None,
) -> str:
    """Build the worker image with ``engine`` (default: the first of docker, podman whose
    daemon answers); returns the tag. Output streams to stderr.

    ``volumes``, ``python_image`` and ``platform`` as in `build_argv` (volumes: podman
    only). Raises
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
            platform=platform,
        )

    if engine is not None:  # bad arguments are input errors, whatever the engine's state
        argv_for(engine)
    argv = argv_for(find_engine(engine))
    done = subprocess.run(argv, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise BackendError(f"image build failed with exit code {done.returncode}: {' '.join(argv)}")
    return tag


def configured_platform(config_path: Path | None = None) -> tuple[str | None, str]:
    """The platform to build for when ``--platform`` is not given, and why, from the config
    ``config_path`` (default: the current folder's, when it has one): the one architecture of
    ``aws.machine_type`` on the AWS backend (`platforms.instance_platform`). None (build for
    this machine) without a config, on another backend (this machine's kind runs the
    containers) or when the types are of both architectures. Raises `InputError` for a bad
    config."""
    from distributed_something.config.loader import CONFIG_NAMES
    from distributed_something.usecases.project import open_project

    if config_path is None and not any(Path(name).is_file() for name in CONFIG_NAMES):
        return None, "no ds.toml or config.py here says which machines will run it"
    config = open_project(config_path).config
    if config.backend != "aws":
        return None, f"the {config.backend} backend runs it on machines like this one"
    types = list(config.aws.machine_type)
    chosen = instance_platform(types)
    if chosen is None:
        return None, f"aws.machine_type ({', '.join(types)}) is of more than one architecture"
    return chosen, f"the architecture of aws.machine_type ({', '.join(types)})"
