"""Policy loading for the hook's hot path: a compiled (JSON) copy of the validated policy.

Parsing policy.yaml means importing PyYAML and composing the document on every ``prepare begin``,
which costs more than the whole check. So the validated Policy is rendered as JSON into the hook's
cache directory and read back on later runs, without YAML, as long as it can be trusted:

- it is keyed by the policy file's identity (path, device, inode, size, mtime, ctime) and this
  tool's version, like the probe cache: any edit, replacement or upgrade makes it stale;
- the policy file itself is checked on every run exactly as ``load_policy`` checks it (regular
  file; as root: owned by root, not writable by group or others), because an unsafe policy must be
  refused even when a compiled copy of an earlier, safe state exists;
- the compiled file and its directory must be owned by us (or root) and not writable by group or
  others, and it is read with O_NOFOLLOW;
- its content is JSON, never pickle or marshal (no code runs from a file), and it is validated again
  field by field while the Policy dataclasses are rebuilt.

Anything wrong with the compiled copy (stale, corrupt, foreign, unreadable) means "not compiled":
the YAML is parsed as before and the copy rewritten. Nothing here logs: libvirt quotes the hook's
stderr to the user when it refuses a start, and a cache detail does not belong there.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Optional

from . import __version__, files
from .domain import TXMODES
from .policy import (
    ACTIONS,
    DECISIONS,
    INEFFECTIVE_LEVELS,
    MATCH_KEYS,
    TOP_KEYS,
    Match,
    Policy,
    Rule,
    Settings,
    load_policy,
)

FORMAT = "libvirt-txmode-compiled-policy"
FORMAT_VERSION = 1
MAX_COMPILED_BYTES = 4 * 1024 * 1024
_SETTING_KEYS = ("action", "allowed", "ineffective", "require")


class CompiledPolicyError(ValueError):
    """The compiled copy is not one we can use: ignore it and parse the YAML."""


def load_policy_cached(
    path: str, cache_dir: Optional[str] = None, *, require_root_owned: Optional[bool] = None
) -> Policy:
    """``load_policy(path)``, served from a compiled copy in ``cache_dir`` when one can be trusted.

    Raises PolicyError exactly as ``load_policy`` does. Without ``cache_dir`` it is ``load_policy``.
    """
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    if cache_dir is None:
        return load_policy(path, require_root_owned=require_root_owned)
    key = _policy_key(path, require_root_owned)
    if key is None:
        # Missing, unreadable, not a regular file or unsafe: load_policy raises the exact error.
        return load_policy(path, require_root_owned=require_root_owned)
    compiled = compiled_path(cache_dir, path)
    try:
        return _read_compiled(compiled, cache_dir, key, path)
    except (OSError, CompiledPolicyError):
        pass
    policy = load_policy(path, require_root_owned=require_root_owned)
    # Store only if the file we just parsed is still the one the key describes (no edit meanwhile).
    if _policy_key(path, require_root_owned) == key:
        _write_compiled(compiled, cache_dir, key, policy)
    return policy


def compiled_path(cache_dir: str, policy_path: str) -> str:
    import hashlib  # noqa: PLC0415 - only for the file name

    digest = hashlib.sha256(policy_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_dir, f"policy-{digest}.json")


def _policy_key(path: str, require_root_owned: bool) -> Optional[str]:
    """The identity the compiled copy is valid for, or None if load_policy would refuse the file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if require_root_owned and (info.st_uid != 0 or files.writable_by_others(info)):
        return None
    return f"{path}:{files.file_key(info)}"


def _usable_dir(cache_dir: str) -> bool:
    try:
        info = os.lstat(cache_dir)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and files.trusted(info)


