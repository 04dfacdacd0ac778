"""The hook file: the sh wrapper rendered for one installation, how to read one back, and which
installed hooks are ours.

libvirt runs ``$HOOKS/qemu`` and, since 6.5, every executable in ``$HOOKS/qemu.d/``. We never
replace a hook we did not write: if a foreign ``qemu`` exists we go into ``qemu.d``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from importlib import resources
from typing import Optional

from .layout import InstallError, Layout

MARKER = "# libvirt-txmode: libvirt qemu hook"
DROPIN_NAME = "50-libvirt-txmode"
# Where the Debian package keeps its hook (its /etc/libvirt/hooks/qemu.d entry links there).
PACKAGED_HOOK_DIR = "/usr/libexec/libvirt-txmode/"
# The environment libvirt gives a hook (virCommandAddEnvPassCommon: LC_ALL=C and a short PATH).
HOOK_ENV = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./+:@-]+")


def packaged(name: str) -> str:
    """A file the package ships in libvirt_txmode/data (the hook template, the default policy)."""
    data = resources.files("libvirt_txmode").joinpath("data")
    return data.joinpath(name).read_text(encoding="utf-8")


def sha256_of(path: str) -> Optional[str]:
    """The file's SHA-256, or None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def render_hook(python: str, layout: Layout, package: Optional[str] = None) -> str:
    """The sh wrapper with this installation's interpreter and paths (libvirt gives a bare PATH)."""
    text = packaged("qemu-hook")
    settings = [("PYTHON", python)]
    if package is not None:
        settings.append(("PACKAGE", package))
    settings += [("POLICY", layout.policy), ("SNAPSHOT", layout.snapshot)]
    settings.append(("CACHE", layout.cache_dir))
    for name, value in settings:
        if not _SAFE_VALUE.fullmatch(value):
            raise InstallError(f"refusing to embed unusual path {value!r} into a shell script")
        if not os.path.isabs(value):
            # libvirt runs hooks from its own working directory: a relative path would not resolve.
            raise InstallError(f"{name.lower()} path {value!r} must be absolute")
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, count=1, flags=re.M)
    return text


def hook_settings(path: str) -> dict[str, str]:
    """The NAME=value settings of an installed wrapper (for doctor)."""
    found: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(8192)
    except OSError:
        return found
    for match in re.finditer(r"^(PYTHON|PACKAGE|POLICY|SNAPSHOT|CACHE)=(.*)$", head, flags=re.M):
        found.setdefault(match.group(1), match.group(2))
    return found


def is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return MARKER in handle.read(4096)
    except OSError:
        return False


def installed_copies(hooks_dir: str) -> list[str]:
    """Every libvirt-txmode hook libvirt would run from ``hooks_dir``: ``qemu`` and any entry of
    ``qemu.d`` (a packaged one is a symlink) that is ours."""
    found = []
    main_hook = os.path.join(hooks_dir, "qemu")
    if os.path.isfile(main_hook) and is_ours(main_hook):
        found.append(main_hook)
    dropins = os.path.join(hooks_dir, "qemu.d")
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(dropins)):
            path = os.path.join(dropins, name)
            if not name.startswith(".") and os.path.isfile(path) and is_ours(path):
                found.append(path)
    return found


def describe_copy(path: str) -> str:
    """A hook copy as an operator tells them apart: whose it is, and its interpreter."""
    python = hook_settings(path).get("PYTHON", "?")
    if os.path.realpath(path).startswith(PACKAGED_HOOK_DIR):
        return f"{path} (the Debian package's, interpreter {python})"
    return f"{path} (interpreter {python})"


def other_copies_problem(layout: Layout, target: str) -> Optional[str]:
    """Why a second gate must not be installed beside one already there, with the fix."""
    others = [p for p in installed_copies(layout.hooks_dir) if p != target]
    if not others:
        return None
    first = others[0]
    if os.path.realpath(first).startswith(PACKAGED_HOOK_DIR):
        fix = (
            "the package's hook already guards this host: use its /usr/bin/libvirt-txmode, or "
            "'apt remove libvirt-txmode' before installing this one"
        )
    else:
        python = hook_settings(first).get("PYTHON", "?")
        fix = (
            f"run '{os.path.join(os.path.dirname(python), 'libvirt-txmode')} uninstall-hook"
            f" --hooks-dir {layout.hooks_dir}' (the install that wrote it) before installing "
            "this one, or keep that one"
        )
    return (
        f"another libvirt-txmode hook is installed: {describe_copy(first)}; one gate per host "
        f"(two would check every start twice, with different versions and policies): {fix}"
    )


def hook_target(layout: Layout) -> tuple[str, Optional[str]]:
    """Where our hook goes, and why not ``qemu`` when a foreign one is there."""
    main_hook = os.path.join(layout.hooks_dir, "qemu")
    if os.path.lexists(main_hook) and not is_ours(main_hook):
        target = os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME)
        return target, (
            f"{main_hook} belongs to someone else: left alone; installing {target} instead "
            "(libvirt >= 6.5 runs hooks in qemu.d/ after qemu)"
        )
    return main_hook, None
