"""``validate-domain --generate-exceptions``: the policy exceptions that would silence today's
findings, for adopting a policy step by step (as ansible-lint's ``--generate-ignore``).

A report format like the others (fed each finding as the run goes), written as YAML: one entry
per domain, NIC and code, matching exactly that (the domain name and MAC as literal globs), each
with ``reason: TODO``, which ``check-policy`` flags until someone writes why. Findings no
exception can silence (``xml-invalid``, ``exception-expired``) are listed as comments.
"""

from __future__ import annotations

import json
import time
from typing import IO, Optional

from ..common.text import printable
from ..engine import codes
from ..engine.model import Finding, Report
from ..engine.policy_schema import TODO_REASON
from ..report.base import Formatter, RunInfo


def literal_glob(text: str) -> str:
    """``text`` as a glob that fits only itself: fnmatch's specials each in a class."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _yaml_string(text: str) -> str:
    # A JSON string is a YAML double-quoted scalar (escapes included): nothing in a domain
    # name can end the scalar or start a tag.
    return json.dumps(text, ensure_ascii=True)


class ExceptionsFormatter(Formatter):
    name = "exceptions"

    def __init__(self, color: bool = False, run: Optional[RunInfo] = None) -> None:
        super().__init__(color, run)
        self.seen: set[tuple[str, Optional[str], str, Optional[str]]] = set()
        self.entries = 0
        self.skipped: list[str] = []

    def finding(self, finding: Finding) -> None:
        where = f"{printable(finding.file)}:{finding.line}"
        if finding.code in codes.NEVER_SILENCED:
            self.skipped.append(f"{where}: {finding.code} (no exception silences it)")
            return
        key = (finding.domain, (finding.mac or "").lower() or None, finding.code, finding.rule)
        if key in self.seen:
            return  # the same NIC and code on another host, or in another copy of the file
        self.seen.add(key)
        match = [f"domain: {_yaml_string(literal_glob(finding.domain))}"]
        if finding.mac:
            match.append(f"mac: {_yaml_string(literal_glob(finding.mac.lower()))}")
        if finding.rule:
            match.append(f"rule: {_yaml_string(literal_glob(finding.rule))}")
        match.append(f"code: {finding.code}")
        self.spool.write(
            f"  # {where}: {printable(finding.message)}\n"
            f"  - match: {{{', '.join(match)}}}\n"
            f"    reason: {TODO_REASON}\n"
        )
        self.entries += 1

    def finish(self, totals: Report, run: RunInfo, out: IO[str]) -> None:
        self.run = run
        day = time.strftime("%Y-%m-%d", time.localtime(run.started or time.time()))
        out.write(
            f"# validate-domain --generate-exceptions, {day}: {self.entries} "
            f"exception{'s' if self.entries != 1 else ''} that would silence today's findings.\n"
            "# Add the entries to the policy's 'exceptions:' list. 'libvirt-txmode check-policy'\n"
            f"# flags every 'reason: {TODO_REASON}' until someone writes why the exception is "
            "granted;\n# give each an 'expires: YYYY-MM-DD' by which it should be fixed.\n"
        )
        for line in self.skipped:
            out.write(f"# not silenced: {line}\n")
        out.write("exceptions:\n" if self.entries else "exceptions: []\n")
        self.spool.copy_to(out)
