"""Validate and submit at scale: the compact task list, the planners and streamed sending.

A job is kept as one JSON text and one id per group (`TaskList`), planned by recipe planners
whose templates are compiled once per job, checked plan by plan without keeping the plans,
and sent in chunks made from the texts. These tests pin what must not change on the way:
task ids, message bodies, key order, plans and errors.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed_something import sending
from distributed_something.config.model import Config, RecipeConfig, StorageConfig
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task, TaskList
from distributed_something.jobs.parse import parse_job_text
from distributed_something.project import Project
from distributed_something.recipes import command as command_module
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Input
from distributed_something.recipes.cellprofiler import CellProfilerRecipe
from distributed_something.recipes.command import CommandRecipe
from distributed_something.usecases import preflight
from distributed_something.usecases.validate import check_job


def reference_id(body: dict[str, Any]) -> str:
    """The task id as defined: sha256 of the body's canonical JSON, first 20 hex digits."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def parse(text: str, suffix: str = ".json") -> Any:
    return parse_job_text(text, source="job.json", suffix=suffix)


DS_JOB = (
    '{"tool": "x", "zz": [1, {"b": 2, "a": 1}], "groups": [{"Plate": "P1", "Well": "A01"}, '
    '{"Well": "B02", "Plate": "P\u00e9"}, "s", 3, 2.5]}'
)
DCP_JOB = (
    '{"pipeline": "p.cppipe", "input": "in", "output": "out", "groups": ['
    '{"Metadata": "Metadata_Plate=P1,Metadata_Well=A01"}, '
    '{"Metadata": {"Metadata_Well": "A02", "Metadata_Plate": "P1"}}]}'
)


def test_task_ids_are_unchanged_for_pinned_groups() -> None:
    # Ids computed by the code before the compact task list (each task's body encoded whole).
    assert [t.id for t in parse(DS_JOB).tasks] == [
        "47abe34852744e30697c",
        "e9571f8f72e2b1dcdba2",
        "ee5c43dff2788ab12c20",
        "e79823cf5b1ea36aac65",
        "130bc10a6f89182a6668",
    ]
    assert [t.id for t in parse(DCP_JOB).tasks] == ["c00ecdb69d80f24c4415", "2b4a5e5e0ce519d36d85"]
    assert [t.id for t in parse("Plate,Well\nP1,A01\n", ".csv").tasks] == ["d44fe8675f4d85f0bf23"]


_scalars = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.text(max_size=6).filter(lambda k: "_comment" not in k and k not in ("groups", "plates"))


@settings(max_examples=150, deadline=None)
@given(
    shared=st.dictionaries(_keys, _values, max_size=4),
    groups=st.lists(
        st.one_of(st.dictionaries(_keys, _values, min_size=1, max_size=4), st.text(max_size=6)),
        min_size=1,
        max_size=6,
    ),
)
def test_ids_bodies_and_key_order_match_the_definition(
    shared: dict[str, Any], groups: list[Any]
) -> None:
    shared.pop("group", None)
    job = parse(json.dumps({**shared, "groups": groups}, ensure_ascii=False))
    assert isinstance(job.tasks, TaskList)
    expected: list[dict[str, Any]] = []
    for group in groups:
        body = {**shared, "group": group}
        if reference_id(body) not in {reference_id(b) for b in expected}:
            expected.append(body)
    assert len(job.tasks) == len(expected)
    assert len(job.duplicates) == len(groups) - len(expected)
    for index, (task, body) in enumerate(zip(job.tasks, expected, strict=True)):
        assert task.id == reference_id(body) == job.tasks.id_at(index)
        assert task.body == body
        # The element keeps the file's key order (a DCP Metadata dict's pairs are used so).
        assert json.dumps(task.group) == json.dumps(body["group"])
        # The message: top-level keys sorted, the objects below in the file's key order (as
        # the family's run.py sent them); the id is the canonical text's either way.
        message = json.dumps(dict(sorted(body.items())), separators=(",", ":"), ensure_ascii=False)
        assert job.tasks.body_json_at(index) == task.body_json() == message


