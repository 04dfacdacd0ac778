"""domain: parsing records and the hardened parser (libvirt's device rules: test_libvirt_rules)."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libvirt_txmode.engine.domain_xml import (
    MAX_XML_BYTES,
    Domain,
    DomainXMLError,
    Nic,
    parse_domain,
    read_bounded,
)

FULL = b"""<?xml version='1.0' encoding='UTF-8'?>
<domain type='kvm' id='3'>
  <name> web-1 </name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='KiB'>131072</memory>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'>
      <mac address='52:54:00:AA:bb:01'/>
      <source network='default'/>
      <model type='virtio'/>
      <driver name='qemu' txmode='iothread'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br0'/>
      <model type='virtio-transitional'/>
      <driver txmode='timer'/>
    </interface>
    <interface type='direct'>
      <source dev='eth0' mode='bridge'/>
      <model type='e1000'/>
    </interface>
    <interface type='user'/>
  </devices>
</domain>
"""


def _parse(xml: str) -> Domain:
    return parse_domain(xml.encode(), "test.xml")


def _domain(**kwargs: object) -> Domain:
    values: dict[str, object] = {"name": "vm", "file": "vm.xml", "line": 1, "arch": "x86_64"}
    values.update(kwargs)
    return Domain(**values)  # type: ignore[arg-type]


def _nic(**kwargs: object) -> Nic:
    values: dict[str, object] = {"index": 0, "line": 1, "type": "network", "model": "virtio"}
    values.update(kwargs)
    return Nic(**values)  # type: ignore[arg-type]


# --- records --------------------------------------------------------------------------------------


def test_domain_record() -> None:
    domain = parse_domain(FULL, "/x/web-1.xml")
    assert (domain.name, domain.file, domain.line, domain.type) == (
        "web-1",
        "/x/web-1.xml",
        2,
        "kvm",
    )
    assert domain.uuid == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    assert (domain.arch, domain.machine) == ("x86_64", "pc-q35-7.2")
    assert domain.emulator == "/usr/bin/qemu-system-x86_64"
    assert len(domain.nics) == 4


def test_nic_records() -> None:
    nics = parse_domain(FULL, "web-1.xml").nics
    assert nics[0] == Nic(
        index=0,
        line=11,
        type="network",
        mac="52:54:00:AA:bb:01",
        network="default",
        model="virtio",
        driver_name="qemu",
        txmode="iothread",
        address_type="pci",
    )
    assert nics[1] == Nic(
        index=1,
        line=18,
        type="bridge",
        bridge="br0",
        model="virtio-transitional",
        txmode="timer",
    )
    assert nics[2] == Nic(index=2, line=23, type="direct", dev="eth0", model="e1000")
    assert nics[3] == Nic(index=3, line=27, type="user")
    assert [n.is_virtio for n in nics] == [True, True, False, False]


def test_minimal_domain_defaults() -> None:
    domain = _parse("<domain><devices/></domain>")
    assert domain == Domain(name="(unnamed)", file="test.xml", line=1, type="qemu")
    assert domain.nics == ()


def test_blank_name_and_uuid_are_none() -> None:
    domain = _parse("<domain type='qemu'><name>  </name><uuid/></domain>")
    assert domain.name == "(unnamed)"
    assert domain.uuid is None


def test_interfaces_outside_devices_are_not_nics() -> None:
    domain = _parse(
        "<domain><interface type='network'/><devices><hub><interface type='user'/></hub>"
        "</devices></domain>"
    )
    assert domain.nics == ()


def test_header_comment_keeps_line_numbers() -> None:
    domain = _parse(
        "<!-- expect: -->\n<domain>\n<devices>\n<interface type='user'/>\n</devices>\n</domain>"
    )
    assert domain.line == 2
    assert domain.nics[0].line == 4


# --- hardened parser ------------------------------------------------------------------------------


def _error(data: bytes) -> DomainXMLError:
    with pytest.raises(DomainXMLError) as info:
        parse_domain(data, "bad.xml")
    return info.value


_IN_OPEN, _IN_ACCESS = 0x20, 0x01


@contextmanager
def _watch_opens(path: Path) -> Iterator[list[int]]:
    """Record inotify open/access events on ``path``: proof that nobody read it."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    if libc is None or not hasattr(libc, "inotify_init1"):
        pytest.skip("inotify is not available")
    fd = libc.inotify_init1(os.O_NONBLOCK)
    if fd < 0:
        pytest.skip("inotify_init1 failed")
    events: list[int] = []
    try:
        if libc.inotify_add_watch(fd, str(path).encode(), _IN_OPEN | _IN_ACCESS) < 0:
            pytest.skip("inotify_add_watch failed")
        yield events
        try:
            buffer = os.read(fd, 4096)
        except BlockingIOError:
            buffer = b""
        offset = 0
        while offset + 16 <= len(buffer):
            _wd, mask, _cookie, length = struct.unpack_from("iIII", buffer, offset)
            events.append(mask)
            offset += 16 + length
    finally:
        os.close(fd)


