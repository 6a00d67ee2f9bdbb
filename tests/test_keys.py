"""Storage key validation: what `check_key`, `check_prefix` and `join_key` accept and refuse."""

from __future__ import annotations

import pytest

from distributed_something.backends.local.storage import TEMP_PREFIX, check_object_key
from distributed_something.errors import InputError
from distributed_something.keys import (
    MAX_KEY_BYTES,
    check_key,
    check_prefix,
    join_key,
    plainly_valid,
)

GOOD_KEYS = [
    "a",
    "a.txt",
    "a/b/c.txt",
    "plates/Plate 1/well A01.tif",
    ".hidden/..dots/...",
    "a/.b/c..d",
    "été/☃.csv",
    "x" * MAX_KEY_BYTES,
]

BAD_KEYS = {
    "": "is empty",
    "/etc/passwd": "absolute",
    "/": "absolute",
    "a\\b": "backslash",
    "..": "'..'",
    "../a": "'..'",
    "a/../b": "'..'",
    "a/..": "'..'",
    ".": "'.'",
    "./a": "'.'",
    "a/./b": "'.'",
    "a//b": "empty name",
    "a/": "empty name",
    "a\x00b": "NUL",
    "x" * (MAX_KEY_BYTES + 1): "1025 bytes",
    "é" * 513: "1026 bytes",  # 513 characters, but 2 bytes each in UTF-8
    "bad\udcffsurrogate": "UTF-8",
}


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_check_key_returns_valid_keys_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("key", "problem"), sorted(BAD_KEYS.items()))
def test_check_key_refuses_invalid_keys(key: str, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        check_key(key)
    assert problem in caught.value.problem
    assert repr(key)[:40] in caught.value.problem  # the error names the key
    assert caught.value.fix


def test_a_plain_key_is_valid_at_a_glance_and_nothing_invalid_is() -> None:
    # The fast path (one regular expression) must never pass what the full checks refuse.
    plain = ["a", "a.txt", "a/b/c.txt", "_ds/App/runs/r-1/attempts/t/0001-ab.done.json"]
    assert all(plainly_valid(key) for key in plain)
    assert all(check_key(key) == key for key in plain)
    for key in [*BAD_KEYS, f"a/{TEMP_PREFIX}x", ".hidden", "a/.b", "Plate 1/x", "été"]:
        assert not plainly_valid(key), key
    assert plainly_valid("x" * MAX_KEY_BYTES) and not plainly_valid("x" * (MAX_KEY_BYTES + 1))
    # Keys that are valid but not plain are still judged by the full checks.
    assert check_key(".hidden/..dots/...") == ".hidden/..dots/..."
    with pytest.raises(InputError, match="reserved"):
        check_object_key(f"a/{TEMP_PREFIX}x/b")
    assert check_object_key("a/.b") == "a/.b"


def test_check_key_refuses_non_strings() -> None:
    with pytest.raises(InputError, match="must be a string"):
        check_key(42)  # type: ignore[arg-type]


def test_check_key_error_names_the_source() -> None:
    with pytest.raises(InputError) as caught:
        check_key("../x", source="jobs.json")
    assert caught.value.source == "jobs.json"
    assert str(caught.value).startswith("jobs.json: ")
    with pytest.raises(InputError) as default:
        check_key("../x")
    assert default.value.source == "storage key"


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "a/bc", "x" * MAX_KEY_BYTES])
def test_check_prefix_accepts_empty_and_trailing_slash(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "a//b/", "../", "a/../", "a\\", "./"])
def test_check_prefix_refuses_what_check_key_refuses(prefix: str) -> None:
    with pytest.raises(InputError) as caught:
        check_prefix(prefix)
    assert repr(prefix) in caught.value.problem


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("a", "b", "c.txt"), "a/b/c.txt"),
        (("out/", "/task", "/x.csv"), "out/task/x.csv"),
        (("out//", "", "x"), "out/x"),
        (("a/b", "c/d"), "a/b/c/d"),
        (("single",), "single"),
    ],
)
def test_join_key(parts: tuple[str, ...], expected: str) -> None:
    assert join_key(*parts) == expected


@pytest.mark.parametrize(
    "parts",
    [(), ("", ""), ("/abs", "x"), ("a", "..", "b"), ("a", "b/"), ("a\\b", "c"), ("a", ".")],
)
def test_join_key_refuses_invalid_results(parts: tuple[str, ...]) -> None:
    with pytest.raises(InputError):
        join_key(*parts)


def test_join_key_passes_the_source_on() -> None:
    with pytest.raises(InputError) as caught:
        join_key("a", "..", source="job file")
    assert caught.value.source == "job file"
