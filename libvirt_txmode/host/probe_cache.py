"""The on-disk probe cache, keyed like libvirt's own capability cache.

One JSON file per emulator, valid only for the exact binary identity (path, device, inode, size,
ctime, mtime) and this tool's version. Writes go to a temporary file and are renamed into place, so
a reader sees an old or a new file, never half of one. A per-emulator lock makes concurrent hooks
with a cold cache probe once and share the answer. Anything wrong with a file (corrupt, other owner,
other identity) means "not cached": it is logged and replaced, never trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

from .. import __version__
from ..common import files, logs
from ..common.files import write_atomic
from ..common.records import SLOTS
from ..engine.model import Support, SupportState
from .emulator import EmulatorIdentity

# The one JSON form of a probe answer and of type ancestry, shared with snapshots (the support
# pair is re-exported for older imports).
from .snapshot import ancestry_from_json, ancestry_to_json, support_from_json, support_to_json

LOG = logs.get(__name__)  # logging itself only once there is a message
FORMAT = "libvirt-txmode-probe-cache"
FORMAT_VERSION = 1
MAX_CACHE_BYTES = 1024 * 1024


@dataclass(frozen=True, **SLOTS)
class CacheEntry:
    """One emulator's cached facts. ``ancestry`` None: not known (an entry written before
    ancestry was recorded, or a QEMU that could not give it): the engine's table stands in."""

    devices: dict[str, Support] = field(default_factory=dict)
    ancestry: Optional[dict[str, tuple[str, ...]]] = None


class ProbeCache:
    def __init__(self, directory: Optional[str]) -> None:
        self.directory = directory

    def _path(self, identity: EmulatorIdentity, suffix: str = ".json") -> Optional[str]:
        if self.directory is None:
            return None
        digest = hashlib.sha256(identity.realpath.encode()).hexdigest()[:32]
        return os.path.join(self.directory, digest + suffix)

    def _usable_dir(self, create: bool) -> bool:
        """As root, only a directory no one else can write (nor any directory above it, nor a
        link on the way) may feed the hook's decisions: ``files.private_dir_problem``."""
        if self.directory is None:
            return False
        try:
            if create:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.stat(self.directory)
        except OSError as exc:
            if exc.errno != errno.ENOENT or create:
                LOG.warning("probe cache %s unusable: %s", self.directory, exc.strerror)
            return False
        if not stat.S_ISDIR(info.st_mode):
            LOG.warning("probe cache %s is not a directory: ignored", self.directory)
            return False
        problem = files.private_dir_problem(self.directory, create=create)
        if problem is not None:
            LOG.warning("probe cache %s is not trusted (%s): ignored", self.directory, problem)
            return False
        return True

    def load(self, identity: EmulatorIdentity) -> dict[str, Support]:
        """The cached device answers (``load_entry`` for everything cached)."""
        return self.load_entry(identity).devices

    def load_entry(self, identity: EmulatorIdentity) -> CacheEntry:
        path = self._path(identity)
        if path is None or not self._usable_dir(create=False):
            return CacheEntry()
        try:
            # Non-blocking, no symlink, regular files only (a FIFO here must not hang the hook),
            # and the trust rule on the descriptor read: root's or ours, written by no one else.
            raw = files.read_trusted(path, MAX_CACHE_BYTES, allowed_uids=files.owners())
        except FileNotFoundError:
            return CacheEntry()
        except OSError as exc:
            if exc.errno == errno.EFBIG:
                LOG.warning(
                    "probe cache %s is corrupt (%s): it will be replaced", path, exc.strerror
                )
            elif exc.errno == errno.EPERM:
                LOG.warning("probe cache %s is not trusted (%s): ignored", path, exc.strerror)
            else:
                LOG.warning("probe cache %s unreadable (%s): ignored", path, exc.strerror)
            return CacheEntry()
        return self._decode(path, raw, identity)

    def _decode(self, path: str, raw: bytes, identity: EmulatorIdentity) -> CacheEntry:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not a probe cache file")
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(
                    f"format version {data.get('version')!r}, this tool reads {FORMAT_VERSION}"
                )
            if data.get("tool") != __version__:
                # Written by another release of this tool: stale, not corrupt (libvirt, too,
                # drops its capability cache on upgrades).
                LOG.info(
                    "probe cache %s was written by version %r: re-probing", path, data.get("tool")
                )
                return CacheEntry()
            if data.get("identity") != identity.key():
                LOG.info(
                    "probe cache %s is for another build of %s: re-probing", path, identity.path
                )
                return CacheEntry()  # the binary changed since: re-probe, as libvirt does
            devices = data["devices"]
            if not isinstance(devices, dict):
                raise ValueError("'devices' is not an object")
            return CacheEntry(
                devices={str(name): support_from_json(entry) for name, entry in devices.items()},
                # Optional: entries written before ancestry was recorded have none (unknown).
                ancestry=ancestry_from_json(data.get("ancestry"), "'ancestry'"),
            )
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            LOG.warning("probe cache %s is corrupt (%s): it will be replaced", path, exc)
            return CacheEntry()

    def store(
        self,
        identity: EmulatorIdentity,
        results: dict[str, Support],
        *,
        ancestry: Optional[dict[str, tuple[str, ...]]] = None,
    ) -> None:
        """Merge ``results`` (and ``ancestry``, when known: else the cached one stays) into the
        cache file; failures are only logged, never raised."""
        path = self._path(identity)
        if path is None or not self._usable_dir(create=True):
            return
        cached = self.load_entry(identity)
        known = dict(cached.devices)
        known.update({d: s for d, s in results.items() if s.state is not SupportState.UNKNOWN})
        kept_ancestry = ancestry if ancestry is not None else cached.ancestry
        document: dict[str, object] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tool": __version__,
            "emulator": identity.path,
            "identity": identity.key(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "devices": {d: support_to_json(s) for d, s in sorted(known.items())},
        }
        if kept_ancestry is not None:
            document["ancestry"] = ancestry_to_json(kept_ancestry)
        try:
            write_atomic(path, json.dumps(document, indent=1).encode() + b"\n", mode=0o600)
        except OSError as exc:
            LOG.warning("cannot write probe cache %s: %s", path, exc.strerror)

    @contextlib.contextmanager
    def lock(self, identity: EmulatorIdentity, timeout: float) -> Iterator[bool]:
        """Hold the emulator's probe lock; yields False (and goes on unlocked) after ``timeout``."""
        path = self._path(identity, ".lock")
        if path is None or not self._usable_dir(create=True):
            yield False
            return
        try:
            fd = os.open(
                path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600
            )
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError as exc:
            LOG.warning("cannot open probe lock %s: %s", path, exc.strerror)
            yield False
            return
        import fcntl  # noqa: PLC0415 - only a probe takes the lock

        try:
            deadline = time.monotonic() + timeout
            acquired = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    acquired = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)
            yield acquired
        finally:
            os.close(fd)  # closing releases the flock
