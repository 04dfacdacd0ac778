"""The fleet report: one finding per domain and NIC with its hosts, hosts that could not be checked
named, the HTML escaped and rendered by a real browser (Debian's chromium)."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from lxml import html as lxml_html

from libvirt_txmode.admin.audit import with_host_and_time
from libvirt_txmode.report.fleet import FleetInput, HostInput, build, parse_hosts, summary_lines
from libvirt_txmode.report.fleet_render import to_html, to_junit
from tests.libvirt_env import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)
EVIL = "<img src=x onerror=alert(1)>&amp;"


def snapshot(created: str = "2026-12-03T11:00:00Z") -> dict[str, Any]:
    return {
        "created": created,
        "libvirt": {"library_version": "9.0.0", "hypervisor_version": "7.2.22"},
    }


def finding(domain: str, code: str, host: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "file": f"domains/{domain}.xml",
        "line": 17,
        "domain": domain,
        "interface": 1,
        "mac": "52:54:00:10:00:13",
        "code": code,
        "level": "error",
        "message": f"txmode 'timer' is not allowed by rule 'defaults' (allowed: iothread){extra.pop('suffix', '')}",
        "rule": "defaults",
        "txmode": "timer",
        "host": host,
        **extra,
    }


def audit(*findings: dict[str, Any]) -> str:
    return json.dumps({"findings": list(findings), "time": "2026-12-03T11:59:00Z", "host": "x"})


def fleet(
    domains_findings: list[dict[str, Any]],
    hosts: tuple[HostInput, ...],
    validated: list[str] | None = None,
) -> dict[str, Any]:
    """The report of ``hosts``; ``validated``: how validate-domain named the checked hosts (by
    their snapshots' host names; default: as the inventory does)."""
    checked = tuple(h.name for h in hosts if h.status == "checked")
    report = {
        "files": ["domains/web.xml", "domains/old.xml"],
        "hosts": validated if validated is not None else list(checked),
        "findings": domains_findings,
    }
    return build(
        FleetInput(
            hosts=hosts,
            domains=report,
            domain_names={"domains/web.xml": "web", "domains/old.xml": "old"},
            policy_path="site-policy.yaml",
            policy_sha256="ab" * 32,
            caps_hosts=checked,
        ),
        NOW,
    )


THREE = (
    HostInput("deb12-a", "checked", snapshot=snapshot(), audit=audit(), audit_rc=0),
    HostInput("deb12-b", "checked", snapshot=snapshot("2026-12-01T12:00:00Z"), audit_rc=0,
              audit=audit(finding("legacy", "txmode-not-allowed", host="b"))),
    HostInput("gone", "unreachable", detail="Failed to connect to the host via ssh"),
)  # fmt: skip


def test_a_policy_finding_is_one_finding_for_every_checked_host() -> None:
    report = fleet([finding("old", "txmode-not-allowed")], THREE)
    (only,) = report["findings"]
    assert only["domain"] == "old" and only["interface"] == 1
    assert only["hosts"] == ["deb12-a", "deb12-b"]  # not the host that was not checked
    assert report["summary"]["errors"] == 1
    assert report["summary"]["unchecked"] == ["gone"]
    assert report["time"] == "2026-12-03T12:00:00Z"
    assert report["policy"] == {"path": "site-policy.yaml", "sha256": "ab" * 32}


def test_a_host_specific_finding_groups_across_hosts_without_naming_one() -> None:
    on_a = finding("old", "txmode-unsupported", host="deb12-a", suffix=" on deb12-a")
    on_b = finding("old", "txmode-unsupported", host="deb12-b", suffix=" on deb12-b")
    report = fleet([on_a, on_b], THREE)
    (only,) = report["findings"]
    assert only["hosts"] == ["deb12-a", "deb12-b"]
    assert "deb12-a" not in only["message"] and only["message"].endswith(" on these hosts")
    # One host alone: its row has the finding, the other's cell is clean.
    report = fleet([on_a], THREE)
    assert report["matrix"]["deb12-a"]["domains/old.xml"]["verdict"] == "error"
    assert report["matrix"]["deb12-b"]["domains/old.xml"]["verdict"] == "ok"


def test_hosts_are_named_as_the_inventory_names_them_whatever_the_snapshots_say() -> None:
    # Two hosts whose snapshots carry one host name: validate-domain tells them apart by file
    # name; with distinct names it uses the snapshots' own (here the machines' hostnames).
    for validated in (["deb12-a", "deb12-b"], ["hv1.example.org", "hv2.example.org"]):
        second = validated[1]
        on_b = finding("old", "txmode-unsupported", host=second, suffix=f" on {second}")
        report = fleet([finding("web", "txmode-required"), on_b], THREE, validated)
        by_code = {f["code"]: f for f in report["findings"]}
        assert by_code["txmode-required"]["hosts"] == ["deb12-a", "deb12-b"]
        assert by_code["txmode-unsupported"]["hosts"] == ["deb12-b"]
        assert report["matrix"]["deb12-b"]["domains/old.xml"]["verdict"] == "error"
        assert report["matrix"]["deb12-a"]["domains/old.xml"]["verdict"] == "ok"
    with pytest.raises(ValueError, match="validate-domain checked 1 hosts, but 2"):
        fleet([], THREE, ["hv1"])


def test_matrix_hosts_and_audits() -> None:
    report = fleet([finding("old", "txmode-not-allowed")], THREE)
    matrix = report["matrix"]
    assert matrix["deb12-a"]["domains/web.xml"] == {"verdict": "ok", "findings": []}
    cell = matrix["deb12-b"]["domains/old.xml"]
    assert cell["verdict"] == "error" and cell["findings"][0]["code"] == "txmode-not-allowed"
    assert {c["verdict"] for c in matrix["gone"].values()} == {"not-checked"}
    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["deb12-a"]["snapshot_age_seconds"] == 3600
    assert hosts["deb12-b"]["snapshot_age_seconds"] == 2 * 86400
    assert (hosts["deb12-a"]["libvirt"], hosts["deb12-a"]["qemu"]) == ("9.0.0", "7.2.22")
    # A host fails for its own audit only; the one not reached is named, not failed.
    assert [h["failed"] for h in report["hosts"]] == [False, True, False]
    assert report["summary"]["failed_audit"] == ["deb12-b"]
    assert hosts["gone"]["detail"] == "Failed to connect to the host via ssh"
    (audited,) = report["audit_findings"]
    assert audited["domain"] == "legacy" and audited["hosts"] == ["deb12-b"]
    lines = summary_lines(report)
    assert "host gone: not checked (unreachable: Failed to connect to the host via ssh)" in lines
    assert lines[-1] == (
        "3 hosts (2 checked; not checked: gone), 2 repository domains: 1 errors, 0 warnings"
    )


def test_an_audit_without_a_report_fails_its_host_with_the_reason() -> None:
    broken = HostInput(
        "deb12-a", "checked", audit="", audit_rc=2, audit_stderr="libvirt-txmode: error: bad policy"
    )
    report = fleet([], (broken,))
    (host,) = report["hosts"]
    assert host["failed"] and host["audit"]["error"] == (
        "audit exited 2: libvirt-txmode: error: bad policy"
    )


def test_parse_hosts_takes_audits_as_both_ansible_versions_pass_them() -> None:
    # ansible-core 2.14 hands the audit's JSON stdout over as an object, and its rc as text.
    document = json.loads(audit(finding("legacy", "txmode-not-allowed")))
    for value, rc in ((document, "1"), (json.dumps(document), 1)):
        (host,) = parse_hosts(
            {"hosts": [{"name": "a", "status": "checked", "audit": value, "audit_rc": rc}]}
        )
        report = fleet([], (host,))
        assert report["hosts"][0]["audit"]["errors"] == 1 and report["hosts"][0]["failed"]
        assert report["hosts"][0]["audit"]["exit_code"] == 1


def test_parse_hosts_refuses_what_the_playbook_never_writes() -> None:
    with pytest.raises(ValueError, match="status 'maybe'"):
        parse_hosts({"hosts": [{"name": "a", "status": "maybe"}]})
    with pytest.raises(ValueError, match="listed twice"):
        parse_hosts({"hosts": [{"name": "a", "status": "checked"}] * 2})
    with pytest.raises(ValueError, match='"hosts" list'):
        parse_hosts([])


def test_html_escapes_untrusted_names() -> None:
    hosts = (HostInput("deb12-a", "checked", snapshot=snapshot(), audit=audit(), audit_rc=0),)
    bad = finding(EVIL, "txmode-not-allowed", mac="\x1b[31m", file="domains/old.xml")
    page = to_html(fleet([bad], hosts))
    assert "<img" not in page and "\x1b" not in page
    tree = lxml_html.fromstring(page)
    assert not tree.xpath("//img|//script") and not tree.xpath("//@onerror")
    assert EVIL in tree.text_content()
    junit = etree.fromstring(to_junit(fleet([bad], hosts)))
    assert EVIL in junit.findtext(".//failure")


def test_junit_has_a_case_per_domain_and_per_host() -> None:
    suites = etree.fromstring(to_junit(fleet([finding("old", "txmode-not-allowed")], THREE)))
    domains, hosts = suites.findall("testsuite")
    assert [c.get("name") for c in domains] == ["web", "old"]
    assert domains.find("testcase[@name='old']/failure") is not None
    assert "(hosts: deb12-a, deb12-b)" in domains.findtext("testcase[@name='old']/failure")
    assert hosts.find("testcase[@name='gone']/error").get("message").startswith("unreachable")
    assert hosts.find("testcase[@name='deb12-b']/failure") is not None
    assert hosts.find("testcase[@name='deb12-a']/failure") is None


def test_audit_json_names_its_host_and_time() -> None:
    document = json.dumps({"findings": [{"code": "txmode-not-allowed", "host": None}]})
    data = json.loads(with_host_and_time(document, "hv1", 1796212800.0))
    assert data["host"] == "hv1" and data["findings"][0]["host"] == "hv1"
    assert data["time"] == "2026-12-02T12:00:00Z"


def run_report(tmp_path: Path, hosts: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "libvirt-txmode"), "fleet-report", "--hosts", "-", "-o", str(tmp_path / "out"),
         *extra],
        input=hosts, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_fleet_report_command_writes_three_files_and_exits_on_repository_errors(
    tmp_path: Path,
) -> None:
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    for host in ("deb12-a", "deb12-b"):
        shutil.copy(REPO / "examples" / "hosts" / "debian12.json", snaps / f"{host}.json")
    domains = tmp_path / "domains.json"
    validate = subprocess.run(
        [str(BIN / "validate-domain"), "-p", str(REPO / "policy.yaml"), "-f", "json",
         f"--caps={snaps}/deb12-a.json", f"--caps={snaps}/deb12-b.json", "--all-hosts",
         "-o", str(domains), str(REPO / "examples" / "domains" / "04-storage-timer.xml"),
         str(REPO / "examples" / "domains" / "01-web-iothread.xml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert validate.returncode == 1, validate.stderr
    hosts = json.dumps(
        {
            "hosts": [
                {"name": "deb12-a", "status": "checked", "audit": audit(), "audit_rc": 0},
                {
                    "name": "deb12-b",
                    "status": "not-installed",
                    "detail": "no /usr/bin/libvirt-txmode",
                },
            ]
        }
    )
    common = ["--domains-report", str(domains), "--snapshots-dir", str(snaps)]
    result = run_report(tmp_path, hosts, *common, "--policy", str(REPO / "policy.yaml"))
    assert result.returncode == 1, result.stderr
    assert "host deb12-b: not checked (not-installed: no /usr/bin/libvirt-txmode)" in result.stdout
    report = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert [d["name"] for d in report["domains"]] == ["backup-03", "web-01"]
    (only,) = report["findings"]
    assert only["hosts"] == ["deb12-a"] and only["domain"] == "backup-03"
    assert len(report["policy"]["sha256"]) == 64
    assert (tmp_path / "out" / "fleet.html").read_text().startswith("<!DOCTYPE html>")
    etree.parse(str(tmp_path / "out" / "fleet-junit.xml"))
    # Bad input: one line, exit 2, no traceback, no report.
    shutil.rmtree(tmp_path / "out")
    bad = run_report(tmp_path, '{"hosts": [{"name": "a", "status": "maybe"}]}')
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "status 'maybe'" in bad.stderr and not (tmp_path / "out").exists()


# What the browser shows: each host row's cells as rendered text (innerText follows layout and CSS,
# so hidden text would not count), and whether each cell has a visible box.
PROBE = """<script>
const rows = [...document.querySelectorAll('#matrix tbody tr')].map(tr => [...tr.cells].map(c => {
  const box = c.getBoundingClientRect();
  return {text: c.innerText, visible: box.width > 0 && box.height > 0};
}));
const head = [...document.querySelectorAll('#matrix thead th')].map(th => th.innerText);
const out = document.createElement('pre');
out.id = 'probe';
out.textContent = JSON.stringify({rows, head, title: document.title});
document.body.appendChild(out);
</script>"""


def browser_view(page: Path, work: Path) -> dict[str, Any]:
    """``page`` as chromium renders it: the matrix's header texts and each row's cells."""
    found = shutil.which("chromium")
    if found is None:
        skip_unless_ci("needs Debian's chromium (scripts/apt-deps chromium)")
    # The probe goes into a copy: the report itself carries no script.
    copy = work / f"probe-{page.name}"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [str(found), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200",
         f"--user-data-dir={work / 'chromium-profile'}", "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    probe = lxml_html.fromstring(result.stdout).get_element_by_id("probe")
    seen: dict[str, Any] = json.loads(probe.text_content())
    assert seen["title"] == "libvirt-txmode fleet report"
    return seen


def test_fleet_html_in_a_real_browser(tmp_path: Path) -> None:
    report = fleet([finding("old", "txmode-not-allowed")], THREE)
    page = tmp_path / "fleet.html"
    page.write_text(to_html(report))
    assert "<script" not in page.read_text()
    seen = browser_view(page, tmp_path)
    rows = seen["rows"]
    assert [row[0]["text"] for row in rows] == ["deb12-a", "deb12-b", "gone"]
    column = seen["head"].index("old")
    for name, row in zip(("deb12-a", "deb12-b"), rows):
        cell = row[column]
        assert cell["visible"], name
        assert "txmode-not-allowed" in cell["text"] and "NIC #1" in cell["text"], (name, cell)
        assert "52:54:00:10:00:13" in cell["text"]
    assert rows[0][seen["head"].index("web")]["text"] == "ok"
    assert rows[2][column]["text"] == "not-checked"
    assert rows[2][1]["text"].startswith("unreachable")
