"""The hook's full check: one domain's XML, the policy and this host -> a Decision.

hook.py hands over a ``Request`` when the verdict cache cannot answer. The Decision (exit code,
stderr lines, log records with their journald fields) is reported, and stored in the verdict
cache when every file it rests on is known and nothing transient (a failed probe) decided it.
"""

from __future__ import annotations

import os
import syslog
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Optional

from .. import __version__
from ..common import files, logs, logsink, paths
from ..common.paths import default_cache_dir
from ..common.records import SLOTS
from ..common.text import printable
from ..engine.check import check_domain
from ..engine.domain_xml import BeyondBoundsError, DomainXMLError, parse_domain
from ..engine.exceptions import apply
from ..engine.exceptions import describe as describe_exception
from ..engine.policy import PolicyError, load_policy
from ..engine.wording import UNKNOWN_SUPPORT, Finding, Level, describe
from ..host.facts import local_capabilities, needed_devices, this_host
from ..host.libvirt_caps import caps_path
from ..host.networks import network_file_keys
from ..host.probe_cache import ProbeCache
from ..host.snapshot import SnapshotError, load_snapshot
from . import tally, verdict
from .markers import CANARY_NAMESPACE, SELFTEST_NAMESPACE

if TYPE_CHECKING:
    from ..engine.model import Domain, HostCapabilities
    from ..engine.policy import Policy


IDENT = "libvirt-txmode"
# The canary and self-test markers (markers.py), found by a byte search before anything is parsed.
_CANARY_MARK = CANARY_NAMESPACE.encode()
_SELFTEST_MARK = SELFTEST_NAMESPACE.encode()
# libvirt quotes a refusing hook's whole stderr in the error it shows: past this many violations
# the rest are counted there, and every one of them is in the system log.
MAX_STDERR_VIOLATIONS = 20


@dataclass(frozen=True, **SLOTS)
class Request:
    """What the hook read before the cache failed to answer: the hand-over to the full check."""

    domain: str  # the name libvirt passed (argv), untrusted
    policy: str
    snapshot: str
    cache_dir: Optional[str]
    data: Optional[bytes]  # the XML, None if it could not be read
    read_error: Optional[str]
    key: Optional[verdict.Key]  # None: the decision may not be stored


@dataclass(frozen=True, **SLOTS)
class LogRecord:
    """One message for the system log, with its journald fields."""

    priority: int  # syslog's
    message: str
    fields: dict[str, str] = field(default_factory=dict)  # journald's, logsink.FIELDS


@dataclass(frozen=True, **SLOTS)
class Decision:
    """The hook's answer to libvirt: exit code, stderr lines, and what is logged."""

    code: int
    stderr: tuple[str, ...]
    logs: tuple[LogRecord, ...]
    outcome: str = logsink.ERROR  # logsink.OUTCOMES: its records' MESSAGE_ID, what is counted


def run(request: Request, err: IO[str]) -> int:
    """Check, remember the decision when it may be, report it, count it."""
    try:
        checked, dependencies, digest = _check(request)
        decision = _stamped(checked, request.policy, digest)
        if request.key is not None and dependencies is not None and request.cache_dir:
            verdict.store(
                request.cache_dir,
                request.key,
                decision,
                policy=request.policy,
                snapshot=request.snapshot,
                dependencies=dependencies,
            )
        for record in decision.logs:
            logsink.log(record.priority, printable(record.message), record.fields)
        for line in decision.stderr:
            err.write(line + "\n")
        code, records = decision.code, [record.fields for record in decision.logs]
    except Exception as exc:  # see internal_error
        code, records = internal_error(request.domain, exc, err), [_outcome_fields(logsink.ERROR)]
    tally.count_decision(request.cache_dir or paths.default_cache_dir(), records)
    return code


def internal_error(domain_name: str, exc: BaseException, err: IO[str]) -> int:
    """The last line of defence: no traceback ever reaches libvirt's user; refuse (fail closed)."""
    import traceback  # noqa: PLC0415 - off the miss path (tests/test_architecture.py pins it)

    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logsink.log(
        syslog.LOG_ERR,
        printable(f"internal error checking domain '{domain_name}': {detail}"),
        _outcome_fields(logsink.ERROR),
    )
    err.write(
        f"{IDENT}: internal error checking domain '{printable(domain_name)}': "
        f"{printable(type(exc).__name__)}: {printable(str(exc))} (details in syslog); "
        "refusing to start (fail closed)\n"
    )
    return 1


def _emulator_dependencies(domain: Domain, found: dict[str, str]) -> Optional[dict[str, str]]:
    """The emulator a decision rests on (its tx support, its type ancestry) and, for passthrough,
    libvirt's capabilities file for it (whether libvirt passes -device as JSON); None when the
    decision must not be kept."""
    emulator = domain.emulator
    key = verdict.emulator_key(emulator) if emulator else None
    if emulator is None or key is None:
        return None
    found = {**found, emulator: key}
    if domain.qemu_args or domain.overrides:
        libvirt_caps = caps_path(emulator)
        found[libvirt_caps] = verdict.dependency_key(libvirt_caps)
    return found


