"""``libvirt-txmode audit``: check the domains libvirt already has, the way the hook would.

Every defined domain is checked in its inactive XML (what the next start uses) and every running
domain also in its live XML: libvirt runs no hook for ``virsh attach-device --live``, and domains
started before the hook was installed were never checked. The engine, policy and capability
sources are the hook's (snapshot for unchanged emulators, direct probes otherwise), the formats
and exit codes validate-domain's: 0 no error finding, 1 at least one (``--strict``: or a
warning), 2 could not run. It is how an operator turns on ``action: enforce`` safely: audit first.

One read-only libvirt connection suffices: ``virDomainGetXMLDesc`` needs write access only for
``VIR_DOMAIN_XML_SECURE``, which we never ask for (passwords are not our business).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional

from .. import __version__
from ..ci.cli import DIR_COMPLETION, FILE_COMPLETION, add_format_option, complete_as
from ..common import paths
from ..common.exits import FatalError
from ..common.paths import default_cache_dir
from ..engine.check import check_domain
from ..engine.exceptions import apply as apply_exceptions
from ..engine.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
from ..engine.wording import XML_INVALID, Finding, Level, Report, summarize
from ..host.facts import local_capabilities
from ..host.probe_cache import ProbeCache
from ..host.snapshot import SnapshotError, load_snapshot
from ..report.base import RunInfo
from ..report.registry import choose_format, render
from .metrics import save_audit
from .options import add_connect, add_policy

DEFAULT_SNAPSHOT = paths.SNAPSHOT
EXIT_OK, EXIT_FINDINGS = 0, 1


class AuditError(Exception):
    """The audit cannot run (no libvirt, bad policy or snapshot, unknown domain): exit 2."""


@dataclass(frozen=True)
class DomainXML:
    """One document to check: a domain's inactive or live XML, and how reports name it."""

    name: str
    state: str  # "inactive" | "live"
    xml: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.state} XML)"


