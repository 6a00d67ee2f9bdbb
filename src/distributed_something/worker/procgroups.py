"""Records of the process groups that `ds worker` processes run tasks in, and the reaping of
what dead workers leave behind.

Every task runs in its own process group (`SubprocessRunner`). When a worker dies without
cleaning up (SIGKILL, the OOM killer), what its task started keeps running, re-parented to
PID 1, and may compete with the task's next attempt. Two things end it:

- The worker's watchdog (`Watchdog`, a small process `GroupRecorder.start` starts beside the
  worker) notices the worker's death at once (its pipe from the worker reads end-of-file)
  and reaps it as below, killing too every process whose environment carries the worker's
  token (`TOKEN_ENV`, set in every task's environment): that covers a task started a moment
  before its group was recorded. This is what PR_SET_PDEATHSIG did for the direct child,
  without a ``preexec_fn`` per task (which costs subprocess its fast ``vfork`` start).
- Whoever reaps later (below) finds the dead worker's record.

So each worker process keeps one small record, ``<scratch_root>/.groups/<worker pid>.json``,
for its whole life: which machine it runs on, its pid and start time, and while a task runs
the task's process group and that group leader's start time. Whoever reaps (a starting
worker; local compute's housekeeping and stop; the watchdog) kills the recorded group of
every worker found dead and removes its record and its scratch folders (``w<pid>-<n>``, see
`Worker._new_workdir`).

Pids are reused, so a pid alone proves nothing: a process is the one recorded only when its
start time (clock ticks after boot, from /proc/<pid>/stat) matches. `judge` makes every
decision from a record and what was observed now, and has no effects; `reap_dead_workers`
observes, asks `judge`, and acts.

The record is written once atomically (a temporary file renamed into place) at a fixed
width, `RECORD_BYTES`, and then updated in place, three times per task (what the worker
holds as the task's attempt starts; the task's group; no group), with one ``pwrite`` over
the whole width: no file is created or renamed per task. Its first fields (which machine, which
worker) never change, so a reader racing with an update can only see a mix of two values of
the task's fields, which a reaper never acts on while the worker is alive (the only time its
record is written), or text that does not parse: a reader reads such a record again before
calling it cut by a crash (`read_record`).

Linux only (it needs /proc and a boot id); elsewhere nothing is recorded or reaped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("ds.procgroups")

GROUPS_DIR = ".groups"
_PROC = Path("/proc")
#: The variable every task's environment holds: ``<worker pid>-<worker start>`` (see
#: `Watchdog`).
TOKEN_ENV = "DS_WORKER_TOKEN"
#: Width of a record on disk (its JSON padded with spaces): every update overwrites it whole.
#: Room for what a worker holds (`GroupRecord.holding`: up to 16 local receipt handles);
#: a longer record is written anew and renamed, which works, only slower.
RECORD_BYTES = 2048


def scratch_root_of(state_dir: Path, environ: Mapping[str, str]) -> Path:
    """Where a project's workers keep their scratch folders: ``$DS_SCRATCH``, else
    ``<state_dir>/scratch``. `ds worker` and local compute must agree on it."""
    return Path(environ.get("DS_SCRATCH") or state_dir / "scratch")


# --- what /proc says -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """One process as /proc/<pid>/stat describes it."""

    #: clock ticks after boot at which it started: with the pid, names one process for good
    start: int
    #: one letter: R, S, D, Z (exited, not yet reaped by its parent), ...
    state: str
    pgid: int

    @property
    def exited(self) -> bool:
        """True for a zombie (or one being torn down): it runs nothing any more."""
        return self.state in ("Z", "X", "x")


def parse_stat(text: str) -> ProcInfo:
    """The fields we need from the text of /proc/<pid>/stat. Raises ValueError (or
    IndexError) on text that is not one."""
    # The command name (2nd field) may hold spaces and parentheses: split after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5) (state); field 5 is pgrp, field 22 starttime.
    return ProcInfo(start=int(fields[19]), state=fields[0], pgid=int(fields[2]))


def read_small(path: str | Path) -> str:
    """The text of a small file (a /proc or /sys one) in one read: no buffered file object,
    whose set-up costs more system calls than the read. Raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    return data.decode(errors="replace")


def proc_info(pid: int) -> ProcInfo | None:
    """The process ``pid`` now, or None when there is none (or no /proc)."""
    try:
        return parse_stat(read_small(f"{_PROC}/{pid}/stat"))
    except (OSError, ValueError, IndexError):
        return None


