"""validate-domain's fast paths change nothing: one process or several, every format is identical.

The corpus mixes what the report orders and counts: passing and failing domains, parse errors, a
refused DOCTYPE, a one-line domain (several NICs on line 1), a file given twice, a domain with two
<devices> and two <os>, two hosts, so a parallel run that joined its parts in another order or
lost a finding would show here.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from libvirt_txmode.ci.cli import EXIT_FATAL, validate
from libvirt_txmode.report.registry import FORMAT_NAMES

from .test_cli import EMULATOR, snapshot

BIN = Path(sys.executable).parent
POLICY = (
    "version: 1\n"
    "defaults:\n  allowed: [iothread, timer]\n  require: true\n"
    "rules:\n"
    "  - name: storage\n    match: {network: 'storage*'}\n    allowed: [iothread]\n"
    "  - name: audit-br\n    match: {bridge: br1}\n    action: audit\n    allowed: [iothread]\n"
)
FILES = 300  # above the automatic parallel threshold, so the default run forks too


def _nic(index: int, number: int) -> str:
    kind, source = [
        ("network", "<source network='default'/>"),
        ("network", f"<source network='storage{index % 3}'/>"),
        ("bridge", f"<source bridge='br{index % 2}'/>"),
        ("user", ""),
    ][number % 4]
    model = "e1000" if (index + number) % 9 == 0 else "virtio"
    txmode = ["iothread", "timer", None, "bogus"][(index * 7 + number) % 4]
    driver = f"<driver txmode='{txmode}'/>" if txmode else ""
    address = "<address type='ccw' devno='0x0001'/>" if (index + number) % 11 == 0 else ""
    return (
        f"    <interface type='{kind}'>\n      <mac address='52:54:00:00:{index % 256:02x}:"
        f"{number:02x}'/>\n      {source}<model type='{model}'/>{driver}{address}\n"
        "    </interface>\n"
    )


def _domain(index: int) -> str:
    if index % 37 == 5:
        return "<domain>\n  <name>broken\n</domain>\n"
    if index % 41 == 7:
        return "<!DOCTYPE domain>\n<domain><name>doctype</name></domain>\n"
    if index % 29 == 3:  # everything on line 1: equal sort keys, kept in check order
        nics = "".join(_nic(index, n).replace("\n", "") for n in range(3))
        return (
            f"<domain type='qemu'><name>one-line-{index}</name><devices>{nics}</devices></domain>"
        )
    virt = "kvm" if index % 13 == 0 else "qemu"
    emulator = f"    <emulator>{EMULATOR}</emulator>\n" if index % 2 else ""
    second = "  <devices>\n" + _nic(index, 5) + "  </devices>\n" if index % 17 == 0 else ""
    return (
        f"<domain type='{virt}'>\n  <name>vm-{index:04d}</name>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <os/>\n"
        f"  <devices>\n{emulator}{''.join(_nic(index, n) for n in range(4))}  </devices>\n"
        f"{second}</domain>\n"
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for index in range(FILES):
        directory = root / "domains" / f"d{index // 50:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"vm-{index:04d}.xml").write_text(_domain(index), encoding="utf-8")
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    (root / "h1.json").write_text(snapshot("h1", tx=True), encoding="utf-8")
    (root / "h2.json").write_text(snapshot("h2", tx=False), encoding="utf-8")
    return root


# What may differ between two runs of the same input: how long they took, and when.
_TIMING = re.compile(r'( time="[0-9.]+"|"(?:start|end)TimeUtc": "[^"]*")')


def _run(corpus: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = validate(
        ["-p", str(corpus / "policy.yaml"), *argv], io.BytesIO(b""), out, {"NO_COLOR": "1"}
    )
    text = out.getvalue()
    if '"invocations"' in text:
        # SARIF records the command line, which names the --jobs that differs on purpose here.
        document = json.loads(text)
        for invocation in document["runs"][0]["invocations"]:
            for key in ("arguments", "startTimeUtc", "endTimeUtc"):
                invocation.pop(key)
        text = json.dumps(document, indent=2, sort_keys=True)
    return code, _TIMING.sub("", text)


def _paths(corpus: Path) -> list[str]:
    domains = corpus / "domains"
    # A directory, a file of it given again (it sorts as its first copy) and another directory.
    return [str(domains / "d01"), str(domains / "d00" / "vm-0003.xml"), str(domains)]


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize(
    "hosts",
    [("--caps", "h1.json"), ("--caps", "h1.json", "--caps", "h2.json", "--any-host")],
    ids=["one-host", "two-hosts-any"],
)
def test_jobs_do_not_change_the_report(corpus: Path, fmt: str, hosts: Sequence[str]) -> None:
    caps = [str(corpus / h) if h.endswith(".json") else h for h in hosts]
    args = [*caps, "-f", fmt, *_paths(corpus)]
    single = _run(corpus, "--jobs", "1", *args)
    assert single[0] == 1
    assert single == _run(corpus, "--jobs", "2", *args)
    assert single == _run(corpus, "--jobs", "7", *args)  # more slices than CPUs
    assert single == _run(corpus, *args)  # automatic: FILES is above the threshold
    if fmt == "json":
        summary = json.loads(single[1])["summary"]
        assert summary["files"] == FILES + 51  # d01 and vm-0003.xml are given twice
        assert summary["errors"] and summary["warnings"]


def test_all_hosts_text_through_the_console_script(corpus: Path) -> None:
    argv = [
        str(BIN / "validate-domain"),
        "-p",
        str(corpus / "policy.yaml"),
        "--caps",
        str(corpus / "h1.json"),
        "--caps",
        str(corpus / "h2.json"),
        *_paths(corpus),
    ]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "NO_COLOR": "1"}
    runs = [
        subprocess.run([*argv, *jobs], capture_output=True, text=True, env=env, check=False)
        for jobs in (["-j", "1"], ["-j", "2"])
    ]
    assert runs[0].returncode == runs[1].returncode == 1
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stderr == runs[1].stderr == ""
    assert "host 'h2'" in runs[0].stdout


def test_links_out_of_the_tree_and_loops_are_skipped_whatever_the_jobs(
    corpus: Path, tmp_path: Path
) -> None:
    # A symlink loop, and a link to a domain outside the folder being checked: one early, one in
    # the last slice. Neither is followed; both are counted as skipped, the same with any -j.
    outside = tmp_path / "outside.xml"
    outside.write_text(_domain(0), encoding="utf-8")
    links = {10: ("a-loop.xml", None), 250: ("z-out.xml", outside)}
    for index, (name, target) in links.items():
        link = corpus / "domains" / f"d{index // 50:02d}" / name
        link.symlink_to(target or link)
    try:
        runs = [
            _run(corpus, "--jobs", jobs, "--caps", str(corpus / "h1.json"), _paths(corpus)[2])
            for jobs in ("1", "2", "5")
        ]
        assert runs == [runs[0]] * 3
        assert runs[0][1].endswith(
            "; 2 skipped (not a <domain>, or not a regular file in the tree)\n"
        )
        assert "outside.xml" not in runs[0][1] and "z-out.xml" not in runs[0][1]
    finally:
        for path in (corpus / "domains").rglob("*.xml"):
            if path.is_symlink():
                path.unlink()


def test_bad_jobs_is_a_usage_error(corpus: Path) -> None:
    run = subprocess.run(
        [str(BIN / "validate-domain"), "-p", str(corpus / "policy.yaml"), "-j", "0", "x.xml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == EXIT_FATAL
    assert "not a positive number of processes" in run.stderr


def test_no_child_is_left_behind(corpus: Path) -> None:
    _run(corpus, "--jobs", "2", "--caps", str(corpus / "h1.json"), *_paths(corpus))
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # every worker was reaped
