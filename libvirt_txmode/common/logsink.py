"""Where the hook's decisions go: journald, else syslog, else a file of our own; never nowhere.

* **journald** (``/run/systemd/journal/socket``): the native protocol, one datagram of
  ``KEY=value`` lines (systemd's "Native Journal Protocol"), with the message and these fields:
  ``DOMAIN``, ``NIC_MAC``, ``TXMODE``, ``CODE``, ``RULE``, ``DECISION`` (``denied``, ``warning``,
  ``refused``, ``allowed``), plus ``SYSLOG_IDENTIFIER=libvirt-txmode``. Standard library only:
  ``journalctl -t libvirt-txmode DECISION=denied`` finds every refusal. Every record of one
  decision also carries ``MESSAGE_ID`` (one fixed id per outcome, ``MESSAGE_IDS``: the package's
  journald catalog explains each under ``journalctl -x``), ``POLICY``, ``POLICY_SHA256`` and
  ``VERSION``.
* **syslog** (``/dev/log``): an RFC 3164 datagram, as libc's ``syslog(3)`` sends it, with the
  message only.
* ``$LIBVIRT_TXMODE_JOURNAL_SOCKET`` and ``$LIBVIRT_TXMODE_SYSLOG_SOCKET``, when set, name
  other sockets for these two (the tests' own listeners).
* **the fallback file** ``/var/log/libvirt-txmode.log`` (mode 0600: domain names and MACs are as
  private as libvirt's own 0600 domain XML) when neither socket takes the message: containers and
  minimal hosts without ``/dev/log`` lost every decision before.

Standard library only, and ``socket`` is imported only when a socket is there: this module is on
the hook's cached path.
"""

from __future__ import annotations

import os
import stat
import time

from . import files, paths
from .text import printable

# typing and dataclasses would cost the hook's cached path more than its own work.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Optional

IDENT = "libvirt-txmode"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
FALLBACK_FILE = paths.LOG_FILE
# Set in the hook's environment, these replace the two sockets above (see default_targets).
JOURNAL_SOCKET_VARIABLE = "LIBVIRT_TXMODE_JOURNAL_SOCKET"
SYSLOG_SOCKET_VARIABLE = "LIBVIRT_TXMODE_SYSLOG_SOCKET"
FIELDS = (
    "DOMAIN",
    "NIC_MAC",
    "TXMODE",
    "CODE",
    "RULE",
    "DECISION",
    "MESSAGE_ID",
    "POLICY",
    "POLICY_SHA256",
    "VERSION",
)
# What one hook run decided. "audit-warned": started with warnings (violations under
# action: audit, or findings whose level is warn); "error": the hook could not check the domain
# (unusable policy, unreadable or oversized XML, internal error), whether on_error then refused it
# or let it start.
ALLOWED, DENIED, AUDIT_WARNED, ERROR = "allowed", "denied", "audit-warned", "error"
OUTCOMES = (ALLOWED, DENIED, AUDIT_WARNED, ERROR)
# journald's MESSAGE_ID per outcome: 128-bit ids fixed once (journalctl MESSAGE_ID=...); the
# catalog shipped in debian/libvirt-txmode.catalog explains each. Never change one: saved
# searches and alerts name them.
MESSAGE_IDS = {
    ALLOWED: "0b8d35fca567424bbe96c3f1e2e7d973",
    DENIED: "0786a90ab0694527af249db616bd7cee",
    AUDIT_WARNED: "ea14048ca54f44eeb7cf99a3b5f460da",
    ERROR: "c94e12e95822431ba3c3f89ef3c96be9",
}
_FACILITY_DAEMON = 3
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Targets:
    """The three places, in order of preference (tests point them into a temporary directory).
    A plain class: importing dataclasses costs the hook's cached path more than logging."""

    __slots__ = ("fallback", "journal", "syslog")

    def __init__(self, journal: str, syslog: str, fallback: str) -> None:
        self.journal, self.syslog, self.fallback = journal, syslog, fallback

    def __repr__(self) -> str:
        return f"Targets({self.journal!r}, {self.syslog!r}, {self.fallback!r})"


def outcome_of(fields: Mapping[str, str]) -> Optional[str]:
    """The outcome a decision record's MESSAGE_ID stands for, None for any other record."""
    message_id = fields.get("MESSAGE_ID")
    for outcome, known in MESSAGE_IDS.items():
        if known == message_id:
            return outcome
    return None


def default_targets() -> Targets:
    # Read at call time, so that a test can point the module's constants elsewhere. The
    # variables give a test run sockets of its own: two runs on one machine (or a run and a
    # syslog daemon) never read each other's messages from /dev/log.
    environ = os.environ
    return Targets(
        environ.get(JOURNAL_SOCKET_VARIABLE) or JOURNAL_SOCKET,
        environ.get(SYSLOG_SOCKET_VARIABLE) or SYSLOG_SOCKET,
        FALLBACK_FILE,
    )