def group_member_starts(pgid: int) -> tuple[int, ...]:
    """Start times of the processes in group ``pgid`` that have not exited. Reads all of /proc:
    call it only when the answer matters (a group whose leader is gone)."""
    starts = []
    try:
        entries = list(os.scandir(_PROC))
    except OSError:
        return ()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        info = proc_info(int(entry.name))
        if info is not None and info.pgid == pgid and not info.exited:
            starts.append(info.start)
    return tuple(starts)


def group_alive(pgid: int) -> bool:
    """True while group ``pgid`` has a member that has not exited. Zombies do not count: they
    stay members until their parent reaps them, which may be never (a PID 1 that does not
    reap); they run nothing."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's group now: it is not ours to wait for, but it is alive
    if not _PROC.is_dir():
        return True
    return bool(group_member_starts(pgid))


@dataclass(frozen=True)
class Machine:
    """Which kernel and pid namespace pids in a record belong to."""

    host: str
    #: random per boot of a kernel; differs between machines and after a reboot
    boot_id: str
    #: the pid namespace (containers on one kernel have their own)
    pid_ns: str


def this_machine() -> Machine | None:
    """This process's machine, or None where pids cannot be checked (no /proc: not Linux)."""
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    try:
        pid_ns = str((_PROC / "self/ns/pid").readlink())
    except OSError:
        pid_ns = ""  # some sandboxes hide it; the boot id still tells machines apart
    return Machine(socket.gethostname(), boot_id, pid_ns)


def workdir_stem(machine: Machine | None, pid: int) -> str:
    """The start of the names of the scratch folders of worker ``pid`` on ``machine``:
    ``w<pid>-<machine tag>-``. The tag (from the host, boot id and pid namespace) keeps
    apart the folders of workers of one pid on different machines or containers sharing a
    scratch folder (a cluster's shared scratch), which would otherwise empty each other's."""
    if machine is None:
        return f"w{pid}-x-"
    text = f"{machine.host}\0{machine.boot_id}\0{machine.pid_ns}".encode()
    return f"w{pid}-{hashlib.sha256(text).hexdigest()[:8]}-"


def _remove_workdirs(scratch_root: Path, record: GroupRecord) -> None:
    """Remove the scratch folders of the worker ``record`` names (its own machine's only),
    and those named as ds did before folders carried the machine (``w<pid>-<n>``)."""
    machine = Machine(record.host, record.boot_id, record.pid_ns)
    stem = workdir_stem(machine, record.worker_pid)
    old = f"w{record.worker_pid}-"
    for workdir in scratch_root.glob(f"{old}*"):
        if workdir.name.startswith(stem) or workdir.name[len(old) :].isdigit():
            shutil.rmtree(workdir, ignore_errors=True)


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRecord:
    """What a worker process records about itself (`GroupRecorder` writes it)."""

    host: str
    boot_id: str
    pid_ns: str
    worker_pid: int
    worker_start: int
    #: the running task's process group (its leader's pid), None between tasks
    pgid: int | None = None
    leader_start: int | None = None
    #: what the worker held when it last started an attempt, for its watchdog to settle
    #: should it die (`GroupRecorder.holding`; opaque to this module), None before any
    holding: dict[str, Any] | None = None
    #: the worker's watchdog (pid, start time), which settles what it held: while it lives,
    #: other reapers leave a dead worker's record holding something to it
    watchdog_pid: int | None = None
    watchdog_start: int | None = None

    def to_json(self) -> str:
        return json.dumps(vars(self))  # flat but for `holding`: no deep copy (`asdict`)

    @classmethod
    def from_json(cls, text: str) -> GroupRecord:
        """Raises ValueError (or TypeError/KeyError) for text that is not a record."""
        data: dict[str, Any] = json.loads(text)
        pgid, leader_start = data.get("pgid"), data.get("leader_start")
        holding = data.get("holding")
        watchdog_pid, watchdog_start = data.get("watchdog_pid"), data.get("watchdog_start")
        return cls(
            host=str(data["host"]),
            boot_id=str(data["boot_id"]),
            pid_ns=str(data["pid_ns"]),
            worker_pid=int(data["worker_pid"]),
            worker_start=int(data["worker_start"]),
            pgid=None if pgid is None else int(pgid),
            leader_start=None if leader_start is None else int(leader_start),
            holding=holding if isinstance(holding, dict) else None,
            watchdog_pid=None if watchdog_pid is None else int(watchdog_pid),
            watchdog_start=None if watchdog_start is None else int(watchdog_start),
        )


