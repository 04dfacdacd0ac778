"""Command line: ``validate-domain`` for CI and ``libvirt-txmode`` for hosts.

Exit codes (validate-domain): 0 no error findings, 1 at least one (with --strict: or a warning),
2 the tool could not do its job (usage, unreadable policy/snapshot/input path, internal error).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Callable, Optional

from . import __version__
from .findings import XML_INVALID, Finding, Level, Report, printable, summarize

if TYPE_CHECKING:
    from .capabilities import HostCapabilities
    from .domain import Domain
    from .install import Layout
    from .policy import Policy

EXIT_OK, EXIT_FINDINGS, EXIT_FATAL = 0, 1, 2
# From this many input files on, validate-domain --caps uses one process per CPU by default.
PARALLEL_MIN_FILES = 200
LOG = logging.getLogger("libvirt_txmode")


class FatalError(Exception):
    """The user's input or environment keeps us from running: a clean message and exit 2."""


# Shell-completion hints, read by shtab when scripts/gen-docs or `libvirt-txmode completion` build
# the completion scripts: the names of shtab's own file/directory completers (shtab.FILE/.DIR),
# spelled out so that the CLI itself never imports shtab.
_FILES = {"bash": "_shtab_compgen_files", "zsh": "_files"}
_DIRS = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/"}


