"""The command line: exit codes, one-line errors, JSON on stdout, scaffolding, aliases."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from conftest import write_project
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.config.loader import load_config

Ds = Callable[..., CompletedProcess[str]]


def one_error_line(result: CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_init_scaffold_runs_as_written(tmp_path: Path, ds: Ds) -> None:
    result = ds("init", "hello", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = ds("run", "hello", "--json", "--interval", "0.2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"]["done"] == 3
    out = tmp_path / "hello/.ds/hello/buckets/default/results/second/hello.txt"
    assert out.read_text() == "hello second"
    again = ds("init", "hello", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in one_error_line(again)


def test_validate_json_and_duplicates(tmp_path: Path, ds: Ds) -> None:
    ds("init", ".", "--app-name", "V", cwd=tmp_path)
    (tmp_path / "job.json").write_text(json.dumps({"groups": [{"name": "a"}, {"name": "a"}]}))
    result = ds("validate", "--job", "job.json", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tasks"] == 1 and summary["duplicates"] == 1 and summary["format"] == "ds"
    assert "repeats group" in result.stderr
    assert not (tmp_path / ".ds").exists()


def test_commands_need_a_set_up_run(tmp_path: Path, ds: Ds) -> None:
    ds("init", ".", "--app-name", "S", cwd=tmp_path)
    line = one_error_line(ds("submitJob", "job.json", cwd=tmp_path))
    assert "ds setup" in line
    assert ds("status", cwd=tmp_path).returncode == 2
    cleaned = ds("cleanup", cwd=tmp_path)  # says so, rather than "cleaned up"
    assert cleaned.returncode == 0 and "nothing to clean up" in cleaned.stderr
    for command in (["report"], ["logs", "abc"], ["dead", "list"], ["monitor"], ["start-cluster"]):
        assert "ds setup" in one_error_line(ds(*command, cwd=tmp_path)), command
    listed = ds("runs", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    # Looking made nothing: the run's folders appear with `ds setup`, not before.
    assert not (tmp_path / ".ds").exists()


def test_a_second_cleanup_says_the_run_was_already_finished(tmp_path: Path, ds: Ds) -> None:
    ds("init", ".", "--app-name", "C", cwd=tmp_path)
    assert ds("setup", cwd=tmp_path).returncode == 0
    first = ds("cleanup", cwd=tmp_path)
    assert first.returncode == 0 and "cleaned up C run" in first.stderr
    second = ds("cleanup", cwd=tmp_path)
    assert second.returncode == 0 and "cleaned up" not in second.stderr
    assert "was already finished" in second.stderr and "ds setup" in second.stderr


def test_start_cluster_refuses_a_finished_run(tmp_path: Path, ds: Ds) -> None:
    ds("init", ".", "--app-name", "F", cwd=tmp_path)
    assert ds("run", ".", "--json", "--interval", "0.2", cwd=tmp_path).returncode == 0
    logs = tmp_path / ".ds" / "F" / "workers"
    before = sorted((p.name, p.stat().st_size) for p in logs.iterdir())
    again = ds("start-cluster", cwd=tmp_path)
    assert again.returncode == 2 and "is finished" in one_error_line(again)
    assert "ds setup" in one_error_line(again)
    time.sleep(0.5)  # a worker started anyway would have written its first lines by now
    assert sorted((p.name, p.stat().st_size) for p in logs.iterdir()) == before
    # Nothing dead: a redrive says so, and continues the run with no new one.
    redrive = ds("dead", "redrive", cwd=tmp_path)
    assert redrive.returncode == 0 and "no dead task to redrive" in redrive.stderr
    assert len(json.loads(ds("runs", "--json", cwd=tmp_path).stdout)) == 1


def test_missing_config_and_bad_arguments_exit_2(tmp_path: Path, ds: Ds) -> None:
    result = ds("status", cwd=tmp_path)
    assert result.returncode == 2 and "ds.toml" in one_error_line(result)
    assert ds("run", "nowhere", cwd=tmp_path).returncode == 2
    for args in (["no-such-command"], ["monitor", "--interval", "-1"], ["submit"]):
        result = ds(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert "--help" in one_error_line(result)
    # click's suggestion keeps its question mark, without a stray full stop after it
    line = one_error_line(ds("stats", cwd=tmp_path))
    assert line.endswith("Did you mean 'status'? Fix: see `ds --help`"), line
    line = one_error_line(ds("submit", cwd=tmp_path))
    assert line.endswith("Missing argument 'JOB'. Fix: see `ds submit --help`"), line


def test_config_convert_writes_equivalent_toml(tmp_path: Path, ds: Ds) -> None:
    legacy = tmp_path / "config.py"
    legacy.write_text(
        "APP_NAME = 'Conv'\nSQS_QUEUE_NAME = APP_NAME + 'Queue'\nCHECK_IF_DONE_BOOL = 'True'\n"
        "DOCKER_CORES = 4\nCPU_SHARES = DOCKER_CORES * 1024\nMY_SETTING = 'x'\n"
    )
    result = ds("config", "convert", "config.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_config(tmp_path / "ds.toml") == load_config(legacy)
    assert load_config(tmp_path / "ds.toml").env == {"MY_SETTING": "x"}
    assert ds("config", "convert", "config.py", cwd=tmp_path).returncode == 2


LAZY_BACKENDS = """
import sys
from distributed_something.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("distributed_something.backends."))
print("loaded", " ".join(m.split(".")[2] for m in loaded))
from distributed_something.backends import backend_kind, set_interactive
set_interactive(True)  # as the CLI does: a backend imported after it is told on import
backend_kind("aws")
from distributed_something.backends.aws import clients
told = clients._interactive
set_interactive(False)
print("aws told", told, "then", clients._interactive)
"""


def test_a_command_imports_only_the_backend_it_uses(tmp_path: Path, ds: Ds) -> None:
    # Telling the backends that a person waits (set_interactive) imported all three: a
    # local command paid for Slurm's and AWS's modules at every start.
    assert ds("init", "p", cwd=tmp_path).returncode == 0
    done = subprocess.run(
        [sys.executable, "-c", LAZY_BACKENDS, "-C", str(tmp_path / "p"), "status"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded, told = done.stdout.splitlines()[-2:]
    assert "local" in loaded.split() and not {"aws", "slurm"} & set(loaded.split())
    assert told == "aws told True then False"


def test_the_running_note_names_the_longest_only_when_all_were_looked_up() -> None:
    from distributed_something.cli.commands import _running_note
    from distributed_something.usecases.run_info import RUNNING_LOOKUP_MAX, RunningTask

    now = time.time()
    tasks = [RunningTask(f"{i}{'abcdef0123' * 2}"[:20], 1 + i % 2, now - 100 + i) for i in range(7)]
    note = _running_note(tasks, 7)
    assert note.startswith("running longest: 0abcdef0123a (1m40s), 1abcdef0123a (1m39s, attempt 2)")
    assert "and 2 more" in note and "`ds logs -f ID`" in note
    beyond = _running_note(tasks, RUNNING_LOOKUP_MAX + 1)
    assert beyond.startswith("running: ") and f"and {RUNNING_LOOKUP_MAX - 4} more" in beyond


def test_a_run_in_progress_on_one_backend_is_not_taken_over_by_another(
    tmp_path: Path, ds: Ds
) -> None:
    """Tried locally, then switched with --backend: the local run in progress is not this
    backend's (its queue, tasks and records are the local ones). Commands on the other
    backend say so and change nothing (`ds setup` used to give the local run's state to
    the other backend's provisioner, and `ds status` counted its tasks from the wrong
    storage); once it is finished, the other backend simply has no run yet."""
    ds("init", ".", "--app-name", "B", cwd=tmp_path)
    assert ds("setup", cwd=tmp_path).returncode == 0
    state = (tmp_path / ".ds" / "B" / "state.json").read_text()
    for command in (["setup"], ["status"], ["submit", "job.json"]):
        other = ds(*command, "--backend", "slurm", cwd=tmp_path)
        line = one_error_line(other)
        assert other.returncode == 2 and "in progress on the local backend" in line, command
        assert "`ds cleanup --backend local`" in line
    assert (tmp_path / ".ds" / "B" / "state.json").read_text() == state  # untouched
    assert ds("cleanup", cwd=tmp_path).returncode == 0
    none = ds("status", "--backend", "slurm", cwd=tmp_path)
    assert none.returncode == 2 and "no run of B is set up here" in one_error_line(none)


# Sends a real SIGINT to itself while `python -m distributed_something` still imports the
# command line (when the backends package is first imported), as a quick Ctrl-C does.
_CTRL_C_WHILE_LOADING = """
import builtins, os, runpy, signal, sys
real = builtins.__import__
def spy(name, *args, **kwargs):
    if name == "distributed_something.backends":
        builtins.__import__ = real
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kwargs)
builtins.__import__ = spy
sys.argv = ["ds", "--version"]
runpy.run_module("distributed_something", run_name="__main__")
"""

# `ds --version` runs to its end, then a SIGINT arrives as the interpreter exits.
_CTRL_C_AT_EXIT = """
import atexit, os, runpy, signal, sys
atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
sys.argv = ["ds", "--version"]
runpy.run_module("distributed_something", run_name="__main__")
"""


def test_ctrl_c_while_ds_loads_is_a_quiet_exit_130() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_LOADING], capture_output=True, text=True
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "interrupted" in done.stderr


def test_ctrl_c_after_a_command_is_done_leaves_its_exit_status() -> None:
    done = subprocess.run([sys.executable, "-c", _CTRL_C_AT_EXIT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the version was printed
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr


def test_a_submit_interrupted_while_sending_says_how_to_send_the_rest(tmp_path: Path) -> None:
    # Ctrl-C once the sending has begun (its progress bar shows): the same `ds submit` again
    # sends the rest, and every task is queued once.
    n = 100_000
    proj = write_project(tmp_path / "p", argv=["true"], groups=[{"name": i} for i in range(n)])
    ds = [sys.executable, "-m", "distributed_something"]
    subprocess.run([*ds, "setup"], cwd=proj, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*ds, "submit", "job.json"], cwd=proj, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        said.append(line)
        if line.startswith("submit:"):
            proc.send_signal(signal.SIGINT)
            break
    said.append(proc.stderr.read())
    assert proc.wait(timeout=60) == 130, said
    assert "the same `ds submit` again sends what this one did not" in "".join(said)
    again = subprocess.run([*ds, "submit", "job.json"], cwd=proj, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    status = subprocess.run([*ds, "status", "--json"], cwd=proj, capture_output=True, text=True)
    assert json.loads(status.stdout)["counts"]["pending"] == n
    queue = SqliteQueue(proj / ".ds" / "T" / "queue.sqlite", max_receive_count=3)
    assert queue.counts().visible == n  # each task once


@pytest.mark.parametrize(
    "data",
    [
        {"counts": {"done": 2}, "tasks": [{"id": f"t{i}", "group": {"i": i}} for i in range(50)]},
        [{"task_id": f"t{i}", "error": "exit 3\nline two"} for i in range(30)],
        {"runs": [1, 2], "note": None},
        {},
        [],
        "text",
    ],
)
def test_json_output_is_the_same_json_with_long_lists_one_element_a_line(data: object) -> None:
    from distributed_something.cli.commands import LONG_LIST, json_text

    text = json_text(data)
    assert json.loads(text) == data
    lines = text.splitlines()
    rows = data.get("tasks", []) if isinstance(data, dict) else data
    if isinstance(rows, list) and len(rows) > LONG_LIST:
        # A report's tasks, `ds dead list`: each element on its line (greppable), compact.
        for row in rows:
            assert sum(line.strip().rstrip(",") == json.dumps(row) for line in lines) == 1
    else:
        assert text == json.dumps(data, indent=1)
