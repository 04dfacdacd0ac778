"""Which files may be believed, how they are told apart, and how much of an input is read.

Shared by the probe cache, the compiled policy, the verdict cache, the snapshot, the emulator check
and the hook. Standard library only: the hook's hot path (a cached verdict) must not import lxml,
YAML or the engine.
"""

from __future__ import annotations

import errno
import os
import stat

# Annotations only: typing, collections.abc, re and tempfile cost the hook's cached path (run as
# `python -I -S`, see hookfast.py) several milliseconds; they are imported where they are used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import IO, Any, Optional

# How much domain XML is read. libvirt bounds no domain's total size: it parses domain XML with
# libxml2 and only XML_PARSE_NONET | XML_PARSE_NOWARNING (virXMLParseHelper, src/util/virxml.c),
# so its bounds are libxml2's defaults without XML_PARSE_HUGE, which lxml applies too
# (huge_tree=False): 256 levels of nesting and 10,000,000 bytes per text node. Each API call
# carries at most VIR_NET_MESSAGE_STRING_MAX = 4194304 bytes per string (src/rpc/
# virnetprotocol.x; above it: "Unable to encode message payload"), but calls add up: four
# setMetadata calls of 3 MB leave a 12 MB definition that starts, and libvirt hands all of it to
# the hook. So the total bound is ours, sized for memory: 64 MiB, sixteen such strings. The hook
# refuses an input beyond any of these bounds whatever on_error says.
MAX_XML_BYTES = 64 * 1024 * 1024
# Said of an input past MAX_XML_BYTES wherever it is refused (stdin, a file, a parsed string).
TOO_LARGE = f"input is larger than {MAX_XML_BYTES} bytes"
_UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH
_READ_STEP = 1 << 20
ROOT_ONLY = frozenset({0})
# The kernel's own bound on symlinks followed while resolving one path (MAXSYMLINKS, ELOOP).
_MAX_SYMLINKS = 40


def writable_by_others(info: os.stat_result) -> bool:
    return bool(info.st_mode & _UNSAFE_BITS)


def trusted(info: os.stat_result) -> bool:
    """A cache file or directory we may believe: written by us (or root) and nobody else."""
    return info.st_uid in (0, os.geteuid()) and not writable_by_others(info)


def owners(*, include_self: bool = True) -> frozenset[int]:
    """The uids whose files a process may believe: root, and itself when it is not root."""
    return frozenset({0, os.geteuid()}) if include_self else ROOT_ONLY


def _who(allowed_uids: Collection[int]) -> str:
    others = sorted(uid for uid in allowed_uids if uid != 0)
    return "root" + "".join(f" or uid {uid}" for uid in others)


def path_trust_problem(path: str, *, allowed_uids: Collection[int] = ROOT_ONLY) -> Optional[str]:  # noqa: C901, PLR0912 - one walk over the path, step by step like the kernel's: the trust rule reads in one place
    """Why ``path`` must not be believed, as one line, or None when it may be.

    The rule sudo and sshd (StrictModes) apply to what they read as root, applied to every step
    the kernel takes to resolve the path: ``/`` and each directory below it, every symlink met on
    the way (lstat: its owner, since anyone who owns a link can point it elsewhere; a link's own
    mode means nothing on Linux) and then the directories of its target, and finally the file (or
    directory) itself. Each must be owned by an allowed uid and not writable by group or others,
    because whoever can write a directory can rename a different file into it.

    One exception, decided here and documented in the README: a sticky directory (``/tmp``,
    ``/var/tmp``) owned by an allowed uid is accepted on the way to a *directory* below it, but
    never as the directory holding the file itself. In a sticky directory only the owner of an
    entry (or of the directory, or root) can rename or remove it, so a root-owned directory in
    ``/tmp`` cannot be replaced, and a squatter's entry fails the owner check (the reasoning of
    the kernel's ``protected_symlinks``). A *file* directly in ``/tmp`` stays refused: anyone may
    plant a hard link to another root-owned file under that name before it exists. sshd refuses
    even the first case; we accept it so that a root-owned 0700 directory in ``/tmp`` can hold a
    cache, and say so.

    Relative paths are taken from the current directory, and ``..`` steps up from the directory
    reached so far (as the kernel does after following a link).
    """
    if not path:
        return "empty path"
    allowed = frozenset(allowed_uids)
    if not path.startswith("/"):
        path = os.path.join(os.getcwd(), path)
    pending = [part for part in reversed(path.split("/")) if part]
    current = "/"
    problem = _node_problem(current, allowed, final=not pending)
    if problem is not None:
        return problem
    sticky_parent = False
    links = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            # Every directory above ``current`` was already checked on the way down.
            current = os.path.dirname(current)
            sticky_parent = False
            continue
        candidate = os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except OSError as exc:
            return f"{candidate}: {exc.strerror}"
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                return f"{path}: too many levels of symbolic links"
            if info.st_uid not in allowed:
                return f"symlink {candidate} is owned by uid {info.st_uid}, not {_who(allowed)}"
            try:
                target = os.readlink(candidate)
            except OSError as exc:
                return f"symlink {candidate}: {exc.strerror}"
            if target.startswith("/"):
                current, sticky_parent = "/", False
            pending.extend(part for part in reversed(target.split("/")) if part)
            continue
        final = not any(part not in (".",) for part in pending)
        if not stat.S_ISDIR(info.st_mode):
            if not final:
                return f"{candidate} is not a directory"
            if sticky_parent:
                return (
                    f"{current} is writable by others (sticky): a file directly in it could be "
                    "planted there by anyone"
                )
        problem = _check(candidate, info, allowed, final=final)
        if problem is not None:
            if stat.S_ISDIR(info.st_mode) and not final and _sticky_ok(info, allowed):
                sticky_parent = True
                current = candidate
                continue
            return problem
        sticky_parent = False
        current = candidate
    return None


