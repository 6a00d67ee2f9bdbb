"""What a worker does on its EC2 instance besides the task loop (docs/design.md §2 Worker, §5).

- `Imds`: the instance metadata service, IMDSv2 only (a session token on every request).
- `InterruptionWatcher`: polls for a spot interruption notice and tells the worker once.
- `ResourceLogger`: logs disk, memory and CPU use of the machine at an interval.
- `tag_instance_name`, `ensure_idle_alarm`: the instance's Name tag and its idle-CPU alarm
  (terminates a stalled instance); `alarms_of_terminated` finds the alarms of instances
  that are gone (`compute.delete_alarms` deletes them); `terminate_instance` (the idle
  shutdown's last step).

Everything here also works off EC2: `imds_from_env` returns None when there is no metadata
service, and the threads never raise. `find_imds` also tells "not on EC2" from "on EC2, but
the IMDSv2 token request gets no answer" (a container behind bridge networking on an
instance whose PUT response hop limit is 1). The hop limit applies to PUT responses only: where
the instance also takes IMDSv1 requests, `Imds` reads without a token, as the AWS SDKs fall
back (unless ``AWS_EC2_METADATA_V1_DISABLED`` is true). Otherwise the spot watcher, the idle
shutdown and the idle alarm are off, so it must be said loudly (`HOP_LIMIT_PROBLEM`).
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from distributed_something.backends.aws.clients import partition
from distributed_something.backends.aws.errors import call, chunks
from distributed_something.background import BackgroundThread
from distributed_something.errors import BackendError

log = logging.getLogger("ds.instance")

DEFAULT_METADATA_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"

# Seconds before a token's expiry at which a new one is fetched, so a request never races it.
_TOKEN_MARGIN = 60.0

#: What a worker logs (once, as a WARNING) when the instance has a metadata service but the
#: IMDSv2 token request times out: the cause and the two fixes.
HOP_LIMIT_PROBLEM = (
    "instance metadata unreachable from this container: the IMDSv2 token request timed out "
    "while the metadata service answers, so the instance's PUT response hop limit is 1 "
    "(containers on bridge networking need 2); spot interruption notices, the idle "
    "shutdown and the idle-CPU alarm are OFF. Fix: `aws ec2 modify-instance-metadata-options "
    "--instance-id <id> --http-put-response-hop-limit 2 --http-endpoint enabled` (or in the "
    "fleet file's launch specification / AMI), or use the ECS-optimized AMI (hop limit 2)"
)


#: The same, in an ECS task whose metadata service answers nothing at all: the hop limit is
#: the usual cause, a disabled metadata endpoint the other.
ECS_NO_METADATA_PROBLEM = (
    "instance metadata unreachable from this ECS task: the IMDSv2 token request timed out "
    "(the instance's PUT response hop limit is 1 — containers on bridge networking need 2 — "
    "or its metadata endpoint is disabled); spot interruption notices, the idle shutdown "
    "and the idle-CPU alarm are OFF. Fix: `aws ec2 modify-instance-metadata-options "
    "--instance-id <id> --http-put-response-hop-limit 2 --http-endpoint enabled`, or use the "
    "ECS-optimized AMI (hop limit 2)"
)


class TokenUnanswered(BackendError):
    """The IMDSv2 token request (PUT) got no HTTP answer; ``timed_out`` when it timed out
    (rather than being refused)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


# --- instance metadata (IMDSv2) -------------------------------------------------------------


