"""printable(): untrusted names must not forge lines or hide characters in terminals and logs;
Finding is a value."""

from __future__ import annotations

import dataclasses

import pytest

from libvirt_txmode.engine.model import Finding, Level
from libvirt_txmode.engine.wording import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("vm-01 ünïcode", "vm-01 ünïcode"),
        ("a\nb", "a\\x0ab"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("\r\x00", "\\x0d\\x00"),
    ],
)
def test_printable_escapes_with_fixed_width(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert "\n" not in printable(raw)


def test_a_finding_is_a_value() -> None:
    # Not frozen (validate-domain makes one per finding: model.Finding says why), but equal and
    # hashable by its fields, as a frozen record would be.
    one = Finding(
        "a.xml", 3, "vm", "txmode-missing", Level.ERROR, "no txmode", 0, "52:54:00:00:00:01"
    )
    same = dataclasses.replace(one)
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    assert dataclasses.replace(one, line=4) not in {one}
