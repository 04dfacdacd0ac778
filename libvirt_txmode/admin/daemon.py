"""The running libvirt daemon, seen from outside: is it there, since when, and make it re-read
its hooks.

libvirt looks for hooks when it starts and on reload (SIGHUP): systemctl where systemd runs the
daemon, else the signal to the pid in its pidfile, once that pid is checked to be the daemon.
Hosts run either the monolithic ``libvirtd`` or the modular daemons, where ``virtqemud`` is the
one that runs the qemu hook; both keep ``/run/NAME.pid``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from ..common.records import SLOTS

DAEMONS = ("libvirtd", "virtqemud")


@dataclass(frozen=True, **SLOTS)
class Daemon:
    """A running libvirt daemon that runs qemu hooks."""

    name: str
    pid: int
    started: float  # seconds since the epoch


def running_daemon(names: Sequence[str] = DAEMONS, proc: str = "/proc") -> Optional[Daemon]:
    """The first of ``names`` that runs, with its start time; None when none does (or its start
    time cannot be read)."""
    for name in names:
        pid = daemon_pid(name)
        if pid is None:
            continue
        started = process_start_time(pid, proc)
        if started is not None:
            return Daemon(name, pid, started)
    return None


def process_start_time(pid: int, proc: str = "/proc") -> Optional[float]:
    """When process ``pid`` started, in seconds since the epoch: field 22 of /proc/PID/stat
    (clock ticks since boot) plus the boot time (``btime`` in /proc/stat)."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # The command name (field 2) may hold spaces and parentheses: fields after its ")".
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of the whole line
        boot = None
        with open(f"{proc}/stat", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("btime "):
                    boot = int(line.split()[1])
                    break
    except (OSError, IndexError, ValueError):
        return None
    if boot is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


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