def groups_dir(scratch_root: Path) -> Path:
    return scratch_root / GROUPS_DIR


def record_path(scratch_root: Path, worker_pid: int) -> Path:
    return groups_dir(scratch_root) / f"{worker_pid}.json"


class GroupRecorder:
    """Keeps this worker process's record up to date.

    One per worker process: `start` writes the record (no task), `task_started` and
    `task_ended` add and clear the task's group, `close` removes the record when the worker
    exits normally (its scratch folder is gone by then). Not for concurrent tasks in one
    process: the record holds one group.
    """

    def __init__(self, scratch_root: Path, record: GroupRecord) -> None:
        self.scratch_root = scratch_root
        self.record = record
        self.path = record_path(scratch_root, record.worker_pid)
        #: only this process writes its record, so one fixed temporary name will do
        self._temporary = self.path.with_name(f".{self.path.name}.tmp")
        #: the record file, open for the updates in place (None: not written yet)
        self._fd: int | None = None
        #: the process that reaps this worker the moment it dies (None: not started)
        self.watchdog: Watchdog | None = None

    @property
    def watched(self) -> bool:
        """True while this worker's watchdog runs (checked without blocking)."""
        return self.watchdog is not None and self.watchdog.process.poll() is None

    @property
    def token(self) -> str:
        """What `TOKEN_ENV` says in the environment of this worker's tasks."""
        return f"{self.record.worker_pid}-{self.record.worker_start}"

    @classmethod
    def start(
        cls, scratch_root: Path, *, watch: bool = True, settle: str | None = None
    ) -> GroupRecorder | None:
        """Record this process as a live worker and, with ``watch``, start its `Watchdog`
        (which settles what the worker held with ``settle``, see `Watchdog.start`); None
        where pids cannot be checked."""
        machine = this_machine()
        me = proc_info(os.getpid())
        if machine is None or me is None:
            return None
        recorder = cls(
            scratch_root,
            GroupRecord(
                host=machine.host,
                boot_id=machine.boot_id,
                pid_ns=machine.pid_ns,
                worker_pid=os.getpid(),
                worker_start=me.start,
            ),
        )
        recorder.path.parent.mkdir(parents=True, exist_ok=True)
        recorder._write()
        if watch:
            recorder.watchdog = Watchdog.start(scratch_root, recorder.path, recorder.token, settle)
            watchdog = recorder.watchdog
            seen = None if watchdog is None else proc_info(watchdog.process.pid)
            if settle is not None and watchdog is not None and seen is not None:
                recorder.record = replace(
                    recorder.record, watchdog_pid=watchdog.process.pid, watchdog_start=seen.start
                )
                recorder._write()
        return recorder

    def task_started(self, pgid: int, start: int | None = None) -> None:
        """Record group ``pgid``, whose leader (pid ``pgid``) must not be reaped yet (its
        start time is read now), or, with ``start``, whose leader is gone: ``start`` is then
        its earliest member's start (a reaper kills the group only if no member started
        before it)."""
        if start is None:
            leader = proc_info(pgid)
            if leader is None:
                return  # cannot happen for an unreaped child; without a start it is unguarded
            start = leader.start
        self.record = replace(self.record, pgid=pgid, leader_start=start)
        self._write()

    def holding(self, what: dict[str, Any]) -> None:
        """Record what this worker holds now (an attempt started, messages leased), for its
        watchdog to settle should it die: a whole record write, as `task_started`."""
        self.record = replace(self.record, holding=what)
        self._write()

    def task_ended(self) -> None:
        """The task's group is gone (or killed): forget it."""
        if self.record.pgid is None:
            return
        self.record = replace(self.record, pgid=None, leader_start=None)
        self._write()

    def close(self) -> None:
        """Remove the record: this worker is exiting and leaves nothing behind. Its watchdog
        then finds no record and exits."""
        self._close_fd()
        self.path.unlink(missing_ok=True)
        self._temporary.unlink(missing_ok=True)
        watchdog, self.watchdog = self.watchdog, None
        if watchdog is not None:
            watchdog.stop()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _write(self) -> None:
        data = self.record.to_json().encode().ljust(RECORD_BYTES)
        fd = self._fd
        # In place while the file is still the record (a whole-width pwrite; see the module's
        # docstring); no fsync: a crash of the machine ends the processes a record names.
        if fd is not None and len(data) == RECORD_BYTES and os.fstat(fd).st_nlink > 0:
            os.pwrite(fd, data, 0)
            return
        self._close_fd()
        # Atomic: a reaper reading it mid-write sees a whole record, old or new.
        fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._temporary.replace(self.path)
        if len(data) == RECORD_BYTES:  # a longer one (a huge host name) is always renamed
            self._fd = os.open(self.path, os.O_WRONLY)


