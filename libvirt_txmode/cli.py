"""``validate-domain``: domain XML files in, findings out; and what both command lines share.

The host-side ``libvirt-txmode`` command lives in host_commands.py. Exit codes (validate-domain):
0 no error findings, 1 at least one (with --strict: or a warning), 2 the tool could not do its job
(usage, unreadable policy/snapshot/input path, internal error).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Callable, Optional

from . import __version__
from .findings import XML_INVALID, Finding, Level, Report, printable, summarize
from .parallel import PARALLEL_MIN_FILES, in_slices, job_count

if TYPE_CHECKING:
    from .capabilities import HostCapabilities
    from .domain import Domain

EXIT_OK, EXIT_FINDINGS, EXIT_FATAL = 0, 1, 2
LOG = logging.getLogger("libvirt_txmode")


class FatalError(Exception):
    """The user's input or environment keeps us from running: a clean message and exit 2."""


# Shell-completion hints, read by shtab when scripts/gen-docs or `libvirt-txmode completion` build
# the completion scripts: the names of shtab's own file/directory completers (shtab.FILE/.DIR),
# spelled out so that the CLI itself never imports shtab.
FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files"}
DIR_COMPLETION = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/"}


def complete_as(action: argparse.Action, kind: dict[str, str]) -> None:
    action.complete = kind  # type: ignore[attr-defined]


# --- validate-domain -----------------------------------------------------------------------------


def validate_parser() -> argparse.ArgumentParser:
    """The ``validate-domain`` parser (public: scripts/gen-docs builds man page and completion)."""
    from .report import FORMATTERS  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="validate-domain",
        description="Check the <driver txmode> of virtio NICs in libvirt domain XML against a "
        "site policy and what the target hosts' QEMU supports.",
        epilog="Exit status: 0 no errors, 1 errors found (--strict: or warnings), 2 could not run.",
    )
    complete_as(
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="domain XML files, directories (*.xml, recursively) or - for stdin",
        ),
        FILE_COMPLETION,
    )
    complete_as(
        parser.add_argument(
            "-p",
            "--policy",
            help="policy file (default: /etc/libvirt-txmode/policy.yaml, else ./policy.yaml)",
        ),
        FILE_COMPLETION,
    )
    complete_as(
        parser.add_argument(
            "--caps",
            action="append",
            default=[],
            metavar="SNAPSHOT",
            help="capability snapshot of a target host (repeatable); "
            "without it this machine's emulators are probed",
        ),
        FILE_COMPLETION,
    )
    hosts = parser.add_mutually_exclusive_group()
    hosts.add_argument(
        "--all-hosts",
        dest="host_mode",
        action="store_const",
        const="all",
        help="with several --caps: every host must support each NIC "
        "(default: the domain may run and migrate anywhere)",
    )
    hosts.add_argument(
        "--any-host",
        dest="host_mode",
        action="store_const",
        const="any",
        help="with several --caps: one supporting host is enough",
    )
    parser.set_defaults(host_mode="all")
    parser.add_argument(
        "-f",
        "--format",
        default="auto",
        choices=["auto", *sorted(FORMATTERS)],
        help="output format (auto: github under GitHub Actions, else text)",
    )
    complete_as(
        parser.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="write the report in --format to FILE; the terminal gets text",
        ),
        FILE_COMPLETION,
    )
    parser.add_argument(
        "--strict", action="store_true", help="warnings count as failures for the exit code"
    )
    parser.add_argument(
        "--no-color", action="store_true", help="never colour (NO_COLOR is honoured too)"
    )
    complete_as(
        parser.add_argument(
            "--cache-dir",
            help="probe cache directory "
            "(default: /var/cache/libvirt-txmode as root, else ~/.cache/libvirt-txmode)",
        ),
        DIR_COMPLETION,
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="probe emulators afresh, don't read or write the cache",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_job_count,
        default=None,
        metavar="N",
        help="with --caps, parse and check in N processes (default: one per CPU from "
        f"{PARALLEL_MIN_FILES} files on; the report is the same either way)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log probing and cache decisions to stderr"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _job_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number of processes: {text!r}")
    return value


@dataclass(frozen=True)
class _Input:
    label: str
    path: Optional[str]  # None: standard input


def _inputs(paths: Sequence[str]) -> Iterator[_Input]:
    for path in paths:
        if path == "-":
            yield _Input("<stdin>", None)
        elif os.path.isdir(path):
            found: list[str] = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".xml"))
            for file in found:
                yield _Input(file, file)
        elif os.path.exists(path):
            if not os.access(path, os.R_OK):
                raise FatalError(f"cannot read {path}: permission denied")
            yield _Input(path, path)
        else:
            raise FatalError(f"no such file or directory: {path}")


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
    fatal: Optional[str] = None  # the first unreadable input: nothing after it was read


