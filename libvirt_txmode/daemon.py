"""The running libvirt daemon, seen from outside: is it there, and make it re-read its hooks.

libvirt looks for hooks when it starts and on reload (SIGHUP): systemctl where systemd runs the
daemon, else the signal to the pid in its pidfile, once that pid is checked to be the daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Optional

DAEMONS = ("libvirtd", "virtqemud")


def reload_daemon() -> str:
    """Make libvirt re-scan its hooks: it reads them at start and on SIGHUP."""
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        for daemon in ("virtqemud", "libvirtd"):
            active = subprocess.run(["systemctl", "is-active", "--quiet", daemon], check=False)
            if active.returncode == 0:
                subprocess.run(["systemctl", "reload", daemon], check=False)
                return f"reloaded {daemon} (systemctl reload)"
    for daemon in DAEMONS:
        pid = daemon_pid(daemon)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            return f"sent SIGHUP to {daemon} (pid {pid})"
    return "no libvirt daemon running: it will read the hook when it starts"


def daemon_pid(daemon: str) -> Optional[int]:
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


def running_daemons(names: Sequence[str] = DAEMONS) -> list[str]:
    return [name for name in names if daemon_pid(name) is not None]