class Imds:
    """A client of the EC2 instance metadata service, IMDSv2 only, with urllib.

    A session token is fetched with ``PUT /latest/api/token`` (lifetime ``token_ttl`` seconds)
    and sent as ``X-aws-ec2-metadata-token`` on every GET; it is fetched again shortly before
    it expires (by ``clock``) and once more when the service answers 401. Proxies from the
    environment are never used: the service is link-local.

    ``get`` returns the body as text, or None when the path does not exist (404). Any other
    failure — no answer within ``timeout`` seconds, an unexpected status — raises
    `BackendError`. Safe to share between threads.

    In a container with bridge networking the token PUT needs a response hop limit of at
    least 2 on the instance (``HttpPutResponseHopLimit``); with 1 the PUT times out. With
    ``v1`` no token is asked for or sent (IMDSv1, where the instance allows it: `find_imds`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_METADATA_URL,
        *,
        timeout: float = 2.0,
        token_ttl: int = 21600,
        clock: Callable[[], float] = time.monotonic,
        v1: bool = False,
    ) -> None:
        if not 1 <= token_ttl <= 21600:
            raise ValueError("token_ttl must be between 1 and 21600 seconds")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl
        self.v1 = v1
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        # An opener without proxy handling: HTTP(S)_PROXY must never see metadata requests.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # public ------------------------------------------------------------------------------
    def get(self, path: str) -> str | None:
        """The text at ``path`` (e.g. "/latest/meta-data/instance-id"), None on 404.

        A path without a leading slash is taken under /latest/meta-data/.
        """
        if not path.startswith("/"):
            path = "/latest/meta-data/" + path
        for attempt in range(1 if self.v1 else 2):
            headers: dict[str, str] = {}
            if not self.v1:
                headers["X-aws-ec2-metadata-token"] = self._current_token(renew=attempt > 0)
            status, body = self._request("GET", path, headers)
            if status == 200:
                return body
            if status == 404:
                return None
            if status != 401:
                raise BackendError(
                    f"instance metadata {path} answered HTTP {status}; check the instance's "
                    "metadata options (IMDSv2 enabled, endpoint on)"
                )
        raise BackendError(
            f"instance metadata {path} refused a fresh token (HTTP 401); check the instance's "
            "metadata options"
            if not self.v1
            else f"instance metadata {path} now requires IMDSv2 (HTTP 401 without a token)"
        )

    def instance_id(self) -> str:
        """This instance's id (i-…)."""
        return self._required("/latest/meta-data/instance-id")

    def instance_type(self) -> str:
        """This instance's type (e.g. m5.large)."""
        return self._required("/latest/meta-data/instance-type")

    def region(self) -> str:
        """The region this instance runs in (e.g. us-east-1)."""
        return self._required("/latest/meta-data/placement/region")

    def availability_zone(self) -> str:
        """The Availability Zone this instance runs in (e.g. us-east-1a)."""
        return self._required("/latest/meta-data/placement/availability-zone")

    # internals -----------------------------------------------------------------------------
    def _required(self, path: str) -> str:
        value = self.get(path)
        if value is None:
            raise BackendError(f"instance metadata has no {path}")
        return value.strip()

    def _current_token(self, *, renew: bool) -> str:
        with self._lock:
            if renew or self._token is None or self._clock() >= self._token_expires:
                self._token = self._fetch_token()
                self._token_expires = self._clock() + max(
                    self.token_ttl - _TOKEN_MARGIN, self.token_ttl / 2
                )
            return self._token

    def answers(self) -> bool:
        """Whether anything answers a plain GET of /latest/meta-data/ with an HTTP status
        (401 when IMDSv2 is required): a metadata service is there. Never raises."""
        try:
            self._request("GET", "/latest/meta-data/", {})
        except BackendError:
            return False
        return True

    def _fetch_token(self) -> str:
        try:
            status, body = self._request(
                "PUT", TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)}
            )
        except _Unanswered as exc:
            raise TokenUnanswered(str(exc), timed_out=exc.timed_out) from None
        if status != 200 or not body:
            raise BackendError(
                f"instance metadata at {self.base_url} gave no IMDSv2 token (HTTP {status}); "
                "check that the metadata endpoint is enabled for the instance"
            )
        return body

    def _request(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.base_url + path, method=method, headers=dict(headers))
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return int(response.status), response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code), ""
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unanswered(
                f"instance metadata at {self.base_url} did not answer {method} {path}: {reason}",
                timed_out=isinstance(reason, TimeoutError) or "timed out" in str(reason),
            ) from None


