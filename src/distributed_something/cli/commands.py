"""The `ds` commands. Each parses its arguments, calls one use case, and prints."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from distributed_something.backends import BackendKind, backend_kind
from distributed_something.cli.main import backend_option, cli, directory_option
from distributed_something.errors import InputError
from distributed_something.interfaces.compute import ComputeStatus
from distributed_something.ledger import COUNT_COLUMNS
from distributed_something.project import Project
from distributed_something.report.build import RunReport, short_group
from distributed_something.report.render import (
    NO_TASK_YET,
    clip,
    dead_task_text,
    print_summary,
    short_id,
)
from distributed_something.state import state_of_run
from distributed_something.ui import console, info
from distributed_something.usecases import lifecycle, run_info
from distributed_something.usecases.project import open_project
from distributed_something.usecases.scaffold import TEMPLATES

F = TypeVar("F", bound=Callable[..., Any])

PathArg = click.Path(path_type=Path, dir_okay=False)


def config_option(fn: F) -> F:
    """--config: the ds.toml or config.py to use, or the folder holding it (default: the
    current folder's); with it -C DIR and --backend, as every command that reads a config
    may be run from another folder or switched to another backend."""
    fn = backend_option(fn)
    fn = directory_option(fn)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="ds.toml or config.py, or the folder holding it (default: the current folder's)",
    )(fn)


def run_option(fn: F) -> F:
    """--run: an earlier run of the project (default: the current one)."""
    return click.option(
        "--run",
        "run_id",
        default=None,
        metavar="RUN",
        help="a run id (or a unique prefix) from `ds runs` (default: the current run)",
    )(fn)


def json_option(fn: F) -> F:
    """--json: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON on stdout")(fn)


#: A list longer than this (a report's tasks, `ds dead list`) is printed one element a line.
LONG_LIST = 20


def json_text(data: Any) -> str:
    """``data`` as JSON for stdout: indented (one level a space), except that the elements
    of a long list (top level, or a value of the top-level object) are written one a line,
    compactly. Python's indenting encoder is pure Python, about 6x slower than the compact C
    one: for the 2,000 tasks of a report, 0.1 s of a `ds run` that takes 2."""

    def nested(value: Any, pad: str) -> str:
        if isinstance(value, list) and len(value) > LONG_LIST:
            rows = f",\n{pad} ".join(json.dumps(item, default=str) for item in value)
            return f"[\n{pad} {rows}\n{pad}]"
        return json.dumps(value, indent=1, default=str).replace("\n", "\n" + pad)

    if isinstance(data, dict) and data and all(isinstance(key, str) for key in data):
        fields = ",\n ".join(f"{json.dumps(k)}: {nested(v, ' ')}" for k, v in data.items())
        return f"{{\n {fields}\n}}"
    return nested(data, "")


def emit_json(data: Any) -> None:
    sys.stdout.write(json_text(data) + "\n")


#: The exit code of a `ds run` or `ds monitor` whose run another command (`ds cleanup`)
#: ended before every task had an outcome: not 1, which says the run itself left tasks dead
#: or unfinished, so a script can tell a run stopped on purpose from one that failed.
ENDED_ELSEWHERE_EXIT = 4


def finish_report(project: Project, report: RunReport, as_json: bool) -> int:
    """Print a report; exit code 1 when tasks are dead or unfinished, 4 when the run was
    cleaned up from elsewhere before every task had an outcome."""
    if as_json:
        emit_json(report.to_json())
    print_summary(
        report,
        f"outputs: {lifecycle.outputs_location(project)}\n"
        f"report:  {project.report_path.with_suffix('.html')}",
    )
    if report.ended_elsewhere and not report.ok:
        left = sum(report.counts[k] for k in ("failed", "running", "pending"))
        dead = report.counts["dead"]
        info(
            f"run {report.run_id} was cleaned up from elsewhere (`ds cleanup`) before it "
            f"finished: {left} task(s) left unfinished"
            + (f", {dead} dead" if dead else "")
            + f"; `ds report --run {report.run_id}` lists them"
        )
        return ENDED_ELSEWHERE_EXIT
    return 0 if report.ok else 1


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=".")
@click.option("--app-name", default=None, help="default: the folder's name")
@click.option(
    "--recipe",
    type=click.Choice(list(TEMPLATES)),
    default="command",
    show_default=True,
    help="what each task runs; job.json is then in that family's format (DCP, DF, DOZC)",
)
@click.option("--force", is_flag=True, help="overwrite existing files")
def init(folder: Path, app_name: str | None, recipe: str, force: bool) -> None:
    """Start a project: a commented ds.toml and a job.json to edit."""
    import shlex

    from distributed_something.usecases.scaffold import app_name_for, init_project

    name = app_name or app_name_for(folder)
    for path in init_project(folder, name, force=force, recipe=recipe):
        info(f"wrote {path}")
    if app_name is None:
        info(
            f"app name: {name} (from the folder's name; it names the queue and storage: "
            "change app_name in ds.toml, or pass --app-name)"
        )
    if recipe != "command":
        # The family's job file names keys in the bucket, placeholders until they are there.
        bucket = folder / ".ds" / name / "buckets" / "default"
        info(
            f"next: put the files job.json names (its paths are placeholders: change them to "
            f"yours) into the bucket, locally {bucket}/, then `ds validate` checks they are "
            "there"
        )
    info(f"next: ds run {shlex.quote(str(folder))}")


