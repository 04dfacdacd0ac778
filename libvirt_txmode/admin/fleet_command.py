"""``libvirt-txmode fleet-report``, its command line and I/O edge: read what fleet-check.yml
collected, write fleet.json, fleet-junit.xml and fleet.html into the report directory, print the
summary.

Exit codes: 0 the repository's domains have no error finding, 1 they have one (the controller's
task fails once for them; each host's own audit fails that host in the playbook), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import sys
from dataclasses import replace
from typing import IO, Any, Optional

from ..ci.cli import DIR_COMPLETION, FILE_COMPLETION, complete_as
from ..common import files
from ..common.exits import FatalError
from ..report.fleet import (
    CHECKED,
    FleetInput,
    FleetInputError,
    build,
    parse_caps,
    parse_hosts,
    summary_lines,
)

log = logging.getLogger(__name__)

REPORT_JSON, REPORT_JUNIT, REPORT_HTML = "fleet.json", "fleet-junit.xml", "fleet.html"
# Generous bounds for documents the playbook writes: a fleet's audits, a repository's report.
MAX_INPUT_BYTES = 256 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
MAX_DOMAIN_BYTES = 64 * 1024 * 1024


def _read(path: str, limit: int, what: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            data, _ = files.read_regular(path, limit, follow_symlinks=True)
    except OSError as exc:
        raise FatalError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FatalError(f"{path}: {what} larger than {limit} bytes")
    return data


def _json(path: str, limit: int, what: str) -> Any:
    try:
        return json.loads(_read(path, limit, what))
    except ValueError as exc:
        raise FatalError(f"{path}: {what} is not JSON: {exc}") from None


def _snapshot(directory: Optional[str], host: str) -> Optional[dict[str, Any]]:
    """The snapshot the play fetched for ``host``; None (and a warning) if it is unreadable."""
    if not directory:
        return None
    path = os.path.join(directory, f"{host}.json")
    try:
        document = _json(path, MAX_SNAPSHOT_BYTES, "snapshot")
    except FatalError as exc:
        log.warning("%s", exc)
        return None
    return document if isinstance(document, dict) else None


def _domain_names(report: Any) -> dict[str, str]:
    """file -> domain name for the columns of files without a finding."""
    from ..engine.domain_xml import DomainXMLError, make_parser, parse_domain  # noqa: PLC0415 - loads lxml: not for --help

    names: dict[str, str] = {}
    if not isinstance(report, dict):
        return names
    parser = make_parser()
    for path in report.get("files", []):
        if not isinstance(path, str):
            continue
        try:
            data, _ = files.read_regular(path, MAX_DOMAIN_BYTES, follow_symlinks=True)
            names[path] = parse_domain(data, path, parser=parser).name
        except (OSError, DomainXMLError):
            continue  # the column then shows the file's name
    return names


def _policy_hash(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    return hashlib.sha256(_read(path, MAX_INPUT_BYTES, "policy")).hexdigest()


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "fleet-report",
        help="one fleet report (fleet.json, fleet-junit.xml, fleet.html) from what "
        "fleet-check.yml collected",
        description="Write fleet.json, fleet-junit.xml and fleet.html into --output-dir from the "
        "per-host results fleet-check.yml collected and validate-domain's JSON over the "
        "repository's domains. Exit 1 when a repository domain has an error finding.",
    )
    complete_as(
        cmd.add_argument(
            "--hosts",
            required=True,
            metavar="FILE",
            help='the per-host results as JSON ({"hosts": [...]}); - reads stdin',
        ),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "--domains-report",
            metavar="FILE",
            help="validate-domain -f json --all-hosts over the repository's domains",
        ),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "--snapshots-dir", metavar="DIR", help="the fetched snapshots, one HOST.json per host"
        ),
        DIR_COMPLETION,
    )
    complete_as(
        cmd.add_argument("--policy", metavar="FILE", help="the policy checked against (hashed)"),
        FILE_COMPLETION,
    )
    complete_as(
        cmd.add_argument(
            "-o", "--output-dir", required=True, metavar="DIR", help="where the reports go"
        ),
        DIR_COMPLETION,
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    from ..report.fleet_render import to_html, to_junit  # noqa: PLC0415 - loads lxml: not for --help

    collected = _json(args.hosts, MAX_INPUT_BYTES, "host results")
    try:
        hosts = parse_hosts(collected)
        caps_hosts = parse_caps(collected)
    except FleetInputError as exc:
        raise FatalError(f"{args.hosts}: {exc}") from None
    hosts = tuple(
        replace(host, snapshot=_snapshot(args.snapshots_dir, host.name))
        if host.status == CHECKED
        else host
        for host in hosts
    )
    domains = None
    if args.domains_report:
        domains = _json(args.domains_report, MAX_INPUT_BYTES, "validate-domain report")
        if not isinstance(domains, dict) or not isinstance(domains.get("findings"), list):
            raise FatalError(f"{args.domains_report}: not a validate-domain JSON report")
    try:
        report = build(
            FleetInput(
                hosts=hosts,
                domains=domains,
                domain_names=_domain_names(domains),
                policy_path=args.policy or None,
                policy_sha256=_policy_hash(args.policy),
                caps_hosts=caps_hosts,
            ),
            now=datetime.datetime.now(datetime.timezone.utc),
        )
    except FleetInputError as exc:
        raise FatalError(f"{args.domains_report}: {exc}") from None
    os.makedirs(args.output_dir, exist_ok=True)
    document = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    files.write_atomic(os.path.join(args.output_dir, REPORT_JSON), document.encode())
    files.write_atomic(os.path.join(args.output_dir, REPORT_JUNIT), to_junit(report))
    files.write_atomic(os.path.join(args.output_dir, REPORT_HTML), to_html(report).encode())
    for line in summary_lines(report):
        out.write(line + "\n")
    return 1 if report["summary"]["errors"] else 0
