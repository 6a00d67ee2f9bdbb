"""What the report needs to know beyond the run's records: where things are, what time costs.

Built from the project's config and its backend by the use cases (`report_context`) and
handed to `build_report`; the report then links each task to its outputs and its logs and
prices its attempts. Pure data: nothing here reads storage.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_from_bytes

from distributed_something.config.model import Config
from distributed_something.report.cost import Pricing, pricing_for

#: Where a browser shows a bucket (a link in the report; nothing here calls it).
S3_CONSOLE = "https://s3.console.aws.amazon.com/s3/buckets/"


@dataclass(frozen=True)
class ReportContext:
    """``outputs_location``: where task output prefixes are (a folder, or ``s3://bucket/``);
    ``records_location``: where the main bucket is (the run's records and logs); ``pricing``:
    the machine price and task share, None where no price is known; ``locate``: where any
    bucket is (for outputs a recipe sent to a bucket of its own), None where unknown;
    ``expected_outputs``: the count rule's number of outputs, where it decides."""

    outputs_location: str = ""
    records_location: str = ""
    pricing: Pricing | None = None
    locate: Callable[[str], str] | None = None
    #: ``check_if_done.expected_number_files`` where the count rule decides what is done
    #: (a done task with fewer outputs runs again at the next submit); None otherwise
    expected_outputs: int | None = None


def report_context(
    config: Config, backend_name: str, location: Callable[[str], str]
) -> ReportContext:
    """The context of a run of ``config`` on backend ``backend_name`` whose
    ``location(bucket)`` says where a bucket is (`Backend.location`)."""
    return ReportContext(
        outputs_location=location(config.storage.destination_bucket),
        records_location=location(""),
        pricing=pricing_for(config, backend_name),
        locate=location,
        expected_outputs=(
            config.check_if_done.expected_number_files if config.check_if_done.enabled else None
        ),
    )


def join_location(base: str, key: str) -> str:
    """``key`` (a storage key or prefix) inside location ``base``: ``s3://b/`` + ``out/1/``
    gives ``s3://b/out/1/``; a folder gives a path (a trailing ``/`` kept). ``""`` when
    ``base`` is unknown."""
    if not base:
        return ""
    if base.startswith("s3://"):
        return base.rstrip("/") + "/" + key.lstrip("/")
    joined = str(Path(base) / key.lstrip("/")) if key else base
    return joined + "/" if key.endswith("/") and not joined.endswith("/") else joined


def href_of(location: str) -> str | None:
    """A link a browser can open for ``location``: ``file://`` for an absolute folder or
    file (a folder keeps its trailing ``/``, so the browser lists it), the S3 console for
    ``s3://bucket/prefix``; None for anything else (a relative path, an empty string)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        if not bucket:
            return None
        url = S3_CONSOLE + quote(bucket, safe="")
        return url + (f"?prefix={quote(prefix, safe='/')}" if prefix else "")
    path = Path(location)
    if not location or not path.is_absolute():
        return None
    uri = path.as_uri()
    return uri + "/" if location.endswith("/") and not uri.endswith("/") else uri


@functools.lru_cache(maxsize=16)
def links_under(base: str) -> Callable[[str], tuple[str, str | None]]:
    """For a key inside location ``base``: (`join_location` of it, `href_of` that), the
    same values, with the base's part worked out once: a report links thousands of tasks,
    and making a path and its URI anew for each cost more than the rest of the row."""

    def slow(key: str) -> tuple[str, str | None]:
        where = join_location(base, key)
        return where, href_of(where)

    if not base or base.startswith("s3://") or not Path(base).is_absolute():
        return slow
    root = str(Path(base))  # as `join_location` and `href_of` normalise it
    root_uri = Path(root).as_uri()
    sep = "" if root.endswith("/") else "/"

    def fast(key: str) -> tuple[str, str | None]:
        inside = key.lstrip("/").rstrip("/")
        # A name a path would normalise ("a//b", "a/./b", ".") takes the slow way.
        if not inside or "//" in inside or "/./" in f"/{inside}/":
            return slow(key)
        tail = "/" if key.endswith("/") else ""
        path = sep + inside
        return root + path + tail, root_uri + quote_from_bytes(os.fsencode(path)) + tail

    return fast


__all__ = ["ReportContext", "href_of", "join_location", "links_under", "report_context"]
