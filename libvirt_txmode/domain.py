"""Domain XML -> records, with a parser hardened for untrusted input.

The hook runs as root on XML other people wrote, so the parser resolves no entities, loads no DTD,
touches no network, refuses any DOCTYPE and reads a bounded number of bytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import IO, Any, Optional

from lxml import etree

from .files import MAX_XML_BYTES  # the bound lives with the hook's stdlib-only helpers

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
    # What platform.machine() returns on Linux, without importing platform (~3 ms per hook run).
    machine = os.uname().machine
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def make_parser() -> etree.XMLParser:
    """The hardened parser. Callers that parse many documents make one and pass it to every
    ``parse_domain`` call (creating it costs as much as a tenth of a small parse); it is never
    shared between threads (lxml parsers are not thread-safe) and never kept in a global."""
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


def read_file_bounded(path: str, limit: int = MAX_XML_BYTES) -> bytes:
    """``read_bounded`` for a path, without the per-file cost of a buffered file object.

    A buffered ``read(limit + 1)`` allocates a 10 MiB buffer for every 2 KiB domain; here the first
    read asks for the size fstat reports plus one byte, and reading goes on until EOF (a file that
    grows, a FIFO, a /proc file reporting size 0), never past ``limit + 1`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        request = min(os.fstat(fd).st_size, limit) + 1
        parts: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, request)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            request = min(limit + 1 - total, 1 << 16)
    finally:
        os.close(fd)
    if total > limit:
        raise DomainXMLError(f"input is larger than {limit} bytes")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_domain(data: bytes, source: str, *, parser: Optional[etree.XMLParser] = None) -> Domain:
    """Parse one domain XML document. Raises DomainXMLError with a line number.

    ``parser`` must come from ``make_parser`` (its settings are what makes untrusted input safe);
    without it a fresh one is made.
    """
    if len(data) > MAX_XML_BYTES:
        raise DomainXMLError(f"input is larger than {MAX_XML_BYTES} bytes")
    if not data.strip():
        raise DomainXMLError("empty document")
    first = _PROLOG_MARKUP.search(data)
    if first is not None and first.group() == b"<!DOCTYPE":
        # Entities (external ones read files, nested ones explode) never reach the parser.
        raise DomainXMLError(_DOCTYPE_REFUSED, data.count(b"\n", 0, first.start()) + 1)
    try:
        root = etree.fromstring(data, parser=parser or make_parser())
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

    # One pass over the children instead of a find() per path (an ElementPath lookup each). Same
    # answers: find("name") is the first <name> child; find("os/type") the first <type> child of
    # the first <os> that has one; iterfind("devices/interface") every <interface> of every
    # <devices>, in document order. Comments and entity references have non-string tags.
    named: dict[str, etree._Element] = {}
    os_type: Optional[etree._Element] = None
    emulator: Optional[etree._Element] = None
    interfaces: list[etree._Element] = []
    for child in root:
        tag = child.tag
        if tag == "devices":
            for device in child:
                if device.tag == "interface":
                    interfaces.append(device)
                elif device.tag == "emulator" and emulator is None:
                    emulator = device
        elif tag == "os":
            if os_type is None:
                os_type = _first_child(child, "type")
        elif tag not in named and isinstance(tag, str):
            named[tag] = child
    return Domain(
        name=_text(named.get("name")) or "(unnamed)",
        file=source,
        line=_line(root),
        type=root.get("type") or "qemu",
        uuid=_text(named.get("uuid")),
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        emulator=_text(emulator),
        nics=tuple(_parse_nic(index, element) for index, element in enumerate(interfaces)),
    )


def _first_child(element: etree._Element, tag: str) -> Optional[etree._Element]:
    for child in element:
        if child.tag == tag:
            return child
    return None


def _text(element: Optional[etree._Element]) -> Optional[str]:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _parse_nic(index: int, element: etree._Element) -> Nic:
    # The first child per tag, as element.find(tag) (and libvirt's first-match XPath) would pick
    # it, collected in one pass: eight find() calls per NIC were a fifth of validate-domain's time.
    first: dict[Any, etree._Element] = {}
    for child in element:
        tag = child.tag
        if tag not in first:
            first[tag] = child
    mac = first.get("mac")
    source = first.get("source")
    model = first.get("model")
    driver = first.get("driver")
    address = first.get("address")
    return Nic(
        index=index,
        line=_line(element),
        type=element.get("type") or "",
        mac=mac.get("address") if mac is not None else None,
        network=source.get("network") if source is not None else None,
        bridge=source.get("bridge") if source is not None else None,
        dev=source.get("dev") if source is not None else None,
        model=model.get("type") if model is not None else None,
        driver_name=driver.get("name") if driver is not None else None,
        txmode=driver.get("txmode") if driver is not None else None,
        address_type=address.get("type") if address is not None else None,
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
