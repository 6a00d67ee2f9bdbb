"""The AWS backend: SQS (+ dead-letter queue), S3, ECS on an EC2 Spot fleet, CloudWatch.

boto3 is an optional dependency (the `aws` extra); nothing here is imported by the local
path, and this module imports the rest only when a hook is called.
"""

from __future__ import annotations

from pathlib import Path

from distributed_something.interfaces.backend import Backend, BackendKind, Finding
from distributed_something.project import Project


def _require_boto3() -> None:
    """Raise the `InputError` that says how to install boto3 when it is missing: every hook
    but the local path's needs it (and some modules here import botocore at their top)."""
    try:
        import botocore  # noqa: F401 - only whether it is there
    except ImportError:
        from distributed_something.backends.aws.clients import missing_boto3

        raise missing_boto3() from None


def _open(project: Project) -> Backend:
    _require_boto3()
    from distributed_something.backends.aws.backend import open_aws

    return open_aws(project)


def _validate_notes(project: Project) -> list[str]:
    """`ds validate` on AWS: the run image, the family worker, the bucket policy coverage and
    the root volume (a legacy config is adjusted instead)."""
    _require_boto3()
    from distributed_something.backends.aws.clients import settings_from
    from distributed_something.backends.aws.fleet import check_root_volume
    from distributed_something.backends.aws.image_check import check_run_image, family_worker_note
    from distributed_something.backends.aws.name_limits import check_run_names
    from distributed_something.backends.aws.policy_check import coverage_warning
    from distributed_something.backends.aws.setup import check_task_definition_fits

    notes: list[str] = []
    check_run_names(project.config, source=str(project.config_path))
    settings = settings_from(project.config.aws.region, project.config.aws.profile)
    check_task_definition_fits(project.config, settings, source=str(project.config_path))
    check_run_image(project.config)  # `ds worker` on an image known to lack `ds`: refused
    family_note = family_worker_note(project.config)
    if family_note is not None:
        notes.append(family_note)
    coverage = coverage_warning(project.config)
    if coverage is not None:
        notes.append(coverage)
    legacy = project.config_path.suffix == ".py"
    check_root_volume(project.config, legacy=legacy, source=str(project.config_path))
    return notes


def _unread_input(project: Project, bucket: str, key: str) -> str:
    bucket = bucket or project.config.storage.bucket
    return f"it is in s3://{bucket}/{key}, and validate reads nothing that needs AWS credentials"


def _doctor(project: Project, fleet_path: Path | None, prefix: str | None) -> list[Finding]:
    _require_boto3()
    from distributed_something.backends.aws.doctor import doctor

    return doctor(project, fleet_path, prefix)


def _bootstrap(project: Project, prefix: str | None) -> dict[str, str]:
    _require_boto3()
    from distributed_something.backends.aws.account import bootstrap_account

    return bootstrap_account(project, prefix)


def _destroy(project: Project, prefix: str | None) -> list[str]:
    _require_boto3()
    from distributed_something.backends.aws.account import destroy_account

    return destroy_account(project, prefix)


def _set_interactive(on: bool) -> None:
    from distributed_something.backends.aws.clients import set_interactive

    set_interactive(on)


KIND = BackendKind(
    name="aws",
    open=_open,
    in_image=True,
    uses_fleet=True,
    upload_flags=True,
    validate_notes=_validate_notes,
    unread_input=_unread_input,
    doctor=_doctor,
    bootstrap=_bootstrap,
    destroy=_destroy,
    set_interactive=_set_interactive,
    # The service's tasks start as ECS places them on the fleet's machines and pulls the image.
    workers_asked="asked of ECS",
    workers_queued="waiting to start on a machine",
)