def log(
    priority: int,
    message: str,
    fields: Optional[Mapping[str, str]] = None,
    *,
    targets: Optional[Targets] = None,
) -> str:
    """Send one message to the first sink that takes it: "journald", "syslog", "file" or "lost"."""
    targets = targets or default_targets()
    fields = {k: printable(v) for k, v in (fields or {}).items() if k in FIELDS}
    if _is_socket(targets.journal) and _send(
        targets.journal, _journal_datagram(priority, message, fields)
    ):
        return "journald"
    if _is_socket(targets.syslog) and _send(targets.syslog, _syslog_datagram(priority, message)):
        return "syslog"
    if _append(targets.fallback, _file_line(priority, message, fields)):
        return "file"
    return "lost"


def destination(targets: Optional[Targets] = None) -> tuple[str, Optional[str]]:
    """Where the next message would go, and why that may fail (for ``doctor``)."""
    targets = targets or default_targets()
    if _is_socket(targets.journal):
        return f"journald ({targets.journal})", None
    if _is_socket(targets.syslog):
        return f"syslog ({targets.syslog})", None
    directory = os.path.dirname(targets.fallback) or "."
    if not os.path.isdir(directory):
        return f"file {targets.fallback}", f"{directory} does not exist"
    if os.path.lexists(targets.fallback):
        problem = files.path_trust_problem(
            targets.fallback, allowed_uids=files.owners(), kind="file", private=True
        )
        if problem is not None:
            return f"file {targets.fallback}", problem
    elif not os.access(directory, os.W_OK):
        return f"file {targets.fallback}", f"{directory} is not writable"
    return f"file {targets.fallback} (neither journald nor syslog listens)", None


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _send(path: str, datagram: bytes) -> bool:
    import socket  # noqa: PLC0415 - only when a socket is there

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(datagram, path)
        return True
    except OSError:  # nobody listening (a stale socket file), message too large, ...
        return False


def journal_fields(priority: int, message: str, fields: Mapping[str, str]) -> list[tuple[str, str]]:
    """A record's journald fields but SYSLOG_PID (the sender's: hooks/qemu adds its own)."""
    return [
        ("MESSAGE", message),
        ("PRIORITY", str(priority)),
        ("SYSLOG_IDENTIFIER", IDENT),
        ("SYSLOG_FACILITY", str(_FACILITY_DAEMON)),
        *sorted(fields.items()),
    ]


def _journal_datagram(priority: int, message: str, fields: Mapping[str, str]) -> bytes:
    items = journal_fields(priority, message, fields)
    items.insert(4, ("SYSLOG_PID", str(os.getpid())))
    out = bytearray()
    for key, value in items:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            # The protocol's binary form: name, newline, 64-bit little-endian length, data.
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def _syslog_datagram(priority: int, message: str) -> bytes:
    now = time.localtime()
    clock = f"{now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d}"
    stamp = f"{_MONTHS[now.tm_mon - 1]} {now.tm_mday:2d} {clock}"
    head = f"<{_FACILITY_DAEMON * 8 + priority}>{stamp} {IDENT}[{os.getpid()}]: "
    return (head + message).encode("utf-8", "replace")


def file_record(priority: int, message: str, fields: Mapping[str, str]) -> str:
    """A fallback-file line after its time stamp and sender: ``<priority>: text FIELD="value"``."""
    tail = "".join(f" {key}={_quote(value)}" for key, value in sorted(fields.items()))
    # One record per line: a traceback's newlines are escaped like any other control character.
    text = printable(message.replace("\n", " | "))
    return f"<{priority}>: {text}{tail}"


def _quote(value: str) -> str:
    """A field's value in double quotes, read back unambiguously: control characters are
    escaped by printable, backslashes and quotes here."""
    return '"' + printable(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _file_line(priority: int, message: str, fields: Mapping[str, str]) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = f"{stamp} {IDENT}[{os.getpid()}] {file_record(priority, message, fields)}\n"
    return line.encode("utf-8", "replace")


def _append(path: str, line: bytes) -> bool:
    return files.append_private(path, line)


def recent_decisions(count: int = 5, targets: Optional[Targets] = None) -> list[str]:
    """The last decisions the hook logged, from wherever this host keeps them (best effort)."""
    targets = targets or default_targets()
    import subprocess  # noqa: PLC0415 - doctor reads the journal; the hook never does

    lines: list[str] = []
    if _is_socket(targets.journal):
        try:
            proc = subprocess.run(
                ["journalctl", "-t", IDENT, "-n", str(count * 4), "-o", "cat", "--no-pager"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            lines = proc.stdout.splitlines()
        except (OSError, subprocess.TimeoutExpired):
            lines = []
    candidates = [targets.fallback, "/var/log/syslog", "/var/log/messages"]
    for path in candidates if not lines else ():
        lines = [line for line in _tail(path) if IDENT in line]
        if lines:
            break
    decisions = [line for line in lines if _is_decision(line)]
    return decisions[-count:]


def _is_decision(line: str) -> bool:
    return any(word in line for word in ("allowed domain", "refused to start", "allowing domain"))


def _tail(path: str, size: int = 256 * 1024) -> list[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return []
        os.lseek(fd, max(0, info.st_size - size), os.SEEK_SET)
        data = os.read(fd, size)
    except OSError:
        return []
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").splitlines()
