"""The house rule "no test reaches any address but loopback" is enforced (tests/loopback_guard.py,
tests/site/sitecustomize.py): a Python process a test starts cannot connect elsewhere, and
says it tried."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

PROBE = """
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
local = socket.create_connection(listener.getsockname(), timeout=5)  # loopback: allowed
local.close()
try:
    socket.create_connection(("192.0.2.1", 80), timeout=5)  # TEST-NET-1: never sent
except ConnectionRefusedError as exc:
    print("refused:", exc)
"""


def test_a_started_python_reaches_loopback_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "refused.log"
    env = {**os.environ, "DS_TEST_NETWORK_LOG": str(log)}  # this test's own log
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "refused: tests reach only loopback, not 192.0.2.1" in done.stdout
    assert log.read_text().strip().endswith("connected to 192.0.2.1:80")


def test_this_process_is_guarded_too() -> None:
    assert getattr(socket.socket, "_ds_guarded", False)
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
