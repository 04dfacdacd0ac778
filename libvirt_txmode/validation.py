"""One validate-domain run: which files, which policy, parse, check, report.

cli.py parses the command line and imports this module only then, so that ``--version`` and
``--help`` start no faster than argparse allows (issue: start-up cost).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Union

from . import __version__
from .discovery import find_policy, repository_root
from .exits import EXIT_FATAL, EXIT_FINDINGS, EXIT_OK, FatalError
from .findings import XML_INVALID, Finding, Level, Report, summarize
from .inputs import Collector, Input, InputError, Selection, read_input
from .parallel import in_slices, job_count

if TYPE_CHECKING:
    from .domain import Domain
    from .model import HostCapabilities
    from .policy import Policy
    from .report import RunInfo

LOG = logging.getLogger("libvirt_txmode")


@dataclass
class _Results:
    """What reading, parsing and checking a run of consecutive inputs gave.

    Parse errors and check findings are kept apart, so that the parts of a parallel run, joined in
    input order, are exactly the lists one process builds: the report cannot tell them apart.
    """

    invalid: list[Finding] = field(default_factory=list)  # xml-invalid, in input order
    checked: list[Finding] = field(default_factory=list)  # check findings, in domain order
    domains: list[Domain] = field(default_factory=list)  # kept only when there was no check yet
    domain_count: int = 0
    nic_count: int = 0
    skipped: list[str] = field(default_factory=list)  # not a <domain>, or no longer regular
    times: list[tuple[str, float]] = field(default_factory=list)  # seconds per input read
    fatal: Optional[str] = None  # the first unreadable input: nothing after it was read


def _process(  # noqa: PLR0912 - the order of validate-domain's steps is the order of its options
    items: Sequence[Input],
    stdin: IO[bytes],
    check: Optional[Callable[[Domain], list[Finding]]],
) -> _Results:
    """Read, parse and (with ``check``) check ``items`` in order, stopping at an unreadable one."""
    from .domain import MAX_XML_BYTES, DomainXMLError, make_parser, read_bounded  # noqa: PLC0415

    parser = make_parser()  # one per run of inputs (and process), not one per document
    results = _Results()
    clock = time.perf_counter
    for item in items:
        began = clock()
        try:
            if item.path is None:
                data: Optional[bytes] = read_bounded(stdin, MAX_XML_BYTES)
            else:
                data = read_input(item, MAX_XML_BYTES)
        except DomainXMLError as exc:
            results.invalid.append(_invalid(item.label, exc))
            continue
        except OSError as exc:
            if item.regular_only and exc.errno == errno.ELOOP:
                data = None  # replaced by a symlink since the walk: never followed
            else:
                results.fatal = f"cannot read {item.label}: {exc.strerror}"
                break
        if data is None:
            results.skipped.append(item.label)
            continue
        outcome = _parse(data, item.label, parser)
        if isinstance(outcome, Finding):
            results.invalid.append(outcome)
        elif outcome is None:
            results.skipped.append(item.label)
        else:
            results.domain_count += 1
            results.nic_count += len(outcome.nics)
            if check is None:
                results.domains.append(outcome)
            else:
                results.checked.extend(check(outcome))
        results.times.append((item.label, clock() - began))
    return results


def _parse(data: bytes, label: str, parser: Any) -> Union[Domain, Finding, None]:
    """The domain, an xml-invalid finding, or None for XML whose root is not <domain> (a libvirt
    <network> or <pool> beside the domains: skipped, not an error)."""
    from .domain import DomainXMLError, NotADomainError, parse_domain  # noqa: PLC0415

    try:
        return parse_domain(data, label, parser=parser)
    except NotADomainError as exc:
        LOG.info("skipped %s: %s", label, exc.message)
        return None
    except DomainXMLError as exc:
        return _invalid(label, exc)


def _invalid(label: str, exc: Exception) -> Finding:
    line = getattr(exc, "line", 1)
    column = getattr(exc, "column", None)  # libxml2's, when it gives one
    message = getattr(exc, "message", str(exc))
    return Finding(label, line, "-", XML_INVALID, Level.ERROR, message, column=column)


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
    from .report import RunInfo, choose_format  # noqa: PLC0415

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="validate-domain: %(message)s")
    cwd = os.getcwd()
    run = RunInfo(arguments=tuple(argv), cwd=cwd, base=repository_root(cwd), started=time.time())
    fmt = choose_format(args.format, environ)
    try:
        report, run = _validate(args, stdin, environ, run)
    except FatalError as exc:
        if args.output:
            # A report even when the run failed: CI uploads it with `if: always()`, and the
            # reason is in it (SARIF invocations, a JUnit error, a JSON "error").
            failed = dataclasses.replace(
                run, fatal=str(exc), exit_code=EXIT_FATAL, ended=time.time()
            )
            empty = Report(files=(), findings=(), summary=summarize(0, 0, 0, []))
            _write_report(
                args.output, fmt, dataclasses.replace(empty, tool_version=__version__), failed
            )
        raise
    checked = report.summary.files
    failing = report.summary.errors + (report.summary.warnings if args.strict else 0)
    if checked == 0:
        failing += 1 if args.strict else 0
        if not args.quiet:
            _emit(
                stderr or sys.stderr, "validate-domain: warning: no domain XML file was checked\n"
            )
    code = EXIT_FINDINGS if failing else EXIT_OK
    run = dataclasses.replace(run, exit_code=code, ended=time.time(), quiet=args.quiet)
    if args.output:
        _write_report(args.output, fmt, report, run)
        fmt = "text"
    from .report import write  # noqa: PLC0415

    color = fmt == "text" and _use_color(stdout, args, environ)
    try:
        write(stdout, fmt, report, color=color, run=run)
        stdout.flush()
    except (OSError, ValueError):
        pass  # nobody reads stdout any more: see _emit
    return code


def _write_report(path: str, fmt: str, report: Report, run: RunInfo) -> None:
    from .report import write  # noqa: PLC0415

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


def _load_policy(args: argparse.Namespace, environ: Mapping[str, str], cwd: str) -> Policy:
    from .policy import PolicyError, load_policy  # noqa: PLC0415

    choice = find_policy(args.policy, environ, cwd)
    LOG.info("using %s", choice.describe())
    # The trust check protects what it is for: a policy that picks the binaries probed as root.
    # With --caps nothing is ever executed, so a policy in a CI checkout (often group-writable)
    # is fine.
    require_root_owned = os.geteuid() == 0 and not args.caps
    try:
        return load_policy(choice.path, require_root_owned=require_root_owned)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


def _select(args: argparse.Namespace, cwd: str) -> tuple[Selection, Optional[FatalError]]:
    collector = Collector(args.exclude, cwd)
    for path in args.paths:
        try:
            collector.add(path)
        except InputError as exc:
            # Raised once the inputs before it were read: an unreadable one is reported first.
            return collector.selection, FatalError(str(exc))
    return collector.selection, None


def _validate(  # noqa: C901 - the per-file pipeline (read, skip, parse, check, count) in one reading
    args: argparse.Namespace, stdin: IO[bytes], environ: Mapping[str, str], run: RunInfo
) -> tuple[Report, RunInfo]:
    from .cache import ProbeCache, default_cache_dir  # noqa: PLC0415
    from .check import check_domain  # noqa: PLC0415
    from .local import local_capabilities  # noqa: PLC0415

    policy = _load_policy(args, environ, run.cwd)

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
    check: Optional[Callable[[Domain], list[Finding]]] = None
    if hosts is not None:
        check = functools.partial(
            check_domain, policy=policy, hosts=hosts, host_mode=args.host_mode
        )

    selection, pending = _select(args, run.cwd)
    items = selection.inputs

    def work(part: Sequence[Input]) -> _Results:
        return _process(part, stdin, check)

    # Without snapshots, what to probe depends on every domain: those runs stay in one process.
    jobs = 1 if check is None else job_count(args.jobs, len(items))
    parts = in_slices(items, jobs, work) if jobs > 1 else [work(items)]
    for part in parts:
        if part.fatal is not None:
            raise FatalError(part.fatal)
    if pending is not None:
        raise pending
    if snapshot_error is not None:
        raise snapshot_error

    found = [f for part in parts for f in part.invalid]
    if hosts is None:
        domains = [d for part in parts for d in part.domains]
        cache = ProbeCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
        hosts = [local_capabilities(domains, policy, cache)]
        for domain in domains:
            found.extend(check_domain(domain, policy, hosts, args.host_mode))
    else:
        found.extend(f for part in parts for f in part.checked)

    skipped = {label for part in parts for label in part.skipped}
    files = [item.label for item in items if item.label not in skipped]
    # The file's first position in the input order (a file given twice sorts as its first copy);
    # a dict built once, not files.index per finding, which made the sort quadratic.
    order: dict[str, int] = {}
    for position, name in enumerate(files):
        order.setdefault(name, position)
    found.sort(key=lambda f: (order.get(f.file, 0), f.line, f.code, f.host or ""))
    report = Report(
        files=tuple(files),
        findings=tuple(found),
        summary=summarize(
            len(files),
            sum(part.domain_count for part in parts),
            sum(part.nic_count for part in parts),
            found,
        ),
        hosts=tuple(h.name for h in hosts),
        tool_version=__version__,
    )
    times = {label: seconds for part in parts for label, seconds in part.times}
    run = dataclasses.replace(
        run,
        skipped=len(skipped) + len(selection.skipped),
        excluded=selection.excluded,
        times=times,
    )
    return report, run


def _snapshot_hosts(paths: Sequence[str]) -> list[HostCapabilities]:
    from .snapshot import SnapshotError, load_snapshot  # noqa: PLC0415

    try:
        snapshots = [load_snapshot(path, require_root_owned=False) for path in paths]
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None
    names = [s.host for s in snapshots]
    return [
        s.capabilities if names.count(s.host) == 1 else _renamed(s.capabilities, s.source)
        for s in snapshots
    ]


def _renamed(caps: HostCapabilities, source: str) -> HostCapabilities:
    """Two snapshots of hosts with the same name: tell them apart by file name in findings."""
    import dataclasses  # noqa: PLC0415

    name = os.path.splitext(os.path.basename(source))[0]
    return dataclasses.replace(caps, name=name)
