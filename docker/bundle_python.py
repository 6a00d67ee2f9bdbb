"""Bundle the running Python, its C library and `ds` into one folder that runs on any base.

Run by docker/Dockerfile in its first stage (an image with Python >= 3.11 on glibc, e.g.
python:3.11-slim-bookworm)::

    python3 bundle_python.py --prefix /opt/ds "/opt/ds-src[aws]"

and the folder is then copied into the tool image. Tool images ship old Pythons (or none) on old
C libraries; a Python built on a newer glibc cannot start there. So the bundle carries every
shared library the interpreter and the installed packages link to, glibc's own dynamic loader
included, and starts the interpreter through that loader with ``--library-path``: nothing of the
base image's Python or C library is loaded, and nothing leaks into the tools ``ds worker`` starts
(no LD_LIBRARY_PATH in their environment).

Layout (``PREFIX`` = /opt/ds)::

    PREFIX/bin/ds                      the only thing put on PATH
    PREFIX/python/bin/python3          sh wrapper: PREFIX/python/lib/runtime/<loader> ... <real>
    PREFIX/python/bin/.python3-real    the interpreter executable
    PREFIX/python/lib/pythonX.Y/       the standard library
    PREFIX/python/lib/runtime/         the loader and every shared library, from this stage
    PREFIX/venv/                       a virtual environment on that Python: ds and its deps

Needs /bin/sh in the base image (every tool image has one).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

#: Standard-library parts a worker never uses (GUI, tests, the installers of other packages).
SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}
#: ldd's line for a library it found, and for the loader itself.
LINKED = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
LOADER = re.compile(r"^\s*(/\S*ld-linux\S*)\s+\(0x[0-9a-f]+\)\s*$")
MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")
#: Loaded by glibc itself with dlopen (thread cancellation unwinds through it), so no ELF file
#: names it and ldd cannot find it.
DLOPENED = ("libgcc_s.so.1",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path("/opt/ds"))
    parser.add_argument("requirements", nargs="+", help="what pip installs into the bundle")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):  # noqa: UP036 (this stage's Python is the user's choice)
        sys.exit(
            f"bundle_python: this stage's Python is {sys.version.split()[0]}; ds needs >= 3.11. "
            "Fix: give `ds image build --python-image` an image with Python 3.11 or newer."
        )
    prefix: Path = args.prefix
    if prefix.exists():
        shutil.rmtree(prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = prefix / "python"
    real = python / "bin" / ".python3-real"
    runtime = python / "lib" / "runtime"
    for folder in (real.parent, runtime, prefix / "bin"):
        folder.mkdir(parents=True)

    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    shutil.copy2(executable, real)
    stdlib = Path(sysconfig.get_path("stdlib"))
    shutil.copytree(
        stdlib,
        python / "lib" / f"python{version}",
        symlinks=False,
        ignore=lambda folder, names: [n for n in names if skipped(n)],
    )
    venv = make_venv(prefix, version)
    pip_install(args.requirements, venv / "lib" / f"python{version}" / "site-packages")

    loader = bundle_libraries(prefix, real, runtime)
    write_script(
        python / "bin" / "python3",
        # --argv0: sys.executable is the path the wrapper was started by (the venv's python),
        # so children started with sys.executable come back through this wrapper.
        f'exec {runtime / loader.name} --inhibit-cache --library-path {runtime} --argv0 "$0" '
        f'{real} "$@"',
    )
    for alias in ("python", f"python{version}"):
        (python / "bin" / alias).symlink_to("python3")
    write_script(
        prefix / "bin" / "ds", f'exec {venv / "bin" / "python"} -m distributed_something "$@"'
    )
    check = subprocess.run(
        [str(prefix / "bin" / "ds"), "--version"], capture_output=True, text=True
    )
    if check.returncode != 0:
        sys.exit(f"bundle_python: the bundled ds does not start:\n{check.stdout}{check.stderr}")
    print(f"bundle_python: {check.stdout.strip()} on Python {version} in {prefix}")
    return 0


def skipped(name: str) -> bool:
    """Parts of the standard library that the bundle leaves out."""
    return (
        name in SKIPPED
        or name == "dist-packages"
        or name.startswith(("config-", "_tkinter", "_test"))  # build files, GUI, self-tests
    )


def make_venv(prefix: Path, version: str) -> Path:
    """A virtual environment at PREFIX/venv whose interpreter is the bundle's wrapper."""
    venv = prefix / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / f"python{version}" / "site-packages").mkdir(parents=True)
    home = prefix / "python" / "bin"
    (venv / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {sys.version.split()[0]}\n"
    )
    for name in ("python", "python3", f"python{version}"):
        (venv / "bin" / name).symlink_to(home / "python3")
    return venv


