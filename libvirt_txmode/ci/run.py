"""One validate-domain run: which files, which policy, parse, check, report.

cli.py parses the command line and imports this module only then, so that ``--version`` and
``--help`` start no faster than argparse allows (issue: start-up cost).
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from .. import __version__
from ..common import logs, paths
from ..common.exits import EXIT_FATAL, EXIT_FINDINGS, EXIT_OK, FatalError
from ..common.records import SLOTS
from ..engine.wording import XML_INVALID, Finding, Level, Report, Summary, summarize
from .discovery import find_policy, repository_root
from .inputs import Collector, Input, InputError, read_input
from .parallel import in_slices, job_count

# typing.TYPE_CHECKING without importing typing: it weighs on every run's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Optional

    from ..engine.model import HostCapabilities
    from ..engine.policy import Policy
    from ..report.base import Formatter, RunInfo

LOG = logs.get("libvirt_txmode")


# What reading one input gave, in input order: a file that was checked (or failed to parse) with
# its findings, sorted as the report orders them, or one that was skipped. Plain tuples: parallel
# workers pickle thousands of them.
_CHECKED, _SKIPPED = "checked", "skipped"
# (_CHECKED, label, seconds, findings or the Domain when there is no check yet, domains, nics)
# (_SKIPPED, label)
_Record = tuple  # tuple[Any, ...]; a plain alias: typing is not imported at run time


def _finding_order(finding: Finding) -> tuple[int, str, str]:
    return (finding.line, finding.code, finding.host or "")


def _process(  # noqa: C901, PLR0912 - the order of validate-domain's steps is the order of its options
    items: Iterable[Input],
    stdin: IO[bytes],
    check: Optional[Callable[[dict[str, Any], list[Any]], list[Finding]]],
    emit: Callable[[_Record], None],
) -> Optional[str]:
    """Read, parse and (with ``check``) check ``items`` in order, handing each outcome to
    ``emit`` as it is made; stops at an unreadable input and returns why (None: all read)."""
    from ..engine.domain_xml import (  # noqa: PLC0415
        MAX_XML_BYTES,
        DomainXMLError,
        NotADomainError,
        make_parser,
        parse_domain,
        parse_parts,
        read_bounded,
    )

    parser = make_parser()  # one per run of inputs (and process), not one per document
    # With a check, the domain as parse_parts gives it (memo.Checker makes records only for a
    # shape it has not seen); without, the Domain, kept until the host is probed.
    parse: Callable[..., Any] = parse_domain if check is None else parse_parts
    clock = time.perf_counter
    for item in items:
        began = clock()
        try:
            if item.path is None:
                data: Optional[bytes] = read_bounded(stdin, MAX_XML_BYTES)
            else:
                data = read_input(item, MAX_XML_BYTES)
        except DomainXMLError as exc:
            # Not timed: the file was never parsed.
            emit((_CHECKED, item.label, None, [_invalid(item.label, exc)], 0, 0))
            continue
        except OSError as exc:
            if item.regular_only and exc.errno == errno.ELOOP:
                data = None  # replaced by a symlink since the walk: never followed
            else:
                return f"cannot read {item.label}: {exc.strerror}"
        if data is None:
            emit((_SKIPPED, item.label))
            continue
        try:
            outcome = parse(data, item.label, parser=parser)
        except NotADomainError as exc:
            # A libvirt <network> or <pool> beside the domains: skipped, not an error.
            LOG.info("skipped %s: %s", item.label, exc.message)
            emit((_SKIPPED, item.label))
            continue
        except DomainXMLError as exc:
            emit((_CHECKED, item.label, clock() - began, [_invalid(item.label, exc)], 0, 0))
            continue
        if isinstance(outcome, tuple):
            assert check is not None  # noqa: S101 - parts are asked for only then
            found = check(*outcome)
            if len(found) > 1:
                found.sort(key=_finding_order)
            emit((_CHECKED, item.label, clock() - began, found, 1, len(outcome[1])))
        else:
            emit((_CHECKED, item.label, clock() - began, outcome, 1, len(outcome.nics)))
    return None


def _invalid(label: str, exc: Exception) -> Finding:
    line = getattr(exc, "line", 1)
    column = getattr(exc, "column", None)  # libxml2's, when it gives one
    message = getattr(exc, "message", str(exc))
    return Finding(label, line, "-", XML_INVALID, Level.ERROR, message, column=column)


def _ci(environ: Mapping[str, str]) -> bool:
    """CI is set, as every CI service sets it (GitHub, GitLab, Jenkins' plugins: CI=true)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _use_color(stream: IO[str], args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    return not args.no_color and "NO_COLOR" not in environ and stream.isatty()


def run(
    args: argparse.Namespace,
    argv: Sequence[str],
    stdin: IO[bytes],
    stdout: IO[str],
    environ: Mapping[str, str],
    *,
    stderr: Optional[IO[str]] = None,
) -> int:
    """validate-domain with parsed ``args`` (``argv`` as given, for the SARIF invocation)."""
    from ..report.base import RunInfo  # noqa: PLC0415
    from ..report.registry import FORMATS  # noqa: PLC0415

    if args.verbose:
        import logging  # noqa: PLC0415 - only -v logs; logs.get loggers import it when they write

        logging.basicConfig(level=logging.INFO, format="validate-domain: %(message)s")
    cwd = os.getcwd()
    run = RunInfo(
        arguments=tuple(argv),
        cwd=cwd,
        base=repository_root(cwd),
        started=time.time(),
        verbose=args.verbose,
    )
    fmt, sinks = _make_sinks(args, stdout, environ, run)
    try:
        try:
            totals, run = _validate(args, stdin, environ, run, sinks)
        except FatalError as exc:
            if args.output:
                # A report even when the run failed: CI uploads it with `if: always()`, and the
                # reason is in it (SARIF invocations, a JUnit error, a JSON "error").
                failed = replace(run, fatal=str(exc), exit_code=EXIT_FATAL, ended=time.time())
                empty = Report(files=(), findings=(), summary=summarize(0, 0, 0, []))
                if fmt in FORMATS:  # no half list of exceptions: a failed run writes none
                    _write_report(
                        args.output, fmt, replace(empty, tool_version=__version__), failed
                    )
            raise
        failing = totals.summary.errors + (totals.summary.warnings if args.strict else 0)
        if totals.summary.files == 0:
            failing += _nothing_checked(args, environ, stderr or sys.stderr)
        code = EXIT_FINDINGS if failing else EXIT_OK
        run = replace(run, exit_code=code, ended=time.time(), quiet=args.quiet)
        if sinks.file is not None:
            try:
                with open(args.output, "w", encoding="utf-8") as handle:
                    sinks.file.finish(totals, run, handle)
            except OSError as exc:
                raise FatalError(f"cannot write {args.output}: {exc.strerror}") from None
        try:
            sinks.terminal.finish(totals, run, stdout)
            stdout.flush()
        except (OSError, ValueError):
            pass  # nobody reads stdout any more: see _emit
    finally:
        sinks.close()
    return code


def _make_sinks(
    args: argparse.Namespace, stdout: IO[str], environ: Mapping[str, str], run: RunInfo
) -> tuple[str, _Sinks]:
    """The report(s) written as the run goes: -o gets --format and the terminal text; with
    --generate-exceptions the exceptions take the report's place."""
    from ..report.registry import choose_format, formatter  # noqa: PLC0415

    chosen: type[Formatter]
    if args.generate_exceptions:
        from .exception_gen import ExceptionsFormatter  # noqa: PLC0415

        fmt, chosen = ExceptionsFormatter.name, ExceptionsFormatter
    else:
        fmt = choose_format(args.format, environ)
        chosen = formatter(fmt)
    terminal = formatter("text") if args.output else chosen
    color = terminal.name == "text" and _use_color(stdout, args, environ)
    return fmt, _Sinks(
        file=chosen(color=False, run=run) if args.output else None,
        terminal=terminal(color=color, run=run),
    )


def _nothing_checked(args: argparse.Namespace, environ: Mapping[str, str], stderr: IO[str]) -> int:
    """Say that no file was checked; 1 when that fails the run. In CI a run that checked
    nothing proves nothing: a pipeline whose globs or ignore file (added by the change under
    review) leave no file must not pass."""
    in_ci = _ci(environ)
    fails = args.strict or in_ci
    if not args.quiet or fails:
        why = " (CI is set)" if in_ci and not args.strict else ""
        level = "error" if fails else "warning"
        _emit(stderr, f"validate-domain: {level}: no domain XML file was checked{why}\n")
    return 1 if fails else 0


@dataclass(**SLOTS)
class _Sinks:
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


def _write_report(path: str, fmt: str, report: Report, run: RunInfo) -> None:
    from ..report.registry import write  # noqa: PLC0415

    try:
        with open(path, "w", encoding="utf-8") as handle:
            write(handle, fmt, report, color=False, run=run)
    except OSError as exc:
        raise FatalError(f"cannot write {path}: {exc.strerror}") from None


def _emit(stream: IO[str], text: str) -> None:
    """Write to the terminal; if nobody is listening any more (stdout closed, a pipe whose reader
    left) the report is still whole in -o and the exit code stays what the findings say."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def _check_slice(
    policy: Policy, hosts: list[HostCapabilities], host_mode: str, part: Sequence[Input]
) -> tuple[list[_Record], Optional[str]]:
    """A worker's slice (parallel.py): module-level, so that it and its arguments pickle."""
    import io  # noqa: PLC0415

    from .memo import Checker  # noqa: PLC0415

    records: list[_Record] = []
    check = Checker(policy, hosts, host_mode).check_parts
    # A worker never gets standard input (see _validate): an empty one stands in.
    return records, _process(part, io.BytesIO(), check, records.append)


def _load_policy(args: argparse.Namespace, environ: Mapping[str, str], cwd: str) -> Policy:
    from ..engine.policy import PolicyError, load_policy  # noqa: PLC0415

    choice = find_policy(args.policy, environ, cwd)
    if "logging" in sys.modules:
        # Without logging imported nothing can show an INFO message (-v imports it): this one
        # is written on every run, and would import logging only to drop it.
        LOG.info("using %s", choice.describe())
    # The trust check protects what it is for: a policy that picks the binaries probed as root.
    # With --caps nothing is ever executed, so a policy in a CI checkout (often group-writable)
    # is fine.
    require_root_owned = os.geteuid() == 0 and not args.caps
    # The hook's compiled copy, kept in the probe cache's directory: a run on an unchanged
    # policy file (a pre-commit hook, a developer's loop) then needs no YAML.
    cache_dir = None if args.no_cache else (args.cache_dir or paths.default_cache_dir())
    try:
        return load_policy(choice.path, cache_dir, require_root_owned=require_root_owned)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


class _Inputs:
    """The inputs the command line names, in order; with ``lazy``, walked while they are read
    (no list of every file). A path that cannot be used ends them: its error is ``pending``,
    raised once the inputs before it were read, so that an unreadable one is reported first."""

    def __init__(self, args: argparse.Namespace, cwd: str, lazy: bool) -> None:
        self.paths = args.paths
        self.collector = Collector(args.exclude, cwd, ignore_files=not args.no_ignore_file)
        self.selection = self.collector.selection
        self.pending: Optional[FatalError] = None
        self.items: Optional[list[Input]] = None
        if not lazy:
            self.items = list(self)

    def __iter__(self) -> Iterator[Input]:
        if self.items is not None:
            yield from self.items
            return
        try:
            for path in self.paths:
                yield from self.collector.each(path)
        except InputError as exc:
            self.pending = FatalError(str(exc))


def _validate(  # noqa: C901, PLR0912, PLR0915 - the run's steps in the order of its options
    args: argparse.Namespace,
    stdin: IO[bytes],
    environ: Mapping[str, str],
    run: RunInfo,
    sinks: _Sinks,
) -> tuple[Report, RunInfo]:
    """Check the inputs into ``sinks``; the totals (a Report without files or findings) and the
    run's state. Raises FatalError, once every input before the problem was read."""
    from .memo import Checker  # noqa: PLC0415

    policy = _load_policy(args, environ, run.cwd)
    # The engine is given the day (exceptions end on one); the clock is read here, once.
    today = time.strftime("%Y-%m-%d")

    # Snapshots first, so that every domain can be checked as soon as it is parsed (nothing kept,
    # and workers can check too); their errors still come after the inputs' ones, as they always
    # did, because an unreadable input is reported first.
    hosts: Optional[list[HostCapabilities]] = None
    snapshot_error: Optional[FatalError] = None
    if args.caps:
        try:
            hosts = _snapshot_hosts(args.caps)
        except FatalError as exc:
            snapshot_error = exc
    check: Optional[Callable[[dict[str, Any], list[Any]], list[Finding]]] = None
    if hosts is not None:
        check = Checker(policy, hosts, args.host_mode, today).check_parts

    # One path read in one process needs no list of its files (nor can it name a file twice).
    lazy = check is not None and args.jobs == 1 and len(args.paths) == 1
    inputs = _Inputs(args, run.cwd, lazy)
    selection = inputs.selection
    if inputs.items is None:
        stream = True
    else:
        # A file given twice is reported at its first place, with the findings of every copy:
        # those rare runs keep their records until the end. Every other run (and every run
        # without snapshots, whose probing needs every domain first) streams.
        labels = {item.label for item in inputs.items}
        stream = check is not None and len(labels) == len(inputs.items)
        del labels
    held: list[_Record] = []

    def consume(entry: _Record) -> None:
        if entry[0] == _SKIPPED:
            sinks.skipped += 1
        else:
            sinks.add(*entry[1:])

    emit = consume if stream else held.append

    def local(part: Iterable[Input]) -> tuple[list[_Record], Optional[str]]:
        return [], _process(part, stdin, check, emit)

    # Without snapshots, what to probe depends on every domain: those runs stay in one process.
    # So do runs that read standard input: it belongs to this process.
    results: Iterable[tuple[list[_Record], Optional[str]]]
    if inputs.items is None:
        results = [local(inputs)]
    else:
        items = inputs.items
        jobs = 1
        if hosts is not None and all(item.path is not None for item in items):
            jobs = job_count(args.jobs, len(items))
        work = functools.partial(_check_slice, policy, hosts or [], args.host_mode)
        results = in_slices(items, jobs, work, local=local)
    fatal: Optional[str] = None
    for records, problem in results:
        if fatal is None:
            for entry in records:
                emit(entry)
            fatal = problem
    if fatal is not None:
        raise FatalError(fatal)
    if inputs.pending is not None:
        raise inputs.pending
    if snapshot_error is not None:
        raise snapshot_error

    skipped = sinks.skipped
    if not stream:
        if hosts is None:
            # Probing this machine: only these runs need the probe cache and QEMU's modules.
            from ..host.facts import local_capabilities  # noqa: PLC0415
            from ..host.probe_cache import ProbeCache  # noqa: PLC0415

            domains = [r[3] for r in held if r[0] == _CHECKED and r[4]]
            cache = ProbeCache(
                None if args.no_cache else (args.cache_dir or paths.default_cache_dir())
            )
            hosts = [local_capabilities(domains, policy, cache)]
            del domains
            checker = Checker(policy, hosts, args.host_mode, today)
            for position, entry in enumerate(held):
                if entry[0] == _CHECKED and entry[4]:
                    found = checker.check(entry[3])
                    found.sort(key=_finding_order)
                    held[position] = (*entry[:3], found, *entry[4:])
        skipped = _replay(held, sinks)

    assert hosts is not None  # noqa: S101 - from the snapshots, or probed just above
    totals = Report(
        files=(),
        findings=(),
        summary=Summary(
            files=sinks.files,
            domains=sinks.domains,
            nics=sinks.nics,
            errors=sinks.errors,
            warnings=sinks.warnings,
        ),
        hosts=tuple(h.name for h in hosts),
        tool_version=__version__,
    )
    run = replace(
        run,
        skipped=skipped + len(selection.skipped),
        excluded=selection.excluded,
        suppressed=sinks.suppressed,
    )
    return totals, run


def _replay(held: list[_Record], sinks: _Sinks) -> int:
    """Held records into ``sinks`` as the report orders them; the number of files skipped.

    A file given twice is listed twice but reported once, at its first place, with the
    findings of all its copies (sorted together) and the time of its last reading; a label
    skipped once is skipped everywhere.
    """
    skipped = {r[1] for r in held if r[0] == _SKIPPED}
    times: dict[str, float] = {}
    merged: dict[str, list[Finding]] = {}
    for entry in held:
        if entry[0] == _CHECKED and entry[1] not in skipped:
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
        if entry[0] != _CHECKED or label in skipped:
            continue
        first = label not in seen
        seen.add(label)
        sinks.add_file(label, times.get(label, 0.0), first)
        if first:
            found = merged.pop(label)
            found.sort(key=_finding_order)
            sinks.add_findings(found)
    return len(skipped)


def _snapshot_hosts(paths: Sequence[str]) -> list[HostCapabilities]:
    from ..host.snapshot import SnapshotError, load_snapshot  # noqa: PLC0415

    try:
        snapshots = [load_snapshot(path, require_root_owned=False) for path in paths]
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None
    names = [s.host for s in snapshots]
    for snapshot in snapshots:
        _say_ancestry(snapshot.capabilities, snapshot.source)
    return [
        s.capabilities if names.count(s.host) == 1 else _renamed(s.capabilities, s.source)
        for s in snapshots
    ]


def _say_ancestry(caps: HostCapabilities, source: str) -> None:
    """With -v: which emulators' -global reach is judged from the known parents, not the host's
    own QEMU (a snapshot taken before the probe recorded type ancestry)."""
    from ..common import logs  # noqa: PLC0415

    for emulator in sorted(caps.devices):
        if emulator not in caps.ancestry:
            logs.get(__name__).info(
                "%s: %s has no recorded type ancestry: -global is judged with the known parents "
                "of QEMU's virtio-net types (take a new snapshot to use its own)",
                source,
                emulator,
            )


def _renamed(caps: HostCapabilities, source: str) -> HostCapabilities:
    """Two snapshots of hosts with the same name: tell them apart by file name in findings."""
    name = os.path.splitext(os.path.basename(source))[0]
    return replace(caps, name=name)
