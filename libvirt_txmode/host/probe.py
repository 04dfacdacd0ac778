"""Direct probing of a QEMU binary: does a virtio-net device carry the ``tx`` property?

Two methods, as libvirt itself has used over the years:
- ``help``: ``EMULATOR -device DEV,help``. QEMU < 2.x printed ``DEV.tx=string`` lines on stderr,
  later ones ``DEV.tx=str`` on stdout, and QEMU >= 5.x prints ``DEV options:`` then ``  tx=<str>``.
  A missing device is reported as ``Device 'DEV' not found`` (QEMU 7.2 still exits 0 then).
- ``qmp``: ``device-list-properties`` (QEMU >= 1.2) over a private stdio channel of a
  ``-machine none`` instance; a missing device answers an error of class ``DeviceNotFound``.

Probing runs a binary as root's hook, so: only binaries the policy trusts, owned by root and not
writable by others; a clean environment; no inherited stdin; a timeout after which the whole process
group is killed; bounded output; and, when we are root, the user libvirt runs QEMU as (qemu.conf),
never root (``nobody`` when that user cannot be used, with a warning saying why).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Optional, TypeVar

from ..common import logs, paths
from ..common.files import binary_key, owners, path_trust_problem, read_regular, script_targets
from ..common.records import SLOTS
from ..engine.model import Support, SupportState

if TYPE_CHECKING:
    import subprocess

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
PROBE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
QEMU_CONF = paths.QEMU_CONF
FALLBACK_USER = "nobody"
T = TypeVar("T")
LOG = logs.get(__name__)  # logging itself only once there is a message


class ProbeError(Exception):
    """The emulator could not be probed at all (untrusted, missing, hung, crashed)."""


@dataclass(frozen=True, **SLOTS)
class EmulatorIdentity:
    """What libvirt keys its capability cache on: a binary replaced in place gets a new ctime."""

    path: str
    realpath: str
    device: int
    inode: int
    size: int
    ctime_ns: int
    mtime_ns: int
    # For a wrapper script: the identities of the binaries it execs (files.script_targets).
    targets: str = ""

    def key(self) -> str:
        return binary_key(
            self.realpath,
            device=self.device,
            inode=self.inode,
            size=self.size,
            ctime_ns=self.ctime_ns,
            mtime_ns=self.mtime_ns,
            targets=self.targets,
        )


def identify(path: str) -> EmulatorIdentity:
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError as exc:
        raise ProbeError(f"emulator {path} is not accessible: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ProbeError(f"emulator {path} is not a regular file")
    return EmulatorIdentity(
        path=path,
        realpath=real,
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        ctime_ns=info.st_ctime_ns,
        mtime_ns=info.st_mtime_ns,
        targets=script_targets(real),
    )


def trust_problem(path: str, globs: Sequence[str]) -> Optional[str]:
    """Why ``path`` must not be executed, or None when it may be."""
    if not os.path.isabs(path):
        return f"emulator path {path!r} is not absolute"
    if any(part in (".", "..") for part in path.split("/")):
        # fnmatch's '*' also matches '/': '/usr/bin/qemu-system-x/../../../tmp/evil' would fit the
        # default glob, so a path must be matched as written, without '.' or '..' components.
        return f"emulator path {path!r} has '.' or '..' components"
    real = os.path.realpath(path)
    if not any(fnmatchcase(path, g) or fnmatchcase(real, g) for g in globs):
        return f"emulator {path} is not in the policy's trusted 'emulators' list"
    try:
        info = os.stat(real)
    except OSError as exc:
        return f"emulator {path} is not accessible: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & stat.S_IXUSR:
        return f"emulator {path} is not an executable file"
    # The binary, every directory above it and every link on the way: a root-owned binary in a
    # directory anyone can write can be swapped for another one.
    problem = path_trust_problem(path, allowed_uids=owners(), kind="file")
    if problem is not None:
        return f"emulator {path} is not trusted: {problem}: refusing to run it"
    return None


@dataclass(frozen=True, **SLOTS)
class RunResult:
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
    import grp  # noqa: PLC0415 - only a probe asks whom to run as
    import pwd  # noqa: PLC0415

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


def run_bounded(  # noqa: C901, PLR0912, PLR0915 - a child's whole life (spawn, bounded read, timeout, group kill) in one place, so no path leaks it
    argv: Sequence[str],
    *,
    timeout: float,
    input_data: Optional[bytes] = None,
    max_output: int = MAX_OUTPUT_BYTES,
) -> RunResult:
    """Run argv with a clean environment, reading at most ``max_output`` bytes before ``timeout``.

    The child gets its own session so a timeout kills everything it started, not just its pid.
    """
    # Only a probe runs a process: a hook answered from the probe cache never imports these.
    import selectors  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

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
    import signal  # noqa: PLC0415 - see run_bounded
    import subprocess  # noqa: PLC0415

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --- the help method -----------------------------------------------------------------------------

_NOT_FOUND = (
    rb"(Device '[^']*' not found|Device \"[^\"]*\" not found|is not a valid device model name"
    rb"|Parameter 'driver' expects)"
)


def parse_help(device: str, output: bytes) -> Optional[Support]:
    """Interpret ``-device DEV,help`` output (stdout and stderr together); None if inconclusive."""
    dev = re.escape(device.encode())
    old_lines = re.findall(rb"^" + dev + rb"\.([A-Za-z0-9_-]+)=", output, re.M)
    if old_lines:
        if b"tx" in old_lines:
            return Support(
                SupportState.SUPPORTED, f"{device}.tx listed by -device {device},help", "help"
            )
        return Support(SupportState.UNSUPPORTED, f"{device} has no tx property", "help")
    if re.search(rb"^" + dev + rb" options:\s*$", output, re.M):
        if re.search(rb"^\s+tx=", output, re.M):
            return Support(SupportState.SUPPORTED, f"tx listed by -device {device},help", "help")
        return Support(SupportState.UNSUPPORTED, f"{device} has no tx property", "help")
    if re.search(_NOT_FOUND, output):
        return Support(SupportState.UNSUPPORTED, f"this QEMU has no device {device}", "help")
    return None


def probe_help(emulator: str, device: str, timeout: float) -> Optional[Support]:
    result = run_bounded([emulator, "-device", f"{device},help"], timeout=timeout)
    if result.timed_out:
        raise ProbeError(f"{emulator} -device {device},help did not finish within {timeout:g} s")
    if result.truncated:
        raise ProbeError(
            f"{emulator} -device {device},help printed more than {MAX_OUTPUT_BYTES} bytes"
        )
    if result.returncode is None or result.returncode < 0:
        # Killed by a signal: a property list cut short would read as "no tx". (A non-zero exit is
        # normal: QEMU 0.14-1.x exit 1 after "Parameter 'driver' expects a driver name".)
        return None
    return parse_help(device, result.stdout + b"\n" + result.stderr)


# --- the QMP method ------------------------------------------------------------------------------

QMP_ARGV = (
    "-machine",
    "none",
    "-nodefaults",
    "-nographic",
    "-display",
    "none",
    "-S",
    "-qmp",
    "stdio",
)


def qmp_request(devices: Sequence[str], *, ancestry: bool = False) -> bytes:
    lines: list[dict[str, object]] = [{"execute": "qmp_capabilities", "id": "caps"}]
    lines += [
        {"execute": "device-list-properties", "arguments": {"typename": d}, "id": f"dev{i}"}
        for i, d in enumerate(devices)
    ]
    if ancestry:
        lines.append(ANCESTRY_REQUEST)
    lines.append({"execute": "quit", "id": "quit"})
    import json  # noqa: PLC0415 - a probe's: the hook's miss reads the probe cache without json

    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _replies(output: bytes) -> dict[str, dict[str, object]]:
    """QMP replies by their (string) id; anything else on the channel is skipped."""
    import json  # noqa: PLC0415 - see qmp_request

    replies: dict[str, dict[str, object]] = {}
    for raw in output.splitlines():
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("id"), str):
            replies[message["id"]] = message
    return replies


def parse_qmp(devices: Sequence[str], output: bytes) -> dict[str, Support]:
    """Interpret the QMP replies; devices without a conclusive reply are left out."""
    return _device_answers(devices, _replies(output))


def _device_answers(
    devices: Sequence[str], replies: Mapping[str, Mapping[str, object]]
) -> dict[str, Support]:
    result: dict[str, Support] = {}
    for i, device in enumerate(devices):
        reply = replies.get(f"dev{i}")
        if reply is None:
            continue
        properties = reply.get("return")
        if isinstance(properties, list):
            names = {p.get("name") for p in properties if isinstance(p, dict)}
            if "tx" in names:
                result[device] = Support(
                    SupportState.SUPPORTED, "tx listed by device-list-properties", "qmp"
                )
            else:
                result[device] = Support(
                    SupportState.UNSUPPORTED, f"{device} has no tx property", "qmp"
                )
            continue
        error = reply.get("error")
        if isinstance(error, dict) and (
            error.get("class") == "DeviceNotFound" or "not found" in str(error.get("desc", ""))
        ):
            result[device] = Support(
                SupportState.UNSUPPORTED, f"this QEMU has no device {device}", "qmp"
            )
    return result


def probe_qmp(emulator: str, devices: Sequence[str], timeout: float) -> dict[str, Support]:
    return _session(emulator, devices, timeout, ancestry=False).devices


def _session(
    emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
) -> ProbeResult:
    """One QMP session of a ``-machine none`` instance: the devices' properties and, when asked,
    the type ancestry (one more request on the same channel). ProbeError when it did not end."""
    result = run_bounded(
        [emulator, *QMP_ARGV], timeout=timeout, input_data=qmp_request(devices, ancestry=ancestry)
    )
    if result.timed_out:
        raise ProbeError(f"QMP probe of {emulator} did not finish within {timeout:g} s")
    if result.truncated:
        raise ProbeError(f"QMP probe of {emulator} printed more than {MAX_OUTPUT_BYTES} bytes")
    replies = _replies(result.stdout)
    found, why = ancestry_from_reply(replies.get(ANCESTRY_ID)) if ancestry else (None, "")
    return ProbeResult(_device_answers(devices, replies), found, why)


def probe(
    emulator: str, devices: Sequence[str], *, timeout: float, method: str = "auto"
) -> dict[str, Support]:
    """Support of each device; a device no method could settle is UNKNOWN with the reason.

    ``auto`` asks ``-device DEV,help`` first (about 20 ms on QEMU 7.2) and falls back to QMP for
    answers it cannot read. Raises ProbeError when the binary cannot be run at all.
    """
    return probe_emulator(emulator, devices, timeout=timeout, method=method, ancestry=False).devices


def probe_emulator(
    emulator: str,
    devices: Sequence[str],
    *,
    timeout: float,
    method: str = "auto",
    ancestry: bool = True,
) -> ProbeResult:
    """``probe``, and with ``ancestry`` the virtio-net types' ancestry over QMP as well: in the
    QMP session of the devices ``help`` left unsettled if there is one, else in a session of its
    own (~30-40 ms more on QEMU 7.2 than a help-only probe: qom-list-types with abstract types
    initialises every QOM class). Ancestry never fails the probe: when it cannot be had (a QEMU
    without qom-list-types or without parents in its answer, or its own session failed), it is
    None and ``ancestry_error`` says why. Raises ProbeError when the devices cannot be probed.
    """
    results: dict[str, Support] = {}
    pending = list(devices)
    if method in ("auto", "help"):
        still: list[str] = []
        for device in pending:
            answer = probe_help(emulator, device, timeout)
            if answer is None:
                still.append(device)
            else:
                results[device] = answer
        pending = still
    found: Optional[dict[str, tuple[str, ...]]] = None
    why = ""
    if pending and method in ("auto", "qmp"):
        session = _session(emulator, pending, timeout, ancestry=ancestry)
        results.update(session.devices)
        found, why = session.ancestry, session.ancestry_error
        pending = [d for d in pending if d not in results]
        ancestry = False  # asked in this session already
    if ancestry:
        try:
            session = _session(emulator, (), timeout, ancestry=True)
            found, why = session.ancestry, session.ancestry_error
        except ProbeError as exc:
            found, why = None, str(exc)
    for device in pending:
        results[device] = Support(
            SupportState.UNKNOWN, f"{emulator} gave no readable answer for {device}", method
        )
    return ProbeResult(results, found, why)


# --- QOM type ancestry ----------------------------------------------------------------------------

ANCESTRY_ID = "ancestry"
ANCESTRY_REQUEST: dict[str, object] = {
    "execute": "qom-list-types",
    "arguments": {"abstract": True},
    "id": ANCESTRY_ID,
}
# Types kept: these, what descends from them, and any type named virtio-net* (virtio-net-ccw).
ANCESTRY_ROOTS = ("virtio-net-device", "virtio-net-pci-base")
ANCESTRY_PREFIX = "virtio-net"
# QOM's root: every device's chain ends here (QEMU 7.2's deepest device chain has 6 links).
QOM_ROOT = "object"
_MAX_CHAIN = 64


@dataclass(frozen=True, **SLOTS)
class ProbeResult:
    """What one probe of an emulator learned."""

    devices: dict[str, Support]
    # QEMU type -> its ancestors, parent first up to "object" (virtio-net types only); None:
    # not asked, or not to be had (``ancestry_error`` says why).
    ancestry: Optional[dict[str, tuple[str, ...]]] = None
    ancestry_error: str = ""


def ancestry_from_reply(
    reply: Optional[Mapping[str, object]],
) -> tuple[Optional[dict[str, tuple[str, ...]]], str]:
    """The virtio-net types' ancestry from a ``qom-list-types`` reply, or None and why not."""
    if reply is None:
        return None, "no answer to qom-list-types"
    types = reply.get("return")
    if not isinstance(types, list):
        error = reply.get("error")
        desc = error.get("desc", error) if isinstance(error, dict) else reply
        return None, f"qom-list-types failed: {desc}"
    return ancestry_of(types)


