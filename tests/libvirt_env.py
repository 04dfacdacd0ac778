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
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from libvirt_txmode.admin.hook_file import DROPIN_NAME, hook_settings, is_ours
from libvirt_txmode.common import logsink

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


# Where pytest makes every test's temporary directory (tmp_path) on this machine.
TEST_TMP = os.path.join(tempfile.gettempdir(), "pytest-of-")


def clean_stale_state() -> None:
    """What an interrupted run of the suite left behind and would fail the next one: a Debian
    root's daemons and mounts (a package installed there included), hooks installed into
    /etc/libvirt/hooks by a test, interpreter wrappers. Called once the session holds the e2e
    lock (conftest.py): no other run is using any of it then."""
    shutil.rmtree(WRAPPERS, ignore_errors=True)
    own_root = os.stat("/")
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            root = os.readlink(f"/proc/{pid}/root")
            same = os.path.samestat(os.stat(f"/proc/{pid}/root"), own_root)
        except OSError:
            continue  # gone already, or a kernel thread
        if not same and root.startswith(TEST_TMP):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with open("/proc/mounts", encoding="utf-8") as handle:
        points = [line.split()[1] for line in handle]
    for point in sorted((p for p in points if p.startswith(TEST_TMP)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    for hook in (Path("/etc/libvirt/hooks/qemu"), Path("/etc/libvirt/hooks/qemu.d") / DROPIN_NAME):
        if is_ours(str(hook)) and hook_settings(str(hook)).get("POLICY", "").startswith(TEST_TMP):
            hook.unlink()


def qemu_cmdline(name: str) -> str:
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# The variables that give a hook log sockets of its own (logsink.default_targets).
LOG_VARIABLES = (logsink.SYSLOG_SOCKET_VARIABLE, logsink.JOURNAL_SOCKET_VARIABLE)
# Root-owned and 0755 from / down, so an interpreter wrapper there passes install-hook's trust rule.
WRAPPERS = Path("/run/libvirt-txmode-tests")


def log_sockets(directory: Path) -> dict[str, str]:
    """The environment that points a hook at the syslog socket a SyslogSink binds in
    ``directory`` (and at no journald: that path is never bound)."""
    return {
        logsink.SYSLOG_SOCKET_VARIABLE: str(directory / "syslog"),
        logsink.JOURNAL_SOCKET_VARIABLE: str(directory / "journal"),
    }


class SyslogSink:
    """A syslog socket of the test's own, never the machine's /dev/log: two test runs on one
    machine (the host's and a Debian root's, or two worktrees') never read each other's lines.

    Hooks reach it through logsink's variables: a hook the test runs itself gets them from the
    environment while the sink is open (tests/hookrun.py passes them on); a hook libvirtd runs
    gets them from the interpreter wrapper installed_hook puts in place, so its sink is bound in
    that hook's directory (``SyslogSink(hook_log_dir(base))``).
    """

    def __init__(self, directory: Optional[Path] = None) -> None:
        self.messages: list[str] = []
        self._given = directory
        self._dir: Optional[Path] = None
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._busy = False
        self._saved: dict[str, Optional[str]] = {}

    def __enter__(self) -> SyslogSink:
        # A short path of its own: a socket's path must fit in 108 bytes.
        self._dir = self._given or Path(tempfile.mkdtemp(prefix="txmlog-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        variables = log_sockets(self._dir)
        path = variables[logsink.SYSLOG_SOCKET_VARIABLE]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket file an interrupted run left behind
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o666)
        self._sock = sock
        for name, value in variables.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
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
        # The hook has exited, so everything it sent is queued on our socket: wait until the
        # reader thread has taken it all (a fixed sleep lost messages on a busy machine).
        assert self._sock is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            self._busy or select.select([self._sock], [], [], 0)[0]
        ):
            time.sleep(0.01)
        return [m for m in self.messages if ident in m]

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join()
        if self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._dir / "syslog")
            if self._given is None:
                shutil.rmtree(self._dir, ignore_errors=True)


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


def hook_log_dir(base: Path) -> Path:
    """Where the hook installed_hook(base, ...) sends its log lines (a SyslogSink there gets them)."""
    return base / "log"


def _log_wrapper(base: Path) -> Path:
    """An interpreter for the installed hook: this test's Python, with logsink's variables set
    to hook_log_dir(base). libvirtd hands a hook no environment of ours, so the wrapper carries
    it. (What an interrupted run left in WRAPPERS goes at the session's start: clean_stale_state.)"""
    WRAPPERS.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(WRAPPERS, 0o755)
    directory = Path(tempfile.mkdtemp(dir=WRAPPERS))
    os.chmod(directory, 0o755)
    wrapper = directory / "python3"
    settings = "".join(
        f"{name}={value}\n" for name, value in log_sockets(hook_log_dir(base)).items()
    )
    wrapper.write_text(
        "#!/bin/sh\n# tests/libvirt_env.py: the test's interpreter, logging to the test's socket\n"
        f"{settings}export {' '.join(LOG_VARIABLES)}\n"
        f'exec {sys.executable} "$@"\n'
    )
    os.chmod(wrapper, 0o755)
    return wrapper


@contextlib.contextmanager
def installed_hook(base: Path, policy: str, python: Optional[str] = None) -> Iterator[Path]:
    """install-hook into the real /etc/libvirt/hooks, with the test's policy; uninstall after.
    Without ``python``, the hook logs to hook_log_dir(base), not to the machine's sockets."""
    config_dir = base / "etc"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "policy.yaml").write_text(policy)
    os.chmod(config_dir / "policy.yaml", 0o644)
    hook_log_dir(base).mkdir(exist_ok=True)
    cli = str(VENV_BIN / "libvirt-txmode")
    args = install_args(base)
    wrapper = None if python else _log_wrapper(base)
    extra = ["--python", python or str(wrapper)]
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
        if wrapper is not None:
            shutil.rmtree(wrapper.parent, ignore_errors=True)
