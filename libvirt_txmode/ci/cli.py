"""``validate-domain``: domain XML files in, findings out; and what both command lines share.

The host-side ``libvirt-txmode`` command lives in admin/. Exit codes (validate-domain):
0 no error findings, 1 at least one (with --strict: or a warning), 2 the tool could not do its job
(usage, unreadable policy/snapshot/input path, internal error).
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from .. import __version__
from ..common import paths
from ..common.exits import EXIT_FATAL, EXIT_FINDINGS, EXIT_OK, FatalError
from ..common.text import printable
from ..report.registry import FORMAT_NAMES
from .parallel import PARALLEL_MIN_FILES

# typing.TYPE_CHECKING without importing typing when --version is all that is asked.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import IO, Callable, Optional

# Kept light on purpose: `validate-domain --version` and `--help` import only this module (and
# argparse); the run itself lives in validation.py, imported once the command line is parsed.


# Shell-completion hints, read by shtab when scripts/gen-docs or `libvirt-txmode completion` build
# the completion scripts: the names of shtab's own file/directory completers (shtab.FILE/.DIR),
# spelled out so that the CLI itself never imports shtab.
FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files"}
DIR_COMPLETION = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/"}


def complete_as(action: argparse.Action, kind: dict[str, str]) -> None:
    action.complete = kind  # type: ignore[attr-defined]


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """``-f``, the same for every command that writes a report: the registry's formats."""
    parser.add_argument(
        "-f",
        "--format",
        default="auto",
        choices=["auto", *FORMAT_NAMES],
        help="output format (auto: github under GitHub Actions, else text)",
    )


# --- validate-domain -----------------------------------------------------------------------------


def validate_parser() -> argparse.ArgumentParser:
    """The ``validate-domain`` parser (public: scripts/gen-docs builds man page and completion)."""
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
            help="policy file (default: $LIBVIRT_TXMODE_POLICY, else .libvirt-txmode.yaml or "
            ".libvirt-txmode/policy.yaml from here up to the repository root, else "
            f"{paths.POLICY}, else the bundled default)",
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
    add_format_option(parser)
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
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip matching files and folders (.gitignore syntax, relative to the current "
        "directory; repeatable); .libvirt-txmode-ignore files are read too",
    )
    parser.add_argument(
        "--generate-exceptions",
        action="store_true",
        help="instead of the report, write (to stdout, or to -o FILE) the policy exceptions "
        "that would silence today's findings, each with 'reason: TODO' for check-policy to flag",
    )
    parser.add_argument(
        "--no-ignore-file",
        action="store_true",
        help="read no .libvirt-txmode-ignore file (only --exclude thins out folder walks); "
        "files named on the command line are checked whatever an ignore file says",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="warnings count as failures for the exit code (and so does checking no file, "
        "which also fails whenever CI is set)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only findings: no summary line, no notes on stderr",
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
        "-v",
        "--verbose",
        action="store_true",
        help="say which policy is used; log skipped files, probing and cache decisions to stderr",
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


def validate(
    argv: Sequence[str],
    stdin: IO[bytes],
    stdout: IO[str],
    environ: Mapping[str, str],
    stderr: Optional[IO[str]] = None,
) -> int:
    args = validate_parser().parse_args(argv)
    from .run import run  # noqa: PLC0415 - after --version/--help have had their say

    return run(args, argv, stdin, stdout, environ, stderr=stderr)


def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    # A closed stdout (`validate-domain ... >&-`) leaves sys.stdout None: write into the void
    # instead, so the report in -o and the exit code are the same as with a terminal.
    stdout = sys.stdout if sys.stdout is not None else open(os.devnull, "w")  # noqa: SIM115
    if sys.stdin is not None:
        stdin: IO[bytes] = sys.stdin.buffer
    else:
        stdin = io.BytesIO()
    code = guard(
        "validate-domain",
        lambda: validate(sys.argv[1:] if argv is None else argv, stdin, stdout, os.environ),
    )
    _quiet_exit(stdout)
    return code


def _quiet_exit(stream: IO[str]) -> None:
    """A stdout whose reader left would make the interpreter's final flush print a warning."""
    try:
        stream.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


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
            import traceback  # noqa: PLC0415 - only when a traceback is asked for

            traceback.print_exc()
        return EXIT_FATAL


# The exit codes and FatalError are re-exported: admin commands and tests take them from here.
__all__ = [
    "DIR_COMPLETION",
    "EXIT_FATAL",
    "EXIT_FINDINGS",
    "EXIT_OK",
    "FILE_COMPLETION",
    "FORMAT_NAMES",
    "FatalError",
    "complete_as",
    "guard",
    "validate",
    "validate_main",
    "validate_parser",
]


if __name__ == "__main__":
    raise SystemExit(validate_main())