def _process(
    items: Sequence[_Input],
    stdin: IO[bytes],
    check: Optional[Callable[[Domain], list[Finding]]],
) -> _Results:
    """Read, parse and (with ``check``) check ``items`` in order, stopping at an unreadable one."""
    from .domain import (  # noqa: PLC0415
        MAX_XML_BYTES,
        DomainXMLError,
        make_parser,
        parse_domain,
        read_bounded,
        read_file_bounded,
    )

    parser = make_parser()  # one per run of inputs (and process), not one per document
    results = _Results()
    for item in items:
        try:
            if item.path is None:
                data = read_bounded(stdin, MAX_XML_BYTES)
            else:
                data = read_file_bounded(item.path, MAX_XML_BYTES)
            domain = parse_domain(data, item.label, parser=parser)
        except DomainXMLError as exc:
            results.invalid.append(
                Finding(item.label, exc.line, "-", XML_INVALID, Level.ERROR, exc.message)
            )
            continue
        except OSError as exc:
            results.fatal = f"cannot read {item.label}: {exc.strerror}"
            break
        results.domain_count += 1
        results.nic_count += len(domain.nics)
        if check is None:
            results.domains.append(domain)
        else:
            results.checked.extend(check(domain))
    return results


def _default_policy() -> str:
    from .policy import DEFAULT_POLICY_PATH  # noqa: PLC0415

    for candidate in (DEFAULT_POLICY_PATH, "policy.yaml"):
        if os.path.exists(candidate):
            return candidate
    raise FatalError(
        f"no policy given and neither {DEFAULT_POLICY_PATH} nor ./policy.yaml exists (use -p)"
    )


def _use_color(stream: IO[str], args: argparse.Namespace, environ: dict[str, str]) -> bool:
    return not args.no_color and "NO_COLOR" not in environ and stream.isatty()


def validate(
    argv: Sequence[str], stdin: IO[bytes], stdout: IO[str], environ: dict[str, str]
) -> int:
    from .cache import ProbeCache, default_cache_dir  # noqa: PLC0415
    from .check import check_domain  # noqa: PLC0415
    from .local import local_capabilities  # noqa: PLC0415
    from .policy import PolicyError, load_policy  # noqa: PLC0415
    from .report import choose_format, render  # noqa: PLC0415

    args = validate_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="validate-domain: %(message)s")
    try:
        policy = load_policy(args.policy or _default_policy())
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None

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

    items: list[_Input] = []
    pending: Optional[FatalError] = None  # a bad path: raised once the inputs before it were read
    try:
        items.extend(_inputs(args.paths))
    except FatalError as exc:
        pending = exc

    def work(part: Sequence[_Input]) -> _Results:
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

    files = [item.label for item in items]
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
    fmt = choose_format(args.format, environ)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(render(fmt, report, color=False))
        stdout.write(render("text", report, color=_use_color(stdout, args, environ)))
    else:
        color = fmt == "text" and _use_color(stdout, args, environ)
        stdout.write(render(fmt, report, color=color))
    failing = report.summary.errors + (report.summary.warnings if args.strict else 0)
    return EXIT_FINDINGS if failing else EXIT_OK


def _snapshot_hosts(paths: Sequence[str]) -> list[HostCapabilities]:
    from .host import SnapshotError, load_snapshot  # noqa: PLC0415

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


def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    return guard(
        "validate-domain",
        lambda: validate(
            sys.argv[1:] if argv is None else argv, sys.stdin.buffer, sys.stdout, dict(os.environ)
        ),
    )


def guard(prog: str, run: Callable[[], int]) -> int:
    """FatalError -> one clean line and exit 2; anything unexpected -> no traceback unless asked."""
    try:
        return run()
    except FatalError as exc:
        sys.stderr.write(f"{prog}: error: {printable(str(exc))}\n")
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FATAL
    except Exception as exc:
        sys.stderr.write(
            f"{prog}: internal error: {type(exc).__name__}: {printable(str(exc))}\n"
            f"{prog}: please report this; set LIBVIRT_TXMODE_DEBUG=1 for the traceback\n"
        )
        if os.environ.get("LIBVIRT_TXMODE_DEBUG"):
            traceback.print_exc()
        return EXIT_FATAL


if __name__ == "__main__":
    raise SystemExit(validate_main())
