"""``libvirt-txmode``: the host-side commands (snapshot, install-hook, uninstall-hook, probe,
explain, completion). validate-domain and the shared error handling are in cli.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Callable, Optional

from . import __version__
from .cli import (
    DIR_COMPLETION,
    EXIT_OK,
    FILE_COMPLETION,
    FatalError,
    complete_as,
    guard,
)
from .manpage import PROGRAMS, SHELLS

if TYPE_CHECKING:
    from .install import Layout
    from .policy import Policy


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
    complete_as(
        snap.add_argument(
            "-o",
            "--output",
            default=None,
            metavar="FILE",
            help="where to write it, - for stdout (default: /var/lib/libvirt-txmode/snapshot.json)",
        ),
        FILE_COMPLETION,
    )
    complete_as(
        snap.add_argument(
            "-p",
            "--policy",
            default=None,
            help="policy whose 'emulators' may be probed "
            "(default: /etc/libvirt-txmode/policy.yaml, else built-in)",
        ),
        FILE_COMPLETION,
    )

    for name, helptext in (
        ("install-hook", "install the qemu hook, default policy and a snapshot"),
        ("uninstall-hook", "remove exactly what install-hook added"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        complete_as(
            cmd.add_argument(
                "--hooks-dir",
                default=DEFAULT_HOOKS_DIR,
                help="libvirt's hook directory (default: %(default)s)",
            ),
            DIR_COMPLETION,
        )
        complete_as(
            cmd.add_argument(
                "--config-dir",
                default=DEFAULT_CONFIG_DIR,
                help="where policy.yaml lives (default: %(default)s)",
            ),
            DIR_COMPLETION,
        )
        complete_as(
            cmd.add_argument(
                "--state-dir",
                default=DEFAULT_STATE_DIR,
                help="snapshot and install manifest (default: %(default)s)",
            ),
            DIR_COMPLETION,
        )
        complete_as(
            cmd.add_argument(
                "--cache-dir",
                default=DEFAULT_CACHE_DIR,
                help="the hook's probe cache (default: %(default)s)",
            ),
            DIR_COMPLETION,
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
    complete_as(probe.add_argument("emulator", help="path of the QEMU binary"), FILE_COMPLETION)
    probe.add_argument(
        "-d",
        "--device",
        action="append",
        help="device (repeatable; default: every virtio-net transport)",
    )
    probe.add_argument("-m", "--method", default="auto", choices=["auto", "help", "qmp"])
    complete_as(
        probe.add_argument(
            "-p",
            "--policy",
            default=None,
            help="policy whose 'emulators' list must trust the binary",
        ),
        FILE_COMPLETION,
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
    completion.add_argument("shell", choices=SHELLS)
    completion.add_argument(
        "program",
        nargs="?",
        default="libvirt-txmode",
        choices=sorted(PROGRAMS),
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = main_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="libvirt-txmode: %(message)s",
    )
    return guard("libvirt-txmode", lambda: COMMANDS[args.command](args, sys.stdout))


if __name__ == "__main__":
    raise SystemExit(main())
