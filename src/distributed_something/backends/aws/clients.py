"""The one place boto3 clients are made: region, profile, endpoint and retry mode."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from distributed_something.errors import InputError


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS.

    ``endpoint_url`` is normally unset: boto3 then honours ``AWS_ENDPOINT_URL`` (and
    ``AWS_ENDPOINT_URL_<SERVICE>``) from the environment, which is how tests point every
    client at a moto server on 127.0.0.1 without any test-only branch here.
    ``retry_mode`` is botocore's "standard" or "adaptive" (client-side rate limiting).
    """

    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 10


_lock = threading.Lock()
_sessions: dict[tuple[str | None, str], Any] = {}


def _session(settings: AwsSettings) -> Any:
    try:
        import boto3
    except ImportError:
        raise InputError(
            "config",
            "backend",
            'the "aws" backend needs boto3, which is not installed',
            "pip install 'distributed-something[aws]'",
        ) from None
    key = (settings.profile, settings.region)
    with _lock:
        if key not in _sessions:
            _sessions[key] = boto3.session.Session(
                profile_name=settings.profile, region_name=settings.region
            )
        return _sessions[key]


def client(service: str, settings: AwsSettings) -> Any:
    """A boto3 client for ``service`` with the run's region, profile, endpoint and retries.

    Clients are thread-safe; sessions are not, so sessions are cached per profile/region and
    clients are created under a lock.
    """
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=50,
    )
    session = _session(settings)
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    with _lock:
        return session.client(service, **kwargs)


def settings_from(region: str, profile: str | None) -> AwsSettings:
    """Settings for a run: the config's region and profile; retry mode from
    ``DS_AWS_RETRY_MODE`` (default "standard")."""
    return AwsSettings(
        region=region,
        profile=profile or None,
        retry_mode=os.environ.get("DS_AWS_RETRY_MODE", "standard"),
    )
