"""printable(): untrusted names must not forge lines or hide characters in terminals and logs."""

from __future__ import annotations

import pytest

from libvirt_txmode.findings import printable


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
