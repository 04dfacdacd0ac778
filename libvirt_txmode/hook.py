"""libvirt's qemu hook protocol: argv + domain XML on stdin -> exit code, stderr, syslog.

Installed behind a POSIX sh wrapper (hooks/qemu) that starts Python only for ``prepare begin``,
through hookstart.py and hookfast.py, which replay a cached decision and hand anything else to
``finish`` here; this module still exits 0 for any other event in case it is run directly. libvirt
runs ``prepare begin`` before it labels resources, also for incoming migration and restore, and
aborts the start when we exit non-zero, quoting our stderr to the user. It drops stderr when we
exit 0, so every decision also goes to syslog (ident ``libvirt-txmode``).

Rules kept here: never call back into libvirt (it would deadlock: docs/libvirt-facts.md), never
write to stdout (libvirt reads it as replacement XML for migrate/restore), never show a traceback.
"""

from __future__ import annotations

import sys
import syslog
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, NamedTuple, Optional

from . import files, hookfast
from .text import printable

if TYPE_CHECKING:
    from .findings import Finding
    from .hookfast import Handover, Key
    from .model import HostCapabilities
    from .verdict import Verdict


IDENT = "libvirt-txmode"
DEFAULT_SNAPSHOT = "/var/lib/libvirt-txmode/snapshot.json"


def _log(priority: int, message: str) -> None:
    # journald with structured fields, else syslog, else /var/log/libvirt-txmode.log (logsink.py).
    from . import logsink  # noqa: PLC0415

    logsink.emit(priority, message)


class Options(NamedTuple):
    policy: str
    snapshot: str
    cache_dir: Optional[str]


_WRAPPER_FLAGS = ("--policy", "--snapshot", "--cache-dir", "--")


def _arguments(argv: Sequence[str]) -> tuple[Options, list[str]]:
    argv = list(argv)
    # Fast path for the exact shape hooks/qemu passes (every value set, none looking like an
    # option): argparse would read it the same way, but importing it costs more than the check.
    if len(argv) >= 7 and all(argv[i] == flag for i, flag in zip((0, 2, 4, 6), _WRAPPER_FLAGS)):
        values = argv[1], argv[3], argv[5]
        if all(value and not value.startswith("-") for value in values):
            return Options(*values), argv[7:]
    import argparse  # noqa: PLC0415 - any other command line: let argparse decide, as always

    parser = argparse.ArgumentParser(prog="libvirt_txmode.hook", add_help=False)
    parser.add_argument("--policy", default="/etc/libvirt-txmode/policy.yaml")
    parser.add_argument("--snapshot", default=DEFAULT_SNAPSHOT)
    parser.add_argument("--cache-dir", default=None)
    options, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return Options(options.policy, options.snapshot, options.cache_dir), rest


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
    stream = stdin if stdin is not None else sys.stdin.buffer
    # The installed hook's path (hookstart.py): a cached verdict, else the full check.
    outcome = hookfast.prepare(event[0], options, stream, err)
    return outcome if isinstance(outcome, int) else resume(outcome, err)


def resume(handover: Handover, err: IO[str]) -> int:
    """Take over from hookfast: the full check on the input it read, hook.main on a command line
    it does not handle, or the fail-closed refusal for an exception it caught."""
    kind = handover[0]
    if kind == "main":
        return main(handover[1], stderr=err)
    if kind == "error":
        return internal_error(handover[1], handover[2], err)
    domain_name, (policy, snapshot, cache_dir), data, read_error, entry_key = handover[1:]
    options = Options(policy, snapshot, cache_dir)
    return finish(domain_name, options, data, read_error, entry_key=entry_key, err=err)


def internal_error(domain_name: str, exc: Exception, err: IO[str]) -> int:
    """The last line of defence: no traceback ever reaches libvirt's user; refuse (fail closed)."""
    import traceback  # noqa: PLC0415 - only on this path

    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    _log(syslog.LOG_ERR, f"internal error checking domain '{domain_name}': {detail}")
    err.write(
        f"{IDENT}: internal error checking domain '{printable(domain_name)}': "
        f"{printable(type(exc).__name__)}: {printable(str(exc))} (details in syslog); "
        "refusing to start (fail closed)\n"
    )
    return 1


