"""cache.py: the probe cache is keyed like libvirt's, trusts no doubtful file, never crashes."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from libvirt_txmode import __version__
from libvirt_txmode.common.files import write_atomic
from libvirt_txmode.common.paths import default_cache_dir
from libvirt_txmode.engine.model import Support, SupportState
from libvirt_txmode.host import probe_cache as cache_module
from libvirt_txmode.host.emulator import EmulatorIdentity, identify
from libvirt_txmode.host.probe_cache import (
    FORMAT,
    FORMAT_VERSION,
    ProbeCache,
    support_from_json,
    support_to_json,
)

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="owner checks are about root's cache")
LOGGER = "libvirt_txmode.host.probe_cache"

PCI = Support(SupportState.SUPPORTED, "tx listed by -device virtio-net-pci,help", "help")
CCW = Support(SupportState.UNSUPPORTED, "this QEMU has no device virtio-net-ccw", "qmp")
MMIO_UNKNOWN = Support(SupportState.UNKNOWN, "gave no readable answer", "auto")


@pytest.fixture
def emulator(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "qemu-system-x86_64"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF pretend\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def only_json(directory: Path) -> Path:
    found = [p for p in directory.iterdir() if p.suffix == ".json"]
    assert len(found) == 1, cache_files(directory)
    return found[0]


def corrupt_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- round trip and keys -----------------------------------------------------------------------


def test_store_load_roundtrip(emulator: Path, cache_dir: Path) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    assert cache.load(identity) == {}
    cache.store(identity, {"virtio-net-pci": PCI, "virtio-net-device": MMIO_UNKNOWN})
    cache.store(identity, {"virtio-net-ccw": CCW})  # merged with what is there
    assert cache.load(identity) == {"virtio-net-pci": PCI, "virtio-net-ccw": CCW}
    assert ProbeCache(str(cache_dir)).load(identity) == {
        "virtio-net-pci": PCI,
        "virtio-net-ccw": CCW,
    }

    path = only_json(cache_dir)
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # names emulators: private, like libvirt
    document = json.loads(path.read_text())
    assert {k: v for k, v in document.items() if k != "written"} == {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": __version__,
        "emulator": str(emulator),
        "identity": identity.key(),
        "devices": {
            "virtio-net-ccw": {"state": "unsupported", "detail": CCW.detail, "method": "qmp"},
            "virtio-net-pci": {"state": "supported", "detail": PCI.detail, "method": "help"},
        },
    }
    # Only the data file and the lock: no temporary file is left behind.
    assert [n for n in cache_files(cache_dir) if not n.endswith((".json", ".lock"))] == []


def test_no_directory_means_no_cache(emulator: Path) -> None:
    cache = ProbeCache(None)
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    assert cache.load(identity) == {}
    with cache.lock(identity, timeout=1) as locked:
        assert locked is False


def test_identity_key_follows_the_binary(emulator: Path, tmp_path: Path) -> None:
    before = identify(str(emulator))
    os.utime(emulator, ns=(before.mtime_ns + 10**9, before.mtime_ns + 10**9))  # touch
    touched = identify(str(emulator))
    assert touched.key() != before.key()
    replacement = tmp_path / "bin" / "new"
    replacement.write_bytes(emulator.read_bytes())
    os.replace(replacement, emulator)  # same path and size, new inode
    replaced = identify(str(emulator))
    assert replaced.inode != before.inode
    assert replaced.key() != touched.key()


def test_changed_binary_is_not_cached(
    emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = ProbeCache(str(cache_dir))
    old = identify(str(emulator))
    cache.store(old, {"virtio-net-pci": PCI})
    emulator.write_bytes(b"\x7fELF a new build, longer\n")
    new = identify(str(emulator))
    assert cache.load(new) == {}
    assert f"is for another build of {emulator}: re-probing" in caplog.text
    assert corrupt_warnings(caplog) == []  # an upgrade of QEMU is no cause for alarm
    cache.store(new, {"virtio-net-ccw": CCW})
    assert cache.load(new) == {"virtio-net-ccw": CCW}  # the old build's answers are gone
    assert cache.load(old) == {}


def test_other_tool_version_is_stale(
    emulator: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    identity = identify(str(emulator))
    monkeypatch.setattr(cache_module, "__version__", "0.0.1-old")
    ProbeCache(str(cache_dir)).store(identity, {"virtio-net-pci": PCI})
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert ProbeCache(str(cache_dir)).load(identity) == {}
    assert "was written by version '0.0.1-old': re-probing" in caplog.text
    assert corrupt_warnings(caplog) == []


# --- damaged files: ignored, warned about, replaced ----------------------------------------------


def _valid(identity: EmulatorIdentity) -> dict[str, object]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": __version__,
        "emulator": identity.path,
        "identity": identity.key(),
        "devices": {"virtio-net-pci": support_to_json(PCI)},
    }


def _with(identity: EmulatorIdentity, **changes: object) -> bytes:
    document = _valid(identity)
    document.update(changes)
    return json.dumps(document).encode()


BAD_DOCUMENTS = {
    "not JSON": lambda i: b"this is not json",
    "empty": lambda i: b"",
    "truncated": lambda i: json.dumps(_valid(i)).encode()[:60],
    "not UTF-8": lambda i: b'{"format": "\xff\xfe"}',
    "a list": lambda i: b"[]",
    "wrong format": lambda i: _with(i, format="libvirt-txmode-snapshot"),
    "wrong format version": lambda i: _with(i, version=FORMAT_VERSION + 1),
    "devices a list": lambda i: _with(i, devices=["virtio-net-pci"]),
    "device entry a string": lambda i: _with(i, devices={"virtio-net-pci": "supported"}),
    "state missing": lambda i: _with(i, devices={"virtio-net-pci": {"detail": "x"}}),
    "state invalid": lambda i: _with(i, devices={"virtio-net-pci": {"state": "maybe"}}),
    "devices missing": lambda i: json.dumps(
        {k: v for k, v in _valid(i).items() if k != "devices"}
    ).encode(),
    "deeply nested": lambda i: b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_damaged_file_is_ignored_warned_and_replaced(
    case: str, emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    path = only_json(cache_dir)
    path.write_bytes(BAD_DOCUMENTS[case](identity))

    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert cache.load(identity) == {}
    assert corrupt_warnings(caplog) and all(
        f"probe cache {path} is corrupt (" in m and m.endswith("): it will be replaced")
        for m in corrupt_warnings(caplog)
    ), caplog.text

    cache.store(identity, {"virtio-net-ccw": CCW})
    assert cache.load(identity) == {"virtio-net-ccw": CCW}
    assert json.loads(path.read_text())["format"] == FORMAT


def test_oversized_file_is_corrupt(
    emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    document = _valid(identity)
    document["padding"] = "x" * cache_module.MAX_CACHE_BYTES
    only_json(cache_dir).write_text(json.dumps(document))
    assert cache.load(identity) == {}
    assert "is corrupt" in caplog.text


@AS_ROOT
def test_file_not_owned_by_root_is_ignored(
    emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    path = only_json(cache_dir)
    os.chown(path, 65534, 65534)
    assert cache.load(identity) == {}
    assert (
        f"probe cache {path} is not trusted (file {path} is owned by uid 65534, not root; "
        f"fix: chown root {path}): ignored" in caplog.text
    )
    cache.store(identity, {"virtio-net-ccw": CCW})  # replaced by root's own file
    assert path.stat().st_uid == 0
    assert cache.load(identity) == {"virtio-net-ccw": CCW}


def test_group_writable_file_is_ignored(
    emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    path = only_json(cache_dir)
    path.chmod(0o664)
    assert cache.load(identity) == {}
    assert (
        f"probe cache {path} is not trusted (file {path} is writable by group or others "
        f"(mode 0664); fix: chmod go-w {path}): ignored" in caplog.text
    )


def test_symlinked_file_is_not_followed(
    emulator: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    path = only_json(cache_dir)
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    assert cache.load(identity) == {}
    assert f"probe cache {path} unreadable (Too many levels of symbolic links): ignored" in (
        caplog.text
    )


@pytest.mark.parametrize("mode_or_owner", ["world-writable", "other owner"])
def test_doubtful_directory_is_ignored(
    mode_or_owner: str, emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if mode_or_owner == "other owner" and os.geteuid() != 0:
        pytest.skip("needs root to chown")
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    cache.store(identity, {"virtio-net-pci": PCI})
    if mode_or_owner == "world-writable":
        cache_dir.chmod(0o777)
    else:
        os.chown(cache_dir, 65534, 65534)
    assert cache.load(identity) == {}
    reason = (
        f"directory {cache_dir} is writable by group or others (mode 0777); "
        f"fix: chmod go-w {cache_dir}"
        if mode_or_owner == "world-writable"
        else f"directory {cache_dir} is owned by uid 65534, not root; fix: chown root {cache_dir}"
    )
    assert f"probe cache {cache_dir} is not trusted ({reason}): ignored" in caplog.text
    cache.store(identity, {"virtio-net-ccw": CCW})  # nothing written into a doubtful directory
    assert json.loads(only_json(cache_dir).read_text())["devices"] == {
        "virtio-net-pci": support_to_json(PCI)
    }


def test_directory_that_is_a_file(
    emulator: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Root ignores permission bits, so "cannot write" is made the way that stops root too.
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("not a directory\n")
    cache = ProbeCache(str(blocker))
    identity = identify(str(emulator))
    assert cache.load(identity) == {}
    assert f"probe cache {blocker} is not a directory: ignored" in caplog.text
    caplog.clear()
    cache.store(identity, {"virtio-net-pci": PCI})  # no exception: the caller's answer stands
    assert f"probe cache {blocker} unusable: File exists" in caplog.text
    with cache.lock(identity, timeout=1) as locked:
        assert locked is False
    assert blocker.read_text() == "not a directory\n"


def test_directory_under_a_file(
    emulator: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    directory = blocker / "cache"
    cache = ProbeCache(str(directory))
    identity = identify(str(emulator))
    assert cache.load(identity) == {}
    cache.store(identity, {"virtio-net-pci": PCI})
    assert f"probe cache {directory} unusable: Not a directory" in caplog.text
    assert cache.load(identity) == {}


def test_missing_directory_is_silent_on_load(
    emulator: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert ProbeCache(str(cache_dir)).load(identify(str(emulator))) == {}
    assert caplog.records == []
    assert not cache_dir.exists()


# --- write_atomic -------------------------------------------------------------------------------


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    write_atomic(str(target), b"one\n")
    write_atomic(str(target), b"two\n", mode=0o600)
    assert target.read_bytes() == b"two\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert cache_files(tmp_path) == ["file.json"]


def test_write_atomic_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    (target / "child").mkdir(parents=True)
    with pytest.raises(OSError):
        write_atomic(str(target), b"data")  # rename onto a non-empty directory fails
    assert cache_files(tmp_path) == ["a-directory"]


# --- locking and concurrency --------------------------------------------------------------------


def test_lock_is_exclusive_and_times_out(emulator: Path, cache_dir: Path) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    with cache.lock(identity, timeout=1) as locked:
        assert locked is True
        # Another hook (another open file description) must wait, then go on without the lock.
        with cache.lock(identity, timeout=0.2) as second:
            assert second is False
    with cache.lock(identity, timeout=0.2) as again:
        assert again is True  # released on exit


def test_lock_held_by_another_holder(emulator: Path, cache_dir: Path) -> None:
    cache = ProbeCache(str(cache_dir))
    identity = identify(str(emulator))
    with cache.lock(identity, timeout=1):
        pass
    lock_path = next(p for p in cache_dir.iterdir() if p.suffix == ".lock")
    with open(lock_path, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with cache.lock(identity, timeout=0.2) as locked:
            assert locked is False


def _store_one(directory: str, emulator: str, index: int, locked: bool) -> None:
    cache = ProbeCache(directory)
    identity = identify(emulator)
    support = Support(SupportState.SUPPORTED, f"writer {index}", "help")
    for _ in range(5):
        if locked:
            with cache.lock(identity, timeout=30) as got:
                assert got
                cache.store(identity, {f"device-{index}": support})
        else:
            cache.store(identity, {f"device-{index}": support})


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
def test_concurrent_writers_leave_a_valid_file(
    locked: bool, emulator: Path, cache_dir: Path
) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_store_one, args=(str(cache_dir), str(emulator), i, locked))
        for i in range(10)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * 10

    loaded = ProbeCache(str(cache_dir)).load(identify(str(emulator)))
    expected = {
        f"device-{i}": Support(SupportState.SUPPORTED, f"writer {i}", "help") for i in range(10)
    }
    if locked:
        # Under the lock (as local.py stores), every writer's answer survives.
        assert loaded == expected
    else:
        # Unlocked, a writer may overwrite another's merge, but the file is never torn.
        assert loaded and all(expected[d] == s for d, s in loaded.items())
    assert [n for n in cache_files(cache_dir) if n.startswith(".tmp-")] == []


# --- helpers ------------------------------------------------------------------------------------


def test_support_json_roundtrip() -> None:
    for support in (PCI, CCW, MMIO_UNKNOWN):
        assert support_from_json(support_to_json(support)) == support
    assert support_from_json({"state": "supported"}) == Support(SupportState.SUPPORTED, "", "")
    with pytest.raises(TypeError):
        support_from_json(["supported"])


@AS_ROOT
def test_default_cache_dir_as_root() -> None:
    assert default_cache_dir() == "/var/cache/libvirt-txmode"
