"""Faults around the hook: hostile emulators, broken caches and snapshots, concurrency.

Each case runs the installed hook as libvirt would and asserts the decision, the message and that
nothing hung or was trusted that should not be. Fake emulators stand in for what the real QEMU
cannot show (a probe that hangs, a QEMU without ``tx``); each says so where it is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from libvirt_txmode.engine.model import Guest, HostCapabilities, Support, SupportState
from libvirt_txmode.host.snapshot import Snapshot
from tests import libvirt_env as env
from tests.hookrun import POLICY, HookResult, domain, make_hook, nic, shared_dir

__all__ = ["shared_dir"]

QEMU = "/usr/bin/qemu-system-x86_64"
CCW = "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>"


def write_emulator(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def counting_emulator(directory: Path) -> tuple[Path, Path]:
    """A trusted wrapper that records each run and then is the real QEMU."""
    log_dir = directory / "log"
    log_dir.mkdir(mode=0o777)
    os.chmod(log_dir, 0o777)  # probes run as nobody
    calls = log_dir / "calls"
    calls.touch(mode=0o666)
    os.chmod(calls, 0o666)
    emulator = write_emulator(directory / "qemu-count", f'echo "$*" >> {calls}\nexec {QEMU} "$@"\n')
    return emulator, calls


def cache_files(cache_dir: str) -> list[Path]:
    """The probe cache's entries (compiled policy and verdicts live beside them)."""
    if not os.path.isdir(cache_dir):
        return []
    return sorted(
        p for p in Path(cache_dir).glob("*.json") if not p.name.startswith(("policy-", "verdict-"))
    )


def test_twenty_parallel_hooks_with_a_cold_cache(tmp_path: Path, shared_dir: Path) -> None:
    hook = make_hook(tmp_path)
    emulator, calls = counting_emulator(shared_dir)
    cases: list[tuple[str, bytes, int]] = []
    for i in range(20):
        mac = f"52:54:00:00:01:{i:02x}"
        if i % 4 == 0:
            xml, expect = (
                domain(f"vm{i}", nic(mac, "iothread", extra=CCW), emulator=str(emulator)),
                1,
            )
            name = f"vm{i}"
        elif i % 4 == 1:
            name = f"vm{i}-notimer"
            xml, expect = domain(name, nic(mac, "timer"), emulator=str(emulator)), 1
        else:
            name = f"vm{i}"
            xml, expect = (
                domain(name, nic(mac, "timer" if i % 2 else "iothread"), emulator=str(emulator)),
                0,
            )
        cases.append((name, xml, expect))

    results: dict[str, HookResult] = {}

    def run(name: str, xml: bytes) -> None:
        results[name] = hook.run(name, "prepare", "begin", "-", stdin=xml, timeout=120)

    threads = [threading.Thread(target=run, args=(name, xml)) for name, xml, _ in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name, _, expect in cases:
        result = results[name]
        assert result.returncode == expect, (name, result.stderr)
        if name.endswith("-notimer"):
            assert (
                "is not allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed]"
                in result.stderr
            )
        elif expect:
            assert (
                "does not have (this QEMU has no device virtio-net-ccw) [txmode-unsupported"
                in result.stderr
            )
        assert "Traceback" not in result.stderr

    # One probe per device the domains need, and one QMP session for the type ancestry
    # (-machine none), however many hooks raced for them.
    probed = sorted(line.split()[1] for line in calls.read_text().splitlines())
    assert probed == ["none", "virtio-net-ccw,help", "virtio-net-pci,help"]
    # The cache is intact: one valid document holding both answers.
    (entry,) = cache_files(hook.layout.cache_dir)
    devices = json.loads(entry.read_text())["devices"]
    assert {devices["virtio-net-pci"]["state"], devices["virtio-net-ccw"]["state"]} == {
        "supported",
        "unsupported",
    }


def test_warm_cache_means_no_probe(tmp_path: Path, shared_dir: Path) -> None:
    hook = make_hook(tmp_path)
    emulator, calls = counting_emulator(shared_dir)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=str(emulator))
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    # The first run's probe: -device help and the ancestry's QMP session; the second none.
    assert len(calls.read_text().splitlines()) == 2


