"""``libvirt-txmode``: the host-side commands. validate-domain and the shared error handling are in
ci/cli.py.

Each subcommand is one module with ``add_parser(sub)``, which builds its parser and binds its
runner (``set_defaults(run=...)``); ``SUBCOMMANDS`` lists those modules in help order. Adding a
command is one new module and one line in that list. Options several commands share are in
options.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from .. import __version__
from ..ci.cli import guard, validate_parser
from . import (
    audit,
    completion,
    doctor,
    explain_command,
    fleet_command,
    install_command,
    metrics,
    policy_check,
    policy_test,
    probe_command,
    schema_command,
    snapshot_command,
)
from .options import Handler

SUBCOMMANDS = (
    snapshot_command,  # snapshot
    install_command,  # install-hook, uninstall-hook
    doctor,
    audit,
    metrics,
    fleet_command,  # fleet-report
    probe_command,  # probe
    explain_command,  # explain
    policy_check,  # check-policy
    policy_test,  # policy-test
    schema_command,  # policy-schema
    completion,
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
    # The completion subcommand generates a script from these when none is installed.
    parser.set_defaults(parsers=PARSERS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


# The parsers man pages and completions are generated from (scripts/gen-docs, `completion`).
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
    run: Handler = args.run
    return guard("libvirt-txmode", lambda: run(args, sys.stdout))


if __name__ == "__main__":
    raise SystemExit(main())
