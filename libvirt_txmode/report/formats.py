"""Findings -> text, json, junit, github, sarif or codeclimate.

Like flake8's formatters, every format is a class behind one small interface, fed as the run goes:
``file`` for each input checked, ``finding`` for each finding (after its file), then ``finish``
writes the whole report. What a format must put before the findings but knows only at the end
(JSON's file list, SARIF's artifacts and invocation, JUnit's counts) waits in spools (spool.py),
so memory does not grow with the number of files, and a run that fails leaves no half report.
``render``/``write`` feed a whole ``Report`` through the same classes. Adding a format is adding
a class to ``FORMATTERS``; nothing else changes.

Names, MACs and messages come from untrusted domain XML, so every format passes them through
``findings.printable`` (or its own escaping) before they reach a terminal, a CI log or an XML file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # C: json.dumps' own escaping
from types import MappingProxyType

from ..common.records import SLOTS
from ..common.spool import Spool
from ..engine.model import Suppression
from ..engine.wording import CODES, Finding, Level, Report, Summary, message, printable

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, ClassVar, Optional

TOOL_NAME = "libvirt-txmode"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_VERSION = "2.1.0"
# GitHub code scanning and other SARIF viewers resolve relative paths against the checkout root.
SRCROOT = "%SRCROOT%"
JUNIT_SUITE = "validate-domain"
# GitHub code scanning accepts at most 25,000 results per run and rejects the whole upload above.
SARIF_MAX_RESULTS = 25_000
# The key of our partialFingerprints entry; bump the suffix if what it hashes ever changes.
FINGERPRINT_KEY = "libvirtTxmodeFinding/v1"

_ANSI = {Level.ERROR: "\033[31m", Level.WARNING: "\033[33m"}
_ANSI_RESET = "\033[0m"


def column(finding: Finding) -> Optional[int]:
    return finding.column


@dataclass(frozen=True, **SLOTS)
class RunInfo:
    """What a report says about the run itself, beyond its findings."""

    skipped: int = 0  # XML whose root is not <domain>, FIFOs, links out of the tree
    excluded: int = 0  # by --exclude or an ignore file
    fatal: Optional[str] = None  # why the run could not do its job (exit 2)
    exit_code: int = 0
    arguments: tuple[str, ...] = ()
    cwd: str = "."  # relative file names are relative to this directory (absolute)
    base: Optional[str] = None  # the repository root: SARIF/Code Quality paths are relative to it
    started: float = 0.0  # time.time() at the start and end
    ended: float = 0.0
    times: Mapping[str, float] = field(default_factory=dict)  # seconds per input file
    quiet: bool = False
    suppressed: int = 0  # findings a policy exception silenced
    verbose: bool = False  # text lists the silenced findings too


def repo_path(file: str, run: RunInfo) -> Optional[str]:
    """``file`` relative to the repository root, with '/' (``./`` gone), or None if outside it."""
    if file == "<stdin>":
        return None
    cwd = run.cwd if os.path.isabs(run.cwd) else os.path.abspath(run.cwd)
    absolute = os.path.normpath(os.path.join(cwd, file))
    prefix = (run.base or cwd).rstrip(os.sep) + os.sep
    if not absolute.startswith(prefix):
        return None
    # A prefix cut, not os.path.relpath (which costs a third of a SARIF report on 10,000 files).
    return absolute[len(prefix) :].replace(os.sep, "/")


def fingerprint(finding: Finding, path: str) -> str:
    """Stable across edits that only move lines: what the finding is about, not where it is."""
    parts = (
        finding.code,
        path,
        finding.domain,
        "" if finding.interface is None else str(finding.interface),
        finding.mac or "",
        finding.txmode or "",
        finding.rule or "",
        finding.host or "",
    )
    data = "\0".join(parts).encode("utf-8", "surrogateescape")
    return _sha256(data).hexdigest()


def _sha256(data: bytes) -> Any:
    # hashlib loads OpenSSL: only the formats with fingerprints pay for it.
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(data)


def _utf8(text: str) -> str:
    """A file name that is not valid UTF-8 (surrogate escapes) as valid text, for JSON readers."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- shared wording ------------------------------------------------------------------------------


