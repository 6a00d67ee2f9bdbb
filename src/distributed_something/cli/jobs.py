"""`ds jobs …`: job file generators. The options come from each generator's declaration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from distributed_something.cli.main import cli
from distributed_something.jobs.cellpainting.options import ARGUMENTS, spec_from_options
from distributed_something.jobs.cellpainting.writer import write_jobs
from distributed_something.ui import info


@cli.group()
def jobs() -> None:
    """Write job files (e.g. the Cell Painting steps DCP users know)."""


def _cellpainting(output: Path, force: bool, **options: Any) -> None:
    """Write the DCP job file(s) of one Cell Painting step (one per plate when each plate has
    its own LoadData CSV)."""
    for path in write_jobs(spec_from_options(options), output, force=force):
        info(f"wrote {path}")


def _build() -> click.Command:
    command: Any = _cellpainting
    for argument in reversed(ARGUMENTS):
        choice = click.Choice(argument.choices) if argument.choices else None
        if argument.kind == "argument":
            command = click.argument(argument.name, type=choice)(command)
        elif argument.kind == "flag":
            command = click.option(
                argument.declaration,
                argument.name,
                is_flag=True,
                default=argument.default,
                help=argument.help,
            )(command)
        else:
            command = click.option(
                argument.declaration,
                argument.name,
                type=choice,
                multiple=argument.multiple,
                default=argument.default,
                metavar=argument.metavar,
                help=argument.help,
            )(command)
    command = click.option("--force", is_flag=True, help="overwrite existing job files")(command)
    command = click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("job.json"),
        show_default=True,
        help="the job file to write ({plate} in the name: one per plate)",
    )(command)
    return jobs.command("cellpainting")(command)


cellpainting = _build()
