"""Hardening (issue 17): outputs that point elsewhere, secret-looking values, and parsers that
could be made to blow up.

- Output collection never follows a symbolic link: a task whose output folder holds a link
  (to a file, to a folder, dangling, or the folder itself replaced by one) fails at once,
  without retry, naming the link, and nothing is uploaded.
- An output the storage cannot take (a backslash, invalid UTF-8, the storages' temporary
  prefix, a name over 255 bytes) fails the attempt at once, without retry, naming the file,
  before any upload — instead of three successful runs and a dead letter.
- A credential (by its shape: access key id, secret access key, session token, presigned
  URL) is never written into a task definition: an ``env`` entry holding one is dropped with
  a warning, any other field (a presigned script URL) is refused with the fix — the rest of
  the config is never dropped.
- The legacy config.py evaluator and the JSON readers bound what they build; the memory
  cases run in a subprocess with an address-space limit and a timeout, so a regression fails
  instead of exhausting the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import write_project
from distributed_something.backends import Backend
from distributed_something.backends.aws.taskenv import task_environment, without_credentials
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import TEMP_PREFIX, FolderStorage
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.keys import (
    MAX_NAME_BYTES,
    RESERVED_NAME_PREFIX,
    shown_name,
    storable_key_problem,
)
from distributed_something.recipes.command import CommandRecipe
from distributed_something.records import RunRecords
from distributed_something.secrets_scan import (
    ACCESS_KEY_ID,
    API_TOKEN,
    PASSWORD_URL,
    PRESIGNED_URL,
    PRIVATE_KEY,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    credential_kind,
)
from distributed_something.worker.loop import Outcome, Worker, WorkerSettings
from distributed_something.worker.runner import SubprocessRunner
from testkit import FakeClock, NoCompute, NoProvisioner

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]

# --- a worker on the local queue and folder storage ----------------------------------------


class Rig:
    """One worker, a SQLite queue (3 receives before dead-letter) and a folder bucket."""

    def __init__(self, tmp_path: Path, code: str, output_prefix: str = "out/{name}") -> None:
        self.clock = FakeClock(1_000_000.0)
        self.queue = SqliteQueue(tmp_path / "q.sqlite", max_receive_count=3, clock=self.clock)
        self.storage = FolderStorage(tmp_path / "bucket")
        self.config = Config.model_validate(
            {
                "app_name": "H",
                "recipe": {
                    "name": "command",
                    "argv": [PY, "-c", code, "{output_dir}"],
                    "output_prefix": output_prefix,
                },
            }
        )
        backend = Backend(
            "local", self.queue, self.storage, NoCompute(), lambda _n: self.storage, NoProvisioner()
        )
        self.worker = Worker(
            self.config,
            backend,
            CommandRecipe(),
            SubprocessRunner(grace_seconds=2),
            WorkerSettings(name="w1", run_id="r1", scratch_root=tmp_path / "scratch"),
            clock=self.clock,
            sleep=lambda _s: None,
        )
        self.records = RunRecords(self.storage, "H", "r1")

    def run_one(self, name: str = "a") -> Task:
        """Submit one task, step the worker once; the task."""
        task = Task(body={"group": {"name": name}})
        self.queue.send_batch([(task.id, task.body_json())])
        assert self.worker.step() is Outcome.FAILED
        return task

    def outputs(self) -> list[str]:
        return [o.key for o in self.storage.list("out")]

    def assert_dead_at_once(self, task: Task) -> str:
        """The attempt is dead in the ledger after one run, its message deleted (not handed
        back, not in the dead-letter store); returns the recorded error."""
        assert [k.outcome for k in self.records.attempt_keys(task.id)] == ["dead"]
        (failure,) = self.records.failures_of(task.id)
        assert failure.final and failure.attempt == 1
        counts = self.queue.counts()
        assert (counts.visible, counts.in_flight, counts.dead) == (0, 0, 0)
        assert self.worker.step() is Outcome.DRAINED  # nothing comes back for a retry
        return failure.error


# Each writes a good file, then the problem (so "nothing was uploaded" is checked too).
LINK_TASKS = {
    "file link out (/etc/passwd)": (
        "import os, sys; o = sys.argv[1]; open(o + '/good.txt', 'w').write('x'); "
        "os.symlink('/etc/passwd', o + '/pw')",
        "'pw' is a symbolic link (to '/etc/passwd')",
    ),
    "folder link out": (
        "import os, sys; o = sys.argv[1]; open(o + '/good.txt', 'w').write('x'); "
        "os.makedirs(o + '/sub'); os.symlink('/etc', o + '/sub/etc')",
        "'sub/etc' is a symbolic link (to '/etc')",
    ),
    "folder link inside the output folder": (
        "import os, sys; o = sys.argv[1]; os.makedirs(o + '/real'); "
        "open(o + '/real/good.txt', 'w').write('x'); os.symlink('real', o + '/alias')",
        "'alias' is a symbolic link (to 'real')",
    ),
    "file link inside the output folder": (
        "import os, sys; o = sys.argv[1]; open(o + '/good.txt', 'w').write('x'); "
        "os.symlink('good.txt', o + '/copy.txt')",
        "'copy.txt' is a symbolic link (to 'good.txt')",
    ),
    "dangling link": (
        "import os, sys; o = sys.argv[1]; open(o + '/good.txt', 'w').write('x'); "
        "os.symlink('/nonexistent/x', o + '/gone')",
        "'gone' is a symbolic link (to '/nonexistent/x')",
    ),
}


@pytest.mark.parametrize("case", sorted(LINK_TASKS))
def test_a_link_in_the_output_folder_fails_the_task_at_once_and_uploads_nothing(
    tmp_path: Path, case: str
) -> None:
    code, named = LINK_TASKS[case]
    rig = Rig(tmp_path, code)
    task = rig.run_one()
    error = rig.assert_dead_at_once(task)
    assert named in error and "nothing was uploaded" in error
    assert rig.outputs() == []  # not even the good file
    assert rig.records.read_done(task.id) is None


def test_the_output_folder_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    code = "import os, shutil, sys; o = sys.argv[1]; shutil.rmtree(o); os.symlink('/etc', o)"
    rig = Rig(tmp_path, code)
    task = rig.run_one()
    error = rig.assert_dead_at_once(task)
    assert "replaced by a symbolic link" in error
    assert rig.outputs() == []


def test_a_pipe_in_the_output_folder_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "import os, sys; os.mkfifo(sys.argv[1] + '/fifo')")
    error = rig.assert_dead_at_once(rig.run_one())
    assert "'fifo' is not a regular file or folder" in error


def test_regular_files_in_nested_folders_are_still_uploaded(tmp_path: Path) -> None:
    code = (
        "import os, sys; o = sys.argv[1]; os.makedirs(o + '/a/b'); "
        "open(o + '/a/b/deep.txt', 'w').write('d'); open(o + '/top.txt', 'w').write('t')"
    )
    rig = Rig(tmp_path, code)
    task = Task(body={"group": {"name": "n"}})
    rig.queue.send_batch([(task.id, task.body_json())])
    assert rig.worker.step() is Outcome.DONE
    assert rig.outputs() == ["out/n/a/b/deep.txt", "out/n/top.txt"]


# --- outputs the storage cannot take --------------------------------------------------------

UNSTORABLE = {
    "backslash": ("'a\\\\b.txt'", "'a\\\\b.txt'", "backslash"),
    "invalid UTF-8": (
        "os.fsdecode(b'bad\\xff.txt')",
        "'bad\\\\xff.txt'",
        "not valid UTF-8",
    ),
    "temporary prefix": (f"'{TEMP_PREFIX}1234'", f"'{TEMP_PREFIX}1234'", "reserved"),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_an_output_the_storage_cannot_take_fails_at_once_naming_it(
    tmp_path: Path, case: str
) -> None:
    name, shown, problem = UNSTORABLE[case]
    code = (
        "import os, sys; o = os.fsencode(sys.argv[1]); "
        "open(os.path.join(o, b'good.txt'), 'w').write('x'); "
        f"open(os.path.join(sys.argv[1], {name}), 'w').write('y')"
    )
    rig = Rig(tmp_path, code)
    task = rig.run_one()
    error = rig.assert_dead_at_once(task)
    assert f"the output {shown} cannot be stored" in error and problem in error
    assert "nothing was uploaded" in error
    assert rig.outputs() == []
    json.dumps(error, ensure_ascii=False).encode("utf-8")  # printable and storable as is


def test_an_output_prefix_name_over_255_bytes_fails_at_once(tmp_path: Path) -> None:
    # A job value can make a name S3 takes but no file system can: refused before upload.
    rig = Rig(tmp_path, "import sys; open(sys.argv[1] + '/r.txt', 'w').write('x')")
    long_name = "n" * (MAX_NAME_BYTES + 1)
    task = rig.run_one(long_name)
    error = rig.assert_dead_at_once(task)
    assert "the output 'r.txt' cannot be stored" in error
    assert f"a name of {MAX_NAME_BYTES + 1} bytes" in error
    assert rig.outputs() == []


def test_storable_key_problem_adds_name_length_and_the_temporary_prefix() -> None:
    assert RESERVED_NAME_PREFIX == TEMP_PREFIX  # the folder storage's own rule, in one place
    assert storable_key_problem("out/a/result.csv") is None
    assert storable_key_problem("a/" + "é" * 127) is None  # 254 bytes
    problem = storable_key_problem("a/" + "é" * 128)
    assert problem is not None and "256 bytes" in problem
    problem = storable_key_problem(f"a/{TEMP_PREFIX}x/b")
    assert problem is not None and "reserved" in problem
    problem = storable_key_problem("a\\b")
    assert problem is not None and "backslash" in problem
    assert shown_name(os.fsdecode(b"bad\xff")) == "bad\\xff"


def test_a_link_run_end_to_end_is_dead_after_one_attempt(tmp_path: Path, ds: Any) -> None:
    code = "import os, sys; os.symlink('/etc/passwd', sys.argv[1] + '/pw')"
    proj = write_project(
        tmp_path / "p",
        argv=[PY, "-c", code, "{output_dir}"],
        groups=[{"name": "a"}],
    )
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["dead"] == 1 and report["counts"]["done"] == 0
    (entry,) = report["tasks"]
    assert "'pw' is a symbolic link" in entry["error"]
    assert entry["attempts"] == 1
    bucket = proj / ".ds" / "T" / "buckets" / "default"
    passwd = Path("/etc/passwd").read_bytes()
    assert not any(p.is_file() and p.read_bytes() == passwd for p in bucket.rglob("*"))
    # Dead without a dead-letter copy: `ds dead` still lists it, and a redrive re-sends it.
    (dead,) = json.loads(ds("dead", "list", "--json", cwd=proj).stdout)
    assert dead["task_id"] == entry["id"] and "symbolic link" in dead["error"]
    redrive = ds("dead", "redrive", cwd=proj)
    assert redrive.returncode == 0 and "1 task(s) back on the queue" in redrive.stderr


# --- credentials by shape --------------------------------------------------------------------

#: AWS's documented example keys, and fakes of the same shape.
EXAMPLE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PRESIGNED_V4 = (
    "http://127.0.0.1:9/ds-bucket/scripts/measure.ijm?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={EXAMPLE_KEY_ID}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
)
PRESIGNED_V2 = (
    "http://127.0.0.1:9/ds-bucket/scripts/measure.ijm?AWSAccessKeyId=ASIAEXAMPLEKEY12345"
    "&Expires=1700000000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D"
)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (EXAMPLE_KEY_ID, ACCESS_KEY_ID),
        ("temporary ASIAY34FZKBOKMUTVV7A in a note", ACCESS_KEY_ID),
        (EXAMPLE_SECRET, SECRET_ACCESS_KEY),
        ("key=" + EXAMPLE_SECRET + ";", SECRET_ACCESS_KEY),
        ("FwoGZXIvYXdzEBYaDFakeSessionTokenBody0123456789", SESSION_TOKEN),
        ("IQoJb3JpZ2luX2VjEFakeSessionTokenBody0123456789", SESSION_TOKEN),
        (
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJSktMTU5P"
            "UFFSU1RVVldYWVowMTIzNDU2Nzg5K3g0ZTJhY3pXcTluVA",
            SESSION_TOKEN,
        ),
        (PRESIGNED_V4, PRESIGNED_URL),
        (PRESIGNED_V2, PRESIGNED_URL),
        # Not AWS's, and as secret in a task definition.
        ("https://alice:Sup3rS3cret!@example.com/s.ijm", PASSWORD_URL),
        ("postgres://admin:Pa55word99@db.lab:5432/plates", PASSWORD_URL),
        ("ghp_" + "A1b2C3d4E5" * 4, API_TOKEN),
        ("glpat-" + "x9Y8z7W6v5" * 2, API_TOKEN),
        ("xoxb-1234567890-abcdefghij", API_TOKEN),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA", PRIVATE_KEY),
        # URL-encoded, as in a query string: looked at decoded.
        ("secret=" + EXAMPLE_SECRET.replace("/", "%2F"), SECRET_ACCESS_KEY),
    ],
)
def test_credentials_are_recognised_by_shape(value: str, kind: str) -> None:
    assert credential_kind(value) == kind


@pytest.mark.parametrize(
    "value",
    [
        "0123456789abcdef0123456789abcdef01234567",  # a git commit (PLUGINS_COMMIT)
        "projects/2024_plate1/images/Well_A01/site1",
        "cellprofiler/distributed-cellprofiler:2.0.0_4.2.1",
        "arn:aws:iam::123456789012:role/ecsTaskRoleForDistributedCellProfilerRuns",
        "https://raw.githubusercontent.com/CellProfiler/Distributed-Fiji/master/script.py",
        "Metadata_Plate=Plate1,Metadata_Well=A01",
        "CellProfilerPipelineForNucleiSegmentation",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMN",  # 40 characters, one letter case
        "",
        "https://example.org:8443/scripts/stitch.ijm",  # a port is no password
        "s3://lab-bucket/projects/a:b/c@d.tif",
        "images/Plate%201/A01.tif",  # %-escaped, nothing secret decoded
        "ghp_short",
    ],
)
def test_ordinary_values_are_not_taken_for_credentials(value: str) -> None:
    assert credential_kind(value) is None


def aws_config(**sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "app_name": "Sec",
        "backend": "aws",
        "image": "example/ds-worker:1",
        "recipe": {"name": "fiji"},
        "storage": {"bucket": "ds-bucket"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return Config.model_validate(raw)


def test_a_presigned_script_url_is_refused_not_silently_dropped() -> None:
    config = aws_config(tool={"script_download_url": PRESIGNED_V4})
    with pytest.raises(InputError) as caught:
        task_environment(config, queue_url="http://127.0.0.1:1/1/SecQueue", run_id="r")
    error = caught.value
    assert error.field == "tool.script_download_url"
    assert "presigned URL" in error.problem and "recipe.script" in error.fix
    assert "X-Amz-Signature" not in str(error) and EXAMPLE_KEY_ID not in str(error)


def test_secrets_under_their_usual_names_or_shapes_stay_out_of_the_task_definition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = {
        "DB_PASSWD": "hunter2hunter2",
        "MY_API_KEY": "k-0123456789",
        "GITHUB_PAT": "pat-0123456789",
        "DATABASE_URL": "postgres://admin:Pa55word99@db.lab/plates",
        "PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----",
        "OAUTH_TOKEN": "oauth-0123456789",
    }
    ordinary = {"PATH": "/opt/tool/bin", "AUTHOR": "lab", "KEYWORDS": "nuclei", "PASSES": "3"}
    config = aws_config(env={**secrets, **ordinary})
    env = task_environment(config, queue_url="http://127.0.0.1:1/1/SecQueue", run_id="r")
    assert not set(secrets) & set(env)
    assert {name: env[name] for name in ordinary} == ordinary
    dumped = json.dumps(env)
    assert all(value not in dumped for value in secrets.values())
    warnings = capsys.readouterr().err
    assert "env.DATABASE_URL holds a URL with a password in it" in warnings
    assert "Pa55word99" not in warnings


def test_a_password_in_a_script_url_is_refused() -> None:
    config = aws_config(tool={"script_download_url": "https://alice:pw12345@host/s.ijm"})
    with pytest.raises(InputError) as caught:
        task_environment(config, queue_url="http://127.0.0.1:1/1/SecQueue", run_id="r")
    assert caught.value.field == "tool.script_download_url"
    assert "holds a URL with a password in it" in caught.value.problem
    assert "pw12345" not in str(caught.value)


def test_a_secret_under_a_neutral_name_is_dropped_and_the_config_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = aws_config(
        env={"LAB_S3": EXAMPLE_SECRET, "STS": "FwoGZXIvYXdzEBYaDFakeSessionToken0123", "OK": "1"}
    )
    env = task_environment(config, queue_url="http://127.0.0.1:1/1/SecQueue", run_id="r")
    assert "LAB_S3" not in env and "STS" not in env and env["OK"] == "1"
    ds_config = json.loads(env["DS_CONFIG"])
    assert ds_config["app_name"] == "Sec" and ds_config["env"] == {"OK": "1"}
    dumped = json.dumps(env)
    assert EXAMPLE_SECRET not in dumped and "FwoGZXIvYXdz" not in dumped
    # setup's second look at the whole environment drops nothing more: DS_CONFIG stays.
    assert without_credentials(env, where="task environment") == env
    warnings = capsys.readouterr().err
    assert "env.LAB_S3 holds an AWS secret access key" in warnings
    assert EXAMPLE_SECRET not in warnings


def legacy_project(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.py").write_text(
        "APP_NAME = 'Legacy'\nBACKEND = 'local'\nRECIPE = 'command'\nCOMMAND = ['true']\n" + body
    )
    return folder


def test_validate_refuses_a_presigned_script_download_url_in_config_py(
    tmp_path: Path, ds: Any
) -> None:
    proj = legacy_project(tmp_path / "p", f"SCRIPT_DOWNLOAD_URL = {PRESIGNED_V4!r}\n")
    result = ds("validate", cwd=proj)
    assert result.returncode == 2, result.stderr
    assert "config.py: SCRIPT_DOWNLOAD_URL: holds a presigned URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert "X-Amz-Signature" not in result.stderr + result.stdout


def test_validate_refuses_a_presigned_url_in_a_ds_toml_before_anything(
    tmp_path: Path, ds: Any
) -> None:
    proj = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "a"}])
    with (proj / "ds.toml").open("a") as toml:
        toml.write(f"\n[tool]\nscript_download_url = {json.dumps(PRESIGNED_V4)}\n")
    for command in (("validate",), ("setup",)):
        result = ds(*command, cwd=proj)
        assert result.returncode == 2, result.stderr
        assert "tool.script_download_url" in result.stderr and "presigned" in result.stderr
        assert "X-Amz-Signature" not in result.stderr + result.stdout
    assert not (proj / ".ds").exists()  # nothing was created


def test_validate_job_refuses_a_presigned_script_url_for_the_fiji_recipe(
    tmp_path: Path, ds: Any
) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "ds.toml").write_text(
        f'app_name = "F"\n[recipe]\nname = "fiji"\n[tool]\nscript_download_url = "{PRESIGNED_V2}"\n'
    )
    job = {"output_file_location": "out/", "groups": [{"Well": "A1"}]}
    (proj / "job.json").write_text(json.dumps(job))
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2, result.stderr
    assert "tool.script_download_url: holds a presigned URL" in result.stderr
    assert "Signature=" not in result.stderr


def test_setup_on_aws_refuses_a_presigned_url_before_creating_anything(
    aws: str, tmp_path: Path, ds: Any
) -> None:
    import boto3

    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "config.py").write_text(
        "APP_NAME = 'Presigned'\nRECIPE = 'fiji'\nDOCKERHUB_TAG = 'example/ds-worker:1'\n"
        "AWS_REGION = 'us-east-1'\nAWS_BUCKET = 'ds-presigned'\n"
        f"SCRIPT_DOWNLOAD_URL = {PRESIGNED_V4!r}\n"
    )
    result = ds("setup", cwd=proj)
    assert result.returncode == 2, result.stderr
    assert "SCRIPT_DOWNLOAD_URL: holds a presigned URL" in result.stderr
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    assert sqs.list_queues().get("QueueUrls", []) == []
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=aws)
    assert ecs.list_task_definitions()["taskDefinitionArns"] == []


# --- parsers that could be made to blow up ---------------------------------------------------

#: The address space a bounded reader runs in, and how long it may take.
MEMORY_LIMIT = 1536 * 1024 * 1024
TIME_LIMIT = 60

BOUNDED_READER = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from pathlib import Path
    from distributed_something.errors import InputError
    from distributed_something.config.legacy import read_variables
    from distributed_something.jobs.parse import load_job_file
    from distributed_something.fleet import load_fleet
    reader = {{"config": read_variables, "job": load_job_file, "fleet": load_fleet}}[sys.argv[1]]
    try:
        reader(Path(sys.argv[2]))
    except InputError as error:
        print(json.dumps({{"field": error.field, "problem": error.problem, "text": str(error)}}))
    else:
        print(json.dumps(None))
    """
).format(limit=MEMORY_LIMIT)