def _check(request: Request) -> tuple[Decision, Optional[dict[str, str]], str]:
    """The decision; if it may be cached, the files it rests on with their identities; and the
    SHA-256 of the policy bytes it was made against ("" when they could not be read)."""

    domain_name = request.domain
    if request.data is not None and _CANARY_MARK in request.data:
        return _canary(domain_name), None, ""
    _route_library_logs()
    cache_dir = request.cache_dir or default_cache_dir()
    try:
        policy = load_policy(request.policy, cache_dir)
    except PolicyError as exc:
        # Without a readable policy there is no on_error to consult: fail closed.
        return _refusal(domain_name, f"policy unusable: {exc}"), None, exc.sha256

    if request.data is None:
        reason = f"cannot read the domain XML from libvirt: {request.read_error}"
        too_large = request.read_error == files.TOO_LARGE
        return _on_error(domain_name, policy, reason, beyond_bounds=too_large), None, policy.sha256
    try:
        domain = parse_domain(request.data, "<stdin>")
    except DomainXMLError as exc:
        reason = f"cannot read the domain XML from libvirt: {exc.message}"
        beyond = isinstance(exc, BeyondBoundsError)
        return _on_error(domain_name, policy, reason, beyond_bounds=beyond), None, policy.sha256

    snapshot_caps, identities = _snapshot(request.snapshot)
    host = this_host([domain], snapshot=snapshot_caps)
    # Taken before probing: if a binary changes while we look at it, the verdict is not kept.
    # The network files a NIC's device depends on (a hostdev pool) count like binaries.
    dependencies = network_file_keys(domain, verdict.dependency_key)
    needed = needed_devices([domain], host)  # planned once for both uses
    if dependencies is not None and (needed[0] or domain.qemu_args or domain.overrides):
        dependencies = _emulator_dependencies(domain, dependencies)
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
    if policy.exceptions:
        findings = apply(findings, policy, time.strftime("%Y-%m-%d"))
        if any(f.suppression is not None and f.suppression.expires for f in findings):
            dependencies = None  # replayed after its last day, the exception would still hold
    if any(f.code == UNKNOWN_SUPPORT for f in findings):
        dependencies = None  # a failed probe may succeed next time: never remember it
    decision = _decide(domain.name, findings, policy.source)
    if _SELFTEST_MARK in request.data and decision.code == 0 and not findings:
        decision = _self_test_passed(domain.name)
    return decision, dependencies, policy.sha256


def _canary(domain_name: str) -> Decision:
    """The refusal that proves the daemon runs this hook; logged as DECISION=canary."""
    name = printable(domain_name)
    line = (
        f"{IDENT}: canary {name} refused by the hook: the gate is live "
        "(a test domain of 'libvirt-txmode doctor --canary', never started)"
    )
    message = f"canary domain '{domain_name}' refused: the hook is live (not a real start)"
    fields = _fields(domain_name, "canary")
    return Decision(1, (line,), (LogRecord(syslog.LOG_INFO, message, fields),))


def _self_test_passed(domain_name: str) -> Decision:
    """The install's and doctor's self-test is no decision: its own DECISION, its own words (a
    refusal of the sample domain stays a refusal: the marker can hide no violation)."""
    message = f"self-test passed: the hook checked sample domain '{domain_name}' and would allow it"
    fields = _fields(domain_name, "selftest")
    return Decision(0, (), (LogRecord(syslog.LOG_INFO, message, fields),))


def _on_error(domain_name: str, policy: Policy, reason: str, *, beyond_bounds: bool) -> Decision:
    if beyond_bounds:
        # on_error: allow covers the hook failing, never a domain being large: padding a domain
        # past the bounds must not be a way around the policy.
        return _refusal(
            domain_name, f"{reason} (refused whatever on_error says: it cannot be checked)"
        )
    if policy.on_error == "allow":
        message = f"allowing domain '{domain_name}' despite an error (on_error: allow): {reason}"
        return Decision(0, (), (LogRecord(syslog.LOG_WARNING, message),), logsink.ERROR)
    return _refusal(domain_name, f"{reason} (on_error: deny)")


def _route_library_logs() -> None:
    """Warnings from the cache and prober go to the system log: on stderr libvirt would either
    drop them (exit 0) or mix them into the refusal it shows the user. Set up when the first of
    them is written (logs.py): a check that logs nothing never imports logging."""
    logs.before_first_use(_log_handler)


