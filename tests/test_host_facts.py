"""The host facts the passthrough rules need, wherever capabilities come from (issue 19):

- ``ancestry``: each virtio-net QEMU type's ancestors, as the emulator's own QOM reports them
  (QMP ``qom-list-types`` with abstract types), collected by the probe, kept in the probe cache
  and the snapshot;
- ``device_json``: whether libvirt passes ``-device`` to the emulator as JSON, read from libvirt's
  own capabilities cache (/var/cache/libvirt/qemu/capabilities), recorded in the snapshot.

Real QEMU 7.2 and the real libvirt 9.0 capabilities files of this host wherever they can show
it; fake emulators only for what a real QEMU 7.2 cannot do (lack qom-list-types, hang in QMP).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from libvirt_txmode import __version__
from libvirt_txmode.engine.domain_xml import Domain, Nic
from libvirt_txmode.engine.model import HostCapabilities, Support, SupportState
from libvirt_txmode.engine.policy import Policy
from libvirt_txmode.host import libvirt_caps as qemucaps
from libvirt_txmode.host.emulator import identify
from libvirt_txmode.host.facts import local_capabilities, this_host
from libvirt_txmode.host.probe import ProbeResult, probe, probe_emulator, qmp_request
from libvirt_txmode.host.probe_cache import ProbeCache
from libvirt_txmode.host.qom_ancestry import ancestry_from_reply, ancestry_of
from libvirt_txmode.host.snapshot import (
    Snapshot,
    SnapshotError,
    load_snapshot,
    parse_snapshot,
)
from tests import libvirt_env as env
from tests.fakes import FakeEmulators, make_fakes, read

QEMU = "/usr/bin/qemu-system-x86_64"
REPO = Path(__file__).resolve().parent.parent
AS_ROOT = pytest.mark.usefixtures("as_root")
PCI_CHAIN = ("virtio-net-pci-base", "virtio-pci", "pci-device", "device", "object")
PCI_ANCESTRY = {"virtio-net-pci": PCI_CHAIN}
SUPPORTED = Support(SupportState.SUPPORTED, "tx listed by -device virtio-net-pci,help", "help")


@pytest.fixture
def fakes() -> Iterator[FakeEmulators]:
    yield from make_fakes()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also fed straight from the project's loggers: a hook run in-process earlier in the
    session routes "libvirt_txmode" to syslog without propagation (hook._syslog_handler)."""
    loggers = [
        logging.getLogger(f"libvirt_txmode.{name}")
        for name in ("host.libvirt_caps", "host.probe_cache")
    ]
    for logger in loggers:
        logger.addHandler(caplog.handler)
        caplog.set_level(logging.INFO, logger=logger.name)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        env.skip_unless_ci("libvirt's capabilities files are 0600 root")


def require_qemu() -> None:
    if not os.path.exists(QEMU):
        env.skip_unless_ci(f"needs {QEMU} (scripts/apt-deps installs qemu-system-x86)")


# --- ancestry from the real QEMU ------------------------------------------------------------------


