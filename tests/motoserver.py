"""A moto server on 127.0.0.1, for tests/conftest.py's fixtures and the bench/ scripts.

Plain code without pytest: bench scripts (run as ``python bench/x.py``) put this folder on
``sys.path`` and import it, as the tests do through pytest's rootdir-relative imports.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

START_SECONDS = 30.0
"""How long `start_moto` waits for the server to answer."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(env: Mapping[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``python -m moto.server`` on a free port of 127.0.0.1 with exactly ``env`` as
    its environment; return its URL and process once it answers.

    Raises RuntimeError (after killing it) when it exits or does not answer within
    `START_SECONDS`. Stop it with `stop_moto`.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return url, proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the moto server on {url} did not start") from None
            time.sleep(0.1)


def stop_moto(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server `start_moto` started (by its pid), killing it if SIGTERM is not
    enough within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
