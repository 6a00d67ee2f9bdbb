"""Find and load a run config (``ds.toml`` or a legacy ``config.py``) into a `Config`.

Whatever goes wrong surfaces as ONE `InputError` naming the file, the field (for legacy files,
the legacy variable) and the fix, so a user never sees a pydantic dump or a traceback.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.secrets_scan import check_config_credentials
from distributed_something.userfiles import read_user_text

MISSING_CONFIG_FIX = "check the path, or run `ds init` to create it"

CONFIG_NAMES = ("ds.toml", "config.py")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# tomllib ends its messages with where: "(at line 4, column 12)", or "(at end of document)"
# when the file ends inside something still open (a string, list, table or `key =`).
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|(end of document))\)\s*$")
_TOML_FIX = (
    'correct the syntax there: key = value, strings in "quotes", booleans as '
    "true/false, lists in [brackets], sections as [name]"
)
_TOML_END_FIX = (
    "finish the last entry: close its string, list, inline table or [section] (the missing "
    "quote, ] or }), or give its key a value"
)
# tomllib's words for a string whose closing quote is missing on its line.
_TOML_OPEN_STRING = "illegal character '\\n'"
_TOML_OPEN_STRING_FIX = (
    'close the string on that line with its quote (only """triple-quoted""" strings may span lines)'
)
# Credentials come from the AWS profile or role, never from a config (docs/design.md §6): an
# env entry would be copied into the task definition for anyone with read access to see.
_CREDENTIAL_NAMES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})

#: Turns a pydantic error location into the name the user wrote (e.g. a legacy variable).
FieldNamer = Callable[[Sequence[str | int]], str]


def find_config(folder: Path) -> Path:
    """The config of a project folder: ``ds.toml`` if present, else ``config.py``.

    Raises `InputError` when the folder holds neither.
    """
    for name in CONFIG_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise InputError(
        str(folder),
        None,
        f"no ds.toml or config.py in {folder}",
        "run it in the project folder, or name that folder with `-C DIR` (or `--config DIR`); "
        "`ds init` starts a new one",
    )


def load_config(path: Path, *, backend: str | None = None) -> Config:
    """Load and validate a run config, choosing the format by suffix.

    ``.toml`` files are read as ``ds.toml``; ``.py`` files as a legacy ``config.py`` (never
    executed). ``backend`` ("local" or "aws"), when given, replaces the file's backend (the
    ``--backend`` switch: run a config elsewhere without editing it). Raises `InputError` for
    a missing or unreadable file, bad syntax (with the line), a wrong or unknown field, or an
    invalid ``env`` name.
    """
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "the file does not exist", MISSING_CONFIG_FIX)
    if path.suffix == ".py":
        # Imported here because the legacy reader uses `validate_data` from this module.
        from distributed_something.config.legacy import load_legacy

        return load_legacy(path, backend=backend)
    if path.suffix != ".toml":
        raise InputError(
            source,
            None,
            f"'{path.suffix or path.name}' is not a config format",
            "use a ds.toml file or a legacy config.py",
        )
    data = _read_toml(path)
    if backend is not None:
        data["backend"] = backend
    return validate_data(data, source)


def validate_data(
    data: Mapping[str, Any],
    source: str,
    *,
    name_field: FieldNamer | None = None,
    show: Callable[[Any], str] | None = None,
) -> Config:
    """Validate a config mapping into a `Config`, or raise one `InputError`.

    ``name_field`` names a failing field as the user wrote it (default: the dotted path, with
    list positions as ``[i]``); ``show`` writes the offending value (default: as TOML/JSON).
    """
    namer = name_field or dotted_path
    try:
        config = Config.model_validate(dict(data))
    except ValidationError as error:
        raise validation_error(error, source, name_field=namer, show=show) from None
    _check_env(config, source, namer)
    # A credential in any field (a presigned script URL, say) is refused before anything is
    # created; `env` entries are dropped later with a warning (taskenv).
    check_config_credentials(config, source=source)
    return config


def validation_error(
    error: ValidationError,
    source: str,
    *,
    name_field: FieldNamer | None = None,
    show: Callable[[Any], str] | None = None,
) -> InputError:
    """Translate a pydantic `ValidationError` about a `Config` into one `InputError`.

    The first problem is reported (an unknown field before the others): its field (named by
    ``name_field``), pydantic's message
    with the offending value, and a fix taken from the field's ``description`` (for an
    unknown field: "remove it", with the closest known name). If there were more problems the
    fix ends with " (and N more problems)".
    """
    namer = name_field or dotted_path
    show_value = show or _toml_value
    # An unknown field first: a misspelt name (`appname`) is why a required one (`app_name`)
    # is missing, and its "did you mean" is the fix of both.
    problems = sorted(error.errors(include_url=False), key=lambda p: p["type"] != "extra_forbidden")
    first = problems[0]
    loc = first["loc"]
    kind = first["type"]
    outside_config = bool(loc) and loc[0] not in Config.model_fields
    if outside_config and kind != "extra_forbidden":
        # Raised by `Config`'s validator while deriving a name from app_name (the error is
        # located relative to the section): the app name is what the user has to change.
        loc = ("app_name",)
        problem = (
            f"the name derived from it, {show_value(first.get('input'))}, is invalid "
            f"({_lower_first(first['msg'])})"
        )
        fix = (
            'shorten it so that it plus "DeadMessages" fits in 80 characters, or set the '
            "queue names explicitly"
        )
    elif kind == "extra_forbidden" and len(loc) >= 2 and loc[-1] in Config.model_fields:
        # `backend = "aws"` written after a [table] header belongs to that table in TOML.
        table = dotted_path(loc[:-1])
        problem = (
            f"`{loc[-1]}` is a top-level setting, but it is written after the [{table}] "
            f"header, so TOML puts it in [{table}]"
        )
        fix = "move the line above the first [table] header of the file"
    elif kind == "extra_forbidden":
        section = _model_at(loc[:-1])
        known = list(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        meant = [] if close else _meant(str(loc[-1]), loc[:-1])
        problem = "unknown field"
        if len(meant) > 1:  # the same name in other sections
            fix = "move it under " + " or ".join(f"[{f.rpartition('.')[0]}]" for f in meant)
        elif meant:
            fix = _written_as(meant[0], loc[:-1])
        else:
            fix = "remove it" + (f" (did you mean `{close[0]}`?)" if close else "")
    else:
        if kind == "missing":
            problem = "this required field is missing"
        else:
            problem = f"{_lower_first(first['msg'])} (got {show_value(first.get('input'))})"
        fix = _fix_for(loc)
    if len(problems) > 1:
        more = len(problems) - 1
        fix += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InputError(source, namer(loc) if loc else None, problem, fix)


def dotted_path(loc: Sequence[str | int]) -> str:
    """A pydantic location as the user reads it: ``aws.machine_type[1]``, ``env.NAME``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- helpers -----------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    text = read_user_text(path, missing_fix=MISSING_CONFIG_FIX)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _toml_syntax_error(source, text, str(error)) from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays or inline tables.
        raise InputError(
            source,
            None,
            "nests arrays or inline tables too deeply to read",
            "a config needs a few levels at most: flatten the nested values",
        ) from None


