"""Which files may be believed, how they are told apart, and how much of an input is read.

Shared by the probe cache, the compiled policy, the verdict cache, the snapshot, the emulator check
and the hook. One module, past 400 lines, on purpose: the trust rule and every read and write that
applies it stay side by side, so no caller can read a file the rule has not judged. Standard
library only: the hook's hot path (a cached verdict) must not import lxml, YAML or the engine.
"""

from __future__ import annotations

import errno
import os
import stat

# Annotations only: typing, collections.abc, re and tempfile would cost the hook's cached path
# (`python -I -S`, see hook.py) more than its answer; they are imported where they are used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import IO, Optional

# How much domain XML is read. libvirt bounds no domain's total size: it parses domain XML with
# libxml2 and only XML_PARSE_NONET | XML_PARSE_NOWARNING (virXMLParseHelper, src/util/virxml.c),
# so its bounds are libxml2's defaults without XML_PARSE_HUGE (domain.py holds documents to them:
# 257 elements deep, 10,000,000 bytes per text node). Each API call
# carries at most VIR_NET_MESSAGE_STRING_MAX = 4194304 bytes per string (src/rpc/
# virnetprotocol.x; above it: "Unable to encode message payload"), but calls add up: four
# setMetadata calls of 3 MB leave a 12 MB definition that starts, and libvirt hands all of it to
# the hook. So the total bound is ours, sized for memory: 64 MiB, sixteen such strings. The hook
# refuses an input beyond any of these bounds whatever on_error says.
MAX_XML_BYTES = 64 * 1024 * 1024
# Said of an input past MAX_XML_BYTES wherever it is refused (stdin, a file, a parsed string).
TOO_LARGE = f"input is larger than {MAX_XML_BYTES} bytes"
_READ_STEP = 1 << 20
ROOT_ONLY = frozenset({0})
# The kernel's own bound on symlinks followed while resolving one path (MAXSYMLINKS, ELOOP).
_MAX_SYMLINKS = 40


def owners(*, include_self: bool = True) -> frozenset[int]:
    """The uids whose files a process may believe: root, and itself when it is not root."""
    return frozenset({0, os.geteuid()}) if include_self else ROOT_ONLY


def _who(allowed_uids: Collection[int]) -> str:
    others = sorted(uid for uid in allowed_uids if uid != 0)
    return "root" + "".join(f" or uid {uid}" for uid in others)


