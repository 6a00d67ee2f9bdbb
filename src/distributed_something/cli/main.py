"""`ds` entry point: the command group, aliases, and error handling (one line, no traceback)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from distributed_something import __version__
from distributed_something.errors import DSError, InputError
from distributed_something.ui import console
from distributed_something.usecases.project import BACKEND_ENV, BACKENDS

F = TypeVar("F", bound=Callable[..., Any])

#: the original run.py's command names, kept working
ALIASES = {"submitJob": "submit", "startCluster": "start-cluster"}


class AliasedGroup(click.Group):
    """A group that also answers to the family's camelCase command names."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest


def _set_backend(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Exported rather than passed along: the local backend's worker processes (and a
    # worker's side-by-side processes) must open the config with the same backend.
    if value is None:
        return
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = value

    def restore() -> None:
        # In-process callers (tests, embedding) get their environment back.
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous

    ctx.call_on_close(restore)


def _change_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    # Like `git -C` and `make -C`: everything after it reads from that folder (the config,
    # job files, the run's .ds/), as if `ds` had been started there.
    if value is None:
        return
    if not value.is_dir():
        raise InputError(
            "argument", "-C", f"{value} is not a folder", "give the project folder (with ds.toml)"
        )
    previous = Path.cwd()
    os.chdir(value)
    ctx.call_on_close(lambda: os.chdir(previous))


def directory_option(fn: F) -> F:
    """-C DIR: run as if started in DIR (the project folder). Given to the group and to each
    command that reads a config."""
    return click.option(
        "-C",
        "directory",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        metavar="DIR",
        expose_value=False,
        is_eager=True,
        callback=_change_dir,
        help="run in the project folder DIR (like git -C / make -C)",
    )(fn)


def backend_option(fn: F) -> F:
    """--backend local|aws|slurm: use that backend instead of the config's, without editing it
    (default: $DS_BACKEND, else the config's). Given to the group and to each command."""
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_set_backend,
        help="run on this backend instead of the config's (also: DS_BACKEND)",
    )(fn)


@click.group(cls=AliasedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ds")
@backend_option
@directory_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Distributed-Something: run a command over many jobs, locally, on a Slurm cluster or
    on AWS spot capacity.

    Commands read ds.toml (or a legacy config.py) from the current folder, from the folder
    `-C DIR` names, or the file or folder `--config` names. What is written for people
    (tables, messages, progress) goes to stderr: `ds status 2>&1 | less` pages it; --json
    answers go to stdout.

    Shell completion: eval "$(_DS_COMPLETE=bash_source ds)" in ~/.bashrc (zsh_source for
    zsh; fish: _DS_COMPLETE=fish_source ds | source).
    """
    from distributed_something.backends import set_command, set_interactive

    set_command(True)  # its local workers may be forked from it (backends/local/forking.py)
    ctx.call_on_close(lambda: set_command(False))
    if ctx.invoked_subcommand not in ("worker", "monitor"):
        # A person waits: AWS that cannot be reached is said in seconds (see clients). The
        # workers and the hours-long monitor keep botocore's patient retries.
        set_interactive(True)
        ctx.call_on_close(lambda: set_interactive(False))


#: The signal that interrupted the command (`_stop_like_ctrl_c`); Ctrl-C's by default.
_interrupted_by = [signal.SIGINT]


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (`timeout`, `kill`, a batch system's time limit) and SIGHUP (the terminal
    closed) stop a command as Ctrl-C does: `ds run` stops its workers (their tasks go back
    to the queue) and says how to resume, instead of dying with its workers left running
    and nothing said. `ds worker` sets its own handlers."""
    _interrupted_by[0] = signal.Signals(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run `ds`; exit codes: 0 ok, 1 run failed (dead tasks), 2 bad input, 3 backend error,
    128 + the signal's number when interrupted (130: Ctrl-C; 143: SIGTERM; 129: SIGHUP).

    Errors are one line on stderr; with ``--json`` they are also ``{"error": {...}}`` on
    stdout, with the same exit code."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    if argv is None:  # the `ds` program itself, not a caller of `main` in its own process
        for stop in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(stop) is signal.SIG_DFL:  # SIG_IGN (nohup) stays ignored
                signal.signal(stop, _stop_like_ctrl_c)
    from distributed_something.config.legacy import LEGACY_CONFIG_READ, legacy_error

    LEGACY_CONFIG_READ.set(False)  # a caller in this process may run several commands
    try:
        from distributed_something.cli import commands, jobs  # noqa: F401 - registers them

        result: Any = cli.main(args=args, prog_name="ds", standalone_mode=False)
        if argv is None:
            # The command is done: a Ctrl-C from here on (the interpreter's exit) cannot
            # stop anything, and would only turn its exit status into an interruption's.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except DSError as exc:
        if isinstance(exc, InputError):
            # A legacy config.py's user knows its variables, not ds.toml's field names.
            exc = legacy_error(exc, config_py=LEGACY_CONFIG_READ.get())
        _fail(str(exc), exc.exit_code, as_json, exc)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click makes a Ctrl-C inside a command an Abort (caused by the KeyboardInterrupt);
        # an Abort of its own is a prompt declined
        declined = isinstance(exc, click.exceptions.Abort) and not isinstance(
            exc.__cause__, KeyboardInterrupt
        )
        said = "aborted" if declined else "interrupted"
        if _interrupted_by[0] != signal.SIGINT:
            said = f"interrupted ({_interrupted_by[0].name})"
        console.print(said)
        sys.exit(128 + int(_interrupted_by[0]))
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            # Bare `ds` (or `ds dead`): the usage, as asked for; not an error.
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        # One line, like every other input error: what is wrong and where to look.
        command = exc.ctx.command_path if exc.ctx is not None else "ds"
        said = exc.format_message().rstrip(".")
        end = "" if said.endswith("?") else "."  # click's "Did you mean 'status'?"
        message = f"argument: {said}{end} Fix: see `{command} --help`"
        _fail(message, 2, as_json)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        _fail(_full_message(exc), 3, as_json)
    sys.exit(result if isinstance(result, int) else 0)


#: A full disk (or quota) is the machine's state, not a bug: one line, not a traceback.
_FULL = {errno.ENOSPC, errno.EDQUOT}


def _full_message(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return (
        f"{exc.strerror or 'no space left on device'}{where}: the disk holding the project's "
        ".ds folder, its storage or the workers' scratch is full. Fix: free space there (`df -h "
        ".` shows it), then run the same command again: a run in progress resumes, and "
        "nothing recorded done is lost"
    )


def _fail(message: str, code: int, as_json: bool, exc: DSError | None = None) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if as_json:
        error: dict[str, Any] = {"message": message, "exit_code": code}
        if isinstance(exc, InputError):
            error |= {
                "source": exc.source,
                "field": exc.field,
                "problem": exc.problem,
                "fix": exc.fix,
            }
        error["kind"] = type(exc).__name__ if exc is not None else "UsageError"
        sys.stdout.write(json.dumps({"error": error}, indent=1) + "\n")
    sys.exit(code)