def line(finding: Finding, color: bool = False) -> str:
    """``file:line: level: message`` as compilers print it, so editors can jump to the NIC."""
    level = finding.level.value
    if color:
        level = f"{_ANSI[finding.level]}{level}{_ANSI_RESET}"
    col = column(finding)
    where = f"{finding.line}:{col}" if col else f"{finding.line}"
    return f"{printable(finding.file)}:{where}: {level}: {message(finding)}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary_line(summary: Summary, run: Optional[RunInfo] = None) -> str:
    text = (
        f"{_count(summary.files, 'file')}, {_count(summary.domains, 'domain')}, "
        f"{_count(summary.nics, 'NIC')}: {_count(summary.errors, 'error')}, "
        f"{_count(summary.warnings, 'warning')}"
    )
    if run is not None and run.skipped:
        text += f"; {run.skipped} skipped (not a <domain>, or not a regular file in the tree)"
    if run is not None and run.suppressed:
        text += f"; {_count(run.suppressed, 'finding')} silenced by policy exceptions"
        if not run.verbose:
            text += " (-v lists them)"
    return text


def suppressed_line(finding: Finding) -> str:
    """A silenced finding in the text report (-v): where, what, and the exception's reason."""
    from ..engine.exceptions import describe  # noqa: PLC0415

    assert finding.suppression is not None  # noqa: S101 - only silenced findings come here
    return (
        f"{printable(finding.file)}:{finding.line}: silenced: {message(finding)} "
        f"(was {finding.level.value}; {printable(describe(finding.suppression))})"
    )


def summary_dict(report: Report, run: RunInfo) -> dict[str, Any]:
    data: dict[str, Any] = dict(report.summary.as_dict())
    data["skipped"] = run.skipped
    data["excluded"] = run.excluded
    data["suppressed"] = run.suppressed
    return data


# --- the interface -------------------------------------------------------------------------------


class Formatter:
    """One output format.

    Streaming: ``file(label, seconds, first)`` for each input checked, in input order (``first``
    is False for a file given again), ``finding`` for each of its findings right after its first
    ``file`` call, then ``finish(totals, run, out)``, and ``close`` in any case. ``chunks`` feeds
    a whole ``Report`` the same way (``feed``). Line formats only need ``handle`` (one finding's
    text) and ``finished`` (what comes after them).
    """

    name: ClassVar[str] = ""

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        self.color = color
        self.run = run or RunInfo()
        self.spool = Spool()

    def beginning(self, report: Report) -> str:
        return ""

    def handle(self, finding: Finding) -> str:
        return ""

    def finished(self, report: Report) -> str:
        return ""

    def file(self, label: str, seconds: float, first: bool = True) -> None:
        """An input that was checked (or failed to parse), in input order."""

    def finding(self, finding: Finding) -> None:
        self.spool.write(self.handle(finding))

    def suppressed(self, finding: Finding) -> None:
        """A finding a policy exception silenced (``finding.suppression``): formats that can
        say so (SARIF suppressions, JSON, text with -v) do; the others leave it out."""

    def finish(self, totals: Report, run: RunInfo, out: IO[str]) -> None:
        """Write the report: ``totals`` carries the summary, hosts and version (its files and
        findings are not read), ``run`` the run's final state."""
        self.run = run
        out.write(self.beginning(totals))
        self.spool.copy_to(out)
        out.write(self.finished(totals))

    def close(self) -> None:
        self.spool.close()

    def feed(self, report: Report) -> None:
        """A whole report, as the run would have streamed it: the files, then the findings in
        the report's order."""
        times = self.run.times
        seen: set[str] = set()
        for label in report.files:
            self.file(label, times.get(label, 0.0), label not in seen)
            seen.add(label)
        for finding in report.findings:
            if finding.suppression is None:
                self.finding(finding)
            else:
                self.suppressed(finding)

    def chunks(self, report: Report) -> Iterator[str]:
        """The report in pieces, for writing as it is made."""
        pieces: list[str] = []
        sink: Any = _Pieces(pieces)
        try:
            self.feed(report)
            self.finish(report, self.run, sink)
        finally:
            self.close()
        yield from pieces


class _Pieces:
    """An ``IO[str]`` that keeps what is written, for ``chunks``."""

    def __init__(self, pieces: list[str]) -> None:
        self.write = pieces.append


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


