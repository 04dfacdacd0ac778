"""libvirt networks' forward modes, read from libvirt's own files (never through libvirt).

The hook must not call libvirt (a deadlock, see docs/libvirt-facts.md), yet a type='network' NIC
on a ``<forward mode='hostdev'>`` network becomes a vfio-pci device. libvirtd keeps the state of
each active network in ``/run/libvirt/network/NAME.xml`` (``<networkstatus>``, holding the
``<network>``) and its definition in ``/etc/libvirt/qemu/networks/NAME.xml``: the status file
wins, as it is what the running network uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Optional

from ..common import files, logs, paths

if TYPE_CHECKING:
    from ..engine.model import Domain

LOG = logs.get(__name__)  # logging itself only once there is a message
STATUS_DIR = paths.NETWORK_STATUS_DIR
CONFIG_DIR = paths.NETWORK_CONFIG_DIR
MAX_NETWORK_XML_BYTES = 1024 * 1024


def read_forward_modes(
    names: Iterable[str], directories: tuple[str, ...] = (STATUS_DIR, CONFIG_DIR)
) -> dict[str, str]:
    """name -> forward mode ('' for none) of each network found; unknown names are left out."""
    result: dict[str, str] = {}
    for name in names:
        if not _plain_name(name):
            continue  # never a path: a name like '../x' must not leave libvirt's directories
        for directory in directories:
            mode = _forward_mode(os.path.join(directory, f"{name}.xml"))
            if mode is not None:
                result[name] = mode
                break
    return result


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def _forward_mode(path: str) -> Optional[str]:
    """The forward mode the file at ``path`` declares, or None when it is absent or cannot be
    believed: the hook runs as root, and a network file anyone but root could have written would
    let them decide how a NIC is checked (files.path_trust_problem, the one trust rule)."""
    problem = files.path_trust_problem(path, kind="file")
    if problem is not None:
        if os.path.lexists(path):
            LOG.warning("ignoring libvirt network file %s: %s", path, problem)
        return None
    try:
        data = files.read_trusted(path, MAX_NETWORK_XML_BYTES, allowed_uids=files.ROOT_ONLY)
    except OSError as exc:
        LOG.warning("cannot read libvirt network file %s: %s", path, exc.strerror or exc)
        return None
    from lxml import etree  # noqa: PLC0415 - only when a domain has a network NIC

    from ..engine.domain_xml import make_parser  # noqa: PLC0415

    try:
        root = etree.fromstring(data, parser=make_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        LOG.warning("cannot read libvirt network file %s: %s", path, exc)
        return None
    network = root if root.tag == "network" else root.find("network")
    if network is None:
        return None
    forward = network.find("forward")
    if forward is None:
        return ""
    # libvirt's default forward mode is nat (virNetworkForwardType)
    return forward.get("mode") or "nat"


def network_file_keys(domain: Domain, key: Callable[[str], str]) -> Optional[dict[str, str]]:
    """The identities of the network files the domain's NICs depend on, for the verdict cache
    (``key`` is its dependency identity, 'absent' for a missing file: one that appears later
    makes the verdict stale). None when a name is not a plain file name: no verdict is kept."""
    keys: dict[str, str] = {}
    for nic in domain.nics:
        if nic.type != "network" or not nic.network:
            continue
        if not _plain_name(nic.network):
            return None
        for directory in (STATUS_DIR, CONFIG_DIR):
            path = os.path.join(directory, f"{nic.network}.xml")
            if path not in keys:  # once per network, not per NIC: each key stats a whole path
                keys[path] = key(path)
    return keys
