"""Recognise credentials in a value by their shape, whatever the name they are stored under.

docs/design.md §6: no credential is ever written to a task definition, log, state file or report.
Names alone do not catch them (``S3_CREDS = "<secret key>"``, a presigned URL in a script
URL), so values are recognised by what credentials look like:

- an access key id: ``AKIA`` (long-term) or ``ASIA`` (temporary) and 16 upper-case letters
  or digits;
- a secret access key: exactly 40 characters of ``A-Za-z0-9/+`` standing alone, mixing upper-
  and lower-case letters and digits, with the entropy of a random string (a 40-digit hex
  commit id, a word or a path of that length does not count);
- a session token: the known opening of STS tokens (``FwoGZXIvYXdz``, ``IQoJb3JpZ2lu``), or a
  run of 100 or more base64 characters with a random string's entropy;
- a presigned URL: a query that carries a signature or a key (``X-Amz-Signature=``,
  ``X-Amz-Credential=``, ``X-Amz-Security-Token=``, ``Signature=``, ``AWSAccessKeyId=``).

Beyond AWS, what a config copied into a task definition must not carry either:

- a URL with a password in it (``https://alice:pw@host/…``, ``postgres://u:p@db/…``);
- an API token of the common services (GitHub ``ghp_…``/``github_pat_…``, GitLab
  ``glpat-…``, Slack ``xox…-``);
- a private key (``-----BEGIN … PRIVATE KEY-----``).

A value with %-escapes is looked at decoded too (``%2F`` in a URL-encoded secret key).

Everything here is pure and never returns or prints the secret itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from distributed_something.errors import InputError

if TYPE_CHECKING:
    from distributed_something.config.model import Config

ACCESS_KEY_ID = "an AWS access key id"
SECRET_ACCESS_KEY = "an AWS secret access key"
SESSION_TOKEN = "an AWS session token"
PRESIGNED_URL = "a presigned URL (its signature or key is a credential)"
PASSWORD_URL = "a URL with a password in it"
API_TOKEN = "an API token"
PRIVATE_KEY = "a private key"

_ACCESS_KEY = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_STS_TOKEN = re.compile(r"(?:FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=]{20,}")
_LONG_BASE64 = re.compile(r"[A-Za-z0-9/+]{100,}={0,2}")
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]+:[^\s/@]+@", re.IGNORECASE)
_API_TOKEN = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}|glpat-[\w-]{20,}|xox[abprs]-[\w-]{10,})"
)
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_SIGNED_QUERY = re.compile(
    r"[?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=",
    re.IGNORECASE,
)
#: Literal parts of the shapes above (`may_hold_credential`)
_MARKERS = (
    "%",
    "@",
    "AKIA",
    "ASIA",
    "-----BEGIN",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "FwoGZXIvYXdz",
    "IQoJb3JpZ2lu",
)
_MARKERS_ANY_CASE = ("x-amz-", "signature=", "awsaccesskeyid")
#: base64 characters to "a", everything else to " ": a run of 40 "a" is a run of 40 of them
_RUNS = str.maketrans(
    {
        chr(c): "a" if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "/+") else " "
        for c in range(128)
    }
)
_RUN_40 = "a" * 40

#: Bits per character above which a 40-character run is taken for random: random base64
#: strings of that length measure 4.6-5.1, English, paths and identifiers 3-4.2.
_SECRET_KEY_ENTROPY = 4.3
#: The same for 100+ character runs (random base64 measures 5.6 and up there).
_TOKEN_ENTROPY = 5.0


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character (0 for an empty string)."""
    if not text:
        return 0.0
    counts = Counter(text)
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


def _looks_random_key(run: str) -> bool:
    classes = (
        any(c.isupper() for c in run) and any(c.islower() for c in run),
        any(c.isdigit() or c in "/+" for c in run),
    )
    return all(classes) and entropy(run) >= _SECRET_KEY_ENTROPY


def credential_kind(text: str) -> str | None:
    """Which kind of credential ``text`` holds somewhere in it, or None.

    The kinds are the module's constants (`ACCESS_KEY_ID`, `SECRET_ACCESS_KEY`,
    `SESSION_TOKEN`, `PRESIGNED_URL`, `PASSWORD_URL`, `API_TOKEN`, `PRIVATE_KEY`), phrased
    to follow "holds", e.g. "holds an AWS access key id". A presigned URL is named as such
    even though it also holds a key id.
    """
    if not isinstance(text, str) or len(text) < 12:
        return None
    if "%" in text:
        decoded = unquote(text)
        if decoded != text:
            return credential_kind(decoded) or _kind(text)
    return _kind(text)