class JsonFormatter(Formatter):
    name = "json"

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        super().__init__(color, run)
        self.files = Spool()
        self.file_count = 0
        self.finding_count = 0
        self.formatted: Optional[Callable[[Finding], str]] = None
        self.silenced = Spool()
        self.silenced_count = 0

    def file(self, label: str, seconds: float, first: bool = True) -> None:
        self.files.write(("[\n    " if not self.file_count else ",\n    ") + _json_string(label))
        self.file_count += 1

    def finding(self, finding: Finding) -> None:
        if self.formatted is None:
            self.formatted = _finding_json_direct if _fast_json_holds() else _finding_json
        text = self.formatted(finding)
        self.spool.write(("[\n" if not self.finding_count else ",\n") + text)
        self.finding_count += 1

    def suppressed(self, finding: Finding) -> None:
        # Beside "findings", not in it: a reader that counts errors there stays right.
        text = _finding_json(finding)
        self.silenced.write(("[\n" if not self.silenced_count else ",\n") + text)
        self.silenced_count += 1

    def finish(self, totals: Report, run: RunInfo, out: IO[str]) -> None:
        self.run = run
        document: dict[str, Any] = {
            "tool": {"name": TOOL_NAME, "version": totals.tool_version},
            "files": None,  # from the spools, one item at a time
            "hosts": list(totals.hosts),
            "findings": None,
            "suppressed": None,
            "summary": summary_dict(totals, run),
        }
        if run.fatal is not None:
            document["error"] = run.fatal
        # Exactly json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True), but the
        # files and findings (strings, and flat objects of scalars) are formatted directly, one
        # at a time as the run made them: with indent, json uses its pure-Python encoder (15 %
        # of a 10,000-file run), and the whole document as one string costs memory in
        # proportion to the files. ASCII escapes keep the output writable whatever the locale,
        # even for undecodable names.
        out.write("{\n")
        for position, key in enumerate(sorted(document)):
            out.write((",\n" if position else "") + f"  {_json_string(key)}: ")
            if key in ("files", "findings", "suppressed"):
                spool, count = {
                    "files": (self.files, self.file_count),
                    "findings": (self.spool, self.finding_count),
                    "suppressed": (self.silenced, self.silenced_count),
                }[key]
                if not count:
                    out.write("[]")
                    continue
                spool.copy_to(out)
                out.write("\n  ]")
            else:
                value = json.dumps(document[key], indent=2, sort_keys=True, ensure_ascii=True)
                out.write(value.replace("\n", "\n  "))
        out.write("\n}\n")

    def close(self) -> None:
        super().close()
        self.files.close()
        self.silenced.close()


def _json_scalar(value: Any) -> str:
    if isinstance(value, str):
        return _json_string(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=True)  # pragma: no cover - not a scalar


def _finding_json(finding: Finding) -> str:
    """One finding as json.dumps(indent=2, sort_keys=True) writes it inside the findings list."""
    data = finding.as_dict()  # with "column" where libxml2 gave one
    fields = ",\n".join(f"      {_json_string(k)}: {_json_value(data[k])}" for k in sorted(data))
    return f"    {{\n{fields}\n    }}"


def _json_value(value: Any) -> str:
    if isinstance(value, dict):  # a suppression: its own small object
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)
        return text.replace("\n", "\n      ")
    return _json_scalar(value)


def _opt(value: Optional[str]) -> str:
    return "null" if value is None else _json_string(value)


def _finding_json_direct(finding: Finding) -> str:
    """``_finding_json`` without the dict and the sort: a third of a 10,000-file JSON run went
    there. Used only while Finding's keys are the ones written out here (``_FAST_JSON``)."""
    column = finding.column
    interface = finding.interface
    return (
        f'    {{\n      "code": {_json_string(finding.code)},\n'
        + (f'      "column": {int(column)},\n' if column else "")
        + f'      "domain": {_json_string(finding.domain)},\n'
        f'      "file": {_json_string(finding.file)},\n'
        f'      "host": {_opt(finding.host)},\n'
        f'      "interface": {"null" if interface is None else int(interface)},\n'
        f'      "level": {_json_string(finding.level.value)},\n'
        f'      "line": {int(finding.line)},\n'
        f'      "mac": {_opt(finding.mac)},\n'
        f'      "message": {_json_string(finding.message)},\n'
        f'      "rule": {_opt(finding.rule)},\n'
        f'      "txmode": {_opt(finding.txmode)}\n    }}'
    )


