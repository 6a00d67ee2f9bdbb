"""The `command` recipe and the recipe registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distributed_something.config.model import Config, RecipeConfig
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.jobs.parse import parse_job_text
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Input, Recipe, Workdir
from distributed_something.recipes.command import CommandRecipe
from distributed_something.recipes.registry import RECIPES, get_recipe

WORKDIR = Workdir(Path("/scratch/task-1"))


def config(**recipe: Any) -> Config:
    return Config(app_name="Demo", recipe=RecipeConfig(name="command", **recipe))


def task(group: Any, **shared: Any) -> Task:
    return Task(body={**shared, "group": group})


def test_argv_is_rendered_per_element_with_task_fields_and_builtins() -> None:
    cfg = config(
        argv=["{python}", "{input_dir}/run.py", "--well", "{Well}", "{image_size}", "{work_dir}"],
    )
    t = task({"Well": "A01"}, image_size=1024)
    plan = CommandRecipe().plan(cfg, t, WORKDIR)
    assert plan.argv == [
        sys.executable,
        f"{WORKDIR.input_dir}/run.py",
        "--well",
        "A01",
        "1024",
        str(WORKDIR.root),
    ]


def test_default_output_prefix_is_per_task() -> None:
    t = task({"Well": "A01"})
    plan = CommandRecipe().plan(config(argv=["true"]), t, WORKDIR)
    assert plan.output_prefix == f"outputs/{t.id}"
    assert plan.inputs == []


def test_output_prefix_and_inputs_are_rendered() -> None:
    cfg = config(
        argv=["tool", "{output_dir}"],
        output_prefix="results/{Plate}/{Well}",
        inputs=["images/{Plate}/{Well}.tif", "{pipeline}"],
    )
    t = task({"Plate": "P1", "Well": "A01"}, pipeline="projects/analysis.cppipe")
    plan = CommandRecipe().plan(cfg, t, WORKDIR)
    assert plan.output_prefix == "results/P1/A01"
    assert plan.inputs == [
        Input(key="images/P1/A01.tif", path="images/P1/A01.tif"),
        Input(key="projects/analysis.cppipe", path="projects/analysis.cppipe"),
    ]
    assert plan.argv == ["tool", str(WORKDIR.output_dir)]


def test_group_values_win_over_shared_keys_and_dotted_names_work() -> None:
    cfg = config(argv=["{Well}", "{group.Well}", "{meta.rows}"])
    t = task({"Well": "A02"}, Well="shared", meta={"rows": 2})
    assert CommandRecipe().plan(cfg, t, WORKDIR).argv == ["A02", "A02", "2"]


def test_string_groups_are_available_as_group() -> None:
    cfg = config(argv=["convert", "{group}"], inputs=["plates/{group}"])
    plan = CommandRecipe().plan(cfg, task("PLATE_A"), WORKDIR)
    assert plan.argv == ["convert", "PLATE_A"]
    assert plan.inputs[0].key == "plates/PLATE_A"


def test_dozc_plate_tasks() -> None:
    job = parse_job_text('{"bucket": "b", "plates": ["P1"]}', source="j", suffix=".json")
    cfg = config(argv=["b2r", "{plate}", "{bucket}"], output_prefix="zarr/{plate}")
    plan = CommandRecipe().plan(cfg, job.tasks[0], WORKDIR)
    assert plan.argv == ["b2r", "P1", "b"]
    assert plan.output_prefix == "zarr/P1"


@pytest.mark.parametrize("name", ["task_id", "input_dir", "output_dir", "work_dir", "python"])
def test_builtins_cannot_be_overridden_by_job_values(name: str) -> None:
    cfg = config(argv=[f"{{{name}}}"], output_prefix="out/{task_id}")
    evil = "/etc/evil"
    for t in (task({name: evil}), task({"x": 1}, **{name: evil})):
        plan = CommandRecipe().plan(cfg, t, PLACEHOLDER_WORKDIR)
        assert plan.argv != [evil]
        expected = {
            "task_id": t.id,
            "input_dir": str(PLACEHOLDER_WORKDIR.input_dir),
            "output_dir": str(PLACEHOLDER_WORKDIR.output_dir),
            "work_dir": str(PLACEHOLDER_WORKDIR.root),
            "python": sys.executable,
        }[name]
        assert plan.argv == [expected]
        assert plan.output_prefix == f"out/{t.id}"


def test_shell_metacharacters_stay_literal_argv_elements(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = f"x; touch {marker} && echo $(id) `id` | cat > /dev/null 'q\" {{Well}}"
    cfg = config(argv=["{python}", "-c", "import sys; print(sys.argv[1:])", "{value}", "{Well}"])
    plan = CommandRecipe().plan(cfg, task({"value": nasty, "Well": "A01"}), WORKDIR)
    assert plan.argv[3] == nasty
    assert len(plan.argv) == 5
    # Running the plan's argv as-is (no shell) passes the value through untouched.
    result = subprocess.run(plan.argv, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == repr([nasty, "A01"])
    assert not marker.exists()


@pytest.mark.parametrize(
    "value", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "..\\secret"]
)
def test_unsafe_input_keys_from_job_values_are_rejected(value: str) -> None:
    cfg = config(argv=["tool"], inputs=["ok/key", "{image}"])
    t = task({"image": value})
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(cfg, t, WORKDIR)
    error = caught.value
    assert error.source == "job file"
    assert error.field == "recipe.inputs[1]"
    assert repr(value) in error.problem
    assert t.id in error.problem


@pytest.mark.parametrize("value", ["../../etc", "/abs", ""])
def test_unsafe_output_prefixes_are_rejected(value: str) -> None:
    cfg = config(argv=["tool"], output_prefix="{where}")
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(cfg, task({"where": value}), WORKDIR)
    assert caught.value.field == "recipe.output_prefix"
    assert repr(value) in caught.value.problem


def test_missing_field_names_group_field_and_template() -> None:
    cfg = config(argv=["tool", "{Well}", "{channel}"])
    t = task({"Well": "A01"})
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(cfg, t, WORKDIR)
    error = caught.value
    assert error.source == "job file"
    assert error.field == "channel"
    assert "has no field `channel` used by recipe.argv[2]" in error.problem
    assert t.describe() in error.problem
    assert "add `channel` to the group or the shared keys" in error.fix
    assert "did you mean" not in error.fix  # nothing close


def test_a_misspelt_placeholder_suggests_the_closest_name() -> None:
    # `{pyhton}` for the built-in `{python}`: "add `pyhton` to the group" alone misled.
    cfg = config(argv=["{pyhton}", "{Wel}"])
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(cfg, task({"Well": "A01"}), WORKDIR)
    assert caught.value.field == "pyhton"
    assert caught.value.fix.endswith("or change the template (did you mean `{python}`?)")
    cfg = config(argv=["{python}", "{Wel}"])
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(cfg, task({"Well": "A01"}), WORKDIR)
    assert caught.value.fix.endswith("(did you mean `{Well}`?)")


@pytest.mark.parametrize(
    ("recipe", "field"),
    [
        ({"argv": ["t"], "output_prefix": "r/{nope}"}, "recipe.output_prefix"),
        ({"argv": ["t"], "inputs": ["a", "{nope}"]}, "recipe.inputs[1]"),
    ],
)
def test_missing_field_in_prefix_or_inputs(recipe: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(config(**recipe), task({"Well": "A01"}), WORKDIR)
    assert caught.value.field == "nope"
    assert f"used by {field}" in caught.value.problem


def test_empty_argv_is_a_config_error() -> None:
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(config(argv=[]), task({"a": 1}), WORKDIR)
    assert caught.value.field == "recipe.argv"
    assert caught.value.source == "config"


def test_malformed_template_is_a_config_error() -> None:
    with pytest.raises(InputError) as caught:
        CommandRecipe().plan(config(argv=["tool", "{Well"]), task({"Well": "A01"}), WORKDIR)
    assert caught.value.source == "config"
    assert caught.value.field == "recipe.argv[1]"
    assert "'{Well'" in caught.value.problem


def test_plans_differ_only_by_workdir() -> None:
    cfg = config(argv=["{output_dir}", "{Well}"])
    t = task({"Well": "A01"})
    a = CommandRecipe().plan(cfg, t, PLACEHOLDER_WORKDIR)
    b = CommandRecipe().plan(cfg, t, Workdir(Path("/elsewhere")))
    assert a.argv == [str(PLACEHOLDER_WORKDIR.output_dir), "A01"]
    assert b.argv == ["/elsewhere/outputs", "A01"]
    assert a.output_prefix == b.output_prefix


def test_check_success() -> None:
    recipe = CommandRecipe()
    assert recipe.check_success(0, WORKDIR) is None
    assert recipe.check_success(2, WORKDIR) == "command exited with code 2"
    # Killed, it did not exit: the signal is named, not a code of -9.
    assert recipe.check_success(-9, WORKDIR) == "command was killed by signal 9 (SIGKILL)"
    assert recipe.check_success(-11, WORKDIR) == "command was killed by signal 11 (SIGSEGV)"


# --- registry -----------------------------------------------------------------------------


def test_registry_returns_the_command_recipe() -> None:
    recipe: Recipe = get_recipe("command", source="ds.toml")
    assert isinstance(recipe, CommandRecipe)
    assert recipe.name == "command"
    assert RECIPES["command"]().name == "command"


def test_registry_unset_name() -> None:
    with pytest.raises(InputError) as caught:
        get_recipe(None, source="ds.toml")
    assert (caught.value.source, caught.value.field) == ("ds.toml", "recipe.name")
    assert 'recipe.name = "command"' in caught.value.fix
    assert "recipe.argv" in caught.value.fix


def test_registry_unknown_name_lists_known_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "fiji", CommandRecipe)
    with pytest.raises(InputError) as caught:
        get_recipe("cellprofilr", source="config.py")
    assert caught.value.field == "recipe.name"
    assert "'cellprofilr'" in caught.value.problem
    assert '"command"' in caught.value.problem
    assert '"fiji"' in caught.value.problem
