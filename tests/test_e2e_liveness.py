"""End to end: is the hook live in the real libvirtd? install without a reload, doctor, the
canary, a reload, and a forbidden start.

A module of its own, not test_e2e_libvirt.py: these tests need a daemon that has never seen a
qemu hook, and that module's hook fixture keeps one installed until the module ends.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.admin.hook_file import installed_copies
from libvirt_txmode.admin.liveness import CANARY_PREFIX
from tests import libvirt_env as env

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
action: enforce
on_unknown: deny
on_error: deny
emulators: [/usr/bin/qemu-system-*]
defaults:
  allowed: [iothread, timer]
rules:
  - name: no-timer-here
    match: {domain: "txmtest-notimer-*"}
    allowed: [iothread]
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env.VENV_BIN / "libvirt-txmode"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def live_check(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    return checks["live"]


def canaries() -> list[str]:
    names = env.virsh("list", "--all", "--name").stdout.split()
    return [name for name in names if name.startswith(CANARY_PREFIX)]


@pytest.fixture
def unaware_daemon(tmp_path: Path) -> Iterator[Path]:
    """A daemon started while no qemu hook existed; the test's config under tmp_path; whatever
    the test installs is uninstalled after it and the daemon reloaded."""
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    present = installed_copies("/etc/libvirt/hooks")
    assert not present, f"a libvirt-txmode hook is already installed: {present}"
    env.restart_daemon()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "policy.yaml").write_text(POLICY)
    try:
        yield tmp_path
    finally:
        cli("uninstall-hook", *env.install_args(tmp_path))
        env.reload_daemon()
        assert not installed_copies("/etc/libvirt/hooks")


def forbidden_domain(tmp_path: Path) -> str:
    name = f"{env.PREFIX}notimer-{uuid.uuid4().hex[:6]}"
    path = tmp_path / f"{name}.xml"
    path.write_text(env.domain_xml(name, txmode="timer"))
    env.virsh("define", str(path))
    return name


def test_hook_installed_without_reload_is_critical_until_the_daemon_reloads(
    unaware_daemon: Path,
) -> None:
    base = unaware_daemon
    args = env.install_args(base)
    installed = cli("install-hook", "--no-reload", "--no-snapshot", *args)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines()[-1] == "daemon not reloaded (--no-reload)"
    name = forbidden_domain(base)
    try:
        # What the issue saw: the gate is installed, yet a forbidden domain starts.
        assert env.virsh("start", name, check=False).returncode == 0
        env.virsh("destroy", name)

        by_time = cli("doctor", *args, "-f", "json")
        assert by_time.returncode == 2, by_time.stdout
        live = live_check(by_time)
        assert live["status"] == "fail"
        assert "and no reload since is known: libvirt does not run a hook" in live["detail"]
        assert "fix: reload the daemon (systemctl reload libvirtd, or kill -HUP " in live["detail"]

        canary = cli("doctor", "--canary", *args, "-f", "json")
        assert canary.returncode == 2, canary.stdout
        live = live_check(canary)
        assert live["status"] == "fail"
        assert live["detail"].startswith(f"the gate is off: canary domain {CANARY_PREFIX}")
        assert "STARTED (paused, destroyed at once)" in live["detail"]
        assert canaries() == []

        env.reload_daemon()
        canary = cli("doctor", "--canary", *args, "-f", "json")
        assert canary.returncode in (0, 1), canary.stdout  # 1: no snapshot taken (a warning)
        live = live_check(canary)
        assert live["status"] == "ok"
        assert "was refused by the hook: libvirtd runs the hook" in live["detail"]
        assert canaries() == []
        by_time = cli("doctor", *args, "-f", "json")
        assert by_time.returncode in (0, 1), by_time.stdout
        assert live_check(by_time)["detail"].startswith("a canary proved libvirtd (pid ")

        refused = env.virsh("start", name, check=False)
        assert refused.returncode != 0 and "[txmode-not-allowed" in refused.stderr
    finally:
        env.remove_domain(name)


def test_install_hook_reloads_proves_it_with_a_canary_and_a_second_run_changes_nothing(
    unaware_daemon: Path,
) -> None:
    args = ["--no-snapshot", *env.install_args(unaware_daemon)]
    first = cli("install-hook", *args)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[-2].startswith("sent SIGHUP to libvirtd (pid ")
    assert lines[-1].startswith(f"proven live: canary domain {CANARY_PREFIX}")
    assert lines[-1].endswith(" was refused by the hook")
    second = cli("install-hook", *args)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert "nothing changed: every file is already as this install would write it" in lines
    assert lines[-1].startswith(
        "daemon not reloaded: nothing changed and a canary proved libvirtd (pid "
    )
    assert canaries() == []


def test_quiet_snapshot_prints_nothing_when_all_is_well(tmp_path: Path) -> None:
    env.require_libvirt()
    env.daemon_up()
    target = tmp_path / "snapshot.json"
    quiet = cli("snapshot", "-q", "-o", str(target))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert json.loads(target.read_text())["format"] == "libvirt-txmode-snapshot"
    loud = cli("snapshot", "-o", str(target))
    assert loud.stdout.startswith(f"wrote {target}: ")