def test_hanging_probe_is_killed_and_counts_as_unknown(tmp_path: Path, shared_dir: Path) -> None:
    # Fake: real QEMU never hangs on -device help; this one ignores SIGTERM and leaves a child
    # holding the output pipe, the worst case for a reader.
    # dash has no `exec -a`: a sleep length unique to this run marks the processes instead.
    seconds = f"{1000 + int(shared_dir.name[-8:], 16) % 1000}.5"
    marker = f"sleep {seconds}"
    emulator = write_emulator(
        shared_dir / "qemu-hang", f"trap '' TERM\n{marker} &\nexec {marker}\n"
    )
    hook = make_hook(tmp_path, POLICY.replace("probe_timeout: 5", "probe_timeout: 1"))
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "libvirt-txmode: domain 'vm1' NIC #0 (52:54:00:00:00:01): cannot tell whether virtio-net-pci "
        f"supports txmode 'iothread': {emulator} -device virtio-net-pci,help did not finish within 1 s "
        "[txmode-unknown-support, rule 'defaults']"
    )
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    assert leftover.stdout == ""
    # A timeout is not an answer: nothing was cached, the next start probes again.
    assert cache_files(hook.layout.cache_dir) == []


def test_hanging_probe_with_on_unknown_allow_starts(tmp_path: Path, shared_dir: Path) -> None:
    emulator = write_emulator(shared_dir / "qemu-hang", "exec sleep 1000\n")
    policy = POLICY.replace("probe_timeout: 5", "probe_timeout: 1").replace(
        "on_unknown: deny", "on_unknown: allow"
    )
    hook = make_hook(tmp_path, policy)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


def test_emulator_without_tx_is_refused(tmp_path: Path, shared_dir: Path) -> None:
    # Fake: an old QEMU (before 0.14) whose virtio-net-pci has no tx property, in the old
    # "DEV.prop=type" help format on stderr.
    emulator = write_emulator(
        shared_dir / "qemu-old",
        "echo 'virtio-net-pci.vectors=uint32' >&2\necho 'virtio-net-pci.mac=macaddr' >&2\nexit 1\n",
    )
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "timer"), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert (
        f"txmode 'timer' needs the 'tx' property of virtio-net-pci, which {emulator} does not have "
        "(virtio-net-pci has no tx property) [txmode-unsupported" in result.stderr
    )


@pytest.mark.parametrize("where", ["outside-globs", "group-writable", "not-root-owned"])
def test_untrusted_emulator_is_never_executed(tmp_path: Path, shared_dir: Path, where: str) -> None:
    ran = shared_dir / "log"
    ran.mkdir(mode=0o777)
    os.chmod(ran, 0o777)
    name = "evil-qemu" if where == "outside-globs" else "qemu-evil"
    emulator = write_emulator(shared_dir / name, f'touch {ran}/ran\nexec {QEMU} "$@"\n')
    if where == "group-writable":
        os.chmod(emulator, 0o775)
    elif where == "not-root-owned":
        os.chown(emulator, 65534, 65534)
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "[txmode-unknown-support, rule 'defaults']" in result.stderr
    assert not (ran / "ran").exists()


def test_missing_emulator_is_unknown_support(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    xml = domain(
        "vm1", nic("52:54:00:00:00:01", "iothread"), emulator="/usr/bin/qemu-system-nonexistent"
    )
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "cannot tell whether virtio-net-pci supports txmode 'iothread'" in result.stderr
    assert "/usr/bin/qemu-system-nonexistent" in result.stderr


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b'{"format": "other"}', b"\x00" * 100, b"[]"]
)
def test_corrupt_cache_entry_is_replaced_not_trusted(tmp_path: Path, content: bytes) -> None:
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread", extra=CCW))
    first = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert first.returncode == 1
    (entry,) = cache_files(hook.layout.cache_dir)
    entry.write_bytes(content)
    again = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert (again.returncode, again.stderr) == (first.returncode, first.stderr)
    json.loads(entry.read_text())  # rewritten as a valid document


