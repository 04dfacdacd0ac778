"""libvirt's qemu hook protocol: argv + domain XML on stdin -> exit code, stderr, log records.

hooks/qemu runs ``python -I -S PACKAGE/hookstart.py`` for ``prepare begin`` only; this module still
exits 0 for any other event in case it is run directly. libvirt runs ``prepare begin`` before it
labels resources, also for incoming migration and restore, and aborts the start when we exit
non-zero, quoting our stderr to the user. It drops stderr when we exit 0, so every decision also
goes to the system log (logsink.py).

One way through: read the XML, answer from the verdict cache (verdict.py) when it holds a decision
for this exact input, else hand a ``gate.Request`` to the full check. Until that hand-over only
the standard library's cheapest modules are imported (no typing, no dataclasses): a cached answer
is the common case, and importing more would cost it more than it does.

Rules kept here: never call back into libvirt (it would deadlock: docs/libvirt-facts.md), never
write to stdout (libvirt reads it as replacement XML for migrate/restore), never show a traceback.
"""

from __future__ import annotations

import os
import sys

from ..common import files, paths
from . import verdict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import IO, Optional

DEFAULT_POLICY = paths.POLICY
DEFAULT_SNAPSHOT = "/var/lib/libvirt-txmode/snapshot.json"
_WRAPPER_FLAGS = ("--policy", "--snapshot", "--cache-dir", "--")


def main(
    argv: Optional[Sequence[str]] = None,
    stdin: Optional[IO[bytes]] = None,
    stderr: Optional[IO[str]] = None,
    *,
    before_full_check: Optional[Callable[[], None]] = None,
) -> int:
    """The exit code for libvirt. ``before_full_check`` runs once the cache cannot answer
    (hookstart.py sets ``site`` up there: lxml and YAML live in site-packages)."""
    argv = sys.argv[1:] if argv is None else argv
    err = stderr if stderr is not None else _stderr()
    try:
        options, event = _arguments(argv)
    except SystemExit:  # argparse on nonsense options: not an event we check
        return 0
    if len(event) < 3 or (event[1], event[2]) != ("prepare", "begin"):
        return 0
    domain_name = event[0]
    policy, snapshot, cache_dir = options
    data: Optional[bytes] = None
    read_error: Optional[str] = None
    try:
        data = files.read_stream_bounded(stdin or sys.stdin.buffer, files.MAX_XML_BYTES)
        if data is None:
            read_error = files.TOO_LARGE
    except OSError as exc:
        read_error = str(exc.strerror)
    except Exception as exc:  # gate.internal_error: fail closed, no traceback
        return internal_error(domain_name, exc, err)
    key: Optional[verdict.Key] = None
    try:
        if data is not None and cache_dir and verdict.inputs_trusted(policy, snapshot):
            key = verdict.key(data, policy, snapshot)
            code = verdict.answer(cache_dir, key, err)
            if code is not None:
                return code
    except Exception:  # nothing unusual is answered from the cache: the full check decides
        key = None
    if before_full_check is not None:
        before_full_check()
    from . import gate  # noqa: PLC0415 - lxml, YAML and the engine: only when the cache cannot answer

    request = gate.Request(domain_name, policy, snapshot, cache_dir, data, read_error, key)
    return gate.run(request, err)


def _stderr() -> IO[str]:
    """sys.stderr, or a sink when fd 2 was closed (Python then has no sys.stderr): libvirt always
    passes a pipe, but a decision must not depend on it."""
    if sys.stderr is not None:
        return sys.stderr
    return open(os.devnull, "w", encoding="utf-8")


def _arguments(argv: Sequence[str]) -> tuple[tuple[str, str, Optional[str]], list[str]]:
    """((policy, snapshot, cache dir), event) from the wrapper's command line."""
    argv = list(argv)
    # The exact shape hooks/qemu passes (every value set, none looking like an option): argparse
    # would read it the same way, but importing it costs more than a cached answer.
    if len(argv) >= 7 and all(argv[i] == flag for i, flag in zip((0, 2, 4, 6), _WRAPPER_FLAGS)):
        values = argv[1], argv[3], argv[5]
        if all(value and not value.startswith("-") for value in values):
            return values, argv[7:]
    import argparse  # noqa: PLC0415 - any other command line

    parser = argparse.ArgumentParser(prog="libvirt_txmode.hook.protocol", add_help=False)
    parser.add_argument("--policy", default=DEFAULT_POLICY)
    parser.add_argument("--snapshot", default=DEFAULT_SNAPSHOT)
    parser.add_argument("--cache-dir", default=None)
    options, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return (options.policy, options.snapshot, options.cache_dir), rest


def internal_error(domain_name: str, exc: BaseException, err: IO[str]) -> int:
    from . import gate  # noqa: PLC0415 - a rare path: its imports do not matter

    return gate.internal_error(domain_name, exc, err)


if __name__ == "__main__":
    raise SystemExit(main())
