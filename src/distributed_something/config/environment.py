"""A worker's config from its environment, as a container gets it from the task definition."""

from __future__ import annotations

import json
from collections.abc import Mapping

from distributed_something.config.model import Config
from distributed_something.errors import InputError

SOURCE = "environment"


def config_from_environment(env: Mapping[str, str]) -> Config | None:
    """The run config carried by environment variables, or None when there is none.

    ``DS_CONFIG`` (the whole config as JSON, written by `ds setup` into the task definition)
    wins; otherwise the family's variable names (``APP_NAME``, ``SQS_QUEUE_URL``,
    ``CHECK_IF_DONE_BOOL``…) are read as a legacy config.py would be. Only known variable
    names are read, so the rest of the environment never leaks into the config.
    """
    from distributed_something.config.legacy import (
        LEGACY_FIELDS,
        family_defaults,
        legacy_data,
        legacy_name,
    )
    from distributed_something.config.loader import validate_data

    if env.get("DS_CONFIG"):
        try:
            data = json.loads(env["DS_CONFIG"])
        except json.JSONDecodeError as exc:
            raise InputError(
                SOURCE, "DS_CONFIG", f"is not valid JSON ({exc.msg})", "run `ds setup` again"
            ) from None
        except RecursionError:  # not written by `ds setup`: nested beyond json's parser
            raise InputError(
                SOURCE,
                "DS_CONFIG",
                "is nested too deeply to be a run config",
                "run `ds setup` again",
            ) from None
        return validate_data(data, f"{SOURCE} DS_CONFIG")
    if not (env.get("APP_NAME") and env.get("SQS_QUEUE_URL")):
        return None
    variables = {k: v for k, v in env.items() if k in LEGACY_FIELDS}
    data = family_defaults(legacy_data(variables, SOURCE))
    return validate_data(data, SOURCE, name_field=legacy_name, show=repr)