class _Unanswered(BackendError):
    """A metadata request got no HTTP answer at all."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class ImdsLookup:
    """What `find_imds` found: the service (None when unusable) and, when this is an EC2
    instance whose metadata the container cannot use, the one-line ``problem`` to log."""

    imds: Imds | None
    problem: str | None = None


def find_imds(*, timeout: float = 2.0) -> ImdsLookup:
    """The metadata service of this machine, and why it cannot be used when it is there.

    The URL is ``DS_METADATA_URL`` when set (tests point it at a loopback server), else the
    link-local EC2 address — unless ``AWS_EC2_METADATA_DISABLED`` is "true". The service must
    answer a token request and the instance id within ``timeout`` seconds. If the token
    request times out while a plain GET is answered, the instance's hop limit is too low for
    this container: where a GET without a token gets the instance id (IMDSv1 allowed, and
    ``AWS_EC2_METADATA_V1_DISABLED`` not true) the service is used so, said in one INFO
    line; else ``problem`` is `HOP_LIMIT_PROBLEM`. If nothing answers in an ECS task
    (``ECS_CONTAINER_METADATA_URI_V4``), `ECS_NO_METADATA_PROBLEM`. Otherwise (not on EC2)
    no problem.
    """
    url = os.environ.get("DS_METADATA_URL", "").strip()
    disabled = os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"
    if not url and disabled:
        return ImdsLookup(None)
    imds = Imds(url or DEFAULT_METADATA_URL, timeout=timeout)
    try:
        imds.instance_id()
    except TokenUnanswered as exc:
        if exc.timed_out and imds.answers():
            tokenless = _imds_v1(url or DEFAULT_METADATA_URL, timeout)
            if tokenless is not None:
                return ImdsLookup(tokenless)
            return ImdsLookup(None, HOP_LIMIT_PROBLEM)
        if exc.timed_out and os.environ.get("ECS_CONTAINER_METADATA_URI_V4", "").strip():
            return ImdsLookup(None, ECS_NO_METADATA_PROBLEM)
        log.info("no instance metadata service: %s", exc)
        return ImdsLookup(None)
    except BackendError as exc:
        log.info("no instance metadata service: %s", exc)
        return ImdsLookup(None)
    return ImdsLookup(imds)


def _imds_v1(url: str, timeout: float) -> Imds | None:
    """The service at ``url`` read without tokens (IMDSv1), when it answers the instance id
    so and ``AWS_EC2_METADATA_V1_DISABLED`` is not true; else None."""
    if os.environ.get("AWS_EC2_METADATA_V1_DISABLED", "").strip().lower() == "true":
        return None
    imds = Imds(url, timeout=timeout, v1=True)
    try:
        imds.instance_id()
    except BackendError:
        return None
    log.info(
        "the IMDSv2 token request timed out (the instance's PUT response hop limit is 1, "
        "containers on bridge networking need 2): reading instance metadata with IMDSv1, "
        "which the instance allows"
    )
    return imds


def imds_from_env(*, timeout: float = 2.0) -> Imds | None:
    """The metadata service of this machine, or None when there is none or it cannot be
    used (`find_imds`, without its diagnosis)."""
    return find_imds(timeout=timeout).imds


# --- spot interruption ------------------------------------------------------------------------


class InterruptionWatcher(BackgroundThread):
    """Polls the metadata service for a spot interruption notice in a daemon thread.

    Every ``interval`` seconds it reads /latest/meta-data/spot/instance-action; the first
    time that exists, ``on_notice`` is called once with its JSON text (e.g.
    ``{"action": "terminate", "time": "…"}``) and the watcher ends. A rebalance
    recommendation (/latest/meta-data/events/recommendations/rebalance) is an earlier,
    softer warning: it is logged once and kept in ``rebalance``; work continues.

    Nothing escapes the thread: errors (the service not answering, ``on_notice`` failing)
    are logged and polling goes on. ``start``/``stop`` or use it as a context manager.
    """

    def __init__(
        self, imds: Imds, on_notice: Callable[[str], None], *, interval: float = 5.0
    ) -> None:
        self.imds = imds
        self.on_notice = on_notice
        self.interval = interval
        #: the instance-action JSON once a notice arrived
        self.notice: str | None = None
        #: the rebalance recommendation JSON once one arrived
        self.rebalance: str | None = None
        # The first poll is immediate; on_notice may stop the watcher from its own thread.
        super().__init__("ds-spot-watch")

    def poll(self) -> bool:
        """One poll; True when a notice has arrived (now or before). Raises on IMDS errors."""
        if self.notice is not None:
            return True
        if self.rebalance is None:
            rebalance = self.imds.get(REBALANCE_PATH)
            if rebalance is not None:
                self.rebalance = rebalance
                log.warning("spot rebalance recommendation: %s", rebalance.strip())
        action = self.imds.get(SPOT_ACTION_PATH)
        if action is None:
            return False
        self.notice = action
        log.warning("spot interruption notice: %s", action.strip())
        try:
            self.on_notice(action)
        except Exception:
            log.exception("spot interruption handler failed")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll():
                    return
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happened
                log.warning("spot interruption check failed (will retry): %s", exc)
            self._stop.wait(self.interval)


# --- resource log -----------------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {field: bytes} ("MemTotal:  16 kB" → {"MemTotal": 16384}).

    Values without a unit (HugePages_Total …) are kept as plain counts.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            number = int(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        values[name.strip()] = number * 1024 if unit == "kb" else number
    return values


def parse_proc_stat(text: str) -> tuple[int, ...]:
    """The aggregate "cpu" line of /proc/stat as a tuple of jiffies (user, nice, system,
    idle, iowait, irq, softirq, steal, …); empty when there is no such line."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return tuple(int(p) for p in parts[1:])
    return ()


