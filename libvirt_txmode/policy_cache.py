"""Policy loading for the hook's hot path: a compiled (JSON) copy of the validated policy.

Parsing policy.yaml means importing PyYAML and composing the document on every ``prepare begin``,
which costs more than the whole check. So the validated Policy is rendered as JSON into the hook's
cache directory and read back on later runs, without YAML, as long as it can be trusted:

- it is keyed by the policy file's identity (path, device, inode, size, mtime, ctime) and this
  tool's version, like the probe cache: any edit, replacement or upgrade makes it stale;
- the policy file itself is checked on every run exactly as ``load_policy`` checks it (regular
  file; as root: owned by root, not writable by group or others), because an unsafe policy must be
  refused even when a compiled copy of an earlier, safe state exists;
- as root, the policy's whole path (every directory, every link) must pass
  ``files.path_trust_problem``;
- the compiled file must be owned by us (or root) and not writable by group or others, its
  directory must pass ``files.private_dir_problem`` (0700), and it is read with O_NOFOLLOW and
  O_NONBLOCK, regular files only;
- its content is JSON, never pickle or marshal (no code runs from a file): the policy as plain
  data, checked against policy_schema (the description the YAML reader walks too) before the
  Policy is rebuilt by the same ``build_policy``.

Anything wrong with the compiled copy (stale, corrupt, foreign, unreadable) means "not compiled":
the YAML is parsed as before and the copy rewritten. Nothing here logs: libvirt quotes the hook's
stderr to the user when it refuses a start, and a cache detail does not belong there.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Optional

from . import __version__, files
from .policy import (
    Policy,
    PolicyError,
    build_policy,
    load_policy,
    policy_document,
)
from .policy_schema import POLICY, JsonSource, validate

FORMAT = "libvirt-txmode-compiled-policy"
# 2: the policy is stored as the plain document policy_schema describes (and is checked against).
FORMAT_VERSION = 2
MAX_COMPILED_BYTES = 4 * 1024 * 1024


class CompiledPolicyError(ValueError):
    """The compiled copy is not one we can use: ignore it and parse the YAML."""


def load_policy_cached(
    path: str, cache_dir: Optional[str] = None, *, require_root_owned: Optional[bool] = None
) -> Policy:
    """``load_policy(path)``, served from a compiled copy in ``cache_dir`` when one can be trusted.

    Raises PolicyError as ``load_policy`` does, and (as root) also when a directory or link on
    the policy's path is not trusted. Without ``cache_dir`` nothing compiled is read or written.
    """
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    key = _policy_key(path, require_root_owned)
    if key is None or cache_dir is None:
        # Missing, unreadable, not a regular file or unsafe: load_policy raises the exact error.
        _refuse_untrusted_path(path, key, require_root_owned)
        return load_policy(path, require_root_owned=require_root_owned)
    _refuse_untrusted_path(path, key, require_root_owned)
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
    digest = files.sha256_hex(policy_path.encode("utf-8", "surrogateescape"))[:32]
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


def _refuse_untrusted_path(path: str, key: Optional[str], require_root_owned: bool) -> None:
    """As root, the policy's whole path must be trusted (``files.path_trust_problem``): a file
    that only root can write is no protection in a directory anyone can write, where it can be
    renamed away and replaced by a link to another root-owned file. Checked once the file itself
    passed (``key``), so that load_policy's own messages stay as they were for the file."""
    if not require_root_owned or key is None:
        return
    problem = files.path_trust_problem(path)
    if problem is not None:
        raise PolicyError(path, 0, "", f"refused: {problem}")


def _usable_dir(cache_dir: str) -> bool:
    return files.private_dir_problem(cache_dir, create=False) is None


def _read_compiled(compiled: str, cache_dir: str, key: str, path: str) -> Policy:
    if not _usable_dir(cache_dir):
        raise CompiledPolicyError(f"{cache_dir} is not a safe directory")
    # Non-blocking, no symlink, regular files only: a FIFO here must not hang the hook.
    raw, info = files.read_regular(compiled, MAX_COMPILED_BYTES)
    if not files.trusted(info):
        raise CompiledPolicyError(f"{compiled} has a foreign owner or mode")
    if len(raw) > MAX_COMPILED_BYTES:
        raise CompiledPolicyError(f"{compiled} is too large")
    try:
        document = files.load_json(raw)
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
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": __version__,
        "key": key,
        "policy": policy_to_json(policy),
    }
    try:
        if files.private_dir_problem(cache_dir, create=True) is not None:
            return
        import json  # noqa: PLC0415 - writing: only after a YAML parse

        # No fsync: a copy cut short by a crash does not parse, and the YAML is read again.
        data = json.dumps(document, indent=1).encode() + b"\n"
        files.write_atomic(compiled, data, mode=0o600, sync=False)
    except OSError:
        pass  # a read-only or full disk only costs the next run a YAML parse


# --- Policy <-> JSON -----------------------------------------------------------------------------


def policy_to_json(policy: Policy) -> dict[str, Any]:
    document, lines = policy_document(policy)
    return {"source": policy.source, "document": document, "rule_lines": lines}


def policy_from_json(data: object) -> Policy:
    """Rebuild a Policy, checking the document against the same schema as the YAML reader."""
    if not isinstance(data, dict) or set(data) != {"source", "document", "rule_lines"}:
        raise CompiledPolicyError("policy: expected an object with source, document, rule_lines")
    source, lines = data["source"], data["rule_lines"]
    if not isinstance(source, str) or not source:
        raise CompiledPolicyError("policy.source: expected a non-empty string")
    document = validate(JsonSource(CompiledPolicyError), data["document"], POLICY, "")
    if (
        not isinstance(lines, list)
        or not all(type(line) is int and line > 0 for line in lines)
        or len(lines) != len(document.get("rules", []))
    ):
        raise CompiledPolicyError("policy.rule_lines: expected a positive line per rule")
    try:
        return build_policy(document, source, lines)
    except PolicyError as exc:
        raise CompiledPolicyError(str(exc)) from None