@cli.command()
@config_option
@click.option(
    "--job", "job_path", type=PathArg, help="a job file to check (default: ./job.json if present)"
)
@click.option("--fleet", "fleet_path", type=PathArg, help="a spot fleet file to check")
@json_option
def validate(
    config_path: Path | None, job_path: Path | None, fleet_path: Path | None, as_json: bool
) -> None:
    """Check config, job file and fleet file. Creates nothing."""
    from distributed_something.usecases.validate import validate as run_validate

    if job_path is None and Path("job.json").is_file():
        job_path = Path("job.json")  # what `ds run .` would submit
    project = open_project(config_path, job=job_path)
    result = run_validate(project, job_path, fleet_path)
    for note in result.notes:
        info(f"[yellow]note:[/] {escape(note)}")
    summary: dict[str, Any] = {"config": str(project.config_path), "ok": True}
    # What will run: the backend (after --backend) and the recipe (maybe implied by the files).
    recipe = project.config.recipe.name or "(the image's own worker)"
    summary |= {"backend": project.config.backend, "recipe": recipe}
    if result.job is not None:
        summary |= {
            "job": str(job_path),
            "format": result.job.format,
            "tasks": len(result.job.tasks),
        }
        summary["duplicates"] = len(result.job.duplicates)
    if result.fleet is not None:
        summary["fleet"] = str(fleet_path)
    if as_json:
        emit_json(summary)
    info("[green]valid[/]: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "ok"))
    if result.job is None:
        info(
            "no job file checked: give one with --job (a job.json in the current folder, or in "
            "the -C folder, is read without it)"
        )


@cli.group()
def config() -> None:
    """Config helpers."""


@config.command("convert")
@click.argument("source", type=PathArg)
@click.option("-o", "--output", type=PathArg, default=None, help="default: ds.toml beside it")
@click.option("--force", is_flag=True, help="overwrite an existing file")
def config_convert(source: Path, output: Path | None, force: bool) -> None:
    """Write the ds.toml equivalent of a legacy config.py."""
    from distributed_something.config.convert import convert_file

    converted = convert_file(source, output or source.with_name("ds.toml"), force=force)
    info(f"wrote {converted.path}")
    for note in converted.notes:
        info(f"[yellow]note:[/] {escape(note)}")


@cli.command()
@config_option
def setup(config_path: Path | None) -> None:
    """Create the queue, storage and state of a run (idempotent)."""
    project = open_project(config_path)
    state = lifecycle.setup(project)
    info(f"run {state.run_id} of {project.config.app_name} is set up ({state.backend})")


@cli.command()
@click.argument("job", type=PathArg)
@config_option
@click.option(
    "--skip-done/--no-skip-done",
    default=None,
    help="leave out tasks already done (default: when check-if-done is on); with "
    "--no-skip-done the run's workers rerun done tasks too",
)
@click.option(
    "--force",
    is_flag=True,
    help="send every task, even those pending or running in this run, or already done",
)
@json_option
def submit(
    job: Path, config_path: Path | None, skip_done: bool | None, force: bool, as_json: bool
) -> None:
    """Validate JOB and send its tasks to the queue (alias: submitJob)."""
    project = open_project(config_path, job=job)
    try:
        result = lifecycle.submit(project, job, skip_done=skip_done, force=force)
    except KeyboardInterrupt:
        info("the same `ds submit` again sends what this one did not (tasks sent are left out)")
        raise
    if skip_done is False:
        # Done tasks were sent to run again: the workers must not skip them either. (--force
        # alone does not: its copies of a task would each run, instead of one being skipped.)
        lifecycle.rerun_done_tasks(project)
    if as_json:
        emit_json(
            {
                "sent": result.sent,
                "skipped": result.skipped,
                "left_out": result.left_out,
                "duplicates": result.duplicates,
                "resumed": result.resumed,
            }
        )
    for line in result.lines(str(job)):
        info(line)


@cli.command("start-cluster")
@click.argument("fleet", type=PathArg, required=False)
@config_option
def start_cluster(fleet: Path | None, config_path: Path | None) -> None:
    """Start the workers (alias: startCluster). FLEET is the spot fleet file on AWS."""
    project = open_project(config_path)
    if fleet is not None and not backend_kind(project.config.backend).uses_fleet:
        info(f"{project.config.backend} backend: the fleet file is not needed and was ignored")
        fleet = None
    status = lifecycle.start_cluster(project, fleet)
    info(workers_line(status, backend_kind(project.config.backend)))
    if status.waiting:
        info(f"[yellow]workers not started:[/] {escape(status.waiting)}")


def workers_line(status: ComputeStatus, kind: BackendKind) -> str:
    """What the workers asked for are doing, in the backend's words (`BackendKind`): "N
    worker(s) running" when all are, else how many were asked for, run and wait."""
    waiting = status.desired - status.running
    if not kind.workers_queued or waiting <= 0:
        return f"{status.running} worker(s) running"
    return (
        f"{status.desired} worker(s) {kind.workers_asked}: {status.running} running, "
        f"{waiting} {kind.workers_queued}"
    )


@cli.command()
@click.argument("monitor_file", type=PathArg, required=False)
@click.argument("legacy_cheapest", metavar="[CHEAPEST]", required=False)
@config_option
@click.option("--cheapest", is_flag=True, help="drop to one machine after 15 minutes")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None, help="seconds per poll")
@json_option
def monitor(
    monitor_file: Path | None,
    legacy_cheapest: str | None,
    config_path: Path | None,
    cheapest: bool,
    interval: float | None,
    as_json: bool,
) -> int:
    """Watch the run until drained, clean up, write the report.

    MONITOR_FILE (the family's files/<APP_NAME>SpotFleetRequestId.json) and CHEAPEST ("True",
    as run.py took it) are accepted as the family wrote them; the run state says the rest.
    """
    project = open_project(config_path)
    if legacy_cheapest is not None:
        cheapest = cheapest or legacy_cheapest.strip().lower() in ("true", "1", "yes")
    try:
        report = lifecycle.monitor(project, cheapest=cheapest, interval=interval)
    except KeyboardInterrupt:
        # Only the watching stops, as with the family's monitor: the workers go on.
        info(
            "interrupted: the workers go on with the run; `ds monitor` again watches it to "
            "its end, `ds cleanup` stops it"
        )
        raise
    return finish_report(project, report, as_json)


