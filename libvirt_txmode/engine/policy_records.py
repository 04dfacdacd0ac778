"""The policy as records: what ``policy.yaml`` decides, once validated against the schema.

``build_policy`` makes them from a document the schema walker accepted (the YAML's or the
compiled copy's) and ``policy_document`` turns them back into one: both walk the schema's keys
(``policy_schema``), so a key declared there is read, merged and compiled without being spelled
again here. Pure and standard library only: the hook's warm path reads the compiled copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Optional

from ..common.records import SLOTS
from .model import Domain, Nic
from .policy_schema import (  # the one description of the policy's keys and values
    DEFAULT_SETTINGS,
    EXCEPTION_MATCH_KEYS,
    MATCH_KEYS,
    POLICY,
    SETTING_NAMES,
    SETTINGS,
)
from .schema import Field, ListOf, Number


class PolicyError(Exception):
    """A policy problem at ``line`` (and ``column``, where YAML gives one); line 0 is the file
    as a whole (unreadable, untrusted), written without a line."""

    def __init__(self, file: str, line: int, key: str, message: str, column: int = 0) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        self.column = column
        # The SHA-256 of the file's bytes when they could be read: the hook logs which version
        # of a policy it refused to use.
        self.sha256 = ""
        where = f"{key}: " if key else ""
        super().__init__(f"{file}:{line}: {where}{message}" if line else f"{file}: {message}")

    def located(self) -> str:
        """yamllint's form, ``file:line:col: key: message`` (check-policy, one per line)."""
        if not self.line:
            return str(self)
        where = f"{self.key}: " if self.key else ""
        return f"{self.file}:{self.line}:{self.column or 1}: {where}{self.message}"


@dataclass(frozen=True, **SLOTS)
class Match:
    """Which NICs a rule or exception is about; an unset key fits every NIC."""

    domain: Optional[str] = None
    network: Optional[str] = None
    bridge: Optional[str] = None
    type: Optional[str] = None
    model: Optional[str] = None
    mac: Optional[str] = None

    def fits(self, domain: Domain, nic: Nic) -> bool:
        values = {
            "domain": domain.name,
            "network": nic.network,
            "bridge": nic.bridge,
            "type": nic.type,
            "model": nic.model,
            "mac": nic.mac.lower() if nic.mac else None,
        }
        for key in MATCH_KEYS:
            pattern = getattr(self, key)
            if pattern is None:
                continue
            value = values[key]
            if key == "mac":
                # libvirt lower-cases MAC addresses, and people write them in either case.
                pattern = pattern.lower()
            if value is None or not fnmatchcase(value, pattern):
                return False
        return True


