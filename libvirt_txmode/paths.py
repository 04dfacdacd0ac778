"""Every default path of the project and of libvirt that the project reads, in one place.

Standard library only and free of logic: the hook's hot path imports it. Commands take each of
these as an option (``--hooks-dir``, ``--config-dir``, ...); these are only the defaults.
"""

from __future__ import annotations

# Ours
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
