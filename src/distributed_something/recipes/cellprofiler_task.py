"""The cellprofiler recipe's in-task helper: ready the workdir, then become CellProfiler.

The plan of `CellProfilerRecipe` runs, in the task's workdir::

    python -m distributed_something.recipes.cellprofiler_task OPTIONS -- cellprofiler ARGS

and this module, after the worker staged the pipeline, the data file and the group's images:

1. creates the ``--mkdir`` folders (CellProfiler's default input and output folders);
2. for a LoadData CSV (``--kind csv``): checks that the group selects rows and that every
   image of those rows was staged under ``--image-dir``, writes the CSV with its
   ``PathName_*`` cells pointing there to ``--local-data-file`` (every other byte kept), and
   gives ``-g`` the group as CellProfiler matches it (``Metadata_Position=002`` → ``=2`` in a
   column of numbers); for a file list (``--kind txt``) the same with every listed file;
   a batch file (``--kind h5``) is used as it is;
3. with ``--plugins-repo``: runs ``git fetch --all`` and ``git pull`` (``--update-plugins``),
   ``git checkout COMMIT`` (``--plugins-commit``) and installs the plugins' requirements
   into CellProfiler's own Python (``--install-requirements``), as DCP's worker does — once
   per run on a machine, under a lock on the checkout (DCP does them once per container
   start; run by every task at once they collided in git and pip); when the checkout has no
   ``active_plugins`` folder, ``--plugins-directory`` becomes the checkout;
4. replaces itself with CellProfiler (``os.execv``), so CellProfiler's exit code and
   signals are the task's.

When a step fails it writes the reason to ``--error-file`` (the recipe's ``check_success``
reports it), prints it, and exits with 2 (bad input) or 1 (a plugin command failed).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed_something.errors import InputError
from distributed_something.recipes.cellprofiler import PLUGINS_REPO_ENV, parse_metadata
from distributed_something.recipes.loaddata import (
    cellprofiler_group,
    file_list_images,
    group_argument,
    group_images,
    read_load_data,
    rewrite_file_list,
    rewrite_load_data,
)

__all__ = ["TaskError", "main", "prepare", "prepare_plugins", "tool_python"]

Run = Callable[..., Any]

_PREFIX = "ds cellprofiler:"


class TaskError(Exception):
    """A step failed before CellProfiler could start; ``exit_code`` is the helper's."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distributed_something.recipes.cellprofiler_task",
        description="Ready a CellProfiler task's workdir, then run CellProfiler "
        "(the arguments after -- are CellProfiler's command).",
    )
    parser.add_argument("--kind", choices=("csv", "txt", "h5"), required=True)
    parser.add_argument("--data-file", type=Path, help="the data file as downloaded")
    parser.add_argument("--local-data-file", type=Path, help="where to write it rewritten")
    parser.add_argument("--image-dir", type=Path, required=True)
    parser.add_argument("--group", required=True, help='"k=v,k=v", as in -g')
    parser.add_argument("--metadata-id", default="")
    parser.add_argument("--error-file", type=Path, required=True)
    parser.add_argument("--mkdir", type=Path, action="append", default=[])
    parser.add_argument(
        "--relative-to", default="", help="the key a LoadData CSV's relative paths are under"
    )
    parser.add_argument("--plugins-repo", type=Path)
    parser.add_argument("--update-plugins", action="store_true")
    parser.add_argument("--plugins-commit", default="")
    parser.add_argument("--install-requirements", action="store_true")
    parser.add_argument("--requirements-file", default="")
    parser.add_argument("--requirements", default="")
    return parser


def _say(message: str) -> None:
    print(f"{_PREFIX} {message}", flush=True)


def _replace_value(command: list[str], flag: str, value: str) -> None:
    """Set the value of ``flag`` in ``command`` (``-g VALUE`` or ``--flag=VALUE`` forms)."""
    for index, item in enumerate(command):
        if item == flag and index + 1 < len(command):
            command[index + 1] = value
            return
        if item.startswith(flag + "="):
            command[index] = f"{flag}={value}"
            return


def _read(path: Path) -> str:
    # Bytes that are not UTF-8 survive the round trip unchanged.
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise TaskError(f"the data file {path} was not downloaded") from None