_meta_text = st.text(alphabet='ab=,"\\/é\u2028\x00 ', min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(metadata=st.lists(_meta_text, min_size=1, max_size=5))
def test_dcp_metadata_strings_give_the_defined_ids_and_bodies_or_the_same_error(
    metadata: list[str],
) -> None:
    # Quotes, backslashes, control and non-ASCII characters: the plain strings are taken from
    # the file's text without parsing them; every other one must come out the same.
    shared = {"pipeline": "p.cppipe", "input": "in", "output": "out"}
    text = json.dumps({**shared, "groups": [{"Metadata": m} for m in metadata]})
    try:
        whole = [
            {"data_file": "", "output_structure": "", **shared, "Metadata": m} for m in metadata
        ]
        for index, m in enumerate(metadata):
            try:
                parse(json.dumps({**shared, "groups": [{"Metadata": m, "x": None}]}))
            except InputError as error:  # the slow path's verdict on this string
                raise InputError(
                    error.source, f"groups[{index}].Metadata", error.problem, error.fix
                ) from None
    except InputError as expected:
        with pytest.raises(InputError) as raised:
            parse(text)
        assert (raised.value.field, raised.value.problem) == (expected.field, expected.problem)
        return
    job = parse(text)
    unique: list[dict[str, Any]] = []
    for body in whole:
        if reference_id(body) not in {reference_id(b) for b in unique}:
            unique.append(body)
    assert [(t.id, t.body) for t in job.tasks] == [(reference_id(b), b) for b in unique]


@pytest.mark.parametrize(
    ("text", "field"),
    [('{"groups": ["a", "\\ud800"]}', "groups[1]"), ('{"s": "\\udfff", "groups": [1]}', None)],
)
def test_half_a_character_is_an_input_error_not_a_traceback(text: str, field: str | None) -> None:
    with pytest.raises(InputError) as caught:
        parse(text)
    assert caught.value.field == field
    assert "half of a character" in caught.value.problem


def test_a_compact_job_without_some_ids_keeps_the_others_in_order() -> None:
    job = parse(DS_JOB)
    tasks = job.tasks
    assert isinstance(tasks, TaskList)
    dropped = {tasks.id_at(1), tasks.id_at(3)}
    rest = tasks.without(dropped)
    assert [t.id for t in rest] == [t.id for t in tasks if t.id not in dropped]
    assert [rest.body_json_at(i) for i in range(len(rest))] == [
        t.body_json() for t in tasks if t.id not in dropped
    ]


def test_messages_are_sent_in_chunks_with_the_bodies_of_the_tasks() -> None:
    text = json.dumps({"s": 1, "groups": [{"b": i, "a": str(i)} for i in range(7)]})
    tasks = parse(text).tasks
    chunks = list(sending._messages(tasks, 3))
    assert [(n, len(c)) for n, c in chunks] == [(3, 3), (3, 3), (1, 1)]
    assert [m for _, c in chunks for m in c] == [(t.id, t.body_json()) for t in list(tasks)]


def test_a_compact_job_holds_far_less_than_a_task_object_per_group() -> None:
    n = 20_000
    text = json.dumps(
        {"groups": [{"plate": f"P{i // 384}", "well": f"W{i % 384}"} for i in range(n)]}
    )
    tracemalloc.start()
    try:
        job = parse(text)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(job.tasks) == n
    # One short text and 20 id characters a group; a Task with its body dict, its JSON and
    # its id took over 600 bytes.
    assert held / n < 200, held / n


def command_config(**recipe: Any) -> Config:
    return Config(app_name="Demo", recipe=RecipeConfig(name="command", **recipe))


def planned_both_ways(config: Config, text: str, recipe: Any) -> list[tuple[Any, Any]]:
    """(planner's plan, plan()'s plan or its error) of each task of the job ``text``."""
    tasks = parse(text).tasks
    fast = recipe.planner(config, PLACEHOLDER_WORKDIR, tasks.shared, tasks.group_key)
    assert fast is not None
    out = []
    for index, task in enumerate(tasks):
        try:
            slow: Any = recipe.plan(config, task, PLACEHOLDER_WORKDIR)
        except InputError as error:
            slow = error
        out.append((fast(task.id, tasks.group(index)), slow))
    return out


def test_the_command_planner_plans_as_plan_does_or_leaves_the_task_to_it() -> None:
    config = command_config(
        argv=["{python}", "{input_dir}/{{x}}/{Plate}", "{task_id}", "{meta}", "{n}", "{group}"],
        output_prefix="out/{Plate}/{Well}",
        inputs=["images/{Plate}/{Well}.tif"],
    )
    groups = [
        {"Plate": "P1", "Well": "A01", "n": 2.5},  # n from the group wins over the shared n
        {"Plate": "P1", "Well": "A02", "meta": {"a": "k"}},  # the group's meta wins
        {"Plate": "P1", "Well": "../x"},  # an unsafe key: plan raises
        {"Plate": "P1"},  # a missing field: plan raises
        {"Plate": "P1", "Well": "A03", "python": "not me"},  # built-ins win
    ]
    text = json.dumps({"n": 1, "meta": {"a": "m"}, "groups": groups})
    results = planned_both_ways(config, text, CommandRecipe())
    fast, slow = results[0]
    assert fast == slow
    assert fast.argv[0] == sys.executable
    assert fast.argv[1].endswith("/{x}/P1") and fast.argv[4] == "2.5"
    assert fast.argv[5] == json.dumps(groups[0], sort_keys=True, separators=(",", ":"))
    assert fast.inputs == [Input("images/P1/A01.tif", "images/P1/A01.tif")]
    assert fast.argv[3] == '{"a":"m"}'
    assert results[1][0] == results[1][1] and results[1][0].argv[3] == '{"a":"k"}'
    assert results[2][0] is None and isinstance(results[2][1], InputError)
    assert results[3][0] is None and isinstance(results[3][1], InputError)
    assert results[4][0] == results[4][1]
    # A dotted name is left to plan, which walks into the object.
    dotted = command_config(argv=["true", "{meta.a}"], output_prefix="out/{Well}")
    ((fast, slow),) = planned_both_ways(
        dotted, json.dumps({"groups": groups[1:2]}), CommandRecipe()
    )
    assert fast is None and slow.argv == ["true", "k"]


@settings(max_examples=100, deadline=None)
@given(
    groups=st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c.d", "group", "task_id"]),
            st.one_of(st.text(max_size=4), st.integers(), st.lists(st.integers(), max_size=2)),
            min_size=1,
        ),
        min_size=1,
        max_size=4,
    ),
    template=st.lists(
        st.sampled_from(["{a}", "{b}", "{c.d}", "{group}", "{s}", "x/", "{task_id}", "{{"]),
        min_size=1,
        max_size=4,
    ),
)
def test_the_command_planner_never_differs_from_plan(
    groups: list[dict[str, Any]], template: list[str]
) -> None:
    config = command_config(argv=["run", "".join(template)], output_prefix="o/" + "".join(template))
    text = json.dumps({"s": "shared", "groups": groups})
    for fast, slow in planned_both_ways(config, text, CommandRecipe()):
        assert fast is None or fast == slow