def read_bounded(kind: str, path: Path) -> dict[str, Any] | None:
    """Read ``path`` with the ``kind`` reader in a subprocess limited to `MEMORY_LIMIT` of
    address space and `TIME_LIMIT` seconds; the InputError it raised (as a dict) or None."""
    result = subprocess.run(
        [PY, "-c", BOUNDED_READER, kind, str(path)],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded: dict[str, Any] | None = json.loads(result.stdout)
    return loaded


def test_the_bounded_reader_can_read_a_normal_config(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text("APP_NAME = 'A'\nX = '{:>10}'.format('a') + '%5s' % 'b'\nY = [[0] * 10] * 10\n")
    assert read_bounded("config", path) is None
    # The limit is real: the same interpreter cannot allocate 4 GB under it.
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT},) * 2)"
    script = f"{limit}; b'x' * 2**32"
    assert subprocess.run([PY, "-c", script], capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("X = '{:>2000000000}'.format('a')\n", "a format width of more than 1,000,000"),
        ("X = '%2000000000s' % 'a'\n", "a format width of more than 1,000,000"),
        ("X = '%.2000000000f' % 1.0\n", "a format width of more than 1,000,000"),
        ("X = '%*s' % (2000000000, 'a')\n", "a format width of more than 1,000,000"),
        ("X = '{:{}}'.format('a', 2000000000)\n", "a format width of more than 1,000,000"),
        ("X = f'{1:>2000000000}'\n", "a format width of more than 1,000,000"),
        ("X = [[0]*1000000]*1000000\n", "more than 100,000 elements in one list"),
        ("X = [[0]*100000]*100000\n", "more than 2,000,000 characters and elements in all"),
        ("A = 'a' * 1000000\nX = A.replace('a', A)\n", "a string of more than 1,000,000"),
        ("A = 'a' * 900000\nX = f'{A}{A}'\n", "a string of more than 1,000,000"),
        ("A = 'x' * 600000\nX = '{}{}'.format(A, A)\n", "a string of more than 1,000,000"),
        ("A = 2 ** 2000\nX = A * A * A\n", "an integer of more than 4,096 bits"),
        ("A = []\n" + "A = [A]\n" * 40, "lists nested more than 32 deep"),
        ("A = [0] * 99999\nX = str([A] * 20)\n", "more than 2,000,000 characters"),
    ],
)
def test_the_config_py_evaluator_bounds_what_it_builds(
    tmp_path: Path, body: str, needle: str
) -> None:
    path = tmp_path / "config.py"
    path.write_text("APP_NAME = 'A'\n" + body)
    error = read_bounded("config", path)
    assert error is not None, "the expression was evaluated"
    assert needle in error["problem"] and "is too large" in error["problem"]
    assert error["field"].startswith("line ")
    assert "(the value of X)" in error["problem"] or "(the value of A)" in error["problem"]
    assert "\n" not in error["text"]