def finish(
    domain_name: str,
    options: Options,
    data: Optional[bytes],
    read_error: Optional[str],
    *,
    entry_key: Optional[Key],
    err: IO[str],
) -> int:
    """No cached verdict answered (hookfast.prepare): run the full check, remember the decision
    under ``entry_key`` (taken before the check) when it may be, and report it."""
    try:
        outcome, emulators = _check(domain_name, options, data, read_error)
        if entry_key is not None and emulators is not None and options.cache_dir:
            from . import verdict  # noqa: PLC0415

            verdict.store(
                options.cache_dir,
                verdict.Key(*entry_key),
                outcome,
                policy=options.policy,
                snapshot=options.snapshot,
                emulators=emulators,
                xml=data,
            )
        return _emit(outcome, err)
    except Exception as exc:  # see internal_error
        return internal_error(domain_name, exc, err)


def _check(
    domain_name: str, options: Options, data: Optional[bytes], read_error: Optional[str]
) -> tuple[Verdict, Optional[dict[str, str]]]:
    """The full check: the decision and, if it may be cached, the emulators it rests on."""
    # Deferred so that a no-op event or a cached verdict never pays for lxml and yaml.
    from .cache import ProbeCache  # noqa: PLC0415
    from .check import check_domain  # noqa: PLC0415
    from .domain import BeyondBoundsError, DomainXMLError, parse_domain  # noqa: PLC0415
    from .findings import UNKNOWN_SUPPORT  # noqa: PLC0415
    from .local import local_capabilities, needed_devices, this_host  # noqa: PLC0415
    from .networks import network_file_keys  # noqa: PLC0415
    from .paths import default_cache_dir  # noqa: PLC0415
    from .policy import PolicyError  # noqa: PLC0415
    from .policy_cache import load_policy_cached  # noqa: PLC0415
    from .verdict import emulator_key  # noqa: PLC0415

    _route_library_logs_to_syslog()
    cache_dir = options.cache_dir or default_cache_dir()
    try:
        policy = load_policy_cached(options.policy, cache_dir)
    except PolicyError as exc:
        # Without a readable policy there is no on_error to consult: fail closed.
        return _refusal(domain_name, f"policy unusable: {exc}"), None

    def on_error(reason: str, *, beyond_bounds: bool = False) -> Verdict:
        if beyond_bounds:
            # on_error: allow covers the hook failing, never a domain being large: padding a
            # domain past the bounds must not be a way around the policy.
            return _refusal(
                domain_name, f"{reason} (refused whatever on_error says: it cannot be checked)"
            )
        if policy.on_error == "allow":
            message = (
                f"allowing domain '{domain_name}' despite an error (on_error: allow): {reason}"
            )
            return _verdict(0, (), ((syslog.LOG_WARNING, message),))
        return _refusal(domain_name, f"{reason} (on_error: deny)")

    if data is None:
        reason = f"cannot read the domain XML from libvirt: {read_error}"
        return on_error(reason, beyond_bounds=read_error == files.TOO_LARGE), None
    try:
        domain = parse_domain(data, "<stdin>")
    except DomainXMLError as exc:
        reason = f"cannot read the domain XML from libvirt: {exc.message}"
        return on_error(reason, beyond_bounds=isinstance(exc, BeyondBoundsError)), None

    snapshot_caps, identities = _snapshot(options.snapshot)
    host = this_host([domain], snapshot=snapshot_caps)
    # Taken before probing: if a binary changes while we look at it, the verdict is not kept.
    # The network files a NIC's device depends on (a hostdev pool) count like binaries.
    emulators: Optional[dict[str, str]] = network_file_keys(domain, hookfast.dependency_key)
    needed = needed_devices([domain], host)  # planned once for both uses: linear, but per NIC
    if emulators is not None and needed[0]:
        key = emulator_key(domain.emulator) if domain.emulator else None
        emulators = {**emulators, domain.emulator: key} if domain.emulator and key else None
    caps = local_capabilities(
        [domain],
        policy,
        ProbeCache(cache_dir),
        snapshot=snapshot_caps,
        snapshot_identities=identities,
        host=host,
        needed=needed,
    )
    findings = check_domain(domain, policy, [caps])
    if any(f.code == UNKNOWN_SUPPORT for f in findings):
        emulators = None  # a failed probe may succeed next time: never remember it
    return _decide(domain.name, findings, policy.source), emulators


def _route_library_logs_to_syslog() -> None:
    """Warnings from the cache and prober go to syslog: on stderr libvirt would either drop them
    (exit 0) or mix them into the refusal it shows the user. Set up when the first of them is
    written (logs.py): a check that logs nothing never imports logging."""
    from . import logs  # noqa: PLC0415

    logs.before_first_use(_syslog_handler)


