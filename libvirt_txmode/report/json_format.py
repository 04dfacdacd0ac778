"""``-f json``: the whole run as one document (tool, files, hosts, findings, silenced findings,
summary), exactly as ``json.dumps(indent=2, sort_keys=True, ensure_ascii=True)`` writes it, but
made one file and one finding at a time."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _json_string  # C: json.dumps' own escaping

from ..common.spool import Spool
from ..engine.wording import Finding, Level, Report
from .base import TOOL_NAME, Formatter, RunInfo, summary_dict

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Optional


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
