"""`ds aws bootstrap` / `ds aws destroy` on AWS: the one-time account resources."""

from __future__ import annotations

import re

from distributed_something.backends.aws.bootstrap import bootstrap, destroy
from distributed_something.backends.aws.clients import AwsClients, settings_from
from distributed_something.backends.aws.name_limits import check_bootstrap_prefix
from distributed_something.backends.aws.resources import AwsNames
from distributed_something.errors import InputError
from distributed_something.project import Project

_PREFIX = re.compile(r"[A-Za-z0-9_-]+")


def _clients(project: Project) -> AwsClients:
    config = project.config
    return AwsClients(settings_from(config.aws.region, config.aws.profile))


def _prefix(project: Project, prefix: str | None) -> str:
    chosen = prefix if prefix is not None else project.config.app_name
    # ASCII only: IAM's names take no other letters ("é" passes str.isalnum).
    if not chosen or not _PREFIX.fullmatch(chosen):
        raise InputError(
            "argument",
            "--prefix",
            f"{chosen!r} cannot start IAM role names",
            "use letters, digits, - and _ (default: the app name)",
        )
    check_bootstrap_prefix(chosen, default=prefix is None)
    return chosen


def bootstrap_account(project: Project, prefix: str | None = None) -> dict[str, str]:
    """Create (or update) the roles, instance profile, topic and monitor function; returns
    their ARNs. Policies are scoped to resources whose names start with the prefix, and to
    the config's own queue and log group names."""
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
    # The config's own queue and log group names are granted too, whatever their prefix (a
    # legacy config's DeadMessages_Erin, say), merged with what earlier bootstraps granted.
    names = AwsNames(project.config)
    return bootstrap(
        _clients(project),
        _prefix(project, prefix),
        buckets=buckets,
        queues=names.queue_names,
        log_groups=names.log_group_names,
    )


def destroy_account(project: Project, prefix: str | None = None) -> list[str]:
    """Remove what `bootstrap_account` created; returns what was removed."""
    return destroy(_clients(project), _prefix(project, prefix))