def _read_compiled(compiled: str, cache_dir: str, key: str, path: str) -> Policy:
    if not _usable_dir(cache_dir):
        raise CompiledPolicyError(f"{cache_dir} is not a safe directory")
    fd = os.open(compiled, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or not files.trusted(info):
            raise CompiledPolicyError(f"{compiled} has a foreign owner or mode")
        raw = handle.read(MAX_COMPILED_BYTES + 1)
    if len(raw) > MAX_COMPILED_BYTES:
        raise CompiledPolicyError(f"{compiled} is too large")
    try:
        document = json.loads(raw)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise CompiledPolicyError(f"{compiled} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CompiledPolicyError(f"{compiled} is not a compiled policy")
    if document.get("version") != FORMAT_VERSION or document.get("tool") != __version__:
        raise CompiledPolicyError(f"{compiled} was written by another version")
    if document.get("key") != key:
        raise CompiledPolicyError(f"{compiled} describes another state of {path}")
    policy = policy_from_json(document.get("policy"))
    if policy.source != path:
        raise CompiledPolicyError(f"{compiled} names another source")
    return policy


def _write_compiled(compiled: str, cache_dir: str, key: str, policy: Policy) -> None:
    from .cache import write_atomic  # noqa: PLC0415 - only on a miss

    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": __version__,
        "key": key,
        "policy": policy_to_json(policy),
    }
    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        if not _usable_dir(cache_dir):
            return
        write_atomic(compiled, json.dumps(document, indent=1).encode() + b"\n", mode=0o644)
    except OSError:
        pass  # a read-only or full disk only costs the next run a YAML parse


# --- Policy <-> JSON -----------------------------------------------------------------------------


def policy_to_json(policy: Policy) -> dict[str, Any]:
    return {
        "source": policy.source,
        "version": policy.version,
        "action": policy.action,
        "on_unknown": policy.on_unknown,
        "on_error": policy.on_error,
        "emulators": list(policy.emulators),
        "probe_timeout": policy.probe_timeout,
        "defaults": {
            "allowed": list(policy.defaults.allowed),
            "require": policy.defaults.require,
            "ineffective": policy.defaults.ineffective,
            "action": policy.defaults.action,
            "rule": policy.defaults.rule,
        },
        "rules": [
            {
                "name": rule.name,
                "line": rule.line,
                "match": {
                    k: getattr(rule.match, k)
                    for k in MATCH_KEYS
                    if getattr(rule.match, k) is not None
                },
                "overrides": [
                    [k, list(v) if isinstance(v, tuple) else v] for k, v in rule.overrides
                ],
            }
            for rule in policy.rules
        ],
    }


def policy_from_json(data: object) -> Policy:
    """Rebuild a Policy, checking every field as strictly as the YAML reader does."""
    top = _object(data, "policy", _TOP_FIELDS)
    if type(top["version"]) is not int or top["version"] != 1:
        raise CompiledPolicyError("policy.version: expected 1")
    emulators = _strings(top["emulators"], "policy.emulators")
    if not all(glob.startswith("/") for glob in emulators):
        raise CompiledPolicyError("policy.emulators: must be absolute")
    timeout = top["probe_timeout"]
    if type(timeout) not in (int, float) or not 0.1 <= timeout <= 120:
        raise CompiledPolicyError("policy.probe_timeout: out of range")
    defaults = _object(top["defaults"], "policy.defaults", _DEFAULT_FIELDS)
    if defaults["rule"] is not None:
        raise CompiledPolicyError("policy.defaults.rule: must be null")
    rules = top["rules"]
    if not isinstance(rules, list):
        raise CompiledPolicyError("policy.rules: expected a list")
    built = tuple(_rule(item, f"policy.rules[{i}]") for i, item in enumerate(rules))
    if len({rule.name for rule in built}) != len(built):
        raise CompiledPolicyError("policy.rules: duplicate rule name")
    return Policy(
        source=_string(top["source"], "policy.source"),
        version=1,
        action=_choice(top["action"], "policy.action", ACTIONS),
        on_unknown=_choice(top["on_unknown"], "policy.on_unknown", DECISIONS),
        on_error=_choice(top["on_error"], "policy.on_error", DECISIONS),
        emulators=emulators,
        probe_timeout=float(timeout),
        defaults=Settings(
            allowed=_allowed(defaults["allowed"], "policy.defaults.allowed"),
            require=_boolean(defaults["require"], "policy.defaults.require"),
            ineffective=_choice(
                defaults["ineffective"], "policy.defaults.ineffective", INEFFECTIVE_LEVELS
            ),
            action=_choice(defaults["action"], "policy.defaults.action", ACTIONS),
        ),
        rules=built,
    )


# The policy file's keys, plus where it was read from.
_TOP_FIELDS = ("source", *TOP_KEYS)
_DEFAULT_FIELDS = ("allowed", "require", "ineffective", "action", "rule")
_RULE_FIELDS = ("name", "line", "match", "overrides")


def _rule(data: object, where: str) -> Rule:
    item = _object(data, where, _RULE_FIELDS)
    line = item["line"]
    if type(line) is not int or line < 1:
        raise CompiledPolicyError(f"{where}.line: expected a positive integer")
    match = item["match"]
    if not isinstance(match, dict) or not set(match) <= set(MATCH_KEYS):
        raise CompiledPolicyError(f"{where}.match: expected an object of {', '.join(MATCH_KEYS)}")
    pairs = item["overrides"]
    if not isinstance(pairs, list):
        raise CompiledPolicyError(f"{where}.overrides: expected a list")
    overrides: list[tuple[str, Any]] = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2 or pair[0] not in _SETTING_KEYS:
            raise CompiledPolicyError(f"{where}.overrides: expected [setting, value] pairs")
        name, value = pair
        dotted = f"{where}.overrides.{name}"
        if name == "allowed":
            value = _allowed(value, dotted)
        elif name == "require":
            value = _boolean(value, dotted)
        elif name == "ineffective":
            value = _choice(value, dotted, INEFFECTIVE_LEVELS)
        else:
            value = _choice(value, dotted, ACTIONS)
        overrides.append((name, value))
    names = [name for name, _ in overrides]
    if names != sorted(set(names)):
        raise CompiledPolicyError(f"{where}.overrides: not sorted or duplicated")
    return Rule(
        name=_string(item["name"], f"{where}.name"),
        line=line,
        match=Match(**{k: _string(v, f"{where}.match.{k}") for k, v in match.items()}),
        overrides=tuple(overrides),
    )


def _object(data: object, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != set(fields):
        raise CompiledPolicyError(f"{where}: expected an object with exactly {', '.join(fields)}")
    return data


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CompiledPolicyError(f"{where}: expected a non-empty string")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise CompiledPolicyError(f"{where}: expected a list")
    return tuple(_string(item, where) for item in value)


def _choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise CompiledPolicyError(f"{where}: expected one of {', '.join(choices)}")
    return value


def _boolean(value: object, where: str) -> bool:
    if type(value) is not bool:
        raise CompiledPolicyError(f"{where}: expected true or false")
    return value


def _allowed(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise CompiledPolicyError(f"{where}: expected a list")
    return tuple(_choice(item, where, TXMODES) for item in value)
