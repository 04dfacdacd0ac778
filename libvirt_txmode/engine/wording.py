"""How a finding is worded, the same everywhere: the hook's lines, the text report, SARIF messages.

The records live in ``model``, the codes and their registry in ``codes``; both names stay
importable from here (the report formats, the hook and the tests do).
"""

from __future__ import annotations

from ..common.text import printable
from .codes import (
    CODES,
    INEFFECTIVE,
    INVALID,
    NOT_ALLOWED,
    REQUIRED,
    UNKNOWN_SUPPORT,
    UNSUPPORTED,
    XML_INVALID,
)
from .model import Finding, Level, Report, Summary

__all__ = [
    "CODES",
    "INEFFECTIVE",
    "INVALID",
    "NOT_ALLOWED",
    "REQUIRED",
    "UNKNOWN_SUPPORT",
    "UNSUPPORTED",
    "XML_INVALID",
    "Finding",
    "Level",
    "Report",
    "Summary",
    "describe",
    "message",
    "printable",
    "subject",
    "summarize",
    "tags",
]


def summarize(
    files: int, domains: int, nics: int, found: tuple[Finding, ...] | list[Finding]
) -> Summary:
    # A finding a policy exception silenced counts as neither.
    return Summary(
        files=files,
        domains=domains,
        nics=nics,
        errors=sum(1 for f in found if f.level is Level.ERROR and f.suppression is None),
        warnings=sum(1 for f in found if f.level is Level.WARNING and f.suppression is None),
    )


def subject(finding: Finding) -> str:
    """Who the finding is about: ``domain 'vm1' NIC #0 (52:54:00:..)``; empty for a whole file."""
    if finding.domain == "-" and finding.interface is None:
        return ""
    text = f"domain '{printable(finding.domain)}'"
    if finding.interface is not None:
        text += f" NIC #{finding.interface} ({printable(finding.mac or 'no MAC')})"
    return text


def tags(finding: Finding) -> str:
    """The bracketed tail: the code, the rule unless the message names it, the host if any."""
    parts = [finding.code]
    if finding.rule and f"rule '{finding.rule}'" not in finding.message:
        parts.append(f"rule '{printable(finding.rule)}'")
    if finding.host:
        parts.append(f"host '{printable(finding.host)}'")
    return f"[{', '.join(parts)}]"


def message(finding: Finding) -> str:
    """The finding without its location: what it is about, what is wrong, and its code."""
    who = subject(finding)
    prefix = f"{who}: " if who else ""
    return f"{prefix}{printable(finding.message)} {tags(finding)}"


# What the hook prints and logs for a finding: the same self-contained line.
describe = message
