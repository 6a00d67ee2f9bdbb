"""`ds aws bootstrap` / `ds aws destroy`: the one-time account resources."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributed_something.errors import InputError
from distributed_something.project import Project

if TYPE_CHECKING:
    from distributed_something.backends.aws.teardown import AwsClients


def _clients(project: Project) -> AwsClients:
    from distributed_something.backends.aws.clients import settings_from
    from distributed_something.backends.aws.teardown import AwsClients

    config = project.config
    return AwsClients(settings_from(config.aws.region, config.aws.profile))


def _prefix(project: Project, prefix: str | None) -> str:
    chosen = prefix if prefix is not None else project.config.app_name
    if not chosen or not chosen.replace("-", "").replace("_", "").isalnum():
        raise InputError(
            "argument",
            "--prefix",
            f"{chosen!r} cannot start IAM role names",
            "use letters, digits, - and _ (default: the app name)",
        )
    return chosen


def bootstrap_account(project: Project, prefix: str | None = None) -> dict[str, str]:
    """Create (or update) the roles, instance profile, topic and monitor function; returns
    their ARNs. Policies are scoped to resources whose names start with the prefix."""
    from distributed_something.backends.aws.bootstrap import bootstrap

    storage = project.config.storage
    buckets = sorted(
        {
            b
            for b in (
                storage.bucket,
                storage.source_bucket,
                storage.workspace_bucket,
                storage.destination_bucket,
            )
            if b
        }
    )
    return bootstrap(_clients(project), _prefix(project, prefix), buckets=buckets)


def destroy_account(project: Project, prefix: str | None = None) -> list[str]:
    """Remove what `bootstrap_account` created; returns what was removed."""
    from distributed_something.backends.aws.bootstrap import destroy

    return destroy(_clients(project), _prefix(project, prefix))
