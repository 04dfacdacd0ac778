"""Domain XML -> records, with a parser hardened for untrusted input.

The hook runs as root on XML other people wrote, so the parser resolves no entities, loads no DTD,
touches no network, refuses any DOCTYPE and reads a bounded number of bytes.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from typing import IO, Any, Optional

from lxml import etree

# libvirt itself refuses domain XML above 10 MiB (VIR_XML_MAX... in virfile/virxml readers).
MAX_XML_BYTES = 10 * 1024 * 1024

VIRTIO_MODELS = ("virtio", "virtio-transitional", "virtio-non-transitional")
TXMODES = ("iothread", "timer")
# libvirt turns on vhost-net for these interface types (qemuInterfaceOpenVhostNet).
VHOST_CAPABLE_TYPES = ("network", "bridge", "direct", "ethernet")
# The first markup that is a DOCTYPE or a start tag. A DOCTYPE can only precede the root element, so
# finding it first means the document has one: refuse it before libxml2 reads its internal subset.
_PROLOG_MARKUP = re.compile(rb"<!DOCTYPE|<[A-Za-z_:]")
_DOCTYPE_REFUSED = "a DOCTYPE is not allowed in domain XML"


class DomainXMLError(Exception):
    """The input is not a domain XML document we are willing to read."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
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

    @property
    def is_virtio(self) -> bool:
        return self.model in VIRTIO_MODELS


@dataclass(frozen=True)
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

    @property
    def effective_arch(self) -> str:
        """The guest arch; libvirt defaults a missing one to the host's."""
        return self.arch or host_arch()


def host_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and we keep no global state.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
    )


def _line(element: etree._Element) -> int:
    # lxml-stubs type sourceline loosely; libxml2 reports 0/None when it does not know.
    line: Optional[int] = element.sourceline  # type: ignore[assignment]
    return line or 1


def read_bounded(stream: IO[bytes], limit: int = MAX_XML_BYTES) -> bytes:
    """Read at most ``limit`` bytes; raise if there is more (never buffer an unbounded input)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise DomainXMLError(f"input is larger than {limit} bytes")
    return data


def parse_domain(data: bytes, source: str) -> Domain:
    """Parse one domain XML document. Raises DomainXMLError with a line number."""
    if len(data) > MAX_XML_BYTES:
        raise DomainXMLError(f"input is larger than {MAX_XML_BYTES} bytes")
    if not data.strip():
        raise DomainXMLError("empty document")
    first = _PROLOG_MARKUP.search(data)
    if first is not None and first.group() == b"<!DOCTYPE":
        # Entities (external ones read files, nested ones explode) never reach the parser.
        raise DomainXMLError(_DOCTYPE_REFUSED, data.count(b"\n", 0, first.start()) + 1)
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        msg = exc.msg or str(exc)
        raise DomainXMLError(f"not well-formed XML: {msg}", line) from None
    except ValueError as exc:  # e.g. an encoding declaration lxml cannot honour
        raise DomainXMLError(f"unreadable XML: {exc}") from None
    # Still checked after parsing: an encoding the byte scan cannot read (UTF-16) hides a DOCTYPE
    # from it, and the parser above neither resolves entities nor loads a DTD in any case.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise DomainXMLError(_DOCTYPE_REFUSED, 1)
    if not isinstance(root.tag, str) or root.tag != "domain":
        raise DomainXMLError(f"root element is <{root.tag}>, expected <domain>", _line(root))

    name = _text(root.find("name")) or "(unnamed)"
    os_type = root.find("os/type")
    nics = tuple(
        _parse_nic(index, element)
        for index, element in enumerate(root.iterfind("devices/interface"))
    )
    return Domain(
        name=name,
        file=source,
        line=_line(root),
        type=root.get("type") or "qemu",
        uuid=_text(root.find("uuid")),
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        emulator=_text(root.find("devices/emulator")),
        nics=nics,
    )


def _text(element: Optional[etree._Element]) -> Optional[str]:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _parse_nic(index: int, element: etree._Element) -> Nic:
    def attr(path: str, name: str) -> Optional[str]:
        child = element.find(path)
        return child.get(name) if child is not None else None

    return Nic(
        index=index,
        line=_line(element),
        type=element.get("type") or "",
        mac=attr("mac", "address"),
        network=attr("source", "network"),
        bridge=attr("source", "bridge"),
        dev=attr("source", "dev"),
        model=attr("model", "type"),
        driver_name=attr("driver", "name"),
        txmode=attr("driver", "txmode"),
        address_type=attr("address", "type"),
    )


def qemu_device(domain: Domain, nic: Nic) -> Optional[str]:
    """The QEMU device libvirt would create for a virtio NIC (None for other models).

    Follows libvirt's qemuBuildNicDevProps / virtio transport choice: the address type picks the
    transport; without one, s390 guests default to ccw, Arm/RISC-V guests on machines other than
    ``virt`` to virtio-mmio, everything else to PCI.
    """
    if not nic.is_virtio:
        return None
    transport = nic.address_type or _default_transport(domain)
    if transport == "ccw":
        return "virtio-net-ccw"
    if transport == "virtio-mmio":
        return "virtio-net-device"
    if nic.model == "virtio-transitional":
        return "virtio-net-pci-transitional"
    if nic.model == "virtio-non-transitional":
        return "virtio-net-pci-non-transitional"
    return "virtio-net-pci"


def _default_transport(domain: Domain) -> str:
    arch = domain.effective_arch
    if arch.startswith("s390"):
        return "ccw"
    machine = domain.machine or ""
    if (arch.startswith(("arm", "aarch64", "riscv"))) and not machine.startswith("virt"):
        return "virtio-mmio"
    return "pci"


def vhost_reason(domain: Domain, nic: Nic) -> Optional[str]:
    """Why QEMU's ``tx`` would not be used for this NIC, or None when it would."""
    if nic.type == "vhostuser":
        return "the vhost-user backend does the transmit, not QEMU"
    if nic.type == "hostdev":
        return "libvirt ignores txmode on hostdev interfaces"
    if not nic.is_virtio:
        model = nic.model or "default"
        return f"libvirt ignores txmode on model '{model}' (only virtio models use it)"
    if domain.type == "kvm" and nic.type in VHOST_CAPABLE_TYPES and nic.driver_name != "qemu":
        return "vhost-net does the transmit in the kernel (set <driver name='qemu'/> to use txmode)"
    return None
