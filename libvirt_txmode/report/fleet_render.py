"""The fleet report (fleet.build's document) as a static HTML page and as JUnit XML.

The page is self-contained (inline style, no script, nothing fetched) so it can be attached to a
ticket or served from any directory. Every name in it comes from hosts or untrusted domain XML:
text goes through ``printable`` (control characters) and ``html.escape`` (markup), and nothing
untrusted lands in an attribute except escaped, quoted values.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, Optional

from lxml import etree

from ..common.text import printable
from .fleet import CHECKED, NOT_CHECKED, finding_text

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #eee; }
td.ok { background: #dfd; }
td.warning { background: #ffd; }
td.error { background: #fcc; }
td.not-checked { background: #ddd; color: #555; }
ul { margin: 0.2em 0; padding-left: 1.2em; }
.small { font-size: 85%; color: #444; }
"""


def _t(value: Any) -> str:
    return html.escape(printable(str(value)), quote=True)


def _age(seconds: Optional[int]) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _nic(finding: Mapping[str, Any]) -> str:
    if finding.get("interface") is None:
        return "whole file"
    return f"NIC #{finding['interface']} ({finding.get('mac') or 'no MAC'})"


def _cell(cell: Mapping[str, Any]) -> str:
    verdict = cell["verdict"]
    if not cell["findings"]:
        return f'<td class="{verdict}">{_t(verdict)}</td>'
    items = "".join(
        f"<li>{_t(_nic(f))}: {_t(f['code'])}"
        + (f" ({_t(f['txmode'])})" if f.get("txmode") else "")
        + "</li>"
        for f in cell["findings"]
    )
    return f'<td class="{verdict}">{_t(verdict)}<ul>{items}</ul></td>'


def _audit_cell(host: Mapping[str, Any]) -> str:
    audit = host["audit"]
    if host["status"] != CHECKED:
        return f'<td class="{NOT_CHECKED}">-</td>'
    if not audit["ran"]:
        return f'<td class="error">{_t(audit.get("error", "did not run"))}</td>'
    verdict = "error" if audit["errors"] else "warning" if audit["warnings"] else "ok"
    return f'<td class="{verdict}">{audit["errors"]} errors, {audit["warnings"]} warnings</td>'


def _findings_table(findings: list[Mapping[str, Any]], empty: str) -> str:
    if not findings:
        return f"<p>{_t(empty)}</p>"
    rows = "".join(
        "<tr>"
        f"<td>{_t(f['domain'])}</td><td>{_t(_nic(f))}</td><td>{_t(f['level'])}</td>"
        f'<td>{_t(finding_text(f))}<div class="small">{_t(f["file"])}:{_t(f["line"])}</div></td>'
        f"<td>{_t(', '.join(f['hosts']))}</td>"
        "</tr>"
        for f in findings
    )
    return (
        "<table><thead><tr><th>domain</th><th>NIC</th><th>level</th><th>finding</th>"
        f"<th>hosts</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def to_html(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    domains = report["domains"]
    head = "".join(
        f'<th title="{_t(d["file"])}">{_t(d["name"] or d["file"])}</th>' for d in domains
    )
    rows = []
    for host in report["hosts"]:
        status = (
            host["status"] if host["status"] == CHECKED else f"{host['status']}: {host['detail']}"
        )
        cells = "".join(_cell(report["matrix"][host["name"]][d["file"]]) for d in domains)
        rows.append(
            f'<tr class="host" data-host="{_t(host["name"])}">'
            f"<th>{_t(host['name'])}</th>"
            f'<td class="{"ok" if host["status"] == CHECKED else NOT_CHECKED}">{_t(status)}</td>'
            f"<td>{_t(_age(host['snapshot_age_seconds']))}</td>"
            f"<td>{_t(host['libvirt'] or '-')}</td><td>{_t(host['qemu'] or '-')}</td>"
            f"{_audit_cell(host)}{cells}</tr>"
        )
    unchecked = (
        f"; not checked: {_t(', '.join(summary['unchecked']))}" if summary["unchecked"] else ""
    )
    policy = report["policy"]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>libvirt-txmode fleet report</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>libvirt-txmode fleet report</h1>"
        f'<p class="small">{_t(report["time"])} · libvirt-txmode {_t(report["tool"]["version"])}'
        f" · policy {_t(policy['path'] or 'default')} sha256 {_t(policy['sha256'] or '-')}</p>"
        f'<p id="summary">{summary["hosts"]} hosts, {len(summary["checked"])} checked'
        f"{unchecked}; {summary['domains']} repository domains: {summary['errors']} errors, "
        f"{summary['warnings']} warnings</p>"
        '<h2>Hosts by repository domains</h2><table id="matrix"><thead><tr><th>host</th>'
        "<th>status</th><th>snapshot age</th><th>libvirt</th><th>QEMU</th><th>audit</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h2>Repository findings</h2>"
        + _findings_table(
            report["findings"],
            "No finding."
            if report["domains_checked"]
            else "Not checked: no host's snapshot was available.",
        )
        + "<h2>Host audits</h2>"
        + _findings_table(report["audit_findings"], "No finding.")
        + "</body></html>\n"
    )


def to_junit(report: Mapping[str, Any]) -> bytes:
    """Two suites: one case per repository domain (failing with its findings and their hosts),
    one per host (failing for its own audit, an error when it could not be checked)."""
    root = etree.Element("testsuites", name="libvirt-txmode fleet")
    domains = etree.SubElement(root, "testsuite", name="fleet.domains")
    failures = 0
    for domain in report["domains"]:
        case = etree.SubElement(
            domains,
            "testcase",
            classname="fleet.domains",
            name=printable(str(domain["name"] or domain["file"])),
            file=printable(domain["file"]),
        )
        here = [f for f in report["findings"] if f["file"] == domain["file"]]
        if any(f["level"] == "error" for f in here):
            failures += 1
            failure = etree.SubElement(case, "failure", message=f"{len(here)} findings")
            failure.text = "\n".join(
                f"{finding_text(f)} (hosts: {', '.join(f['hosts'])})" for f in here
            )
    domains.set("tests", str(len(report["domains"])))
    domains.set("failures", str(failures))
    hosts = etree.SubElement(root, "testsuite", name="fleet.hosts")
    failures = errors = 0
    for host in report["hosts"]:
        case = etree.SubElement(
            hosts, "testcase", classname="fleet.hosts", name=printable(host["name"])
        )
        if host["status"] != CHECKED:
            errors += 1
            etree.SubElement(
                case, "error", message=printable(f"{host['status']}: {host['detail']}")
            )
        elif host["failed"]:
            failures += 1
            audit = host["audit"]
            failure = etree.SubElement(
                case,
                "failure",
                message=printable(
                    f"audit: {audit['errors']} errors"
                    if audit["ran"]
                    else audit.get("error", "audit did not run")
                ),
            )
            failure.text = "\n".join(
                finding_text(f) for f in report["audit_findings"] if host["name"] in f["hosts"]
            )
    hosts.set("tests", str(len(report["hosts"])))
    hosts.set("failures", str(failures))
    hosts.set("errors", str(errors))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
