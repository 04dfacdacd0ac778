"""One installation's directories (hooks, config, state, cache) and whether they may be trusted,
with what install and uninstall report back.

Each install keeps its own manifest, keyed by its hooks directory
(``STATE/installs/<sha256(hooks dir)[:16]>.json``): the directory layout says where.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional

from ..common import files, paths

DEFAULT_HOOKS_DIR = paths.HOOKS_DIR
DEFAULT_CONFIG_DIR = paths.CONFIG_DIR
DEFAULT_STATE_DIR = paths.STATE_DIR
DEFAULT_CACHE_DIR = paths.CACHE_DIR
UNIT_PATH = "/etc/systemd/system/libvirt-txmode-snapshot.service"


class InstallError(Exception):
    pass


@dataclass
class Layout:
    """Where an install puts the hook, the policy, the state and the caches."""

    hooks_dir: str = DEFAULT_HOOKS_DIR
    config_dir: str = DEFAULT_CONFIG_DIR
    state_dir: str = DEFAULT_STATE_DIR
    cache_dir: str = DEFAULT_CACHE_DIR

    @property
    def policy(self) -> str:
        return os.path.join(self.config_dir, "policy.yaml")

    @property
    def snapshot(self) -> str:
        return os.path.join(self.state_dir, "snapshot.json")

    @property
    def manifests(self) -> str:
        return os.path.join(self.state_dir, "installs")

    @property
    def manifest(self) -> str:
        digest = hashlib.sha256(os.path.normpath(self.hooks_dir).encode()).hexdigest()[:16]
        return os.path.join(self.manifests, f"{digest}.json")

    @property
    def legacy_manifest(self) -> str:
        """Version 1 kept one manifest per state directory, whichever hooks dir it served."""
        return os.path.join(self.state_dir, "install-manifest.json")

    @property
    def is_libvirts_own(self) -> bool:
        return os.path.normpath(self.hooks_dir) == DEFAULT_HOOKS_DIR


@dataclass
class Outcome:
    """What install-hook or uninstall-hook did, as the lines it tells the operator."""

    messages: list[str] = field(default_factory=list)
    hook_path: Optional[str] = None
    nothing: bool = False  # uninstall: no install of this hooks directory was found
    changed: bool = False  # install: something was written (the daemon has something to learn)

    def say(self, message: str) -> None:
        self.messages.append(message)


_DIRECTORY_FLAGS = {
    "hooks_dir": "--hooks-dir",
    "config_dir": "--config-dir",
    "state_dir": "--state-dir",
    "cache_dir": "--cache-dir",
}


def directory_problem(path: str) -> Optional[str]:
    """Why install/uninstall must not write into, or read a manifest from, directory ``path``:
    the one trust rule (files.path_trust_problem) on it, or on its nearest existing ancestor when
    it does not exist yet (it is then created by us, root's, 0755)."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    return files.path_trust_problem(probe, allowed_uids=files.owners(), kind="directory")


def layout_trust_problem(layout: Layout, extra: tuple[str, ...] = ()) -> Optional[str]:
    """The first directory of ``layout`` (and ``extra``) that is not trusted, as a refusal naming
    the path, the option that chose it and the fix."""
    candidates = [(getattr(layout, name), flag) for name, flag in _DIRECTORY_FLAGS.items()]
    candidates.insert(3, (layout.manifests, "--state-dir"))
    candidates += [(path, "") for path in extra]
    for path, flag in candidates:
        problem = directory_problem(path)
        if problem is not None:
            where = f" (chosen by {flag})" if flag else ""
            return (
                f"refusing directory {path}{where}: {problem}; fix: make it and every directory "
                f"above it root's and writable by nobody else (chown root:root, chmod go-w)"
                f"{', or choose another ' + flag if flag else ''}"
            )
    return None
