"""``libvirt-txmode policy-test DIR``: a policy against sample domains that state their verdict.

The ``conftest verify`` of this tool. Each ``*.xml`` below DIR (hidden folders left out) starts
with the header the examples and the test corpus use::

    <!-- expect: txmode-not-allowed@17 txmode-required@25 -->
    <!-- expect: -->                      (no finding at all)

``CODE@LINE`` names a finding that must be reported (``CODE`` alone: at any line). The sample is
checked with the policy, against the snapshots given (``--caps``; none: the policy alone, no
support findings), with its exceptions applied as of today (``--today`` to ask about another
day); the findings that count (not those an exception silences) must be exactly the expected
ones. Exit 0 when every sample matches, 1 on a difference, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional

from ..ci.cli import DIR_COMPLETION, FILE_COMPLETION, complete_as
from ..ci.discovery import find_policy
from ..common import paths
from ..common.exits import EXIT_FINDINGS, EXIT_OK, FatalError
from ..common.records import SLOTS
from ..engine import codes
from ..engine.check import check_domain
from ..engine.exceptions import apply, counted
from ..engine.model import Finding, HostCapabilities, Level
from ..engine.policy import Policy, PolicyError, load_policy
from ..engine.policy_schema import is_iso_date
from ..engine.wording import message
from ..host.snapshot import SnapshotError, load_snapshot
from .options import add_policy

HEADER = re.compile(r"<!--\s*expect:((?:\s+[a-z-]+(?:@[0-9]+)?)*)\s*-->")
MAX_SAMPLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, **SLOTS)
class Outcome:
    """One sample domain of policy-test: the findings it expects against those it got."""

    sample: str
    expected: tuple[str, ...]  # CODE@LINE or CODE, sorted
    found: tuple[Finding, ...]  # the findings that count
    missing: tuple[str, ...]
    unexpected: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected


def samples(directory: str) -> list[str]:
    """Every ``*.xml`` below ``directory``, in sorted order; hidden folders are not entered."""
    if not os.path.isdir(directory):
        raise FatalError(f"{directory}: not a directory")
    found: list[str] = []
    for root, dirs, names in os.walk(directory, onerror=_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(".xml"))
    if not found:
        raise FatalError(f"{directory}: no sample domain (*.xml) to test the policy with")
    return found


def _walk_error(exc: OSError) -> None:
    raise FatalError(f"cannot read {exc.filename}: {exc.strerror}")


def expectation(path: str, text: str) -> tuple[str, ...]:
    """The header's expected findings; FatalError when the first line is not a header."""
    first = text.split("\n", 1)[0].strip()
    header = HEADER.fullmatch(first)
    if header is None:
        raise FatalError(
            f"{path}:1: the first line must state the expected findings, e.g. "
            "'<!-- expect: txmode-not-allowed@17 -->' or '<!-- expect: -->' for none"
        )
    items = tuple(sorted(header.group(1).split()))
    for item in items:
        code = item.split("@", 1)[0]
        if code not in codes.REGISTRY:
            raise FatalError(f"{path}:1: unknown finding code '{code}' in the expect header")
    return items


def compare(sample: str, expected: Sequence[str], found: Sequence[Finding]) -> Outcome:
    """Each expected item takes one finding that fits it (CODE@LINE first, then bare CODE);
    what is left over on either side is the difference."""
    left = list(found)
    missing = []
    ordered = sorted(expected, key=lambda item: "@" not in item)  # exact lines first
    for item in ordered:
        code, _, line = item.partition("@")
        match = next(
            (f for f in left if f.code == code and (not line or f.line == int(line))), None
        )
        if match is None:
            missing.append(item)
        else:
            left.remove(match)
    return Outcome(sample, tuple(sorted(expected)), tuple(found), tuple(missing), tuple(left))


def check_sample(
    path: str, policy: Policy, hosts: Sequence[HostCapabilities], today: str
) -> Outcome:
    from ..engine.domain_xml import DomainXMLError, parse_domain  # noqa: PLC0415 - loads lxml: not for --help

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SAMPLE_BYTES + 1)
    except OSError as exc:
        raise FatalError(f"cannot read {path}: {exc.strerror}") from None
    expected = expectation(path, data.decode("utf-8", "replace"))
    try:
        domain = parse_domain(data, path)
    except DomainXMLError as exc:
        found = [Finding(path, exc.line, "-", codes.XML_INVALID, Level.ERROR, exc.message)]
    else:
        found = counted(apply(check_domain(domain, policy, hosts), policy, today))
    return compare(path, expected, found)


def run_tests(
    directory: str, policy: Policy, hosts: Sequence[HostCapabilities], today: str
) -> Iterator[Outcome]:
    for path in samples(directory):
        yield check_sample(path, policy, hosts, today)


def report(outcomes: Sequence[Outcome], out: IO[str], *, verbose: bool = False) -> int:
    """One line per sample (FAIL with what differs), a summary; the exit code."""
    failed = 0
    for outcome in outcomes:
        if outcome.passed:
            if verbose:
                out.write(f"PASS {outcome.sample}\n")
            continue
        failed += 1
        out.write(f"FAIL {outcome.sample}\n")
        for item in outcome.missing:
            out.write(f"  expected, not reported: {item}\n")
        for finding in outcome.unexpected:
            out.write(
                f"  reported, not expected: {finding.code}@{finding.line}: {message(finding)}\n"
            )
    total = len(outcomes)
    out.write(
        f"{total} sample{'s' if total != 1 else ''}: {total - failed} passed, {failed} failed\n"
    )
    return EXIT_FINDINGS if failed else EXIT_OK


def load_hosts(paths: Sequence[str]) -> list[HostCapabilities]:
    try:
        return [load_snapshot(path, require_root_owned=False).capabilities for path in paths]
    except SnapshotError as exc:
        raise FatalError(str(exc)) from None


def policy_for(path: Optional[str], environ: dict[str, str], cwd: str) -> Policy:
    choice = find_policy(path, environ, cwd)
    try:
        # Nothing is executed: the policy is only read, whoever owns it.
        return load_policy(choice.path, require_root_owned=False)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "policy-test",
        help="check a policy against sample domains whose first line states the expected "
        "findings (<!-- expect: CODE@LINE ... -->); exit 0 all match, 1 a difference, 2 bad input",
    )
    complete_as(
        cmd.add_argument("directory", metavar="DIR", help="the samples: every *.xml below it"),
        DIR_COMPLETION,
    )
    add_policy(
        cmd,
        "the policy to test (default: validate-domain's lookup: $LIBVIRT_TXMODE_POLICY, the "
        f"project file, {paths.POLICY}, the bundled one)",
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
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    today = args.today or time.strftime("%Y-%m-%d")
    if not is_iso_date(today):
        raise FatalError(f"--today: expected a date as YYYY-MM-DD, not {today!r}")
    policy = policy_for(args.policy, dict(os.environ), os.getcwd())
    hosts = load_hosts(args.caps)
    outcomes = list(run_tests(args.directory, policy, hosts, today))
    return report(outcomes, out, verbose=args.verbose)
