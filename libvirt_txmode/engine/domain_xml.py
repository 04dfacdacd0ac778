"""Domain XML -> records, with a parser hardened for untrusted input.

The hook runs as root on XML other people wrote, so the parser resolves no entities, loads no DTD,
touches no network, refuses any DOCTYPE and reads a bounded number of bytes.

One module past 400 lines because it is the engine's only XML reader (the one module that
may import lxml): the hardened parser and the walk from elements to records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import IO, Any, Optional

from lxml import etree

from ..common.files import (  # the bound lives with the hook's stdlib helpers
    MAX_XML_BYTES,
    TOO_LARGE,
)
from ..common.records import SLOTS
from .model import TXMODES, VIRTIO_MODELS, Domain, Nic, OverrideProp
from .qemu_args import parse_commandline

__all__ = [
    "MAX_XML_BYTES",
    "NIC_FIELDS",
    "TXMODES",
    "VIRTIO_MODELS",
    "BeyondBoundsError",
    "Domain",
    "DomainXMLError",
    "Nic",
    "NotADomainError",
    "domain_from_parts",
    "make_parser",
    "parse_domain",
    "parse_parts",
    "read_bounded",
]

# libvirt's namespace for <qemu:commandline> and <qemu:override> (docs/drvqemu.rst).
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# The first markup that is a DOCTYPE or a start tag. A DOCTYPE can only precede the root element, so
# finding it first means the document has one: refuse it before libxml2 reads its internal subset.
_PROLOG_MARKUP = re.compile(rb"<!DOCTYPE|<[A-Za-z_:]")
_DOCTYPE_REFUSED = "a DOCTYPE is not allowed in domain XML"


class DomainXMLError(Exception):
    """The input is not a domain XML document we are willing to read."""

    def __init__(self, message: str, line: int = 1, column: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class BeyondBoundsError(DomainXMLError):
    """Past a size or depth bound (MAX_XML_BYTES, or libxml2's own limits without
    XML_PARSE_HUGE, which libvirt never sets): the input, not the tool, is the problem."""


class NotADomainError(DomainXMLError):
    """Well-formed XML whose root is another element (a <network>, a <pool>): libvirt's hook never
    gets one, and a folder of definitions may hold them beside the domains."""


# How deep libvirt 9.0 (libxml2 2.9.14, no XML_PARSE_HUGE) lets a domain nest: 257 elements, the
# root included (measured with virsh define and xmllint). lxml's own libxml2 may stop sooner
# (2.14 at 256): a document it refuses for depth alone is read again without that limit and held
# to libvirt's, so that a domain libvirt starts is never refused for its <metadata>.
LIBVIRT_MAX_DEPTH = 257
LIBVIRT_MAX_TEXT = 10_000_000  # libxml2's XML_MAX_TEXT_LENGTH, lifted with the depth limit


def make_parser(*, huge: bool = False) -> etree.XMLParser:
    """The hardened parser. Callers that parse many documents make one and pass it to every
    ``parse_domain`` call (creating it costs as much as a tenth of a small parse); it is never
    shared between threads (lxml parsers are not thread-safe) and never kept in a global."""
    return etree.XMLParser(
        collect_ids=False,  # no xml:id table: nothing here looks elements up by id
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=huge,
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
        raise BeyondBoundsError(f"input is larger than {limit} bytes")
    return data


def parse_domain(data: bytes, source: str, *, parser: Optional[etree.XMLParser] = None) -> Domain:
    """Parse one domain XML document. Raises DomainXMLError with a line number.

    ``parser`` must come from ``make_parser`` (its settings are what makes untrusted input safe);
    without it a fresh one is made.
    """
    return domain_from_parts(*parse_parts(data, source, parser=parser))


# The fields of model.Nic in its order: parse_parts gives each NIC as a tuple of them.
NIC_FIELDS = (
    "index", "line", "type", "mac", "network", "bridge", "dev", "model", "driver_name",
    "txmode", "address_type", "alias",
)  # fmt: skip
NicFields = tuple[Any, ...]


def parse_parts(
    data: bytes, source: str, *, parser: Optional[etree.XMLParser] = None
) -> tuple[dict[str, Any], list[NicFields]]:
    """``parse_domain`` before the records are made: Domain's keywords but ``nics``, and each
    NIC's fields as a tuple in NIC_FIELDS order. For callers that often need no record at all
    (validate-domain answers most domains from the shapes it has seen: memo.py); building the
    records was a third of parsing. ``domain_from_parts`` makes the Domain."""
    root = _domain_root(data, parser or make_parser())
    parts = _Parts.collect(root)
    # Without a namespace declaration no attribute can carry a prefix, so lxml's own lookup gives
    # what libvirt's namespace-blind one would; it is several times cheaper than ``attribute``.
    # Only for bytes an ASCII-compatible scan can read (UTF-16 hides "xmlns:" from it).
    get = attribute
    nic_fields: Any = _nic_fields
    if b"xmlns:" not in data and b"xml:" not in data and b"\0" not in data:
        get = _plain_attribute
        nic_fields = _plain_nic_fields
    os_type = parts.os_type
    arch = get(os_type, "arch") if os_type is not None else None
    machine = get(os_type, "machine") if os_type is not None else None
    nics = [nic_fields(index, element) for index, element in enumerate(parts.interfaces)]
    fields = {
        "name": _text(parts.named.get("name")) or "(unnamed)",
        "file": source,
        "line": _line(root),
        "type": get(root, "type") or "qemu",
        "uuid": _text(parts.named.get("uuid")),
        "arch": arch,
        "machine": machine,
        "emulator": _text(parts.emulator),
        **_qemu_namespace(parts.qemu_elements),
        "has_mmio_devices": _may_default_to_mmio(arch, machine, nics) and _has_mmio_address(root),
    }
    return fields, nics


def domain_from_parts(fields: dict[str, Any], nics: list[NicFields]) -> Domain:
    return Domain(nics=tuple(Nic(*nic) for nic in nics), **fields)


def _domain_root(data: bytes, parser: etree.XMLParser) -> etree._Element:
    """The <domain> element of a document we are willing to read, or DomainXMLError."""
    if len(data) > MAX_XML_BYTES:
        raise BeyondBoundsError(TOO_LARGE)
    if not data or data.isspace():  # (no stripped copy of the document)
        raise DomainXMLError("empty document")
    first = _PROLOG_MARKUP.search(data)
    if first is not None and first.group() == b"<!DOCTYPE":
        # Entities (external ones read files, nested ones explode) never reach the parser.
        raise DomainXMLError(_DOCTYPE_REFUSED, data.count(b"\n", 0, first.start()) + 1)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        msg = exc.msg or str(exc)
        if not msg.startswith("Excessive depth"):
            raise _syntax_error(exc) from None
        root = _deep_root(data, exc)
    except ValueError as exc:  # e.g. an encoding declaration lxml cannot honour
        raise DomainXMLError(f"unreadable XML: {exc}") from None
    # Still checked after parsing: an encoding the byte scan cannot read (UTF-16) hides a DOCTYPE
    # from it, and the parser above neither resolves entities nor loads a DTD in any case.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise DomainXMLError(_DOCTYPE_REFUSED, 1)
    if not isinstance(root.tag, str) or root.tag != "domain":
        raise NotADomainError(f"root element is <{root.tag}>, expected <domain>", _line(root))
    return root


def _syntax_error(exc: etree.XMLSyntaxError) -> DomainXMLError:
    line = exc.lineno or 1
    msg = exc.msg or str(exc)
    column = exc.position[1] if exc.position and exc.position[1] else None
    # libxml2 names the option that would lift a depth or text-size limit it hit.
    kind = BeyondBoundsError if "XML_PARSE_HUGE" in msg else DomainXMLError
    return kind(f"not well-formed XML: {msg}", line, column)


def _deep_root(data: bytes, refused: etree.XMLSyntaxError) -> etree._Element:
    """A document lxml's libxml2 refused for its depth, read again without that limit: libvirt's
    own bound (LIBVIRT_MAX_DEPTH) decides. Only such documents pay for the walk."""
    try:
        root = etree.fromstring(data, parser=make_parser(huge=True))
    except etree.XMLSyntaxError:
        raise _syntax_error(refused) from None
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > LIBVIRT_MAX_DEPTH:
            raise BeyondBoundsError(
                f"not well-formed XML: Excessive depth in document: {LIBVIRT_MAX_DEPTH - 1} "
                f"(libvirt's limit: {LIBVIRT_MAX_DEPTH} elements)",
                _line(element),
            )
        for text in (element.text, element.tail):
            if text is not None and len(text) > LIBVIRT_MAX_TEXT:
                raise BeyondBoundsError(
                    "not well-formed XML: huge text node (libvirt's limit: "
                    f"{LIBVIRT_MAX_TEXT} bytes)",
                    _line(element),
                )
        stack.extend((child, depth + 1) for child in element)
    return root


@dataclass(**SLOTS)
class _Parts:
    """The elements a Domain is made of, found in one pass over the children instead of a find()
    per path (an ElementPath lookup each). Same answers: find("name") is the first <name> child;
    find("os/type") the first <type> child of the first <os> that has one;
    iterfind("devices/interface") every <interface> of every <devices>, in document order.
    Comments and entity references have non-string tags."""

    named: dict[str, etree._Element] = field(default_factory=dict)
    os_type: Optional[etree._Element] = None
    emulator: Optional[etree._Element] = None
    interfaces: list[etree._Element] = field(default_factory=list)
    qemu_elements: list[etree._Element] = field(default_factory=list)

    @classmethod
    def collect(cls, root: etree._Element) -> _Parts:
        parts = cls()
        for child in root:  # (iterchildren(*tags) costs more: it builds a matcher per call)
            tag = child.tag
            if tag == "devices":
                parts.add_devices(child)
            elif tag == "os":
                if parts.os_type is None:
                    parts.os_type = _first_child(child, "type")
            elif tag in _QEMU_TAGS:
                parts.qemu_elements.append(child)
            elif tag in _NAMED and tag not in parts.named:
                parts.named[tag] = child
        return parts

    def add_devices(self, devices: etree._Element) -> None:
        for device in devices:
            if device.tag == "interface":
                self.interfaces.append(device)
            elif device.tag == "emulator" and self.emulator is None:
                self.emulator = device


_QEMU_TAGS = (
    f"{{{QEMU_NS}}}commandline",
    f"{{{QEMU_NS}}}override",
    f"{{{QEMU_NS}}}capabilities",
)
# The top-level elements read by their name (the others are not kept).
_NAMED = ("name", "uuid")


def attribute(element: etree._Element, name: str) -> Optional[str]:
    """An attribute as libvirt reads it: xmlGetProp ignores namespaces, so the first attribute
    with that local name counts whatever its prefix (``x:txmode='timer'`` is ``txmode``)."""
    for key, value in element.items():
        text = str(key)
        if text == name or (text[0] == "{" and text.endswith("}" + name)):
            return str(value)
    return None


# lxml's own attribute lookup (C), for documents without namespaced attributes.
_plain_attribute: Any = etree._Element.get


def _may_default_to_mmio(
    arch: Optional[str], machine: Optional[str], nics: list[NicFields]
) -> bool:
    # Only Arm and RISC-V virt machines ask whether the domain already has a virtio-mmio device,
    # and only for virtio NICs without an address: skip the scan of every device otherwise.
    if arch is not None and not arch.startswith(("arm", "aarch64", "riscv")):
        return False
    if machine is not None and not machine.startswith("virt"):
        return False
    # Nic.is_virtio and Nic.address_type, on the NIC_FIELDS tuples.
    return any(
        nic[7] is not None and nic[7].lower() in VIRTIO_MODELS and nic[10] is None for nic in nics
    )


def _has_mmio_address(root: etree._Element) -> bool:
    for devices in root:
        if devices.tag != "devices":
            continue
        for device in devices:
            for child in device:
                if child.tag == "address" and attribute(child, "type") == "virtio-mmio":
                    return True
    return False


def _qemu_namespace(elements: list[etree._Element]) -> dict[str, Any]:
    """Domain's qemu_args, overrides and qemu_capabilities, read as libvirt reads its namespace
    (qemuDomainDefNamespaceParse): every ./qemu:commandline/qemu:arg and every
    ./qemu:override/qemu:device in document order, whichever element holds them. A -global in one
    <qemu:commandline> and its value in the next are one option to QEMU."""
    args: list[tuple[str, int]] = []
    overrides: list[OverrideProp] = []
    capabilities = False
    for element in elements:
        if element.tag == _COMMANDLINE:
            args.extend(
                (attribute(arg, "value") or "", _line(arg)) for arg in element.iterchildren(_ARG)
            )
        elif element.tag == _OVERRIDE:
            overrides.extend(_override_props(element))
        else:
            capabilities = capabilities or any(
                child.tag in _CAPABILITY_CHANGES for child in element
            )
    return {
        "qemu_args": parse_commandline(args),
        "overrides": tuple(overrides),
        "qemu_capabilities": capabilities,
    }


def _override_props(override: etree._Element) -> list[OverrideProp]:
    """<qemu:override><qemu:device alias='net0'><qemu:frontend><qemu:property name='tx' .../>:
    libvirt (>= 8.2) rewrites that property of the device's -device JSON before starting QEMU.
    A property of another name cannot touch a NIC's tx; one of a type libvirt refuses never
    reaches QEMU (libvirt refuses the whole domain)."""
    found: list[OverrideProp] = []
    for device in override.iterchildren(_OVERRIDE_DEVICE):
        alias = attribute(device, "alias") or ""
        for frontend in device.iterchildren(_FRONTEND):
            for prop in frontend.iterchildren(_PROPERTY):
                name = attribute(prop, "name")
                kind = attribute(prop, "type")
                if name not in ("tx", "driver") or kind not in _OVERRIDE_TYPES:
                    continue
                found.append(OverrideProp(alias, name, kind, attribute(prop, "value"), _line(prop)))
    return found


_COMMANDLINE, _OVERRIDE = f"{{{QEMU_NS}}}commandline", f"{{{QEMU_NS}}}override"
_ARG, _OVERRIDE_DEVICE = f"{{{QEMU_NS}}}arg", f"{{{QEMU_NS}}}device"
_FRONTEND, _PROPERTY = f"{{{QEMU_NS}}}frontend", f"{{{QEMU_NS}}}property"
_CAPABILITY_CHANGES = (f"{{{QEMU_NS}}}add", f"{{{QEMU_NS}}}del")
_OVERRIDE_TYPES = ("string", "signed", "unsigned", "bool", "remove")


def _first_child(element: etree._Element, tag: str) -> Optional[etree._Element]:
    for child in element:
        if child.tag == tag:
            return child
    return None


def _text(element: Optional[etree._Element]) -> Optional[str]:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _nic_fields(index: int, element: etree._Element, get: Any = attribute) -> NicFields:
    """One <interface> as the NIC_FIELDS tuple."""
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
    alias = first.get("alias")
    return (
        index,
        _line(element),
        get(element, "type") or "",
        get(mac, "address") if mac is not None else None,
        get(source, "network") if source is not None else None,
        get(source, "bridge") if source is not None else None,
        get(source, "dev") if source is not None else None,
        get(model, "type") if model is not None else None,
        get(driver, "name") if driver is not None else None,
        get(driver, "txmode") if driver is not None else None,
        get(address, "type") if address is not None else None,
        get(alias, "name") if alias is not None else None,
    )


def _plain_nic_fields(index: int, element: etree._Element) -> NicFields:  # noqa: C901, PLR0912 - one flat pass is the point
    """``_nic_fields`` for a document without namespaced attributes (see parse_parts): lxml's
    own lookups, a comparison chain instead of a dict, and <source>'s attributes in one call.
    The NIC loop was the largest part of validate-domain's own work per domain."""
    mac = source = model = driver = address = alias = None
    for child in element:  # the first child of each tag, as find() would pick it
        tag = child.tag
        if tag == "mac":
            if mac is None:
                mac = child
        elif tag == "source":
            if source is None:
                source = child
        elif tag == "model":
            if model is None:
                model = child
        elif tag == "driver":
            if driver is None:
                driver = child
        elif tag == "address":
            if address is None:
                address = child
        elif tag == "alias" and alias is None:
            alias = child
    network = bridge = dev = None
    if source is not None:
        for key, value in source.items():  # names are unique: no namespaces here
            if key == "network":
                network = value
            elif key == "bridge":
                bridge = value
            elif key == "dev":
                dev = value
    return (
        index,
        element.sourceline or 1,
        element.get("type") or "",
        mac.get("address") if mac is not None else None,
        network,
        bridge,
        dev,
        model.get("type") if model is not None else None,
        driver.get("name") if driver is not None else None,
        driver.get("txmode") if driver is not None else None,
        address.get("type") if address is not None else None,
        alias.get("name") if alias is not None else None,
    )
