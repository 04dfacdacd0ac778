"""policy.yaml -> a validated, immutable Policy.

The YAML is composed into nodes (never constructed into Python objects, so no tag can run code)
and walked against the schema of policy_schema.py (which also checks the hook's compiled copy and
is published as a JSON Schema); every error names the file, the line and the dotted key, because
a typo that silently weakened the policy would be worse than no policy at all.

One module (over 400 lines) because every reader of policy.yaml — the YAML walk, the compiled
copy, load_policy's cache — builds the same records through ``build_policy``; its importers
name one place for all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Optional

from .. import __version__
from ..common import files, paths
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
from .schema import Field, JsonSource, ListOf, Number, Source, validate

if TYPE_CHECKING:
    import yaml

DEFAULT_POLICY_PATH = paths.POLICY
MAX_POLICY_BYTES = 1024 * 1024


class PolicyError(Exception):
    """A policy problem at ``line`` (and ``column``, where YAML gives one); line 0 is the file
    as a whole (unreadable, untrusted), written without a line."""

    def __init__(self, file: str, line: int, key: str, message: str, column: int = 0) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        self.column = column
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
    source: str = "(built-in)"
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


# --- loading -------------------------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


class _YamlSource(Source["yaml.Node"]):
    """Composed YAML nodes for the schema walker. Tags are checked, not only node types:
    ``!!python/object {...}`` or ``!!omap`` must not pass for a plain mapping."""

    error_types = (PolicyError,)

    def __init__(self, file: str) -> None:
        import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

        self.file = file
        self.yaml = yaml

    def error(self, node: yaml.Node, key: str, message: str) -> PolicyError:
        mark = node.start_mark
        return PolicyError(self.file, mark.line + 1, key, message, column=mark.column + 1)

    def items(self, node: yaml.Node, key: str) -> Optional[list[tuple[str, yaml.Node, yaml.Node]]]:
        if not isinstance(node, self.yaml.MappingNode) or node.tag != _MAP:
            return None
        found: list[tuple[str, yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, self.yaml.ScalarNode) or key_node.tag != _STR:
                raise self.error(key_node, key, "keys must be plain strings")
            found.append((str(key_node.value), key_node, value_node))
        return found

    def sequence(self, node: yaml.Node) -> Optional[Sequence[yaml.Node]]:
        if not isinstance(node, self.yaml.SequenceNode) or node.tag != _SEQ:
            return None
        return list(node.value)

    def _scalar(self, node: yaml.Node, tags: tuple[str, ...]) -> Optional[str]:
        if not isinstance(node, self.yaml.ScalarNode) or node.tag not in tags:
            return None
        return str(node.value)

    def string(self, node: yaml.Node) -> Optional[str]:
        return self._scalar(node, (_STR,))

    def boolean(self, node: yaml.Node) -> Optional[bool]:
        text = self._scalar(node, (_BOOL,))
        # An explicit tag (`!!bool maybe`) gets past the resolver: never read junk as false.
        if text is None or text.lower() not in _TRUE + _FALSE:
            return None
        return text.lower() in _TRUE

    def number(self, node: yaml.Node, key: str) -> Optional[float]:
        text = self._scalar(node, (_INT, _FLOAT))
        if text is None:
            return None
        try:
            # YAML 1.1 also resolves 0x10, 0o7, 1:30 and .inf as numbers: plain decimals only.
            return float(text.replace("_", ""))
        except ValueError:
            raise self.error(node, key, f"expected a decimal number, not '{text}'") from None

    def date(self, node: yaml.Node) -> Optional[str]:
        return self._scalar(node, (_TIMESTAMP, _STR))

    def integer(self, node: yaml.Node) -> Optional[int]:
        text = self._scalar(node, (_INT,))
        if text is None:
            return None
        try:
            return int(text.replace("_", ""))
        except ValueError:
            return -1  # 0x1, 0o1: not the plain 1 a version is written as


def build_policy(
    data: dict[str, Any],
    source: str,
    rule_lines: Sequence[int],
    exception_lines: Sequence[int] = (),
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


def parse_policy(text: str, file: str) -> Policy:
    import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise PolicyError(file, line, "", f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(file, 1, "", f"not valid YAML: {exc}") from None
    except RecursionError:
        # PyYAML's composer recurses per nesting level: `[[[[...` a few thousand deep is enough.
        raise PolicyError(file, 1, "", "not valid YAML: nested too deeply") from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        raise PolicyError(file, 1, "", "the policy is empty (expected at least 'version: 1')")
    data = validate(_YamlSource(file), root, POLICY, "")
    return build_policy(data, file, _item_lines(root, "rules"), _item_lines(root, "exceptions"))


def policy_problems(text: str, file: str) -> list[PolicyError]:
    """Every problem of the policy ``text`` in one pass (check-policy), in the file's order:
    the schema walker goes on past each error; the checks across items (unique rule names)
    run when the shape is right."""
    import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return [PolicyError(file, line, "", f"not valid YAML: {exc.problem or exc}", column)]
    except (yaml.YAMLError, RecursionError):
        try:
            parse_policy(text, file)
        except PolicyError as exc:
            return [exc]
        return []  # pragma: no cover - parse_policy refuses what compose refused
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        return [PolicyError(file, 1, "", "the policy is empty (expected at least 'version: 1')")]
    errors: list[Exception] = []
    try:
        validate(_YamlSource(file), root, POLICY, "", errors)
    except PolicyError as exc:
        errors.append(exc)
    found = [e for e in errors if isinstance(e, PolicyError)]
    if not found:
        try:
            parse_policy(text, file)
        except PolicyError as exc:
            found.append(exc)
    return sorted(found, key=lambda e: (e.line, e.column))


def file_problems(path: str) -> tuple[Optional[Policy], list[PolicyError]]:
    """The policy in ``path`` and every problem it has (check-policy): the policy is None
    unless there is none. Who owns the file is not looked at (the readers that trust it do)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return None, [PolicyError(path, 0, "", "not a regular file")]
        text = _read_text(path)
    except OSError as exc:
        return None, [PolicyError(path, 0, "", f"cannot read policy: {exc.strerror}")]
    except PolicyError as exc:
        return None, [exc]
    found = policy_problems(text, path)
    return (None if found else parse_policy(text, path)), found


