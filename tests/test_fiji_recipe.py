"""The `fiji` recipe: DF job files, the argument string, engines, success checks, downloads."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distributed_something.config.model import (
    CheckIfDoneConfig,
    Config,
    RecipeConfig,
    StorageConfig,
    ToolConfig,
)
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.jobs.parse import parse_job_text
from distributed_something.recipes import fiji_task
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR, Input, Workdir
from distributed_something.recipes.fiji import (
    STATUS_FILE,
    FijiRecipe,
    argument_string,
    engine_argv,
    engine_for,
    script_arguments,
    task_part,
)
from distributed_something.recipes.registry import get_recipe

WORKDIR = Workdir(Path("/scratch/task-1"))
DATA = f"{WORKDIR.input_dir}/data"
OUT = str(WORKDIR.output_dir)

#: Distributed-Fiji's files/exampleJob.json, verbatim.
DF_EXAMPLE_JOB = """{
  "_comment1": "Path of the output_file_location is relative to the root of your S3 bucket",
  "output_file_location": "projects/output/",
  "_comment2a": "If the location of input data is on your bucket and is passed to the script, make sure",
  "_comment2b": "you pass a file location starting with /home/ubuntu/bucket",
  "shared_metadata": {"input_file_location":"/home/ubuntu/bucket/projects/input","image_size":"1024","rows":"2","columns":"2"},
  "_comment3": "The following groups are tasks, and each will be run in parallel",
  "groups": [
    {"Well": "A1", "Plate":"Plate_1"},
    {"Well": "A2", "Plate":"Plate_1"}
  ]
}
"""  # noqa: E501 - kept exactly as DF ships it


def config(backend: str = "local", tool: dict[str, Any] | None = None, **recipe: Any) -> Config:
    recipe.setdefault("script", "scripts/measure.ijm")
    return Config(
        app_name="Fly",
        backend=backend,  # type: ignore[arg-type]
        recipe=RecipeConfig(name="fiji", **recipe),
        tool=ToolConfig(**(tool or {})),
        storage=StorageConfig(workspace_bucket="workspace"),
    )


def df_task(group: Any, shared: Any = None, location: Any = "results/") -> Task:
    body: dict[str, Any] = {"Metadata": group}
    if shared is not None:
        body["shared_metadata"] = shared
    if location is not None:
        body["output_file_location"] = location
    return Task(body=body, group_key="Metadata")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def parse_df_arguments(text: str) -> dict[str, str]:
    """The reading of the argument string that count_nuclei.ijm and SciJava use: key='value'
    pairs, values delimited only by quotes, pairs separated by commas and spaces."""
    pairs: dict[str, str] = {}
    position = 0
    pattern = re.compile(r"[ ,]*([^=]+)='([^']*)'")
    while position < len(text):
        match = pattern.match(text, position)
        if match is None:
            assert text[position:].strip(" ,") == "", f"unparsed tail {text[position:]!r}"
            break
        assert match.group(1) not in pairs, f"{match.group(1)} twice"
        pairs[match.group(1)] = match.group(2)
        position = match.end()
    return pairs


# --- job files and plans --------------------------------------------------------------------


def test_df_example_job_gives_the_messages_df_run_py_sent() -> None:
    job = parse_job_text(DF_EXAMPLE_JOB, source="exampleJob.json", suffix=".json")
    assert job.format == "df"
    shared = {
        "input_file_location": "/home/ubuntu/bucket/projects/input",
        "image_size": "1024",
        "rows": "2",
        "columns": "2",
    }
    assert [t.body for t in job.tasks] == [
        {
            "output_file_location": "projects/output/",
            "shared_metadata": shared,
            "Metadata": {"Well": well, "Plate": "Plate_1"},
        }
        for well in ("A1", "A2")
    ]


def test_plan_of_the_df_example_passes_df_argument_string_and_a_prefix_per_task() -> None:
    job = parse_job_text(DF_EXAMPLE_JOB, source="exampleJob.json", suffix=".json")
    plans = [FijiRecipe().plan(config(), t, WORKDIR) for t in job.tasks]
    assert option(plans[0].argv, "--argument") == (
        f"input='{DATA}', output='{OUT}', input_file_location='/home/ubuntu/bucket/projects/"
        "input', image_size='1024', rows='2', columns='2', Well='A1', Plate='Plate_1'"
    )
    assert plans[0].argv[:3] == [sys.executable, "-m", "distributed_something.recipes.fiji_task"]
    assert [p.output_prefix for p in plans] == [
        "projects/output/A1-Plate_1",
        "projects/output/A2-Plate_1",
    ]
    assert option(plans[0].argv, "--output-dir") == OUT
    assert option(plans[0].argv, "--status-file") == str(WORKDIR.root / STATUS_FILE)


def test_the_registry_gives_the_fiji_recipe() -> None:
    recipe = get_recipe("fiji", source="ds.toml")
    assert isinstance(recipe, FijiRecipe)
    assert recipe.name == "fiji"


def test_a_group_key_overrides_a_shared_key_in_its_place() -> None:
    text = script_arguments("/in", "/out", {"a": "1", "b": "2"}, {"b": "3", "c": "4"})
    assert text == "input='/in', output='/out', a='1', b='3', c='4'"


def test_numbers_and_booleans_are_written_as_text() -> None:
    text = argument_string([("n", 3), ("x", 0.5), ("on", True), ("off", False)])
    assert parse_df_arguments(text) == {"n": "3", "x": "0.5", "on": "true", "off": "false"}


def test_commas_spaces_and_equals_stay_inside_their_value() -> None:
    text = script_arguments("/in", "/out", {"channels": "1, 2,3", "expr": "a=b"}, {"W": "A 1"})
    assert parse_df_arguments(text) == {
        "input": "/in",
        "output": "/out",
        "channels": "1, 2,3",
        "expr": "a=b",
        "W": "A 1",
    }


@pytest.mark.parametrize(
    "value",
    ["x', output='/etc", "back\\slash", "two\nlines", "tab\there", "nul\x00"],
)
def test_values_that_could_break_out_of_their_quotes_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="contains the character"):
        argument_string([("key", value)])
    with pytest.raises(InputError) as caught:
        FijiRecipe().plan(config(), df_task({"Well": "A1", "note": value}), WORKDIR)
    assert caught.value.source == "job file"
    assert "quotes" in caught.value.fix


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        ({"input": "/elsewhere"}, "reserved"),
        ({"output": "/elsewhere"}, "reserved"),
        ({"bad key": "x"}, "not a name"),
        ({"1st": "x"}, "not a name"),
        ({"W": {"nested": 1}}, "dict"),
        ({"W": [1, 2]}, "list"),
        ({"W": None}, "null"),
    ],
)
def test_keys_and_values_the_script_cannot_take_are_refused(
    group: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InputError, match=problem) as caught:
        FijiRecipe().plan(config(), df_task(group), WORKDIR)
    assert caught.value.field == "Metadata"


def test_a_group_must_be_a_non_empty_object() -> None:
    for group in ("A1", {}, 3):
        with pytest.raises(InputError, match="non-empty object"):
            FijiRecipe().plan(config(), df_task(group), WORKDIR)
    with pytest.raises(InputError, match="not an object"):
        FijiRecipe().plan(config(), df_task({"W": "A1"}, shared=["x"]), WORKDIR)


# --- output prefixes ------------------------------------------------------------------------


def test_each_task_writes_under_its_own_prefix_below_output_file_location() -> None:
    recipe = FijiRecipe()
    prefixes = {
        recipe.plan(config(), df_task({"Plate": "P1", "Well": w}), WORKDIR).output_prefix
        for w in ("A01", "A02", "B01")
    }
    assert prefixes == {"results/P1-A01", "results/P1-A02", "results/P1-B01"}
    # No prefix is a prefix of another's folder, so a listing of one never sees the others.
    assert all(not b.startswith(a + "/") for a in prefixes for b in prefixes)


def test_output_file_location_without_slash_or_empty() -> None:
    recipe = FijiRecipe()
    plan = recipe.plan(config(), df_task({"W": "A1"}, location="out/run1"), WORKDIR)
    assert plan.output_prefix == "out/run1/A1"
    assert recipe.plan(config(), df_task({"W": "A1"}, location=""), WORKDIR).output_prefix == "A1"


@pytest.mark.parametrize("value", ["..", ".", "a/b", "", "x\\y"])
def test_group_values_that_are_not_folder_names_are_refused(value: str) -> None:
    with pytest.raises(InputError) as caught:
        FijiRecipe().plan(config(), df_task({"W": value}), WORKDIR)
    assert caught.value.source == "job file"


def test_unsafe_output_file_location_is_refused() -> None:
    for location in ("/abs", "../up/", "a//b"):
        with pytest.raises(InputError, match="not safe"):
            FijiRecipe().plan(config(), df_task({"W": "A1"}, location=location), WORKDIR)


def test_missing_output_file_location_is_an_error_unless_recipe_output_prefix_is_set() -> None:
    with pytest.raises(InputError) as caught:
        FijiRecipe().plan(config(), df_task({"W": "A1"}, location=None), WORKDIR)
    assert caught.value.field == "output_file_location"
    cfg = config(output_prefix="runs/{channel}/{W}")
    plan = FijiRecipe().plan(cfg, df_task({"W": "A/1"}, {"channel": "D"}, None), WORKDIR)
    # A template may make nested folders on purpose.
    assert plan.output_prefix == "runs/D/A/1"


# --- inputs, script and engines -------------------------------------------------------------


def test_inputs_are_rendered_from_shared_metadata_and_group_into_the_data_folder() -> None:
    cfg = config(inputs=["images/01_POS{Position}_{channel}.TIF"])
    plan = FijiRecipe().plan(cfg, df_task({"Position": "076"}, {"channel": "D"}), WORKDIR)
    assert plan.inputs == [
        Input(key="images/01_POS076_D.TIF", path="data/images/01_POS076_D.TIF"),
        Input(key="scripts/measure.ijm", path="script/measure.ijm", bucket="workspace"),
    ]
    assert option(plan.argv, "--script") == f"{WORKDIR.input_dir}/script/measure.ijm"
    assert "--script-url" not in plan.argv


def test_a_missing_field_or_an_unsafe_input_key_is_refused() -> None:
    with pytest.raises(InputError, match="no field `Position`"):
        FijiRecipe().plan(config(inputs=["images/{Position}.tif"]), df_task({"W": "A1"}), WORKDIR)
    with pytest.raises(InputError, match="not safe"):
        FijiRecipe().plan(config(inputs=["../{W}.tif"]), df_task({"W": "A1"}), WORKDIR)


def test_script_download_url_goes_to_the_helper_with_its_sha256() -> None:
    digest = "AB" * 32
    cfg = config(
        script="",
        tool={"script_download_url": "https://example.org/s/measure.ijm", "script_sha256": digest},
    )
    plan = FijiRecipe().plan(cfg, df_task({"W": "A1"}), WORKDIR)
    assert option(plan.argv, "--script-url") == "https://example.org/s/measure.ijm"
    assert option(plan.argv, "--script-sha256") == digest.lower()
    assert "--script" not in plan.argv
    assert plan.inputs == []


@pytest.mark.parametrize(
    ("tool", "script", "field"),
    [
        ({}, "", "recipe.script"),
        ({"script_download_url": "ftp://example.org/a.ijm"}, "", "tool.script_download_url"),
        ({"script_download_url": "https://example.org/"}, "", "tool.script_download_url"),
        ({}, "../outside.ijm", "recipe.script"),
    ],
)
def test_a_missing_or_bad_script_is_a_config_error(
    tool: dict[str, str], script: str, field: str
) -> None:
    with pytest.raises(InputError) as caught:
        FijiRecipe().plan(config(tool=tool, script=script), df_task({"W": "A1"}), WORKDIR)
    assert (caught.value.source, caught.value.field) == ("config", field)


@pytest.mark.parametrize(
    ("tool", "script", "field"),
    [
        (
            {"script_download_url": "https://example.org/s/stitch.py"},
            "",
            "tool.script_download_url",
        ),
        ({}, "scripts/stitch.groovy", "recipe.script"),
    ],
)
def test_a_fiji_script_is_refused_for_the_imagej_engine(
    tool: dict[str, str], script: str, field: str
) -> None:
    """ImageJ 1 runs macros only: a DF Fiji script passed validation locally and failed on
    every attempt ("Statement cannot begin with '#'") until the task was dead."""
    task = df_task({"W": "A1"})
    with pytest.raises(InputError) as caught:
        FijiRecipe().plan(config(tool=tool, script=script), task, WORKDIR)
    assert (caught.value.source, caught.value.field) == ("config", field)
    assert "ImageJ macro" in caught.value.problem and "recipe.engine" in caught.value.fix
    FijiRecipe().plan(config(tool=tool, script=script, engine="fiji"), task, WORKDIR)
    FijiRecipe().plan(config(backend="aws", tool=tool, script=script), task, WORKDIR)
    FijiRecipe().plan(config(script="scripts/Measure.IJM"), task, WORKDIR)  # a macro: runs


def test_engine_defaults_to_imagej_locally_and_fiji_on_aws() -> None:
    assert engine_for(config()) == "imagej"
    assert engine_for(config(backend="aws")) == "fiji"
    assert engine_for(config(engine="fiji")) == "fiji"
    with pytest.raises(InputError) as caught:
        engine_for(config(engine="cellprofiler"))
    assert caught.value.field == "recipe.engine"


def test_engine_commands() -> None:
    arg = "input='/in', output='/out'"
    assert engine_argv("fiji", executable="", script="/s/m.py", argument=arg) == [
        "ImageJ-linux64",
        "--ij2",
        "--headless",
        "--console",
        "--run",
        "/s/m.py",
        arg,
    ]
    assert engine_argv(
        "imagej", executable="/opt/ij.jar", script="/s/m.ijm", argument=arg, runner="/c/R.java"
    ) == ["xvfb-run", "-a", "java", "-cp", "/opt/ij.jar", "/c/R.java", "/s/m.ijm", arg]
    assert engine_argv("imagej", executable="", script="m", argument="", runner="R")[4] == (
        "/usr/share/java/ij.jar"
    )
    with pytest.raises(ValueError, match="runner"):
        engine_argv("imagej", executable="", script="m", argument="")
    with pytest.raises(ValueError, match="unknown engine"):
        engine_argv("matlab", executable="", script="m", argument="")


def test_plan_passes_engine_executable_and_required_outputs() -> None:
    cfg = config(engine="fiji", executable="/opt/Fiji.app/ImageJ-linux64")
    cfg.check_if_done = CheckIfDoneConfig(expected_number_files=4)
    argv = FijiRecipe().plan(cfg, df_task({"W": "A1"}), WORKDIR).argv
    assert option(argv, "--engine") == "fiji"
    assert option(argv, "--executable") == "/opt/Fiji.app/ImageJ-linux64"
    assert option(argv, "--min-outputs") == "4"
    default = FijiRecipe().plan(config(), df_task({"W": "A1"}), WORKDIR).argv
    assert option(default, "--executable") == "/usr/share/java/ij.jar"
    assert option(default, "--min-outputs") == "1"


def test_plan_is_the_same_at_validation_time() -> None:
    plan = FijiRecipe().plan(config(), df_task({"W": "A1"}), PLACEHOLDER_WORKDIR)
    assert option(plan.argv, "--output-dir") == str(PLACEHOLDER_WORKDIR.output_dir)


def test_task_part_joins_values_in_order() -> None:
    assert task_part({"Well": "A1", "Plate": "Plate_1", "Site": 3}) == "A1-Plate_1-3"
    with pytest.raises(ValueError, match="empty"):
        task_part({})


# --- success detection ----------------------------------------------------------------------


def write_status(workdir: Workdir, **status: Any) -> None:
    workdir.root.mkdir(parents=True, exist_ok=True)
    (workdir.root / STATUS_FILE).write_text(json.dumps(status))


def test_check_success_needs_exit_0_and_an_ok_status(tmp_path: Path) -> None:
    workdir = Workdir(tmp_path / "w")
    recipe = FijiRecipe()
    assert "recorded no outcome" in (recipe.check_success(0, workdir) or "")
    assert "code 1" in (recipe.check_success(1, workdir) or "")
    assert "signal 9" in (recipe.check_success(-9, workdir) or "")
    write_status(workdir, ok=False, reason="the script reported an error: Macro Error in line 3")
    assert recipe.check_success(1, workdir) == (
        "the script reported an error: Macro Error in line 3"
    )
    write_status(workdir, ok=True, reason="")
    assert recipe.check_success(0, workdir) is None
    assert "code 2" in (recipe.check_success(2, workdir) or "")
    (workdir.root / STATUS_FILE).write_text("not json")
    assert recipe.check_success(0, workdir) is not None


# --- the in-task helper, with a stand-in engine ---------------------------------------------

#: A stand-in for Fiji's launcher: the "script" is a JSON file saying what to print, which
#: files to write into the `output` folder of the argument string, and the exit code.
FAKE_ENGINE = """\
import json, pathlib, re, sys
script, argument = sys.argv[-2], sys.argv[-1]
spec = json.loads(pathlib.Path(script).read_text())
output = pathlib.Path(re.search(r"output='([^']*)'", argument).group(1))
output.mkdir(parents=True, exist_ok=True)
for name in spec.get("write", []):
    (output / name).write_text(argument)
