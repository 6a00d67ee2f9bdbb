"""Failures explained (issue 12), as a new user meets them: through the real `ds` CLI.

A failing group must be named by its job values and the command's own error line in every
failure table (`ds report`, `ds dead list`, the HTML report), `ds dead show` must read as
text, `ds logs` must print a task's output without terminal escapes and without holding a
huge log in memory, `ds report --trace` lists every attempt, `ds validate` finds what would
make every task fail, and `ds doctor` checks an AWS account (on moto).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import tomli_w

from conftest import write_project

Ds = Callable[..., CompletedProcess[str]]

#: A command that reads its group's value, prints in colour, and fails on "f07" with its own
#: error message (what a real tool prints) after a progress bar drawn with \r.
FAILING = (
    "import sys\n"
    "name = sys.argv[1]\n"
    "print('\\x1b[32mreading\\x1b[0m', name, '\\x1b]0;window title\\x07', flush=True)\n"
    "if name == 'f07':\n"
    "    print('progress 10%\\rprogress 90%', flush=True)\n"
    "    print('ERROR: empty file /data/f07.txt', file=sys.stderr, flush=True)\n"
    "    sys.exit(1)\n"
    "open(sys.argv[2] + '/out.txt', 'w').write(name)\n"
)


def failing_project(tmp_path: Path) -> Path:
    script = tmp_path / "tool.py"
    script.write_text(FAILING)
    return write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), "{name}", "{output_dir}"],
        groups=[{"name": "f01"}, {"name": "f07"}],
        extra={"queue": {"job_retries": 2}},
    )


def run_failing(tmp_path: Path, ds: Ds) -> tuple[Path, CompletedProcess[str], dict[str, Any]]:
    proj = failing_project(tmp_path)
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return proj, result, report


def dead_task(report: dict[str, Any]) -> dict[str, Any]:
    (dead,) = [t for t in report["tasks"] if t["outcome"] == "dead"]
    return dead


def test_failure_tables_name_the_group_and_the_commands_own_error(tmp_path: Path, ds: Ds) -> None:
    proj, result, report = run_failing(tmp_path, ds)
    dead = dead_task(report)
    assert dead["first_error"] == "ERROR: empty file /data/f07.txt"
    assert "\x1b" not in dead["log_tail"] or "ERROR" in dead["first_error"]
    # The run's summary (what `ds monitor` and `ds run` print) and `ds report`.
    for shown in (result.stderr, ds("report", cwd=proj).stderr):
        row = next(line for line in shown.splitlines() if dead["id"][:12] in line)
        assert "f07" in row and "dead" in row
        assert "ERROR: empty file" in shown
    listed = ds("dead", "list", cwd=proj)
    assert listed.returncode == 0
    row = next(line for line in listed.stderr.splitlines() if dead["id"][:12] in line)
    assert "f07" in row and "ERROR: empty file /data/f07.txt" in row
    entry = json.loads(ds("dead", "list", "--json", cwd=proj).stdout)[0]
    assert entry["first_error"] == "ERROR: empty file /data/f07.txt"
    assert [h["first_error"] for h in entry["history"]] == [entry["first_error"]] * 2
    # The HTML report: the attention table and a failures section with the log tail.
    page = (proj / ".ds" / "T" / "report.html").read_text()
    assert '<h2 id="failures">Failures</h2>' in page
    assert "ERROR: empty file /data/f07.txt" in page and "&quot;f07&quot;" in page


def test_dead_show_reads_as_text_and_as_json_on_request(tmp_path: Path, ds: Ds) -> None:
    proj, _, report = run_failing(tmp_path, ds)
    dead = dead_task(report)
    shown = ds("dead", "show", dead["id"][:8], cwd=proj)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"task    {dead['id']}" in text
    assert 'group   {"name": "f07"}' in text
    error = next(line for line in text.splitlines() if line.startswith("error   "))
    assert "ERROR: empty file /data/f07.txt" in error
    assert "#1 " in text and "#2 " in text and "exit 1" in text
    # The log tail as real lines, without escape sequences or a \r-drawn bar on one line.
    assert "\\n" not in text and "\x1b" not in text
    assert "  | progress 10%\n  | progress 90%\n" in text
    assert "  | ERROR: empty file /data/f07.txt\n" in text
    data = json.loads(ds("dead", "show", dead["id"][:8], "--json", cwd=proj).stdout)
    assert data["task_id"] == dead["id"]
    # Named by its group's values, as `ds logs` takes it.
    by_values = json.loads(ds("dead", "show", "name=f07", "--json", cwd=proj).stdout)
    assert by_values == data
    assert "ERROR: empty file" in data["failures"][-1]["log_tail"]
    assert data["failures"][-1]["first_error"] == "ERROR: empty file /data/f07.txt"


def test_report_trace_has_one_row_per_attempt(tmp_path: Path, ds: Ds) -> None:
    proj, _, report = run_failing(tmp_path, ds)
    result = ds("report", "--trace", "trace.tsv", cwd=proj)
    assert result.returncode == 1  # the run has a dead task
    assert "trace: 3 attempt(s)" in result.stderr
    with (proj / "trace.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == [
        "task_id",
        "group",
        "attempt",
        "start",
        "end",
        "wall_seconds",
        "cpu_seconds",
        "peak_memory_mb",
        "exit_code",
        "cause",
        "worker",
        "outcome",
        "cost_usd",
        "receive",
    ]
    assert {r["cost_usd"] for r in rows} == {""}  # a local run has no price
    dead = dead_task(report)
    mine = [r for r in rows if r["task_id"] == dead["id"]]
    assert [(r["group"], r["attempt"], r["exit_code"]) for r in mine] == [
        ("f07", "1", "1"),
        ("f07", "2", "1"),
    ]
    assert [r["outcome"] for r in mine] == ["failed", "dead"]
    (good,) = [r for r in rows if r["task_id"] != dead["id"]]
    assert (good["group"], good["outcome"], good["exit_code"]) == ("f01", "done", "0")
    for row in rows:
        assert row["start"] <= row["end"] and float(row["wall_seconds"]) >= 0
        assert row["worker"].startswith("local")
        # Measured by workers that measure them; empty (never made up) otherwise.
        for column in ("cpu_seconds", "peak_memory_mb"):
            assert row[column] == "" or float(row[column]) >= 0
    assert {r["cause"] for r in mine} <= {"", "exit"}


def stored_logs(proj: Path, task: str) -> list[Path]:
    """The files of the task's stored logs in the local backend's bucket folder."""
    return sorted((proj / ".ds").glob(f"T/buckets/default/_ds/T/runs/*/logs/{task}/*.log"))


def test_logs_print_plain_text_and_cut_the_middle_of_a_huge_log(tmp_path: Path, ds: Ds) -> None:
    script = tmp_path / "loud.py"
    # 6 MiB of numbered lines after a head line full of terminal controls, then a failure.
    script.write_text(
        "import sys\n"
        "out = sys.stdout\n"
        "out.write('\\x1b[1;31mHEAD\\x1b[0m \\x1b]8;;http://x\\x1b\\\\link\\x1b]8;;\\x1b\\\\'"
        " + chr(7) + chr(0) + '\\n')\n"
        "for i in range(100000):\n"
        "    out.write(f'line {i:08d} ' + 'x' * 48 + '\\n')\n"
        "out.write('TAIL\\n')\n"
        "sys.exit(3)\n"
    )
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script)],
        groups=[{"name": "big"}],
        extra={"queue": {"job_retries": 1}},
    )
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    task = json.loads(result.stdout)["tasks"][0]["id"]
    # The worker stored the first and last MiB with a note: printed whole, controls removed.
    shown = ds("logs", task[:10], cwd=proj)
    assert shown.returncode == 0, shown.stderr
    assert "HEAD link\n" in shown.stdout and shown.stdout.endswith("TAIL\n")
    assert not any(c in shown.stdout for c in "\x1b\x07\x00")
    assert "bytes cut" in shown.stdout and "left out" not in shown.stderr
    # A log stored whole (by a worker before logs were capped): its middle is left out.
    (log,) = stored_logs(proj, task)
    lines = [f"line {i:08d} " + "x" * 48 for i in range(100000)]
    log.write_text("\x1b[1;31mHEAD\x1b[0m\n" + "\n".join(lines) + "\nTAIL\n")
    cut = ds("logs", task[:10], cwd=proj)
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.startswith("HEAD\nline 00000000 ") and cut.stdout.endswith("TAIL\n")
    assert 30000 < cut.stdout.count("\n") < 40000  # 2 of the 6 MiB
    assert "MiB (bytes 1048576–" in cut.stderr and "--full" in cut.stderr
    full = ds("logs", task[:10], "--full", cwd=proj)
    assert full.returncode == 0 and "left out" not in full.stderr
    assert full.stdout.splitlines() == ["HEAD", *lines, "TAIL"]


def test_logs_stream_instead_of_holding_the_log_in_memory(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, "-c", "print('started'); raise SystemExit(1)"],
        groups=[{"name": "huge"}],
        extra={"queue": {"job_retries": 1}},
    )
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    task = json.loads(result.stdout)["tasks"][0]["id"]
    (log,) = stored_logs(proj, task)
    block = (b"y" * 1023 + b"\n") * 1024
    with log.open("wb") as fh:  # 200 MiB, as a task printing that much left it
        for _ in range(200):
            fh.write(block)
    code = (
        "import resource, subprocess, sys\n"
        "with open(sys.argv[2], 'w') as sink:\n"
        "    subprocess.run([sys.executable, '-m', 'distributed_something', 'logs',"
        " '--full', sys.argv[1]], stdout=sink, check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    sink = tmp_path / "printed.log"
    measured = ds_python(code, task, str(sink), cwd=proj)
    peak_mb = int(measured.stdout) / 1024
    assert sink.stat().st_size == 200 * 2**20  # all of it was printed …
    assert peak_mb < 150, f"`ds logs` of a 200 MiB log peaked at {peak_mb:.0f} MB"  # … streamed


def ds_python(code: str, *args: str, cwd: Path) -> CompletedProcess[str]:
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
    )


# --- ds validate: what would make every task fail ---------------------------------------------


def error_lines(result: CompletedProcess[str]) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]


def test_validate_finds_a_program_that_is_not_installed(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(
        tmp_path / "p", argv=["segment-nuclei-tool", "{name}"], groups=[{"name": "a"}]
    )
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "ds.toml: recipe.argv[0]" in line and "'segment-nuclei-tool' is not on PATH" in line
    assert "Fix:" in line
    assert not (proj / ".ds").exists()  # nothing created

    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\n")
    proj = write_project(tmp_path / "q", argv=[str(script)], groups=[{"name": "a"}])
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2 and "is not executable" in result.stderr
    script.chmod(0o755)
    assert ds("validate", "--job", "job.json", cwd=proj).returncode == 0
    script.write_text("echo no first line\n")  # every task would fail: Exec format error
    result = ds("validate", "--job", "job.json", cwd=proj)
    (line,) = error_lines(result)
    assert "is a script without a #! first line" in line and "Fix: add a #! first line" in line
    proj = write_project(tmp_path / "r", argv=["{python}", "-c", "pass"], groups=[{"name": "a"}])
    assert ds("validate", "--job", "job.json", cwd=proj).returncode == 0


def test_a_project_file_named_relatively_in_argv_is_refused_before_anything_runs(
    tmp_path: Path, ds: Ds
) -> None:
    # A first-time user's script next to ds.toml, named as on their own command line: each
    # task runs in its own emptied scratch folder, so every task would fail to open it.
    proj = write_project(
        tmp_path / "p", argv=["{python}", "analyse.py", "{name}"], groups=[{"name": "a"}]
    )
    (proj / "analyse.py").write_text("print('hi')\n")
    for command in (("validate", "--job", "job.json"), ("run", ".")):
        result = ds(*command, cwd=proj)
        assert result.returncode == 2, result.stderr
        (line,) = error_lines(result)
        assert "ds.toml: recipe.argv[1]: 'analyse.py' is a file of the project folder" in line
        assert '"{input_dir}/analyse.py"' in line and str(proj / "analyse.py") in line
        assert not (proj / ".ds").exists()  # nothing created, nothing run
    # Its absolute path runs (local workers share the folder), as does a value that is no
    # file of the project (inline code too long for a file name), or one rendered per task.
    argv = ["{python}", str(proj / "analyse.py"), "analyse.txt", "#" * 300 + "\npass", "{name}"]
    write_project(proj, argv=argv, groups=[{"name": "analyse.py"}])
    result = ds("run", ".", cwd=proj)
    assert result.returncode == 0, result.stderr


def test_validate_finds_missing_inputs_in_storage(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(
        tmp_path / "p",
        argv=["cat", "{input_dir}/data/{name}.txt"],
        groups=[{"name": "f01"}, {"name": "f07"}],
        inputs=["data/{name}.txt"],
    )
    # No storage folder yet: nothing to check (and nothing is created), said in a note.
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 0 and "inputs are not checked" in result.stderr
    assert not (proj / ".ds").exists()
    data = proj / ".ds" / "T" / "buckets" / "default" / "data"
    data.mkdir(parents=True)
    (data / "f01.txt").write_text("1")
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "job.json: groups[1]" in line and "'data/f07.txt'" in line
    assert "recipe.inputs[0]" in line and str(data / "f07.txt") in line
    (data / "f07.txt").write_text("7")
    assert ds("validate", "--job", "job.json", cwd=proj).returncode == 0


def test_validate_samples_the_inputs_of_a_large_job(tmp_path: Path, ds: Ds) -> None:
    names = [f"n{i:05d}" for i in range(1500)]
    proj = write_project(
        tmp_path / "p",
        argv=["cat", "{input_dir}/{name}"],
        groups=[{"name": n} for n in names],
        inputs=["in/{name}"],
    )
    folder = proj / ".ds" / "T" / "buckets" / "default" / "in"
    folder.mkdir(parents=True)
    for n in names:
        (folder / n).write_text(n)
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 0, result.stderr
    assert "inputs of 200 of the 1500 tasks" in result.stderr.replace("\n", " ")
    (folder / names[-1]).unlink()  # the last task is always in the sample
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2 and f"'in/{names[-1]}'" in result.stderr


def test_validate_finds_names_and_arguments_too_long(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(
        tmp_path / "p", argv=["true", "{name}"], groups=[{"name": "a" * 300}, {"name": "ok"}]
    )
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "job.json: groups[0]" in line and "a name of 300 bytes" in line and "255" in line
    proj = write_project(
        tmp_path / "q",
        argv=["true", "{name}"],
        groups=[{"name": "b" * (128 * 1024 + 1)}],
        output_prefix="out/{task_id}",
    )
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "recipe.argv[1] renders to 131073 bytes" in line


# --- ds doctor on moto --------------------------------------------------------------------------


#: An AMI moto knows (listing its images is slow).
MOTO_AMI = "ami-12c6146b"


def aws_project(folder: Path, **aws: Any) -> Path:
    return write_project(
        folder,
        argv=["true"],
        groups=["a"],
        extra={
            "backend": "aws",
            "storage": {"bucket": "doctor-bucket"},
            "aws": {"region": "us-east-1", **aws},
        },
        app_name="Doc",
    )


def findings(result: CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in json.loads(result.stdout)}


def test_doctor_says_what_is_missing_and_how_to_fix_it(tmp_path: Path, ds: Ds, aws: str) -> None:
    import boto3

    proj = aws_project(tmp_path / "p", ssh_key_name="doc-key")
    result = ds("doctor", "--json", cwd=proj)
    assert result.returncode == 1, result.stderr
    found = findings(result)
    assert found["credentials"]["ok"] and found["region"]["ok"]
    for check in ("role Doc-spot-fleet-role", "role Doc-ecs-instance-role"):
        assert not found[check]["ok"] and "ds aws bootstrap" in found[check]["fix"]
    assert not found["instance profile Doc-ecs-instance-profile"]["ok"]
    assert not found["key pair doc-key"]["ok"]
    assert "aws.ssh_key_name" in found["key pair doc-key"]["detail"]
    bucket = found["bucket doctor-bucket"]
    assert not bucket["ok"] and "does not exist" in bucket["detail"]
    assert "problem(s)" in result.stderr  # the table and the verdict on stderr

    # Make everything exist, as `ds aws bootstrap` and the user's VPC would.
    iam = boto3.client("iam", region_name="us-east-1")
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for role in ("Doc-spot-fleet-role", "Doc-ecs-instance-role"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName="Doc-ecs-instance-profile")
    iam.add_role_to_instance_profile(
        InstanceProfileName="Doc-ecs-instance-profile", RoleName="Doc-ecs-instance-role"
    )
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="doctor-bucket")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.create_key_pair(KeyName="doc-key")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="doc", Description="d", VpcId=vpc)["GroupId"]
    image = MOTO_AMI
    fleet = {
        "IamFleetRole": "arn:aws:iam::123456789012:role/Doc-spot-fleet-role",
        "LaunchSpecifications": [
            {
                "ImageId": image,
                "SubnetId": subnet,
                "SecurityGroups": [{"GroupId": group}],
                "IamInstanceProfile": {
                    "Arn": "arn:aws:iam::123456789012:instance-profile/Doc-ecs-instance-profile"
                },
            }
        ],
    }
    (proj / "fleet.json").write_text(json.dumps(fleet))
    result = ds("doctor", "--fleet", "fleet.json", "--json", cwd=proj)
    found = findings(result)
    assert result.returncode == 0, [f for f in found.values() if not f["ok"]]
    assert found[f"subnet {subnet}"]["ok"] and found[f"security group {group}"]["ok"]
    assert found[f"AMI {image}"]["ok"] and found["bucket doctor-bucket"]["ok"]
    assert found["instance profile Doc-ecs-instance-profile"]["detail"] == (
        "holds role Doc-ecs-instance-role"
    )
    assert "no run in progress" in found["cluster default"]["detail"]
    machines = found["instance types m5.large"]
    assert machines["ok"] and machines["detail"] == "a worker fits: m5.large 8,192 MiB / 2 vCPUs"

    # A fleet file naming what this account does not have: each named, with the field.
    fleet["LaunchSpecifications"][0]["SubnetId"] = "subnet-0123456789abcdef0"
    (proj / "fleet.json").write_text(json.dumps(fleet))
    result = ds("doctor", "--fleet", "fleet.json", "--json", cwd=proj)
    assert result.returncode == 1
    missing = findings(result)["subnet subnet-0123456789abcdef0"]
    assert not missing["ok"] and "LaunchSpecifications[0].SubnetId" in missing["detail"]

    # During a run: the run state names a cluster the fleet's instances never joined.
    from distributed_something.backends.aws.resources import AwsResources
    from distributed_something.state import new_state, save_state
    from distributed_something.usecases.project import open_project

    boto3.client("ecs", region_name="us-east-1").create_cluster(clusterName="DocCluster")
    fleet_id = ec2.request_spot_fleet(
        SpotFleetRequestConfig={
            "IamFleetRole": "arn:aws:iam::123456789012:role/Doc-spot-fleet-role",
            "TargetCapacity": 1,
            "AllocationStrategy": "lowestPrice",
            "LaunchSpecifications": [{"ImageId": MOTO_AMI, "InstanceType": "m5.large"}],
        }
    )["SpotFleetRequestId"]
    project = open_project(proj / "ds.toml")
    state = new_state(project, "aws", 0)
    AwsResources(cluster="DocCluster", fleet_request_id=fleet_id).into(state.resources)
    save_state(project, state)
    result = ds("doctor", "--json", cwd=proj)
    assert result.returncode == 1
    cluster = findings(result)["cluster DocCluster"]
    assert not cluster["ok"] and "0 instance(s) registered, 1 running" in cluster["detail"]


def test_doctor_says_a_worker_larger_than_the_machines_never_starts(
    tmp_path: Path, ds: Ds, aws: str
) -> None:
    proj = aws_project(tmp_path / "p", machine_type=["m5.large", "c5.large"])
    config = tomllib.loads((proj / "ds.toml").read_text())
    config["cluster"]["memory"] = 9000
    (proj / "ds.toml").write_text(tomli_w.dumps(config))
    found = findings(ds("doctor", "--json", cwd=proj))["instance types m5.large, c5.large"]
    assert not found["ok"] and "larger than every machine" in found["detail"]
    assert "cluster.memory" in found["fix"]


def test_doctor_sees_fleet_instances_that_did_not_join_the_cluster(aws: str) -> None:
    import boto3

    from distributed_something.backends.aws.clients import AwsClients, AwsSettings
    from distributed_something.backends.aws.doctor_checks import check_cluster

    clients = AwsClients(AwsSettings("us-east-1"))
    ecs = boto3.client("ecs", region_name="us-east-1")
    ecs.create_cluster(clusterName="DocCluster")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    fleet_id = ec2.request_spot_fleet(
        SpotFleetRequestConfig={
            "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "TargetCapacity": 2,
            "AllocationStrategy": "lowestPrice",  # moto requires it (AWS defaults it)
            "LaunchSpecifications": [{"ImageId": MOTO_AMI, "InstanceType": "m5.large"}],
        }
    )["SpotFleetRequestId"]
    running = ec2.describe_spot_fleet_instances(SpotFleetRequestId=fleet_id)["ActiveInstances"]
    assert len(running) == 2  # moto starts the fleet's instances; none joined the cluster
    (finding,) = check_cluster(clients, "DocCluster", fleet_id)
    assert not finding.ok
    assert finding.detail.startswith("0 instance(s) registered, 2 running in fleet")
    assert "instance profile" in finding.fix
    (gone,) = check_cluster(clients, "NoSuchCluster", None)
    assert not gone.ok and "does not exist" in gone.detail


def test_doctor_needs_aws(tmp_path: Path, ds: Ds) -> None:
    proj = write_project(tmp_path / "p", argv=["true"], groups=[{"name": "a"}])
    result = ds("doctor", cwd=proj)
    assert result.returncode == 2 and "--backend aws" in result.stderr


@pytest.fixture(autouse=True)
def _no_inherited_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS_BACKEND", raising=False)


# --- the pieces, on their own ------------------------------------------------------------------


def test_control_sequences_cut_by_chunk_boundaries_are_still_removed() -> None:
    from distributed_something.usecases.run_info import ControlStripper, strip_controls

    text = (
        "\x1b[1;31mred\x1b[0m \x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ "
        "\x1b(Bbar 10%\rbar 90%\r\nend\x00\x08\ttab\x9b2Kdone\n"
    )
    expected = "red link bar 10%\nbar 90%\nend\ttabdone\n"
    assert strip_controls(text) == expected
    for size in (1, 2, 3, 7):  # every place a chunk boundary can fall
        stripper = ControlStripper()
        pieces = [stripper.feed(text[i : i + size]) for i in range(0, len(text), size)]
        assert "".join(pieces) + stripper.flush() == expected


def test_first_error_line_skips_our_header_and_finds_the_exception() -> None:
    from distributed_something.report.build import first_error_line, short_group

    header = "ds: task abc attempt 1 on w\nds: argv ['x']\n"
    assert first_error_line(header + "reading\nERROR: empty file\n", "exit 1") == (
        "ERROR: empty file"
    )
    traceback = (
        'Traceback (most recent call last):\n  File "t.py", line 1\n    boom()\nKeyError: 3\n'
    )
    assert first_error_line(header + traceback, "exit 1") == "KeyError: 3"
    assert first_error_line(header + "all good\n", "command exited with code 1") == (
        "command exited with code 1"
    )
    assert short_group({"name": "f07"}) == "f07"
    assert short_group({"Plate": "P1", "Well": "A01"}) == "Plate=P1, Well=A01"
    assert short_group({"name": "x" * 100}).endswith("…")


def test_validate_finds_a_missing_cellprofiler_pipeline_and_data_file(
    tmp_path: Path, ds: Ds
) -> None:
    proj = tmp_path / "dcp"
    proj.mkdir()
    (proj / "ds.toml").write_text('app_name = "T"\n[recipe]\nname = "cellprofiler"\n')
    job = {
        "pipeline": "projects/p/analysis.cppipe",
        "data_file": "projects/p/load_data.csv",
        "input": "projects/p/images",
        "output": "projects/p/out",
        "output_structure": "Metadata_Plate",
        "groups": [{"Metadata": "Metadata_Plate=P1"}],
    }
    (proj / "job.json").write_text(json.dumps(job))
    workspace = proj / ".ds" / "T" / "buckets" / "default" / "projects" / "p"
    workspace.mkdir(parents=True)
    (workspace / "load_data.csv").write_text(
        "Metadata_Plate,FileName_DNA,PathName_DNA\nP1,a.tif,projects/p/images\n"
    )
    result = ds("validate", "--job", "job.json", cwd=proj)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "job.json: pipeline: names 'projects/p/analysis.cppipe'" in line and "Fix:" in line
    (workspace / "analysis.cppipe").write_text("CellProfiler Pipeline")
    assert ds("validate", "--job", "job.json", cwd=proj).returncode == 0


def test_doctor_looks_up_each_subnet_a_network_interface_lists() -> None:
    """A network interface's SubnetId may list several (DCP's 2016 fleet file): each is
    looked up, not the list as one id."""
    from distributed_something.backends.aws.doctor import _ec2_resources

    fleet = {
        "LaunchSpecifications": [
            {"NetworkInterfaces": [{"SubnetId": "subnet-0a1b2c3d, subnet-1a2b3c4d"}]}
        ]
    }
    found = [(kind, name) for kind, name, _ in _ec2_resources(fleet, "fleet.json", "")]
    assert found == [("subnet", "subnet-0a1b2c3d"), ("subnet", "subnet-1a2b3c4d")]


#: Fails its first attempt (exit 5, saying why), succeeds after; writes ``files`` outputs.
FLAKY = (
    "import pathlib, sys\n"
    "name, out, files = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])\n"
    "seen = pathlib.Path(sys.argv[4]) / name\n"
    "if name.startswith('flaky') and not seen.exists():\n"
    "    seen.write_text('tried')\n"
    "    print('flaky: the license server did not answer', file=sys.stderr)\n"
    "    sys.exit(5)\n"
    "for i in range(files):\n"
    "    (out / f'{i}.txt').write_text(name)\n"
)


def test_the_summary_says_which_tasks_needed_a_retry_and_which_fell_short_of_the_count(
    tmp_path: Path, ds: Ds
) -> None:
    script, seen = tmp_path / "flaky.py", tmp_path / "seen"
    script.write_text(FLAKY)
    seen.mkdir()
    proj = write_project(
        tmp_path / "p",
        argv=[sys.executable, str(script), "{name}", "{output_dir}", "{files}", str(seen)],
        groups=[
            {"name": "flaky1", "files": 2},
            {"name": "steady", "files": 2},
            {"name": "short", "files": 1},
        ],
        extra={"check_if_done": {"expected_number_files": 2}},
    )
    result = ds("run", str(proj), "--json", "--interval", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "1 task was done after a retry (exit ×1): `ds report --trace trace.tsv` lists" in said
    assert (
        "1 task was done with fewer outputs than check_if_done.expected_number_files (2): the "
        "count decides what is done, so submitting the job again runs them again"
    ) in said
    report = json.loads(result.stdout)
    assert report["retried"] == {"exit": 1} and report["short_of_expected"] == 1
    by_name = {t["group"]["name"]: t for t in report["tasks"]}
    assert by_name["flaky1"]["retried_after"] == (
        "exit: command exited with code 5: flaky: the license server did not answer"
    )
    assert by_name["steady"]["retried_after"] is None and by_name["steady"]["attempts"] == 1
    # Asked as a dead task, it says what it is.
    shown = ds("dead", "show", "name=flaky1", cwd=proj)
    assert shown.returncode == 2
    assert f"the task {by_name['flaky1']['id']} is not dead: it is done after 2 attempts" in (
        " ".join(shown.stderr.split())
    )
    # Its first attempt's stored log ends with how it ended.
    logs = ds("logs", "name=flaky1", cwd=proj)
    assert logs.stdout.rstrip().endswith(
        "ds: attempt 1 ended: failed (exit): command exited with code 5: flaky: the license "
        "server did not answer"
    )


def test_dead_show_names_the_signal_that_ended_an_attempt() -> None:
    # A command ended at its time limit (SIGTERM) or by a signal: its code is negative in
    # the records (Python's way), "exit -15" beside cause timeout read as a real exit code.
    from distributed_something.report.render import dead_task_text

    failures = [
        {"attempt": 1, "at": 1.0, "cause": "timeout", "exit_code": -15, "error": "over 2s"},
        {"attempt": 2, "at": 2.0, "cause": "exit", "exit_code": 3, "error": "code 3"},
        {"attempt": 3, "at": 3.0, "cause": "lost", "exit_code": None, "error": "died"},
    ]
    text = dead_task_text({"task_id": "t1", "attempts": 3, "failures": failures})
    lines = [line for line in text.splitlines() if line.startswith("  #")]
    assert "signal SIGTERM  over 2s" in lines[0] and "exit -15" not in text
    assert "exit 3  code 3" in lines[1] and "exit -  died" in lines[2]
