"""Taking a capability snapshot on a host, through libvirt-python.

Runs outside the hook (calling libvirt from inside a hook deadlocks the daemon), as root:
``getDomainCapabilities`` is refused on a read-only connection. The hook never imports this
module; everything it needs from a snapshot comes through ``snapshot.parse_snapshot``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from lxml import etree

from .. import __version__
from ..common import paths
from ..engine.model import Guest, HostCapabilities, Support, libvirt_version_text
from ..engine.policy import Policy
from . import libvirt_caps
from .emulator import ProbeError, identify, trust_problem
from .probe import ProbeResult, probe_emulator
from .snapshot import Snapshot, SnapshotError

LOG = logging.getLogger(__name__)
# Every virtio-net transport libvirt may pick; probing them all lets CI check any domain.
VIRTIO_NET_DEVICES = (
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
    "virtio-net-ccw",
    "virtio-net-device",
)
VHOST_NET_DEVICE = paths.VHOST_NET_DEVICE
Progress = Callable[[str], None]

# (emulator, devices, timeout) -> the devices' support and the virtio-net types' ancestry
Prober = Callable[[str, Sequence[str], float], ProbeResult]
# (emulator, libvirt's version) -> whether libvirt passes -device to it as JSON (None: unknown)
DeviceJsonReader = Callable[[str, Optional[int]], Optional[bool]]


def _probe(emulator: str, devices: Sequence[str], timeout: float) -> ProbeResult:
    return probe_emulator(emulator, devices, timeout=timeout, ancestry=True)


def _device_json(emulator: str, libvirt_version: Optional[int]) -> Optional[bool]:
    return libvirt_caps.device_json(emulator, libvirt_version=libvirt_version)


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(xml.encode(), parser=parser)


def guests_from_capabilities(xml: str) -> list[Guest]:
    """Guests of ``virConnectGetCapabilities`` XML: arch -> emulator, with its domain types and
    default machine (libvirt lists the emulator's default machine first).

    A ``<domain type>`` may name its own ``<emulator>`` (older KVM setups): that is its own guest.
    """
    guests: list[Guest] = []
    for arch in _parse(xml).iterfind("guest/arch"):
        name = arch.get("name") or ""
        default = arch.findtext("emulator")
        machine = arch.findtext("machine")
        types: list[str] = []
        for domain in arch.iterfind("domain"):
            own = domain.findtext("emulator")
            if own and own != default:
                guests.append(Guest(name, own, (domain.get("type") or "",), machine))
            else:
                types.append(domain.get("type") or "")
        if default:
            guests.append(Guest(name, default, tuple(types), machine))
    return guests


def host_arch_from_capabilities(xml: str) -> Optional[str]:
    """The host's native arch (``<host><cpu><arch>``): what a domain without one runs as."""
    return _parse(xml).findtext("host/cpu/arch")


def networks_of(conn: Any) -> dict[str, str]:
    """Each libvirt network's forward mode ('' without <forward>): a hostdev pool turns a
    type='network' NIC into a vfio-pci device, which the hook must know without calling libvirt."""
    result: dict[str, str] = {}
    try:
        networks = conn.listAllNetworks(0)
    except Exception as exc:  # libvirt.libvirtError; no network driver on this host
        LOG.warning("cannot list libvirt networks: %s", exc)
        return result
    for network in networks:
        try:
            root = _parse(network.XMLDesc(0))
        except Exception as exc:  # a network undefined meanwhile
            LOG.warning("cannot read network: %s", exc)
            continue
        forward = root.find("forward")
        result[root.findtext("name") or network.name()] = (
            (forward.get("mode") or "nat") if forward is not None else ""
        )
    return result


def _domain_capabilities(conn: Any, guests: list[Guest]) -> dict[str, Any]:
    domain_caps: dict[str, Any] = {}
    for guest in guests:
        for virttype in guest.domain_types:
            key = f"{guest.emulator} {guest.arch} {virttype}"
            try:
                xml = conn.getDomainCapabilities(guest.emulator, guest.arch, None, virttype, 0)
                domain_caps[key] = {"machine": _parse(xml).findtext("machine"), "error": None}
            except Exception as exc:  # libvirt.libvirtError; the module may be absent in tests
                message = str(exc)
                if "read only" in message or "read-only" in message:
                    message += " (domain capabilities need a read-write connection: run as root)"
                LOG.warning("domain capabilities for %s: %s", key, message)
                domain_caps[key] = {"machine": None, "error": message}
    return domain_caps


def take_snapshot(
    conn: Any,
    policy: Policy,
    *,
    prober: Prober = _probe,
    device_json: DeviceJsonReader = _device_json,
    uri: str = "",
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Build the snapshot document from an open libvirt connection and direct probes.

    Per emulator: the virtio-net devices' support and type ancestry (one probe), and whether
    libvirt passes -device to it as JSON (libvirt's own capabilities file, believed only when
    the daemon's version wrote it). ``progress`` hears one line per step that may take a while
    (each emulator probed).
    """
    capabilities_xml = conn.getCapabilities()
    guests = guests_from_capabilities(capabilities_xml)
    library_version = conn.getLibVersion()
    devices: dict[str, dict[str, Support]] = {}
    errors: dict[str, str] = {}
    identities: dict[str, str] = {}
    ancestry: dict[str, dict[str, tuple[str, ...]]] = {}
    json_devices: dict[str, bool] = {}
    for emulator in sorted({g.emulator for g in guests}):
        if progress is not None:
            progress(f"probing {emulator}")
        try:
            problem = trust_problem(emulator, policy.emulators)
            if problem is not None:
                raise ProbeError(problem)
            identity = identify(emulator)
            probed = prober(emulator, VIRTIO_NET_DEVICES, policy.probe_timeout)
        except ProbeError as exc:
            LOG.warning("%s", exc)
            errors[emulator] = str(exc)
            continue
        devices[emulator] = dict(probed.devices)
        identities[emulator] = identity.key()
        if probed.ancestry is not None:
            ancestry[emulator] = probed.ancestry
        else:
            LOG.warning("no type ancestry from %s: %s", emulator, probed.ancestry_error)
        as_json = device_json(emulator, library_version)
        if as_json is not None:
            json_devices[emulator] = as_json
    host = _hostname(conn)
    snapshot = Snapshot(
        host=host,
        source="",
        capabilities=HostCapabilities(
            name=host,
            guests=tuple(guests),
            devices=devices,
            emulator_errors=errors,
            arch=host_arch_from_capabilities(capabilities_xml),
            networks=networks_of(conn),
            vhost_net=os.path.exists(VHOST_NET_DEVICE),
            ancestry=ancestry,
            device_json=json_devices,
            libvirt_version=library_version,
        ),
        identities=identities,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tool=__version__,
        libvirt={
            "uri": uri,
            "library_version": libvirt_version_text(library_version),
            "hypervisor": conn.getType(),
            "hypervisor_version": libvirt_version_text(conn.getVersion()),
        },
        domain_capabilities=_domain_capabilities(conn, guests),
    )
    return snapshot.to_json()


def _hostname(conn: Any) -> str:
    try:
        return str(conn.getHostname())
    except Exception:
        return socket.gethostname()


class ConnectError(Exception):
    """libvirt-python is missing or the daemon cannot be reached; the message says which."""


def connect(uri: str, *, read_only: bool) -> Any:
    """A connection to ``uri``, quiet on stderr. Read-only suffices for listing domains and
    capabilities; getDomainCapabilities refuses it (the snapshot needs read-write)."""
    try:
        import libvirt  # noqa: PLC0415 - optional dependency, only host commands need it
    except ImportError:
        raise ConnectError(
            "libvirt-python is not installed: pip install 'libvirt-txmode[libvirt]' "
            "(needs libvirt's headers: apt-get install libvirt-dev pkg-config)"
        ) from None
    # Without a handler libvirt-python prints every error to stderr on top of raising it.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ConnectError(f"cannot connect to {uri}: {exc}") from None


def open_libvirt(uri: str) -> Any:
    """The read-write connection a snapshot needs; SnapshotError when there is none."""
    try:
        return connect(uri, read_only=False)
    except ConnectError as exc:
        raise SnapshotError(str(exc)) from None