@cli.command()
@config_option
@run_option
@json_option
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="refresh every SECONDS (default 2) until the run is over or Ctrl-C; with --json, "
    "one JSON object per line",
)
def status(
    config_path: Path | None, run_id: str | None, as_json: bool, watch: float | None
) -> None:
    """Counts by state (from the run's records), workers and ETA of the run."""
    project = open_project(config_path)
    st = run_info.status(project, run_id=run_id)
    kind = backend_kind(project.config.backend)
    if watch is None:
        if as_json:
            emit_json(st.to_json())
        else:
            console.print(Group(*_status_frame(st, kind)))
        return
    try:
        _watch_status(project, kind, run_id, st, watch, as_json)
    except KeyboardInterrupt:
        info("stopped watching (the run goes on)")


def _watch_status(
    project: Project,
    kind: BackendKind,
    run_id: str | None,
    st: run_info.Status,
    every: float,
    as_json: bool,
) -> None:
    """Show ``st`` and refresh it every ``every`` seconds until the run is over: in place on a
    terminal, else one frame (or JSON line) per refresh."""
    lookups = run_info.RunningLookups()
    if as_json or not console.is_terminal:
        while True:
            if as_json:
                print(json.dumps(st.to_json()), flush=True)
            else:
                console.print(
                    Group(Text(time.strftime("%H:%M:%S"), style="dim"), *_status_frame(st, kind))
                )
            if _run_over(st):
                return
            time.sleep(every)
            st = run_info.status(project, run_id=run_id, lookups=lookups)
    with Live(Group(*_status_frame(st, kind)), console=console, auto_refresh=False) as live:
        while not _run_over(st):
            time.sleep(every)
            st = run_info.status(project, run_id=run_id, lookups=lookups)
            live.update(Group(*_status_frame(st, kind)), refresh=True)


def _run_over(st: run_info.Status) -> bool:
    """Nothing more will change: the run was cleaned up, or every task has its outcome (and
    there are tasks: a run being submitted has none yet)."""
    return not st.active or 0 < st.progress.total <= st.progress.finished


#: Running tasks named under the status table (all of them are in --json)
RUNNING_SHOWN = 5


