"""A second hypervisor made by the tests: a clean Debian 12 root with its own libvirtd, in a chroot.

`scripts/debian-root` makes the root (cached as a tarball); this module mounts what a daemon needs
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
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from tests.libvirt_env import REPO, skip_unless_ci

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
# Character devices that programs in a minimal root expect (the numbers are Linux's, devices.txt).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)


def host_env() -> dict[str, str]:
    """This machine's tools without the developer's PATH (pyenv's python3 must not build packages)."""
    return {**os.environ, "PATH": CLEAN_ENV["PATH"], "DEBIAN_FRONTEND": "noninteractive"}


def require_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("chroot") or not shutil.which("dpkg"):
        skip_unless_ci("needs root on Debian (chroot, dpkg, debootstrap)")


# HEAD's commit -> its .deb: the package and Ansible tests of one session share one build.
_BUILT: dict[str, Path] = {}


def build_deb(out: Path) -> Path:
    """The .deb built from a clean copy of HEAD, as CI builds it (scripts/build-deb)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head in _BUILT and _BUILT[head].exists():
        return _BUILT[head]
    result = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), str(out)],
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
        self, *argv: str, check: bool = True, timeout: float = 300, input: Optional[str] = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}
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

    # -- mounts ---------------------------------------------------------------------------
    def mount(self) -> None:
        subprocess.run(["mount", "-t", "proc", "proc", str(self.path("/proc"))], check=True)
        subprocess.run(["mount", "--bind", "/sys", str(self.path("/sys"))], check=True)
        # A /dev of its own without /dev/kvm: this host is TCG-only. Through a bind of the host's
        # /dev, libvirt would see a /dev/kvm whose group (the host's kvm gid) is not the root's
        # kvm group, judge KVM usable yet missing from its QEMU capabilities, and re-probe QEMU on
        # every API call (about 4 s each).
        dev = self.path("/dev")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "dev", str(dev)], check=True
        )
        for name, major, minor in DEVICES:
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)  # mknod's mode passes through the umask
        (dev / "pts").mkdir()
        (dev / "shm").mkdir(mode=0o1777)
        os.chmod(dev / "shm", 0o1777)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, dev / name)

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
def debian_root(parent: Path) -> Iterator[DebianRoot]:
    """An unpacked, mounted root with libvirtd running; always torn down completely."""
    root = DebianRoot(parent / "root")
    result = subprocess.run(
        [str(REPO / "scripts" / "debian-root"), str(root.root)],
        capture_output=True,
        text=True,
        env=host_env(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"scripts/debian-root failed:\n{result.stdout}\n{result.stderr}"
    # The root's daemons must never reach this machine's device nodes (see start_daemons).
    host_devices = {f"/dev/{name}": os.stat(f"/dev/{name}").st_mode for name, _, _ in DEVICES}
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
