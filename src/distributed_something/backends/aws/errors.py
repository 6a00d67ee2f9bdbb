"""AWS failures as our one-line errors: one translation for the whole AWS backend.

Every call to AWS that can fail for a reason the user can act on goes through `aws_call`
(a block) or `call` (one function), so every such failure reads the same way:
``could not <what>: <Code>: <AWS's message>. <fix>`` — one line, no traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from distributed_something.backends.aws.clients import (
    connection_fix,
    first_line,
    unreadable_answers,
)
from distributed_something.errors import BackendError

_T = TypeVar("_T")

#: What to do about a failure nothing more specific is known about.
DEFAULT_FIX = "Check the AWS credentials, region and permissions, then run the command again"


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            return str(error.get("Code", ""))
    return ""


def error_text(exc: BaseException) -> str:
    """``Code: message`` of a botocore ``ClientError``; the first line of anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        info = response["Error"]
        return f"{info.get('Code', 'Error')}: {info.get('Message', first_line(exc))}"
    return first_line(exc)


@contextmanager
def aws_call(what: str, fix: str = DEFAULT_FIX) -> Iterator[None]:
    """Turn an AWS failure inside the block into one `BackendError` line:
    ``could not <what>: <error>. <fix>`` (missing credentials get their own fix).
    ``what`` completes "could not …" (e.g. "describe the ECS service")."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, *unreadable_answers()) as exc:
        reach = connection_fix(exc)
        if reach is not None:
            raise BackendError(f"could not {what}: {reach}") from None
        # A parser error (an HTML page from a proxy) carries the whole page: first line only.
        text = error_text(exc)
        raise BackendError(f"could not {what}: {text}. {permission_fix(text) or fix}") from None


#: Where the permissions of the person running ds are listed.
OWN_PERMISSIONS = "docs/aws.md, 'Your own permissions'"


def permission_fix(text: str) -> str | None:
    """The fix for a refusal whose cause AWS names in a way users seldom know (an AWS error
    ``text``), or None: not being allowed to pass a role to a service (``iam:PassRole``,
    which an administrator grants separately from the call itself), and EC2's refusals,
    whose cause is only in an encoded message."""
    if "iam:PassRole" in text:
        return (
            "Your AWS identity may make this call but not hand the role it names to the "
            "service: an administrator must allow it iam:PassRole on that role (the "
            f"statements are in {OWN_PERMISSIONS}), then run the command again"
        )
    if "Encoded authorization failure message" in text:
        return (
            "EC2 names the missing permission only in the encoded message: "
            "`aws sts decode-authorization-message --encoded-message <message>` shows it "
            f"(often iam:PassRole on the fleet file's roles: {OWN_PERMISSIONS})"
        )
    return None


def call(what: str, fn: Callable[..., _T], *, fix: str = DEFAULT_FIX, **kwargs: Any) -> _T:
    """``fn(**kwargs)`` inside `aws_call` (one AWS API call)."""
    with aws_call(what, fix):
        return fn(**kwargs)


def chunks(items: Sequence[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in lists of at most ``size`` (API calls that cap their batch)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
