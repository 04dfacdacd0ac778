"""``libvirt-txmode check-policy``: every problem of a policy file in one run.

Errors (the policy would be refused) come from the schema walker, which goes on past each one.
On a valid policy, an exception whose reason is still ``TODO`` (as ``validate-domain
--generate-exceptions`` writes it) is a warning, which fails the check until someone writes the
reason; one whose last day has passed is a notice (it silences nothing any more, so deploying the
policy is harmless, and a deployment must not fail because a date went by). Printed yamllint's
way, ``file:line:col: key: message`` one per line, or as JSON for editors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional

from ..ci.cli import FILE_COMPLETION, complete_as
from ..common import files
from ..common.records import SLOTS
from ..engine.exceptions import expired
from ..engine.policy import Policy, PolicyError, file_problems
from ..engine.policy_schema import TODO_REASON

ERROR, WARNING, NOTICE = "error", "warning", "notice"


@dataclass(frozen=True, **SLOTS)
class Problem:
    """One problem of a policy file, where it is and how serious."""

    file: str
    line: int  # 0: the file as a whole
    column: int
    key: str
    message: str
    # error: the policy is refused; warning: valid, but someone must act; notice: for the record
    severity: str

    def text(self) -> str:
        where = f"{self.key}: " if self.key else ""
        if not self.line:
            return f"{self.file}: {where}{self.message}"
        return f"{self.file}:{self.line}:{self.column or 1}: {where}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "key": self.key,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass(frozen=True, **SLOTS)
class Checked:
    """A policy file with every problem found in it, and the policy if it is usable."""

    file: str
    policy: Optional[Policy]
    problems: tuple[Problem, ...]

    @property
    def valid(self) -> bool:
        return self.policy is not None


def check_file(path: str, today: str, *, as_root: Optional[bool] = None) -> Checked:
    policy, errors = file_problems(path)
    problems = [_problem(error) for error in errors]
    if policy is not None:
        problems.extend(flags(policy, today))
        problems.extend(_trust(path, os.geteuid() == 0 if as_root is None else as_root))
    return Checked(path, policy, tuple(problems))


def _trust(path: str, as_root: bool) -> list[Problem]:
    """As root, a notice when the hook would refuse this file for who could change it. Only a
    notice: check-policy checks what the file says (the Ansible role validates a temporary copy
    with it, wherever Ansible puts that), the readers that trust it check where it lies."""
    if not as_root:
        return []
    problem = files.path_trust_problem(path, kind="file")
    if problem is None:
        return []
    return [Problem(path, 0, 0, "", f"the hook would refuse this file: {problem}", NOTICE)]


def _problem(error: PolicyError) -> Problem:
    return Problem(error.file, error.line, error.column, error.key, error.message, ERROR)


def flags(policy: Policy, today: str) -> list[Problem]:
    """What a valid policy still asks of its reviewer, at each exception's line."""
    found = []
    for item in policy.exceptions:
        key = f"exceptions[{item.index}]"
        if item.reason.strip().upper().startswith(TODO_REASON):
            found.append(
                Problem(
                    policy.source,
                    item.line,
                    1,
                    f"{key}.reason",
                    f"'{item.reason}' is not a reason yet: say why this exception is granted "
                    "(it is reported with every finding it silences)",
                    WARNING,
                )
            )
        if expired(item, today):
            found.append(
                Problem(
                    policy.source,
                    item.line,
                    1,
                    f"{key}.expires",
                    f"expired: its last day was {item.expires}; the findings it silenced are "
                    "back (exception-expired): fix them, or set a new date and say why",
                    NOTICE,
                )
            )
    return found


def write_text(results: Sequence[Checked], out: IO[str], err: IO[str]) -> None:
    for result in results:
        for problem in result.problems:
            err.write(problem.text() + "\n")
        if result.valid and all(p.severity == NOTICE for p in result.problems):
            assert result.policy is not None  # noqa: S101 - valid means parsed
            exceptions = len(result.policy.exceptions)
            out.write(
                f"{result.file}: valid policy ({len(result.policy.rules)} rules"
                + (f", {exceptions} exceptions" if exceptions else "")
                + ")\n"
            )


def write_json(results: Sequence[Checked], out: IO[str]) -> None:
    document = {
        "files": [
            {
                "file": result.file,
                "valid": result.valid,
                "problems": [problem.as_dict() for problem in result.problems],
            }
            for result in results
        ]
    }
    out.write(json.dumps(document, indent=2) + "\n")


def exit_code(results: Sequence[Checked]) -> int:
    """2: a policy is refused; 1: all valid, but a reason is still TODO; 0: nothing to do
    (notices do not count)."""
    if any(not result.valid for result in results):
        return 2
    flagged = any(p.severity == WARNING for result in results for p in result.problems)
    return 1 if flagged else 0


def add_parser(sub: Any) -> None:
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
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    # A syntax check: who owns the file is the hook's and validate-domain's concern.
    today = time.strftime("%Y-%m-%d")
    results = [check_file(path, today) for path in args.files]
    if args.format == "json":
        write_json(results, out)
    else:
        write_text(results, out, sys.stderr)
    return exit_code(results)
