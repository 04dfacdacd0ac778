"""validate-domain as CI engineers run it: policy discovery, exclusions, odd trees, the CI formats.

Through the installed console scripts (exit code, stdout, stderr, report files); hosts are
capability snapshots, so no QEMU or libvirt is needed. Runs as root, like the rest of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lxml import etree

from libvirt_txmode.engine.wording import Finding, Level, Report, summarize
from libvirt_txmode.report import sarif_format
from libvirt_txmode.report.registry import FORMAT_NAMES, render
from tests.libvirt_env import skip_unless_ci

from .test_cli import (
    GOOD,
    NO_TIMER_POLICY,
    POLICY,
    TIMER,
    TXMODE,
    VALIDATE,
    _env,
    run,
    snapshot,
)
from .test_report import _validate_sarif

SKIP_NOTE = "(not a <domain>, or not a regular file in the tree)"
NETWORK = "<network>\n  <name>default</name>\n  <forward mode='nat'/>\n</network>\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository of domain definitions: .git, a policy, a snapshot, domains in a subfolder."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "domains").mkdir()
    (root / "domains" / "good.xml").write_text(GOOD, encoding="utf-8")
    (root / "domains" / "timer.xml").write_text(TIMER, encoding="utf-8")
    (root / "h1.json").write_text(snapshot("h1", tx=True), encoding="utf-8")
    (root / "ci-policy.yaml").write_text(NO_TIMER_POLICY, encoding="utf-8")
    return root


def vd(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run(cwd, VALIDATE, *argv, env=env)


def caps(repo: Path) -> list[str]:
    return ["--caps", str(repo / "h1.json")]


# --- policy discovery ----------------------------------------------------------------------------


def test_project_policy_is_found_from_a_subfolder(repo: Path) -> None:
    (repo / ".libvirt-txmode.yaml").write_text(NO_TIMER_POLICY, encoding="utf-8")
    code, out, err = vd(repo / "domains", "-v", *caps(repo), "timer.xml")
    assert code == 1, err
    assert "not allowed" in out
    assert "using policy ../.libvirt-txmode.yaml (project file)" in err


def test_project_policy_in_a_folder(repo: Path) -> None:
    (repo / ".libvirt-txmode").mkdir()
    (repo / ".libvirt-txmode" / "policy.yaml").write_text(NO_TIMER_POLICY, encoding="utf-8")
    code, _, err = vd(repo, "-v", *caps(repo), "domains/timer.xml")
    assert code == 1
    assert "using policy .libvirt-txmode/policy.yaml (project file)" in err


def test_search_stops_at_the_repository_root(repo: Path) -> None:
    # A policy above the repository belongs to someone else.
    (repo.parent / ".libvirt-txmode.yaml").write_text(NO_TIMER_POLICY, encoding="utf-8")
    code, _, err = vd(repo / "domains", "-v", *caps(repo), "timer.xml")
    assert "project file" not in err
    assert "(system-wide)" in err or "(bundled default)" in err
    if "(bundled default)" in err:  # another test may have installed a system-wide one meanwhile
        assert code == 0  # the bundled policy does not forbid timer on a user NIC


def test_environment_beats_project_and_p_beats_environment(repo: Path) -> None:
    (repo / ".libvirt-txmode.yaml").write_text("version: 1\n", encoding="utf-8")
    (repo / "allow.yaml").write_text(POLICY, encoding="utf-8")
    env = {"LIBVIRT_TXMODE_POLICY": str(repo / "ci-policy.yaml")}
    code, _, err = vd(repo, "-v", *caps(repo), "domains/timer.xml", env=env)
    assert (code, "$LIBVIRT_TXMODE_POLICY" in err) == (1, True)
    code, _, err = vd(repo, "-v", "-p", "allow.yaml", *caps(repo), "domains/timer.xml", env=env)
    assert (code, "using policy allow.yaml (-p)" in err) == (0, True)


def test_writable_policy_is_fine_with_snapshots_but_not_when_probing(repo: Path) -> None:
    # GitLab's runners check out group/other-writable files. With --caps nothing is executed,
    # so the policy picks no binary and may come from the checkout; probing as root needs trust.
    policy = repo / "ci-policy.yaml"
    policy.chmod(0o666)
    code, _, err = vd(repo, "-p", str(policy), *caps(repo), "domains/good.xml")
    assert (code, err) == (0, "")
    code, _, err = vd(repo, "-p", str(policy), "--no-cache", "domains/good.xml")
    assert code == 2
    assert "writable by group or others" in err


# --- which files are read ------------------------------------------------------------------------


def test_exclude_ignore_file_hidden_folders_and_other_xml(repo: Path) -> None:
    domains = repo / "domains"
    (domains / "networks").mkdir()
    (domains / "networks" / "default.xml").write_text(NETWORK, encoding="utf-8")
    (domains / ".cache").mkdir()
    (domains / ".cache" / "broken.xml").write_text("<<<", encoding="utf-8")
    (domains / "vendor").mkdir()
    (domains / "vendor" / "broken.xml").write_text("<<<", encoding="utf-8")
    (domains / "a.generated.xml").write_text("<<<", encoding="utf-8")
    (domains / "keep.generated.xml").write_text(GOOD, encoding="utf-8")
    (repo / ".libvirt-txmode-ignore").write_text(
        "# generated files\n*.generated.xml\n!keep.generated.xml\n", encoding="utf-8"
    )
    code, out, err = vd(
        repo, "-p", "ci-policy.yaml", *caps(repo), "--exclude", "domains/vendor/", "-f", "json",
        "domains",
    )  # fmt: skip
    assert (code, err) == (1, "")
    data = json.loads(out)
    assert data["files"] == [
        "domains/good.xml",
        "domains/keep.generated.xml",
        "domains/timer.xml",
    ]
    assert {f["code"] for f in data["findings"]} == {"txmode-not-allowed", "txmode-ineffective"}
    assert (data["summary"]["skipped"], data["summary"]["excluded"]) == (1, 2)
    # pre-commit passes file names: --exclude filters them the same way.
    code, out, err = vd(
        repo, "-p", "ci-policy.yaml", *caps(repo), "--exclude", "vendor", "domains/vendor/broken.xml",
        "domains/networks/default.xml", "domains/good.xml",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == f"1 file, 1 domain, 1 NIC: 0 errors, 0 warnings; 1 skipped {SKIP_NOTE}\n"


def test_an_ignore_file_never_stops_a_named_file_from_being_checked(repo: Path) -> None:
    # What a pull request could add to switch the check off: it thins out walks, nothing more.
    (repo / ".libvirt-txmode-ignore").write_text("*.xml\n", encoding="utf-8")
    (repo / "domains" / ".libvirt-txmode-ignore").write_text("timer.xml\n", encoding="utf-8")
    code, out, _ = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "domains/timer.xml")
    assert code == 1
    assert "domains/timer.xml:5: error:" in out
    assert out.endswith("1 file, 1 domain, 2 NICs: 1 error, 1 warning\n")
    # The walk honours it; --no-ignore-file reads no ignore file at all.
    assert vd(repo, "-p", "ci-policy.yaml", *caps(repo), "-q", "domains")[0] == 0
    code, out, _ = vd(
        repo, "-p", "ci-policy.yaml", *caps(repo), "--no-ignore-file", "-f", "json", "domains"
    )
    assert code == 1
    assert json.loads(out)["files"] == ["domains/good.xml", "domains/timer.xml"]


def test_no_file_checked_is_a_warning_and_strict_or_ci_makes_it_fail(repo: Path) -> None:
    (repo / "empty").mkdir()
    assert vd(repo, "-p", "ci-policy.yaml", *caps(repo), "empty") == (
        0,
        "0 files, 0 domains, 0 NICs: 0 errors, 0 warnings\n",
        "validate-domain: warning: no domain XML file was checked\n",
    )
    code, _, err = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "--strict", "empty")
    assert (code, err) == (1, "validate-domain: error: no domain XML file was checked\n")
    for value in ("true", "1", "yes"):
        code, _, err = vd(
            repo, "-p", "ci-policy.yaml", *caps(repo), "-q", "empty", env={"CI": value}
        )
        assert (code, err) == (
            1,
            "validate-domain: error: no domain XML file was checked (CI is set)\n",
        )
    assert vd(repo, "-p", "ci-policy.yaml", *caps(repo), "-q", "empty", env={"CI": "false"}) == (
        0,
        "",
        "",
    )


def test_an_ignore_file_that_hides_everything_fails_in_ci(repo: Path) -> None:
    (repo / ".libvirt-txmode-ignore").write_text("*.xml\n", encoding="utf-8")
    code, _, err = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "domains", env={"CI": "true"})
    assert code == 1
    assert "no domain XML file was checked (CI is set)" in err


def test_fifo_in_the_tree_does_not_hang(repo: Path) -> None:
    os.mkfifo(repo / "domains" / "pipe.xml")  # nobody ever writes to it: opening it would block
    code, out, err = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "domains")
    assert (code, err) == (1, "")
    assert out.endswith(f"; 1 skipped {SKIP_NOTE}\n")


def test_symlinks_out_of_the_tree_are_not_followed(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_text(TIMER.replace("'timer'>", "'secret'>"), encoding="utf-8")
    (repo / "domains" / "out.xml").symlink_to(secret)
    (repo / "domains" / "in.xml").symlink_to(repo / "domains" / "timer.xml")
    code, out, err = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "-f", "json", "domains")
    assert (code, err) == (1, "")
    data = json.loads(out)
    assert data["files"] == ["domains/good.xml", "domains/in.xml", "domains/timer.xml"]
    assert data["summary"]["skipped"] == 1
    assert "secret" not in out


def test_closed_stdout_keeps_the_exit_code_and_the_report(repo: Path) -> None:
    argv = [VALIDATE, "-p", "ci-policy.yaml", *caps(repo), "-f", "sarif", "-o", "r.sarif"]
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *argv, "domains/timer.xml"],
        cwd=repo, env=_env(None), capture_output=False, stderr=subprocess.PIPE, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (1, "")
    assert json.loads((repo / "r.sarif").read_text())["runs"][0]["invocations"][0]["exitCode"] == 1
    # A reader that goes away early (| head -0) changes nothing either.
    proc = subprocess.run(
        ["sh", "-c", '"$@" | head -c 0', "sh", VALIDATE, "-p", "ci-policy.yaml", *caps(repo),
         "domains/timer.xml"],
        cwd=repo, env=_env(None), stderr=subprocess.PIPE, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.stderr == ""


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_file_names_that_are_not_utf8(repo: Path, fmt: str) -> None:
    name = b"caf\xe9-timer.xml"
    with open(os.path.join(os.fsencode(repo / "domains"), name), "wb") as handle:
        handle.write(TIMER.encode())
    proc = subprocess.run(
        [VALIDATE, "-p", "ci-policy.yaml", *caps(repo), "-f", fmt, "domains"],
        cwd=repo, env=_env(None), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (1, b"")
    if fmt == "sarif":
        uris = [a["location"]["uri"] for a in json.loads(proc.stdout)["runs"][0]["artifacts"]]
        assert "domains/caf%E9-timer.xml" in uris
    if fmt == "codeclimate":
        paths = {issue["location"]["path"] for issue in json.loads(proc.stdout)}
        assert "domains/caf\ufffd-timer.xml" in paths


# --- SARIF, Code Quality, JUnit, text ------------------------------------------------------------


def test_sarif_for_code_scanning(repo: Path) -> None:
    code, out, err = vd(
        repo / "domains", "-p", "../ci-policy.yaml", *caps(repo), "-f", "sarif",
        "./timer.xml", str(repo / "domains" / "good.xml"),
    )  # fmt: skip
    assert (code, err) == (1, "")
    document = json.loads(out)
    _validate_sarif(document)
    (sarif_run,) = document["runs"]
    # Repository-relative, against %SRCROOT% (the repository root), whatever the path given.
    assert [a["location"] for a in sarif_run["artifacts"]] == [
        {"uri": "domains/timer.xml", "uriBaseId": "%SRCROOT%"},
        {"uri": "domains/good.xml", "uriBaseId": "%SRCROOT%"},
    ]
    assert sarif_run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == f"file://{repo}/"
    (invocation,) = sarif_run["invocations"]
    assert (invocation["executionSuccessful"], invocation["exitCode"]) == (True, 1)
    fingerprints = [
        r["partialFingerprints"][sarif_format.FINGERPRINT_KEY] for r in sarif_run["results"]
    ]
    assert len(set(fingerprints)) == len(fingerprints) == 2
    # Moving the NIC down (an edit elsewhere in the file) keeps its fingerprint.
    (repo / "domains" / "timer.xml").write_text("\n\n" + TIMER, encoding="utf-8")
    moved = json.loads(
        vd(repo / "domains", "-p", "../ci-policy.yaml", *caps(repo), "-f", "sarif",
           "timer.xml")[1]
    )  # fmt: skip
    (moved_run,) = moved["runs"]
    assert [
        r["partialFingerprints"][sarif_format.FINGERPRINT_KEY] for r in moved_run["results"]
    ] == (fingerprints)
    assert moved_run["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 7


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_failed_run_still_writes_its_report(repo: Path, fmt: str) -> None:
    (repo / "r.out").write_text("stale\n")
    code, _, err = vd(
        repo, "-p", "ci-policy.yaml", "--caps", "missing.json", "-f", fmt, "-o", "r.out",
        "domains",
    )  # fmt: skip
    assert code == 2 and "missing.json" in err
    text = (repo / "r.out").read_text()
    assert "stale" not in text  # the failed run's report, not whatever was there
    # The document formats carry the reason, so the CI page shows it instead of a gap.
    if fmt == "sarif":
        document = json.loads(text)
        _validate_sarif(document)
        (invocation,) = document["runs"][0]["invocations"]
        assert (invocation["executionSuccessful"], invocation["exitCode"]) == (False, 2)
        assert "missing.json" in invocation["toolExecutionNotifications"][0]["message"]["text"]
    elif fmt == "junit":
        error = etree.fromstring(text.encode()).find(".//testcase/error")
        assert error is not None and "missing.json" in error.get("message", "")
    elif fmt == "json":
        assert "missing.json" in json.loads(text)["error"]


def _many(count: int) -> Report:
    findings = tuple(
        Finding(
            f"vms/{i:05d}.xml", 3, f"vm{i}", "txmode-ineffective" if i % 2 else "txmode-invalid",
            Level.WARNING if i % 2 else Level.ERROR, "m", 0,
        )
        for i in range(count)
    )  # fmt: skip
    files = tuple(f.file for f in findings)
    return Report(files, findings, summarize(len(files), count, count, findings), ("h",), "0.2.0")


def test_sarif_result_cap_keeps_errors_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sarif_format, "SARIF_MAX_RESULTS", 10)
    document = json.loads(render("sarif", _many(30), color=False))
    (sarif_run,) = document["runs"]
    assert len(sarif_run["results"]) == 10
    assert {r["level"] for r in sarif_run["results"]} == {"error"}
    assert sarif_run["properties"]["omittedResults"] == 20
    (note,) = sarif_run["invocations"][0]["toolExecutionNotifications"]
    assert note["message"]["text"].startswith("20 results omitted")
    _validate_sarif(document)


# The GitLab Code Quality report format (the subset GitLab reads), as published in its docs.
CODE_QUALITY_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["description", "check_name", "fingerprint", "severity", "location"],
        "properties": {
            "description": {"type": "string"},
            "check_name": {"type": "string"},
            "fingerprint": {"type": "string"},
            "severity": {"enum": ["info", "minor", "major", "critical", "blocker"]},
            "location": {
                "type": "object",
                "required": ["path", "lines"],
                "properties": {
                    "path": {"type": "string", "pattern": "^[^/]"},
                    "lines": {
                        "type": "object",
                        "required": ["begin"],
                        "properties": {"begin": {"type": "integer", "minimum": 1}},
                    },
                },
            },
        },
    },
}


def test_codeclimate_for_gitlab(repo: Path) -> None:
    (repo / "domains" / "broken.xml").write_text("<domain>\n<name>x\n</domain>\n")
    code, out, err = vd(
        repo / "domains", "-p", "../ci-policy.yaml", *caps(repo), "-f", "codeclimate",
        "timer.xml", "broken.xml",
    )  # fmt: skip
    assert (code, err) == (1, "")
    issues = json.loads(out)
    jsonschema.validate(issues, CODE_QUALITY_SCHEMA)
    assert [
        (i["check_name"], i["severity"], i["location"]["path"], i["location"]["lines"]["begin"])
        for i in issues
    ] == [
        ("txmode-not-allowed", "major", "domains/timer.xml", 5),
        ("txmode-ineffective", "minor", "domains/timer.xml", 10),
        ("xml-invalid", "major", "domains/broken.xml", 3),
    ]
    assert len({i["fingerprint"] for i in issues}) == 3
    assert issues[0]["description"].startswith("domain 'timer' NIC #0 (52:54:00:00:00:02): ")


def test_junit_time_and_file(repo: Path) -> None:
    code, out, _ = vd(repo, "-p", "ci-policy.yaml", *caps(repo), "-f", "junit", "domains")
    assert code == 1
    suites = etree.fromstring(out.encode())
    cases = suites.findall(".//testcase")
    assert [c.get("file") for c in cases] == ["domains/good.xml", "domains/timer.xml"]
    assert all(float(c.get("time", "x")) >= 0 for c in cases)
    assert float(suites.get("time", "x")) >= 0


def test_quiet_prints_only_findings(repo: Path) -> None:
    code, out, err = vd(repo, "-q", "-p", "ci-policy.yaml", *caps(repo), "domains")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "domains/timer.xml:5: error: domain 'timer' NIC #0 (52:54:00:00:00:02): txmode 'timer' is "
        "not allowed by rule 'defaults' (allowed: iothread) [txmode-not-allowed]",
        "domains/timer.xml:10: warning: domain 'timer' NIC #1 (52:54:00:00:00:03): txmode 'timer' "
        "has no effect: libvirt ignores txmode on model 'e1000' (only virtio models use it) "
        "[txmode-ineffective, rule 'defaults']",
    ]
    assert vd(repo, "-q", "-p", "ci-policy.yaml", *caps(repo), "domains/good.xml") == (0, "", "")


# --- check-policy, policy-schema, completion ------------------------------------------------------


def test_check_policy(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(NO_TIMER_POLICY, encoding="utf-8")
    (tmp_path / "bad.yaml").write_text("version: 1\non_unknwon: deny\n", encoding="utf-8")
    assert run(tmp_path, TXMODE, "check-policy", "ok.yaml") == (
        0,
        "ok.yaml: valid policy (0 rules)\n",
        "",
    )
    code, out, err = run(tmp_path, TXMODE, "check-policy", "ok.yaml", "bad.yaml")
    assert (code, out) == (2, "ok.yaml: valid policy (0 rules)\n")
    assert err.startswith("bad.yaml:2:1: on_unknwon: unknown key (expected one of: version, ")


THREE_ERRORS = (
    "version: 1\n"
    "on_unknwon: deny\n"
    "action: sometimes\n"
    "rules:\n"
    "  - match: {domain: 'db-*'}\n"
    "    allowed: [iothread]\n"
)


def test_check_policy_reports_every_error_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "three.yaml").write_text(THREE_ERRORS, encoding="utf-8")
    code, out, err = run(tmp_path, TXMODE, "check-policy", "three.yaml")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "three.yaml:2:1: on_unknwon: unknown key (expected one of: version, action, on_unknown, "
        "on_error, passthrough, emulators, probe_timeout, defaults, rules, exceptions)",
        "three.yaml:3:9: action: 'sometimes' is not one of: enforce, audit",
        "three.yaml:5:5: rules[0].name: every rule needs a name (it is quoted in findings)",
    ]
    code, out, err = run(tmp_path, TXMODE, "check-policy", "-f", "json", "three.yaml")
    assert (code, err) == (2, "")
    (result,) = json.loads(out)["files"]
    assert (result["file"], result["valid"]) == ("three.yaml", False)
    assert [(p["line"], p["column"], p["key"], p["severity"]) for p in result["problems"]] == [
        (2, 1, "on_unknwon", "error"),
        (3, 9, "action", "error"),
        (5, 5, "rules[0].name", "error"),
    ]


def test_check_policy_flags_todo_reasons_and_expired_exceptions(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "exceptions:\n"
        "  - match: {domain: legacy-01}\n"
        "    reason: TODO\n"
        "  - match: {domain: legacy-02}\n"
        "    reason: vendor appliance (OPS-7)\n"
        "    expires: 2001-01-01\n",
        encoding="utf-8",
    )
    code, out, err = run(tmp_path, TXMODE, "check-policy", "p.yaml")
    assert (code, out) == (1, "")  # valid, but someone has to act
    assert err.splitlines() == [
        "p.yaml:3:1: exceptions[0].reason: 'TODO' is not a reason yet: say why this exception "
        "is granted (it is reported with every finding it silences)",
        "p.yaml:5:1: exceptions[1].expires: expired: its last day was 2001-01-01; the findings it "
        "silenced are back (exception-expired): fix them, or set a new date and say why",
    ]
    code, out, err = run(tmp_path, TXMODE, "check-policy", "-f", "json", "p.yaml")
    problems = json.loads(out)["files"][0]["problems"]
    assert [(p["key"], p["severity"]) for p in problems] == [
        ("exceptions[0].reason", "warning"),
        ("exceptions[1].expires", "notice"),
    ]
    # A date going by must not fail a deployment (the role validates with check-policy): an
    # expired exception silences nothing, it is only noted.
    (tmp_path / "p.yaml").write_text(
        "version: 1\nexceptions:\n  - match: {domain: x}\n    reason: r\n    expires: 2001-01-01\n"
    )
    code, out, err = run(tmp_path, TXMODE, "check-policy", "p.yaml")
    assert (code, out) == (0, "p.yaml: valid policy (0 rules, 1 exceptions)\n")
    assert "expired: its last day was 2001-01-01" in err


def test_check_policy_notes_a_file_the_hook_would_refuse(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("the trust rule is root's")
    path = tmp_path / "p.yaml"
    path.write_text(NO_TIMER_POLICY)
    path.chmod(0o664)
    code, out, err = run(tmp_path, TXMODE, "check-policy", str(path))
    assert (code, out) == (0, f"{path}: valid policy (0 rules)\n")
    assert err == (
        f"{path}: the hook would refuse this file: file {path} is writable by group or others "
        f"(mode 0664); fix: chmod go-w {path}\n"
    )


def test_check_policy_gives_a_file_problem_no_line_zero(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, TXMODE, "check-policy", "missing.yaml")
    assert (code, out, err) == (
        2,
        "",
        "missing.yaml: cannot read policy: No such file or directory\n",
    )


def test_completion_needs_no_shtab(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "shtab.py").write_text("raise ImportError('shtab is not installed')\n")
    code, out, err = run(tmp_path, TXMODE, "completion", "bash", env={"PYTHONPATH": str(tmp_path)})
    assert (code, err) == (0, "")
    assert out == (root / "completion" / "libvirt-txmode.bash").read_text(encoding="utf-8")
    # explain completes finding codes; an unknown one still gets explain's own message.
    assert "txmode-unsupported" in out and "xml-invalid" in out
    code, _, err = run(tmp_path, TXMODE, "explain", "nope")
    assert code == 2 and "unknown finding code 'nope'" in err


# --- the wheel -----------------------------------------------------------------------------------


def test_wheel_installs_man_pages_and_completion_that_work_without_shtab(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"
    source.mkdir()
    # This working tree's package, generated files and metadata: what a release builds from.
    names = ["libvirt_txmode", "man", "completion", "setup.cfg", "pyproject.toml", "README.md"]
    subprocess.run(["cp", "-r", *(str(root / n) for n in names), str(source)], check=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(venv), str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    share = venv / "share"
    installed = sorted(str(p.relative_to(share)) for p in share.rglob("*") if p.is_file())
    assert installed == [
        "bash-completion/completions/libvirt-txmode.bash",
        "bash-completion/completions/validate-domain.bash",
        "man/man1/libvirt-txmode.1",
        "man/man1/validate-domain.1",
        "zsh/site-functions/_libvirt-txmode",
        "zsh/site-functions/_validate-domain",
    ]
    # The venv has neither shtab nor this checkout on its path: the installed script is printed.
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys; from libvirt_txmode.admin.commands import main; sys.exit(main())",
         "completion", "zsh", "validate-domain"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (share / "zsh" / "site-functions" / "_validate-domain").read_text()