def _running_note(tasks: list[run_info.RunningTask], running: int) -> str:
    """One line naming the longest-running tasks: id (as `ds logs` takes it), attempt,
    how long it has run."""
    now = time.time()
    shown = [
        f"{t.task_id[:12]} ({_for(now - t.started_at)}"
        + (f", attempt {t.attempt})" if t.attempt > 1 else ")")
        for t in tasks[:RUNNING_SHOWN]
    ]
    more = f" and {running - len(shown)} more" if running > len(shown) else ""
    # Beyond the tasks looked up, the longest may be among the others.
    label = "running longest" if running <= run_info.RUNNING_LOOKUP_MAX else "running"
    return f"{label}: {', '.join(shown)}{more} (`ds logs -f ID` follows one)"


def _for(seconds: float) -> str:
    """A duration as 45s, 12m05s or 3h07m."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _status_frame(st: run_info.Status, kind: BackendKind) -> list[RenderableType]:
    """The status table and the notes under it; ``kind`` words the workers (`workers_line`)."""
    p = st.progress
    title = f"{st.app_name} · run {st.run_id}" + ("" if st.active else " (finished)")
    table = Table(title=title)
    # The report's columns in its order (a failed task waits for its retry; dead ones are
    # out of retries), then the workers.
    counts = p.counts()
    for col in (*COUNT_COLUMNS, "workers"):
        table.add_column(col, justify="right")
    table.add_row(
        *(str(counts[col]) for col in COUNT_COLUMNS),
        f"{st.workers_running}/{st.workers_desired}",
    )
    eta = f", ETA {st.eta_seconds:.0f}s" if st.eta_seconds is not None else ""
    notes = [f"elapsed {st.elapsed:.0f}s{eta}"]
    if st.running_tasks:
        notes.append(_running_note(st.running_tasks, p.running))
    if p.duplicates:
        notes.append(
            f"[yellow]{p.duplicates} task(s) delivered twice or run to the end twice[/] "
            "(see `ds report`)"
        )
    if p.corrupt:
        notes.append(f"[red]{p.corrupt} record(s) could not be read[/]: `ds report` lists them")
    for problem in st.machine_problems:
        notes.append(f"[yellow]warning:[/] {escape(problem)}")
    for note in st.backend_notes:
        notes.append(f"[red]stopped:[/] {escape(note)}")
    if st.waiting_for_monitor:
        notes.append(
            f"[yellow]{st.waiting_for_monitor} pending task(s) cannot run:[/] nothing is queued "
            f"or running and the dead-letter queue holds {st.dead_letters} message(s); they "
            "were dead-lettered (or lost), and `ds monitor` (or the unattended monitor) "
            "gives them their outcome: then `ds dead list` shows them"
        )
    if st.workers_waiting and p.total > p.finished:
        # ECS's placement message has a fix; other backends' reasons say it themselves.
        placing = "unable to place a task" in st.workers_waiting
        hint = (
            " (a worker needs cluster.memory and cluster.cpu_shares free on one machine: "
            "docs/aws.md)"
            if placing
            else ""
        )
        notes.append(f"[yellow]workers not started:[/] {escape(st.workers_waiting)}{hint}")
    if st.unsent:
        notes.append(
            f"[yellow]{st.unsent} pending task(s) not sent yet[/] (a submit was interrupted): "
            "`ds monitor`, `ds run` or `ds submit` sends them"
        )
    if st.active and p.total == 0 and not st.unsent:
        notes.append(NO_TASK_YET)
    workers = ComputeStatus(desired=st.workers_desired, running=st.workers_running)
    if st.active and kind.workers_queued and workers.desired > workers.running:
        notes.append(workers_line(workers, kind))  # e.g. Slurm jobs still PENDING
    elif st.active and st.workers_running == 0 and not st.workers_waiting and p.total > p.finished:
        # `ds run` resumes a run of its one job file only.
        resume = "`ds run` again resumes it, or " if st.job_files <= 1 else ""
        notes.append(
            "no workers are running (none started yet, or the run was interrupted): "
            f"{resume}`ds start-cluster` then `ds monitor`"
        )
    if not st.active and p.total > p.finished:
        notes.append(
            f"{p.total - p.finished} task(s) have no outcome: the run was stopped. "
            "Submit the job file again after `ds setup` (done tasks are skipped)"
        )
    return [table, *(Text.from_markup(note) for note in notes)]


@cli.command()
@config_option
@json_option
def runs(config_path: Path | None, as_json: bool) -> None:
    """Every run of this project: id, start, job files, counts, state."""
    project = open_project(config_path)
    found = run_info.runs(project)
    if as_json:
        emit_json([r.to_json() for r in found])
        return
    if not found:  # rather than a table of headers only
        info(f"no run of {project.config.app_name} yet: `ds run` starts one (or `ds setup`)")
        return
    # Light borders and no job column (it is in --json): a run's id, start and counts fit
    # 80 columns, and the id, which --run takes, is never cut.
    table = Table(
        title=f"runs of {project.config.app_name} ({len(found)})",
        box=None,
        pad_edge=False,
        header_style="bold underline",
    )
    table.add_column("run", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("state", no_wrap=True)
    # The outcomes and the total, in the order of `ds status` and `ds report`.
    runs_columns = [c for c in COUNT_COLUMNS if c in ("done", "skipped", "dead", "total")]
    for col in runs_columns:
        table.add_column(col, justify="right", no_wrap=True)
    for r in found:
        c = r.counts
        table.add_row(
            r.run_id,
            time.strftime("%m-%d %H:%M", time.localtime(r.created_at)),
            r.state,
            *(str(c[k]) for k in runs_columns),
        )
    console.print(table)


@cli.command()
@click.argument("task")
@config_option
@run_option
@click.option(
    "--full",
    is_flag=True,
    help="print every byte of a huge log (default: its first and last MiB)",
)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="then follow the task in the current run: its output as it is written (on AWS "
    "from CloudWatch), attempt after attempt, until the task is done or dead",
)
@json_option
def logs(
    task: str,
    config_path: Path | None,
    run_id: str | None,
    full: bool,
    follow: bool,
    as_json: bool,
) -> None:
    """Print the logs of TASK (an id or a unique prefix, or the group's values as
    key=value[,key=value], e.g. name=first or Metadata_Well=A01): every attempt, in every
    run.

    Terminal control sequences (colours, cursor moves) are removed; a log over 2 MiB is
    printed as its first and last MiB unless --full is given. With --json: the task, its
    state in each run and each log's run, key and text (cut the same way)."""
    if follow and (as_json or run_id is not None):
        raise InputError(
            "argument",
            "--follow",
            "follows the current run's task as text",
            "drop --json and --run, or drop --follow",
        )
    project = open_project(config_path)
    found = run_info.task_logs(project, task, run_id=run_id)
    if as_json:
        entries = []
        for log in found.logs:
            parts: list[str] = []
            cuts: list[run_info.LogCut] = []
            run_info.stream_log(found.storage, log, parts.append, full=full, on_cut=cuts.append)
            entries.append(
                {
                    "run_id": log.run_id,
                    "key": log.key,
                    "size": log.size,
                    "cut": [{"start": c.start, "end": c.end} for c in cuts],
                    "text": "".join(parts),
                }
            )
        emit_json({"task_id": found.task_id, "states": found.states, "logs": entries})
        return
    if not found.logs:
        states = set(found.states.values())
        if states & {"done", "skipped"}:
            why = "finished and printed nothing: no log is kept for that"
        elif states <= {"pending"}:
            why = "has not run yet"
        else:
            why = "has no stored log"
        info(f"task {escape(found.task_id)} {why}")

    def cut_note(cut: run_info.LogCut) -> None:
        sys.stdout.flush()  # the note goes between the head and the tail on a terminal
        info(
            f"[yellow]… {cut.size / 2**20:.1f} MiB (bytes {cut.start}–{cut.end}) of this log "
            f"left out …[/] (`ds logs --full {escape(found.task_id[:12])}` prints everything)"
        )

    try:
        for log in found.logs:
            sys.stdout.flush()
            # soft_wrap: the key stays one line, to be copied whole
            console.print(
                f"[bold]── run {escape(log.run_id)} · {escape(log.key)}[/]", soft_wrap=True
            )
            run_info.stream_log(found.storage, log, sys.stdout.write, full=full, on_cut=cut_note)
        sys.stdout.flush()
        if follow:
            from distributed_something.usecases.follow import follow_task

            stripper = run_info.ControlStripper()

            def write(text: str) -> None:
                sys.stdout.write(stripper.feed(text))
                sys.stdout.flush()

            follow_task(project, found.task_id, write)
    except KeyboardInterrupt:
        info("stopped following (the task goes on)")
    except BrokenPipeError:
        # `ds logs TASK | head` closed the pipe: that is all the reader wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.group()
