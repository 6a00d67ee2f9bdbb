"""Running a function in a process forked from this one (`ForkCall`), where a backend can.

A backend whose work is CPU-bound Python on the machine the command runs on (the local
records) offers one, so that a long reading can use a second core; elsewhere there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class ForkedCall(Protocol):
    """A function running in a forked child."""

    def result(self) -> Any:
        """Wait for the child and return what the function returned (pickled back); raises
        `BackendError` when the child failed or died."""
        ...

    def cancel(self) -> None:
        """Stop the child (if it still runs) and reap it."""
        ...


#: Starts ``fn`` in a child forked from this process; None when forking is not safe here
#: (another thread runs, or the process is not a `ds` command), for the caller to do the
#: work itself.
ForkCall = Callable[[Callable[[], Any]], ForkedCall | None]
