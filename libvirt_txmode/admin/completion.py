"""``libvirt-txmode completion``: the shell completion scripts the wheel installs, found at run
time (no shtab needed).

scripts/gen-docs generates them from the parsers into completion/ (checked in, and kept current
by a test); setup.cfg's data_files install them where bash-completion and zsh look:
``share/bash-completion/completions/PROGRAM.bash`` and ``share/zsh/site-functions/_PROGRAM``
below the installation prefix. A source checkout has them in completion/.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any, Optional

from ..common import paths
from ..common.exits import EXIT_OK, FatalError
from .manpage import PROGRAMS, SHELLS, completion_script


def _candidates(program: str, shell: str) -> list[str]:
    if shell == "bash":
        name, subdir = f"{program}.bash", os.path.join("bash-completion", "completions")
    else:
        name, subdir = f"_{program}", os.path.join("zsh", "site-functions")
    # A source checkout's own copy first (the freshest there), then the installation prefix.
    found = [os.path.join(os.path.dirname(paths.PACKAGE_DIR), "completion", name)]
    prefixes = dict.fromkeys((sys.prefix, sys.base_prefix))
    found += [os.path.join(prefix, "share", subdir, name) for prefix in prefixes]
    return found


def shipped_script(program: str, shell: str) -> Optional[str]:
    """The installed (or checked-in) script for ``program`` in ``shell``, or None."""
    for path in _candidates(program, shell):
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            continue
    return None


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("completion", help="print a shell completion script")
    cmd.add_argument("shell", choices=SHELLS)
    cmd.add_argument(
        "program",
        nargs="?",
        default="libvirt-txmode",
        choices=sorted(PROGRAMS),
        help="the command to complete (default: %(default)s)",
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    shipped = shipped_script(args.program, args.shell)
    if shipped is not None:  # the generated script the wheel installs: no shtab needed
        out.write(shipped)
        return EXIT_OK
    try:
        # The parser factories come from the top parser (commands.main_parser), which builds
        # this subcommand: importing commands here would make a cycle.
        out.write(completion_script(args.parsers[args.program], args.shell))
    except ImportError:
        raise FatalError("shell completion needs shtab: pip install shtab") from None
    return EXIT_OK
