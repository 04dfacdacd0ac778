"""Install manifests: what one install wrote, and which shared files other installs still use.

Each install keeps its own manifest, keyed by its hooks directory (``Layout.manifest``):
uninstalling one hooks directory removes what that install wrote and nothing of another's. A file
both installs use (the policy, the snapshot, the probe cache, when they share config/state/cache
directories) stays while any other manifest still names it.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Optional

from ..common import files
from ..common.files import write_atomic
from .hook_file import DROPIN_NAME, hook_target
from .layout import UNIT_PATH, Layout

MANIFEST_FORMAT = "libvirt-txmode-install"
MANIFEST_VERSION = 3


def read_json(path: str) -> Optional[dict[str, Any]]:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def files_of(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    raw = document.get("files")
    if not isinstance(raw, dict):
        return files
    for path, entry in raw.items():
        if isinstance(entry, str):  # version 1: path -> sha256
            files[str(path)] = {"sha256": entry, "role": _role_of(str(path))}
        elif isinstance(entry, dict):
            files[str(path)] = {str(k): str(v) for k, v in entry.items()}
    return files


def _role_of(path: str) -> str:
    if path == UNIT_PATH:
        return "unit"
    if path.endswith(("/qemu", "/" + DROPIN_NAME)):
        return "hook"
    return "policy"


def load_manifest(layout: Layout) -> dict[str, dict[str, str]]:
    """The files this hooks directory's install wrote: path -> {sha256, role}."""
    document = read_json(layout.manifest)
    if document is not None:
        return files_of(document)
    legacy = read_json(layout.legacy_manifest)
    if legacy is None:
        return {}
    files = files_of(legacy)
    # A version-1 manifest is adopted only by the hooks directory its hook was installed in.
    hooks = (os.path.join(layout.hooks_dir, "qemu"), hook_target(layout)[0])
    if any(entry.get("role") == "hook" and path in hooks for path, entry in files.items()):
        return files
    return {}


def save_manifest(layout: Layout, files: dict[str, dict[str, str]]) -> bool:
    """Write the manifest unless it already says exactly this; whether it was written."""
    os.makedirs(layout.manifests, mode=0o755, exist_ok=True)
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "hooks_dir": os.path.normpath(layout.hooks_dir),
        "uses": sorted(_uses(layout)),
        "files": files,
    }
    data = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
    written = False
    try:
        with open(layout.manifest, "rb") as handle:
            same = handle.read(len(data) + 1) == data
    except OSError:
        same = False
    if not same:
        write_atomic(layout.manifest, data)
        written = True
    if os.path.lexists(layout.legacy_manifest) and load_manifest_legacy_is_ours(layout):
        os.unlink(layout.legacy_manifest)
        written = True
    return written


def load_manifest_legacy_is_ours(layout: Layout) -> bool:
    legacy = read_json(layout.legacy_manifest)
    if legacy is None:
        return False
    hooks = (os.path.join(layout.hooks_dir, "qemu"), hook_target(layout)[0])
    return any(path in hooks for path in files_of(legacy))


def _uses(layout: Layout) -> set[str]:
    """Shared paths an installed hook depends on, whoever wrote them."""
    return {layout.policy, layout.snapshot, os.path.normpath(layout.cache_dir)}


def used_elsewhere(layout: Layout) -> dict[str, str]:
    """Paths other installs (other hooks directories, same state directory) still use or own,
    with the manifest of the install that uses them."""
    used: dict[str, str] = {}
    try:
        names = sorted(os.listdir(layout.manifests))
    except OSError:
        return used
    own = os.path.basename(layout.manifest)
    for name in names:
        if name == own or not name.endswith(".json"):
            continue
        manifest = os.path.join(layout.manifests, name)
        document = read_json(manifest)
        if document is None:
            continue
        uses = document.get("uses")
        for path in [*(uses if isinstance(uses, list) else []), *files_of(document)]:
            used.setdefault(str(path), manifest)
    return used


def hand_over(manifest: str, path: str, entry: dict[str, str]) -> str:
    """A file our install wrote that another install still uses becomes that install's: its
    uninstall removes it then, so no install leaves an orphan behind. Returns its hooks dir."""
    document = read_json(manifest) or {}
    files = files_of(document)
    files.setdefault(path, entry)
    document["files"] = files
    write_atomic(manifest, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")
    return str(document.get("hooks_dir", "?"))


def manifest_trust_problem(layout: Layout) -> Optional[str]:
    """Why the manifests of ``layout`` must not be believed: their directories and the manifest
    files themselves pass the one trust rule, or nothing is removed by them."""
    for directory, flag in ((layout.state_dir, "--state-dir"), (layout.manifests, "--state-dir")):
        if not os.path.lexists(directory):
            return None
        problem = files.path_trust_problem(directory, allowed_uids=files.owners(), kind="directory")
        if problem is not None:
            return (
                f"refusing to read install manifests from {directory} (chosen by {flag}): "
                f"{problem}; fix: make it root's and writable by nobody else (chown root:root, "
                "chmod go-w), then check what it holds"
            )
    for manifest in (layout.manifest, layout.legacy_manifest):
        if os.path.lexists(manifest):
            problem = files.path_trust_problem(manifest, allowed_uids=files.owners(), kind="file")
            if problem is not None:
                return (
                    f"refusing install manifest {manifest}: {problem}; fix: remove it if you did "
                    "not write it, and remove the install's files yourself"
                )
    return None
