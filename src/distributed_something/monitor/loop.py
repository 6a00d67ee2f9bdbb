"""The monitor loop: observe, decide (pure policy), act; until the run is drained."""

from __future__ import annotations

import time
from collections.abc import Callable

from distributed_something.backends import Backend
from distributed_something.config.model import Config
from distributed_something.monitor.policy import (
    Observation,
    PolicyConfig,
    ReplaceWorkers,
    ScaleTo,
    Teardown,
    decide,
)
from distributed_something.monitor.progress import Progress, measure
from distributed_something.records import RunRecords
from distributed_something.state import RunState
from distributed_something.ui import task_bar


def policy_config(config: Config, cheapest: bool) -> PolicyConfig:
    """The policy's fixed inputs from the run config."""
    per_machine = config.cluster.tasks_per_machine * config.cluster.docker_cores
    workers = config.worker_count
    if config.backend == "local" and config.local.workers is not None:
        workers = min(workers, config.local.workers)
    return PolicyConfig(workers=workers, workers_per_machine=per_machine, cheapest=cheapest)


def watch(
    config: Config,
    backend: Backend,
    state: RunState,
    *,
    interval: float,
    cheapest: bool = False,
    show_progress: bool = True,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
) -> Progress:
    """Run the monitor until the queue is drained, then stop the workers.

    Returns the final progress. Cleanup and the report are the caller's next steps, so a
    monitor killed here can simply be run again.
    """
    records = RunRecords(backend.storage, config.app_name, state.run_id)
    cfg = policy_config(config, cheapest)
    started = state.workers_started_at or state.created_at
    bar = task_bar(config.app_name) if show_progress else None
    bar_id = bar.add_task(config.app_name, total=state.submitted, detail="") if bar else None
    if bar:
        bar.start()
    try:
        while True:
            counts = backend.queue.counts()
            progress = measure(counts, records, state)
            if bar is not None and bar_id is not None:
                bar.update(bar_id, completed=progress.finished, detail=_detail(progress))
            obs = Observation(clock(), counts, backend.compute.status(), started)
            actions = decide(obs, cfg)
            for action in actions:
                if isinstance(action, ReplaceWorkers):
                    backend.compute.scale(action.workers)
                elif isinstance(action, ScaleTo):
                    backend.compute.scale_machines(action.machines)
            backend.compute.housekeeping()
            if any(isinstance(a, Teardown) for a in actions):
                backend.compute.stop()
                return progress
            sleep(interval)
    finally:
        if bar is not None:
            bar.stop()


def _detail(p: Progress) -> str:
    return (
        f"[green]done {p.done}[/] [cyan]skipped {p.skipped}[/] "
        f"[yellow]retried {p.failed}[/] [red]dead {p.dead}[/] "
        f"· running {p.in_flight} · queued {p.visible}"
    )
