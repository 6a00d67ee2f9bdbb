"""`ds doctor`: is the account the project's backend runs on ready? Checks, never changes.

The checks are the backend's (`BackendKind.doctor`; on AWS: credentials and region, the
roles `ds aws bootstrap` creates, the fleet file's network and AMI, the buckets, the
cluster of a recorded run). Each finding says what is wrong and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

from distributed_something.backends import backend_kind
from distributed_something.errors import InputError
from distributed_something.interfaces.backend import Finding
from distributed_something.project import Project


def doctor(
    project: Project, fleet_path: Path | None = None, prefix: str | None = None
) -> list[Finding]:
    """Every finding about the account the project's backend runs on, in the order checked.

    Raises `InputError` when the project's backend has no account to check (only AWS has),
    or the fleet file is not a valid spot fleet request (`fleet.load_fleet`). When the
    credentials do not work, that is the only finding (every other check would fail the
    same way).
    """
    config = project.config
    kind = backend_kind(config.backend)
    if kind.doctor is None:
        raise InputError(
            "argument",
            "backend",
            f"ds doctor checks an AWS account; this project runs on {config.backend!r}",
            'add --backend aws (or set backend = "aws" in the config)',
        )
    return kind.doctor(project, fleet_path, prefix)