def dead() -> None:
    """The dead tasks of a run: tasks that failed every attempt."""


@dead.command("list")
@config_option
@run_option
@json_option
def dead_list(config_path: Path | None, run_id: str | None, as_json: bool) -> None:
    """List the run's dead tasks (one row each) with their last error."""
    project = open_project(config_path)
    items = run_info.dead_list(project, run_id=run_id)
    if as_json:
        emit_json([d.to_json() for d in items])
        return
    if not items:  # rather than a table of headers only
        which = f"run {run_id}" if run_id else "the current run"
        info(f"no dead task in {which} (`ds status` shows its counts)")
        _note_redriven(project, run_id)
        return
    table = Table(title=f"dead tasks ({len(items)})")
    for col in ("task", "group", "tries", "cause", "error"):
        table.add_column(col, overflow="fold")
    for d in items:
        table.add_row(
            short_id(d.task_id),
            escape(short_group(d.group)),
            str(d.attempts),
            escape(d.cause or ""),
            escape(clip(d.first_error or d.error, 160)),
        )
    console.print(table)
    _note_redriven(project, run_id)
    info("see `ds dead show TASK`, `ds logs TASK`, `ds dead redrive`")


def _note_redriven(project: Project, run_id: str | None) -> None:
    """Say where the run's dead tasks redriven into newer runs went: its counts still show
    them dead (they died there), and the list leaves them out."""
    if run_id is None:
        return  # the current run: a redrive into a newer run made that one current
    backend = lifecycle.backend_of_run(project, None)
    run_id = state_of_run(project, backend.storage, run_id).run_id  # a prefix given
    moved = run_info.redriven_from(project, backend, run_id)
    for target in sorted(set(moved.values())):
        n = sum(1 for run in moved.values() if run == target)
        info(f"{n} dead task(s) of run {run_id} redriven into run {target} (not listed)")


