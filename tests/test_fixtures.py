"""The fixture corpus: each tests/data/domains/*.xml states the findings it must produce.

Like pycodestyle's testsuite, the first line of every fixture is a header comment,
``<!-- expect: CODE@LINE ... -->`` (``<!-- expect: -->`` for a clean file), which may name the
policy the domain is checked with first, ``<!-- policy: NAME.yaml expect: ... -->`` (a file in
tests/data/policies; without one, site.yaml). A new case is a new file: the corpus has no size
limit. The domains are checked against one host, built here: an x86_64 QEMU 7.2 that
has every PCI/mmio virtio-net device (and no virtio-net-ccw), an s390x QEMU, an old QEMU without
``tx``, and an aarch64 QEMU whose probe failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.ci.cli import validate_main
from libvirt_txmode.engine import codes
from libvirt_txmode.engine.model import (
    Finding,
    Guest,
    HostCapabilities,
    Level,
    Support,
    SupportState,
)
from libvirt_txmode.host.snapshot import Snapshot, write_snapshot

DATA = Path(__file__).resolve().parent / "data"
DOMAINS = sorted((DATA / "domains").glob("*.xml"))
POLICIES = DATA / "policies"
POLICY = POLICIES / "site.yaml"
HEADER = re.compile(r"<!-- (?:policy: ([\w.-]+\.yaml) )?expect:((?: [a-z-]+@[0-9]+)*) -->")

X86 = "/usr/bin/qemu-system-x86_64"
S390 = "/usr/bin/qemu-system-s390x"
ARM = "/usr/bin/qemu-system-aarch64"
OLD = "/opt/qemu-0.13/bin/qemu-system-x86_64"


def _tx(device: str) -> Support:
    return Support(SupportState.SUPPORTED, f"tx listed by -device {device},help", "help")


def _absent(device: str) -> Support:
    return Support(SupportState.UNSUPPORTED, f"this QEMU has no device {device}", "help")


PCI_DEVICES = (
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
    "virtio-net-device",
)
HOST = HostCapabilities(
    name="fixture-host",
    arch="x86_64",
    guests=(
        Guest("x86_64", X86, ("qemu", "kvm")),
        Guest("s390x", S390, ("qemu",)),
        Guest("aarch64", ARM, ("qemu",)),
    ),
    devices={
        X86: {**{d: _tx(d) for d in PCI_DEVICES}, "virtio-net-ccw": _absent("virtio-net-ccw")},
        S390: {"virtio-net-ccw": _tx("virtio-net-ccw"), "virtio-net-pci": _tx("virtio-net-pci")},
        OLD: {
            "virtio-net-pci": Support(
                SupportState.UNSUPPORTED, "virtio-net-pci has no property 'tx'", "help"
            )
        },
    },
    emulator_errors={ARM: f"{ARM}: probe timed out after 5 s"},
    device_json={X86: True},
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The site policy, and HOST as a snapshot file written by the snapshot codec: the fixtures
    go through validate-domain's public entry point as a CI job would run it."""
    snapshot = tmp_path_factory.mktemp("caps") / "fixture-host.json"
    write_snapshot(str(snapshot), Snapshot(host=HOST.name, source="", capabilities=HOST))
    yield snapshot


def _header(path: Path) -> re.Match[str]:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    header = HEADER.fullmatch(first)
    assert header is not None, f"{path.name}: first line is not an '<!-- expect: ... -->' header"
    return header


def expected(path: Path) -> list[str]:
    return sorted(_header(path).group(2).split())


def policy_of(path: Path) -> Path:
    named = _header(path).group(1)
    return POLICIES / named if named else POLICY


def run(path: Path, snapshot: Path) -> list[Finding]:
    """``validate-domain -p POLICY --caps SNAPSHOT -f json FILE``, read back into findings."""
    out = io.StringIO()
    argv = ["-p", str(policy_of(path)), "--caps", str(snapshot), "-f", "json", str(path)]
    with contextlib.redirect_stdout(out):
        code = validate_main(argv)
    report = json.loads(out.getvalue())
    found = [Finding(**{**item, "level": Level(item["level"])}) for item in report["findings"]]
    assert code == (1 if any(f.level is Level.ERROR for f in found) else 0)
    return found


@pytest.mark.parametrize("path", DOMAINS, ids=[p.name for p in DOMAINS])
def test_fixture(path: Path, policy: Path) -> None:
    found = run(path, policy)
    assert sorted(f"{f.code}@{f.line}" for f in found) == expected(path)
    assert all(f.file == str(path) for f in found)


def test_corpus_coverage() -> None:
    seen = {item.split("@")[0] for path in DOMAINS for item in expected(path)}
    assert seen == set(codes.CODES)
    assert any(expected(path) == [] for path in DOMAINS)
    named = {policy_of(path) for path in DOMAINS}
    assert POLICY in named
    assert all(path.is_file() for path in named)


def test_headers_name_interface_lines() -> None:
    # A finding's line is its <interface> element's line, or the line of the <qemu:...> element
    # that set the tx (or, for xml-invalid, the error's).
    for path in DOMAINS:
        lines = path.read_text(encoding="utf-8").split("\n")
        for item in expected(path):
            code, line = item.split("@")
            if code != codes.XML_INVALID:
                assert lines[int(line) - 1].lstrip().startswith(("<interface", "<qemu:")), (
                    path.name,
                    item,
                )


def test_fixture_levels(policy: Path) -> None:
    """The levels the site policy gives, for the fixtures whose rules change them."""
    levels = {
        path.name: sorted((f.code, f.line, f.level.value) for f in run(path, policy))
        for path in DOMAINS
    }
    assert levels["05-storage-timer-vhost.xml"] == [
        ("txmode-ineffective", 12, "warning"),
        ("txmode-not-allowed", 12, "error"),
    ]
    assert levels["14-lab-audit.xml"] == [
        ("txmode-ineffective", 12, "error"),
        ("txmode-not-allowed", 18, "error"),
    ]
    assert levels["13-unknown-support.xml"] == [("txmode-unknown-support", 12, "error")]
    # Its own policy: no txmode-ineffective for the e1000 NIC (ineffective: ignore).
    assert levels["21-strict-policy.xml"] == [
        ("txmode-not-allowed", 17, "error"),
        ("txmode-required", 12, "error"),
    ]


def test_fixture_messages(policy: Path) -> None:
    by_name = {path.name: run(path, policy) for path in DOMAINS}
    assert [f.message for f in by_name["10-ccw-on-x86.xml"]] == [
        "txmode 'iothread' needs the 'tx' property of virtio-net-ccw, which "
        "/usr/bin/qemu-system-x86_64 does not have (this QEMU has no device virtio-net-ccw)"
    ]
    assert [f.message for f in by_name["17-doctype-entity.xml"]] == [
        "a DOCTYPE is not allowed in domain XML"
    ]
    assert [(f.message, f.rule) for f in by_name["06-db-missing-txmode.xml"]] == [
        (
            "virtio NIC has no txmode, but rule 'db-explicit' requires one "
            "(add <driver txmode='iothread|timer'/>)",
            "db-explicit",
        )
    ]
    assert [f.message for f in by_name["16-malformed.xml"]] == [
        "not well-formed XML: Opening and ending tag mismatch: driver line 12 and interface, "
        "line 13, column 17"
    ]
