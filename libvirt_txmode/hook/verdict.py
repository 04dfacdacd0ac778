"""The hook's verdict cache: the same domain XML on the same host, the same answer.

libvirt hands ``prepare begin`` the live domain XML, and between two starts of an unchanged domain
it differs only in the root element's ``id='N'`` (seen with libvirt 9.0: three starts, one-line
diffs). So a decision is stored under the SHA-256 of the XML without that attribute (the one
normalisation, ``normalized``), with everything else it was derived from: this tool's version, the
policy and snapshot files (identity, owner, mode), the euid, the host facts the engine reads
(``host_facts``) and every file the check consulted (emulators, libvirt network files: their
identity, or 'absent'). A later start replays the decision (log records, stderr lines, exit code)
only while every one of them is unchanged; anything else is a miss and the full check runs.

This module is the hook's cached path and is imported by ``python -I -S``: nothing beyond os,
hashlib and the package's standard-library modules, no json, typing or dataclasses (importing any
of them costs more than answering from the cache). Hence the entry format: a header line, then
length-prefixed UTF-8 strings (``<decimal length>:<bytes>\\n``), so any text survives and a
truncated or edited entry fails to parse instead of being misread.

Entries are 0600 files in a 0700 directory (they name domains, MACs and decisions); they, the
directory and the policy's and snapshot's whole paths are believed only under the one trust rule
(``files.path_trust_problem``). Decisions that rest on something transient (a failed probe) are
never stored (the caller passes no dependencies).
"""

from __future__ import annotations

import os
import stat

from .. import __version__
from ..common import files, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import IO, Optional

    from .gate import Decision

    # (exit code, stderr lines, log records (priority, message, journald fields))
    _Entry = tuple[int, Sequence[str], Sequence[tuple[int, str, Mapping[str, str]]]]

HEADER = b"libvirt-txmode-verdict 4\n"
PREFIX = "verdict-"
SUFFIX = ".txt"
MAX_ENTRY_BYTES = 1024 * 1024
# Distinct domain definitions a host keeps verdicts for; beyond it the oldest are dropped on write.
MAX_ENTRIES = 1024
ABSENT = "absent"


class Key:
    """What a decision is stored under, taken before the check runs: ``store`` compares the
    context with the files afterwards, so an input edited meanwhile makes the entry stale, never
    wrong. A plain class: dataclasses costs the cached path more than its whole answer."""

    __slots__ = ("context", "digest")

    def __init__(self, digest: str, context: str) -> None:
        self.digest, self.context = digest, context

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and (self.digest, self.context) == (
            other.digest,
            other.context,
        )

    def __hash__(self) -> int:
        return hash((self.digest, self.context))

    def __repr__(self) -> str:
        return f"Key({self.digest!r}, {self.context!r})"


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
                return xml[:start] + head[:at] + head[close + 1 :] + xml[end:]
    return xml


def file_key(path: str) -> str:
    """Identity of the policy or snapshot file, or 'absent' (its ctime covers chmod and chown,
    which decide whether it is trusted)."""
    try:
        return files.file_key(os.stat(path))
    except OSError:
        return ABSENT


