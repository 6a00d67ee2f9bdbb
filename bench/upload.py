"""Benchmark `upload`: 1,000 files of 100 KB to S3 on a moto server on 127.0.0.1.

Ours: `S3Storage.put_files` of distributed_something (boto3's transfer manager, files
uploaded ``threads`` at a time; the product's default of 10), run in a fresh Python
process so that, like the CLI, it pays its interpreter start and imports.
Baseline: ``aws s3 cp --recursive DIR s3://bucket/prefix/`` (the AWS CLI, what the family's
workers ran to upload outputs), from a throwaway venv under /tmp (it pins its own
botocore, so it stays out of the project's), pointed at moto with ``--endpoint-url`` and
fake credentials; default settings (10 concurrent requests).

Both upload the same files to the same moto server (``python -m moto.server``, started
here on 127.0.0.1 and stopped by its pid), to different prefixes; each side runs
``--repeat`` times (3) alternately, and the median counts. Every object is checked to
have arrived with its size.
Unit: seconds, lower is better; ratio = baseline / ours (above 1: we are faster).
Target: ratio >= 1 (no slower); aim for 2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.s3_storage import S3Storage
folder, bucket, prefix, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
settings = AwsSettings(region="us-east-1")
files = sorted(folder.iterdir())
if mode == "put_files":
    S3Storage(settings, bucket).put_files([(prefix + p.name, p) for p in files])
else:
    # The suggested change: one transfer manager (one thread pool) for every file, instead
    # of one per file as put_files gets from client.upload_file.
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    with create_transfer_manager(client("s3", settings), TransferConfig(max_concurrency=10)) as tm:
        for future in [tm.upload(str(p), bucket, prefix + p.name) for p in files]:
            future.result()
print(time.perf_counter() - started)
"""


# Client cost per file, one file at a time: S3Storage's path (client.upload_file, one
# TransferManager per call) vs a plain PutObject. Prints the two mean seconds per file.
PER_FILE_SCRIPT = """
import sys, time
from pathlib import Path
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.s3_storage import S3Storage
folder, bucket, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
settings = AwsSettings(region="us-east-1")
files = sorted(folder.iterdir())[:n]
storage = S3Storage(settings, bucket, threads=1)
s3 = client("s3", settings)
storage.put_file("warm/a", files[0])
s3.put_object(Bucket=bucket, Key="warm/b", Body=files[0].read_bytes())
started = time.perf_counter()
for p in files:
    storage.put_file("single/" + p.name, p)
upload = (time.perf_counter() - started) / len(files)
started = time.perf_counter()
for p in files:
    s3.put_object(Bucket=bucket, Key="plain/" + p.name, Body=p.read_bytes())
print(upload, (time.perf_counter() - started) / len(files))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return url, proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


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
            ours: list[float] = []
            ours_wall: list[float] = []
            shared: list[float] = []
            base: list[float] = []
            for round_ in range(args.repeat):
                for mode, prefix, times in (
                    ("put_files", f"ours{round_}/", ours_wall),
                    ("one_manager", f"shared{round_}/", shared),
                ):
                    started = time.perf_counter()
                    done = subprocess.run(
                        [
                            sys.executable,
                            str(scratch / "ours.py"),
                            str(folder),
                            BUCKET,
                            prefix,
                            mode,
                        ],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    times.append(time.perf_counter() - started)
                    if mode == "put_files":
                        ours.append(float(done.stdout.strip()))
                started = time.perf_counter()
                subprocess.run(
                    [
                        str(aws),
                        "s3",
                        "cp",
                        "--recursive",
                        "--only-show-errors",
                        str(folder),
                        f"s3://{BUCKET}/cli{round_}/",
                        "--endpoint-url",
                        url,
                    ],
                    env=env,
                    check=True,
                )
                base.append(time.perf_counter() - started)
            per_file = subprocess.run(
                [sys.executable, "-c", PER_FILE_SCRIPT, str(folder), BUCKET, "200"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            upload_ms, put_ms = (float(value) * 1000 for value in per_file)
            for round_ in range(args.repeat):
                for prefix in (f"ours{round_}/", f"shared{round_}/", f"cli{round_}/"):
                    sizes = listed(env, prefix)
                    assert len(sizes) == args.files, (prefix, len(sizes))
                    assert set(sizes.values()) == {args.size}, prefix
        finally:
            moto.terminate()
            moto.wait(timeout=10)

    ours_s, base_s = statistics.median(ours_wall), statistics.median(base)
    ratio = base_s / ours_s
    megabytes = args.files * args.size / 1e6
    print(f"{args.files} files x {args.size // 1024} KB = {megabytes:.0f} MB to moto on {url}")
    print(f"baseline CLI: {version.stdout.strip() or version.stderr.strip()}")
    print(
        f"ours (fresh process): {', '.join(f'{s:.2f}' for s in ours_wall)} s -> {ours_s:.2f} s "
        f"({megabytes / ours_s:.0f} MB/s); put_files alone: "
        f"{statistics.median(ours):.2f} s"
    )
    print(
        f"aws s3 cp --recursive: {', '.join(f'{s:.2f}' for s in base)} s -> {base_s:.2f} s "
        f"({megabytes / base_s:.0f} MB/s)"
    )
    shared_s = statistics.median(shared)
    print(
        f"suggested put_files (one transfer manager for all files): "
        f"{', '.join(f'{s:.2f}' for s in shared)} s -> {shared_s:.2f} s, "
        f"ratio {base_s / shared_s:.2f}x"
    )
    met = ratio >= TARGET_RATIO
    print(
        f"TARGET met={'yes' if met else 'no'} ratio {ratio:.2f}x (target >= "
        f"{TARGET_RATIO:.0f}x, aim {AIM_RATIO:.0f}x: {'reached' if ratio >= AIM_RATIO else 'not'})"
    )
    print(
        "LIMIT the moto server: one Python process (werkzeug threads, one interpreter lock) "
        "parses and stores every PUT, on the same 2 cores as the client; both sides wait on "
        "it, so this measures client CPU per file more than network throughput"
    )
    print(
        "LIMIT put_files calls client.upload_file per file (backends/aws/s3_storage.py "
        "S3Storage._upload): each call builds its own s3transfer TransferManager and thread "
        f"pool: one file at a time, put_file took {upload_ms:.1f} ms a file and a plain "
        f"PutObject {put_ms:.1f} ms (200 files)"
    )
    if not met:
        print(
            "FIX backends/aws/s3_storage.py put_files: one s3transfer TransferManager for "
            "every file (boto3.s3.transfer.create_transfer_manager(client, TransferConfig("
            "max_concurrency=threads, multipart thresholds as now)), submit each upload, wait "
            "on the futures) instead of client.upload_file per file"
        )
    print(f"RESULT upload ours={ours_s:.2f} baseline={base_s:.2f} ratio={ratio:.2f} unit=s")


if __name__ == "__main__":
    main()
