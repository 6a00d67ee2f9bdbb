"""`ds` entry point: the command group, aliases, and error handling (one line, no traceback)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from distributed_something import __version__
from distributed_something.errors import DSError
from distributed_something.ui import console

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


@click.group(cls=AliasedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ds")
def cli() -> None:
    """Distributed-Something: run a command over many jobs, locally or on AWS spot capacity.

    Commands read ds.toml (or a legacy config.py) from the current folder unless --config
    names one. Progress goes to stderr; --json output goes to stdout.
    """


def main(argv: list[str] | None = None) -> None:
    """Run `ds`; exit codes: 0 ok, 1 run failed (dead tasks), 2 bad input, 3 backend error."""
    from distributed_something.cli import commands, jobs  # noqa: F401 - registers the commands

    try:
        result: Any = cli.main(args=argv, prog_name="ds", standalone_mode=False)
    except DSError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other input error: what is wrong and where to look.
        command = exc.ctx.command_path if exc.ctx is not None else "ds"
        console.print(
            f"[bold red]error:[/] argument: {escape(exc.format_message().rstrip('.'))}. "
            f"Fix: see `{command} --help`",
            soft_wrap=True,
        )
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