def _node_problem(path: str, allowed: frozenset[int], *, final: bool) -> Optional[str]:
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return _check(path, info, allowed, final=final)


def _check(
    path: str, info: os.stat_result, allowed: frozenset[int], *, final: bool
) -> Optional[str]:
    kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
    if info.st_uid not in allowed:
        return f"{kind} {path} is owned by uid {info.st_uid}, not {_who(allowed)}"
    if writable_by_others(info):
        return (
            f"{kind} {path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
        )
    return None


def _sticky_ok(info: os.stat_result, allowed: frozenset[int]) -> bool:
    return bool(info.st_mode & stat.S_ISVTX) and info.st_uid in allowed


def open_regular(path: str, *, follow_symlinks: bool = False) -> int:
    """A read-only descriptor of ``path``, which must be a regular file; OSError otherwise.

    O_NONBLOCK: a FIFO put in place of the file would block open() until a writer comes (the hook,
    and with it ``virsh start``, forever); a device or socket is refused the same way, by fstat on
    the descriptor, so nothing is read from it. O_NOFOLLOW unless asked: a cache entry is never a
    link. The descriptor stays non-blocking, which changes nothing for a regular file.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(
    path: str, limit: int, *, follow_symlinks: bool = False
) -> tuple[bytes, os.stat_result]:
    """Up to ``limit + 1`` bytes of the regular file ``path`` (one more than the limit, so the
    caller can tell a file at the limit from a larger one) and its fstat; OSError otherwise."""
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        return handle.read(limit + 1), info


def private_dir_problem(path: str, *, create: bool) -> Optional[str]:
    """Why the cache directory ``path`` must not be used, or None once it is usable.

    Created 0700 (libvirt keeps domain XML 0600 in 0700 directories: verdicts and probe results
    name domains, MACs and decisions), trusted by ``path_trust_problem`` for root or ourselves (a
    root-owned symlink to another disk is fine), and tightened to 0700 when we own it and an
    older release left it 0755.
    """
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            return f"{path}: {exc.strerror}"
    problem = path_trust_problem(path, allowed_uids=owners())
    if problem is not None:
        return problem
    try:
        info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            return f"{path} is not a directory"
        if create and info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None


def read_stream_bounded(stream: IO[bytes], limit: int) -> Optional[bytes]:
    """All of ``stream`` if it holds at most ``limit`` bytes, else None once ``limit + 1`` bytes
    were read (nothing more is read). In 1 MiB steps: ``read(limit + 1)`` would reserve the whole
    bound (64 MiB) up front for every 2 KiB domain, and an input over the bound is dropped
    without the copy joining it would cost."""
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = stream.read(min(_READ_STEP, limit + 1 - total))
        if not chunk:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
    return None


def file_key(info: os.stat_result) -> str:
    """A file's identity: any edit or replacement changes it (mtime for content, ctime for
    renames onto it, chmod and chown)."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def binary_key(
    realpath: str,
    *,
    device: int,
    inode: int,
    size: int,
    ctime_ns: int,
    mtime_ns: int,
    targets: str = "",
) -> str:
    """An emulator's identity, as libvirt keys its capability cache: a binary replaced in place
    gets a new ctime. ``targets`` (``script_targets``) is appended for a wrapper script, whose own
    identity says nothing about the binary it execs. The probe cache and the verdict cache both
    use this one format."""
    key = f"{realpath}:{device}:{inode}:{size}:{ctime_ns}:{mtime_ns}"
    return f"{key}:{targets}" if targets else key


def stat_key(realpath: str, info: os.stat_result, targets: str = "") -> str:
    """``binary_key`` of a file from its ``os.stat`` result."""
    return binary_key(
        realpath,
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        ctime_ns=info.st_ctime_ns,
        mtime_ns=info.st_mtime_ns,
        targets=targets,
    )


def script_head(path: str, limit: int) -> Optional[bytes]:
    """The first ``limit`` bytes of a ``#!`` script, None for anything else (or unreadable).
    Opened non-blocking, regular files only: a domain names its emulator, and a FIFO there must
    not hang the hook."""
    try:
        fd = open_regular(path, follow_symlinks=True)
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        # Two bytes first: an 18 MB QEMU binary is told apart without reading 64 KiB of it (this
        # runs on the hook's cached path, once per emulator).
        head = handle.read(2)
        if head != b"#!":
            return None
        return head + handle.read(max(limit - 2, 0))


