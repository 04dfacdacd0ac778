"""``-f sarif``: SARIF 2.1.0 as GitHub code scanning reads it, written one result at a time."""

from __future__ import annotations

import json
import os
import time
from json.encoder import encode_basestring_ascii as _json_string  # C: json.dumps' own escaping
from urllib.parse import quote

from ..common.spool import Spool
from ..engine.model import Suppression
from ..engine.wording import CODES, Finding, Level, Report, message, printable
from .base import TOOL_NAME, Formatter, RunInfo, column, fingerprint, repo_path, summary_dict, utf8
from .explain import EXPLANATIONS, explain, explain_markdown

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Optional

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_VERSION = "2.1.0"
# GitHub code scanning and other SARIF viewers resolve relative paths against the checkout root.
SRCROOT = "%SRCROOT%"
# GitHub code scanning accepts at most 25,000 results per run and rejects the whole upload above.
SARIF_MAX_RESULTS = 25_000
# The key of our partialFingerprints entry; bump the suffix if what it hashes ever changes.
FINGERPRINT_KEY = "libvirtTxmodeFinding/v1"


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
            "arguments": [utf8(a) for a in run.arguments],
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
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}Z"