@dead.command("show")
@click.argument("task")
@config_option
@run_option
@json_option
def dead_show(task: str, config_path: Path | None, run_id: str | None, as_json: bool) -> None:
    """Show one dead task (TASK: its id or a unique prefix, or its group's values as
    key=value[,key=value]): group, attempts (time, cause, exit, error), the log tail."""
    shown = run_info.dead_show(open_project(config_path), task, run_id=run_id)
    if as_json:
        emit_json(shown)
        return
    sys.stdout.write(dead_task_text(shown))


@dead.command("redrive")
@click.argument("tasks", nargs=-1)
@config_option
@run_option
def dead_redrive(tasks: tuple[str, ...], config_path: Path | None, run_id: str | None) -> None:
    """Put dead tasks (all, or the TASKS given: ids, prefixes, or key=value[,…] of their
    groups) back on the queue, once each."""
    moved = run_info.dead_redrive(open_project(config_path), list(tasks) or None, run_id=run_id)
    if not moved:
        info("no dead task to redrive: nothing was sent (`ds dead list` shows the dead tasks)")
        return
    info(
        f"{moved} task(s) back on the queue; run `ds run` again (the same job file), or "
        "`ds start-cluster` and `ds monitor`"
    )


@cli.command()
@config_option
@run_option
@json_option
@click.option(
    "--trace",
    "trace_path",
    type=PathArg,
    default=None,
    help="also write one TSV row per attempt (start, end, CPU, memory, exit, cause) here",
)
def report(
    config_path: Path | None, run_id: str | None, as_json: bool, trace_path: Path | None
) -> int:
    """The run's report (every task's outcome)."""
    project = open_project(config_path)
    code = finish_report(project, lifecycle.report(project, run_id=run_id), as_json)
    if trace_path is not None:
        rows = run_info.trace(project, trace_path, run_id=run_id)
        info(f"trace: {rows} attempt(s) in {escape(str(trace_path))}")
    return code


