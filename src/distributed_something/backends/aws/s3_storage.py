"""The AWS object storage: one S3 bucket behind the `Storage` contract.

Keys are checked with `check_key`/`check_prefix` before any call, so S3 and the folder
storage accept exactly the same keys. Files go through boto3's transfer manager
(multipart above 8 MiB, parts in parallel); `put_files` also uploads many files at once.
"""

from __future__ import annotations

import errno
import mimetypes
import queue
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from distributed_something.backends.aws.clients import (
    AwsSettings,
    client,
    connection_fix,
    first_line,
    unreadable_answers,
)
from distributed_something.config.upload_flags import NO_GUESSED_TYPE
from distributed_something.errors import BackendError, InputError
from distributed_something.interfaces.storage import NoConditionalWrites, ObjectInfo, Tagged
from distributed_something.keys import check_key, check_prefix

MULTIPART_BYTES = 8 * 1024 * 1024
"""Files above this size are uploaded and downloaded in parts of this size."""

TEMP_PREFIX = ".ds-tmp."
"""`get_file` downloads to a file named with this prefix next to the target, then renames."""

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_NOT_AWS_HINT = "the answer is not S3's: check the endpoint (AWS_ENDPOINT_URL) and any proxy"
_HINTS = {
    "AccessDenied": (
        "check the bucket policy and the IAM permissions of the profile or task role "
        '(a requester-pays bucket needs storage.upload_flags = "--request-payer requester")'
    ),
    "403": "check the bucket policy and the IAM permissions of the profile or task role",
    "NoSuchBucket": "check the bucket name in the config (storage.bucket and the like)",
    "InvalidAccessKeyId": "check the AWS credentials (profile)",
    "SignatureDoesNotMatch": "check the AWS credentials (profile)",
    "PermanentRedirect": "the bucket is in another region: set aws.region to the bucket's",
}
# An upload with an ACL (storage.upload_flags = "--acl …") is a PutObject that also needs
# s3:PutObjectAcl; without it S3 refuses the whole upload.
_ACL_HINT = (
    "an upload with an ACL (storage.upload_flags --acl) also needs s3:PutObjectAcl: run "
    "`ds aws bootstrap` again (it grants it for bucket-owner-full-control), grant it to your "
    "task role, or drop --acl when the bucket's Object Ownership is BucketOwnerEnforced"
)
_DENIED_CODES = frozenset({"AccessDenied", "403"})
#: What a conditional PutObject answers when its condition does not hold (412), when
#: another conditional write to the key is under way (409), or, with If-Match, when there is
#: no such object (404).
_CONDITION_FAILED_CODES = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
)
_UPLOADS = frozenset({"PutObject", "upload"})


