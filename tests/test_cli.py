"""The installed console scripts, driven as CI and operators run them: exit code, stdout, stderr.

Hosts are capability snapshots written here (``--caps``), so no QEMU or libvirt is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from lxml import etree

from libvirt_txmode.engine.model import Guest, HostCapabilities, Support, SupportState
from libvirt_txmode.host.snapshot import Snapshot
from libvirt_txmode.report.explain import EXPLANATIONS, explain
from libvirt_txmode.report.registry import FORMAT_NAMES

BIN = Path(sys.executable).parent
VALIDATE = str(BIN / "validate-domain")
TXMODE = str(BIN / "libvirt-txmode")
ROOT = Path(__file__).resolve().parent.parent

EMULATOR = "/usr/bin/qemu-system-x86_64"
POLICY = "version: 1\ndefaults:\n  allowed: [iothread, timer]\n"
NO_TIMER_POLICY = "version: 1\naction: enforce\ndefaults:\n  allowed: [iothread]\n"


def domain_xml(name: str, nics: str) -> str:
    return (
        f"<domain type='qemu'>\n  <name>{name}</name>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
        f"  <devices>\n{nics}  </devices>\n</domain>\n"
    )


def nic(mac: str, model: str, txmode: str) -> str:
    return (
        "    <interface type='user'>\n"
        f"      <mac address='{mac}'/>\n"
        f"      <model type='{model}'/>\n"
        f"      <driver name='qemu' txmode='{txmode}'/>\n"
        "    </interface>\n"
    )


# good.xml: no findings. timer.xml: NIC #0 (line 5) virtio timer, NIC #1 (line 10) e1000 with a
# txmode, which is txmode-ineffective (warning with the default policy).
GOOD = domain_xml("good", nic("52:54:00:00:00:01", "virtio", "iothread"))
TIMER = domain_xml(
    "timer",
    nic("52:54:00:00:00:02", "virtio", "timer") + nic("52:54:00:00:00:03", "e1000", "timer"),
)
BROKEN = "<domain>\n  <name>broken\n</domain>\n"


def snapshot(host: str, tx: bool) -> str:
    """A host's snapshot, written by the snapshot codec as `libvirt-txmode snapshot` writes it."""
    state = SupportState.SUPPORTED if tx else SupportState.UNSUPPORTED
    detail = "tx listed by -device virtio-net-pci,help" if tx else "no tx property"
    document = Snapshot(
        host=host,
        source="",
        capabilities=HostCapabilities(
            name=host,
            guests=(Guest("x86_64", EMULATOR, ("qemu", "kvm")),),
            devices={EMULATOR: {"virtio-net-pci": Support(state, detail, "help")}},
            arch="x86_64",
        ),
        identities={EMULATOR: f"{EMULATOR}:1:2:3:4:5"},
        created="2026-01-01T00:00:00Z",
        libvirt={"uri": "qemu:///system", "library_version": "9.0.0", "hypervisor": "QEMU"},
    ).to_json()
    return json.dumps(document, indent=1)


WARN_E1000 = (
    "timer.xml:10: warning: domain 'timer' NIC #1 (52:54:00:00:00:03): txmode 'timer' has no "
    "effect: libvirt ignores txmode on model 'e1000' (only virtio models use it) "
    "[txmode-ineffective, rule 'defaults']"
)
NOT_ALLOWED = (
    "timer.xml:5: error: domain 'timer' NIC #0 (52:54:00:00:00:02): txmode 'timer' is not allowed "
    "by rule 'defaults' (allowed: iothread) [txmode-not-allowed]"
)
BROKEN_LINE = (
    "broken.xml:3:10: error: not well-formed XML: Opening and ending tag mismatch: name line 2 and "
    "domain, line 3, column 10 [xml-invalid]"
)