def test_many_variables_sharing_one_large_value_are_bounded_together(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text("A = 'a' * 999999\n" + "".join(f"B{i} = A\n" for i in range(10)))
    error = read_bounded("config", path)
    assert error is not None and error["field"] == "B3"
    assert "more than 4,000,000 characters and elements in all" in error["problem"]


@pytest.mark.parametrize("expression", ["1+" * 100_000 + "1", "-" * 100_000 + "1"])
def test_a_config_nested_beyond_the_parser_is_one_error(tmp_path: Path, expression: str) -> None:
    path = tmp_path / "config.py"
    path.write_text(f"X = {expression}\n")
    error = read_bounded("config", path)
    assert error is not None and "nested too deeply" in error["problem"]


def deep_json(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def test_a_deep_job_file_is_one_error_naming_the_json_path(tmp_path: Path, ds: Any) -> None:
    proj = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "x"}])
    job = proj / "deep.json"
    job.write_text('{"groups": [{"name": "x", "meta": ' + deep_json(500) + "}]}")
    error = read_bounded("job", job)
    assert error is not None and error["field"] == "groups[0].meta.a…"
    assert "nested more than 64 levels deep" in error["problem"]
    result = ds("validate", "--job", "deep.json", cwd=proj)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "deep.json: groups[0].meta.a…: objects and lists are nested" in result.stderr