class S3Error(BackendError):
    """An S3 call failed; ``code`` is S3's error code ("" when S3 was never reached)."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.code = code


def _client_error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Storage:
    """A `Storage` (see interfaces/storage.py for the contract) on the S3 bucket ``bucket``.

    ``requester_pays`` adds ``RequestPayer="requester"`` to every call (needed to read or
    write a requester-pays bucket, whose owner bills the caller). ``upload_args`` are extra
    arguments of every upload (boto3's ExtraArgs, e.g. ``{"ACL":
    "bucket-owner-full-control"}``; see `upload_args_from_flags`). ``threads`` is how many
    parts of one file, or files of `put_files`, move at once.

    Listings leave out keys no `Storage` key can be (e.g. the ``folder/`` markers the S3
    console creates). A missing bucket reads as missing keys to ``exists``/``get_file``
    (S3's HEAD cannot tell them apart). AWS failures raise `BackendError` (an `S3Error`)
    naming the operation and the object. Safe to share between threads.
    """

    #: GETs of many small objects (a report's done markers): each is a round trip
    read_concurrency = 16

    def __init__(
        self,
        settings: AwsSettings,
        bucket: str,
        *,
        requester_pays: bool = False,
        upload_args: Mapping[str, str] | None = None,
        threads: int = 10,
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.requester_pays = requester_pays
        self.upload_args = dict(upload_args or {})
        # As the aws-cli's cp: a file's Content-Type from its name, unless told otherwise.
        self._guess_type = self.upload_args.pop(NO_GUESSED_TYPE, None) is None
        self.threads = max(int(threads), 1)
        self._client: Any = client("s3", settings)
        self._payer: dict[str, str] = {"RequestPayer": "requester"} if requester_pays else {}
        self._upload_extra: dict[str, str] = {**self.upload_args, **self._payer}

    def _transfer_config(self, concurrency: int) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_BYTES,
            multipart_chunksize=MULTIPART_BYTES,
            max_concurrency=max(concurrency, 1),
        )

    @contextmanager
    def _boundary(self, operation: str, key: str) -> Iterator[None]:
        """Turn botocore's and boto3's errors into `S3Error` naming the operation and object."""
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"S3 {operation} of s3://{self.bucket}/{key} failed"
        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("Code") or "")
            detail = str(info.get("Message") or "")
            hint = self._hint(operation, code)
            text = f"{where}: {code}: {detail}" + (f" ({hint})" if hint else "")
            raise S3Error(text, code) from error
        except S3UploadFailedError as error:
            cause = error.__cause__ or error.__context__
            code = _client_error_code(cause) if cause is not None else ""
            hint = self._hint(operation, code)
            raise S3Error(f"{where}: {error}" + (f" ({hint})" if hint else ""), code) from error
        except RetriesExceededError as error:
            # A download kept losing its connection: say why, not just "Max Retries Exceeded".
            last = getattr(error, "last_exception", None) or error
            raise S3Error(f"{where}: {last!r} (gave up retrying)") from error
        except BotoCoreError as error:
            reach = connection_fix(error)
            raise S3Error(f"{where}: {error}" + (f". Fix: {reach}" if reach else "")) from error
        except unreadable_answers() as error:
            # Not a BotoCoreError: what an endpoint answering garbage (a proxy's HTML page)
            # gives. Its text goes on with the whole answer: keep the first line.
            raise S3Error(f"{where}: {first_line(error)} ({_NOT_AWS_HINT})") from error

    def _hint(self, operation: str, code: str) -> str | None:
        """What to do about S3's error ``code`` in ``operation`` (None: nothing to add)."""
        if code in _DENIED_CODES and operation in _UPLOADS and "ACL" in self._upload_extra:
            return _ACL_HINT
        return _HINTS.get(code)

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key`` (one PutObject: S3 replaces objects atomically)."""
        check_key(key)
        with self._boundary("PutObject", key):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._upload_extra)

    # -- conditional writes (S3's If-None-Match / If-Match): the workers' task claims ----

    def put_new(self, key: str, data: bytes) -> str | None:
        """Store ``data`` as ``key`` only if there is no object ``key`` (PutObject with
        ``If-None-Match: *``); its ETag, or None when there is one (412), or another
        conditional write to it was under way (409: read it and decide again)."""
        check_key(key)
        return self._conditional_put(key, data, {"IfNoneMatch": "*"})

    def put_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        """Replace ``key`` with ``data`` only if it is still the version whose ETag is
        ``tag`` (PutObject with ``If-Match``); the new ETag, or None when it changed, is gone
        (404) or is being written by another conditional write (409)."""
        check_key(key)
        return self._conditional_put(key, data, {"IfMatch": tag})

    def get_tagged(self, key: str) -> Tagged:
        """The content of ``key``, its ETag (for `put_tagged`) and its age by S3's clock
        (`object_age`); KeyError when missing."""
        check_key(key)
        with self._missing_as_key_error(key), self._boundary("GetObject", key):
            response = self._client.get_object(Bucket=self.bucket, Key=key, **self._payer)
            data: bytes = response["Body"].read()
            return Tagged(data, str(response["ETag"]), object_age(response))

    def _conditional_put(self, key: str, data: bytes, condition: dict[str, str]) -> str | None:
        """Raises `NoConditionalWrites` where botocore does not know the condition."""
        from botocore.exceptions import ParamValidationError

        try:
            with self._boundary("PutObject", key):
                try:
                    response = self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=data, **condition, **self._upload_extra
                    )
                except ParamValidationError as error:
                    raise NoConditionalWrites(str(error)) from error
        except S3Error as error:
            if error.code in _CONDITION_FAILED_CODES:
                return None
            raise
        return str(response["ETag"])

    def _upload(self, pairs: Sequence[tuple[str, Path]]) -> None:
        """Upload ``(key, path)`` pairs (keys already checked) through one transfer manager.

        One manager, so one thread pool of ``threads`` for every file and part: a manager
        per file (what ``client.upload_file`` builds) costs more than a small file's PutObject.
        At the first failure the uploads not done yet are cancelled and it is raised.
        """
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import create_transfer_manager
        from botocore.exceptions import ClientError
        from s3transfer.subscribers import BaseSubscriber  # type: ignore[import-untyped]

        for _, path in pairs:
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "no such file to upload", str(path))
        finished: queue.SimpleQueue[Any] = queue.SimpleQueue()

        class Done(BaseSubscriber):  # type: ignore[misc]  # s3transfer has no type hints
            def on_done(self, future: Any, **_: Any) -> None:
                finished.put(future)

        done = [Done()]
        config = self._transfer_config(self.threads)
        # Leaving the block with an error cancels the uploads not done yet.
        with create_transfer_manager(self._client, config) as manager:
            for key, path in pairs:
                # A copy each: older s3transfer versions may add to the dict they are given.
                manager.upload(str(path), self.bucket, key, self._file_extra(key), done)
            for _ in pairs:
                future = finished.get()
                args = future.meta.call_args
                with self._boundary("upload", args.key):
                    try:
                        future.result()
                    except ClientError as error:
                        # boto3's upload_file raises this: put_file's errors read as before.
                        raise S3UploadFailedError(
                            f"Failed to upload {args.fileobj} to {self.bucket}/{args.key}: {error}"
                        ) from error

    def _file_extra(self, key: str) -> dict[str, str]:
        """The upload arguments of a file stored as ``key``: a copy each (older s3transfer
        versions may add to the dict they are given), with the Content-Type its name
        suggests (``.png`` → ``image/png``), as the family's ``aws s3 cp`` gave outputs."""
        extra = dict(self._upload_extra)
        if self._guess_type and "ContentType" not in extra:
            guessed, _ = mimetypes.guess_type(key.rsplit("/", 1)[-1])
            if guessed:
                extra["ContentType"] = guessed
        return extra

    def put_file(self, key: str, path: Path) -> None:
        """Store the local file ``path`` as ``key`` (multipart above 8 MiB; the object
        appears only when complete). FileNotFoundError when ``path`` is not a file."""
        self._upload([(check_key(key), Path(path))])

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Store many files, ``threads`` uploads (files or parts) at a time.

        Every key is checked, and every path must be a file (else FileNotFoundError), before
        anything is uploaded. Returns when all are stored; at the first failure, uploads not
        done yet are cancelled and that failure is raised (files already stored stay).
        """
        pairs = [(check_key(key), Path(path)) for key, path in items]
        if pairs:
            self._upload(pairs)

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """The content of ``key``; KeyError when there is no such object."""
        check_key(key)
        with self._missing_as_key_error(key), self._boundary("GetObject", key):
            response = self._client.get_object(Bucket=self.bucket, Key=key, **self._payer)
            data: bytes = response["Body"].read()
            return data

    @contextmanager
    def _missing_as_key_error(self, key: str) -> Iterator[None]:
        try:
            yield
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise KeyError(key) from None
            raise

    def get_file(self, key: str, path: Path) -> None:
        """Download ``key`` to the local file ``path``; KeyError when missing.

        The object goes to a temporary file next to ``path`` that is renamed over it when
        complete, so ``path`` never holds part of an object. Missing parent folders are
        created (and removed again when the download fails).
        """
        check_key(key)
        target = Path(path)
        created = _make_parents(target.parent)
        temp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            with self._missing_as_key_error(key), self._boundary("download", key):
                self._client.download_file(
                    Bucket=self.bucket,
                    Key=key,
                    Filename=str(temp),
                    ExtraArgs=dict(self._payer) or None,
                    Config=self._transfer_config(self.threads),
                )
            temp.replace(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            for folder in reversed(created):
                with suppress(OSError):
                    folder.rmdir()
            raise

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists (HeadObject; a prefix of keys is no object)."""
        check_key(key)
        try:
            with self._boundary("HeadObject", key):
                self._client.head_object(Bucket=self.bucket, Key=key, **self._payer)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                return False
            raise
        return True

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (and sorts after ``start_after``:
        S3 starts the listing there), in key order (S3's order: UTF-8 bytes, the same as
        code points), page after page. The prefix is checked at once."""
        check_prefix(prefix)
        return self._list(prefix, start_after)

    def _list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        with self._boundary("ListObjectsV2", prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            after = {"StartAfter": start_after} if start_after else {}
            pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, **after, **self._payer)
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])
                    try:
                        check_key(key)
                    except InputError:
                        continue  # e.g. a "folder/" marker: not an object a key can name
                    yield ObjectInfo(key=key, size=int(item["Size"]))

    # -- deleting --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete ``key``; nothing happens when it is missing."""
        check_key(key)
        with self._boundary("DeleteObject", key):
            self._client.delete_object(Bucket=self.bucket, Key=key, **self._payer)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    missing.reverse()
    for made in missing:
        with suppress(FileExistsError):
            made.mkdir()
    return missing


def object_age(response: Mapping[str, Any]) -> float | None:
    """Seconds since the object a GetObject or HeadObject ``response`` describes was
    written, by S3's clock alone: the response's ``Date`` header less the object's
    ``Last-Modified`` (both to the second; never below 0). None when either is missing or
    unreadable (an S3 stand-in that leaves one out). Pure."""
    import email.utils
    from datetime import datetime

    modified = response.get("LastModified")
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        date = email.utils.parsedate_to_datetime(str(headers["date"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(modified, datetime) or modified.tzinfo is None or date.tzinfo is None:
        return None
    return max((date - modified).total_seconds(), 0.0)
