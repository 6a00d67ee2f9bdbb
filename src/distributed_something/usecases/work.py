"""`ds worker`: the container entrypoint, and what local compute starts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from distributed_something.backends import open_backend
from distributed_something.project import Project
from distributed_something.recipes.registry import get_recipe
from distributed_something.state import load_state
from distributed_something.worker.loop import Worker, WorkerSettings, WorkerSummary
from distributed_something.worker.runner import SubprocessRunner


def run_worker(project: Project, *, name: str | None, start_delay: float) -> WorkerSummary:
    """Work until the queue is drained or SIGTERM arrives."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    state = load_state(project)
    run_id = os.environ.get("DS_RUN_ID") or (state.run_id if state else "default")
    backend = open_backend(project)
    settings = WorkerSettings(
        run_id=run_id,
        scratch_root=Path(os.environ.get("DS_SCRATCH", project.state_dir / "scratch")),
        poll_interval=project.config.local.poll_interval,
        start_delay=start_delay,
    )
    if name:
        settings.name = name
    worker = Worker(
        project.config,
        backend,
        get_recipe(project.config.recipe.name, source=str(project.config_path)),
        SubprocessRunner(),
        settings,
    )
    worker.install_signal_handlers()
    return worker.run()