def _fast_json_holds() -> bool:
    """Whether ``_finding_json_direct`` writes exactly what ``_finding_json`` does (the same
    keys, the same scalars): checked once per report on two sample findings."""
    samples = (
        Finding("f", 2, "d", "xml-invalid", Level.ERROR, "m", column=3),
        Finding("f", 1, "d", "txmode-invalid", Level.WARNING, "m", 0, "m", "t", "r", "h"),
    )
    return all(_finding_json(f) == _finding_json_direct(f) for f in samples)


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


def quote(path: bytes) -> str:
    """urllib.parse.quote, imported only by the formats that write URIs."""
    from urllib.parse import quote as _quote  # noqa: PLC0415

    return _quote(path)


class SarifFormatter(Formatter):
    """SARIF 2.1.0 as GitHub code scanning reads it: paths relative to the repository root
    (``%SRCROOT%``), a stable partialFingerprints entry (API uploads would duplicate alerts
    without one), the run's exit state in ``invocations``, and at most 25,000 results."""

    name = "sarif"

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        super().__init__(color, run)
        self.artifacts = Spool()
        self.index = {code: i for i, code in enumerate(CODES)}
        # The current file: its artifact position, location and repository path.
        self.current: Optional[tuple[str, int, dict[str, Any], str]] = None
        # Every file's, only when findings may come in another order (``feed``).
        self.known: Optional[dict[str, tuple[str, int, dict[str, Any], str]]] = None
        self.artifact_count = 0
        self.counts = {Level.ERROR: 0, Level.WARNING: 0}
        self.silenced = 0
        self.direct: Optional[bool] = None  # whether _result_json may stand in for _result

    def file(self, label: str, seconds: float, first: bool = True) -> None:
        if not first:
            return
        relative = repo_path(label, self.run)
        if relative is not None:
            location: dict[str, Any] = {"uri": quote(os.fsencode(relative)), "uriBaseId": SRCROOT}
        else:
            absolute = os.path.normpath(os.path.join(self.run.cwd, label))
            location = {"uri": "file://" + quote(os.fsencode(absolute.replace(os.sep, "/")))}
        self.current = (label, self.artifact_count, location, relative or label)
        if self.known is not None:
            self.known[label] = self.current
        separator = "," if self.artifact_count else ""
        self.artifacts.write(separator + '{"location":' + _location_json(location) + "}")
        self.artifact_count += 1

    def finding(self, finding: Finding) -> None:
        self._add(finding)

    def suppressed(self, finding: Finding) -> None:
        self._add(finding)

    def _add(self, finding: Finding) -> None:
        current = self.current
        if current is None or current[0] != finding.file:
            known = self.known.get(finding.file) if self.known is not None else None
            if known is None:
                self.file(finding.file, 0.0)
                known = self.current
            current = known
        assert current is not None  # noqa: S101 - set just above
        _, position, location, path = current
        if self.direct is None:
            self.direct = self._direct_holds()
        if self.direct and finding.suppression is None:
            result = self._result_json(finding, location, position, path)
        else:
            result = _compact(self._result(finding, dict(location, index=position), path))
        # One result a line (compact JSON has no newline), marked for the cap: errors, then
        # warnings, then silenced findings.
        if finding.suppression is not None:
            self.spool.write("S" + result + "\n")
            self.silenced += 1
            return
        self.spool.write(("E" if finding.level is Level.ERROR else "W") + result + "\n")
        self.counts[finding.level] += 1

    def feed(self, report: Report) -> None:
        self.known = {}
        super().feed(report)

    def finish(self, totals: Report, run: RunInfo, out: IO[str]) -> None:
        self.run = run
        errors, warnings = self.counts[Level.ERROR], self.counts[Level.WARNING]
        omitted = max(0, errors + warnings + self.silenced - SARIF_MAX_RESULTS)
        sarif_run: dict[str, Any] = {
            "tool": {
                "driver": {
                    "name": TOOL_NAME,
                    "version": totals.tool_version or "0",
                    "rules": [self._rule(code) for code in CODES],
                }
            },
            "artifacts": None,  # from the spools, one at a time
            "invocations": [self._invocation(omitted)],
            "results": None,
            "properties": {"hosts": list(totals.hosts), "summary": summary_dict(totals, run)},
        }
        base = os.path.abspath(run.base or run.cwd)
        sarif_run["originalUriBaseIds"] = {
            SRCROOT: {"uri": "file://" + quote(os.fsencode(base.rstrip("/") + "/"))}
        }
        if omitted:
            sarif_run["properties"]["omittedResults"] = omitted
        document = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [sarif_run]}
        # Compact: without indent json uses its C encoder, several times faster on 10,000 files;
        # SARIF is read by tools, and `python -m json.tool` indents it for a human. The text is
        # exactly json.dumps(document) with the artifacts and results in place (inside a JSON
        # string a quote is always escaped, so each unescaped key below occurs once).
        head, rest = _compact(document).split('"artifacts":null', 1)
        middle, tail = rest.split('"results":null', 1)
        out.write(head + '"artifacts":[')
        self.artifacts.copy_to(out)
        out.write("]" + middle + '"results":[')
        separator = ""
        if not omitted:
            for result in self.spool.lines():
                out.write(separator + result[1:-1])
                separator = ","
        else:
            # Errors first, so that the cap drops warnings before any error.
            left = SARIF_MAX_RESULTS
            for wanted in "EWS":
                for result in self.spool.lines():
                    if left and result[0] == wanted:
                        out.write(separator + result[1:-1])
                        separator = ","
                        left -= 1
        out.write("]" + tail + "\n")

    def close(self) -> None:
        super().close()
        self.artifacts.close()

    def _result(self, finding: Finding, location: dict[str, Any], path: str) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "domain": finding.domain,
            "interface": finding.interface,
            "mac": finding.mac,
            "txmode": finding.txmode,
            "host": finding.host,
            "policyRule": finding.rule,
        }
        region: dict[str, int] = {"startLine": max(1, finding.line)}
        col = column(finding)
        if col:
            region["startColumn"] = col
        result: dict[str, Any] = {
            "ruleId": finding.code,
            "ruleIndex": self.index[finding.code],
            "level": finding.level.value,
            "message": {"text": message(finding)},
            "locations": [{"physicalLocation": {"artifactLocation": location, "region": region}}],
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding, path)},
            "properties": {k: v for k, v in properties.items() if v is not None},
        }
        if finding.suppression is not None:
            result["suppressions"] = [_sarif_suppression(finding.suppression)]
        return result

    def _result_json(
        self, finding: Finding, location: dict[str, Any], position: int, path: str
    ) -> str:
        """``_compact(self._result(...))`` written directly: json.dumps' sorting and nested
        dicts were half of a SARIF report's time. Keys in sorted order, as _compact has them."""
        js = _json_string
        line = max(1, finding.line)
        col = column(finding)
        region = (
            f'{{"startColumn":{int(col)},"startLine":{line}}}' if col else f'{{"startLine":{line}}}'
        )
        artifact = f'{{"index":{position},{_location_json(location)[1:]}'
        properties = []
        for key, value in (
            ("domain", finding.domain),
            ("host", finding.host),
            ("interface", finding.interface),
            ("mac", finding.mac),
            ("policyRule", finding.rule),
            ("txmode", finding.txmode),
        ):
            if value is not None:
                text = str(int(value)) if key == "interface" else js(str(value))
                properties.append(f'"{key}":{text}')
        return (
            f'{{"level":{js(finding.level.value)},"locations":[{{"physicalLocation":'
            f'{{"artifactLocation":{artifact},"region":{region}}}}}],'
            f'"message":{{"text":{js(message(finding))}}},'
            f'"partialFingerprints":{{{js(FINGERPRINT_KEY)}:{js(fingerprint(finding, path))}}},'
            f'"properties":{{{",".join(properties)}}},'
            f'"ruleId":{js(finding.code)},"ruleIndex":{self.index[finding.code]}}}'
        )

    def _direct_holds(self) -> bool:
        """Whether ``_result_json`` writes what ``_result`` does: checked once per report."""
        samples = (
            Finding("f", 2, "d", "xml-invalid", Level.ERROR, "m", column=3),
            Finding("f", 0, "d", "txmode-invalid", Level.WARNING, "m", 0, "m", "t", "r", "h"),
        )
        locations = ({"uri": "a", "uriBaseId": SRCROOT}, {"uri": "file:///a"})
        return all(
            self._result_json(f, where, 4, "p")
            == _compact(self._result(f, dict(where, index=4), "p"))
            for f in samples
            for where in locations
        )

    def _invocation(self, omitted: int) -> dict[str, Any]:
        run = self.run
        notes: list[dict[str, Any]] = []
        if run.fatal is not None:
            notes.append({"level": "error", "message": {"text": printable(run.fatal)}})
        if omitted:
            notes.append(
                {
                    "level": "warning",
                    "message": {
                        "text": f"{omitted} results omitted: GitHub code scanning accepts at "
                        f"most {SARIF_MAX_RESULTS} per run (errors were kept first)"
                    },
                }
            )
        invocation: dict[str, Any] = {
            "executionSuccessful": run.fatal is None,
            "exitCode": run.exit_code,
            "arguments": [_utf8(a) for a in run.arguments],
            "workingDirectory": {
                "uri": "file://" + quote(os.fsencode(os.path.abspath(run.cwd).rstrip("/") + "/"))
            },
            "toolExecutionNotifications": notes,
        }
        if run.started:
            invocation["startTimeUtc"] = _utc(run.started)
            invocation["endTimeUtc"] = _utc(max(run.started, run.ended))
        return invocation

    @staticmethod
    def _rule(code: str) -> dict[str, Any]:
        from .explain import EXPLANATIONS, explain, explain_markdown  # noqa: PLC0415

        item = EXPLANATIONS[code]
        return {
            "id": code,
            "name": "".join(part.capitalize() for part in code.split("-")),
            "shortDescription": {"text": item.title},
            "fullDescription": {"text": item.meaning},
            "help": {"text": explain(code), "markdown": explain_markdown(code)},
            "defaultConfiguration": {"level": item.level.value},
        }


