"""Man pages and shell completions, generated from the argparse parsers.

The parsers in ``ci.cli`` and ``admin.commands`` are the one description of the command line;
``scripts/gen-docs`` writes these generated files into the tree, and a test regenerates them and
compares, so the checked-in copies never drift from ``--help``. argparse-manpage and shtab are
test/doc dependencies only: they are imported inside the functions, so the CLI runs without them.

This module imports neither command module: callers hand it the parser factories
(``commands.PARSERS``), so the dependency runs one way (commands -> manpage).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator, Mapping
from typing import Callable

from .. import __version__
from ..report.explain import EXPLANATIONS

PROGRAMS = ("validate-domain", "libvirt-txmode")
ParserFactory = Callable[[], argparse.ArgumentParser]
# The NAME line of each page (argparse's description is the DESCRIPTION section).
SUMMARIES = {
    "validate-domain": "check the txmode of virtio NICs in libvirt domain XML",
    "libvirt-txmode": "host tools of libvirt-txmode: hook install, doctor, audit, snapshots",
}
SHELLS = ("bash", "zsh")
# argparse wraps help at the terminal's width (COLUMNS); fix it so the output is the same anywhere.
HELP_WIDTH = 80


def _parser(factory: ParserFactory) -> argparse.ArgumentParser:
    parser = factory()
    for each in _all_parsers(parser):
        each.formatter_class = functools.partial(argparse.HelpFormatter, width=HELP_WIDTH)
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    # argparse has no public way to walk subparsers.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _all_parsers(child)


def _roff(text: str) -> str:
    """Escape text for roff: a plain '-' may print as a hyphen that cannot be copied back."""
    return text.replace("\\", "\\\\").replace("-", "\\-")


def _sections(program: str) -> list[tuple[str, str]]:
    """Extra man page sections, in roff: what --help cannot say at length."""
    if program == "validate-domain":
        codes = "\n".join(
            f".TP\n.B {_roff(code)}\n{_roff(item.title)} (default level: {item.level.value})."
            for code, item in EXPLANATIONS.items()
        )
        return [
            (
                "EXIT STATUS",
                ".TP\n.B 0\nno error findings (with \\-\\-strict: no warnings either)\n"
                ".TP\n.B 1\nat least one error finding (with \\-\\-strict: or a warning)\n"
                ".TP\n.B 2\nthe tool could not run: usage, unreadable policy, snapshot or input "
                "path, internal error",
            ),
            (
                "FINDING CODES",
                codes + "\n.PP\nlibvirt\\-txmode explain CODE prints what a code means and how "
                "to fix it.",
            ),
            (
                "ENVIRONMENT",
                ".TP\n.B LIBVIRT_TXMODE_POLICY\nthe policy when \\-p is not given (before any "
                "project or system policy)\n"
                ".TP\n.B NO_COLOR\nnever colour the text report\n"
                ".TP\n.B GITHUB_ACTIONS\nwhen 'true', \\-\\-format auto writes GitHub workflow "
                "annotations",
            ),
            (
                "FILES",
                ".TP\n.B .libvirt\\-txmode.yaml, .libvirt\\-txmode/policy.yaml\nthe project's "
                "policy, looked for from the current directory up to the repository root\n"
                ".TP\n.B /etc/libvirt\\-txmode/policy.yaml\nthe system policy, when the project "
                "has none (else the bundled default)\n"
                ".TP\n.B .libvirt\\-txmode\\-ignore\npaths not to check, in .gitignore syntax "
                "(like \\-\\-exclude)",
            ),
        ]
    return [
        (
            "EXIT STATUS",
            ".TP\n.B 0\nsuccess; doctor: no check failed; audit: no error findings; snapshot "
            "\\-\\-check: the snapshot matches this host\n"
            ".TP\n.B 1\ndoctor: a check failed; audit: at least one error finding (with "
            "\\-\\-strict: or a warning); snapshot \\-\\-check: the snapshot is stale\n"
            ".TP\n.B 2\nthe command could not run: usage, unreadable policy or snapshot, no "
            "libvirt connection, install refused, internal error",
        ),
        (
            "FILES",
            ".TP\n.B /etc/libvirt\\-txmode/policy.yaml\nthe site policy\n"
            ".TP\n.B /var/lib/libvirt\\-txmode/snapshot.json\nthe host's capability snapshot\n"
            ".TP\n.B /var/lib/libvirt\\-txmode/installs/\none install manifest per hooks "
            "directory: what install\\-hook wrote, all that uninstall\\-hook removes\n"
            ".TP\n.B /etc/libvirt/hooks/qemu\nlibvirt's qemu hook, installed by install\\-hook "
            "(qemu.d/50\\-libvirt\\-txmode when a foreign qemu hook is there)\n"
            ".TP\n.B /var/log/libvirt\\-txmode.log\nthe hook's decisions when neither "
            "journald (/run/systemd/journal/socket) nor syslog (/dev/log) listens (mode 0600)",
        ),
    ]


def manpage(program: str, factory: ParserFactory) -> str:
    """The roff source of ``program``'s man page (section 1), from its parser ``factory``."""
    # argparse-manpage ships no type information (no py.typed).
    from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]  # noqa: PLC0415 - optional: docs only

    parser = _parser(factory)
    # A fixed date field (the version, not today's date) keeps regenerated pages byte-identical.
    page = Manpage(
        parser,
        _data={
            "project_name": "libvirt-txmode",
            "description": SUMMARIES[program],
            "date": __version__,
            "manual_title": "libvirt-txmode manual",
            "manual_section": 1,
        },
    )
    for heading, content in _sections(program):
        page.add_section(heading, ">", content)
    return str(page)


def completion_script(factory: ParserFactory, shell: str) -> str:
    """A bash or zsh completion script for a parser (shtab reads the ``complete`` hints)."""
    import shtab  # noqa: PLC0415 - optional: only to generate a completion script

    if shell not in SHELLS:
        raise ValueError(f"unsupported shell {shell!r} (supported: {', '.join(SHELLS)})")
    return str(shtab.complete(_parser(factory), shell=shell)).rstrip("\n") + "\n"


def generated_files(parsers: Mapping[str, ParserFactory]) -> dict[str, str]:
    """Every generated file, by path relative to the project root, with its content."""
    files = {f"man/{program}.1": manpage(program, parsers[program]) for program in PROGRAMS}
    for program in PROGRAMS:
        files[f"completion/{program}.bash"] = completion_script(parsers[program], "bash")
        files[f"completion/_{program}"] = completion_script(parsers[program], "zsh")
    return files
