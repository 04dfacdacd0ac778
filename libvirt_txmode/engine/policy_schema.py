"""The one description of policy.yaml: every key, its type, its bounds, its default, its meaning.

Three readers are driven by it, so they cannot drift apart:
- ``policy.parse_policy`` walks the composed YAML against it (errors name file, line and key);
- ``policy.policy_from_json`` walks the compiled JSON copy (kept in the cache directory, read
  when the YAML is unchanged) against it;
- ``json_schema()`` publishes it as a JSON Schema (``libvirt-txmode policy-schema``) for editors.

``validate`` is the walker. It never sees YAML or JSON itself: a ``Source`` adapter answers "is
this a mapping, what are its items, is this scalar a string/boolean/number" for its node type, and
turns an error into its own exception (with the line for YAML). Standard library only: reading
the compiled copy needs no YAML.

One module (over 400 lines) because it is the one description of the policy: its kinds, its
keys, the walker that checks a document against them and the JSON Schema it publishes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar, Union

from ..common.records import SLOTS
from .model import TXMODES  # libvirt's only txmode values (model is standard library only)

ACTIONS = ("enforce", "audit")
DECISIONS = ("deny", "allow")
PASSTHROUGH_LEVELS = ("deny", "warn", "allow")
INEFFECTIVE_LEVELS = ("error", "warn", "ignore")
MATCH_KEYS = ("domain", "network", "bridge", "type", "model", "mac")
EXCEPTION_MATCH_KEYS = ("domain", "mac", "rule", "code")
# What `validate-domain --generate-exceptions` writes for a reason: check-policy flags it.
TODO_REASON = "TODO"
DEFAULT_EMULATORS = ("/usr/bin/qemu-system-*", "/usr/libexec/qemu-kvm")
SCHEMA_ID = "https://libvirt-txmode.invalid/policy-v1.schema.json"


# --- kinds of values -----------------------------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class Choice:
    values: tuple[str, ...]


@dataclass(frozen=True, **SLOTS)
class Boolean:
    pass


@dataclass(frozen=True, **SLOTS)
class Number:
    low: float
    high: float


@dataclass(frozen=True, **SLOTS)
class Integer:
    """A whole number in decimal (YAML's 0x10, 0o7 and 1:30 are refused, as for Number)."""

    low: int
    high: int


@dataclass(frozen=True, **SLOTS)
class Text:
    absolute: bool = False  # must start with '/'


@dataclass(frozen=True, **SLOTS)
class Date:
    """A calendar day, ISO 8601 (YYYY-MM-DD); kept as that text, which sorts as the days do."""


@dataclass(frozen=True, **SLOTS)
class Version:
    value: int


@dataclass(frozen=True, **SLOTS)
class ListOf:
    item: Kind


@dataclass(frozen=True, **SLOTS)
class Field:
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
    fields: tuple[Field, ...]
    description: str = ""
    at_least_one: bool = False  # an empty mapping is refused (an exception matching everything)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


Kind = Union[Choice, Boolean, Number, Integer, Text, Date, Version, ListOf, Mapping]


# --- the policy, version 1 -----------------------------------------------------------------------

# What a rule may set for the NICs it matches, and ``defaults`` for the others (but the
# rules-only ones). ``policy.Settings`` holds one value per entry: a key declared here is read,
# merged, compiled and checked everywhere. A setting with no default of its own takes the
# top-level key of the same name (``action``); one with neither is None ("no limit").
SETTINGS = (
    Field(
        "allowed",
        ListOf(Choice(TXMODES)),
        "txmodes permitted (txmode-not-allowed for any other)",
        default=list(TXMODES),
    ),
    Field(
        "require",
        Boolean(),
        "must every virtio NIC set a txmode? (txmode-required)",
        default=False,
    ),
    Field(
        "ineffective",
        Choice(INEFFECTIVE_LEVELS),
        "level of txmode-ineffective: a txmode QEMU will not use (vhost-net, vhost-user, "
        "non-virtio model); ignore: no finding",
        default="warn",
    ),
    Field(
        "action",
        Choice(ACTIONS),
        "per-rule override of the top-level action",
        default_text="the top-level action",
    ),
)
SETTING_NAMES = tuple(f.name for f in SETTINGS)
DEFAULT_SETTINGS = tuple(f for f in SETTINGS if not f.rules_only)

MATCH = Mapping(
    tuple(
        Field(key, Text(), f"glob pattern on the NIC's {what}")
        for key, what in (
            ("domain", "domain name"),
            ("network", "source network"),
            ("bridge", "source bridge"),
            ("type", "interface type"),
            ("model", "model type"),
            ("mac", "MAC address (case-insensitive)"),
        )
    ),
    "all optional, ANDed",
)

RULE = Mapping(
    (
        Field(
            "name",
            Text(),
            "named in every finding the rule produces",
            required="every rule needs a name (it is quoted in findings)",
        ),
        Field("match", MATCH, "which NICs the rule applies to: all keys optional, ANDed"),
        *SETTINGS,
    ),
    "the first rule whose match fits a NIC applies; its keys override defaults",
)

EXCEPTION_MATCH = Mapping(
    tuple(
        Field(key, Text(), f"glob pattern on the finding's {what}")
        for key, what in (
            ("domain", "domain name"),
            ("mac", "NIC's MAC address (case-insensitive)"),
            ("rule", "rule name (defaults for a NIC no rule matches)"),
            ("code", "code (e.g. txmode-not-allowed)"),
        )
    ),
    "at least one key, ANDed",
    at_least_one=True,
)

EXCEPTION = Mapping(
    (
        Field(
            "match",
            EXCEPTION_MATCH,
            "which findings the exception silences: at least one key, ANDed",
            required="every exception needs a match (domain, mac, rule and/or code)",
        ),
        Field(
            "reason",
            Text(),
            "why the exception is granted: reported with every finding it silences; check-policy "
            "flags TODO",
            required="every exception needs a reason (it is reported with what it silences)",
        ),
        Field(
            "expires",
            Date(),
            "the last day the exception applies; from the next day on it silences nothing and "
            "exception-expired says so",
        ),
    ),
    "silences the findings it matches; the first unexpired exception that matches applies",
)

POLICY = Mapping(
    (
        Field(
            "version",
            Version(1),
            "schema version",
            required="missing (this tool reads policy version 1)",
        ),
        Field(
            "action",
            Choice(ACTIONS),
            "enforce: violations are errors (the hook refuses the start, validate-domain exits "
            "1); audit: they are warnings (logged, the domain starts)",
            default="enforce",
        ),
        Field(
            "on_unknown",
            Choice(DECISIONS),
            "support could not be determined (emulator untrusted or missing, probe failed or "
            "timed out): deny makes it an error, allow a warning",
            default="deny",
        ),
        Field(
            "on_error",
            Choice(DECISIONS),
            "the hook itself failed (unreadable domain XML, internal error); a policy that cannot "
            "be read always denies: there is no on_error to consult",
            default="deny",
        ),
        Field(
            "passthrough",
            Choice(PASSTHROUGH_LEVELS),
            "level of passthrough-unverifiable: a <qemu:commandline> argument or <qemu:override> "
            "the tool cannot prove harmless to a NIC's tx. deny: a violation (an error under "
            "enforce, the hook refuses the start; a warning under audit); warn: a warning; allow: "
            "no finding. A tx the tool can compute is checked like any txmode whatever this says",
            default="deny",
        ),
        Field(
            "emulators",
            ListOf(Text(absolute=True)),
            "the only binaries ever executed to probe them; they must also be owned by root (or "
            "the caller) and not writable by group or others",
            default=list(DEFAULT_EMULATORS),
        ),
        Field(
            "probe_timeout",
            Number(0.1, 120),
            "seconds: a probe running longer is killed and support counts as unknown",
            default=5,
        ),
        Field("defaults", Mapping(DEFAULT_SETTINGS), "what applies to a NIC no rule matches"),
        Field(
            "rules",
            ListOf(RULE),
            "the first rule whose match fits a NIC applies; its keys override defaults",
            default=[],
        ),
        Field(
            "exceptions",
            ListOf(EXCEPTION),
            "findings silenced on purpose: the first unexpired exception that fits a finding "
            "silences it",
            default=[],
        ),
    ),
    "libvirt-txmode site policy (version 1)",
)
TOP_KEYS = POLICY.names


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


class OpenChoices(tuple[str, ...]):
    """Values that shell completion offers (shtab reads argparse ``choices``) without argparse
    refusing others: the command gives its own, clearer message for an unknown value."""

    def __contains__(self, item: object) -> bool:
        return True


# --- JSON Schema ---------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The policy as a JSON Schema (draft 07, what yaml-language-server reads best).

    What it cannot say: rule names must be unique (the readers check that too).
    """
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "libvirt-txmode policy",
        **_kind_schema(POLICY),
    }


def _kind_schema(kind: Kind) -> dict[str, Any]:  # noqa: C901 - one case per kind of value
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
        return {"type": "array", "items": _kind_schema(kind.item)}
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
    schema = _kind_schema(spec.kind)
    schema.setdefault("description", spec.description)
    if spec.default is not None:
        schema["default"] = spec.default
    return schema