def _sarif_suppression(suppression: Suppression) -> dict[str, Any]:
    """SARIF's suppression object: 'external' (the policy file, not the domain XML, grants it),
    'accepted' (a reviewed policy says so), the exception's reason as the justification."""
    properties: dict[str, Any] = {"exception": suppression.exception, "line": suppression.line}
    if suppression.expires:
        properties["expires"] = suppression.expires
    return {
        "kind": "external",
        "status": "accepted",
        "justification": printable(suppression.reason),
        "properties": properties,
    }


def _location_json(location: dict[str, Any]) -> str:
    """``_compact(location)`` for an artifact location (uri, and uriBaseId where there is one)."""
    if "uriBaseId" in location:
        return f'{{"uri":{_json_string(location["uri"])},"uriBaseId":{_json_string(SRCROOT)}}}'
    return f'{{"uri":{_json_string(location["uri"])}}}'


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _utc(seconds: float) -> str:
    import time  # noqa: PLC0415

    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}Z"


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
            "location": {"path": _utf8(path), "lines": {"begin": max(1, finding.line)}},
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


FORMATTERS: Mapping[str, type[Formatter]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            TextFormatter,
            JsonFormatter,
            JUnitFormatter,
            GitHubFormatter,
            SarifFormatter,
            CodeClimateFormatter,
        )
    }
)


def choose_format(requested: str, environ: Mapping[str, str]) -> str:
    """``auto`` is github under GitHub Actions (annotations in the PR), text everywhere else."""
    if requested == "auto":
        return "github" if environ.get("GITHUB_ACTIONS") == "true" else "text"
    if requested not in FORMATTERS:
        raise ValueError(f"unknown format {requested!r} (known: {', '.join(sorted(FORMATTERS))})")
    return requested


def render(fmt: str, report: Report, color: bool, run: Optional[RunInfo] = None) -> str:
    return "".join(FORMATTERS[fmt](color=color, run=run).chunks(report))


def write(
    stream: IO[str], fmt: str, report: Report, color: bool, run: Optional[RunInfo] = None
) -> None:
    """``render`` into ``stream`` piece by piece."""
    for chunk in FORMATTERS[fmt](color=color, run=run).chunks(report):
        if chunk:
            stream.write(chunk)
