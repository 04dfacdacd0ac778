"""The Ansible collection (ansible-core only) against this machine and a second host the test makes.

The collection is built with `ansible-galaxy collection build ansible/` and installed into a
private collections path. The role installs the .deb built from HEAD, the site policy and the
hook: first on this machine (`-i localhost, -c local`: a change, then no change, then a clean
`--check`), then on a fresh Debian 12 root with its own libvirtd, reached through the
collection's chroot connection. fleet-check then takes and fetches both hosts' snapshots,
runs validate-domain against both and audit on both; twice and in check mode without a change.
This machine is left as it was: the package is purged and pre-existing state is put back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.debian_root import DebianRoot, build_deb, debian_root, host_env, require_tools
from tests.libvirt_env import REPO, cleanup_leftovers, domain_xml, remove_domain, virsh

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

COLLECTION = REPO / "ansible"
SITE_POLICY = "version: 1\ndefaults:\n  allowed: [iothread]\n"
# What the package and the role create on a host; moved aside and restored if already there.
HOST_STATE = ("/etc/libvirt-txmode", "/var/lib/libvirt-txmode", "/var/cache/libvirt-txmode")
HOOK = "/etc/libvirt/hooks/qemu.d/50-libvirt-txmode"


def require_ansible() -> None:
    require_tools()
    subprocess.run([str(REPO / "scripts" / "apt-deps"), "ansible-core"], check=True, env=host_env())


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as ansible-galaxy builds and installs it (which also checks galaxy.yml)."""
    require_ansible()
    work = tmp_path_factory.mktemp("collection")
    subprocess.run(
        ["ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(work)],
        check=True,
        capture_output=True,
        env=host_env(),
    )
    (tarball,) = work.glob("libvirt_txmode-fleet-*.tar.gz")
    path = work / "collections"
    subprocess.run(
        ["ansible-galaxy", "collection", "install", str(tarball), "-p", str(path)],
        check=True,
        capture_output=True,
        env=host_env(),
    )
    return path


@pytest.fixture
def clean_host(tmp_path: Path) -> Iterator[None]:
    """This machine without the package; whatever it had in our paths comes back afterwards."""
    require_ansible()
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "libvirt-txmode"], capture_output=True, text=True
    )
    assert "installed" not in installed.stdout, "libvirt-txmode is installed on this machine"
    assert not os.path.lexists(HOOK), f"{HOOK} exists: another installation is active"
    cleanup_leftovers()
    aside = tmp_path / "aside"
    moved = []
    for path in HOST_STATE:
        if os.path.lexists(path):
            target = aside / path.strip("/").replace("/", "_")
            target.parent.mkdir(exist_ok=True)
            shutil.move(path, target)
            moved.append((path, target))
    try:
        yield
    finally:
        remove_domain("txmtest-ansible-timer")
        subprocess.run(
            ["apt-get", "purge", "-y", "-q", "libvirt-txmode"],
            capture_output=True,
            env=host_env(),
            check=False,
        )
        for path, target in moved:
            shutil.rmtree(path, ignore_errors=True)
            shutil.move(str(target), path)


@pytest.fixture
def chroot_host(tmp_path: Path) -> Iterator[DebianRoot]:
    require_tools()
    with debian_root(tmp_path) as made:
        yield made


