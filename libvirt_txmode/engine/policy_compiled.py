"""The compiled copy of a policy: JSON in the cache directory, read while the YAML is unchanged.

Parsing YAML costs the hook more than its whole check, so ``load_policy`` keeps the validated
policy here. JSON, never pickle or marshal (no code runs from a file): the policy as the plain
document policy_schema describes, checked against it again and rebuilt by the same
``build_policy``; anything wrong with a copy only means the YAML is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Optional

from .. import __version__
from ..common import files
from .policy_records import Policy, PolicyError, build_policy, policy_document
from .policy_schema import POLICY
from .schema import JsonSource, validate

COMPILED_FORMAT = "libvirt-txmode-compiled-policy"
COMPILED_VERSION = 4
MAX_COMPILED_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"(?:[0-9a-f]{64})?")


class CompiledPolicyError(ValueError):
    """The compiled copy is not one we can use: ignore it and parse the YAML."""


def compiled_path(cache_dir: str, policy_path: str) -> str:
    digest = hashlib.sha256(policy_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_dir, f"policy-{digest}.json")


def read_compiled(cache_dir: str, path: str, key: str) -> Optional[Policy]:
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


def write_compiled(cache_dir: str, path: str, key: str, policy: Policy) -> None:
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
        "sha256": policy.sha256,
        "document": document,
        "rule_lines": lines,
        "exception_lines": [item.line for item in policy.exceptions],
    }


def policy_from_json(data: object) -> Policy:
    """Rebuild a Policy, checking the document against the same schema as the YAML reader."""
    keys = {"source", "sha256", "document", "rule_lines", "exception_lines"}
    if not isinstance(data, dict) or set(data) != keys:
        raise CompiledPolicyError(
            "policy: expected an object with source, sha256, document, rule_lines, exception_lines"
        )
    source, lines = data["source"], data["rule_lines"]
    exception_lines, sha256 = data["exception_lines"], data["sha256"]
    if not isinstance(source, str) or not source:
        raise CompiledPolicyError("policy.source: expected a non-empty string")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise CompiledPolicyError("policy.sha256: expected 64 hex digits or an empty string")
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
        return build_policy(document, source, lines, exception_lines, sha256)
    except PolicyError as exc:
        raise CompiledPolicyError(str(exc)) from None