def test_a_job_file_deeper_than_json_can_parse_names_the_line(tmp_path: Path) -> None:
    job = tmp_path / "deep.json"
    job.write_text('{"groups": [\n' + "[" * 200_000 + "]" * 200_000 + "]}")
    error = read_bounded("job", job)
    assert error is not None and error["field"] == "line 2, column 63"  # opens level 65


def test_a_deep_fleet_file_is_one_error_naming_the_json_path(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text('{"IamFleetRole": "x", "Extra": ' + deep_json(500) + "}")
    error = read_bounded("fleet", fleet)
    assert error is not None and error["field"] == "Extra.a.a.a…"
    assert "nested more than 64 levels deep" in error["problem"]
    fleet.write_text('{"Extra": ' + "[" * 200_000 + "]" * 200_000 + "}")
    error = read_bounded("fleet", fleet)
    assert error is not None and error["field"] == "line 1, column 74"


def test_huge_shared_keys_are_refused_before_any_task_is_built(tmp_path: Path) -> None:
    # 20 MB shared by 2,000 groups: serialised once per group, it took minutes.
    job = tmp_path / "job.json"
    groups = [{"name": str(i)} for i in range(2000)]
    job.write_text(json.dumps({"blob": "x" * 20_000_000, "small": 1, "groups": groups}))
    error = read_bounded("job", job)
    assert error is not None and error["field"] == "blob"
    assert "the shared keys alone make every task message 20,000,0" in error["problem"]


def test_a_fleet_file_of_megabytes_is_refused_unread(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"IamFleetRole": "x", "Pad": "x" * 2_000_000}))
    error = read_bounded("fleet", fleet)
    assert error is not None and "a spot fleet request is a few kilobytes" in error["problem"]