def _frozen(spec: Field, value: Any) -> Any:
    """A schema value as a record keeps it: lists as tuples, numbers as floats."""
    if isinstance(spec.kind, ListOf):
        return tuple(value)
    if isinstance(spec.kind, Number):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    """The inverse of ``_frozen`` for JSON: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


_TOP = {spec.name: spec for spec in POLICY.fields}
# The schema's settings, in its order: Settings.values holds one value for each.
_SETTING_INDEX = {name: i for i, name in enumerate(SETTING_NAMES)}
# A setting without a default of its own takes the top-level key's (``action``); else None.
_SETTING_DEFAULTS = tuple(
    _frozen(spec, spec.default)
    if spec.default is not None
    else (_TOP[spec.name].default if spec.name in _TOP else None)
    for spec in SETTINGS
)


@dataclass(frozen=True, **SLOTS)
class Settings:
    """What applies to one NIC once defaults and the matching rule are merged: a value for each
    setting of the schema (``policy_schema.SETTINGS``, in its order), read as an attribute of
    the same name (``settings.allowed``), and the name of the rule (None: defaults)."""

    values: tuple[Any, ...] = _SETTING_DEFAULTS
    rule: Optional[str] = None

    @classmethod
    def of(cls, rule: Optional[str] = None, **values: Any) -> Settings:
        """The built-in defaults with ``values`` in their place (values as records keep them)."""
        unknown = set(values) - set(SETTING_NAMES)
        if unknown:
            raise TypeError(f"not a policy setting: {', '.join(sorted(unknown))}")
        return cls(_SETTING_DEFAULTS, rule).merged(values.items(), rule)

    def merged(self, overrides: Iterable[tuple[str, Any]], rule: Optional[str]) -> Settings:
        values = list(self.values)
        for name, value in overrides:
            values[_SETTING_INDEX[name]] = value
        return Settings(tuple(values), rule)

    if TYPE_CHECKING:  # the attributes below, one per setting, as type checkers see them

        def __getattr__(self, name: str) -> Any: ...


def _setting(index: int) -> property:
    return property(lambda settings: settings.values[index])


# A property per setting (read on the hook's path for every NIC: no __getattr__ detour).
for _name, _index in _SETTING_INDEX.items():
    setattr(Settings, _name, _setting(_index))


@dataclass(frozen=True, **SLOTS)
class Rule:
    """A named rule of the policy: its match and the settings it overrides."""

    name: str
    line: int
    match: Match
    overrides: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, **SLOTS)
class PolicyException:
    """``exceptions[index]``: silences the findings its patterns fit, for ``reason``, up to and
    including the day ``expires`` (ISO text; None: no end)."""

    index: int
    line: int
    reason: str
    expires: Optional[str] = None
    domain: Optional[str] = None
    mac: Optional[str] = None
    rule: Optional[str] = None
    code: Optional[str] = None

    def match_items(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (key, value)
            for key in EXCEPTION_MATCH_KEYS
            if (value := getattr(self, key)) is not None
        )


# The top-level keys Policy holds as typed attributes, each as the schema declares it
# (test_policy checks that they are exactly the schema's scalar keys).
_SCALARS = tuple(name for name in _TOP if name not in ("defaults", "rules", "exceptions"))


@dataclass(frozen=True, **SLOTS)
class Policy:
    """A validated policy.yaml: what the site allows and how the gate acts."""

    source: str = "(built-in)"
    # The SHA-256 of the bytes it was read from ("" when built from text): the hook's log names
    # the exact policy each decision was made against.
    sha256: str = field(default="", compare=False)
    version: int = 1
    action: str = _TOP["action"].default
    on_unknown: str = _TOP["on_unknown"].default
    on_error: str = _TOP["on_error"].default
    passthrough: str = _TOP["passthrough"].default
    emulators: tuple[str, ...] = _frozen(_TOP["emulators"], _TOP["emulators"].default)
    probe_timeout: float = _frozen(_TOP["probe_timeout"], _TOP["probe_timeout"].default)
    defaults: Settings = field(default_factory=Settings)
    rules: tuple[Rule, ...] = ()
    exceptions: tuple[PolicyException, ...] = ()
    # Each rule's settings merged with the defaults once, not for every NIC it is asked about.
    _merged: tuple[Settings, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        merged = tuple(self.defaults.merged(rule.overrides, rule.name) for rule in self.rules)
        object.__setattr__(self, "_merged", merged)

    def settings_for(self, domain: Domain, nic: Nic) -> Settings:
        """First rule whose match fits wins; its keys override the defaults."""
        for rule, settings in zip(self.rules, self._merged):
            if rule.match.fits(domain, nic):
                return settings
        return self.defaults

    def trusts(self, emulator: str) -> bool:
        return any(fnmatchcase(emulator, glob) for glob in self.emulators)


def build_policy(
    data: dict[str, Any],
    source: str,
    rule_lines: Sequence[int],
    exception_lines: Sequence[int] = (),
    sha256: str = "",
) -> Policy:
    """A Policy from a document the schema walker accepted (from YAML or the compiled copy)."""
    top = {name: _frozen(_TOP[name], data.get(name, _TOP[name].default)) for name in _SCALARS}
    defaults = dict(data.get("defaults", {}))
    for spec in DEFAULT_SETTINGS:
        if spec.default is None and spec.name in top:
            defaults.setdefault(spec.name, top[spec.name])  # defaults.action: the top-level one
    rules = []
    seen: set[str] = set()
    for i, (item, line) in enumerate(zip(data.get("rules", []), rule_lines)):
        if item["name"] in seen:
            raise PolicyError(
                source, line, f"rules[{i}].name", f"duplicate rule name '{item['name']}'"
            )
        seen.add(item["name"])
        overrides = {k: v for k, v in item.items() if k not in ("name", "match")}
        rules.append(
            Rule(
                name=item["name"],
                line=line,
                match=Match(**item.get("match", {})),
                overrides=tuple(sorted(_settings(overrides).items())),
            )
        )
    return Policy(
        source=source,
        sha256=sha256,
        **top,
        defaults=Settings.of(**_settings(defaults)),
        rules=tuple(rules),
        exceptions=tuple(
            PolicyException(
                index=i,
                line=line,
                reason=item["reason"],
                expires=item.get("expires"),
                **item["match"],
            )
            for i, (item, line) in enumerate(zip(data.get("exceptions", []), exception_lines))
        ),
    )


_SETTING_SPECS = {spec.name: spec for spec in SETTINGS}


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _frozen(_SETTING_SPECS[name], value) for name, value in values.items()}


def policy_document(policy: Policy) -> tuple[dict[str, Any], list[int]]:
    """The inverse of ``build_policy``: the policy as plain data, and its rules' lines."""
    rules = []
    for rule in policy.rules:
        item: dict[str, Any] = {"name": rule.name}
        match = {k: getattr(rule.match, k) for k in MATCH_KEYS if getattr(rule.match, k)}
        if match:
            item["match"] = match
        item.update((k, _plain(v)) for k, v in rule.overrides)
        rules.append(item)
    document: dict[str, Any] = {name: _plain(getattr(policy, name)) for name in _SCALARS}
    document["defaults"] = {
        spec.name: _plain(getattr(policy.defaults, spec.name)) for spec in DEFAULT_SETTINGS
    }
    document["rules"] = rules
    if policy.exceptions:
        document["exceptions"] = [
            {
                "match": dict(item.match_items()),
                "reason": item.reason,
                **({"expires": item.expires} if item.expires else {}),
            }
            for item in policy.exceptions
        ]
    return document, [rule.line for rule in policy.rules]
