"""The policy reference, written from the schema (``policy_schema``): the README's key table.

``scripts/gen-docs`` puts it between the README's ``policy-reference`` markers; a test keeps the
README in step. One row per key a policy author writes: ``defaults.X`` for each setting, one row
for a ``match`` mapping with its keys, and one row for the settings a rule overrides.
"""

from __future__ import annotations

import re
from typing import Any

from ..engine.policy_schema import DEFAULT_SETTINGS, POLICY
from ..engine.schema import (
    Boolean,
    Choice,
    Date,
    Field,
    Integer,
    Kind,
    ListOf,
    Mapping,
    Number,
    Text,
    Version,
)

BEGIN = "<!-- BEGIN policy-reference: written by scripts/gen-docs from policy_schema.py -->"
END = "<!-- END policy-reference -->"


def _code(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(str(v) for v in value)}]`"
    return f"`{value}`"


def _kind(kind: Kind) -> str:  # noqa: C901 - one case per kind of value
    if isinstance(kind, Choice):
        return " \\| ".join(f"`{v}`" for v in kind.values)
    if isinstance(kind, ListOf):
        item = kind.item
        if isinstance(item, Choice):
            return "list of " + ", ".join(f"`{v}`" for v in item.values)
        if isinstance(item, Text):
            return "list of absolute globs" if item.absolute else "list of strings"
        return "list"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Number):
        return f"number, {kind.low:g} to {kind.high:g}"
    if isinstance(kind, Integer):
        return f"integer, {kind.low} to {kind.high}"
    if isinstance(kind, Text):
        return "string"
    if isinstance(kind, Date):
        return "date `YYYY-MM-DD`"
    if isinstance(kind, Version):
        return f"`{kind.value}`"
    return "mapping, at least one key" if kind.at_least_one else "mapping"


def _default(spec: Field) -> str:
    if spec.required:
        return "required"
    if spec.default_text:
        return spec.default_text
    if spec.default is not None:
        return _code(spec.default)
    return "none"


def _meaning(text: str) -> str:
    # XML element names as code, or Markdown would take them for HTML tags.
    return re.sub(r"(<[^<>]+>)", r"`\1`", text).replace("|", "\\|")


def _row(key: str, spec: Field) -> str:
    return f"| `{key}` | {_kind(spec.kind)}, {_default(spec)} | {_meaning(spec.description)} |"


def _match_row(key: str, spec: Field) -> str:
    assert isinstance(spec.kind, Mapping)  # noqa: S101 - called for match mappings only
    keys = "; ".join(f"`{f.name}`: {f.description}" for f in spec.kind.fields)
    return (
        f"| `{key}` | {_kind(spec.kind)}, {_default(spec)} | {_meaning(spec.description)}: {keys} |"
    )


def _rows(prefix: str, mapping: Mapping) -> list[str]:
    rows: list[str] = []
    # A rule's settings are the defaults' own: one row says so (defaults has a row for each);
    # a rules-only setting has a row of its own.
    shared = DEFAULT_SETTINGS
    overrides = [f for f in mapping.fields if f in shared] if mapping.fields != shared else []
    for spec in mapping.fields:
        key = f"{prefix}{spec.name}"
        if spec in overrides:
            if spec is overrides[0]:
                names = ", ".join(f".{f.name}" for f in overrides)
                rows.append(f"| `{prefix}{names[1:]}` | as in `defaults` | overrides |")
            continue
        if isinstance(spec.kind, Mapping) and spec.name == "match":
            rows.append(_match_row(key, spec))
        elif isinstance(spec.kind, Mapping):
            rows.extend(_rows(f"{key}.", spec.kind))
        elif isinstance(spec.kind, ListOf) and isinstance(spec.kind.item, Mapping):
            rows.append(_row(key, spec))
            rows.extend(_rows(f"{key}[].", spec.kind.item))
        else:
            rows.append(_row(key, spec))
    return rows


def reference_table() -> str:
    """The key table, Markdown, between its markers."""
    lines = [BEGIN, "", "| key | type, default | meaning |", "|---|---|---|", *_rows("", POLICY)]
    return "\n".join([*lines, "", END])


def splice(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    head, found, rest = readme.partition(BEGIN)
    if not found:
        raise ValueError(f"README has no '{BEGIN}' marker")
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"README has no '{END}' marker")
    return head + reference_table() + tail
