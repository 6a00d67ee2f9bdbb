"""A config that starts no worker (``cluster.machines = 0``, ``CLUSTER_MACHINES = 0``) is
refused by `ds run` and `ds start-cluster` before anything is made: locally `ds run` used to
wait for ever with its tasks pending, and on AWS machines for no worker would cost."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Ds = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        (
            "ds.toml",
            'app_name = "Zero"\n[recipe]\nname = "command"\nargv = ["true"]\n'
            "[cluster]\nmachines = 0\n",
            "cluster.machines",
        ),
        (
            "config.py",
            "APP_NAME = 'Zero'\nBACKEND = 'local'\nRECIPE = 'command'\nCOMMAND = ['true']\n"
            "CLUSTER_MACHINES = 0\n",
            "CLUSTER_MACHINES",
        ),
    ],
)
def test_a_config_with_no_machines_is_refused_before_anything_is_made(
    tmp_path: Path, name: str, text: str, field: str, ds: Ds
) -> None:
    (tmp_path / name).write_text(text)
    (tmp_path / "job.json").write_text(json.dumps({"groups": [{"i": 1}]}))

    ran = ds("run", ".", cwd=tmp_path)

    assert ran.returncode == 2, ran.stderr
    errors = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and field in errors[0] and "1 or more" in errors[0], errors
    assert not (tmp_path / ".ds").exists()  # nothing set up, nothing submitted

    ds("setup", cwd=tmp_path)
    started = ds("start-cluster", cwd=tmp_path)
    assert started.returncode == 2 and field in started.stderr
