"""The records every part of the project shares: domains, NICs, host capabilities, findings.

Standard library only, and no I/O: the parser fills these records, the snapshot codec and the
local prober fill ``HostCapabilities``, the pure engine reads both and writes ``Finding`` records,
and the reporters format them. Nothing here knows about XML, YAML, files or libvirt-python.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Optional

from .records import DataclassLike, field, fields, record

# libvirt's txmode values (virDomainNetVirtioTxModeType) and what each becomes on QEMU's
# virtio-net device (qemuBuildNicDevProps): iothread -> tx=bh, timer -> tx=timer.
TXMODES = ("iothread", "timer")
QEMU_TX = {"iothread": "bh", "timer": "timer"}
# The models libvirt calls virtio (virDomainNetIsVirtioModel); it matches model names
# case-insensitively (virDomainNetSetModelString), so compare against model.lower().
VIRTIO_MODELS = ("virtio", "virtio-transitional", "virtio-non-transitional")


# --- the domain, as written -----------------------------------------------------------------------


@record(frozen=True)
class TxSetting:
    """A QEMU ``tx`` value that reaches a NIC's device by a route other than ``<driver txmode>``:
    ``<qemu:commandline>`` arguments or a ``<qemu:override>`` property (both reach QEMU verbatim).

    ``target`` names what it applies to: ``alias:net0`` (an ``-set device.ALIAS.tx`` or an
    override of that alias), ``driver:virtio-net-pci`` (``-global``), or ``new:N`` for the N-th
    ``-device virtio-net-...,tx=`` the command line adds by itself.
    """

    value: Optional[str]  # None: an override that removes the property (QEMU's default applies)
    route: str  # human words for where it was set, quoted in findings
    target: str
    line: int
    device: Optional[str] = None  # the QEMU driver named, for -global and -device


@record(frozen=True)
class Nic:
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


@record(frozen=True)
class Domain:
    name: str
    file: str
    line: int
    type: str = "qemu"
    uuid: Optional[str] = None
    arch: Optional[str] = None
    machine: Optional[str] = None
    emulator: Optional[str] = None
    nics: tuple[Nic, ...] = field(default_factory=tuple)
    # tx values set through <qemu:commandline> and <qemu:override>, in document order
    tx_settings: tuple[TxSetting, ...] = ()
    # address types of every device that names one (the virtio-mmio default depends on them)
    has_mmio_devices: bool = False


# --- what a host can do ---------------------------------------------------------------------------


class SupportState(str, enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


@record(frozen=True)
class Support:
    state: SupportState
    detail: str = ""
    method: str = ""


@record(frozen=True)
class Guest:
    """One (arch, domain type) -> emulator line of libvirt's host capabilities."""

    arch: str
    emulator: str
    domain_types: tuple[str, ...] = ("qemu",)
    # libvirt lists the emulator's default machine first (virCapabilitiesDomainDataLookup)
    machine: Optional[str] = None


@record(frozen=True)
class HostCapabilities(DataclassLike):  # DataclassLike: dataclasses.replace accepts it
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


@record(frozen=True)
class Finding:
    """One problem with one NIC (or with a whole file, for ``xml-invalid``)."""

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

    def as_dict(self) -> dict[str, Any]:
        # Every field is a scalar, so dataclasses.asdict's recursive deep copy (a third of the json
        # report's time for 10,000 files) would copy nothing: a flat read gives the same dict.
        data = {name: getattr(self, name) for name in _FINDING_KEYS}
        data["level"] = self.level.value
        if self.column:
            data["column"] = self.column
        return data


# The keys every finding's dict has; "column" only where there is one.
_FINDING_KEYS = tuple(name for name in fields(Finding) if name != "column")


@record(frozen=True)
class Summary:
    files: int = 0
    domains: int = 0
    nics: int = 0
    errors: int = 0
    warnings: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in fields(self)}


@record(frozen=True)
class Report(DataclassLike):
    """Everything a formatter needs: the inputs checked, in order, and what was found."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    summary: Summary
    hosts: tuple[str, ...] = ()
    tool_version: str = ""
