"""Every version the family ever shipped of its config.py, job and fleet files, unchanged.

tests/family_history/ holds each distinct version of them in the git history of
Distributed-CellProfiler, -Fiji, -OMEZarrCreator and -Something (118 files, 2016-2024;
collect.py wrote them). A user may bring any of them: a lab's config.py is often years old.
Each is tried as a user would, in a project folder with only the values a user fills in
filled in (buckets, the Fiji script's URL; the fleet file's account, subnet and group):

- a config.py with the job and fleet files its repository shipped beside it then:
  `ds validate` (its own backend, AWS), `ds validate --backend local`, and
  `ds config convert` — whose ds.toml must validate exactly as the config.py does, on AWS
  and locally, and plan its tasks' commands word for word as it does (`ds run --dry-run`);
- each job file with its repository's config.py: `ds validate` on either backend;
- each fleet file, as shipped (its placeholders are refused) and filled in (accepted).

What each command says is held to expected.json: a file that works keeps working (the same
recipe, format and task count), and a file refused keeps its one clear line naming the file,
the field and the fix. Whatever the outcome, nothing prints a traceback. After a deliberate
change of behaviour, ``DS_FAMILY_HISTORY_WRITE=1 pytest tests/test_family_history.py``
rewrites expected.json; review its diff before committing it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from distributed_something.cli.main import main

HERE = Path(__file__).resolve().parent / "family_history"
INDEX: list[dict[str, str]] = json.loads((HERE / "index.json").read_text())
EXPECTED_FILE = HERE / "expected.json"
WRITE = os.environ.get("DS_FAMILY_HISTORY_WRITE") == "1"

# What a user fills in, whatever the version: every bucket, the Fiji script's URL.
FILL_CONFIG = {
    "AWS_BUCKET": "'lab-bucket'",
    "SOURCE_BUCKET": "'lab-bucket'",
    "WORKSPACE_BUCKET": "'lab-bucket'",
    "DESTINATION_BUCKET": "'lab-bucket'",
    "SCRIPT_DOWNLOAD_URL": "'https://example.org/scripts/stitch.py'",
}
# The fleet files' placeholders, across their versions, and what a user puts there.
FILL_FLEET = (
    (
        "subnet-WWWWWWWW, subnet-XXXXXXXX, subnet-YYYYYYYY, subnet-ZZZZZZZZ",
        "subnet-0a1b2c3d, subnet-1a2b3c4d",
    ),
    ("subnet-WWWWWWWW", "subnet-0a1b2c3d"),
    ("subnet-YYYYYYYY", "subnet-0a1b2c3d"),
    ("sg-ZZZZZZZZZ", "sg-0a1b2c3d4e5f60718"),
    ("your_key_file_name", "lab-key"),
    ("your-key-file", "lab-key"),
)


def fill_config(text: str) -> str:
    for name, value in FILL_CONFIG.items():
        text = re.sub(
            rf"^({name}\s*=\s*)('[^']*'|\"[^\"]*\")",
            lambda m, v=value: m.group(1) + v,
            text,
            flags=re.M,
        )
    return text


def fill_fleet(text: str) -> str:
    text = re.sub(r"X{12,13}", "123456789012", text)  # the account id in the role ARNs
    for placeholder, value in FILL_FLEET:
        text = text.replace(placeholder, value)
    return text


@dataclass(frozen=True)
class Version:
    repo: str
    path: str
    commit: str
    date: str
    file: str

    @property
    def name(self) -> str:
        return self.file.split("/", 1)[1].replace("files_", "")

    @property
    def text(self) -> str:
        return (HERE / self.file).read_text()


VERSIONS = [Version(**row) for row in INDEX]


def _parses(version: Version) -> bool:
    try:
        json.loads(version.text)
    except json.JSONDecodeError:
        return False
    return True


def _latest(repo: str, wanted: str, date: str, folder: str = "") -> Version | None:
    """The version of ``repo``'s file the user had at ``date``: the newest at or before it.
    Versions that are not JSON at all (DCP's example job lacked a comma from 2019 to 2021;
    the job test shows their refusal) are passed over: a user had mended theirs."""
    found = [
        v
        for v in VERSIONS
        if v.repo == repo
        and v.date <= date
        and wanted in v.path
        and "us-west" not in v.path
        and v.path.startswith(folder)
        and _parses(v)
    ]
    return max(found, key=lambda v: v.date) if found else None


def config_cases() -> list[tuple[Version, Version | None, Version | None]]:
    """Each config.py version, with the job and fleet files shipped beside it then."""
    cases = []
    for version in VERSIONS:
        if not version.path.endswith("config.py"):
            continue
        folder = version.path[: -len("config.py")]
        job = _latest(version.repo, "Job", version.date, folder + "files/")
        job = job or _latest(version.repo, "Job", version.date, "files/")
        fleet = _latest(version.repo, "Fleet", version.date)
        cases.append((version, job, fleet))
    return cases


def job_cases() -> list[tuple[Version, Version]]:
    """Each job file version, with its repository's (or example project's) newest config.py."""
    cases = []
    for version in VERSIONS:
        if "Job" not in version.path:
            continue
        folder = version.path.split("files/")[0]
        configs = [v for v in VERSIONS if v.repo == version.repo and v.path == folder + "config.py"]
        cases.append((version, max(configs, key=lambda v: v.date)))
    return cases


FLEETS = [v for v in VERSIONS if "Fleet" in v.path]
DCP_CONFIG = max(
    (v for v in VERSIONS if v.repo == "Distributed-CellProfiler" and v.path == "config.py"),
    key=lambda v: v.date,
)


def _project(
    folder: Path, config: Version, job: Version | None, fleet: Version | None, fill: bool = True
) -> Path:
    (folder / "files").mkdir(parents=True)
    (folder / "config.py").write_text(fill_config(config.text))
    if job is not None:
        (folder / "files" / "exampleJob.json").write_text(job.text)
    if fleet is not None:
        text = fleet.text
        (folder / "files" / "exampleFleet.json").write_text(fill_fleet(text) if fill else text)
    return folder


def _run(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`ds ARGS` in ``folder``, in this process: its exit code, and all it said."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
    finally:
        os.chdir(before)
    out, err = capsys.readouterr()
    said = out + err
    assert "Traceback" not in said, said
    assert isinstance(exited.value.code, int)
    return exited.value.code, said


def _ds(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`ds ARGS` in ``folder``, in this process; what it said, as 'rc=N: <last line>'."""
    code, said = _run(folder, capsys, *args)
    lines = [line for line in said.splitlines() if line.strip()]
    if code == 0:
        last = next((line for line in lines if line.startswith(("valid:", "wrote"))), lines[-1])
    else:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, said  # one clear error
        assert "Fix:" in errors[0] or "fix" in errors[0].lower(), errors[0]
        last = errors[0]
    return f"rc={code}: " + last.replace(str(folder), "<project>")


