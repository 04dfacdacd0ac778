"""``libvirt-txmode``: the host-side commands (snapshot, install-hook, uninstall-hook, doctor,
audit, fleet-report, probe, explain, check-policy, policy-schema, completion). validate-domain and
the shared error handling are in cli.py.

Each subcommand is one ``_add_NAME(sub)`` function that builds its parser and binds its handler
(``set_defaults(run=...)``); ``SUBCOMMANDS`` lists them in help order. Adding a command is adding
one such function to that tuple.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, Callable, Optional

from .. import __version__
from ..ci.cli import (
    DIR_COMPLETION,
    EXIT_FINDINGS,
    EXIT_OK,
    FILE_COMPLETION,
    FatalError,
    complete_as,
    guard,
    validate_parser,
)
from ..common import paths
from ..report.registry import FORMAT_NAMES
from .manpage import PROGRAMS, SHELLS, completion_script

if TYPE_CHECKING:
    from ..engine.policy import Policy
    from .layout import Layout

DEFAULT_URI = "qemu:///system"
DEFAULT_HOOKS_DIR = paths.HOOKS_DIR
DEFAULT_CONFIG_DIR = paths.CONFIG_DIR
DEFAULT_STATE_DIR = paths.STATE_DIR
DEFAULT_CACHE_DIR = paths.CACHE_DIR
DEFAULT_SNAPSHOT = paths.SNAPSHOT
Handler = Callable[[argparse.Namespace, IO[str]], int]


# --- shared options ------------------------------------------------------------------------------


def _add_directories(cmd: argparse.ArgumentParser) -> None:
    """The directory options of install-hook, uninstall-hook and doctor (one installation)."""
    for flag, default, helptext in (
        ("--hooks-dir", DEFAULT_HOOKS_DIR, "libvirt's hook directory"),
        ("--config-dir", DEFAULT_CONFIG_DIR, "where policy.yaml lives"),
        ("--state-dir", DEFAULT_STATE_DIR, "snapshot and install manifests"),
        ("--cache-dir", DEFAULT_CACHE_DIR, "the hook's probe and verdict cache"),
    ):
        complete_as(
            cmd.add_argument(flag, default=default, help=f"{helptext} (default: %(default)s)"),
            DIR_COMPLETION,
        )


def _add_connect(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "-c",
        "--connect",
        default=DEFAULT_URI,
        metavar="URI",
        help="libvirt URI (default: %(default)s)",
    )


def _add_policy(cmd: argparse.ArgumentParser, helptext: str) -> None:
    complete_as(cmd.add_argument("-p", "--policy", default=None, help=helptext), FILE_COMPLETION)


def _add_reload(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group()
    group.add_argument(
        "--reload",
        dest="reload",
        action="store_const",
        const=True,
        help="reload the running libvirt daemon (and, on systemd hosts, manage the snapshot "
        "unit) even for a --hooks-dir that is not libvirt's own",
    )
    group.add_argument(
        "--no-reload",
        dest="reload",
        action="store_const",
        const=False,
        help="never touch the running daemon (default for a --hooks-dir other than "
        f"{DEFAULT_HOOKS_DIR})",
    )
    cmd.set_defaults(reload=None)


# --- subcommands ---------------------------------------------------------------------------------


def _add_snapshot(sub: Any) -> None:
    cmd = sub.add_parser(
        "snapshot", help="record this host's txmode capabilities (libvirt APIs + probes)"
    )
    _add_connect(cmd)
    complete_as(
        cmd.add_argument(
            "-o",
            "--output",
            default=None,
            metavar="FILE",
            help=f"where to write it, - for stdout (default: {DEFAULT_SNAPSHOT}); "
            "with --check: the snapshot to check",
        ),
        FILE_COMPLETION,
    )
    _add_policy(
        cmd,
        "policy whose 'emulators' may be probed "
        "(default: /etc/libvirt-txmode/policy.yaml, else built-in)",
    )
    cmd.add_argument(
        "--check",
        action="store_true",
        help="take nothing: say whether the stored snapshot still matches this host's emulators "
        "(exit 1 when stale)",
    )
    cmd.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing unless something is wrong (no progress, no summary)",
    )
    cmd.set_defaults(run=_cmd_snapshot)


def _add_install_hook(sub: Any) -> None:
    cmd = sub.add_parser(
        "install-hook",
        help="install the qemu hook, default policy and a snapshot; the hook is run once on "
        "sample events before it goes live",
    )
    _add_directories(cmd)
    complete_as(
        cmd.add_argument(
            "--python",
            default=None,
            metavar="PATH",
            help="the hook's interpreter (default: the one running this command); it must import "
            "libvirt_txmode with -I and be trusted (root-owned, not group/other-writable)",
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "--no-snapshot", action="store_true", help="don't take a capability snapshot now"
    )
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be written, change nothing"
    )
    _add_reload(cmd)
    _add_connect(cmd)
    cmd.set_defaults(run=_cmd_install)


def _add_uninstall_hook(sub: Any) -> None:
    cmd = sub.add_parser(
        "uninstall-hook", help="remove exactly what install-hook wrote for this --hooks-dir"
    )
    _add_directories(cmd)
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, change nothing"
    )
    _add_reload(cmd)
    cmd.set_defaults(run=_cmd_uninstall)


def _add_doctor(sub: Any) -> None:
    cmd = sub.add_parser(
        "doctor",
        help="check the installed hook, interpreter, policy, snapshot, cache, logging and that "
        "the daemon runs the hook (one line per check; exit 0 OK, 1 WARNING, 2 CRITICAL)",
    )
    _add_directories(cmd)
    cmd.add_argument("-f", "--format", default="text", choices=["text", "json"])
    cmd.add_argument(
        "--canary",
        action="store_true",
        help="prove the daemon runs the hook: start a transient, paused, diskless domain the "
        "hook refuses whatever the policy says (started: the gate is off; destroyed at once)",
    )
    _add_connect(cmd)
    cmd.set_defaults(run=_cmd_doctor)


def _add_audit(sub: Any) -> None:
    cmd = sub.add_parser(
        "audit",
        help="check every defined domain (inactive XML) and every running one (live XML) "
        "against the policy, as validate-domain does",
    )
    _add_connect(cmd)
    _add_policy(cmd, "policy file (default: /etc/libvirt-txmode/policy.yaml)")
    complete_as(
        cmd.add_argument(
            "--snapshot",
            default=None,
            metavar="FILE",
            help=f"capability snapshot to believe for unchanged emulators (default: "
            f"{DEFAULT_SNAPSHOT} when present); other emulators are probed, as the hook does",
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "-d",
        "--domain",
        action="append",
        default=[],
        metavar="NAME",
        help="only this domain (repeatable; default: all)",
    )
    cmd.add_argument(
        "-f",
        "--format",
        default="auto",
        choices=["auto", *FORMAT_NAMES],
        help="output format (auto: github under GitHub Actions, else text)",
    )
    complete_as(
        cmd.add_argument(
            "-o", "--output", metavar="FILE", help="write the report in --format to FILE"
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "--strict", action="store_true", help="warnings count as failures for the exit code"
    )
    cmd.add_argument("--no-color", action="store_true", help="never colour (NO_COLOR too)")
    complete_as(
        cmd.add_argument(
            "--cache-dir",
            help="probe cache directory (default: /var/cache/libvirt-txmode as root)",
        ),
        DIR_COMPLETION,
    )
    cmd.add_argument("--no-cache", action="store_true", help="don't read or write the cache")
    cmd.set_defaults(run=_cmd_audit)


def _add_metrics(sub: Any) -> None:
    cmd = sub.add_parser(
        "metrics",
        help="write this host's gate state as Prometheus text (node_exporter textfile format)",
    )
    _add_directories(cmd)
    _add_connect(cmd)
    complete_as(
        cmd.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="write to FILE in one rename (e.g. "
            "/var/lib/prometheus/node-exporter/libvirt-txmode.prom) instead of stdout",
        ),
        FILE_COMPLETION,
    )
    cmd.set_defaults(run=_cmd_metrics)


def _add_fleet_report(sub: Any) -> None:
    cmd = sub.add_parser(
        "fleet-report",
        help="one fleet report (fleet.json, fleet-junit.xml, fleet.html) from what "
        "fleet-check.yml collected",
        description="Write fleet.json, fleet-junit.xml and fleet.html into --output-dir from the "
        "per-host results fleet-check.yml collected and validate-domain's JSON over the "
        "repository's domains. Exit 1 when a repository domain has an error finding.",
    )
    complete_as(
        cmd.add_argument(
            "--hosts",
            required=True,
            metavar="FILE",
            help='the per-host results as JSON ({"hosts": [...]}); - reads stdin',
        ),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "--domains-report",
            metavar="FILE",
            help="validate-domain -f json --all-hosts over the repository's domains",
        ),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "--snapshots-dir", metavar="DIR", help="the fetched snapshots, one HOST.json per host"
        ),
        DIR_COMPLETION,
    )
    complete_as(
        cmd.add_argument("--policy", metavar="FILE", help="the policy checked against (hashed)"),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "-o", "--output-dir", required=True, metavar="DIR", help="where the reports go"
        ),
        DIR_COMPLETION,
    )
    cmd.set_defaults(run=_cmd_fleet_report)


def _add_probe(sub: Any) -> None:
    cmd = sub.add_parser(
        "probe", help="ask an emulator directly whether its virtio-net devices have 'tx'"
    )
    complete_as(cmd.add_argument("emulator", help="path of the QEMU binary"), FILE_COMPLETION)
    cmd.add_argument(
        "-d",
        "--device",
        action="append",
        help="device (repeatable; default: every virtio-net transport)",
    )
    cmd.add_argument("-m", "--method", default="auto", choices=["auto", "help", "qmp"])
    _add_policy(cmd, "policy whose 'emulators' list must trust the binary")
    cmd.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=None,
        help="seconds (default: the policy's probe_timeout)",
    )
    cmd.set_defaults(run=_cmd_probe)


def _add_explain(sub: Any) -> None:
    from ..engine.policy_schema import OpenChoices  # noqa: PLC0415
    from ..report.explain import EXPLANATIONS  # noqa: PLC0415

    cmd = sub.add_parser("explain", help="what a finding code means and how to fix it")
    cmd.add_argument(
        "code",
        nargs="?",
        metavar="CODE",
        # Completion offers the codes; an unknown one still gets _cmd_explain's own message.
        choices=OpenChoices(EXPLANATIONS),
        help="finding code, e.g. txmode-unsupported (omit to list them)",
    )
    cmd.set_defaults(run=_cmd_explain)


def _add_check_policy(sub: Any) -> None:
    cmd = sub.add_parser(
        "check-policy",
        help="validate policy files: every problem as FILE:LINE:COL: KEY: message (exit 0 "
        "valid, 1 valid but an exception's reason is still TODO, 2 invalid); exceptions past "
        "their last day are noted",
    )
    complete_as(cmd.add_argument("files", nargs="+", metavar="FILE"), FILE_COMPLETION)
    cmd.add_argument(
        "-f",
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one problem a line on stderr (yamllint's form); json: one document on "
        "stdout, for editors",
    )
    cmd.set_defaults(run=_cmd_check_policy)


def _add_policy_test(sub: Any) -> None:
    cmd = sub.add_parser(
        "policy-test",
        help="check a policy against sample domains whose first line states the expected "
        "findings (<!-- expect: CODE@LINE ... -->); exit 0 all match, 1 a difference, 2 bad input",
    )
    complete_as(
        cmd.add_argument("directory", metavar="DIR", help="the samples: every *.xml below it"),
        DIR_COMPLETION,
    )
    _add_policy(
        cmd,
        "the policy to test (default: validate-domain's lookup: $LIBVIRT_TXMODE_POLICY, the "
        "project file, /etc/libvirt-txmode/policy.yaml, the bundled one)",
    )
    complete_as(
        cmd.add_argument(
            "--caps",
            action="append",
            default=[],
            metavar="SNAPSHOT",
            help="capability snapshot of a target host (repeatable); without it the samples "
            "are judged on the policy alone (no support findings)",
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "--today",
        metavar="YYYY-MM-DD",
        help="the day policy exceptions are judged on (default: today), to test an expiry",
    )
    cmd.set_defaults(run=_cmd_policy_test)


def _add_policy_schema(sub: Any) -> None:
    cmd = sub.add_parser(
        "policy-schema", help="print the policy's JSON Schema (for editors: yaml-language-server)"
    )
    cmd.set_defaults(run=_cmd_policy_schema)


def _add_completion(sub: Any) -> None:
    cmd = sub.add_parser("completion", help="print a shell completion script")
    cmd.add_argument("shell", choices=SHELLS)
    cmd.add_argument(
        "program",
        nargs="?",
        default="libvirt-txmode",
        choices=sorted(PROGRAMS),
        help="the command to complete (default: %(default)s)",
    )
    cmd.set_defaults(run=_cmd_completion)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_snapshot,
    _add_install_hook,
    _add_uninstall_hook,
    _add_doctor,
    _add_audit,
    _add_metrics,
    _add_fleet_report,
    _add_probe,
    _add_explain,
    _add_check_policy,
    _add_policy_test,
    _add_policy_schema,
    _add_completion,
)


def main_parser() -> argparse.ArgumentParser:
    """The ``libvirt-txmode`` parser (public: scripts/gen-docs builds man page and completion)."""
    parser = argparse.ArgumentParser(
        prog="libvirt-txmode",
        description="Host-side tools of libvirt-txmode.",
        epilog="Exit status: 0 success, 1 audit/snapshot --check found a problem, "
        "2 could not run. doctor follows the monitoring-plugin convention: 0 OK, 1 WARNING "
        "(a check warns), 2 CRITICAL (a check fails: the gate is missing, broken or off).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# The parsers man pages and completions are generated from (scripts/gen-docs, `completion`).
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "validate-domain": validate_parser,
    "libvirt-txmode": main_parser,
}


# --- handlers ------------------------------------------------------------------------------------


def _host_policy(path: Optional[str]) -> Policy:
    from ..engine.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy  # noqa: PLC0415

    if path is None and not os.path.exists(DEFAULT_POLICY_PATH):
        from ..engine.policy import Policy as BuiltinPolicy  # noqa: PLC0415

        return BuiltinPolicy()
    try:
        return load_policy(path or DEFAULT_POLICY_PATH)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


def _progress(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            sys.stderr.write(f"libvirt-txmode: {message}\n")
            sys.stderr.flush()

    return say


def _cmd_snapshot(args: argparse.Namespace, out: IO[str]) -> int:
    if args.check:
        return _check_snapshot(args, out)
    progress = _progress(args.quiet)
    target = args.output or DEFAULT_SNAPSHOT
    text, summary = _take_snapshot(args.connect, _host_policy(args.policy), target, progress)
    if target == "-":
        out.write(text)
    elif not args.quiet or "not probed:" in summary:  # -q: only when an emulator failed
        out.write(summary + "\n")
    return EXIT_OK


def _take_snapshot(
    uri: str, policy: Policy, target: str, progress: Callable[[str], None]
) -> tuple[str, str]:
    """Take a snapshot and write it to ``target`` (unless "-"): (document, one-line summary)."""
    from ..host.libvirt_snapshot import open_libvirt, take_snapshot  # noqa: PLC0415
    from ..host.probe_cache import write_atomic  # noqa: PLC0415
    from ..host.snapshot import SnapshotError  # noqa: PLC0415

    progress(f"asking {uri} for its guests, emulators and domain capabilities")
    try:
        conn = open_libvirt(uri)
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None
    try:
        # Probing dominates a snapshot's time (up to probe_timeout per emulator): it says which.
        document = take_snapshot(conn, policy, uri=uri, progress=progress)
    finally:
        conn.close()
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if target == "-":
        return text, ""
    os.makedirs(os.path.dirname(os.path.abspath(target)), mode=0o755, exist_ok=True)
    write_atomic(target, text.encode(), mode=0o644)
    failed = [p for p, e in document["emulators"].items() if e["error"]]
    return text, (
        f"wrote {target}: {len(document['emulators'])} emulators, "
        f"{len(failed)} not probed{': ' + ', '.join(failed) if failed else ''}"
    )


def _check_snapshot(args: argparse.Namespace, out: IO[str]) -> int:
    from .doctor import snapshot_drift  # noqa: PLC0415

    path = args.output or DEFAULT_SNAPSHOT
    problems, notes = snapshot_drift(path, uri=args.connect)
    if problems is None:
        raise FatalError(notes[0] if notes else f"{path}: unreadable")
    for line in notes:
        out.write(f"{line}\n")
    for line in problems:
        out.write(f"stale: {line}\n")
    if problems:
        out.write(f"{path} is stale: run 'libvirt-txmode snapshot' to take it again\n")
        return EXIT_FINDINGS
    out.write(f"{path} matches this host\n")
    return EXIT_OK


def _layout(args: argparse.Namespace) -> Layout:
    from .layout import Layout  # noqa: PLC0415

    # Absolute: the paths are written into the hook, which libvirt runs from its own directory.
    dirs = (args.hooks_dir, args.config_dir, args.state_dir, args.cache_dir)
    return Layout(*(os.path.abspath(d) for d in dirs))


def _manages_daemon(args: argparse.Namespace, layout: Layout) -> bool:
    """Only libvirt's own hooks directory concerns the running daemon, unless --reload says so."""
    return layout.is_libvirts_own if args.reload is None else bool(args.reload)


