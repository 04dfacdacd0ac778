"""The hook's cached path: a verdict stored for this exact input is replayed at interpreter speed.

hooks/qemu runs ``python -I -S PACKAGE/hookstart.py`` for ``prepare begin``: no ``site`` (the
cached path needs nothing outside the standard library and this package, whose directory
hookstart.py puts on ``sys.path``), no runpy (``-m``), and from here on nothing beyond os and
stat, CPython's ``_sha256`` (hashlib's own C implementation) and four small modules of ours
(files, logsink, text, paths). No typing, json, hashlib, dataclasses, re: each of them costs more
than everything this module does on a hit.

The decision is the full check's (hook.py), and so are the trust checks in front of it: as root,
the policy's and the snapshot's whole paths must pass ``files.path_trust_problem``; the cache
directory must pass ``files.private_dir_problem`` and the entry must be a regular file owned by
us or root, not writable by others, opened without following links or blocking; every identity
the decision rests on (tool version, policy and snapshot files, euid, each emulator) must be
unchanged. Anything else, anything unusual, and any exception while looking is a miss:
hookstart.py sets ``site`` up as a normal start would, and hook.py runs the full check on the
input already read, with its own fail-closed handling (which also answers an exception while
replaying). So the fast path can only ever answer what the full check answered before.

Entries are a format of our own, parsed without json: a header line, then length-prefixed UTF-8
strings (``<decimal length>:<bytes>\\n``), so any text survives and a truncated or edited entry
fails to parse instead of being misread.
"""

from __future__ import annotations

import os
import stat

from . import __version__, files

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Optional, Union

    # (code, stderr lines, log records (priority, message, journald fields))
    Replay = tuple[int, tuple[str, ...], tuple[tuple[int, str, dict[str, str]], ...]]
    Key = tuple[str, dict[str, str]]  # (digest of the normalized XML, identities of the inputs)
    # Work left for hook.resume: ("main", argv), ("finish", domain name, (policy, snapshot,
    # cache_dir), data, read error, key) or ("error", domain name, exception).
    Handover = tuple[Any, ...]

HEADER = b"libvirt-txmode-verdict 2\n"
PREFIX = "verdict-"
SUFFIX = ".txt"
MAX_ENTRY_BYTES = 1024 * 1024
_WRAPPER_FLAGS = ("--policy", "--snapshot", "--cache-dir", "--")


def _sha256_hex(data: bytes) -> str:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - builtin
    except ImportError:  # 3.12 renamed it (_sha2): hashlib then, at its price
        from hashlib import sha256  # noqa: PLC0415
    return sha256(data).hexdigest()


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
    return files.stat_key(real, info, files.script_targets(real))


ABSENT = "absent"


def dependency_key(path: str) -> str:
    """The identity a verdict records for a file it rests on (an emulator, a libvirt network
    definition): ``emulator_key``, or 'absent' — a file that appears later changes it too."""
    return emulator_key(path) or ABSENT


def context(policy: str, snapshot: str) -> dict[str, str]:
    return {
        "tool": __version__,
        "policy_path": policy,
        "policy": file_key(policy),
        "snapshot_path": snapshot,
        "snapshot": file_key(snapshot) if snapshot else "absent",
        "euid": str(os.geteuid()),
    }


def key(xml: bytes, policy: str, snapshot: str) -> Key:
    """Taken once, before the check runs: a store compares it with the files afterwards, so a
    policy or snapshot edited meanwhile makes the entry stale instead of wrong."""
    return _sha256_hex(normalized(xml)), context(policy, snapshot)


def entry_path(cache_dir: str, xml_digest: str) -> str:
    return os.path.join(cache_dir, f"{PREFIX}{xml_digest[:40]}{SUFFIX}")


def inputs_trusted(policy: str, snapshot: str) -> bool:
    """As root, a verdict is replayed only while the policy's and snapshot's whole paths are
    still trusted (files.path_trust_problem): otherwise the full check runs and says why."""
    if os.geteuid() != 0:
        return True
    if files.path_trust_problem(policy) is not None:
        return False
    return not (snapshot and os.path.lexists(snapshot) and files.path_trust_problem(snapshot))


def cached(
    data: Optional[bytes], policy: str, snapshot: str, cache_dir: Optional[str]
) -> tuple[Optional[Replay], Optional[Key]]:
    """The stored decision for this input (None: run the full check) and the key a fresh one is
    stored under (None: it may not be stored)."""
    if data is None or not cache_dir or not inputs_trusted(policy, snapshot):
        return None, None
    entry_key = key(data, policy, snapshot)
    return lookup(cache_dir, entry_key), entry_key


