"""The family's ``UPLOAD_FLAGS`` (``storage.upload_flags``): aws-cli upload flags read as the
S3 upload arguments they mean. Pure: the config and the recipes check them without boto3;
the S3 storage applies them."""

from __future__ import annotations

import shlex

from distributed_something.errors import InputError

_CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)
_STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
)

# aws-cli flag -> (ExtraArgs name, allowed values or None for any)
_VALUE_FLAGS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "--acl": ("ACL", _CANNED_ACLS),
    "--sse": ("ServerSideEncryption", ("AES256", "aws:kms", "aws:kms:dsse")),
    "--sse-kms-key-id": ("SSEKMSKeyId", None),
    "--storage-class": ("StorageClass", _STORAGE_CLASSES),
    "--request-payer": ("RequestPayer", ("requester",)),
    "--content-type": ("ContentType", None),
    "--cache-control": ("CacheControl", None),
    "--content-disposition": ("ContentDisposition", None),
    "--content-encoding": ("ContentEncoding", None),
    "--content-language": ("ContentLanguage", None),
    "--website-redirect": ("WebsiteRedirectLocation", None),
    "--checksum-algorithm": ("ChecksumAlgorithm", ("CRC32", "CRC32C", "SHA1", "SHA256")),
}
# Flags the aws-cli accepts without a value, and the value it means then.
_DEFAULT_VALUES = {"--sse": "AES256", "--request-payer": "requester"}
# Flags that change nothing about an upload's object: accepted and ignored. The family's
# configs use "--metadata-directive REPLACE" (which only matters to copies).
_IGNORED_WITH_VALUE = frozenset({"--metadata-directive"})
_IGNORED = frozenset(
    {
        "--quiet",
        "--only-show-errors",
        "--no-progress",
        "--follow-symlinks",
        "--no-follow-symlinks",
    }
)
#: What ``--no-guess-mime-type`` gives among the upload arguments: not an S3 argument, but
#: the S3 storage's cue to send no Content-Type guessed from the file name (it pops it).
NO_GUESSED_TYPE = "ds:no-guess-mime-type"
_FLAGS_FIX = (
    'use aws-cli upload flags, e.g. "--acl bucket-owner-full-control --sse AES256"; '
    f"supported: {', '.join(sorted(_VALUE_FLAGS))}, --no-guess-mime-type (and, ignored: "
    f"{', '.join(sorted(_IGNORED | _IGNORED_WITH_VALUE))})"
)


def upload_args_from_flags(flags: str, *, source: str) -> dict[str, str]:
    """The boto3 upload ExtraArgs meant by the family's ``UPLOAD_FLAGS`` (aws-cli style).

    ``"--acl bucket-owner-full-control --sse AES256"`` gives ``{"ACL":
    "bucket-owner-full-control", "ServerSideEncryption": "AES256"}``. Values may follow
    the flag or be joined to it with ``=``; quotes work as in a shell. As in the aws-cli,
    ``--sse`` alone means AES256 and ``--request-payer`` alone means requester, and a file's
    Content-Type is guessed from its name unless ``--no-guess-mime-type`` (`NO_GUESSED_TYPE`)
    or ``--content-type`` says otherwise. Flags that
    only change the aws-cli's output or copies (``--quiet``, ``--metadata-directive``, …)
    are ignored; a repeated flag keeps its last value.

    Raises `InputError` (``source``, field ``storage.upload_flags``) for an unknown flag,
    a flag without its value, a value S3 does not accept, or a stray word.
    """
    field = "storage.upload_flags"
    try:
        words = shlex.split(flags)
    except ValueError as error:
        raise InputError(source, field, f"cannot read {flags!r}: {error}", _FLAGS_FIX) from None
    args: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            raise InputError(
                source, field, f"{word!r} is not a flag (flags start with '--')", _FLAGS_FIX
            )
        flag, joined, value = word.partition("=")
        if flag in _IGNORED and not joined:
            continue
        if flag == "--no-guess-mime-type" and not joined:
            args[NO_GUESSED_TYPE] = "true"
            continue
        takes_value = flag in _VALUE_FLAGS or flag in _IGNORED_WITH_VALUE
        if not takes_value:
            raise InputError(source, field, f"unknown or unsupported flag {flag!r}", _FLAGS_FIX)
        if not joined:
            if index < len(words) and not words[index].startswith("--"):
                value = words[index]
                index += 1
            elif flag in _DEFAULT_VALUES:
                value = _DEFAULT_VALUES[flag]
            else:
                raise InputError(
                    source, field, f"{flag} needs a value", f"write it as '{flag} VALUE'"
                )
        if value == "":
            raise InputError(source, field, f"{flag} has an empty value", f"give {flag} a value")
        if flag in _IGNORED_WITH_VALUE:
            continue
        name, allowed = _VALUE_FLAGS[flag]
        if allowed is not None and value not in allowed:
            raise InputError(
                source,
                field,
                f"{flag} {value!r} is not a value S3 accepts",
                f"use one of: {', '.join(allowed)}",
            )
        args[name] = value
    return args
