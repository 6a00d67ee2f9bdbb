"""The worker's scratch folder and what a task leaves in it cannot be turned against the
user: another user's folder in a shared /tmp is refused, and links the task's command puts
where the worker reads, writes, stores or clears are never followed.

- A scratch folder under a folder anyone may write (a Slurm node's /tmp) must be this
  user's, a real folder, writable by nobody else: another user who made
  /tmp/ds-scratch-<uid> first could read the tasks' files, swap their folders for links, or
  forge the records that make a starting worker kill "a dead worker's" process group.
- Records of dead workers that are not this user's files are never acted on.
- The task's folder replaced by a link is removed, not emptied through the link; its log or
  a recipe's result file replaced by a link is not read, appended to or stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NOT_APPLICABLE, write_project
from distributed_something.errors import InputError
from distributed_something.recipes.base import Workdir, read_own_file
from distributed_something.usecases.work import _make_scratch_root, scratch_problem
from distributed_something.worker.procgroups import proc_info, reap_dead_workers
from testkit import dead_worker, record_for, write_record

NOBODY = 65534
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason=f"{NOT_APPLICABLE} making another user's file needs root"
)


def shared_tmp(tmp_path: Path) -> Path:
    """A folder anyone may write, as /tmp is (sticky, 1777)."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def test_a_scratch_folder_made_in_a_shared_tmp_is_this_users_alone(tmp_path: Path) -> None:
    root = shared_tmp(tmp_path) / "ds-scratch-0" / "App"
    _make_scratch_root(root)
    for folder in (root, root.parent):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert scratch_problem(root) is None
    _make_scratch_root(root)  # again: fine


def test_a_scratch_folder_others_may_write_or_a_link_is_refused(tmp_path: Path) -> None:
    shared = shared_tmp(tmp_path)
    loose = shared / "ds-scratch-loose"
    loose.mkdir()
    loose.chmod(0o777)  # made first by someone, for anyone
    with pytest.raises(InputError) as caught:
        _make_scratch_root(loose / "App")
    assert "may be written by other users" in caught.value.problem
    assert "DS_SLURM_SCRATCH" in caught.value.fix
    (shared / "ds-scratch-link").symlink_to(tmp_path)
    assert "is a link or a file" in str(scratch_problem(shared / "ds-scratch-link" / "App"))
    # Outside a shared folder (the project's own .ds/<app>/scratch): nothing to say.
    own = tmp_path / "project" / ".ds" / "App" / "scratch"
    own.mkdir(parents=True)
    own.chmod(0o775)
    assert scratch_problem(own) is None


@as_root
def test_another_users_scratch_folder_in_a_shared_tmp_is_refused(tmp_path: Path) -> None:
    taken = shared_tmp(tmp_path) / "ds-scratch-0"
    taken.mkdir(mode=0o700)
    os.chown(taken, NOBODY, NOBODY)
    with pytest.raises(InputError) as caught:
        _make_scratch_root(taken / "App")
    assert f"belongs to user id {NOBODY}, not to this user (0)" in caught.value.problem
    assert not (taken / "App").exists()


@as_root
def test_a_forged_record_of_a_dead_worker_kills_nothing(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        leader = proc_info(victim.pid)
        assert leader is not None
        path = write_record(scratch, record_for(dead_worker(), victim.pid, leader.start))
        os.chown(path, NOBODY, NOBODY)  # written by another user
        assert reap_dead_workers(scratch) == []
        assert victim.poll() is None and path.exists()
        os.chown(path, 0, 0)  # the same record, this user's: the group is killed
        assert [r.pgid for r in reap_dead_workers(scratch)] == [victim.pid]
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_a_task_folder_replaced_by_a_link_is_removed_not_emptied(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("years of work")
    root = tmp_path / "scratch" / "w1-1"
    workdir = Workdir(root)
    workdir.create()
    (root / "outputs" / "a.txt").write_text("a")
    assert workdir.clear() and not (root / "outputs" / "a.txt").exists()
    # The task moved its folder away and left a link to the user's home in its place.
    root.rename(tmp_path / "moved")
    root.symlink_to(home)
    assert workdir.clear() is False
    assert not os.path.lexists(root)
    assert (home / "docs" / "thesis.txt").read_text() == "years of work"


def test_a_recipes_result_file_is_read_only_when_it_is_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2")
    done = tmp_path / "cp.is.done"
    done.write_text("Complete\n")
    assert read_own_file(done) == "Complete\n"
    done.unlink()
    done.symlink_to(secret)
    assert read_own_file(done) is None
    fifo = tmp_path / "status.json"
    os.mkfifo(fifo)
    assert read_own_file(fifo) is None  # and it does not block
    assert read_own_file(tmp_path / "missing") is None


#: Replaces its log by a link to a file of the user's elsewhere, then fails.
LINKS_ITS_LOG = (
    "import os, sys\nos.remove('task.log')\nos.symlink(sys.argv[1], 'task.log')\nsys.exit(3)\n"
)


@pytest.mark.slow
def test_a_log_replaced_by_a_link_is_neither_written_nor_stored(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    script = tmp_path / "links.py"
    script.write_text(LINKS_ITS_LOG)
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), str(victim)],
        groups=[{"name": "a"}],
        extra={"queue": {"job_retries": 1}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "distributed_something", "run", str(proj), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr
    assert victim.read_text().count("\n") == 1  # nothing appended to it
    assert "wJalrXUtnFEMI" not in result.stdout  # nor its text in the report
    logs = subprocess.run(
        [sys.executable, "-m", "distributed_something", "logs", "name=a"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "wJalrXUtnFEMI" not in logs.stdout
    assert "replaced its log (task.log) with a link" in logs.stdout