@pytest.mark.qemu
def test_real_qemu_ancestry() -> None:
    require_qemu()
    result = probe_emulator(QEMU, ["virtio-net-pci"], timeout=20)
    assert result.ancestry_error == ""
    assert result.ancestry is not None
    pci = result.ancestry["virtio-net-pci"]
    assert {"virtio-net-pci-base", "virtio-pci", "pci-device"} <= set(pci)
    assert pci[0] == "virtio-net-pci-base"  # parent first
    assert "virtio-device" in result.ancestry["virtio-net-device"]
    for name in ("virtio-net-pci-transitional", "virtio-net-pci-non-transitional"):
        assert "virtio-net-pci-base" in result.ancestry[name]
    # Every chain runs up to QOM's root, and only virtio-net types are kept.
    assert all(chain[-1] == "object" for chain in result.ancestry.values())
    assert all(
        name.startswith("virtio-net") or {"virtio-net-device", "virtio-net-pci-base"} & set(chain)
        for name, chain in result.ancestry.items()
    )
    assert "virtio-blk-pci" not in result.ancestry and "e1000" not in result.ancestry
    # The support answers are the ones a probe without ancestry gives.
    assert result.devices == probe(QEMU, ["virtio-net-pci"], timeout=20)


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("method", "ancestry", "runs"),
    [
        ("auto", True, 2),  # -device help, then one QMP session for the ancestry
        ("qmp", True, 1),  # the ancestry rides in the device session: one more request
        ("auto", False, 1),
    ],
)
def test_ancestry_costs_one_qmp_session_at_most(
    fakes: FakeEmulators, method: str, ancestry: bool, runs: int
) -> None:
    # The real QEMU behind a wrapper that counts its runs.
    require_qemu()
    log = fakes.dropbox / "runs"
    wrapper = fakes.script("qemu-counted", f'echo run >> {log}\nexec {QEMU} "$@"\n')
    result = probe_emulator(
        str(wrapper), ["virtio-net-pci"], timeout=20, method=method, ancestry=ancestry
    )
    assert log.read_text().count("run") == runs
    assert result.devices["virtio-net-pci"].state is SupportState.SUPPORTED
    if ancestry:
        assert result.ancestry is not None and result.ancestry["virtio-net-pci"] == PCI_CHAIN
    else:
        assert result.ancestry is None


def test_qmp_request_asks_ancestry_on_the_same_channel() -> None:
    lines = [
        json.loads(line) for line in qmp_request(["virtio-net-pci"], ancestry=True).splitlines()
    ]
    assert [line["execute"] for line in lines] == [
        "qmp_capabilities",
        "device-list-properties",
        "qom-list-types",
        "quit",
    ]
    assert lines[2]["arguments"] == {"abstract": True}
    # Without ancestry the request is byte for byte the recorded one.
    assert qmp_request(["virtio-net-pci", "virtio-net-ccw"]) == read("7.2-qmp-request.jsonl")


# --- ancestry from answers a real QEMU 7.2 does not give -------------------------------------------


def _types(*pairs: tuple[str, Optional[str]]) -> list[dict[str, Any]]:
    return [{"name": n, "parent": p} if p else {"name": n} for n, p in pairs]


BASE_TYPES = (
    ("object", None),
    ("device", "object"),
    ("virtio-device", "device"),
    ("virtio-net-device", "virtio-device"),
    ("pci-device", "device"),
    ("virtio-pci", "pci-device"),
    ("virtio-net-pci-base", "virtio-pci"),
    ("virtio-net-pci", "virtio-net-pci-base"),
    ("virtio-blk-pci", "virtio-pci"),
    ("ccw-device", "device"),
    ("virtio-ccw-device", "ccw-device"),
    ("virtio-net-ccw", "virtio-ccw-device"),  # s390x's: kept for its name
    ("my-nic", "virtio-net-pci-base"),  # a descendant of another name: kept
)


def test_ancestry_keeps_virtio_net_types_with_full_chains() -> None:
    found, why = ancestry_of(_types(*BASE_TYPES))
    assert why == ""
    assert found == {
        "virtio-net-ccw": ("virtio-ccw-device", "ccw-device", "device", "object"),
        "virtio-net-device": ("virtio-device", "device", "object"),
        "virtio-net-pci": PCI_CHAIN,
        "virtio-net-pci-base": PCI_CHAIN[1:],
        "my-nic": PCI_CHAIN,
    }


def test_ancestry_drops_a_chain_it_cannot_finish() -> None:
    broken = (
        *BASE_TYPES,
        ("virtio-net-orphan", "virtio-net-gone"),  # a parent the answer does not list
        ("virtio-net-loop-a", "virtio-net-loop-b"),
        ("virtio-net-loop-b", "virtio-net-loop-a"),
        ("virtio-net-rootless", None),  # no parent, and not "object"
    )
    found, _ = ancestry_of(_types(*broken))
    assert found is not None
    assert not {"virtio-net-orphan", "virtio-net-loop-a", "virtio-net-rootless"} & set(found)
    assert found["virtio-net-pci"] == PCI_CHAIN


