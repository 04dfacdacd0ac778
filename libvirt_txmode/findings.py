"""The finding record and the stable finding codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, Optional

# Also imported from here by report.py and the tests.
from .text import printable


class Level(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


# Stable codes: tools and users match on these, so never rename one.
UNSUPPORTED = "txmode-unsupported"
NOT_ALLOWED = "txmode-not-allowed"
REQUIRED = "txmode-required"
INEFFECTIVE = "txmode-ineffective"
UNKNOWN_SUPPORT = "txmode-unknown-support"
INVALID = "txmode-invalid"
XML_INVALID = "xml-invalid"

CODES = (UNSUPPORTED, NOT_ALLOWED, REQUIRED, INEFFECTIVE, UNKNOWN_SUPPORT, INVALID, XML_INVALID)


@dataclass(frozen=True)
class Finding:
    """One problem with one NIC (or with a whole file, for ``xml-invalid``)."""

    file: str
    line: int
    domain: str
    code: str
    level: Level
    message: str
    interface: Optional[int] = None
    mac: Optional[str] = None
    txmode: Optional[str] = None
    rule: Optional[str] = None
    host: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        # Every field is a scalar, so dataclasses.asdict's recursive deep copy (a third of the json
        # report's time for 10,000 files) would copy nothing: a flat read gives the same dict.
        data = {f.name: getattr(self, f.name) for f in _FINDING_FIELDS}
        data["level"] = self.level.value
        return data

    @property
    def nic_label(self) -> str:
        if self.interface is None:
            return ""
        return f"NIC #{self.interface} ({self.mac or 'no MAC'})"


_FINDING_FIELDS = fields(Finding)


@dataclass(frozen=True)
class Summary:
    files: int = 0
    domains: int = 0
    nics: int = 0
    errors: int = 0
    warnings: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Report:
    """Everything a formatter needs: the inputs checked, in order, and what was found."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    summary: Summary
    hosts: tuple[str, ...] = ()
    tool_version: str = ""


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
