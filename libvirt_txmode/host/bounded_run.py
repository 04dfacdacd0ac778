"""Running a QEMU binary the way a root hook may: a clean environment, no inherited stdin, its own
session so a timeout kills the whole process group, bounded output, and, as root, the user libvirt
runs QEMU as (qemu.conf), never root.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, TypeVar

from ..common import logs, paths
from ..common.files import path_trust_problem, read_regular
from ..common.records import SLOTS
from .emulator import ProbeError

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
PROBE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
QEMU_CONF = paths.QEMU_CONF
FALLBACK_USER = "nobody"
T = TypeVar("T")
LOG = logs.get(__name__)  # logging itself only once there is a message


@dataclass(frozen=True, **SLOTS)
class RunResult:
    """What a bounded run of an emulator gave: exit code, output, and whether it was cut short."""

    returncode: Optional[int]
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False


@dataclass(frozen=True, **SLOTS)
class ProbeUser:
    """Whom a probe runs as: the user, group and supplementary groups libvirt gives QEMU."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    description: str


# Patterns as text, compiled (and cached by re) where a probe uses them: a hook answered from
# the probe cache never does, and three compiles cost its miss ~1 ms.
_QEMU_CONF_KEYS = r'(?m)^[ \t]*(user|group)[ \t]*=[ \t]*"([^"\n]*)"[ \t]*(#.*)?$'
# libvirt's qemu.conf is generated from qemu.conf.in, whose commented-out '#user = "@QEMU_USER@"'
# and '#group = "@QEMU_GROUP@"' lines carry the built-in defaults (Debian: libvirt-qemu, seen as
# the uid and gid of a running QEMU). The examples above them are indented, so they never match.
_QEMU_CONF_DEFAULTS = r'(?m)^#(user|group) = "([^"\n]*)"$'
_MAX_QEMU_CONF_BYTES = 1024 * 1024


def _qemu_conf(path: str) -> tuple[dict[str, str], Optional[str]]:
    """``user``/``group`` from qemu.conf (set ones over the template's defaults), or why not."""
    problem = path_trust_problem(path)
    if problem is not None:
        return {}, f"{path} is not trusted: {problem}"
    try:
        raw, _ = read_regular(path, _MAX_QEMU_CONF_BYTES, follow_symlinks=True)
    except OSError as exc:
        return {}, f"cannot read {path}: {exc.strerror}"
    text = raw[: _MAX_QEMU_CONF_BYTES + 1].decode("utf-8", "replace")
    found = {key: value for key, value in re.findall(_QEMU_CONF_DEFAULTS, text)}
    found.update({key: value for key, value, _ in re.findall(_QEMU_CONF_KEYS, text)})  # last wins
    return found, None


def _lookup(value: str, by_name: Callable[[str], T], by_id: Callable[[int], T]) -> Optional[T]:
    """libvirt's reading of a qemu.conf user/group: '+N' is an id; else a name, else an id."""
    try:
        if value.startswith("+"):
            return by_id(int(value[1:]))
        try:
            return by_name(value)
        except KeyError:
            return by_id(int(value)) if value.isdigit() else None
    except (KeyError, ValueError, OverflowError):
        return None


def probe_user(qemu_conf: str = QEMU_CONF) -> tuple[Optional[ProbeUser], Optional[str]]:
    """As root: the user libvirt runs QEMU as (qemu.conf ``user``/``group`` and the user's
    supplementary groups, as libvirt sets them), so a binary installed 0750 root:kvm can be
    probed the way libvirt will run it. Falls back to ``nobody`` and says why (second value):
    qemu.conf unreadable or untrusted, the user unknown, or root (never probe as root).
    Not root: (None, None), the probe runs as ourselves."""
    if os.geteuid() != 0:
        return None, None

    settings, problem = _qemu_conf(qemu_conf)
    user = group = None
    if problem is None:
        user = _lookup(settings.get("user", ""), pwd.getpwnam, pwd.getpwuid)
        group = _lookup(settings.get("group", ""), grp.getgrnam, grp.getgrgid)
        if user is None:
            problem = f"the QEMU user {settings.get('user', '(unset)')!r} of {qemu_conf} is unknown"
        elif user.pw_uid == 0:
            problem = f"{qemu_conf} runs QEMU as root: probes never run as root"
    if problem is not None or user is None:
        try:
            entry = pwd.getpwnam(FALLBACK_USER)
        except KeyError:
            return None, f"{problem}, and there is no user {FALLBACK_USER}"
        return ProbeUser(entry.pw_uid, entry.pw_gid, (), FALLBACK_USER), problem
    gid = group.gr_gid if group is not None else user.pw_gid
    # As libvirt's virGetGroupList: the user's groups from its passwd entry on, plus the group.
    groups = tuple(dict.fromkeys([*os.getgrouplist(user.pw_name, user.pw_gid), gid]))
    return ProbeUser(user.pw_uid, gid, groups, f"{user.pw_name} ({qemu_conf})"), None


def _demote() -> Optional[ProbeUser]:
    """The user to probe as: never run someone's binary as root if we can avoid it."""
    user, problem = probe_user()
    if problem is not None:
        LOG.warning(
            "probing as %s, not as libvirt's QEMU user: %s",
            user.description if user else "root",
            problem,
        )
    return user


def run_bounded(  # noqa: C901, PLR0912 - a child's whole life (spawn, bounded read, timeout, group kill) in one place, so no path leaks it
    argv: Sequence[str],
    *,
    timeout: float,
    input_data: Optional[bytes] = None,
    max_output: int = MAX_OUTPUT_BYTES,
) -> RunResult:
    """Run argv with a clean environment, reading at most ``max_output`` bytes before ``timeout``.

    The child gets its own session so a timeout kills everything it started, not just its pid.
    """

    ids = _demote()
    try:
        proc = subprocess.Popen(  # argv list, trusted binary, clean env
            list(argv),
            stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(PROBE_ENV),
            cwd="/",
            close_fds=True,
            start_new_session=True,
            user=ids.uid if ids is not None else None,
            group=ids.gid if ids is not None else None,
            extra_groups=list(ids.groups) if ids is not None else None,
        )
    except OSError as exc:
        raise ProbeError(f"cannot execute {argv[0]}: {exc.strerror}") from None

    deadline = time.monotonic() + timeout
    buffers = {"stdout": bytearray(), "stderr": bytearray()}
    timed_out = truncated = False
    with selectors.DefaultSelector() as selector:
        if proc.stdout is None or proc.stderr is None:  # for mypy: both are PIPEs above
            raise ProbeError(f"cannot read the output of {argv[0]}")
        selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
        selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
        if proc.stdin is not None:
            try:
                # Our requests are a few hundred bytes: they fit the pipe buffer, no need to poll.
                proc.stdin.write(input_data or b"")
                proc.stdin.close()
            except BrokenPipeError:
                pass
        open_streams = 2
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                buffers[key.data] += chunk
                if len(buffers["stdout"]) + len(buffers["stderr"]) > max_output:
                    truncated = True
                    open_streams = 0
                    break
    if timed_out or truncated:
        _kill_group(proc)
    try:
        returncode: Optional[int] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        returncode = None
    # Whatever the binary left behind in its session (a forked child that closed its pipes) must not
    # outlive the probe. The group id cannot be reused while any member of the group is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return RunResult(
        returncode, bytes(buffers["stdout"]), bytes(buffers["stderr"]), timed_out, truncated
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
