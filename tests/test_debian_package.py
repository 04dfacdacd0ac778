"""The Debian package, built from a clean copy of HEAD and installed with apt on a clean Debian 12
and a clean Debian 13.

One test walks the package's whole life on a fresh debootstrap root with its own libvirtd:
build (mk-build-deps + dpkg-buildpackage, lintian without errors) -> `apt install ./….deb`
(dependencies from Debian) -> a real `virsh start` refused and a compliant one started -> a QEMU
reinstall fires the trigger -> `apt remove` (hook gone, edited policy kept, start allowed) ->
`apt purge` (nothing left) -> an install while libvirtd is down still succeeds -> an install the
daemon is not told of warns, with the command to run. Each install proves the hook live with a
canary (postinst). One test, because each step needs the state the previous one left.

A second test upgrades in place: the previous release's .deb, built from git history by its own
scripts/build-deb, gates a Debian 12 root (and fills the hook's caches); `apt install` of this
tree's .deb over it, with nothing restarted, must keep the same gate.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.debian_root import DebianRoot, build_deb, debian_root, require_tools
from tests.libvirt_env import REPO, daemon_pid, domain_xml, skip_unless_ci

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

HOOK = "/etc/libvirt/hooks/qemu.d/50-libvirt-txmode"
HOOK_TARGET = "/usr/libexec/libvirt-txmode/qemu"
MODULES = "/usr/lib/python3/dist-packages/libvirt_txmode"
CACHE = "/var/cache/libvirt-txmode"
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


# The last release, 0.3.0 (the flat layout, every module at the package's top, and the hook's sh
# replay of decisions): hosts run it, and `apt install` of this tree's package must upgrade them
# in place. A full id: tags are not used.
PREVIOUS_RELEASE = "c0d6b777724158d113e2d73b21e58a4ec135269c"


@pytest.fixture(scope="module")
def previous_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's .deb, built as that release built it: its own scripts/build-deb."""
    require_tools()
    present = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if present.returncode != 0:
        skip_unless_ci(
            f"the previous release's commit {PREVIOUS_RELEASE} is not in this clone "
            "(a shallow clone? fetch the full history: git fetch --unshallow)"
        )
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE],
        capture_output=True,
        check=True,
    ).stdout
    src = tmp_path_factory.mktemp("previous-src")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    # That build-deb packs the commit of the repository it lives in: make the old tree one.
    git = ["git", "-C", str(src), "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", PREVIOUS_RELEASE]):
        subprocess.run([*git, *step], capture_output=True, check=True)
    return build_deb(tmp_path_factory.mktemp("previous-deb"), repo=src)


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def deb_members(deb: Path) -> set[str]:
    """The paths a .deb ships (directories included), as absolute paths."""
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        return {"/" + member.name.lstrip("./") for member in tar.getmembers()}


def deb_file(deb: Path, inside: str) -> bytes:
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        handle = tar.extractfile("." + inside)
        assert handle is not None, inside
        return handle.read()


def gate_holds(root: DebianRoot, refused: str, allowed: str) -> str:
    """The site's gate: ``refused`` (timer) is refused, naming it, its NIC and the rule, and
    ``allowed`` (iothread) starts; returns the refusal's stderr."""
    code, err = start(root, refused, "timer")
    assert code == 1, err
    assert f"domain '{refused}' NIC #0 (52:54:00:7e:00:00)" in err
    assert "txmode 'timer' is not allowed" in err and "[txmode-not-allowed]" in err
    assert start(root, allowed, "iothread") == (0, "")
    return err


def cache_files(root: DebianRoot) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.path(CACHE).iterdir() if p.is_file()}


