"""Every default path of the project and of libvirt that the project reads, in one place.

Standard library only and free of logic but for the one choice of cache directory: the hook's
hot path imports it. Commands take each of these as an option (``--hooks-dir``, ``--config-dir``,
...); these are only the defaults.
"""

from __future__ import annotations

import os

# Ours: the installed package (this file is common/paths.py in it) and what it ships
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_POLICY = os.path.join(PACKAGE_DIR, "data", "policy.yaml")
CONFIG_DIR = "/etc/libvirt-txmode"
POLICY = f"{CONFIG_DIR}/policy.yaml"
STATE_DIR = "/var/lib/libvirt-txmode"
SNAPSHOT = f"{STATE_DIR}/snapshot.json"
CACHE_DIR = "/var/cache/libvirt-txmode"
LOG_FILE = "/var/log/libvirt-txmode.log"  # only when neither journald nor syslog listens

# libvirt's (Debian and upstream defaults for a system daemon)
HOOKS_DIR = "/etc/libvirt/hooks"
QEMU_CONF = "/etc/libvirt/qemu.conf"
NETWORK_STATUS_DIR = "/run/libvirt/network"
NETWORK_CONFIG_DIR = "/etc/libvirt/qemu/networks"
VHOST_NET_DEVICE = "/dev/vhost-net"


def default_cache_dir() -> str:
    """Probe answers and compiled policies: root's under /var/cache, a user's under XDG's."""
    if os.geteuid() == 0:
        return CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "libvirt-txmode")
