"""A second hypervisor made by the tests: a clean Debian root with its own libvirtd, in a chroot.

`scripts/debian-root` makes the root (cached as a tarball) of a given release (bookworm, trixie),
optionally with what the test suite itself needs; this module mounts what a daemon needs
(proc, sys, dev), runs virtlogd and libvirtd inside it, and on teardown stops every process that
lives in the root and undoes every mount before anything is deleted, even when the test failed.
The root's /run is a directory of its own, so its daemon's socket and pidfile never meet the host
daemon's (`assert_separate_from_host` checks that).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Optional

from tests.libvirt_env import REPO, skip_unless_ci

# Where install_project puts this tree inside a root, and where pip's cache of each suite lives.
PROJECT = "/src/libvirt-txmode"
PIP_CACHE = Path("/var/cache/libvirt-txmode-tests/pip")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
# Character devices that programs in a minimal root expect (the numbers are Linux's, devices.txt).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    # Interfaces of type ethernet, bridge and network get a tap device from it.
    ("net/tun", 10, 200),
)


def host_env() -> dict[str, str]:
    """This machine's tools without the developer's PATH (pyenv's python3 must not build packages)."""
    return {**os.environ, "PATH": CLEAN_ENV["PATH"], "DEBIAN_FRONTEND": "noninteractive"}


def require_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("chroot") or not shutil.which("dpkg"):
        skip_unless_ci("needs root on Debian (chroot, dpkg, debootstrap)")


# HEAD's commit -> its .deb: the package and Ansible tests of one session share one build.
_BUILT: dict[str, Path] = {}


def build_deb(out: Path, repo: Path = REPO) -> Path:
    """The .deb built from a clean copy of ``repo``'s HEAD by that tree's own scripts/build-deb,
    as CI builds it."""
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head in _BUILT and _BUILT[head].exists():
        return _BUILT[head]
    result = subprocess.run(
        [str(repo / "scripts" / "build-deb"), str(out)],
        capture_output=True,
        text=True,
        env=host_env(),
        timeout=600,
        check=False,
    )
    debs = sorted(out.glob("libvirt-txmode_*_all.deb"))
    assert debs, f"build failed:\n{result.stdout}\n{result.stderr}"
    _BUILT[head] = debs[0]
    return debs[0]


class DebianRoot:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- running things inside --------------------------------------------------------------
    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 300,
        input: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        result = subprocess.run(
            ["chroot", str(self.root), *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in {self.root}: {' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("virsh", "-c", "qemu:///system", *args, check=check, timeout=120)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    # -- this project inside ------------------------------------------------------------------
    def trust_like_host(self) -> None:
        """pip in the root reaches the package index as this machine's pip does: the CA
        certificates this machine added and its pip.conf (a proxy's CA, a mirror)."""
        local_ca = Path("/usr/local/share/ca-certificates")
        if local_ca.is_dir() and any(local_ca.iterdir()):
            shutil.copytree(local_ca, self.path(str(local_ca)), dirs_exist_ok=True)
            self.run("update-ca-certificates")
        if os.path.isfile("/etc/pip.conf"):
            shutil.copyfile("/etc/pip.conf", self.path("/etc/pip.conf"))

    def install_project(self, suite: str) -> str:
        """This tree's files (as git lists them: committed or not, ignored ones left out) at
        PROJECT, a git repository of their own; pip there reaches the index as it does here."""
        listed = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        dest = self.path(PROJECT)
        for name in sorted(n.decode() for n in listed if n):
            source = REPO / name
            if not source.is_file():
                continue  # deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
        self.trust_like_host()
        # The wheels pip builds (libvirt-python compiles for a minute) are kept between runs.
        cache = PIP_CACHE.with_name(f"{PIP_CACHE.name}-{suite}")
        cache.mkdir(parents=True, exist_ok=True)
        inside = self.path("/root/.cache/pip")
        inside.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(cache), str(inside)], check=True)
        git = ["git", "-C", PROJECT, "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
        self.run(*git, "init", "-q")
        self.run(*git, "add", "-A")
        self.run(*git, "commit", "-q", "-m", "the tree under test")
        return PROJECT

    # -- mounts ---------------------------------------------------------------------------
    def mount(self) -> None:
        subprocess.run(["mount", "-t", "proc", "proc", str(self.path("/proc"))], check=True)
        subprocess.run(["mount", "--bind", "/sys", str(self.path("/sys"))], check=True)
        # A /dev of its own. Through a bind of the host's /dev, libvirt would see a /dev/kvm
        # whose group (the host's kvm gid) is not the root's kvm group, judge KVM usable yet
        # missing from its QEMU capabilities, and re-probe QEMU on every API call (about 4 s
        # each): /dev/kvm, where this machine has one, is made with the root's own kvm group.
        dev = self.path("/dev")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "dev", str(dev)], check=True
        )
        for name, major, minor in DEVICES:
            (dev / name).parent.mkdir(exist_ok=True)
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)  # mknod's mode passes through the umask
        if os.path.exists("/dev/kvm"):
            kvm = dev / "kvm"
            os.mknod(kvm, 0o660 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
            os.chown(kvm, 0, self.group_id("kvm"))
            os.chmod(kvm, 0o660)
        (dev / "pts").mkdir()
        # A pty instance of its own (tests open terminals), not this machine's ptys.
        subprocess.run(
            ["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts",
             str(dev / "pts")],
            check=True,
        )  # fmt: skip
        os.symlink("pts/ptmx", dev / "ptmx")
        (dev / "shm").mkdir(mode=0o1777)
        os.chmod(dev / "shm", 0o1777)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, dev / name)

    def group_id(self, name: str) -> int:
        """A group's number in the root's /etc/group (not this machine's)."""
        for line in self.path("/etc/group").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"no group {name} in {self.root}/etc/group")

    def mounts(self) -> list[str]:
        prefix = str(self.root.resolve())
        with open("/proc/mounts", encoding="utf-8") as handle:
            points = [line.split()[1] for line in handle]
        return [p for p in points if p == prefix or p.startswith(prefix + "/")]

    def unmount(self) -> None:
        for point in sorted(self.mounts(), key=len, reverse=True):
            if subprocess.run(["umount", point], check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], check=False)

    # -- daemons --------------------------------------------------------------------------
    def daemon_pid(self, name: str) -> Optional[int]:
        try:
            pid = int(self.path(f"/run/{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self.inside(pid) else None

    def inside(self, pid: int) -> bool:
        try:
            return os.readlink(f"/proc/{pid}/root") == str(self.root.resolve())
        except OSError:
            return False

    def processes(self) -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and self.inside(int(p))]

    def start_daemons(self) -> None:
        # No per-QEMU mount namespace: libvirt populates it from a helper that enters the
        # namespace with setns(), which leaves the chroot, so the helper's chmod of the devices it
        # copies lands on this machine's /dev/null, /dev/zero, ... (seen: 0666 became 0644).
        conf = self.path("/etc/libvirt/qemu.conf")
        text = conf.read_text()
        if "\nnamespaces = []\n" not in text:
            conf.write_text(text + "\n# libvirt-txmode tests: a chroot host\nnamespaces = []\n")
        self.run("virtlogd", "-d")
        self.start_libvirtd()

    def start_libvirtd(self) -> None:
        self.path("/run/libvirtd.pid").unlink(missing_ok=True)
        self.run("libvirtd", "-d")
        # The first connection waits while libvirt probes QEMU: poll, don't sleep blindly.
        for _ in range(240):
            if self.virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("libvirtd in the Debian root did not answer within 120 s")

    def stop_daemon(self, name: str) -> None:
        pid = self.daemon_pid(name)
        assert pid is not None, f"{name} is not running in {self.root}"
        os.kill(pid, signal.SIGTERM)
        for _ in range(600):
            if not self.inside(pid):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} (pid {pid}) did not stop within 60 s")

    def stop_everything(self) -> None:
        """Domains, daemons and any other process whose root is this root: all gone."""
        if self.daemon_pid("libvirtd") is not None:
            listing = self.virsh("list", "--name", check=False).stdout.split()
            for name in listing:
                self.virsh("destroy", name, check=False)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            for _ in range(100):
                if not self.processes():
                    return
                time.sleep(0.1)
        raise AssertionError(f"processes still running in {self.root}: {self.processes()}")

    def assert_separate_from_host(self, host_pid: Optional[int]) -> None:
        """The root's daemon has its own socket and pidfile; the host daemon is untouched."""
        own = self.daemon_pid("libvirtd")
        assert own is not None and self.path("/run/libvirt/libvirt-sock").is_socket()
        assert own != host_pid
        if host_pid is not None:
            assert int(Path("/run/libvirtd.pid").read_text().strip()) == host_pid
            os.kill(host_pid, 0)