def lookup(cache_dir: str, entry_key: Key) -> Optional[Replay]:
    """The stored decision for this exact input, or None (a miss is always safe)."""
    digest, expected = entry_key
    try:
        if files.private_dir_problem(cache_dir, create=False) is not None:
            return None
        # Non-blocking, no symlink, regular files only: a FIFO here must not hang the hook.
        raw, meta = files.read_regular(entry_path(cache_dir, digest), MAX_ENTRY_BYTES)
    except OSError:
        return None
    if not files.trusted(meta) or len(raw) > MAX_ENTRY_BYTES:
        return None
    entry = decode(raw)
    if entry is None:
        return None
    stored_digest, stored_context, emulators, replay = entry
    if stored_digest != digest or stored_context != expected:
        return None
    for path, identity in emulators.items():
        if dependency_key(path) != identity:
            return None
    return replay


# --- the entry format --------------------------------------------------------------------------


def encode(
    digest: str,
    identities: dict[str, str],
    emulators: dict[str, str],
    replay: Replay,
) -> bytes:
    code, stderr, records = replay
    items: list[str] = [digest, str(len(identities))]
    for name, value in identities.items():
        items += [name, value]
    items.append(str(len(emulators)))
    for path, identity in emulators.items():
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


def decode(raw: bytes) -> Optional[tuple[str, dict[str, str], dict[str, str], Replay]]:
    """(digest, identities, emulators, replay) of an entry, or None if it is not a whole one."""
    items = _strings(raw)
    if items is None:
        return None
    try:
        it = iter(items)

        def mapping() -> dict[str, str]:
            return {next(it): next(it) for _ in range(_count(next(it)))}

        digest = next(it)
        identities, emulators = mapping(), mapping()
        code = next(it)
        if code not in ("0", "1"):
            return None
        # Lists, not generators: in a generator the end of the items becomes a RuntimeError.
        stderr = tuple([next(it) for _ in range(_count(next(it)))])
        records = tuple(
            [(_priority(next(it)), next(it), mapping()) for _ in range(_count(next(it)))]
        )
    except (StopIteration, ValueError):
        return None
    if next(it, None) is not None:
        return None
    return digest, identities, emulators, (int(code), stderr, records)


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 7:
        raise ValueError(text)
    return int(text)


def _priority(text: str) -> int:
    value = _count(text)
    if value > 7:  # syslog priorities are 0..7
        raise ValueError(text)
    return value


# --- the hook's entry point --------------------------------------------------------------------


def replay(outcome: Replay, err: IO[str]) -> int:
    """What the full check did when it decided: log each record, write stderr, exit code."""
    from . import logsink  # noqa: PLC0415 - after the lookup: a miss must not pay for it
    from .text import printable  # noqa: PLC0415

    code, stderr, records = outcome
    for priority, message, fields in records:
        logsink.log(priority, printable(message), fields)
    for line in stderr:
        err.write(line + "\n")
    return code


def main(argv: list[str], stream: IO[bytes], err: IO[str]) -> Union[int, Handover]:
    """hookstart.py's entry: the exit code, or what is left for hook.resume (the full check, an
    unusual command line: hook.main decides as it always did)."""
    values = argv[1:6:2]
    if (
        len(argv) < 7
        or any(argv[i] != flag for i, flag in zip((0, 2, 4, 6), _WRAPPER_FLAGS))
        or any(not value or value.startswith("-") for value in values)
    ):
        return ("main", argv)
    event = argv[7:]
    if len(event) < 3 or (event[1], event[2]) != ("prepare", "begin"):
        return 0
    return prepare(event[0], (values[0], values[1], values[2]), stream, err)


def prepare(
    domain_name: str, options: tuple[str, str, Optional[str]], stream: IO[bytes], err: IO[str]
) -> Union[int, Handover]:
    """``prepare begin``: read the XML and replay the verdict cached for it; else hand the input
    over to the full check. ``options`` are hook.Options: (policy, snapshot, cache_dir)."""
    # Read before anything else: a verdict cached for this exact XML answers without lxml or YAML.
    data: Optional[bytes] = None
    read_error: Optional[str] = None
    try:
        data = files.read_stream_bounded(stream, files.MAX_XML_BYTES)
        if data is None:
            read_error = files.TOO_LARGE
    except OSError as exc:
        read_error = str(exc.strerror)
    except Exception as exc:  # hook.internal_error: fail closed, no traceback
        return ("error", domain_name, exc)
    policy, snapshot, cache_dir = options
    try:
        hit, entry_key = cached(data, policy, snapshot, cache_dir)
    except Exception:  # nothing unusual is answered here: the full check decides
        hit, entry_key = None, None
    if hit is None:
        return ("finish", domain_name, options, data, read_error, entry_key)
    try:
        return replay(hit, err)
    except Exception as exc:  # hook.internal_error: fail closed
        return ("error", domain_name, exc)
