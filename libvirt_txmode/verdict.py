"""The hook's verdict cache: the same domain XML, policy, snapshot and emulators, the same answer.

libvirt hands ``prepare begin`` the live domain XML, and between two starts of an unchanged domain
it differs only in the root element's ``id='N'`` (seen with libvirt 9.0: three starts, one-line
diffs). So a decision is stored under the SHA-256 of the XML without that attribute, together with
the identity of everything it was derived from: the policy file (path, device, inode, size, mtime,
ctime, owner and mode), the snapshot file, each emulator binary (realpath, device, inode, size,
ctime, mtime: the probe cache's key) and this tool's version. A later start with the same XML
replays the decision (exit code, stderr lines, syslog lines) if every one of those identities is
still the same; anything else is a miss and the full check runs.

The hot path (key, lookup, the entry format) lives in hookfast.py, which the installed hook runs
without json, typing or hashlib; this module adds the writer and the ``Verdict`` record. Entries
are 0600 files in a 0700 directory (they name domains, MACs and decisions), trusted only from a
directory whose whole path passes ``files.path_trust_problem`` and a file owned by us (or root)
and not writable by group or others, opened without following symlinks and without blocking. An
entry larger than ``MAX_ENTRY_BYTES`` is not stored at all, since it could not be read back.
Decisions that rest on something transient (support unknown because a probe failed) are never
stored.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple, Optional

from . import files, hookfast, logsink, shellverdict
from .hookfast import MAX_ENTRY_BYTES, PREFIX, emulator_key, file_key, normalized

__all__ = ["MAX_ENTRY_BYTES", "emulator_key", "file_key", "normalized"]

# Distinct domain definitions a host keeps verdicts for; beyond it the oldest are dropped on write.
MAX_ENTRIES = 1024


class Verdict(NamedTuple):
    code: int
    stderr: tuple[str, ...]
    syslog: tuple[tuple[int, str], ...]  # (priority, logsink.encode text)


def entry_path(cache_dir: str, xml_digest: str) -> str:
    return hookfast.entry_path(cache_dir, xml_digest)


class Key(NamedTuple):
    """What a decision is stored under: the XML's digest, and the files it was derived from."""

    digest: str
    context: dict[str, str]


def key(xml: bytes, policy: str, snapshot: str) -> Key:
    """Taken once, before the check runs: ``store`` compares it with the files afterwards, so a
    policy or snapshot edited meanwhile makes the entry stale instead of wrong."""
    return Key(*hookfast.key(xml, policy, snapshot))


def lookup(cache_dir: str, entry_key: Key) -> Optional[Verdict]:
    """The stored decision for this exact input, or None (a miss is always safe)."""
    found = hookfast.lookup(cache_dir, entry_key)
    if found is None:
        return None
    code, stderr, records = found
    logged = tuple(
        (
            priority,
            logsink.encode(message, **{name.lower(): value for name, value in fields.items()}),
        )
        for priority, message, fields in records
    )
    return Verdict(code, stderr, logged)


def store(
    cache_dir: str,
    entry_key: Key,
    verdict: Verdict,
    *,
    policy: str,
    snapshot: str,
    emulators: dict[str, str],
    xml: Optional[bytes] = None,
) -> None:
    """Record a decision unless a file it rests on changed since ``entry_key`` was taken.
    ``emulators`` maps each binary consulted to its key from before the check. With the ``xml``
    it was made for, the decision is also written for hooks/qemu to replay in sh
    (shellverdict.py). Failures are ignored: the cache only saves time."""
    # The journald fields are taken out of each log entry here, once, so that a replay needs
    # no json (hookfast.replay logs them as logsink.emit would).
    records = tuple((priority, *logsink.decode(entry)) for priority, entry in verdict.syslog)
    # The sh entry's file identities are taken first: the checks below then prove that they are
    # the identities the decision was made with.
    shell = None
    if xml is not None:
        shell = shellverdict.prepare(
            xml,
            policy=policy,
            snapshot=snapshot,
            dependencies=emulators,
            code=verdict.code,
            stderr=verdict.stderr,
            records=records,
        )
    if entry_key.context != hookfast.context(policy, snapshot):
        return
    if any(hookfast.dependency_key(path) != identity for path, identity in emulators.items()):
        return
    encoded = hookfast.encode(
        entry_key.digest, entry_key.context, emulators, (verdict.code, verdict.stderr, records)
    )
    if len(encoded) > MAX_ENTRY_BYTES:
        # lookup() would refuse to read it back (a refusal of 5,000 NICs is ~2 MB of messages):
        # such a domain is checked in full at every start rather than cached unreadably.
        return
    try:
        if files.private_dir_problem(cache_dir, create=True) is not None:
            return
        _prune(cache_dir)
        # No fsync (~1.5 ms of a miss): an entry cut short by a crash fails to decode (its
        # strings are length-prefixed) and the next start checks in full.
        files.write_atomic(entry_path(cache_dir, entry_key.digest), encoded, mode=0o600, sync=False)
    except OSError:
        return
    if shell is not None:
        shellverdict.store(cache_dir, shell)


def _prune(cache_dir: str) -> None:
    """Keep the number of entries bounded: every edited definition leaves an old one behind."""
    entries = [e for e in os.scandir(cache_dir) if e.name.startswith(PREFIX)]
    if len(entries) < MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
    for old in entries[: len(entries) - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):
            os.unlink(old.path)