@cli.command()
@config_option
def cleanup(config_path: Path | None) -> None:
    """Stop workers and tear the run down now (dead letters, outputs and records stay)."""
    project = open_project(config_path)
    asked = time.time()
    state = lifecycle.cleanup(project)
    if state is None:
        info(f"nothing to clean up: no run of {project.config.app_name} is set up here")
    elif state.finished_at is not None and state.finished_at < asked:
        # Torn down again all the same: an earlier teardown may have been cut short.
        when = time.strftime("%m-%d %H:%M", time.localtime(state.finished_at))
        info(
            f"{project.config.app_name} run {state.run_id} was already finished ({when}); "
            "checked that nothing of it is left running. `ds setup` starts a new run"
        )
    else:
        info(f"cleaned up {project.config.app_name} run {state.run_id}")


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), required=False)
@config_option
@click.option("--job", "job_path", type=PathArg, default=None, help="default: FOLDER/job.json")
@click.option("--fleet", "fleet_path", type=PathArg, default=None, help="spot fleet file (aws)")
@click.option("--cheapest", is_flag=True, help="drop to one machine after 15 minutes")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None, help="seconds per poll")
@click.option(
    "--force",
    is_flag=True,
    help="rerun every task, even those already done (the workers skip none either)",
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="worker processes (local and slurm; default: from the config's [cluster])",
)
@click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    help="print the exact command of the first tasks (see --show) and exit; creates nothing",
)
@click.option(
    "--show",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="with --dry-run: how many tasks' commands to print",
)
@json_option
def run(
    folder: Path | None,
    config_path: Path | None,
    job_path: Path | None,
    fleet_path: Path | None,
    cheapest: bool,
    interval: float | None,
    force: bool,
    workers: int | None,
    dry_run: bool,
    show: int,
    as_json: bool,
) -> int:
    """Validate, set up, submit, start workers, monitor and report, in one go.

    FOLDER (default: the current one) holds ds.toml or config.py and job.json. Interrupted
    (Ctrl-C), the run stays in progress: the same command again resumes it.
    """
    folder = folder or Path.cwd()
    if not folder.is_dir():
        raise InputError("argument", "FOLDER", f"{folder} is not a folder", "give a project folder")
    job = job_path or folder / "job.json"
    project = open_project(config_path, folder, job=job)
    if not job.is_file():
        if job_path is not None:
            raise InputError("argument", "--job", f"no job file {job}", "give a job file's path")
        raise InputError(
            "argument",
            "FOLDER",
            f"{folder} has no job.json",
            f'add the job file to {folder} (one task per element of its "groups"), or pass '
            "--job FILE",
        )
    if dry_run:
        return _dry_run(project, job, show, as_json)
    if workers is not None:
        project = _with_workers(project, workers)
    report = lifecycle.run(
        project, job, fleet_path=fleet_path, cheapest=cheapest, interval=interval, force=force
    )
    return finish_report(project, report, as_json)


def _dry_run(project: Project, job: Path, count: int, as_json: bool) -> int:
    """Plan every task (as `ds validate` does) and print the first ``count`` commands."""
    import shlex

    from distributed_something.recipes.base import TaskPlan
    from distributed_something.usecases.validate import check_job

    plans: list[TaskPlan] = []
    parsed = check_job(project, job, plans)
    shown = plans[:count]
    if as_json:
        emit_json(
            {
                "tasks": len(parsed.tasks),
                "commands": [{"argv": p.argv, "output_prefix": p.output_prefix} for p in shown],
            }
        )
    else:
        for plan in shown:
            sys.stdout.write(shlex.join(plan.argv) + "\n")
        sys.stdout.flush()  # the commands, then the summary on stderr, in a shared pipe too
    if not plans:
        info("the recipe is the image's own worker: there is no command to show")
    info(
        f"dry run: {len(parsed.tasks)} task(s) planned, {len(shown)} shown "
        "(/ds-scratch is the worker's scratch folder); nothing was created"
    )
    return 0


def _with_workers(project: Project, workers: int) -> Project:
    """The project with ``workers`` worker processes (``-j``): one machine running them."""
    from dataclasses import replace

    config = project.config
    if backend_kind(config.backend).in_image:
        raise InputError(
            "argument",
            "--workers",
            "on AWS the workers are the fleet's machines × tasks × docker_cores",
            "set [cluster] in the config instead",
        )
    cluster = config.cluster.model_copy(
        update={"machines": 1, "tasks_per_machine": 1, "docker_cores": workers}
    )
    local = config.local.model_copy(update={"workers": None})
    return replace(project, config=config.model_copy(update={"cluster": cluster, "local": local}))


