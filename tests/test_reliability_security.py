"""Security: credentials never leave the environment they were given in; storage keys and
task outputs cannot escape their bucket or folder; job values cannot run shell commands.

- An AWS run on moto with fake keys and a session token in the environment of every command
  and worker: afterwards no task definition, spot fleet request, dashboard, alarm, log
  (worker logs, task logs in storage, CloudWatch events, exported logs), state file, report
  or command output contains them.
- Credentials are recognised by shape too: a secret key under a neutral name and a presigned
  URL in ``env`` are left out like the named ones, and a presigned SCRIPT_DOWNLOAD_URL stops
  ``ds setup`` before anything is created.
- Keys with ``..``, absolute paths, backslashes or empty names, from a job file, a message put
  straight on the queue, or a direct storage call, are refused with an `InputError` before
  anything is written, and nothing appears outside the storage root. A task's output folder
  holding a symbolic link (to a file or a folder) or a name no storage can hold fails that
  task at once (dead after one attempt), and nothing of it is uploaded.
- Job values full of shell metacharacters reach the command as literal arguments: the
  marker file they try to create never appears.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from aws_agent import start_tasks
from conftest import write_project
from distributed_something.backends.aws import clients
from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.s3_storage import S3Storage
from distributed_something.backends.local.queue import SqliteQueue
from distributed_something.backends.local.storage import FolderStorage
from distributed_something.errors import InputError
from distributed_something.jobs.model import Task
from distributed_something.records import RunRecords
from imds_server import imds_server
from moto_projects import REGION, assert_nothing_left, aws_client, aws_project, ds_ok
from reliability_figures import Figures
from reliability_figures import figures as figures  # the session fixture
from testkit import local_bucket

pytestmark = pytest.mark.slow

TEST_FILE = "tests/test_reliability_security.py"
SEED = 20240611

# --- credentials ----------------------------------------------------------------------------

ACCESS_KEY_ID = "AKIARELIABILITYTEST7"
SECRET_ACCESS_KEY = "Reliability/Fake+Secret0123456789abcdefGHIJ"
SESSION_TOKEN = "FwoGZXIvYXdzEReliabilityFakeSessionToken/0123456789+abcdefghij=="
#: A secret access key under a name that says nothing (recognised by its shape), and the
#: signature of a presigned URL (the URL itself names no key id in the query's name).
NEUTRAL_SECRET = "q8Zr2T/vLk0w9XbNcY4Hs1JmPe7Ua3GdFi6Ro5Kt"
SIGNATURE = "9f2c41d7b0e85a6c3d1f7e2b4a9c8d0e1f3a5b7c9d2e4f6a8b0c1d3e5f7a9b2c"
PRESIGNED = (
    "http://127.0.0.1:9/ds-secure/scripts/measure.ijm?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Signature={SIGNATURE}"
)
SECRETS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN, NEUTRAL_SECRET, SIGNATURE)

TASK_CODE = (
    "import sys, os\n"
    "out, name = sys.argv[1:3]\n"
    "print('processing', name, 'with', len(os.environ), 'environment variables')\n"
    "if name.startswith('poison'):\n"
    "    print('poisoned input', name, file=sys.stderr); sys.exit(7)\n"
    "open(os.path.join(out, 'result.txt'), 'w').write('done ' + name)\n"
)


def secret_forms() -> list[str]:
    """Each secret as it could be written: raw, URL-encoded, base64 of the whole value."""
    forms: list[str] = []
    for secret in SECRETS:
        forms += [secret, urllib.parse.quote(secret, safe=""), base64.b64encode(secret.encode())]
    return [f if isinstance(f, str) else f.decode() for f in forms]


class Scanner:
    """Looks for any form of the secrets in texts, remembering where it looked."""

    def __init__(self) -> None:
        self.forms = secret_forms()
        self.places: dict[str, int] = {}
        self.leaks: list[str] = []
        self.bytes = 0

    def scan(self, kind: str, where: str, data: str | bytes) -> None:
        if isinstance(data, bytes):
            if data[:2] == b"\x1f\x8b":  # gzip: exported CloudWatch logs
                data = gzip.decompress(data)
            data = data.decode("utf-8", errors="replace")
        self.places[kind] = self.places.get(kind, 0) + 1
        self.bytes += len(data)
        self.leaks += [f"{kind} {where}" for form in self.forms if form in data]


def all_log_events() -> Iterator[tuple[str, str]]:
    """(group/stream, message) of every CloudWatch Logs event on the server."""
    logs = aws_client("logs")
    for group in logs.describe_log_groups()["logGroups"]:
        name = group["logGroupName"]
        for stream in logs.describe_log_streams(logGroupName=name)["logStreams"]:
            events = logs.get_log_events(
                logGroupName=name, logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
            for event in events:
                yield f"{name}/{stream['logStreamName']}", event["message"]


@pytest.mark.timeout(280)
def test_no_credential_is_written_anywhere_by_an_aws_run(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    scenario = figures.scenario(
        "credentials",
        "No credential written anywhere (AWS run on moto)",
        test=f"{TEST_FILE}::test_no_credential_is_written_anywhere_by_an_aws_run",
        assertion=(
            "a config.py with a presigned SCRIPT_DOWNLOAD_URL is refused by `ds setup` (exit 2, "
            "the variable named, no queue created); none of the access key id, secret key, "
            "session token, neutral-named secret key or presigned URL signature (raw, "
            "URL-encoded or base64) appears in any task definition (active or deregistered), "
            "spot fleet "
            "request (user data decoded), dashboard, alarm, ECS service, S3 object (records, "
            "task logs, reports, state, exported logs un-gzipped), CloudWatch Logs event, "
            "local file of the run, worker log, or output of a `ds` command; the scanner finds "
            "them in a file that does hold them (control)"
        ),
        setup={
            "credentials in the environment": "access key id, secret key, session token (fake)",
            "also in the config's env": "ANALYSIS_API_TOKEN = the session token; NOTE holding "
            "the access key id; S3_CREDS = a secret key (named neutrally); SHARED_URL = a "
            "presigned URL",
            "refused config": "config.py with SCRIPT_DOWNLOAD_URL = a presigned URL (`ds setup`)",
            "commands": "setup, submit, start-cluster, status, report, logs, dead list/show, "
            "monitor (teardown and log export)",
            "workers": "2 `ds worker`, started as the ECS agent would, on a loopback metadata "
            "server (idle alarm, name tag)",
            "tasks": "3 (one poison: failure records and log tails)",
        },
    )
    for name, value in (
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
    ):
        monkeypatch.setenv(name, value)
    clients._sessions.clear()  # sessions made before would hold the fixture's credentials
    # A presigned script URL in a legacy config: refused before anything is created.
    presigned = tmp_path / "presigned"
    presigned.mkdir()
    (presigned / "config.py").write_text(
        "APP_NAME = 'PRESIGNED'\nRECIPE = 'fiji'\nDOCKERHUB_TAG = 'example/ds-worker:1'\n"
        f"AWS_REGION = '{REGION}'\nAWS_BUCKET = 'ds-secure'\nSCRIPT_DOWNLOAD_URL = {PRESIGNED!r}\n"
    )
    refused = ds_ok("setup", cwd=presigned, ok=(2,))
    assert "SCRIPT_DOWNLOAD_URL: holds a presigned URL" in refused.stderr
    assert aws_client("sqs").list_queues().get("QueueUrls", []) == []
    app, bucket = "SECURE", "ds-secure"
    names = ["alpha", "beta", "poison-1"]
    proj = aws_project(
        tmp_path / "proj",
        app=app,
        bucket=bucket,
        names=names,
        argv=["{python}", "-c", TASK_CODE, "{output_dir}", "{name}"],
        cluster={"machines": 1, "tasks_per_machine": 2, "docker_cores": 1},
        queue={"visibility": 5, "job_retries": 2},
        env={
            "ANALYSIS_API_TOKEN": SESSION_TOKEN,
            "NOTE": f"uses key {ACCESS_KEY_ID}",
            "S3_CREDS": NEUTRAL_SECRET,
            "SHARED_URL": PRESIGNED,
        },
    )
    scanner = Scanner()
    outputs: list[str] = [refused.stdout + refused.stderr]

    def ds(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        result = ds_ok(*args, cwd=proj, ok=ok)
        outputs.append(result.stdout + result.stderr)
        return result

    ds("setup")
    ds("submit", "files/job.json")
    ds("start-cluster", "files/fleet.json")
    ecs = aws_client("ecs")
    creds = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
    }
    with imds_server() as imds:
        workers = start_tasks(
            ecs,
            f"{app}Cluster",
            f"{app}Service",
            aws,
            tmp_path / "agent",
            extra_env={**creds, "DS_METADATA_URL": imds.url},
        )
        for worker in workers:
            worker.wait(timeout=180)
    assert [w.returncode for w in workers] == [0, 0]
    status = json.loads(ds("status", "--json").stdout)
    assert status["counts"]["done"] == 2
    report = json.loads(ds("report", "--json", ok=(1,)).stdout)
    (dead,) = [t for t in report["tasks"] if t["outcome"] == "dead"]
    ds("logs", dead["id"][:8])
    ds("dead", "list", "--json")
    ds("dead", "show", dead["id"])
    # What exists only while the run is up.
    for arn in ecs.list_task_definitions(familyPrefix=f"{app}Task")["taskDefinitionArns"]:
        described = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        scanner.scan("task definition", arn, json.dumps(described))
    service = ecs.describe_services(cluster=f"{app}Cluster", services=[f"{app}Service"])
    scanner.scan("ECS service", f"{app}Service", json.dumps(service["services"], default=str))
    ec2, cloudwatch = aws_client("ec2"), aws_client("cloudwatch")
    for config in ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]:
        scanner.scan(
            "spot fleet request", config["SpotFleetRequestId"], json.dumps(config, default=str)
        )
        for spec in config["SpotFleetRequestConfig"].get("LaunchSpecifications", []):
            if spec.get("UserData"):
                scanner.scan(
                    "user data", config["SpotFleetRequestId"], base64.b64decode(spec["UserData"])
                )
    for entry in cloudwatch.list_dashboards()["DashboardEntries"]:
        body = cloudwatch.get_dashboard(DashboardName=entry["DashboardName"])["DashboardBody"]
        scanner.scan("dashboard", entry["DashboardName"], body)
    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert alarms  # the workers made their instance's idle alarm
    for alarm in alarms:
        scanner.scan("alarm", alarm["AlarmName"], json.dumps(alarm, default=str))
    ds("monitor", "--interval", "1", "--json", ok=(1,))
    assert_nothing_left(app)
    # What stays: deregistered task definitions, objects, log events, local files.
    inactive = ecs.list_task_definitions(familyPrefix=f"{app}Task", status="INACTIVE")
    for arn in inactive["taskDefinitionArns"]:
        described = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        scanner.scan("task definition", arn, json.dumps(described))
    s3 = aws_client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any("/logs/" in k for k in keys) and any("logs-export" in k for k in keys)
    for key in keys:
        scanner.scan("S3 object", key, s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    events = list(all_log_events())
    assert any("processing alpha" in message for _, message in events)
    for where, message in events:
        scanner.scan("CloudWatch Logs event", where, message)
    config_file = proj / "ds.toml"
    for path in sorted(p for p in proj.rglob("*") if p.is_file() and p != config_file):
        scanner.scan("local file", str(path.relative_to(proj)), path.read_bytes())
    for path in sorted((tmp_path / "agent").glob("*.log")):
        scanner.scan("worker log", path.name, path.read_bytes())
    for number, text in enumerate(outputs):
        scanner.scan("command output", str(number), text)
    assert scanner.leaks == []
    # Control: the scanner does find the secrets where they are (the user's own config).
    control = Scanner()
    control.scan("config", "ds.toml", config_file.read_text())
    assert len(control.leaks) >= 2
    for kind, count in sorted(scanner.places.items()):
        scanner_label = f"scanned: {kind}"
        scenario.measure(scanner_label, count)
    scenario.measure("bytes scanned", scanner.bytes)
    scenario.measure("credentials found", len(scanner.leaks))
    scenario.measure(
        "presigned SCRIPT_DOWNLOAD_URL", "refused by `ds setup` (exit 2), no queue created"
    )
    scenario.held()


# --- storage keys ---------------------------------------------------------------------------

#: Keys that would leave a folder or name nothing: `..` names, absolute paths, backslashes,
#: empty names.
ESCAPING_KEYS = (
    "../escaped.txt",
    "../../escaped.txt",
    "a/../../escaped.txt",
    "a/b/../../../escaped.txt",
    "/tmp/escaped.txt",
    "/escaped.txt",
    "..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "",
    "..\\escaped.txt",
    "a\\..\\..\\escaped.txt",
    "a/\x00/b",
)

segment = st.sampled_from(["a", "b", "data", "..", ".", "", "x y", "ü", "\\..", "C:"])


@st.composite
def escaping_key(draw: st.DrawFn) -> str:
    """A key with at least one `..`/`.`/empty name, a backslash, or a leading slash."""
    parts = draw(st.lists(segment, min_size=1, max_size=6))
    bad = draw(st.sampled_from(["..", ".", "", "\\", "/"]))
    at = draw(st.integers(0, len(parts)))
    if bad == "/":
        return "/" + "/".join(parts)
    if bad == "\\":
        parts.insert(at, "a\\b")
    else:
        parts.insert(at, bad)
    return "/".join(parts)


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, without following symbolic links."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(str((Path(folder) / name).relative_to(root)))
    return found


def named(root: Path, prefix: str) -> list[str]:
    """Paths under ``root`` whose name starts with ``prefix`` (links not followed)."""
    return sorted(p for p in tree(root) if Path(p).name.startswith(prefix))


def try_every_call(storage: Any, key: str, source: Path, scratch: Path) -> int:
    """Call every storage operation with ``key``; each must raise InputError. Returns the
    number of calls."""
    calls = [
        lambda: storage.put_bytes(key, b"escaped"),
        lambda: storage.put_file(key, source),
        lambda: storage.put_files([(key, source)]),
        lambda: storage.get_bytes(key),
        lambda: storage.get_file(key, scratch / "got"),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        # A bad key stays bad as a prefix with a name after it ("a/" becomes "a//x").
        lambda: list(storage.list(key + "/x")),
    ]
    for call in calls:
        with pytest.raises(InputError):
            call()
    return len(calls)


#: A task that writes a good file, then what its name asks for into its output folder.
OUTPUT_CODE = (
    "import os, sys\n"
    "out, kind, outside = sys.argv[1:4]\n"
    "open(os.path.join(out, 'good.txt'), 'w').write('good')\n"
    "if kind == 'file-link':\n"
    "    os.symlink(os.path.join(outside, 'secret.txt'), os.path.join(out, 'pw'))\n"
    "if kind == 'folder-link':\n"
    "    os.symlink(outside, os.path.join(out, 'folder'))\n"
    "if kind == 'backslash':\n"
    "    open(os.path.join(out, 'a\\\\b.txt'), 'w').write('x')\n"
    "if kind == 'not-utf8':\n"
    "    open(os.path.join(os.fsencode(out), b'bad\\xff.txt'), 'w').write('x')\n"
    "if kind == 'temporary-name':\n"
    "    open(os.path.join(out, '.ds-tmp.x'), 'w').write('x')\n"
)
#: Each kind of output and the words its task's error must hold.
BAD_OUTPUTS = {
    "file-link": "'pw' is a symbolic link",
    "folder-link": "'folder' is a symbolic link",
    "backslash": "contains a backslash",
    "not-utf8": "'bad\\\\xff.txt' cannot be stored",
    "temporary-name": "reserved",
}


@pytest.mark.timeout(200)
def test_storage_keys_cannot_escape(aws: str, tmp_path: Path, figures: Figures) -> None:
    scenario = figures.scenario(
        "key-escape",
        "Storage keys and task outputs cannot escape",
        test=f"{TEST_FILE}::test_storage_keys_cannot_escape",
        assertion=(
            "every storage call (put, put_file(s), get, get_file, exists, delete, list) with "
            "such a key raises InputError, on the folder storage and on S3 — on S3 before any "
            "request is sent; nothing is written outside the storage root (the folder tree "
            "around it is unchanged, no S3 object appears); a symbolic link out of the root is "
            "refused; a job file with such a value is refused by `ds run` (exit 2) before "
            "anything is created; such a message put straight on the queue is dead-lettered "
            "by the worker with the reason, and nothing is written outside; a task whose output "
            "folder holds a symbolic link (to a file or a folder outside) or a file name no "
            "storage can hold (backslash, not UTF-8, the storages' `.ds-tmp.` prefix) is dead "
            "after its one attempt with the file named, and nothing of it is uploaded (no "
            "copy of the linked file, not even the task's good file)"
        ),
        setup={
            "fixed escaping keys": len(ESCAPING_KEYS),
            "generated escaping keys (hypothesis)": 150,
            "storages": "folder storage (local), S3 (moto)",
            "entry points": "storage calls, job file (`ds run`), message on the queue "
            "(`ds worker`)",
            "task outputs (`ds run`)": ", ".join(BAD_OUTPUTS),
            "also shown by tests/test_hardening.py": "outputs (links inside the folder, "
            "dangling links, pipes, names over 255 bytes); credentials by shape; config.py and "
            "JSON readers bounded (string, list, total size, nesting) under a memory limit",
        },
    )
    outside = tmp_path / "outside"
    root = outside / "bucket"
    storage = FolderStorage(root)
    storage.put_bytes("kept/object.txt", b"kept")
    source = tmp_path / "source.txt"
    source.write_bytes(b"payload")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    before = tree(outside)
    calls = 0
    for key in ESCAPING_KEYS:
        calls += try_every_call(storage, key, source, scratch)
    for via_link in ("link/escaped.txt", "link/outside/escaped.txt"):
        with pytest.raises(InputError):
            storage.put_bytes(via_link, b"escaped")
        calls += 1
    generated = [0]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(escaping_key())
    def generated_keys(key: str) -> None:
        generated[0] += 1
        try_every_call(storage, key, source, scratch)

    generated_keys()
    calls += generated[0] * 8
    written_outside = sorted(tree(outside) - before) + named(tmp_path, "escaped")
    assert written_outside == []  # nothing around the root, or through its link
    assert list(scratch.iterdir()) == []
    (root / "link").unlink()

    # S3: refused before any request is sent.
    sent: list[str] = []
    settings_ = AwsSettings(region=REGION)
    clients._sessions.clear()
    clients._session(settings_).events.register(
        "before-send", lambda event_name, **_: sent.append(event_name)
    )
    aws_client("s3").create_bucket(Bucket="ds-keys")
    s3 = S3Storage(settings_, "ds-keys")
    for key in ESCAPING_KEYS:
        calls += try_every_call(s3, key, source, scratch)
    assert sent == []
    assert aws_client("s3").list_objects_v2(Bucket="ds-keys").get("KeyCount", 0) == 0
    clients._sessions.clear()

    # A job file whose values make such keys: refused before anything is created.
    job_refusals = 0
    for value in ("../../escaped", "/tmp/escaped", "a/../../../escaped", "a//b", "x\\..\\y"):
        for field, extra in (
            ("recipe.output_prefix", {}),
            ("recipe.inputs[0]", {"inputs": ["in/{name}"]}),
        ):
            proj = write_project(
                tmp_path / f"job-{job_refusals}",
                argv=["{python}", "-c", "pass"],
                groups=[{"name": "fine"}, {"name": value}],
                output_prefix="out/fine" if extra else "out/{name}",
                inputs=extra.get("inputs"),
            )
            result = ds_ok("run", str(proj), cwd=tmp_path, ok=(2,))
            assert f"{field}: " in result.stderr and "not safe" in result.stderr
            assert "Traceback" not in result.stderr
            assert not (proj / ".ds").exists()
            job_refusals += 1
    assert named(tmp_path, "escaped") == []

    # A message put straight on the queue (no validation): the worker refuses the key.
    proj = write_project(
        tmp_path / "queue",
        argv=[
            "{python}",
            "-c",
            "import sys; open(sys.argv[1] + '/f', 'w').write('x')",
            "{output_dir}",
        ],
        groups=[{"name": "fine"}],
        extra={"queue": {"job_retries": 1}},
    )
    ds_ok("setup", cwd=proj)
    poisoned = Task(body={"group": {"name": "../../../../escaped"}})
    queue = SqliteQueue(proj / ".ds" / "T" / "queue.sqlite", max_receive_count=1)
    queue.send_batch([(poisoned.id, poisoned.body_json())])
    ds_ok("worker", "--name", "w", cwd=proj)
    # A bad job value cannot succeed on a retry: the task is dead at once (its failure is
    # final and its message deleted), with the reason in its failure record.
    run_id = json.loads((proj / ".ds" / "T" / "state.json").read_text())["run_id"]
    records = RunRecords(local_bucket(proj), "T", run_id)
    (failure,) = [f for f in records.all_failures() if f.task_id == poisoned.id]
    assert failure.final and "not safe" in failure.error
    assert "recipe.output_prefix" in failure.error
    assert queue.counts().drained
    assert named(tmp_path, "escaped") == []
    scenario.measure("storage calls refused with InputError", calls)
    scenario.measure("generated keys tried", generated[0])
    scenario.measure("requests sent to S3 for refused keys", len(sent))
    scenario.measure("job files refused by `ds run` (exit 2, nothing created)", job_refusals)
    scenario.measure(
        "queue message with an escaping key",
        f"dead after {failure.attempt} attempt (no retry), the error names recipe.output_prefix",
    )
    scenario.measure("files written outside the root", len(written_outside))

    # Task outputs that point elsewhere or cannot be stored: dead at once, nothing uploaded.
    outside_dir = tmp_path / "outputs-outside"
    outside_dir.mkdir()
    secret = "a secret that must stay on this machine"
    (outside_dir / "secret.txt").write_text(secret)
    proj = write_project(
        tmp_path / "outputs",
        argv=["{python}", "-c", OUTPUT_CODE, "{output_dir}", "{name}", str(outside_dir)],
        groups=[{"name": kind} for kind in BAD_OUTPUTS],
    )
    result = ds_ok("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path, ok=(1,))
    report = json.loads(result.stdout)
    assert report["counts"]["dead"] == len(BAD_OUTPUTS) and report["counts"]["done"] == 0
    for entry in report["tasks"]:
        assert BAD_OUTPUTS[entry["group"]["name"]] in entry["error"], entry["error"]
        assert "nothing was uploaded" in entry["error"] and entry["attempts"] == 1
    bucket = proj / ".ds" / "T" / "buckets" / "default"
    uploaded = [
        p for p in bucket.rglob("*") if p.is_file() and not p.is_relative_to(bucket / "_ds")
    ]
    assert uploaded == []
    copies = [p for p in bucket.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert copies == []
    scenario.measure(
        "task outputs refused (dead after 1 attempt, the file named)",
        f"{report['counts']['dead']} of {len(BAD_OUTPUTS)}",
    )
    scenario.measure("objects uploaded by those tasks", len(uploaded))
    scenario.measure("copies of the linked secret file in storage", len(copies))
    scenario.held()


def test_folder_put_files_refuses_a_bad_key_before_writing_any(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "bucket")
    source = tmp_path / "source.txt"
    source.write_text("data")
    with pytest.raises(InputError):
        storage.put_files([("good/a.txt", source), ("../escape.txt", source)])
    assert list(storage.list("")) == []  # the good pair was not written either
    assert not (tmp_path / "escape.txt").exists()


#: A task's command: writes its arguments after the output folder, as JSON, to args.json.
WRITE_ARGS = (
    "import json, sys; open(sys.argv[1] + '/args.json', 'w').write(json.dumps(sys.argv[2:]))"
)


def shell_values(marker: Path) -> list[str]:
    """Job values that would create ``marker`` if anything ran them through a shell."""
    m = str(marker)
    return [
        f"; touch {m}",
        f"$(touch {m})",
        f"`touch {m}`",
        f"x | touch {m}",
        f"x && touch {m}",
        f"x || touch {m}",
        f"x\ntouch {m}",
        f"'; touch {m}; '",
        f'"; touch {m}; "',
        f"x > {m}",
        f"x & touch {m}",
        f"${{IFS}}touch${{IFS}}{m}",
        f"{{touch,{m}}}",
        f"%PATH% & touch {m}",
    ]


@pytest.mark.timeout(200)
def test_shell_metacharacters_in_job_values_run_nothing(tmp_path: Path, figures: Figures) -> None:
    marker = tmp_path / "PWNED"
    values = shell_values(marker)
    scenario = figures.scenario(
        "shell-injection",
        "Shell metacharacters in job values run nothing",
        test=f"{TEST_FILE}::test_shell_metacharacters_in_job_values_run_nothing",
        assertion=(
            "the marker file never appears; every value reaches the command as one literal "
            "argument, alone and inside a longer argument (read back from the outputs); a "
            "value used as the program itself is not found (exit 127, dead-lettered) instead "
            "of being run by a shell"
        ),
        setup={
            "values": len(values),
            "metacharacters": "; $( ) ` | && || newline quotes > & ${IFS} {…} %",
            "argv": '["{python}", "-c", CODE, "{output_dir}", "{value}", "pre-{value}-post"]',
            "program from a value": 'argv ["{value}"] for the same values',
        },
    )
    groups = [{"idx": str(i), "value": v} for i, v in enumerate(values)]
    proj = write_project(
        tmp_path / "literal",
        argv=["{python}", "-c", WRITE_ARGS, "{output_dir}", "{value}", "pre-{value}-post"],
        groups=groups,
        output_prefix="out/{idx}",
    )
    result = ds_ok("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == len(values)
    bucket = proj / ".ds" / "T" / "buckets" / "default" / "out"
    for i, value in enumerate(values):
        args = json.loads((bucket / str(i) / "args.json").read_text())
        assert args == [value, f"pre-{value}-post"]
    # The value as the program: nothing runs it through a shell.
    proj = write_project(
        tmp_path / "program",
        argv=["{value}"],
        groups=groups,
        output_prefix="out/{idx}",
        extra={"queue": {"job_retries": 1}},
    )
    result = ds_ok("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path, ok=(1,))
    report = json.loads(result.stdout)
    assert report["counts"]["dead"] == len(values)
    assert all(t["error"].startswith("cannot start") for t in report["tasks"])
    # `ds run` has stopped every worker: nothing can still create the marker.
    markers = [p for p in tmp_path.rglob("*") if p.name == "PWNED"]
    assert markers == []
    scenario.measure("tasks run with literal arguments", len(values))
    scenario.measure("arguments read back equal to the values", len(values) * 2)
    scenario.measure("values run as a program: dead-lettered with exit 127", len(values))
    scenario.measure("marker files created", len(markers))
    scenario.held()
