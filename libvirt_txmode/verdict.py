"""The hook's verdict cache: the same domain XML, policy, snapshot and emulators, the same answer.

libvirt hands ``prepare begin`` the live domain XML, and between two starts of an unchanged domain
it differs only in the root element's ``id='N'`` (seen with libvirt 9.0: three starts, one-line
diffs). So a decision is stored under the SHA-256 of the XML without that attribute, together with
the identity of everything it was derived from: the policy file (path, device, inode, size, mtime,
ctime, owner and mode), the snapshot file, each emulator binary (realpath, device, inode, size,
ctime, mtime: the probe cache's key) and this tool's version. A later start with the same XML
replays the decision (exit code, stderr lines, syslog lines) if every one of those identities is
still the same; anything else is a miss and the full check runs.

This module is the hook's hot path: it imports nothing beyond os, stat, json and a SHA-256, and in
particular neither lxml nor YAML. Entries are JSON files (0600, in a 0700 directory: they name
domains, MACs and decisions), trusted only from a directory whose whole path passes
``files.path_trust_problem`` and a file owned by us (or root) and not writable by group or others,
opened without following symlinks and without blocking. An entry larger than ``MAX_ENTRY_BYTES``
is not stored at all, since it could not be read back. Decisions that
rest on something transient (support unknown because a probe failed) are never stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import Any, NamedTuple, Optional

from . import __version__, files

FORMAT = "libvirt-txmode-verdict"
FORMAT_VERSION = 1
PREFIX = "verdict-"
MAX_ENTRY_BYTES = 1024 * 1024
# Distinct domain definitions a host keeps verdicts for; beyond it the oldest are dropped on write.
MAX_ENTRIES = 1024


class Verdict(NamedTuple):
    code: int
    stderr: tuple[str, ...]
    syslog: tuple[tuple[int, str], ...]


def _sha256(data: bytes) -> str:
    import hashlib  # noqa: PLC0415 - only once stdin has been read

    return hashlib.sha256(data).hexdigest()


def normalized(xml: bytes) -> bytes:
    """The XML without the root ``<domain>``'s run-time ``id`` attribute (new on every start)."""
    start = xml.find(b"<domain")
    end = xml.find(b">", start)
    if start < 0 or end < 0:
        return xml
    head = xml[start:end]
    for quote in (b"'", b'"'):
        at = head.find(b" id=" + quote)
        if at >= 0:
            close = head.find(quote, at + 5)
            if close > at + 5 and head[at + 5 : close].isdigit():
                head = head[:at] + head[close + 1 :]
                return xml[:start] + head + xml[end:]
    return xml


def file_key(path: str) -> str:
    """Identity of the policy or snapshot file, or 'absent'."""
    try:
        info = os.stat(path)
    except OSError:
        return "absent"
    # Owner and mode too: the policy is trusted only while root-owned and not writable by others.
    return f"{files.file_key(info)}:{info.st_uid}:{info.st_mode:o}"


def emulator_key(path: str) -> Optional[str]:
    """The probe cache's identity of a binary (``qemu.EmulatorIdentity.key``), None if unusable.

    Computed here rather than with qemu.identify, which would import the prober on the hot path.
    chmod and chown, which decide whether a binary is trusted, bump its ctime: they change it too.
    """
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return files.binary_key(
        real,
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        ctime_ns=info.st_ctime_ns,
        mtime_ns=info.st_mtime_ns,
        targets=files.script_targets(real),
    )


def entry_path(cache_dir: str, xml_digest: str) -> str:
    return os.path.join(cache_dir, f"{PREFIX}{xml_digest[:40]}.json")


def _context(policy: str, snapshot: str) -> dict[str, str]:
    return {
        "tool": __version__,
        "policy_path": policy,
        "policy": file_key(policy),
        "snapshot_path": snapshot,
        "snapshot": file_key(snapshot) if snapshot else "absent",
        "euid": str(os.geteuid()),
    }


class Key(NamedTuple):
    """What a decision is stored under: the XML's digest, and the files it was derived from."""

    digest: str
    context: dict[str, str]


def key(xml: bytes, policy: str, snapshot: str) -> Key:
    """Taken once, before the check runs: ``store`` compares it with the files afterwards, so a
    policy or snapshot edited meanwhile makes the entry stale instead of wrong."""
    return Key(_sha256(normalized(xml)), _context(policy, snapshot))


def lookup(cache_dir: str, entry_key: Key) -> Optional[Verdict]:
    """The stored decision for this exact input, or None (a miss is always safe)."""
    digest = entry_key.digest
    try:
        if files.private_dir_problem(cache_dir, create=False) is not None:
            return None
        # Non-blocking, no symlink, regular files only: a FIFO here must not hang the hook.
        raw, meta = files.read_regular(entry_path(cache_dir, digest), MAX_ENTRY_BYTES)
        if not files.trusted(meta) or len(raw) > MAX_ENTRY_BYTES:
            return None
        entry = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    return _verdict(entry, digest, entry_key.context)


def _verdict(entry: Any, digest: str, context: dict[str, str]) -> Optional[Verdict]:
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    if entry.get("version") != FORMAT_VERSION or entry.get("xml") != digest:
        return None
    if entry.get("context") != context:
        return None
    emulators = entry.get("emulators")  # empty when no NIC needed the emulator's support
    if not isinstance(emulators, dict):
        return None
    for path, key in emulators.items():
        if not isinstance(path, str) or emulator_key(path) != key:
            return None
    code, stderr, logged = entry.get("code"), entry.get("stderr"), entry.get("syslog")
    if code not in (0, 1) or not isinstance(stderr, list) or not isinstance(logged, list):
        return None
    if not all(isinstance(line, str) for line in stderr):
        return None
    lines: list[tuple[int, str]] = []
    for item in logged:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], int)
            and isinstance(item[1], str)
        ):
            return None
        lines.append((item[0], item[1]))
    return Verdict(code, tuple(stderr), tuple(lines))


def store(
    cache_dir: str,
    entry_key: Key,
    verdict: Verdict,
    *,
    policy: str,
    snapshot: str,
    emulators: dict[str, str],
) -> None:
    """Record a decision unless a file it rests on changed since ``entry_key`` was taken.
    ``emulators`` maps each binary consulted to its key from before the check. Failures are
    ignored: the cache only saves time."""
    if entry_key.context != _context(policy, snapshot):
        return
    if any(emulator_key(path) != key for path, key in emulators.items()):
        return
    from .cache import write_atomic  # noqa: PLC0415 - only on a miss

    digest = entry_key.digest
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "xml": digest,
        "context": entry_key.context,
        "emulators": emulators,
        "code": verdict.code,
        "stderr": list(verdict.stderr),
        "syslog": [list(item) for item in verdict.syslog],
    }
    encoded = json.dumps(document).encode()
    if len(encoded) > MAX_ENTRY_BYTES:
        # lookup() would refuse to read it back (a refusal of 5,000 NICs is ~2 MB of messages):
        # such a domain is checked in full at every start rather than cached unreadably.
        return
    try:
        if files.private_dir_problem(cache_dir, create=True) is not None:
            return
        _prune(cache_dir)
        write_atomic(entry_path(cache_dir, digest), encoded, mode=0o600)
    except OSError:
        return


def _prune(cache_dir: str) -> None:
    """Keep the number of entries bounded: every edited definition leaves an old one behind."""
    entries = [e for e in os.scandir(cache_dir) if e.name.startswith(PREFIX)]
    if len(entries) < MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
    for old in entries[: len(entries) - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):
            os.unlink(old.path)
