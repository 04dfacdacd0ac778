"""``-f github``: GitHub Actions workflow commands, each finding an annotation on its file and
line, escaped as actions/toolkit does so that no name from the XML can forge a second command."""

from __future__ import annotations

from ..engine.wording import Finding, Report, message, printable
from .base import Formatter, summary_line


def github_escape_data(value: str) -> str:
    """Escape a workflow command's message (actions/toolkit ``escapeData``)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_escape_property(value: str) -> str:
    """Escape a workflow command's property value (actions/toolkit ``escapeProperty``)."""
    return github_escape_data(value).replace(":", "%3A").replace(",", "%2C")


class GitHubFormatter(Formatter):
    """GitHub Actions workflow commands: each finding becomes an annotation on its file and line."""

    name = "github"

    def handle(self, finding: Finding) -> str:
        props = [f"file={github_escape_property(printable(finding.file))}"]
        if finding.line > 0:
            props.append(f"line={finding.line}")
        props.append(f"title={github_escape_property(finding.code)}")
        return (
            f"::{finding.level.value} {','.join(props)}::{github_escape_data(message(finding))}\n"
        )

    def finished(self, report: Report) -> str:
        if self.run.quiet or self.run.fatal is not None:
            return ""
        # Not a workflow command, so it shows in the log as the run's last line.
        return summary_line(report.summary, self.run) + "\n"