def test_forged_cache_saying_supported_is_not_trusted_when_writable(tmp_path: Path) -> None:
    # A cache entry others could have written is not evidence: the hook probes again.
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread", extra=CCW))
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 1
    (entry,) = cache_files(hook.layout.cache_dir)
    document = json.loads(entry.read_text())
    document["devices"]["virtio-net-ccw"]["state"] = "supported"
    entry.write_text(json.dumps(document))
    os.chmod(entry, 0o666)
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 1


def test_unusable_cache_directory_still_decides(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    Path(hook.layout.cache_dir).write_text("a file where the cache directory should be")
    ok = domain("vm1", nic("52:54:00:00:00:01", "iothread"))
    bad = domain("vm2", nic("52:54:00:00:00:02", "iothread", extra=CCW))
    assert hook.run("vm1", "prepare", "begin", "-", stdin=ok).returncode == 0
    result = hook.run("vm2", "prepare", "begin", "-", stdin=bad)
    assert result.returncode == 1
    assert "[txmode-unsupported" in result.stderr


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Path:
    """A full filesystem for the cache: a 64 KiB tmpfs filled up."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        with open(mount / "filler", "wb") as handle, contextlib.suppress(OSError):
            handle.write(b"x" * 1024 * 1024)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_cache_still_decides(tmp_path: Path, tiny_fs: Path) -> None:
    hook = make_hook(tmp_path / "h")
    cache = tiny_fs / "cache"
    wrapper = Path(hook.path)
    wrapper.write_text(
        wrapper.read_text().replace(f"CACHE={hook.layout.cache_dir}", f"CACHE={cache}")
    )
    os.makedirs(cache, exist_ok=True)
    ok = domain("vm1", nic("52:54:00:00:00:01", "iothread"))
    bad = domain("vm2", nic("52:54:00:00:00:02", "iothread", extra=CCW))
    assert hook.run("vm1", "prepare", "begin", "-", stdin=ok).returncode == 0
    result = hook.run("vm2", "prepare", "begin", "-", stdin=bad)
    assert result.returncode == 1
    assert "[txmode-unsupported" in result.stderr
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]  # no half-written files


@pytest.mark.parametrize(
    "content",
    [b"{", b"", b'{"format": "libvirt-txmode-snapshot", "version": 99}', b"null", b"\xff\xfe"],
    ids=["truncated", "empty", "wrong-version", "null", "binary"],
)
def test_bad_snapshot_is_ignored_and_logged(tmp_path: Path, content: bytes) -> None:
    hook = make_hook(tmp_path)
    os.makedirs(hook.layout.state_dir, exist_ok=True)
    Path(hook.layout.snapshot).write_bytes(content)
    ok = domain("vm1", nic("52:54:00:00:00:01", "iothread"))
    bad = domain("vm2", nic("52:54:00:00:00:02", "iothread", extra=CCW))
    with env.SyslogSink() as sink:
        assert hook.run("vm1", "prepare", "begin", "-", stdin=ok).returncode == 0
        assert hook.run("vm2", "prepare", "begin", "-", stdin=bad).returncode == 1
        assert any("ignoring snapshot" in line for line in sink.lines())


def test_snapshot_for_another_binary_is_not_believed(tmp_path: Path, shared_dir: Path) -> None:
    # A snapshot claims the ccw device is supported, but it was taken for a binary with another
    # identity (the emulator was upgraded since): the hook must probe instead of believing it.
    emulator, calls = counting_emulator(shared_dir)
    hook = make_hook(tmp_path)
    forged = Support(SupportState.SUPPORTED, "forged", "help")
    snapshot = Snapshot(
        host="h1",
        source="",
        capabilities=HostCapabilities(
            name="h1",
            guests=(Guest("x86_64", str(emulator), ("qemu",)),),
            devices={str(emulator): {"virtio-net-ccw": forged}},
        ),
        identities={str(emulator): f"{emulator}:1:2:3:4:5"},
    ).to_json()
    os.makedirs(hook.layout.state_dir, exist_ok=True)
    Path(hook.layout.snapshot).write_text(json.dumps(snapshot))
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread", extra=CCW), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "[txmode-unsupported" in result.stderr
    first, *rest = calls.read_text().splitlines()
    assert first.split() == ["-device", "virtio-net-ccw,help"]
    assert [line.split()[:2] for line in rest] == [["-machine", "none"]]  # the ancestry
