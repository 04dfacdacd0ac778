"""``libvirt-txmode explain``: what a finding code means and how to fix it."""

from __future__ import annotations

import argparse
from typing import IO, Any

from ..common.exits import EXIT_OK, FatalError
from ..engine.policy_schema import OpenChoices
from ..report.explain import EXPLANATIONS, explain


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("explain", help="what a finding code means and how to fix it")
    cmd.add_argument(
        "code",
        nargs="?",
        metavar="CODE",
        # Completion offers the codes; an unknown one still gets run's own message.
        choices=OpenChoices(EXPLANATIONS),
        help="finding code, e.g. txmode-unsupported (omit to list them)",
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
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
