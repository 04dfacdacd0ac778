"""Escaping untrusted text for terminals, syslog and libvirt's error messages.

A module of its own because the hook's cached path needs it without the finding records.
"""

from __future__ import annotations


def printable(value: str) -> str:
    """Escape control characters: names and messages come from untrusted XML and end up in
    terminals, syslog lines and libvirt error strings, where a newline could forge a line."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else _escape(ord(c)) for c in value)


def _escape(code: int) -> str:
    # Python's own escapes, so every escape has one fixed width and reads back unambiguously.
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