def test_upgrade_in_place_from_the_previous_release(
    previous_deb: Path, deb: Path, tmp_path: Path
) -> None:
    with debian_root(tmp_path, "bookworm") as root:
        root.assert_separate_from_host(daemon_pid())
        # The two files share a name (the version may be the same): each in a folder of its own.
        old_inside, new_inside = f"/tmp/old/{previous_deb.name}", f"/tmp/new/{deb.name}"
        for source, inside in ((previous_deb, old_inside), (deb, new_inside)):
            root.path(inside).parent.mkdir(parents=True)
            root.path(inside).write_bytes(source.read_bytes())

        # The previous release gates the host; the site forbids timer in the conffile.
        # (0.3.0's postinst reloads the daemon without a canary: its gate is proven below.)
        root.run("apt-get", "install", "-y", "--no-install-recommends", old_inside)
        assert root.path(f"{MODULES}/hook.py").is_file()  # the flat layout it is
        root.path(POLICY).write_text(SITE_POLICY)
        # Without a snapshot (as after an install while libvirtd was down) its hook probes QEMU
        # itself: all three of its caches get files, verdicts, compiled policy, probe answers.
        root.path(SNAPSHOT).unlink()
        refusal = gate_holds(root, "txmtest-upg-timer", "txmtest-upg-iothread")
        before = cache_files(root)
        kinds = {name.split("-")[0] if "-" in name else name.split(".")[-1] for name in before}
        assert {"verdict", "policy", "json"} <= kinds, sorted(before)
        daemon = root.daemon_pid("libvirtd")

        # The operator's upgrade: apt, and nothing restarted by hand.
        # The shipped policy.yaml changed since 0.3.0 and the site edited its copy: dpkg would ask
        # on a terminal; unattended upgrades (and Ansible's apt module) keep the site's file.
        upgrade = root.run(
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            new_inside,
        )
        said = upgrade.stdout + upgrade.stderr
        versions = [field(d, "Version") for d in (deb, previous_deb)]
        unpacked = "Unpacking libvirt-txmode ({}) over ({})".format(*versions)
        assert unpacked in said, f"apt did not upgrade the package:\n{said}"
        assert "libvirt-txmode: the hook is live (a canary domain was refused by it)" in said
        assert root.daemon_pid("libvirtd") == daemon  # reloaded (SIGHUP), not restarted
        assert root.path(POLICY).read_text() == SITE_POLICY  # the site's conffile kept

        # The first starts after the upgrade meet the previous release's caches alone (the
        # snapshot the postinst wrote is set aside): its verdicts for the domains it saw, its
        # probe answers and compiled policy for ones it never saw. Used or redone, never misread.
        root.path(SNAPSHOT).rename(root.path(SNAPSHOT + ".new"))
        assert gate_holds(root, "txmtest-upg-timer", "txmtest-upg-iothread") == refusal
        fresh = gate_holds(root, "txmtest-upg-timer-new", "txmtest-upg-iothread-new")
        assert fresh == refusal.replace("txmtest-upg-timer", "txmtest-upg-timer-new")
        # With the snapshot back, as the operator's host has it.
        root.path(SNAPSHOT + ".new").rename(root.path(SNAPSHOT))
        assert gate_holds(root, "txmtest-upg-timer", "txmtest-upg-iothread") == refusal

        # The hook libvirt runs is this package's file, and every installed file is as shipped.
        assert os.readlink(root.path(HOOK)) == HOOK_TARGET
        assert root.path(HOOK_TARGET).read_bytes() == deb_file(deb, HOOK_TARGET)
        verify = root.run("dpkg", "--verify", "libvirt-txmode", check=False).stdout
        # dpkg --verify lists changed files; the one the site edited is the only one allowed.
        assert verify.splitlines() == [f"??5?????? c {POLICY}"], verify
        # Nothing of the flat layout is left beside the subpackages: every file below the
        # package is this release's, or the bytecode Debian's py3compile made of one of its modules.
        shipped = deb_members(deb)
        assert f"{MODULES}/hookstart.py" in shipped and f"{MODULES}/gate.py" not in shipped
        left = []
        for path in root.path(MODULES).rglob("*"):
            inside = "/" + str(path.relative_to(root.root))
            if inside in shipped or (path.is_dir() and path.name == "__pycache__"):
                continue
            if path.parent.name == "__pycache__" and path.suffix == ".pyc":
                module = path.parent.parent / (path.name.split(".")[0] + ".py")
                if "/" + str(module.relative_to(root.root)) in shipped:
                    continue
            left.append(inside)
        assert not left, f"files the upgrade left behind: {sorted(left)}"

        doctor = root.run("libvirt-txmode", "doctor", check=False)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr

        # purge: nothing of either release is left.
        root.run("apt-get", "purge", "-y", "libvirt-txmode")
        for gone in (
            MODULES,
            HOOK,
            "/usr/libexec/libvirt-txmode",
            "/etc/libvirt-txmode",
            "/var/lib/libvirt-txmode",
            CACHE,
            FALLBACK_LOG,
            *OPERATOR_FILES,
        ):
            assert not os.path.lexists(root.path(gone)), gone
        assert root.run("dpkg-query", "-W", "libvirt-txmode", check=False).returncode != 0
        assert start(root, "txmtest-upg-timer", "timer") == (0, "")
