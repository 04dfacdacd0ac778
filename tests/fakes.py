"""Fake emulators: small scripts that behave like (or misbehave unlike) ``qemu-system-*``.

Probes run the emulator as libvirt's QEMU user (qemu.conf's ``user``, e.g. libvirt-qemu) when the
tests run as root, and pytest's ``tmp_path`` lives under ``/tmp/pytest-of-root`` (mode 0700), which
that user cannot traverse. So fakes live in their own directory under /tmp, mode 0755, owned by
root: a test's policy trusts ``<that dir>/*``.
Each fake's text carries a unique marker, so a test can look for a leftover process by it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

DATA = Path(__file__).resolve().parent / "data"
QEMU_DATA = DATA / "qemu"


class FakeEmulators:
    """A directory of fake emulators the QEMU user may execute, plus a world-writable drop box."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Where a fake run as the QEMU user may leave evidence that it ran (sticky, like /tmp).
        self.dropbox = directory.parent / (directory.name + "-dropbox")
        self.dropbox.mkdir(mode=0o1777)
        os.chmod(self.dropbox, 0o1777)

    @property
    def glob(self) -> str:
        return f"{self.directory}/*"

    @staticmethod
    def sleep_args() -> str:
        """``sleep`` arguments unique to one fake (GNU sleep adds them up): find it with pgrep."""
        return f"1000 0.{uuid.uuid4().int % 10**15:015d}"

    def script(
        self,
        name: str,
        body: str,
        *,
        interpreter: str = "/bin/sh",
        mode: int = 0o755,
        uid: int = 0,
        directory: Optional[Path] = None,
    ) -> Path:
        path = (directory or self.directory) / name
        path.write_text(f"#!{interpreter}\n{body}")
        os.chown(path, uid, 0)
        os.chmod(path, mode)
        return path

    def data(self, name: str, content: bytes) -> Path:
        """A file a fake ``cat``s (readable by the QEMU user)."""
        path = self.directory / f"{name}.data"
        path.write_bytes(content)
        os.chmod(path, 0o644)
        return path

    def help_printer(
        self,
        name: str,
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        exit_code: int = 0,
        qmp: Optional[bytes] = None,
    ) -> Path:
        """Answers ``-device X,help`` with fixed output, ``-qmp stdio`` with ``qmp``."""
        out = self.data(f"{name}-help-stdout", stdout)
        err = self.data(f"{name}-help-stderr", stderr)
        qmp_part = ""
        if qmp is not None:
            reply = self.data(f"{name}-qmp", qmp)
            qmp_part = f"    -qmp) cat {reply}; exit 0 ;;\n"
        return self.script(
            name,
            'for arg in "$@"; do\n'
            '  case "$arg" in\n'
            f"{qmp_part}"
            f"    *,help) cat {out}; cat {err} >&2; exit {exit_code} ;;\n"
            "  esac\n"
            "done\n"
            "exit 1\n",
        )

    def touching(
        self, name: str, *, mode: int = 0o755, uid: int = 0, directory: Optional[Path] = None
    ) -> tuple[Path, Path]:
        """A fake that leaves a file in the drop box when run: (script, that file)."""
        evidence = self.dropbox / f"{name}-ran"
        body = f"touch {evidence}\necho 'virtio-net-pci options:'\necho '  tx=<str>'\n"
        script = self.script(name, body, mode=mode, uid=uid, directory=directory)
        return script, evidence


def make_fakes() -> Iterator[FakeEmulators]:
    base = Path(tempfile.mkdtemp(prefix="txmode-fakes-", dir="/tmp"))
    os.chmod(base, 0o755)
    directory = base / "bin"
    directory.mkdir()
    os.chmod(directory, 0o755)
    try:
        yield FakeEmulators(directory)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def processes_with(sleep_args: str) -> list[int]:
    """Pids of ``sleep SLEEP_ARGS`` processes (the arguments are unique to one fake)."""
    pattern = "sleep " + sleep_args.replace(".", "[.]")
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def read(name: str) -> bytes:
    return (QEMU_DATA / name).read_bytes()
