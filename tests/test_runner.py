"""The subprocess runner: log header then output, waiting on a pidfd or by polling, stop."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from distributed_something.worker import runner as runner_module
from distributed_something.worker.runner import SubprocessRunner

PY = sys.executable


@pytest.fixture(params=["pidfd", "polling"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":
        monkeypatch.setattr(runner_module, "_pidfd", lambda pid: None)
    elif not hasattr(runner_module.os, "pidfd_open"):
        pytest.skip("no os.pidfd_open on this platform (Linux has it)")
    return str(request.param)


def test_header_comes_first_then_the_output_and_the_exit_code(tmp_path: Path, waiting: str) -> None:
    log = tmp_path / "task.log"
    argv = [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]
    result = SubprocessRunner().run(
        argv, cwd=tmp_path, env={}, log_path=log, stop=threading.Event(), header=b"ds: hi\n"
    )
    assert result.exit_code == 3 and not result.interrupted
    text = log.read_text()
    assert text.startswith("ds: hi\n") and "out\n" in text and "err\n" in text


def test_a_missing_program_is_exit_127_with_the_header_kept(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    result = SubprocessRunner().run(
        ["/nonexistent/tool"],
        cwd=tmp_path,
        env={},
        log_path=log,
        stop=threading.Event(),
        header=b"ds: header\n",
    )
    assert result.exit_code == 127
    assert log.read_text().startswith("ds: header\nds: cannot start '/nonexistent/tool'")


def test_stop_terminates_a_long_command_promptly(tmp_path: Path, waiting: str) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    result = SubprocessRunner(grace_seconds=5).run(
        [PY, "-c", "import time; time.sleep(60)"],
        cwd=tmp_path,
        env={},
        log_path=tmp_path / "task.log",
        stop=stop,
    )
    assert result.interrupted and result.exit_code != 0
    assert time.monotonic() - started < 10


def test_a_short_command_returns_as_soon_as_it_exits(tmp_path: Path, waiting: str) -> None:
    started = time.monotonic()
    for _ in range(20):
        result = SubprocessRunner(poll_seconds=5).run(
            ["true"], cwd=tmp_path, env={}, log_path=tmp_path / "t.log", stop=threading.Event()
        )
        assert result.exit_code == 0
    # A wait that slept out its poll interval even once would take 5 s here.
    assert time.monotonic() - started < 4.5
