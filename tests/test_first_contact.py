"""First contact (issue 15): the project folder given the same way to every command, and
what a new user meets first (bare `ds`, JSON errors, progress in a log, init names)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from conftest import write_project
from testkit import wait_for

Ds = Callable[..., CompletedProcess[str]]


def _project(tmp_path: Path, ds: Ds) -> Path:
    folder = tmp_path / "proj"
    assert ds("init", "proj", "--app-name", "P", cwd=tmp_path).returncode == 0
    return folder


def test_every_command_takes_the_folder_with_dash_c(tmp_path: Path, ds: Ds) -> None:
    _project(tmp_path, ds)
    for args in (
        ["-C", "proj", "validate", "--job", "job.json"],
        ["validate", "-C", "proj", "--job", "job.json"],
        ["validate", "--config", "proj", "--job", "proj/job.json"],
    ):
        result = ds(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "tasks=3" in result.stderr
    # Commands that need a run say so, rather than "no ds.toml" or "is a directory".
    for args in (["status", "-C", "proj"], ["status", "--config", "proj"]):
        result = ds(*args, cwd=tmp_path)
        assert result.returncode == 2 and "ds setup" in result.stderr, result.stderr
    missing = ds("status", cwd=tmp_path)
    assert missing.returncode == 2 and "-C DIR" in missing.stderr
    nowhere = ds("status", "-C", "nowhere", cwd=tmp_path)
    assert nowhere.returncode == 2 and "not a folder" in nowhere.stderr


def test_validate_checks_the_job_json_beside_it(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    (folder / "job.json").write_text(json.dumps([{"name": "a"}]))  # a list: not a job file
    result = ds("validate", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "job.json" in result.stderr


def test_run_dry_run_prints_the_argv_and_creates_nothing(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    result = ds("run", "--dry-run", "--show", "2", "proj", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "hello first" in lines[0] and "hello second" in lines[1]
    assert not (folder / ".ds").exists()


@pytest.mark.slow
def test_run_force_reruns_done_tasks_and_workers_do_not_skip(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    first = ds("run", "proj", "--json", "--interval", "0.2", "-j", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["done"] == 3
    again = ds("run", "proj", "--json", "--interval", "0.2", cwd=tmp_path)
    assert json.loads(again.stdout)["counts"]["skipped"] == 3
    forced = ds("run", "proj", "--json", "--interval", "0.2", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    counts = json.loads(forced.stdout)["counts"]
    assert counts["done"] == 3 and counts["skipped"] == 0, counts
    assert (folder / ".ds/P/buckets/default/results/first/hello.txt").is_file()


def test_run_force_does_not_resume_a_run_started_without_it(tmp_path: Path, ds: Ds) -> None:
    """Before, `ds run --force` on a run in progress resumed it and reran none of its done
    tasks, and said nothing of it."""
    folder = _project(tmp_path, ds)
    for step in (["setup"], ["submit", "job.json"]):
        assert ds(*step, cwd=folder).returncode == 0
    forced = ds("run", "--force", cwd=folder)
    assert forced.returncode == 2, forced.stderr
    assert "--force" in forced.stderr and "started without --force" in forced.stderr
    assert "ds cleanup" in forced.stderr and "Traceback" not in forced.stderr
    status = json.loads(ds("status", "--json", cwd=folder).stdout)
    assert status["counts"]["pending"] == 3  # nothing started
    resumed = ds("run", "--json", "--interval", "0.2", cwd=folder)
    assert json.loads(resumed.stdout)["counts"]["done"] == 3


def test_status_offers_ds_run_only_for_a_run_of_one_job_file(tmp_path: Path, ds: Ds) -> None:
    """`ds run` resumes a run of its one job file and refuses one of several; `ds status`
    said "`ds run` again resumes it" for both."""
    folder = _project(tmp_path, ds)
    for step in (["setup"], ["submit", "job.json"]):
        assert ds(*step, cwd=folder).returncode == 0
    one = ds("status", cwd=folder).stderr
    assert "`ds run` again resumes it" in one and "`ds monitor`" in one
    (folder / "more.json").write_text(json.dumps({"groups": [{"name": "fourth"}]}))
    assert ds("submit", "more.json", cwd=folder).returncode == 0
    two = ds("status", cwd=folder).stderr
    assert "ds run" not in two and "`ds start-cluster` then `ds monitor`" in two
    assert ds("run", cwd=folder).returncode == 2  # what the hint no longer offers


@pytest.mark.slow
def test_progress_in_a_log_is_a_plain_line_every_interval(tmp_path: Path) -> None:
    folder = write_project(
        tmp_path / "slow",
        argv=["{python}", "-c", "import time; time.sleep(0.4)"],
        groups=[{"name": f"t{i}"} for i in range(6)],
        extra={"cluster": {"docker_cores": 1}},
    )
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        result = subprocess.run(
            RUN,
            cwd=folder,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DS_PROGRESS_INTERVAL": "0.5"},
            timeout=240,
            check=False,
        )
    assert result.returncode == 0, log.read_text()
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("T: ")]
    assert len(lines) >= 3, log.read_text()
    assert lines[-1].startswith("T: 6/6 · ") and "ETA" in lines[-1]


def test_the_bar_keeps_count_rate_and_eta_in_80_columns() -> None:
    from rich.console import Console

    from distributed_something import ui

    saved = ui.console
    ui.console = Console(width=80, force_terminal=True, color_system=None)
    try:
        bar = ui.task_bar("Quickstart")
        task = bar.add_task("Quickstart", total=1200, detail="running 8 · pending 890 " * 4)
        bar.update(task, completed=310)
        with ui.console.capture() as captured:
            ui.console.print(bar.make_tasks_table(bar.tasks))
    finally:
        ui.console = saved
    line = captured.get().rstrip("\n")
    assert len(line) <= 80 and "310/1200" in line and "ETA" in line and "/min" in line
    assert "running 8" in line


def test_bare_ds_prints_the_usage(tmp_path: Path, ds: Ds) -> None:
    result = ds(cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("Usage: ds")
    assert "error" not in result.stderr


def test_the_help_and_init_name_every_backend(tmp_path: Path, ds: Ds) -> None:
    # They named local and AWS only: a Slurm user could think ds is not for them.
    usage = " ".join(ds("--help", cwd=tmp_path).stdout.split())
    assert "locally, on a Slurm cluster or on AWS spot capacity" in usage, usage
    toml = (_project(tmp_path, ds) / "ds.toml").read_text()
    (line,) = [ln for ln in toml.splitlines() if ln.startswith("backend = ")]
    assert '"slurm"' in line and '"aws"' in line and "docs/slurm.md" in line


@pytest.mark.slow
def test_empty_listings_say_so_rather_than_print_bare_headers(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    runs = ds("runs", cwd=folder)
    assert runs.returncode == 0 and runs.stderr.strip() == (
        "no run of P yet: `ds run` starts one (or `ds setup`)"
    )
    assert json.loads(ds("runs", "--json", cwd=folder).stdout) == []
    assert ds("run", ".", "--interval", "0.2", cwd=folder).returncode == 0
    dead = ds("dead", "list", cwd=folder)
    assert dead.returncode == 0
    assert dead.stderr.strip() == "no dead task in the current run (`ds status` shows its counts)"
    assert json.loads(ds("dead", "list", "--json", cwd=folder).stdout) == []


@pytest.mark.slow
def test_run_and_submit_say_what_was_submitted_in_the_same_words(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    run = ds("run", ".", "--interval", "0.2", cwd=folder)
    assert run.returncode == 0, run.stderr
    # `ds run` said "submitted 3 tasks (0 already done, 0 duplicate groups dropped)".
    assert "submitted 3 tasks from job.json (ds format); 0 already done\n" in run.stderr
    assert "duplicate" not in run.stderr
    assert ds("setup", cwd=folder).returncode == 0
    again = ds("submit", "job.json", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert again.stderr == "submitted 0 tasks from job.json (ds format); 3 already done\n"


def test_status_of_a_run_set_up_without_tasks_says_what_to_do_next(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    assert ds("setup", cwd=folder).returncode == 0
    status = ds("status", cwd=folder)
    assert status.returncode == 0, status.stderr
    # It showed a table of zeros and nothing else.
    assert "no task submitted to this run yet: `ds submit job.json` sends them" in status.stderr
    assert ds("submit", "job.json", cwd=folder).returncode == 0
    assert "no task submitted" not in ds("status", cwd=folder).stderr
    assert ds("cleanup", cwd=folder).returncode == 0


def test_report_of_a_run_without_tasks_says_so(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    assert ds("setup", cwd=folder).returncode == 0
    report = ds("report", cwd=folder)
    assert report.returncode == 0, report.stderr
    assert "no task submitted to this run yet: `ds submit job.json` sends them" in report.stderr
    # A monitor started before any submit ends the run: the report says what to do then.
    assert ds("monitor", "--interval", "0.1", cwd=folder).returncode == 0
    ended = ds("report", cwd=folder).stderr
    assert "this run ended with no task submitted: `ds run` starts a new one" in ended, ended


def test_an_ambiguous_run_prefix_names_the_runs_it_matches(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from distributed_something.backends.local.storage import FolderStorage
    from distributed_something.errors import InputError
    from distributed_something.state import RunState, run_state_key, state_of_run

    storage = FolderStorage(tmp_path / "bucket")
    ids = [f"20250101-00000{i}-aaaaaa" for i in range(3)]
    ids += [f"20260101-00000{i}-bbbbbb" for i in range(6)]
    for at, run_id in enumerate(ids):
        state = RunState(run_id=run_id, app_name="T", backend="local", created_at=float(at))
        storage.put_bytes(run_state_key("T", run_id), state.model_dump_json().encode())
    project: Any = SimpleNamespace(
        config=SimpleNamespace(app_name="T"), state_path=tmp_path / "no-state.json"
    )
    with pytest.raises(InputError) as ambiguous:
        state_of_run(project, storage, "2025")
    # It named the latest 5 runs, none of which starts with 2025.
    assert f"matches 3 runs of T (latest: {', '.join(ids[:3])})" in str(ambiguous.value)
    with pytest.raises(InputError) as unknown:
        state_of_run(project, storage, "2024")
    assert f"matches no run of T (latest: {', '.join(ids[-5:])})" in str(unknown.value)
    assert state_of_run(project, storage, "20250101-000001").run_id == ids[1]


def test_worker_help_says_what_the_start_delay_delays(tmp_path: Path, ds: Ds) -> None:
    usage = " ".join(ds("worker", "--help", cwd=tmp_path).stdout.split())
    # It said "seconds to wait".
    assert "seconds to wait before taking the first task" in usage, usage


def test_json_errors_are_json_on_stdout(tmp_path: Path, ds: Ds) -> None:
    missing = ds("status", "--json", cwd=tmp_path)
    assert missing.returncode == 2
    error = json.loads(missing.stdout)["error"]
    assert error["exit_code"] == 2 and "ds.toml" in error["problem"] and error["fix"]
    bad = ds("status", "--json", "--bogus", cwd=tmp_path)
    assert bad.returncode == 2 and "--bogus" in json.loads(bad.stdout)["error"]["message"]


@pytest.mark.slow
def test_logs_json(tmp_path: Path, ds: Ds) -> None:
    folder = write_project(
        tmp_path / "p",
        argv=["{python}", "-c", "print('said {name}')"],
        groups=[{"name": "a"}],
    )
    assert ds("run", ".", "--interval", "0.2", cwd=folder).returncode == 0
    task = json.loads(ds("report", "--json", cwd=folder).stdout)["tasks"][0]["id"]
    result = ds("logs", task[:8], "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["task_id"] == task and "said a" in found["logs"][0]["text"]


def _aws_project(tmp_path: Path) -> Path:
    folder = tmp_path / "aws"
    folder.mkdir()
    (folder / "ds.toml").write_text(
        'app_name = "A"\nbackend = "aws"\n[storage]\nbucket = "b"\n'
        '[recipe]\nname = "command"\nargv = ["true"]\noutput_prefix = "o/{name}"\n'
    )
    return folder


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def _ds_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **env,
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def test_aws_unreachable_or_without_credentials_says_what_to_do_quickly(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    folder = _aws_project(tmp_path)
    port = _closed_port()
    cases = {
        "no AWS credentials found": _ds_env(tmp_path),
        "could not be reached": _ds_env(
            tmp_path,
            AWS_ACCESS_KEY_ID="fake",
            AWS_SECRET_ACCESS_KEY="fake",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        ),
    }
    for said, env in cases.items():
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "distributed_something", "status"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
        assert result.returncode == 3, result.stderr
        assert said in result.stderr and "Fix:" in result.stderr, result.stderr
        assert took < 5, (took, result.stderr)


def test_the_worker_keeps_robust_retries() -> None:
    from distributed_something.backends.aws import clients

    assert clients.settings_from("us-east-1", None).max_attempts == 10
    clients.set_interactive(True)
    try:
        quick = clients.settings_from("us-east-1", None)
    finally:
        clients.set_interactive(False)
    assert quick.connect_timeout <= 2 and quick.connection_attempts == 2
    assert quick.max_attempts == 10  # throttling and 5xx answers keep every retry


def test_init_quotes_the_next_command_and_names_the_app(tmp_path: Path, ds: Ds) -> None:
    result = ds("init", "my proj.v2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "next: ds run 'my proj.v2'" in result.stderr
    assert "app name: my-proj-v2" in result.stderr
    assert 'app_name = "my-proj-v2"' in (tmp_path / "my proj.v2/ds.toml").read_text()
    assert ds("validate", cwd=tmp_path / "my proj.v2").returncode == 0


@pytest.mark.parametrize(
    ("recipe", "job_format", "tasks"),
    [("command", "ds", 3), ("cellprofiler", "dcp", 2), ("fiji", "df", 2), ("omezarr", "dozc", 2)],
)
def test_init_starts_a_project_of_each_recipe_in_its_familys_job_format(
    tmp_path: Path, ds: Ds, recipe: str, job_format: str, tasks: int
) -> None:
    from distributed_something.usecases.project import open_project
    from distributed_something.usecases.validate import check_job

    result = ds("init", "--recipe", recipe, "proj", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = open_project(tmp_path / "proj")
    assert project.config.recipe.name == recipe and project.config.app_name == "proj"
    plans: list[Any] = []
    job = check_job(project, tmp_path / "proj/job.json", plans)  # every task planned
    assert job.format == job_format and len(plans) == tasks
    assert len({plan.output_prefix for plan in plans}) == tasks  # each its own folder


def test_ds_run_refuses_inputs_from_a_local_bucket_that_does_not_exist(
    tmp_path: Path, ds: Ds
) -> None:
    # A first `ds run` before any input was put in place: one error naming the folder
    # (validate only notes it: the inputs may come later), not a run whose every task is dead.
    folder = tmp_path / "proj"
    write_project(
        folder,
        argv=["cat", "{input_dir}/images/{name}.txt"],
        groups=[{"name": "a"}, {"name": "b"}],
        extra={"recipe": {"inputs": ["images/{name}.txt"]}},
    )
    validated = ds("validate", cwd=folder)
    assert validated.returncode == 0 and "inputs are not checked" in validated.stderr
    result = ds("run", ".", cwd=folder)
    bucket = folder / ".ds" / "T" / "buckets" / "default"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert (
        lines[0].startswith(f"error: {bucket}: does not exist")
        and "Fix: put the inputs" in lines[0]
    )
    assert not (folder / ".ds").exists()  # nothing created
    (bucket / "images").mkdir(parents=True)
    for name in ("a", "b"):
        (bucket / "images" / f"{name}.txt").write_text(name)
    ran = ds("run", ".", "--json", cwd=folder)
    assert ran.returncode == 0 and json.loads(ran.stdout)["counts"]["done"] == 2, ran.stderr


def test_init_offers_every_recipe_it_has_a_template_for() -> None:
    from distributed_something.cli.commands import init
    from distributed_something.usecases.scaffold import TEMPLATES

    (choice,) = [p.type for p in init.params if p.name == "recipe"]
    assert sorted(getattr(choice, "choices", [])) == sorted(TEMPLATES)


def test_validate_without_a_job_file_says_none_was_checked(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    (folder / "job.json").unlink()
    result = ds("validate", cwd=folder)
    assert result.returncode == 0 and "no job file checked" in result.stderr
    (folder / "job.json").write_text('{"groups": [{"name": "a"}]}')
    assert "no job file checked" not in ds("validate", cwd=folder).stderr


def test_init_refuses_an_app_name_the_config_would_refuse(tmp_path: Path, ds: Ds) -> None:
    result = ds("init", "--app-name", "bad name", "proj", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--app-name" in lines[0] and "e.g. --app-name bad-name" in lines[0]
    assert not (tmp_path / "proj").exists()  # nothing written


def test_messages_in_a_log_are_not_cut_at_80_columns(tmp_path: Path, ds: Ds) -> None:
    """Not a terminal (a log file, a pipe): a long path is printed on one line, so it can
    be copied back."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "project"
    deep.mkdir(parents=True)
    folder = _project(deep, ds)
    result = ds("run", ".", cwd=folder)
    assert result.returncode == 0, result.stderr
    outputs = [line for line in result.stderr.splitlines() if line.startswith("outputs:")]
    assert len(outputs) == 1 and len(outputs[0]) > 100 and str(folder) in outputs[0]


