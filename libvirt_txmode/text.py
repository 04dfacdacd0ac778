"""Escaping untrusted text for terminals, syslog and libvirt's error messages.

A module of its own because the hook's hot path needs it without the finding records.
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


def glob_match(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase(name, pattern)``, answered without a regular expression for the
    patterns policies use (``*`` only): fnmatch compiles one per pattern, ~1 ms each on a slow
    host, three of them on every hook miss. ``*`` matches any run of characters, ``/`` included,
    as fnmatch's does; a pattern with ``?`` or ``[`` goes to fnmatch itself."""
    if "?" in pattern or "[" in pattern:
        import fnmatch  # noqa: PLC0415 - the rare patterns only

        return fnmatch.fnmatchcase(name, pattern)
    first, *middle_and_last = pattern.split("*")
    if not middle_and_last:
        return name == pattern
    *middle, last = middle_and_last
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    position = len(first)
    for part in middle:  # leftmost fit of each piece between the fixed ends
        found = name.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
