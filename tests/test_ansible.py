"""The Ansible collection (ansible-core only) against this machine and hosts the test makes.

The collection is built with `ansible-galaxy collection build ansible/` and installed into a
private collections path. The role installs the .deb built from HEAD, the site policy and the
hook on this machine (`-i localhost, -c local`: a change, then no change, then a clean
`--check`). fleet-check runs as the fleet guide shows against three hosts: two fresh Debian 12 roots
with their own libvirtd, reached through the collection's chroot connection (one without the
package at first), and one that cannot be reached; its report names all three. ansible-lint's
production profile passes. This machine is left as it was: the package is purged and
pre-existing state is put back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.debian_root import DebianRoot, build_deb, debian_root, host_env, require_tools
from tests.libvirt_env import (
    REPO,
    cleanup_leftovers,
    domain_xml,
    remove_domain,
    skip_unless_ci,
    virsh,
)
from tests.test_fleet import browser_view

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

COLLECTION = REPO / "ansible"
SITE_POLICY = "version: 1\ndefaults:\n  allowed: [iothread]\n"
# What the package and the role create on a host; moved aside and restored if already there.
HOST_STATE = ("/etc/libvirt-txmode", "/var/lib/libvirt-txmode", "/var/cache/libvirt-txmode")
HOOK = "/etc/libvirt/hooks/qemu.d/50-libvirt-txmode"


def require_ansible() -> None:
    require_tools()
    subprocess.run(
        [str(REPO / "scripts" / "apt-deps"), "ansible-core", "openssh-client"],
        check=True,
        env=host_env(),
    )


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
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    # What Galaxy shows and ansible-lint's galaxy rules ask for; and no linter or test leftovers.
    info = manifest["collection_info"]
    assert all(info[key] for key in ("repository", "documentation", "issues", "homepage"))
    assert "CHANGELOG.md" in names
    assert not [n for n in names if n.startswith((".ansible", "playbooks/report"))]
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
def two_roots(tmp_path: Path) -> Iterator[tuple[DebianRoot, DebianRoot]]:
    """Two Debian 12 hypervisors, each a root with its own libvirtd."""
    require_tools()
    with debian_root(tmp_path / "a") as first, debian_root(tmp_path / "b") as second:
        yield first, second


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
        return self.run(["ansible-playbook", str(COLLECTION / "playbooks" / playbook), *args],
                        expect_rc=expect_rc)  # fmt: skip

    def line(self, line: str, cwd: Path, expect_rc: int = 0) -> dict[str, Any]:
        """A command line as a user types it (the fleet guide's), run by sh in ``cwd``."""
        return self.run(["sh", "-c", line], expect_rc=expect_rc, cwd=cwd)

    def run(self, argv: list[str], expect_rc: int = 0, cwd: Path | None = None) -> dict[str, Any]:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=900,
            check=False,
        )
        assert result.returncode == expect_rc, f"{argv}:\n{result.stdout}\n{result.stderr}"
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
    root.start_libvirtd()
    hook.symlink_to(target)


def readme_command(playbook: str) -> str:
    """The fleet guide's ansible-playbook line for ``playbook``, continuation lines joined."""
    guide = (REPO / "docs" / "fleet-guide.md").read_text()
    block = re.search(r"```sh\n(ansible-playbook -i hypervisors\.ini .*?)```", guide, re.S)
    assert block is not None, "the fleet guide's ansible-playbook commands"
    lines = block.group(1).replace("\\\n", " ").strip().splitlines()
    (line,) = [c for c in lines if f"/playbooks/{playbook} " in c]
    return line


