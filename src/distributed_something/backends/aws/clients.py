"""The one place boto3 clients are made: region, profile, endpoint and retry mode."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
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
    #: seconds to open a connection (botocore's default: 60)
    connect_timeout: float = 60.0
    #: attempts of a call whose connection cannot be opened (endpoint unreachable, connect
    #: timeout), when fewer than ``max_attempts``; throttling and server errors keep
    #: ``max_attempts``. None: ``max_attempts`` for every retryable failure.
    connection_attempts: int | None = None


#: Set by the command line for every command but `ds worker` and `ds monitor`: a person
#: waits for the answer, so an unreachable endpoint or missing credentials are said within
#: seconds (2 s to connect, 2 attempts to connect) instead of after botocore's minute of
#: retries. Only connection failures are cut short: throttling and server errors get the
#: same 10 attempts as everywhere ("ThrottlingException", EC2's "RequestLimitExceeded",
#: 500/503 are answers to retry with backoff, per the AWS SDKs' standard retry mode), since
#: `ds run` watches a run for hours and `ds submit` makes thousands of calls: one throttled
#: call retried once only would stop them. Workers, the monitor and the Lambda keep the
#: robust settings: for them a slow answer beats a failed task or a monitor that stops.
_interactive = False
INTERACTIVE_CONNECT_TIMEOUT = 2.0
INTERACTIVE_MAX_ATTEMPTS = 2


def set_interactive(value: bool) -> None:
    """Use the command line's quick timeouts (`settings_from`) from now on, or not."""
    global _interactive
    _interactive = value


def connection_fix(error: BaseException) -> str | None:
    """What to do about a failure to reach AWS at all (no credentials, an endpoint that does
    not answer), or None for another error. Used by every boundary that reports AWS errors."""
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return (
            "no AWS credentials found: run `aws configure` (or `aws sso login`), set "
            "aws.profile (AWS_PROFILE) to a profile of your AWS config, or run where a role "
            "provides credentials"
        )
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        where = f"AWS_ENDPOINT_URL={endpoint} is set: check it, " if endpoint else ""
        return (
            f"AWS could not be reached: {where}check the network (or proxy) and the region "
            "(aws.region), then run the command again"
        )
    return None


_lock = threading.Lock()
_sessions: dict[tuple[str | None, str], Any] = {}

#: Called with every client `client` makes, before it is returned. Empty in use; tests add
#: one (tests/conftest.py ``aws_calls``) that registers a botocore event handler on the
#: client to record each operation it performs, to check the IAM policies against them.
client_observers: list[Callable[[Any], None]] = []


def missing_boto3() -> InputError:
    """The error of an AWS command where boto3 is not installed (the `aws` extra)."""
    return InputError(
        "config",
        "backend",
        'the "aws" backend needs boto3, which is not installed',
        "install the aws extra: pip install 'distributed-something[aws]' (from a checkout: "
        ".venv/bin/pip install -e '.[aws]')",
    )


def _session(settings: AwsSettings) -> Any:
    try:
        import boto3
    except ImportError:
        raise missing_boto3() from None
    key = (settings.profile, settings.region)
    with _lock:
        if key not in _sessions:
            _sessions[key] = _new_session(boto3, settings)
        return _sessions[key]


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with a fast path for ISO 8601 with a zone.

    botocore parses every timestamp of every answer (each key's LastModified of a listing)
    with dateutil, which took 43% of the client CPU when listing 36,000 keys; the standard
    library reads the same text about twenty times faster. Anything else (epoch numbers,
    RFC 822 dates, ISO without a zone) goes to botocore's own parser, as before.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    from botocore.utils import parse_timestamp as botocore_parse

    result: datetime = botocore_parse(value)
    return result


def _new_session(boto3: Any, settings: AwsSettings) -> Any:
    """A session for the settings' profile (with the fast timestamp parser); see `client`
    for a profile the files lack."""
    session = _profile_session(boto3, settings)
    factory = session._session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


def _profile_session(boto3: Any, settings: AwsSettings) -> Any:
    from botocore.exceptions import ProfileNotFound

    profile = settings.profile
    try:
        try:
            return boto3.session.Session(profile_name=profile, region_name=settings.region)
        except ProfileNotFound:
            if profile != "default":
                raise
            # Every family config.py says AWS_PROFILE = 'default', meaning "what my AWS CLI
            # uses"; their run.py used boto3's default chain. Without a [default] profile in
            # the files (keys in the environment, SSO, an instance role) that chain is right.
            profile = None
            return boto3.session.Session(region_name=settings.region)
    except ProfileNotFound:
        name = profile or os.environ.get("AWS_PROFILE", "")
        where = "aws.profile (AWS_PROFILE in config.py)" if profile else "AWS_PROFILE"
        raise InputError(
            "config" if profile else "environment",
            "aws.profile" if profile else "AWS_PROFILE",
            f"the AWS profile {name!r} is not in the AWS config or credentials files",
            f"create it (`aws configure --profile {name}`) or correct {where}; leave it "
            "unset to use the credentials of the environment or of the instance role",
        ) from None


def client(service: str, settings: AwsSettings) -> Any:
    """A boto3 client for ``service`` with the run's region, profile, endpoint and retries.

    Clients are thread-safe; sessions are not, so sessions are cached per profile/region and
    clients are created under a lock. A profile the AWS config and credentials files do not
    define raises `InputError` — except "default", which then means boto3's default chain
    (environment keys, SSO, instance or task role), as it did for the family's scripts.
    """
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        max_pool_connections=50,
    )
    session = _session(settings)
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    with _lock:
        made = session.client(service, **kwargs)
    if settings.connection_attempts is not None:
        _limit_connection_attempts(made, settings.connection_attempts)
    for observe in client_observers:
        observe(made)
    return made


