"""Policy exceptions: what they match, when they end, and how every report shows what they
silenced (validate-domain text -v, JSON, SARIF suppressions, the hook's log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.engine import codes
from libvirt_txmode.engine.check import check_domain
from libvirt_txmode.engine.exceptions import apply
from libvirt_txmode.engine.model import Finding, Level, Suppression
from libvirt_txmode.engine.policy import PolicyError, parse_policy
from libvirt_txmode.hook.gate import _decide
from libvirt_txmode.report.registry import FORMAT_NAMES

from .test_cli import EMULATOR, domain_xml, nic, snapshot

BIN = Path(sys.executable).parent
VALIDATE = str(BIN / "validate-domain")

BASE = (
    "version: 1\n"
    "rules:\n"
    "  - name: no-timer\n"
    "    match: {domain: 'legacy-*'}\n"
    "    allowed: [iothread]\n"
)
# legacy-01 has two timer NICs (both txmode-not-allowed under rule 'no-timer').
LEGACY = domain_xml(
    "legacy-01",
    nic("52:54:00:00:00:0A", "virtio", "timer") + nic("52:54:00:00:00:0b", "virtio", "timer"),
)
TODAY = "2026-12-03"


def policy_with(exceptions: str):  # type: ignore[no-untyped-def]
    return parse_policy(BASE + "exceptions:\n" + exceptions, "policy.yaml")


def finding(**changes: object) -> Finding:
    values: dict[str, object] = {
        "file": "vm.xml",
        "line": 5,
        "domain": "legacy-01",
        "code": codes.NOT_ALLOWED,
        "level": Level.ERROR,
        "message": "txmode 'timer' is not allowed by rule 'no-timer' (allowed: iothread)",
        "interface": 0,
        "mac": "52:54:00:00:00:0a",
        "txmode": "timer",
        "rule": "no-timer",
    }
    values.update(changes)
    return Finding(**values)  # type: ignore[arg-type]


# --- the schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "  - match: {domain: x}\n",
            "policy.yaml:7: exceptions[0].reason: every exception needs a reason "
            "(it is reported with what it silences)",
        ),
        (
            "  - reason: because\n",
            "policy.yaml:7: exceptions[0].match: every exception needs a match "
            "(domain, mac, rule and/or code)",
        ),
        (
            "  - match: {}\n    reason: everything\n",
            "policy.yaml:7: exceptions[0].match: needs at least one of: domain, mac, rule, code "
            "(an empty match fits all)",
        ),
        (
            "  - match: {network: x}\n    reason: r\n",
            "policy.yaml:7: exceptions[0].match.network: unknown key "
            "(expected one of: domain, mac, rule, code)",
        ),
        (
            "  - match: {domain: x}\n    reason: r\n    expires: 2027-02-30\n",
            "policy.yaml:9: exceptions[0].expires: expected a date as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (
            "  - match: {domain: x}\n    reason: r\n    expires: next spring\n",
            "policy.yaml:9: exceptions[0].expires: expected a date as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
    ],
)
def test_schema_refuses(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_with(text)
    assert str(info.value) == expected


def test_quoted_and_unquoted_dates_read_alike() -> None:
    plain = policy_with("  - match: {domain: x}\n    reason: r\n    expires: 2027-03-01\n")
    quoted = policy_with("  - match: {domain: x}\n    reason: r\n    expires: '2027-03-01'\n")
    assert plain.exceptions == quoted.exceptions
    (item,) = plain.exceptions
    assert (item.index, item.line, item.expires, item.domain) == (0, 7, "2027-03-01", "x")


# --- applying them (the engine, with "today" given) -----------------------------------------------


def test_unexpired_exception_silences_exactly_its_finding() -> None:
    policy = policy_with(
        "  - match: {domain: 'legacy-*', mac: '52:54:00:00:00:0A', code: txmode-not-allowed}\n"
        "    reason: vendor appliance (OPS-1)\n"
        "    expires: 2027-03-31\n"
    )
    first, second = finding(), finding(interface=1, mac="52:54:00:00:00:0b", line=10)
    result = apply([first, second], policy, TODAY)
    assert result == [
        finding(suppression=Suppression(0, 7, "vendor appliance (OPS-1)", "2027-03-31")),
        second,
    ]


def test_last_day_still_applies_and_the_next_does_not() -> None:
    policy = policy_with("  - match: {domain: legacy-01}\n    reason: r\n    expires: 2026-12-03\n")
    (kept,) = apply([finding()], policy, "2026-12-03")
    assert kept.suppression is not None
    original, expired = apply([finding()], policy, "2026-12-04")
    assert original == finding()
    assert expired.code == codes.EXCEPTION_EXPIRED
    assert expired.level is Level.WARNING
    assert (expired.file, expired.line, expired.domain, expired.interface, expired.mac) == (
        "vm.xml",
        5,
        "legacy-01",
        0,
        "52:54:00:00:00:0a",
    )
    assert expired.message == (
        "exception #0 (policy.yaml:7) has expired (its last day was 2026-12-03): it no longer "
        "silences txmode-not-allowed (its reason: r)"
    )


def test_first_unexpired_exception_wins_and_expired_ones_only_speak_when_nothing_covers() -> None:
    policy = policy_with(
        "  - match: {rule: no-timer}\n    reason: old\n    expires: 2020-01-01\n"
        "  - match: {code: 'txmode-*'}\n    reason: new\n"
    )
    (result,) = apply([finding()], policy, TODAY)
    assert result.suppression == Suppression(1, 10, "new", None)


@pytest.mark.parametrize(
    "match",
    [
        "{domain: other}",
        "{mac: '52:54:00:00:00:0b'}",
        "{rule: defaults}",
        "{code: txmode-required}",
        "{domain: 'legacy-*', code: txmode-required}",  # ANDed
    ],
)
def test_an_exception_that_does_not_fit_changes_nothing(match: str) -> None:
    policy = policy_with(f"  - match: {match}\n    reason: r\n")
    assert apply([finding()], policy, TODAY) == [finding()]


def test_a_finding_without_mac_or_rule_fits_no_pattern_on_them() -> None:
    policy = policy_with(
        "  - match: {mac: '*'}\n    reason: r\n  - match: {rule: '*'}\n    reason: r\n"
    )
    bare = finding(mac=None, rule=None, interface=None)
    assert apply([bare], policy, TODAY) == [bare]


def test_an_unreadable_file_is_never_silenced() -> None:
    policy = policy_with("  - match: {code: '*'}\n    reason: everything\n")
    broken = finding(code=codes.XML_INVALID, domain="-", interface=None, mac=None, rule=None)
    assert apply([broken], policy, TODAY) == [broken]


def test_exception_expired_is_never_silenced() -> None:
    policy = policy_with(
        "  - match: {domain: legacy-01}\n    reason: r\n    expires: 2020-01-01\n"
        "  - match: {code: exception-expired}\n    reason: hide it\n"
    )
    found = apply([finding()], policy, TODAY)
    assert [f.code for f in found] == [codes.NOT_ALLOWED, codes.EXCEPTION_EXPIRED]
    assert all(f.suppression is None for f in found)


def test_engine_findings_of_a_real_domain() -> None:
    from libvirt_txmode.engine.domain_xml import parse_domain

    policy = policy_with("  - match: {mac: '52:54:00:00:00:0a'}\n    reason: r\n")
    domain = parse_domain(LEGACY.encode(), "legacy.xml")
    found = apply(check_domain(domain, policy, []), policy, TODAY)
    assert [(f.interface, f.code, f.suppression is not None) for f in found] == [
        (0, codes.NOT_ALLOWED, True),
        (1, codes.NOT_ALLOWED, False),
    ]


# --- the hook's decision and log -----------------------------------------------------------------


def test_hook_allows_a_silenced_violation_and_logs_the_exception() -> None:
    silenced = finding(suppression=Suppression(0, 7, "vendor appliance (OPS-1)", "2027-03-31"))
    decision = _decide("legacy-01", [silenced], "/etc/libvirt-txmode/policy.yaml")
    assert decision.code == 0
    assert decision.stderr == ()
    excepted, allowed = decision.logs
    assert excepted.message == (
        "excepted: domain 'legacy-01' NIC #0 (52:54:00:00:00:0a): txmode 'timer' is not allowed "
        "by rule 'no-timer' (allowed: iothread) [txmode-not-allowed] (silenced by exception #0, "
        "until 2027-03-31: vendor appliance (OPS-1))"
    )
    assert excepted.fields["DECISION"] == "excepted"
    assert excepted.fields["CODE"] == codes.NOT_ALLOWED
    assert allowed.message == "allowed domain 'legacy-01'"


def test_hook_refuses_when_the_exception_has_expired() -> None:
    policy = policy_with("  - match: {domain: legacy-01}\n    reason: r\n    expires: 2020-01-01\n")
    decision = _decide("legacy-01", apply([finding()], policy, TODAY), policy.source)
    assert decision.code == 1
    assert decision.stderr[-1] == (
        "libvirt-txmode: refusing to start domain 'legacy-01': 1 violation of policy.yaml"
    )


# --- validate-domain's reports -------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "legacy.xml").write_text(LEGACY)
    (tmp_path / "h1.json").write_text(snapshot("h1", tx=True))
    return tmp_path


def run_validate(repo: Path, exceptions: str, *args: str) -> subprocess.CompletedProcess[str]:
    (repo / "policy.yaml").write_text(BASE + "exceptions:\n" + exceptions)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    return subprocess.run(
        [VALIDATE, "-p", "policy.yaml", "--caps", "h1.json", "--no-cache", *args, "legacy.xml"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


FUTURE = (
    "  - match: {mac: '52:54:00:00:00:0a'}\n    reason: vendor appliance\n    expires: 2999-01-01\n"
)
PAST = (
    "  - match: {mac: '52:54:00:00:00:0a'}\n    reason: vendor appliance\n    expires: 2001-01-01\n"
)
BOTH = "  - match: {domain: legacy-01}\n    reason: all of it, for now\n"


def test_validate_domain_text_lists_silenced_findings_with_v(repo: Path) -> None:
    result = run_validate(repo, BOTH, "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "legacy.xml:5: silenced: domain 'legacy-01' NIC #0 (52:54:00:00:00:0A): txmode 'timer' "
        "is not allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed] (was error; "
        "exception #0: all of it, for now)"
    )
    assert lines[-1] == (
        "1 file, 1 domain, 2 NICs: 0 errors, 0 warnings; 2 findings silenced by policy exceptions"
    )
    quiet = run_validate(repo, BOTH)
    assert quiet.stdout == (
        "1 file, 1 domain, 2 NICs: 0 errors, 0 warnings; 2 findings silenced by policy "
        "exceptions (-v lists them)\n"
    )


def test_future_exception_is_a_sarif_suppression(repo: Path) -> None:
    # The domain writes the MAC as 0A, the exception as 0a: MACs match in either case.
    result = run_validate(repo, FUTURE, "-f", "sarif")
    assert result.returncode == 1  # the other NIC is still an error
    results = json.loads(result.stdout)["runs"][0]["results"]
    by_mac = {r["properties"]["mac"]: r for r in results}
    assert set(by_mac) == {"52:54:00:00:00:0A", "52:54:00:00:00:0b"}
    assert by_mac["52:54:00:00:00:0A"]["suppressions"] == [
        {
            "kind": "external",
            "status": "accepted",
            "justification": "vendor appliance",
            "properties": {"exception": 0, "expires": "2999-01-01", "line": 7},
        }
    ]
    assert "suppressions" not in by_mac["52:54:00:00:00:0b"]


def test_past_exception_is_an_exception_expired_finding(repo: Path) -> None:
    result = run_validate(repo, PAST, "-f", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert [(f["code"], f["mac"], f["level"]) for f in data["findings"]] == [
        ("exception-expired", "52:54:00:00:00:0A", "warning"),
        ("txmode-not-allowed", "52:54:00:00:00:0A", "error"),
        ("txmode-not-allowed", "52:54:00:00:00:0b", "error"),
    ]
    assert data["suppressed"] == []
    assert data["summary"]["errors"] == 2
    assert data["summary"]["warnings"] == 1


def test_json_lists_silenced_findings_beside_the_counted_ones(repo: Path) -> None:
    result = run_validate(repo, FUTURE, "-f", "json")
    data = json.loads(result.stdout)
    assert [f["mac"] for f in data["findings"]] == ["52:54:00:00:00:0b"]
    (silenced,) = data["suppressed"]
    assert silenced["mac"] == "52:54:00:00:00:0A"
    assert silenced["suppression"] == {
        "exception": 0,
        "line": 7,
        "reason": "vendor appliance",
        "expires": "2999-01-01",
    }
    assert data["summary"]["suppressed"] == 1
    assert data["summary"]["errors"] == 1


def test_github_and_junit_leave_silenced_findings_out(repo: Path) -> None:
    github = run_validate(repo, FUTURE, "-f", "github")
    assert "52:54:00:00:00:0A" not in github.stdout
    assert "52:54:00:00:00:0b" in github.stdout
    junit = run_validate(repo, BOTH, "-f", "junit")
    assert junit.returncode == 0
    assert "<failure" not in junit.stdout


def test_snapshot_emulator_is_the_one_the_domain_resolves() -> None:
    # The reports above rest on the snapshot knowing this emulator (else: unknown support).
    assert EMULATOR in snapshot("h1", tx=True)


# --- validate-domain --generate-exceptions (progressive adoption) ---------------------------------


def test_generated_exceptions_silence_todays_findings_and_check_policy_flags_them(
    repo: Path,
) -> None:
    odd = domain_xml("odd*name[1]", nic("52:54:00:00:00:0C", "virtio", "timer"))
    (repo / "odd.xml").write_text(odd)
    (repo / "policy.yaml").write_text(BASE.replace("'legacy-*'", "'*'"))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    command = [VALIDATE, "-p", "policy.yaml", "--caps", "h1.json", "--no-cache"]
    before = subprocess.run(
        [*command, "legacy.xml", "odd.xml"], cwd=repo, capture_output=True, text=True, env=env
    )
    assert before.returncode == 1
    generated = subprocess.run(
        [*command, "--generate-exceptions", "-o", "exceptions.yaml", "legacy.xml", "odd.xml"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert generated.returncode == 1  # the exit code is the run's, whatever is written
    assert "txmode-not-allowed" in generated.stdout  # the terminal still gets the text report
    text = (repo / "exceptions.yaml").read_text()
    assert text.count("\n    reason: TODO\n") == 3
    assert '{domain: "odd[*]name[[]1]", mac: "52:54:00:00:00:0c", rule: "no-timer", ' in text
    (repo / "policy.yaml").write_text(BASE.replace("'legacy-*'", "'*'") + text)
    after = subprocess.run(
        [*command, "-f", "json", "legacy.xml", "odd.xml"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert after.returncode == 0, after.stdout
    data = json.loads(after.stdout)
    assert data["findings"] == []
    assert len(data["suppressed"]) == 3
    flagged = subprocess.run(
        [str(BIN / "libvirt-txmode"), "check-policy", "policy.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert flagged.returncode == 1
    assert flagged.stderr.count("'TODO' is not a reason yet") == 3


def test_generate_exceptions_to_stdout_lists_what_no_exception_can_silence(repo: Path) -> None:
    (repo / "broken.xml").write_text("<domain>\n")
    (repo / "policy.yaml").write_text(BASE)
    result = subprocess.run(
        [VALIDATE, "-p", "policy.yaml", "--caps", "h1.json", "--generate-exceptions", "broken.xml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert "# not silenced: broken.xml:2: xml-invalid (no exception silences it)" in lines
    assert lines[-1] == "exceptions: []"


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_whole_report_rendered_counts_no_silenced_finding(fmt: str) -> None:
    """audit renders a whole Report (``render``/``feed``): the same as validate-domain's stream."""
    from libvirt_txmode.engine.wording import Report, summarize
    from libvirt_txmode.report.base import RunInfo
    from libvirt_txmode.report.registry import render

    silenced = finding(suppression=Suppression(0, 7, "vendor appliance", None))
    found = [silenced]
    document = Report(files=("vm.xml",), findings=tuple(found), summary=summarize(1, 1, 1, found))
    out = render(fmt, document, color=False, run=RunInfo(suppressed=1, verbose=True))
    if fmt == "sarif":
        (result,) = json.loads(out)["runs"][0]["results"]
        assert result["suppressions"][0]["justification"] == "vendor appliance"
    elif fmt == "json":
        data = json.loads(out)
        assert (data["findings"], len(data["suppressed"])) == ([], 1)
    elif fmt == "text":
        assert out.startswith("vm.xml:5: silenced: ")
    else:
        assert "not allowed" not in out
