"""The `ds` program's entry point, light on purpose: a Ctrl-C while Python still loads the
command (a fifth of a second of imports) is a quiet exit, not a traceback."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Load the command line (`cli.main`) and run it; exit 130 if interrupted meanwhile."""
    try:
        from distributed_something.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(128 + int(signal.SIGINT))
    run()
