"""Does the running libvirt daemon run the installed hook? By time, and proven by a canary.

libvirt notices a qemu hook only when it starts and when it is reloaded (SIGHUP). A hook that
appeared after the daemon's start, with no reload since, is not run: every VM starts unchecked.

* By time (``by_time``): the daemon's start (daemon.py: /proc/PID/stat and btime) against the
  moment each hook copy appeared (its directory entry's mtime/ctime, not following a symlink).
  A reload cannot be seen from outside, so a reload counts once a canary proved it: the proof
  (``PROOF_NAME`` in the state directory) names the daemon instance and when it was taken.
* By canary (``run_canary``): libvirt is asked to create a transient domain, paused, without disk,
  carrying a marker in its <metadata> that the hook refuses before it reads the policy
  (markers.CANARY_NAMESPACE). Refused by the hook: live. Started: the gate is off; it is destroyed
  at once. No canary is ever left behind: it is destroyed on every way out, SIGTERM included,
  and leftovers of a killed run (``CANARY_PREFIX``) are destroyed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ..common import files
from ..common.files import write_atomic
from ..common.records import SLOTS
from ..hook.markers import CANARY_NAMESPACE
from .daemon import Daemon, running_daemon

LIVE, OFF, UNKNOWN = "live", "off", "unknown"
CANARY_PREFIX = "libvirt-txmode-canary-"
PROOF_NAME = "liveness.json"
# /proc's start time is in clock ticks; a pidfile's daemon restarted in the same tick is the
# same instance for this purpose.
_SAME_START = 1.0
# After a reload libvirt re-scans its hooks in a thread of its own: a canary sent at once may
# still meet the old state. Retried after these pauses before it counts as off.
RELOAD_RETRIES = (1.0, 2.0, 4.0)
_ARCH_MACHINES = {
    "x86_64": "pc",
    "aarch64": "virt",
    "ppc64le": "pseries",
    "s390x": "s390-ccw-virtio",
}


@dataclass(frozen=True, **SLOTS)
class Liveness:
    """Whether the running daemon runs the installed hook, and how that was found."""

    state: str  # live | off | unknown
    detail: str


def hook_time(path: str) -> float:
    """When a hook copy appeared or last changed as a directory entry (lstat: a packaged symlink
    counts from when it was made; ctime covers a chmod +x)."""
    info = os.lstat(path)
    return max(info.st_mtime, info.st_ctime)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _fix(daemon: Daemon) -> str:
    return (
        f"fix: reload the daemon (systemctl reload {daemon.name}, or kill -HUP {daemon.pid}) "
        "and prove it with 'libvirt-txmode doctor --canary'"
    )


def by_time(hooks: Sequence[str], daemon: Daemon, state_dir: str) -> Liveness:
    """Whether ``daemon`` can know every hook in ``hooks``, from times alone."""
    newest = max(hooks, key=hook_time)
    installed = hook_time(newest)
    if installed <= daemon.started:
        return Liveness(
            LIVE,
            f"{daemon.name} (pid {daemon.pid}) started at {_when(daemon.started)}, after "
            f"{newest} appeared ({_when(installed)})",
        )
    proven = proof_time(state_dir, daemon)
    if proven is not None and proven >= installed:
        return Liveness(
            LIVE,
            f"a canary proved {daemon.name} (pid {daemon.pid}) runs the hook at {_when(proven)}, "
            f"after {newest} appeared ({_when(installed)})",
        )
    return Liveness(
        OFF,
        f"{newest} appeared at {_when(installed)}, after {daemon.name} (pid {daemon.pid}) "
        f"started at {_when(daemon.started)}, and no reload since is known: libvirt does not "
        f"run a hook it has not seen at start or reload, so VMs may start unchecked; "
        f"{_fix(daemon)}",
    )


def proof_time(state_dir: str, daemon: Daemon) -> Optional[float]:
    """When a canary last proved this very daemon instance runs the hook, or None."""
    path = os.path.join(state_dir, PROOF_NAME)
    if not os.path.lexists(path):
        return None
    if files.path_trust_problem(state_dir, allowed_uids=files.owners(), kind="directory"):
        return None  # whoever could write the directory could forge the proof
    try:
        raw = files.read_trusted(path, 4096, allowed_uids=files.owners())
        proof = json.loads(raw)
        same = (
            proof["daemon"] == daemon.name
            and proof["pid"] == daemon.pid
            and abs(float(proof["started"]) - daemon.started) < _SAME_START
        )
        return float(proof["proven"]) if same else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_proof(state_dir: str, daemon: Daemon, proven: float) -> Optional[str]:
    """Keep a canary's proof for later runs of doctor; why it could not be kept, or None."""
    document = {"daemon": daemon.name, "pid": daemon.pid, "started": daemon.started}
    document["proven"] = proven
    try:
        if not os.path.isdir(state_dir):
            os.makedirs(state_dir, mode=0o755, exist_ok=True)
        problem = files.path_trust_problem(state_dir, allowed_uids=files.owners(), kind="directory")
        if problem is not None:
            return f"{state_dir}: {problem}"
        write_atomic(os.path.join(state_dir, PROOF_NAME), json.dumps(document).encode() + b"\n")
    except OSError as exc:
        return f"{state_dir}: {exc.strerror}"
    return None