def _missing(image_dir: Path, keys: Sequence[str], *, skipped: bool = False) -> None:
    """Stop the task when images of the group were not staged; with ``skipped``
    (``--always-continue``, whose missing images the worker passes over) say so and go on:
    CellProfiler skips those image sets, as DCP's on its bucket mount."""
    missing = [key for key in keys if not (image_dir / key).is_file()]
    if missing and skipped:
        _say(
            f"{len(missing)} of the group's {len(keys)} image(s) are not in storage, e.g. "
            f"{missing[0]}: CellProfiler skips their image sets (--always-continue)"
        )
    elif missing:
        raise TaskError(
            f"{len(missing)} of the group's {len(keys)} image(s) are not in {image_dir}, e.g. "
            f"{missing[0]}: the worker stages them through the recipe's more_inputs hook; a "
            "worker without that hook cannot run the cellprofiler recipe"
        )


def prepare(
    options: argparse.Namespace, command: list[str], *, run: Run = subprocess.run
) -> list[str]:
    """Do steps 1–3 of the module docstring; returns the CellProfiler argv to run.

    Raises ``TaskError`` for anything that stops the task (bad data file, missing images,
    a failed plugin command).
    """
    command = list(command)
    if options.metadata_id:
        _say(f"metadata id {options.metadata_id} (DCP's output folder and log name)")
    for folder in options.mkdir:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        metadata = parse_metadata(options.group, source="argument", field="--group")
        if options.kind in ("csv", "txt"):
            if options.data_file is None or options.local_data_file is None:
                raise TaskError("--data-file and --local-data-file are needed for csv and txt")
            source = options.data_file.name
            text = _read(options.data_file)
            if options.kind == "csv":
                table = read_load_data(text, source=source)
                base = options.relative_to
                keys = group_images(table, metadata, source=source, base=base)
                rewritten = rewrite_load_data(text, options.image_dir, source=source, base=base)
                group = group_argument(cellprofiler_group(table, metadata, source=source))
                if group != options.group:
                    _say(f"-g {group} (CellProfiler reads these columns as numbers)")
                _replace_value(command, "-g", group)
            else:
                keys = file_list_images(text, source=source)
                rewritten = rewrite_file_list(text, options.image_dir, source=source)
            _missing(options.image_dir, keys, skipped="--always-continue" in command)
            options.local_data_file.parent.mkdir(parents=True, exist_ok=True)
            options.local_data_file.write_bytes(rewritten.encode("utf-8", errors="surrogateescape"))
            _say(
                f"{len(keys)} image(s) of the group; paths rewritten into {options.local_data_file}"
            )
    except InputError as error:
        raise TaskError(str(error)) from None
    if options.plugins_repo is not None:
        command = prepare_plugins(options, command, run=run)
    return command


def tool_python(executable: str) -> str:
    """The Python of the CellProfiler installation ``executable`` belongs to (from its
    ``#!`` line, else the ``python`` beside it); raises ``TaskError`` when there is none."""
    found = shutil.which(executable)
    if found is None:
        raise TaskError(f"cannot find {executable!r} to install plugin requirements for")
    real = Path(found).resolve()
    try:
        with real.open("rb") as fh:
            first = fh.readline(4096).decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        interpreter = shlex.split(first[2:])[0] if first[2:].strip() else ""
        if (
            interpreter
            and Path(interpreter).name.startswith("python")
            and Path(interpreter).exists()
        ):
            return interpreter
    beside = real.parent / "python"
    if beside.exists():
        return str(beside)
    raise TaskError(f"cannot tell which Python {executable!r} runs on, to install requirements")


def _run(run: Run, argv: list[str], cwd: Path) -> None:
    _say(f"plugins: {shlex.join(argv)}")
    try:
        run(argv, cwd=cwd, check=True)
    except subprocess.CalledProcessError as error:
        raise TaskError(f"{shlex.join(argv)} exited with code {error.returncode}", 1) from None
    except OSError as error:
        raise TaskError(f"cannot run {argv[0]!r}: {error}", 1) from None


def prepare_plugins(
    options: argparse.Namespace, command: list[str], *, run: Run = subprocess.run
) -> list[str]:
    """DCP's plugin steps in the checkout ``options.plugins_repo``; returns ``command``
    with ``--plugins-directory`` set to its ``active_plugins`` folder, or to the checkout
    itself when that folder does not exist. Raises ``TaskError`` when the checkout is
    missing or a step fails."""
    repo: Path = options.plugins_repo
    if not repo.is_dir():
        raise TaskError(
            f"the CellProfiler-plugins checkout {repo} does not exist: clone "
            "https://github.com/CellProfiler/CellProfiler-plugins there, or set "
            f"{PLUGINS_REPO_ENV} in the config's [env] table to where it is"
        )
    steps = options.update_plugins or options.plugins_commit or options.install_requirements
    if steps:
        with _plugins_lock(repo) as stamp:
            key = _steps_key(options, command)
            if stamp is not None and key and _stamp(stamp) == key:
                _say("plugins: set up already in this run (fetch, checkout, install skipped)")
            else:
                _plugin_steps(options, command, repo, run)
                if stamp is not None and key:
                    stamp.write_text(key, encoding="utf-8")
    active = repo / "active_plugins"
    directory = active if active.is_dir() else repo
    if directory is repo:
        _say(f"{active} does not exist: using {repo} as the plugins directory")
    command = list(command)
    _replace_value(command, "--plugins-directory", str(directory))
    return command


