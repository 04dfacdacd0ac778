"""policy.yaml -> a validated, immutable Policy (``policy_records``).

The YAML is composed into nodes (never constructed into Python objects, so no tag can run code)
and walked against the schema of policy_schema.py (which also checks the hook's compiled copy and
is published as a JSON Schema); every error names the file, the line and the dotted key, because
a typo that silently weakened the policy would be worse than no policy at all. ``load_policy``
reads through the compiled copy (``policy_compiled``) while the file is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from ..common import files, paths
from .policy_compiled import read_compiled, write_compiled
from .policy_records import Policy, PolicyError, build_policy
from .policy_schema import POLICY
from .schema import Source, validate

if TYPE_CHECKING:
    import yaml

DEFAULT_POLICY_PATH = paths.POLICY
MAX_POLICY_BYTES = 1024 * 1024


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


def parse_policy(text: str, file: str, *, sha256: str = "") -> Policy:
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
    return build_policy(
        data, file, _item_lines(root, "rules"), _item_lines(root, "exceptions"), sha256
    )


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
        text = _decode(_read_bytes(path), path)
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
    while the file is unchanged (``policy_compiled``); anything wrong with that copy only means
    the YAML is parsed again.
    """
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    key = _identity(path, require_root_owned)
    if cache_dir is not None:
        policy = read_compiled(cache_dir, path, key)
        if policy is not None:
            return policy
    raw = _read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        policy = parse_policy(_decode(raw, path), path, sha256=digest)
    except PolicyError as exc:
        exc.sha256 = digest
        raise
    # Stored only if the file just parsed is still the one the key describes (no edit meanwhile).
    if cache_dir is not None and _identity(path, require_root_owned) == key:
        write_compiled(cache_dir, path, key, policy)
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


def _read_bytes(path: str) -> bytes:
    try:
        # Non-blocking, regular files only: a FIFO swapped in must not hang the hook in open().
        raw, _ = files.read_regular(path, MAX_POLICY_BYTES, follow_symlinks=True)
    except OSError as exc:
        raise PolicyError(path, 0, "", f"cannot read policy: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, "", f"larger than {MAX_POLICY_BYTES} bytes")
    return raw


def _decode(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path, 1, "", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
