"""`libvirt-txmode audit` against the real libvirtd: defined domains (inactive XML) and running
ones (live XML), including a NIC hot-plugged with `virsh attach-device --live`, for which libvirt
runs no hook at all. No hook is installed here: audit is what an operator runs before `enforce`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import libvirt_env as env

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
defaults:
  allowed: [iothread]
"""
TIMER_NIC = (
    "<interface type='user'><mac address='52:54:00:7e:01:01'/><model type='virtio'/>"
    "<driver txmode='timer'/></interface>"
)


@pytest.fixture(scope="module")
def daemon() -> None:
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    path.chmod(0o644)
    return path


@pytest.fixture
def defined(tmp_path: Path, daemon: None) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        env.remove_domain(name)


def define(tmp_path: Path, names: list[str], stem: str, **kwargs: object) -> str:
    name = f"{env.PREFIX}{stem}-{uuid.uuid4().hex[:6]}"
    # ACPI: without it QEMU's pc machine cannot hot-plug a PCI device.
    xml = env.domain_xml(name, **kwargs).replace("</os>", "</os><features><acpi/></features>")  # type: ignore[arg-type]
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    env.virsh("define", str(path))
    names.append(name)
    return name


def audit(policy: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(env.VENV_BIN / "libvirt-txmode"), "audit", "-p", str(policy),
            "--cache-dir", str(tmp_path / "cache"), "--no-color", *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip


def test_hot_plugged_nic_is_caught_in_the_live_xml(
    tmp_path: Path, policy: Path, defined: list[str]
) -> None:
    name = define(tmp_path, defined, "audit-hotplug", txmode="iothread")
    env.virsh("start", name)
    clean = audit(policy, tmp_path, "-d", name)
    assert (clean.returncode, clean.stderr) == (0, ""), clean.stdout
    nic = tmp_path / "nic.xml"
    nic.write_text(TIMER_NIC)
    env.virsh("attach-device", name, str(nic), "--live")  # no hook runs for this
    result = audit(policy, tmp_path, "-d", name)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{name} (live XML):")
    assert lines[0].endswith(
        f"error: domain '{name}' NIC #1 (52:54:00:7e:01:01): txmode 'timer' is not allowed by "
        "rule 'defaults' (allowed: iothread) [txmode-not-allowed]"
    )
    assert lines[1] == "2 files, 1 domain, 3 NICs: 1 error, 0 warnings"
    # The same run in JSON, validate-domain's format: the next start's XML is still clean.
    data = json.loads(audit(policy, tmp_path, "-d", name, "-f", "json").stdout)
    assert [f["file"] for f in data["findings"]] == [f"{name} (live XML)"]
    assert data["files"] == [f"{name} (inactive XML)", f"{name} (live XML)"]


def test_defined_domains_are_checked_in_their_inactive_xml(
    tmp_path: Path, policy: Path, defined: list[str]
) -> None:
    bad = define(tmp_path, defined, "audit-timer", txmode="timer")
    good = define(tmp_path, defined, "audit-ok", txmode="iothread")
    result = audit(policy, tmp_path, "-d", bad, "-d", good)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(f"{bad} (inactive XML):")
    assert "[txmode-not-allowed]" in result.stdout and good not in result.stdout
    # The whole host: every defined domain is there (other tests' domains may be too).
    everything = audit(policy, tmp_path, "-f", "json")
    files = json.loads(everything.stdout)["files"]
    assert f"{bad} (inactive XML)" in files and f"{good} (inactive XML)" in files
    # audit is validate-domain's report: --strict, -o FILE in another format.
    out = tmp_path / "audit.sarif"
    result = audit(policy, tmp_path, "-d", good, "-f", "sarif", "-o", str(out))
    assert result.returncode == 0 and json.loads(out.read_text())["version"] == "2.1.0"


def test_audit_cannot_run_is_exit_2(tmp_path: Path, policy: Path, daemon: None) -> None:
    missing = audit(policy, tmp_path, "-d", f"{env.PREFIX}no-such-domain")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"libvirt-txmode: error: no domain named '{env.PREFIX}no-such-domain' on qemu:///system\n"
    )
    policy.write_text("version: 1\nactoin: enforce\n")
    broken = audit(policy, tmp_path)
    assert (
        broken.returncode == 2 and f"bad policy: {policy}:2: actoin: unknown key" in broken.stderr
    )
    unreachable = audit(policy.with_name("ok.yaml"), tmp_path, "-c", "qemu:///nowhere")
    assert unreachable.returncode == 2


def test_audit_applies_the_policys_exceptions(
    tmp_path: Path, policy: Path, defined: list[str]
) -> None:
    """The same exceptions as the hook and validate-domain: silenced, reported, not counted."""
    two = define(tmp_path, defined, "audit-excepted", txmode="timer", nics=2)
    policy.write_text(
        POLICY + "exceptions:\n"
        f"  - match: {{domain: '{two}', mac: '52:54:00:7e:00:00'}}\n"
        "    reason: legacy appliance\n"
    )
    data = json.loads(audit(policy, tmp_path, "-d", two, "-f", "json").stdout)
    assert [f["mac"] for f in data["findings"]] == ["52:54:00:7e:00:01"]
    assert [f["suppression"]["reason"] for f in data["suppressed"]] == ["legacy appliance"]
    assert (data["summary"]["errors"], data["summary"]["suppressed"]) == (1, 1)
