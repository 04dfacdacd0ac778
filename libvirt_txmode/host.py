"""Capability snapshots: libvirt's view of a host plus our direct probes, as one JSON document.

Taken on the host (outside the hook, where calling libvirt is safe) with libvirt-python; read by the
hook as a warm source of probe answers and by ``validate-domain --caps`` in CI, where there is no
libvirt at all. The format is documented in the README ("Capability snapshot").
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lxml import etree

from . import __version__
from .cache import support_from_json, support_to_json
from .capabilities import Guest, HostCapabilities, Support
from .policy import Policy
from .qemu import ProbeError, identify, probe, trust_problem

LOG = logging.getLogger(__name__)
FORMAT = "libvirt-txmode-snapshot"
FORMAT_VERSION = 1
DEFAULT_SNAPSHOT_PATH = "/var/lib/libvirt-txmode/snapshot.json"
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
# Every virtio-net transport libvirt may pick; probing them all lets CI check any domain.
VIRTIO_NET_DEVICES = (
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
    "virtio-net-ccw",
    "virtio-net-device",
)


class SnapshotError(ValueError):
    """A snapshot that cannot be read or is not a valid document; the message names the file."""


@dataclass(frozen=True)
class Snapshot:
    host: str
    source: str
    capabilities: HostCapabilities
    # emulator path -> identity key the probes were taken for (see qemu.EmulatorIdentity.key)
    identities: dict[str, str] = field(default_factory=dict)
    created: str = ""


# --- reading -------------------------------------------------------------------------------------


def load_snapshot(
    path: str, *, require_root_owned: Optional[bool] = None, name: Optional[str] = None
) -> Snapshot:
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if require_root_owned and (
                info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            ):
                raise SnapshotError(f"{path}: refused: not owned by root or writable by others")
            raw = handle.read(MAX_SNAPSHOT_BYTES + 1)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read snapshot: {exc.strerror}") from None
    if len(raw) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{path}: larger than {MAX_SNAPSHOT_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise SnapshotError(f"{path}: not a valid snapshot: not JSON: {exc}") from None
    return parse_snapshot(data, path, name)


def parse_snapshot(data: Any, source: str, name: Optional[str] = None) -> Snapshot:
    """Validate a decoded snapshot document; SnapshotError names ``source`` and the bad key."""
    try:
        return _parse_snapshot(data, source, name)
    except _Invalid as exc:
        raise SnapshotError(f"{source}: not a valid snapshot: {exc}") from None


class _Invalid(Exception):
    pass


def _get(mapping: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise _Invalid(f"{where}: missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise _Invalid(f"{where}: {key!r} is not {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


_KIND_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def _parse_snapshot(data: Any, source: str, name: Optional[str]) -> Snapshot:
    if not isinstance(data, dict):
        raise _Invalid("the document is not a JSON object")
    if data.get("format") != FORMAT:
        raise _Invalid(f"'format' is not {FORMAT!r}")
    if data.get("version") != FORMAT_VERSION:
        raise _Invalid(
            f"unsupported version {data.get('version')!r} (this tool reads {FORMAT_VERSION})"
        )
    host = _get(data, "host", str, "top level")
    guests: list[Guest] = []
    for i, g in enumerate(_get(data, "guests", list, "top level")):
        where = f"guests[{i}]"
        if not isinstance(g, dict):
            raise _Invalid(f"{where} is not an object")
        types = _get(g, "domain_types", list, where)
        if not all(isinstance(t, str) for t in types):
            raise _Invalid(f"{where}: 'domain_types' is not a list of strings")
        guests.append(
            Guest(_get(g, "arch", str, where), _get(g, "emulator", str, where), tuple(types))
        )
    devices: dict[str, dict[str, Support]] = {}
    errors: dict[str, str] = {}
    identities: dict[str, str] = {}
    for path, entry in _get(data, "emulators", dict, "top level").items():
        where = f"emulators[{path!r}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where} is not an object")
        if entry.get("error"):
            errors[path] = f"{entry['error']} (on {name or host})"
            continue
        found: dict[str, Support] = {}
        for device, support in _get(entry, "devices", dict, where).items():
            try:
                found[device] = support_from_json(support)
            except (ValueError, KeyError, TypeError) as exc:
                raise _Invalid(f"{where}.devices[{device!r}]: {exc}") from None
        devices[path] = found
        if entry.get("identity"):
            identities[path] = str(entry["identity"])
    caps = HostCapabilities(
        name=name or host, guests=tuple(guests), devices=devices, emulator_errors=errors
    )
    created = data.get("created", "")
    return Snapshot(
        host=host, source=source, capabilities=caps, identities=identities, created=str(created)
    )


# --- taking --------------------------------------------------------------------------------------

Prober = Callable[[str, Sequence[str], float], dict[str, Support]]


def _probe(emulator: str, devices: Sequence[str], timeout: float) -> dict[str, Support]:
    return probe(emulator, devices, timeout=timeout)


def guests_from_capabilities(xml: str) -> list[Guest]:
    """Guests of ``virConnectGetCapabilities`` XML: arch -> emulator, with its domain types.

    A ``<domain type>`` may name its own ``<emulator>`` (older KVM setups): that is its own guest.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(xml.encode(), parser=parser)
    guests: list[Guest] = []
    for arch in root.iterfind("guest/arch"):
        name = arch.get("name") or ""
        default = arch.findtext("emulator")
        types: list[str] = []
        for domain in arch.iterfind("domain"):
            own = domain.findtext("emulator")
            if own and own != default:
                guests.append(Guest(name, own, (domain.get("type") or "",)))
            else:
                types.append(domain.get("type") or "")
        if default:
            guests.append(Guest(name, default, tuple(types)))
    return guests


