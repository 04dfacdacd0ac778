"""Helpers for tests that drive a real libvirt daemon (Debian's libvirt-daemon-system)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from libvirt_txmode.install import DROPIN_NAME, is_ours

REPO = Path(__file__).resolve().parent.parent
URI = "qemu:///system"
PREFIX = "txmtest-"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


def require_libvirt() -> None:
    """Skip without libvirt, except under CI where a skip would hide a broken setup."""
    if shutil.which("virsh") and shutil.which("libvirtd") and os.geteuid() == 0:
        return
    skip_unless_ci("needs root and Debian's libvirt-daemon-system (scripts/apt-deps installs it)")


def skip_unless_ci(reason: str) -> None:
    """An integration test that cannot run: a skip here, a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration test cannot run under CI: {reason}")
    pytest.skip(reason)


def virsh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def daemon_up() -> None:
    subprocess.run([str(REPO / "scripts" / "libvirt-up")], check=True, timeout=180)


def daemon_pid() -> Optional[int]:
    try:
        pid = int(Path("/run/libvirtd.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def restart_daemon() -> None:
    """Stop libvirtd (leaving domains running, as a package upgrade does) and start it again."""
    pid = daemon_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    daemon_up()


def reload_daemon() -> None:
    pid = daemon_pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        # SIGHUP is asynchronous: wait until the daemon answers again after re-reading its config.
        time.sleep(0.3)
        for _ in range(100):
            if virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.1)


def domain_xml(
    name: str,
    *,
    txmode: Optional[str] = None,
    nics: int = 1,
    model: str = "virtio",
    domain_type: str = "qemu",
    driver_name: Optional[str] = None,
    padding: int = 0,
) -> str:
    attrs = ""
    if driver_name:
        attrs += f" name='{driver_name}'"
    if txmode:
        attrs += f" txmode='{txmode}'"
    driver = f"<driver{attrs}/>" if attrs else ""
    interfaces = "".join(
        f"<interface type='user'><mac address='52:54:00:7e:{i // 256:02x}:{i % 256:02x}'/>"
        f"<model type='{model}'/>{driver}</interface>\n"
        for i in range(nics)
    )
    description = f"<description>{'x' * padding}</description>" if padding else ""
    return (
        f"<domain type='{domain_type}'>\n<name>{name}</name>{description}\n"
        "<memory unit='MiB'>128</memory>\n"
        "<os><type arch='x86_64'>hvm</type></os>\n"
        f"<devices>\n{interfaces}</devices>\n</domain>\n"
    )


def remove_domain(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--managed-save", check=False)


def cleanup_leftovers() -> None:
    """Domains a killed earlier run left behind (the machine may be handed over as it is)."""
    listing = virsh("list", "--all", "--name", check=False).stdout.split()
    for name in listing:
        if name.startswith(PREFIX):
            remove_domain(name)


def qemu_cmdline(name: str) -> str:
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


class SyslogSink:
    """Collects what processes send to /dev/log, so tests can see the hook's syslog lines.

    There is no syslog daemon on these machines; if one is there we read its files instead.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._own = False
        self._busy = False
        self._start = time.time()

    def __enter__(self) -> SyslogSink:
        # Another test run on this machine (a second worktree) may hold /dev/log for one test: a
        # socket made minutes ago is such a sink, not a syslog daemon's; it goes away soon.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if time.time() - os.lstat("/dev/log").st_mtime > 600:
                    return self  # a daemon's: read its files
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind("/dev/log")
            except OSError:
                sock.close()
                time.sleep(0.1)
                continue
            os.chmod("/dev/log", 0o666)
            self._sock, self._own = sock, True
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
            break
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while True:
            try:
                if not select.select([self._sock], [], [], 0.1)[0]:
                    continue
                # Flagged before the datagram leaves the socket: lines() never sees it in neither.
                self._busy = True
                data = self._sock.recv(65536)
            except (OSError, ValueError):
                return
            self.messages.append(data.decode("utf-8", "replace"))
            self._busy = False

    def lines(self, ident: str = "libvirt-txmode") -> list[str]:
        if self._own:
            # The hook has exited, so everything it sent is queued on our socket: wait until
            # the reader thread has taken it all (a fixed sleep lost messages on a busy machine).
            assert self._sock is not None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                self._busy or select.select([self._sock], [], [], 0)[0]
            ):
                time.sleep(0.01)
            return [m for m in self.messages if ident in m]
        for path in ("/var/log/syslog", "/var/log/messages"):
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    return [line for line in handle if ident in line]
        journal = subprocess.run(
            ["journalctl", "-t", ident, "--since", f"@{int(self._start)}", "-o", "cat"],
            capture_output=True,
            text=True,
            check=False,
        )
        return journal.stdout.splitlines()

    def __exit__(self, *exc: object) -> None:
        if self._own and self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                os.unlink("/dev/log")


def fake_venv(base: Path) -> Path:
    """A venv (``base/venv``) whose site-packages makes libvirt_txmode importable with ``-I``: a
    .pth file names this tree and the test venv's dependencies, as a real install provides them.
    Quicker than ``python -m venv`` plus pip, and what matters here is the same: its own
    interpreter path, its own pyvenv.cfg and site-packages, which a test can own or remove."""
    import lxml
    import yaml

    venv = base / "venv"
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = venv / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    real = os.path.realpath(sys.executable)
    (venv / "bin" / "python3").symlink_to(real)
    (venv / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(real)}\ninclude-system-site-packages = false\n"
    )
    deps = {os.path.dirname(os.path.dirname(m.__file__ or "")) for m in (lxml, yaml)}
    (site / "txmode.pth").write_text("".join(f"{p}\n" for p in [str(REPO), *sorted(deps)]))
    return venv


def install_args(base: Path) -> list[str]:
    """The directory options of an install whose config, state and cache live under ``base``."""
    return [
        "--config-dir",
        str(base / "etc"),
        "--state-dir",
        str(base / "state"),
        "--cache-dir",
        str(base / "cache"),
    ]


@contextlib.contextmanager
def installed_hook(base: Path, policy: str, python: Optional[str] = None) -> Iterator[Path]:
    """install-hook into the real /etc/libvirt/hooks, with the test's policy; uninstall after."""
    config_dir = base / "etc"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "policy.yaml").write_text(policy)
    os.chmod(config_dir / "policy.yaml", 0o644)
    cli = str(VENV_BIN / "libvirt-txmode")
    args = install_args(base)
    extra = ["--python", python] if python else []
    result = subprocess.run(
        [cli, "install-hook", *extra, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    main_hook = Path("/etc/libvirt/hooks/qemu")
    hook = main_hook if is_ours(str(main_hook)) else main_hook.parent / "qemu.d" / DROPIN_NAME
    assert is_ours(str(hook)), result.stdout
    try:
        reload_daemon()
        yield hook
    finally:
        subprocess.run(
            [cli, "uninstall-hook", *args], capture_output=True, check=False, timeout=120
        )
        reload_daemon()
