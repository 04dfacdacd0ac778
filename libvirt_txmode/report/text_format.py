"""``-f text``: one ``file:line: level: message`` line per finding, as compilers print them, then a
summary line; silenced findings too with -v."""

from __future__ import annotations

from ..engine.exceptions import describe
from ..engine.wording import Finding, Report, message, printable
from .base import Formatter, line, summary_line


def suppressed_line(finding: Finding) -> str:
    """A silenced finding in the text report (-v): where, what, and the exception's reason."""
    assert finding.suppression is not None  # noqa: S101 - only silenced findings come here
    return (
        f"{printable(finding.file)}:{finding.line}: silenced: {message(finding)} "
        f"(was {finding.level.value}; {printable(describe(finding.suppression))})"
    )


class TextFormatter(Formatter):
    name = "text"

    def handle(self, finding: Finding) -> str:
        return line(finding, self.color) + "\n"

    def suppressed(self, finding: Finding) -> None:
        if self.run.verbose:
            self.spool.write(suppressed_line(finding) + "\n")

    def finished(self, report: Report) -> str:
        if self.run.quiet or self.run.fatal is not None:
            return ""
        return summary_line(report.summary, self.run) + "\n"