def test_ancestry_of_a_qemu_without_parents_is_missing() -> None:
    # QEMU before 2.10 lists types without their parent.
    found, why = ancestry_of([{"name": "virtio-net-pci"}, {"name": "object"}])
    assert found is None and "no parents" in why


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (None, "no answer to qom-list-types"),
        (
            {"id": "ancestry", "error": {"class": "CommandNotFound", "desc": "no qom-list-types"}},
            "qom-list-types failed: no qom-list-types",
        ),
        ({"id": "ancestry", "return": {"not": "a list"}}, "qom-list-types failed"),
    ],
)
def test_ancestry_reply_without_types(reply: Optional[dict[str, Any]], why: str) -> None:
    found, said = ancestry_from_reply(reply)
    assert found is None and said.startswith(why)


NO_QOM_LIST_TYPES = b"\n".join(
    [
        read("7.2-qmp-response.jsonl").splitlines()[0],  # QEMU's greeting
        b'{"return": {}, "id": "caps"}',
        b'{"id": "ancestry", "error": {"class": "CommandNotFound",'
        b' "desc": "The command qom-list-types has not been found"}}',
        b'{"return": {}, "id": "quit"}',
    ]
)


def test_a_qemu_without_qom_list_types_is_still_probed(fakes: FakeEmulators) -> None:
    # A fake: every real QEMU this project supports has qom-list-types (QEMU >= 1.1).
    path = fakes.help_printer(
        "qemu-no-qom",
        stdout=read("7.2-virtio-net-pci-help.stdout"),
        qmp=NO_QOM_LIST_TYPES,
    )
    result = probe_emulator(str(path), ["virtio-net-pci"], timeout=10)
    assert result.devices == {"virtio-net-pci": SUPPORTED}
    assert result.ancestry is None
    assert result.ancestry_error == (
        "qom-list-types failed: The command qom-list-types has not been found"
    )


def test_a_hanging_ancestry_session_does_not_fail_the_probe(fakes: FakeEmulators) -> None:
    # A fake: QEMU 7.2 answers -device help and QMP alike; this one hangs in QMP only.
    out = fakes.data("help", read("7.2-virtio-net-pci-help.stdout"))
    path = fakes.script(
        "qemu-qmp-hangs",
        f'for arg in "$@"; do\n  case "$arg" in *,help) cat {out}; exit 0 ;; esac\ndone\n'
        f"exec sleep {fakes.sleep_args()}\n",
    )
    result = probe_emulator(str(path), ["virtio-net-pci"], timeout=0.5)
    assert result.devices == {"virtio-net-pci": SUPPORTED}
    assert result.ancestry is None
    assert result.ancestry_error == f"QMP probe of {path} did not finish within 0.5 s"


# --- device_json: libvirt's own capabilities files ------------------------------------------------


def real_caps_file() -> Path:
    path = Path(qemucaps.caps_path(QEMU))
    if not path.exists():
        env.skip_unless_ci(f"libvirt has no capabilities file for {QEMU} at {path}")
    return path


@AS_ROOT
def test_real_libvirt_caps_say_json() -> None:
    # Debian 12: libvirt 9.0 with QEMU 7.2 passes -device as JSON.
    real_caps_file()
    caps = qemucaps.read_caps(QEMU)
    assert caps is not None
    assert caps.emulator == QEMU
    assert caps.libvirt_version >= 9_000_000
    assert caps.qemu_version is not None and caps.qemu_version >= 7_002_000
    assert "device.json+hotplug" in caps.flags
    assert qemucaps.device_json(QEMU) is True


def test_caps_path_is_libvirts_digest_of_the_emulator_path() -> None:
    assert qemucaps.caps_path(QEMU, "/d") == (
        "/d/926803a9278e445ec919c2b6cbd8c1c449c75b26dcb1686b774314180376c725.xml"
    )


