"""The Debian package, built from a clean copy of HEAD and installed with apt on a clean Debian 12
and a clean Debian 13.

One test walks the package's whole life on a fresh debootstrap root with its own libvirtd:
build (mk-build-deps + dpkg-buildpackage, lintian without errors) -> `apt install ./….deb`
(dependencies from Debian) -> a real `virsh start` refused and a compliant one started -> a QEMU
reinstall fires the trigger -> `apt remove` (hook gone, edited policy kept, start allowed) ->
`apt purge` (nothing left) -> an install while libvirtd is down still succeeds -> an install the
daemon is not told of warns, with the command to run. Each install proves the hook live with a
canary (postinst). One test, because each step needs the state the previous one left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.debian_root import DebianRoot, build_deb, debian_root, require_tools
from tests.libvirt_env import REPO, daemon_pid, domain_xml

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

HOOK = "/etc/libvirt/hooks/qemu.d/50-libvirt-txmode"
POLICY = "/etc/libvirt-txmode/policy.yaml"
SNAPSHOT = "/var/lib/libvirt-txmode/snapshot.json"
FALLBACK_LOG = "/var/log/libvirt-txmode.log"
TEXTFILE = "/var/lib/prometheus/node-exporter/libvirt-txmode.prom"
# What the package ships for operators: metrics refresh (systemd timer, cron without systemd),
# rotation of the fallback log, the journald catalog of its MESSAGE_IDs.
OPERATOR_FILES = (
    "/lib/systemd/system/libvirt-txmode-metrics.service",
    "/lib/systemd/system/libvirt-txmode-metrics.timer",
    "/etc/cron.d/libvirt-txmode",
    "/etc/logrotate.d/libvirt-txmode",
    "/usr/lib/systemd/catalog/libvirt-txmode.catalog",
)
# The site's edit of the conffile: timer is no longer allowed anywhere.
SITE_POLICY = "version: 1\ndefaults:\n  allowed: [iothread]\n"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools()
    out = tmp_path_factory.mktemp("deb")
    path = build_deb(out)
    lintian = (path.parent / "lintian.txt").read_text()
    errors = [line for line in lintian.splitlines() if line.startswith("E:")]
    assert not errors, f"lintian errors:\n{lintian}"
    return path


def test_package_version_is_the_code_version(deb: Path) -> None:
    # debian/changelog carries the version by hand: a release that forgets it ships a lie.
    # The .deb is built from HEAD, so compare with HEAD's code, not the working tree's.
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    code = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:libvirt_txmode/__init__.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'__version__ = "{version}"' in code, "update debian/changelog (dch -v VERSION)"


@pytest.fixture(params=["bookworm", "trixie"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DebianRoot]:
    require_tools()
    with debian_root(tmp_path, request.param) as made:
        yield made


def start(root: DebianRoot, name: str, txmode: str) -> tuple[int, str]:
    xml = root.path(f"/tmp/{name}.xml")
    xml.write_text(domain_xml(name, txmode=txmode))
    if root.virsh("domstate", name, check=False).returncode != 0:
        root.virsh("define", f"/tmp/{name}.xml")
    result = root.virsh("start", name, check=False)
    if result.returncode == 0:
        root.virsh("destroy", name)
    return result.returncode, result.stderr


def canaries(root: DebianRoot) -> list[str]:
    names = root.virsh("list", "--all", "--name").stdout.split()
    return [name for name in names if name.startswith("libvirt-txmode-canary-")]


def test_package_lifecycle_on_a_clean_debian_root(deb: Path, root: DebianRoot) -> None:
    root.assert_separate_from_host(daemon_pid())
    deb_inside = f"/tmp/{deb.name}"
    root.path(deb_inside).write_bytes(deb.read_bytes())

    # One gate per host: a hook install-hook wrote from a venv (the wrapper it renders) stops
    # the package's installation, naming that hook and the command that removes it.
    venv_hook = root.path("/etc/libvirt/hooks/qemu")
    venv_hook.parent.mkdir(parents=True, exist_ok=True)
    venv_hook.write_text(
        (REPO / "hooks" / "qemu")
        .read_text()
        .replace("\nPYTHON=", "\nPYTHON=/opt/libvirt-txmode/bin/python3\n#PYTHON=", 1)
    )
    venv_hook.chmod(0o755)
    refused = root.run(
        "apt-get", "install", "-y", "--no-install-recommends", deb_inside, check=False
    )
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr  # apt passes on dpkg's output as its own
    assert (
        "libvirt-txmode: refusing to install: another libvirt-txmode hook is installed: "
        "/etc/libvirt/hooks/qemu (interpreter /opt/libvirt-txmode/bin/python3); one gate per host"
    ) in said, said
    assert "'/opt/libvirt-txmode/bin/libvirt-txmode uninstall-hook'" in said
    assert not root.path(HOOK).exists()
    venv_hook.unlink()

    # Install with apt: python3-libvirt, -lxml and -yaml must come from Debian's archive.
    installed = root.run("apt-get", "install", "-y", "--no-install-recommends", deb_inside)
    assert "python3-libvirt" in installed.stdout
    assert "sent SIGHUP to libvirtd" in installed.stdout
    assert "libvirt-txmode: the hook is live (a canary domain was refused by it)" in (
        installed.stdout
    )
    assert not canaries(root)
    assert "capability snapshot written" in installed.stdout
    assert root.path(HOOK).is_symlink() and root.run("test", "-x", HOOK).returncode == 0
    assert "PYTHON=/usr/bin/python3" in root.run("cat", HOOK).stdout
    assert root.run("dpkg-query", "-W", "-f=${Conffiles}", "libvirt-txmode").stdout.strip()
    assert POLICY in root.run("dpkg-query", "-W", "-f=${Conffiles}", "libvirt-txmode").stdout
    for doc in (
        "/usr/share/man/man1/validate-domain.1.gz",
        "/usr/share/man/man1/libvirt-txmode.1.gz",
        "/usr/share/bash-completion/completions/libvirt-txmode",
        "/usr/share/bash-completion/completions/validate-domain",
    ):
        assert root.path(doc).is_file(), doc
    snapshot = json.loads(root.path(SNAPSHOT).read_text())
    assert snapshot["emulators"]["/usr/bin/qemu-system-x86_64"]["error"] is None
    for shipped in OPERATOR_FILES:
        assert root.path(shipped).is_file(), shipped
    if root.run("sh", "-c", "command -v systemd-analyze", check=False).returncode == 0:
        verify = root.run(
            "systemd-analyze", "verify", "--man=no", "libvirt-txmode-metrics.timer", check=False
        )
        assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # One gate per host: a second install beside the package's hook is refused, naming it.
    second = root.run("libvirt-txmode", "install-hook", "--no-snapshot", check=False)
    assert second.returncode == 2
    assert (
        f"install refused: another libvirt-txmode hook is installed: {HOOK} (the Debian "
        "package's, interpreter /usr/bin/python3); one gate per host"
    ) in second.stderr
    assert not root.path("/etc/libvirt/hooks/qemu").exists()

    # The default policy allows timer; the site forbids it by editing the conffile.
    root.path(POLICY).write_text(SITE_POLICY)
    code, err = start(root, "txmtest-deb-timer", "timer")
    assert code == 1
    assert "Hook script execution failed" in err
    assert "domain 'txmtest-deb-timer' NIC #0 (52:54:00:7e:00:00)" in err
    assert "txmode 'timer' is not allowed" in err and "[txmode-not-allowed]" in err
    assert start(root, "txmtest-deb-iothread", "iothread") == (0, "")
    # No journald or syslog in the root: decisions go to the fallback file, with their fields.
    logged = root.path(FALLBACK_LOG).read_text()
    assert (
        'DECISION="refused"' in logged and 'MESSAGE_ID="0786a90ab0694527af249db616bd7cee"' in logged
    )
    # The timer's command, as it runs: the decisions above are counted.
    root.path(os.path.dirname(TEXTFILE)).mkdir(parents=True)
    root.run("libvirt-txmode", "metrics", "-o", TEXTFILE)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(root.path(TEXTFILE).read_text())
        for s in family.samples
    }
    assert samples[("libvirt_txmode_hook_live", ())] == 1.0
    assert samples[("libvirt_txmode_decisions_total", (("outcome", "denied"),))] >= 1.0
    assert samples[("libvirt_txmode_decisions_total", (("outcome", "allowed"),))] >= 1.0

    # A QEMU upgrade (here a reinstall) fires the file trigger, which refreshes the snapshot.
    before = snapshot["created"]
    root.path(SNAPSHOT).unlink()
    reinstall = root.run(
        "apt-get", "install", "-y", "--reinstall", "--no-install-recommends", "qemu-system-x86"
    )
    assert "Processing triggers for libvirt-txmode" in reinstall.stdout
    assert json.loads(root.path(SNAPSHOT).read_text())["created"] >= before

    # remove: the hook goes (and the daemon is told), the edited policy stays.
    root.run("apt-get", "remove", "-y", "libvirt-txmode")
    assert not root.path(HOOK).exists() and not root.path(HOOK).is_symlink()
    assert root.path(POLICY).read_text() == SITE_POLICY
    assert start(root, "txmtest-deb-timer", "timer") == (0, "")

    assert not root.path(TEXTFILE).exists()  # nothing refreshes it after remove

    # purge: nothing of the package is left, neither the fallback log nor a rotated copy of it.
    root.path(FALLBACK_LOG + ".1").write_text("rotated\n")
    root.run("apt-get", "purge", "-y", "libvirt-txmode")
    for gone in (
        "/etc/libvirt-txmode",
        "/var/lib/libvirt-txmode",
        "/var/cache/libvirt-txmode",
        FALLBACK_LOG,
        FALLBACK_LOG + ".1",
        *OPERATOR_FILES,
    ):
        assert not root.path(gone).exists(), gone
    assert root.run("dpkg-query", "-W", "libvirt-txmode", check=False).returncode != 0

    # Installed while libvirtd is down (an image build, a chroot): no snapshot, and no failure.
    root.stop_daemon("libvirtd")
    offline = root.run("apt-get", "install", "-y", "--no-install-recommends", deb_inside)
    assert "no capability snapshot taken (libvirt not reachable)" in offline.stdout
    assert "SIGHUP" not in offline.stdout
    assert (
        "libvirt-txmode: no libvirt daemon running: it loads the hook when it starts; then "
        "check with: libvirt-txmode doctor --canary"
    ) in offline.stdout
    assert root.run("test", "-x", HOOK).returncode == 0
    assert not root.path(SNAPSHOT).exists()

    # The case: a daemon that runs, but was never told of the hook. The postinst warns
    # with the command to run; doctor agrees until the daemon is reloaded.
    root.run("apt-get", "purge", "-y", "libvirt-txmode")
    root.start_libvirtd()  # virtlogd still runs
    unloaded = root.run(
        "env", "LIBVIRT_TXMODE_NO_RELOAD=1",
        "apt-get", "install", "-y", "--no-install-recommends", deb_inside,
    )  # fmt: skip
    # apt passes on the maintainer script's stderr as its own output.
    warned = unloaded.stdout + unloaded.stderr
    assert "libvirt-txmode: WARNING: the hook is NOT proven live: VMs may start unchecked." in (
        warned
    )
    assert "fail live: the gate is off: canary domain libvirt-txmode-canary-" in warned
    assert "then run: libvirt-txmode doctor --canary" in warned
    assert not canaries(root)
    assert root.run("libvirt-txmode", "doctor", check=False).returncode == 2
    os.kill(root.daemon_pid("libvirtd") or 0, signal.SIGHUP)
    proven = root.run("libvirt-txmode", "doctor", "--canary", check=False)
    assert proven.returncode in (0, 1), proven.stdout
    assert "ok   live: canary domain libvirt-txmode-canary-" in proven.stdout
