"""The monitor loop: observe, decide (pure policy), act; until the ledger says it is over."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.markup import escape

from distributed_something.config.model import Config
from distributed_something.interfaces.backend import Backend
from distributed_something.ledger import read_counts, read_ledger
from distributed_something.monitor.policy import (
    Observation,
    PolicyConfig,
    ReplaceWorkers,
    ScaleTo,
    Teardown,
    decide,
    drain_check,
    next_pause,
)
from distributed_something.monitor.progress import Progress, from_counts
from distributed_something.monitor.settle import confirm_ending, settle
from distributed_something.records import RunRecords
from distributed_something.state import RunState
from distributed_something.ui import info, task_bar


def policy_config(config: Config, cheapest: bool, max_workers: int | None = None) -> PolicyConfig:
    """The policy's fixed inputs from the run config; ``max_workers`` is the backend's cap
    on worker processes (`Backend.max_workers`; None: none)."""
    per_machine = config.cluster.tasks_per_machine * config.cluster.docker_cores
    workers = config.worker_count
    if max_workers is not None:
        workers = min(workers, max_workers)
    return PolicyConfig(workers=workers, workers_per_machine=per_machine, cheapest=cheapest)


def watch(
    config: Config,
    backend: Backend,
    state: RunState,
    *,
    interval: float,
    confirm_seconds: float | None = None,
    cheapest: bool = False,
    show_progress: bool = True,
    image_entrypoint: bool = False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] | None = None,
    still_active: Callable[[], bool] | None = None,
) -> Progress:
    """Run the monitor until the run is over, then stop the workers.

    Over means: the ledger has an outcome (done, skipped, dead) for every task, and the queue
    read empty on readings ``confirm_seconds`` apart (default: one ``interval``). With
    ``image_entrypoint`` the workers are the family image's own (they keep no records), so
    the empty queue alone decides. Returns the final progress. Cleanup and the report are
    the caller's next steps, so a monitor killed here can simply be run again. Between
    readings it waits ``sleep(interval)`` (default: `Compute.pause`, which ends early when a
    local worker exits), or longer when readings take much of the CPU the workers share
    (`Backend.monitor_shares_cpu`, `next_pause`). ``still_active`` is asked every tick
    whether the run is still in progress: ended by another command (`ds cleanup`), it is
    neither counted nor acted on again (no task sent again, no worker started), and the
    loop returns at once.
    """
    pause = backend.compute.pause if sleep is None else sleep
    records = RunRecords(backend.storage, config.app_name, state.run_id)
    cfg = policy_config(config, cheapest, backend.max_workers)
    confirm = interval if confirm_seconds is None else confirm_seconds
    started = state.workers_started_at or state.created_at
    bar = task_bar(config.app_name) if show_progress else None
    bar_id = bar.add_task(config.app_name, total=None, detail="") if bar else None
    drained_since: float | None = None
    said_waiting = ""  # the backend's last reason for missing workers, said once each
    if bar:
        bar.start()
    try:
        while True:
            if still_active is not None and not still_active():
                final = from_counts(*_counted(records))
                if bar is not None and bar_id is not None:
                    # The line left on screen says what the run ended with, as the table.
                    bar.update(
                        bar_id, total=final.total, completed=final.finished, detail=_detail(final)
                    )
                by = (
                    "finished by another `ds run` or `ds monitor`"
                    if final.finished == final.total
                    else "ended by another command (`ds cleanup`)"
                )
                info(f"run {state.run_id} was {by}")
                return final
            reading = time.thread_time()  # CPU, not waits: an AWS reading mostly waits
            # Counts from the ledger summary (a few tasks read per tick, not every record);
            # the whole ledger only when tasks must be settled.
            task_counts, corrupt = read_counts(records, compact=True)
            progress = from_counts(task_counts, len(corrupt))
            if bar is not None and bar_id is not None:
                bar.update(
                    bar_id,
                    total=progress.total,
                    completed=progress.finished,
                    detail=_detail(progress),
                )
            counts = backend.queue.counts()
            check = drain_check(
                now=clock(),
                drained_since=drained_since,
                queue_drained=counts.drained,
                ledger_finished=progress.finished == progress.total or image_entrypoint,
                confirm_seconds=confirm,
            )
            drained_since = check.drained_since
            ledger = None
            if not image_entrypoint:
                # The run ends on a whole reading, not on the summary alone: every record is
                # read once before anything is torn down.
                check, ledger = confirm_ending(records, check, task_counts)
            if check.verdict == "reconcile":
                plan = settle(records, backend.queue, ledger or read_ledger(records), clock())
                if plan.requeue:
                    info(
                        f"{len(plan.requeue)} task(s) had left the queue without an "
                        "outcome: sent again"
                    )
                if plan.dead:
                    info(f"{len(plan.dead)} task(s) are dead (see `ds dead list`)")
                drained_since = None
                continue
            compute = backend.compute.status()
            if compute.waiting and compute.waiting != said_waiting:
                info(f"[yellow]workers not started:[/] {escape(compute.waiting)}")
            said_waiting = compute.waiting
            obs = Observation(
                clock(),
                counts,
                compute,
                started,
                finished=check.verdict == "finished",
            )
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
            spent = time.thread_time() - reading if backend.monitor_shares_cpu else 0.0
            pause(next_pause(interval, spent))
    finally:
        if bar is not None:
            bar.stop()


def _counted(records: RunRecords) -> tuple[dict[str, int], int]:
    counts, corrupt = read_counts(records, compact=True)
    return counts, len(corrupt)


def _detail(p: Progress) -> str:
    """The bar's details, after its counts, rate and ETA: what is running and waiting first
    (it changes), then the outcomes other than done; states with no task are left out."""
    parts = [
        ("", "running", p.running),
        ("", "pending", p.pending),
        ("cyan", "skipped", p.skipped),
        ("yellow", "failed", p.failed),
        ("red", "dead", p.dead),
    ]
    return " · ".join(
        f"[{style}]{name} {n}[/]" if style else f"{name} {n}" for style, name, n in parts if n
    )
