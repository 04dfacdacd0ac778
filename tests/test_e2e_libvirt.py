"""End to end: the hook installed by `libvirt-txmode install-hook` in a real libvirtd, real QEMU.

Domains have no disk and one `<interface type='user'>` virtio NIC, so they start in about half a
second under TCG. Every test removes what it defines; leftovers of a killed run are removed first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    base = tmp_path_factory.mktemp("hook")
    with env.installed_hook(base, POLICY) as path:
        yield path, base / "etc" / "policy.yaml"


@pytest.fixture
def policy_file(hook: tuple[Path, Path]) -> Iterator[Path]:
    path = hook[1]
    yield path
    path.write_text(POLICY)  # tests that edit the policy leave it as the module found it


@pytest.fixture
def syslog(hook: tuple[Path, Path]) -> Iterator[env.SyslogSink]:
    # libvirtd runs the hook, which logs to the socket in its own directory (installed_hook).
    with env.SyslogSink(env.hook_log_dir(hook[1].parent.parent)) as sink:
        yield sink


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[Defined]:
    defined = Defined(tmp_path)
    yield defined
    for name in defined.names:
        env.remove_domain(name)


class Defined:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.names: list[str] = []

    def define(self, stem: str, **kwargs: object) -> str:
        name = f"{env.PREFIX}{stem}-{uuid.uuid4().hex[:6]}"
        path = self.tmp / f"{name}.xml"
        path.write_text(env.domain_xml(name, **kwargs))  # type: ignore[arg-type]
        env.virsh("define", str(path))
        self.names.append(name)
        return name


@pytest.mark.parametrize(("txmode", "qemu_value"), [("iothread", "bh"), ("timer", "timer")])
def test_compliant_domain_starts_with_tx_on_its_device(
    hook: tuple[Path, Path], domains: Defined, syslog: env.SyslogSink, txmode: str, qemu_value: str
) -> None:
    name = domains.define("ok", txmode=txmode)
    env.virsh("start", name)
    assert f'"tx":"{qemu_value}"' in env.qemu_cmdline(name)
    assert any(f"allowed domain '{name}'" in line for line in syslog.lines())


def test_violating_domain_is_refused_with_the_hook_message(
    hook: tuple[Path, Path], domains: Defined, syslog: env.SyslogSink
) -> None:
    name = domains.define("notimer", txmode="timer")
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert "Hook script execution failed" in result.stderr
    assert (
        f"libvirt-txmode: domain '{name}' NIC #0 (52:54:00:7e:00:00): txmode 'timer' is not "
        "allowed by rule 'no-timer-here' (allowed: iothread) [txmode-not-allowed]"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert env.virsh("domstate", name).stdout.strip() == "shut off"
    logged = syslog.lines()
    assert any(
        "denied:" in line and name in line and "txmode-not-allowed" in line for line in logged
    )


def test_a_refusal_of_many_nics_names_twenty_and_counts_the_rest(
    hook: tuple[Path, Path], domains: Defined, syslog: env.SyslogSink
) -> None:
    # libvirt puts the hook's whole stderr into the error virsh prints: 25 violations show as
    # the first 20 and a count, while the log keeps all 25.
    name = domains.define("notimer-many", txmode="timer", nics=25)
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert result.stderr.count("[txmode-not-allowed]") == 20
    assert "NIC #19 (52:54:00:7e:00:13)" in result.stderr and "NIC #20 " not in result.stderr
    assert "... and 5 more violations (every one is logged as 'denied: ...'" in result.stderr
    assert f"refusing to start domain '{name}': 25 violations of" in result.stderr
    denied = [line for line in syslog.lines() if "denied:" in line and name in line]
    assert len(denied) == 25


def test_audit_mode_lets_the_domain_start_and_logs_the_violation(
    hook: tuple[Path, Path], policy_file: Path, domains: Defined, syslog: env.SyslogSink
) -> None:
    policy_file.write_text(POLICY.replace("action: enforce", "action: audit"))
    name = domains.define("notimer", txmode="timer")
    env.virsh("start", name)
    assert env.virsh("domstate", name).stdout.strip() == "running"
    logged = syslog.lines()
    assert any(
        "warning:" in line and name in line and "txmode-not-allowed" in line for line in logged
    )


OLD_QEMU = Path("/usr/local/libexec/txmtest-qemu-without-tx")


@pytest.fixture
def qemu_without_tx() -> Iterator[Path]:
    """A wrapper around the real QEMU whose `-device virtio-net-pci,help` lists no `tx`, as QEMU
    before 0.14 did. Real QEMU 7.2 cannot show a missing `tx`; libvirt's own QMP probing of the
    wrapper still sees the real binary, so the domain is defined and would start without the hook."""
    OLD_QEMU.parent.mkdir(parents=True, exist_ok=True)
    OLD_QEMU.write_text(
        "#!/bin/sh\n"
        'case "$*" in *virtio-net-pci,help*)\n'
        "  echo 'virtio-net-pci.vectors=uint32' >&2; echo 'virtio-net-pci.mac=macaddr' >&2; exit 0;;\n"
        "esac\n"
        'exec /usr/bin/qemu-system-x86_64 "$@"\n'
    )
    OLD_QEMU.chmod(0o755)
    yield OLD_QEMU
    OLD_QEMU.unlink()


def test_emulator_without_tx_is_refused(
    hook: tuple[Path, Path],
    policy_file: Path,
    domains: Defined,
    tmp_path: Path,
    qemu_without_tx: Path,
) -> None:
    policy_file.write_text(
        POLICY.replace("[/usr/bin/qemu-system-*]", f"[/usr/bin/qemu-system-*, {qemu_without_tx}]")
    )
    name = f"{env.PREFIX}oldqemu-{uuid.uuid4().hex[:6]}"
    xml = env.domain_xml(name, txmode="iothread").replace(
        "<devices>", f"<devices><emulator>{qemu_without_tx}</emulator>"
    )
    path = tmp_path / "old.xml"
    path.write_text(xml)
    env.virsh("define", str(path))
    domains.names.append(name)
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert (
        f"txmode 'iothread' needs the 'tx' property of virtio-net-pci, which {qemu_without_tx} "
        "does not have (virtio-net-pci has no tx property) [txmode-unsupported, rule 'defaults']"
    ) in result.stderr
    # Untrusted by the policy: never executed, support unknown, denied by on_unknown.
    policy_file.write_text(POLICY)
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert "not in the policy's trusted 'emulators' list [txmode-unknown-support" in result.stderr


def test_broken_policy_fails_closed_with_a_clear_message(
    hook: tuple[Path, Path], policy_file: Path, domains: Defined
) -> None:
    policy_file.write_text(POLICY.replace("on_unknown: deny", "on_unknwon: deny"))
    name = domains.define("ok", txmode="iothread")
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0
    assert f"{policy_file}:3: on_unknwon: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_daemon_restart_leaves_running_domain_alone(
    hook: tuple[Path, Path], policy_file: Path, domains: Defined
) -> None:
    """A failing `reconnect` makes libvirt kill the VM; the hook must not even check it."""
    name = domains.define("reconnect", txmode="timer")
    env.virsh("start", name)
    pid_before = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    # Under this policy a checking hook would refuse the domain, so a reconnect check would kill it.
    policy_file.write_text(POLICY.replace("allowed: [iothread, timer]", "allowed: [iothread]"))
    env.restart_daemon()
    state = env.virsh("domstate", name, "--reason").stdout.strip()
    assert state.startswith("running"), state
    assert Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip() == pid_before


def test_restore_is_checked_again(
    hook: tuple[Path, Path], policy_file: Path, domains: Defined, tmp_path: Path
) -> None:
    name = domains.define("restore", txmode="timer")
    env.virsh("start", name)
    image = tmp_path / "saved.img"
    env.virsh("save", name, str(image))
    policy_file.write_text(POLICY.replace("allowed: [iothread, timer]", "allowed: [iothread]"))
    refused = env.virsh("restore", str(image), check=False)
    assert refused.returncode != 0
    assert f"domain '{name}'" in refused.stderr and "[txmode-not-allowed" in refused.stderr
    policy_file.write_text(POLICY)
    env.virsh("restore", str(image))
    assert env.virsh("domstate", name).stdout.strip() == "running"


def test_unread_stdin_on_noop_events_is_safe(hook: tuple[Path, Path], domains: Defined) -> None:
    """The sh wrapper exits without reading stdin; a 1 MiB XML overflows the pipe, so libvirt must
    cope with EPIPE on start/started/stopped/release. It does: the whole life cycle succeeds."""
    name = domains.define("bigxml", txmode="iothread", padding=1024 * 1024)
    env.virsh("start", name)
    env.virsh("destroy", name)
    env.virsh("start", name)
    assert env.virsh("domstate", name).stdout.strip() == "running"


def test_kvm_domain_is_checked_too(hook: tuple[Path, Path], domains: Defined) -> None:
    if not os.path.exists("/dev/kvm"):
        env.skip_unless_ci("no /dev/kvm on this machine")
    name = domains.define("notimer-kvm", txmode="timer", domain_type="kvm")
    result = env.virsh("start", name, check=False)
    assert result.returncode != 0 and "[txmode-not-allowed" in result.stderr
    ok = domains.define("kvm", txmode="timer", domain_type="kvm")
    env.virsh("start", ok)
    assert '"tx":"timer"' in env.qemu_cmdline(ok)


# --- the operator's lifecycle (issue 12) ---------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env.VENV_BIN / "libvirt-txmode"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_doctor_passes_on_the_real_install(hook: tuple[Path, Path]) -> None:
    base = hook[1].parent.parent
    result = cli("doctor", *env.install_args(base), "-f", "json")
    assert result.returncode == 0, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["hook"]["detail"].startswith(f"{hook[0]}: ours")
    # install-hook took the snapshot; it matches this host's emulators.
    assert checks["snapshot"]["status"] == "ok", checks["snapshot"]
    assert checks["daemon"]["status"] == "ok"
    assert {c["status"] for c in checks.values()} <= {"ok", "info"}


def test_uninstalling_another_hooks_dir_leaves_libvirts_hook_alone(
    hook: tuple[Path, Path], domains: Defined, tmp_path: Path
) -> None:
    """The bug of one manifest per state directory: an install into a second hooks directory,
    sharing config, state and cache, and its uninstall, must not touch libvirt's own hook, nor
    reload the daemon."""
    base = hook[1].parent.parent
    other = ["--hooks-dir", str(tmp_path / "hooks"), *env.install_args(base)]
    pid = env.daemon_pid()
    installed = cli("install-hook", "--no-snapshot", *other)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines()[-1].startswith("daemon not reloaded:")
    removed = cli("uninstall-hook", *other)
    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / "hooks" / "qemu").exists()
    assert env.daemon_pid() == pid
    assert hook[0].exists() and hook[1].exists()
    name = domains.define("notimer", txmode="timer")
    refused = env.virsh("start", name, check=False)
    assert refused.returncode != 0 and "[txmode-not-allowed" in refused.stderr


def test_snapshot_shows_progress_and_check_sees_an_upgrade(tmp_path: Path) -> None:
    env.require_libvirt()
    env.daemon_up()
    target = tmp_path / "snapshot.json"
    taken = cli("snapshot", "-o", str(target))
    assert taken.returncode == 0, taken.stderr
    assert "libvirt-txmode: probing /usr/bin/qemu-system-x86_64\n" in taken.stderr
    checked = cli("snapshot", "--check", "-o", str(target))
    assert (checked.returncode, checked.stdout.splitlines()[-1]) == (
        0,
        f"{target} matches this host",
    )
    # What a QEMU upgrade does to the recorded identity (the binary itself is not replaced here).
    document = json.loads(target.read_text())
    entry = document["emulators"]["/usr/bin/qemu-system-x86_64"]
    entry["identity"] = entry["identity"].rsplit(":", 1)[0] + ":1"
    target.write_text(json.dumps(document))
    stale = cli("snapshot", "--check", "-o", str(target))
    assert stale.returncode == 1
    assert "stale: /usr/bin/qemu-system-x86_64 changed since the snapshot (upgraded?)" in (
        stale.stdout.splitlines()
    )


def test_removed_interpreter_refuses_with_one_line_and_reconnect_survives(
    tmp_path: Path, domains: Defined
) -> None:
    """The hook's venv vanishes under a running VM (a removed venv, a dist-upgrade): a start is
    refused naming the hook, the cause and the fix; a daemon restart (reconnect) keeps the VM."""
    env.require_libvirt()
    env.daemon_up()
    venv = env.fake_venv(tmp_path)
    with env.installed_hook(tmp_path, POLICY, python=str(venv / "bin" / "python3")) as path:
        running = domains.define("reconnect", txmode="iothread")
        env.virsh("start", running)
        shutil.rmtree(venv)
        name = domains.define("novenv", txmode="iothread")
        result = env.virsh("start", name, check=False)
        assert result.returncode != 0
        assert (
            f"libvirt-txmode: hook {path} cannot check domain '{name}': its interpreter "
            f"{venv}/bin/python3 is missing or not executable; fix: reinstall libvirt-txmode and "
            "run 'libvirt-txmode install-hook'"
        ) in result.stderr
        assert "refusing to start it (on_error: deny)" in result.stderr
        env.restart_daemon()
        assert env.virsh("domstate", running).stdout.strip() == "running"
        doctor = cli("doctor", *env.install_args(tmp_path))
        assert doctor.returncode == 2 and "fail interpreter:" in doctor.stdout  # CRITICAL


# Last: it installs over the module's hook in /etc/libvirt/hooks and removes it.
def test_uninstall_removes_the_gate(tmp_path: Path, domains: Defined) -> None:
    env.require_libvirt()
    env.daemon_up()
    with env.installed_hook(tmp_path, POLICY) as path:
        assert path.exists()
    assert not path.exists()
    name = domains.define("notimer", txmode="timer")
    env.virsh("start", name)  # nothing left to refuse it
    # No hook ran for it (other sessions on this machine may run hooks of their own domains).
    pattern = f"libvirt_txmode[.]hook .*-- {name} "
    assert subprocess.run(["pgrep", "-f", pattern], check=False).returncode != 0
