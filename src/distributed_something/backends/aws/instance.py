"""What a worker does on its EC2 instance besides the task loop (DESIGN §2 Worker, §5).

- `Imds`: the instance metadata service, IMDSv2 only (a session token on every request).
- `InterruptionWatcher`: polls for a spot interruption notice and tells the worker once.
- `ResourceLogger`: logs disk, memory and CPU use of the machine at an interval.
- `tag_instance_name`, `ensure_idle_alarm`: the instance's Name tag and its idle-CPU alarm
  (terminates a stalled instance); `alarms_of_terminated` and `delete_alarms` clean up the
  alarms of instances that are gone; `terminate_instance` (the idle shutdown's last step).

Everything here also works off EC2: `imds_from_env` returns None when there is no metadata
service, and the threads never raise.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from distributed_something.backends.aws.clients import first_line, partition, unreadable_answers
from distributed_something.background import BackgroundThread
from distributed_something.errors import BackendError

log = logging.getLogger("ds.instance")

DEFAULT_METADATA_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"

# Seconds before a token's expiry at which a new one is fetched, so a request never races it.
_TOKEN_MARGIN = 60.0


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
    least 2 on the instance (``HttpPutResponseHopLimit``); with 1 the PUT times out.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_METADATA_URL,
        *,
        timeout: float = 2.0,
        token_ttl: int = 21600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= token_ttl <= 21600:
            raise ValueError("token_ttl must be between 1 and 21600 seconds")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl
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
        for attempt in range(2):
            token = self._current_token(renew=attempt > 0)
            status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": token})
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

    def _fetch_token(self) -> str:
        status, body = self._request(
            "PUT", TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)}
        )
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
            raise BackendError(
                f"instance metadata at {self.base_url} did not answer {method} {path}: {reason}"
            ) from None


def imds_from_env(*, timeout: float = 2.0) -> Imds | None:
    """The metadata service of this machine, or None when there is none.

    The URL is ``DS_METADATA_URL`` when set (tests point it at a loopback server), else the
    link-local EC2 address — unless ``AWS_EC2_METADATA_DISABLED`` is "true". The service must
    answer a token request and the instance id within ``timeout`` seconds; if it does not
    (not on EC2), None, so the worker runs without instance features.
    """
    url = os.environ.get("DS_METADATA_URL", "").strip()
    disabled = os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"
    if not url and disabled:
        return None
    imds = Imds(url or DEFAULT_METADATA_URL, timeout=timeout)
    try:
        imds.instance_id()
    except BackendError as exc:
        log.info("no instance metadata service: %s", exc)
        return None
    return imds


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


def _call(what: str, fix: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call one AWS API; a failure becomes a one-line BackendError saying what failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError, *unreadable_answers()) as exc:
        raise BackendError(f"could not {what}: {first_line(exc)}. {fix}") from None


def tag_instance_name(ec2: Any, instance_id: str, name: str) -> None:
    """Set the instance's Name tag (what the EC2 console shows). Raises BackendError."""
    _call(
        f"tag instance {instance_id} with Name={name}",
        "The instance role needs ec2:CreateTags.",
        ec2.create_tags,
        Resources=[instance_id],
        Tags=[{"Key": "Name", "Value": name}],
    )


def terminate_instance(ec2: Any, instance_id: str) -> None:
    """Ask EC2 to terminate ``instance_id`` (a worker's own instance, when idle). Raises
    BackendError naming the permission it needs."""
    _call(
        f"terminate instance {instance_id}",
        "The task role (or the instance role, without one) needs ec2:TerminateInstances.",
        ec2.terminate_instances,
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

    AWS/EC2 CPUUtilization, Average over 60-second periods, ``minutes`` evaluation periods,
    LessThanThreshold, action `terminate_action` (the region's partition), dimension
    InstanceId. Idempotent: PutMetricAlarm replaces an alarm of the same name. The alarm
    carries no tags: tags on PutMetricAlarm also need cloudwatch:TagResource, which the
    instance role does not have; the name (``<app>_<instance id>``) says whose it is, and
    cleanup finds alarms by that prefix. Needs cloudwatch:PutMetricAlarm only. Raises
    BackendError.
    """
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    _call(
        f"create the idle alarm {alarm_name}",
        "The instance role needs cloudwatch:PutMetricAlarm.",
        cloudwatch.put_metric_alarm,
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
        Statistic="Average",
        Period=60,
        EvaluationPeriods=minutes,
        Threshold=float(threshold_percent),
        ComparisonOperator="LessThanThreshold",
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


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
    pages = _call(
        f"list the alarms starting with {prefix!r}",
        "The role needs cloudwatch:DescribeAlarms.",
        lambda: list(paginator.paginate(AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"])),
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
    for batch in _chunks(instance_ids, 100):
        pages = _call(
            "look up the instances of the alarms",
            "The role needs ec2:DescribeInstances.",
            lambda batch=batch: list(
                paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}])
            ),
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    states[instance["InstanceId"]] = instance["State"]["Name"]
    return states


def delete_alarms(cloudwatch: Any, names: Iterable[str]) -> None:
    """Delete these alarms, 100 per call (the API's limit). Alarms already gone are not an
    error. Raises BackendError."""
    for batch in _chunks(sorted(set(names)), 100):
        if not _delete_batch(cloudwatch, batch):
            # One missing name fails the whole batch: delete the rest one at a time.
            for name in batch:
                _delete_batch(cloudwatch, [name])


def _delete_batch(cloudwatch: Any, batch: list[str]) -> bool:
    """DeleteAlarms on ``batch``; False when AWS answers ResourceNotFound."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cloudwatch.delete_alarms(AlarmNames=batch)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFound":
            return False
        raise BackendError(
            f"could not delete alarm {batch[0]} (and {len(batch) - 1} more): {exc}. "
            "The role needs cloudwatch:DeleteAlarms."
        ) from None
    except (BotoCoreError, *unreadable_answers()) as exc:
        raise BackendError(f"could not delete alarm {batch[0]}: {first_line(exc)}") from None
    return True
