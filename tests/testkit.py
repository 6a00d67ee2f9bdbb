"""Test data and fakes shared by several test files: the family's fleet file filled in, and a
fake clock."""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from distributed_something.interfaces.compute import ComputeStatus
from family_templates import FAMILY_FLEET


def dcp_fleet(*, valid_until: str | None = None) -> dict[str, Any]:
    """A fresh copy of the family's files/exampleFleet_us-east-1.json (`FAMILY_FLEET`) with
    its account ids, subnet and security group filled in; with ``valid_until``, the file also
    carries that ``ValidUntil`` (as copies of the family's file do, long expired). Callers
    may change the copy freely."""
    data = copy.deepcopy(FAMILY_FLEET)
    data["IamFleetRole"] = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"
    spec = data["LaunchSpecifications"][0]
    spec["IamInstanceProfile"]["Arn"] = "arn:aws:iam::123456789012:instance-profile/ecsInstanceRole"
    spec["NetworkInterfaces"][0]["SubnetId"] = "subnet-0123abcd"
    spec["NetworkInterfaces"][0]["Groups"] = ["sg-0123abcd"]
    if valid_until is None:
        return data
    # After TerminateInstancesWithExpiration, where the family's copies carry it.
    items = list(data.items())
    at = [key for key, _ in items].index("TerminateInstancesWithExpiration") + 1
    return dict([*items[:at], ("ValidUntil", valid_until), *items[at:]])


#: The ValidUntil of the family file as users' copies carry it: long expired.
FAMILY_VALID_UNTIL = "2019-01-01T00:00:00Z"


def moto_family_fleet(ec2: Any) -> dict[str, Any]:
    """The family's fleet file (expired ValidUntil included) pointed at moto's default
    subnet and security group, read through the EC2 client ``ec2``."""
    data = dcp_fleet(valid_until=FAMILY_VALID_UNTIL)
    interface = data["LaunchSpecifications"][0]["NetworkInterfaces"][0]
    interface["SubnetId"] = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    interface["Groups"] = [ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]]
    return data


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the folder ``root`` while the block runs (as a
    lab's web server serves the script a DF config's SCRIPT_DOWNLOAD_URL names); yields its
    base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeClock:
    """A clock that moves only when something sleeps: call it for the time, pass ``sleep``
    as the sleep function; ``sleeps`` lists every sleep asked for, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        # Not zero by default: code that takes 0 for "no time yet" would pass unnoticed.
        self.start = start
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move time on without recording a sleep."""
        self.now += seconds


class NoCompute:
    """A `Compute` with no workers, for a worker driven by hand."""

    def start(self, n: int) -> None: ...
    def scale(self, n: int) -> None: ...
    def status(self) -> ComputeStatus:
        return ComputeStatus(0, 0)

    def scale_machines(self, n: int) -> None: ...
    def housekeeping(self) -> None: ...
    def stop(self) -> None: ...
    def cleanup(self) -> None: ...


class NoProvisioner:
    """A `Provisioner` that creates nothing."""

    def setup(self, state: Any, save: Any) -> None: ...
    def start(self, state: Any, fleet: Any, workers: int, save: Any) -> None: ...
    def teardown(self, state: Any, save: Any) -> None: ...


def omezarr_modules() -> tuple[Any, Any, Any, Any]:
    """numpy, tifffile, ome_zarr.reader and ome_zarr.io, or a skip naming the extra that
    installs them (`make examples` does: under CI=true the skip fails)."""
    import pytest

    np = pytest.importorskip("numpy")
    tifffile = pytest.importorskip("tifffile")
    missing = "the omezarr extra is not installed: pip install -e '.[omezarr]' (make examples)"
    pytest.importorskip("zarr", reason=missing)
    reader = pytest.importorskip("ome_zarr.reader", reason=missing)
    ome_io = pytest.importorskip("ome_zarr.io", reason=missing)
    return np, tifffile, reader, ome_io