def test_a_top_level_setting_under_a_table_says_move_it_up(tmp_path: Path, ds: Ds) -> None:
    (tmp_path / "ds.toml").write_text('app_name = "x"\n[storage]\nbackend = "aws"\n')
    result = ds("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "storage.backend" in result.stderr and "above the first [table]" in result.stderr
    assert "did you mean" not in result.stderr


@pytest.mark.slow
def test_submit_no_skip_done_reruns_in_the_workers_too(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    assert ds("run", ".", "--interval", "0.2", cwd=folder).returncode == 0
    for step in (
        ["setup"],
        ["submit", "job.json", "--no-skip-done"],
        ["start-cluster"],
        ["monitor", "--interval", "0.2", "--json"],
    ):
        result = ds(*step, cwd=folder)
        assert result.returncode == 0, (step, result.stderr)
    counts = json.loads(result.stdout)["counts"]
    assert counts["done"] == 3 and counts["skipped"] == 0, counts


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_status_gives_no_eta(tmp_path: Path, ds: Ds) -> None:
    folder = write_project(
        tmp_path / "p",
        argv=["{python}", "-c", "import time; time.sleep(2)"],
        groups=[{"name": n} for n in "abc"],
        extra={"cluster": {"docker_cores": 1}},
    )
    run = ds_run_in_background(folder)
    time.sleep(3)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "`ds run` again to resume" in " ".join(stderr.split()), stderr
    status = ds("status", cwd=folder)
    assert status.returncode == 0, status.stderr
    assert "ETA" not in status.stderr and "resumes it" in status.stderr
    resumed = ds("run", ".", "--json", "--interval", "0.2", cwd=folder)
    assert resumed.returncode == 0 and "resuming run" in resumed.stderr


@pytest.mark.slow
def test_ctrl_c_of_ds_monitor_says_the_workers_go_on(tmp_path: Path, ds: Ds) -> None:
    """`ds monitor` only watches, as the family's did: interrupted, it says the workers go
    on and how to watch again or stop them, and they do go on."""
    folder = write_project(
        tmp_path / "m",
        argv=["{python}", "-c", "import time; time.sleep(1)"],
        groups=[{"name": n} for n in "abcd"],
        extra={"cluster": {"docker_cores": 1}},
    )
    for step in (["setup"], ["submit", "job.json"], ["start-cluster"]):
        assert ds(*step, cwd=folder).returncode == 0
    watch = subprocess.Popen(
        [sys.executable, "-m", "distributed_something", "monitor", "--interval", "0.2"],
        cwd=folder,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1.5)
    watch.send_signal(signal.SIGINT)
    _, stderr = watch.communicate(timeout=60)
    said = " ".join(stderr.split())
    assert watch.returncode == 130 and "the workers go on" in said, stderr
    assert "`ds monitor` again" in said and "`ds cleanup` stops it" in said
    status = json.loads(ds("status", "--json", cwd=folder).stdout)
    assert status["active"] and status["counts"]["done"] < 4
    final = ds("monitor", "--json", "--interval", "0.2", cwd=folder)
    assert final.returncode == 0 and json.loads(final.stdout)["counts"]["done"] == 4


RUN = [sys.executable, "-m", "distributed_something", "run", ".", "--interval", "0.2"]


def ds_run_in_background(folder: Path) -> subprocess.Popen[str]:
    """`ds run` of ``folder`` started as a user types it; its stderr is piped (text)."""
    return subprocess.Popen(
        RUN, cwd=folder, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )


@contextlib.contextmanager
def running(folder: Path, *, until: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`ds run` of ``folder`` in the background, once ``until`` exists (60 s at most)."""
    with subprocess.Popen(
        RUN,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as run:
        deadline = time.monotonic() + 60
        while not until.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield run


@pytest.mark.slow
def test_status_watch_follows_a_run_until_it_is_over(tmp_path: Path) -> None:
    folder = write_project(
        tmp_path / "watched",
        argv=["{python}", "-c", "import time; time.sleep(0.5)"],
        groups=[{"name": f"t{i}"} for i in range(6)],
        extra={"cluster": {"docker_cores": 1}},
    )
    ds = [sys.executable, "-m", "distributed_something"]
    with running(folder, until=folder / ".ds") as run:
        watched = subprocess.run(
            [*ds, "status", "--watch", "0.5", "--json"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.wait(timeout=120) == 0
    assert watched.returncode == 0, watched.stderr
    frames = [json.loads(line) for line in watched.stdout.splitlines()]
    done = [frame["counts"]["done"] for frame in frames]
    assert len(frames) >= 3 and done == sorted(done), done  # refreshed, never going back
    last = frames[-1]["counts"]
    assert last["done"] == last["total"] == 6  # it stopped by itself when the run was over
    # Without --json, off a terminal: a timestamped table per refresh, on stderr.
    shown = subprocess.run(
        [*ds, "status", "--watch"], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "done" in shown.stderr and "(finished)" in shown.stderr


FOLLOWED = """\
import os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
(here / "id").write_text(os.environ["DS_TASK_ID"])
first = not (here / "tried").exists()
(here / "tried").touch()
for i in range(4):
    print("tick %d first=%s" % (i, first), flush=True)  # no braces: argv is a template
    time.sleep(0.4)
if first:
    print("failing on purpose", flush=True)
    sys.exit(3)
(here / "finished").touch()
"""


@pytest.mark.slow
def test_logs_follow_streams_every_attempt_until_the_task_is_done(tmp_path: Path) -> None:
    here = tmp_path / "marks"
    here.mkdir()
    folder = write_project(
        tmp_path / "followed",
        argv=["{python}", "-c", FOLLOWED, str(here)],
        groups=[{"name": "only"}],
        extra={"cluster": {"docker_cores": 1}},
    )
    ds = [sys.executable, "-m", "distributed_something"]
    with running(folder, until=here / "id") as run:
        task_id = (here / "id").read_text()
        with subprocess.Popen(
            [*ds, "logs", "-f", task_id[:12]],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as follower:
            assert follower.stdout is not None
            lines = []
            for line in follower.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("tick 0 first=False"):
                    # Streamed live: the second attempt is still running.
                    assert not (here / "finished").exists()
            assert follower.wait(timeout=60) == 0, follower.stderr.read()
        assert run.wait(timeout=120) == 0
    ticks = [ln for ln in lines if ln.startswith(("tick", "failing"))]
    assert ticks == [
        *(f"tick {i} first=True" for i in range(4)),
        "failing on purpose",
        *(f"tick {i} first=False" for i in range(4)),
    ]
    ends = [ln for ln in lines if ln.startswith("ds: attempt")]
    # Once each: the first as the stored log ends it (with why), the second as follow says.
    assert ends == [
        "ds: attempt 1 ended: failed (exit): command exited with code 3: failing on purpose",
        "ds: attempt 2 ended: done",
    ]


def test_logs_follow_refuses_json(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    result = ds("logs", "-f", "abc", "--json", cwd=folder)
    assert (
        result.returncode == 2 and "--follow" in result.stderr and "Traceback" not in result.stderr
    )


def _header(table: str) -> list[str]:
    """The column names of the first rich table in ``table`` (its header row)."""
    line = next(ln for ln in table.splitlines() if ln.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


#: The order of every table of counts: the outcomes, then what is still under way, the sum.
COUNTS = ["done", "skipped", "dead", "failed", "running", "pending", "total"]


@pytest.mark.slow
def test_status_report_and_html_show_the_counts_in_one_order(tmp_path: Path, ds: Ds) -> None:
    folder = _project(tmp_path, ds)
    assert ds("run", "proj", "--interval", "0.2", cwd=tmp_path).returncode == 0
    status = ds("status", cwd=folder)
    report = ds("report", cwd=folder)
    assert status.returncode == 0 and report.returncode == 0, status.stderr + report.stderr
    assert _header(status.stderr) == [*COUNTS, "workers"], status.stderr
    assert _header(report.stderr) == COUNTS, report.stderr
    html = (folder / ".ds/P/report.html").read_text()
    strip = [html.index(f'id="count-{name}"') for name in COUNTS]
    assert strip == sorted(strip)
    for args in (("status", "--json"), ("report", "--json")):
        counts = json.loads(ds(*args, cwd=folder).stdout)["counts"]
        assert list(counts)[: len(COUNTS)] == COUNTS, (args, counts)


def test_a_report_without_dead_tasks_does_not_send_the_user_to_the_dead_letter_commands(
    tmp_path: Path, ds: Ds
) -> None:
    proj = _project(tmp_path, ds)
    for step in (["setup"], ["submit", "job.json"], ["cleanup"]):
        assert ds(*step, cwd=proj).returncode == 0
    result = ds("report", cwd=proj)  # 3 tasks never ran: pending, none dead
    said = " ".join(result.stderr.split())
    assert "tasks needing attention" in said and "pending" in said
    assert "ds dead" not in said
    assert "one cleaned up needs a new `ds run`" in said


@pytest.mark.slow
def test_ds_run_ended_by_a_cleanup_elsewhere_says_so_and_what_is_left(
    tmp_path: Path, ds: Ds
) -> None:
    """`ds cleanup` from another terminal ends a `ds run` under way: the run says it was
    cleaned up from elsewhere and how many tasks it leaves unfinished, and exits 4 (not 1,
    which says tasks died or were left by the run itself)."""
    marker = tmp_path / "started"
    folder = write_project(
        tmp_path / "p",
        argv=[
            "{python}",
            "-c",
            f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(30)",
        ],
        groups=[{"name": n} for n in "abc"],
        extra={"cluster": {"docker_cores": 1}},
    )
    run = ds_run_in_background(folder)
    assert wait_for(marker.exists, timeout=60)
    cleaned = ds("cleanup", cwd=folder)
    assert cleaned.returncode == 0, cleaned.stderr
    _, stderr = run.communicate(timeout=120)
    said = " ".join(stderr.split())
    assert run.returncode == 4, stderr
    assert "cleaned up from elsewhere" in said and "3 task(s) left unfinished" in said, stderr


def test_the_bar_rate_reads_at_every_speed() -> None:
    # A local submit sends millions of tasks a minute: "146,389/s", not "8783370.2/min".
    from types import SimpleNamespace

    from distributed_something.ui import rate_text

    def said(per_second: float | None) -> str:
        return rate_text(SimpleNamespace(speed=per_second))  # type: ignore[arg-type]

    assert said(None) == "–/min"
    assert said(0.01) == "0.6/min"
    assert said(2.5) == "150/min"
    assert said(146_389.2) == "146,389/s"


def test_an_aws_project_without_boto3_is_told_to_install_the_extra(tmp_path: Path) -> None:
    # `make demo` installs no boto3 (the aws extra): a DCP user's config.py (AWS by default)
    # or `backend = "aws"` ended `ds validate`, `ds doctor` and `ds setup` in a traceback
    # (ModuleNotFoundError: botocore, imported at the top of a module validate reached).
    folder = write_project(
        tmp_path / "proj",
        argv=["true"],
        groups=[{"name": "a"}],
        extra={"backend": "aws", "image": "org/tool:1", "storage": {"bucket": "lab-bucket"}},
    )
    blocked = (
        "import sys; sys.modules['boto3'] = sys.modules['botocore'] = None; "
        "sys.argv = ['ds', *sys.argv[1:]]; "
        "from distributed_something.cli.entry import main; main()"
    )
    for command in (["validate"], ["doctor"], ["setup"]):
        done = subprocess.run(
            [sys.executable, "-c", blocked, *command],
            cwd=folder,
            capture_output=True,
            text=True,
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "COLUMNS": "200"},
            timeout=120,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        assert 'the "aws" backend needs boto3, which is not installed' in line
        assert "pip install 'distributed-something[aws]'" in line
    assert not (folder / ".ds").exists()  # nothing was made


def test_run_in_a_folder_without_job_json_names_the_folder(tmp_path: Path, ds: Ds) -> None:
    # It said "argument: --job: no job file …; pass --job FILE or add job.json to FOLDER",
    # naming an option the user did not give and a placeholder, not their folder.
    folder = write_project(tmp_path / "proj", argv=["true"], groups=[{"name": "a"}])
    (folder / "job.json").unlink()
    result = ds("run", str(folder), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: argument: FOLDER: {folder} has no job.json")
    assert f"Fix: add the job file to {folder}" in line and "--job" in line
    given = ds("run", str(folder), "--job", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert f"--job: no job file {tmp_path / 'nope.json'}" in given.stderr


def test_a_family_template_says_its_paths_are_placeholders_for_the_bucket(
    tmp_path: Path, ds: Ds
) -> None:
    # `ds init --recipe cellprofiler` said only "next: ds run", and that run then blamed
    # `recipe.inputs`, a field the cellprofiler recipe does not have.
    folder = tmp_path / "cp"
    made = ds("init", "--recipe", "cellprofiler", str(folder), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    said = " ".join(made.stderr.split())
    bucket = folder / ".ds" / "cp" / "buckets" / "default"
    assert "next: put the files job.json names (its paths are placeholders" in said
    assert f"into the bucket, locally {bucket}/" in said
    config = folder / "ds.toml"
    config.write_text(
        config.read_text().replace(
            'name = "cellprofiler"', 'name = "cellprofiler"\nexecutable = "/bin/true"', 1
        )
    )
    ran = ds("run", str(folder), cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    error = " ".join(ran.stderr.split())
    assert "none of the tasks' inputs (the files job.json names) is there" in error
    assert "recipe.inputs" not in error
