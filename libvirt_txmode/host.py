"""Former home of snapshots; kept so that older imports keep working.

Reading and writing the format: ``snapshot``; taking one through libvirt-python: ``libvirt_host``.
"""

from __future__ import annotations

from .libvirt_host import (
    VIRTIO_NET_DEVICES,
    guests_from_capabilities,
    open_libvirt,
    take_snapshot,
)
from .snapshot import (
    DEFAULT_SNAPSHOT_PATH,
    FORMAT,
    FORMAT_VERSION,
    MAX_SNAPSHOT_BYTES,
    Snapshot,
    SnapshotError,
    load_snapshot,
    parse_snapshot,
)

__all__ = [
    "DEFAULT_SNAPSHOT_PATH",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_SNAPSHOT_BYTES",
    "VIRTIO_NET_DEVICES",
    "Snapshot",
    "SnapshotError",
    "guests_from_capabilities",
    "load_snapshot",
    "open_libvirt",
    "parse_snapshot",
    "take_snapshot",
]