def test_watch_opens_sees_a_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    with _watch_opens(secret) as events:
        secret.read_text()
    assert events


@pytest.mark.parametrize(
    "template",
    [
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file://{path}">]>\n<domain><name>&x;</name></domain>',
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file://{path}">]>\n<domain type="&x;"/>',
        '<!DOCTYPE d [<!ENTITY % p SYSTEM "file://{path}"> %p;]>\n<domain/>',
        '<!DOCTYPE domain SYSTEM "file://{path}">\n<domain/>',
    ],
)
def test_external_entity_refused_and_never_read(tmp_path: Path, template: str) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:TOP-SECRET-HASH:19000:0:99999:7:::\n")
    data = template.format(path=secret).encode()
    with _watch_opens(secret) as events:
        error = _error(data)
    assert events == []
    assert (error.message, error.line) == ("a DOCTYPE is not allowed in domain XML", 1)
    assert "TOP-SECRET" not in str(error)


def test_doctype_line_is_reported() -> None:
    data = b"<?xml version='1.0'?>\n<!-- c -->\n<!DOCTYPE domain>\n<domain/>"
    assert _error(data).line == 3


def test_doctype_in_utf16_still_refused() -> None:
    data = "<!DOCTYPE domain>\n<domain><name>x</name></domain>".encode("utf-16")
    error = _error(data)
    assert error.message == "a DOCTYPE is not allowed in domain XML"


def test_doctype_text_in_body_is_data() -> None:
    domain = _parse("<domain><description><![CDATA[<!DOCTYPE x>]]></description></domain>")
    assert domain.name == "(unnamed)"


def test_billion_laughs_refused() -> None:
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    data = (
        f"<!DOCTYPE lolz [{''.join(entities)}]>\n<domain type='&lol9;'><name>&lol9;</name></domain>"
    )
    error = _error(data.encode())
    assert (error.message, error.line) == ("a DOCTYPE is not allowed in domain XML", 1)


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (
            b"<domain>\n  <name>x</name>\n  <devices>\n</domain>\n",
            4,
            "not well-formed XML: Opening and ending tag mismatch: devices line 3 and domain, "
            "line 4, column 10",
        ),
        (
            b"<domain>\n<name>a & b</name>\n</domain>",
            2,
            "not well-formed XML: xmlParseEntityRef: no name, line 2, column 10",
        ),
        (
            b"<domain>\n\n<name>\xff\xfe</name></domain>",
            3,
            "not well-formed XML: Invalid bytes in character encoding, line 3, column 7",
        ),
        (
            b"<domain><name>a\x01</name></domain>",
            1,
            "not well-formed XML: PCDATA invalid Char value 1, line 1, column 16",
        ),
        (
            b"<?xml version='1.0' encoding='x-nonsense'?>\n<domain/>",
            1,
            "not well-formed XML: Unsupported encoding: x-nonsense, line 1, column 42",
        ),
    ],
)
def test_not_well_formed(data: bytes, line: int, message: str) -> None:
    error = _error(data)
    assert (error.line, error.message) == (line, message)
    assert str(error) == message


def test_unknown_entity_is_an_error() -> None:
    error = _error(b"<domain>\n<name>&x;</name></domain>")
    assert error.line == 2
    assert error.message.startswith("not well-formed XML: Entity 'x' not defined")


@pytest.mark.parametrize("data", [b"", b"   \n\t\n"])
def test_empty(data: bytes) -> None:
    error = _error(data)
    assert (error.message, error.line) == ("empty document", 1)


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        (b"<network/>", "root element is <network>, expected <domain>", 1),
        (
            b"<!-- x -->\n\n<domainsnapshot/>",
            "root element is <domainsnapshot>, expected <domain>",
            3,
        ),
        (b"<domain xmlns='urn:x'/>", "root element is <{urn:x}domain>, expected <domain>", 1),
    ],
)
def test_root_not_domain(data: bytes, message: str, line: int) -> None:
    error = _error(data)
    assert (error.message, error.line) == (message, line)


def test_oversize_parse_domain() -> None:
    data = b"<domain>" + b" " * (MAX_XML_BYTES - len(b"<domain></domain>") + 1) + b"</domain>"
    assert len(data) == MAX_XML_BYTES + 1
    error = _error(data)
    assert (error.message, error.line) == (f"input is larger than {MAX_XML_BYTES} bytes", 1)


