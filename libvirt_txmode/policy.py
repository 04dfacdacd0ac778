"""policy.yaml -> a validated, immutable Policy.

The YAML is composed into nodes (never constructed into Python objects, so no tag can run code)
and walked against a schema; every error names the file, the line and the dotted key, because a
typo that silently weakened the policy would be worse than no policy at all.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import yaml

from .domain import TXMODES, Domain, Nic

DEFAULT_POLICY_PATH = "/etc/libvirt-txmode/policy.yaml"
ACTIONS = ("enforce", "audit")
DECISIONS = ("deny", "allow")
INEFFECTIVE_LEVELS = ("error", "warn", "ignore")
MATCH_KEYS = ("domain", "network", "bridge", "type", "model", "mac")
DEFAULT_EMULATORS = ("/usr/bin/qemu-system-*", "/usr/libexec/qemu-kvm")
MAX_POLICY_BYTES = 1024 * 1024


class PolicyError(Exception):
    def __init__(self, file: str, line: int, key: str, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        where = f"{key}: " if key else ""
        super().__init__(f"{file}:{line}: {where}{message}")


@dataclass(frozen=True)
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
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


@dataclass(frozen=True)
class Settings:
    """What applies to one NIC once defaults and the matching rule are merged."""

    allowed: tuple[str, ...] = TXMODES
    require: bool = False
    ineffective: str = "warn"
    action: str = "enforce"
    rule: Optional[str] = None


@dataclass(frozen=True)
class Rule:
    name: str
    line: int
    match: Match
    overrides: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Policy:
    source: str = "(built-in)"
    version: int = 1
    action: str = "enforce"
    on_unknown: str = "deny"
    on_error: str = "deny"
    emulators: tuple[str, ...] = DEFAULT_EMULATORS
    probe_timeout: float = 5.0
    defaults: Settings = field(default_factory=Settings)
    rules: tuple[Rule, ...] = ()

    def settings_for(self, domain: Domain, nic: Nic) -> Settings:
        """First rule whose match fits wins; its keys override the defaults."""
        for rule in self.rules:
            if rule.match.fits(domain, nic):
                values = dict(rule.overrides)
                values["rule"] = rule.name
                return Settings(
                    allowed=values.get("allowed", self.defaults.allowed),
                    require=values.get("require", self.defaults.require),
                    ineffective=values.get("ineffective", self.defaults.ineffective),
                    action=values.get("action", self.defaults.action),
                    rule=rule.name,
                )
        return self.defaults

    def trusts(self, emulator: str) -> bool:
        return any(fnmatch.fnmatchcase(emulator, glob) for glob in self.emulators)


# --- loading -------------------------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, node: yaml.Node, key: str, message: str) -> PolicyError:
        return PolicyError(self.file, node.start_mark.line + 1, key, message)

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

        # The tag too: `!!python/object {...}` or `!!omap` must not pass for a plain mapping.
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
            raise self.error(node, key, "expected a mapping")
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise self.error(key_node, key, "keys must be plain strings")
            name = key_node.value
            dotted = f"{key}.{name}" if key else name
            if name not in allowed:
                raise self.error(
                    key_node, dotted, f"unknown key (expected one of: {', '.join(allowed)})"
                )
            if name in result:
                raise self.error(key_node, dotted, "duplicate key")
            result[name] = value_node
        return result

    def scalar(self, node: yaml.Node, key: str, tags: tuple[str, ...], what: str) -> str:
        import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            raise self.error(node, key, f"expected {what}")
        return str(node.value)

    def string(self, node: yaml.Node, key: str) -> str:
        value = self.scalar(node, key, (_STR,), "a string")
        if not value:
            raise self.error(node, key, "must not be empty")
        return value

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, key, (_STR,), f"one of: {', '.join(choices)}")
        if value not in choices:
            raise self.error(node, key, f"'{value}' is not one of: {', '.join(choices)}")
        return value

    def boolean(self, node: yaml.Node, key: str) -> bool:
        value = self.scalar(node, key, (_BOOL,), "true or false").lower()
        # An explicit tag (`!!bool maybe`) gets past the resolver: never read junk as false.
        if value not in _TRUE + _FALSE:
            raise self.error(node, key, "expected true or false")
        return value in _TRUE

    def number(self, node: yaml.Node, key: str, low: float, high: float) -> float:
        text = self.scalar(node, key, (_INT, _FLOAT), "a number")
        try:
            # YAML 1.1 also resolves 0x10, 0o7, 1:30 and .inf as numbers: plain decimals only.
            value = float(text.replace("_", ""))
        except ValueError:
            raise self.error(node, key, f"expected a decimal number, not '{text}'") from None
        if not low <= value <= high:
            raise self.error(node, key, f"must be between {low:g} and {high:g}")
        return value

    def sequence(
        self, node: yaml.Node, key: str, item: Callable[[yaml.Node, str], Any]
    ) -> tuple[Any, ...]:
        import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

        if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ:
            raise self.error(node, key, "expected a list")
        return tuple(item(child, f"{key}[{i}]") for i, child in enumerate(node.value))


TOP_KEYS = (
    "version",
    "action",
    "on_unknown",
    "on_error",
    "emulators",
    "probe_timeout",
    "defaults",
    "rules",
)
_SETTING_KEYS = ("allowed", "require", "ineffective", "action")


def _settings(
    reader: _Reader, node: yaml.Node, key: str, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    items = reader.mapping(node, key, _SETTING_KEYS + extra)
    for name, child in items.items():
        dotted = f"{key}.{name}"
        if name == "allowed":
            values[name] = reader.sequence(child, dotted, lambda n, k: reader.choice(n, k, TXMODES))
        elif name == "require":
            values[name] = reader.boolean(child, dotted)
        elif name == "ineffective":
            values[name] = reader.choice(child, dotted, INEFFECTIVE_LEVELS)
        elif name == "action":
            values[name] = reader.choice(child, dotted, ACTIONS)
    return values


def _rule(reader: _Reader, node: yaml.Node, key: str) -> Rule:
    import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

    items = reader.mapping(node, key, ("name", "match", *_SETTING_KEYS))
    if "name" not in items:
        raise reader.error(
            node, f"{key}.name", "every rule needs a name (it is quoted in findings)"
        )
    name = reader.string(items["name"], f"{key}.name")
    match = Match()
    if "match" in items:
        match_items = reader.mapping(items["match"], f"{key}.match", MATCH_KEYS)
        match = Match(**{k: reader.string(v, f"{key}.match.{k}") for k, v in match_items.items()})
    setting_nodes = {k: v for k, v in items.items() if k in _SETTING_KEYS}
    overrides: dict[str, Any] = {}
    if setting_nodes:
        synthetic = yaml.MappingNode(
            _MAP,
            [
                (yaml.ScalarNode(_STR, k, start_mark=v.start_mark), v)
                for k, v in setting_nodes.items()
            ],
            start_mark=node.start_mark,
        )
        overrides = _settings(reader, synthetic, key)
    return Rule(
        name=name,
        line=node.start_mark.line + 1,
        match=match,
        overrides=tuple(sorted(overrides.items())),
    )


def parse_policy(text: str, file: str) -> Policy:
    import yaml  # noqa: PLC0415 - deferred: the hook's warm path reads the compiled policy

    reader = _Reader(file)
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
    items = reader.mapping(root, "", TOP_KEYS)
    if "version" not in items:
        raise reader.error(root, "version", "missing (this tool reads policy version 1)")
    version = reader.scalar(items["version"], "version", (_INT,), "the integer 1")
    if version != "1":
        raise reader.error(
            items["version"], "version", f"unsupported version {version} (expected 1)"
        )

    top: dict[str, Any] = {"source": file}
    for name in ("action",):
        if name in items:
            top[name] = reader.choice(items[name], name, ACTIONS)
    for name in ("on_unknown", "on_error"):
        if name in items:
            top[name] = reader.choice(items[name], name, DECISIONS)
    if "emulators" in items:
        top["emulators"] = reader.sequence(items["emulators"], "emulators", reader.string)
        for i, glob in enumerate(top["emulators"]):
            if not glob.startswith("/"):
                raise reader.error(
                    items["emulators"].value[i],
                    f"emulators[{i}]",
                    "must be an absolute path or glob",
                )
    if "probe_timeout" in items:
        top["probe_timeout"] = reader.number(items["probe_timeout"], "probe_timeout", 0.1, 120)

    action = top.get("action", "enforce")
    defaults = Settings(action=action)
    if "defaults" in items:
        values = _settings(reader, items["defaults"], "defaults")
        values.setdefault("action", action)
        defaults = Settings(**values)
    top["defaults"] = defaults
    if "rules" in items:
        rules = reader.sequence(items["rules"], "rules", lambda n, k: _rule(reader, n, k))
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            if rule.name in seen:
                raise PolicyError(
                    file, rule.line, f"rules[{i}].name", f"duplicate rule name '{rule.name}'"
                )
            seen.add(rule.name)
        top["rules"] = rules
    return Policy(**top)


def load_policy(path: str, *, require_root_owned: Optional[bool] = None) -> Policy:
    """Read and validate a policy file.

    As root, a policy that someone else could write is refused: it decides what root's hook lets
    through, so it must be as protected as the hook itself.
    """
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    try:
        # O_NONBLOCK: a FIFO in place of the policy must not hang the hook (and libvirt) in open().
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise PolicyError(path, 0, "", f"cannot read policy: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # Checked on the descriptor: fdopen itself raises IsADirectoryError on a directory.
            raise PolicyError(path, 0, "", "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        if require_root_owned:
            if info.st_uid != 0:
                raise PolicyError(path, 0, "", f"refused: owned by uid {info.st_uid}, not root")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PolicyError(
                    path,
                    0,
                    "",
                    f"refused: writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})",
                )
        raw = handle.read(MAX_POLICY_BYTES + 1)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, "", f"larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path, 1, "", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    return parse_policy(text, path)
