"""Verdicts the installed hook replays in sh, without starting Python (hooks/qemu, ``replay``).

A cached verdict replayed by hookfast.py still pays for the interpreter: ~19 ms here, 4 % of a
domain's start inside libvirt. For the inputs it can vouch for, the full check therefore also
writes the decision as a small file of sh assignments, ``CACHE/shell/<sha256 of the XML>``, that
the hook's own sh reads with two ``stat`` calls and ``sha256sum`` (~5 ms in all).

The sh side makes the same decision under the same trust rules as hookfast.py, or none:

* the key is the SHA-256 of the XML without the root's ``id='N'`` (``normalized``: the same rule
  as hookfast's, spelt so that sh parameter expansion can apply it to the first line);
* every directory on the way to the policy, the snapshot, the entry and the log file must be
  root's and writable by nobody else (``files.path_trust_problem`` for root, stricter: no
  symlinks at all), the entry root's 0600 file in root's 0700 ``shell`` directory;
* every file the decision rests on must be as it was (``stat``: mode, owner, group, links,
  device, inode, size, mtime and ctime to the nanosecond): the policy, the snapshot (or its
  absence), this package's ``__init__.py`` (an upgrade replaces it), each emulator and each
  libvirt network file (or its absence);
* the log records go where ``logsink.log`` would send them, in the same words and fields.

Anything else — no entry, any difference, a sink it cannot use safely — and the sh hands the XML
to Python, which decides as before. Entries are written only as root, only for regular files
reached without symlinks, never for an emulator that is a wrapper script (its identity lives in
the binaries it execs, which sh cannot follow), and never for an unusual record (multi-line text).
"""

from __future__ import annotations

import contextlib
import os
import stat

from . import files, hookfast, logsink
from .text import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Optional

    # (priority, message, journald fields), as verdict.store has them
    Record = tuple[int, str, dict[str, str]]

DIRECTORY = "shell"
FORMAT = "1"
# What hooks/qemu asks stat for: ``%f %u %g %h %d %i %s %.9Y %.9Z %n`` (GNU coreutils).
_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
MAX_ENTRIES = 1024


def normalized(xml: bytes) -> bytes:
    """The XML as hooks/qemu hashes it: on the first line, if it opens ``<domain `` and the
    first `` id='`` comes before any ``>`` and holds digits up to a closing quote, without
    that attribute. (Mirrors the sh expansion exactly; tests run both on the same inputs.)"""
    newline = xml.find(b"\n")
    first = xml if newline < 0 else xml[:newline]
    rest = xml[len(first) :]
    # sh's pattern "<domain "*" id='"* wants the attribute after the element name's space...
    if not first.startswith(b"<domain ") or first.find(b" id='", 8) < 0:
        return xml
    at = first.find(b" id='")  # ...and ${first%%" id='"*} then cuts at the first one
    pre, after = first[:at], first[at + 5 :]
    quote = after.find(b"'")
    number = after[:quote]
    if b">" in pre or quote <= 0 or not all(0x30 <= byte <= 0x39 for byte in number):
        return xml
    return pre + after[quote + 1 :] + rest


def digest(xml: bytes) -> str:
    # hooks/qemu hashes a here-document, which ends in a newline of its own.
    return hookfast._sha256_hex(normalized(xml) + b"\n")


