"""Where a validate-domain run's outcomes go: each checked file and its findings, handed to the
report formatter (``-o FILE``) and to the terminal the moment they are known, or held and put in
report order at the end when a run must see every file first.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from ..common.exits import FatalError
from ..common.records import SLOTS
from ..engine.wording import Finding, Level, Report
from ..report.registry import choose_format, formatter, write
from .exception_gen import ExceptionsFormatter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Optional

    from ..report.base import Formatter, RunInfo

# What reading one input gave, in input order: a file that was checked (or failed to parse) with
# its findings, sorted as the report orders them, or one that was skipped. Plain tuples: parallel
# workers pickle thousands of them.
CHECKED, SKIPPED = "checked", "skipped"
# (CHECKED, label, seconds, findings or the Domain when there is no check yet, domains, nics)
# (SKIPPED, label)
Record = tuple  # tuple[Any, ...]; a plain alias: typing is not imported at run time


def finding_order(finding: Finding) -> tuple[int, str, str]:
    return (finding.line, finding.code, finding.host or "")


@dataclass(**SLOTS)
class Sinks:
    """Where each checked file and its findings go the moment they are known, with the counts
    the summary needs; nothing per file is kept."""

    file: Optional[Formatter]  # -o FILE in --format
    terminal: Formatter  # stdout
    files: int = 0
    domains: int = 0
    nics: int = 0
    errors: int = 0
    warnings: int = 0
    skipped: int = 0
    suppressed: int = 0

    def add(
        self, label: str, seconds: Optional[float], found: list[Finding], domains: int, nics: int
    ) -> None:
        self.files += 1
        self.domains += domains
        self.nics += nics
        self.add_file(label, seconds or 0.0, True)
        self.add_findings(found)

    def add_file(self, label: str, seconds: float, first: bool) -> None:
        if self.file is not None:
            self.file.file(label, seconds, first)
        self.terminal.file(label, seconds, first)

    def add_findings(self, found: list[Finding]) -> None:
        for finding in found:
            if finding.suppression is not None:
                # Silenced by a policy exception: reported as such, counted as neither.
                self.suppressed += 1
                if self.file is not None:
                    self.file.suppressed(finding)
                self.terminal.suppressed(finding)
                continue
            if finding.level is Level.ERROR:
                self.errors += 1
            else:
                self.warnings += 1
            if self.file is not None:
                self.file.finding(finding)
            self.terminal.finding(finding)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.terminal.close()


def make_sinks(
    args: argparse.Namespace, stdout: IO[str], environ: Mapping[str, str], run: RunInfo
) -> tuple[str, Sinks]:
    """The report(s) written as the run goes: -o gets --format and the terminal text; with
    --generate-exceptions the exceptions take the report's place."""

    chosen: type[Formatter]
    if args.generate_exceptions:
        fmt, chosen = ExceptionsFormatter.name, ExceptionsFormatter
    else:
        fmt = choose_format(args.format, environ)
        chosen = formatter(fmt)
    terminal = formatter("text") if args.output else chosen
    color = terminal.name == "text" and use_color(stdout, args, environ)
    return fmt, Sinks(
        file=chosen(color=False, run=run) if args.output else None,
        terminal=terminal(color=color, run=run),
    )


def use_color(stream: IO[str], args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    return not args.no_color and "NO_COLOR" not in environ and stream.isatty()


def write_report(path: str, fmt: str, report: Report, run: RunInfo) -> None:

    try:
        with open(path, "w", encoding="utf-8") as handle:
            write(handle, fmt, report, color=False, run=run)
    except OSError as exc:
        raise FatalError(f"cannot write {path}: {exc.strerror}") from None


def emit(stream: IO[str], text: str) -> None:
    """Write to the terminal; if nobody is listening any more (stdout closed, a pipe whose reader
    left) the report is still whole in -o and the exit code stays what the findings say."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def drain_held(held: list[Record], sinks: Sinks) -> int:
    """Held records into ``sinks`` as the report orders them; the number of files skipped.

    A file given twice is listed twice but reported once, at its first place, with the
    findings of all its copies (sorted together) and the time of its last reading; a label
    skipped once is skipped everywhere.
    """
    skipped = {r[1] for r in held if r[0] == SKIPPED}
    times: dict[str, float] = {}
    merged: dict[str, list[Finding]] = {}
    for entry in held:
        if entry[0] == CHECKED and entry[1] not in skipped:
            label = entry[1]
            if entry[2] is not None:
                times[label] = entry[2]
            merged.setdefault(label, []).extend(entry[3])
            sinks.files += 1
            sinks.domains += entry[4]
            sinks.nics += entry[5]
    seen: set[str] = set()
    for entry in held:
        label = entry[1]
        if entry[0] != CHECKED or label in skipped:
            continue
        first = label not in seen
        seen.add(label)
        sinks.add_file(label, times.get(label, 0.0), first)
        if first:
            found = merged.pop(label)
            found.sort(key=finding_order)
            sinks.add_findings(found)
    return len(skipped)
