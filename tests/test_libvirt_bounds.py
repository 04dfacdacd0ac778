"""The parser's bounds are libvirt's own, as measured against libvirt 9.0 (Debian 12, libxml2
2.9.14; `virsh define`): one libvirt refuses is refused here too, and one libvirt defines and starts is
checked, although lxml's bundled libxml2 counts depth one level tighter."""

from __future__ import annotations

from pathlib import Path

import pytest

from libvirt_txmode.engine.domain_xml import BeyondBoundsError, parse_domain
from tests.hookrun import domain, make_hook, nic


def metadata_deep(levels: int) -> bytes:
    """A compliant domain whose <metadata> holds ``levels`` nested elements (``levels + 2``
    elements deep in all): libvirt 9.0 defines 255 and refuses 256 ("Excessive depth in
    document: 256 use XML_PARSE_HUGE option")."""
    deep = b"<x:a xmlns:x='urn:x'>" + b"<x:a>" * (levels - 1) + b"</x:a>" * levels
    base = domain("deep", nic("52:54:00:00:00:01", "iothread"))
    return base.replace(b"<devices>", b"<metadata>" + deep + b"</metadata><devices>", 1)


def test_256_levels_of_metadata_libvirt_refuses_are_refused() -> None:
    with pytest.raises(BeyondBoundsError, match="Excessive depth in document"):
        parse_domain(metadata_deep(256), "<stdin>")


def test_255_levels_of_metadata_libvirt_starts_are_checked(tmp_path: Path) -> None:
    assert parse_domain(metadata_deep(255), "<stdin>").name == "deep"
    result = make_hook(tmp_path).run("deep", "prepare", "begin", "-", stdin=metadata_deep(255))
    assert (result.returncode, result.stderr) == (0, "")
