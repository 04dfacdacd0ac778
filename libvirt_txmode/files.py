"""Which files may be believed, how they are told apart, and how much of an input is read.

Shared by the probe cache, the compiled policy, the verdict cache and the hook. Standard library
only: the hook's hot path (a cached verdict) must not import lxml, YAML or the engine.
"""

from __future__ import annotations

import os
import stat

# libvirt itself refuses domain XML above 10 MiB.
MAX_XML_BYTES = 10 * 1024 * 1024
_UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH


def writable_by_others(info: os.stat_result) -> bool:
    return bool(info.st_mode & _UNSAFE_BITS)


def trusted(info: os.stat_result) -> bool:
    """A cache file or directory we may believe: written by us (or root) and nobody else."""
    return info.st_uid in (0, os.geteuid()) and not writable_by_others(info)


def file_key(info: os.stat_result) -> str:
    """A file's identity: any edit or replacement changes it (mtime for content, ctime for
    renames onto it, chmod and chown)."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def binary_key(
    realpath: str, *, device: int, inode: int, size: int, ctime_ns: int, mtime_ns: int
) -> str:
    """An emulator's identity, as libvirt keys its capability cache: a binary replaced in place
    gets a new ctime. The probe cache and the verdict cache both use this one format."""
    return f"{realpath}:{device}:{inode}:{size}:{ctime_ns}:{mtime_ns}"