@cli.command()
@config_option
@click.option("--name", default=None, help="the worker's name in logs and records")
@click.option(
    "--start-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="seconds to wait before taking the first task (the family's SECONDS_TO_START stagger)",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="worker processes side by side (default: cluster.docker_cores on AWS, else 1)",
)
def worker(
    config_path: Path | None, name: str | None, start_delay: float, processes: int | None
) -> int:
    """Process tasks until the queue is drained (the container entrypoint)."""
    from distributed_something.usecases.work import run_processes, run_worker, worker_project

    project = worker_project(config_path)
    cluster = project.config.cluster
    if processes is None:
        processes = cluster.docker_cores if backend_kind(project.config.backend).in_image else 1
    if processes > 1:
        return run_processes(
            config_path,
            name=name or socket.gethostname(),
            processes=processes,
            seconds_to_start=cluster.seconds_to_start,
        )
    run_worker(project, name=name, start_delay=start_delay)
    return 0


@cli.group()
def image() -> None:
    """The worker container image."""


def _checked_platform(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--platform as docker and podman take it (``os/arch[/variant]``), or a usage error."""
    from distributed_something.platforms import PLATFORM_PATTERN

    if value is not None and not PLATFORM_PATTERN.match(value):
        raise click.BadParameter(f"{value!r} is not OS/ARCH, e.g. linux/amd64 or linux/arm64")
    return value


@image.command("build")
@click.option(
    "--base",
    default="python:3.11-slim-bookworm",
    show_default=True,
    help="the tool image (any distribution, any Python or none)",
)
@click.option("--tag", required=True, help="the image tag to build, e.g. me/ds-tool:1")
@click.option(
    "--python-image",
    default="python:3.11-slim-bookworm",
    show_default=True,
    help="a glibc image with Python >= 3.11: the Python bundled with ds comes from it",
)
@click.option(
    "--engine",
    type=click.Choice(["docker", "podman"]),
    default=None,
    help="the container engine (default: the first of docker, podman that answers)",
)
@click.option("--extras", default="aws", show_default=True, help="package extras to install")
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="HOST:CONTAINER[:ro]",
    help="podman only: mount a host file into the build steps (not the image), e.g. the "
    "host's CA bundle when pip reaches its index through a TLS-re-signing proxy",
)
@click.option(
    "--platform",
    default=None,
    metavar="OS/ARCH",
    callback=_checked_platform,
    help="the platform to build for: linux/amd64 (x86_64 instances) or linux/arm64 "
    "(Graviton). Default: the architecture of the config's aws.machine_type when it is one, "
    "else this machine's. An image of another architecture than the instances' does not "
    "start on them",
)
@config_option
def image_build(
    base: str,
    tag: str,
    python_image: str,
    engine: str | None,
    extras: str,
    volumes: tuple[str, ...],
    platform: str | None,
    config_path: Path | None,
) -> None:
    """Build the worker image (entrypoint `ds worker`) on top of a tool image, with `ds` and a
    Python of its own that do not depend on the tool image's, for the architecture of the
    instances that will run it (--platform)."""
    from distributed_something.usecases.image import build_image, configured_platform

    if platform is None:
        platform, why = configured_platform(config_path)
        info(f"building for {platform or 'this machine'}: {why} (--platform to choose)")
    built = build_image(
        base=base,
        tag=tag,
        engine=engine,
        extras=extras,
        volumes=volumes,
        python_image=python_image,
        platform=platform,
    )
    info(f"built {built}")


@cli.group("aws")
def aws_group() -> None:
    """One-time AWS account setup."""


@aws_group.command("bootstrap")
@config_option
@click.option("--prefix", default=None, help="name prefix and policy scope (default: app name)")
@json_option
def aws_bootstrap(config_path: Path | None, prefix: str | None, as_json: bool) -> None:
    """Create the ECS instance role and profile, spot fleet role, monitor role, topic and
    monitor function (idempotent)."""
    from distributed_something.usecases.account import bootstrap_account

    arns = bootstrap_account(open_project(config_path), prefix)
    if as_json:
        emit_json(arns)
    for kind, arn in arns.items():
        info(f"{kind}: {arn}")


@aws_group.command("destroy")
@config_option
@click.option("--prefix", default=None, help="the prefix given to bootstrap")
def aws_destroy(config_path: Path | None, prefix: str | None) -> None:
    """Remove what `ds aws bootstrap` created."""
    from distributed_something.usecases.account import destroy_account

    removed = destroy_account(open_project(config_path), prefix)
    info(f"removed {len(removed)} resource(s): {', '.join(removed) or 'nothing left'}")


@cli.command()
@config_option
@click.option("--fleet", "fleet_path", type=PathArg, default=None, help="the spot fleet file")
@click.option("--prefix", default=None, help="the prefix given to `ds aws bootstrap`")
@json_option
def doctor(
    config_path: Path | None, fleet_path: Path | None, prefix: str | None, as_json: bool
) -> int:
    """Check the AWS account for this project (changes nothing): credentials, region,
    roles, the fleet file's subnets / security groups / key pair / AMI, buckets, and the
    cluster's instances during a run. Exit 1 when something is wrong."""
    from distributed_something.usecases.doctor import doctor as run_doctor

    found = run_doctor(open_project(config_path), fleet_path, prefix)
    if as_json:
        emit_json([f.to_json() for f in found])
    table = Table(title="ds doctor")
    for col in ("check", "", "found", "fix"):
        table.add_column(col, overflow="fold")
    for f in found:
        mark = "[green]ok[/]" if f.ok else "[red]problem[/]"
        table.add_row(escape(f.check), mark, escape(f.detail), escape(f.fix))
    console.print(table)
    bad = sum(1 for f in found if not f.ok)
    info(f"[red]{bad} problem(s)[/]" if bad else "[green]everything checked is ready[/]")
    return 1 if bad else 0
