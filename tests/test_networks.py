"""host/networks.py: libvirt networks' forward modes from libvirt's own files, believed only
when the trust rule says so (the hook runs as root; such a file decides how a NIC is checked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libvirt_txmode.host.networks import read_forward_modes

HOSTDEV = "<network><name>pool</name><forward mode='hostdev' managed='yes'/></network>"
STATUS = f"<networkstatus><class_id bitmap='0-2'/>{HOSTDEV}</networkstatus>"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the trust rule believes root's files")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    status, config = tmp_path / "run", tmp_path / "etc"
    for directory in (status, config):
        directory.mkdir(mode=0o755)
    return status, config


def _read(dirs: tuple[Path, Path], *names: str) -> dict[str, str]:
    return read_forward_modes(names, (str(dirs[0]), str(dirs[1])))


def test_status_file_wins_over_the_definition(dirs: tuple[Path, Path]) -> None:
    (dirs[0] / "pool.xml").write_text(STATUS)
    (dirs[1] / "pool.xml").write_text("<network><name>pool</name></network>")
    (dirs[1] / "lan.xml").write_text("<network><name>lan</name><forward/></network>")
    assert _read(dirs, "pool", "lan", "missing") == {"pool": "hostdev", "lan": "nat"}


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_file_others_can_write_is_not_believed(
    dirs: tuple[Path, Path], mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = dirs[1] / "pool.xml"
    path.write_text(HOSTDEV)
    path.chmod(mode)
    assert _read(dirs, "pool") == {}
    assert f"ignoring libvirt network file {path}" in caplog.text
    assert "writable by group or others" in caplog.text


def test_a_directory_others_can_write_is_not_believed(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    (dirs[1] / "pool.xml").write_text(HOSTDEV)
    dirs[1].chmod(0o777)
    assert _read(dirs, "pool") == {}
    assert "writable by group or others" in caplog.text


def test_a_file_of_another_user_is_not_believed(dirs: tuple[Path, Path]) -> None:
    path = dirs[1] / "pool.xml"
    path.write_text(HOSTDEV)
    os.chown(path, 65534, 65534)
    assert _read(dirs, "pool") == {}


def test_an_untrusted_status_file_leaves_the_definition(dirs: tuple[Path, Path]) -> None:
    status = dirs[0] / "pool.xml"
    status.write_text("<networkstatus><network><name>pool</name></network></networkstatus>")
    status.chmod(0o666)
    (dirs[1] / "pool.xml").write_text(HOSTDEV)
    assert _read(dirs, "pool") == {"pool": "hostdev"}


def test_a_symlink_owned_by_another_user_is_not_followed(dirs: tuple[Path, Path]) -> None:
    target = dirs[0] / "real.xml"
    target.write_text(HOSTDEV)
    link = dirs[1] / "pool.xml"
    link.symlink_to(target)
    os.chown(link, 65534, 65534, follow_symlinks=False)
    assert _read(dirs, "pool") == {}


def test_a_fifo_does_not_hang_the_read(dirs: tuple[Path, Path]) -> None:
    os.mkfifo(dirs[1] / "pool.xml", 0o644)
    assert _read(dirs, "pool") == {}


def test_names_never_leave_libvirts_directories(dirs: tuple[Path, Path]) -> None:
    (dirs[0] / "x.xml").write_text(HOSTDEV)
    assert _read(dirs, "../run/x", ".x", "") == {}


def test_an_oversized_or_broken_file_is_no_answer(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    (dirs[1] / "big.xml").write_bytes(b"<network>" + b" " * (1024 * 1024) + b"</network>")
    (dirs[1] / "bad.xml").write_text("<network><forward mode='hostdev'>")
    assert _read(dirs, "big", "bad") == {}
    assert "cannot read libvirt network file" in caplog.text
