"""The records every part of the project shares: domains, NICs, host capabilities, findings.

Standard library only, and no I/O: the parser fills these records, the snapshot codec and the
local prober fill ``HostCapabilities``, the pure engine reads both and writes ``Finding`` records,
and the reporters format them. Nothing here knows about XML, YAML, files or libvirt-python.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from ..common.records import SLOTS

# libvirt's txmode values (virDomainNetVirtioTxModeType) and what each becomes on QEMU's
# virtio-net device (qemuBuildNicDevProps): iothread -> tx=bh, timer -> tx=timer.
TXMODES = ("iothread", "timer")
QEMU_TX = {"iothread": "bh", "timer": "timer"}
# The models libvirt calls virtio (virDomainNetIsVirtioModel); it matches model names
# case-insensitively (virDomainNetSetModelString), so compare against model.lower().
VIRTIO_MODELS = ("virtio", "virtio-transitional", "virtio-non-transitional")


def libvirt_version_text(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + micro: 9000000 is 9.0.0."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


# --- the domain, as written -----------------------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class QemuArg:
    """One ``<qemu:commandline>`` option that may reach a NIC's tx, as QEMU reads it
    (``qemu_args.parse_commandline``); options proven harmless are not kept.

    ``kind``: ``global`` (``target`` is the QOM type named, ``value`` the tx), ``device`` (an
    extra ``-device``: ``target`` its driver, ``value`` its own tx or None, ``ident`` its
    QemuOpts id, ``json`` when written as JSON, which no ``-set`` can reach), ``set``
    (``-set device.ID.PROP=VALUE``: ``target`` is the ID, ``prop`` tx or driver), or
    ``unverifiable`` (``reason`` says why).
    """

    kind: str
    line: int
    text: str  # the option and its value as written, quoted in findings
    target: str = ""
    prop: str = ""
    value: Optional[str] = None
    ident: Optional[str] = None
    json: bool = False
    reason: str = ""


@dataclass(frozen=True, **SLOTS)
class OverrideProp:
    """One ``<qemu:override>`` frontend property of the device with ``alias``, as libvirt parses
    it; libvirt rewrites the device's -device properties with it after building the device.
    Only ``tx`` and ``driver`` are kept: no other property can touch a NIC's tx."""

    alias: str
    name: str
    type: str  # libvirt's: string, signed, unsigned, bool, remove
    value: Optional[str]
    line: int


@dataclass(frozen=True, **SLOTS)
class Nic:
    """One ``<interface>`` of a domain, as libvirt reads the parts that decide its tx."""

    index: int
    line: int
    type: str
    mac: Optional[str] = None
    network: Optional[str] = None
    bridge: Optional[str] = None
    dev: Optional[str] = None
    model: Optional[str] = None
    driver_name: Optional[str] = None
    txmode: Optional[str] = None
    address_type: Optional[str] = None
    alias: Optional[str] = None

    @property
    def is_virtio(self) -> bool:
        """Virtio as written (libvirt's parse-time view, which decides whether txmode is read)."""
        return self.model is not None and self.model.lower() in VIRTIO_MODELS


@dataclass(frozen=True, **SLOTS)
class Domain:
    """One domain definition, reduced to what decides its NICs' tx."""

    name: str
    file: str
    line: int
    type: str = "qemu"
    uuid: Optional[str] = None
    arch: Optional[str] = None
    machine: Optional[str] = None
    emulator: Optional[str] = None
    nics: tuple[Nic, ...] = field(default_factory=tuple)
    # <qemu:commandline> options that may reach a NIC's tx, in libvirt's order (all elements)
    qemu_args: tuple[QemuArg, ...] = ()
    # <qemu:override> tx and driver properties, in libvirt's order (all elements)
    overrides: tuple[OverrideProp, ...] = ()
    # <qemu:capabilities> adds or removes QEMU capabilities: how libvirt passes -device is
    # then not what the host's libvirt would choose on its own
    qemu_capabilities: bool = False
    # address types of every device that names one (the virtio-mmio default depends on them)
    has_mmio_devices: bool = False


# --- what a host can do ---------------------------------------------------------------------------


