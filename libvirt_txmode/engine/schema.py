"""A small schema language for plain data: kinds of values, a walker that checks a document
against them, and their JSON Schema form. ``policy_schema`` declares the policy in it.

``validate`` is the walker. It never sees YAML or JSON itself: a ``Source`` adapter answers "is
this a mapping, what are its items, is this scalar a string/boolean/number" for its node type, and
turns an error into its own exception (with the line for YAML). Standard library only: reading
the compiled copy needs no YAML.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar, Union

from ..common.records import SLOTS

# --- kinds of values -----------------------------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class Choice:
    """A value that must be one of ``values``."""

    values: tuple[str, ...]


@dataclass(frozen=True, **SLOTS)
class Boolean:
    """A YAML boolean."""


@dataclass(frozen=True, **SLOTS)
class Number:
    """A number between ``low`` and ``high``."""

    low: float
    high: float


@dataclass(frozen=True, **SLOTS)
class Integer:
    """A whole number in decimal (YAML's 0x10, 0o7 and 1:30 are refused, as for Number)."""

    low: int
    high: int


@dataclass(frozen=True, **SLOTS)
class Text:
    """A string (an absolute path, when ``absolute``)."""

    absolute: bool = False  # must start with '/'


@dataclass(frozen=True, **SLOTS)
class Date:
    """A calendar day, ISO 8601 (YYYY-MM-DD); kept as that text, which sorts as the days do."""


@dataclass(frozen=True, **SLOTS)
class Version:
    """The policy's schema version: exactly ``value``."""

    value: int


@dataclass(frozen=True, **SLOTS)
class ListOf:
    """A list whose items are each of the kind ``item``."""

    item: Kind


@dataclass(frozen=True, **SLOTS)
class Field:
    """One key of a mapping: its kind, its default and what the reference says of it."""

    name: str
    kind: Kind
    description: str
    default: Any = None
    required: str = ""  # non-empty: required, and this is the message when it is missing
    default_text: str = ""  # the default as the reference states it, where it is not a value
    # A setting only a rule may set (a limit on the NICs it matches means nothing in defaults).
    rules_only: bool = False


@dataclass(frozen=True, **SLOTS)
class Mapping:
    """A mapping with these keys and no others."""

    fields: tuple[Field, ...]
    description: str = ""
    at_least_one: bool = False  # an empty mapping is refused (an exception matching everything)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


Kind = Union[Choice, Boolean, Number, Integer, Text, Date, Version, ListOf, Mapping]


# --- the walker ----------------------------------------------------------------------------------

N = TypeVar("N")


class Source(Generic[N]):
    """What the walker asks of a document's nodes. Every query returns None for "not that"."""

    # What ``error`` makes: caught when the walker collects every error.
    error_types: tuple[type[Exception], ...] = ()

    def error(self, node: N, key: str, message: str) -> Exception:
        raise NotImplementedError

    def items(self, node: N, key: str) -> Optional[list[tuple[str, N, N]]]:
        """(name, key node, value node) of a mapping; raises for a non-string key."""
        raise NotImplementedError

    def sequence(self, node: N) -> Optional[Sequence[N]]:
        raise NotImplementedError

    def string(self, node: N) -> Optional[str]:
        raise NotImplementedError

    def boolean(self, node: N) -> Optional[bool]:
        raise NotImplementedError

    def number(self, node: N, key: str) -> Optional[float]:
        """The value; None if not a number at all; raises for a number in a form we refuse."""
        raise NotImplementedError

    def integer(self, node: N) -> Optional[int]:
        raise NotImplementedError

    def date(self, node: N) -> Optional[str]:
        """The text of a date scalar (YAML resolves an unquoted 2027-03-01 as a timestamp)."""
        raise NotImplementedError


def validate(  # noqa: C901, PLR0912 - one dispatch over the schema's node kinds
    source: Source[N], node: N, kind: Kind, key: str, errors: Optional[list[Exception]] = None
) -> Any:
    """Plain data (dict, list, str, bool, float, int) for ``node``, or the source's error.

    With ``errors``, every error is appended there and the walk goes on past it (check-policy
    reports them all); what is returned then leaves out the values in error."""
    if isinstance(kind, Mapping):
        return _mapping(source, node, kind, key, errors)
    if isinstance(kind, ListOf):
        children = source.sequence(node)
        if children is None:
            raise source.error(node, key, "expected a list")
        found = (
            _child(source, child, kind.item, f"{key}[{i}]", errors)
            for i, child in enumerate(children)
        )
        return [value for value in found if value is not _INVALID]
    if isinstance(kind, Choice):
        value = source.string(node)
        choices = ", ".join(kind.values)
        if value is None:
            raise source.error(node, key, f"expected one of: {choices}")
        if value not in kind.values:
            raise source.error(node, key, f"'{value}' is not one of: {choices}")
        return value
    if isinstance(kind, Text):
        value = source.string(node)
        if value is None:
            raise source.error(node, key, "expected a string")
        if not value:
            raise source.error(node, key, "must not be empty")
        if kind.absolute and not value.startswith("/"):
            raise source.error(node, key, "must be an absolute path or glob")
        return value
    if isinstance(kind, Boolean):
        flag = source.boolean(node)
        if flag is None:
            raise source.error(node, key, "expected true or false")
        return flag
    if isinstance(kind, Date):
        return _date(source, node, key)
    if isinstance(kind, Number):
        number = source.number(node, key)
        if number is None:
            raise source.error(node, key, "expected a number")
        if not kind.low <= number <= kind.high:
            raise source.error(node, key, f"must be between {kind.low:g} and {kind.high:g}")
        return number
    if isinstance(kind, Integer):
        return _integer(source, node, kind, key)
    return _version(source, node, kind, key)


def _integer(source: Source[N], node: N, kind: Integer, key: str) -> int:
    # number() first: it refuses the non-decimal forms with a message that says so.
    whole = source.integer(node) if source.number(node, key) is not None else None
    if whole is None:
        raise source.error(node, key, "expected a whole number")
    if not kind.low <= whole <= kind.high:
        raise source.error(node, key, f"must be between {kind.low} and {kind.high}")
    return whole


def _date(source: Source[N], node: N, key: str) -> str:
    text = source.date(node)
    if text is None or not is_iso_date(text):
        raise source.error(node, key, "expected a date as YYYY-MM-DD (e.g. 2027-03-01)")
    return text


def is_iso_date(text: str) -> bool:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return False
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _version(source: Source[N], node: N, kind: Version, key: str) -> int:
    found = source.integer(node)
    if found is None:
        raise source.error(node, key, f"expected the integer {kind.value}")
    if found != kind.value:
        raise source.error(node, key, f"unsupported version {found} (expected {kind.value})")
    return found


_INVALID = object()  # a value in error, left out when errors are collected


def _child(
    source: Source[N], node: N, kind: Kind, key: str, errors: Optional[list[Exception]]
) -> Any:
    if errors is None:
        return validate(source, node, kind, key)
    try:
        return validate(source, node, kind, key, errors)
    except source.error_types as exc:
        errors.append(exc)
        return _INVALID


def _report(errors: Optional[list[Exception]], error: Exception) -> None:
    if errors is None:
        raise error
    errors.append(error)


def _mapping(
    source: Source[N], node: N, kind: Mapping, key: str, errors: Optional[list[Exception]] = None
) -> dict[str, Any]:
    """Keys first (a typo is the likeliest mistake), then what is missing, then every value in
    the schema's order: the first error a reader reports does not depend on the key order."""
    items = source.items(node, key)
    if items is None:
        raise source.error(node, key, "expected a mapping")
    allowed = kind.names
    nodes: dict[str, N] = {}
    for name, key_node, value_node in items:
        dotted = f"{key}.{name}" if key else name
        if name not in allowed:
            message = f"unknown key (expected one of: {', '.join(allowed)})"
            _report(errors, source.error(key_node, dotted, message))
        elif name in nodes:
            _report(errors, source.error(key_node, dotted, "duplicate key"))
        else:
            nodes[name] = value_node
    if kind.at_least_one and not nodes:
        message = f"needs at least one of: {', '.join(allowed)} (an empty match fits all)"
        _report(errors, source.error(node, key, message))
    for spec in kind.fields:
        if spec.required and spec.name not in nodes:
            dotted = f"{key}.{spec.name}" if key else spec.name
            _report(errors, source.error(node, dotted, spec.required))
    values = {
        spec.name: _child(
            source, nodes[spec.name], spec.kind, f"{key}.{spec.name}" if key else spec.name, errors
        )
        for spec in kind.fields
        if spec.name in nodes
    }
    return {name: value for name, value in values.items() if value is not _INVALID}


# --- plain JSON data (the compiled copy) ---------------------------------------------------------


class JsonSource(Source[Any]):
    """Values as json.loads returns them; ``make_error`` builds the exception to raise."""

    def __init__(self, make_error: Any) -> None:
        self.make_error = make_error
        if isinstance(make_error, type) and issubclass(make_error, Exception):
            self.error_types = (make_error,)

    def error(self, node: Any, key: str, message: str) -> Exception:
        return self.make_error(f"{key or 'policy'}: {message}")

    def items(self, node: Any, key: str) -> Optional[list[tuple[str, Any, Any]]]:
        if not isinstance(node, dict):
            return None
        return [(name, name, value) for name, value in node.items()]

    def sequence(self, node: Any) -> Optional[Sequence[Any]]:
        return node if isinstance(node, list) else None

    def string(self, node: Any) -> Optional[str]:
        return node if isinstance(node, str) else None

    def boolean(self, node: Any) -> Optional[bool]:
        return node if type(node) is bool else None

    def number(self, node: Any, key: str) -> Optional[float]:
        return float(node) if type(node) in (int, float) else None

    def integer(self, node: Any) -> Optional[int]:
        return node if type(node) is int else None

    def date(self, node: Any) -> Optional[str]:
        return node if isinstance(node, str) else None


# --- JSON Schema ---------------------------------------------------------------------------------


def kind_schema(kind: Kind) -> dict[str, Any]:  # noqa: C901 - one case per kind of value
    if isinstance(kind, Mapping):
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: _field_schema(f) for f in kind.fields},
            "additionalProperties": False,
        }
        required = [f.name for f in kind.fields if f.required]
        if required:
            schema["required"] = required
        if kind.description:
            schema["description"] = kind.description
        if kind.at_least_one:
            schema["minProperties"] = 1
        return schema
    if isinstance(kind, ListOf):
        return {"type": "array", "items": kind_schema(kind.item)}
    if isinstance(kind, Choice):
        return {"type": "string", "enum": list(kind.values)}
    if isinstance(kind, Text):
        schema = {"type": "string", "minLength": 1}
        if kind.absolute:
            schema["pattern"] = "^/"
        return schema
    if isinstance(kind, Boolean):
        return {"type": "boolean"}
    if isinstance(kind, Date):
        return {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    if isinstance(kind, Number):
        return {"type": "number", "minimum": kind.low, "maximum": kind.high}
    if isinstance(kind, Integer):
        return {"type": "integer", "minimum": kind.low, "maximum": kind.high}
    return {"type": "integer", "const": kind.value}


def _field_schema(spec: Field) -> dict[str, Any]:
    schema = kind_schema(spec.kind)
    schema.setdefault("description", spec.description)
    if spec.default is not None:
        schema["default"] = spec.default
    return schema