def _copy_caps(tmp_path: Path, edit: Any = None, emulator: str = QEMU, mode: int = 0o600) -> str:
    """A copy of this host's real file for ``QEMU``, edited, where libvirt would keep the file
    for ``emulator``; returns its directory."""
    text = real_caps_file().read_text()
    directory = tmp_path / "caps"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = Path(qemucaps.caps_path(emulator, str(directory)))
    target.write_text(edit(text) if edit else text)
    os.chmod(target, mode)
    return str(directory)


def _set_element(name: str, value: str) -> Any:
    return lambda text: re.sub(
        rf"<{name}>[^<]*</{name}>", f"<{name}>{value}</{name}>", text, count=1
    )


def _drop_flag(text: str) -> str:
    return text.replace("<flag name='device.json+hotplug'/>", "")


@AS_ROOT
def test_a_copy_of_the_real_file_is_believed(tmp_path: Path) -> None:
    assert qemucaps.device_json(QEMU, directory=_copy_caps(tmp_path)) is True
    assert qemucaps.device_json(QEMU, directory=str(tmp_path / "none")) is None


@AS_ROOT
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop_flag, False),  # libvirt >= 9.0 without the flag: not JSON
        (lambda t: _set_element("selfvers", "8000000")(_drop_flag(t)), None),  # old names
        (_set_element("selfvers", "8000000"), True),  # only ever meant JSON
    ],
    ids=["9.0-without-flag", "8.0-without-flag", "8.0-with-flag"],
)
def test_only_the_flag_proves_json(tmp_path: Path, edit: Any, expected: Optional[bool]) -> None:
    assert qemucaps.device_json(QEMU, directory=_copy_caps(tmp_path, edit)) is expected


@AS_ROOT
def test_the_installed_libvirt_version_is_the_one_that_wrote_the_file(tmp_path: Path) -> None:
    directory = _copy_caps(tmp_path, _set_element("selfvers", "11003000"))
    found = qemucaps.installed_libvirt_version(["/nowhere/qemu", QEMU], directory=directory)
    assert found == 11_003_000
    assert qemucaps.installed_libvirt_version(["/nowhere/qemu"], directory=directory) is None
    assert qemucaps.installed_libvirt_version([], directory=directory) is None


def _vhostuser_vm(machine: Optional[str] = "pc") -> Domain:
    nic = Nic(index=0, line=5, type="vhostuser")  # its model is libvirt's default
    return Domain(
        name="vm", file="vm.xml", line=1, arch="x86_64", machine=machine, emulator=QEMU,
        nics=(nic,),
    )  # fmt: skip


def test_the_hook_takes_the_libvirt_version_from_its_snapshot_first() -> None:
    snapshot = HostCapabilities(name="snap", libvirt_version=11_003_000)
    host = this_host([_vhostuser_vm()], snapshot=snapshot, networks=lambda _names: {})
    assert host.libvirt_version == 11_003_000


@AS_ROOT
def test_without_a_snapshot_the_hook_reads_libvirts_own_file_only_when_a_rule_needs_it() -> None:
    real_caps_file()
    caps = qemucaps.read_caps(QEMU)
    assert caps is not None
    host = this_host([_vhostuser_vm()], networks=lambda _names: {})
    assert host.libvirt_version == caps.libvirt_version
    # A domain whose rules do not depend on the version costs the hook no file read.
    plain = dataclasses.replace(vm(QEMU), machine="pc")
    assert this_host([plain], networks=lambda _names: {}).libvirt_version is None