def canary_xml(name: str, arch: Optional[str] = None) -> str:
    """A domain that cannot run guest code: paused from creation, no disk, no NIC, 16 MiB."""
    arch = arch or platform.machine()
    machine = _ARCH_MACHINES.get(arch)
    machine_attr = f" machine='{machine}'" if machine else ""
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>16</memory>"
        f"<metadata><txmode:canary xmlns:txmode='{CANARY_NAMESPACE}'/></metadata>"
        f"<os><type arch='{arch}'{machine_attr}>hvm</type></os>"
        "<on_reboot>destroy</on_reboot><devices/></domain>"
    )


class _Terminated(Exception):
    pass


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises while a canary may exist, so that its cleanup runs (SIGINT already does)."""

    def raise_(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, raise_)
    except ValueError:  # not the main thread: no handler can be set there
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_canary(uri: str, *, retries: Sequence[float] = ()) -> Liveness:
    """Ask libvirt at ``uri`` to create the canary; the hook refusing it proves it live.
    ``retries``: pauses before trying again while it starts (right after a reload)."""
    from ..host.libvirt_snapshot import ConnectError, connect  # noqa: PLC0415 - loads lxml: not for --help

    try:
        conn = connect(uri, read_only=False)
    except ConnectError as exc:
        return Liveness(UNKNOWN, f"no canary sent: {exc}")
    try:
        with _terminate_as_exception():
            destroy_leftovers(conn)
            result = _one_canary(conn)
            for pause in retries:
                if result.state != OFF:
                    break
                time.sleep(pause)
                result = _one_canary(conn)
            return result
    finally:
        conn.close()


def _one_canary(conn: Any) -> Liveness:
    import libvirt  # noqa: PLC0415 - optional libvirt-python, only to talk to libvirt

    name = CANARY_PREFIX + secrets.token_hex(6)
    try:
        try:
            domain = conn.createXML(canary_xml(name), libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            said = str(exc)
            if f"canary {name} refused by the hook" in said:
                return Liveness(LIVE, f"canary domain {name} was refused by the hook")
            return Liveness(
                UNKNOWN, f"libvirt refused canary domain {name} for another reason: {said}"
            )
        domain.destroy()  # at once: it must never stay, even paused
        return Liveness(
            OFF,
            f"canary domain {name} STARTED (paused, destroyed at once): libvirt does not run the "
            "hook, VMs start unchecked",
        )
    finally:
        _destroy(conn, name)


def destroy_leftovers(conn: Any) -> None:
    """Canaries a killed earlier run left behind."""
    import libvirt  # noqa: PLC0415 - optional libvirt-python, only to talk to libvirt

    try:
        names = [d.name() for d in conn.listAllDomains()]
    except libvirt.libvirtError:
        return
    for name in names:
        if name.startswith(CANARY_PREFIX):
            _destroy(conn, name)


def _destroy(conn: Any, name: str) -> None:
    import libvirt  # noqa: PLC0415 - optional libvirt-python, only to talk to libvirt

    try:
        domain = conn.lookupByName(name)
    except libvirt.libvirtError:
        return  # the usual case: refused, it never existed
    with contextlib.suppress(libvirt.libvirtError):
        domain.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        if domain.isPersistent():
            domain.undefine()


def prove_after_reload(uri: str, state_dir: str, *, wait: float = 30.0) -> Liveness:
    """After a reload: wait until the daemon answers again, send the canary (again while it may
    still meet the state before the reload) and keep the proof when it was refused."""
    deadline = time.monotonic() + wait
    while True:
        result = run_canary(uri, retries=RELOAD_RETRIES)
        unreachable = result.state == UNKNOWN and result.detail.startswith("no canary sent")
        if not unreachable or time.monotonic() >= deadline:
            break
        time.sleep(0.5)  # the daemon refuses connections while it reloads
    daemon = running_daemon()
    if result.state == LIVE and daemon is not None:
        record_proof(state_dir, daemon, time.time())
    return result