class Ansible:
    def __init__(self, collections: Path, work: Path) -> None:
        self.env = {
            **host_env(),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).parent / "ansible_callback"),
            "ANSIBLE_STDOUT_CALLBACK": "txmode_json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        }

    def play(self, playbook: str, *args: str, expect_rc: int = 0) -> dict[str, Any]:
        result = subprocess.run(
            ["ansible-playbook", str(COLLECTION / "playbooks" / playbook), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=600,
            check=False,
        )
        assert result.returncode == expect_rc, (
            f"{playbook} {args}:\n{result.stdout}\n{result.stderr}"
        )
        return json.loads(result.stdout)


def changed(report: dict[str, Any]) -> dict[str, int]:
    counts = {host: stats["changed"] for host, stats in report["stats"].items()}
    # Name the changing tasks in the assertion message: "changed=1" alone says nothing.
    what = [
        f"{host}: {task['name']}"
        for task in report["tasks"]
        for host, result in task["hosts"].items()
        if result.get("changed")
    ]
    return ChangeCount(counts, what)


class ChangeCount(dict):  # type: ignore[type-arg]
    def __init__(self, counts: dict[str, int], what: list[str]) -> None:
        super().__init__(counts)
        self.what = what

    def __repr__(self) -> str:
        return f"{dict(self)!r} (changed: {self.what})"


def task_results(report: dict[str, Any], name: str) -> dict[str, Any]:
    for task in report["tasks"]:
        # A role's tasks are named "ROLE : NAME".
        if task["name"] == name or task["name"].endswith(f" : {name}"):
            return dict(task["hosts"])
    raise AssertionError(f"no task {name!r} ran")


def unseen_daemon(root: DebianRoot) -> None:
    """Restart the root's libvirtd while its hook is away, then put the hook back: the daemon
    runs, the hook is installed, and the daemon does not know it."""
    hook = root.path(HOOK)
    target = os.readlink(hook)
    hook.unlink()
    root.stop_daemon("libvirtd")
    root.path("/run/libvirtd.pid").unlink(missing_ok=True)
    root.run("libvirtd", "-d")
    for _ in range(240):
        if root.virsh("version", check=False).returncode == 0:
            break
        time.sleep(0.5)
    hook.symlink_to(target)


def test_role_and_fleet_check_on_two_hosts(
    collections: Path, clean_host: None, chroot_host: DebianRoot, tmp_path: Path
) -> None:
    deb = build_deb(tmp_path / "deb")
    ansible = Ansible(collections, tmp_path)
    policy = tmp_path / "site-policy.yaml"
    policy.write_text(SITE_POLICY)
    role_vars = ["-e", f"libvirt_txmode_deb={deb}", "-e", f"libvirt_txmode_policy_src={policy}"]

    # 1. The role on this machine: install, then nothing to do, then a clean dry run.
    local = ["-i", "localhost,", "-c", "local", *role_vars]
    assert changed(ansible.play("site.yml", *local))["localhost"] > 0
    assert (
        Path(HOOK).is_symlink()
        and Path("/etc/libvirt-txmode/policy.yaml").read_text() == SITE_POLICY
    )
    assert changed(ansible.play("site.yml", *local)) == {"localhost": 0}
    assert changed(ansible.play("site.yml", *local, "--check")) == {"localhost": 0}
    # The host's own libvirtd now runs the packaged hook with the site policy.
    xml = tmp_path / "timer.xml"
    xml.write_text(domain_xml("txmtest-ansible-timer", txmode="timer"))
    virsh("define", str(xml))
    refused = virsh("start", "txmtest-ansible-timer", check=False)
    assert refused.returncode == 1 and "[txmode-not-allowed]" in refused.stderr
    remove_domain("txmtest-ansible-timer")  # else this host's audit below reports it

    # 2. Two hosts: this machine and the Debian root through the collection's chroot connection.
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[hypervisors]\n"
        "localhost ansible_connection=local\n"
        f"deb12-root ansible_host={chroot_host.root} ansible_connection=libvirt_txmode.fleet.chroot\n"
    )
    fleet = ["-i", str(inventory)]
    # A dry run on the fresh root: it reports what it would do and fails on nothing not yet there.
    dry_first = ansible.play("site.yml", *fleet, *role_vars, "--check", "--limit", "deb12-root")
    assert changed(dry_first)["deb12-root"] > 0
    assert not chroot_host.path("/etc/libvirt-txmode").exists()
    both = changed(ansible.play("site.yml", *fleet, *role_vars))
    assert both["localhost"] == 0 and both["deb12-root"] > 0
    assert chroot_host.run("test", "-x", HOOK).returncode == 0
    canary_task = "Prove the daemon runs the hook (doctor --canary)"
    proven = task_results(ansible.play("site.yml", *fleet, *role_vars), canary_task)
    assert {host: r["status"] for host, r in proven.items()} == {
        "localhost": "ok",
        "deb12-root": "ok",
    }

    # A daemon that started without the hook and was never reloaded (the silent gate):
    # the role's canary task fails, and no canary domain is left behind.
    unseen_daemon(chroot_host)
    off = ansible.play("site.yml", *fleet, *role_vars, "--limit", "deb12-root", expect_rc=2)
    result = task_results(off, canary_task)["deb12-root"]
    assert result["status"] == "failed"
    assert "the gate is off: canary domain libvirt-txmode-canary-" in result["stdout"]
    assert chroot_host.virsh("list", "--all", "--name").stdout.split() == []
    os.kill(chroot_host.daemon_pid("libvirtd") or 0, signal.SIGHUP)
    again = ansible.play("site.yml", *fleet, *role_vars, "--limit", "deb12-root")
    assert task_results(again, canary_task)["deb12-root"]["status"] == "ok"

    # Domains kept in git (checked on the controller) and defined on the root (audited there).
    domains = tmp_path / "domains"
    domains.mkdir()
    (domains / "web.xml").write_text(domain_xml("txmtest-fleet-web", txmode="iothread"))
    for name, txmode in (("txmtest-fleet-web", "iothread"), ("txmtest-fleet-old", "timer")):
        chroot_host.path(f"/tmp/{name}.xml").write_text(domain_xml(name, txmode=txmode))
        chroot_host.virsh("define", f"/tmp/{name}.xml")
    snapshots = tmp_path / "snapshots"
    check = [
        *fleet,
        "-e",
        f"libvirt_txmode_snapshots_dir={snapshots}",
        "-e",
        f"libvirt_txmode_domains_dir={domains}",
        "-e",
        f"libvirt_txmode_policy={policy}",
    ]
    report = ansible.play("fleet-check.yml", *check, "-e", "libvirt_txmode_fail_on_findings=false")
    for host in ("localhost", "deb12-root"):
        document = json.loads((snapshots / f"{host}.json").read_text())
        assert document["format"] == "libvirt-txmode-snapshot"
    (validate,) = task_results(
        report, "validate-domain on the controller, against every host's snapshot"
    ).values()
    assert validate["rc"] == 0
    assert f"--caps={snapshots}/localhost.json" in validate["cmd"]
    assert f"--caps={snapshots}/deb12-root.json" in validate["cmd"]
    assert "--all-hosts" in validate["cmd"]
    audit = task_results(report, "Audit the host's defined and running domains")
    assert audit["localhost"]["rc"] == 0, audit["localhost"]["stdout"]
    assert audit["deb12-root"]["rc"] == 1
    assert "txmtest-fleet-old" in audit["deb12-root"]["stdout"]

    # Idempotent: the snapshots are current, so nothing is retaken or fetched again; dry run too.
    again = ansible.play("fleet-check.yml", *check, "-e", "libvirt_txmode_fail_on_findings=false")
    assert changed(again) == {"localhost": 0, "deb12-root": 0}
    dry = ansible.play(
        "fleet-check.yml", *check, "--check", "-e", "libvirt_txmode_fail_on_findings=false"
    )
    assert changed(dry) == {"localhost": 0, "deb12-root": 0}

    # By default a finding fails the play: a domain in git that the site policy forbids.
    (domains / "old.xml").write_text(domain_xml("txmtest-fleet-old", txmode="timer"))
    failing = ansible.play("fleet-check.yml", *check, expect_rc=2)
    (validate,) = task_results(
        failing, "validate-domain on the controller, against every host's snapshot"
    ).values()
    assert validate["rc"] == 1
    assert "domain 'txmtest-fleet-old' NIC #0" in validate["stdout"]
    assert "[txmode-not-allowed]" in validate["stdout"]
