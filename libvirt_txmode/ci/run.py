"""One validate-domain run: which files, which policy, parse, check, report.

cli.py parses the command line and imports this module only then, so that ``--version`` and
``--help`` load no more than argparse. checking.py reads and checks each input, sinks.py hands the
outcomes to the report.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

from .. import __version__
from ..common import logs, paths
from ..common.exits import EXIT_FATAL, EXIT_FINDINGS, EXIT_OK, FatalError
from ..engine.policy import PolicyError, load_policy
from ..engine.wording import Finding, Report, Summary, summarize
from ..host.snapshot import SnapshotError, load_snapshot
from ..report.base import RunInfo
from ..report.registry import FORMATS
from .checking import check_slice, process
from .discovery import find_policy, repository_root
from .inputs import Collector, Input, InputError
from .memo import Checker
from .parallel import in_slices, job_count
from .sinks import (
    CHECKED,
    SKIPPED,
    Record,
    Sinks,
    drain_held,
    emit,
    finding_order,
    make_sinks,
    write_report,
)

# typing.TYPE_CHECKING without importing typing: it weighs on every run's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Optional

    from ..engine.model import HostCapabilities
    from ..engine.policy import Policy
    from ..report.base import RunInfo

LOG = logs.get("libvirt_txmode")


def _ci(environ: Mapping[str, str]) -> bool:
    """CI is set, as every CI service sets it (GitHub, GitLab, Jenkins' plugins: CI=true)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


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
    fmt, sinks = make_sinks(args, stdout, environ, run)
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
                    write_report(args.output, fmt, replace(empty, tool_version=__version__), failed)
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
            pass  # nobody reads stdout any more: see emit
    finally:
        sinks.close()
    return code


def _nothing_checked(args: argparse.Namespace, environ: Mapping[str, str], stderr: IO[str]) -> int:
    """Say that no file was checked; 1 when that fails the run. In CI a run that checked
    nothing proves nothing: a pipeline whose globs or ignore file (added by the change under
    review) leave no file must not pass."""
    in_ci = _ci(environ)
    fails = args.strict or in_ci
    if not args.quiet or fails:
        why = " (CI is set)" if in_ci and not args.strict else ""
        level = "error" if fails else "warning"
        emit(stderr, f"validate-domain: {level}: no domain XML file was checked{why}\n")
    return 1 if fails else 0


def _load_policy(args: argparse.Namespace, environ: Mapping[str, str], cwd: str) -> Policy:
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
    sinks: Sinks,
) -> tuple[Report, RunInfo]:
    """Check the inputs into ``sinks``; the totals (a Report without files or findings) and the
    run's state. Raises FatalError, once every input before the problem was read."""

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
    held: list[Record] = []

    def consume(entry: Record) -> None:
        if entry[0] == SKIPPED:
            sinks.skipped += 1
        else:
            sinks.add(*entry[1:])

    emit = consume if stream else held.append

    def local(part: Iterable[Input]) -> tuple[list[Record], Optional[str]]:
        return [], process(part, stdin, check, emit)

    # Without snapshots, what to probe depends on every domain: those runs stay in one process.
    # So do runs that read standard input: it belongs to this process.
    results: Iterable[tuple[list[Record], Optional[str]]]
    if inputs.items is None:
        results = [local(inputs)]
    else:
        items = inputs.items
        jobs = 1
        if hosts is not None and all(item.path is not None for item in items):
            jobs = job_count(args.jobs, len(items))
        work = functools.partial(check_slice, policy, hosts or [], args.host_mode)
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
            from ..host.facts import local_capabilities  # noqa: PLC0415 - only runs that probe this machine
            from ..host.probe_cache import ProbeCache  # noqa: PLC0415

            domains = [r[3] for r in held if r[0] == CHECKED and r[4]]
            cache = ProbeCache(
                None if args.no_cache else (args.cache_dir or paths.default_cache_dir())
            )
            hosts = [local_capabilities(domains, policy, cache)]
            del domains
            checker = Checker(policy, hosts, args.host_mode, today)
            for position, entry in enumerate(held):
                if entry[0] == CHECKED and entry[4]:
                    found = checker.check(entry[3])
                    found.sort(key=finding_order)
                    held[position] = (*entry[:3], found, *entry[4:])
        skipped = drain_held(held, sinks)

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


def _snapshot_hosts(paths: Sequence[str]) -> list[HostCapabilities]:
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
    for emulator in sorted(caps.devices):
        if emulator not in caps.ancestry:
            LOG.info(
                "%s: %s has no recorded type ancestry: -global is judged with the known parents "
                "of QEMU's virtio-net types (take a new snapshot to use its own)",
                source,
                emulator,
            )


def _renamed(caps: HostCapabilities, source: str) -> HostCapabilities:
    """Two snapshots of hosts with the same name: tell them apart by file name in findings."""
    name = os.path.splitext(os.path.basename(source))[0]
    return replace(caps, name=name)