def pip_install(requirements: list[str], site: Path) -> None:
    """pip install ``requirements`` into ``site`` (with a pip of its own: Debian's Python has
    none, and pip's own files must not end up in the bundle)."""
    with tempfile.TemporaryDirectory() as scratch:
        builder = Path(scratch) / "pip"
        subprocess.run([sys.executable, "-m", "venv", str(builder)], check=True)
        pip = [str(builder / "bin" / "python"), "-m", "pip"]
        subprocess.run(
            [
                *pip,
                "install",
                "--no-cache-dir",
                "--no-warn-script-location",
                "--target",
                str(site),
                *requirements,
            ],
            check=True,
        )
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts pointing at the builder


def bundle_libraries(prefix: Path, real: Path, runtime: Path) -> Path:
    """Copy into ``runtime`` every shared library that the interpreter and the bundle's
    extension modules link to (from outside the bundle), and the dynamic loader; returns the
    loader's path on this stage."""
    loader: Path | None = None
    libc_folder = Path("/lib")
    missing: dict[str, set[str]] = {}
    elves = [real, *(p for p in prefix.rglob("*.so*") if p.is_file() and is_elf(p))]
    for elf in elves:
        listed = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
        for line in listed.stdout.splitlines():
            if found := LINKED.match(line):
                name, path = found.group(1), Path(found.group(2))
                if not path.resolve().is_relative_to(prefix):
                    copy_library(path, runtime / name)
                if name == "libc.so.6":
                    libc_folder = path.resolve().parent
            elif found := LOADER.match(line):
                loader = Path(found.group(1))
            elif found := MISSING.match(line):
                missing.setdefault(found.group(1), set()).add(str(elf.relative_to(prefix)))
    if loader is None:
        sys.exit(
            f"bundle_python: ldd names no dynamic loader for {real}. Fix: use a --python-image "
            "on glibc (e.g. python:3.11-slim-bookworm), not musl"
        )
    copy_library(loader, runtime / loader.name)
    for name in DLOPENED:
        source = dlopen_target(name) or libc_folder / name
        if source.is_file():
            copy_library(source, runtime / name)
    if str(real.relative_to(prefix)) in {e for users in missing.values() for e in users}:
        sys.exit(f"bundle_python: the interpreter links to missing libraries: {sorted(missing)}")
    for name, users in sorted(missing.items()):  # an optional module of a package, not ds's
        print(f"bundle_python: warning: {name} not found (needed by {sorted(users)})")
    return loader


def dlopen_target(name: str) -> Path | None:
    """Where this stage's loader cache finds ``name`` (``ldconfig -p``), if anywhere."""
    for ldconfig in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if shutil.which(ldconfig):
            listed = subprocess.run([ldconfig, "-p"], capture_output=True, text=True)
            for line in listed.stdout.splitlines():
                if line.strip().startswith(f"{name} ") and "=>" in line:
                    return Path(line.split("=>", 1)[1].strip())
            return None
    return None


def copy_library(source: Path, target: Path) -> None:
    if not target.exists():
        shutil.copy2(source.resolve(), target)


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def write_script(path: Path, command: str) -> None:
    path.write_text(f"#!/bin/sh\n{command}\n")
    path.chmod(0o755)


if __name__ == "__main__":
    sys.exit(main())
