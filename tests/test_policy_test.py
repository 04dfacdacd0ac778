"""``libvirt-txmode policy-test DIR``: a policy against samples that state their verdict, through
the installed command (exit code and output), as a policy repository's CI runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

from .test_cli import TXMODE, domain_xml, nic, run

ROOT = Path(__file__).resolve().parent.parent
POLICY = (
    "version: 1\n"
    "rules:\n"
    "  - name: legacy-no-timer\n"
    "    match: {domain: 'legacy-*'}\n"
    "    allowed: [iothread]\n"
    "exceptions:\n"
    "  - match: {domain: legacy-02}\n"
    "    reason: vendor appliance until its upgrade (OPS-7)\n"
    "    expires: 2030-06-30\n"
)


def sample(header: str, name: str, txmode: str) -> str:
    # The NIC's <interface> is on line 6 once the header is line 1.
    return f"<!-- expect:{header} -->\n" + domain_xml(
        name, nic("52:54:00:00:00:01", "virtio", txmode)
    )


def policy_repo(root: Path) -> Path:
    (root / "policy.yaml").write_text(POLICY)
    tests = root / "tests"
    tests.mkdir()
    (tests / "ok.xml").write_text(sample("", "legacy-01", "iothread"))
    (tests / "timer.xml").write_text(sample(" txmode-not-allowed@6", "legacy-01", "timer"))
    (tests / "excepted.xml").write_text(sample("", "legacy-02", "timer"))
    (tests / "any-line.xml").write_text(sample(" txmode-not-allowed", "legacy-03", "timer"))
    return root


def test_the_shipped_examples_pass_with_the_bundled_policy() -> None:
    code, out, err = run(
        ROOT,
        TXMODE,
        "policy-test",
        "-p",
        "policy.yaml",
        "--caps",
        "examples/hosts/debian12.json",
        "examples/domains",
    )
    assert (code, err) == (0, "")
    assert out == "12 samples: 12 passed, 0 failed\n"


def test_a_policy_repository_passes_and_a_policy_change_shows_as_a_failure(tmp_path: Path) -> None:
    root = policy_repo(tmp_path)
    assert run(root, TXMODE, "policy-test", "-p", "policy.yaml", "tests") == (
        0,
        "4 samples: 4 passed, 0 failed\n",
        "",
    )
    # The change under review allows timer for legacy domains: the samples say otherwise.
    (root / "policy.yaml").write_text(
        POLICY.replace("allowed: [iothread]", "allowed: [iothread, timer]")
    )
    code, out, err = run(root, TXMODE, "policy-test", "-p", "policy.yaml", "tests")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "FAIL tests/any-line.xml",
        "  expected, not reported: txmode-not-allowed",
        "FAIL tests/timer.xml",
        "  expected, not reported: txmode-not-allowed@6",
        "4 samples: 2 passed, 2 failed",
    ]


def test_an_exception_past_its_last_day_fails_the_samples_it_covered(tmp_path: Path) -> None:
    root = policy_repo(tmp_path)
    code, out, _ = run(
        root, TXMODE, "policy-test", "-p", "policy.yaml", "--today", "2030-07-01", "tests"
    )
    assert code == 1
    assert out.splitlines()[:4] == [
        "FAIL tests/excepted.xml",
        "  reported, not expected: txmode-not-allowed@6: domain 'legacy-02' NIC #0 "
        "(52:54:00:00:00:01): txmode 'timer' is not allowed by rule 'legacy-no-timer' "
        "(allowed: iothread) [txmode-not-allowed]",
        "  reported, not expected: exception-expired@6: domain 'legacy-02' NIC #0 "
        "(52:54:00:00:00:01): exception #0 (policy.yaml:7) has expired (its last day was "
        "2030-06-30): it no longer silences txmode-not-allowed (its reason: vendor appliance "
        "until its upgrade (OPS-7)) [exception-expired, rule 'legacy-no-timer']",
        "4 samples: 3 passed, 1 failed",
    ]
    assert (
        run(root, TXMODE, "policy-test", "-p", "policy.yaml", "--today", "2030-06-30", "tests")[0]
        == 0
    )


def test_bad_input_is_exit_2_with_one_line(tmp_path: Path) -> None:
    root = policy_repo(tmp_path)
    (root / "tests" / "noheader.xml").write_text(domain_xml("x", ""))
    code, out, err = run(root, TXMODE, "policy-test", "-p", "policy.yaml", "tests")
    assert (code, out) == (2, "")
    assert err == (
        "libvirt-txmode: error: tests/noheader.xml:1: the first line must state the expected "
        "findings, e.g. '<!-- expect: txmode-not-allowed@17 -->' or '<!-- expect: -->' for none\n"
    )
    (root / "tests" / "noheader.xml").write_text(sample(" txmode-forbidden@6", "x", "timer"))
    code, _, err = run(root, TXMODE, "policy-test", "-p", "policy.yaml", "tests")
    assert code == 2
    assert "unknown finding code 'txmode-forbidden'" in err
    (root / "empty").mkdir()
    code, _, err = run(root, TXMODE, "policy-test", "-p", "policy.yaml", "empty")
    assert (code, err) == (
        2,
        "libvirt-txmode: error: empty: no sample domain (*.xml) to test the policy with\n",
    )
    code, _, err = run(root, TXMODE, "policy-test", "-p", "missing.yaml", "tests")
    assert code == 2 and "bad policy: missing.yaml: cannot read policy" in err
    code, _, err = run(root, TXMODE, "policy-test", "-p", "policy.yaml", "--today", "soon", "tests")
    assert code == 2 and "--today: expected a date as YYYY-MM-DD" in err


def test_a_broken_sample_is_an_xml_invalid_finding(tmp_path: Path) -> None:
    root = policy_repo(tmp_path)
    shutil.copy(ROOT / "examples" / "domains" / "10-broken.xml", root / "tests")
    assert run(root, TXMODE, "policy-test", "-p", "policy.yaml", "tests")[0] == 0
