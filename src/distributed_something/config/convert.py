"""Write a `Config` as a minimal ``ds.toml`` (used by ``ds config convert``).

Only what differs from the defaults is written (plus ``app_name`` and ``backend``, which say
what the run is), so the file shows at a glance what this run changes; loading it gives back
an equal `Config`. `convert_file` writes a config.py as its run uses it, where a ds.toml
must say so itself (a note at the top says where).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w
from pydantic import BaseModel

from distributed_something.config.loader import load_config
from distributed_something.config.model import ECS_AMI_ROOT_GIB, Config
from distributed_something.errors import InputError
from distributed_something.userfiles import write_user_file

_HEADER = (
    "# Distributed-Something run config. Fields left out take their defaults;\n"
    "# `ds validate` checks this file without creating anything.\n"
)
_TABLE = re.compile(r"^\[([A-Za-z_]+)\]$")
_ENV_COMMENT = "Extra environment variables passed to every task's command."


def to_toml(config: Config) -> str:
    """The ``ds.toml`` text of a config: non-default fields only, sections commented.

    ``app_name`` and ``backend`` are always written; ``None`` values and names derived from
    the app name (queue, dead-letter queue, log group) are left out because loading derives
    them again. ``load_config`` of the result equals ``config``.
    """
    text = tomli_w.dumps(_minimal(config))
    lines: list[str] = []
    # Split on "\n" only: str.splitlines() also splits on characters such as U+0085 that
    # tomli_w leaves unescaped inside strings.
    for line in text.rstrip("\n").split("\n"):
        table = _TABLE.match(line)
        if table:
            comment = _section_comment(table.group(1))
            if comment:
                lines.append(f"# {comment}")
        lines.append(line)
    return _HEADER + "\n" + "\n".join(lines) + "\n"


class Converted(NamedTuple):
    """What `convert_file` wrote: the file, and its `conversion_notes` (also in it)."""

    path: Path
    notes: list[str]


def convert_file(src: Path, dest: Path, *, force: bool = False) -> Converted:
    """Load the config at ``src`` (any format) and write it to ``dest`` as ``ds.toml``.

    Refuses to replace an existing ``dest`` unless ``force`` (raises `InputError`); the
    write is atomic, so an interrupted conversion never leaves half a file. Values read from
    the environment by a legacy file are written as they were at conversion time. Returns
    ``dest`` and the notes written at its top.
    """
    if dest.exists() and not force:
        raise InputError(
            str(dest),
            None,
            "the file already exists",
            "pass --force to overwrite it, or choose another destination",
        )
    config = load_config(src)
    notes = conversion_notes(src, config)
    config = _as_run(src, config)
    text = f"# Converted from {src.name} by `ds config convert`.\n"
    text += "".join(f"# NOTE: {line}\n" for line in notes)
    text += to_toml(config)
    if not dest.parent.is_dir():
        raise InputError(
            str(dest), None, "its folder does not exist", "create the folder first, or pick another"
        )
    write_user_file(dest, text)
    return Converted(dest, notes)


def conversion_notes(src: Path, config: Config) -> list[str]:
    """What the written ``ds.toml`` does differently from ``src`` in a run, or says where
    ``src`` left it to ds: an EBS_VOL_SIZE below the image's root snapshot (raised for a
    config.py, written raised); a ``config.py`` without MACHINE_TYPE or MACHINE_PRICE (DCP's
    before 2.0) takes the fleet file's instance types and spot price, as its run.py did, but
    a ``ds.toml`` has no fleet file to take them from before start-cluster and uses its
    defaults. One line each, without a final stop."""
    if src.suffix != ".py":
        return []
    notes = []
    small = _small_root_volume(config)
    if small is not None:
        notes.append(
            f"{src.name} sets EBS_VOL_SIZE = {small}, smaller than the {ECS_AMI_ROOT_GIB} GiB "
            f"root snapshot of the ECS-optimized image: ds runs it with {ECS_AMI_ROOT_GIB} "
            "GiB, this file's default (aws.ebs_vol_size left out), since a ds.toml's "
            "smaller size is refused"
        )
    unset = [
        (legacy, field)
        for legacy, field in (("MACHINE_TYPE", "machine_type"), ("MACHINE_PRICE", "machine_price"))
        if field not in config.aws.model_fields_set
    ]
    if not unset:
        return notes
    names = " and ".join(legacy for legacy, _ in unset)
    defaults = ", ".join(
        # JSON's text of a list of strings or a number is TOML's too
        f"aws.{field} = {json.dumps(getattr(config.aws, field))}"
        for _, field in unset
    )
    return [
        *notes,
        f"{src.name} sets no {names}: with it, ds (as run.py) takes the fleet file's "
        f"InstanceType and SpotPrice; this file uses the defaults {defaults} instead. "
        "Set them under [aws] as your fleet file has them",
    ]


def _small_root_volume(config: Config) -> int | None:
    """A legacy config's EBS_VOL_SIZE below the ECS-optimized image's root snapshot (DCP's
    templates said "minimum allowed is 22"): start-cluster raises it to the snapshot's size
    for a config.py and refuses it in a ds.toml (a config.py cannot name another image).
    None when it fits."""
    size = config.aws.ebs_vol_size
    return size if size < ECS_AMI_ROOT_GIB else None


def _as_run(src: Path, config: Config) -> Config:
    """``config`` as a run of ``src`` uses it, where a ds.toml must say so itself."""
    if src.suffix == ".py" and _small_root_volume(config) is not None:
        aws = config.aws.model_copy(update={"ebs_vol_size": ECS_AMI_ROOT_GIB})
        return config.model_copy(update={"aws": aws})
    return config


def _derived(config: Config) -> dict[tuple[str, str], Any]:
    # Mirrors `Config._derive_names`: values equal to these are re-derived on load.
    return {
        ("queue", "name"): f"{config.app_name}Queue",
        ("queue", "dead_letter_queue"): f"{config.app_name}DeadMessages",
        ("aws", "log_group_name"): config.app_name,
    }


def _minimal(config: Config) -> dict[str, Any]:
    derived = _derived(config)
    data: dict[str, Any] = {"app_name": config.app_name, "backend": config.backend}
    for name, info in Config.model_fields.items():
        if name in data:
            continue
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            section: dict[str, Any] = {}
            for field, field_info in type(value).model_fields.items():
                item = getattr(value, field)
                if item is None or item == field_info.get_default(call_default_factory=True):
                    continue
                if derived.get((name, field)) == item:
                    continue
                section[field] = item
            if section:
                data[name] = section
        elif value is not None and value != info.get_default(call_default_factory=True):
            data[name] = value
    return data


def _section_comment(name: str) -> str:
    if name == "env":
        return _ENV_COMMENT
    info = Config.model_fields.get(name)
    annotation = info.annotation if info is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.__doc__:
        return annotation.__doc__.strip().splitlines()[0].replace("``", "`")
    return ""
