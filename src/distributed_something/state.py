"""The run state: what a run created and when, kept locally and in the main bucket.

Commands read it to find the current run; cleanup reads it to know what to remove, so a
crash never leaves anything unaccounted for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from distributed_something.atomicfile import PRIVATE_FILE_MODE, write_text_atomically
from distributed_something.errors import InputError
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.records import META_ROOT

# Not the terminal's `ui`: this module is also in the unattended monitor, which has no rich.
log = logging.getLogger("ds.state")


class RunState(BaseModel):
    """One run, from setup to cleanup."""

    run_id: str
    app_name: str
    backend: str
    created_at: float
    dead_at_start: int = 0
    submitted: int = 0
    job_files: list[str] = Field(default_factory=list)
    workers_started_at: float | None = None
    finished_at: float | None = None
    cleaned_up: bool = False
    resources: dict[str, Any] = Field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.finished_at is None


#: The ``resources`` key under which a monitor running elsewhere keeps its notes (the AWS
#: unattended monitor, which writes only the bucket's copy of the state): `load_state`
#: takes them from that copy, so a command saving its own copy does not undo them.
MONITOR_BOOK = "lambda_monitor"
#: Its note of a run whose workers kept failing (the error): it set the workers to 0 and
#: starts nothing until `ds start-cluster` clears it (`clear_workers_failing`).
WORKERS_FAILING = "workers_failing"


def clear_workers_failing(state: RunState) -> bool:
    """Remove the unattended monitor's workers-failing note from ``state``; whether there
    was one."""
    book = state.resources.get(MONITOR_BOOK)
    return isinstance(book, dict) and book.pop(WORKERS_FAILING, None) is not None


def new_state(project: Project, backend: str, dead_at_start: int) -> RunState:
    """A fresh run with a sortable, unique id."""
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    return RunState(
        run_id=run_id,
        app_name=project.config.app_name,
        backend=backend,
        created_at=time.time(),
        dead_at_start=dead_at_start,
    )


def state_key(app_name: str) -> str:
    """Where the run state is kept in the main bucket."""
    return f"{META_ROOT}/{app_name}/state.json"


def load_state(project: Project, storage: Storage | None = None) -> RunState | None:
    """The current run's state, or None when no run was set up.

    With ``storage``, the bucket's copy is read too: it is used when there is no local copy
    (a monitor started on another machine) or when it is further along for the same run
    (the unattended monitor said it finished, or tore it down).
    """
    local = None
    damaged = ""
    with contextlib.suppress(FileNotFoundError):
        try:
            local = RunState.model_validate_json(project.state_path.read_text())
        except ValidationError as exc:  # a damaged file
            damaged = str(exc.errors()[0].get("msg", "not a run state"))
    if local is not None:
        local = _of_this_backend(project, local)
    remote = None
    if storage is not None:
        key = state_key(project.config.app_name)
        with contextlib.suppress(KeyError, ValueError):  # missing, or damaged too
            remote = RunState.model_validate_json(storage.get_bytes(key))
    if damaged:
        if remote is not None:
            # The bucket's copy is written with every local one: the run goes on from it,
            # and the damaged file is kept aside, not overwritten.
            kept = project.state_path.with_name(f"state.json.damaged-{time.time_ns()}")
            project.state_path.replace(kept)
            write_text_atomically(
                project.state_path, remote.model_dump_json(indent=1), mode=PRIVATE_FILE_MODE
            )
            log.warning(
                "%s was damaged (%s): restored from the copy in the bucket (the damaged file "
                "is kept as %s)",
                project.state_path,
                damaged,
                kept.name,
            )
            return remote
        raise InputError(
            str(project.state_path),
            None,
            f"the run state is damaged ({damaged}) and the bucket holds no readable copy",
            "remove the file and run `ds setup` to start a new run (finished tasks are kept "
            "and skipped)",
        )
    if storage is None or remote is None:
        return local
    if local is None:
        return remote
    if remote.run_id == local.run_id and (
        (remote.cleaned_up and not local.cleaned_up) or (local.active and not remote.active)
    ):
        # Further along: torn down, or said finished (the unattended monitor saving the run
        # over before its teardown; a submit announced after that must see it and send
        # nothing, an attended monitor must stop acting on the run).
        return remote
    if remote.run_id == local.run_id:
        # The unattended monitor's notes are its copy's: a command saving the state keeps
        # them (a run it stopped for failing workers stays stopped until `ds start-cluster`).
        book = remote.resources.get(MONITOR_BOOK)
        if book is None:
            local.resources.pop(MONITOR_BOOK, None)
        else:
            local.resources[MONITOR_BOOK] = book
    return local


def _of_this_backend(project: Project, state: RunState) -> RunState | None:
    """``state`` (the state folder's copy) when its run is on the project's backend; None
    for a finished run of another backend (its records are in that backend's storage:
    this one has no run yet). A run still in progress on another backend is an
    `InputError`: this backend would take it over without its queue, tasks or records."""
    if state.backend == project.config.backend:
        return state
    if not state.active:
        return None
    raise InputError(
        str(project.state_path),
        None,
        f"run {state.run_id} of {project.config.app_name} is in progress on the "
        f"{state.backend} backend, and this command would use the {project.config.backend} "
        "backend",
        f"finish it there first (`ds monitor --backend {state.backend}`) or stop it "
        f"(`ds cleanup --backend {state.backend}`), or use --backend {state.backend}",
    )


def require_state(project: Project, storage: Storage | None = None) -> RunState:
    """The current run's state; an InputError telling to run `ds setup` when there is none."""
    state = load_state(project, storage)
    if state is None:
        raise no_run_error(project)
    return state


def no_run_error(project: Project) -> InputError:
    """The error of a command that needs a run where none is set up."""
    return InputError(
        str(project.config_path),
        None,
        f"no run of {project.config.app_name} is set up here",
        "run `ds setup` first (or `ds run` to do every step)",
    )


def save_state(project: Project, state: RunState, storage: Storage | None = None) -> None:
    """Write the state atomically to the state folder (owner-only, 0600) and, when given,
    to the main bucket (under ``_ds/``, owner-only in folder storage too)."""
    text = state.model_dump_json(indent=1)
    # Owner-only (0600, whatever the umask): the state names the run's resources.
    write_text_atomically(project.state_path, text, mode=PRIVATE_FILE_MODE)
    if storage is not None:
        storage.put_bytes(state_key(state.app_name), text.encode())
        # Every run's last state is kept, so earlier runs can be listed and looked at.
        storage.put_bytes(run_state_key(state.app_name, state.run_id), text.encode())


def run_state_key(app_name: str, run_id: str) -> str:
    """Where the state of run ``run_id`` is kept (beside the current run's `state_key`)."""
    return f"{META_ROOT}/{app_name}/run-states/{run_id}.json"


def all_runs(app_name: str, storage: Storage) -> list[RunState]:
    """Every run of an app whose state is in storage, oldest first (run ids sort by time)."""
    prefix = f"{META_ROOT}/{app_name}/run-states/"
    runs = []
    for obj in storage.list(prefix):
        with contextlib.suppress(KeyError, ValueError):
            runs.append(RunState.model_validate_json(storage.get_bytes(obj.key)))
    current = None
    with contextlib.suppress(KeyError, ValueError):
        current = RunState.model_validate_json(storage.get_bytes(state_key(app_name)))
    if current is not None and all(r.run_id != current.run_id for r in runs):
        runs.append(current)  # a run set up before run states were kept
    return sorted(runs, key=lambda r: (r.created_at, r.run_id))


def state_of_run(project: Project, storage: Storage, run_id: str | None) -> RunState:
    """The state of run ``run_id`` (a unique prefix will do), or the current run's (None).
    Raises `InputError` naming the known runs when there is no such run."""
    if run_id is None:
        return require_state(project, storage)
    runs = all_runs(project.config.app_name, storage)
    found = [r for r in runs if r.run_id.startswith(run_id)]
    if len(found) != 1:
        # The latest 5 of the runs it matches (of every run when it matches none): the
        # latest 5 runs alone may not show one of those it matches.
        known = ", ".join(r.run_id for r in (found or runs)[-5:]) or "none"
        problem = "matches no run" if not found else f"matches {len(found)} runs"
        raise InputError(
            "argument",
            "--run",
            f"{run_id!r} {problem} of {project.config.app_name} (latest: {known})",
            "copy a run id from `ds runs`",
        )
    current = load_state(project, storage)
    if current is not None and current.run_id == found[0].run_id:
        return current
    return found[0]


def state_summary(state: RunState) -> dict[str, Any]:
    """A JSON-ready summary for `--json` output."""
    data: dict[str, Any] = json.loads(state.model_dump_json())
    return data
