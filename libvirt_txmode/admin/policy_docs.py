"""The reference tables of docs/, written from their one source: the policy's keys from the schema
(``policy_schema``), the finding codes from their registry (``codes``), the ``-f`` choices from the
format registry (``report.registry``).

``scripts/gen-docs`` puts each between its markers in the file ``DOCUMENTS`` names, and its
``--check`` (the stale-file test) fails while one differs. Policy keys: one row per key a policy
author writes — ``defaults.X`` for each setting, one row for a ``match`` mapping with its keys,
and one row for the settings a rule overrides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingType
from typing import Any, Callable

from ..engine.codes import REGISTRY
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
from ..report.registry import FORMAT_NAMES


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


def _policy_rows() -> list[str]:
    return ["| key | type, default | meaning |", "|---|---|---|", *_rows("", POLICY)]


def _code_rows() -> list[str]:
    rows = ["| code | level | meaning |", "|---|---|---|"]
    for code, item in REGISTRY.items():
        meaning = " ".join(item.meaning.split())
        rows.append(f"| `{code}` | {_meaning(item.level_note)} | {_meaning(meaning)} |")
    return rows


def _format_rows() -> list[str]:
    names = ", ".join(f"`{name}`" for name in FORMAT_NAMES)
    return [
        f"`-f FORMAT` (validate-domain and `libvirt-txmode audit`) is one of: {names}; or `auto`, "
        "the default: `github` when `GITHUB_ACTIONS=true`, else `text`."
    ]


# Block name -> (the source named in its marker, what writes its lines).
BLOCKS: MappingType[str, tuple[str, Callable[[], list[str]]]] = {
    "policy-reference": ("policy_schema.py", _policy_rows),
    "finding-codes": ("engine/codes.py", _code_rows),
    "format-choices": ("report/registry.py", _format_rows),
}
# Which file below the project root holds which blocks.
DOCUMENTS: MappingType[str, tuple[str, ...]] = {
    "docs/policy.md": ("policy-reference", "finding-codes"),
    "docs/ci-guide.md": ("format-choices",),
}


def begin(name: str) -> str:
    return f"<!-- BEGIN {name}: written by scripts/gen-docs from {BLOCKS[name][0]} -->"


def end(name: str) -> str:
    return f"<!-- END {name} -->"


def block(name: str) -> str:
    """Block ``name``, Markdown, between its markers."""
    return "\n".join([begin(name), "", *BLOCKS[name][1](), "", end(name)])


def reference_table() -> str:
    """The policy key table, Markdown, between its markers."""
    return block("policy-reference")


def splice(text: str, names: tuple[str, ...] = ("policy-reference",)) -> str:
    """``text`` with what stands between each named block's markers replaced by the block as it
    is written now (ValueError when a marker is missing)."""
    for name in names:
        head, found, rest = text.partition(begin(name))
        if not found:
            raise ValueError(f"no '{begin(name)}' marker")
        _, found, tail = rest.partition(end(name))
        if not found:
            raise ValueError(f"no '{end(name)}' marker")
        text = head + block(name) + tail
    return text
