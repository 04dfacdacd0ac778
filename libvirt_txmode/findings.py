"""The stable finding codes, and the one-line description of a finding."""

from __future__ import annotations

# The records live in the model; they are also imported from here by report.py and the tests.
from .model import Finding, Level, Report, Summary
from .text import printable

__all__ = ["Finding", "Level", "Report", "Summary", "describe", "printable", "summarize"]


# Stable codes: tools and users match on these, so never rename one.
UNSUPPORTED = "txmode-unsupported"
NOT_ALLOWED = "txmode-not-allowed"
REQUIRED = "txmode-required"
INEFFECTIVE = "txmode-ineffective"
UNKNOWN_SUPPORT = "txmode-unknown-support"
INVALID = "txmode-invalid"
XML_INVALID = "xml-invalid"

CODES = (UNSUPPORTED, NOT_ALLOWED, REQUIRED, INEFFECTIVE, UNKNOWN_SUPPORT, INVALID, XML_INVALID)


def summarize(
    files: int, domains: int, nics: int, found: tuple[Finding, ...] | list[Finding]
) -> Summary:
    return Summary(
        files=files,
        domains=domains,
        nics=nics,
        errors=sum(1 for f in found if f.level is Level.ERROR),
        warnings=sum(1 for f in found if f.level is Level.WARNING),
    )


def describe(finding: Finding) -> str:
    """One self-contained line: what the hook prints and logs for a finding."""
    subject = f"domain '{printable(finding.domain)}'"
    if finding.interface is not None:
        subject += f" NIC #{finding.interface} ({printable(finding.mac or 'no MAC')})"
    named = finding.rule and f"rule '{finding.rule}'" not in finding.message
    rule = f", rule '{printable(finding.rule or '')}'" if named else ""
    return f"{subject}: {printable(finding.message)} [{finding.code}{rule}]"