@contextlib.contextmanager
def debian_root(
    parent: Path, suite: str = "bookworm", *, dev: bool = False
) -> Iterator[DebianRoot]:
    """An unpacked, mounted root of Debian ``suite`` with libvirtd running (``dev``: with the test
    suite's own packages too); always torn down completely."""
    root = DebianRoot(parent / "root")
    result = subprocess.run(
        [
            str(REPO / "scripts" / "debian-root"),
            "--suite",
            suite,
            *(["--dev"] if dev else []),
            str(root.root),
        ],
        capture_output=True,
        text=True,
        env=host_env(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"scripts/debian-root failed:\n{result.stdout}\n{result.stderr}"
    # The root's daemons must never reach this machine's device nodes (see start_daemons).
    host_devices = {
        f"/dev/{name}": os.stat(f"/dev/{name}").st_mode
        for name, _, _ in DEVICES
        if os.path.exists(f"/dev/{name}")
    }
    try:
        root.mount()
        root.start_daemons()
        yield root
    finally:
        try:
            root.stop_everything()
        finally:
            root.unmount()
        leftover = root.mounts()
        assert not leftover, f"still mounted: {leftover}"
        now = {path: os.stat(path).st_mode for path in host_devices}
        assert now == host_devices, f"this machine's devices changed: {host_devices} -> {now}"
        # Only now, with nothing of the host mounted inside, may the tree be deleted.
        shutil.rmtree(root.root, ignore_errors=True)