def cpu_percent(prev: tuple[int, ...], cur: tuple[int, ...]) -> float:
    """Busy CPU percent (0–100) between two `parse_proc_stat` samples.

    Busy = everything but idle and iowait; guest time is already inside user/nice, so only
    the first eight fields count. 0.0 when no time passed or a sample is missing.
    """
    if len(prev) < 4 or len(cur) < 4:
        return 0.0

    def split(sample: tuple[int, ...]) -> tuple[int, int]:
        fields = sample[:8]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    total_prev, idle_prev = split(prev)
    total_cur, idle_cur = split(cur)
    total = total_cur - total_prev
    if total <= 0:
        return 0.0
    busy = total - (idle_cur - idle_prev)
    return max(0.0, min(100.0, 100.0 * busy / total))


def format_bytes(n: float) -> str:
    """A byte count for people: "512 B", "1.5 KiB", "12.0 GiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ResourceLogger(BackgroundThread):
    """Logs the machine's disk, memory and CPU use every ``interval`` seconds, in a daemon
    thread, so a full disk or a memory-starved task shows up in the instance's log.

    One INFO record per interval: disk used/free of the volume holding ``path_for_disk``,
    memory used/available (from ``proc_root``/meminfo), and CPU busy percent over the interval
    (from ``proc_root``/stat deltas). Parts that cannot be read (no /proc off Linux) are left
    out; errors are logged and never raised.
    """

    def __init__(
        self,
        path_for_disk: Path,
        *,
        interval: float = 30.0,
        log: logging.Logger = logging.getLogger("ds.resources"),  # noqa: B008 - a named singleton
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.path_for_disk = path_for_disk
        self.interval = interval
        self.log = log
        self.proc_root = proc_root
        self._prev_cpu: tuple[int, ...] = ()
        super().__init__("ds-resources")

    def start(self) -> Self:
        """Take the first CPU sample and start logging (first record after one interval)."""
        self._prev_cpu = self._read_cpu()
        return super().start()

    def summary(self) -> str:
        """One line of current use; CPU is measured since the previous call (or start)."""
        parts: list[str] = []
        try:
            disk = shutil.disk_usage(self.path_for_disk)
            share = 100.0 * disk.used / disk.total if disk.total else 0.0
            parts.append(
                f"disk {self.path_for_disk}: used {format_bytes(disk.used)} ({share:.0f}%), "
                f"free {format_bytes(disk.free)}"
            )
        except OSError as exc:
            parts.append(f"disk {self.path_for_disk}: unreadable ({exc.strerror or exc})")
        try:
            mem = parse_meminfo((self.proc_root / "meminfo").read_text())
        except OSError:
            mem = {}
        if "MemTotal" in mem:
            available = mem.get(
                "MemAvailable",
                mem.get("MemFree", 0) + mem.get("Buffers", 0) + mem.get("Cached", 0),
            )
            parts.append(
                f"memory: used {format_bytes(mem['MemTotal'] - available)}, "
                f"available {format_bytes(available)}"
            )
        cur = self._read_cpu()
        if cur and self._prev_cpu:
            parts.append(f"cpu {cpu_percent(self._prev_cpu, cur):.1f}%")
        self._prev_cpu = cur
        return "; ".join(parts)

    def log_once(self) -> None:
        """Log one record now (errors are logged, not raised)."""
        try:
            self.log.info("resources: %s", self.summary())
        except Exception as exc:  # noqa: BLE001 - resource logging must never stop the worker
            self.log.warning("resource log failed: %s", exc)

    def _read_cpu(self) -> tuple[int, ...]:
        try:
            return parse_proc_stat((self.proc_root / "stat").read_text())
        except (OSError, ValueError):
            return ()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.log_once()


# --- tags and alarms ------------------------------------------------------------------------


def tag_instance_name(ec2: Any, instance_id: str, name: str) -> None:
    """Set the instance's Name tag (what the EC2 console shows). Raises BackendError."""
    call(
        f"tag instance {instance_id} with Name={name}",
        ec2.create_tags,
        fix="The instance role needs ec2:CreateTags.",
        Resources=[instance_id],
        Tags=[{"Key": "Name", "Value": name}],
    )