def _complete(action: argparse.Action, kind: dict[str, str]) -> None:
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
    _complete(
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="domain XML files, directories (*.xml, recursively) or - for stdin",
        ),
        _FILES,
    )
    _complete(
        parser.add_argument(
            "-p",
            "--policy",
            help="policy file (default: /etc/libvirt-txmode/policy.yaml, else ./policy.yaml)",
        ),
        _FILES,
    )
    _complete(
        parser.add_argument(
            "--caps",
            action="append",
            default=[],
            metavar="SNAPSHOT",
            help="capability snapshot of a target host (repeatable); "
            "without it this machine's emulators are probed",
        ),
        _FILES,
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
    _complete(
        parser.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="write the report in --format to FILE; the terminal gets text",
        ),
        _FILES,
    )
    parser.add_argument(
        "--strict", action="store_true", help="warnings count as failures for the exit code"
    )
    parser.add_argument(
        "--no-color", action="store_true", help="never colour (NO_COLOR is honoured too)"
    )
    _complete(
        parser.add_argument(
            "--cache-dir",
            help="probe cache directory "
            "(default: /var/cache/libvirt-txmode as root, else ~/.cache/libvirt-txmode)",
        ),
        _DIRS,
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


def _jobs(requested: Optional[int], count: int) -> int:
    if requested is not None:
        return max(1, min(requested, count))
    if count < PARALLEL_MIN_FILES:
        return 1  # forking costs more than it saves on a few files
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, count // (PARALLEL_MIN_FILES // 2)))


def _in_parallel(
    items: Sequence[_Input], jobs: int, work: Callable[[Sequence[_Input]], _Results]
) -> list[_Results]:
    """``work`` on ``jobs`` consecutive slices of ``items``, the first in this process and the
    others in forked children; the results come back in slice order.

    fork, not multiprocessing: the children inherit the policy, the capabilities and ``work``
    itself, so only their results are pickled, and nothing else needs importing. A child never
    returns into the caller's code: it writes its pickled result (or its error) to a pipe and
    leaves with os._exit, which flushes none of the parent's buffered output.
    """
    import pickle  # noqa: PLC0415

    size = -(-len(items) // jobs)
    slices = [items[i : i + size] for i in range(0, len(items), size)]
    children: list[tuple[int, int]] = []
    try:
        for part in slices[1:]:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; its results are what the tests compare
                os.close(read_end)
                for _, sibling in children:  # earlier workers' pipes: only the parent reads them
                    os.close(sibling)
                try:
                    try:
                        payload = pickle.dumps((True, work(part)), pickle.HIGHEST_PROTOCOL)
                    except BaseException as exc:  # reported by the parent instead
                        payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
                    with os.fdopen(write_end, "wb") as pipe:
                        pipe.write(payload)
                finally:
                    os._exit(0)
            os.close(write_end)
            children.append((pid, read_end))
        results = [work(slices[0])]
        for _, read_end in children:
            with os.fdopen(read_end, "rb", closefd=False) as pipe:
                payload = pipe.read()
            if not payload:
                raise RuntimeError("worker process exited without a result")
            # Our own child's output, through a pipe nobody else holds.
            ok, value = pickle.loads(payload)  # noqa: S301
            if not ok:
                raise RuntimeError(f"worker process failed: {value}")
            results.append(value)
        return results
    finally:
        # On every path (also an exception above): no open pipe, no zombie. All read ends are
        # closed before the first wait, so a child still writing gets EPIPE and exits.
        for _, read_end in children:
            os.close(read_end)
        for pid, _ in children:
            os.waitpid(pid, 0)


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
    jobs = 1 if check is None else _jobs(args.jobs, len(items))
    parts = _in_parallel(items, jobs, work) if jobs > 1 else [work(items)]
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
    return _guard(
        "validate-domain",
        lambda: validate(
            sys.argv[1:] if argv is None else argv, sys.stdin.buffer, sys.stdout, dict(os.environ)
        ),
    )


def _guard(prog: str, run: Callable[[], int]) -> int:
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


# --- libvirt-txmode ------------------------------------------------------------------------------


def main_parser() -> argparse.ArgumentParser:
    """The ``libvirt-txmode`` parser (public: scripts/gen-docs builds man page and completion)."""
    from .install import (  # noqa: PLC0415
        DEFAULT_CACHE_DIR,
        DEFAULT_CONFIG_DIR,
        DEFAULT_HOOKS_DIR,
        DEFAULT_STATE_DIR,
    )

    parser = argparse.ArgumentParser(
        prog="libvirt-txmode", description="Host-side tools of libvirt-txmode."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    snap = sub.add_parser(
        "snapshot", help="record this host's txmode capabilities (libvirt APIs + probes)"
    )
    snap.add_argument(
        "-c",
        "--connect",
        default="qemu:///system",
        metavar="URI",
        help="libvirt URI (default: %(default)s)",
    )
    _complete(
        snap.add_argument(
            "-o",
            "--output",
            default=None,
            metavar="FILE",
            help="where to write it, - for stdout (default: /var/lib/libvirt-txmode/snapshot.json)",
        ),
        _FILES,
    )
    _complete(
        snap.add_argument(
            "-p",
            "--policy",
            default=None,
            help="policy whose 'emulators' may be probed "
            "(default: /etc/libvirt-txmode/policy.yaml, else built-in)",
        ),
        _FILES,
    )

    for name, helptext in (
        ("install-hook", "install the qemu hook, default policy and a snapshot"),
        ("uninstall-hook", "remove exactly what install-hook added"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        _complete(
            cmd.add_argument(
                "--hooks-dir",
                default=DEFAULT_HOOKS_DIR,
                help="libvirt's hook directory (default: %(default)s)",
            ),
            _DIRS,
        )
        _complete(
            cmd.add_argument(
                "--config-dir",
                default=DEFAULT_CONFIG_DIR,
                help="where policy.yaml lives (default: %(default)s)",
            ),
            _DIRS,
        )
        _complete(
            cmd.add_argument(
                "--state-dir",
                default=DEFAULT_STATE_DIR,
                help="snapshot and install manifest (default: %(default)s)",
            ),
            _DIRS,
        )
        _complete(
            cmd.add_argument(
                "--cache-dir",
                default=DEFAULT_CACHE_DIR,
                help="the hook's probe cache (default: %(default)s)",
            ),
            _DIRS,
        )
        cmd.add_argument(
            "--no-reload",
            action="store_true",
            help="don't make the running daemon re-read its hooks",
        )
        if name == "install-hook":
            cmd.add_argument(
                "--no-snapshot", action="store_true", help="don't take a capability snapshot now"
            )
            cmd.add_argument("-c", "--connect", default="qemu:///system", metavar="URI")

    probe = sub.add_parser(
        "probe", help="ask an emulator directly whether its virtio-net devices have 'tx'"
    )
    _complete(probe.add_argument("emulator", help="path of the QEMU binary"), _FILES)
    probe.add_argument(
        "-d",
        "--device",
        action="append",
        help="device (repeatable; default: every virtio-net transport)",
    )
    probe.add_argument("-m", "--method", default="auto", choices=["auto", "help", "qmp"])
    _complete(
        probe.add_argument(
            "-p",
            "--policy",
            default=None,
            help="policy whose 'emulators' list must trust the binary",
        ),
        _FILES,
    )
    probe.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=None,
        help="seconds (default: the policy's probe_timeout)",
    )

    explain = sub.add_parser("explain", help="what a finding code means and how to fix it")
    explain.add_argument(
        "code", nargs="?", help="finding code, e.g. txmode-unsupported (omit to list them)"
    )

    completion = sub.add_parser("completion", help="print a shell completion script (needs shtab)")
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    completion.add_argument(
        "program",
        nargs="?",
        default="libvirt-txmode",
        choices=sorted(PARSERS),
        help="the command to complete (default: %(default)s)",
    )
    return parser


def _host_policy(path: Optional[str]) -> Policy:
    from .policy import DEFAULT_POLICY_PATH, PolicyError, load_policy  # noqa: PLC0415

    if path is None and not os.path.exists(DEFAULT_POLICY_PATH):
        from .policy import Policy as BuiltinPolicy  # noqa: PLC0415

        return BuiltinPolicy()
    try:
        return load_policy(path or DEFAULT_POLICY_PATH)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


def _cmd_snapshot(args: argparse.Namespace, out: IO[str]) -> int:
    from .cache import write_atomic  # noqa: PLC0415
    from .host import DEFAULT_SNAPSHOT_PATH, SnapshotError, open_libvirt, take_snapshot  # noqa: PLC0415

    policy = _host_policy(args.policy)
    try:
        conn = open_libvirt(args.connect)
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None
    try:
        document = take_snapshot(conn, policy, uri=args.connect)
    finally:
        conn.close()
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    target = args.output or DEFAULT_SNAPSHOT_PATH
    if target == "-":
        out.write(text)
        return EXIT_OK
    os.makedirs(os.path.dirname(os.path.abspath(target)), mode=0o755, exist_ok=True)
    write_atomic(target, text.encode(), mode=0o644)
    failed = [p for p, e in document["emulators"].items() if e["error"]]
    out.write(
        f"wrote {target}: {len(document['emulators'])} emulators, "
        f"{len(failed)} not probed{': ' + ', '.join(failed) if failed else ''}\n"
    )
    return EXIT_OK


def _layout(args: argparse.Namespace) -> Layout:
    from .install import Layout  # noqa: PLC0415

    # Absolute: the paths are written into the hook, which libvirt runs from its own directory.
    dirs = (args.hooks_dir, args.config_dir, args.state_dir, args.cache_dir)
    return Layout(*(os.path.abspath(d) for d in dirs))


def _cmd_install(args: argparse.Namespace, out: IO[str]) -> int:
    from .install import InstallError, install, reload_daemon  # noqa: PLC0415

    layout = _layout(args)
    try:
        outcome = install(layout)
    except (InstallError, OSError) as exc:
        raise FatalError(f"install failed: {exc}") from None
    for line in outcome.messages:
        out.write(f"{line}\n")
    if not args.no_snapshot:
        snap_args = argparse.Namespace(
            connect=args.connect, output=layout.snapshot, policy=layout.policy
        )
        try:
            _cmd_snapshot(snap_args, out)
        except FatalError as exc:
            out.write(f"no snapshot taken ({exc}); the hook will probe emulators directly\n")
    if not args.no_reload:
        out.write(reload_daemon() + "\n")
    return EXIT_OK


def _cmd_uninstall(args: argparse.Namespace, out: IO[str]) -> int:
    from .install import reload_daemon, uninstall  # noqa: PLC0415

    outcome = uninstall(_layout(args))
    for line in outcome.messages:
        out.write(f"{line}\n")
    if not args.no_reload:
        out.write(reload_daemon() + "\n")
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace, out: IO[str]) -> int:
    from .host import VIRTIO_NET_DEVICES  # noqa: PLC0415
    from .qemu import ProbeError, probe, trust_problem  # noqa: PLC0415

    policy = _host_policy(args.policy)
    problem = trust_problem(args.emulator, policy.emulators)
    if problem is not None:
        raise FatalError(problem)
    devices = args.device or list(VIRTIO_NET_DEVICES)
    try:
        results = probe(
            args.emulator, devices, timeout=args.timeout or policy.probe_timeout, method=args.method
        )
    except ProbeError as exc:
        raise FatalError(str(exc)) from None
    for device in devices:
        support = results[device]
        out.write(f"{device}: {support.state.value} ({support.detail}; method {support.method})\n")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace, out: IO[str]) -> int:
    from .explain import EXPLANATIONS, explain  # noqa: PLC0415

    if args.code is None:
        for code, item in EXPLANATIONS.items():
            out.write(f"{code}: {item.title}\n")
        return EXIT_OK
    try:
        out.write(explain(args.code).rstrip("\n") + "\n")
    except KeyError:
        raise FatalError(
            f"unknown finding code {args.code!r} (known: {', '.join(EXPLANATIONS)})"
        ) from None
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace, out: IO[str]) -> int:
    from .manpage import completion_script  # noqa: PLC0415

    try:
        out.write(completion_script(args.program, args.shell))
    except ImportError:
        raise FatalError("shell completion needs shtab: pip install shtab") from None
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
    "snapshot": _cmd_snapshot,
    "install-hook": _cmd_install,
    "uninstall-hook": _cmd_uninstall,
    "probe": _cmd_probe,
    "explain": _cmd_explain,
    "completion": _cmd_completion,
}
COMPLETION_SHELLS = ("bash", "zsh")
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "validate-domain": validate_parser,
    "libvirt-txmode": main_parser,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = main_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="libvirt-txmode: %(message)s",
    )
    return _guard("libvirt-txmode", lambda: COMMANDS[args.command](args, sys.stdout))


if __name__ == "__main__":
    raise SystemExit(main())
