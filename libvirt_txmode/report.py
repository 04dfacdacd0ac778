"""Findings -> text, json, junit, github, sarif or codeclimate.

Like flake8's formatters, every format is a class behind one small interface: ``beginning`` before
the findings, ``handle`` for each one, ``finished`` after them. Line formats write as they go;
document formats (json, junit, sarif) build their whole document in ``finished``. Adding a format
is adding a class to ``FORMATTERS``; nothing else changes.

Names, MACs and messages come from untrusted domain XML, so every format passes them through
``findings.printable`` (or its own escaping) before they reach a terminal, a CI log or an XML file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # C: json.dumps' own escaping
from types import MappingProxyType
from typing import IO, Any, Callable, ClassVar, Optional
from urllib.parse import quote

from .explain import EXPLANATIONS, explain, explain_markdown
from .findings import CODES, Finding, Level, Report, Summary, message, printable

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


@dataclass(frozen=True)
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


def repo_paths(run: RunInfo) -> Callable[[str], Optional[str]]:
    """``repo_path`` for one run, computed once per file however many findings it has."""
    cache: dict[str, Optional[str]] = {}

    def lookup(file: str) -> Optional[str]:
        if file not in cache:
            cache[file] = repo_path(file, run)
        return cache[file]

    return lookup


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
    return hashlib.sha256(data).hexdigest()


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
    return text


def summary_dict(report: Report, run: RunInfo) -> dict[str, Any]:
    data: dict[str, Any] = dict(report.summary.as_dict())
    data["skipped"] = run.skipped
    data["excluded"] = run.excluded
    return data


# --- the interface -------------------------------------------------------------------------------


class Formatter:
    """One output format. ``render`` calls beginning, handle per finding, then finished."""

    name: ClassVar[str] = ""

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        self.color = color
        self.run = run or RunInfo()

    def beginning(self, report: Report) -> str:
        return ""

    def handle(self, finding: Finding) -> str:
        return ""

    def finished(self, report: Report) -> str:
        return ""

    def chunks(self, report: Report) -> Iterator[str]:
        """The report in pieces, for writing as it is made (no whole-report string)."""
        yield self.beginning(report)
        for finding in report.findings:
            yield self.handle(finding)
        yield self.finished(report)


class TextFormatter(Formatter):
    name = "text"

    def handle(self, finding: Finding) -> str:
        return line(finding, self.color) + "\n"

    def finished(self, report: Report) -> str:
        if self.run.quiet or self.run.fatal is not None:
            return ""
        return summary_line(report.summary, self.run) + "\n"


class JsonFormatter(Formatter):
    name = "json"

    def chunks(self, report: Report) -> Iterator[str]:
        document: dict[str, Any] = {
            "tool": {"name": TOOL_NAME, "version": report.tool_version},
            "files": list(report.files),
            "hosts": list(report.hosts),
            "findings": None,  # written below, one flat object at a time
            "summary": summary_dict(report, self.run),
        }
        if self.run.fatal is not None:
            document["error"] = self.run.fatal
        # Exactly json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True), but the
        # findings (all flat objects of scalars) are formatted directly and one at a time: with
        # indent, json uses its pure-Python encoder (15 % of a 10,000-file run), and the whole
        # document as one string costs memory in proportion to the files. ASCII escapes keep the
        # output writable whatever the locale, even for undecodable names.
        yield "{\n"
        for position, key in enumerate(sorted(document)):
            yield ",\n" if position else ""
            yield f"  {_json_string(key)}: "
            if key == "findings":
                yield from _findings_json(report.findings)
            else:
                value = json.dumps(document[key], indent=2, sort_keys=True, ensure_ascii=True)
                yield value.replace("\n", "\n  ")
        yield "\n}\n"

    def finished(self, report: Report) -> str:
        return "".join(self.chunks(report))


def _json_scalar(value: Any) -> str:
    if isinstance(value, str):
        return _json_string(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=True)  # pragma: no cover - not a scalar


def _findings_json(findings: tuple[Finding, ...]) -> Iterator[str]:
    if not findings:
        yield "[]"
        return
    separator = "[\n"
    for finding in findings:
        data = finding.as_dict()  # with "column" where libxml2 gave one
        fields = ",\n".join(
            f"      {_json_string(k)}: {_json_scalar(data[k])}" for k in sorted(data)
        )
        yield f"{separator}    {{\n{fields}\n    }}"
        separator = ",\n"
    yield "\n  ]"


class JUnitFormatter(Formatter):
    """One testcase per input file: CI systems show a failed file, with its findings as detail.

    ``file`` and ``time`` on each testcase are what GitLab and Jenkins show beside it.
    """

    name = "junit"

    def finished(self, report: Report) -> str:
        from lxml import etree  # noqa: PLC0415 - only this format needs it

        by_file = _by_file(report)
        suites = etree.Element("testsuites", name=JUNIT_SUITE)
        suite = etree.SubElement(suites, "testsuite", name=JUNIT_SUITE)
        failures = 0
        times = self.run.times
        for file, mine in by_file.items():
            errors = [f for f in mine if f.level is Level.ERROR]
            warnings = [f for f in mine if f.level is Level.WARNING]
            # lxml refuses control characters in text and attributes: printable() removes them.
            name = printable(file)
            case = etree.SubElement(
                suite,
                "testcase",
                classname=JUNIT_SUITE,
                name=name,
                file=name,
                time=f"{times.get(file, 0.0):.6f}",
            )
            if errors:
                failures += 1
                failure = etree.SubElement(
                    case, "failure", message=line(errors[0]), type=errors[0].code
                )
                failure.text = "".join(line(f) + "\n" for f in mine)
            if warnings:
                out = etree.SubElement(case, "system-out")
                out.text = "".join(line(f) + "\n" for f in warnings)
        tests, errored = len(by_file), 0
        if self.run.fatal is not None:
            # The run itself failed (exit 2): one errored testcase says why, so that the CI page
            # shows the reason instead of a missing report.
            case = etree.SubElement(suite, "testcase", classname=JUNIT_SUITE, name=JUNIT_SUITE)
            etree.SubElement(case, "error", message=printable(self.run.fatal), type="fatal")
            tests, errored = tests + 1, 1
        elapsed = max(0.0, self.run.ended - self.run.started)
        for element in (suites, suite):
            element.set("tests", str(tests))
            element.set("failures", str(failures))
            element.set("errors", str(errored))
            element.set("time", f"{elapsed:.6f}")
        suite.set("skipped", "0")
        text: bytes = etree.tostring(
            suites, xml_declaration=True, encoding="UTF-8", pretty_print=True
        )
        return text.decode("utf-8")


def _by_file(report: Report) -> dict[str, list[Finding]]:
    """Every input file (also those without findings), in input order, with its findings."""
    grouped: dict[str, list[Finding]] = {file: [] for file in report.files}
    for finding in report.findings:
        grouped.setdefault(finding.file, []).append(finding)
    return grouped


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


class SarifFormatter(Formatter):
    """SARIF 2.1.0 as GitHub code scanning reads it: paths relative to the repository root
    (``%SRCROOT%``), a stable partialFingerprints entry (API uploads would duplicate alerts
    without one), the run's exit state in ``invocations``, and at most 25,000 results."""

    name = "sarif"

    def _location(self, path: str) -> dict[str, Any]:
        relative = self.paths(path)
        if relative is not None:
            return {"uri": quote(os.fsencode(relative)), "uriBaseId": SRCROOT}
        absolute = os.path.normpath(os.path.join(self.run.cwd, path))
        return {"uri": "file://" + quote(os.fsencode(absolute.replace(os.sep, "/")))}

    def chunks(self, report: Report) -> Iterator[str]:
        self.paths = repo_paths(self.run)
        index = {code: i for i, code in enumerate(CODES)}
        files = list(dict.fromkeys([*report.files, *(f.file for f in report.findings)]))
        positions = {file: i for i, file in enumerate(files)}
        locations = {file: self._location(file) for file in files}
        chosen: Iterable[Finding] = report.findings
        omitted = max(0, len(report.findings) - SARIF_MAX_RESULTS)
        if omitted:
            # Errors first, so that the cap drops warnings before any error.
            ordered = sorted(report.findings, key=lambda f: f.level is not Level.ERROR)
            chosen = ordered[:SARIF_MAX_RESULTS]
        run: dict[str, Any] = {
            "tool": {
                "driver": {
                    "name": TOOL_NAME,
                    "version": report.tool_version or "0",
                    "rules": [self._rule(code) for code in CODES],
                }
            },
            "artifacts": [{"location": locations[f]} for f in files],
            "invocations": [self._invocation(omitted)],
            "results": None,  # written below, one result at a time
            "properties": {"hosts": list(report.hosts), "summary": summary_dict(report, self.run)},
        }
        base = os.path.abspath(self.run.base or self.run.cwd)
        run["originalUriBaseIds"] = {
            SRCROOT: {"uri": "file://" + quote(os.fsencode(base.rstrip("/") + "/"))}
        }
        if omitted:
            run["properties"]["omittedResults"] = omitted
        document = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
        # Compact: without indent json uses its C encoder, several times faster on 10,000 files;
        # SARIF is read by tools, and `python -m json.tool` indents it for a human. The results
        # go out one at a time, so the document is never one string: the text is exactly
        # json.dumps(document) with the results in place (inside a JSON string a quote is always
        # escaped, so the unescaped key below occurs once).
        head, tail = _compact(document).split('"results":null', 1)
        yield head + '"results":['
        separator = ""
        for finding in chosen:
            location = dict(locations[finding.file], index=positions[finding.file])
            yield separator + _compact(self._result(finding, index, location))
            separator = ","
        yield "]" + tail + "\n"

    def finished(self, report: Report) -> str:
        return "".join(self.chunks(report))

    def _result(
        self, finding: Finding, index: Mapping[str, int], location: dict[str, Any]
    ) -> dict[str, Any]:
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
        path = self.paths(finding.file) or finding.file
        return {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": finding.level.value,
            "message": {"text": message(finding)},
            "locations": [{"physicalLocation": {"artifactLocation": location, "region": region}}],
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding, path)},
            "properties": {k: v for k, v in properties.items() if v is not None},
        }

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
        item = EXPLANATIONS[code]
        return {
            "id": code,
            "name": "".join(part.capitalize() for part in code.split("-")),
            "shortDescription": {"text": item.title},
            "fullDescription": {"text": item.meaning},
            "help": {"text": explain(code), "markdown": explain_markdown(code)},
            "defaultConfiguration": {"level": item.level.value},
        }


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

    def finished(self, report: Report) -> str:
        paths = repo_paths(self.run)
        issues = []
        for finding in report.findings:
            path = paths(finding.file) or finding.file
            issues.append(
                {
                    "type": "issue",
                    "check_name": finding.code,
                    "description": message(finding),
                    "categories": ["Bug Risk"],
                    "severity": _CODECLIMATE_SEVERITY[finding.level],
                    "fingerprint": fingerprint(finding, path),
                    "location": {"path": _utf8(path), "lines": {"begin": max(1, finding.line)}},
                }
            )
        # Compact, like SARIF: the C encoder; GitLab reads it, not people.
        return json.dumps(issues, ensure_ascii=True, separators=(",", ":")) + "\n"


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
    """``render`` into ``stream`` piece by piece: a large report is never one string."""
    for chunk in FORMATTERS[fmt](color=color, run=run).chunks(report):
        if chunk:
            stream.write(chunk)