def terminate_instance(ec2: Any, instance_id: str) -> None:
    """Ask EC2 to terminate ``instance_id`` (a worker's own instance, when idle). Raises
    BackendError naming the permission it needs."""
    call(
        f"terminate instance {instance_id}",
        ec2.terminate_instances,
        fix="The task role (or the instance role, without one) needs ec2:TerminateInstances.",
        InstanceIds=[instance_id],
    )


def terminate_action(region: str) -> str:
    """The CloudWatch alarm action that terminates the alarm's EC2 instance, in the region's
    partition (``arn:aws-cn:…`` in China, ``arn:aws-us-gov:…`` in GovCloud)."""
    return f"arn:{partition(region)}:automate:{region}:ec2:terminate"


def ensure_idle_alarm(
    cloudwatch: Any,
    *,
    alarm_name: str,
    instance_id: str,
    region: str,
    minutes: int = 15,
    threshold_percent: float = 1.0,
) -> None:
    """Create or update the alarm that terminates the instance after ``minutes`` of CPU
    below ``threshold_percent`` (a stalled machine must not bill forever).

    AWS/EC2 CPUUtilization, Maximum over 60-second periods (as the family's workers set it:
    an instance whose CPU rose above the threshold at all in a period, say between long
    downloads, is not idle), ``minutes`` evaluation periods,
    LessThanThreshold, action `terminate_action` (the region's partition), dimension
    InstanceId. Idempotent: PutMetricAlarm replaces an alarm of the same name. The alarm
    carries no tags: tags on PutMetricAlarm also need cloudwatch:TagResource, which the
    instance role does not have; the name (``<app>_<instance id>``) says whose it is, and
    cleanup finds alarms by that prefix. Needs cloudwatch:PutMetricAlarm only. Raises
    BackendError.
    """
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    call(
        f"create the idle alarm {alarm_name}",
        cloudwatch.put_metric_alarm,
        fix="The instance role needs cloudwatch:PutMetricAlarm.",
        AlarmName=alarm_name,
        AlarmDescription=(
            f"Terminates {instance_id} after {minutes} min below {threshold_percent}% CPU "
            "(created by ds worker)"
        ),
        ActionsEnabled=True,
        AlarmActions=[terminate_action(region)],
        Namespace="AWS/EC2",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=minutes,
        Threshold=float(threshold_percent),
        ComparisonOperator="LessThanThreshold",
    )


# States from which an instance never runs again: its alarm only costs money.
_GONE_STATES = frozenset({"shutting-down", "terminated"})


def alarms_of_terminated(cloudwatch: Any, ec2: Any, prefix: str) -> list[str]:
    """Names of the metric alarms starting with ``prefix`` whose instance (dimension
    InstanceId) is terminated, shutting down, or unknown to EC2 (terminated long ago).

    Every page of alarms is read. Alarms without an InstanceId dimension are not returned.
    Raises BackendError.
    """
    by_instance: dict[str, list[str]] = {}
    paginator = cloudwatch.get_paginator("describe_alarms")
    pages = call(
        f"list the alarms starting with {prefix!r}",
        lambda: list(paginator.paginate(AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"])),
        fix="The role needs cloudwatch:DescribeAlarms.",
    )
    for page in pages:
        for alarm in page.get("MetricAlarms", []):
            for dimension in alarm.get("Dimensions", []):
                if dimension.get("Name") == "InstanceId":
                    by_instance.setdefault(dimension["Value"], []).append(alarm["AlarmName"])
    if not by_instance:
        return []
    states = _instance_states(ec2, sorted(by_instance))
    return sorted(
        name
        for instance_id, names in by_instance.items()
        if states.get(instance_id) in (None, *_GONE_STATES)
        for name in names
    )


def _instance_states(ec2: Any, instance_ids: Sequence[str]) -> dict[str, str]:
    """{instance id: state name} of the ids EC2 still knows.

    A filter on instance-id (not InstanceIds=…) so that one unknown id does not fail the call.
    """
    states: dict[str, str] = {}
    paginator = ec2.get_paginator("describe_instances")
    for batch in chunks(instance_ids, 100):
        pages = call(
            "look up the instances of the alarms",
            lambda batch=batch: list(
                paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}])
            ),
            fix="The role needs ec2:DescribeInstances.",
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    states[instance["InstanceId"]] = instance["State"]["Name"]
    return states
