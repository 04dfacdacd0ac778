"""``-f junit``: one testcase per input file, failed where the file has an error, for the CI
pages (GitLab, Jenkins) that show JUnit XML."""

from __future__ import annotations

from ..engine.wording import Finding, Level, Report, printable
from .base import Formatter, RunInfo, line

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Optional

JUNIT_SUITE = "validate-domain"


class JUnitFormatter(Formatter):
    """One testcase per input file: CI systems show a failed file, with its findings as detail.

    ``file`` and ``time`` on each testcase are what GitLab and Jenkins show beside it. Each
    testcase is serialized by lxml inside a stand-in testsuites/testsuite pair, so that its
    text is exactly what one pretty-printed document holds at that depth.
    """

    name = "junit"

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        super().__init__(color, run)
        from lxml import etree  # noqa: PLC0415 - only this format needs it

        self.etree = etree
        self.outer = etree.Element("a")
        self.inner = etree.SubElement(self.outer, "b")
        self.current: Optional[tuple[str, float]] = None
        self.mine: list[Finding] = []
        self.tests = 0
        self.failures = 0

    def file(self, label: str, seconds: float, first: bool = True) -> None:
        if first:
            self._flush()
            self.current = (label, seconds)

    def finding(self, finding: Finding) -> None:
        if self.current is None or finding.file != self.current[0]:
            self.file(finding.file, self.run.times.get(finding.file, 0.0))
        self.mine.append(finding)

    def feed(self, report: Report) -> None:
        # Every input file (also those without findings), in input order, with its findings.
        grouped: dict[str, list[Finding]] = {file: [] for file in report.files}
        for finding in report.findings:
            if finding.suppression is None:  # a silenced finding fails no testcase
                grouped.setdefault(finding.file, []).append(finding)
        for file, mine in grouped.items():
            self.file(file, self.run.times.get(file, 0.0))
            for finding in mine:
                self.finding(finding)

    def _flush(self) -> None:
        if self.current is None:
            return
        etree = self.etree
        file, seconds = self.current
        mine, self.mine, self.current = self.mine, [], None
        errors = [f for f in mine if f.level is Level.ERROR]
        warnings = [f for f in mine if f.level is Level.WARNING]
        # lxml refuses control characters in text and attributes: printable() removes them.
        name = printable(file)
        case = etree.SubElement(
            self.inner,
            "testcase",
            classname=JUNIT_SUITE,
            name=name,
            file=name,
            time=f"{seconds:.6f}",
        )
        if errors:
            self.failures += 1
            failure = etree.SubElement(
                case, "failure", message=line(errors[0]), type=errors[0].code
            )
            failure.text = "".join(line(f) + "\n" for f in mine)
        if warnings:
            out = etree.SubElement(case, "system-out")
            out.text = "".join(line(f) + "\n" for f in warnings)
        self.tests += 1
        self.spool.write(self._inside(case))

    def _inside(self, case: Any) -> str:
        """``case`` as the document holds it: the stand-in parents' lines cut off."""
        text: str = self.etree.tostring(self.outer, encoding="UTF-8", pretty_print=True).decode(
            "utf-8"
        )
        self.inner.remove(case)
        return text[len("<a>\n  <b>\n") : -len("  </b>\n</a>\n")]

    def finish(self, totals: Report, run: RunInfo, out: IO[str]) -> None:
        self.run = run
        self._flush()
        etree = self.etree
        tests, errored = self.tests, 0
        if run.fatal is not None:
            # The run itself failed (exit 2): one errored testcase says why, so that the CI page
            # shows the reason instead of a missing report.
            case = etree.SubElement(self.inner, "testcase", classname=JUNIT_SUITE, name=JUNIT_SUITE)
            etree.SubElement(case, "error", message=printable(run.fatal), type="fatal")
            self.spool.write(self._inside(case))
            tests, errored = tests + 1, 1
        suites = etree.Element("testsuites", name=JUNIT_SUITE)
        suite = etree.SubElement(suites, "testsuite", name=JUNIT_SUITE)
        elapsed = max(0.0, run.ended - run.started)
        for element in (suites, suite):
            element.set("tests", str(tests))
            element.set("failures", str(self.failures))
            element.set("errors", str(errored))
            element.set("time", f"{elapsed:.6f}")
        suite.set("skipped", "0")
        if tests:
            etree.SubElement(suite, "x")  # where the testcases go
        text: str = etree.tostring(
            suites, xml_declaration=True, encoding="UTF-8", pretty_print=True
        ).decode("utf-8")
        if not tests:
            out.write(text)
            return
        head, tail = text.split("    <x/>\n", 1)
        out.write(head)
        self.spool.copy_to(out)
        out.write(tail)