def emulator_key(path: str) -> Optional[str]:
    """The probe cache's identity of a binary (``qemu.EmulatorIdentity.key``), None if unusable.
    chmod and chown, which decide whether a binary is trusted, change its ctime, so the key."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return files.stat_key(real, info, files.script_targets(real))


def dependency_key(path: str) -> str:
    """The identity recorded for a file a decision rests on (an emulator, a libvirt network
    definition): ``emulator_key``, or 'absent', so that a file appearing later changes it too."""
    return emulator_key(path) or ABSENT


def host_facts() -> str:
    """What the engine reads from this host besides files (local.this_host): its name and arch,
    and whether /dev/vhost-net exists (without it libvirt gives QEMU its own backend, and the
    txmode takes effect)."""
    uname = os.uname()
    vhost = "yes" if os.path.exists(paths.VHOST_NET_DEVICE) else "no"
    return f"{uname.nodename} {uname.machine} vhost-net={vhost}"


def context(policy: str, snapshot: str) -> str:
    return "\n".join(
        (
            f"tool={__version__}",
            f"policy={policy}={file_key(policy)}",
            f"snapshot={snapshot}={file_key(snapshot) if snapshot else ABSENT}",
            f"euid={os.geteuid()}",
            f"host={host_facts()}",
        )
    )


def key(xml: bytes, policy: str, snapshot: str) -> Key:
    import hashlib  # noqa: PLC0415 - after the event filter: no other event pays for OpenSSL

    return Key(hashlib.sha256(normalized(xml)).hexdigest(), context(policy, snapshot))


def entry_path(cache_dir: str, xml_digest: str) -> str:
    return os.path.join(cache_dir, f"{PREFIX}{xml_digest[:40]}{SUFFIX}")


def inputs_trusted(policy: str, snapshot: str) -> bool:
    """As root, a verdict is replayed only while the policy's and snapshot's whole paths are
    still trusted: otherwise the full check runs and says why."""
    if os.geteuid() != 0:
        return True
    if files.path_trust_problem(policy) is not None:
        return False
    return not (snapshot and os.path.lexists(snapshot) and files.path_trust_problem(snapshot))


def answer(cache_dir: str, entry_key: Key, err: IO[str]) -> Optional[int]:
    """Replay the decision stored for this exact input: log its records, write its stderr lines,
    count it (tally.py) and return its exit code; None (having done nothing) when there is none
    to believe."""
    entry = _lookup(cache_dir, entry_key)
    if entry is None:
        return None
    from ..common import logsink  # noqa: PLC0415 - a miss must not pay for them
    from ..common.text import printable  # noqa: PLC0415
    from . import tally  # noqa: PLC0415

    code, stderr, records = entry
    for priority, message, fields in records:
        logsink.log(priority, printable(message), fields)
    for line in stderr:
        err.write(line + "\n")
    tally.count_decision(cache_dir, [fields for _, _, fields in records])
    return code


def _lookup(cache_dir: str, entry_key: Key) -> Optional[_Entry]:
    try:
        if files.private_dir_problem(cache_dir, create=False) is not None:
            return None
        raw = files.read_trusted(
            entry_path(cache_dir, entry_key.digest),
            MAX_ENTRY_BYTES,
            allowed_uids=files.owners(),
        )
    except OSError:
        return None
    decoded = decode(raw)
    if decoded is None:
        return None
    digest, stored_context, dependencies, entry = decoded
    if (digest, stored_context) != (entry_key.digest, entry_key.context):
        return None
    if any(dependency_key(path) != identity for path, identity in dependencies.items()):
        return None
    return entry


def store(
    cache_dir: str,
    entry_key: Key,
    decision: Decision,
    *,
    policy: str,
    snapshot: str,
    dependencies: Mapping[str, str],
) -> None:
    """Record a decision unless a file it rests on changed since ``entry_key`` was taken.
    ``dependencies`` maps each file consulted to its ``dependency_key`` from before the check.
    Failures are ignored: the cache only saves time."""
    if entry_key.context != context(policy, snapshot):
        return
    if any(dependency_key(path) != identity for path, identity in dependencies.items()):
        return
    records = [(record.priority, record.message, record.fields) for record in decision.logs]
    entry = (decision.code, list(decision.stderr), records)
    encoded = encode(entry_key.digest, entry_key.context, dependencies, entry)
    if len(encoded) > MAX_ENTRY_BYTES:
        # _lookup would refuse to read it back (a refusal of 5,000 NICs is ~2 MB of messages):
        # such a domain is checked in full at every start rather than cached unreadably.
        return
    try:
        if files.private_dir_problem(cache_dir, create=True) is not None:
            return
        _prune(cache_dir)
        # No fsync: an entry cut short by a crash fails to decode (its strings are
        # length-prefixed) and the next start checks in full.
        files.write_atomic(entry_path(cache_dir, entry_key.digest), encoded, mode=0o600, sync=False)
    except OSError:
        return


def _prune(cache_dir: str) -> None:
    """Keep the number of entries bounded: every edited definition leaves an old one behind."""
    import contextlib  # noqa: PLC0415 - writers only

    entries = [e for e in os.scandir(cache_dir) if e.name.startswith(PREFIX)]
    if len(entries) < MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
    for old in entries[: len(entries) - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):
            os.unlink(old.path)


def encode(digest: str, context: str, dependencies: Mapping[str, str], entry: _Entry) -> bytes:
    code, stderr, records = entry
    items = [digest, context, str(len(dependencies))]
    for path, identity in dependencies.items():
        items += [path, identity]
    items += [str(code), str(len(stderr)), *stderr, str(len(records))]
    for priority, message, fields in records:
        items += [str(priority), message, str(len(fields))]
        for name, value in fields.items():
            items += [name, value]
    out = [HEADER]
    for item in items:
        data = item.encode("utf-8", "surrogateescape")
        out += [str(len(data)).encode(), b":", data, b"\n"]
    return b"".join(out)


def decode(raw: bytes) -> Optional[tuple[str, str, dict[str, str], _Entry]]:
    """(digest, context, dependencies, (code, stderr, records)) of a whole entry, else None."""
    items = _strings(raw)
    if items is None:
        return None
    try:
        it = iter(items)

        def mapping() -> dict[str, str]:
            return {next(it): next(it) for _ in range(_count(next(it)))}

        digest, stored_context = next(it), next(it)
        dependencies = mapping()
        code = next(it)
        if code not in ("0", "1"):
            return None
        # Lists, not generators: in a generator the end of the items becomes a RuntimeError.
        stderr = [next(it) for _ in range(_count(next(it)))]
        records = [(_priority(next(it)), next(it), mapping()) for _ in range(_count(next(it)))]
    except (StopIteration, ValueError):
        return None
    if next(it, None) is not None:
        return None
    return digest, stored_context, dependencies, (int(code), stderr, records)


def _strings(raw: bytes) -> Optional[list[str]]:
    if not raw.startswith(HEADER):
        return None
    out: list[str] = []
    pos, size = len(HEADER), len(raw)
    while pos < size:
        colon = raw.find(b":", pos, pos + 21)
        length = raw[pos:colon]
        if colon < 0 or not length.isdigit():
            return None
        end = colon + 1 + int(length)
        if raw[end : end + 1] != b"\n":
            return None
        out.append(raw[colon + 1 : end].decode("utf-8", "surrogateescape"))
        pos = end + 1
    return out


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 7:
        raise ValueError(text)
    return int(text)


def _priority(text: str) -> int:
    value = _count(text)
    if value > 7:  # syslog priorities are 0..7
        raise ValueError(text)
    return value
