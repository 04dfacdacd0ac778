"""Inputs for the benchmarks: domain XML, corpora, a bench policy and capability snapshots.

Everything is generated, deterministic and written into the benchmark's temporary directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any, Optional

from libvirt_txmode.admin.hook_file import packaged
from libvirt_txmode.engine.model import Guest, HostCapabilities
from libvirt_txmode.host.emulator import identify
from libvirt_txmode.host.libvirt_snapshot import VIRTIO_NET_DEVICES
from libvirt_txmode.host.probe import probe
from libvirt_txmode.host.snapshot import Snapshot

QEMU = "/usr/bin/qemu-system-x86_64"


def _mac(domain: int, nic: int) -> str:
    return f"52:54:00:{(domain >> 8) & 0xFF:02x}:{domain & 0xFF:02x}:{nic & 0xFF:02x}"


def hook_domain(name: str, nics: int, emulator: str) -> bytes:
    """A domain the bench policy allows: every NIC virtio with a txmode, type='user' (no vhost)."""
    interfaces = "".join(
        f"    <interface type='user'>\n"
        f"      <mac address='{_mac(0, i)}'/>\n"
        f"      <model type='virtio'/>\n"
        f"      <driver txmode='{'iothread' if i % 2 == 0 else 'timer'}'/>\n"
        f"    </interface>\n"
        for i in range(nics)
    )
    # As libvirt passes it to prepare begin: the live XML, whose root carries the run-time id.
    live = _domain(name, "qemu", emulator, interfaces).replace(
        "<domain type='qemu'>", "<domain type='qemu' id='42'>", 1
    )
    return live.encode()


def large_domain(name: str, size: int, separator: str) -> bytes:
    """A 4-NIC domain of about ``size`` bytes, padded in <metadata> with elements of 1 KiB
    (libxml2 refuses one text node over 10 MB), joined by ``separator`` ('' for one line)."""
    element = "<x:p>" + "a" * 1024 + "</x:p>"
    count = max(1, size // (len(element) + len(separator)))
    padding = separator.join([element] * count)
    metadata = f"<metadata><x:pad xmlns:x='urn:pad'>{padding}</x:pad></metadata>"
    xml = hook_domain(name, 4, QEMU).decode()
    return xml.replace("</name>", f"</name>{metadata}", 1).encode()


def virsh_domain(name: str) -> str:
    """A fast-starting TCG domain: 128 MiB, no disk, a user-mode virtio NIC with a txmode."""
    interface = (
        "    <interface type='user'>\n"
        "      <model type='virtio'/>\n"
        "      <driver name='qemu' txmode='iothread'/>\n"
        "    </interface>\n"
    )
    return _domain(name, "qemu", QEMU, interface)


def _domain(name: str, virt: str, emulator: Optional[str], interfaces: str) -> str:
    emulator_line = f"    <emulator>{emulator}</emulator>\n" if emulator else ""
    return (
        f"<domain type='{virt}'>\n"
        f"  <name>{name}</name>\n"
        "  <memory unit='MiB'>128</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type arch='x86_64' machine='pc'>hvm</type>\n"
        "  </os>\n"
        "  <devices>\n"
        f"{emulator_line}"
        f"{interfaces}"
        "  </devices>\n"
        "</domain>\n"
    )


def corpus_domain(index: int, emulators: Sequence[Optional[str]] = (QEMU, None)) -> str:
    """Domain ``index`` of a corpus: 4 NICs, mostly passing, with a deterministic mix of failures.

    Against the bench policy and an x86_64 QEMU 7.2: every 3rd domain uses the timer on a storage
    network (txmode-not-allowed), every 7th a bogus txmode (txmode-invalid), every 11th a ccw NIC
    (txmode-unsupported on x86), every 5th an e1000 with txmode (txmode-ineffective warning).
    """
    emulator = emulators[index % len(emulators)]
    virt = "kvm" if index % 13 == 0 else "qemu"
    nics = []
    nics.append(_nic(index, 0, "network", "source network='default'", "virtio", "iothread"))
    storage_mode = "timer" if index % 3 == 0 else "iothread"
    nics.append(
        _nic(index, 1, "network", f"source network='storage{index % 4}'", "virtio", storage_mode)
    )
    if index % 5 == 0:
        nics.append(_nic(index, 2, "network", "source network='default'", "e1000", "iothread"))
    else:
        nics.append(_nic(index, 2, "bridge", "source bridge='br0'", "virtio", None))
    third = "bogus" if index % 7 == 0 else "timer"
    address = (
        "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0003'/>" if index % 11 == 0 else ""
    )
    nics.append(_nic(index, 3, "user", "", "virtio", third, address))
    return _domain(f"corpus-{index:05d}", virt, emulator, "".join(nics))


def _nic(  # noqa: PLR0917 - one positional per XML attribute reads best at the call sites
    domain: int,
    index: int,
    kind: str,
    source: str,
    model: str,
    txmode: Optional[str],
    extra: str = "",
) -> str:
    driver = f"      <driver txmode='{txmode}'/>\n" if txmode else ""
    source_line = f"      <{source}/>\n" if source else ""
    extra_line = f"      {extra}\n" if extra else ""
    return (
        f"    <interface type='{kind}'>\n"
        f"      <mac address='{_mac(domain, index)}'/>\n"
        f"{source_line}"
        f"      <model type='{model}'/>\n"
        f"{driver}"
        f"{extra_line}"
        "    </interface>\n"
    )


def write_corpus(
    directory: str, count: int, emulators: Sequence[Optional[str]] = (QEMU, None)
) -> list[str]:
    """``count`` domain files in ``directory``, 100 per subdirectory as a repository might hold."""
    paths = []
    for index in range(count):
        sub = os.path.join(directory, f"d{index // 100:03d}")
        if index % 100 == 0:
            os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"corpus-{index:05d}.xml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(corpus_domain(index, emulators))
        paths.append(path)
    return paths


def bench_policy(extra_emulator_globs: Sequence[str] = ()) -> str:
    """The packaged default policy, trusting the bench's wrapper emulators as well."""
    text = packaged("policy.yaml")
    globs = "".join(f"  - {glob}\n" for glob in extra_emulator_globs)
    marker = "  - /usr/libexec/qemu-kvm\n"
    assert marker in text, "packaged policy changed: update bench/domains.py"
    return text.replace(marker, marker + globs)


def snapshot_document(emulators: Sequence[str], host: str = "bench-host") -> dict[str, Any]:
    """A capability snapshot as ``libvirt-txmode snapshot`` writes it, without needing libvirt:
    the emulators are probed directly for every virtio-net transport, and the document comes
    from the snapshot codec itself (``Snapshot.to_json``)."""
    devices = {e: probe(e, VIRTIO_NET_DEVICES, timeout=10.0) for e in emulators}
    snapshot = Snapshot(
        host=host,
        source="",
        capabilities=HostCapabilities(
            name=host,
            guests=(Guest("x86_64", emulators[0], ("qemu", "kvm")),),
            devices=devices,
            arch="x86_64",
        ),
        identities={e: identify(e).key() for e in emulators},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        libvirt={
            "uri": "",
            "library_version": "9.0.0",
            "hypervisor": "QEMU",
            "hypervisor_version": "7.2.0",
        },
    )
    return snapshot.to_json()


def write_json(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(path, 0o644)
