"""Real libvirt (Debian 12: 9.0, QEMU 7.2) agrees with libvirt_rules where this machine can show it.

Each test defines a domain, lets libvirt format it (``dumpxml``) and build or run its QEMU command
line, and checks that ``validate-domain`` on the XML as written, ``validate-domain`` on libvirt's
formatted XML and the installed hook on ``virsh start`` all reach the same verdict.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import libvirt_env as env
from tests.e2e_qemu import QEMU_NS

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
defaults:
  allowed: [iothread]
rules:
  - name: timer-allowed
    match: {domain: "txmtest-allowed-*"}
    allowed: [iothread, timer]
"""


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    base = tmp_path_factory.mktemp("fidelity")
    with env.installed_hook(base, POLICY):
        yield base / "etc" / "policy.yaml"


@pytest.fixture
def defined(tmp_path: Path) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        env.remove_domain(name)


def _define(tmp_path: Path, names: list[str], stem: str, interfaces: str, extra: str = "") -> str:
    name = f"{env.PREFIX}{stem}-{uuid.uuid4().hex[:6]}"
    xml = (
        f"<domain type='qemu' xmlns:qemu='{QEMU_NS}'><name>{name}</name>"
        "<memory unit='MiB'>128</memory><os><type arch='x86_64'>hvm</type></os>"
        f"<devices>{interfaces}</devices>{extra}</domain>"
    )
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    env.virsh("define", str(path))
    names.append(name)
    return name


