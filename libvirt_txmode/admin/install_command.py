"""``libvirt-txmode install-hook`` and ``uninstall-hook``: the command line of install.py and
uninstall.py, and what each does with the running libvirt daemon afterwards (reload it, prove the
hook live with a canary)."""

from __future__ import annotations

import argparse
import os
from typing import IO, Any, Callable

from ..ci.cli import FILE_COMPLETION, complete_as
from ..common.exits import EXIT_OK, FatalError
from ..engine.policy import PolicyError, load_policy
from . import liveness
from .daemon import reload_daemon, running_daemon
from .doctor import snapshot_drift
from .hook_file import installed_copies
from .install import install
from .layout import InstallError, Layout
from .options import add_connect, add_directories, add_reload, layout_of, progress
from .snapshot_command import take_snapshot
from .uninstall import uninstall


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "install-hook",
        help="install the qemu hook, default policy and a snapshot; the hook is run once on "
        "sample events before it goes live",
    )
    add_directories(cmd)
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
    add_reload(cmd)
    add_connect(cmd)
    cmd.set_defaults(run=run_install)

    cmd = sub.add_parser(
        "uninstall-hook", help="remove exactly what install-hook wrote for this --hooks-dir"
    )
    add_directories(cmd)
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, change nothing"
    )
    add_reload(cmd)
    cmd.set_defaults(run=run_uninstall)


def _manages_daemon(args: argparse.Namespace, layout: Layout) -> bool:
    """Only libvirt's own hooks directory concerns the running daemon, unless --reload says so."""
    return layout.is_libvirts_own if args.reload is None else bool(args.reload)


def run_install(args: argparse.Namespace, out: IO[str]) -> int:
    layout = layout_of(args)

    def snapshot(path: str) -> str:
        if os.path.isfile(path) and snapshot_drift(path, uri=args.connect)[0] == []:
            return f"kept snapshot {path}: it matches this host's emulators"
        try:
            policy = load_policy(layout.policy)
        except PolicyError as exc:
            return f"no snapshot taken (bad policy: {exc})"
        try:
            return take_snapshot(args.connect, policy, path, progress(False))[1]
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


def run_uninstall(args: argparse.Namespace, out: IO[str]) -> int:
    layout = layout_of(args)
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