def _item_lines(root: yaml.Node, key: str) -> list[int]:
    """Where each item of the list ``key`` starts: findings and errors quote it (the walker has
    checked the shape)."""
    for key_node, value_node in root.value:
        if key_node.value == key:
            return [child.start_mark.line + 1 for child in value_node.value]
    return []


def load_policy(
    path: str, cache_dir: Optional[str] = None, *, require_root_owned: Optional[bool] = None
) -> Policy:
    """Read and validate a policy file; with ``cache_dir``, through a compiled copy.

    As root, a policy that someone else could write, or reach by a path someone else could
    change, is refused (``files.path_trust_problem``): it decides what root's hook lets through,
    so it must be as protected as the hook itself. Parsing YAML costs the hook more than its
    whole check, so the validated policy is also kept as JSON in ``cache_dir`` and read back
    while the file is unchanged (``_read_compiled``); anything wrong with that copy only means
    the YAML is parsed again.
    """
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    key = _identity(path, require_root_owned)
    if cache_dir is not None:
        policy = _read_compiled(cache_dir, path, key)
        if policy is not None:
            return policy
    policy = parse_policy(_read_text(path), path)
    # Stored only if the file just parsed is still the one the key describes (no edit meanwhile).
    if cache_dir is not None and _identity(path, require_root_owned) == key:
        _write_compiled(cache_dir, path, key, policy)
    return policy


