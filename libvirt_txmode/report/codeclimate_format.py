"""``-f codeclimate``: GitLab Code Quality, a JSON array of issues for the merge request widget."""

from __future__ import annotations

import json

from ..engine.wording import Finding, Level, Report, message
from .base import Formatter, RunInfo, fingerprint, repo_path, utf8

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


# GitLab Code Quality severities: info, minor, major, critical, blocker.
_CODECLIMATE_SEVERITY = {Level.ERROR: "major", Level.WARNING: "minor"}


class CodeClimateFormatter(Formatter):
    """GitLab Code Quality: a JSON array of issues, shown in the merge request's widget.

    GitLab needs ``location.path`` relative to the repository root and a ``fingerprint`` per
    issue (it tells new issues from fixed ones by it); the rest is the Code Climate spec.
    """

    name = "codeclimate"

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        super().__init__(color, run)
        self.count = 0
        self.path: Optional[tuple[str, str]] = None  # the last file's repository path

    def finding(self, finding: Finding) -> None:
        if self.path is None or self.path[0] != finding.file:
            self.path = (finding.file, repo_path(finding.file, self.run) or finding.file)
        path = self.path[1]
        issue = {
            "type": "issue",
            "check_name": finding.code,
            "description": message(finding),
            "categories": ["Bug Risk"],
            "severity": _CODECLIMATE_SEVERITY[finding.level],
            "fingerprint": fingerprint(finding, path),
            "location": {"path": utf8(path), "lines": {"begin": max(1, finding.line)}},
        }
        # Compact, like SARIF: the C encoder; GitLab reads it, not people. Exactly
        # json.dumps(issues, separators=(",", ":")), one issue at a time.
        text = json.dumps(issue, ensure_ascii=True, separators=(",", ":"))
        self.spool.write(("," if self.count else "") + text)
        self.count += 1

    def beginning(self, report: Report) -> str:
        return "["

    def finished(self, report: Report) -> str:
        return "]\n"
