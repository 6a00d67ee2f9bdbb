"""Converting configs to a minimal ``ds.toml`` that loads back to an equal `Config`."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed_something.config import Config, load_config
from distributed_something.config.convert import convert_file, to_toml
from distributed_something.errors import InputError
from family_templates import DCP_TEMPLATE, DF_TEMPLATE, DOZC_TEMPLATE, filled

# The family's config.py files as shipped (tests/family_templates.py); DOZC's with its
# dead-letter queue given by ARN, as earlier releases had it.
DCP_CONFIG = DCP_TEMPLATE
DF_CONFIG = DF_TEMPLATE
DOZC_CONFIG = filled(
    DOZC_TEMPLATE,
    {"SQS_DEAD_LETTER_QUEUE": "'arn:aws:sqs:some-region:111111100000:DeadMessages'"},
)

# A ds-flavoured legacy file: extra variables (env), native extras, computed values.
DS_CONFIG = """\
import os
APP_NAME = 'PaintRun'
BACKEND = 'local'
COMMAND = 'python paint.py {image}'
OUTPUT_PREFIX = 'out/' + APP_NAME + '/{image}'
INPUTS = ['in/{image}']
LOCAL_WORKERS = 3
MACHINE_TYPE = 'm5.large'
SECONDS_TO_START = 2.5
CHANNELS = ['DNA', 'Actin']
THRESHOLD = 0.25
MODE = 'fast' if LOCAL_WORKERS > 2 else 'slow'
"""


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("legacy", [DCP_CONFIG, DF_CONFIG, DOZC_CONFIG, DS_CONFIG])
def test_legacy_round_trip(tmp_path: Path, legacy: str) -> None:
    original = load_config(write(tmp_path, legacy, "config.py"))
    converted = load_config(write(tmp_path, to_toml(original), "ds.toml"))
    assert converted == original
    assert converted.model_dump() == original.model_dump()


def test_output_is_minimal(tmp_path: Path) -> None:
    data = tomllib.loads(to_toml(Config(app_name="Tiny")))
    assert data == {"app_name": "Tiny", "backend": "local"}


def test_only_non_default_fields_are_written() -> None:
    config = Config.model_validate(
        {"app_name": "Some", "cluster": {"machines": 5, "memory": 4096}, "aws": {"region": "x"}}
    )
    data = tomllib.loads(to_toml(config))
    assert data["cluster"] == {"machines": 5}  # memory equals its default
    assert data["aws"] == {"region": "x"}
    assert "queue" not in data and "local" not in data and "env" not in data


def test_derived_names_are_left_out_but_explicit_ones_kept() -> None:
    derived = tomllib.loads(to_toml(Config(app_name="App")))
    assert "queue" not in derived and "aws" not in derived
    explicit = Config.model_validate(
        {"app_name": "App", "queue": {"name": "Other"}, "aws": {"log_group_name": "logs"}}
    )
    data = tomllib.loads(to_toml(explicit))
    assert data["queue"] == {"name": "Other"}
    assert data["aws"] == {"log_group_name": "logs"}


def test_sections_are_commented(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DS_CONFIG, "config.py"))
    lines = to_toml(config).splitlines()
    assert lines[0].startswith("# ")
    for header in ("[recipe]", "[cluster]", "[env]"):
        index = lines.index(header)
        assert lines[index - 1].startswith("# "), header


def test_dcp_conversion_content(tmp_path: Path) -> None:
    data = tomllib.loads(to_toml(load_config(write(tmp_path, DCP_CONFIG, "config.py"))))
    assert data["image"] == "cellprofiler/distributed-cellprofiler:2.2.0_4.2.8"
    assert data["check_if_done"]["enabled"] is False
    assert data["cluster"]["cpu_shares"] == 4096
    assert "assign_ip" not in data["aws"]  # 'True': the fleet file's value stands
    assert "tool" not in data  # every DCP tool setting is at its default


def test_convert_file_writes_toml(tmp_path: Path) -> None:
    src = write(tmp_path, DCP_CONFIG, "config.py")
    dest = tmp_path / "ds.toml"
    assert convert_file(src, dest) == (dest, [])
    assert load_config(dest) == load_config(src)
    assert dest.read_text(encoding="utf-8").startswith("# Converted from config.py")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_file_refuses_to_overwrite(tmp_path: Path) -> None:
    src = write(tmp_path, DF_CONFIG, "config.py")
    dest = write(tmp_path, "keep me\n", "ds.toml")
    with pytest.raises(InputError) as caught:
        convert_file(src, dest)
    assert caught.value.source == str(dest)
    assert "--force" in caught.value.fix
    assert dest.read_text(encoding="utf-8") == "keep me\n"


def test_convert_file_force_overwrites(tmp_path: Path) -> None:
    src = write(tmp_path, DF_CONFIG, "config.py")
    dest = write(tmp_path, "old\n", "ds.toml")
    convert_file(src, dest, force=True)
    assert load_config(dest).app_name == "DistributedFiji"


def test_convert_file_into_a_missing_folder(tmp_path: Path) -> None:
    src = write(tmp_path, DF_CONFIG, "config.py")
    with pytest.raises(InputError) as caught:
        convert_file(src, tmp_path / "nowhere" / "ds.toml")
    assert "folder does not exist" in caught.value.problem


def test_convert_file_reports_a_bad_source(tmp_path: Path) -> None:
    src = write(tmp_path, "APP_NAME = 'x'\nfor i in []:\n    pass\n", "config.py")
    dest = tmp_path / "ds.toml"
    with pytest.raises(InputError) as caught:
        convert_file(src, dest)
    assert caught.value.field == "line 2"
    assert not dest.exists()


def test_toml_to_toml_round_trip(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "app_name": "Full",
            "backend": "aws",
            "image": "org/tool:2",
            "recipe": {"name": "command", "argv": ["run", "{x}"], "inputs": ["a/{x}"]},
            "cluster": {"machines": 0, "cpu_shares": 512, "seconds_to_start": 1.5},
            "queue": {"name": "Q", "dead_letter_queue": "D", "visibility": 300},
            "check_if_done": {"expected_number_files": 2, "necessary_string": "x"},
            "aws": {"profile": "p", "machine_type": ["a", "b"], "task_role_arn": "arn:r"},
            "tool": {"script_sha256": "ab" * 32, "requirements": "-r req.txt"},
            "local": {"root": "elsewhere", "prepare": ["make"], "poll_interval": 1.0},
            "env": {"A": "1"},
        }
    )
    assert load_config(write(tmp_path, to_toml(config), "ds.toml")) == config


def test_values_with_unusual_line_breaks_survive(tmp_path: Path) -> None:
    # U+0085 and U+2028 are line breaks to str.splitlines() but plain characters to TOML.
    config = Config.model_validate(
        {"app_name": "Odd", "env": {"A": "x\x85[cluster]\u2028y", "B": 'q"\n\r\t\\'}}
    )
    assert load_config(write(tmp_path, to_toml(config), "ds.toml")) == config


ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: name not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
)
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    machines=st.integers(0, 1000),
    memory=st.integers(128, 10**6),
    price=st.floats(0.001, 100, allow_nan=False),
    types=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4),
    enabled=st.booleans(),
    flags=TEXT,
    env=st.dictionaries(ENV_NAMES, TEXT, max_size=4),
    argv=st.lists(TEXT, max_size=4),
)
def test_round_trip_property(
    tmp_path: Path,
    machines: int,
    memory: int,
    price: float,
    types: list[str],
    enabled: bool,
    flags: str,
    env: dict[str, str],
    argv: list[str],
) -> None:
    config = Config.model_validate(
        {
            "app_name": "Prop",
            "cluster": {"machines": machines, "memory": memory},
            "aws": {"machine_price": price, "machine_type": types},
            "check_if_done": {"enabled": enabled},
            "storage": {"upload_flags": flags},
            "recipe": {"argv": argv},
            "env": env,
        }
    )
    assert load_config(write(tmp_path, to_toml(config), "ds.toml")) == config


def test_converting_a_config_without_machine_type_says_the_toml_does_not_read_the_fleet_file(
    tmp_path: Path, ds: Callable[..., CompletedProcess[str]]
) -> None:
    # DCP's config.py before 2.0 had no MACHINE_TYPE / MACHINE_PRICE: run.py (and ds with the
    # config.py) took the fleet file's; the ds.toml has none to take and uses its defaults.
    old = "\n".join(line for line in DCP_CONFIG.splitlines() if not line.startswith("MACHINE_"))
    src = write(tmp_path, old, "config.py")
    result = ds("config", "convert", "config.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "config.py sets no MACHINE_TYPE and MACHINE_PRICE" in said
    assert 'aws.machine_type = ["m5.large"], aws.machine_price = 0.1' in said
    text = (tmp_path / "ds.toml").read_text(encoding="utf-8")
    assert "# NOTE: config.py sets no MACHINE_TYPE and MACHINE_PRICE" in text
    assert load_config(tmp_path / "ds.toml") == load_config(src)  # a comment only
    # With them set, nothing to say.
    write(tmp_path, DCP_CONFIG, "config.py")
    result = ds("config", "convert", "config.py", "--force", cwd=tmp_path)
    assert result.returncode == 0 and "note:" not in result.stderr
    assert "NOTE" not in (tmp_path / "ds.toml").read_text(encoding="utf-8")


def test_converting_an_ebs_size_below_the_images_snapshot_writes_the_size_a_run_uses(
    tmp_path: Path,
) -> None:
    # DCP's example_project config.py set EBS_VOL_SIZE = 22 ("minimum allowed is 22"):
    # start-cluster raises it to the ECS image's 30 GiB snapshot for a config.py, and refuses
    # it in a ds.toml; the converted file must run as the config.py does.
    src = write(tmp_path, DCP_CONFIG.replace("EBS_VOL_SIZE = 30", "EBS_VOL_SIZE = 22"), "config.py")
    assert load_config(src).aws.ebs_vol_size == 22
    converted = convert_file(src, tmp_path / "ds.toml")
    assert load_config(converted.path).aws.ebs_vol_size == 30
    assert converted.notes[0].startswith(
        "config.py sets EBS_VOL_SIZE = 22, smaller than the 30 GiB"
    )
    text = converted.path.read_text(encoding="utf-8")
    assert "# NOTE: config.py sets EBS_VOL_SIZE = 22" in text
    # 30 is the default: left out, as the note says, and loaded as 30.
    assert "aws.ebs_vol_size left out" in text
    assert not any(line.startswith("ebs_vol_size") for line in text.splitlines())
