"""The backend bundle (`Backend`, an opened backend) and what a backend is before it is
opened (`BackendKind`): the hooks through which the use cases, the monitor, the worker, the
recipes and the CLI ask a backend for what only it knows, without naming it.

`distributed_something.backends.backend_kind` finds a kind by its name (the config's
``backend``); each backend package defines its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from distributed_something.interfaces.compute import Compute
from distributed_something.interfaces.fork import ForkCall
from distributed_something.interfaces.provisioner import Provisioner
from distributed_something.interfaces.queue import Queue
from distributed_something.interfaces.storage import Storage
from distributed_something.project import Project

#: Makes the context in which a task's log (a growing file) is shipped elsewhere while the
#: command runs, e.g. to a CloudWatch log stream: (task id, attempt, log path) → context.
TaskLogFactory = Callable[[str, int, Path], contextlib.AbstractContextManager[object]]

#: The context a worker runs in on the backend's machines: (the `Worker` of
#: worker/loop.py, a layer above this one, hence Any; its scratch folder) → context.
WorkerContext = Callable[[Any, Path], contextlib.AbstractContextManager[object]]


class LiveLog(Protocol):
    """A running attempt's log as it grows, read from where the backend ships it."""

    def read(self) -> str:
        """The whole lines written since the last call ('' when none)."""
        ...

    def finish(self, stored: bytes) -> str:
        """What is left to print once the attempt has ended, given its stored log
        ``stored`` (b'' when none was kept)."""
        ...


#: Opens the live log of (task id, attempt, the task's message body or None); None when the
#: backend ships no live log of its own.
LiveLogOpener = Callable[[str, int, str | None], LiveLog | None]


#: Reads the spot price history of (instance type, Availability Zone) pairs from a start to an
#: end time (Unix seconds): each pair's (time the price took effect, USD per hour) steps,
#: oldest first, the first in effect at the start. Raises `BackendError` when it cannot.
SpotPriceReader = Callable[
    [Collection[tuple[str, str]], float, float], dict[tuple[str, str], list[tuple[float, float]]]
]


def _no_worker_context(worker: Any, scratch: Path) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass
class Backend:
    """What a run talks to.

    ``storage`` is the main bucket (run records, logs, default outputs); ``bucket(name)``
    opens any bucket by name, '' meaning the main one; ``provisioner`` creates and removes
    the run's resources; ``location(name)`` says where bucket ``name`` is, for people (a
    folder, or ``s3://bucket/``).

    The hooks (all with defaults, so a test can build a bundle from its parts):
    ``poll_interval`` is the monitor's default seconds between readings;
    ``drain_confirm_floor`` the least time between the two empty readings of the queue that
    end a run (0 where the queue's counts are exact, a minute where they are approximate);
    ``max_workers`` caps the worker processes the config asks for (None: no cap);
    ``task_log()`` makes the worker's `TaskLogFactory` (None: logs stay in storage only);
    ``worker_context(worker, scratch)`` is the context a worker runs in on this backend's
    machines (instance tags, spot interruption, idle shutdown on AWS);
    ``memory_limit`` says who limits a task's memory: ``"process"`` — the worker itself,
    ``cluster.memory`` shared by the ``docker_cores`` processes (local); ``"container"`` —
    the container's ``cluster.memory`` limit, whose OOM kill reaches the worker as a SIGKILL
    nobody here sent (AWS); ``"scheduler"`` — the cluster's own job limits (Slurm);
    ``live_log(task, attempt, body)`` reads a running attempt's log where the backend ships
    it (CloudWatch on AWS); None by default: `ds logs -f` then reads the workers' scratch
    logs, which it sees on local runs and on Slurm;
    ``spot_prices`` reads the spot price history of the machines a run used (AWS), so the
    report prices attempts at what their machines cost; None where there is no such market;
    ``monitor_shares_cpu`` says the monitor runs on the workers' machine (local): a reading
    that takes much CPU then makes it wait longer before the next (`policy.next_pause`);
    ``fork_call`` runs a function in a forked child (`interfaces.fork`) where reading the
    records is CPU work here (local): the report of a big run is then read by two
    processes; None elsewhere;
    ``watchdog_settles`` says a dead worker's watchdog settles what it held (its attempt
    closed as lost, its messages handed back: `worker/settle.py`); False where the backend's
    compute does it with the scheduler's word on how the worker's job ended (Slurm).
    ``stop_reaches_command`` says the signal that stops a worker reaches its command's
    processes too (Slurm's scancel signals every process of the job); where it does not
    (ECS signals the container's PID 1, `ds cleanup --backend local` the worker, whose
    command runs in a session of its own), a command that ends after the stop arrived
    ran undisturbed and keeps its result, while here it is handed back (`Worker._execute`).
    ``run_notes()`` says what the backend's own watchers found about the run in progress,
    one line each, for `ds status` (AWS: the unattended monitor stopped the run's workers
    because they kept failing); none by default.
    """

    name: str
    queue: Queue
    storage: Storage
    compute: Compute
    bucket: Callable[[str], Storage]
    provisioner: Provisioner
    location: Callable[[str], str] = field(default=lambda name: name)
    poll_interval: float = 60.0
    drain_confirm_floor: float = 60.0
    max_workers: int | None = None
    task_log: Callable[[], TaskLogFactory | None] = field(default=lambda: None)
    worker_context: WorkerContext = field(default=_no_worker_context)
    live_log: LiveLogOpener = field(default=lambda task, attempt, body: None)
    memory_limit: Literal["process", "container", "scheduler"] = "process"
    monitor_shares_cpu: bool = False
    spot_prices: SpotPriceReader | None = None
    fork_call: ForkCall | None = None
    watchdog_settles: bool = True
    stop_reaches_command: bool = False
    run_notes: Callable[[], list[str]] = field(default=lambda: [])


