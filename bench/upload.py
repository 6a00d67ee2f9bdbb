"""Benchmark `upload`: 1,000 files of 100 KB to S3 on a moto server on 127.0.0.1.

Ours: `S3Storage.put_files` of distributed_something (one boto3/s3transfer transfer manager
for all the files, ``threads`` uploads at a time; the product's default of 10), run in a
fresh Python process so that, like the CLI, it pays its interpreter start and imports.
Baseline: ``aws s3 cp --recursive DIR s3://bucket/prefix/`` (the AWS CLI, what the family's
workers ran to upload outputs), from a throwaway venv under /tmp (it pins its own
botocore, so it stays out of the project's), pointed at moto with ``--endpoint-url`` and
fake credentials; default settings (10 concurrent requests).

Both upload the same files to the same moto server (``python -m moto.server``, started
here on 127.0.0.1 by tests/motoserver.py and stopped by its pid), to different prefixes;
each side runs ``--repeat`` times (3) alternately, and the median counts. Every object is
checked to have arrived with its size. The CPU seconds of each side and of the moto server
during each side's runs are printed too: the server's are the floor of both times.
Unit: seconds, lower is better; ratio = baseline / ours (above 1: we are faster).
Target: ratio >= 1 (no slower); aim for 2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The moto starter the tests use (tests/motoserver.py): bench scripts run as
# `python bench/upload.py`, so that folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from motoserver import start_moto, stop_moto

TARGET_RATIO = 1.0
AIM_RATIO = 2.0
BUCKET = "bench-upload"
AWSCLI_VENV = Path("/tmp/ds-bench-awscli")
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
OURS_SCRIPT = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from distributed_something.backends.aws.clients import AwsSettings
from distributed_something.backends.aws.s3_storage import S3Storage
folder, bucket, prefix = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
files = sorted(folder.iterdir())
S3Storage(AwsSettings(region="us-east-1"), bucket).put_files([(prefix + p.name, p) for p in files])
print(time.perf_counter() - started)
"""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the live process ``pid`` (None without Linux's /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Side:
    """One side's runs: wall seconds, its own CPU seconds and the moto server's."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.server_cpu: list[float] = []

    def run(self, argv: list[str], env: dict[str, str], server_pid: int) -> str:
        """Run ``argv`` to completion, recording its costs; returns its standard output."""
        server_before, cpu_before = cpu_seconds(server_pid), children_cpu()
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        self.wall.append(time.perf_counter() - started)
        self.cpu.append(children_cpu() - cpu_before)
        server_after = cpu_seconds(server_pid)
        if server_before is not None and server_after is not None:
            self.server_cpu.append(server_after - server_before)
        return done.stdout


def awscli() -> Path | None:
    """The throwaway venv's `aws`, installed on first use; None when pip cannot."""
    aws = AWSCLI_VENV / "bin" / "aws"
    if aws.exists():
        return aws
    if subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)]).returncode != 0:
        return None
    pip = [str(AWSCLI_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "awscli"]
    if subprocess.run(pip, capture_output=True).returncode != 0:
        return None
    return aws


def listed(env: dict[str, str], prefix: str) -> dict[str, int]:
    """Key -> size of every object under ``prefix`` (through the project's boto3)."""
    script = (
        "import boto3, json, sys\n"
        "s3 = boto3.client('s3')\n"
        "out = {}\n"
        "for page in s3.get_paginator('list_objects_v2').paginate("
        "Bucket=sys.argv[1], Prefix=sys.argv[2]):\n"
        "    out.update({o['Key']: o['Size'] for o in page.get('Contents', [])})\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, BUCKET, prefix],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    sizes: dict[str, int] = json.loads(done.stdout)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--size", type=int, default=100 * 1024, help="bytes per file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    aws = awscli()
    if aws is None:
        print("TARGET met=no the AWS CLI could not be installed: no baseline")
        print("RESULT upload ours=nan baseline=nan ratio=nan unit=s")
        return
    version = subprocess.run([str(aws), "--version"], capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="ds-bench-upload-") as tmp:
        scratch = Path(tmp)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AWS_") and key not in ("PYTHONPATH",)
        }
        env.update(FAKE_ENV)
        env["AWS_CONFIG_FILE"] = str(scratch / "no-aws-config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "no-aws-credentials")
        url, moto = start_moto(env)
        try:
            env["AWS_ENDPOINT_URL"] = url
            folder = scratch / "files"
            folder.mkdir()
            for i in range(args.files):
                (folder / f"img_{i:04d}.tif").write_bytes(os.urandom(args.size))
            (scratch / "ours.py").write_text(OURS_SCRIPT)
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')",
                ],
                env=env,
                check=True,
            )
            ours, base = Side(), Side()
            put_files: list[float] = []
            for round_ in range(args.repeat):
                script = [sys.executable, str(scratch / "ours.py"), str(folder), BUCKET]
                put_files.append(float(ours.run([*script, f"ours{round_}/"], env, moto.pid)))
                cli = [str(aws), "s3", "cp", "--recursive", "--only-show-errors", str(folder)]
                target = f"s3://{BUCKET}/cli{round_}/"
                base.run([*cli, target, "--endpoint-url", url], env, moto.pid)
            for round_ in range(args.repeat):
                for prefix in (f"ours{round_}/", f"cli{round_}/"):
                    sizes = listed(env, prefix)
                    assert len(sizes) == args.files, (prefix, len(sizes))
                    assert set(sizes.values()) == {args.size}, prefix
        finally:
            stop_moto(moto)

    ours_s, base_s = statistics.median(ours.wall), statistics.median(base.wall)
    ratio = base_s / ours_s
    megabytes = args.files * args.size / 1e6
    print(f"{args.files} files x {args.size // 1024} KB = {megabytes:.0f} MB to moto on {url}")
    print(f"baseline CLI: {version.stdout.strip() or version.stderr.strip()}")
    for name, side in (("ours (fresh process)", ours), ("aws s3 cp --recursive", base)):
        wall = statistics.median(side.wall)
        print(
            f"{name}: {', '.join(f'{s:.2f}' for s in side.wall)} s -> {wall:.2f} s "
            f"({megabytes / wall:.0f} MB/s); its CPU {statistics.median(side.cpu):.2f} s"
            + (
                f", the moto server's CPU {statistics.median(side.server_cpu):.2f} s"
                if side.server_cpu
                else ""
            )
        )
    print(f"put_files alone (no interpreter start): {statistics.median(put_files):.2f} s")
    met = ratio >= TARGET_RATIO
    print(
        f"TARGET met={'yes' if met else 'no'} ratio {ratio:.2f}x (target >= "
        f"{TARGET_RATIO:.0f}x, aim {AIM_RATIO:.0f}x: {'reached' if ratio >= AIM_RATIO else 'not'})"
    )
    if ours.server_cpu and base.server_cpu:
        server_s = statistics.median(ours.server_cpu + base.server_cpu)
        print(
            f"LIMIT the moto server: one Python process whose CPU per run ({server_s:.2f} s, "
            f"{server_s / args.files * 1000:.1f} ms per PUT, the same for both sides: mostly "
            "its own dispatch, which lists its package folder on every request under one "
            "lock) is the floor of both times; ours can be at best "
            f"{base_s / server_s:.1f}x the CLI here, whatever the client does"
        )
    print(
        "LIMIT the client: botocore's per-request work (signing, user agent, headers, a new "
        "connection per request as moto closes each) is most of our CPU; it shares the 2 "
        "cores with the server"
    )
    print(f"RESULT upload ours={ours_s:.2f} baseline={base_s:.2f} ratio={ratio:.2f} unit=s")


if __name__ == "__main__":
    main()
