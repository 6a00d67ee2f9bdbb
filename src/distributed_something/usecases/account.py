"""`ds aws bootstrap` / `ds aws destroy`: the one-time account resources of a backend that
has an account (AWS; `BackendKind.bootstrap` and ``destroy``)."""

from __future__ import annotations

from distributed_something.backends import backend_kind
from distributed_something.errors import InputError
from distributed_something.project import Project


def _no_account(backend: str) -> InputError:
    return InputError(
        "argument", "backend", f"the {backend} backend has no account resources", "use aws"
    )


def bootstrap_account(
    project: Project, prefix: str | None = None, *, backend: str = "aws"
) -> dict[str, str]:
    """Create (or update) the roles, instance profile, topic and monitor function; returns
    their ARNs. Policies are scoped to resources whose names start with the prefix (default:
    the app name), and to the config's own queue and log group names. Raises `InputError`
    for a prefix that cannot start IAM role names."""
    bootstrap = backend_kind(backend).bootstrap
    if bootstrap is None:
        raise _no_account(backend)
    return bootstrap(project, prefix)


def destroy_account(
    project: Project, prefix: str | None = None, *, backend: str = "aws"
) -> list[str]:
    """Remove what `bootstrap_account` created; returns what was removed."""
    destroy = backend_kind(backend).destroy
    if destroy is None:
        raise _no_account(backend)
    return destroy(project, prefix)