def test_a_secret_in_a_legacy_config_py_stays_out_of_the_task_definition(tmp_path: Path) -> None:
    from distributed_something.config.legacy import load_legacy

    path = tmp_path / "config.py"
    path.write_text(
        "APP_NAME = 'Legacy'\nRECIPE = 'command'\nCOMMAND = ['true']\n"
        "DOCKERHUB_TAG = 'example/ds-worker:1'\nAWS_BUCKET = 'b'\n"
        f"S3_CREDS = {EXAMPLE_SECRET!r}\nLAB = 'imaging'\n"
    )
    config = load_legacy(path)
    env = task_environment(config, queue_url="http://127.0.0.1:1/1/LegacyQueue", run_id="r")
    assert "S3_CREDS" not in env and env["LAB"] == "imaging"
    assert EXAMPLE_SECRET not in json.dumps(env)
    assert json.loads(env["DS_CONFIG"])["app_name"] == "Legacy"


@pytest.mark.parametrize(
    ("section", "values", "field"),
    [
        ("recipe", {"name": "command", "argv": ["tool", EXAMPLE_SECRET]}, "recipe.argv[1]"),
        ("check_if_done", {"necessary_string": EXAMPLE_KEY_ID}, "check_if_done.necessary_string"),
    ],
)
def test_a_credential_in_any_other_field_is_refused_by_name(
    section: str, values: dict[str, Any], field: str
) -> None:
    config = aws_config(**{section: values})
    with pytest.raises(InputError) as caught:
        task_environment(config, queue_url="http://127.0.0.1:1/1/SecQueue", run_id="r")
    assert caught.value.field == field and "task role" in caught.value.fix
    assert EXAMPLE_SECRET not in str(caught.value) and EXAMPLE_KEY_ID not in str(caught.value)