@AS_ROOT
def test_stale_and_foreign_files_are_ignored(
    tmp_path: Path, logged: pytest.LogCaptureFixture
) -> None:
    ctime = os.stat(QEMU).st_ctime_ns // 1_000_000_000
    # The binary changed since libvirt probed it (libvirt's virQEMUCapsIsValid: st_ctime).
    stale = _copy_caps(tmp_path / "stale", _set_element("qemuctime", str(ctime - 1)))
    assert qemucaps.device_json(QEMU, directory=stale) is None
    assert "changed since libvirt probed it" in logged.text
    # The file named for one emulator describes another.
    foreign = _copy_caps(tmp_path / "foreign", emulator="/usr/bin/qemu-system-i386")
    assert qemucaps.device_json("/usr/bin/qemu-system-i386", directory=foreign) is None
    assert "not '/usr/bin/qemu-system-i386'" in logged.text
    # Written by another libvirt than the daemon a snapshot talks to. The version is the one
    # that wrote this host's file (9.0 on Debian 12, 11.3 on Debian 13), read from the file.
    fresh = _copy_caps(tmp_path / "fresh")
    found = re.search(r"<selfvers>(\d+)</selfvers>", real_caps_file().read_text())
    assert found
    writer = int(found.group(1))
    assert qemucaps.device_json(QEMU, directory=fresh, libvirt_version=writer) is True
    assert qemucaps.device_json(QEMU, directory=fresh, libvirt_version=writer + 1_000_000) is None


@AS_ROOT
def test_untrusted_files_are_ignored(tmp_path: Path, logged: pytest.LogCaptureFixture) -> None:
    writable = _copy_caps(tmp_path / "w", mode=0o620)
    assert qemucaps.device_json(QEMU, directory=writable) is None
    assert "is writable by group or others" in logged.text
    owned = _copy_caps(tmp_path / "o")
    os.chown(qemucaps.caps_path(QEMU, owned), 65534, 0)
    assert qemucaps.device_json(QEMU, directory=owned) is None
    open_dir = _copy_caps(tmp_path / "d")
    os.chmod(open_dir, 0o777)
    assert qemucaps.device_json(QEMU, directory=open_dir) is None
    linked = tmp_path / "l" / "caps"
    linked.mkdir(parents=True)
    os.symlink(
        qemucaps.caps_path(QEMU, _copy_caps(tmp_path / "real")),
        qemucaps.caps_path(QEMU, str(linked)),
    )
    assert qemucaps.device_json(QEMU, directory=str(linked)) is None  # never followed
    fifo = tmp_path / "f" / "caps"
    fifo.mkdir(parents=True)
    os.mkfifo(qemucaps.caps_path(QEMU, str(fifo)), 0o600)
    assert qemucaps.device_json(QEMU, directory=str(fifo)) is None  # and never blocks


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE qemuCaps [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
)


@AS_ROOT
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: BILLION_LAUGHS + t.replace("<emulator>", "<emulator>&b;", 1), "DOCTYPE"),
        (lambda t: '<!DOCTYPE qemuCaps SYSTEM "file:///etc/passwd">\n' + t, "DOCTYPE"),
        (lambda t: t.replace("<emulator>", "<emulator>&ext;", 1), "not well-formed"),
        (lambda t: t.replace("qemuCaps>", "other>"), "not <qemuCaps>"),
        (lambda t: t[: t.index("<version>")], "not well-formed"),  # cut short
        (lambda t: re.sub(r"<selfvers>[^<]*</selfvers>", "", t), "no <selfvers>"),
        (_set_element("qemuctime", "yesterday"), "is not a number"),
    ],
    ids=["entities", "external-dtd", "undeclared-entity", "root", "truncated", "selfvers", "nan"],
)
def test_hostile_or_broken_files_are_refused(
    tmp_path: Path, logged: pytest.LogCaptureFixture, edit: Any, reason: str
) -> None:
    assert qemucaps.device_json(QEMU, directory=_copy_caps(tmp_path, edit)) is None
    assert "refused" in logged.text and reason in logged.text


@AS_ROOT
def test_the_read_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    padded = _copy_caps(
        tmp_path, lambda t: t.replace("<flag", "<!--" + "x" * 70000 + "--><flag", 1)
    )
    monkeypatch.setattr(qemucaps, "MAX_CAPS_BYTES", 64 * 1024)
    assert qemucaps.device_json(QEMU, directory=padded) is None


# --- the probe cache keeps the ancestry -------------------------------------------------------------