def _kind(text: str) -> str | None:
    if _SIGNED_QUERY.search(text):
        return PRESIGNED_URL
    if _PRIVATE_KEY.search(text):
        return PRIVATE_KEY
    if "://" in text and _URL_PASSWORD.search(text):
        return PASSWORD_URL
    if _API_TOKEN.search(text):
        return API_TOKEN
    if len(text) < 20:
        return None
    if _ACCESS_KEY.search(text):
        return ACCESS_KEY_ID
    if _STS_TOKEN.search(text):
        return SESSION_TOKEN
    if any(entropy(m.group(0)) >= _TOKEN_ENTROPY for m in _LONG_BASE64.finditer(text)):
        return SESSION_TOKEN
    if any(_looks_random_key(m.group(0)) for m in _SECRET_KEY.finditer(text)):
        return SECRET_ACCESS_KEY
    return None


def strings_in(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (nested mappings and lists, as a config dumps to JSON) with
    its dotted path: ``("tool.script_download_url", "https://…")``, ``("recipe.argv[2]", …)``.
    Keys of mappings are yielded too (under the mapping's own path)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            yield path, name
            yield from strings_in(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from strings_in(item, f"{path}[{index}]")


def may_hold_credential(text: str) -> bool:
    """False when ``text`` (a whole job file, say) certainly holds no credential
    `credential_kind` would find: a quick look (plain substring searches, no regex) before a
    closer one. Each shape has a literal part among `_MARKERS`, or is a run of 40 or more
    base64 characters; a %-escape may hide either."""
    if any(marker in text for marker in _MARKERS):
        return True
    lower = text.lower()
    if any(marker in lower for marker in _MARKERS_ANY_CASE):
        return True
    return _RUN_40 in text.translate(_RUNS)


#: what `redact` writes in place of a credential
REDACTED = "[credential removed by ds]"
_PRIVATE_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
_URL_PASSWORD_PART = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/@:]+:)[^\s/@]+@", re.IGNORECASE)
_SIGNED_VALUE = re.compile(
    r"([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)"
    r"[^&\s\"'<>]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` (a command's output: an error line, a log) with each credential
    `credential_kind` knows replaced by `REDACTED`: a private key's block, a URL's password,
    a presigned URL's signature and key, API tokens, AWS key ids, session tokens, and
    secret keys (40-character runs with a random string's entropy). Text that
    `may_hold_credential` none of is returned as it is, at once."""
    if not may_hold_credential(text):
        return text
    text = _PRIVATE_BLOCK.sub(REDACTED, text)
    text = _URL_PASSWORD_PART.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _SIGNED_VALUE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    for pattern in (_API_TOKEN, _STS_TOKEN, _ACCESS_KEY):
        text = pattern.sub(REDACTED, text)
    text = _LONG_BASE64.sub(
        lambda m: REDACTED if entropy(m.group(0)) >= _TOKEN_ENTROPY else m.group(0), text
    )
    return _SECRET_KEY.sub(
        lambda m: REDACTED if _looks_random_key(m.group(0)) else m.group(0), text
    )


def first_credential(value: Any, path: str = "") -> tuple[str, str] | None:
    """``(dotted path, kind)`` of the first string in ``value`` holding a credential
    (`credential_kind`), or None."""
    for where, text in strings_in(value, path):
        kind = credential_kind(text)
        if kind is not None:
            return where, kind
    return None


_CONFIG_FIX = (
    "remove it from the config: the config is copied into the task definition, where anyone "
    "who can describe it reads it; workers get AWS access from the task role "
    "(aws.task_role_arn)"
)
PRESIGNED_SCRIPT_FIX = (
    "a presigned URL carries a credential, and the config is copied into the task "
    "definition: put the script in the workspace bucket and set recipe.script to its key "
    "(workers read it with the task role), or host it at an https:// URL that needs no "
    "signature"
)


def check_config_credentials(config: Config, *, source: str = "config") -> None:
    """Raise `InputError` when a field of ``config`` other than ``env`` holds a credential
    by its shape (`credential_kind`), naming ``source``, the field (its dotted name, e.g.
    ``tool.script_download_url``) and the fix — never the value.

    ``env`` entries are left to the task definition's builder, which drops each such entry
    with a warning (aws/taskenv.py); every other field is part of the config the workers
    need, so it is refused rather than dropped.
    """
    data: dict[str, Any] = config.model_dump(mode="json")
    data.pop("env", None)
    data.get("aws", {}).pop("profile", None)  # never copied into the task definition
    found = first_credential(data)
    if found is None:
        return
    field, kind = found
    presigned_script = field == "tool.script_download_url" and kind == PRESIGNED_URL
    raise InputError(
        source,
        field,
        f"holds {kind}, which would be written into the task definition",
        PRESIGNED_SCRIPT_FIX if presigned_script else _CONFIG_FIX,
    )
