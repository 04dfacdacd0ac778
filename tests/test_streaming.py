"""validate-domain writes its report as the run goes, and what it writes is the whole-report text.

Each checked file and its findings go to the formatters the moment they are known (nothing per
file is kept); document formats hold their parts in spools (memory, then an unlinked file) until
the end. These tests pin the behaviour: findings reach the formatter before the input is
exhausted, the streamed text equals ``registry.render`` of the same findings for every format
(also when the spools spill to disk), and the per-shape memo (memo.Checker) answers exactly what
check_domain does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from libvirt_txmode.ci import checking
from libvirt_txmode.ci import run as validation
from libvirt_txmode.ci.cli import validate
from libvirt_txmode.ci.memo import Checker
from libvirt_txmode.common import spool
from libvirt_txmode.engine.check import check_domain
from libvirt_txmode.engine.domain_xml import NIC_FIELDS, DomainXMLError, parse_domain
from libvirt_txmode.engine.model import Nic
from libvirt_txmode.engine.policy import parse_policy
from libvirt_txmode.engine.wording import Finding, Level, Report, Summary
from libvirt_txmode.host.snapshot import load_snapshot
from libvirt_txmode.report import sarif_format
from libvirt_txmode.report.base import RunInfo
from libvirt_txmode.report.json_format import JsonFormatter
from libvirt_txmode.report.registry import FORMAT_NAMES, render

from .test_throughput_equivalence import POLICY, _domain

FILES = 120
_TIMING = re.compile(r'( time="[0-9.]+"|"(?:start|end)TimeUtc":"[^"]*")')


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .test_cli import snapshot

    root = tmp_path_factory.mktemp("streaming")
    for index in range(FILES):
        directory = root / "domains" / f"d{index // 40}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"vm-{index:04d}.xml").write_text(_domain(index), encoding="utf-8")
    (root / "domains" / "d0" / "net.xml").write_text("<network/>", encoding="utf-8")
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    (root / "h1.json").write_text(snapshot("h1", tx=True), encoding="utf-8")
    return root


def _run(corpus: Path, fmt: str, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = ["-p", str(corpus / "policy.yaml"), "--caps", str(corpus / "h1.json"), "-f", fmt]
    code = validate([*argv, *extra, str(corpus / "domains")], io.BytesIO(), out, {"NO_COLOR": "1"})
    return code, out.getvalue()


def _finding(data: dict[str, Any]) -> Finding:
    data = dict(data, level=Level(data["level"]))
    return Finding(**data)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_streamed_report_is_the_whole_report(corpus: Path, fmt: str) -> None:
    # The same run as JSON gives the files and findings; render() of that Report (the
    # whole-report path) must be the text the streaming run wrote, byte for byte.
    code, streamed = _run(corpus, fmt, "-j", "1")
    _, as_json = _run(corpus, "json", "-j", "1")
    document = json.loads(as_json)
    summary = document["summary"]
    report = Report(
        files=tuple(document["files"]),
        findings=tuple(_finding(f) for f in document["findings"]),
        summary=Summary(
            **{k: summary[k] for k in ("files", "domains", "nics", "errors", "warnings")}
        ),
        hosts=tuple(document["hosts"]),
        tool_version=document["tool"]["version"],
    )
    assert code == 1 and report.findings and summary["skipped"] == 1
    run = RunInfo(
        skipped=summary["skipped"],
        cwd=os.getcwd(),
        base=validation.repository_root(os.getcwd()),
        exit_code=code,
    )
    whole = render(fmt, report, color=False, run=run)
    if fmt == "sarif":
        streamed, whole = (_sarif_without_invocation(t) for t in (streamed, whole))
    assert _TIMING.sub("", streamed) == _TIMING.sub("", whole)


def _sarif_without_invocation(text: str) -> str:
    document = json.loads(text)
    for invocation in document["runs"][0]["invocations"]:
        for key in ("arguments", "startTimeUtc", "endTimeUtc"):
            invocation.pop(key, None)
    return json.dumps(document, sort_keys=True)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_spilled_spools_change_nothing(
    corpus: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny memory limit: every spool moves to its (unlinked) file almost at once.
    _, in_memory = _run(corpus, fmt, "-j", "2")
    monkeypatch.setattr(spool, "MEMORY_LIMIT", 64)
    _, spilled = _run(corpus, fmt, "-j", "2")
    if fmt == "sarif":
        in_memory, spilled = (_sarif_without_invocation(t) for t in (in_memory, spilled))
    assert _TIMING.sub("", spilled) == _TIMING.sub("", in_memory)


def test_sarif_cap_keeps_errors_first_from_a_spilled_spool(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "MEMORY_LIMIT", 64)
    monkeypatch.setattr(sarif_format, "SARIF_MAX_RESULTS", 5)
    _, text = _run(corpus, "sarif")
    run = json.loads(text)["runs"][0]
    assert [r["level"] for r in run["results"]] == ["error"] * 5
    assert run["properties"]["omittedResults"] > 0


def test_findings_reach_the_formatter_before_the_input_is_exhausted(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_read = checking.read_input

    def counting_read(item: Any, limit: int) -> Any:
        reads.append(item.label)
        return real_read(item, limit)

    seen_at: list[int] = []
    real_finding = JsonFormatter.finding

    def noting_finding(self: JsonFormatter, finding: Finding) -> None:
        seen_at.append(len(reads))
        real_finding(self, finding)

    monkeypatch.setattr(checking, "read_input", counting_read)
    monkeypatch.setattr(JsonFormatter, "finding", noting_finding)
    _, text = _run(corpus, "json", "-j", "1")
    total = len(reads)
    assert total == FILES + 1
    # Every finding was handed on while its file was the last one read: none waits for the end.
    assert seen_at and seen_at[0] < 5
    assert len(json.loads(text)["findings"]) == len(seen_at)
    assert sorted(seen_at) == seen_at and seen_at[-1] <= total


def test_spool_round_trips_any_text_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    held = spool.Spool(limit=7)
    text = "".join(f"caf\u00e9 \udcff{i}\r \u20ac\n" for i in range(500)) + "no newline"
    for start in range(0, len(text), 5):
        held.write(text[start : start + 5])
    assert held.file is not None  # spilled, into a file with no name
    assert os.listdir(tmp_path) == []
    assert "".join(held.chunks()) == text
    assert list(held.lines()) == [f"{line}\n" for line in text.split("\n")[:-1]] + ["no newline"]
    out = io.StringIO()
    held.copy_to(out)
    assert out.getvalue() == text
    held.close()
    assert os.listdir(tmp_path) == []
    # A line begun in the file and ended in memory is one line.
    split = spool.Spool(limit=7)
    for piece in ("ab\ncdefgh", "ij\nk"):
        split.write(piece)
    assert split.file is not None and split.parts == ["ij\nk"]
    assert list(split.lines()) == ["ab\n", "cdefghij\n", "k"] == list(split.lines())
    split.close()


def test_nic_fields_are_the_records_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(Nic)) == NIC_FIELDS


def _memo_corpus() -> list[str]:
    domains = [_domain(index) for index in range(80)]
    # Names and MACs that the rules below tell apart, on otherwise identical shapes.
    for name, mac in [("db-1", "52:54:00:AA:00:01"), ("web-1", "52:54:00:aa:00:01"), ("db-2", "")]:
        domains.append(
            f"<domain type='kvm'><name>{name}</name><devices>"
            f"<interface type='network'><mac address='{mac}'/><source network='default'/>"
            "<model type='virtio'/></interface>"
            "<interface type='user'><model type='virtio'/><driver txmode='timer'/></interface>"
            "</devices></domain>"
        )
    return domains


def test_memo_answers_what_check_domain_answers(tmp_path: Path) -> None:
    from .test_cli import snapshot

    policy = parse_policy(
        POLICY + "  - name: db\n    match: {domain: 'db-*'}\n    require: true\n"
        "  - name: mac\n    match: {mac: '52:54:00:aa:*'}\n    allowed: [iothread]\n",
        "policy.yaml",
    )
    caps = tmp_path / "h1.json"
    caps.write_text(snapshot("h1", tx=True), encoding="utf-8")
    hosts = [load_snapshot(str(caps), require_root_owned=False).capabilities]
    checker = Checker(policy, hosts)
    for round_ in range(2):  # the second round is answered from the remembered shapes
        for index, text in enumerate(_memo_corpus()):
            try:
                domain = parse_domain(text.encode(), f"f{index}.xml")
            except DomainXMLError:  # the corpus holds broken XML on purpose
                continue
            assert checker.check(domain) == check_domain(domain, policy, hosts), (round_, index)
    assert checker.shapes


def test_one_folder_in_one_process_is_walked_while_it_is_read(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -j 1 on one folder holds no list of its files: the walk enters the later folders only
    # after the first findings were handed on.
    from libvirt_txmode.ci import inputs

    entered: list[str] = []
    real_from_file = inputs.Ignore.from_file.__func__  # type: ignore[attr-defined]

    def noting_from_file(cls: type[inputs.Ignore], directory: str) -> Any:
        entered.append(directory)
        return real_from_file(cls, directory)

    firsts: list[int] = []
    real_finding = JsonFormatter.finding

    def noting_finding(self: JsonFormatter, finding: Finding) -> None:
        firsts.append(len(entered))
        real_finding(self, finding)

    monkeypatch.setattr(inputs.Ignore, "from_file", classmethod(noting_from_file))
    monkeypatch.setattr(JsonFormatter, "finding", noting_finding)
    code, _ = _run(corpus, "json", "-j", "1")
    assert code == 1
    folders = [d for d in entered if os.path.basename(d).startswith("d") and d != os.getcwd()]
    assert len(folders) >= 3  # domains, d0, d1, d2 (and the current directory's own)
    assert firsts[0] < len(entered)


@pytest.mark.parametrize(
    "interface",
    [
        "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='a'/>"
        "<model type='virtio'/><driver name='qemu' txmode='timer'/><alias name='ua-x'/>"
        "<address type='pci'/></interface>",
        # Repeated children: the first of each counts, as find() (and libvirt) pick it.
        "<interface type='bridge'><source bridge='br0' dev='d'/><source bridge='br1'/>"
        "<driver txmode='iothread'/><driver txmode='timer'/><!-- c --><model type='e1000'/>"
        "<model type='virtio'/></interface>",
        "<interface/>",
    ],
)
def test_the_plain_nic_reader_reads_what_the_namespace_blind_one_does(interface: str) -> None:
    from lxml import etree

    from libvirt_txmode.engine import domain_xml as domain

    element = etree.fromstring(interface, domain.make_parser())
    assert domain._plain_nic_fields(3, element) == domain._nic_fields(3, element)


def test_without_a_writable_temporary_directory_the_report_is_still_whole(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = _run(corpus, "json", "-j", "1")
    monkeypatch.setattr(spool, "MEMORY_LIMIT", 64)
    # tempfile's own choice of directory, made once per process, now fails for every file.
    monkeypatch.setattr(tempfile, "tempdir", str(corpus / "no-such-directory"))
    with pytest.raises(OSError), tempfile.TemporaryFile():
        pass
    for fmt in FORMAT_NAMES:
        monkeypatch.setattr(spool, "MEMORY_LIMIT", 1 << 18)
        _, whole = _run(corpus, fmt, "-j", "1")
        monkeypatch.setattr(spool, "MEMORY_LIMIT", 64)
        code, text = _run(corpus, fmt, "-j", "1")
        if fmt == "sarif":
            whole, text = (_sarif_without_invocation(t) for t in (whole, text))
        assert (code, _TIMING.sub("", text)) == (1, _TIMING.sub("", whole)), fmt
    assert _run(corpus, "json", "-j", "1") == (1, expected)