def path_trust_problem(  # noqa: C901, PLR0912 - one walk over the path, step by step like the kernel's: the trust rule reads in one place
    path: str,
    *,
    allowed_uids: Collection[int] = ROOT_ONLY,
    kind: str = "any",
    private: bool = False,
) -> Optional[str]:
    """Why ``path`` must not be believed, as one line, or None when it may be: the one trust rule.

    The rule sudo and sshd (StrictModes) apply to what they read as root, applied to every step
    the kernel takes to resolve the path: ``/`` and each directory below it, every symlink met on
    the way (lstat: its owner, since anyone who owns a link can point it elsewhere; a link's own
    mode means nothing on Linux) and then the directories of its target, and finally the file (or
    directory) itself. Each must be owned by an allowed uid and not writable by group or others,
    because whoever can write a directory can rename a different file into it.

    What callers may ask beyond that: ``kind`` ("file": a regular file, "directory", or "any")
    and ``private``: the path itself is not even readable by group or others (a cache of
    decisions names domains and MACs, as libvirt's own 0600 domain XML does).

    One exception (docs/policy.md, "The trust rule"): a sticky directory (``/tmp``, ``/var/tmp``)
    owned by an allowed uid is accepted on the way to a *directory* below it, but never as the
    directory holding the file itself. In a sticky directory only the owner of an entry (or of the
    directory, or root) can rename or remove it, so a root-owned directory in ``/tmp`` cannot be
    replaced, and a squatter's entry fails the owner check (the reasoning of the kernel's
    ``protected_symlinks``). A *file* directly in ``/tmp`` stays refused: anyone may plant a hard
    link to another root-owned file under that name before it exists. sshd refuses even the first
    case; we accept it so that a root-owned 0700 directory in ``/tmp`` can hold a cache.

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
    try:
        info = os.lstat(current)
    except OSError as exc:
        return f"{current}: {exc.strerror}"
    if not pending:
        return node_problem(current, info, allowed, kind=kind, private=private)
    problem = node_problem(current, info, allowed)
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
                return (
                    f"symlink {candidate} is owned by uid {info.st_uid}, not {_who(allowed)}; "
                    f"fix: chown -h root {_shell(candidate)}"
                )
            try:
                target = os.readlink(candidate)
            except OSError as exc:
                return f"symlink {candidate}: {exc.strerror}"
            if target.startswith("/"):
                current, sticky_parent = "/", False
            pending.extend(part for part in reversed(target.split("/")) if part)
            continue
        final = all(part == "." for part in pending)
        if final:
            if sticky_parent and not stat.S_ISDIR(info.st_mode):
                return (
                    f"{current} is writable by others (sticky): a file directly in it could be "
                    "planted there by anyone; fix: move it into a directory only root can write"
                )
            return node_problem(candidate, info, allowed, kind=kind, private=private)
        if not stat.S_ISDIR(info.st_mode):
            return f"{candidate} is not a directory"
        problem = node_problem(candidate, info, allowed)
        sticky_parent = problem is not None and bool(info.st_mode & stat.S_ISVTX)
        if problem is not None and not (sticky_parent and info.st_uid in allowed):
            return problem
        current = candidate
    return None


def node_problem(
    path: str,
    info: os.stat_result,
    allowed: Collection[int] = ROOT_ONLY,
    *,
    kind: str = "any",
    private: bool = False,
) -> Optional[str]:
    """The rule for one file or directory, from its (l/f)stat: ``path_trust_problem`` applies it
    to every step of a path, and a reader to the descriptor it opened (the path may have been
    swapped between the walk and the open)."""
    is_dir = stat.S_ISDIR(info.st_mode)
    what = "directory" if is_dir else "file"
    if kind == "file" and not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if kind == "directory" and not is_dir:
        return f"{path} is not a directory"
    if info.st_uid not in allowed:
        return (
            f"{what} {path} is owned by uid {info.st_uid}, not {_who(allowed)}; "
            f"fix: chown root {_shell(path)}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return (
            f"{what} {path} is writable by group or others "
            f"(mode {mode:04o}); fix: chmod go-w {_shell(path)}"
        )
    if private and mode & 0o077:
        return (
            f"{what} {path} is readable by group or others "
            f"(mode {mode:04o}); fix: chmod go-rwx {_shell(path)}"
        )
    return None


def _shell(path: str) -> str:
    """``path`` as a shell word, for the command a message gives as the fix."""
    if path and all(c.isalnum() or c in "/._+-@%:," for c in path):
        return path
    import shlex  # noqa: PLC0415 - only for a path that needs quoting, in a message

    return shlex.quote(path)


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
    """Why the cache directory ``path`` must not be used, or None once it is usable: created
    0700, then ``path_trust_problem`` for root or ourselves, private. A directory of ours that
    an older release left 0755 is tightened (one that others could write is refused: they may
    have put something in it)."""
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            problem = path_trust_problem(path, allowed_uids=owners(), kind="directory")
            if problem is not None:
                return problem
            info = os.stat(path)
            if info.st_uid == os.geteuid() and info.st_mode & 0o077:
                os.chmod(path, 0o700)
        except OSError as exc:
            return f"{path}: {exc.strerror}"
    return path_trust_problem(path, allowed_uids=owners(), kind="directory", private=True)


def read_trusted(
    path: str, limit: int, *, allowed_uids: Collection[int], private: bool = False
) -> bytes:
    """Up to ``limit`` bytes of a file in a directory already found trusted, read only if the
    file passes the same rule on the descriptor (``node_problem``): no symlink, no FIFO (opened
    non-blocking), owned by ``allowed_uids``. OSError otherwise, or if it is larger."""
    raw, info = read_regular(path, limit)
    problem = node_problem(path, info, allowed_uids, kind="file", private=private)
    if problem is not None:
        raise OSError(errno.EPERM, problem, path)
    if len(raw) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return raw


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
    import hashlib  # noqa: PLC0415 - its OpenSSL binding loads slowly: only where a digest is made

    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return "exec-" + digest[:32]


def write_atomic(path: str, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader sees the old or the new file, never
    a half-written one, and a failure leaves no temporary file behind. ``sync=False`` skips the
    fsync: for a cache whose reader checks every entry anyway, where a crash may cost the entry
    but never a wrong answer."""
    import contextlib  # noqa: PLC0415 - writers only, never the hook's cached path
    import tempfile  # noqa: PLC0415 - writers only (tempfile pulls in random and shutil)

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
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


def append_private(path: str, data: bytes) -> bool:
    """Append to a log file of ours: created 0600, never through a symlink, never blocking on a
    FIFO planted there, only into a regular file of ours (tightened to 0600 if it was not)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if node_problem(path, info, owners(), kind="file") is not None:
            return False
        if node_problem(path, info, owners(), private=True) is not None:
            os.fchmod(fd, 0o600)
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