def _toml_syntax_error(source: str, text: str, message: str) -> InputError:
    """The one-line error for tomllib's ``message`` about ``text``: the line and column
    where tomllib stopped, what it found wrong, and the fix."""
    where = _TOML_POSITION.search(message)
    problem = _lower_first(message[: where.start()] if where else message)
    if where is None:
        return InputError(source, None, f"this is not valid TOML ({problem})", _TOML_FIX)
    if where.group(3) is None:
        field = f"line {where.group(1)}, column {where.group(2)}"
        fix = _TOML_OPEN_STRING_FIX if problem == _TOML_OPEN_STRING else _TOML_FIX
        return InputError(source, field, f"this is not valid TOML ({problem})", fix)
    # tomllib gives no line at the end of the file: name the place just after the last
    # character written, where the open string, list or table ran out.
    end = len(text.rstrip())
    line, column = text.count("\n", 0, end) + 1, end - text.rfind("\n", 0, end)
    return InputError(
        source,
        f"line {line}, column {column}",
        f"this is not valid TOML ({problem}; the file ends before that entry is finished)",
        _TOML_END_FIX,
    )


def _check_env(config: Config, source: str, namer: FieldNamer) -> None:
    for name in config.env:
        if not _ENV_NAME.fullmatch(name):
            raise InputError(
                source,
                namer(("env", name)),
                f"{name!r} is not a valid environment variable name",
                "use letters, digits and _ only, not starting with a digit",
            )
        if name.upper() in _CREDENTIAL_NAMES:
            raise InputError(
                source,
                namer(("env", name)),
                "credentials must not be written in a config (they would be copied into "
                "the task definition)",
                "remove it; set aws.profile (AWS_PROFILE) or use an instance/task role",
            )


