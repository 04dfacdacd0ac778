"""Which policy validate-domain uses, and where the repository it runs in begins.

Linter order (yamllint, ruff, ansible-lint): what the command line says, then the environment, then
the project's own file found from the current directory upwards, then the system-wide file, then the
bundled default. The hook does not come here: it always reads its explicit /etc path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..common import paths
from ..common.records import SLOTS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

ENV_VAR = "LIBVIRT_TXMODE_POLICY"
# Searched for in this order in each directory, from the current one up to the repository root.
PROJECT_FILES = (".libvirt-txmode.yaml", os.path.join(".libvirt-txmode", "policy.yaml"))
SYSTEM_POLICY = paths.POLICY
BUNDLED_POLICY = paths.BUNDLED_POLICY
# A directory holding one of these is a repository root: the project search stops there.
REPO_MARKERS = (".git", ".hg", ".svn")


@dataclass(frozen=True, **SLOTS)
class PolicyChoice:
    """The policy file a run uses and the rule that chose it."""

    path: str
    how: str  # why this file: "-p", "$LIBVIRT_TXMODE_POLICY", "project file", "system", "bundled"

    def describe(self) -> str:
        return f"policy {self.path} ({self.how})"


def repository_root(start: str) -> Optional[str]:
    """The nearest directory at or above ``start`` holding .git (or .hg/.svn); None outside one."""
    current = os.path.abspath(start)
    while True:
        if any(os.path.lexists(os.path.join(current, marker)) for marker in REPO_MARKERS):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def project_policy(cwd: str) -> Optional[str]:
    """``.libvirt-txmode.yaml`` or ``.libvirt-txmode/policy.yaml`` from ``cwd`` up to the
    repository root (or, outside a repository, up to ``/``), nearest first."""
    current = os.path.abspath(cwd)
    root = repository_root(current)
    while True:
        for name in PROJECT_FILES:
            candidate = os.path.join(current, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(current)
        if current in (root, parent):
            return None
        current = parent


def find_policy(explicit: Optional[str], environ: Mapping[str, str], cwd: str) -> PolicyChoice:
    if explicit:
        return PolicyChoice(explicit, "-p")
    if environ.get(ENV_VAR):
        return PolicyChoice(environ[ENV_VAR], f"${ENV_VAR}")
    found = project_policy(cwd)
    if found is not None:
        return PolicyChoice(os.path.relpath(found, cwd), "project file")
    if os.path.exists(SYSTEM_POLICY):
        return PolicyChoice(SYSTEM_POLICY, "system-wide")
    return PolicyChoice(BUNDLED_POLICY, "bundled default")