def _cmd_install(args: argparse.Namespace, out: IO[str]) -> int:
    from ..engine.policy import PolicyError, load_policy  # noqa: PLC0415
    from .daemon import reload_daemon  # noqa: PLC0415
    from .install import install  # noqa: PLC0415
    from .layout import InstallError  # noqa: PLC0415

    layout = _layout(args)

    def snapshot(path: str) -> str:
        if os.path.isfile(path):
            from .doctor import snapshot_drift  # noqa: PLC0415

            if snapshot_drift(path, uri=args.connect)[0] == []:
                return f"kept snapshot {path}: it matches this host's emulators"
        try:
            policy = load_policy(layout.policy)
        except PolicyError as exc:
            return f"no snapshot taken (bad policy: {exc})"
        try:
            return _take_snapshot(args.connect, policy, path, _progress(False))[1]
        except FatalError as exc:
            return f"no snapshot taken ({exc}); the hook will probe emulators directly"

    try:
        outcome = install(
            layout,
            python=os.path.abspath(args.python) if args.python else None,
            dry_run=args.dry_run,
            # A systemd unit serves libvirt's own daemon: only for its hooks dir or on request.
            manage_daemon=layout.is_libvirts_own or args.reload is True,
            take_snapshot=None if args.no_snapshot else snapshot,
        )
    except (InstallError, OSError) as exc:
        raise FatalError(f"install refused: {exc}") from None
    for line in outcome.messages:
        out.write(f"{line}\n")
    if _manages_daemon(args, layout) and not args.dry_run:
        _make_live(args, layout, outcome.changed, out)
    else:
        _daemon_step(args, layout, out, reload_daemon)
    return EXIT_OK