(output.parent / "engine-argv.json").write_text(json.dumps(sys.argv[1:]))
print(spec.get("print", "working"))
sys.exit(spec.get("exit", 0))
"""


@pytest.fixture
def fake_engine(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "fake-fiji"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{FAKE_ENGINE}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_helper(
    tmp_path: Path, engine: Path, spec: dict[str, Any] | None, *extra: str, min_outputs: int = 1
) -> tuple[int, dict[str, Any], Path]:
    work = tmp_path / "work"
    (work / "outputs").mkdir(parents=True, exist_ok=True)
    args = ["--engine", "fiji", "--executable", str(engine)]
    if spec is not None:
        script = tmp_path / "spec.json"
        script.write_text(json.dumps(spec))
        args += ["--script", str(script)]
    status = work / "status.json"
    code = fiji_task.main(
        [
            *args,
            *extra,
            "--argument",
            f"input='{work}/inputs', output='{work}/outputs', W='A1'",
            "--output-dir",
            str(work / "outputs"),
            "--status-file",
            str(status),
            "--min-outputs",
            str(min_outputs),
        ]
    )
    return code, json.loads(status.read_text()), work


def test_helper_success_runs_the_fiji_command(tmp_path: Path, fake_engine: Path) -> None:
    code, status, work = run_helper(tmp_path, fake_engine, {"write": ["a.csv", "b.csv"]})
    assert (code, status["ok"], status["outputs"]) == (0, True, 2)
    argv = json.loads((work / "engine-argv.json").read_text())
    assert argv[:4] == ["--ij2", "--headless", "--console", "--run"]
    assert argv[-1] == f"input='{work}/inputs', output='{work}/outputs', W='A1'"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"write": ["a.csv"], "print": "Macro Error in line 3: undefined"}, "Macro Error"),
        ({"write": ["a.csv"], "exit": 1}, "exited with code 1"),
        ({"write": []}, "wrote 0 file(s)"),
    ],
)
def test_helper_failures(
    tmp_path: Path, fake_engine: Path, spec: dict[str, Any], reason: str
) -> None:
    code, status, _ = run_helper(tmp_path, fake_engine, spec)
    assert code == 1
    assert status["ok"] is False
    assert reason in status["reason"]


def test_helper_requires_the_configured_number_of_outputs(
    tmp_path: Path, fake_engine: Path
) -> None:
    code, status, _ = run_helper(tmp_path, fake_engine, {"write": ["a", "b"]}, min_outputs=3)
    assert code == 1 and "fewer than the 3 required" in status["reason"]


def test_helper_reports_an_engine_that_cannot_start(tmp_path: Path) -> None:
    code, status, _ = run_helper(tmp_path, tmp_path / "no-such-fiji", {"write": ["a"]})
    assert code == 127
    assert status["ok"] is False and "cannot start" in status["reason"]


def test_fiji_is_found_where_the_fiji_images_keep_it(
    tmp_path: Path, fake_engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(fiji_task, "FIJI_LOCATIONS", (str(tmp_path / "none"), str(fake_engine)))
    assert fiji_task.resolve_fiji("ImageJ-linux64") == str(fake_engine)
    assert fiji_task.resolve_fiji("/my/Fiji.app/ImageJ-linux64") == "/my/Fiji.app/ImageJ-linux64"
    monkeypatch.setattr(fiji_task, "FIJI_LOCATIONS", ())
    assert fiji_task.resolve_fiji("ImageJ-linux64") == "ImageJ-linux64"


def test_plan_argv_runs_through_the_helper_and_passes_check_success(
    tmp_path: Path, fake_engine: Path
) -> None:
    workdir = Workdir(tmp_path / "task")
    workdir.create()
    cfg = config(engine="fiji", executable=str(fake_engine))
    plan = FijiRecipe().plan(cfg, df_task({"W": "A1"}, {"sigma": 2}), workdir)
    script = workdir.input_dir / "script" / "measure.ijm"  # where the worker stages it
    script.parent.mkdir(parents=True)
    script.write_text(json.dumps({"write": ["result.csv"]}))
    done = subprocess.run(plan.argv, cwd=workdir.root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert FijiRecipe().check_success(done.returncode, workdir) is None
    written = (workdir.output_dir / "result.csv").read_text()
    assert parse_df_arguments(written) == {
        "input": str(workdir.input_dir / "data"),
        "output": str(workdir.output_dir),
        "sigma": "2",
        "W": "A1",
    }


# --- script download (a server on 127.0.0.1 only) ------------------------------------------


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, Path]]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.setenv("DS_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = _Server(root)
    yield server, root
    server.close()


def test_script_is_downloaded_once_verified_and_run(
    tmp_path: Path, fake_engine: Path, served: tuple[_Server, Path]
) -> None:
    server, root = served
    body = json.dumps({"write": ["out.txt"]}).encode()
    (root / "measure.ijm").write_bytes(body)
    url = f"{server.url}/measure.ijm"
    digest = hashlib.sha256(body).hexdigest()
    for _ in range(2):
        code, status, work = run_helper(
            tmp_path, fake_engine, None, "--script-url", url, "--script-sha256", digest
        )
        assert (code, status["ok"]) == (0, True)
    assert server.requests == ["/measure.ijm"]  # the second task used the cached copy
    ran = json.loads((work / "engine-argv.json").read_text())[-2]
    assert Path(ran).name == "measure.ijm"
    assert Path(ran).is_relative_to(tmp_path / "cache")
    assert Path(ran).read_bytes() == body


def test_a_script_whose_sha256_differs_is_not_run_nor_cached(
    tmp_path: Path, fake_engine: Path, served: tuple[_Server, Path]
) -> None:
    server, root = served
    (root / "measure.ijm").write_text(json.dumps({"write": ["out.txt"]}))
    url = f"{server.url}/measure.ijm"
    code, status, work = run_helper(
        tmp_path, fake_engine, None, "--script-url", url, "--script-sha256", "0" * 64
    )
    assert code == 1 and status["ok"] is False
    assert "sha256" in status["reason"] and "0" * 64 in status["reason"]
    assert not (work / "engine-argv.json").exists()  # the engine never ran
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached == []
    with pytest.raises(fiji_task.ScriptError, match="sha256"):
        fiji_task.fetch_script(url, "0" * 64, cache=tmp_path / "cache")


def test_a_cached_copy_that_no_longer_matches_is_fetched_again(
    tmp_path: Path, served: tuple[_Server, Path]
) -> None:
    server, root = served
    url = f"{server.url}/m.ijm"
    (root / "m.ijm").write_text("old")
    first = fiji_task.fetch_script(url, cache=tmp_path / "c")
    (root / "m.ijm").write_text("new")
    assert fiji_task.fetch_script(url, cache=tmp_path / "c").read_text() == "old"
    digest = hashlib.sha256(b"new").hexdigest()
    again = fiji_task.fetch_script(url, digest, cache=tmp_path / "c")
    assert again == first and again.read_text() == "new"
    assert len(server.requests) == 2


def test_a_failed_download_fails_the_task_with_the_http_status(
    tmp_path: Path, fake_engine: Path, served: tuple[_Server, Path]
) -> None:
    server, _ = served
    code, status, _ = run_helper(
        tmp_path, fake_engine, None, "--script-url", f"{server.url}/missing.ijm"
    )
    assert code == 1 and "HTTP 404" in status["reason"]


def test_cache_root_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fiji_task.cache_root() == tmp_path / "xdg" / "distributed-something"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fiji_task.cache_root() == Path("~/.cache/distributed-something").expanduser()
