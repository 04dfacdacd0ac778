"""libvirt_rules: which QEMU device and which tx libvirt gives each NIC, against libvirt's own tests.

``data/libvirt/nic_cases.json`` holds facts from libvirt 10.7's qemuxmlconftest (made by
``scripts/derive-libvirt-nic-cases`` from libvirt's ``tests/qemuxmlconfdata``): per case the input
domain as a user wrote it, the post-parse domain libvirt formatted (what the hook receives), both
reduced to what decides a NIC's device, and the ``-device`` driver and ``tx`` libvirt put on QEMU's
command line for each NIC. Each case names the libvirt files it came from.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest

from libvirt_txmode.engine.check import check_domain
from libvirt_txmode.engine.domain_xml import parse_domain
from libvirt_txmode.engine.libvirt_rules import (
    aliases,
    default_model,
    emulator_binary,
    plan_nic,
    virtio_transport,
)
from libvirt_txmode.engine.model import (
    QEMU_TX,
    Domain,
    Guest,
    HostCapabilities,
    Level,
    Nic,
    Support,
    SupportState,
)
from libvirt_txmode.engine.policy import parse_policy

REPO = Path(__file__).resolve().parent.parent
CASES_FILE = Path(__file__).parent / "data" / "libvirt" / "nic_cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]
ALL_DEVICES = (
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
    "virtio-net-ccw",
    "virtio-net-device",
)


def _host(case: dict[str, Any]) -> HostCapabilities:
    emulator = f"/usr/bin/{emulator_binary(case['arch'])}"
    supported = Support(SupportState.SUPPORTED, "tx listed", "help")
    return HostCapabilities(
        name="libvirt-tests",
        arch=case["arch"],
        guests=(Guest(case["arch"], emulator, ("qemu", "kvm")),),
        devices={emulator: {device: supported for device in ALL_DEVICES}},
        networks=case["networks"],
        vhost_net=True,
    )


def _plans(xml: str, host: HostCapabilities) -> list[tuple[Optional[str], Optional[str]]]:
    domain = parse_domain(xml.encode(), "case.xml")
    names = aliases(domain, host)
    result = []
    for nic, alias in zip(domain.nics, names):
        plan = plan_nic(domain, nic, host, alias)
        tx = QEMU_TX.get(plan.txmode) if plan.txmode else None
        result.append((plan.device, tx))
    return result


def _expected(case: dict[str, Any]) -> list[tuple[Optional[str], Optional[str]]]:
    return [(nic["device"], nic["tx"]) for nic in case["nics"]]


def _case_id(case: dict[str, Any]) -> str:
    return case["args"]


def test_the_corpus_covers_every_arch_and_nic_kind() -> None:
    arches = {case["arch"] for case in CASES}
    assert arches == {"x86_64", "aarch64", "s390x", "ppc64", "riscv64", "loongarch64"}
    kinds = Counter(
        m for case in CASES for m in re.findall(r"<interface type=\"([a-z]+)\"", case["input"])
    )
    # libvirt 10.7's suite has no direct, null or vds NIC with a QEMU command line: those kinds
    # are covered by the targeted tests below (vhost rules, and check's tests).
    for kind in ("user", "network", "bridge", "ethernet", "vhostuser", "vdpa", "hostdev"):
        assert kinds[kind] > 0, kind
    for kind in ("mcast", "udp", "server", "client"):
        assert kinds[kind] > 0, kind
    assert sum(len(case["nics"]) for case in CASES) >= 250


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_device_and_tx_as_libvirt_builds_them_from_the_input(case: dict[str, Any]) -> None:
    # The XML as a user writes it: libvirt's defaults (model, address) must be applied here.
    assert _plans(case["input"], _host(case)) == _expected(case), case["source"]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_device_and_tx_from_libvirts_formatted_xml(case: dict[str, Any]) -> None:
    # The XML libvirt formats after parsing: what the hook receives on prepare begin.
    assert _plans(case["output"], _host(case)) == _expected(case), case["args"]


STRICT = """
version: 1
defaults:
  require: true
  ineffective: error