def stat_line(path: str) -> Optional[str]:
    """``stat -c '%f %u %g %h %d %i %s %.9Y %.9Z %n' PATH`` (no symlinks followed), or None
    for a path that does not exist (stat then prints nothing)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (
        f"{info.st_mode:x} {info.st_uid} {info.st_gid} {info.st_nlink} {info.st_dev} "
        f"{info.st_ino} {info.st_size} {_stamp(info.st_mtime_ns)} {_stamp(info.st_ctime_ns)} "
        f"{path}"
    )


def _stamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _plain(path: str) -> bool:
    """Absolute, no blanks or control characters (hooks/qemu splits the list on blanks),
    reached without a symlink, and a regular file if it exists."""
    if not path.startswith("/") or path != os.path.normpath(path):
        return False
    if any(char.isspace() or not char.isprintable() for char in path):
        return False
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != parent:
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def entry_text(
    *,
    policy: str,
    snapshot: str,
    package: str,
    paths: Iterable[str],
    code: int,
    stderr: Iterable[str],
    records: Iterable[Record],
) -> Optional[str]:
    """The sh assignments hooks/qemu reads, or None if this decision cannot be replayed in sh."""
    paths = list(dict.fromkeys(paths))
    if code not in (0, 1) or not all(_plain(path) for path in paths):
        return None
    lines = [line for line in map(stat_line, paths) if line is not None]
    out = [
        "# " + " ".join(paths),  # read, not run, by hooks/qemu before it trusts the rest
        f"policy={_quote(policy)}",
        f"snapshot={_quote(snapshot)}",
        f"package={_quote(package)}",
        f"expect={_quote(chr(10).join(lines))}",
        f"code={code}",
        f"stderr={_quote(chr(10).join(stderr))}",
    ]
    count = 0
    for priority, message, fields in records:
        text = printable(message)
        clean = {key: printable(value) for key, value in fields.items() if key in logsink.FIELDS}
        journal = logsink.journal_fields(priority, text, clean)
        if not 0 <= priority < len(_LEVELS) or any("\n" in value for _, value in journal):
            return None
        count += 1
        out += [
            f"level{count}={_LEVELS[priority]}",
            f"message{count}={_quote(text)}",
            f"line{count}={_quote(logsink.file_record(priority, text, clean))}",
            f"fields{count}={_quote(chr(10).join(f'{k}={v}' for k, v in journal))}",
        ]
    out.append(f"records={count}")
    # Last: an entry cut short (written without fsync, then a crash) is no entry at all.
    out.append(f"format={FORMAT}")
    return "\n".join(out) + "\n"


def prepare(
    xml: bytes,
    *,
    policy: str,
    snapshot: str,
    dependencies: Mapping[str, str],
    code: int,
    stderr: Iterable[str],
    records: Iterable[Record],
) -> Optional[tuple[str, bytes]]:
    """(digest, entry) for a decision just made, or None. Called before ``verdict.store``
    confirms that nothing changed during the check: what changes after this call makes the
    entry stale, never wrong."""
    if os.geteuid() != 0:
        return None  # only root's entries are believed by the sh side
    for path, identity in dependencies.items():
        # A script's identity includes the binaries it names (files.script_targets), which sh
        # cannot follow: any "#!" file, whatever it names.
        if identity != hookfast.ABSENT and files.script_head(path, 2) is not None:
            return None
    package = os.path.dirname(os.path.abspath(__file__))
    paths = [policy, snapshot, os.path.join(package, "__init__.py"), *dependencies]
    text = entry_text(
        policy=policy,
        snapshot=snapshot,
        package=package,
        paths=paths,
        code=code,
        stderr=stderr,
        records=records,
    )
    if text is None:
        return None
    return digest(xml), text.encode("utf-8", "replace")


def store(cache_dir: str, prepared: tuple[str, bytes]) -> None:
    """Write an entry from ``prepare``; failures are ignored (the cache only saves time)."""
    key, data = prepared
    directory = os.path.join(cache_dir, DIRECTORY)
    try:
        if files.private_dir_problem(directory, create=True) is not None:
            return
        os.chmod(directory, 0o700)
        _prune(directory)
        # No fsync (~1.5 ms of a miss): after a crash an entry is whole, missing or cut short,
        # and one cut short lacks its last line, format=1, so hooks/qemu does not use it.
        files.write_atomic(os.path.join(directory, key), data, mode=0o600, sync=False)
    except OSError:
        return


def is_entry(name: str) -> bool:
    """An entry's file name: the SHA-256 hooks/qemu looks up (temporaries are ``.tmp-*``)."""
    return len(name) == 64 and all(char in "0123456789abcdef" for char in name)


def entries(directory: str) -> list[os.DirEntry[str]]:
    """The entries in ``CACHE/shell`` (for pruning, and for doctor to count)."""
    try:
        return [entry for entry in os.scandir(directory) if is_entry(entry.name)]
    except OSError:
        return []


def _prune(directory: str) -> None:
    found = entries(directory)
    if len(found) < MAX_ENTRIES:
        return
    found.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
    for old in found[: len(found) - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):
            os.unlink(old.path)
