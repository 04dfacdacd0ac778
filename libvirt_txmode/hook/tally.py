"""How many decisions the hook made, by outcome: a small counter file in the hook's cache.

The hook adds one at every ``prepare begin`` it decides, from the full check (gate.py) or from a
cached verdict (verdict.py); ``libvirt-txmode metrics`` reads the counts back
(``libvirt_txmode_decisions_total``). The file, ``CACHE/decisions``, holds one ``OUTCOME COUNT``
line per outcome (logsink.OUTCOMES), rewritten in place while a POSIX lock on the file itself is
held (readers take it too), so starts running in parallel lose no count and a reader never sees
half a file. In place rather than renamed over: ext4 flushes a file renamed over another at once
(auto_da_alloc), which cost a hook run about a millisecond; a write of a few dozen bytes at
offset 0 lands in one block whole or not at all. In the cache directory (0700, files 0600, as the
verdicts, and what uninstall-hook empties): counts that are lost only restart, which Prometheus
reads as a counter reset.

The hook's cached path runs this: standard library only (``os.lockf`` is in ``posix``, so no
``fcntl`` import), a handful of system calls, and a start is never delayed by it beyond a bounded
wait for the lock nor ever fails because of it: a count that cannot be taken is lost.
"""

from __future__ import annotations

import os
import time

from ..common import files, logsink
from .markers import SELFTEST_DOMAIN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Optional

FILE_NAME = "decisions"
MAX_BYTES = 4096
# The lock is held for a read and a write; 200 tries 1 ms apart bound the wait should another
# holder hang, and a count is given up rather than a start delayed.
_LOCK_TRIES = 200
_LOCK_PAUSE = 0.001


def count_decision(cache_dir: Optional[str], records: Iterable[Mapping[str, str]]) -> bool:
    """Add one to the outcome the decision's records name (their MESSAGE_ID); False when
    nothing was counted (no outcome, the self-test, an untrusted or unwritable directory)."""
    try:
        outcome = None
        for fields in records:
            if fields.get("DOMAIN") == SELFTEST_DOMAIN:
                return False
            outcome = logsink.outcome_of(fields) or outcome
        if cache_dir is None or outcome is None:
            return False
        return _add(cache_dir, outcome)
    except Exception:  # a count must never fail a start
        return False


def _add(cache_dir: str, outcome: str) -> bool:
    # One path walk when the directory is there already (the common case), else create it.
    if files.private_dir_problem(cache_dir, create=False) is not None and (
        files.private_dir_problem(cache_dir, create=True) is not None
    ):
        return False
    uids = files.owners()
    path = os.path.join(cache_dir, FILE_NAME)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return False
    try:
        if files.node_problem(path, os.fstat(fd), uids, kind="file") is not None:
            return False
        if not _lock(fd, os.F_TLOCK):
            return False
        raw = os.pread(fd, MAX_BYTES + 1, 0)
        try:
            counts = parse(raw) if len(raw) <= MAX_BYTES else {}
        except OSError:
            counts = {}  # edited or cut short: counting starts again (a counter reset)
        counts[outcome] = counts.get(outcome, 0) + 1
        data = render(counts)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, how: int) -> bool:
    for _ in range(_LOCK_TRIES):
        try:
            os.lockf(fd, how, 0)
            return True
        except OSError:
            time.sleep(_LOCK_PAUSE)
    return False


def parse(raw: bytes) -> dict[str, int]:
    """The counts of a counter file; OSError when it is not one (edited, cut short)."""
    counts: dict[str, int] = {}
    for line in raw.decode("ascii", "replace").splitlines():
        name, _, value = line.partition(" ")
        if name not in logsink.OUTCOMES or not value.isdigit() or len(value) > 19:
            raise OSError(f"not a decision counter file: {line[:60]!r}")
        counts[name] = int(value)
    return counts


def render(counts: Mapping[str, int]) -> bytes:
    lines = [f"{outcome} {counts.get(outcome, 0)}\n" for outcome in logsink.OUTCOMES]
    return "".join(lines).encode("ascii")


def read(cache_dir: str) -> tuple[dict[str, int], Optional[float]]:
    """Every outcome's count (0 before the first decision) and when the file last changed
    (None: never); OSError naming the problem when it must not be believed (the trust rule)."""
    path = os.path.join(cache_dir, FILE_NAME)
    if not os.path.lexists(path):
        return dict.fromkeys(logsink.OUTCOMES, 0), None
    uids = files.owners()
    problem = files.path_trust_problem(path, allowed_uids=uids, kind="file")
    if problem is not None:
        raise OSError(problem)
    # Read-write, as the lock the hook's writes hold is a write lock: a reader waits for it.
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        problem = files.node_problem(path, info, uids, kind="file")
        if problem is not None:
            raise OSError(problem)
        if not _lock(fd, os.F_TLOCK):
            raise OSError(f"{path}: locked by a hook that does not finish")
        raw = os.pread(fd, MAX_BYTES + 1, 0)
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise OSError(f"{path}: larger than {MAX_BYTES} bytes")
    counts = parse(raw)
    return {o: counts.get(o, 0) for o in logsink.OUTCOMES}, info.st_mtime
