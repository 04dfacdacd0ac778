"""install-hook / uninstall-hook: put the hook where libvirt looks, and take it away again.

libvirt runs ``$HOOKS/qemu`` and, since 6.5, every executable in ``$HOOKS/qemu.d/``. We never
replace a hook we did not write: if a foreign ``qemu`` exists we go into ``qemu.d``. A manifest
records what install created, so uninstall removes exactly that and nothing an operator changed
afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Optional

from .cache import write_atomic

LOG = logging.getLogger(__name__)
MARKER = "# libvirt-txmode: libvirt qemu hook"
DROPIN_NAME = "50-libvirt-txmode"
DEFAULT_HOOKS_DIR = "/etc/libvirt/hooks"
DEFAULT_CONFIG_DIR = "/etc/libvirt-txmode"
DEFAULT_STATE_DIR = "/var/lib/libvirt-txmode"
DEFAULT_CACHE_DIR = "/var/cache/libvirt-txmode"
UNIT_PATH = "/etc/systemd/system/libvirt-txmode-snapshot.service"
DAEMONS = ("libvirtd", "virtqemud")


class InstallError(Exception):
    pass


@dataclass
class Layout:
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
    def manifest(self) -> str:
        return os.path.join(self.state_dir, "install-manifest.json")


@dataclass
class Outcome:
    messages: list[str] = field(default_factory=list)
    hook_path: Optional[str] = None

    def say(self, message: str) -> None:
        self.messages.append(message)


def _packaged(name: str) -> str:
    data = resources.files("libvirt_txmode").joinpath("data")
    return data.joinpath(name).read_text(encoding="utf-8")


def _sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def render_hook(python: str, layout: Layout) -> str:
    """The sh wrapper with this installation's interpreter and paths (libvirt gives a bare PATH)."""
    text = _packaged("qemu-hook")
    for name, value in (
        ("PYTHON", python),
        ("POLICY", layout.policy),
        ("SNAPSHOT", layout.snapshot),
        ("CACHE", layout.cache_dir),
    ):
        if not re.fullmatch(r"[A-Za-z0-9_./+:@-]+", value):
            raise InstallError(f"refusing to embed unusual path {value!r} into a shell script")
        if not os.path.isabs(value):
            # libvirt runs hooks from its own working directory: a relative path would not resolve.
            raise InstallError(f"{name.lower()} path {value!r} must be absolute")
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, count=1, flags=re.M)
    return text


def is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return MARKER in handle.read(4096)
    except OSError:
        return False


def _load_manifest(layout: Layout) -> dict[str, str]:
    try:
        with open(layout.manifest, encoding="utf-8") as handle:
            data = json.load(handle)
        return {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _save_manifest(layout: Layout, files: dict[str, str]) -> None:
    os.makedirs(layout.state_dir, mode=0o755, exist_ok=True)
    document = {"format": "libvirt-txmode-install", "version": 1, "files": files}
    write_atomic(layout.manifest, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")


def install(layout: Layout, *, python: Optional[str] = None) -> Outcome:
    outcome = Outcome()
    python = python or sys.executable
    files = _load_manifest(layout)
    main_hook = os.path.join(layout.hooks_dir, "qemu")
    if os.path.lexists(main_hook) and not is_ours(main_hook):
        target = os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME)
        outcome.say(
            f"{main_hook} belongs to someone else: left alone; installing {target} instead "
            "(libvirt >= 6.5 runs hooks in qemu.d/ after qemu)"
        )
    else:
        target = main_hook
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    content = render_hook(python, layout).encode()
    if _sha256(target) == hashlib.sha256(content).hexdigest():
        outcome.say(f"hook {target} already installed")
    else:
        write_atomic(target, content, mode=0o755)
        outcome.say(f"installed hook {target} (interpreter {python})")
    files[target] = hashlib.sha256(content).hexdigest()
    outcome.hook_path = target

    if not os.path.exists(layout.policy):
        os.makedirs(layout.config_dir, mode=0o755, exist_ok=True)
        policy = _packaged("policy.yaml").encode()
        write_atomic(layout.policy, policy, mode=0o644)
        files[layout.policy] = hashlib.sha256(policy).hexdigest()
        outcome.say(f"installed default policy {layout.policy}")
    else:
        outcome.say(f"kept existing policy {layout.policy}")

    if os.path.isdir("/run/systemd/system") and not os.path.exists(UNIT_PATH):
        unit = _packaged("libvirt-txmode-snapshot.service").replace("@PYTHON@", python).encode()
        write_atomic(UNIT_PATH, unit, mode=0o644)
        files[UNIT_PATH] = hashlib.sha256(unit).hexdigest()
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", os.path.basename(UNIT_PATH)], check=False)
        outcome.say(f"installed {UNIT_PATH} (refreshes the snapshot when the daemon starts)")
    _save_manifest(layout, files)
    return outcome


def uninstall(layout: Layout) -> Outcome:
    outcome = Outcome()
    files = _load_manifest(layout)
    if not files:
        outcome.say("nothing to uninstall (no install manifest)")
    for path, digest in sorted(files.items()):
        current = _sha256(path)
        if current is None:
            outcome.say(f"{path} already gone")
        elif current != digest and not path.endswith(("/qemu", "/" + DROPIN_NAME)):
            outcome.say(f"kept {path}: changed since install (remove it yourself if you want)")
            continue
        elif current != digest and not is_ours(path):
            outcome.say(f"kept {path}: no longer ours")
            continue
        else:
            if path == UNIT_PATH:
                subprocess.run(["systemctl", "disable", os.path.basename(UNIT_PATH)], check=False)
            os.unlink(path)
            outcome.say(f"removed {path}")
    for path in (layout.snapshot, layout.manifest):
        if os.path.exists(path):
            os.unlink(path)
            outcome.say(f"removed {path}")
    if os.path.isdir(layout.cache_dir):
        # Only files the hook writes there: probe answers and their locks.
        for name in os.listdir(layout.cache_dir):
            if name.endswith((".json", ".lock")) or name.startswith(".tmp-"):
                os.unlink(os.path.join(layout.cache_dir, name))
        outcome.say(f"emptied probe cache {layout.cache_dir}")
    dropin_dir = os.path.join(layout.hooks_dir, "qemu.d")
    for directory in (dropin_dir, layout.config_dir, layout.state_dir, layout.cache_dir):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only when empty: it may hold the operator's files
    return outcome


def reload_daemon() -> str:
    """Make libvirt re-scan its hooks: it reads them at start and on SIGHUP."""
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        for daemon in ("virtqemud", "libvirtd"):
            active = subprocess.run(["systemctl", "is-active", "--quiet", daemon], check=False)
            if active.returncode == 0:
                subprocess.run(["systemctl", "reload", daemon], check=False)
                return f"reloaded {daemon} (systemctl reload)"
    for daemon in DAEMONS:
        pid = _pid_of(daemon)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            return f"sent SIGHUP to {daemon} (pid {pid})"
    return "no libvirt daemon running: it will read the hook when it starts"


def _pid_of(daemon: str) -> Optional[int]:
    try:
        with open(f"/run/{daemon}.pid", encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as handle:
            if handle.read().strip() != daemon:
                return None  # a stale pidfile whose pid now belongs to another process
    except OSError:
        return None
    return pid
