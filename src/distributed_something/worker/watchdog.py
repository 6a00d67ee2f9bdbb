"""What a worker's watchdog process runs (`procgroups.Watchdog`).

Apart from `procgroups` so that the process starts with next to no imports: it is started
beside every worker and mostly waits for its worker to exit normally; only the reaping of a
dead worker needs the rest, imported then. (With `procgroups` imported at its start, each
watchdog spent ~40 ms of CPU starting, beside its worker's first tasks, and a worker that
finished sooner waited for its watchdog to finish starting before it could exit.)
"""

from __future__ import annotations

import os
import signal
import sys


def watchdog_main() -> None:
    """``argv`` is the scratch root, the worker's record, its token and, optionally, the
    worker's config file ("" for the environment's). Reads stdin (the pipe only the worker
    writes to) until end-of-file: the worker closed it, or died. A worker that exits
    normally has removed its record first: nothing to do. Otherwise `procgroups.after_death`
    reaps it and, given the config, `usecases.work.settle_dead_worker` settles what it held
    (its attempt closed as lost, its messages handed back): ``ds status`` stops counting a
    dead worker's task as running, and the task runs again without waiting for its lease."""
    scratch_root, record, token = sys.argv[1], sys.argv[2], sys.argv[3]
    settle = sys.argv[4] if len(sys.argv) > 4 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while os.read(0, 4096):
        pass  # the worker writes nothing: this returns at end-of-file
    if not os.path.lexists(record):
        return
    from pathlib import Path

    from distributed_something.worker.procgroups import after_death

    death = after_death(Path(scratch_root), Path(record), token)
    if death is None:
        return
    try:
        if settle is not None and death.record is not None and death.record.holding:
            from distributed_something.usecases.work import settle_dead_worker

            settle_dead_worker(settle, death.record.worker_pid, death.record.holding)
    finally:
        death.forget(Path(scratch_root))  # other reapers left them to this watchdog