def _identity(path: str, require_root_owned: bool) -> str:
    """The file's identity, which the compiled copy is valid for; PolicyError if it must not be
    read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise PolicyError(path, 0, "", f"cannot read policy: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise PolicyError(path, 0, "", "not a regular file")
    if require_root_owned:
        problem = files.path_trust_problem(path, kind="file")
        if problem is not None:
            raise PolicyError(path, 0, "", f"refused: {problem}")
    return f"{path}:{files.file_key(info)}"


def _read_text(path: str) -> str:
    try:
        # Non-blocking, regular files only: a FIFO swapped in must not hang the hook in open().
        raw, _ = files.read_regular(path, MAX_POLICY_BYTES, follow_symlinks=True)
    except OSError as exc:
        raise PolicyError(path, 0, "", f"cannot read policy: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, "", f"larger than {MAX_POLICY_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path, 1, "", f"not UTF-8: {exc.reason} at byte {exc.start}") from None


# --- the compiled copy ---------------------------------------------------------------------------
# JSON, never pickle or marshal (no code runs from a file): the policy as the plain document
# policy_schema describes, checked against it again and rebuilt by the same ``build_policy``.

COMPILED_FORMAT = "libvirt-txmode-compiled-policy"
COMPILED_VERSION = 3
MAX_COMPILED_BYTES = 4 * 1024 * 1024


class CompiledPolicyError(ValueError):
    """The compiled copy is not one we can use: ignore it and parse the YAML."""


def compiled_path(cache_dir: str, policy_path: str) -> str:
    digest = hashlib.sha256(policy_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_dir, f"policy-{digest}.json")


def _read_compiled(cache_dir: str, path: str, key: str) -> Optional[Policy]:
    compiled = compiled_path(cache_dir, path)
    try:
        if files.private_dir_problem(cache_dir, create=False) is not None:
            return None
        raw = files.read_trusted(compiled, MAX_COMPILED_BYTES, allowed_uids=files.owners())
        document = json.loads(raw)
    except (OSError, ValueError):  # ValueError: not JSON, not UTF-8
        return None
    if (
        not isinstance(document, dict)
        or document.get("format") != COMPILED_FORMAT
        or document.get("version") != COMPILED_VERSION
        or document.get("tool") != __version__
        or document.get("key") != key
    ):
        return None
    try:
        policy = policy_from_json(document.get("policy"))
    except CompiledPolicyError:
        return None
    return policy if policy.source == path else None


def _write_compiled(cache_dir: str, path: str, key: str, policy: Policy) -> None:
    document = {
        "format": COMPILED_FORMAT,
        "version": COMPILED_VERSION,
        "tool": __version__,
        "key": key,
        "policy": policy_to_json(policy),
    }
    try:
        if files.private_dir_problem(cache_dir, create=True) is not None:
            return
        # No fsync: a copy cut short by a crash does not parse, and the YAML is read again.
        data = json.dumps(document, indent=1).encode() + b"\n"
        files.write_atomic(compiled_path(cache_dir, path), data, mode=0o600, sync=False)
    except OSError:
        pass  # a read-only or full disk only costs the next run a YAML parse


def policy_to_json(policy: Policy) -> dict[str, Any]:
    document, lines = policy_document(policy)
    return {
        "source": policy.source,
        "document": document,
        "rule_lines": lines,
        "exception_lines": [item.line for item in policy.exceptions],
    }


def policy_from_json(data: object) -> Policy:
    """Rebuild a Policy, checking the document against the same schema as the YAML reader."""
    keys = {"source", "document", "rule_lines", "exception_lines"}
    if not isinstance(data, dict) or set(data) != keys:
        raise CompiledPolicyError(
            "policy: expected an object with source, document, rule_lines, exception_lines"
        )
    source, lines = data["source"], data["rule_lines"]
    exception_lines = data["exception_lines"]
    if not isinstance(source, str) or not source:
        raise CompiledPolicyError("policy.source: expected a non-empty string")
    document = validate(JsonSource(CompiledPolicyError), data["document"], POLICY, "")
    if (
        not isinstance(lines, list)
        or not all(type(line) is int and line > 0 for line in lines)
        or len(lines) != len(document.get("rules", []))
    ):
        raise CompiledPolicyError("policy.rule_lines: expected a positive line per rule")
    if (
        not isinstance(exception_lines, list)
        or not all(type(line) is int and line > 0 for line in exception_lines)
        or len(exception_lines) != len(document.get("exceptions", []))
    ):
        raise CompiledPolicyError("policy.exception_lines: expected a positive line per exception")
    try:
        return build_policy(document, source, lines, exception_lines)
    except PolicyError as exc:
        raise CompiledPolicyError(str(exc)) from None
