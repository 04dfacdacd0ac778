"""``libvirt-txmode fleet-report``: one report for a fleet, from what fleet-check.yml collected.

The playbook gathers, per host, whether it was reached, whether the package is there, its
capability snapshot and its ``audit -f json``; on the controller ``validate-domain -f json
--all-hosts`` checks the repository's domain definitions against every snapshot. ``build`` turns
those documents into one report (pure: no I/O, the time is an argument): hosts x repository
domains with a verdict in each cell, and every finding once with the hosts it applies to. A
finding validate-domain reports without a host (a policy finding) applies to every host that was
checked; one with a host (the host's QEMU lacks the property) to that host alone.

Host and domain names, MACs and messages come from the hosts and from untrusted XML: the renderers
(fleet_render.py) escape them for their format.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import __version__
from ..common.records import SLOTS
from ..common.text import printable

FORMAT = "libvirt-txmode-fleet"
FORMAT_VERSION = 1

# What a host's row says when it could not be checked; "checked" otherwise.
CHECKED = "checked"
UNREACHABLE = "unreachable"
NOT_INSTALLED = "not-installed"
NO_SNAPSHOT = "no-snapshot"
FAILED = "failed"  # the play failed on the host before it could say which of the above
HOST_STATES = (CHECKED, UNREACHABLE, NOT_INSTALLED, NO_SNAPSHOT, FAILED)
FAILED_DETAIL = "the play failed on this host before it reported (see ansible-playbook's output)"

# A cell's verdict: the worst finding of that domain on that host.
OK, WARNING, ERROR, NOT_CHECKED = "ok", "warning", "error", "not-checked"

# The keys that make two findings the same finding, whatever host reported it.
_SAME = ("file", "line", "domain", "interface", "mac", "code", "level", "message", "rule", "txmode")


class FleetInputError(ValueError):
    """The collected results are not what fleet-check.yml writes: exit 2."""


@dataclass(frozen=True, **SLOTS)
class HostInput:
    """One host as the playbook saw it; ``audit`` is audit's JSON output, unparsed."""

    name: str
    status: str
    detail: str = ""
    snapshot: Optional[Mapping[str, Any]] = None  # the fetched snapshot document
    audit: Optional[str] = None
    audit_rc: Optional[int] = None
    audit_stderr: str = ""


@dataclass(frozen=True, **SLOTS)
class FleetInput:
    """Everything fleet-report reads: each host's collection and the domains' check."""

    hosts: tuple[HostInput, ...]
    # validate-domain's JSON over the repository's domains; None: not run (no host snapshot)
    domains: Optional[Mapping[str, Any]] = None
    # file -> domain name, for the columns of files without findings
    domain_names: Mapping[str, str] = field(default_factory=dict)
    policy_path: Optional[str] = None
    policy_sha256: Optional[str] = None
    # The hosts whose snapshots validate-domain got, in --caps order: it names a host by the
    # snapshot's own host name (the file's when two share one), and lists them in that order.
    caps_hosts: tuple[str, ...] = ()