def project_of(tmp_path: Path, config: Config, groups: list[Any], **shared: Any) -> Project:
    (tmp_path / "job.json").write_text(json.dumps({**shared, "groups": groups}))
    return Project(config=config, config_path=tmp_path / "ds.toml")


def test_check_job_compiles_the_templates_once_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[object] = []
    compile_templates = command_module.compile_templates

    def counting(templates: Any) -> Any:
        compiled.append(templates)
        return compile_templates(templates)

    def no_render(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("a task was rendered template by template")

    monkeypatch.setattr(command_module, "compile_templates", counting)
    monkeypatch.setattr(command_module, "render", no_render)
    config = command_config(argv=["true", "{w}"], output_prefix="out/{w}")
    project = project_of(tmp_path, config, [{"w": f"W{i}"} for i in range(500)])
    job = check_job(project, tmp_path / "job.json")
    assert len(job.tasks) == 500
    assert len(compiled) == 1


def test_check_job_keeps_no_plan_and_preflight_keeps_only_the_sample(tmp_path: Path) -> None:
    n = preflight.ALL_TASKS + 300
    config = command_config(argv=["true"], output_prefix="out/{w}", inputs=["in/{w}"])
    project = project_of(tmp_path, config, [{"w": f"W{i}"} for i in range(n)])
    made: list[preflight.PlanChecks] = []

    def checks(job: Any) -> Any:
        made.append(preflight.PlanChecks(project, job, tmp_path / "job.json", bucket=None))
        return made[0].add

    check_job(project, tmp_path / "job.json", checks=checks)
    (plan_checks,) = made
    assert plan_checks.any_inputs
    assert len(plan_checks._kept) == preflight.SAMPLE


def test_an_output_clash_still_names_both_groups(tmp_path: Path) -> None:
    config = command_config(argv=["true"], output_prefix="out/{w}")
    groups = [{"w": "a"}, {"w": "b"}, {"w": "a/c"}, {"w": "b"}]
    project = project_of(tmp_path, config, groups)
    with pytest.raises(InputError) as caught:
        check_job(project, tmp_path / "job.json")
    # "out/a" contains "out/a/c": the first clash in sorted order.
    assert caught.value.field == "groups[0]"
    assert "groups[2]" in caught.value.problem and "'out/a'" in caught.value.problem


def cellprofiler_config(**storage: Any) -> Config:
    return Config(
        app_name="Demo",
        recipe=RecipeConfig(name="cellprofiler"),
        storage=StorageConfig(**storage),
    )


DCP_SHARED = {
    "pipeline": "pipelines/analysis.cppipe",
    "data_file": "csvs/load_data.csv",
    "input": "projects/x/workspace/",
    "output": "projects/x/analysis",
}


@pytest.mark.parametrize("structure", ["", "Metadata_Plate-Metadata_Well", "Metadata_Site"])
def test_the_cellprofiler_planner_plans_as_plan_does(structure: str) -> None:
    groups = [
        {"Metadata": "Metadata_Plate=P1,Metadata_Well=A01"},
        {"Metadata": {"Metadata_Well": "A02", "Metadata_Plate": "P1"}},  # pairs in file order
        {"Metadata_Plate": "P2", "Metadata_Well": 3},  # --print-groups form
        {"Metadata": "Metadata_Plate=../up,Metadata_Well=A01"},  # unsafe: plan raises
        {"Metadata": "Metadata_Plate=P1,Metadata_Well=A01,Metadata_Site=2"},
    ]
    text = json.dumps({**DCP_SHARED, "output_structure": structure, "groups": groups})
    config = cellprofiler_config(destination_bucket="dest", workspace_bucket="ws")
    results = planned_both_ways(config, text, CellProfilerRecipe())
    for fast, slow in results:
        assert fast is None or fast == slow, (fast, slow)
    if structure == "Metadata_Site":  # names none of the first groups' keys: plan raises
        assert all(isinstance(slow, InputError) for _, slow in results[:4])
        assert results[4][0] == results[4][1]
        return
    assert all(fast is not None for fast, _ in results[:3] + results[4:])
    assert results[3][0] is None
    assert results[1][0].output_prefix.endswith("A02-P1" if not structure else "P1-A02")
    assert results[0][0].output_bucket == "dest"


def test_the_cellprofiler_planner_is_none_when_the_shared_keys_cannot_run() -> None:
    recipe = CellProfilerRecipe()
    config = cellprofiler_config()
    shared = {**DCP_SHARED, "pipeline": ""}
    assert recipe.planner(config, PLACEHOLDER_WORKDIR, shared, "Metadata") is None
    assert recipe.planner(config, PLACEHOLDER_WORKDIR, DCP_SHARED, "group") is None
    task = Task(body={**shared, "Metadata": "a=b"}, group_key="Metadata")
    with pytest.raises(InputError):
        recipe.plan(config, task, PLACEHOLDER_WORKDIR)
