"""Family projects as users have them, unchanged: the family's own config.py templates (only
the values a user fills in are filled in), its job files and its fleet file.

- A config.py names no RECIPE: on the local backend the recipe comes from the job file's
  format or the image name; when nothing decides, the error names RECIPE, not recipe.name.
- `--backend local|aws` (and DS_BACKEND) runs a config elsewhere without editing it; an
  unchanged Distributed-CellProfiler project validates and runs end to end with real
  CellProfiler on the ExampleFly data.
- CHECK_IF_DONE_BOOL keeps the family's meaning and default (off when absent); with
  EXPECTED_NUMBER_FILES the count decides, done markers do not override it.
- `ds validate` warns about a misspelt variable and rejects the fleet template's placeholders.

The templates themselves are in tests/family_templates.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import click
import pytest

from conftest import SHARED_DATA
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.cli.main import cli, main
from distributed_something.config.convert import convert_file
from distributed_something.config.legacy import legacy_error, recipe_from_image
from distributed_something.config.loader import load_config
from distributed_something.errors import InputError
from distributed_something.jobs.parse import load_job_file
from distributed_something.recipes.base import PLACEHOLDER_WORKDIR
from distributed_something.recipes.cellprofiler import find_executable
from distributed_something.recipes.registry import get_recipe
from distributed_something.records import DoneMarker, RunRecords
from distributed_something.usecases.project import family_recipe, open_project
from distributed_something.usecases.skipdone import finished_tasks
from distributed_something.worker.policy import skip_reason
from family_templates import (
    DCP_JOB,
    DF_JOB,
    DOZC_JOB,
    FAMILIES,
    check_dcp_example_outputs,
    project,
    stage_dcp_example,
)

Ds = Callable[..., CompletedProcess[str]]


def error_line(result: CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def neutral_image(text: str) -> str:
    """The config with an image whose name says nothing about its tool."""
    return re.sub(r"^DOCKERHUB_TAG = .*$", "DOCKERHUB_TAG = 'lab/worker:3'", text, flags=re.M)


# --- the recipe, from the files --------------------------------------------------------


@pytest.mark.parametrize("family", ["dcp", "df", "dozc"])
def test_a_template_runs_on_aws_with_its_image_and_locally_with_the_implied_recipe(
    tmp_path: Path, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    config_py = project(tmp_path, family) / "config.py"

    on_aws = open_project(config_py)
    assert on_aws.config.backend == "aws"
    assert on_aws.config.recipe.name is None  # the family's image runs its own worker there
    local = open_project(config_py, backend="local")
    assert local.config.backend == "local"
    assert local.config.recipe.name == FAMILIES[family][3]  # from the image's name
    assert get_recipe(local.config.recipe.name, source=str(config_py)).name == FAMILIES[family][3]


@pytest.mark.parametrize("family", ["dcp", "df", "dozc"])
def test_the_job_files_format_names_the_recipe(
    tmp_path: Path, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, family, edit=neutral_image)
    job = folder / "elsewhere.json"
    (folder / "files" / "exampleJob.json").unlink()
    job.write_text(json.dumps(FAMILIES[family][2]))

    opened = open_project(folder / "config.py", backend="local", job=job)

    assert opened.config.recipe.name == FAMILIES[family][3]
    assert load_job_file(job).format == family


def test_without_a_job_at_hand_the_folders_job_file_decides(tmp_path: Path) -> None:
    folder = project(tmp_path, "dcp", edit=neutral_image)
    # The fleet file beside it, and the monitor file a run writes, are not job files.
    (folder / "files" / "DistributedCPSpotFleetRequestId.json").write_text("{}")
    assert family_recipe(folder, "lab/worker:3", None) == "cellprofiler"
    # Job files of two families: nothing decides.
    (folder / "files" / "fijiJob.json").write_text(json.dumps(DF_JOB))
    assert family_recipe(folder, "lab/worker:3", None) is None
    # The image decides before the folder's files; a given job before the image.
    assert family_recipe(folder, "me/distributed-omezarr:1", None) == "omezarr"
    job = folder / "files" / "exampleJob.json"
    assert family_recipe(folder, "cellprofiler/distributed-fiji:latest", job) == "cellprofiler"


def test_workers_take_the_recipe_from_the_job_submitted_to_the_run(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job file lies outside the project and the image says nothing: what `ds worker`
    # (started by start-cluster, with no job at hand) reads is the run's own job file.
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path / "p", "dcp", edit=neutral_image)
    (folder / "files" / "exampleJob.json").unlink()
    job = tmp_path / "jobs" / "plate1.json"
    job.parent.mkdir()
    job.write_text(json.dumps(DCP_JOB))
    assert open_project(folder / "config.py", backend="local").config.recipe.name is None

    assert ds("--backend", "local", "setup", cwd=folder).returncode == 0
    submitted = ds("--backend", "local", "submit", str(job), cwd=folder)
    assert submitted.returncode == 0, submitted.stderr

    assert open_project(folder / "config.py", backend="local").config.recipe.name == "cellprofiler"
    assert family_recipe(folder, "lab/worker:3", None, [job]) == "cellprofiler"
    assert ds("--backend", "local", "cleanup", cwd=folder).returncode == 0


@pytest.mark.parametrize(
    ("image", "recipe"),
    [
        ("cellprofiler/distributed-cellprofiler:2.2.0_4.2.8", "cellprofiler"),
        ("cellprofiler/distributed-fiji:latest", "fiji"),  # the organisation does not count
        ("erinweisbart/distributed-bioformats2raw:0.0.19", "omezarr"),
        ("ghcr.io/lab/ome-zarr-converter@sha256:abc", "omezarr"),
        ("lab/cellprofiler-and-fiji:1", None),  # ambiguous
        ("lab/worker:3", None),
        ("", None),
    ],
)
def test_recipe_from_image(image: str, recipe: str | None) -> None:
    assert recipe_from_image(image) == recipe


def test_when_nothing_decides_the_error_names_recipe_in_config_py(tmp_path: Path, ds: Ds) -> None:
    folder = project(tmp_path, "dcp", edit=neutral_image)
    (folder / "files" / "exampleJob.json").unlink()

    line = error_line(ds("validate", "--backend", "local", cwd=folder))

    assert f"{folder / 'config.py'}: RECIPE: is not set" in line
    assert "Fix: add RECIPE = 'cellprofiler' to config.py" in line
    assert "recipe.name" not in line


def test_errors_about_legacy_fields_name_the_legacy_variable(tmp_path: Path, ds: Ds) -> None:
    folder = project(tmp_path, "dcp", edit=lambda text: text + "RECIPE = 'cellprofilr'\n")
    line = error_line(ds("validate", "--backend", "local", cwd=folder))
    assert "config.py: RECIPE: 'cellprofilr' is not a known recipe" in line
    assert "Fix: set RECIPE to one of" in line and "recipe.name" not in line

    toml = InputError("ds.toml", "recipe.name", "is not set", 'set recipe.name = "command"')
    assert legacy_error(toml) is toml  # ds.toml users keep ds.toml's names
    fiji = InputError(
        "/p/config.py", "recipe.script", "is empty and tool.script_download_url is not set", "x"
    )
    assert str(legacy_error(fiji)) == (
        "/p/config.py: recipe.script: is empty and SCRIPT_DOWNLOAD_URL is not set. Fix: x"
    )


def test_a_job_file_error_names_the_config_py_variables_in_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DOZC's additional_flags of bioformats2raw, run by the builtin converter: the error is
    # about the job file (its field stays the job's), but its fix names a config field,
    # which a config.py user knows by its variable.
    monkeypatch.delenv("DS_BACKEND", raising=False)
    job = {**DOZC_JOB, "additional_flags": "--max_workers 4"}
    folder = project(tmp_path, "dozc", job=job)
    monkeypatch.chdir(folder)
    args = ["validate", "--backend", "local", "--job", "files/exampleJob.json"]

    def said(*config: str) -> str:
        with pytest.raises(SystemExit) as exited:
            main([*args, *config])
        assert exited.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: files/exampleJob.json: "), lines
        return lines[0]

    line = said()
    assert line.startswith("error: files/exampleJob.json: additional_flags:"), line
    assert 'set RECIPE_ENGINE = "bioformats2raw"' in line and "recipe.engine" not in line
    # The same project as a ds.toml keeps ds.toml's names, also when this process has just
    # read a config.py.
    convert_file(folder / "config.py", folder / "ds.toml")
    line = said("--config", "ds.toml")
    assert 'set recipe.engine = "bioformats2raw"' in line and "RECIPE_ENGINE" not in line


# --- the backend switch ----------------------------------------------------------------


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_that_reads_a_config_takes_backend() -> None:
    from distributed_something.cli import commands, jobs  # noqa: F401 - registers the commands

    def options(command: click.Command) -> set[str]:
        return {opt for p in command.params for opt in getattr(p, "opts", [])}

    assert "--backend" in options(cli)
    reading = [(n, c) for n, c in _commands(cli) if "--config" in options(c)]
    assert {"run", "validate", "worker", "status", "setup", "submit", "monitor"} <= {
        n for n, _ in reading
    }
    assert [n for n, c in reading if "--backend" not in options(c)] == []


def test_unchanged_dcp_project_validates_on_either_backend(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, "dcp")
    before = (folder / "config.py").read_bytes()
    job = ("--job", "files/exampleJob.json", "--json")

    def summary(*args: str) -> dict[str, Any]:
        result = ds(*args, cwd=folder)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    aws = summary("validate", *job)
    assert (aws["backend"], aws["recipe"], aws["format"]) == (
        "aws",
        "(the image's own worker)",
        "dcp",
    )
    local = summary("validate", "--backend", "local", *job)
    assert (local["backend"], local["recipe"], local["tasks"]) == ("local", "cellprofiler", 3)
    assert summary("--backend", "local", "validate", *job)["backend"] == "local"
    monkeypatch.setenv("DS_BACKEND", "local")
    assert summary("validate", *job)["backend"] == "local"
    monkeypatch.setenv("DS_BACKEND", "aws")
    assert summary("validate", "--backend", "local", *job)["backend"] == "local"  # flag wins
    monkeypatch.setenv("DS_BACKEND", "cloud")
    assert "DS_BACKEND: 'cloud' is not a backend" in error_line(ds("validate", cwd=folder))
    assert (folder / "config.py").read_bytes() == before
    assert not (folder / ".ds").exists()  # validate creates nothing


def test_on_aws_without_recipe_validate_says_the_family_worker_needs_what_ds_never_gives(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, "dcp")
    aws = ds("validate", "--job", "files/exampleJob.json", cwd=folder)
    assert aws.returncode == 0, aws.stderr
    assert "s3fs" in aws.stderr and "ds image build --base cellprofiler/" in aws.stderr
    assert "RECIPE = 'cellprofiler'" in aws.stderr
    local = ds("validate", "--backend", "local", "--job", "files/exampleJob.json", cwd=folder)
    assert local.returncode == 0 and "s3fs" not in local.stderr


def test_the_switch_is_undone_after_an_in_process_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, "dcp")
    monkeypatch.chdir(folder)
    with pytest.raises(SystemExit) as exited:
        main(["validate", "--backend", "local", "--job", "files/exampleJob.json"])
    assert exited.value.code == 0
    assert "DS_BACKEND" not in os.environ


# --- check-if-done, as the family meant it ---------------------------------------------


def _outputs_and_markers(
    folder: Path, *, files: int, check: str | None, expected: str = "7"
) -> tuple[dict[str, str], list[str]]:
    """Submit-time and worker-time decisions for the DCP example job whose every task has a
    done marker and ``files`` output files."""

    def edit(text: str) -> str:
        text = re.sub(
            r"^EXPECTED_NUMBER_FILES = \S+", f"EXPECTED_NUMBER_FILES = {expected}", text, flags=re.M
        )
        if check is None:
            return re.sub(r"^CHECK_IF_DONE_BOOL = .*\n", "", text, flags=re.M)
        return re.sub(
            r"^CHECK_IF_DONE_BOOL = \S+", f"CHECK_IF_DONE_BOOL = {check}", text, flags=re.M
        )

    project(folder, "dcp", edit=edit)
    opened = open_project(folder / "config.py", backend="local")
    config = opened.config
    job = load_job_file(folder / "files" / "exampleJob.json")
    recipe = get_recipe(config.recipe.name, source="config.py")
    storage = FolderStorage(folder / "bucket")
    records = RunRecords(storage, config.app_name, "run1")
    for task in job.tasks:
        records.write_done(DoneMarker(task.id, 1, 1.0, [], 0.0, 1.0, "w", "x"))
        plan = recipe.plan(config, task, PLACEHOLDER_WORKDIR)
        for number in range(files):
            storage.put_bytes(f"{plan.output_prefix}/table{number}.csv", b"data")
    at_submit = finished_tasks(config, recipe, job.tasks, records, lambda _name: storage)
    by_worker = []
    for task in job.tasks:
        plan = recipe.plan(config, task, PLACEHOLDER_WORKDIR)
        prefix = plan.output_prefix.rstrip("/") + "/"
        reason = skip_reason(
            config.check_if_done,
            has_marker=lambda task=task: records.read_done(task.id) is not None,
            outputs=lambda prefix=prefix: storage.list(prefix),
            where=prefix,
        )
        if reason is not None:
            by_worker.append(reason)
    return at_submit, by_worker


def test_with_expected_number_files_the_count_decides_not_the_done_marker(tmp_path: Path) -> None:
    # 4 files per output folder and EXPECTED_NUMBER_FILES = 7: DCP runs them again.
    at_submit, by_worker = _outputs_and_markers(tmp_path / "four", files=4, check="'True'")
    assert at_submit == {} and by_worker == []
    # 7 files: done, as DCP's worker decides it.
    at_submit, by_worker = _outputs_and_markers(tmp_path / "seven", files=7, check="'True'")
    assert len(at_submit) == 3 and len(by_worker) == 3
    assert all("meet the check-if-done rule" in reason for reason in by_worker)


def test_without_check_if_done_bool_nothing_is_skipped(tmp_path: Path) -> None:
    config = open_project(project(tmp_path / "p", "dcp") / "config.py", backend="local").config
    assert config.check_if_done.enabled is False  # the template says 'False'
    for family in ("df", "dozc"):
        assert (
            load_config(project(tmp_path / family, family) / "config.py").check_if_done.enabled
            is False
        )
    # Absent, with done markers and enough outputs: the family would run them all.
    _, by_worker = _outputs_and_markers(tmp_path / "absent", files=7, check=None)
    assert by_worker == []


# --- ds validate: a misspelt variable, the fleet template's placeholders ------------------


def test_validate_warns_about_a_misspelt_variable(tmp_path: Path, ds: Ds) -> None:
    folder = project(
        tmp_path,
        "dcp",
        edit=lambda text: text.replace("SQS_MESSAGE_VISIBILITY = ", "SQS_MESSAGE_VISIBILTY = "),
    )
    result = ds("validate", "--backend", "local", cwd=folder)

    assert result.returncode == 0, result.stderr  # a warning, not an error
    warnings = [line for line in result.stderr.splitlines() if "did you mean" in line]
    assert warnings == [
        f"note: {folder / 'config.py'}: SQS_MESSAGE_VISIBILTY: did you mean "
        "SQS_MESSAGE_VISIBILITY? (as written it only sets an environment variable)"
    ]


def test_validate_rejects_the_fleet_templates_placeholders(tmp_path: Path, ds: Ds) -> None:
    folder = project(tmp_path, "dcp")
    fleet_path = folder / "files" / "exampleFleet.json"
    args = ("validate", "--fleet", "files/exampleFleet.json")
    fleet = json.loads(fleet_path.read_text())
    # The ARNs a user fills in; the network ids are left as the template has them.
    fleet["IamFleetRole"] = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"
    spec = fleet["LaunchSpecifications"][0]
    spec["IamInstanceProfile"]["Arn"] = "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"
    fleet_path.write_text(json.dumps(fleet))

    line = error_line(ds(*args, cwd=folder))
    assert line.startswith(
        "error: files/exampleFleet.json: LaunchSpecifications[0].NetworkInterfaces[0].SubnetId: "
        '"subnet-WWWWWWWW" is a placeholder, not a subnet id (and 2 more placeholder(s): '
        "LaunchSpecifications[0].NetworkInterfaces[0].Groups[0], "
        "LaunchSpecifications[0].KeyName). Fix: set it to the id of a subnet"
    )
    spec["NetworkInterfaces"][0]["SubnetId"] = "subnet-0a1b2c3d"
    fleet_path.write_text(json.dumps(fleet))
    line = error_line(ds(*args, cwd=folder))
    assert 'NetworkInterfaces[0].Groups[0]: "sg-ZZZZZZZZZ" is a placeholder' in line
    spec["NetworkInterfaces"][0]["Groups"] = ["sg-0a1b2c3d4e5f60718"]
    fleet_path.write_text(json.dumps(fleet))
    # KeyName "your_key_file_name": SSH_KEY_NAME does not replace it (run.py never read it).
    line = error_line(ds(*args, cwd=folder))
    assert 'LaunchSpecifications[0].KeyName: "your_key_file_name" is a placeholder' in line
    spec["KeyName"] = "lab-key"
    fleet_path.write_text(json.dumps(fleet))
    assert ds(*args, cwd=folder).returncode == 0


# --- end to end: an unchanged DCP project, run here ------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(find_executable()) is None, reason="CellProfiler is not installed (make examples)"
)
@pytest.mark.skipif(
    not (SHARED_DATA / "examplefly" / "workspace" / "ExampleFly.cppipe").is_file(),
    reason="no shared data: the ExampleFly data is not in ../shared/data",
)
def test_ds_run_backend_local_runs_an_unchanged_dcp_project(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    job = {**DCP_JOB, "groups": DCP_JOB["groups"][:1]}  # one position keeps it under a minute
    folder = project(tmp_path / "DistributedCP", "dcp", job=job)
    before = (folder / "config.py").read_bytes()
    # The user's bucket contents, where the local backend keeps the config's buckets.
    buckets = folder / ".ds" / "DistributedCP" / "buckets"
    stage_dcp_example(buckets, SHARED_DATA / "examplefly")

    result = ds(
        "run", "--backend", "local", "--job", "files/exampleJob.json", "--json",
        "--interval", "0.5", cwd=folder, timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 1 and report["counts"]["dead"] == 0
    (task,) = report["tasks"]
    check_dcp_example_outputs(task, buckets)
    assert (folder / "config.py").read_bytes() == before  # nothing was edited


# --- ds validate: a DCP job's groups against its LoadData CSV -------------------------------

LOAD_DATA = (
    "FileName_DNA,PathName_DNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
    "A01_s1.tif,/home/ubuntu/bucket/images/Plate1,Plate1,A01,1\n"
    "A01_s2.tif,/home/ubuntu/bucket/images/Plate1,Plate1,A01,2\n"
    "A02_s1.tif,/home/ubuntu/bucket/images/Plate1,Plate1,A02,1\n"
)
PLATE_JOB: dict[str, Any] = {
    **DCP_JOB,
    "pipeline": "workspace/analysis.cppipe",
    "data_file": "workspace/load_data.csv",
    "output_structure": "Metadata_Plate-Metadata_Well",
    "groups": [
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01"},
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=B07"},  # no such well
        {"Metadata": {"Metadata_Plate": "Plate1", "Metadata_Well": "A02"}},
        # Site is a column of numbers: CellProfiler reads 01 as 1, which is a row.
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01,Metadata_Site=01"},
    ],
}
NO_ROW = (
    'files/exampleJob.json: groups[1]: the group "Metadata_Plate=Plate1,Metadata_Well=B07" (task '
)


def test_validate_finds_a_dcp_group_that_matches_no_row_of_the_load_data_csv(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, "dcp", job=PLATE_JOB)
    workspace = folder / ".ds" / "DistributedCP" / "buckets" / "lab-workspace" / "workspace"
    workspace.mkdir(parents=True)
    (workspace / "analysis.cppipe").write_text(
        "CellProfiler Pipeline: http://www.cellprofiler.org\n"
    )
    (workspace / "load_data.csv").write_text(LOAD_DATA)
    args = ("validate", "--backend", "local", "--job", "files/exampleJob.json")

    line = error_line(ds(*args, cwd=folder))

    assert line.startswith(f"error: {NO_ROW}"), line
    assert (
        ") matches no row of the data_file 'workspace/load_data.csv' (read from "
        f"{workspace / 'load_data.csv'}), so CellProfiler would have nothing to run. "
        "Fix: correct the group's Metadata"
    ) in line
    # With every input folder there, validate opens local storage itself: the same finding.
    (folder / ".ds" / "DistributedCP" / "buckets" / "lab-images").mkdir()
    assert error_line(ds(*args, cwd=folder)) == line
    # The row added to the data file: valid (and 01 matched the Site 1 rows all along).
    (workspace / "load_data.csv").write_text(
        LOAD_DATA + "B07_s1.tif,/home/ubuntu/bucket/images/Plate1,Plate1,B07,1\n"
    )
    assert ds(*args, cwd=folder).returncode == 0
    # A key that is no column of the data file: one finding, naming the columns there are.
    groups = [{"Metadata": "Metadata_Plate=Plate1,Metadata_Position=2"}] * 1
    job = {**PLATE_JOB, "output_structure": "", "groups": groups}
    (folder / "files" / "exampleJob.json").write_text(json.dumps(job))
    line = error_line(ds(*args, cwd=folder))
    assert "files/exampleJob.json: groups[0]: the group" in line
    assert "names Metadata_Position, which is not a column of the data_file" in line
    assert "Metadata_Plate, Metadata_Well, Metadata_Site" in line


def test_on_aws_the_groups_are_checked_only_against_a_copy_in_the_project_folder(
    tmp_path: Path, ds: Ds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)
    folder = project(tmp_path, "dcp", job=PLATE_JOB)
    args = ("validate", "--job", "files/exampleJob.json")

    unread = ds(*args, cwd=folder)  # the CSV is in S3: validate uses no credentials

    assert unread.returncode == 0, unread.stderr
    assert (
        "files/exampleJob.json: the groups' Metadata were not checked against the data_file "
        "'workspace/load_data.csv': it is in s3://lab-workspace/workspace/load_data.csv"
    ) in unread.stderr
    (folder / "load_data.csv").write_text(LOAD_DATA)
    checked = ds(*args, cwd=folder)
    assert checked.returncode == 2, checked.stderr
    assert f"error: {NO_ROW}" in checked.stderr
    assert f"(read from {folder / 'load_data.csv'})" in checked.stderr
    assert "not checked against the data_file" not in checked.stderr


@pytest.mark.parametrize(
    ("image", "download", "said"),
    [
        # DCP's worker mounts the bucket with s3fs only with DOWNLOAD_FILES = 'False'.
        ("cellprofiler/distributed-cellprofiler:2.2.0_4.2.8", False, True),
        ("cellprofiler/distributed-cellprofiler:2.2.0_4.2.8", True, False),
        # DF's always mounts; DOZC's never does.
        ("cellprofiler/distributed-fiji:latest", True, True),
        ("cellprofiler/distributed-omezarrcreator:latest", False, False),
    ],
)
def test_the_family_worker_note_is_said_where_that_worker_mounts_the_bucket(
    image: str, download: bool, said: bool
) -> None:
    from distributed_something.backends.aws.image_check import family_worker_note
    from distributed_something.config.model import Config

    config = Config.model_validate(
        {"app_name": "F", "backend": "aws", "image": image, "tool": {"download_files": download}}
    )
    note = family_worker_note(config)
    assert (note is not None) == said, note
    if note is not None and "distributed-cellprofiler" in image:
        assert "set DOWNLOAD_FILES = 'True'" in note and "privileged" in note