@pytest.fixture
def emulator(fakes: FakeEmulators) -> str:
    return str(fakes.script("qemu-cached", "exit 0\n"))


def test_cache_keeps_ancestry_with_the_answers(emulator: str, tmp_path: Path) -> None:
    cache = ProbeCache(str(tmp_path / "cache"))
    identity = identify(emulator)
    cache.store(identity, {"virtio-net-pci": SUPPORTED}, ancestry=PCI_ANCESTRY)
    entry = cache.load_entry(identity)
    assert entry.devices == {"virtio-net-pci": SUPPORTED}
    assert entry.ancestry == PCI_ANCESTRY
    # A later probe of another device without ancestry keeps the one cached.
    cache.store(identity, {"virtio-net-device": SUPPORTED})
    assert cache.load_entry(identity).ancestry == PCI_ANCESTRY
    (document,) = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    assert document["ancestry"] == {"virtio-net-pci": list(PCI_CHAIN)}


def test_old_cache_entries_still_load(emulator: str, tmp_path: Path) -> None:
    # Written before ancestry was recorded: the answers count, the ancestry is unknown.
    cache = ProbeCache(str(tmp_path / "cache"))
    identity = identify(emulator)
    cache.store(identity, {"virtio-net-pci": SUPPORTED})
    (path,) = (tmp_path / "cache").glob("*.json")
    assert "ancestry" not in json.loads(path.read_text())
    entry = cache.load_entry(identity)
    assert entry.devices == {"virtio-net-pci": SUPPORTED} and entry.ancestry is None
    assert cache.load(identity) == {"virtio-net-pci": SUPPORTED}


@pytest.mark.parametrize("bad", [["virtio-net-pci"], {"virtio-net-pci": "virtio-pci"}, {"x": [1]}])
def test_a_damaged_ancestry_is_a_corrupt_entry(
    emulator: str, tmp_path: Path, logged: pytest.LogCaptureFixture, bad: Any
) -> None:
    cache = ProbeCache(str(tmp_path / "cache"))
    identity = identify(emulator)
    cache.store(identity, {"virtio-net-pci": SUPPORTED}, ancestry=PCI_ANCESTRY)
    (path,) = (tmp_path / "cache").glob("*.json")
    document = json.loads(path.read_text())
    document["ancestry"] = bad
    path.write_text(json.dumps(document))
    entry = cache.load_entry(identity)
    assert entry.devices == {} and entry.ancestry is None
    assert "is corrupt" in logged.text


# --- the snapshot records both ---------------------------------------------------------------------


def snapshot_document() -> dict[str, Any]:
    return {
        "format": "libvirt-txmode-snapshot",
        "version": 1,
        "tool": __version__,
        "host": "hv1",
        "guests": [{"arch": "x86_64", "emulator": QEMU, "domain_types": ["kvm"]}],
        "emulators": {
            QEMU: {
                "identity": "id",
                "error": None,
                "devices": {"virtio-net-pci": {"state": "supported"}},
                "ancestry": {"virtio-net-pci": list(PCI_CHAIN)},
                "device_json": True,
            }
        },
    }


def test_snapshot_reads_ancestry_and_device_json() -> None:
    caps = parse_snapshot(snapshot_document(), "s.json").capabilities
    assert caps.ancestry == {QEMU: PCI_ANCESTRY}
    assert caps.device_json == {QEMU: True}


def test_snapshot_codec_round_trips_them() -> None:
    caps = HostCapabilities(
        name="hv1",
        devices={QEMU: {"virtio-net-pci": SUPPORTED}, "/other": {}},
        ancestry={QEMU: PCI_ANCESTRY},
        device_json={QEMU: True, "/other": False},
    )
    snapshot = Snapshot(host="hv1", source="s", capabilities=caps, identities={QEMU: "id"})
    document = json.loads(json.dumps(snapshot.to_json()))
    assert "ancestry" not in document["emulators"]["/other"]  # unknown: not written
    back = parse_snapshot(document, "s").capabilities
    assert (back.devices, back.ancestry, back.device_json) == (
        caps.devices,
        caps.ancestry,
        caps.device_json,
    )


