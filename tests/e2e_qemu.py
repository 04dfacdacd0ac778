"""Shared helpers for the tests that start real domains and ask QEMU what tx each device got.

XML builders for ``<qemu:commandline>`` and ``<qemu:override>``, ``virsh start --paused`` in small
parallel batches, QMP ``qom-list``/``qom-get`` through ``virsh qemu-monitor-command``, and
``validate-domain -f json`` grouped by file. ``VhostUserBackend`` stands in for the external
vhost-user process a ``type='vhostuser'`` NIC needs (see its docstring for what it fakes).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import quoteattr

from tests import libvirt_env as env

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def args(*values: str) -> str:
    """One <qemu:commandline> element with these arguments."""
    inner = "".join(f"<qemu:arg value={quoteattr(value)}/>" for value in values)
    return f"<qemu:commandline>{inner}</qemu:commandline>"


def override(alias: str, *props: tuple[str, str, Optional[str]]) -> str:
    inner = "".join(
        f"<qemu:property name='{name}' type='{kind}'"
        + (f" value={quoteattr(value)}" if value is not None else "")
        + "/>"
        for name, kind, value in props
    )
    return (
        f"<qemu:override><qemu:device alias='{alias}'><qemu:frontend>{inner}"
        "</qemu:frontend></qemu:device></qemu:override>"
    )


# --- what QEMU says ------------------------------------------------------------------------------


def monitor(name: str, command: str, **arguments: str) -> object:
    request = json.dumps({"execute": command, "arguments": arguments})
    reply = json.loads(env.virsh("qemu-monitor-command", name, request).stdout)
    return reply["return"]


# Where QEMU puts devices: -device with an id, -device without one, and the devices QEMU
# builds itself (-net nic) or libvirt's without an id.
_CONTAINERS = ("/machine/peripheral", "/machine/peripheral-anon", "/machine/unattached")


def virtio_net_tx(name: str) -> dict[str, str]:
    """Every virtio-net device of a running domain and its tx, as QEMU reports it."""
    found: dict[str, str] = {}
    for container in _CONTAINERS:
        children = monitor(name, "qom-list", path=container)
        assert isinstance(children, list)
        for child in children:
            if child["type"].startswith("child<virtio-net"):
                path = f"{container}/{child['name']}"
                tx = monitor(name, "qom-get", path=path, property="tx")
                assert isinstance(tx, str)
                found[path] = tx
    return found


def device_types(name: str) -> dict[str, str]:
    """The QOM type of each device libvirt or the command line gave an id: id -> type."""
    children = monitor(name, "qom-list", path="/machine/peripheral")
    assert isinstance(children, list)
    return {
        child["name"]: child["type"][len("child<") : -1]
        for child in children
        if child["type"].startswith("child<")
    }


@dataclass
class Start:
    """One `virsh start --paused` and, when the domain ran, what QEMU reported."""

    returncode: int
    stderr: str
    tx: dict[str, str] = field(default_factory=dict)  # QOM path -> tx, every virtio-net device
    types: dict[str, str] = field(default_factory=dict)  # device id -> QOM type


def start(name: str) -> Start:
    result = env.virsh("start", "--paused", name, check=False, timeout=180)
    outcome = Start(result.returncode, result.stderr)
    if result.returncode == 0:
        outcome.tx = virtio_net_tx(name)
        outcome.types = device_types(name)
    return outcome


def start_all(names: Sequence[str]) -> list[Start]:
    # Paused TCG domains cost little; a few starts at a time keep the files quick.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(start, names))


def destroy_all(names: Sequence[str]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: env.virsh("destroy", name, check=False), names))


# --- what the tools say --------------------------------------------------------------------------


def findings_by_file(
    result: subprocess.CompletedProcess[str],
) -> dict[str, list[dict[str, object]]]:
    report = json.loads(result.stdout)
    found: dict[str, list[dict[str, object]]] = {name: [] for name in report["files"]}
    for finding in report["findings"]:
        found.setdefault(str(finding["file"]), []).append(finding)
    return found


def validate(
    paths: Sequence[Path], policy: Path, caps: Sequence[Path] = ()
) -> dict[str, list[dict[str, object]]]:
    command = [str(env.VENV_BIN / "validate-domain"), "-p", str(policy), "-f", "json"]
    for snapshot in caps:
        command += ["--caps", str(snapshot)]
    result = subprocess.run(
        [*command, *map(str, paths)], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode in (0, 1), result.stderr
    return findings_by_file(result)


# --- a stand-in vhost-user backend ---------------------------------------------------------------

_GET_FEATURES = 1
_REPLY = 0x4
_VERSION = 0x1
# VIRTIO_F_VERSION_1 (a modern-only device refuses a backend without it) and MRG_RXBUF; no
# VHOST_USER_F_PROTOCOL_FEATURES, so QEMU negotiates nothing more.
_FEATURES = (1 << 32) | (1 << 15)


class VhostUserBackend:
    """A unix socket that answers the vhost-user handshake QEMU makes when it creates a
    ``-netdev vhost-user`` (``type='vhostuser'``, ``mode='client'``: QEMU connects here).

    A fake, because no vhost-user network backend ships with Debian 12 (passt gained one later,
    DPDK needs hugepages): it answers GET_FEATURES and swallows every other message and the
    descriptors they carry, which is all QEMU asks before the guest's driver starts the device.
    The domains stay paused, so no packet is ever exchanged; the virtio-net device and its tx are
    QEMU's own, which is what the tests read.
    """

    def __init__(self, directory: Path) -> None:
        # QEMU runs as libvirt's qemu user: the directory and the socket must be open to it.
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        self.path = directory / "vhost-user.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self.path.chmod(0o777)
        self._server.listen(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            while True:
                fds = array.array("i")
                try:
                    header, ancillary, _, _ = conn.recvmsg(12, socket.CMSG_LEN(64 * fds.itemsize))
                except OSError:
                    return
                if len(header) < 12:
                    return
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                for fd in fds:
                    os.close(fd)
                request, _flags, size = struct.unpack("<III", header)
                remaining = size
                while remaining:
                    chunk = conn.recv(remaining)
                    if not chunk:
                        return
                    remaining -= len(chunk)
                if request == _GET_FEATURES:
                    reply = struct.pack("<IIIQ", request, _VERSION | _REPLY, 8, _FEATURES)
                    conn.sendall(reply)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


@contextlib.contextmanager
def vhost_user_backend(directory: Path) -> Iterator[VhostUserBackend]:
    backend = VhostUserBackend(directory)
    try:
        yield backend
    finally:
        backend.close()