def read_record(
    path: Path, *, tries: int = 3, pause: float = 0.01
) -> tuple[GroupRecord, str] | None:
    """The record at ``path`` and the text it was read from; None when it is gone. Raises
    ValueError (or TypeError/KeyError) when it does not parse after ``tries`` reads ``pause``
    seconds apart: one read may race with an update in place (see the module's docstring); a
    record still unreadable then was cut by a crash of the machine."""
    for attempt in range(tries):
        try:
            text = path.read_text()
        except OSError:
            return None  # removed by a concurrent reaper, or the worker's exit
        try:
            return GroupRecord.from_json(text), text
        except (ValueError, TypeError, KeyError):
            if attempt == tries - 1:
                raise
            time.sleep(pause)
    return None


# --- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What was observed now about the processes a record names."""

    machine: Machine
    #: the process now holding the record's worker pid
    worker: ProcInfo | None
    #: the process now holding the record's pgid as its pid (the group leader, or a stranger)
    leader: ProcInfo | None = None
    #: start times of live members of group pgid (looked at only when the leader is gone)
    member_starts: tuple[int, ...] = ()
    #: the process now holding the record's watchdog pid (looked at only when it matters)
    watchdog: ProcInfo | None = None


@dataclass(frozen=True)
class Verdict:
    """What to do about one record."""

    #: SIGKILL the record's process group
    kill_group: bool = False
    #: remove the worker's scratch folders (``w<pid>-*``)
    remove_scratch: bool = False
    #: remove the record itself
    forget: bool = False
    #: the worker is dead but its watchdog, alive, settles what it held: the record and the
    #: scratch folders (the task's log) stay for it (it removes them when done)
    keep_record: bool = False
    reason: str = ""


def worker_alive(record: GroupRecord, worker: ProcInfo | None) -> bool:
    """True when ``worker`` (the process holding the recorded pid now) is the recorded worker
    and has not exited."""
    return worker is not None and worker.start == record.worker_start and not worker.exited


def judge(record: GroupRecord, seen: Seen) -> Verdict:
    """Decide, with no effects, what a reaper does about ``record``.

    - Another machine or pid namespace wrote it (a shared scratch folder): its pids mean
      nothing here; leave it alone — unless it is this host before a reboot, when everything it
      names is gone: forget it, kill nothing, and remove its scratch folders unless its pid now
      belongs to a process.
    - The worker still runs (same pid, same start time, not a zombie): leave it alone.
    - The worker is dead: forget the record. Kill its task's group only if that group is still
      the recorded one: its leader's pid is held by a process with the recorded start time, or,
      the leader being gone, every live member started after it did (a pid stays reserved
      while a group of that number has members, so a group whose leader is gone is the old one
      unless the number was freed and reused by a group with a newer leader; a member older than
      the recorded leader proves that). Remove its scratch folders unless its pid now belongs
      to another process (which may be a new worker using the same folder names).
    """
    here = seen.machine
    if (record.boot_id, record.pid_ns) != (here.boot_id, here.pid_ns):
        if record.host == here.host and record.boot_id != here.boot_id:
            # Its folders go too, unless a process of this boot has its pid (a new worker?).
            return Verdict(
                remove_scratch=seen.worker is None, forget=True, reason="written before a reboot"
            )
        return Verdict(reason="written on another machine or in another pid namespace")
    if worker_alive(record, seen.worker):
        return Verdict(reason="worker alive")
    pid_reused = seen.worker is not None and seen.worker.start != record.worker_start
    kill = False
    # Never 0 or 1: killpg(0) is the caller's own group, 1 is init's; no task group is either.
    if record.pgid is not None and record.pgid > 1 and record.leader_start is not None:
        if seen.leader is not None:
            kill = seen.leader.start == record.leader_start and seen.leader.pgid == record.pgid
        else:
            starts = seen.member_starts
            kill = bool(starts) and all(start >= record.leader_start for start in starts)
    settling = (
        record.holding is not None
        and seen.watchdog is not None
        and seen.watchdog.start == record.watchdog_start
        and not seen.watchdog.exited
    )
    return Verdict(
        kill_group=kill,
        remove_scratch=not pid_reused and not settling,
        forget=True,
        keep_record=settling,
        reason="worker dead"
        + (", its pid reused" if pid_reused else "")
        + ("; its watchdog settles what it held" if settling else ""),
    )


