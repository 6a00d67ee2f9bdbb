"""Output prefixes (issue 9): every task writes into its own folder, never into `_ds/`.

`ds validate` / `ds submit` refuse a job whose tasks' rendered prefixes have an empty name,
lie in the records area or overlap (equal, or one inside another) in one bucket; the worker
refuses again at upload any output key under `_ds/`.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_project
from distributed_something.backends import Backend
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.config.model import Config
from distributed_something.jobs.model import Task
from distributed_something.jobs.prefixes import find_clash, in_records_area, prefix_problem
from distributed_something.recipes.base import TaskPlan, Workdir
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import RunRecords
from distributed_something.worker.loop import Outcome, Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from testkit import FakeClock, NoCompute, NoProvisioner

Ds = Callable[..., subprocess.CompletedProcess[str]]
PY = sys.executable
#: A command that writes the file ``{file}`` (a relative path) into the output folder.
WRITE_NAMED = [
    "{python}",
    "-c",
    "import os, sys; p = os.path.join(*sys.argv[1:]); "
    "os.makedirs(os.path.dirname(p), exist_ok=True); open(p, 'w').write('{{}}')",
    "{output_dir}",
    "{file}",
]


def error_of(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line `ds` printed (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def queued(project: Path) -> int:
    """Messages in the project's local queue (0 when there is no queue file)."""
    path = project / ".ds" / "T" / "queue.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
    return int(count)


# --- the rules, as pure functions --------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "needle"),
    [
        ("", "is empty"),
        ("results/", "empty name"),
        ("results//x", "empty name"),
        ("/results", "empty name"),
        ("_ds", "records area"),
        ("_ds/T/done", "records area"),
        # What no storage holds: refused after the command ran, its outputs thrown away.
        ("results/.ds-tmp.x", "'.ds-tmp.', which is reserved"),
        (".ds-tmp.x/a", "'.ds-tmp.', which is reserved"),
        ("results/" + "é" * 130, "a name of 260 bytes (UTF-8)"),
    ],
)
def test_unusable_prefixes_are_named(prefix: str, needle: str) -> None:
    problem = prefix_problem(prefix)
    assert problem is not None and needle in problem


@pytest.mark.parametrize(
    "prefix", ["results/a", "out/_ds", "_dsx/a", "x_ds", "a/b/c", "a/.ds-tmpx", "é" * 127]
)
def test_ordinary_prefixes_pass(prefix: str) -> None:
    assert prefix_problem(prefix) is None
    assert not in_records_area(prefix)


def test_records_area_is_the_first_name_only() -> None:
    assert in_records_area("_ds/T/done/abc.json") and in_records_area("_ds")
    assert not in_records_area("out/_ds/T/done/abc.json") and not in_records_area("_dsT/x")


def test_overlaps_are_equal_or_nested_folders_in_one_bucket() -> None:
    assert find_clash([("b", "res/a"), ("b", "res/b"), ("b", "resa")]) is None
    assert find_clash([("b", "res/a"), ("c", "res/a")]) is None  # other bucket
    equal = find_clash([("b", "x"), ("b", "res/a"), ("b", "res/a")])
    assert equal is not None and equal.equal and (equal.first, equal.second) == (1, 2)
    nested = find_clash([("b", "res/a/deep"), ("b", "zz"), ("b", "res")])
    assert nested is not None and not nested.equal
    assert (nested.outer, nested.inner) == (2, 0) and (nested.first, nested.second) == (0, 2)
    # A family that shares folders on purpose: equal is fine, nested still is not.
    assert find_clash([("b", "res/a"), ("b", "res/a")], allow_equal=True) is None
    shared_then_nested = [("b", "res/a"), ("b", "res/a"), ("b", "res/a/x")]
    found = find_clash(shared_then_nested, allow_equal=True)
    assert found is not None and not found.equal and found.inner == 2


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["b1", "b2"]),
            st.lists(st.sampled_from(["a", "b", "a-", "a.b", "ab"]), min_size=1, max_size=3).map(
                "/".join
            ),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_clash_search_agrees_with_comparing_every_pair(
    outputs: list[tuple[str, str]], allow_equal: bool
) -> None:
    # The sorted-neighbour search must find a clash exactly when some pair clashes.
    expected = any(
        b1 == b2 and _overlap(p1, p2) and not (allow_equal and p1 == p2)
        for (b1, p1), (b2, p2) in itertools.combinations(outputs, 2)
    )
    found = find_clash(outputs, allow_equal=allow_equal)
    assert (found is not None) == expected
    if found is not None:
        (b1, p1), (b2, p2) = outputs[found.outer], outputs[found.inner]
        assert b1 == b2 and found.bucket == b1
        assert p2 == p1 if found.equal else p2.startswith(p1 + "/")


# --- `ds validate` and `ds submit` through the CLI ---------------------------------------