def test_ansible_lint_production_profile() -> None:
    lint = Path(sys.executable).parent / "ansible-lint"
    if not lint.exists():
        skip_unless_ci("ansible-lint is not installed (scripts/bootstrap test)")
    result = subprocess.run(
        [str(lint), "--profile", "production", "--nocolor", "ansible/"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


def test_role_on_this_machine(collections: Path, clean_host: None, tmp_path: Path) -> None:
    deb = build_deb(tmp_path / "deb")
    ansible = Ansible(collections, tmp_path)
    policy = tmp_path / "site-policy.yaml"
    policy.write_text(SITE_POLICY)
    local = ["-i", "localhost,", "-c", "local", "-e", f"hypervisor_deb={deb}",
             "-e", f"hypervisor_policy_src={policy}"]  # fmt: skip
    # Install, then nothing to do, then a clean dry run.
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


CANARY_TASK = "Prove the daemon runs the hook (doctor --canary)"
FLEET_ASSERT = "Every domain definition can run on every checked host"
HOST_ASSERT = "The host's own domains pass its audit"


def failed_hosts(report: dict[str, Any], task: str) -> list[str]:
    return sorted(h for h, r in task_results(report, task).items() if r["status"] == "failed")


def test_fleet_check_as_the_readme_shows(
    collections: Path, two_roots: tuple[DebianRoot, DebianRoot], tmp_path: Path
) -> None:
    """Three hosts: deb12-a with the package, deb12-b without it at first, and one that cannot be
    reached (nothing listens on 127.0.0.1 port 1: ssh is refused at once). The fleet guide's commands
    run from a directory that holds the clone (here this repository), the inventory, the site
    policy and the domain definitions."""
    root_a, root_b = two_roots
    deb = build_deb(tmp_path / "deb")
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "libvirt-txmode").symlink_to(REPO)
    shutil.copy(deb, work / "out" / deb.name)
    (work / "site-policy.yaml").write_text(SITE_POLICY)
    (work / "hypervisors.ini").write_text(
        "[hypervisors]\n"
        f"deb12-a ansible_host={root_a.root} ansible_connection=libvirt_txmode.fleet.chroot\n"
        f"deb12-b ansible_host={root_b.root} ansible_connection=libvirt_txmode.fleet.chroot\n"
        "gone ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh"
        " ansible_ssh_common_args='-o StrictHostKeyChecking=no -o ConnectTimeout=5'\n"
    )
    domains = work / "domains"
    domains.mkdir()
    (domains / "web.xml").write_text(domain_xml("txmtest-fleet-web", txmode="iothread"))
    (domains / "old.xml").write_text(domain_xml("txmtest-fleet-old", txmode="timer"))
    ansible = Ansible(collections, tmp_path)
    # The controller's venv goes below HOME: a fresh one for this test.
    ansible.env["HOME"] = str(work / "home")
    site, check = readme_command("site.yml"), readme_command("fleet-check.yml")
    assert f"$PWD/out/{deb.name}" in site

    # deb12-a gets the package and the site policy, and a domain that policy forbids.
    installed = ansible.line(site + " --limit deb12-a", work)
    assert task_results(installed, CANARY_TASK)["deb12-a"]["status"] == "ok"
    # A daemon that started without the hook and was never reloaded (a silent gate): the role's
    # canary task fails, and no canary domain is left behind; after a reload it passes.
    unseen_daemon(root_a)
    off = ansible.line(site + " --limit deb12-a", work, expect_rc=2)
    result = task_results(off, CANARY_TASK)["deb12-a"]
    assert result["status"] == "failed"
    assert "the gate is off: canary domain libvirt-txmode-canary-" in result["stdout"]
    assert root_a.virsh("list", "--all", "--name").stdout.split() == []
    os.kill(root_a.daemon_pid("libvirtd") or 0, signal.SIGHUP)
    again = ansible.line(site + " --limit deb12-a", work)
    assert task_results(again, CANARY_TASK)["deb12-a"]["status"] == "ok"
    for name, txmode in (("txmtest-fleet-web", "iothread"), ("txmtest-fleet-old", "timer")):
        root_a.path(f"/tmp/{name}.xml").write_text(domain_xml(name, txmode=txmode))
        root_a.virsh("define", f"/tmp/{name}.xml")

    # 1. Only deb12-a can be checked: the others are named, and stop nothing.
    first = ansible.line(check, work, expect_rc=2)
    report = json.loads((work / "report" / "fleet.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    assert list(hosts) == ["deb12-a", "deb12-b", "gone"]
    assert hosts["deb12-a"]["status"] == "checked"
    assert (hosts["deb12-b"]["status"], hosts["deb12-b"]["detail"]) == (
        "not-installed",
        "no /usr/bin/libvirt-txmode",
    )
    assert hosts["gone"]["status"] == "unreachable" and "port 1" in hosts["gone"]["detail"]
    (finding,) = report["findings"]
    assert (finding["domain"], finding["interface"], finding["code"]) == (
        "txmtest-fleet-old",
        0,
        "txmode-not-allowed",
    )
    assert finding["hosts"] == ["deb12-a"]
    # The definitions fail the controller once; a host fails only for its own audit.
    assert failed_hosts(first, FLEET_ASSERT) == ["localhost"]
    assert failed_hosts(first, HOST_ASSERT) == ["deb12-a"]
    summary = task_results(first, "Fleet summary")["localhost"]["msg"]
    assert "host gone: not checked (unreachable: " in summary[2]

    # 2. deb12-b gets the package too (the fleet guide's site.yml line, on every host it can reach).
    ansible.line(site, work, expect_rc=4)  # 4: 'gone' is unreachable
    second = ansible.line(check, work, expect_rc=2)
    report = json.loads((work / "report" / "fleet.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    assert [h["status"] for h in hosts.values()] == ["checked", "checked", "unreachable"]
    for host in ("deb12-a", "deb12-b"):
        snapshot = json.loads((work / "hosts" / f"{host}.json").read_text())
        assert hosts[host]["snapshot_created"] == snapshot["created"]
        assert hosts[host]["libvirt"] == snapshot["libvirt"]["library_version"]
        assert hosts[host]["qemu"] and hosts[host]["snapshot_age_seconds"] is not None
    assert hosts["deb12-a"]["audit"]["errors"] == 1 and hosts["deb12-a"]["failed"]
    assert hosts["deb12-b"]["audit"]["errors"] == 0 and not hosts["deb12-b"]["failed"]
    # One finding for the forbidden NIC, with both hosts; none for the unreachable one.
    (finding,) = report["findings"]
    assert finding["domain"] == "txmtest-fleet-old" and finding["hosts"] == ["deb12-a", "deb12-b"]
    (audited,) = report["audit_findings"]
    assert audited["domain"] == "txmtest-fleet-old" and audited["hosts"] == ["deb12-a"]
    old = str(domains / "old.xml")
    assert report["matrix"]["deb12-b"][old]["verdict"] == "error"
    assert report["matrix"]["deb12-b"][str(domains / "web.xml")]["verdict"] == "ok"
    assert report["matrix"]["gone"][old]["verdict"] == "not-checked"
    policy_hash = subprocess.run(
        ["sha256sum", str(work / "site-policy.yaml")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert report["policy"]["sha256"] == policy_hash
    assert failed_hosts(second, HOST_ASSERT) == ["deb12-a"]
    # audit's JSON names its host and time.
    audit = json.loads(task_results(second, "Audit the host's defined and running domains")
                       ["deb12-a"]["stdout"])  # fmt: skip
    assert audit["host"] == os.uname().nodename  # a chroot shares this machine's hostname
    assert {f["host"] for f in audit["findings"]} == {audit["host"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", audit["time"])
    suites = etree.parse(str(work / "report" / "fleet-junit.xml")).getroot()
    assert suites.find(".//testcase[@name='gone']/error") is not None
    assert suites.find(".//testcase[@name='txmtest-fleet-old']/failure") is not None
    # The page in a real browser: a row per host, the forbidden NIC in deb12-b's cell.
    seen = browser_view(work / "report" / "fleet.html", tmp_path)
    assert [row[0]["text"] for row in seen["rows"]] == ["deb12-a", "deb12-b", "gone"]
    cell = seen["rows"][1][seen["head"].index("txmtest-fleet-old")]
    assert cell["visible"] and "txmode-not-allowed" in cell["text"] and "NIC #0" in cell["text"]

    # 3. A second run changes nothing; nor does a dry run, which also passes with findings
    #    reported only (the unreachable host does not fail it).
    again = ansible.line(check, work, expect_rc=2)
    assert changed(again) == {"deb12-a": 0, "deb12-b": 0, "gone": 0, "localhost": 0}
    dry = ansible.line(check + " --check -e libvirt_txmode_fail_on_findings=false", work)
    assert changed(dry) == {"deb12-a": 0, "deb12-b": 0, "gone": 0, "localhost": 0}
    assert (
        "deb12-b" in json.loads((work / "report" / "fleet.json").read_text())["summary"]["checked"]
    )
