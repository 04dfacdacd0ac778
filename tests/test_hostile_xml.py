"""Odd but well-formed domain XML and deep nesting: a defined reading, the one libvirt has."""

from __future__ import annotations

import pytest

from libvirt_txmode.engine.domain_xml import BeyondBoundsError, DomainXMLError, parse_domain


def test_deep_nesting_is_refused_not_a_crash() -> None:
    # libxml2 stops at 256 levels without XML_PARSE_HUGE (which we never set); no RecursionError.
    data = b"<domain><name>deep</name>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</domain>"
    with pytest.raises(DomainXMLError, match=r"not well-formed XML: .*[Dd]epth"):
        parse_domain(data, "deep.xml")


def _metadata_levels(levels: int) -> bytes:
    inner = b"<m:a xmlns:m='urn:x'>" + b"<m:a>" * (levels - 1) + b"</m:a>" * levels
    return (
        b"<domain type='qemu'><name>deep</name><metadata>" + inner + b"</metadata><devices>"
        b"<interface type='user'><model type='virtio'/><driver txmode='iothread'/></interface>"
        b"</devices></domain>"
    )


def test_depth_bound_is_libvirts_own() -> None:
    # libvirt 9.0 (libxml2 2.9.14) defines and starts a domain with 255 levels inside
    # <metadata> (257 elements deep) and refuses 256 ("Excessive depth in document: 256");
    # lxml's own libxml2 may stop one level sooner. The bound is libvirt's, whatever lxml has.
    (nic,) = parse_domain(_metadata_levels(255), "deep.xml").nics
    assert nic.txmode == "iothread"
    with pytest.raises(
        BeyondBoundsError, match=r"Excessive depth in document: 256 \(libvirt's limit: 257"
    ):
        parse_domain(_metadata_levels(256), "deep.xml")


def test_duplicate_driver_elements_read_the_first_as_libvirt_does() -> None:
    # libvirt reads ./driver with virXPathNode, i.e. the first match; so do we.
    data = (
        b"<domain type='qemu'><name>dup</name><devices>"
        b"<interface type='user'><model type='virtio'/>"
        b"<driver txmode='iothread'/><driver txmode='timer'/></interface>"
        b"</devices></domain>"
    )
    (nic,) = parse_domain(data, "dup.xml").nics
    assert nic.txmode == "iothread"


def test_interfaces_outside_devices_are_not_nics() -> None:
    data = (
        b"<domain type='qemu'><name>odd</name>"
        b"<interface type='user'><model type='virtio'/><driver txmode='timer'/></interface>"
        b"<devices><interface type='user'><interface type='user'/></interface></devices>"
        b"<metadata><devices><interface type='user'/></devices></metadata></domain>"
    )
    domain = parse_domain(data, "odd.xml")
    assert [(n.index, n.type, n.txmode) for n in domain.nics] == [(0, "user", None)]


def test_shell_metacharacters_are_only_data() -> None:
    data = (
        b"<domain type='qemu'><name>$(reboot);`id`|&amp;</name><devices>"
        b"<interface type='user'><mac address='$(touch /tmp/x)'/><model type='virtio'/>"
        b"<driver txmode='timer; rm -rf /'/></interface></devices></domain>"
    )
    domain = parse_domain(data, "meta.xml")
    assert domain.name == "$(reboot);`id`|&"
    assert domain.nics[0].mac == "$(touch /tmp/x)"
    assert domain.nics[0].txmode == "timer; rm -rf /"
