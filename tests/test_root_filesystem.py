"""The file system around a root hook, as root, against the real file system and a real user.

One trust rule (files.path_trust_problem) for the whole path of every file the hook believes; no
path the hook opens can block it; the caches are private to root. The attacker is the real
unprivileged user ``nobody`` (uid 65534), acting through its own processes where it matters.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.common.files import path_trust_problem, private_dir_problem, read_regular
from libvirt_txmode.engine.policy_compiled import compiled_path
from libvirt_txmode.hook import verdict
from libvirt_txmode.host.bounded_run import probe_user
from libvirt_txmode.host.emulator import identify
from tests import libvirt_env as env
from tests.hookrun import POLICY, InstalledHook, domain, make_hook, nic, shared_dir

__all__ = ["shared_dir"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown and a real user")

QEMU = "/usr/bin/qemu-system-x86_64"
NOBODY = pwd.getpwnam("nobody")


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as the real unprivileged user, with no supplementary groups."""
    return subprocess.run(
        list(argv),
        user=NOBODY.pw_uid,
        group=NOBODY.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


def root_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


def root_file(path: Path, text: str = "x\n", mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


# --- the rule itself -----------------------------------------------------------------------------


def test_root_owned_chain_is_trusted(tmp_path: Path) -> None:
    # tmp_path is a root-owned 0700 directory below the sticky /tmp: accepted (see the next test).
    target = root_file(root_dir(tmp_path / "etc") / "policy.yaml")
    assert path_trust_problem(str(target)) is None
    assert path_trust_problem("/etc/passwd") is None
    assert path_trust_problem("/etc/../etc/./passwd") is None


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_writable_directory_anywhere_above_is_named(tmp_path: Path, mode: int) -> None:
    middle = root_dir(tmp_path / "a", mode)
    target = root_file(root_dir(middle / "b") / "policy.yaml")
    assert path_trust_problem(str(target)) == (
        f"directory {middle} is writable by group or others (mode {mode:04o}); "
        f"fix: chmod go-w {middle}"
    )


def test_foreign_owner_of_a_directory_above_is_named(tmp_path: Path) -> None:
    middle = root_dir(tmp_path / "a")
    os.chown(middle, NOBODY.pw_uid, NOBODY.pw_gid)
    target = root_file(root_dir(middle / "b") / "f")
    assert path_trust_problem(str(target)) == (
        f"directory {middle} is owned by uid {NOBODY.pw_uid}, not root; fix: chown root {middle}"
    )
    assert path_trust_problem(str(target), allowed_uids={0, NOBODY.pw_uid}) is None


def test_symlink_is_judged_by_its_own_owner_and_its_target_path(tmp_path: Path) -> None:
    good = root_file(root_dir(tmp_path / "good") / "policy.yaml")
    links = root_dir(tmp_path / "links")
    link = links / "policy.yaml"
    link.symlink_to(good)
    assert path_trust_problem(str(link)) is None  # a root-owned link to a trusted file
    os.lchown(link, NOBODY.pw_uid, NOBODY.pw_gid)
    assert path_trust_problem(str(link)) == (
        f"symlink {link} is owned by uid {NOBODY.pw_uid}, not root; fix: chown -h root {link}"
    )
    # A root-owned link is only as good as the path it leads to.
    bad_dir = root_dir(tmp_path / "bad", 0o777)
    link.unlink()
    link.symlink_to(root_file(bad_dir / "policy.yaml"))
    assert path_trust_problem(str(link)) == (
        f"directory {bad_dir} is writable by group or others (mode 0777); fix: chmod go-w {bad_dir}"
    )
    # Relative targets resolve from the link's directory, '..' included.
    link.unlink()
    link.symlink_to("../good/policy.yaml")
    assert path_trust_problem(str(link)) is None


def test_symlink_loop_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    base = root_dir(tmp_path / "loop")
    (base / "a").symlink_to("b")
    (base / "b").symlink_to("a")
    assert path_trust_problem(str(base / "a")) == f"{base / 'a'}: too many levels of symbolic links"


def test_sticky_directory_only_on_the_way_to_a_root_directory(shared_dir: Path) -> None:
    """The decision documented in files.path_trust_problem and the README (sshd is stricter)."""
    sticky = root_dir(shared_dir / "tmp", 0o1777)  # shared_dir: nobody can reach it
    inner = root_file(root_dir(sticky / "private", 0o700) / "cache.json")
    assert path_trust_problem(str(inner)) is None
    planted = root_file(sticky / "policy.yaml")  # a name anyone could have taken first
    assert path_trust_problem(str(planted)) == (
        f"{sticky} is writable by others (sticky): a file directly in it could be planted "
        "there by anyone; fix: move it into a directory only root can write"
    )
    squatted = sticky / "squat"
    assert as_nobody("mkdir", str(squatted)).returncode == 0  # the tenant got there first
    assert path_trust_problem(str(squatted)) == (
        f"directory {squatted} is owned by uid {NOBODY.pw_uid}, not root; "
        f"fix: chown root {squatted}"
    )


def test_missing_and_odd_paths(tmp_path: Path) -> None:
    assert path_trust_problem(str(tmp_path / "nope")) == (
        f"{tmp_path / 'nope'}: No such file or directory"
    )
    plain = root_file(tmp_path / "plain")
    assert path_trust_problem(f"{plain}/x") == f"{plain} is not a directory"
    assert path_trust_problem("") == "empty path"


# --- the hook: the policy, the snapshot and the cache, attacked by a real user ------------------


@pytest.fixture
def syslog() -> Iterator[env.SyslogSink]:
    with env.SyslogSink() as sink:
        yield sink


PERMISSIVE = POLICY.replace("allowed: [iothread]", "allowed: [iothread, timer]")


def test_policy_swapped_by_a_tenant_through_a_writable_directory_is_refused(
    shared_dir: Path,
) -> None:
    """The issue's attack, done by nobody itself: the policy's directory is world-writable, so the
    tenant renames the policy away and puts its own symlink to another root-owned policy (one
    that allows timer) in its place. Only the file would pass; the path does not."""
    hook = make_hook(shared_dir)
    other = root_file(root_dir(shared_dir / "other") / "policy.yaml", PERMISSIVE)
    config = Path(hook.layout.config_dir)
    xml = domain("vm-notimer", nic("52:54:00:00:00:01", "timer"))
    assert hook.run("vm-notimer", "prepare", "begin", "-", stdin=xml).returncode == 1
    os.chmod(config, 0o777)
    moved = as_nobody("mv", str(hook.policy), str(config / "old.yaml"))
    linked = as_nobody("ln", "-s", str(other), str(hook.policy))
    assert (moved.returncode, linked.returncode) == (0, 0), moved.stderr + linked.stderr
    assert hook.policy.is_symlink() and hook.policy.lstat().st_uid == NOBODY.pw_uid
    result = hook.run("vm-notimer", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1  # before the fix: 0, under the tenant's choice of policy
    assert (
        f"refused: directory {config} is writable by group or others (mode 0777)" in result.stderr
    )
    # The operator closes the directory but overlooks the link: its owner still gives it away.
    os.chmod(config, 0o755)
    result = hook.run("vm-notimer", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert f"symlink {hook.policy} is owned by uid {NOBODY.pw_uid}, not root" in result.stderr
    # The same link owned by root is the operator's own choice, and is followed.
    os.lchown(hook.policy, 0, 0)
    assert hook.run("vm-notimer", "prepare", "begin", "-", stdin=xml).returncode == 0


def test_cached_allow_is_not_replayed_once_the_policy_path_is_unsafe(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "timer"), emulator=QEMU)
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    assert list(Path(hook.layout.cache_dir).glob("verdict-*.txt"))  # an allow is cached
    os.chmod(hook.layout.config_dir, 0o775)  # the file itself is untouched
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "is writable by group or others (mode 0775)" in result.stderr


def test_snapshot_in_a_writable_directory_is_ignored(
    tmp_path: Path, syslog: env.SyslogSink
) -> None:
    hook = make_hook(tmp_path)
    state = root_dir(Path(hook.layout.state_dir), 0o777)
    root_file(Path(hook.layout.snapshot), '{"format": "libvirt-txmode-snapshot"}')
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"))
    assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    expected = f"refused: directory {state} is writable by group or others (mode 0777)"
    assert any("ignoring snapshot" in line and expected in line for line in syslog.lines())


def test_cache_below_a_writable_directory_is_not_used(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    writable = root_dir(tmp_path / "shared", 0o777)
    cache = writable / "cache"
    wrapper = hook.path.read_text()
    hook.path.write_text(wrapper.replace(f"CACHE={hook.layout.cache_dir}", f"CACHE={cache}"))
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"))
    for _ in range(2):
        assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    # Created (by the hook) but never filled: it would be believed by the next start.
    assert not cache.exists() or list(cache.iterdir()) == []


# --- no path the hook opens can block it ----------------------------------------------------------


def _probe_entry(cache_dir: str, emulator: str) -> Path:
    digest = hashlib.sha256(os.path.realpath(emulator).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"{digest}.json"


def _verdict_entry(hook: InstalledHook, xml: bytes) -> Path:
    digest = hashlib.sha256(verdict.normalized(xml)).hexdigest()
    return Path(verdict.entry_path(hook.layout.cache_dir, digest))


@pytest.mark.parametrize(
    "where", ["snapshot", "verdict", "compiled-policy", "probe-cache", "probe-lock"]
)
def test_fifo_at_a_path_the_hook_opens_never_blocks_it(
    tmp_path: Path, where: str, syslog: env.SyslogSink
) -> None:
    """A FIFO with no writer: open() without O_NONBLOCK would wait for one forever (and with it
    `virsh start`). The real hook must decide as if the file were absent."""
    hook = make_hook(tmp_path)
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU)
    os.makedirs(hook.layout.state_dir, exist_ok=True)
    os.makedirs(hook.layout.cache_dir, mode=0o700, exist_ok=True)
    fifo = {
        "snapshot": Path(hook.layout.snapshot),
        "verdict": _verdict_entry(hook, xml),
        "compiled-policy": Path(compiled_path(hook.layout.cache_dir, str(hook.policy))),
        "probe-cache": _probe_entry(hook.layout.cache_dir, QEMU),
        "probe-lock": _probe_entry(hook.layout.cache_dir, QEMU).with_suffix(".lock"),
    }[where]
    os.mkfifo(fifo, 0o600)
    for _ in range(2):  # the second run would take the cached paths
        result = hook.run("vm1", "prepare", "begin", "-", stdin=xml, timeout=60)
        assert (result.returncode, result.stderr) == (0, "")
    if where in ("snapshot", "probe-lock"):
        assert fifo.is_fifo()  # never read, never written through
    else:
        assert fifo.is_file()  # a cache entry: replaced by a good one (rename, not a write into it)
    if where == "snapshot":
        assert any(
            "ignoring snapshot" in line and "not a regular file" in line for line in syslog.lines()
        )


def test_read_regular_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(root_file(tmp_path / "file", "data"))
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(str(fifo), 10)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular("/dev/zero", 10)
    with pytest.raises(OSError):  # ELOOP: a cache entry is never a link
        read_regular(str(link), 10)
    assert read_regular(str(link), 10, follow_symlinks=True)[0] == b"data"


# --- the caches are root's alone ------------------------------------------------------------------


def test_verdict_and_probe_cache_are_private_to_root(tmp_path: Path, shared_dir: Path) -> None:
    """Verdicts and probe results name domains, MACs and decisions: 0600 files in a 0700
    directory, as libvirt keeps domain XML. The real user nobody can neither list nor read them,
    even where it can reach the directory."""
    hook = make_hook(shared_dir)  # every directory above the cache is 0755: nobody can reach it
    xml = domain("secret-vm", nic("52:54:00:12:34:56", "iothread"), emulator=QEMU)
    assert hook.run("secret-vm", "prepare", "begin", "-", stdin=xml).returncode == 0
    cache = Path(hook.layout.cache_dir)
    entries = [_verdict_entry(hook, xml), _probe_entry(str(cache), QEMU)]
    entries.append(Path(compiled_path(str(cache), str(hook.policy))))
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    for entry in entries:
        assert oct(entry.stat().st_mode & 0o777) == "0o600", entry
        assert (entry.stat().st_uid, entry.stat().st_gid) == (0, 0)
        denied = as_nobody("cat", str(entry))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
    listing = as_nobody("ls", str(cache))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    assert as_nobody("cat", str(hook.policy)).returncode == 0  # the policy itself stays 0644


def test_old_world_readable_cache_directory_is_tightened(tmp_path: Path) -> None:
    cache = root_dir(tmp_path / "cache", 0o755)  # as an earlier release created it
    assert private_dir_problem(str(cache), create=True) is None
    assert oct(cache.stat().st_mode & 0o777) == "0o700"


# --- end to end: what libvirt itself accepts is checked, not refused as large ----------------------

E2E_POLICY = POLICY.replace("*-notimer*", "txmtest-notimer-*")


def _pad_through_libvirt(name: str, megabytes_per_call: int, calls: int) -> int:
    """setMetadata as a management application would: each call under libvirt's 4 MiB per-string
    RPC limit (VIR_NET_MESSAGE_STRING_MAX), several namespaces. Returns the definition's size."""
    import libvirt

    connection = libvirt.open(env.URI)
    try:
        dom = connection.lookupByName(name)
        for i in range(calls):
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                f"<pad>{'x' * (megabytes_per_call * 1_000_000)}</pad>",
                f"p{i}",
                f"http://example.org/txmtest/pad{i}",
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            )
    finally:
        connection.close()
    return os.path.getsize(f"/etc/libvirt/qemu/{name}.xml")


@pytest.mark.integration
def test_12_mb_of_metadata_set_through_libvirt_is_checked(tmp_path: Path) -> None:
    """libvirt 9.0 keeps 12 MB of metadata (4 calls of 3 MB) and hands all of it to the hook on
    `virsh start`: the hook must check that domain, not refuse it as too large."""
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    suffix = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:6]
    names = {"ok": f"txmtest-bigmeta-{suffix}", "bad": f"txmtest-notimer-{suffix}"}
    try:
        with env.installed_hook(tmp_path / "hook", E2E_POLICY):
            for key, name in names.items():
                xml = tmp_path / f"{name}.xml"
                txmode = "iothread" if key == "ok" else "timer"
                xml.write_text(env.domain_xml(name, txmode=txmode))
                env.virsh("define", str(xml))
                assert _pad_through_libvirt(name, 3, 4) > 12_000_000
            started = env.virsh("start", names["ok"], check=False, timeout=180)
            assert started.returncode == 0, started.stderr
            refused = env.virsh("start", names["bad"], check=False, timeout=180)
            assert refused.returncode != 0
            assert "txmode-not-allowed" in refused.stderr  # checked: refused for its txmode
            assert "larger than" not in refused.stderr
    finally:
        for name in names.values():
            env.remove_domain(name)


# --- probing as libvirt's QEMU user ---------------------------------------------------------------


def test_emulator_installed_0750_root_kvm_is_probed(shared_dir: Path) -> None:
    """Some distributions install QEMU 0750 root:kvm: `nobody` cannot run it, libvirt's QEMU user
    (in group kvm) can. A copy of the real QEMU installed that way must be probed, and the
    compliant domain allowed, not refused for unknown support."""
    emulator = shared_dir / "qemu-system-x86_64"
    shutil.copy2(QEMU, emulator)
    os.chown(emulator, 0, grp.getgrnam("kvm").gr_gid)
    os.chmod(emulator, 0o750)
    assert as_nobody("test", "-x", str(emulator)).returncode == 1  # the old probe user could not
    hook = make_hook(shared_dir / "hook")
    xml = domain("vm1", nic("52:54:00:00:00:01", "iothread"), emulator=str(emulator))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml, timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    entry = json.loads(_probe_entry(hook.layout.cache_dir, str(emulator)).read_text())
    assert entry["devices"]["virtio-net-pci"]["state"] == "supported"


@pytest.mark.integration
def test_probe_user_is_the_user_libvirt_runs_qemu_as(tmp_path: Path) -> None:
    """Against the real daemon: the uid, gid and groups of a QEMU that libvirt started are the
    ones probe_user() reads from /etc/libvirt/qemu.conf."""
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    name = f"txmtest-whoami-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:6]}"
    xml = tmp_path / f"{name}.xml"
    xml.write_text(env.domain_xml(name))
    try:
        env.virsh("define", str(xml))
        env.virsh("start", name, timeout=180)
        pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        user, problem = probe_user()
        assert problem is None and user is not None
        assert int(status["Uid"].split()[0]) == user.uid
        assert int(status["Gid"].split()[0]) == user.gid
        assert {int(g) for g in status["Groups"].split()} == set(user.groups)
    finally:
        env.remove_domain(name)


# --- a wrapper script's identity includes the binary it execs ----------------------------------------


def _debian_style_wrapper(directory: Path, target: Path, extra: str = "") -> Path:
    """Fake, with the shape of Debian's /usr/bin/qemu-system-i386 (the target in a variable,
    then `exec "$exe" "$@"`): the test must replace the binary behind the wrapper, and replacing
    the host's /usr/libexec/qemu-system-i386 would change QEMU under every other test."""
    wrapper = directory / "qemu-wrapper"
    wrapper.write_text(
        f'#! /bin/sh\n# a wrapper like Debian\'s\n{extra}exe={target}\nexec "$exe" "$@"\n'
    )
    os.chmod(wrapper, 0o755)
    return wrapper


def _replace(target: Path, text: str) -> None:
    """Install a new binary the way dpkg does: a new file renamed over the old one."""
    new = target.with_name(target.name + ".dpkg-new")
    new.write_text(text)
    os.chmod(new, 0o755)
    new.rename(target)


def test_wrapper_script_identity_changes_with_the_binary_it_execs(shared_dir: Path) -> None:
    libexec = root_dir(shared_dir / "libexec")
    target = libexec / "qemu-system-x86_64"
    shutil.copy2(QEMU, target)
    log = shared_dir / "qemu-wrapper.log"  # a data file the script names: not part of it
    wrapper = _debian_style_wrapper(shared_dir, target, f'echo "$*" >> {log} || true\n')
    before = identify(str(wrapper)).key()
    assert before == verdict.emulator_key(str(wrapper))  # one identity for both caches
    log.write_text("appended\n")
    assert identify(str(wrapper)).key() == before
    wrapper_stat = wrapper.stat()
    _replace(target, "#!/bin/sh\nexit 1\n")
    assert wrapper.stat() == wrapper_stat  # the wrapper itself is untouched...
    assert identify(str(wrapper)).key() != before  # ...but it is another emulator now
    assert identify(str(wrapper)).key() == verdict.emulator_key(str(wrapper))
    assert ":exec-" not in identify(QEMU).key()  # a binary keeps the plain format


def test_cached_decision_does_not_outlive_the_binary_behind_a_wrapper(shared_dir: Path) -> None:
    libexec = root_dir(shared_dir / "libexec")
    target = libexec / "qemu-system-x86_64"
    shutil.copy2(QEMU, target)
    wrapper = _debian_style_wrapper(shared_dir, target)
    hook = make_hook(shared_dir / "hook")
    xml = domain("vm1", nic("52:54:00:00:00:01", "timer"), emulator=str(wrapper))
    for _ in range(2):  # probed, then replayed from the verdict cache
        assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).returncode == 0
    # The upgrade brings a QEMU without tx (a fake in the pre-0.14 help format; no real QEMU
    # lacks it): the wrapper stays byte for byte the same, the decision must not.
    _replace(
        target,
        "#!/bin/sh\necho 'virtio-net-pci.vectors=uint32' >&2\n"
        "echo 'virtio-net-pci.mac=macaddr' >&2\nexit 1\n",
    )
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "[txmode-unsupported" in result.stderr
