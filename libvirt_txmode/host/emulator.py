"""An emulator as the hook sees it before running it: its identity (what the probe cache and
libvirt's own capabilities cache are keyed on) and whether the policy and the file system let it
be executed at all.

On the hook's miss path (a verdict not cached, the probe cache warm): standard library only, and
nothing that starts a process.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Optional

from ..common.files import binary_key, owners, path_trust_problem, script_targets
from ..common.records import SLOTS


class ProbeError(Exception):
    """The emulator could not be probed at all (untrusted, missing, hung, crashed)."""


@dataclass(frozen=True, **SLOTS)
class EmulatorIdentity:
    """What libvirt keys its capability cache on: a binary replaced in place gets a new ctime."""

    path: str
    realpath: str
    device: int
    inode: int
    size: int
    ctime_ns: int
    mtime_ns: int
    # For a wrapper script: the identities of the binaries it execs (files.script_targets).
    targets: str = ""

    def key(self) -> str:
        return binary_key(
            self.realpath,
            device=self.device,
            inode=self.inode,
            size=self.size,
            ctime_ns=self.ctime_ns,
            mtime_ns=self.mtime_ns,
            targets=self.targets,
        )


def identify(path: str) -> EmulatorIdentity:
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError as exc:
        raise ProbeError(f"emulator {path} is not accessible: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ProbeError(f"emulator {path} is not a regular file")
    return EmulatorIdentity(
        path=path,
        realpath=real,
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        ctime_ns=info.st_ctime_ns,
        mtime_ns=info.st_mtime_ns,
        targets=script_targets(real),
    )


def trust_problem(path: str, globs: Sequence[str]) -> Optional[str]:
    """Why ``path`` must not be executed, or None when it may be."""
    if not os.path.isabs(path):
        return f"emulator path {path!r} is not absolute"
    if any(part in (".", "..") for part in path.split("/")):
        # fnmatch's '*' also matches '/': '/usr/bin/qemu-system-x/../../../tmp/evil' would fit the
        # default glob, so a path must be matched as written, without '.' or '..' components.
        return f"emulator path {path!r} has '.' or '..' components"
    real = os.path.realpath(path)
    if not any(fnmatchcase(path, g) or fnmatchcase(real, g) for g in globs):
        return f"emulator {path} is not in the policy's trusted 'emulators' list"
    try:
        info = os.stat(real)
    except OSError as exc:
        return f"emulator {path} is not accessible: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & stat.S_IXUSR:
        return f"emulator {path} is not an executable file"
    # The binary, every directory above it and every link on the way: a root-owned binary in a
    # directory anyone can write can be swapped for another one.
    problem = path_trust_problem(path, allowed_uids=owners(), kind="file")
    if problem is not None:
        return f"emulator {path} is not trusted: {problem}: refusing to run it"
    return None
