"""Run the hook exactly as libvirt does, without libvirt: the installed sh wrapper, argv, XML on stdin.

libvirt execs ``/etc/libvirt/hooks/qemu DOMAIN OP SUBOP EXTRA`` with only ``LC_ALL=C`` and a short
PATH in the environment (src/util/virhook.c), so these helpers do the same against a hook that
``install()`` rendered into a temporary layout.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest

from libvirt_txmode.admin.install import install
from libvirt_txmode.admin.layout import Layout
from tests.libvirt_env import LOG_VARIABLES

LIBVIRT_ENV = {
    "LC_ALL": "C",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


def hook_env() -> dict[str, str]:
    """libvirt's environment, plus the log sockets of the test's own SyslogSink while one is
    open (libvirt_env.LOG_VARIABLES): a hook run by a test never logs to the machine's."""
    extra = {name: os.environ[name] for name in LOG_VARIABLES if name in os.environ}
    return {**LIBVIRT_ENV, **extra}


POLICY = """\
version: 1
action: enforce
on_unknown: deny
on_error: deny
emulators: [/usr/bin/qemu-system-*, /var/tmp/txmtest-*/qemu-*]
probe_timeout: 5
defaults:
  allowed: [iothread, timer]
rules:
  - name: no-timer
    match: {domain: "*-notimer*"}
    allowed: [iothread]
"""


@dataclass
class HookResult:
    returncode: int
    stdout: str
    stderr: str
    maxrss_kib: int = 0


@dataclass
class InstalledHook:
    layout: Layout
    path: Path

    @property
    def policy(self) -> Path:
        return Path(self.layout.policy)

    def run(
        self,
        *argv: str,
        stdin: Union[bytes, Iterable[bytes], None] = b"",
        timeout: float = 60,
        data_limit: Optional[int] = None,
    ) -> HookResult:
        """Run the hook; ``stdin=None`` hands it a pipe that is never written nor closed."""
        return run_hook(
            [str(self.path), *argv], stdin=stdin, timeout=timeout, data_limit=data_limit
        )


def run_hook(
    argv: list[str],
    *,
    stdin: Union[bytes, Iterable[bytes], None],
    timeout: float = 60,
    data_limit: Optional[int] = None,
) -> HookResult:
    """Run argv with libvirt's environment; collects exit code, output and peak memory (KiB).

    ``stdin`` may be an iterable of chunks, so a 100 MB input never sits in the test's memory (a
    forked child's peak RSS starts from its parent's, so ``maxrss_kib`` is only an upper bound).
    ``data_limit`` caps the child's data segment (RLIMIT_DATA), the way to prove bounded memory.
    """

    def limit() -> None:
        if data_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        argv,
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=hook_env(),
        cwd="/",
        preexec_fn=limit if data_limit is not None else None,  # noqa: PLW1509 - no threads touch it
    )
    os.close(read_end)
    writer: Optional[threading.Thread] = None
    if stdin is not None:

        def feed() -> None:
            # libvirt writes the XML from its event loop and copes with a reader that exits early.
            chunks = [stdin] if isinstance(stdin, bytes) else stdin
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(write_end, view[: 1 << 20])
                        view = view[written:]
            except OSError:
                pass
            finally:
                os.close(write_end)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    out = err = b""
    try:
        out, err = _communicate(proc, timeout)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.poll() is None:
            proc.kill()
        if writer is not None:
            writer.join(timeout=10)
        else:
            os.close(write_end)
    return HookResult(proc.returncode, out.decode(), err.decode(), usage.ru_maxrss)


def _communicate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    # Popen.communicate() would reap the child and lose its rusage: read the pipes ourselves.
    assert proc.stdout is not None and proc.stderr is not None
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(name: str, stream: object) -> None:
        chunks[name].append(stream.read())  # type: ignore[attr-defined]

    threads = [
        threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
        threading.Thread(target=drain, args=("err", proc.stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            proc.kill()
            raise AssertionError(f"hook {proc.args!r} did not finish within {timeout} s (a hang)")
    return b"".join(chunks["out"]), b"".join(chunks["err"])


def make_hook(base: Path, policy: str = POLICY) -> InstalledHook:
    layout = Layout(
        hooks_dir=str(base / "hooks"),
        config_dir=str(base / "etc"),
        state_dir=str(base / "state"),
        cache_dir=str(base / "cache"),
    )
    os.makedirs(layout.config_dir, exist_ok=True)
    Path(layout.policy).write_text(policy)
    os.chmod(layout.policy, 0o644)
    outcome = install(layout, python=sys.executable)
    assert outcome.hook_path is not None
    # install() self-tests the hook on a sample domain, which leaves a verdict and a compiled
    # policy behind: every test starts from a cold cache, as after a reboot.
    shutil.rmtree(layout.cache_dir, ignore_errors=True)
    return InstalledHook(layout, Path(outcome.hook_path))


def domain(
    name: str,
    *nics: str,
    domain_type: str = "qemu",
    emulator: Optional[str] = None,
) -> bytes:
    emu = f"<emulator>{emulator}</emulator>" if emulator else ""
    return (
        f"<domain type='{domain_type}'>\n  <name>{name}</name>\n"
        "  <memory unit='MiB'>128</memory>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
        f"  <devices>{emu}\n"
        + "".join(f"    {nic}\n" for nic in nics)
        + "  </devices>\n</domain>\n"
    ).encode()


def nic(mac: str, txmode: Optional[str] = None, *, model: str = "virtio", extra: str = "") -> str:
    driver = f"<driver txmode='{txmode}'/>" if txmode else ""
    return f"<interface type='user'><mac address='{mac}'/><model type='{model}'/>{driver}{extra}</interface>"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned 0755 directory outside /tmp/pytest-of-root (0700), so that fake emulators stay
    executable by the unprivileged user probes run as; matches the test policy's emulator glob."""
    path = Path(f"/var/tmp/txmtest-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
