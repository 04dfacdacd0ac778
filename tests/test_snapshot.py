"""snapshot.py and libvirt_host.py: capability snapshots, from a libvirt connection to parse_snapshot.

tests/data/libvirt/capabilities-debian12-libvirt9.0-qemu7.2.xml is `virsh -c qemu:///system
capabilities` recorded on Debian 12 (libvirt 9.0.0, QEMU 7.2.22).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

from libvirt_txmode import __version__
from libvirt_txmode.engine.model import Guest, Support, SupportState
from libvirt_txmode.engine.policy import Policy
from libvirt_txmode.host import snapshot as snapshot_module
from libvirt_txmode.host.libvirt_snapshot import (
    VIRTIO_NET_DEVICES,
    guests_from_capabilities,
    open_libvirt,
    take_snapshot,
)
from libvirt_txmode.host.probe import ProbeResult
from libvirt_txmode.host.snapshot import FORMAT, SnapshotError, load_snapshot, parse_snapshot
from tests import libvirt_env
from tests.fakes import DATA, FakeEmulators, make_fakes

CAPS_XML = (DATA / "libvirt" / "capabilities-debian12-libvirt9.0-qemu7.2.xml").read_text()
X86 = "/usr/bin/qemu-system-x86_64"
I386 = "/usr/bin/qemu-system-i386"
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks apply to root")

PCI = {"state": "supported", "detail": "tx listed by -device virtio-net-pci,help", "method": "help"}
CCW = {"state": "unsupported", "detail": "this QEMU has no device virtio-net-ccw", "method": "help"}


@pytest.fixture
def fakes() -> Iterator[FakeEmulators]:
    yield from make_fakes()


def good_document() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": 1,
        "tool": __version__,
        "host": "hv1",
        "created": "2026-01-01T00:00:00Z",
        "libvirt": {"uri": "qemu:///system"},
        "guests": [
            {"arch": "x86_64", "emulator": X86, "domain_types": ["qemu", "kvm"]},
            {"arch": "i686", "emulator": I386, "domain_types": ["qemu"]},
        ],
        "domain_capabilities": {},
        "emulators": {
            X86: {
                "identity": "/usr/bin/qemu-system-x86_64:1:2:3:4:5",
                "devices": {"virtio-net-pci": PCI, "virtio-net-ccw": CCW},
                "error": None,
            },
            I386: {"identity": None, "devices": {}, "error": "did not finish within 5 s"},
        },
    }


# --- parse_snapshot ------------------------------------------------------------------------------


def test_parse_good_document() -> None:
    snapshot = parse_snapshot(good_document(), "snap.json")
    assert (snapshot.host, snapshot.source, snapshot.created) == (
        "hv1",
        "snap.json",
        "2026-01-01T00:00:00Z",
    )
    caps = snapshot.capabilities
    assert caps.name == "hv1"
    assert caps.guests == (
        Guest("x86_64", X86, ("qemu", "kvm")),
        Guest("i686", I386, ("qemu",)),
    )
    assert caps.devices == {
        X86: {
            "virtio-net-pci": Support(SupportState.SUPPORTED, PCI["detail"], "help"),
            "virtio-net-ccw": Support(SupportState.UNSUPPORTED, CCW["detail"], "help"),
        }
    }
    assert caps.emulator_errors == {I386: "did not finish within 5 s (on hv1)"}
    assert snapshot.identities == {X86: "/usr/bin/qemu-system-x86_64:1:2:3:4:5"}
    renamed = parse_snapshot(good_document(), "snap.json", name="ci-target")
    assert renamed.capabilities.name == "ci-target"
    assert renamed.capabilities.emulator_errors == {
        I386: "did not finish within 5 s (on ci-target)"
    }
    assert renamed.host == "hv1"


def _mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(good_document())
    change(document)
    return document


def _set(path: Sequence[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: Sequence[str]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


PCI_PATH = ("emulators", X86, "devices", "virtio-net-pci")
BAD = [
    ([], "the document is not a JSON object"),
    ("snapshot", "the document is not a JSON object"),
    (_mutated(_set(["format"], "libvirt-txmode-probe-cache")),
     "'format' is not 'libvirt-txmode-snapshot'"),
    (_mutated(_drop(["format"])), "'format' is not 'libvirt-txmode-snapshot'"),
    (_mutated(_set(["version"], 2)), "unsupported version 2 (this tool reads 1)"),
    (_mutated(_set(["version"], "1")), "unsupported version '1' (this tool reads 1)"),
    (_mutated(_drop(["version"])), "unsupported version None (this tool reads 1)"),
    (_mutated(_drop(["host"])), "top level: missing key 'host'"),
    (_mutated(_set(["host"], 5)), "top level: 'host' is not a string"),
    (_mutated(_drop(["guests"])), "top level: missing key 'guests'"),
    (_mutated(_set(["guests"], {"x86_64": X86})), "top level: 'guests' is not a list"),
    (_mutated(_set(["guests"], ["x86_64"])), "guests[0] is not an object"),
    (_mutated(_drop(["guests", 1, "emulator"])), "guests[1]: missing key 'emulator'"),
    (_mutated(_set(["guests", 0, "arch"], None)), "guests[0]: 'arch' is not a string"),
    (_mutated(_set(["guests", 0, "domain_types"], "kvm")),
     "guests[0]: 'domain_types' is not a list"),
    (_mutated(_set(["guests", 0, "domain_types"], [1])),
     "guests[0]: 'domain_types' is not a list of strings"),
    (_mutated(_drop(["emulators"])), "top level: missing key 'emulators'"),
    (_mutated(_set(["emulators"], [X86])), "top level: 'emulators' is not an object"),
    (_mutated(_set(["emulators", X86], "ok")), f"emulators[{X86!r}] is not an object"),
    (_mutated(_drop(["emulators", X86, "devices"])), f"emulators[{X86!r}]: missing key 'devices'"),
    (_mutated(_set(["emulators", X86, "devices"], ["virtio-net-pci"])),
     f"emulators[{X86!r}]: 'devices' is not an object"),
    (_mutated(_set(PCI_PATH, "supported")),
     f"emulators[{X86!r}].devices['virtio-net-pci']: device entry is not an object"),
    (_mutated(_set([*PCI_PATH, "state"], "maybe")),
     f"emulators[{X86!r}].devices['virtio-net-pci']: 'state' is 'maybe', not one of "
     "'supported', 'unsupported', 'unknown'"),
    (_mutated(_drop([*PCI_PATH, "state"])),
     f"emulators[{X86!r}].devices['virtio-net-pci']: 'state' is None, not one of "
     "'supported', 'unsupported', 'unknown'"),
    (_mutated(_set(["libvirt", "library_version"], "9.0")),
     "libvirt: 'library_version' is '9.0', not MAJOR.MINOR.MICRO"),
    (_mutated(_set(["libvirt", "library_version"], 9000000)),
     "libvirt: 'library_version' is 9000000, not MAJOR.MINOR.MICRO"),
    (_mutated(_set(["libvirt", "library_version"], "9.1000.0")),
     "libvirt: 'library_version' is '9.1000.0', not MAJOR.MINOR.MICRO"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "message"), BAD, ids=[m for _, m in BAD])
def test_parse_bad_documents(document: Any, message: str) -> None:
    with pytest.raises(SnapshotError) as caught:
        parse_snapshot(document, "snap.json")
    assert str(caught.value) == f"snap.json: not a valid snapshot: {message}"


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [({"library_version": "9.0.0"}, 9_000_000), ({"library_version": "11.3.0"}, 11_003_000)],
)
def test_the_libvirt_version_comes_from_the_recorded_library_version(
    recorded: dict[str, str], expected: int
) -> None:
    snapshot = parse_snapshot(_mutated(_set(["libvirt"], recorded)), "snap.json")
    assert snapshot.capabilities.libvirt_version == expected
    # Written back as it was read, and read again to the same number.
    again = parse_snapshot(json.loads(json.dumps(snapshot.to_json())), "again.json")
    assert again.capabilities.libvirt_version == expected


def test_a_snapshot_without_the_libvirt_version_loads_with_it_unknown() -> None:
    # Snapshots taken before the version mattered may lack it (or the whole libvirt object):
    # unknown, and the rules follow the newest libvirt they know.
    for change in (_drop(["libvirt"]), _set(["libvirt"], {}), _set(["libvirt"], None)):
        snapshot = parse_snapshot(_mutated(change), "old.json")
        assert snapshot.capabilities.libvirt_version is None
        assert "library_version" not in snapshot.to_json()["libvirt"]


def test_the_shipped_example_snapshot_records_libvirt_9_0() -> None:
    example = DATA.parent.parent / "examples" / "hosts" / "debian12.json"
    snapshot = load_snapshot(str(example), require_root_owned=False)
    assert snapshot.capabilities.libvirt_version == 9_000_000


def test_snapshot_error_is_a_value_error() -> None:
    # parse_snapshot raised ValueError before it raised SnapshotError: old callers keep working.
    with pytest.raises(ValueError, match="not a valid snapshot"):
        parse_snapshot([], "x")


# --- load_snapshot -------------------------------------------------------------------------------


def write(path: Path, content: bytes, mode: int = 0o644) -> str:
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


def test_load_good_file(tmp_path: Path) -> None:
    path = write(tmp_path / "snap.json", json.dumps(good_document()).encode())
    snapshot = load_snapshot(path, name="target")
    assert snapshot.source == path
    assert snapshot.capabilities.name == "target"
    assert snapshot == parse_snapshot(good_document(), path, "target")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"{\"format\": ", "not JSON: Expecting value: line 1 column 12 (char 11)"),
        (b"{\"a\": \"\xff\"}",
         "not JSON: 'utf-8' codec can't decode byte 0xff in position 7: invalid start byte"),
        (b'{"format": "libvirt-txmode-snapshot", "version": 1}', "top level: missing key 'host'"),
    ],
    ids=["empty", "truncated", "not UTF-8", "keys missing"],
)  # fmt: skip
def test_load_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path / "snap.json", content)
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(path)
    assert str(caught.value) == f"{path}: not a valid snapshot: {message}"


def test_load_deeply_nested(tmp_path: Path) -> None:
    # json raises RecursionError, not ValueError: still a clean SnapshotError.
    path = write(tmp_path / "snap.json", b"[" * 100_000)
    with pytest.raises(
        SnapshotError, match=r"snap\.json: not a valid snapshot: not JSON: maximum recursion"
    ):
        load_snapshot(path)


def test_load_truncated_real_document(tmp_path: Path) -> None:
    text = json.dumps(good_document(), indent=1).encode()
    path = write(tmp_path / "snap.json", text[: len(text) // 2])
    with pytest.raises(SnapshotError, match=r"^.*snap\.json: not a valid snapshot: not JSON: "):
        load_snapshot(path)


def test_load_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(path)
    assert str(caught.value) == f"{path}: cannot read snapshot: No such file or directory"


def test_load_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_module, "MAX_SNAPSHOT_BYTES", 100)
    path = write(tmp_path / "snap.json", json.dumps(good_document()).encode())
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(path)
    assert str(caught.value) == f"{path}: larger than 100 bytes"


def test_a_fifo_in_place_of_the_snapshot_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "snap.json"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot(str(fifo), require_root_owned=False)


@AS_ROOT
def test_require_root_owned(tmp_path: Path) -> None:
    content = json.dumps(good_document()).encode()
    foreign = write(tmp_path / "foreign.json", content)
    os.chown(foreign, 65534, 65534)
    writable = write(tmp_path / "writable.json", content, mode=0o666)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # anyone could rename another file into place
    in_open_dir = write(open_dir / "snap.json", content)
    for path, why in (
        (foreign, f"file {foreign} is owned by uid 65534, not root"),
        (writable, f"file {writable} is writable by group or others"),
        (in_open_dir, f"directory {open_dir} is writable by group or others"),
    ):
        with pytest.raises(SnapshotError) as caught:
            load_snapshot(path)  # as root the default is to require it
        assert str(caught.value).startswith(f"{path}: refused: "), caught.value
        assert why.split(" is ")[0] in str(caught.value), (why, caught.value)
        with pytest.raises(SnapshotError, match="refused: "):
            load_snapshot(path, require_root_owned=True)
        assert load_snapshot(path, require_root_owned=False).host == "hv1"
    assert load_snapshot(write(tmp_path / "ok.json", content)).host == "hv1"


# --- guests_from_capabilities --------------------------------------------------------------------


def test_guests_from_recorded_capabilities() -> None:
    assert guests_from_capabilities(CAPS_XML) == [
        Guest("i686", I386, ("qemu", "kvm"), "pc-i440fx-7.2"),
        Guest("x86_64", X86, ("qemu", "kvm"), "pc-i440fx-7.2"),
    ]


def test_guests_with_a_domain_type_emulator() -> None:
    # Older KVM hosts: <domain type='kvm'> names its own binary (qemu-kvm).
    xml = """<capabilities><host/>
      <guest><os_type>hvm</os_type>
        <arch name='x86_64'><wordsize>64</wordsize><emulator>/usr/bin/qemu-system-x86_64</emulator>
          <domain type='qemu'/>
          <domain type='kvm'><emulator>/usr/libexec/qemu-kvm</emulator></domain>
        </arch>
      </guest>
      <guest><os_type>hvm</os_type><arch name='aarch64'><domain type='qemu'/></arch></guest>
    </capabilities>"""
    assert guests_from_capabilities(xml) == [
        Guest("x86_64", "/usr/libexec/qemu-kvm", ("kvm",)),
        Guest("x86_64", X86, ("qemu",)),
    ]


# --- take_snapshot with a recorded connection -----------------------------------------------------


class RecordedConnection:
    """What take_snapshot asks of a virConnect, answered from the recording."""

    def __init__(self, caps_xml: str, domcaps_error: str = "") -> None:
        self.caps_xml = caps_xml
        self.domcaps_error = domcaps_error
        self.domcaps_calls: list[tuple[str, str, str]] = []

    def getCapabilities(self) -> str:
        return self.caps_xml

    def getDomainCapabilities(
        self, emulator: str, arch: str, machine: None, virttype: str, flags: int
    ) -> str:
        self.domcaps_calls.append((emulator, arch, virttype))
        if self.domcaps_error:
            raise RuntimeError(self.domcaps_error)
        return "<domainCapabilities><machine>pc-i440fx-7.2</machine></domainCapabilities>"

    def getLibVersion(self) -> int:
        return 9_000_000

    def getType(self) -> str:
        return "QEMU"

    def getVersion(self) -> int:
        return 7_002_022

    def getHostname(self) -> str:
        return "hv1"


# What qom-list-types gives for QEMU 7.2's virtio-net-pci (tests/test_host_facts.py asks it).
PCI_ANCESTRY = {
    "virtio-net-pci": ("virtio-net-pci-base", "virtio-pci", "pci-device", "device", "object")
}


def fake_prober(calls: list[str]) -> Callable[[str, Sequence[str], float], ProbeResult]:
    def prober(emulator: str, devices: Sequence[str], timeout: float) -> ProbeResult:
        calls.append(emulator)
        answers = {
            d: Support(SupportState.SUPPORTED, "probed", "help")
            if d != "virtio-net-ccw"
            else Support(SupportState.UNSUPPORTED, "this QEMU has no device virtio-net-ccw", "help")
            for d in devices
        }
        return ProbeResult(answers, dict(PCI_ANCESTRY))

    return prober


def test_take_snapshot_from_recording(fakes: FakeEmulators) -> None:
    x86 = str(fakes.script("qemu-system-x86_64", "exit 0\n"))
    i386 = str(fakes.script("qemu-system-i386", "exit 0\n"))
    conn = RecordedConnection(CAPS_XML.replace(X86, x86).replace(I386, i386))
    calls: list[str] = []
    policy = Policy(emulators=(fakes.glob,))
    document = take_snapshot(conn, policy, prober=fake_prober(calls), uri="qemu:///system")
    assert calls == sorted([x86, i386])
    assert conn.domcaps_calls == [
        (i386, "i686", "qemu"), (i386, "i686", "kvm"),
        (x86, "x86_64", "qemu"), (x86, "x86_64", "kvm"),
    ]  # fmt: skip
    assert document["libvirt"] == {
        "uri": "qemu:///system",
        "library_version": "9.0.0",
        "hypervisor": "QEMU",
        "hypervisor_version": "7.2.22",
    }
    assert document["domain_capabilities"][f"{x86} x86_64 kvm"] == {
        "machine": "pc-i440fx-7.2",
        "error": None,
    }
    assert set(document["emulators"][x86]["devices"]) == set(VIRTIO_NET_DEVICES)

    snapshot = parse_snapshot(json.loads(json.dumps(document)), "roundtrip")
    assert snapshot.host == "hv1"
    assert snapshot.capabilities.guests == (
        Guest("i686", i386, ("qemu", "kvm"), "pc-i440fx-7.2"),
        Guest("x86_64", x86, ("qemu", "kvm"), "pc-i440fx-7.2"),
    )
    from libvirt_txmode.host.emulator import identify

    assert snapshot.identities == {x86: identify(x86).key(), i386: identify(i386).key()}
    assert snapshot.capabilities.devices[x86]["virtio-net-ccw"].state is SupportState.UNSUPPORTED
    assert snapshot.capabilities.emulator_errors == {}
    # The probe's ancestry is kept per emulator; libvirt has no capabilities file for a fake
    # binary, so how it passes -device stays unknown (no key written).
    assert snapshot.capabilities.ancestry == {x86: PCI_ANCESTRY, i386: PCI_ANCESTRY}
    assert snapshot.capabilities.device_json == {}
    assert "device_json" not in document["emulators"][x86]


def test_take_snapshot_untrusted_and_read_only(fakes: FakeEmulators) -> None:
    # The recording's real paths are outside this policy: recorded as errors, never executed.
    conn = RecordedConnection(
        CAPS_XML,
        domcaps_error=(
            "operation forbidden: read only access prevents virConnectGetDomainCapabilities"
        ),
    )
    calls: list[str] = []
    document = take_snapshot(conn, Policy(emulators=(fakes.glob,)), prober=fake_prober(calls))
    assert calls == []
    for emulator in (X86, I386):
        assert document["emulators"][emulator] == {
            "identity": None,
            "devices": {},
            "error": f"emulator {emulator} is not in the policy's trusted 'emulators' list",
        }
    assert document["domain_capabilities"][f"{X86} x86_64 qemu"] == {
        "machine": None,
        "error": "operation forbidden: read only access prevents virConnectGetDomainCapabilities"
        " (domain capabilities need a read-write connection: run as root)",
    }
    snapshot = parse_snapshot(document, "s")
    assert snapshot.capabilities.emulator_errors == {
        X86: f"emulator {X86} is not in the policy's trusted 'emulators' list (on hv1)",
        I386: f"emulator {I386} is not in the policy's trusted 'emulators' list (on hv1)",
    }


def test_take_snapshot_never_runs_a_foreign_binary(fakes: FakeEmulators) -> None:
    script, evidence = fakes.touching("qemu-system-x86_64", mode=0o757)
    conn = RecordedConnection(
        CAPS_XML.replace(X86, str(script)).replace(I386, str(fakes.directory / "missing"))
    )
    document = take_snapshot(conn, Policy(emulators=(fakes.glob,)))  # the real prober
    assert not evidence.exists()
    assert document["emulators"][str(script)]["error"] == (
        f"emulator {script} is not trusted: file {script} is writable by group or others "
        f"(mode 0757); fix: chmod go-w {script}: refusing to run it"
    )


# --- against the real libvirt daemon -------------------------------------------------------------


@pytest.fixture(scope="module")
def libvirt_up() -> None:
    libvirt_env.require_libvirt()
    libvirt_env.daemon_up()


@pytest.mark.integration
def test_take_snapshot_real_libvirt(libvirt_up: None) -> None:
    conn = open_libvirt(libvirt_env.URI)
    try:
        document = take_snapshot(conn, Policy(probe_timeout=20), uri=libvirt_env.URI)
    finally:
        conn.close()
    snapshot = parse_snapshot(json.loads(json.dumps(document)), "live")
    x86 = snapshot.capabilities.devices[X86]
    assert x86["virtio-net-pci"] == Support(
        SupportState.SUPPORTED, "tx listed by -device virtio-net-pci,help", "help"
    )
    assert x86["virtio-net-ccw"].state is SupportState.UNSUPPORTED
    assert Guest("x86_64", X86, ("qemu", "kvm")) in snapshot.capabilities.guests or any(
        g.arch == "x86_64" and g.emulator == X86 for g in snapshot.capabilities.guests
    )
    from libvirt_txmode.host.emulator import identify

    assert snapshot.identities[X86] == identify(X86).key()
    assert document["libvirt"]["hypervisor"] == "QEMU"
    # QEMU's own type ancestry, and libvirt 9.0's own word on JSON -device for QEMU 7.2.
    chain = snapshot.capabilities.ancestry[X86]["virtio-net-pci"]
    assert chain[:3] == ("virtio-net-pci-base", "virtio-pci", "pci-device")
    assert snapshot.capabilities.device_json[X86] is True
    assert all(v["error"] is None for v in document["domain_capabilities"].values())


def pc_machine(emulator: str) -> str:
    """The versioned machine type ``pc`` stands for in this QEMU (pc-i440fx-7.2 in Debian 12's,
    pc-i440fx-10.0 in Debian 13's): asked of the QEMU under test, never written down."""
    listing = subprocess.run(
        [emulator, "-machine", "help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    found = re.search(r"^pc\s.*\(alias of (\S+)\)$", listing, re.MULTILINE)
    assert found, listing
    return found.group(1)


@pytest.mark.integration
def test_snapshot_command(libvirt_up: None, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nemulators: [/usr/bin/qemu-system-*]\n")
    output = tmp_path / "state" / "snapshot.json"
    result = subprocess.run(
        [str(libvirt_env.VENV_BIN / "libvirt-txmode"), "snapshot",
         "-o", str(output), "-p", str(policy)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Progress goes to stderr, one line per step that may take a while.
    assert f"probing {X86}\n" in result.stderr
    assert result.stdout == f"wrote {output}: 2 emulators, 0 not probed\n"
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    snapshot = load_snapshot(str(output))
    # The facts libvirt's defaults depend on: this host's arch, networks and vhost-net.
    assert snapshot.capabilities.arch == "x86_64"
    assert snapshot.capabilities.vhost_net == os.path.exists("/dev/vhost-net")
    assert "default" in snapshot.capabilities.networks
    assert {g.machine for g in snapshot.capabilities.guests} == {pc_machine(X86)}
    assert snapshot.capabilities.devices[X86]["virtio-net-pci"].state is SupportState.SUPPORTED
    assert snapshot.capabilities.devices[X86]["virtio-net-ccw"].state is SupportState.UNSUPPORTED