def unsupported(file: str, line: int, *, name: str, mac: str, txmode: str, host: str) -> str:
    return (
        f"{file}:{line}: error: domain '{name}' NIC #0 ({mac}): txmode '{txmode}' needs the 'tx' "
        f"property of virtio-net-pci, which {EMULATOR} on {host} does not have (no tx property) "
        f"[txmode-unsupported, rule 'defaults', host '{host}']"
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    files = {
        "good.xml": GOOD,
        "timer.xml": TIMER,
        "broken.xml": BROKEN,
        "policy.yaml": POLICY,
        "no-timer.yaml": NO_TIMER_POLICY,
        "h1.json": snapshot("h1", tx=True),
        "h2.json": snapshot("h2", tx=False),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def _env(extra: Optional[dict[str, str]]) -> dict[str, str]:
    # A clean environment: the caller's GITHUB_ACTIONS, NO_COLOR or COLUMNS must not change output.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra or {})
    return env


def run(
    cwd: Path, *argv: str, env: Optional[dict[str, str]] = None, stdin: str = ""
) -> tuple[int, str, str]:
    proc = subprocess.run(
        argv, cwd=cwd, env=_env(env), input=stdin, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def validate(cwd: Path, *argv: str, **kwargs: object) -> tuple[int, str, str]:
    return run(cwd, VALIDATE, "-p", "policy.yaml", "--caps", "h1.json", *argv, **kwargs)  # type: ignore[arg-type]


def run_tty(cwd: Path, *argv: str, env: Optional[dict[str, str]] = None) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal: the only way colour is ever switched on."""
    master, slave = os.openpty()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=_env(env), stdout=slave, stderr=subprocess.DEVNULL, timeout=120
        )
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the slave side is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


# --- exit codes and text -------------------------------------------------------------------------


def test_clean_file_exits_0(site: Path) -> None:
    assert validate(site, "good.xml") == (0, "1 file, 1 domain, 1 NIC: 0 errors, 0 warnings\n", "")


def test_warning_exits_0_and_strict_exits_1(site: Path) -> None:
    expected = f"{WARN_E1000}\n1 file, 1 domain, 2 NICs: 0 errors, 1 warning\n"
    assert validate(site, "timer.xml") == (0, expected, "")
    assert validate(site, "--strict", "timer.xml") == (1, expected, "")
    assert validate(site, "--strict", "good.xml")[0] == 0


def test_error_exits_1(site: Path) -> None:
    code, out, err = run(
        site, VALIDATE, "-p", "no-timer.yaml", "--caps", "h1.json", "good.xml", "timer.xml"
    )
    assert (code, err) == (1, "")
    assert out == f"{NOT_ALLOWED}\n{WARN_E1000}\n2 files, 2 domains, 3 NICs: 1 error, 1 warning\n"


def test_malformed_file_among_good_ones(site: Path) -> None:
    code, out, err = validate(site, "good.xml", "broken.xml", "timer.xml")
    assert (code, err) == (1, "")
    assert out == f"{BROKEN_LINE}\n{WARN_E1000}\n3 files, 2 domains, 3 NICs: 1 error, 1 warning\n"


def test_stdin(site: Path) -> None:
    assert validate(site, "-", stdin=GOOD) == (
        0,
        "1 file, 1 domain, 1 NIC: 0 errors, 0 warnings\n",
        "",
    )
    code, out, _ = validate(site, "-", stdin=BROKEN)
    assert code == 1
    assert out.splitlines()[0].startswith("<stdin>:3:10: error: not well-formed XML: ")


def test_directory_recursion(site: Path) -> None:
    tree = site / "vms"
    (tree / "b" / "deep").mkdir(parents=True)
    (tree / "a").mkdir()
    (tree / "b" / "deep" / "timer.xml").write_text(TIMER, encoding="utf-8")
    (tree / "a" / "good.xml").write_text(GOOD, encoding="utf-8")
    (tree / "z.xml").write_text(GOOD, encoding="utf-8")
    (tree / "README.txt").write_text("not XML, not read", encoding="utf-8")
    (tree / "b" / "notes.xml.bak").write_text("<<<", encoding="utf-8")
    code, out, err = validate(site, "vms", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["files"] == ["vms/z.xml", "vms/a/good.xml", "vms/b/deep/timer.xml"]
    assert [(f["file"], f["line"], f["code"]) for f in data["findings"]] == [
        ("vms/b/deep/timer.xml", 10, "txmode-ineffective")
    ]


# --- could not run: exit 2 -----------------------------------------------------------------------


def test_missing_path_exits_2(site: Path) -> None:
    assert validate(site, "good.xml", "missing.xml") == (
        2,
        "",
        "validate-domain: error: no such file or directory: missing.xml\n",
    )


def test_bad_policy_names_file_line_and_key(site: Path) -> None:
    (site / "bad.yaml").write_text("version: 1\ndefaults:\n  allowed: [fast]\n", encoding="utf-8")
    assert run(site, VALIDATE, "-p", "bad.yaml", "--caps", "h1.json", "good.xml") == (
        2,
        "",
        "validate-domain: error: bad policy: bad.yaml:3: defaults.allowed[0]: "
        "'fast' is not one of: iothread, timer\n",
    )
    (site / "typo.yaml").write_text("version: 1\ndefaults:\n  alowed: [timer]\n", encoding="utf-8")
    code, out, err = run(site, VALIDATE, "-p", "typo.yaml", "--caps", "h1.json", "good.xml")
    assert (code, out) == (2, "")
    assert err.startswith(
        "validate-domain: error: bad policy: typo.yaml:3: defaults.alowed: unknown key"
    )


def test_missing_snapshot_exits_2(site: Path) -> None:
    code, out, err = run(site, VALIDATE, "-p", "policy.yaml", "--caps", "nope.json", "good.xml")
    assert (code, out) == (2, "")
    assert (
        err
        == "validate-domain: error: nope.json: cannot read snapshot: No such file or directory\n"
    )


def test_usage_error_exits_2(site: Path) -> None:
    code, out, err = run(site, VALIDATE)
    assert (code, out) == (2, "")
    assert err.endswith("validate-domain: error: the following arguments are required: PATH\n")
    code, _, err = run(site, VALIDATE, "-f", "xml", "good.xml")
    assert code == 2
    assert "invalid choice: 'xml'" in err


# --- formats -------------------------------------------------------------------------------------


def test_json(site: Path) -> None:
    code, out, err = validate(site, "-f", "json", "good.xml", "timer.xml")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["summary"] == {
        "files": 2,
        "domains": 2,
        "nics": 3,
        "errors": 0,
        "warnings": 1,
        "skipped": 0,
        "excluded": 0,
        "suppressed": 0,
    }
    assert data["hosts"] == ["h1"]
    assert data["tool"]["name"] == "libvirt-txmode"
    (finding,) = data["findings"]
    assert finding == {
        "file": "timer.xml",
        "line": 10,
        "domain": "timer",
        "code": "txmode-ineffective",
        "level": "warning",
        "message": "txmode 'timer' has no effect: libvirt ignores txmode on model 'e1000' "
        "(only virtio models use it)",
        "interface": 1,
        "mac": "52:54:00:00:00:03",
        "txmode": "timer",
        "rule": "defaults",
        "host": None,
    }


def test_junit(site: Path) -> None:
    code, out, err = validate(site, "-f", "junit", "good.xml", "broken.xml", "timer.xml")
    assert (code, err) == (1, "")
    root = etree.fromstring(out.encode())
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["good.xml", "broken.xml", "timer.xml"]
    assert cases["broken.xml"].find("failure").get("message") == BROKEN_LINE  # type: ignore[union-attr]
    assert cases["timer.xml"].find("failure") is None
    assert cases["timer.xml"].findtext("system-out") == WARN_E1000 + "\n"


def test_github(site: Path) -> None:
    code, out, err = validate(site, "-f", "github", "timer.xml", "broken.xml")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "::warning file=timer.xml,line=10,title=txmode-ineffective::"
        + WARN_E1000.split(": warning: ")[1],
        "::error file=broken.xml,line=3,title=xml-invalid::" + BROKEN_LINE.split(": error: ")[1],
        "2 files, 1 domain, 2 NICs: 1 error, 1 warning",
    ]


def test_github_actions_picks_github_format(site: Path) -> None:
    auto = validate(site, "timer.xml", env={"GITHUB_ACTIONS": "true"})
    assert auto == validate(site, "-f", "github", "timer.xml")
    assert auto[1].startswith("::warning file=timer.xml,line=10,")
    # An explicit format wins over the environment.
    assert validate(site, "-f", "text", "timer.xml", env={"GITHUB_ACTIONS": "true"})[1].startswith(
        "timer.xml:10: warning: "
    )


def test_sarif(site: Path) -> None:
    code, out, err = validate(site, "-f", "sarif", "timer.xml", "broken.xml")
    assert (code, err) == (1, "")
    document = json.loads(out)
    assert document["version"] == "2.1.0"
    results = document["runs"][0]["results"]
    assert [
        (r["ruleId"], r["level"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
        for r in results
    ] == [
        ("txmode-ineffective", "warning", 10),
        ("xml-invalid", "error", 3),
    ]


def test_output_file_gets_the_format_and_stdout_gets_text(site: Path) -> None:
    expected_text = validate(site, "timer.xml")
    code, out, err = validate(site, "-f", "json", "-o", "report.json", "timer.xml")
    assert (code, out, err) == expected_text
    data = json.loads((site / "report.json").read_text(encoding="utf-8"))
    assert [f["code"] for f in data["findings"]] == ["txmode-ineffective"]
    code, out, _ = validate(site, "-f", "sarif", "-o", "report.sarif", "broken.xml")
    assert code == 1
    assert out.startswith("broken.xml:3:10: error: ")
    assert json.loads((site / "report.sarif").read_text(encoding="utf-8"))["version"] == "2.1.0"


SCENARIOS = {
    "clean": (0, ["good.xml"]),
    "warning": (0, ["timer.xml"]),
    "warning-strict": (1, ["--strict", "timer.xml"]),
    "xml-invalid": (1, ["good.xml", "broken.xml"]),
    "unsupported": (1, ["--caps", "h2.json", "--all-hosts", "good.xml"]),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_exit_code_never_depends_on_format(site: Path, scenario: str) -> None:
    expected, argv = SCENARIOS[scenario]
    codes = {fmt: validate(site, "-f", fmt, *argv)[0] for fmt in ("auto", *FORMAT_NAMES)}
    codes["-o"] = validate(site, "-f", "sarif", "-o", "out.sarif", *argv)[0]
    codes["GITHUB_ACTIONS"] = validate(site, *argv, env={"GITHUB_ACTIONS": "true"})[0]
    assert set(codes.values()) == {expected}, codes


# --- colour --------------------------------------------------------------------------------------

RED_LINE = (
    "broken.xml:3:10: \033[31merror\033[0m: not well-formed XML: Opening and ending tag mismatch: "
    "name line 2 and domain, line 3, column 10 [xml-invalid]"
)


def test_colour_on_a_terminal(site: Path) -> None:
    argv = (VALIDATE, "-p", "policy.yaml", "--caps", "h1.json", "broken.xml", "timer.xml")
    code, out = run_tty(site, *argv)
    assert code == 1
    assert out.splitlines() == [
        RED_LINE,
        WARN_E1000.replace(": warning: ", ": \033[33mwarning\033[0m: "),
        "2 files, 1 domain, 2 NICs: 1 error, 1 warning",
    ]
    plain = f"{BROKEN_LINE}\n{WARN_E1000}\n2 files, 1 domain, 2 NICs: 1 error, 1 warning\n"
    assert run_tty(site, *argv, env={"NO_COLOR": "1"}) == (1, plain)
    assert run_tty(site, *argv, env={"NO_COLOR": ""}) == (1, plain)  # set at all means no colour
    assert run_tty(site, *argv[:1], "--no-color", *argv[1:]) == (1, plain)


def test_no_colour_in_pipes_or_files(site: Path) -> None:
    _, out, _ = validate(site, "broken.xml")
    assert "\033" not in out
    code, out = run_tty(
        site,
        VALIDATE,
        "-p",
        "policy.yaml",
        "--caps",
        "h1.json",
        "-o",
        "r.txt",
        "-f",
        "text",
        "broken.xml",
    )
    assert (code, out.splitlines()[0]) == (1, RED_LINE)
    assert "\033" not in (site / "r.txt").read_text(encoding="utf-8")


# --- several hosts -------------------------------------------------------------------------------


def test_all_hosts_reports_the_host_without_tx(site: Path) -> None:
    code, out, err = validate(site, "--caps", "h2.json", "good.xml", "timer.xml")
    assert (code, err) == (1, "")
    assert out == (
        unsupported(
            "good.xml", 5, name="good", mac="52:54:00:00:00:01", txmode="iothread", host="h2"
        )
        + "\n"
        + unsupported(
            "timer.xml", 5, name="timer", mac="52:54:00:00:00:02", txmode="timer", host="h2"
        )
        + "\n"
        + WARN_E1000
        + "\n2 files, 2 domains, 3 NICs: 2 errors, 1 warning\n"
    )
    assert validate(site, "--caps", "h2.json", "--all-hosts", "good.xml", "timer.xml") == (
        code,
        out,
        err,
    )


def test_any_host_is_satisfied_by_one(site: Path) -> None:
    assert validate(site, "--caps", "h2.json", "--any-host", "good.xml", "timer.xml") == (
        0,
        f"{WARN_E1000}\n2 files, 2 domains, 3 NICs: 0 errors, 1 warning\n",
        "",
    )
    # With no host that has tx, --any-host still fails.
    code, out, _ = run(
        site, VALIDATE, "-p", "policy.yaml", "--caps", "h2.json", "--any-host", "good.xml"
    )
    assert code == 1
    assert "[txmode-unsupported, rule 'defaults']" in out  # one host: not named in the tags


def test_all_and_any_host_exclude_each_other(site: Path) -> None:
    code, _, err = validate(site, "--all-hosts", "--any-host", "good.xml")
    assert code == 2
    assert "not allowed with argument" in err


# --- libvirt-txmode explain / completion ---------------------------------------------------------


@pytest.mark.parametrize("code", list(EXPLANATIONS))
def test_explain_code(site: Path, code: str) -> None:
    assert run(site, TXMODE, "explain", code) == (0, explain(code), "")


def test_explain_lists_codes(site: Path) -> None:
    expected = "".join(f"{code}: {item.title}\n" for code, item in EXPLANATIONS.items())
    assert run(site, TXMODE, "explain") == (0, expected, "")


def test_explain_unknown_code_exits_2(site: Path) -> None:
    assert run(site, TXMODE, "explain", "txmode-nope") == (
        2,
        "",
        "libvirt-txmode: error: unknown finding code 'txmode-nope' (known: "
        + ", ".join(EXPLANATIONS)
        + ")\n",
    )


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (("bash",), "completion/libvirt-txmode.bash"),
        (("zsh", "validate-domain"), "completion/_validate-domain"),
    ],
)
def test_completion_subcommand_prints_the_checked_in_script(
    site: Path, argv: tuple[str, ...], path: str
) -> None:
    assert run(site, TXMODE, "completion", *argv) == (
        0,
        (ROOT / path).read_text(encoding="utf-8"),
        "",
    )


# --- generated documentation ---------------------------------------------------------------------


def test_generated_docs_are_up_to_date(tmp_path: Path) -> None:
    # On every Python: gen-docs compares words, not argparse's line breaks.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-docs"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env({"COLUMNS": "37"}),  # must not matter: the generator fixes the width
        timeout=120,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    generated = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert generated == [
        "completion/_libvirt-txmode",
        "completion/_validate-domain",
        "completion/libvirt-txmode.bash",
        "completion/validate-domain.bash",
        "man/libvirt-txmode.1",
        "man/validate-domain.1",
    ]
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-docs"), "--check", str(ROOT)],
        capture_output=True,
        text=True,
        env=_env({"COLUMNS": "37"}),
        timeout=120,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", ""), (
        "generated files are stale: run scripts/gen-docs and commit the result"
    )


def test_generated_docs_check_finds_a_changed_word_but_not_a_moved_line_break(
    tmp_path: Path,
) -> None:
    gen_docs = [sys.executable, str(ROOT / "scripts" / "gen-docs")]
    assert (
        subprocess.run([*gen_docs, str(tmp_path)], capture_output=True, check=False).returncode == 0
    )
    page = tmp_path / "man" / "libvirt-txmode.1"
    text = page.read_text(encoding="utf-8")
    usage = next(line for line in text.splitlines() if "[\\-\\-dry\\-run]" in line)
    # Where argparse breaks a usage line is its own business (3.13 breaks inside a group).
    page.write_text(text.replace(usage, usage.replace("] [", "]\n[", 1)), encoding="utf-8")
    check = subprocess.run([*gen_docs, "--check", str(tmp_path)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (0, "")
    page.write_text(text.replace("\\-\\-dry\\-run", "\\-\\-wet\\-run", 1), encoding="utf-8")
    check = subprocess.run([*gen_docs, "--check", str(tmp_path)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "stale: man/libvirt-txmode.1" in check.stderr


def test_pre_commit_hook_definition() -> None:
    import yaml

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert hook["id"] == "validate-domain"
    assert hook["entry"] == "validate-domain"
    assert hook["language"] == "python"
    assert hook["files"] == r"\.xml$"
    assert hook["pass_filenames"] is True
