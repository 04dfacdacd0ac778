"""What every report format is and shares: the ``Formatter`` interface, ``RunInfo``, and the
wording and paths more than one format writes.

Like flake8's formatters, every format is a class behind one small interface, fed as the run goes:
``file`` for each input checked, ``finding`` for each finding (after its file), then ``finish``
writes the whole report. What a format must put before the findings but knows only at the end
(JSON's file list, SARIF's artifacts and invocation, JUnit's counts) waits in spools (spool.py),
so memory does not grow with the number of files, and a run that fails leaves no half report.
Each format lives in its own module and is named once, in ``registry``.

Names, MACs and messages come from untrusted domain XML, so every format passes them through
``printable`` (or its own escaping) before they reach a terminal, a CI log or an XML file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..common.records import SLOTS
from ..common.spool import Spool
from ..engine.wording import Finding, Level, Report, Summary, message, printable

# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, ClassVar, Optional

TOOL_NAME = "libvirt-txmode"

_ANSI = {Level.ERROR: "\033[31m", Level.WARNING: "\033[33m"}
_ANSI_RESET = "\033[0m"


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


# --- paths and identities ------------------------------------------------------------------------


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
    import hashlib  # noqa: PLC0415 - OpenSSL's binding: only the formats with fingerprints pay for it

    return hashlib.sha256(data)


def utf8(text: str) -> str:
    """A file name that is not valid UTF-8 (surrogate escapes) as valid text, for JSON readers."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- shared wording ------------------------------------------------------------------------------


def column(finding: Finding) -> Optional[int]:
    return finding.column


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