def _syslog_handler() -> None:
    import logging  # noqa: PLC0415

    class SyslogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            priority = syslog.LOG_ERR if record.levelno >= logging.ERROR else syslog.LOG_WARNING
            _log(priority, self.format(record))

    logger = logging.getLogger("libvirt_txmode")
    if not any(type(h).__name__ == "SyslogHandler" for h in logger.handlers):
        logger.addHandler(SyslogHandler())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _snapshot(path: str) -> tuple[Optional[HostCapabilities], dict[str, str]]:
    import os  # noqa: PLC0415

    if not path or not os.path.lexists(path):
        return None, {}
    from . import files  # noqa: PLC0415
    from .snapshot import MAX_SNAPSHOT_BYTES, SnapshotError, parse_snapshot  # noqa: PLC0415

    try:
        problem = files.path_trust_problem(path) if os.geteuid() == 0 else None
        if problem is not None:
            raise SnapshotError(f"{path}: refused: {problem}")
        try:
            # Non-blocking and regular files only: a FIFO here must not hang the hook, and with
            # it `virsh start`. (The snapshot may be a root-owned link: the trust rule allows it.)
            raw, _ = files.read_regular(path, MAX_SNAPSHOT_BYTES, follow_symlinks=True)
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot read snapshot: {exc.strerror}") from None
        if len(raw) > MAX_SNAPSHOT_BYTES:
            raise SnapshotError(f"{path}: larger than {MAX_SNAPSHOT_BYTES} bytes")
        try:
            document = files.load_json(raw)  # json.loads without the json package
        except (ValueError, RecursionError) as exc:
            raise SnapshotError(f"{path}: not a valid snapshot: not JSON: {exc}") from None
        snapshot = parse_snapshot(document, path)
    except SnapshotError as exc:
        # A bad snapshot only costs speed: the emulators are probed directly instead.
        _log(syslog.LOG_WARNING, f"ignoring snapshot: {exc}")
        return None, {}
    return snapshot.capabilities, dict(snapshot.identities)


def _verdict(code: int, stderr: tuple[str, ...], logged: tuple[tuple[int, str], ...]) -> Verdict:
    from .verdict import Verdict  # noqa: PLC0415

    return Verdict(code, stderr, logged)


def _decide(domain_name: str, findings: list[Finding], policy_source: str) -> Verdict:
    from .findings import Level, describe  # noqa: PLC0415

    errors = [f for f in findings if f.level is Level.ERROR]
    logged: list[tuple[int, str]] = []
    for finding in findings:
        level = "denied" if finding.level is Level.ERROR else "warning"
        priority = syslog.LOG_ERR if finding.level is Level.ERROR else syslog.LOG_WARNING
        logged.append((priority, _fields(f"{level}: {describe(finding)}", finding, level)))
    if errors:
        count = f"{len(errors)} violation{'s' if len(errors) != 1 else ''}"
        lines = [f"{IDENT}: {describe(finding)}" for finding in errors]
        lines.append(
            f"{IDENT}: refusing to start domain '{printable(domain_name)}': {count} of "
            f"{printable(policy_source)}"
        )
        refused = f"refused to start domain '{domain_name}' ({count})"
        logged.append((syslog.LOG_ERR, _fields(refused, None, "refused", domain_name)))
        return _verdict(1, tuple(lines), tuple(logged))
    warnings = len(findings)
    note = f" with {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    allowed = f"allowed domain '{domain_name}'{note}"
    logged.append((syslog.LOG_INFO, _fields(allowed, None, "allowed", domain_name)))
    return _verdict(0, (), tuple(logged))


def _refusal(domain_name: str, reason: str) -> Verdict:
    return _verdict(
        1,
        (f"{IDENT}: refusing to start domain '{printable(domain_name)}': {printable(reason)}",),
        (
            (
                syslog.LOG_ERR,
                _fields(
                    f"refused to start domain '{domain_name}': {reason}",
                    None,
                    "refused",
                    domain_name,
                ),
            ),
        ),
    )


def _fields(message: str, finding: Optional[Finding], decision: str, domain: str = "") -> str:
    """The log line with its journald fields (DOMAIN, NIC_MAC, TXMODE, CODE, RULE, DECISION)."""
    from . import logsink  # noqa: PLC0415

    if finding is None:
        return logsink.encode(message, domain=domain, decision=decision)
    return logsink.encode(
        message,
        domain=finding.domain,
        nic_mac=finding.mac,
        txmode=finding.txmode,
        code=finding.code,
        rule=finding.rule,
        decision=decision,
    )


def _emit(outcome: Verdict, err: IO[str]) -> int:
    for priority, message in outcome.syslog:
        _log(priority, message)
    for line in outcome.stderr:
        err.write(line + "\n")
    return outcome.code


if __name__ == "__main__":
    raise SystemExit(main())
