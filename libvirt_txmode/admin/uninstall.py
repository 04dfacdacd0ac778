"""uninstall-hook: remove exactly what install-hook wrote for one hooks directory.

Nothing is ever removed through a symlink, outside the file names an install writes, or from a
directory others can write; a file another install still uses is handed over to it (manifest).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from typing import Optional

from ..common import files
from .hook_file import DROPIN_NAME, is_ours, sha256_of
from .layout import UNIT_PATH, InstallError, Layout, Outcome
from .manifest import (
    hand_over,
    load_manifest,
    load_manifest_legacy_is_ours,
    manifest_trust_problem,
    read_json,
    used_elsewhere,
)

# What the hook writes into the cache directory (probe answers and their locks, compiled policies,
# verdicts, atomic-write temporaries): uninstall removes these names and no others.
CACHE_NAMES = re.compile(
    r"(?:(?:verdict|policy)-)?[0-9a-f]{16,64}\.(?:json|lock|txt)|\.tmp-[A-Za-z0-9_]{1,16}"
    r"|decisions|last-audit\.json"
)
# In CACHE/shell, left by 0.3.0's sh replay of decisions: its entries (a SHA-256 each) and
# write_atomic's temporaries. Removed on uninstall like the rest of the cache.
SHELL_DIR = "shell"
SHELL_NAMES = re.compile(r"[0-9a-f]{64}|\.tmp-[A-Za-z0-9_]{1,16}")


def uninstall(layout: Layout, *, dry_run: bool = False) -> Outcome:  # noqa: C901, PLR0912 - the removal rules (manifest, shared files, daemon) are kept together so none is skipped
    outcome = Outcome()
    problem = manifest_trust_problem(layout)
    if problem is not None:
        raise InstallError(f"{problem}; nothing removed")
    files = load_manifest(layout)
    if not files and not os.path.lexists(layout.manifest):
        outcome.say(f"nothing to uninstall for {layout.hooks_dir} (no install manifest)")
        outcome.nothing = True
        return outcome
    used = used_elsewhere(layout)
    verb = "would remove" if dry_run else "removed"
    for path, entry in sorted(files.items()):
        role = entry.get("role", "")
        if path in used:
            other = read_json(used[path]) or {}
            hooks_dir = str(other.get("hooks_dir", "?"))
            if not dry_run:
                hooks_dir = hand_over(used[path], path, entry)
            outcome.say(f"kept {path}: still used by the install in {hooks_dir}")
            continue
        problem = _removal_problem(path, entry, _writable_paths(layout))
        if problem is not None:
            outcome.say(problem)
            continue
        if not dry_run:
            if role == "unit":
                subprocess.run(["systemctl", "disable", os.path.basename(path)], check=False)
            os.unlink(path)
        outcome.say(f"{verb} {path}")
    cache = os.path.normpath(layout.cache_dir)
    if cache in used:
        hooks_dir = str((read_json(used[cache]) or {}).get("hooks_dir", "?"))
        outcome.say(
            f"kept probe cache {layout.cache_dir}: still used by the install in {hooks_dir}"
        )
    else:
        outcome.messages.extend(empty_cache(layout.cache_dir, dry_run=dry_run))
    for manifest in (layout.manifest, layout.legacy_manifest):
        if manifest == layout.legacy_manifest and not load_manifest_legacy_is_ours(layout):
            continue
        if os.path.lexists(manifest):
            if not dry_run:
                os.unlink(manifest)
            outcome.say(f"{verb} {manifest}")
    if not dry_run:
        directories = (
            os.path.join(layout.hooks_dir, "qemu.d"),
            layout.config_dir,
            layout.manifests,
            layout.state_dir,
            layout.cache_dir,
        )
        for directory in directories:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only when empty (a symlink is not removed by rmdir)
    return outcome


def _writable_paths(layout: Layout) -> dict[str, str]:
    """The only files an install of ``layout`` writes, with their role: a manifest naming any
    other path (forged, or edited) removes nothing there."""
    hooks = (
        os.path.join(layout.hooks_dir, "qemu"),
        os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME),
    )
    allowed = {path: "hook" for path in hooks}
    allowed.update({layout.policy: "policy", layout.snapshot: "snapshot", UNIT_PATH: "unit"})
    return allowed


def _removal_problem(path: str, entry: dict[str, str], allowed: dict[str, str]) -> Optional[str]:
    """Why a manifest entry must stay, or None when it is still exactly what install wrote:
    one of the paths an install writes, a regular file in a trusted directory, with the owner,
    size and content recorded."""
    role = entry.get("role", "")
    if allowed.get(path) != role:
        return f"kept {path}: not a file install-hook writes for this hooks directory"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} already gone"
    except OSError as exc:
        return f"kept {path}: {exc.strerror}"
    return _place_problem(path, info) or _record_problem(path, info, entry)


def _place_problem(path: str, info: os.stat_result) -> Optional[str]:
    """A regular file reached without a symlink, in a directory that passes the trust rule."""
    if not stat.S_ISREG(info.st_mode):
        return f"kept {path}: no longer a regular file (never removed through a symlink)"
    if os.path.realpath(path) != os.path.abspath(path):
        return f"kept {path}: reached through a symlinked directory"
    parent = os.path.dirname(os.path.abspath(path))
    problem = files.path_trust_problem(parent, allowed_uids=files.owners(), kind="directory")
    if problem is not None:
        # Only in trusted directories: in another's, the name may no longer be ours to remove.
        return f"kept {path}: its directory is not trusted ({problem})"
    return None


def _record_problem(path: str, info: os.stat_result, entry: dict[str, str]) -> Optional[str]:
    """The owner, size and content the manifest recorded (a snapshot: its owner only)."""
    role = entry.get("role", "")
    recorded = entry.get("uid", "")
    owners = files.owners()
    allowed = owners & {int(recorded)} if recorded.isdigit() else owners
    problem = files.node_problem(path, info, allowed, kind="file")
    if problem is not None:
        # Not a file to repair but one to leave alone: the trust rule's fix does not apply.
        found = problem.split("; fix: ", 1)[0]
        return f"kept {path}: {found}: not as install-hook wrote it"
    if role == "snapshot":
        return None  # rewritten by every refresh: ours by its one path, whatever its content
    same_size = str(info.st_size) == entry.get("size", str(info.st_size))
    if same_size and sha256_of(path) == entry.get("sha256"):
        return None
    if role == "hook" and not is_ours(path):
        return f"kept {path}: no longer ours"
    return f"kept {path}: changed since install (remove it yourself if you want)"


def empty_cache(cache_dir: str, *, dry_run: bool = False) -> list[str]:
    """Remove the files the hook writes into ``cache_dir``: by name (CACHE_NAMES), regular files
    only, never through a symlink, and only in a directory owned by us or root."""
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if os.path.islink(cache_dir):
            return [f"kept probe cache {cache_dir}: a symlink, never followed"]
        return [f"kept probe cache {cache_dir}: {exc.strerror}"]
    try:
        if files.node_problem(cache_dir, os.fstat(fd), files.owners()) is not None:
            return [f"kept probe cache {cache_dir}: not a directory only we can write"]
        problem = (
            "reached through a symlinked directory"
            if os.path.realpath(cache_dir) != os.path.abspath(cache_dir)
            else files.path_trust_problem(cache_dir, allowed_uids=files.owners(), kind="directory")
        )
        if problem is not None:
            return [f"kept probe cache {cache_dir}: {problem}"]
        removed = _remove_ours(fd, CACHE_NAMES, dry_run=dry_run)
        # 0.3.0's sh-replayed decisions: one directory of ours.
        try:
            shell = os.open(SHELL_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            shell = -1
        if shell >= 0:
            try:
                if files.node_problem(SHELL_DIR, os.fstat(shell), files.owners()) is None:
                    removed += _remove_ours(shell, SHELL_NAMES, dry_run=dry_run)
                    if not dry_run:
                        with contextlib.suppress(OSError):  # something not ours is left in it
                            os.rmdir(SHELL_DIR, dir_fd=fd)
            finally:
                os.close(shell)
        verb = "would remove" if dry_run else "removed"
        return [f"{verb} {removed} cache file{'s' if removed != 1 else ''} from {cache_dir}"]
    finally:
        os.close(fd)


def _remove_ours(fd: int, names: re.Pattern[str], *, dry_run: bool) -> int:
    """Unlink the regular files named like ours in the directory open as ``fd``; how many."""
    removed = 0
    for name in sorted(os.listdir(fd)):
        if not names.fullmatch(name):
            continue
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(entry.st_mode):
                continue  # a directory named x.json, a symlink: not something we wrote
            if not dry_run:
                os.unlink(name, dir_fd=fd)
            removed += 1
        except FileNotFoundError:
            continue
    return removed