def observe(record: GroupRecord, machine: Machine) -> Seen:
    """Look at the processes ``record`` names (the /proc scan only when it can matter)."""
    worker = proc_info(record.worker_pid)
    if worker_alive(record, worker):
        return Seen(machine, worker)
    watchdog = None
    if record.holding is not None and record.watchdog_pid is not None:
        watchdog = proc_info(record.watchdog_pid)
    if record.pgid is None:
        return Seen(machine, worker, watchdog=watchdog)
    leader = proc_info(record.pgid)
    members = group_member_starts(record.pgid) if leader is None else ()
    return Seen(machine, worker, leader, members, watchdog)


# --- the effects -------------------------------------------------------------------------------


def reap_dead_workers(scratch_root: Path) -> list[GroupRecord]:
    """Kill the task groups of this machine's dead workers recorded under ``scratch_root``,
    remove their scratch folders and their records. Returns the records of the workers found
    dead. Safe to run concurrently and repeatedly (several workers start at once); never
    raises for what it finds on disk. Does nothing where pids cannot be checked."""
    machine = this_machine()
    folder = groups_dir(scratch_root)
    if machine is None or not folder.is_dir():
        return []
    dead = []
    me = os.geteuid()
    for path in sorted(folder.glob("[0-9]*.json")):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
            # Not written by this user's workers: never a reason to kill anything.
            log.warning("ignoring process group record %s: not a file of this user", path)
            continue
        try:
            read = read_record(path)
        except (ValueError, TypeError, KeyError):
            # Unreadable on every read: cut by a crash of the machine, so its processes are
            # gone too.
            log.warning("removing unreadable process group record %s", path)
            path.unlink(missing_ok=True)
            continue
        if read is None:
            continue
        record, text = read
        verdict = judge(record, observe(record, machine))
        if not verdict.forget:
            continue
        dead.append(record)
        if verdict.kill_group and record.pgid is not None and record.pgid != os.getpgrp():
            log.info("killing process group %d of dead worker %d", record.pgid, record.worker_pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, signal.SIGKILL)
        if verdict.remove_scratch:
            _remove_workdirs(scratch_root, record)
            (folder / f".{path.name}.tmp").unlink(missing_ok=True)
        if not verdict.keep_record:
            _forget(path, text)
    return dead


def end_taken_over(scratch_root: Path, run_id: str, attempt: str) -> list[int]:
    """SIGKILL the command of attempt ``attempt`` (``<task>/<stem>``) of run ``run_id`` if a
    live worker of this machine recorded under ``scratch_root`` still runs it: that worker
    lost its lease (stopped past it: SIGSTOP, a suspended job) and another delivery takes
    the task over, so its command must not run on beside the new one (the worker drops its
    result anyway). Returns the process groups (or, for a command too young for its group
    to be recorded, the pids) killed. Does nothing where pids cannot be checked, and never
    kills a group whose leader is no longer the recorded one."""
    machine = this_machine()
    folder = groups_dir(scratch_root)
    if machine is None or not folder.is_dir():
        return []
    killed = []
    for path in sorted(folder.glob("[0-9]*.json")):
        try:
            read = read_record(path)
        except (ValueError, TypeError, KeyError):
            continue
        if read is None:
            continue
        record = read[0]
        holding = record.holding or {}
        if (record.boot_id, record.pid_ns) != (machine.boot_id, machine.pid_ns):
            continue
        if holding.get("run") != run_id or holding.get("attempt") != attempt:
            continue
        if not worker_alive(record, proc_info(record.worker_pid)):
            continue  # a dead worker's group is its reaper's (`reap_dead_workers`)
        if record.pgid is None:
            # Its group is recorded only once the command has run a poll interval: one
            # stopped sooner is found by the worker's token, which its processes carry (the
            # worker runs one command at a time, and is stopped holding this attempt).
            pids = kill_token_holders(f"{record.worker_pid}-{record.worker_start}")
            if pids:
                log.warning(
                    "killed the command of worker %d (pids %s): its task %s was taken over",
                    record.worker_pid,
                    pids,
                    attempt,
                )
                killed.extend(pids)
            continue
        leader = proc_info(record.pgid) if record.pgid > 1 else None
        if leader is None or leader.start != record.leader_start or leader.pgid != record.pgid:
            continue
        if record.pgid != os.getpgrp():
            log.warning(
                "killing process group %d of worker %d: its task %s was taken over",
                record.pgid,
                record.worker_pid,
                attempt,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, signal.SIGKILL)
            killed.append(record.pgid)
    return killed