@pytest.mark.parametrize("absent", [None, "missing"])
def test_old_snapshots_load_without_them(absent: Optional[str]) -> None:
    document = snapshot_document()
    for key in ("ancestry", "device_json"):
        if absent == "missing":
            del document["emulators"][QEMU][key]
        else:
            document["emulators"][QEMU][key] = None
    caps = parse_snapshot(document, "s.json").capabilities
    assert caps.ancestry == {} and caps.device_json == {}
    assert caps.devices[QEMU]["virtio-net-pci"].state is SupportState.SUPPORTED


def test_the_bundled_0_3_snapshots_still_load() -> None:
    for path in sorted((REPO / "examples" / "hosts").glob("*.json")):
        caps = load_snapshot(str(path), require_root_owned=False).capabilities
        assert caps.devices, path
        assert isinstance(caps.ancestry, dict) and isinstance(caps.device_json, dict)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ancestry", ["virtio-pci"], ".ancestry is not an object"),
        ("ancestry", {"virtio-net-pci": "virtio-pci"}, ".ancestry['virtio-net-pci'] is not a list"),
        ("ancestry", {"virtio-net-pci": [1]}, ".ancestry['virtio-net-pci'] is not a list"),
        ("device_json", "yes", ": 'device_json' is not true, false or null"),
    ],
)
def test_snapshot_refuses_bad_values(key: str, value: Any, message: str) -> None:
    document = copy.deepcopy(snapshot_document())
    document["emulators"][QEMU][key] = value
    with pytest.raises(SnapshotError, match=re.escape(f"emulators[{QEMU!r}]{message}")):
        parse_snapshot(document, "s.json")


# --- local: the facts the hook and audit get ------------------------------------------------------


class Prober:
    """Stands in for qemu.probe_emulator: records whether each call asked for the ancestry."""

    def __init__(self, ancestry: Optional[dict[str, tuple[str, ...]]] = None) -> None:
        self.asked: list[tuple[tuple[str, ...], bool]] = []
        self.ancestry = ancestry

    def __call__(
        self, emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
    ) -> ProbeResult:
        self.asked.append((tuple(devices), ancestry))
        return ProbeResult({d: SUPPORTED for d in devices}, self.ancestry if ancestry else None)


def vm(emulator: str, model: str = "virtio") -> Domain:
    nic = Nic(index=0, line=5, type="user", model=model, txmode="iothread")
    return Domain(name="vm", file="vm.xml", line=1, arch="x86_64", emulator=emulator, nics=(nic,))


def json_reader(value: Optional[bool]) -> Any:
    return lambda _emulator: value


@pytest.fixture
def policy(fakes: FakeEmulators) -> Policy:
    return Policy(emulators=(fakes.glob,), probe_timeout=5.0)