def _validate(path: Path, policy: Path) -> tuple[int, list[tuple[object, object]]]:
    result = subprocess.run(
        [str(env.VENV_BIN / "validate-domain"), "-p", str(policy), "-f", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    report = json.loads(result.stdout)
    return result.returncode, [(f["interface"], f["code"]) for f in report["findings"]]


def _both_views(tmp_path: Path, name: str, written: str, policy: Path) -> list[object]:
    """validate-domain's verdict on the XML as written and on libvirt's dumpxml of it."""
    raw = tmp_path / "written.xml"
    raw.write_text(written)
    formatted = tmp_path / "formatted.xml"
    formatted.write_text(env.virsh("dumpxml", "--inactive", name).stdout)
    return [_validate(raw, policy), _validate(formatted, policy)]


def test_txmode_on_a_model_less_nic_never_reaches_qemu(
    hook: Path, tmp_path: Path, defined: list[str]
) -> None:
    name = _define(
        tmp_path,
        defined,
        "nomodel",
        "<interface type='user'><mac address='52:54:00:7f:00:01'/>"
        "<driver txmode='timer'/></interface>",
    )
    formatted = env.virsh("dumpxml", "--inactive", name).stdout
    # libvirt 9.0 fills in rtl8139 and keeps no txmode: it was never parsed.
    assert "<model type='rtl8139'/>" in formatted
    assert "txmode" not in formatted
    argv = env.virsh("domxml-to-native", "qemu-argv", "--domain", name).stdout
    assert '"driver":"rtl8139"' in argv and '"tx":' not in argv
    # A timer the policy forbids is no violation here: it is only ineffective (a warning).
    env.virsh("start", name)
    assert '"tx":' not in env.qemu_cmdline(name)
    written = (tmp_path / f"{name}.xml").read_text()
    views = _both_views(tmp_path, name, written, hook)
    assert views[0] == (0, [(0, "txmode-ineffective")])
    assert views[1] == (0, [])


def test_model_names_are_case_insensitive_in_libvirt_too(
    hook: Path, tmp_path: Path, defined: list[str]
) -> None:
    nic = (
        "<interface type='user'><mac address='52:54:00:7f:00:02'/><model type='VirtIO'/>"
        "<driver txmode='timer'/></interface>"
    )
    allowed = _define(tmp_path, defined, "allowed-case", nic)
    formatted = env.virsh("dumpxml", "--inactive", allowed).stdout
    assert "<model type='virtio'/>" in formatted and "txmode='timer'" in formatted
    # libvirt 9.0's domxml-to-native leaves tx out; the real start shows what QEMU gets.
    env.virsh("start", allowed)
    assert '"driver":"virtio-net-pci","tx":"timer"' in env.qemu_cmdline(allowed)
    written = (tmp_path / f"{allowed}.xml").read_text()
    assert _both_views(tmp_path, allowed, written, hook) == [(0, [])] * 2
    # Where the site forbids timer, CI on either form and the hook refuse alike.
    refused = _define(tmp_path, defined, "case", nic)
    written = (tmp_path / f"{refused}.xml").read_text()
    assert _both_views(tmp_path, refused, written, hook) == [(1, [(0, "txmode-not-allowed")])] * 2
    result = env.virsh("start", refused, check=False)
    assert result.returncode != 0 and "[txmode-not-allowed" in result.stderr


@pytest.mark.parametrize(
    ("extra", "route"),
    [
        (
            "<qemu:commandline><qemu:arg value='-global'/>"
            "<qemu:arg value='virtio-net-pci.tx=timer'/></qemu:commandline>",
            "-global virtio-net-pci.tx=timer in <qemu:commandline>",
        ),
        (
            "<qemu:override><qemu:device alias='net0'><qemu:frontend>"
            "<qemu:property name='tx' type='string' value='timer'/>"
            "</qemu:frontend></qemu:device></qemu:override>",
            "<qemu:override> of device 'net0'",
        ),
    ],
    ids=["commandline-global", "override"],
)
def test_tx_set_around_driver_txmode_is_checked_like_any_txmode(
    hook: Path, tmp_path: Path, defined: list[str], extra: str, route: str
) -> None:
    name = _define(
        tmp_path,
        defined,
        "route",
        "<interface type='user'><mac address='52:54:00:7f:00:03'/><model type='virtio'/>"
        "</interface>",
        extra,
    )
    # What libvirt hands QEMU (real start, timer allowed): the -global verbatim, or tx in the
    # NIC's own -device JSON.
    allowed = _define(
        tmp_path,
        defined,
        "allowed-route",
        "<interface type='user'><mac address='52:54:00:7f:00:05'/><model type='virtio'/>"
        "</interface>",
        extra,
    )
    env.virsh("start", allowed)
    cmdline = env.qemu_cmdline(allowed)
    assert "virtio-net-pci.tx=timer" in cmdline or '"tx":"timer"' in cmdline
    written = (tmp_path / f"{name}.xml").read_text()
    assert _both_views(tmp_path, name, written, hook) == [(1, [(0, "txmode-not-allowed")])] * 2
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert f"txmode 'timer' (set by {route}) is not allowed" in result.stderr


def test_an_unrelated_passthrough_argument_is_no_finding(
    hook: Path, tmp_path: Path, defined: list[str]
) -> None:
    name = _define(
        tmp_path,
        defined,
        "passthru",
        "<interface type='user'><mac address='52:54:00:7f:00:04'/><model type='virtio'/>"
        "<driver txmode='iothread'/></interface>",
        "<qemu:commandline><qemu:arg value='-global'/>"
        "<qemu:arg value='virtio-net-pci.mq=off'/></qemu:commandline>",
    )
    written = (tmp_path / f"{name}.xml").read_text()
    assert _both_views(tmp_path, name, written, hook) == [(0, [])] * 2
    env.virsh("start", name)
    assert '"tx":"bh"' in env.qemu_cmdline(name)


@pytest.fixture
def hostdev_network(tmp_path: Path) -> Iterator[str]:
    """A defined (not started: no SR-IOV here) <forward mode='hostdev'> network."""
    name = f"{env.PREFIX}pool-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "net.xml"
    path.write_text(
        f"<network><name>{name}</name><forward mode='hostdev' managed='yes'>"
        "<pf dev='txmtest-nodev0'/></forward></network>"
    )
    env.virsh("net-define", str(path))
    try:
        yield name
    finally:
        env.virsh("net-undefine", name, check=False)


def test_hook_reads_the_networks_forward_mode_from_libvirts_files(
    hook: Path, tmp_path: Path, defined: list[str], hostdev_network: str
) -> None:
    # libvirt would make this NIC a vfio-pci device: the txmode is dropped, so 'timer' breaks no
    # allowed list, and with 'ineffective: error' the hook says why it is pointless.
    assert Path(f"/etc/libvirt/qemu/networks/{hostdev_network}.xml").exists()
    original = hook.read_text()
    hook.write_text(
        original.replace("  allowed: [iothread]\n", "  allowed: [iothread]\n  ineffective: error\n")
    )
    try:
        name = _define(
            tmp_path,
            defined,
            "pool",
            f"<interface type='network'><mac address='52:54:00:7f:00:06'/>"
            f"<source network='{hostdev_network}'/><model type='virtio'/>"
            "<driver txmode='timer'/></interface>",
        )
        result = env.virsh("start", name, check=False)
    finally:
        hook.write_text(original)
    assert result.returncode != 0
    assert "is a hostdev pool: the NIC becomes a vfio-pci device" in result.stderr
    assert "[txmode-ineffective" in result.stderr and "txmode-not-allowed" not in result.stderr