def _make_live(args: argparse.Namespace, layout: Layout, changed: bool, out: IO[str]) -> None:
    """Have the daemon load the hook (reload only when needed) and prove it with a canary:
    FatalError (exit 2) when the hook is installed but not proven to run."""
    from . import liveness  # noqa: PLC0415
    from .daemon import reload_daemon, running_daemon  # noqa: PLC0415
    from .hook_file import installed_copies  # noqa: PLC0415

    daemon = running_daemon()
    if daemon is None:
        out.write("no libvirt daemon running: it will read the hook when it starts\n")
        return
    copies = installed_copies(layout.hooks_dir)
    if not changed and copies:
        known = liveness.by_time(copies, daemon, layout.state_dir)
        if known.state == liveness.LIVE:
            out.write(f"daemon not reloaded: nothing changed and {known.detail}\n")
            return
    out.write(reload_daemon() + "\n")
    result = liveness.prove_after_reload(args.connect, layout.state_dir)
    if result.state != liveness.LIVE:
        raise FatalError(
            f"the hook is installed but the daemon is not proven to run it: {result.detail}; "
            f"fix: reload or restart {daemon.name} and run 'libvirt-txmode doctor --canary'"
        )
    out.write(f"proven live: {result.detail}\n")


def _daemon_step(
    args: argparse.Namespace, layout: Layout, out: IO[str], reload: Callable[[], str]
) -> None:
    if args.reload is False:
        out.write("daemon not reloaded (--no-reload)\n")
    elif not _manages_daemon(args, layout):
        out.write(
            f"daemon not reloaded: {layout.hooks_dir} is not libvirt's own hooks directory "
            "(--reload to reload it anyway)\n"
        )
    elif args.dry_run:
        out.write("would make the libvirt daemon re-read its hooks\n")
    else:
        out.write(reload() + "\n")