class SupportState(str, enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


@dataclass(frozen=True, **SLOTS)
class Support:
    """Whether an emulator's device takes ``tx``, and how that was learnt."""

    state: SupportState
    detail: str = ""
    method: str = ""


@dataclass(frozen=True, **SLOTS)
class Guest:
    """One (arch, domain type) -> emulator line of libvirt's host capabilities."""

    arch: str
    emulator: str
    domain_types: tuple[str, ...] = ("qemu",)
    # libvirt lists the emulator's default machine first (virCapabilitiesDomainDataLookup)
    machine: Optional[str] = None


@dataclass(frozen=True, **SLOTS)
class HostCapabilities:
    """What one host can do for a domain: its guests, emulators, networks and devices."""

    name: str
    guests: tuple[Guest, ...] = ()
    # emulator path -> QEMU device name -> Support
    devices: Mapping[str, Mapping[str, Support]] = field(default_factory=dict)
    # emulator path -> why nothing is known about it (untrusted, missing, probe failed ...)
    emulator_errors: Mapping[str, str] = field(default_factory=dict)
    # The host's native arch (libvirt's <host><cpu><arch>): a domain without <os><type arch>
    # gets it. None when unknown (an old snapshot): such a domain's arch is then unknown too.
    arch: Optional[str] = None
    # libvirt network name -> its <forward mode> ('' for none). A network missing here is
    # unknown; only 'hostdev' changes what QEMU gets (a vfio-pci device instead of virtio-net).
    networks: Mapping[str, str] = field(default_factory=dict)
    # Whether /dev/vhost-net exists. libvirt falls back to QEMU's own virtio-net backend without
    # it, so txmode then takes effect even where vhost-net would have done the transmit.
    vhost_net: Optional[bool] = None
    # emulator path -> QEMU type -> its ancestors, parent first, as the emulator's QOM reports
    # them (QMP qom-list-types with abstract types): a -global applies to every type that
    # descends from the type it names. Only virtio-net types are kept. Missing: the known
    # parents of passthrough.KNOWN_ANCESTRY stand in.
    ancestry: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    # emulator path -> whether libvirt passes -device to it as JSON (libvirt's own capabilities
    # cache: the device.json+hotplug flag). Then no -set can reach a device libvirt creates.
    # Missing: unknown, and a -set is assumed to reach it.
    device_json: Mapping[str, bool] = field(default_factory=dict)
    # The libvirt that builds the command line (major * 1,000,000 + minor * 1,000 + micro, as
    # virConnectGetLibVersion gives it): some of its defaults changed between versions. None:
    # unknown (an older snapshot), and libvirt_rules follows the newest libvirt it knows.
    libvirt_version: Optional[int] = None

    def guest_arch(self, domain: Domain) -> Optional[str]:
        """The arch libvirt gives the domain on this host."""
        return domain.arch or self.arch

    def guest(self, domain: Domain) -> Optional[Guest]:
        """The capabilities line libvirt would use for the domain's arch and type."""
        arch = self.guest_arch(domain)
        matching = [g for g in self.guests if g.arch == arch]
        for guest in matching:
            if domain.type in guest.domain_types:
                return guest
        return matching[0] if matching else None

    def resolve_emulator(self, domain: Domain) -> Optional[str]:
        """The binary libvirt would run: the domain's <emulator>, else the host's for the arch."""
        if domain.emulator:
            return domain.emulator
        guest = self.guest(domain)
        return guest.emulator if guest is not None else None

    def support(self, domain: Domain, device: str) -> tuple[Optional[str], Support]:
        emulator = self.resolve_emulator(domain)
        if emulator is None:
            arch = self.guest_arch(domain) or "unknown (the domain names none)"
            return None, Support(
                SupportState.UNKNOWN, f"no emulator for arch {arch} on {self.name}"
            )
        if emulator in self.emulator_errors:
            return emulator, Support(SupportState.UNKNOWN, self.emulator_errors[emulator])
        known = self.devices.get(emulator)
        if known is None:
            return emulator, Support(
                SupportState.UNKNOWN, f"emulator {emulator} is not known on {self.name}"
            )
        result = known.get(device)
        if result is None:
            return emulator, Support(SupportState.UNKNOWN, f"{device} was not probed on {emulator}")
        return emulator, result


# --- findings -------------------------------------------------------------------------------------


class Level(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, **SLOTS)
class Suppression:
    """The policy exception that silenced a finding: reported with it, never counted."""

    exception: int  # its index in the policy's exceptions
    line: int  # where it starts in the policy file
    reason: str
    expires: Optional[str] = None  # ISO date, the last day it applies

    def as_dict(self) -> dict[str, Any]:
        return {
            "exception": self.exception,
            "line": self.line,
            "reason": self.reason,
            "expires": self.expires,
        }


@dataclass(unsafe_hash=True, **SLOTS)
class Finding:
    """One problem with one NIC (or with a whole file, for ``xml-invalid``).

    A value like the other records: hashable by its fields, and never changed once made (make a
    new one with ``dataclasses.replace``). Not ``frozen`` only because validate-domain makes one
    per finding per domain and a frozen ``__init__`` sets each field through
    ``object.__setattr__``, several times the cost of a plain one."""

    file: str
    line: int
    domain: str
    code: str
    level: Level
    message: str
    interface: Optional[int] = None
    mac: Optional[str] = None
    txmode: Optional[str] = None
    rule: Optional[str] = None
    host: Optional[str] = None
    # libxml2's column, for a parse error (xml-invalid); NIC findings point at a whole element.
    column: Optional[int] = None
    # Set when a policy exception silences the finding: reported, but neither an error nor a
    # warning.
    suppression: Optional[Suppression] = None

    def as_dict(self) -> dict[str, Any]:
        # Every field is a scalar, so dataclasses.asdict's recursive deep copy (a third of the json
        # report's time for 10,000 files) would copy nothing: a flat read gives the same dict.
        data = {name: getattr(self, name) for name in _FINDING_KEYS}
        data["level"] = self.level.value
        if self.column:
            data["column"] = self.column
        if self.suppression is not None:
            data["suppression"] = self.suppression.as_dict()
        return data


# The keys every finding's dict has; "column" and "suppression" only where there is one.
_FINDING_KEYS = tuple(f.name for f in fields(Finding) if f.name not in ("column", "suppression"))


@dataclass(frozen=True, **SLOTS)
class Summary:
    """The counts a report ends with."""

    files: int = 0
    domains: int = 0
    nics: int = 0
    errors: int = 0
    warnings: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, **SLOTS)
class Report:
    """Everything a formatter needs: the inputs checked, in order, and what was found."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    summary: Summary
    hosts: tuple[str, ...] = ()
    tool_version: str = ""
