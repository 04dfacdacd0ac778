"""libvirt's qemu hook protocol: argv + domain XML on stdin -> exit code, stderr, syslog.

Installed behind a POSIX sh wrapper (hooks/qemu) that starts Python only for ``prepare begin``;
this module still exits 0 for any other event in case it is run directly. libvirt runs
``prepare begin`` before it labels resources, also for incoming migration and restore, and aborts
the start when we exit non-zero, quoting our stderr to the user. It drops stderr when we exit 0, so
every decision also goes to syslog (ident ``libvirt-txmode``).

Rules kept here: never call back into libvirt (it would deadlock: DESIGN.md), never write to stdout
(libvirt reads it as replacement XML for migrate/restore), never show a traceback.
"""

from __future__ import annotations

import sys
import syslog
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, NamedTuple, Optional

from .findings import Finding, Level, describe, printable

if TYPE_CHECKING:
    from .capabilities import HostCapabilities

IDENT = "libvirt-txmode"
DEFAULT_SNAPSHOT = "/var/lib/libvirt-txmode/snapshot.json"


def _log(priority: int, message: str) -> None:
    syslog.syslog(priority, printable(message))


class _Options(NamedTuple):
    policy: str
    snapshot: str
    cache_dir: Optional[str]


_WRAPPER_FLAGS = ("--policy", "--snapshot", "--cache-dir", "--")


def _arguments(argv: Sequence[str]) -> tuple[_Options, list[str]]:
    argv = list(argv)
    # Fast path for the exact shape hooks/qemu passes (every value set, none looking like an
    # option): argparse would read it the same way, but importing it costs more than the check.
    if len(argv) >= 7 and all(argv[i] == flag for i, flag in zip((0, 2, 4, 6), _WRAPPER_FLAGS)):
        values = argv[1], argv[3], argv[5]
        if all(value and not value.startswith("-") for value in values):
            return _Options(*values), argv[7:]
    import argparse  # noqa: PLC0415 - any other command line: let argparse decide, as always

    parser = argparse.ArgumentParser(prog="libvirt_txmode.hook", add_help=False)
    parser.add_argument("--policy", default="/etc/libvirt-txmode/policy.yaml")
    parser.add_argument("--snapshot", default=DEFAULT_SNAPSHOT)
    parser.add_argument("--cache-dir", default=None)
    options, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return _Options(options.policy, options.snapshot, options.cache_dir), rest


def main(
    argv: Optional[Sequence[str]] = None,
    stdin: Optional[IO[bytes]] = None,
    stderr: Optional[IO[str]] = None,
) -> int:
    argv = sys.argv[1:] if argv is None else argv
    err = stderr if stderr is not None else sys.stderr
    try:
        options, event = _arguments(argv)
    except SystemExit:  # argparse on nonsense options: not an event we check
        return 0
    if len(event) < 3 or (event[1], event[2]) != ("prepare", "begin"):
        return 0
    syslog.openlog(IDENT, syslog.LOG_PID, syslog.LOG_DAEMON)
    domain_name = event[0]
    stream = stdin if stdin is not None else sys.stdin.buffer
    try:
        return _prepare(domain_name, options, stream, err)
    except Exception as exc:  # the last line of defence: no traceback ever reaches libvirt's user
        import traceback  # noqa: PLC0415 - only on this path

        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _log(syslog.LOG_ERR, f"internal error checking domain '{domain_name}': {detail}")
        err.write(
            f"{IDENT}: internal error checking domain '{printable(domain_name)}': "
            f"{printable(type(exc).__name__)}: {printable(str(exc))} (details in syslog); "
            "refusing to start (fail closed)\n"
        )
        return 1


def _prepare(domain_name: str, options: _Options, stream: IO[bytes], err: IO[str]) -> int:
    # Imports are deferred so that a no-op event never pays for lxml and yaml.
    from .cache import ProbeCache, default_cache_dir  # noqa: PLC0415
    from .check import check_domain  # noqa: PLC0415
    from .domain import DomainXMLError, parse_domain, read_bounded  # noqa: PLC0415
    from .local import local_capabilities  # noqa: PLC0415
    from .policy import PolicyError  # noqa: PLC0415
    from .policy_cache import load_policy_cached  # noqa: PLC0415

    cache_dir = options.cache_dir or default_cache_dir()
    try:
        policy = load_policy_cached(options.policy, cache_dir)
    except PolicyError as exc:
        # Without a readable policy there is no on_error to consult: fail closed.
        return _refuse(err, domain_name, f"policy unusable: {exc}")

    def on_error(reason: str) -> int:
        if policy.on_error == "allow":
            _log(
                syslog.LOG_WARNING,
                f"allowing domain '{domain_name}' despite an error (on_error: allow): {reason}",
            )
            return 0
        return _refuse(err, domain_name, f"{reason} (on_error: deny)")

    try:
        data = read_bounded(stream)
        domain = parse_domain(data, "<stdin>")
    except DomainXMLError as exc:
        return on_error(f"cannot read the domain XML from libvirt: {exc.message}")
    except OSError as exc:
        return on_error(f"cannot read the domain XML from libvirt: {exc.strerror}")

    snapshot_caps, identities = _snapshot(options.snapshot)
    caps = local_capabilities(
        [domain],
        policy,
        ProbeCache(cache_dir),
        snapshot=snapshot_caps,
        snapshot_identities=identities,
    )
    findings = check_domain(domain, policy, [caps])
    return _decide(domain.name, findings, policy.source, err)


def _snapshot(path: str) -> tuple[Optional[HostCapabilities], dict[str, str]]:
    import os  # noqa: PLC0415

    if not path or not os.path.exists(path):
        return None, {}
    from .host import SnapshotError, load_snapshot  # noqa: PLC0415

    try:
        snapshot = load_snapshot(path)
    except SnapshotError as exc:
        # A bad snapshot only costs speed: the emulators are probed directly instead.
        _log(syslog.LOG_WARNING, f"ignoring snapshot: {exc}")
        return None, {}
    return snapshot.capabilities, snapshot.identities


def _decide(domain_name: str, findings: list[Finding], policy_source: str, err: IO[str]) -> int:
    errors = [f for f in findings if f.level is Level.ERROR]
    for finding in findings:
        level = "denied" if finding.level is Level.ERROR else "warning"
        priority = syslog.LOG_ERR if finding.level is Level.ERROR else syslog.LOG_WARNING
        _log(priority, f"{level}: {describe(finding)}")
    if errors:
        for finding in errors:
            err.write(f"{IDENT}: {describe(finding)}\n")
        err.write(
            f"{IDENT}: refusing to start domain '{printable(domain_name)}': {len(errors)} "
            f"violation{'s' if len(errors) != 1 else ''} of {printable(policy_source)}\n"
        )
        _log(syslog.LOG_ERR, f"refused to start domain '{domain_name}' ({len(errors)} violations)")
        return 1
    warnings = len(findings)
    note = f" with {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    _log(syslog.LOG_INFO, f"allowed domain '{domain_name}'{note}")
    return 0


def _refuse(err: IO[str], domain_name: str, reason: str) -> int:
    _log(syslog.LOG_ERR, f"refused to start domain '{domain_name}': {reason}")
    err.write(
        f"{IDENT}: refusing to start domain '{printable(domain_name)}': {printable(reason)}\n"
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