def _cmd_uninstall(args: argparse.Namespace, out: IO[str]) -> int:
    from .daemon import reload_daemon  # noqa: PLC0415
    from .layout import InstallError  # noqa: PLC0415
    from .uninstall import uninstall  # noqa: PLC0415

    layout = _layout(args)
    try:
        outcome = uninstall(layout, dry_run=args.dry_run)
    except InstallError as exc:
        raise FatalError(f"uninstall refused: {exc}") from None
    except OSError as exc:
        raise FatalError(f"uninstall failed: {exc}") from None
    for line in outcome.messages:
        out.write(f"{line}\n")
    if not outcome.nothing:  # no hook of ours was there: the daemon has nothing to forget
        _daemon_step(args, layout, out, reload_daemon)
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace, out: IO[str]) -> int:
    from .doctor import exit_code, render_checks, run_checks  # noqa: PLC0415

    checks = run_checks(_layout(args), canary=args.canary, uri=args.connect)
    out.write(render_checks(checks, args.format))
    return exit_code(checks)


def _cmd_audit(args: argparse.Namespace, out: IO[str]) -> int:
    from .audit import AuditError, audit  # noqa: PLC0415

    try:
        return audit(args, out, dict(os.environ))
    except AuditError as exc:
        raise FatalError(str(exc)) from None