def parse_hosts(data: Any) -> tuple[HostInput, ...]:
    """The per-host list the playbook passes on stdin: ``{"hosts": [{"name": ..., ...}],
    "missing": [NAME, ...]}``, ``missing`` naming the hosts that recorded no result."""
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
        raise FleetInputError('expected a JSON object with a "hosts" list')
    missing = data.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise FleetInputError('"missing" must be a list of host names')
    hosts = []
    seen = set()
    for entry in data["hosts"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise FleetInputError("every host needs a name")
        status = entry.get("status")
        if status not in HOST_STATES:
            raise FleetInputError(
                f"host {entry['name']!r}: status {status!r} is not one of {', '.join(HOST_STATES)}"
            )
        if entry["name"] in seen:
            raise FleetInputError(f"host {entry['name']!r} is listed twice")
        seen.add(entry["name"])
        rc = entry.get("audit_rc")
        audit = entry.get("audit")
        if isinstance(audit, dict):
            # ansible-core before 2.19 turns a templated string that reads as a dict into one.
            audit = json.dumps(audit)
        hosts.append(
            HostInput(
                name=entry["name"],
                status=status,
                detail=str(entry.get("detail") or ""),
                audit=audit if isinstance(audit, str) else None,
                audit_rc=int(str(rc)) if isinstance(rc, int) or str(rc).isdigit() else None,
                audit_stderr=str(entry.get("audit_stderr") or ""),
            )
        )
    for name in missing:
        if name not in seen:
            seen.add(name)
            hosts.append(HostInput(name=name, status=FAILED, detail=FAILED_DETAIL))
    return tuple(hosts)


def parse_caps(data: Any) -> tuple[str, ...]:
    """The ``caps`` list of the same document: the hosts given to validate-domain, in order."""
    caps = data.get("caps", []) if isinstance(data, dict) else []
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise FleetInputError('"caps" must be a list of host names')
    return tuple(caps)


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(created: Any, now: datetime.datetime) -> Optional[int]:
    """Seconds since the snapshot was taken; None when its time is missing or unreadable."""
    if not isinstance(created, str) or not created:
        return None
    try:
        taken = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        return None
    return max(0, int((now - taken).total_seconds()))


def _snapshot_facts(
    snapshot: Optional[Mapping[str, Any]], now: datetime.datetime
) -> dict[str, Any]:
    if not snapshot:
        return {
            "snapshot_created": None,
            "snapshot_age_seconds": None,
            "libvirt": None,
            "qemu": None,
        }
    found = snapshot.get("libvirt")
    libvirt: Mapping[str, Any] = found if isinstance(found, dict) else {}
    return {
        "snapshot_created": snapshot.get("created") or None,
        "snapshot_age_seconds": _age(snapshot.get("created"), now),
        # libvirt's own version, and the QEMU version libvirt reports for its hypervisor
        "libvirt": libvirt.get("library_version"),
        "qemu": libvirt.get("hypervisor_version"),
    }


def _audit(host: HostInput) -> dict[str, Any]:
    """The host's audit: its exit code, counts and findings, or why there is none."""
    if host.status != CHECKED:
        return {"ran": False, "exit_code": None, "errors": 0, "warnings": 0, "findings": []}
    document: Any = None
    if host.audit:
        try:
            document = json.loads(host.audit)
        except ValueError:
            document = None
    if not isinstance(document, dict) or not isinstance(document.get("findings"), list):
        reason = host.audit_stderr.strip().splitlines()[-1:] or ["no JSON report"]
        return {
            "ran": False,
            "exit_code": host.audit_rc,
            "errors": 0,
            "warnings": 0,
            "findings": [],
            "error": f"audit exited {host.audit_rc}: {reason[0]}",
        }
    findings = [f for f in document["findings"] if isinstance(f, dict)]
    return {
        "ran": True,
        "exit_code": host.audit_rc,
        "time": document.get("time"),
        "errors": sum(1 for f in findings if f.get("level") == "error"),
        "warnings": sum(1 for f in findings if f.get("level") == "warning"),
        "findings": findings,
    }


def _group(pairs: Sequence[tuple[Mapping[str, Any], str]]) -> list[dict[str, Any]]:
    """(finding, host) pairs -> each distinct finding once, with the sorted hosts it applies to."""
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for finding, host in pairs:
        key = tuple(finding.get(k) for k in _SAME)
        entry = grouped.get(key)
        if entry is None:
            entry = {k: finding.get(k) for k in _SAME}
            entry["hosts"] = []
            grouped[key] = entry
        if host not in entry["hosts"]:
            entry["hosts"].append(host)
    result = list(grouped.values())
    for entry in result:
        entry["hosts"].sort()
    result.sort(
        key=lambda e: (
            str(e["domain"]),
            -1 if e["interface"] is None else e["interface"],
            str(e["code"]),
            str(e["file"]),
        )
    )
    return result


def _inventory_names(validated: Any, caps_hosts: Sequence[str]) -> dict[str, str]:
    """validate-domain's host names -> the playbook's, by position (both in --caps order)."""
    names = [str(h) for h in validated] if isinstance(validated, list) else []
    if not caps_hosts:
        return {name: name for name in names}
    if len(names) != len(caps_hosts):
        raise FleetInputError(
            f"validate-domain checked {len(names)} hosts, but {len(caps_hosts)} were passed as caps"
        )
    return dict(zip(names, caps_hosts))


def _hostless(finding: Mapping[str, Any], host: str) -> dict[str, Any]:
    """A host's finding worded for every host it applies to: validate-domain names the host in
    the message ("... on HOST does not have"), which would make one finding per host."""
    pattern = r" on " + re.escape(host) + r"(?=[\s:;,)]|$)"
    message = re.sub(pattern, " on these hosts", str(finding.get("message") or ""))
    return {**finding, "message": message}


def _worst(levels: Sequence[str]) -> str:
    if "error" in levels:
        return ERROR
    if "warning" in levels:
        return WARNING
    return OK


def build(data: FleetInput, now: datetime.datetime) -> dict[str, Any]:
    """The fleet report as a JSON-ready document (fleet.json)."""
    checked = [h.name for h in data.hosts if h.status == CHECKED]
    hosts: list[dict[str, Any]] = []
    for host in data.hosts:
        audit = _audit(host)
        hosts.append(
            {
                "name": host.name,
                "status": host.status,
                "detail": host.detail,
                **_snapshot_facts(host.snapshot, now),
                "audit": {k: v for k, v in audit.items() if k != "findings"},
                # A host fails for its own audit only: a finding there, or an audit that failed.
                "failed": host.status == CHECKED and (audit["errors"] > 0 or not audit["ran"]),
            }
        )

    domains: list[dict[str, Any]] = []
    repo_pairs: list[tuple[Mapping[str, Any], str]] = []
    if data.domains is not None:
        files = [f for f in data.domains.get("files", []) if isinstance(f, str)]
        inventory = _inventory_names(data.domains.get("hosts", []), data.caps_hosts)
        checked_by_validate = [h for h in inventory.values() if h in checked]
        names: dict[str, str] = dict(data.domain_names)
        for finding in data.domains.get("findings", []):
            if isinstance(finding, dict):
                if finding.get("domain") != "-":  # "-": a file that is no domain
                    names.setdefault(str(finding.get("file")), str(finding.get("domain")))
                owner = finding.get("host")
                if owner:
                    named = inventory.get(str(owner), str(owner))
                    repo_pairs.append((_hostless(finding, str(owner)), named))
                else:
                    repo_pairs.extend((finding, h) for h in checked_by_validate)
        domains = [{"file": f, "name": names.get(f)} for f in files]

    repo_findings = _group(repo_pairs)
    matrix: dict[str, dict[str, dict[str, Any]]] = {}
    for host in data.hosts:
        row: dict[str, dict[str, Any]] = {}
        for domain in domains:
            if host.status != CHECKED or data.domains is None:
                row[domain["file"]] = {"verdict": NOT_CHECKED, "findings": []}
                continue
            here = [
                f for f in repo_findings if f["file"] == domain["file"] and host.name in f["hosts"]
            ]
            row[domain["file"]] = {
                "verdict": _worst([str(f["level"]) for f in here]),
                "findings": [{k: f[k] for k in _SAME} for f in here],
            }
        matrix[host.name] = row

    audit_pairs = [
        (finding, host.name) for host in data.hosts for finding in _audit(host)["findings"]
    ]
    audit_findings = _group(audit_pairs)
    repo_errors = sum(1 for f in repo_findings if f["level"] == "error")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": {"name": "libvirt-txmode", "version": __version__},
        "time": _utc(now),
        "policy": {"path": data.policy_path, "sha256": data.policy_sha256},
        "hosts": hosts,
        "domains": domains,
        "domains_checked": data.domains is not None,
        "matrix": matrix,
        "findings": repo_findings,
        "audit_findings": audit_findings,
        "summary": {
            "hosts": len(hosts),
            "checked": checked,
            "unchecked": [h["name"] for h in hosts if h["status"] != CHECKED],
            "failed_audit": [h["name"] for h in hosts if h["failed"]],
            "domains": len(domains),
            "errors": repo_errors,
            "warnings": sum(1 for f in repo_findings if f["level"] == "warning"),
        },
    }


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """What the playbook prints: one line per host and one per repository finding."""
    lines = []
    for host in report["hosts"]:
        if host["status"] != CHECKED:
            lines.append(f"host {host['name']}: not checked ({host['status']}: {host['detail']})")
            continue
        audit = host["audit"]
        verdict = (
            f"audit: {audit['errors']} errors, {audit['warnings']} warnings"
            if audit["ran"]
            else audit.get("error", "audit did not run")
        )
        lines.append(f"host {host['name']}: checked, {verdict}")
    for finding in report["findings"]:
        lines.append(f"{finding_text(finding)} (hosts: {', '.join(finding['hosts'])})")
    summary = report["summary"]
    lines.append(
        f"{summary['hosts']} hosts ({len(summary['checked'])} checked"
        + (f"; not checked: {', '.join(summary['unchecked'])}" if summary["unchecked"] else "")
        + (
            f"), {summary['domains']} repository domains: {summary['errors']} errors, "
            f"{summary['warnings']} warnings"
            if report["domains_checked"]
            else "), repository domains not checked: no host's snapshot"
        )
    )
    return lines


def finding_text(finding: Mapping[str, Any]) -> str:
    """A grouped finding the way validate-domain words one: domain, NIC (index, MAC), rule."""
    who = f"domain '{printable(str(finding.get('domain')))}'"
    if finding.get("interface") is not None:
        who += f" NIC #{finding['interface']} ({printable(str(finding.get('mac') or 'no MAC'))})"
    tags = [str(finding.get("code"))]
    rule = finding.get("rule")
    message = str(finding.get("message") or "")
    if rule and f"rule '{rule}'" not in message:
        tags.append(f"rule '{printable(str(rule))}'")
    return f"{who}: {printable(message)} [{', '.join(tags)}]"