def test_a_ds_toml_nested_thousands_of_levels_is_one_line_not_a_traceback(
    tmp_path: Path, ds: Any
) -> None:
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "ds.toml").write_text('app_name = "T"\nx = ' + "[" * 5000 + "]" * 5000 + "\n")
    result = ds("validate", cwd=proj)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ds.toml" in result.stderr and "too deeply" in result.stderr


def test_a_damaged_run_state_is_restored_from_the_bucket_or_named_with_its_fix(
    tmp_path: Path,
) -> None:
    """The run state file cut or edited by hand: never a traceback. With the bucket's copy
    readable, the run goes on from it and the damaged file is kept aside (nothing lost);
    without one, one error names the file and the fix."""
    from distributed_something.backends import open_backend
    from distributed_something.state import load_state, require_state, state_key
    from distributed_something.usecases import lifecycle
    from distributed_something.usecases.project import open_project

    folder = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "a"}])
    project = open_project(folder / "ds.toml")
    state = lifecycle.setup(project)
    backend = open_backend(project)
    for damage in ('{"run_id": 3', '{"run_id": 3}', "\x00\x01"):
        project.state_path.write_text(damage)
        restored = load_state(project, backend.storage)
        assert restored is not None and restored.run_id == state.run_id
        assert load_state(project) == restored  # written back: the next reader is fine
    kept = sorted(p.name for p in project.state_path.parent.glob("state.json.damaged-*"))
    assert len(kept) == 3  # each damaged file kept, none overwritten
    assert project.state_path.parent.joinpath(kept[-1]).read_text() == "\x00\x01"
    backend.storage.put_bytes(state_key("T"), b"not json either")
    project.state_path.write_text("{")
    with pytest.raises(InputError) as caught:
        require_state(project, backend.storage)
    assert str(project.state_path) in str(caught.value) and "ds setup" in str(caught.value)
    result = subprocess.run(
        [sys.executable, "-m", "distributed_something", "status"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the run state is damaged" in result.stderr


def test_no_task_reads_the_records_area(tmp_path: Path, ds: Any) -> None:
    # A job value naming an object under _ds/ (the records of every run: logs with their
    # argv, attempts, failures) as an input copied it into the task's outputs.
    folder = write_project(
        tmp_path / "proj",
        argv=[sys.executable, "-c", "print('ran')"],
        groups=[{"name": "a", "f": "_ds/T/runs/r1/logs/x.log"}],
        inputs=["{f}"],
    )
    result = ds("validate", cwd=folder)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "the input '_ds/T/runs/r1/logs/x.log' is in the records area _ds/" in said
    # A message sent by other means: the worker refuses it too, before any download.
    rig = Rig(tmp_path / "rig", "print('ran')")
    rig.config.recipe.inputs = ["{f}"]
    rig.storage.put_bytes("_ds/H/state.json", b"{}")
    task = Task(body={"group": {"name": "a", "f": "_ds/H/state.json"}})
    rig.queue.send_batch([(task.id, task.body_json())])
    assert rig.worker.step() is Outcome.FAILED
    error = rig.assert_dead_at_once(task)
    assert "is in the records area _ds/, which no task reads" in error
    assert not list((tmp_path / "rig" / "scratch").rglob("state.json"))


def test_credentials_a_command_prints_are_kept_out_of_records_reports_and_logs(
    tmp_path: Path,
) -> None:
    # A command printing its environment (AWS keys, a connection string) and failing: its
    # first error line and its log's tail went into the failure record, the report and
    # `ds dead show`, and the whole log into storage, credentials and all.
    code = (
        "import sys; print('AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'); "
        "print('error: cannot connect to postgres://app:Hunter2Secret@db.invalid/lab'); "
        "print('plain line /data/plate1/A01.tif'); sys.exit(3)"
    )
    rig = Rig(tmp_path, code)
    task = rig.run_one("a")
    (failure,) = rig.records.failures_of(task.id)
    (stored,) = [o.key for o in rig.storage.list(f"{rig.records.run_prefix}logs/")]
    log_text = rig.storage.get_bytes(stored).decode()
    for text in (failure.error, failure.log_tail, log_text):
        assert "wJalrXUtnFEMI" not in text and "Hunter2Secret" not in text, text
    assert "postgres://app:[credential removed by ds]@db.invalid/lab" in failure.error
    assert "plain line /data/plate1/A01.tif" in log_text  # the rest is kept as it was