def fetch_domains(conn: Any, names: list[str]) -> list[DomainXML]:
    """Inactive XML of every (or each named) domain, plus the live XML of running ones."""
    import libvirt  # noqa: PLC0415 - optional libvirt-python, only to talk to libvirt

    try:
        if names:
            found = []
            for name in names:
                try:
                    found.append(conn.lookupByName(name))
                except libvirt.libvirtError:
                    raise AuditError(f"no domain named {name!r} on {conn.getURI()}") from None
        else:
            found = conn.listAllDomains(0)
        documents: list[DomainXML] = []
        for dom in sorted(found, key=lambda d: d.name()):
            name = dom.name()
            try:
                documents.append(
                    DomainXML(name, "inactive", dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                )
                if dom.isActive():
                    documents.append(DomainXML(name, "live", dom.XMLDesc(0)))
            except libvirt.libvirtError as exc:
                # Undefined or stopped between listing and asking: nothing left to check.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return documents
    except libvirt.libvirtError as exc:
        raise AuditError(f"libvirt: {exc}") from None


def with_host_and_time(document: str, host: str, started: float) -> str:
    """validate-domain's JSON plus what an audit report needs to stand alone: which host, when.
    Every finding names the host too (the text format leaves it out: one host, said once)."""
    data = json.loads(document)
    data["host"] = host
    for finding in data["findings"]:
        finding["host"] = host
    data["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def open_read_only(uri: str) -> Any:
    from ..host.libvirt_snapshot import ConnectError, connect  # noqa: PLC0415 - loads lxml: not for --help

    try:
        return connect(uri, read_only=True)
    except ConnectError as exc:
        raise AuditError(str(exc)) from None


def _snapshot(path: Optional[str]) -> tuple[Any, dict[str, str]]:
    chosen = path or (DEFAULT_SNAPSHOT if os.path.lexists(DEFAULT_SNAPSHOT) else None)
    if chosen is None:
        return None, {}
    try:
        snapshot = load_snapshot(chosen)
    except SnapshotError as exc:
        if path is not None:
            raise AuditError(str(exc)) from None

        logging.getLogger(__name__).warning("ignoring %s; probing emulators directly", exc)
        return None, {}
    return snapshot.capabilities, dict(snapshot.identities)


def _parse(documents: Sequence[DomainXML]) -> tuple[list[Any], list[Any]]:
    """Each document's Domain, and an xml-invalid finding for each that does not parse."""
    from ..engine.domain_xml import DomainXMLError, make_parser, parse_domain  # noqa: PLC0415 - loads lxml: not for --help

    parser = make_parser()
    domains, found = [], []
    for document in documents:
        try:
            domains.append(parse_domain(document.xml.encode(), document.label, parser=parser))
        except DomainXMLError as exc:
            found.append(
                Finding(
                    document.label, exc.line, document.name, XML_INVALID, Level.ERROR, exc.message
                )
            )
    return domains, found


def audit(args: argparse.Namespace, out: IO[str], environ: Mapping[str, str]) -> int:
    started = time.time()
    try:
        policy = load_policy(args.policy or DEFAULT_POLICY_PATH)
    except PolicyError as exc:
        raise AuditError(f"bad policy: {exc}") from None
    snapshot, identities = _snapshot(args.snapshot)
    conn = open_read_only(args.connect)
    try:
        documents = fetch_domains(conn, list(args.domain))
    finally:
        conn.close()

    domains, found = _parse(documents)
    cache = ProbeCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    caps = local_capabilities(
        domains, policy, cache, snapshot=snapshot, snapshot_identities=identities
    )
    today = time.strftime("%Y-%m-%d")  # the day policy exceptions are judged on
    for domain in domains:
        found.extend(apply_exceptions(check_domain(domain, policy, [caps]), policy, today))
    labels = tuple(d.label for d in documents)
    order = {label: i for i, label in enumerate(labels)}
    found.sort(key=lambda f: (order.get(f.file, 0), f.line, f.code))
    report = Report(
        files=labels,
        findings=tuple(found),
        # files: the XML documents checked (inactive + live); domains: distinct domains.
        summary=summarize(
            len(labels),
            len({d.name for d in documents}),
            sum(len(d.nics) for d in domains),
            found,
        ),
        hosts=(caps.name,),
        tool_version=__version__,
    )
    fmt = choose_format(args.format, environ)
    color = not args.no_color and "NO_COLOR" not in environ and out.isatty()
    run = RunInfo(suppressed=sum(1 for f in found if f.suppression is not None))

    def rendered(chosen: str, colored: bool) -> str:
        text = render(chosen, report, color=colored, run=run)
        return with_host_and_time(text, caps.name, started) if chosen == "json" else text

    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(rendered(fmt, False))
        out.write(render("text", report, color=color, run=run))
    else:
        out.write(rendered(fmt, color and fmt == "text"))
    failing = report.summary.errors + (report.summary.warnings if args.strict else 0)
    code = EXIT_FINDINGS if failing else EXIT_OK
    if not args.no_cache:
        _keep_summary(args.cache_dir or default_cache_dir(), report, code)
    return code


def _keep_summary(cache_dir: str, report: Report, code: int) -> None:
    """For ``libvirt-txmode metrics``, beside the hook's counts in the cache directory."""
    try:
        save_audit(cache_dir, report, code, time.time())
    except OSError as exc:
        logging.getLogger(__name__).info("audit summary not kept for metrics: %s", exc)


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "audit",
        help="check every defined domain (inactive XML) and every running one (live XML) "
        "against the policy, as validate-domain does",
    )
    add_connect(cmd)
    add_policy(cmd, f"policy file (default: {paths.POLICY})")
    complete_as(
        cmd.add_argument(
            "--snapshot",
            default=None,
            metavar="FILE",
            help=f"capability snapshot to believe for unchanged emulators (default: "
            f"{DEFAULT_SNAPSHOT} when present); other emulators are probed, as the hook does",
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "-d",
        "--domain",
        action="append",
        default=[],
        metavar="NAME",
        help="only this domain (repeatable; default: all)",
    )
    add_format_option(cmd)
    complete_as(
        cmd.add_argument(
            "-o", "--output", metavar="FILE", help="write the report in --format to FILE"
        ),
        FILE_COMPLETION,
    )
    cmd.add_argument(
        "--strict", action="store_true", help="warnings count as failures for the exit code"
    )
    cmd.add_argument("--no-color", action="store_true", help="never colour (NO_COLOR too)")
    complete_as(
        cmd.add_argument(
            "--cache-dir",
            help="probe cache directory (default: /var/cache/libvirt-txmode as root)",
        ),
        DIR_COMPLETION,
    )
    cmd.add_argument("--no-cache", action="store_true", help="don't read or write the cache")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        return audit(args, out, dict(os.environ))
    except AuditError as exc:
        raise FatalError(str(exc)) from None