def _plugin_steps(options: argparse.Namespace, command: list[str], repo: Path, run: Run) -> None:
    """DCP's run-worker.sh: ``git fetch --all`` and ``git pull`` (on a branch: a checked-out
    commit has none to pull; a pull that fails is said and passed, as DCP's), ``git checkout
    COMMIT``, then the requirements' install."""
    if options.update_plugins:
        _run(run, ["git", "fetch", "--all"], repo)
        if _on_branch(repo):
            try:
                _run(run, ["git", "pull", "--ff-only"], repo)
            except TaskError as error:  # as in DCP: no upstream, or diverged: goes on
                _say(f"plugins: {error}; the checkout is used as it is")
    if options.plugins_commit:
        _run(run, ["git", "checkout", options.plugins_commit], repo)
    if options.install_requirements:
        pip = [tool_python(command[0]), "-m", "pip", "install"]
        if options.requirements_file:
            _run(run, [*pip, "-r", str(repo / options.requirements_file)], repo)
        elif options.requirements and (repo / options.requirements).is_file():
            # DCP before CellProfiler-plugins 1.0: REQUIREMENTS named a requirements file.
            _run(run, [*pip, "-r", str(repo / options.requirements)], repo)
        elif options.requirements:
            _run(run, [*pip, "-e", f"{repo}[{options.requirements}]"], repo)
        else:
            _run(run, [*pip, "-e", str(repo)], repo)


def _on_branch(repo: Path) -> bool:
    try:
        return (repo / ".git" / "HEAD").read_text(encoding="utf-8").startswith("ref:")
    except OSError:
        return False


def _steps_key(options: argparse.Namespace, command: list[str]) -> str:
    """What the plugin steps did, for the run that did them (``DS_RUN_ID``): DCP does them
    once per container, not per task; "" (do them) outside a run."""
    run_id = os.environ.get("DS_RUN_ID", "")
    if not run_id:
        return ""
    return "\n".join(
        [
            run_id,
            str(options.update_plugins),
            options.plugins_commit or "",
            str(options.install_requirements),
            options.requirements or "",
            options.requirements_file or "",
            command[0],
        ]
    )


@contextlib.contextmanager
def _plugins_lock(repo: Path) -> Iterator[Path | None]:
    """Hold an exclusive lock on the checkout while its plugin steps run: the machine's
    other worker processes would run git and pip in it at the same moment. Yields where the
    steps' record (`_steps_key`) is kept, None when no lock could be taken (the steps run
    anyway, as before)."""
    base = repo / ".git" if (repo / ".git").is_dir() else repo
    try:
        fd = os.open(base / "ds-plugins.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield base / "ds-plugins.done"
    finally:
        os.close(fd)


def _stamp(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise TaskError(
            f"CellProfiler ({name!r}) is not installed here: run "
            "scripts/install-cellprofiler.sh PYTHON BIN_DIR (BIN_DIR = the folder of the "
            "worker's python or a folder on PATH), or set recipe.executable"
        )
    return found


def main(
    argv: Sequence[str] | None = None,
    *,
    run: Run = subprocess.run,
    execv: Callable[[str, list[str]], object] = os.execv,
) -> int:
    """The helper's entry point: prepare, then ``execv`` CellProfiler (which never returns
    unless ``execv`` is replaced, as in tests). Returns the exit code of a failure."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--" not in arguments or arguments.index("--") == len(arguments) - 1:
        print(f"{_PREFIX} usage: OPTIONS -- cellprofiler ARGS", file=sys.stderr)
        return 2
    split = arguments.index("--")
    options = _parser().parse_args(arguments[:split])
    command = arguments[split + 1 :]
    try:
        command = prepare(options, command, run=run)
        executable = _executable(command[0])
    except TaskError as error:
        message = str(error)
        try:
            options.error_file.parent.mkdir(parents=True, exist_ok=True)
            options.error_file.write_text(message + "\n")
        finally:
            print(f"{_PREFIX} {message}", file=sys.stderr, flush=True)
        return error.exit_code
    _say(f"running {shlex.join(command)}")
    sys.stderr.flush()
    execv(executable, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
