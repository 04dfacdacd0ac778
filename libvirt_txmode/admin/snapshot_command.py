"""``libvirt-txmode snapshot``: record this host's txmode capabilities (libvirt APIs and probes),
or with --check say whether the stored snapshot still matches this host's emulators."""

from __future__ import annotations

import argparse
import json
import os
from typing import IO, Any, Callable

from ..ci.cli import FILE_COMPLETION, complete_as
from ..common import paths
from ..common.exits import EXIT_FINDINGS, EXIT_OK, FatalError
from ..common.files import write_atomic
from ..engine.policy import Policy
from ..host.snapshot import SnapshotError
from .doctor import snapshot_drift
from .options import DEFAULT_SNAPSHOT, add_connect, add_policy, host_policy, progress


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "snapshot", help="record this host's txmode capabilities (libvirt APIs + probes)"
    )
    add_connect(cmd)
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
    add_policy(
        cmd,
        f"policy whose 'emulators' may be probed (default: {paths.POLICY}, else built-in)",
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
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    if args.check:
        return _check_snapshot(args, out)
    target = args.output or DEFAULT_SNAPSHOT
    text, summary = take_snapshot(
        args.connect, host_policy(args.policy), target, progress(args.quiet)
    )
    if target == "-":
        out.write(text)
    elif not args.quiet or "not probed:" in summary:  # -q: only when an emulator failed
        out.write(summary + "\n")
    return EXIT_OK


def take_snapshot(
    uri: str, policy: Policy, target: str, say: Callable[[str], None]
) -> tuple[str, str]:
    """Take a snapshot and write it to ``target`` (unless "-"): (document, one-line summary)."""
    from ..host import libvirt_snapshot  # noqa: PLC0415 - loads lxml: not for --help

    say(f"asking {uri} for its guests, emulators and domain capabilities")
    try:
        conn = libvirt_snapshot.open_libvirt(uri)
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None
    try:
        # Probing dominates a snapshot's time (up to probe_timeout per emulator): it says which.
        document = libvirt_snapshot.take_snapshot(conn, policy, uri=uri, progress=say)
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