def ancestry_of(types: Sequence[object]) -> tuple[Optional[dict[str, tuple[str, ...]]], str]:
    """From ``qom-list-types`` entries (``{"name", "parent"}``): each kept type's chain.

    A type whose chain does not reach "object" (a parent the answer does not list, a loop) is
    left out rather than given half a chain: a -global names any ancestor, and a chain cut short
    would say it does not apply. QEMU before 2.10 gives no parents at all: None.
    """
    parents: dict[str, Optional[str]] = {}
    for entry in types:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            parent = entry.get("parent")
            parents[entry["name"]] = parent if isinstance(parent, str) else None
    if not any(parent is not None for parent in parents.values()):
        return None, "qom-list-types gave no parents (QEMU before 2.10)"
    kept: dict[str, tuple[str, ...]] = {}
    for name in parents:
        chain = _chain(name, parents)
        if chain is None:
            continue
        if name.startswith(ANCESTRY_PREFIX) or any(
            root == name or root in chain for root in ANCESTRY_ROOTS
        ):
            kept[name] = chain
    return dict(sorted(kept.items())), ""


def _chain(name: str, parents: Mapping[str, Optional[str]]) -> Optional[tuple[str, ...]]:
    chain: list[str] = []
    current = parents.get(name)
    while current is not None:
        if current in chain or current == name or len(chain) >= _MAX_CHAIN:
            return None
        chain.append(current)
        if current not in parents:
            return None
        current = parents[current]
    return tuple(chain) if chain and chain[-1] == QOM_ROOT else None