# A wrapper script is read only this far, and only this many of the paths it names are looked at.
_MAX_SCRIPT_BYTES = 64 * 1024
_MAX_NAMED_PATHS = 32
_SCRIPT_DEPTH = 3
_ABSOLUTE_PATH = rb"(?<![\w.~$/-])/(?:[\w.+-]+/)*[\w.+-]+"  # compiled (and cached) by re


def script_targets(
    path: str, *, _depth: int = _SCRIPT_DEPTH, _seen: Optional[set[str]] = None
) -> str:
    """For a script (``#!``), a digest of the identities of the executable files it names; ''
    for anything else.

    Debian's /usr/bin/qemu-system-i386 is a sh wrapper ending in ``exec "$exe" "$@"`` with
    ``exe=/usr/libexec/qemu-system-i386``: the wrapper stays byte for byte the same when QEMU is
    upgraded, so its own identity would let cached answers outlive the upgrade. The script is not
    interpreted (``exec`` targets are often variables): every absolute path in its first 64 KiB
    that is an executable regular file counts, its interpreter included, and a named script is
    followed the same way (three levels). Paths that do not exist, directories and data files
    (a log the wrapper appends to) do not count. Opened non-blocking, regular files only: a
    domain names its emulator, and a FIFO there must not hang the hook.
    """
    seen = {os.path.realpath(path)} if _seen is None else _seen
    head = script_head(path, _MAX_SCRIPT_BYTES)
    if head is None:
        return ""
    named: list[str] = []
    import re  # noqa: PLC0415 - only for scripts

    for match in re.finditer(_ABSOLUTE_PATH, head):
        candidate = os.fsdecode(match.group())
        if candidate not in named:
            named.append(candidate)
        if len(named) >= _MAX_NAMED_PATHS:
            break
    parts: list[str] = []
    for candidate in named:
        try:
            real = os.path.realpath(candidate)
            info = os.stat(real)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111 or real in seen:
            continue
        seen.add(real)
        inner = script_targets(real, _depth=_depth - 1, _seen=seen) if _depth > 1 else ""
        parts.append(f"{candidate}={stat_key(real, info, inner)}")
    if not parts:
        return ""
    return "exec-" + sha256_hex("\n".join(parts).encode("utf-8", "surrogateescape"))[:32]


def sha256_hex(data: bytes) -> str:
    """hashlib.sha256(data).hexdigest() without hashlib, whose OpenSSL binding (_hashlib) costs the
    hook's miss ~5 ms to load: CPython's own ``_sha256`` gives the same digest."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - builtin
    except ImportError:  # an interpreter built without it
        from hashlib import sha256  # noqa: PLC0415
    return str(sha256(data).hexdigest())


def write_atomic(path: str, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader sees the old or the new file, never
    a half-written one, and a failure leaves no temporary file behind. ``sync=False`` skips the
    fsync (~1.5 ms each on a slow disk): for a cache whose reader checks every entry anyway, where
    a crash may cost the entry but never a wrong answer."""
    import contextlib  # noqa: PLC0415 - writers only, never the hook's cached path

    fd, tmp = _create_temporary(os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(directory: str) -> tuple[int, str]:
    """tempfile.mkstemp(prefix=".tmp-", dir=directory), the same way (a fresh random name, mode
    0600, O_EXCL, O_NOFOLLOW), without tempfile: it imports shutil and random, ~6 ms of a hook
    miss, which stores its verdict through here."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        name = os.path.join(directory, ".tmp-" + os.urandom(6).hex())
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no usable temporary name", directory)


class _Decoding:
    """What json's C scanner reads from its context: json.JSONDecoder()'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


_JSON_SPACE = " \t\n\r"


def load_json(raw: bytes) -> Any:
    """``json.loads(raw)``, through json's own C scanner (``_json``) without the json package:
    importing that compiles six regular expressions, ~4 ms of a hook miss on a slow host, which
    reads the compiled policy, the probe cache and the snapshot. Same values, and for invalid
    input json.loads's own error (it is asked again)."""
    try:
        import _json  # noqa: PLC0415 - CPython's C half of json

        text = raw.decode("utf-8")
    except (ImportError, UnicodeDecodeError):
        text = ""
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    if text and not text.startswith("\ufeff") and b"\x00" not in raw[:4]:
        scan: Any = _json.make_scanner(_Decoding())  # type: ignore[arg-type]  # duck-typed
        try:
            value, end = scan(text, start)
        except Exception:
            # StopIteration, or the C scanner failing to word an error for the duck-typed
            # context (a SystemError on '{x'): json.loads decides, and words it.
            end = -1
        if end >= 0 and not text[end:].strip(_JSON_SPACE):
            return value
    # No _json, a BOM, UTF-16/32 (json detects it), or not one JSON value: json itself decides,
    # and words its error exactly as before.
    import json  # noqa: PLC0415

    return json.loads(raw)
