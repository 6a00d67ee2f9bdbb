"""Create calls that tag what they create, and identities that may create but not tag.

AWS authorizes a tag given on creation as a tagging action of its own: a create call with
tags needs ``ecs:TagResource`` (CreateCluster, RegisterTaskDefinition, CreateService),
``logs:TagResource`` (CreateLogGroup), ``events:TagResource`` (PutRule), ``ec2:CreateTags``
(RequestSpotFleet's spot-fleet-request tags), ``sqs:TagQueue`` (CreateQueue), and for
`ds aws bootstrap` ``iam:TagRole`` (CreateRole) and ``lambda:TagResource`` (CreateFunction),
besides the create permission; an identity without it is refused the whole call. ds's tags
(the app tag, ``ds:bootstrap``) are only for cost reports, so such a refusal must not stop
a run: `create_tagged` makes the resource again without its tags and says so once per
missing permission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from distributed_something.backends.aws.errors import OWN_PERMISSIONS, error_code

_T = TypeVar("_T")

#: The codes of an authorization refusal: AccessDenied (query protocol: SQS's older one, IAM),
#: AccessDeniedException (JSON protocol: ECS — "the request fails if the user does not have
#: permissions to use the ecs:TagResource action" —, CloudWatch Logs, EventBridge, SQS) and
#: UnauthorizedOperation (EC2, for every permission it refuses).
TAG_REFUSALS = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})

#: The permissions already warned about in this process: a setup makes several resources of
#: one service, and one line per missing permission says all there is to say.
_warned: set[str] = set()


def create_tagged(create: Callable[[bool], _T], *, permission: str, what: str) -> _T:
    """``create(True)`` (the create call with its tags); when AWS refuses it as unauthorized,
    ``create(False)`` (the same call without tags) once, and, when that succeeds, a warning
    naming ``permission`` (once per permission and process). ``what`` names the resources
    (e.g. "ECS resources") in the warning. A refusal of the untagged call too, and every
    other error, is raised as it is: the create permission itself is missing then.
    """
    from botocore.exceptions import ClientError

    try:
        return create(True)
    except ClientError as error:
        if error_code(error) not in TAG_REFUSALS:
            raise
    # Perhaps only the tags were refused; if the create permission is missing too, this
    # raises that refusal, which is the one to show.
    made = create(False)
    if permission not in _warned:
        _warned.add(permission)
        info = _warn()
        info(
            f"[yellow]warning:[/] {what} were made untagged: your AWS identity may create "
            f"them but not tag them ({permission} is missing). The tags only label costs; "
            f"to have them, allow {permission} ({OWN_PERMISSIONS})"
        )
    return made


def _warn() -> Callable[[str], None]:
    """Where the warning goes: the terminal (stderr, `ui.info`), or the log where ``rich`` is
    not installed (the monitor function's bundle imports this module through `fleet`)."""
    try:
        from distributed_something.ui import info
    except ImportError:
        import logging

        return logging.getLogger("ds.aws").warning
    return info
