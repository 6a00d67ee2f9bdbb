"""The run state: what a run created and when, kept locally and in the main bucket.

Commands read it to find the current run; cleanup reads it to know what to remove, so a
crash never leaves anything unaccounted for.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from pydantic import BaseModel, Field

from distributed_something.errors import InputError
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project
from distributed_something.records import META_ROOT


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


def load_state(project: Project) -> RunState | None:
    """The current run's state, or None when no run was set up here."""
    try:
        text = project.state_path.read_text()
    except FileNotFoundError:
        return None
    return RunState.model_validate_json(text)


def require_state(project: Project) -> RunState:
    """The current run's state; an InputError telling to run `ds setup` when there is none."""
    state = load_state(project)
    if state is None:
        raise InputError(
            str(project.config_path),
            None,
            f"no run of {project.config.app_name} is set up here",
            "run `ds setup` first (or `ds run` to do every step)",
        )
    return state


def save_state(project: Project, state: RunState, storage: Storage | None = None) -> None:
    """Write the state atomically to the state folder and, when given, to the main bucket."""
    project.state_dir.mkdir(parents=True, exist_ok=True)
    text = state.model_dump_json(indent=1)
    tmp = project.state_path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(project.state_path)
    if storage is not None:
        storage.put_bytes(f"{META_ROOT}/{state.app_name}/state.json", text.encode())


def state_summary(state: RunState) -> dict[str, Any]:
    """A JSON-ready summary for `--json` output."""
    data: dict[str, Any] = json.loads(state.model_dump_json())
    return data
