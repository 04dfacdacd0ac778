"""Policy exceptions applied to a domain's findings: (findings, policy, today) -> findings.

Pure, like the rest of the engine: "today" is an ISO date (YYYY-MM-DD) the caller reads from
its clock. A finding that the first unexpired exception fitting it covers is kept, marked with
that exception (``Finding.suppression``): reports show it, nothing counts it. An expired
exception covers nothing; where it fits a finding, an ``exception-expired`` warning on the same
NIC says why the finding is back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Optional

from . import codes
from .model import Finding, Level, Suppression
from .policy_records import Policy, PolicyException


def fits(exception: PolicyException, finding: Finding) -> bool:
    """Every pattern the exception sets fits the finding (ANDed); a finding without the value
    (no MAC, no rule) fits no pattern on it."""
    if finding.code in codes.NEVER_SILENCED:
        return False
    for key, pattern in exception.match_items():
        value = getattr(finding, key) or ""
        if key == "mac":
            # libvirt lower-cases MAC addresses, and people write them in either case.
            value, wanted = value.lower(), pattern.lower()
        else:
            wanted = pattern
        if not value or not fnmatchcase(value, wanted):
            return False
    return True


def expired(exception: PolicyException, today: str) -> bool:
    """``expires`` is the last day the exception applies."""
    return exception.expires is not None and today > exception.expires


def apply(findings: list[Finding], policy: Policy, today: str) -> list[Finding]:
    """``findings`` with the policy's exceptions applied, in the same order (an
    ``exception-expired`` warning right after the finding it is about)."""
    if not policy.exceptions or not findings:
        return findings
    result: list[Finding] = []
    for finding in findings:
        active, lapsed = _covering(policy.exceptions, finding, today)
        if active is not None:
            result.append(replace(finding, suppression=_suppression(active)))
            continue
        result.append(finding)
        if lapsed is not None:
            result.append(_expired_finding(finding, lapsed, policy.source))
    return result


def _covering(
    exceptions: Iterable[PolicyException], finding: Finding, today: str
) -> tuple[Optional[PolicyException], Optional[PolicyException]]:
    """The first unexpired exception that fits, else None and the first expired one that
    fits (None when none does)."""
    lapsed: Optional[PolicyException] = None
    for exception in exceptions:
        if not fits(exception, finding):
            continue
        if not expired(exception, today):
            return exception, None
        if lapsed is None:
            lapsed = exception
    return None, lapsed


def _suppression(exception: PolicyException) -> Suppression:
    return Suppression(exception.index, exception.line, exception.reason, exception.expires)


def _expired_finding(finding: Finding, exception: PolicyException, source: str) -> Finding:
    level = codes.level(codes.EXCEPTION_EXPIRED) or Level.WARNING
    return Finding(
        file=finding.file,
        line=finding.line,
        domain=finding.domain,
        code=codes.EXCEPTION_EXPIRED,
        level=level,
        message=(
            f"exception #{exception.index} ({source}:{exception.line}) has expired (its last "
            f"day was {exception.expires}): it no longer silences {finding.code} "
            f"(its reason: {exception.reason})"
        ),
        interface=finding.interface,
        mac=finding.mac,
        txmode=finding.txmode,
        rule=finding.rule,
        host=finding.host,
    )


def counted(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that count as errors and warnings: all but the silenced ones."""
    return [f for f in findings if f.suppression is None]


def describe(suppression: Suppression) -> str:
    """How a report names the exception that silenced a finding."""
    until = f", until {suppression.expires}" if suppression.expires else ""
    return f"exception #{suppression.exception}{until}: {suppression.reason}"