def test_the_records_area_as_a_group_name_is_refused_before_anything_exists(
    tmp_path: Path, ds: Ds
) -> None:
    # The observed attack: output_prefix = "{name}" and a group named _ds/<app>/done.
    proj = write_project(
        tmp_path / "p",
        argv=WRITE_NAMED,
        output_prefix="{name}",
        groups=[{"name": "a", "file": "r.json"}, {"name": "_ds/T/done", "file": "victim.json"}],
    )
    for args in (["validate", "--job", "job.json"], ["submit", "job.json"], ["run"]):
        line = error_of(ds(*args, cwd=proj))
        assert "job.json: groups[1]:" in line, line
        assert '{"file":"victim.json","name":"_ds/T/done"}' in line
        assert "'_ds/T/done'" in line and "records area" in line and "Fix:" in line
    assert not (proj / ".ds").exists()


def test_a_template_field_rendering_empty_is_refused(tmp_path: Path, ds: Ds) -> None:
    # results/{name} with name "" would be the parent of every other task's prefix.
    proj = write_project(
        tmp_path / "p",
        argv=WRITE_NAMED,
        output_prefix="results/{name}",
        groups=[{"name": "a", "file": "x"}, {"name": "b", "file": "x"}, {"name": "", "file": "x"}],
        extra={"check_if_done": {"expected_number_files": 1}},
    )
    line = error_of(ds("validate", "--job", "job.json", cwd=proj))
    assert "job.json: groups[2]:" in line and '"name":""' in line
    assert "'results/'" in line and "empty name" in line


def test_two_groups_rendering_one_prefix_are_both_named_by_validate_and_submit(
    tmp_path: Path, ds: Ds
) -> None:
    proj = write_project(
        tmp_path / "p",
        argv=WRITE_NAMED,
        groups=[
            {"name": "a", "file": "r.txt"},
            {"name": "b", "file": "r.txt"},
            {"name": "c", "file": "r.txt"},
            {"name": "b", "file": "s.txt"},
        ],
    )
    line = error_of(ds("validate", "--job", "job.json", cwd=proj))
    assert "job.json: groups[1]:" in line, line
    assert 'groups[1] {"file":"r.txt","name":"b"}' in line
    assert 'groups[3] {"file":"s.txt","name":"b"}' in line
    assert "'out/b'" in line and "overwrite" in line and "Fix: give every group its own" in line
    assert not (proj / ".ds").exists()
    # submit validates the same way, after setup: nothing is queued.
    assert ds("setup", cwd=proj).returncode == 0
    assert error_of(ds("submit", "job.json", cwd=proj)) == line
    assert queued(proj) == 0


def test_a_prefix_inside_another_tasks_prefix_is_refused_naming_both(
    tmp_path: Path, ds: Ds
) -> None:
    proj = write_project(
        tmp_path / "p",
        argv=WRITE_NAMED,
        groups=[
            {"name": "x/deep", "file": "f"},
            {"name": "y", "file": "f"},
            {"name": "x", "file": "f"},
        ],
    )
    line = error_of(ds("validate", "--job", "job.json", cwd=proj))
    assert 'groups[0] {"file":"f","name":"x/deep"} writes under \'out/x/deep\'' in line, line
    assert 'inside \'out/x\' where groups[2] {"file":"f","name":"x"} writes' in line


def test_duplicated_groups_keep_their_positions_in_the_message(tmp_path: Path, ds: Ds) -> None:
    # groups[1] repeats groups[0] (submitted once): later positions must not shift.
    proj = write_project(
        tmp_path / "p",
        argv=WRITE_NAMED,
        groups=[{"name": "a", "file": "1"}, {"name": "a", "file": "1"}, {"name": "a", "file": "2"}],
    )
    line = error_of(ds("validate", "--job", "job.json", cwd=proj))
    assert 'groups[0] {"file":"1","name":"a"}' in line, line
    assert 'groups[2] {"file":"2","name":"a"}' in line