@dataclass(frozen=True)
class Finding:
    """One thing `ds doctor` checked: ``ok``, what it found (``detail``) and, when not ok,
    the ``fix``."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: `ds doctor`: (project, fleet file or None, bootstrap prefix or None) → findings.
Doctor = Callable[[Project, Path | None, str | None], list[Finding]]


def _no_validate_notes(project: Project) -> list[str]:
    return []


@dataclass(frozen=True)
class BackendKind:
    """A backend before it is opened: its name, how to open it, and what the use cases ask
    of it without opening it (opening may need a bucket name or credentials they lack).

    - ``open(project)`` opens the `Backend`; creates nothing remote.
    - ``in_image``: the workers run in the config's container image on machines the backend
      starts (AWS), each container running ``cluster.docker_cores`` worker processes, and
      with no recipe the image's own entrypoint is the worker. Otherwise ds's own worker
      runs on this machine or cluster (local, Slurm), where `ds worker` runs one process and
      ``-j`` sets how many.
    - ``runs_here``: the workers run on this machine (the local backend), so the programs
      they start can be checked here.
    - ``uses_fleet``: ``ds start-cluster`` reads a fleet file.
    - ``upload_flags``: the storage applies ``storage.upload_flags`` to every upload (S3).
    - ``validate_notes(project)``: the backend's own checks of the config at `ds validate`;
      returns notes to show, raises `InputError` for what would fail.
    - ``bucket_folder(project, name)``: the folder holding bucket ``name`` ('' the main
      one), for validation to read inputs without opening anything; None when the storage
      is not a folder validation may read; ``folder_storage(path)`` reads such a folder.
    - ``unread_input(project, bucket, key)``: why validation did not read ``key`` of
      ``bucket`` ('' when the config names none), for a note.
    - ``doctor``: the account checks of `ds doctor`, None when the backend has none.
    - ``bootstrap(project, prefix)`` / ``destroy(project, prefix)``: the one-time account
      resources (`ds aws bootstrap`), None when the backend has none.
    - ``set_interactive(on)``: a person waits for the answer (the command line but
      `ds worker` / `ds monitor`): connection problems are said in seconds.
    - ``state_in_project``: everything of the backend's runs (state, queue, storage, records)
      lives under the project's state folder (`Project.state_dir`): without that folder the
      project has no run, known without opening the backend (which makes its folders).
    - ``workers_asked`` / ``workers_queued``: how `ds start-cluster` and `ds status` word the
      workers asked for (`ComputeStatus.desired`) and those of them not running yet, when the
      backend starts its workers later (Slurm queues jobs, ECS places tasks on machines);
      ``workers_queued`` "": it starts them at once (local), so a worker asked for and not
      running has exited.
    """

    name: str
    open: Callable[[Project], Backend]
    in_image: bool = False
    runs_here: bool = False
    uses_fleet: bool = False
    upload_flags: bool = False
    validate_notes: Callable[[Project], list[str]] = _no_validate_notes
    bucket_folder: Callable[[Project, str], Path] | None = None
    folder_storage: Callable[[Path], Storage] | None = None
    unread_input: Callable[[Project, str, str], str] | None = None
    doctor: Doctor | None = None
    bootstrap: Callable[[Project, str | None], dict[str, str]] | None = None
    destroy: Callable[[Project, str | None], list[str]] | None = None
    set_interactive: Callable[[bool], None] | None = None
    state_in_project: bool = False
    workers_asked: str = "started"
    workers_queued: str = ""

    def unread_input_note(self, project: Project, bucket: str, key: str) -> str:
        """Why validation did not read ``key`` of ``bucket`` (``unread_input``, else a
        sentence naming the backend)."""
        if self.unread_input is not None:
            return self.unread_input(project, bucket, key)
        return f"validate does not read the {self.name} backend's storage"
