"""The template engine: substitution, escapes, dotted names, missing fields, malformed input."""

from __future__ import annotations

from typing import Any

import pytest

from distributed_something.templates import MissingField, TemplateError, fields_in, render

FIELDS: dict[str, Any] = {
    "Plate": "P1",
    "Well": "A01",
    "Site": 3,
    "ratio": 0.5,
    "flag": False,
    "shared_metadata": {"rows": "2", "image": {"size": 1024}, "channels": ["DNA", "RNA"]},
    "file.name": "dotted-key.tif",
    "target-min-size": 64,
    "Image Name": "with space",
}


def r(template: str, fields: dict[str, Any] | None = None) -> str:
    return render(template, FIELDS if fields is None else fields, group='{"Well":"A01"}')


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("", ""),
        ("plain text", "plain text"),
        ("{Plate}", "P1"),
        ("images/{Plate}/{Well}_s{Site}.tif", "images/P1/A01_s3.tif"),
        ("{Plate}{Well}", "P1A01"),
        ("{ratio}", "0.5"),
        ("{flag}", "False"),
        ("{shared_metadata.rows}", "2"),
        ("{shared_metadata.image.size}px", "1024px"),
        ("{shared_metadata.channels.1}", "RNA"),
        ("{file.name}", "dotted-key.tif"),
        ("--min={target-min-size}", "--min=64"),
        ("{Image Name}", "with space"),
    ],
)
def test_render_substitutes_fields(template: str, expected: str) -> None:
    assert r(template) == expected


def test_objects_and_lists_render_as_canonical_json() -> None:
    # Key order in the job file must not change the rendered text.
    a = r("{m}", {"m": {"b": 1, "a": [1, "x"]}})
    b = r("{m}", {"m": {"a": [1, "x"], "b": 1}})
    assert a == b == '{"a":[1,"x"],"b":1}'
    assert r("{shared_metadata.channels}") == '["DNA","RNA"]'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{", "{"),
        ("}}", "}"),
        ("{{Plate}}", "{Plate}"),
        ("{{{Plate}}}", "{P1}"),
        ("a{{b}}c{Well}", "a{b}cA01"),
        ("awk '{{print $1}}'", "awk '{print $1}'"),
    ],
)
def test_double_braces_are_literal(template: str, expected: str) -> None:
    assert r(template) == expected


def test_values_are_not_reparsed() -> None:
    # A value that looks like a template (or like format-string attribute access) is text.
    fields = {"x": "{Plate}", "y": "{0.__class__}", "z": "$(rm -rf ~); `id`"}
    assert r("{x}|{y}|{z}", fields) == "{Plate}|{0.__class__}|$(rm -rf ~); `id`"


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("{Nope}", "Nope"),
        ("ok {Plate} then {Missing}", "Missing"),
        ("{shared_metadata.cols}", "shared_metadata.cols"),
        ("{Plate.sub}", "Plate.sub"),  # walking into a string
        ("{shared_metadata.channels.5}", "shared_metadata.channels.5"),
        ("{shared_metadata.channels.x}", "shared_metadata.channels.x"),
        ("{plate}", "plate"),  # names are case-sensitive
    ],
)
def test_missing_field(template: str, missing: str) -> None:
    with pytest.raises(MissingField) as caught:
        r(template)
    assert caught.value.field == missing
    assert isinstance(caught.value, KeyError)
    assert f"`{missing}`" in str(caught.value)
    assert '{"Well":"A01"}' in str(caught.value)


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{Plate", "never closed"),
        ("images/{Plate/{Well}", "never closed"),
        ("Plate}", "closes nothing"),
        ("{}", "empty name"),
        ("{  }", "empty name"),
        ("{ Plate }", "surrounding spaces"),
        ("{a..b}", "empty part"),
        ("{.a}", "empty part"),
        ("{a.}", "empty part"),
        ("{{Plate}", "closes nothing"),
    ],
)
def test_malformed_template(template: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        r(template)
    assert isinstance(caught.value, ValueError)
    assert repr(template) in str(caught.value)
    assert words in str(caught.value)
    with pytest.raises(TemplateError):
        fields_in(template)


def test_malformed_template_is_reported_even_without_fields() -> None:
    with pytest.raises(TemplateError):
        render("{x", {}, group="")


def test_fields_in_lists_names_in_order_without_repeats() -> None:
    assert fields_in("{b}/{a}/{b}/{{c}}/{d.e}") == ["b", "a", "d.e"]
    assert fields_in("no fields {{here}}") == []
