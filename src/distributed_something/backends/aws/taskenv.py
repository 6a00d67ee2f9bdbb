"""What a worker container is told: the task definition's environment, and its task role.

The environment carries run settings only — never a credential (docs/design.md §6). The family's
run.py copied the user's access keys into every task definition; here the container gets its
permissions from the task role, any credential-looking ``env`` entry is dropped with a
warning, and a credential in any other field (a presigned URL as the script URL) stops setup
with an `InputError` naming the field: the rest of the config is never dropped instead.
Credentials are recognised by name and by shape (`secrets_scan`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from distributed_something import ui
from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.config.legacy import recipe_from_image
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.secrets_scan import check_config_credentials, credential_kind

#: Names that hold AWS credentials (the config loader already refuses the first three).
CREDENTIAL_NAMES = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)
#: Any other name that looks like a secret's: by a word in it (``DB_PASSWD``, ``MY_API_KEY``,
#: ``GITHUB_PAT``, ``S3_CREDS``), not any letters (``PATH``, ``AUTHOR`` are no secrets).
_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY"
    r"|(?:^|_)(?:PASS|PWD|PAT|CREDS?|AUTH)(?:$|_)",
    re.IGNORECASE,
)
#: Names that would make the container look for a profile instead of using its task role.
_PROFILE_NAMES = frozenset({"AWS_PROFILE", "AWS_DEFAULT_PROFILE"})


def task_environment(
    config: Config, *, queue_url: str, run_id: str, quiet: bool = False
) -> dict[str, str]:
    """The container environment of a run's task definition.

    Contains the run settings under the variable names the family's worker images read
    (``SQS_QUEUE_URL``, ``AWS_BUCKET``, ``CHECK_IF_DONE_BOOL`` …, booleans as ``'True'`` /
    ``'False'``), every entry of ``config.env``, ``DS_RUN_ID`` and ``DS_CONFIG`` (the whole
    config as JSON, without ``aws.profile``: the container uses its task role). Run settings
    win over an ``env`` entry of the same name (with a warning).

    Never contains a credential: an ``env`` entry named like one (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_SECURITY_TOKEN``, or a name
    with SECRET, PASSWORD, PASSWD, TOKEN, CREDENTIAL, API_KEY, PRIVATE_KEY or ACCESS_KEY in
    it, or a word PASS, PWD, PAT, CRED(S) or AUTH), whose value holds a credential by its
    shape (`secrets_scan.credential_kind`: an AWS key or token, a presigned URL, a URL with a
    password, an API token, a private key), or naming a profile (``AWS_PROFILE``) is
    dropped — from the variables and from ``DS_CONFIG`` — and a warning names it (never its
    value). Any other field of the
    config holding a credential (``tool.script_download_url`` set to a presigned URL, say)
    raises `InputError` naming the field and the fix, before anything is returned.
    ``quiet`` leaves the warnings out (a check before setup says them once, later).
    """
    check_config_credentials(config)
    extra = without_credentials(config.env, where="env", quiet=quiet)
    settings = _run_settings(config, queue_url=queue_url)
    data: dict[str, Any] = config.model_dump(mode="json")
    data["aws"].pop("profile", None)
    data["env"] = extra
    settings["DS_RUN_ID"] = run_id
    settings["DS_CONFIG"] = json.dumps(data, sort_keys=True, separators=(",", ":"))
    for name, value in settings.items():
        # What setup's second look (`without_credentials` on the whole environment) would
        # drop must stop here instead: dropping DS_CONFIG would leave workers without a config.
        reason = _credential_reason(name, value)
        if reason is not None:
            raise InputError(
                "config",
                name,
                f"the task definition's {name} {reason}",
                _CREDENTIAL_FIX,
            )
    environment = dict(extra)
    for name, value in settings.items():
        if name in extra and extra[name] != value and not quiet:
            ui.info(
                f"[yellow]warning:[/] env.{name} is a run setting; the task definition "
                "gets the run's value instead"
            )
        environment[name] = value
    return environment


def without_credentials(
    env: Mapping[str, str], *, where: str = "environment", quiet: bool = False
) -> dict[str, str]:
    """``env`` without any entry that is or looks like a credential (see `task_environment`).

    Each dropped entry is named in a warning on stderr; values are never printed.
    """
    kept: dict[str, str] = {}
    for name, value in env.items():
        reason = _credential_reason(name, value)
        if reason is None:
            kept[name] = value
            continue
        if quiet:
            continue
        ui.info(
            f"[yellow]warning:[/] {where}.{name} {reason}: it is not written into the task "
            "definition. Workers get AWS access from the task role; give that role the "
            "permissions instead."
        )
    return kept


_CREDENTIAL_FIX = (
    "remove it from the config: the config is copied into the task definition, where anyone "
    "who can describe it reads it; workers get AWS access from the task role "
    "(aws.task_role_arn)"
)


def _credential_reason(name: str, value: str) -> str | None:
    upper = name.upper()
    if upper in CREDENTIAL_NAMES or _SECRET_NAME.search(name):
        return "looks like a credential"
    kind = credential_kind(value)
    if kind is not None:
        return f"holds {kind}"
    if upper in _PROFILE_NAMES:
        return "names a local AWS profile, which the container does not have"
    return None


def _run_settings(config: Config, *, queue_url: str) -> dict[str, str]:
    storage = config.storage
    done = config.check_if_done
    tool = config.tool
    bucket = storage.bucket
    # DCP's and DF's images read CHECK_IF_DONE_BOOL and then int(EXPECTED_NUMBER_FILES):
    # without a count they crash, so for them the check is on only when a count is set.
    # DOZC's worker (B2R-worker.py) needs no count, but its check crashes as soon as any
    # object is under output_location (`message["plate"] in i` on an object's size, a
    # TypeError it does not catch): every plate would fail once one is converted, so its
    # check stays off and finished plates are converted again (ds's own workers skip them).
    # `ds worker` reads DS_CONFIG and checks its done markers either way.
    family_check = done.enabled and done.expected_number_files is not None
    if _omezarr(config):
        family_check = False
    settings = {
        "APP_NAME": config.app_name,
        "SQS_QUEUE_URL": queue_url,
        "SQS_MESSAGE_VISIBILITY": str(config.queue.visibility),
        "SQS_DEAD_LETTER_QUEUE": config.dead_letter_queue_name,
        "JOB_RETRIES": str(config.queue.job_retries),
        # Empty bucket names mean "the main bucket", as in the family's configs (their
        # images use whatever value is set, so an empty one would break them).
        "AWS_BUCKET": bucket,
        "SOURCE_BUCKET": storage.source_bucket or bucket,
        # Unset, the family's workers (cp-worker.py) read the workspace from SOURCE_BUCKET,
        # as `ds worker` and `ds validate` do.
        "WORKSPACE_BUCKET": storage.workspace_bucket or storage.source_bucket or bucket,
        "DESTINATION_BUCKET": storage.destination_bucket or bucket,
        "UPLOAD_FLAGS": storage.upload_flags,
        "AWS_REGION": config.aws.region,
        "AWS_DEFAULT_REGION": config.aws.region,
        "ECS_CLUSTER": config.aws.ecs_cluster,
        "LOG_GROUP_NAME": config.aws.log_group_name or config.app_name,
        "DOCKER_CORES": str(config.cluster.docker_cores),
        "SECONDS_TO_START": _number(config.cluster.seconds_to_start),
        "CHECK_IF_DONE_BOOL": _flag(family_check),
        "EXPECTED_NUMBER_FILES": _optional(done.expected_number_files),
        "MIN_FILE_SIZE_BYTES": str(done.min_file_size_bytes),
        "NECESSARY_STRING": done.necessary_string,
        "DOWNLOAD_FILES": _flag(tool.download_files),
        "ALWAYS_CONTINUE": _flag(tool.always_continue),
        "USE_PLUGINS": _flag(tool.use_plugins),
        "UPDATE_PLUGINS": _flag(tool.update_plugins),
        # 'False' is DCP's "no particular commit": its images of mid-2024 check out any
        # other value, an empty one included, and exit when that fails.
        "PLUGINS_COMMIT": tool.plugins_commit or "False",
        "INSTALL_REQUIREMENTS": _flag(tool.install_requirements),
        "REQUIREMENTS_FILE": tool.requirements_file,
        # DCP's run.py: `if REQUIREMENTS_FILE: REQUIREMENTS = REQUIREMENTS_FILE` (its image
        # reads REQUIREMENTS; its own fallback to REQUIREMENTS_FILE is a shell error).
        "REQUIREMENTS": tool.requirements_file or tool.requirements,
        "SCRIPT_DOWNLOAD_URL": tool.script_download_url,
    }
    if not tool.use_plugins:
        # As DCP's run.py: the plugin settings only with USE_PLUGINS. Its images of
        # 2023-2024 act on INSTALL_REQUIREMENTS on their own, and exit at start when it
        # is 'True' without plugins to update.
        for name in ("UPDATE_PLUGINS", "PLUGINS_COMMIT", "INSTALL_REQUIREMENTS", "REQUIREMENTS"):
            del settings[name]
    return settings


def _omezarr(config: Config) -> bool:
    """Whether the run is Distributed-OmeZarrCreator's: its recipe, or its image's name
    (``…omezarr…``, ``…bioformats2raw…``), says so."""
    return config.recipe.name == "omezarr" or recipe_from_image(config.image) == "omezarr"


def _flag(value: bool) -> str:
    return "True" if value else "False"


def _optional(value: int | None) -> str:
    return "" if value is None else str(value)


def _number(value: float) -> str:
    # "5" rather than "5.0": the family's images pass it to `sleep`, which takes both.
    return str(int(value)) if float(value).is_integer() else str(value)


def task_role_arn(config: Config, settings: AwsSettings) -> str | None:
    """The IAM role the run's containers assume, or None.

    ``config.aws.task_role_arn`` when set; otherwise the ``role_arn`` of the run's AWS
    profile (``settings.profile``, else ``AWS_PROFILE``, else ``default``) in the AWS config
    file, as the family's run.py did (that role must trust ``ecs-tasks.amazonaws.com``).
    None when neither is set: the containers then only have what the instance role gives.
    Raises `InputError` when the AWS config file cannot be read.
    """
    if config.aws.task_role_arn:
        return config.aws.task_role_arn
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        session = botocore.session.Session()
        name = settings.profile or session.get_config_variable("profile") or "default"
        profiles: dict[str, dict[str, Any]] = session.full_config.get("profiles", {})
    except BotoCoreError as error:
        raise InputError(
            os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
            None,
            f"the AWS config file cannot be read ({error})",
            "correct the file, or set aws.task_role_arn (TASK_ROLE_ARN) in the run config",
        ) from None
    role = profiles.get(name, {}).get("role_arn")
    return role if isinstance(role, str) and role else None