def _log_handler() -> None:
    import logging  # noqa: PLC0415 - a check that logs nothing never loads logging (logs.py)

    class SyslogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            priority = syslog.LOG_ERR if record.levelno >= logging.ERROR else syslog.LOG_WARNING
            logsink.log(priority, printable(self.format(record)))

    logger = logging.getLogger("libvirt_txmode")
    if not any(type(h).__name__ == "SyslogHandler" for h in logger.handlers):
        logger.addHandler(SyslogHandler())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _snapshot(path: str) -> tuple[Optional[HostCapabilities], dict[str, str]]:
    if not path or not os.path.lexists(path):
        return None, {}
    try:
        snapshot = load_snapshot(path)
    except SnapshotError as exc:
        # A bad snapshot only costs speed: the emulators are probed directly instead.
        logsink.log(syslog.LOG_WARNING, printable(f"ignoring snapshot: {exc}"))
        return None, {}
    return snapshot.capabilities, dict(snapshot.identities)


def _decide(domain_name: str, findings: list[Finding], policy_source: str) -> Decision:
    silenced = [f for f in findings if f.suppression is not None]
    findings = [f for f in findings if f.suppression is None]
    errors = [f for f in findings if f.level is Level.ERROR]
    logged: list[LogRecord] = [_excepted(finding) for finding in silenced]
    for finding in findings:
        level = "denied" if finding.level is Level.ERROR else "warning"
        priority = syslog.LOG_ERR if finding.level is Level.ERROR else syslog.LOG_WARNING
        fields = _fields(finding.domain, level, finding)
        logged.append(LogRecord(priority, f"{level}: {describe(finding)}", fields))
    if errors:
        count = f"{len(errors)} violation{'s' if len(errors) != 1 else ''}"
        shown = errors[:MAX_STDERR_VIOLATIONS]
        lines = [f"{IDENT}: {describe(finding)}" for finding in shown]
        if len(errors) > len(shown):
            lines.append(
                f"{IDENT}: ... and {len(errors) - len(shown)} more violations "
                "(every one is logged as 'denied: ...', see libvirt-txmode doctor for where)"
            )
        lines.append(
            f"{IDENT}: refusing to start domain '{printable(domain_name)}': {count} of "
            f"{printable(policy_source)}"
        )
        refused = f"refused to start domain '{domain_name}' ({count})"
        logged.append(LogRecord(syslog.LOG_ERR, refused, _fields(domain_name, "refused")))
        return Decision(1, tuple(lines), tuple(logged), logsink.DENIED)
    warnings = len(findings)
    note = f" with {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    allowed = f"allowed domain '{domain_name}'{note}"
    logged.append(LogRecord(syslog.LOG_INFO, allowed, _fields(domain_name, "allowed")))
    return Decision(0, (), tuple(logged), logsink.AUDIT_WARNED if warnings else logsink.ALLOWED)


def _excepted(finding: Finding) -> LogRecord:
    """A finding a policy exception silenced: logged with the exception and its reason, so that
    what the gate let through on purpose stays visible."""
    assert finding.suppression is not None  # noqa: S101 - only silenced findings come here
    message = (
        f"excepted: {describe(finding)} (silenced by {describe_exception(finding.suppression)})"
    )
    fields = _fields(finding.domain, "excepted", finding)
    return LogRecord(syslog.LOG_NOTICE, message, fields)


def _refusal(domain_name: str, reason: str) -> Decision:
    line = f"{IDENT}: refusing to start domain '{printable(domain_name)}': {printable(reason)}"
    message = f"refused to start domain '{domain_name}': {reason}"
    return Decision(
        1,
        (line,),
        (LogRecord(syslog.LOG_ERR, message, _fields(domain_name, "refused")),),
        logsink.ERROR,
    )


def _stamped(decision: Decision, policy_path: str, policy_sha256: str) -> Decision:
    """Every record of a decision with its outcome's MESSAGE_ID, the policy it was checked
    against (path and SHA-256 of its bytes) and this tool's version: stored with the verdict,
    so a replayed decision names the same policy (the verdict is only replayed while the policy
    file is unchanged)."""
    extra = _outcome_fields(decision.outcome, policy_path, policy_sha256)
    logs = tuple(LogRecord(r.priority, r.message, {**r.fields, **extra}) for r in decision.logs)
    return Decision(decision.code, decision.stderr, logs, decision.outcome)


def _outcome_fields(
    outcome: str, policy_path: Optional[str] = None, policy_sha256: str = ""
) -> dict[str, str]:
    fields = {"MESSAGE_ID": logsink.MESSAGE_IDS[outcome], "VERSION": __version__}
    if policy_path:
        fields["POLICY"] = printable(policy_path)
        if policy_sha256:
            fields["POLICY_SHA256"] = policy_sha256
    return fields


def _fields(domain: str, decision: str, finding: Optional[Finding] = None) -> dict[str, str]:
    """journald fields (logsink.FIELDS) from the values that are set; untrusted text escaped."""
    values: dict[str, Optional[str]] = {"DOMAIN": domain, "DECISION": decision}
    if finding is not None:
        values.update(
            {"NIC_MAC": finding.mac, "TXMODE": finding.txmode}, CODE=finding.code, RULE=finding.rule
        )
    return {name: printable(str(v)) for name, v in values.items() if v is not None}