def _forget(path: Path, text: str) -> None:
    """Remove the record at ``path`` if it still says ``text``: a new worker that got the dead
    one's pid may have written its own there meanwhile."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            path.unlink(missing_ok=True)


# --- the watchdog ------------------------------------------------------------------------------


class Watchdog:
    """A process beside a worker that reaps it the moment it dies.

    It reads a pipe only the worker can write to; end-of-file means the worker closed it
    (`stop`) or died. Then, if the worker's record is still there (it died), it waits for the
    worker to be gone, SIGKILLs every process whose environment holds the worker's token
    (`TOKEN_ENV`) and reaps the scratch root as a starting worker would (`reap_dead_workers`:
    the recorded task group, the scratch folders, the record). Given ``settle`` (the worker's
    project), it then settles what the worker held (`usecases.work.settle_dead_worker`: its
    attempt closed as lost, its messages handed back). It ignores SIGINT and SIGTERM and runs
    in a session of its own, so signals meant for the worker's group leave it to do its job;
    it holds nothing else open.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(
        cls, scratch_root: Path, record: Path, token: str, settle: str | None = None
    ) -> Watchdog | None:
        """Start the watchdog of this process (recorded at ``record``); None if it cannot.
        ``settle``: the worker's config file ("" for the environment's), when the watchdog
        is to settle what the worker held should it die."""
        code = "from distributed_something.worker.watchdog import watchdog_main; watchdog_main()"
        extra = [] if settle is None else [settle]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code, str(scratch_root), str(record), token, *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("no watchdog for this worker (%s): a later reaper cleans up", exc)
            return None
        return cls(process)

    def stop(self) -> None:
        """Close the pipe (the watchdog then exits) and wait a moment for it to go."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


@dataclass(frozen=True)
class Death:
    """A worker `after_death` cleaned up after: its last record (None when unreadable), and
    that record's path and text, for `forget` once what it held is settled."""

    record: GroupRecord | None
    path: Path
    text: str = ""

    def forget(self, scratch_root: Path) -> None:
        """Remove the worker's scratch folders (unless its pid is another process's now: a
        new worker may use the same names) and its record (if it still says what was read:
        a new worker with the same pid may have written its own there meanwhile)."""
        record = self.record
        now = None if record is None else proc_info(record.worker_pid)
        if record is not None and (now is None or now.exited or now.start == record.worker_start):
            _remove_workdirs(scratch_root, record)
        if self.text:
            _forget(self.path, self.text)


def after_death(
    scratch_root: Path, record: Path, token: str, *, wait: float = 10.0
) -> Death | None:
    """Clean up after the worker recorded at ``record`` once it is gone (waiting up to
    ``wait`` seconds for it to exit); nothing when it closed its record itself. Returns what
    it cleaned up after, None when it did nothing."""
    try:
        read = read_record(record)
    except (ValueError, TypeError, KeyError):
        read = None  # `reap_dead_workers` removes it
    if read is None and not record.exists():
        return None  # the worker exited normally
    if read is not None:
        deadline = time.monotonic() + wait
        while worker_alive(read[0], proc_info(read[0].worker_pid)):
            if time.monotonic() > deadline:
                return None  # alive after all (a pipe closed by mistake): not ours to reap
            time.sleep(0.01)
    kill_token_holders(token)
    reap_dead_workers(scratch_root)  # leaves the record to this watchdog if it holds anything
    return Death(None, record) if read is None else Death(read[0], record, read[1])


def kill_token_holders(token: str) -> list[int]:
    """SIGKILL every process (but this one) whose environment says ``TOKEN_ENV=token``;
    returns their pids. Processes whose environment cannot be read are left alone."""
    needle = f"\0{TOKEN_ENV}={token}\0".encode()
    killed = []
    try:
        entries = [entry.name for entry in os.scandir(_PROC)]
    except OSError:
        return []
    me = os.getpid()
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(_PROC / name / "environ", "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:
            continue
        if needle in environ + b"\0":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed.append(int(name))
    return killed