def _cmd_metrics(args: argparse.Namespace, out: IO[str]) -> int:
    from .metrics import collect, render, write  # noqa: PLC0415

    text = render(collect(_layout(args), uri=args.connect))
    try:
        write(text, args.output, out)
    except OSError as exc:
        raise FatalError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return EXIT_OK


def _cmd_fleet_report(args: argparse.Namespace, out: IO[str]) -> int:
    from .fleet_command import run  # noqa: PLC0415

    return run(args, out)


def _cmd_probe(args: argparse.Namespace, out: IO[str]) -> int:
    from ..host.emulator import ProbeError, trust_problem  # noqa: PLC0415
    from ..host.libvirt_snapshot import VIRTIO_NET_DEVICES  # noqa: PLC0415
    from ..host.probe import probe  # noqa: PLC0415

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
    from ..report.explain import EXPLANATIONS, explain  # noqa: PLC0415

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


def _cmd_check_policy(args: argparse.Namespace, out: IO[str]) -> int:
    import time  # noqa: PLC0415

    from .policy_check import check_file, exit_code, write_json, write_text  # noqa: PLC0415

    # A syntax check: who owns the file is the hook's and validate-domain's concern.
    today = time.strftime("%Y-%m-%d")
    results = [check_file(path, today) for path in args.files]
    if args.format == "json":
        write_json(results, out)
    else:
        write_text(results, out, sys.stderr)
    return exit_code(results)