def _submodel(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


#: Names users bring from SQS, EC2 and ECS for a setting ds names otherwise (lower case,
#: without separators) → the dotted field. The family's config.py names are `LEGACY_FIELDS`.
_OTHER_NAMES: dict[str, str] = {
    "maxreceivecount": "queue.job_retries",
    "maxreceives": "queue.job_retries",
    "retries": "queue.job_retries",
    "visibilitytimeout": "queue.visibility",
    "messagevisibility": "queue.visibility",
    "instancetype": "aws.machine_type",
    "instancetypes": "aws.machine_type",
    "spotprice": "aws.machine_price",
    "command": "recipe.argv",
}


def _meant(name: str, here: Sequence[str | int]) -> list[str]:
    """The dotted fields an unknown ``name`` written in the section at ``here`` most likely
    means: the family's config.py name of a field (`LEGACY_FIELDS`), a name of SQS's, EC2's
    or ECS's (`_OTHER_NAMES`), or a field of that name in other sections. Empty when none."""
    from distributed_something.config.legacy import LEGACY_FIELDS

    squeezed = name.lower().replace("_", "").replace("-", "")
    legacy = LEGACY_FIELDS.get(name) if name.isupper() else None  # as config.py spells them
    field = legacy or _OTHER_NAMES.get(squeezed)
    if field is not None:
        return [field]
    section = dotted_path(here)
    return [
        path
        for path in _field_paths(Config)
        if path.rpartition(".")[2] == name and path.rpartition(".")[0] != section
    ]


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every setting of ``model`` as a dotted path, its sections' settings included."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        sub = _submodel(info)
        paths.extend(_field_paths(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"])
    return paths


def _written_as(field: str, here: Sequence[str | int]) -> str:
    """How to write the dotted ``field`` for one who wrote an unknown name at ``here``."""
    section, _, leaf = field.rpartition(".")
    if section == dotted_path(here):
        return f"rename it `{leaf}`"
    if not section:
        return f"write it as `{leaf}` at the top of the file, above any [table] header"
    return f"write it as `{leaf}` under [{section}]"


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _submodel(model.model_fields[part])
    return model


def _field_at(loc: Sequence[str | int]) -> tuple[str, FieldInfo] | None:
    model: type[BaseModel] | None = Config
    found: tuple[str, FieldInfo] | None = None
    for part in loc:
        if model is None or not isinstance(part, str):
            break
        info = model.model_fields.get(part)
        if info is None:
            break
        found = (part, info)
        model = _submodel(info)
    return found


def _fix_for(loc: Sequence[str | int]) -> str:
    found = _field_at(loc)
    if found is None:
        return "correct the value"
    name, info = found
    if info.description:
        return f"set it to {info.description}"
    if _submodel(info) is not None:
        return f"write it as a [{name}] table of settings"
    return "correct the value"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _toml_value(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