def test_csv_rows_are_named_as_rows(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(tmp_path / "p", argv=WRITE_NAMED, groups=[{"name": "a"}])
    (proj / "job.csv").write_text("name,file\na,1\nb,1\na,2\n")
    line = error_of(ds("validate", "--job", "job.csv", cwd=proj))
    assert "job.csv: rows[0]:" in line and "rows[2]" in line


def test_distinct_prefixes_still_validate(tmp_path: Path, ds: Ds) -> None:
    groups = [{"name": f"g{i}", "file": "f"} for i in range(50)]
    proj = write_project(tmp_path / "p", argv=WRITE_NAMED, groups=groups)
    result = ds("validate", "--job", "job.json", "--json", cwd=proj)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tasks"] == 50


# --- family formats ----------------------------------------------------------------------

#: DCP's exampleJob.json for the ExampleFly demo (its data: ../shared/data/examplefly).
DCP_EXAMPLE_JOB: dict[str, Any] = {
    "_comment1": "Paths in this file are relative to the root of your S3 bucket",
    "pipeline": "demo_project_folder/workspace/ExampleFly.cppipe",
    "data_file": "demo_project_folder/workspace/load_data.csv",
    "input": "demo_project_folder/workspace/",
    "output": "demo_project_folder/output",
    "output_structure": "Metadata_Position",
    "groups": [
        {"Metadata": "Metadata_Position=2"},
        {"Metadata": "Metadata_Position=76"},
        {"Metadata": "Metadata_Position=218"},
    ],
}


def family_project(folder: Path, recipe: dict[str, Any], job: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    config = {"app_name": "T", "recipe": recipe}
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    (folder / "job.json").write_text(json.dumps(job))
    return folder


def test_dcp_jobs_validate_including_groups_that_share_a_plate_folder(
    tmp_path: Path, ds: Ds
) -> None:
    recipe = {"name": "cellprofiler", "engine": "imageio"}
    example = family_project(tmp_path / "fly", recipe, DCP_EXAMPLE_JOB)
    result = ds("validate", "--job", "job.json", "--json", cwd=example)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tasks"] == 3
    # DCP's output_structure may name only the plate: every well of the plate writes into
    # <output>/<plate>, on purpose (files named by well). That stays valid.
    by_plate = {
        **DCP_EXAMPLE_JOB,
        "output_structure": "Metadata_Plate",
        "groups": [
            {"Metadata": "Metadata_Plate=P1,Metadata_Well=A01"},
            {"Metadata": "Metadata_Plate=P1,Metadata_Well=A02"},
            {"Metadata": "Metadata_Plate=P2,Metadata_Well=A01"},
        ],
    }
    shared = family_project(tmp_path / "plate", recipe, by_plate)
    result = ds("validate", "--job", "job.json", "--json", cwd=shared)
    assert result.returncode == 0, result.stderr


def test_dozc_plates_converting_to_one_zarr_are_refused(tmp_path: Path, ds: Ds) -> None:
    job = {
        "input_bucket": False,
        "input_location": "images",
        "path_to_metadata": False,
        "output_bucket": False,
        "output_location": "zarr",
        "plates": ["P1", {"name": "P1", "resolutions": 2}],
    }
    proj = family_project(tmp_path / "z", {"name": "omezarr", "engine": "builtin"}, job)
    line = error_of(ds("validate", "--job", "job.json", cwd=proj))
    assert 'plates[0] "P1"' in line and "plates[1]" in line and "'zarr/P1.ome.zarr'" in line


# --- the worker refuses the records area at upload ---------------------------------------


class _Rig:
    """A worker on a real local queue and folder bucket (as in test_worker_loop.py)."""

    def __init__(
        self, tmp_path: Path, recipe: Any, output_prefix: str, *, check_if_done: bool = True
    ) -> None:
        self.clock = FakeClock(1_000_000.0)
        self.queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=self.clock)
        self.storage = FolderStorage(tmp_path / "bucket")
        self.config = Config.model_validate(
            {
                "app_name": "W",
                "recipe": {"name": "command", "argv": WRITE_NAMED, "output_prefix": output_prefix},
                "check_if_done": {"enabled": check_if_done},
            }
        )
        backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.worker = Worker(
            self.config,
            backend,
            recipe,
            SubprocessRunner(grace_seconds=2),
            WorkerSettings(name="w1", run_id="r1", scratch_root=tmp_path / "scratch"),
            clock=self.clock,
            sleep=lambda _s: None,
        )
        self.records = RunRecords(self.storage, "W", "r1")

    def submit(self, group: dict[str, Any]) -> Task:
        task = Task(body={"group": group})
        self.queue.send_batch([(task.id, task.body_json())])
        return task


def test_the_worker_refuses_an_output_prefix_in_the_records_area(tmp_path: Path) -> None:
    # A message that never went through validation (sent by other means).
    rig = _Rig(tmp_path, CommandRecipe(), "{name}")
    victim = Task(body={"group": {"name": "victim"}})
    forger = rig.submit({"name": "_ds/W/done", "file": f"{victim.id}.json"})
    assert rig.worker.step() is Outcome.FAILED
    assert not rig.storage.exists(f"_ds/W/done/{victim.id}.json")
    assert rig.records.read_done(victim.id) is None
    assert rig.records.read_done(forger.id) is None
    error = rig.queue.last_error(forger.id) or ""
    assert "records area" in error and "nothing was uploaded" in error
    rig.worker.close()


class _RootPrefixRecipe(CommandRecipe):
    """A (buggy) recipe planning the empty prefix: output keys are the files' own paths."""

    def plan(self, config: Config, task: Task, workdir: Workdir) -> TaskPlan:
        plan = super().plan(config, task, workdir)
        return TaskPlan(argv=plan.argv, output_prefix="", inputs=plan.inputs)


def test_the_worker_refuses_output_files_that_reach_the_records_area(tmp_path: Path) -> None:
    # (check-if-done off: it cannot list the bucket's root as a task's folder either)
    rig = _Rig(tmp_path, _RootPrefixRecipe(), "unused/{name}", check_if_done=False)
    task = rig.submit({"name": "n", "file": "_ds/W/done/forged.json"})
    assert rig.worker.step() is Outcome.FAILED
    assert not rig.storage.exists("_ds/W/done/forged.json")
    assert "records area" in (rig.queue.last_error(task.id) or "")
    rig.worker.close()