def test_local_takes_ancestry_from_the_probe_then_the_cache(
    emulator: str, policy: Policy, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    prober = Prober(PCI_ANCESTRY)
    caps = local_capabilities(
        [vm(emulator)], policy, ProbeCache(cache), prober=prober, device_json=json_reader(True)
    )
    assert prober.asked == [(("virtio-net-pci",), True)]
    assert caps.ancestry == {emulator: PCI_ANCESTRY}
    assert caps.device_json == {emulator: True}
    # Warm: from the cache, no probe. A new device is probed without asking the ancestry again.
    again = Prober()
    warm = local_capabilities(
        [vm(emulator), vm(emulator, "virtio-transitional")],
        policy,
        ProbeCache(cache),
        prober=again,
        device_json=json_reader(None),
    )
    assert again.asked == [(("virtio-net-pci-transitional",), False)]
    assert warm.ancestry == {emulator: PCI_ANCESTRY}
    assert warm.device_json == {}


def test_missing_ancestry_alone_never_probes(emulator: str, policy: Policy, tmp_path: Path) -> None:
    cache = ProbeCache(str(tmp_path / "cache"))
    cache.store(identify(emulator), {"virtio-net-pci": SUPPORTED})  # an entry without ancestry
    prober = Prober(PCI_ANCESTRY)
    caps = local_capabilities([vm(emulator)], policy, cache, prober=prober)
    assert prober.asked == []
    assert caps.ancestry == {}


def _snapshot_of(emulator: str, identity: str) -> tuple[HostCapabilities, dict[str, str]]:
    caps = HostCapabilities(
        name="h",
        devices={emulator: {"virtio-net-pci": SUPPORTED}},
        ancestry={emulator: PCI_ANCESTRY},
        device_json={emulator: True},
    )
    return caps, {emulator: identity}


def test_snapshot_facts_count_for_the_same_binary_only(
    emulator: str, policy: Policy, fakes: FakeEmulators
) -> None:
    snapshot, identities = _snapshot_of(emulator, identify(emulator).key())
    prober = Prober()
    caps = local_capabilities(
        [vm(emulator)],
        policy,
        ProbeCache(None),
        snapshot=snapshot,
        snapshot_identities=identities,
        prober=prober,
        device_json=json_reader(None),  # libvirt's file unreadable: the snapshot's word
    )
    assert prober.asked == []
    assert caps.ancestry == {emulator: PCI_ANCESTRY} and caps.device_json == {emulator: True}
    # libvirt's own file, when it can be read, is what libvirt uses for this start.
    live = local_capabilities(
        [vm(emulator)],
        policy,
        ProbeCache(None),
        snapshot=snapshot,
        snapshot_identities=identities,
        prober=prober,
        device_json=json_reader(False),
    )
    assert live.device_json == {emulator: False}
    # Another build of the binary: nothing of the snapshot counts, the probe asks again.
    stale, old = _snapshot_of(emulator, "another-build")
    prober = Prober()
    caps = local_capabilities(
        [vm(emulator)],
        policy,
        ProbeCache(None),
        snapshot=stale,
        snapshot_identities=old,
        prober=prober,
        device_json=json_reader(None),
    )
    assert prober.asked == [(("virtio-net-pci",), True)]
    assert caps.ancestry == {} and caps.device_json == {}


def test_nothing_is_believed_about_an_untrusted_emulator(fakes: FakeEmulators) -> None:
    emulator = str(fakes.script("qemu-untrusted", "exit 0\n", mode=0o775))
    snapshot, identities = _snapshot_of(emulator, identify(emulator).key())
    caps = local_capabilities(
        [vm(emulator)],
        Policy(emulators=(fakes.glob,)),
        ProbeCache(None),
        snapshot=snapshot,
        snapshot_identities=identities,
        prober=Prober(PCI_ANCESTRY),
        device_json=json_reader(True),
    )
    assert emulator in caps.emulator_errors
    assert caps.ancestry == {} and caps.device_json == {}


@pytest.mark.qemu
@AS_ROOT
def test_local_capabilities_of_the_real_host(tmp_path: Path) -> None:
    # What the hook and audit get on this host: QEMU's ancestry and libvirt's JSON -device.
    require_qemu()
    real_caps_file()
    policy = Policy(emulators=("/usr/bin/qemu-system-*",), probe_timeout=20)
    cache = str(tmp_path / "cache")
    caps = local_capabilities([vm(QEMU)], policy, ProbeCache(cache))
    assert caps.devices[QEMU]["virtio-net-pci"].state is SupportState.SUPPORTED
    assert caps.ancestry[QEMU]["virtio-net-pci"] == PCI_CHAIN
    assert "virtio-device" in caps.ancestry[QEMU]["virtio-net-device"]
    assert caps.device_json == {QEMU: True}
    prober = Prober()
    warm = local_capabilities([vm(QEMU)], policy, ProbeCache(cache), prober=prober)
    assert prober.asked == []  # from the probe cache
    assert warm.ancestry == caps.ancestry and warm.device_json == caps.device_json