def _cmd_policy_test(args: argparse.Namespace, out: IO[str]) -> int:
    import time  # noqa: PLC0415

    from ..engine.policy_schema import is_iso_date  # noqa: PLC0415
    from .policy_test import load_hosts, policy_for, report, run_tests  # noqa: PLC0415

    today = args.today or time.strftime("%Y-%m-%d")
    if not is_iso_date(today):
        raise FatalError(f"--today: expected a date as YYYY-MM-DD, not {today!r}")
    policy = policy_for(args.policy, dict(os.environ), os.getcwd())
    hosts = load_hosts(args.caps)
    outcomes = list(run_tests(args.directory, policy, hosts, today))
    return report(outcomes, out, verbose=args.verbose)


def _cmd_policy_schema(args: argparse.Namespace, out: IO[str]) -> int:
    from ..engine.policy_schema import json_schema  # noqa: PLC0415

    out.write(json.dumps(json_schema(), indent=2) + "\n")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace, out: IO[str]) -> int:
    from .completion import shipped_script  # noqa: PLC0415

    shipped = shipped_script(args.program, args.shell)
    if shipped is not None:  # the generated script the wheel installs: no shtab needed
        out.write(shipped)
        return EXIT_OK
    try:
        out.write(completion_script(PARSERS[args.program], args.shell))
    except ImportError:
        raise FatalError("shell completion needs shtab: pip install shtab") from None
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = main_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="libvirt-txmode: %(message)s",
    )
    run: Handler = args.run
    return guard("libvirt-txmode", lambda: run(args, sys.stdout))


if __name__ == "__main__":
    raise SystemExit(main())
