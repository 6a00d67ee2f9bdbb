"""Errors users see. Each carries the exit code of docs/design.md §4 and prints as one line.

`main` prints ``str(error)`` once, without a traceback: messages name the file, the field
and the fix, so they must read well on their own.
"""

from __future__ import annotations


class DSError(Exception):
    """Base for every error `ds` reports to the user instead of a traceback."""

    exit_code = 3


class InputError(DSError):
    """Bad input (config, job file, fleet file, CLI argument, job value): exit code 2.

    Raised before anything is created, sent or deleted.
    """

    exit_code = 2

    def __init__(self, source: str, field: str | None, problem: str, fix: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class BackendError(DSError):
    """A backend (queue, storage, compute) failed: exit code 3."""

    exit_code = 3


class QueueGone(BackendError):
    """The run's queue no longer exists (deleted by cleanup, or never made): the run is over.

    Raised by a queue call that can only fail this way for good, so a worker stops
    instead of polling a queue that will not come back.
    """

    exit_code = 3


class PermanentTaskError(DSError):
    """A task's attempt failed in a way no retry can change (an output the storage cannot
    take, a link out of the output folder): the worker records the attempt as dead and
    deletes its message at once, instead of running the task again only to fail the same way.
    """

    exit_code = 1