def _limit_connection_attempts(made: Any, limit: int) -> None:
    """Stop retrying a call of client ``made`` once ``limit`` attempts could not connect
    (other failures follow the client's retry mode and ``max_attempts``).

    botocore asks the ``needs-retry`` handlers after each attempt; this one, registered
    first, raises the connection's error once ``limit`` attempts failed to connect, which
    ends the call with it (raising, rather than answering "no retry", does not depend on how
    a botocore version reads a False answer: older ones took any answer but None as a delay).
    """
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    def needs_retry(attempts: int = 0, caught_exception: Any = None, **_: Any) -> None:
        unreachable = isinstance(caught_exception, EndpointConnectionError | ConnectTimeoutError)
        if unreachable and attempts >= limit:
            raise caught_exception

    service = made.meta.service_model.service_id.hyphenize()
    made.meta.events.register_first(f"needs-retry.{service}", needs_retry)


def settings_from(region: str, profile: str | None) -> AwsSettings:
    """Settings for a run: the config's region and profile; retry mode from
    ``DS_AWS_RETRY_MODE`` (default "standard") with 10 attempts; on the command line
    (`set_interactive`) a 2-second connect timeout and 2 attempts to connect, elsewhere
    botocore's 60 s and 10 attempts to connect."""
    settings = AwsSettings(
        region=region,
        profile=profile or None,
        retry_mode=os.environ.get("DS_AWS_RETRY_MODE", "standard"),
    )
    if _interactive:
        settings = replace(
            settings,
            connect_timeout=INTERACTIVE_CONNECT_TIMEOUT,
            connection_attempts=INTERACTIVE_MAX_ATTEMPTS,
        )
    return settings


def partition(region: str) -> str:
    """The ARN partition of ``region``: "aws-cn" for cn-*, "aws-us-gov" for us-gov-*, else
    "aws". Every ARN built from a region uses it (an ``arn:aws:`` ARN in China or GovCloud
    names nothing there)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def unreadable_answers() -> tuple[type[Exception], ...]:
    """What botocore raises, besides ClientError and BotoCoreError, when an answer is not
    AWS's (a proxy's HTML page, bytes that are not UTF-8); every boundary that turns AWS
    failures into one line catches these too."""
    from botocore.parsers import ResponseParserError

    return (ResponseParserError, UnicodeDecodeError)


def first_line(error: BaseException) -> str:
    """The first line of an error's text, without a closing colon or period (its type's
    name when it has none): a parser error carries the whole unparseable page after it."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".: ") if text else type(error).__name__


@dataclass
class AwsClients:
    """boto3 clients for one region/profile, each created on first use.

    Every client comes from `clients.client`, so endpoint and retry settings are the
    run's. ``lambda_`` is the Lambda client (``lambda`` is a Python keyword).
    """

    settings: AwsSettings
    _made: dict[str, Any] = field(default_factory=dict, repr=False)

    def get(self, service: str) -> Any:
        """The client of ``service`` (a boto3 service name), created once."""
        if service not in self._made:
            self._made[service] = client(service, self.settings)
        return self._made[service]

    @property
    def sqs(self) -> Any:
        return self.get("sqs")

    @property
    def ecs(self) -> Any:
        return self.get("ecs")

    @property
    def ec2(self) -> Any:
        return self.get("ec2")

    @property
    def cloudwatch(self) -> Any:
        return self.get("cloudwatch")

    @property
    def logs(self) -> Any:
        return self.get("logs")

    @property
    def events(self) -> Any:
        return self.get("events")

    @property
    def s3(self) -> Any:
        return self.get("s3")

    @property
    def lambda_(self) -> Any:
        return self.get("lambda")

    @property
    def iam(self) -> Any:
        return self.get("iam")

    @property
    def sns(self) -> Any:
        return self.get("sns")

    @property
    def sts(self) -> Any:
        return self.get("sts")