"""


def _outcome(xml: str, host: HostCapabilities) -> set[tuple[Optional[int], str]]:
    domain = parse_domain(xml.encode(), "case.xml")
    policy = parse_policy(STRICT, "strict.yaml")
    found = check_domain(domain, policy, [host])
    return {(f.interface, f.code) for f in found if f.level is Level.ERROR}


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_input_and_formatted_xml_get_the_same_verdict(case: dict[str, Any]) -> None:
    host = _host(case)
    assert _outcome(case["input"], host) == _outcome(case["output"], host)


def _with_txmode(xml: str, txmode: str = "timer") -> str:
    """Every interface gets <driver txmode>, as a user adding one to each NIC would write."""
    return re.sub(r"(<interface [^>]*>)", rf"\1<driver txmode='{txmode}'/>", xml)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_a_written_txmode_reaches_exactly_the_virtio_nics_libvirt_reads_it_for(
    case: dict[str, Any],
) -> None:
    host = _host(case)
    domain = parse_domain(_with_txmode(case["input"]).encode(), "case.xml")
    for nic, alias, (device, _tx) in zip(domain.nics, aliases(domain, host), _expected(case)):
        plan = plan_nic(domain, nic, host, alias)
        # libvirt parses <driver> only for virtio models written as such, never for hostdev.
        read = nic.is_virtio and nic.type != "hostdev"
        reaches = read and device is not None and device.startswith("virtio-net")
        assert plan.device == (device or plan.device), case["source"]
        assert (plan.txmode == "timer") == reaches, (case["source"], nic.index)
        assert (plan.dropped is not None) == (not reaches), case["source"]


# --- the classes of the fidelity issue, one by one -----------------------------------------------

X86 = HostCapabilities(name="h", arch="x86_64", vhost_net=True)


def _domain_xml(
    interfaces: str, *, arch: str = "x86_64", machine: str = "pc", extra: str = ""
) -> bytes:
    os_type = f"<type arch='{arch}' machine='{machine}'>hvm</type>" if arch else "<type>hvm</type>"
    return (
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        f"<name>vm</name><os>{os_type}</os><devices>{interfaces}</devices>{extra}</domain>"
    ).encode()


def _plan(xml: bytes, host: HostCapabilities = X86, index: int = 0) -> Any:
    domain = parse_domain(xml, "vm.xml")
    return plan_nic(domain, domain.nics[index], host, aliases(domain, host)[index])


@pytest.mark.parametrize(
    ("arch", "machine", "expected"),
    [
        ("s390x", "s390-ccw-virtio", "virtio"),
        ("aarch64", "virt", "virtio"),
        ("aarch64", "virt-7.2", "virtio"),
        ("armv7l", "virt", "virtio"),
        ("aarch64", "vexpress-a15", "lan9118"),
        ("armv7l", "versatilepb", "smc91c111"),
        ("riscv64", "virt", "virtio"),
        ("loongarch64", "virt", "virtio"),
        ("riscv64", "spike", "rtl8139"),
        ("x86_64", "pc", "rtl8139"),
        ("x86_64", "q35", "rtl8139"),
        ("ppc64", "pseries", "rtl8139"),
    ],
)
def test_default_model(arch: str, machine: str, expected: str) -> None:
    assert default_model("user", arch, machine) == expected
    assert default_model("vdpa", arch, machine) == "virtio"
    assert default_model("hostdev", arch, machine) is None


def test_a_txmode_on_a_model_less_nic_never_reaches_qemu() -> None:
    # s390x fills in model virtio, but only after <driver> was (not) parsed.
    host = HostCapabilities(name="z", arch="s390x")
    plan = _plan(
        _domain_xml("<interface type='user'><driver txmode='timer'/></interface>", arch="s390x",
                    machine="s390-ccw-virtio"),
        host,
    )  # fmt: skip
    assert (plan.model, plan.device, plan.txmode) == ("virtio", "virtio-net-ccw", None)
    assert "only when <model type='virtio'/> is written" in (plan.dropped or "")


def test_require_on_a_model_less_virtio_nic_agrees_with_the_formatted_xml() -> None:
    host = HostCapabilities(name="z", arch="s390x")
    policy = parse_policy("version: 1\ndefaults: {require: true}\n", "p.yaml")
    raw = _domain_xml("<interface type='user'/>", arch="s390x", machine="s390-ccw-virtio")
    formatted = _domain_xml(
        "<interface type='user'><model type='virtio'/><address type='ccw'/></interface>",
        arch="s390x",
        machine="s390-ccw-virtio",
    )
    for xml in (raw, formatted):
        codes = [f.code for f in check_domain(parse_domain(xml, "vm.xml"), policy, [host])]
        assert codes == ["txmode-required"]


@pytest.mark.parametrize("model", ["VirtIO", "VIRTIO", "Virtio-Transitional"])
def test_model_names_are_case_insensitive(model: str) -> None:
    plan = _plan(
        _domain_xml(
            f"<interface type='user'><model type='{model}'/><driver txmode='timer'/></interface>"
        )
    )
    assert plan.model == model.lower()
    assert plan.txmode == "timer"
    assert plan.device in ("virtio-net-pci", "virtio-net-pci-transitional")


def test_policy_model_globs_see_the_canonical_model() -> None:
    policy = parse_policy(
        "version: 1\nrules:\n  - {name: no-timer-on-virtio, match: {model: virtio}, allowed: [iothread]}\n",
        "p.yaml",
    )
    xml = _domain_xml(
        "<interface type='user'><model type='VirtIO'/><driver txmode='timer'/></interface>"
    )
    found = check_domain(parse_domain(xml, "vm.xml"), policy, [X86])
    assert [(f.code, f.rule) for f in found if f.code == "txmode-not-allowed"] == [
        ("txmode-not-allowed", "no-timer-on-virtio")
    ]


def test_vdpa_tx_is_set_but_unused() -> None:
    plan = _plan(
        _domain_xml(
            "<interface type='vdpa'><source dev='/dev/vhost-vdpa-0'/><model type='virtio'/>"
            "<driver txmode='timer'/></interface>"
        )
    )
    assert (plan.device, plan.txmode) == ("virtio-net-pci", "timer")
    assert "vhost-vdpa" in (plan.unused or "")
    policy = parse_policy("version: 1\ndefaults: {ineffective: error}\n", "p.yaml")
    xml = _domain_xml(
        "<interface type='vdpa'><source dev='/dev/vhost-vdpa-0'/><model type='virtio'/>"
        "<driver txmode='timer'/></interface>"
    )
    codes = [f.code for f in check_domain(parse_domain(xml, "v.xml"), policy, [X86])]
    assert "txmode-ineffective" in codes


def test_network_on_a_hostdev_pool_becomes_vfio_and_drops_txmode() -> None:
    host = HostCapabilities(name="h", arch="x86_64", networks={"sriov": "hostdev", "lan": "nat"})
    xml = _domain_xml(
        "<interface type='network'><source network='sriov'/><model type='virtio'/>"
        "<driver txmode='timer'/></interface>"
        "<interface type='network'><source network='lan'/><model type='virtio'/>"
        "<driver name='qemu' txmode='timer'/></interface>"
    )
    first, second = _plan(xml, host, 0), _plan(xml, host, 1)
    assert (first.device, first.alias, first.txmode) == ("vfio-pci", "hostdev0", None)
    assert "hostdev pool" in (first.dropped or "")
    # hostdev NICs take no netN: the next NIC is still net0
    assert (second.device, second.alias, second.txmode) == ("virtio-net-pci", "net0", "timer")


@pytest.mark.parametrize(
    ("arch", "machine", "mmio_elsewhere", "expected"),
    [
        ("aarch64", "virt", False, "pci"),
        ("aarch64", "virt", True, "virtio-mmio"),
        ("riscv64", "virt", True, "virtio-mmio"),
        ("aarch64", "vexpress-a15", False, "virtio-mmio"),
        ("armv7l", "vexpress-a9", False, "virtio-mmio"),
        ("armv7l", "realview-eb", False, "pci"),
        ("riscv64", "spike", False, "pci"),
        ("s390x", "s390-ccw-virtio", False, "ccw"),
        ("x86_64", "q35", True, "pci"),
    ],
)
def test_virtio_transport_defaults(
    arch: str, machine: str, mmio_elsewhere: bool, expected: str
) -> None:
    rng = "<rng model='virtio'><backend model='random'/><address type='virtio-mmio'/></rng>"
    xml = _domain_xml(
        f"<interface type='user'><model type='virtio'/></interface>{rng if mmio_elsewhere else ''}",
        arch=arch,
        machine=machine,
    )
    domain = parse_domain(xml, "vm.xml")
    assert virtio_transport(domain.nics[0], domain, arch, machine) == expected


def test_the_arch_comes_from_the_domain_or_the_target_host_never_the_runner() -> None:
    xml = _domain_xml(
        "<interface type='user'><model type='virtio'/><driver txmode='timer'/></interface>", arch=""
    )
    s390 = HostCapabilities(name="z", arch="s390x")
    assert _plan(xml, s390).device == "virtio-net-ccw"
    assert _plan(xml, X86).device == "virtio-net-pci"


@pytest.mark.parametrize(
    ("arch", "binary"),
    [
        ("i686", "qemu-system-i386"),
        ("armv7l", "qemu-system-arm"),
        ("x86_64", "qemu-system-x86_64"),
        ("aarch64", "qemu-system-aarch64"),
        ("ppc64le", "qemu-system-ppc64"),
        ("s390x", "qemu-system-s390x"),
    ],
)
def test_emulator_binary_names(arch: str, binary: str) -> None:
    assert emulator_binary(arch) == binary


def test_namespaced_txmode_is_read_as_libvirt_reads_it() -> None:
    xml = _domain_xml(
        "<interface type='user' xmlns:x='urn:x'><model type='virtio'/>"
        "<driver x:txmode='timer'/></interface>"
    )
    assert _plan(xml).txmode == "timer"


VHOST = "vhost-net does the transmit in the kernel (set <driver name='qemu'/> to use txmode)"


@pytest.mark.parametrize("nic_type", ["network", "bridge", "direct", "ethernet"])
def test_vhost_on_kvm(nic_type: str) -> None:
    def unused(driver: str = "", host: HostCapabilities = X86) -> Optional[str]:
        xml = _domain_xml(
            f"<interface type='{nic_type}'><source network='n' bridge='br0' dev='eth0'/>"
            f"<model type='virtio'/><driver{driver} txmode='timer'/></interface>"
        )
        return _plan(xml, host).unused

    assert unused() == VHOST
    assert unused(" name='vhost'") == VHOST
    assert unused(" name='qemu'") is None
    no_vhost = HostCapabilities(name="h", arch="x86_64", vhost_net=False)
    # libvirt falls back to QEMU's backend without /dev/vhost-net unless vhost is demanded.
    assert unused(host=no_vhost) is None
    assert unused(" name='vhost'", no_vhost) == VHOST


def test_other_nic_kinds_use_qemus_tx() -> None:
    for nic_type in ("user", "mcast", "udp", "server", "client"):
        xml = _domain_xml(
            f"<interface type='{nic_type}'><model type='virtio'/><driver txmode='timer'/></interface>"
        )
        plan = _plan(xml)
        assert (plan.txmode, plan.unused, plan.dropped) == ("timer", None, None), nic_type
    vhostuser = _domain_xml(
        "<interface type='vhostuser'><model type='virtio'/><driver txmode='timer'/></interface>"
    )
    assert "vhost-user" in (_plan(vhostuser).unused or "")


# --- routes around <driver txmode> ---------------------------------------------------------------


def _commandline(*args: str) -> str:
    values = "".join(f"<qemu:arg value='{arg}'/>" for arg in args)
    return f"<qemu:commandline>{values}</qemu:commandline>"


VIRTIO_NIC = (
    "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>"
)


@pytest.mark.parametrize(
    "args",
    [
        ("-global", "virtio-net-pci.tx=timer"),
        ("-global", "driver=virtio-net-pci,property=tx,value=timer"),
        ("-set", "device.net0.tx=timer"),
    ],
)
def test_commandline_tx_reaches_the_nic(args: tuple[str, ...]) -> None:
    plan = _plan(_domain_xml(VIRTIO_NIC, extra=_commandline(*args)))
    assert plan.txmode == "timer"
    assert args[1] in plan.route and "<qemu:commandline>" in plan.route


def test_global_does_not_beat_the_nics_own_tx_but_set_and_override_do() -> None:
    nic = VIRTIO_NIC.replace("</interface>", "<driver txmode='iothread'/></interface>")
    assert (
        _plan(_domain_xml(nic, extra=_commandline("-global", "virtio-net-pci.tx=timer"))).txmode
        == "iothread"
    )
    assert (
        _plan(_domain_xml(nic, extra=_commandline("-set", "device.net0.tx=timer"))).txmode
        == "timer"
    )
    override = (
        "<qemu:override><qemu:device alias='net0'><qemu:frontend>"
        "<qemu:property name='tx' type='string' value='timer'/>"
        "</qemu:frontend></qemu:device></qemu:override>"
    )
    plan = _plan(_domain_xml(nic, extra=override))
    assert (plan.txmode, plan.route) == ("timer", "<qemu:override> of device 'net0'")
    removed = override.replace("type='string' value='timer'", "type='remove'")
    assert _plan(_domain_xml(nic, extra=removed)).txmode is None


def test_global_for_another_device_or_property_is_not_a_txmode() -> None:
    policy = parse_policy("version: 1\n", "p")
    for args in (
        ("-global", "virtio-net-ccw.tx=timer"),
        ("-global", "virtio-net-pci.mq=on"),
        ("-device", "e1000,tx=timer"),
        ("-name", "x"),
    ):
        xml = _domain_xml(VIRTIO_NIC, extra=_commandline(*args))
        assert _plan(xml).txmode is None, args
        found = check_domain(parse_domain(xml, "v.xml"), policy, [X86])
        # An e1000 has no tx property at all: QEMU refuses to start rather than ignore it.
        expected = ["start-will-fail"] if args[1].startswith("e1000") else []
        assert [f.code for f in found] == expected, args


def test_commandline_device_and_policy_findings_name_the_route() -> None:
    policy = parse_policy("version: 1\ndefaults: {allowed: [iothread]}\n", "p.yaml")
    supported = Support(SupportState.SUPPORTED, "tx", "help")
    host = HostCapabilities(
        name="h",
        arch="x86_64",
        guests=(Guest("x86_64", "/usr/bin/qemu-system-x86_64", ("kvm",)),),
        devices={"/usr/bin/qemu-system-x86_64": {"virtio-net-pci": supported}},
    )
    xml = _domain_xml(
        VIRTIO_NIC,
        extra=_commandline(
            "-netdev", "user,id=extra", "-device", "virtio-net-pci,netdev=extra,tx=timer"
        )
        + _commandline("-global", "virtio-net-pci.tx=timer"),
    )
    found = check_domain(parse_domain(xml, "v.xml"), policy, [host])
    assert [(f.interface, f.code) for f in found] == [
        (0, "txmode-not-allowed"),
        (None, "txmode-not-allowed"),
    ]
    assert "set by -global virtio-net-pci.tx=timer in <qemu:commandline>" in found[0].message
    assert "-device virtio-net-pci,netdev=extra,tx=timer" in found[1].message


def test_unknown_tx_text_is_invalid() -> None:
    xml = _domain_xml(VIRTIO_NIC, extra=_commandline("-global", "virtio-net-pci.tx=fast"))
    found = check_domain(parse_domain(xml, "v.xml"), parse_policy("version: 1\n", "p"), [X86])
    assert [(f.code, f.level) for f in found] == [("txmode-invalid", Level.ERROR)]
    assert "tx 'fast'" in found[0].message


def test_records_are_plain() -> None:
    # The engine and the plan never need a parser: records can be built by hand.
    domain = Domain(
        name="vm",
        file="f",
        line=1,
        arch="x86_64",
        nics=(Nic(0, 1, "user", model="virtio", txmode="timer"),),
    )
    plan = plan_nic(domain, domain.nics[0], X86, "net0")
    assert (plan.device, plan.txmode) == ("virtio-net-pci", "timer")


def test_the_runners_arch_never_changes_a_ci_verdict(tmp_path: Path) -> None:
    # The same XML and snapshot give the same answer under `setarch i686` (uname says i686).
    snapshot = json.loads((REPO / "examples" / "hosts" / "debian12.json").read_text())
    snapshot["arch"] = "x86_64"
    (tmp_path / "snap.json").write_text(json.dumps(snapshot))
    (tmp_path / "vm.xml").write_text(
        "<domain type='qemu'><name>noarch</name><os><type>hvm</type></os><devices>"
        "<interface type='user'><model type='virtio'/><driver txmode='timer'/></interface>"
        "</devices></domain>"
    )
    command = [
        str(REPO / ".venv" / "bin" / "validate-domain"),
        "-p",
        str(REPO / "policy.yaml"),
        "--caps",
        str(tmp_path / "snap.json"),
        "-f",
        "json",
        str(tmp_path / "vm.xml"),
    ]
    native = subprocess.run(command, capture_output=True, text=True, check=False)
    i686 = subprocess.run(
        ["setarch", "i686", *command], capture_output=True, text=True, check=False
    )
    assert (native.returncode, native.stdout) == (i686.returncode, i686.stdout)
    assert native.returncode == 0 and json.loads(native.stdout)["findings"] == []


# --- what depends on the libvirt version; NICs that keep the domain from starting ----------------

LIBVIRT_9_0 = 9_000_000
LIBVIRT_11_3 = 11_003_000
VHOSTUSER = (
    "<interface type='vhostuser'><source type='unix' path='/s' mode='client'/>{}</interface>"
)


def _on(version: Optional[int], name: str = "h") -> HostCapabilities:
    return HostCapabilities(name=name, arch="x86_64", libvirt_version=version)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (LIBVIRT_9_0, "rtl8139"),  # 9.0 gives the arch's default, then refuses it (seen here)
        (11_000_000, "rtl8139"),
        (11_001_000, "virtio"),  # the passt-for-vhostuser series made virtio the default
        (LIBVIRT_11_3, "virtio"),
        (None, "virtio"),  # unknown: the newest libvirt known here
    ],
)
def test_a_model_less_vhostuser_nic_gets_virtio_from_libvirt_11_1(
    version: Optional[int], expected: str
) -> None:
    assert default_model("vhostuser", "x86_64", "pc", version) == expected
    assert default_model("user", "x86_64", "pc", version) == "rtl8139"


def test_a_model_less_vhostuser_nic_on_libvirt_9_0_never_starts() -> None:
    plan = _plan(_domain_xml(VHOSTUSER.format("<driver txmode='timer'/>")), _on(LIBVIRT_9_0))
    assert plan.txmode is None and plan.unused is None
    assert plan.refused is not None
    assert "vhostuser requires the virtio-net* frontend" in plan.refused
    assert "libvirt 9.0.0 gives a model-less vhostuser NIC the model 'rtl8139'" in plan.refused
    assert "(virtio only from 11.1.0)" in plan.refused


def test_a_model_less_vhostuser_nic_on_libvirt_11_3_is_virtio_net_pci() -> None:
    plan = _plan(_domain_xml(VHOSTUSER.format("")), _on(LIBVIRT_11_3))
    assert (plan.model, plan.device, plan.refused) == ("virtio", "virtio-net-pci", None)
    # A txmode written without a model is still dropped at parse time.
    dropped = _plan(_domain_xml(VHOSTUSER.format("<driver txmode='timer'/>")), _on(LIBVIRT_11_3))
    assert (dropped.txmode, dropped.refused) == (None, None)
    assert dropped.dropped is not None


@pytest.mark.parametrize("version", [LIBVIRT_9_0, LIBVIRT_11_3, None])
def test_a_vhostuser_nic_with_another_model_never_starts_on_any_libvirt(
    version: Optional[int],
) -> None:
    plan = _plan(_domain_xml(VHOSTUSER.format("<model type='e1000'/>")), _on(version))
    assert plan.refused is not None and "without a virtio model" in plan.refused
    # The version is named only where it explains a default model.
    assert "gives a model-less" not in plan.refused
    for model in ("virtio", "virtio-transitional", "VirtIO"):
        ok = _plan(_domain_xml(VHOSTUSER.format(f"<model type='{model}'/>")), _on(version))
        assert ok.refused is None, model


@pytest.mark.parametrize("machine", ["pc", "q35", "pc-i440fx-7.2", "pc-q35-10.0"])
def test_a_virtio_mmio_address_on_an_x86_pc_or_q35_machine_never_starts(machine: str) -> None:
    nic = "<interface type='user'><model type='virtio'/><driver txmode='timer'/>"
    plan = _plan(_domain_xml(f"{nic}<address type='virtio-mmio'/></interface>", machine=machine))
    assert plan.device == "virtio-net-device"
    assert (plan.txmode, plan.refused is not None) == (None, True)
    assert f"machine '{machine}', which has no virtio-mmio bus" in (plan.refused or "")
    assert "No 'virtio-bus' bus found for device 'virtio-net-device'" in (plan.refused or "")
    # Without the address the same NIC is a PCI device with its tx.
    plain = _plan(_domain_xml(f"{nic}</interface>", machine=machine))
    assert (plain.device, plain.txmode, plain.refused) == ("virtio-net-pci", "timer", None)


@pytest.mark.parametrize(
    ("arch", "machine"), [("x86_64", "microvm"), ("aarch64", "virt"), ("armv7l", "vexpress-a9")]
)
def test_a_virtio_mmio_address_where_the_machine_has_the_bus_keeps_its_tx(
    arch: str, machine: str
) -> None:
    xml = _domain_xml(
        "<interface type='user'><model type='virtio'/><driver txmode='timer'/>"
        "<address type='virtio-mmio'/></interface>",
        arch=arch,
        machine=machine,
    )
    plan = _plan(xml, HostCapabilities(name="h", arch=arch))
    assert (plan.device, plan.txmode, plan.refused) == ("virtio-net-device", "timer", None)


@pytest.mark.parametrize(
    ("arch", "version", "expected"),
    [
        ("aarch64", 9_003_000, "virtio"),  # 9.3.0: Arm and RISC-V default to 'virt'
        ("aarch64", 9_002_000, "lan9118"),  # before: integratorcp, a lan9118 board
        ("armv7l", None, "virtio"),
        ("riscv64", 9_003_000, "virtio"),
        ("riscv64", LIBVIRT_9_0, "rtl8139"),
        ("armv6l", None, "lan9118"),  # armv6l kept integratorcp
    ],
)
def test_without_a_machine_anywhere_the_libvirt_version_picks_the_default(
    arch: str, version: Optional[int], expected: str
) -> None:
    xml = _domain_xml("<interface type='user'/>", arch=arch).replace(b" machine='pc'", b"")
    host = HostCapabilities(name="h", arch=arch, libvirt_version=version)
    assert _plan(xml, host).model == expected


def test_the_snapshots_default_machine_beats_the_version_rule() -> None:
    # libvirt lists its preferred machine first in the capabilities the snapshot records.
    xml = _domain_xml("<interface type='user'/>", arch="aarch64").replace(b" machine='pc'", b"")
    guest = Guest("aarch64", "/usr/bin/qemu-system-aarch64", ("qemu",), "integratorcp")
    host = HostCapabilities(name="h", arch="aarch64", guests=(guest,), libvirt_version=None)
    assert _plan(xml, host).model == "lan9118"


def test_a_refused_nic_is_a_start_will_fail_finding_and_nothing_else() -> None:
    policy = parse_policy(
        "version: 1\ndefaults: {allowed: [iothread], require: true}\n", "policy.yaml"
    )
    xml = _domain_xml(
        VHOSTUSER.format("<driver txmode='timer'/>")
        + "<interface type='user'><model type='virtio'/><driver txmode='timer'/>"
        "<address type='virtio-mmio'/></interface>"
    )
    domain = parse_domain(xml, "vm.xml")
    found = check_domain(domain, policy, [_on(LIBVIRT_9_0)])
    assert [(f.interface, f.code, f.level, f.txmode, f.host) for f in found] == [
        (0, "start-will-fail", Level.WARNING, "timer", None),
        (1, "start-will-fail", Level.WARNING, "timer", None),
    ]
    assert all(f.message.startswith("the domain will not start: ") for f in found)
    # On 11.3 the model-less NIC starts: its written txmode is only dropped (ineffective).
    newer = check_domain(domain, policy, [_on(LIBVIRT_11_3)])
    assert [(f.interface, f.code) for f in newer] == [
        (0, "txmode-ineffective"),
        (1, "start-will-fail"),
    ]
    # Two hosts that refuse differently: each finding names its host.
    both = check_domain(
        domain, policy, [_on(LIBVIRT_9_0, name="old"), _on(LIBVIRT_11_3, name="new")]
    )
    assert [(f.interface, f.code, f.host) for f in both if f.interface == 0] == [
        (0, "start-will-fail", "old"),
        (0, "txmode-ineffective", None),
    ]