def _expected() -> dict[str, dict[str, str]]:
    return json.loads(EXPECTED_FILE.read_text()) if EXPECTED_FILE.exists() else {}


_written: dict[str, dict[str, str]] = {}


def _check(case: str, said: dict[str, str]) -> None:
    if WRITE:
        _written[case] = said
        merged = {**_expected(), **_written}
        EXPECTED_FILE.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
        return
    assert said == _expected().get(case), case


@pytest.fixture(autouse=True)
def _no_backend_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)


@pytest.mark.parametrize(
    ("config", "job", "fleet"),
    config_cases(),
    ids=lambda v: v.name if isinstance(v, Version) else "none",
)
def test_each_config_py_version_validates_and_converts_to_the_same_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: Version,
    job: Version | None,
    fleet: Version | None,
) -> None:
    folder = _project(tmp_path / "p", config, job, fleet)
    job_args = ["--job", "files/exampleJob.json"] if job else []
    fleet_args = ["--fleet", "files/exampleFleet.json"] if fleet else []
    said = {
        "aws": _ds(folder, capsys, "validate", *job_args, *fleet_args),
        "local": _ds(folder, capsys, "validate", "--backend", "local", *job_args),
        "convert": _ds(folder, capsys, "config", "convert", "config.py", "-o", "converted.toml"),
    }
    # The ds.toml runs what the config.py runs, on AWS and locally: the same answer, naming
    # its own file (an error about the config itself names its ds.toml field instead).
    converted = {
        "aws": _ds(
            folder, capsys, "validate", "--config", "converted.toml", *job_args, *fleet_args
        ),
        "local": _ds(
            folder,
            capsys,
            "validate",
            "--backend",
            "local",
            "--config",
            "converted.toml",
            *job_args,
        ),
    }
    for backend, answer in converted.items():
        if "<project>/config.py" in said[backend] and said[backend].startswith("rc=2"):
            assert answer.startswith("rc=2: error: <project>/converted.toml: "), answer
        else:
            assert answer == said[backend].replace(
                "<project>/config.py", "<project>/converted.toml"
            )
    if said["local"].startswith("rc=0"):
        # And the commands its tasks would run are the same, word for word.
        dry = ["run", "--backend", "local", "--dry-run", "--show", "3", *job_args]
        code, planned = _run(folder, capsys, *dry)
        assert code == 0 and "dry run: " in planned, planned
        assert _run(folder, capsys, *dry, "--config", "converted.toml") == (code, planned)
    _check(f"config {config.repo} {config.name}", said)


@pytest.mark.parametrize(("job", "config"), job_cases(), ids=lambda v: v.name)
def test_each_job_file_version_validates_on_either_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], job: Version, config: Version
) -> None:
    folder = _project(tmp_path / "p", config, job, None)
    said = {
        "aws": _ds(folder, capsys, "validate", "--job", "files/exampleJob.json"),
        "local": _ds(
            folder, capsys, "validate", "--backend", "local", "--job", "files/exampleJob.json"
        ),
    }
    _check(f"job {job.repo} {job.name}", said)


@pytest.mark.parametrize("fleet", FLEETS, ids=lambda v: f"{v.repo}-{v.name}")
def test_each_fleet_file_version_is_refused_as_shipped_and_accepted_filled_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: Version
) -> None:
    shipped = _project(tmp_path / "shipped", DCP_CONFIG, None, fleet, fill=False)
    filled = _project(tmp_path / "filled", DCP_CONFIG, None, fleet)
    said = {
        "shipped": _ds(shipped, capsys, "validate", "--fleet", "files/exampleFleet.json"),
        "filled": _ds(filled, capsys, "validate", "--fleet", "files/exampleFleet.json"),
    }
    assert said["shipped"].startswith("rc=2: error: files/exampleFleet.json"), said
    assert said["filled"].startswith("rc=0: valid:"), said
    _check(f"fleet {fleet.repo} {fleet.name}", said)
