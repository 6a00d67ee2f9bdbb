"""The template language of recipe argv, output prefixes and input keys.

A template is literal text with fields in braces::

    "{python}"                       -> sys.executable (a built-in of the command recipe)
    "images/{Plate}/{Well}.tif"      -> values of the task's fields
    "{shared_metadata.image_size}"   -> dotted names reach into nested objects (and lists by index)
    "{{literal}}"                    -> "{literal}"

This is pure string work on purpose: no ``eval``, no ``str.format`` (whose ``{x.__class__}``
attribute access and format specs are a way into the interpreter), no shell. A value is
substituted as text and never re-parsed, so a job value containing braces, quotes or shell
metacharacters ends up verbatim in the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from distributed_something.jobs.model import canonical_json

__all__ = [
    "CompiledTemplates",
    "MissingField",
    "TemplateError",
    "compile_templates",
    "fields_in",
    "format_value",
    "render",
]


class TemplateError(ValueError):
    """A template that cannot be parsed: an unclosed or unopened brace, or an empty name.

    The message quotes the template and says where it went wrong.
    """

    def __init__(self, template: str, problem: str) -> None:
        self.template = template
        self.problem = problem
        super().__init__(f"template {template!r}: {problem}")


class MissingField(KeyError):
    """A template names a field the task does not have.

    ``field`` is the name as written in the template (dotted names included, e.g.
    ``"shared_metadata.rows"``); ``group`` is the label of the task it was rendered for
    (may be empty).
    """

    def __init__(self, field: str, group: str = "") -> None:
        self.field = field
        self.group = group
        super().__init__(field)

    def __str__(self) -> str:
        # KeyError's own __str__ shows repr(args[0]); a sentence reads better in messages.
        where = f" in group {self.group}" if self.group else ""
        return f"no field `{self.field}`{where}"


@dataclass(frozen=True)
class _Field:
    name: str


_Segment = str | _Field


@lru_cache(maxsize=1024)
def _parse(template: str) -> tuple[_Segment, ...]:
    """Split a template into literal text and fields; raises TemplateError."""
    segments: list[_Segment] = []
    literal: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        char = template[i]
        if char == "{":
            if template.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = i + 1
            while end < n and template[end] not in "{}":
                end += 1
            if end >= n or template[end] != "}":
                raise TemplateError(template, f"the brace at position {i} is never closed")
            name = template[i + 1 : end]
            _check_name(template, name, i)
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(_Field(name))
            i = end + 1
        elif char == "}":
            if template.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise TemplateError(
                template,
                f"the brace at position {i} closes nothing (write `}}}}` for a literal `}}`)",
            )
        else:
            literal.append(char)
            i += 1
    if literal:
        segments.append("".join(literal))
    return tuple(segments)


def _check_name(template: str, name: str, position: int) -> None:
    if not name.strip():
        raise TemplateError(template, f"the field at position {position} has an empty name")
    if name != name.strip():
        raise TemplateError(
            template, f"the field name {name!r} at position {position} has surrounding spaces"
        )
    if any(not part for part in name.split(".")):
        raise TemplateError(
            template, f"the dotted field name {name!r} at position {position} has an empty part"
        )


def fields_in(template: str) -> list[str]:
    """The field names a template uses, in order of first use, without repeats.

    Raises ``TemplateError`` when the template is malformed, so it doubles as a check.
    """
    names: list[str] = []
    for segment in _parse(template):
        if isinstance(segment, _Field) and segment.name not in names:
            names.append(segment.name)
    return names


@dataclass(frozen=True)
class CompiledTemplates:
    """Templates parsed once, to render many tasks (`compile_templates`).

    ``names``: the distinct field names of all the templates, in order of first use.
    ``render(texts)`` gives each template with ``texts[i]`` in place of ``names[i]``, as
    `render` would with those texts as the values (written with `format_value` first).
    """

    names: tuple[str, ...]
    formats: tuple[str, ...]

    def render(self, texts: Sequence[str]) -> list[str]:
        """Each template rendered with ``texts`` (one per name, already text)."""
        # Formats hold only positional fields ("{3}") made here, never a template's own
        # text as a field, so no attribute access or format spec can come from a job.
        return [f.format(*texts) for f in self.formats]


def compile_templates(templates: Sequence[str]) -> CompiledTemplates:
    """``templates`` parsed once (see `CompiledTemplates`). Raises ``TemplateError`` when one
    is malformed."""
    names: list[str] = []
    formats: list[str] = []
    for template in templates:
        out: list[str] = []
        for segment in _parse(template):
            if isinstance(segment, str):
                out.append(segment.replace("{", "{{").replace("}", "}}"))
                continue
            if segment.name not in names:
                names.append(segment.name)
            out.append(f"{{{names.index(segment.name)}}}")
        formats.append("".join(out))
    return CompiledTemplates(tuple(names), tuple(formats))


def format_value(value: Any) -> str:
    """How a field value is written into a template: ``str()`` of scalars, canonical JSON of
    objects and lists (so the text is the same whatever the key order in the job file)."""
    if type(value) is str:  # the common case, without the abstract-class check
        return value
    if isinstance(value, Mapping | list | tuple):
        return canonical_json(value)
    return str(value)


_MISSING = object()


def _lookup(fields: Mapping[str, Any], name: str) -> Any:
    # A key that itself contains dots (a CSV column "file.name") is matched whole first.
    if name in fields:
        return fields[name]
    current: Any = fields
    for part in name.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdecimal() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def render(template: str, fields: Mapping[str, Any], *, group: str) -> str:
    """Replace every ``{name}`` / ``{name.sub}`` of ``template`` with its value from ``fields``.

    - Values are written with ``format_value`` (``str()``; objects and lists as canonical JSON)
      and never parsed again.
    - ``{{`` and ``}}`` are literal braces.
    - A name is first looked up whole; otherwise its dotted parts walk into nested objects
      (and into lists by a decimal index).
    - A name that cannot be resolved raises ``MissingField(name)`` carrying ``group``, a label
      of the task used in messages.
    - A malformed template raises ``TemplateError``.
    """
    out: list[str] = []
    for segment in _parse(template):
        if isinstance(segment, str):
            out.append(segment)
            continue
        value = _lookup(fields, segment.name)
        if value is _MISSING:
            raise MissingField(segment.name, group)
        out.append(format_value(value))
    return "".join(out)
