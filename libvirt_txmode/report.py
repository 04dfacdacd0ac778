"""Findings -> text, json, junit, github or sarif.

Like flake8's formatters, every format is a class behind one small interface: ``beginning`` before
the findings, ``handle`` for each one, ``finished`` after them. Line formats write as they go;
document formats (json, junit, sarif) build their whole document in ``finished``. Adding a format
is adding a class to ``FORMATTERS``; nothing else changes.

Names, MACs and messages come from untrusted domain XML, so every format passes them through
``findings.printable`` (or its own escaping) before they reach a terminal, a CI log or an XML file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import quote

from lxml import etree

from .explain import EXPLANATIONS, explain, explain_markdown
from .findings import CODES, Finding, Level, Report, Summary, printable

TOOL_NAME = "libvirt-txmode"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_VERSION = "2.1.0"
# GitHub code scanning and other SARIF viewers resolve relative paths against the checkout root.
SRCROOT = "%SRCROOT%"
JUNIT_SUITE = "validate-domain"

_ANSI = {Level.ERROR: "\033[31m", Level.WARNING: "\033[33m"}
_ANSI_RESET = "\033[0m"


# --- shared wording ------------------------------------------------------------------------------


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


def line(finding: Finding, color: bool = False) -> str:
    """``file:line: level: message`` as compilers print it, so editors can jump to the NIC."""
    level = finding.level.value
    if color:
        level = f"{_ANSI[finding.level]}{level}{_ANSI_RESET}"
    return f"{printable(finding.file)}:{finding.line}: {level}: {message(finding)}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary_line(summary: Summary) -> str:
    return (
        f"{_count(summary.files, 'file')}, {_count(summary.domains, 'domain')}, "
        f"{_count(summary.nics, 'NIC')}: {_count(summary.errors, 'error')}, "
        f"{_count(summary.warnings, 'warning')}"
    )


# --- the interface -------------------------------------------------------------------------------


class Formatter:
    """One output format. ``render`` calls beginning, handle per finding, then finished."""

    name: ClassVar[str] = ""

    def __init__(self, color: bool = False) -> None:
        self.color = color

    def beginning(self, report: Report) -> str:
        return ""

    def handle(self, finding: Finding) -> str:
        return ""

    def finished(self, report: Report) -> str:
        return ""


class TextFormatter(Formatter):
    name = "text"

    def handle(self, finding: Finding) -> str:
        return line(finding, self.color) + "\n"

    def finished(self, report: Report) -> str:
        return summary_line(report.summary) + "\n"


class JsonFormatter(Formatter):
    name = "json"

    def finished(self, report: Report) -> str:
        document = {
            "tool": {"name": TOOL_NAME, "version": report.tool_version},
            "files": list(report.files),
            "hosts": list(report.hosts),
            "findings": [f.as_dict() for f in report.findings],
            "summary": report.summary.as_dict(),
        }
        # ASCII escapes keep the output writable whatever the locale, even for undecodable names.
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


class JUnitFormatter(Formatter):
    """One testcase per input file: CI systems show a failed file, with its findings as detail."""

    name = "junit"

    def finished(self, report: Report) -> str:
        files = list(report.files)
        files.extend(f.file for f in report.findings if f.file not in files)
        suites = etree.Element("testsuites", name=JUNIT_SUITE)
        suite = etree.SubElement(suites, "testsuite", name=JUNIT_SUITE)
        failures = 0
        for file in files:
            mine = [f for f in report.findings if f.file == file]
            errors = [f for f in mine if f.level is Level.ERROR]
            warnings = [f for f in mine if f.level is Level.WARNING]
            # lxml refuses control characters in text and attributes: printable() removes them.
            case = etree.SubElement(suite, "testcase", classname=JUNIT_SUITE, name=printable(file))
            if errors:
                failures += 1
                failure = etree.SubElement(
                    case, "failure", message=line(errors[0]), type=errors[0].code
                )
                failure.text = "".join(line(f) + "\n" for f in mine)
            if warnings:
                out = etree.SubElement(case, "system-out")
                out.text = "".join(line(f) + "\n" for f in warnings)
        for element in (suites, suite):
            element.set("tests", str(len(files)))
            element.set("failures", str(failures))
            element.set("errors", "0")
        suite.set("skipped", "0")
        text: bytes = etree.tostring(
            suites, xml_declaration=True, encoding="UTF-8", pretty_print=True
        )
        return text.decode("utf-8")


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
        # Not a workflow command, so it shows in the log as the run's last line.
        return summary_line(report.summary) + "\n"


def _artifact_location(path: str) -> dict[str, str]:
    """A SARIF artifactLocation: relative paths stay relative to the checkout, as given."""
    posix = path.replace(os.sep, "/")
    if os.path.isabs(path):
        return {"uri": "file://" + quote(posix)}
    return {"uri": quote(posix), "uriBaseId": SRCROOT}


class SarifFormatter(Formatter):
    name = "sarif"

    def finished(self, report: Report) -> str:
        rules = [self._rule(code) for code in CODES]
        index = {code: i for i, code in enumerate(CODES)}
        files = list(report.files)
        files.extend(f.file for f in report.findings if f.file not in files)
        artifacts = [{"location": _artifact_location(f)} for f in files]
        results = []
        for finding in report.findings:
            location = dict(_artifact_location(finding.file), index=files.index(finding.file))
            properties: dict[str, Any] = {
                "domain": finding.domain,
                "interface": finding.interface,
                "mac": finding.mac,
                "txmode": finding.txmode,
                "host": finding.host,
                "policyRule": finding.rule,
            }
            results.append(
                {
                    "ruleId": finding.code,
                    "ruleIndex": index[finding.code],
                    "level": finding.level.value,
                    "message": {"text": message(finding)},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": location,
                                "region": {"startLine": max(1, finding.line)},
                            }
                        }
                    ],
                    "properties": {k: v for k, v in properties.items() if v is not None},
                }
            )
        document = {
            "$schema": SARIF_SCHEMA,
            "version": SARIF_VERSION,
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": TOOL_NAME,
                            "version": report.tool_version or "0",
                            "rules": rules,
                        }
                    },
                    "artifacts": artifacts,
                    "results": results,
                    "properties": {
                        "hosts": list(report.hosts),
                        "summary": report.summary.as_dict(),
                    },
                }
            ],
        }
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"

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


FORMATTERS: Mapping[str, type[Formatter]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (TextFormatter, JsonFormatter, JUnitFormatter, GitHubFormatter, SarifFormatter)
    }
)


def choose_format(requested: str, environ: Mapping[str, str]) -> str:
    """``auto`` is github under GitHub Actions (annotations in the PR), text everywhere else."""
    if requested == "auto":
        return "github" if environ.get("GITHUB_ACTIONS") == "true" else "text"
    if requested not in FORMATTERS:
        raise ValueError(f"unknown format {requested!r} (known: {', '.join(sorted(FORMATTERS))})")
    return requested


def render(fmt: str, report: Report, color: bool) -> str:
    formatter = FORMATTERS[fmt](color=color)
    parts = [formatter.beginning(report)]
    parts.extend(formatter.handle(finding) for finding in report.findings)
    parts.append(formatter.finished(report))
    return "".join(parts)