def test_exactly_max_size_is_accepted() -> None:
    # Many small text nodes: libxml2 caps a single one at 10,000,000 bytes without XML_PARSE_HUGE.
    chunk = b"<p>" + b"x" * 1017 + b"</p>"
    head, tail = b"<domain><description>", b"</description></domain>"
    room = MAX_XML_BYTES - len(head) - len(tail)
    body = chunk * (room // len(chunk))
    data = head + body + b" " * (room - len(body)) + tail
    assert len(data) == MAX_XML_BYTES
    assert parse_domain(data, "big.xml").name == "(unnamed)"


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requested: list[int] = []

    def read(self, size: Optional[int] = -1) -> bytes:
        self.requested.append(-1 if size is None else size)
        return super().read(size)


def test_read_bounded() -> None:
    assert read_bounded(io.BytesIO(b"abc"), limit=3) == b"abc"
    stream = _CountingStream(b"abcd" * 100)
    with pytest.raises(DomainXMLError) as info:
        read_bounded(stream, limit=3)
    assert (info.value.message, info.value.line) == ("input is larger than 3 bytes", 1)
    assert stream.requested == [4]


def test_read_bounded_default_limit() -> None:
    stream = _CountingStream(b"x" * (MAX_XML_BYTES + 1))
    with pytest.raises(DomainXMLError, match=f"^input is larger than {MAX_XML_BYTES} bytes$"):
        read_bounded(stream)
    assert stream.requested == [MAX_XML_BYTES + 1]


def test_latin1_declaration() -> None:
    data = (
        "<?xml version='1.0' encoding='ISO-8859-1'?>\n<domain type='qemu'><name>café-ü</name>"
        "<devices><interface type='network'><source network='réseau'/></interface></devices>"
        "</domain>"
    ).encode("latin-1")
    domain = parse_domain(data, "latin.xml")
    assert domain.name == "café-ü"
    assert domain.nics[0].network == "réseau"


def test_utf8_names() -> None:
    assert _parse("<domain><name>ウェブ</name></domain>").name == "ウェブ"


def test_attribute_values_kept_verbatim() -> None:
    mac = "52:54:00:00:00:01;$(touch /tmp/pwned)`id`|&amp;&lt;x&gt;&#9;&#10;&#13;"
    domain = _parse(
        "<domain type='kvm'><name>vm&#10;forged: line</name><devices>"
        f"<interface type='network'><mac address='{mac}'/>"
        "<source network='n; rm -rf / #'/><model type='virtio'/>"
        "<driver name='qemu' txmode='timer&#9;[31m'/></interface></devices></domain>"
    )
    nic = domain.nics[0]
    assert nic.mac == "52:54:00:00:00:01;$(touch /tmp/pwned)`id`|&<x>\t\n\r"
    assert nic.network == "n; rm -rf / #"
    assert nic.txmode == "timer\t[31m"
    assert domain.name == "vm\nforged: line"
    assert not os.path.exists("/tmp/pwned")


def test_escape_character_reference_is_not_xml() -> None:
    error = _error(b"<domain>\n<name>a&#27;[31m</name></domain>")
    assert error.line == 2
    assert error.message.startswith(
        "not well-formed XML: xmlParseCharRef: invalid xmlChar value 27"
    )


def test_processing_instructions_and_comments_ignored() -> None:
    domain = _parse(
        "<?xml-stylesheet href='x'?><domain><!-- c --><?pi x?><name>vm</name>"
        "<devices><!-- <interface type='user'/> --></devices></domain>"
    )
    assert (domain.name, domain.nics) == ("vm", ())


_CHILDREN = st.lists(
    st.sampled_from(
        [
            "<mac address='52:54:00:00:0{i}:0{j}'/>",
            "<source network='net{i}-{j}'/>",
            "<source bridge='br{i}-{j}' dev='eth{i}-{j}'/>",
            "<source dev='tap{i}-{j}'/>",
            "<model type='virtio'/>",
            "<model type='e1000'/>",
            "<driver name='qemu' txmode='timer'/>",
            "<driver txmode='iothread'/>",
            "<driver/>",
            "<address type='pci'/>",
            "<address type='ccw'/>",
            "<model type='virtio-non-transitional'/>",
            "<alias name='net{i}-{j}'/>",
            "<target dev='vnet{i}-{j}'/>",
            "<!-- a comment -->",
        ]
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["network", "bridge", "user", ""]), _CHILDREN), max_size=4)
)
def test_both_nic_readers_give_the_same_nics(nics: list[tuple[str, list[str]]]) -> None:
    # parse_parts reads a document without namespace declarations with lxml's own lookups
    # (_plain_nic_fields) and any other one namespace-blind, as libvirt does (_nic_fields): one
    # rule in two readers, so an unrelated declaration must change nothing.
    interfaces = "".join(
        f"<interface{f' type={kind!r}' if kind else ''}>"
        + "".join(child.format(i=i, j=j) for j, child in enumerate(children))
        + "</interface>"
        for i, (kind, children) in enumerate(nics)
    )
    body = f"><name>vm</name><devices>{interfaces}</devices></domain>"
    plain = parse_domain(f"<domain type='qemu'{body}".encode(), "a.xml")
    declared = parse_domain(f"<domain type='qemu' xmlns:x='urn:unrelated'{body}".encode(), "a.xml")
    assert plain.nics == declared.nics
    assert len(plain.nics) == len(nics)