def take_snapshot(
    conn: Any, policy: Policy, *, prober: Prober = _probe, uri: str = ""
) -> dict[str, Any]:
    """Build the snapshot document from an open libvirt connection and direct probes."""
    guests = guests_from_capabilities(conn.getCapabilities())
    domain_caps: dict[str, Any] = {}
    for guest in guests:
        for virttype in guest.domain_types:
            key = f"{guest.emulator} {guest.arch} {virttype}"
            try:
                xml = conn.getDomainCapabilities(guest.emulator, guest.arch, None, virttype, 0)
                parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
                root = etree.fromstring(xml.encode(), parser=parser)
                domain_caps[key] = {"machine": root.findtext("machine"), "error": None}
            except Exception as exc:  # libvirt.libvirtError; the module may be absent in tests
                message = str(exc)
                if "read only" in message or "read-only" in message:
                    message += " (domain capabilities need a read-write connection: run as root)"
                LOG.warning("domain capabilities for %s: %s", key, message)
                domain_caps[key] = {"machine": None, "error": message}

    emulators: dict[str, Any] = {}
    for emulator in sorted({g.emulator for g in guests}):
        entry: dict[str, Any] = {"identity": None, "devices": {}, "error": None}
        try:
            problem = trust_problem(emulator, policy.emulators)
            if problem is not None:
                raise ProbeError(problem)
            identity = identify(emulator)
            results = prober(emulator, VIRTIO_NET_DEVICES, policy.probe_timeout)
            entry["identity"] = identity.key()
            entry["devices"] = {d: support_to_json(s) for d, s in sorted(results.items())}
        except ProbeError as exc:
            LOG.warning("%s", exc)
            entry["error"] = str(exc)
        emulators[emulator] = entry

    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": __version__,
        "host": _hostname(conn),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "libvirt": {
            "uri": uri,
            "library_version": _version(conn.getLibVersion()),
            "hypervisor": conn.getType(),
            "hypervisor_version": _version(conn.getVersion()),
        },
        "guests": [
            {"arch": g.arch, "emulator": g.emulator, "domain_types": list(g.domain_types)}
            for g in guests
        ],
        "domain_capabilities": domain_caps,
        "emulators": emulators,
    }


def _hostname(conn: Any) -> str:
    try:
        return str(conn.getHostname())
    except Exception:
        return socket.gethostname()


def _version(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + micro."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def open_libvirt(uri: str) -> Any:
    """A read-write connection (getDomainCapabilities refuses read-only ones), quiet on stderr."""
    try:
        import libvirt  # noqa: PLC0415 - optional dependency, only the snapshot needs it
    except ImportError:
        raise SnapshotError(
            "libvirt-python is not installed: pip install 'libvirt-txmode[libvirt]' "
            "(needs libvirt's headers: apt-get install libvirt-dev pkg-config)"
        ) from None
    # Without a handler libvirt-python prints every error to stderr on top of raising it.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise SnapshotError(f"cannot connect to {uri}: {exc}") from None
