"""passthrough: what <qemu:commandline> and <qemu:override> do to each virtio-net device's tx.

Every expectation here is QEMU's or libvirt's behaviour, not the engine's: QEMU 7.2
(``hw/core/qdev.c`` qdev_prop_set_globals and ``qom/object.c`` object_apply_global_props /
object_class_dynamic_cast: a -global reaches every device whose type descends from the type it
names, in command-line order, and a device's own properties are set after the globals;
``hw/virtio/virtio-pci.c`` virtio_instance_init_common: the inner virtio-net-device takes its
globals while the proxy is made, and the proxy's globals then set tx through its alias;
``softmmu/vl.c`` qemu_set_option: -set edits a QemuOpts defined before it, else QEMU exits
with 'there is no device "ID" defined'; ``softmmu/qdev-monitor.c`` qdev_alias_table), and
libvirt 9.0 (``qemu_command.c`` qemuBuildDeviceCommandlineHandleOverrides: each
<qemu:override> property removes the key from the device's JSON and appends its value, in
document order; a device passed as JSON is not a QemuOpts that -set can find).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import pytest

from libvirt_txmode.engine import codes
from libvirt_txmode.engine.check import ANY_HOST, check_domain
from libvirt_txmode.engine.domain_xml import parse_domain
from libvirt_txmode.engine.libvirt_rules import NicPlan, plan_domain_passthrough
from libvirt_txmode.engine.model import (
    Domain,
    Finding,
    Guest,
    HostCapabilities,
    Level,
    Nic,
    OverrideProp,
    QemuArg,
    Support,
    SupportState,
)
from libvirt_txmode.engine.passthrough import (
    DRIVER_ROUTE,
    INNER_DEVICE,
    KNOWN_ANCESTRY,
    DeviceTx,
    Passthrough,
    Unprovable,
    resolve,
    txmode_of,
)
from libvirt_txmode.engine.policy import Policy, parse_policy
from libvirt_txmode.engine.qemu_args import parse_commandline

EMU = "/usr/bin/qemu-system-x86_64"
S390 = "/usr/bin/qemu-system-s390x"
M68K = "/usr/bin/qemu-system-m68k"
SUPPORTED = Support(SupportState.SUPPORTED, "tx=<str>", "qmp")
MISSING = Support(SupportState.UNSUPPORTED, "no 'tx' property", "help")
PCI = "virtio-net-pci"
ALL_NET = (PCI, "virtio-net-pci-transitional", "virtio-net-pci-non-transitional")
ONLY_IOTHREAD = "version: 1\ndefaults: {allowed: [iothread]}\n"


def _host(
    name: str = "h1",
    *,
    ancestry: Optional[Mapping[str, tuple[str, ...]]] = None,
    device_json: Optional[bool] = None,
    devices: Optional[Mapping[str, Support]] = None,
) -> HostCapabilities:
    known = dict(devices) if devices is not None else dict.fromkeys(ALL_NET, SUPPORTED)
    return HostCapabilities(
        name=name,
        arch="x86_64",
        guests=(
            Guest("x86_64", EMU, ("qemu", "kvm")),
            Guest("s390x", S390, ("qemu",)),
            Guest("m68k", M68K, ("qemu",)),
        ),
        devices={EMU: known, S390: {"virtio-net-ccw": SUPPORTED}, M68K: {}},
        ancestry={EMU: dict(ancestry)} if ancestry is not None else {},
        device_json={EMU: device_json} if device_json is not None else {},
    )


HOST = _host()


def _nic_xml(model: str = "virtio", txmode: Optional[str] = None, alias: str = "") -> str:
    driver = f"\n      <driver name='qemu' txmode='{txmode}'/>" if txmode else ""
    named = f"\n      <alias name='{alias}'/>" if alias else ""
    return (
        "    <interface type='user'>\n"
        "      <mac address='52:54:00:00:00:01'/>\n"
        f"      <model type='{model}'/>{driver}{named}\n"
        "    </interface>\n"
    )


def _args(*values: str) -> str:
    """One <qemu:commandline>, each argument on its own line."""
    lines = "".join(f'    <qemu:arg value="{value}"/>\n' for value in values)
    return f"  <qemu:commandline>\n{lines}  </qemu:commandline>\n"


def _override(alias: str, *props: tuple[str, str, Optional[str]]) -> str:
    """One <qemu:override> of ``alias``: (name, type, value) each on its own line."""
    lines = "".join(
        f"        <qemu:property name='{name}' type='{kind}'"
        + (f" value='{value}'" if value is not None else "")
        + "/>\n"
        for name, kind, value in props
    )
    return (
        "  <qemu:override>\n"
        f"    <qemu:device alias='{alias}'>\n"
        f"      <qemu:frontend>\n{lines}      </qemu:frontend>\n"
        "    </qemu:device>\n"
        "  </qemu:override>\n"
    )


def _xml(*nics: str, extra: str = "", arch: str = "x86_64") -> str:
    return (
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
        "  <name>vm1</name>\n"
        f"  <os><type arch='{arch}' machine='pc-q35-7.2'>hvm</type></os>\n"
        "  <devices>\n"
        f"{''.join(nics)}"
        "  </devices>\n"
        f"{extra}"
        "</domain>\n"
    )


def _domain(*nics: str, extra: str = "", arch: str = "x86_64") -> Domain:
    return parse_domain(_xml(*nics, extra=extra, arch=arch).encode(), "vm1.xml")


def _line(xml: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line containing ``needle``."""
    found = [n for n, text in enumerate(xml.splitlines(), 1) if needle in text]
    return found[occurrence - 1]


def _plan(
    *nics: str, extra: str = "", host: HostCapabilities = HOST, arch: str = "x86_64"
) -> tuple[list[NicPlan], Passthrough]:
    return plan_domain_passthrough(_domain(*nics, extra=extra, arch=arch), host)


def _nic_tx(*nics: str, extra: str = "", host: HostCapabilities = HOST) -> tuple[object, ...]:
    """(device, txmode, route) of the first NIC."""
    plans, _ = _plan(*nics, extra=extra, host=host)
    return plans[0].device, plans[0].txmode, plans[0].route


def _route(option: str, value: str) -> str:
    return f"{option} {value} in <qemu:commandline>"


def _check(
    xml: str,
    policy: str = ONLY_IOTHREAD,
    hosts: Sequence[HostCapabilities] = (HOST,),
    host_mode: str = "all",
) -> list[Finding]:
    return check_domain(
        parse_domain(xml.encode(), "vm1.xml"), parse_policy(policy, "p.yaml"), hosts, host_mode
    )


def _codes(found: Sequence[Finding]) -> list[tuple[Optional[int], str, int]]:
    return [(f.interface, f.code, f.line) for f in found]


# --- no passthrough --------------------------------------------------------------------------


def test_without_passthrough_each_nic_keeps_libvirts_device_and_tx() -> None:
    plans, result = _plan(_nic_xml(txmode="timer"), _nic_xml(), _nic_xml("e1000"))
    assert result == Passthrough(
        nics=(
            DeviceTx(PCI, "timer", DRIVER_ROUTE, None),
            DeviceTx(PCI, None, "", None),
            DeviceTx("e1000", None, "", None),
        )
    )
    assert [(p.device, p.txmode, p.route) for p in plans] == [
        (PCI, "timer", DRIVER_ROUTE),
        (PCI, None, DRIVER_ROUTE),
        ("e1000", None, DRIVER_ROUTE),
    ]


def test_qemus_tx_words_in_libvirts() -> None:
    assert [txmode_of(tx) for tx in ("bh", "timer", "fast", None)] == [
        "iothread",
        "timer",
        "fast",
        None,
    ]


def test_harmless_passthrough_changes_nothing() -> None:
    extra = _args("-name", "guest=x", "-global", "ICH9-LPC.disable_s3=1") + _args(
        "-fw_cfg", "name=opt/x,string=y", "-device", "ivshmem-plain,memdev=m"
    )
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    assert _nic_tx(_nic_xml(txmode="iothread"), extra=extra) == (PCI, "iothread", DRIVER_ROUTE)
    assert _check(xml) == []
    _, result = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert result.extra == () and result.unprovable == ()


# --- -global: precedence -------------------------------------------------------------------


def test_a_devices_own_tx_beats_any_global() -> None:
    extra = _args("-global", f"{PCI}.tx=timer", "-global", "virtio-net-device.tx=timer")
    assert _nic_tx(_nic_xml(txmode="iothread"), extra=extra) == (PCI, "iothread", DRIVER_ROUTE)


def test_a_global_reaches_a_nic_without_tx_and_names_its_line() -> None:
    extra = _args("-global", f"{PCI}.tx=timer")
    xml = _xml(_nic_xml(), extra=extra)
    plans, _ = _plan(_nic_xml(), extra=extra)
    assert (plans[0].txmode, plans[0].route) == ("timer", _route("-global", f"{PCI}.tx=timer"))
    assert plans[0].line == _line(xml, "tx=timer")
    found = _check(xml)
    assert _codes(found) == [(0, codes.NOT_ALLOWED, _line(xml, "tx=timer"))]
    assert found[0].message == (
        f"txmode 'timer' (set by -global {PCI}.tx=timer in <qemu:commandline>) is not allowed "
        "by rule 'defaults' (allowed: iothread)"
    )


def test_the_later_global_wins() -> None:
    first, second = f"{PCI}.tx=bh", f"{PCI}.tx=timer"
    extra = _args("-global", first, "-global", second)
    plans, _ = _plan(_nic_xml(), extra=extra)
    xml = _xml(_nic_xml(), extra=extra)
    assert (plans[0].txmode, plans[0].route, plans[0].line) == (
        "timer",
        _route("-global", second),
        _line(xml, second),
    )
    extra = _args("-global", second, "-global", first)
    plans, _ = _plan(_nic_xml(), extra=extra)
    assert (plans[0].txmode, plans[0].route) == ("iothread", _route("-global", first))


def test_the_later_global_wins_across_ancestor_types() -> None:
    # virtio-pci and virtio-net-pci-base are both ancestors of the proxy: order decides.
    extra = _args("-global", "virtio-pci.tx=bh", "-global", "virtio-net-pci-base.tx=timer")
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "timer"
    extra = _args("-global", "virtio-net-pci-base.tx=timer", "-global", "virtio-pci.tx=bh")
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "iothread"


@pytest.mark.parametrize(
    ("inner", "outer"),
    [
        ("virtio-net-device.tx=timer", f"{PCI}.tx=bh"),
        ("virtio-device.tx=timer", "virtio-pci.tx=bh"),
        ("virtio-net-device.tx=timer", "pci-device.tx=bh"),
    ],
)
def test_a_global_on_the_proxy_beats_one_on_the_inner_device_whatever_the_order(
    inner: str, outer: str
) -> None:
    for extra in (
        _args("-global", inner, "-global", outer),
        _args("-global", outer, "-global", inner),
    ):
        assert _nic_tx(_nic_xml(), extra=extra)[1:] == ("iothread", _route("-global", outer))


def test_a_global_on_the_inner_device_alone_reaches_the_proxy() -> None:
    for name in ("virtio-net-device", "virtio-device"):
        extra = _args("-global", f"{name}.tx=timer")
        for model in ("virtio", "virtio-transitional", "virtio-non-transitional"):
            plans, _ = _plan(_nic_xml(model), extra=extra)
            assert plans[0].txmode == "timer", (name, model)


def test_a_global_on_a_type_both_layers_descend_from_is_the_proxys() -> None:
    # "device" is an ancestor of both the proxy and the inner device: the proxy sets it last.
    extra = _args("-global", "virtio-net-device.tx=timer", "-global", "device.tx=bh")
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "iothread"
    extra = _args("-global", "device.tx=bh", "-global", "virtio-net-device.tx=timer")
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "iothread"


# --- -global: which types reach which device ------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "virtio-net-pci-base",
        "virtio-pci",
        "pci-device",
        "device",
        "object",
        "virtio-net-device",
        "virtio-device",
        "conventional-pci-device",
        "vmstate-if",
        "resettable",
    ],
)
@pytest.mark.parametrize("model", ["virtio", "virtio-transitional", "virtio-non-transitional"])
def test_a_global_reaches_every_pci_nic_through_its_ancestry(target: str, model: str) -> None:
    extra = _args("-global", f"{target}.tx=timer")
    plans, result = _plan(_nic_xml(model), extra=extra)
    assert plans[0].txmode == "timer"
    assert result.unprovable == ()


@pytest.mark.parametrize("model", ["virtio", "virtio-non-transitional"])
def test_a_global_on_pcie_devices_reaches_the_variants_that_implement_it(model: str) -> None:
    # virtio_pci_types_register: the generic and non-transitional types implement both PCI
    # interfaces, the transitional one only conventional-pci-device.
    plans, _ = _plan(_nic_xml(model), extra=_args("-global", "pci-express-device.tx=timer"))
    assert plans[0].txmode == "timer"


def test_a_global_on_pcie_devices_does_not_reach_the_transitional_variant() -> None:
    plans, _ = _plan(
        _nic_xml("virtio-transitional"), extra=_args("-global", "pci-express-device.tx=timer")
    )
    assert plans[0].txmode is None


def test_a_global_on_the_interface_root_type_reaches_no_device() -> None:
    plans, _ = _plan(_nic_xml(), extra=_args("-global", "interface.tx=timer"))
    assert plans[0].txmode is None


@pytest.mark.parametrize(
    "target",
    [
        "virtio-net-ccw",
        "virtio-ccw-device",
        "ccw-device",
        "e1000",
        "virtio-net-pci-transitional",
        "virtio-net",  # an alias for -device only: no QOM type has that name
        "virtio-serial-pci",
    ],
)
def test_a_global_on_an_unrelated_type_does_not_reach_a_pci_nic(target: str) -> None:
    plans, result = _plan(_nic_xml(), extra=_args("-global", f"{target}.tx=timer"))
    assert (plans[0].txmode, plans[0].route, plans[0].line) == (None, DRIVER_ROUTE, None)
    assert result.nics == (DeviceTx(PCI, None, "", None),)
    assert result.unprovable == ()


def test_a_global_on_a_sibling_variant_does_not_reach_the_nic() -> None:
    plans, _ = _plan(
        _nic_xml("virtio-transitional"),
        extra=_args("-global", "virtio-net-pci-non-transitional.tx=timer"),
    )
    assert (plans[0].device, plans[0].txmode) == ("virtio-net-pci-transitional", None)


def test_a_ccw_nic_gets_ccw_globals_and_inner_ones() -> None:
    ccw = _nic_xml()
    for target, expected in (
        ("virtio-ccw-device", "timer"),
        ("ccw-device", "timer"),
        ("virtio-net-device", "timer"),
        ("virtio-net-ccw", "timer"),
        ("virtio-pci", None),
        (PCI, None),
        ("pci-express-device", None),
        ("conventional-pci-device", None),
        ("vmstate-if", "timer"),
    ):
        plans, _ = _plan(ccw, extra=_args("-global", f"{target}.tx=timer"), arch="s390x")
        assert (plans[0].device, plans[0].txmode) == ("virtio-net-ccw", expected), target
    extra = _args("-global", "virtio-net-ccw.tx=bh", "-global", "virtio-net-device.tx=timer")
    plans, _ = _plan(ccw, extra=extra, arch="s390x")
    assert plans[0].txmode == "iothread"


def test_the_probed_ancestry_replaces_the_known_one() -> None:
    probed = {PCI: ("my-net-base", "device", "object")}
    host = _host(ancestry=probed)
    assert _nic_tx(_nic_xml(), extra=_args("-global", "my-net-base.tx=timer"), host=host)[1] == (
        "timer"
    )
    # Not an ancestor on this QEMU, whatever the known table says.
    plans, result = _plan(_nic_xml(), extra=_args("-global", "virtio-pci.tx=timer"), host=host)
    assert plans[0].txmode is None and result.unprovable == ()
    # The known table stands in for the inner device when the probe did not list it.
    assert _nic_tx(_nic_xml(), extra=_args("-global", "virtio-device.tx=timer"), host=host)[1] == (
        "timer"
    )
    # Without the probe, my-net-base is nobody's ancestor.
    assert _nic_tx(_nic_xml(), extra=_args("-global", "my-net-base.tx=timer"))[1] is None


def test_the_probed_ancestry_of_the_inner_device_is_used() -> None:
    host = _host(ancestry={INNER_DEVICE: ("my-virtio", "device", "object")})
    assert _nic_tx(_nic_xml(), extra=_args("-global", "my-virtio.tx=timer"), host=host)[1] == (
        "timer"
    )
    assert (
        _nic_tx(_nic_xml(), extra=_args("-global", "virtio-device.tx=timer"), host=host)[1] is None
    )


def test_a_probed_virtio_net_type_with_another_name_is_judged() -> None:
    host = _host(ancestry={"my-nic": ("virtio-net-pci-base", "virtio-pci", "device", "object")})
    extra = _args("-device", "my-nic,id=x", "-global", "virtio-net-pci-base.tx=timer")
    _, result = _plan(_nic_xml("e1000"), extra=extra, host=host)
    assert [(d.device, d.txmode) for d in result.extra] == [("my-nic", "timer")]
    # Not a pci-device on this QEMU: none of the PCI interfaces.
    extra = _args("-device", "my-nic,id=x", "-global", "pci-express-device.tx=timer")
    _, result = _plan(_nic_xml("e1000"), extra=extra, host=host)
    assert [(d.device, d.txmode) for d in result.extra] == [("my-nic", None)]


def test_the_known_ancestry_is_qemus() -> None:
    # hw/virtio/virtio-pci.c, hw/net/virtio-net.c, hw/s390x/virtio-ccw.c (QEMU 7.2).
    base = ("virtio-net-pci-base", "virtio-pci", "pci-device", "device", "object")
    assert dict(KNOWN_ANCESTRY) == {
        PCI: base,
        "virtio-net-pci-transitional": base,
        "virtio-net-pci-non-transitional": base,
        "virtio-net-device": ("virtio-device", "device", "object"),
        "virtio-net-ccw": ("virtio-ccw-device", "ccw-device", "device", "object"),
    }


# --- -global: what cannot be computed -------------------------------------------------------


def test_a_global_that_may_reach_a_device_of_unknown_ancestry_is_unverifiable() -> None:
    extra = _args("-device", "virtio-net-foo,id=x", "-global", "virtio-pci.tx=timer")
    xml = _xml(_nic_xml("e1000"), extra=extra)
    _, result = _plan(_nic_xml("e1000"), extra=extra)
    assert result.unprovable == (
        Unprovable(
            _line(xml, "virtio-pci.tx"),
            "-global virtio-pci.tx=timer",
            "what virtio-net-foo descends from is not known, so whether this reaches it is not "
            "known",
        ),
    )
    # The -global reaches no device this tool knows of.
    assert [(d.device, d.txmode) for d in result.extra] == [("virtio-net-foo", None)]
    found = _check(xml)
    assert _codes(found) == [(None, codes.PASSTHROUGH_UNVERIFIABLE, _line(xml, "virtio-pci.tx"))]


def test_a_global_naming_the_unknown_device_itself_applies() -> None:
    extra = _args("-device", "virtio-net-foo,id=x", "-global", "virtio-net-foo.tx=timer")
    _, result = _plan(_nic_xml("e1000"), extra=extra)
    assert result.unprovable == ()
    assert [(d.device, d.txmode) for d in result.extra] == [("virtio-net-foo", "timer")]


def test_two_unknown_devices_make_every_global_unverifiable_once() -> None:
    extra = _args(
        "-device",
        "virtio-net-foo,id=x",
        "-device",
        "virtio-net-bar,id=y",
        "-global",
        "virtio-net-foo.tx=timer",
    )
    _, result = _plan(_nic_xml("e1000"), extra=extra)
    assert [u.text for u in result.unprovable] == ["-global virtio-net-foo.tx=timer"]
    assert "virtio-net-bar, virtio-net-foo descends" in result.unprovable[0].reason


def test_many_unknown_devices_are_named_three_at_most() -> None:
    names = ["virtio-net-a", "virtio-net-b", "virtio-net-c", "virtio-net-d"]
    args = [v for n in names for v in ("-device", n)]
    _, result = _plan(_nic_xml("e1000"), extra=_args(*args, "-global", "device.tx=timer"))
    assert [u.reason for u in result.unprovable] == [
        "what virtio-net-a, virtio-net-b, virtio-net-c, ... descends from is not known, so "
        "whether this reaches it is not known"
    ]
    _, result = _plan(_nic_xml("e1000"), extra=_args(*args[:6], "-global", "device.tx=timer"))
    assert result.unprovable[0].reason.startswith(
        "what virtio-net-a, virtio-net-b, virtio-net-c descends"
    )


def test_an_unknown_device_with_its_own_tx_needs_no_ancestry() -> None:
    extra = _args("-device", "virtio-net-foo,tx=bh", "-global", "device.tx=timer")
    _, result = _plan(_nic_xml("e1000"), extra=extra)
    assert result.unprovable == ()
    assert [(d.device, d.txmode) for d in result.extra] == [("virtio-net-foo", "iothread")]


# --- extra -device --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "device"),
    [("x86_64", PCI), ("s390x", "virtio-net-ccw"), ("m68k", INNER_DEVICE), ("aarch64", PCI)],
)
def test_the_virtio_net_alias_is_the_transports_device(arch: str, device: str) -> None:
    _, result = _plan(extra=_args("-device", "virtio-net,tx=timer"), arch=arch)
    assert [(d.device, d.txmode) for d in result.extra] == [(device, "timer")]


def test_an_extra_device_without_tx_takes_the_globals() -> None:
    extra = _args("-device", f"{PCI},netdev=n", "-global", f"{PCI}.tx=timer")
    xml = _xml(extra=extra)
    _, result = _plan(extra=extra)
    assert result.extra == (
        DeviceTx(PCI, "timer", _route("-global", f"{PCI}.tx=timer"), _line(xml, "tx=timer")),
    )


def test_an_extra_devices_own_tx_beats_the_globals() -> None:
    extra = _args("-global", f"{PCI}.tx=timer", "-device", f"{PCI},tx=bh")
    xml = _xml(extra=extra)
    _, result = _plan(extra=extra)
    assert result.extra == (
        DeviceTx(PCI, "iothread", _route("-device", f"{PCI},tx=bh"), _line(xml, "tx=bh")),
    )


def test_an_extra_device_that_is_not_virtio_net_has_no_tx_for_qemu_to_set() -> None:
    # Not a NIC to judge, but QEMU refuses the property: the domain will not start.
    _, result = _plan(extra=_args("-device", "e1000,tx=timer", "-global", "device.tx=timer"))
    assert result.extra == ()
    assert [(u.text, u.fails) for u in result.unprovable] == [
        ("-device e1000,tx=timer in <qemu:commandline>", True)
    ]
    assert "QEMU exits with \"Property 'e1000.tx' not found\"" in result.unprovable[0].reason
    _, quiet = _plan(extra=_args("-device", "e1000,id=x", "-global", "device.tx=timer"))
    assert quiet.extra == () and quiet.unprovable == ()


def test_a_driver_override_that_keeps_the_nics_tx_makes_qemu_exit() -> None:
    # libvirt puts tx=timer in the NIC's JSON; the override makes it an e1000, which has none.
    swap = _override("net0", ("driver", "string", "e1000"))
    plans, result = _plan(_nic_xml(txmode="timer"), extra=swap)
    assert (plans[0].device, plans[0].txmode) == ("e1000", None)
    assert [(u.line, u.fails) for u in result.unprovable] == [(14, True)]
    reason = result.unprovable[0].reason
    assert reason.startswith("it makes the device e1000, whose tx=timer (libvirt's, from <driver")
    assert reason.endswith("QEMU exits with \"Property 'e1000.tx' not found\"")
    assert _plan(_nic_xml(), extra=swap)[1].unprovable == ()
    # A tx the override itself set stays on the swapped device too, and is named as such.
    both = _override("net0", ("tx", "string", "timer"), ("driver", "string", "e1000"))
    reason = _plan(_nic_xml(), extra=both)[1].unprovable[0].reason
    assert reason.startswith(
        "it makes the device e1000, whose tx=timer (from <qemu:override> of device 'net0')"
    )


def test_a_global_naming_a_nic_type_without_tx_makes_qemu_exit() -> None:
    _, result = _plan(_nic_xml(model="e1000"), extra=_args("-global", "e1000.tx=timer"))
    assert [(u.text, u.fails) for u in result.unprovable] == [("-global e1000.tx=timer", True)]
    assert "can't apply global" in result.unprovable[0].reason
    # No e1000 in the domain: QEMU never applies it.
    assert _plan(_nic_xml(), extra=_args("-global", "e1000.tx=timer"))[1].unprovable == ()


def test_an_extra_device_without_tx_or_globals_has_none() -> None:
    _, result = _plan(extra=_args("-device", f"{PCI},netdev=n", "-name", "x"))
    assert result.extra == (DeviceTx(PCI, None, "", None),)
    assert _check(_xml(extra=_args("-device", f"{PCI},netdev=n")), "version: 1\n") == []


def test_an_extra_device_without_a_driver_is_no_nic() -> None:
    _, result = _plan(extra=_args("-device", "{'id': 'x', 'tx': 'timer'}"))
    assert result.extra == ()


def test_a_json_extra_device_is_judged() -> None:
    value = "{'driver': 'virtio-net-pci', 'netdev': 'n', 'tx': 'timer'}"
    xml = _xml(extra=_args("-device", value))
    found = _check(xml)
    assert _codes(found) == [(None, codes.NOT_ALLOWED, _line(xml, "'tx'"))]
    assert found[0].message == (
        f"txmode 'timer' (set by -device {value} in <qemu:commandline>) is not allowed by rule "
        "'defaults' (allowed: iothread)"
    )
    assert (found[0].mac, found[0].txmode, found[0].rule) == (None, "timer", "defaults")


# --- -set -----------------------------------------------------------------------------------


def test_set_after_its_device_sets_the_tx() -> None:
    extra = _args("-device", f"{PCI},id=x,tx=bh", "-set", "device.x.tx=timer")
    xml = _xml(extra=extra)
    _, result = _plan(extra=extra)
    assert result.extra == (
        DeviceTx(PCI, "timer", _route("-set", "device.x.tx=timer"), _line(xml, "device.x.tx")),
    )
    assert result.unprovable == ()


def test_set_of_the_driver_makes_a_virtio_net_device() -> None:
    extra = _args("-device", "e1000,id=x,tx=timer", "-set", f"device.x.driver={PCI}")
    _, result = _plan(extra=extra)
    assert [(d.device, d.txmode) for d in result.extra] == [(PCI, "timer")]
    extra = _args("-device", f"{PCI},id=x,tx=timer", "-set", "device.x.driver=e1000")
    assert _plan(extra=extra)[1].extra == ()
    extra = _args("-device", "e1000,id=x", "-set", "device.x.driver=virtio-net")
    assert [d.device for d in _plan(extra=extra, arch="s390x")[1].extra] == ["virtio-net-ccw"]


def test_set_of_another_devices_id_does_not_reach_this_one() -> None:
    extra = _args("-device", f"{PCI},id=x", "-device", f"{PCI},id=y", "-set", "device.y.tx=timer")
    _, result = _plan(extra=extra)
    assert [d.txmode for d in result.extra] == [None, "timer"]


@pytest.mark.parametrize("device_json", [None, False])
def test_set_before_its_device_cannot_be_judged_when_libvirts_devices_may_be_qemuopts(
    device_json: Optional[bool],
) -> None:
    extra = _args("-set", "device.x.tx=timer", "-device", f"{PCI},id=x")
    xml = _xml(extra=extra)
    _, result = _plan(extra=extra, host=_host(device_json=device_json))
    assert result.unprovable == (
        Unprovable(
            _line(xml, "device.x.tx"),
            "-set device.x.tx=timer",
            "'x' is neither a NIC nor a -device before it: it may be another device libvirt builds",
        ),
    )
    assert result.extra == (DeviceTx(PCI, None, "", None),)
    found = _check(xml, hosts=(_host(device_json=device_json),))
    assert [(f.code, f.level, f.rule) for f in found] == [
        (codes.PASSTHROUGH_UNVERIFIABLE, Level.ERROR, "passthrough")
    ]


def test_set_before_its_device_makes_qemu_exit_when_libvirt_passes_json() -> None:
    extra = _args("-set", "device.x.tx=timer", "-device", f"{PCI},id=x")
    xml = _xml(extra=extra)
    _, result = _plan(extra=extra, host=_host(device_json=True))
    assert result.unprovable == (
        Unprovable(
            _line(xml, "device.x.tx"),
            "-set device.x.tx=timer",
            "no -device before it has id 'x' and libvirt passes its own devices as JSON: QEMU "
            "exits with 'there is no device \"x\" defined'",
            fails=True,
        ),
    )
    found = _check(xml, hosts=(_host(device_json=True),))
    assert found == [
        Finding(
            file="vm1.xml",
            line=_line(xml, "device.x.tx"),
            domain="vm1",
            code=codes.START_WILL_FAIL,
            level=Level.WARNING,
            message="the domain will not start: -set device.x.tx=timer: "
            + result.unprovable[0].reason,
        )
    ]


def test_set_cannot_reach_a_json_device() -> None:
    extra = _args("-device", "{'driver': 'virtio-net-pci', 'id': 'x'}", "-set", "device.x.tx=timer")
    _, result = _plan(extra=extra, host=_host(device_json=False))
    assert [d.txmode for d in result.extra] == [None]
    assert [u.text for u in result.unprovable] == ["-set device.x.tx=timer"]


def test_set_on_a_libvirt_nic_passed_as_qemuopts_sets_its_tx() -> None:
    extra = _args("-set", "device.net0.tx=timer")
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    for host in (_host(device_json=False), _host()):
        plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra, host=host)
        assert (plans[0].txmode, plans[0].route, plans[0].line) == (
            "timer",
            _route("-set", "device.net0.tx=timer"),
            _line(xml, "device.net0"),
        )
        assert result.unprovable == ()


def test_set_on_a_libvirt_nic_passed_as_json_makes_qemu_exit() -> None:
    extra = _args("-set", "device.net0.tx=timer")
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    host = _host(device_json=True)
    plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra, host=host)
    assert (plans[0].txmode, plans[0].route) == ("iothread", DRIVER_ROUTE)
    assert result.unprovable == (
        Unprovable(
            _line(xml, "device.net0"),
            "-set device.net0.tx=timer",
            "libvirt passes device 'net0' to this QEMU as JSON, which -set cannot edit: QEMU "
            "exits with 'there is no device \"net0\" defined'",
            fails=True,
        ),
    )
    found = _check(xml, hosts=(host,))
    assert _codes(found) == [(None, codes.START_WILL_FAIL, _line(xml, "device.net0"))]
    assert found[0].level is Level.WARNING and found[0].rule is None


def test_set_with_qemu_capabilities_may_reach_a_libvirt_nic() -> None:
    # <qemu:capabilities> can take device.json away: libvirt then passes QemuOpts.
    capabilities = (
        "  <qemu:capabilities>\n    <qemu:del capability='device.json'/>\n  </qemu:capabilities>\n"
    )
    extra = _args("-set", "device.net0.tx=timer") + capabilities
    plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra, host=_host(device_json=True))
    assert plans[0].txmode == "timer" and result.unprovable == ()


def test_set_of_the_driver_on_a_libvirt_nic() -> None:
    extra = _args("-set", f"device.net0.driver={PCI}")
    plans, _ = _plan(_nic_xml("e1000"), extra=extra + _args("-global", f"{PCI}.tx=timer"))
    assert (plans[0].device, plans[0].txmode) == (PCI, "timer")


def test_set_of_an_unknown_id_may_be_another_libvirt_device() -> None:
    extra = _args("-set", "device.ua-disk.tx=timer")
    _, result = _plan(_nic_xml(), extra=extra)
    assert [u.fails for u in result.unprovable] == [False]
    _, result = _plan(_nic_xml(), extra=extra, host=_host(device_json=True))
    assert [u.fails for u in result.unprovable] == [True]


def test_set_reaches_a_nic_with_a_user_alias() -> None:
    extra = _args("-set", "device.ua-net.tx=timer")
    plans, _ = _plan(_nic_xml(alias="ua-net"), extra=extra)
    assert plans[0].txmode == "timer"


# --- <qemu:override> ------------------------------------------------------------------------


def test_an_override_of_tx_beats_the_nics_own_and_names_its_line() -> None:
    extra = _override("net0", ("tx", "string", "timer"))
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    plans, _ = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert (plans[0].txmode, plans[0].route, plans[0].line) == (
        "timer",
        "<qemu:override> of device 'net0'",
        _line(xml, "name='tx'"),
    )
    found = _check(xml)
    assert _codes(found) == [(0, codes.NOT_ALLOWED, _line(xml, "name='tx'"))]
    assert "(set by <qemu:override> of device 'net0')" in found[0].message


def test_the_last_override_of_a_property_wins() -> None:
    extra = _override("net0", ("tx", "string", "timer"), ("tx", "string", "bh"))
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "iothread"
    extra = _override("net0", ("tx", "string", "bh")) + _override("net0", ("tx", "string", "timer"))
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "timer"


def test_an_override_of_tx_beats_the_globals() -> None:
    extra = _override("net0", ("tx", "string", "bh")) + _args("-global", f"{PCI}.tx=timer")
    assert _nic_tx(_nic_xml(), extra=extra)[1] == "iothread"


def test_removing_the_nics_tx_leaves_it_to_the_globals() -> None:
    extra = _override("net0", ("tx", "remove", None))
    plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert (plans[0].txmode, result.unprovable) == (None, ())
    extra += _args("-global", f"{PCI}.tx=timer")
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    plans, _ = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert (plans[0].txmode, plans[0].route, plans[0].line) == (
        "timer",
        _route("-global", f"{PCI}.tx=timer"),
        _line(xml, "tx=timer"),
    )


def test_an_override_turns_another_model_into_virtio_net() -> None:
    extra = _override("net0", ("driver", "string", PCI), ("tx", "string", "timer"))
    xml = _xml(_nic_xml("e1000"), extra=extra)
    plans, _ = _plan(_nic_xml("e1000"), extra=extra)
    assert (plans[0].device, plans[0].txmode) == (PCI, "timer")
    assert _codes(_check(xml)) == [(0, codes.NOT_ALLOWED, _line(xml, "name='tx'"))]
    # The device is what the host must support.
    missing = _host(devices={PCI: MISSING})
    assert [f.code for f in _check(xml, "version: 1\n", hosts=(missing,))] == [codes.UNSUPPORTED]


def test_an_override_of_the_driver_alone_takes_the_globals() -> None:
    extra = _override("net0", ("driver", "string", PCI)) + _args("-global", f"{PCI}.tx=timer")
    assert _nic_tx(_nic_xml("e1000"), extra=extra)[:2] == (PCI, "timer")


def test_an_override_of_the_driver_to_another_model_ends_the_nics_tx() -> None:
    extra = _override("net0", ("driver", "string", "e1000"))
    plans, result = _plan(_nic_xml(txmode="timer"), extra=extra)
    # QEMU builds an e1000: the plan names it, and it has no tx.
    assert (plans[0].device, plans[0].txmode) == ("e1000", None)
    assert result.nics == (DeviceTx("e1000", None, "", None),)


def test_a_nic_an_override_makes_an_e1000_is_not_required_to_have_a_txmode() -> None:
    # require: true asks virtio-net NICs for a txmode; QEMU builds this one as an e1000.
    xml = _xml(_nic_xml(), extra=_override("net0", ("driver", "string", "e1000")))
    assert _check(xml, "version: 1\ndefaults: {require: true}\n") == []
    assert [
        f.code for f in _check(_xml(_nic_xml()), "version: 1\ndefaults: {require: true}\n")
    ] == [codes.REQUIRED]


def test_an_override_of_the_driver_to_the_virtio_net_alias_is_the_pci_device() -> None:
    # QEMU resolves a JSON -device driver through qdev_alias_table too (qdev_get_device_class).
    extra = _override("net0", ("driver", "string", "virtio-net")) + _args(
        "-global", f"{PCI}.tx=timer"
    )
    plans, result = _plan(_nic_xml("e1000"), extra=extra)
    assert (plans[0].device, plans[0].txmode) == (PCI, "timer")
    assert result.unprovable == ()


@pytest.mark.parametrize("kind", ["signed", "unsigned", "bool"])
def test_an_override_that_is_not_a_string_is_unverifiable(kind: str) -> None:
    extra = _override("net0", ("tx", kind, "1"))
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert result.unprovable == (
        Unprovable(
            _line(xml, "name='tx'"),
            f"<qemu:override> of device 'net0': property 'tx' ({kind})",
            f"a {kind} where QEMU expects a string",
        ),
    )
    assert plans[0].txmode == "iothread"  # the property is not applied


def test_removing_the_driver_is_unverifiable() -> None:
    extra = _override("net0", ("driver", "remove", None))
    xml = _xml(_nic_xml(txmode="iothread"), extra=extra)
    plans, result = _plan(_nic_xml(txmode="iothread"), extra=extra)
    assert result.unprovable == (
        Unprovable(
            _line(xml, "name='driver'"),
            "<qemu:override> of device 'net0': property 'driver' (remove)",
            "removes the device's driver",
        ),
    )
    assert (plans[0].device, plans[0].txmode) == (PCI, "iothread")


def test_an_override_of_a_device_that_is_no_nic_is_unverifiable() -> None:
    extra = _override("ua-disk", ("tx", "string", "timer"))
    xml = _xml(_nic_xml(), extra=extra)
    plans, result = _plan(_nic_xml(), extra=extra)
    assert plans[0].txmode is None
    assert result.unprovable == (
        Unprovable(
            _line(xml, "name='tx'"),
            "<qemu:override> of device 'ua-disk': property 'tx' (string)",
            "'ua-disk' is not the alias of one of the domain's NICs, so what device it is cannot "
            "be seen here",
        ),
    )
    found = _check(xml, "version: 1\npassthrough: warn\n")
    assert found == [
        Finding(
            file="vm1.xml",
            line=_line(xml, "name='tx'"),
            domain="vm1",
            code=codes.PASSTHROUGH_UNVERIFIABLE,
            level=Level.WARNING,
            message="<qemu:override> of device 'ua-disk': property 'tx' (string) cannot be "
            "proven harmless to the NICs' tx ('ua-disk' is not the alias of one of the domain's "
            "NICs, so what device it is cannot be seen here); policy 'passthrough: warn'",
            rule="passthrough",
        )
    ]


def test_an_override_reaches_the_second_nic_by_its_alias() -> None:
    extra = _override("net1", ("tx", "string", "timer"))
    plans, _ = _plan(_nic_xml(), _nic_xml(), extra=extra)
    assert [p.txmode for p in plans] == [None, "timer"]
    extra = _override("ua-b", ("tx", "string", "timer"))
    plans, _ = _plan(_nic_xml(alias="ua-a"), _nic_xml(alias="ua-b"), extra=extra)
    assert [p.txmode for p in plans] == [None, "timer"]


def test_overrides_apply_before_set() -> None:
    # libvirt rewrites its -device before QEMU reads the -set that edits it.
    extra = _override("net0", ("tx", "string", "bh")) + _args("-set", "device.net0.tx=timer")
    assert _nic_tx(_nic_xml(), extra=extra, host=_host(device_json=False))[1] == "timer"


# --- resolve directly -----------------------------------------------------------------------


def _bare(*args: QemuArg, overrides: tuple[OverrideProp, ...] = ()) -> Domain:
    return Domain(
        name="vm", file="f.xml", line=1, arch="x86_64", qemu_args=args, overrides=overrides
    )


def test_resolve_keeps_one_entry_per_nic_in_order() -> None:
    domain = _bare(
        QemuArg(kind="global", line=3, text="-global x", target=PCI, prop="tx", value="timer")
    )
    result = resolve(
        domain,
        HOST,
        [
            (PCI, "bh", "net0"),
            (None, None, "hostdev0"),
            ("e1000", None, "net1"),
            (PCI, None, "net2"),
        ],
    )
    assert result.nics == (
        DeviceTx(PCI, "iothread", DRIVER_ROUTE, None),
        None,
        DeviceTx("e1000", None, "", None),
        DeviceTx(PCI, "timer", "-global x in <qemu:commandline>", 3),
    )


def test_resolve_without_passthrough_judges_virtio_net_devices_only() -> None:
    result = resolve(
        _bare(), HOST, [("virtio-net-ccw", "timer", "net0"), ("virtio-blk", None, "x")]
    )
    assert result == Passthrough(
        nics=(
            DeviceTx("virtio-net-ccw", "timer", DRIVER_ROUTE, None),
            DeviceTx("virtio-blk", None, "", None),
        )
    )


def test_an_unverifiable_argument_is_kept_with_its_line_and_reason() -> None:
    arg = QemuArg(kind="unverifiable", line=7, text="-readconfig f", reason="a file")
    result = resolve(_bare(arg), HOST, [(PCI, None, "net0")])
    assert result.unprovable == (Unprovable(7, "-readconfig f", "a file"),)
    assert result.nics == (DeviceTx(PCI, None, "", None),)


def test_an_override_with_a_missing_value_keeps_no_tx() -> None:
    prop = OverrideProp("net0", "tx", "string", None, 5)
    result = resolve(_bare(overrides=(prop,)), HOST, [(PCI, "timer", "net0")])
    assert result.nics == (DeviceTx(PCI, None, "", None),)


def test_a_domain_emulator_that_the_host_does_not_list_uses_the_known_ancestry() -> None:
    domain = Domain(
        name="vm",
        file="f.xml",
        line=1,
        arch="x86_64",
        emulator="/opt/qemu",
        qemu_args=(
            QemuArg(
                kind="global",
                line=2,
                text="-global y",
                target="virtio-pci",
                prop="tx",
                value="timer",
            ),
        ),
    )
    host = _host(ancestry={PCI: ("other", "device")}, device_json=True)
    result = resolve(domain, host, [(PCI, None, "net0")])
    assert result.nics[0] is not None and result.nics[0].txmode == "timer"


def test_a_host_without_the_arch_judges_with_the_known_ancestry() -> None:
    domain = Domain(
        name="vm",
        file="f.xml",
        line=1,
        arch="ppc64",
        qemu_args=(
            QemuArg(
                kind="global",
                line=2,
                text="-global y",
                target="virtio-pci",
                prop="tx",
                value="timer",
            ),
            QemuArg(kind="set", line=3, text="-set z", target="net0", prop="tx", value="bh"),
        ),
    )
    result = resolve(domain, _host(device_json=True), [(PCI, None, "net0")])
    # No emulator: whether libvirt passes JSON is unknown, so the -set is assumed to apply.
    assert result.nics[0] == DeviceTx(PCI, "iothread", "-set z in <qemu:commandline>", 3)
    assert result.unprovable == ()


# --- findings: levels and lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "level"),
    [
        ("version: 1\n", Level.ERROR),
        ("version: 1\npassthrough: deny\n", Level.ERROR),
        ("version: 1\naction: audit\npassthrough: deny\n", Level.WARNING),
        ("version: 1\npassthrough: warn\n", Level.WARNING),
        ("version: 1\npassthrough: allow\n", None),
    ],
)
def test_unverifiable_passthrough_at_the_policys_level(policy: str, level: Optional[Level]) -> None:
    xml = _xml(_nic_xml(txmode="iothread"), extra=_args("-readconfig", "/etc/x.cfg"))
    found = _check(xml, policy)
    if level is None:
        assert found == []
        return
    passthrough = parse_policy(policy, "p").passthrough
    assert found == [
        Finding(
            file="vm1.xml",
            line=_line(xml, "/etc/x.cfg"),
            domain="vm1",
            code=codes.PASSTHROUGH_UNVERIFIABLE,
            level=level,
            message="-readconfig /etc/x.cfg cannot be proven harmless to the NICs' tx "
            "(-readconfig reads options from a file this tool cannot see); policy "
            f"'passthrough: {passthrough}'",
            rule="passthrough",
        )
    ]


@pytest.mark.parametrize(
    "policy", ["version: 1\npassthrough: allow\n", "version: 1\naction: audit\n"]
)
def test_start_will_fail_is_a_warning_whatever_the_policy(policy: str) -> None:
    xml = _xml(_nic_xml(), extra=_args("-set", "device.net0.tx=timer"))
    found = _check(xml, policy, hosts=(_host(device_json=True),))
    assert [(f.code, f.level) for f in found] == [(codes.START_WILL_FAIL, Level.WARNING)]


def test_findings_come_in_nic_then_extra_then_passthrough_order() -> None:
    extra = _args(
        "-readconfig",
        "/x.cfg",
        "-device",
        f"{PCI},tx=timer",
        "-global",
        f"{PCI}.tx=timer",
    )
    xml = _xml(_nic_xml(), _nic_xml(txmode="timer"), extra=extra)
    found = _check(xml)
    assert _codes(found) == [
        (0, codes.NOT_ALLOWED, _line(xml, f"{PCI}.tx=timer")),
        (1, codes.NOT_ALLOWED, _line(xml, "<interface", 2)),
        (None, codes.NOT_ALLOWED, _line(xml, ",tx=timer")),
        (None, codes.PASSTHROUGH_UNVERIFIABLE, _line(xml, "/x.cfg")),
    ]
    assert [f.message for f in found[:2]] == [
        f"txmode 'timer' (set by -global {PCI}.tx=timer in <qemu:commandline>) is not allowed "
        "by rule 'defaults' (allowed: iothread)",
        "txmode 'timer' is not allowed by rule 'defaults' (allowed: iothread)",
    ]


def test_the_same_unprovable_item_on_several_hosts_is_reported_once() -> None:
    xml = _xml(_nic_xml(), extra=_args("-readconfig", "/x.cfg"))
    found = _check(xml, hosts=(_host("a"), _host("b")))
    assert [f.code for f in found] == [codes.PASSTHROUGH_UNVERIFIABLE]


def test_an_invalid_tx_from_the_commandline_names_its_route() -> None:
    xml = _xml(_nic_xml(), extra=_args("-global", f"{PCI}.tx=fast"))
    found = _check(xml, "version: 1\n")
    assert found == [
        Finding(
            file="vm1.xml",
            line=_line(xml, "tx=fast"),
            domain="vm1",
            code=codes.INVALID,
            level=Level.ERROR,
            message=f"tx 'fast' (set by -global {PCI}.tx=fast in <qemu:commandline>) is not a "
            "transmit mode QEMU knows (bh or timer; QEMU falls back to bh with a warning)",
            interface=0,
            mac="52:54:00:00:00:01",
            txmode="fast",
            rule="defaults",
        )
    ]


# --- extra devices on several hosts ---------------------------------------------------------


def test_an_extra_device_is_checked_for_support_on_each_host() -> None:
    xml = _xml(extra=_args("-device", f"{PCI},tx=bh"))
    good, bad = _host("good"), _host("bad", devices={PCI: MISSING})
    found = _check(xml, hosts=(good, bad))
    line = _line(xml, "tx=bh")
    assert found == [
        Finding(
            file="vm1.xml",
            line=line,
            domain="vm1",
            code=codes.UNSUPPORTED,
            level=Level.ERROR,
            message=f"txmode 'iothread' needs the 'tx' property of {PCI}, which {EMU} on bad does "
            "not have (no 'tx' property)",
            txmode="iothread",
            rule="defaults",
            host="bad",
        )
    ]
    assert _check(xml, hosts=(good, bad), host_mode=ANY_HOST) == []
    assert [f.host for f in _check(xml, hosts=(bad, _host("worse", devices={PCI: MISSING})))] == [
        "bad",
        "worse",
    ]
    single = _check(xml, hosts=(bad,))
    assert [(f.code, f.host) for f in single] == [(codes.UNSUPPORTED, None)]
    assert f"{EMU} does not have" in single[0].message


def test_an_extra_device_that_was_not_probed_is_unknown_support() -> None:
    xml = _xml(extra=_args("-device", "virtio-net-device,tx=bh"))
    found = _check(xml, "version: 1\non_unknown: allow\n")
    assert [(f.code, f.level, f.line) for f in found] == [
        (codes.UNKNOWN_SUPPORT, Level.WARNING, _line(xml, "tx=bh"))
    ]
    assert found[0].message == (
        f"cannot tell whether virtio-net-device supports txmode 'iothread': "
        f"virtio-net-device was not probed on {EMU}"
    )


def test_an_extra_device_with_a_forbidden_tx_is_not_probed() -> None:
    xml = _xml(extra=_args("-device", f"{PCI},tx=fast"))
    found = _check(xml, "version: 1\n", hosts=(_host(devices={PCI: MISSING}),))
    assert [f.code for f in found] == [codes.INVALID]


def test_an_extra_device_without_hosts_gets_policy_findings_only() -> None:
    xml = _xml(extra=_args("-device", f"{PCI},tx=timer"))
    assert [f.code for f in _check(xml, hosts=())] == [codes.NOT_ALLOWED]
    xml = _xml(extra=_args("-device", f"{PCI},tx=bh"))
    assert _check(xml, hosts=()) == []


def test_a_rule_matching_the_domain_governs_extra_devices() -> None:
    policy = (
        "version: 1\ndefaults: {allowed: [iothread]}\n"
        "rules:\n"
        "  - name: storage\n    match: {network: 'storage*'}\n    allowed: [timer]\n"
        "  - name: vm-one\n    match: {domain: vm1, model: 'virtio*'}\n    allowed: []\n"
        "    action: audit\n"
    )
    xml = _xml(extra=_args("-device", f"{PCI},tx=bh"))
    found = _check(xml, policy)
    assert [(f.code, f.level, f.rule) for f in found] == [
        (codes.NOT_ALLOWED, Level.WARNING, "vm-one")
    ]
    assert found[0].message == (
        f"txmode 'iothread' (set by -device {PCI},tx=bh in <qemu:commandline>) is not allowed "
        "by rule 'vm-one' (allowed: none)"
    )


def test_extra_devices_are_judged_each_once_and_in_order() -> None:
    extra = _args("-device", f"{PCI},tx=timer", "-device", f"{PCI},tx=fast", "-device", PCI)
    xml = _xml(extra=extra)
    found = _check(xml, hosts=(_host("a"), _host("b")))
    assert _codes(found) == [
        (None, codes.NOT_ALLOWED, _line(xml, "tx=timer")),
        (None, codes.INVALID, _line(xml, "tx=fast")),
    ]


def test_an_extra_device_needs_no_txmode_even_where_one_is_required() -> None:
    xml = _xml(extra=_args("-device", f"{PCI},netdev=n"))
    assert _check(xml, "version: 1\ndefaults: {require: true}\n") == []


def test_the_policy_object_decides_the_passthrough_message() -> None:
    policy = Policy(passthrough="warn")
    xml = _xml(extra=_args("-nic", "user"))
    found = check_domain(parse_domain(xml.encode(), "vm1.xml"), policy, [HOST])
    assert [(f.code, f.level) for f in found] == [(codes.PASSTHROUGH_UNVERIFIABLE, Level.WARNING)]
    assert found[0].message.endswith("; policy 'passthrough: warn'")


def test_nic_records_stay_as_written() -> None:
    # The engine never changes the NIC it was given.
    domain = _domain(_nic_xml(txmode="iothread"), extra=_args("-global", f"{PCI}.tx=timer"))
    assert domain.nics[0] == Nic(
        index=0,
        line=5,
        type="user",
        mac="52:54:00:00:00:01",
        model="virtio",
        driver_name="qemu",
        txmode="iothread",
    )


def test_resolve_without_passthrough_has_no_device_for_a_nic_without_one() -> None:
    result = resolve(_bare(), HOST, [(None, None, "hostdev0"), (PCI, None, "net0")])
    assert result.nics == (None, DeviceTx(PCI, None, "", None))


def test_a_device_written_as_json_is_never_a_set_target_whatever_its_id() -> None:
    device = QemuArg(kind="device", line=2, text="-device {...}", target=PCI, ident="x", json=True)
    set_tx = QemuArg(
        kind="set", line=3, text="-set device.x.tx=timer", target="x", prop="tx", value="timer"
    )
    result = resolve(_bare(device, set_tx), HOST, [])
    assert result.extra == (DeviceTx(PCI, None, "", None),)
    assert [u.line for u in result.unprovable] == [3]


def test_the_alias_on_31_bit_s390_is_the_ccw_device() -> None:
    device = QemuArg(kind="device", line=2, text="-device virtio-net", target="virtio-net")
    domain = Domain(name="vm", file="f.xml", line=1, arch="s390", qemu_args=(device,))
    assert [d.device for d in resolve(domain, HOST, []).extra] == ["virtio-net-ccw"]


def test_a_probed_virtio_device_that_is_no_proxy_has_one_layer() -> None:
    # A virtio device (not a proxy around virtio-net-device) takes no virtio-net-device global.
    host = _host(ancestry={"virtio-net-mmio-x": ("virtio-device", "device", "object")})
    extra = _args("-device", "virtio-net-mmio-x,id=x", "-global", "virtio-net-device.tx=timer")
    _, result = _plan(_nic_xml("e1000"), extra=extra, host=host)
    assert [(d.device, d.txmode) for d in result.extra] == [("virtio-net-mmio-x", None)]
    # Its own types: the later global wins, there is no proxy to come after.
    extra = _args(
        "-device",
        "virtio-net-mmio-x,id=x",
        "-global",
        "virtio-net-mmio-x.tx=bh",
        "-global",
        "virtio-device.tx=timer",
    )
    _, result = _plan(_nic_xml("e1000"), extra=extra, host=host)
    assert [d.txmode for d in result.extra] == ["timer"]


def test_a_probed_subtype_of_the_inner_device_has_one_layer() -> None:
    chain = ("virtio-net-device", "virtio-device", "device", "object")
    host = _host(ancestry={"virtio-net-sub": chain})
    extra = _args(
        "-device",
        "virtio-net-sub",
        "-global",
        "virtio-net-sub.tx=bh",
        "-global",
        "virtio-net-device.tx=timer",
    )
    _, result = _plan(_nic_xml("e1000"), extra=extra, host=host)
    assert [d.txmode for d in result.extra] == ["timer"]


# --- through the parser ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "size", "kind"),
    [
        ("-global", 64 * 1024, "global"),
        ("-global", 64 * 1024 + 1, "unverifiable"),
        ("-device", 64 * 1024, "device"),
        ("-device", 64 * 1024 + 1, "unverifiable"),
        ("-set", 64 * 1024, "set"),
        ("-set", 64 * 1024 + 1, "unverifiable"),
    ],
)
def test_a_value_of_up_to_64_kib_is_read_and_a_longer_one_is_unverifiable(
    option: str, size: int, kind: str
) -> None:
    head = {"-global": f"{PCI}.tx=", "-device": f"{PCI},tx=", "-set": "device.x.tx="}[option]
    domain = _domain(extra=_args(option, head + "t" * (size - len(head))))
    assert [a.kind for a in domain.qemu_args] == [kind]
    if kind == "unverifiable":
        assert domain.qemu_args[0].reason == "a value over 65536 characters"
        assert (
            domain.qemu_args[0].text
            == f"{option} {head}" + "t" * (80 - len(option) - 1 - len(head)) + "..."
        )


@pytest.mark.parametrize("option", ["-name", "-fw_cfg", "-smbios", "-object"])
def test_a_long_value_of_a_harmless_option_is_still_harmless(option: str) -> None:
    assert _domain(extra=_args(option, "x" * (64 * 1024 + 1))).qemu_args == ()


def test_an_extra_device_is_no_interface_of_any_type() -> None:
    # A rule that needs an <interface type> does not govern a -device, which has none.
    policy = (
        "version: 1\ndefaults: {allowed: [iothread, timer]}\n"
        "rules:\n  - name: typed\n    match: {type: '?*'}\n    allowed: [iothread]\n"
    )
    xml = _xml(_nic_xml(txmode="timer"), extra=_args("-device", f"{PCI},tx=timer"))
    assert [(f.interface, f.code, f.rule) for f in _check(xml, policy)] == [
        (0, codes.NOT_ALLOWED, "typed")
    ]


def _device_arg(value: str) -> QemuArg:
    (arg,) = parse_commandline([("-device", 1), (value, 2)])
    return arg


@pytest.mark.parametrize(
    ("escape", "char"),
    [("b", "\b"), ("f", "\f"), ("n", "\n"), ("r", "\r"), ("t", "\t"), ("/", "/"), ("\\", "\\")],
)
@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_json_string_takes_qemus_escapes(escape: str, char: str, quote: str) -> None:
    # qobject/json-parser.c parse_string: \" \' \\ \/ \b \f \n \r \t and \uXXXX, in either quote.
    value = f"{{{quote}driver{quote}: {quote}{PCI}{quote}, {quote}tx{quote}: {quote}a\\{escape}b{quote}}}"
    arg = _device_arg(value)
    assert (arg.kind, arg.target, arg.value) == ("device", PCI, f"a{char}b")


@pytest.mark.parametrize("char", ["\x00", "\x1f"])
def test_a_control_character_in_a_json_string_is_unreadable(char: str) -> None:
    # json-lexer.c: a string takes only 0x20 and above.
    arg = _device_arg(f"{{'driver': '{PCI}', 'tx': 'ti{char}mer'}}")
    assert (arg.kind, arg.reason) == (
        "unverifiable",
        "the JSON cannot be read as QEMU reads it: control character in a string",
    )
    assert _device_arg(f"{{'driver': '{PCI}', 'tx': 'ti mer'}}").value == "ti mer"


@pytest.mark.parametrize("quote", ["X", "`", ""])
def test_only_single_and_double_quotes_make_a_json_string(quote: str) -> None:
    arg = _device_arg(f"{{{quote}driver{quote}: '{PCI}', {quote}tx{quote}: 'timer'}}")
    assert arg.kind == "unverifiable"
    assert arg.reason.startswith("the JSON cannot be read as QEMU reads it")


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("-readconfig", "-readconfig reads options from a file this tool cannot see"),
        ("-plugin", "-plugin loads native code into QEMU, which can do anything"),
        ("-nic", "-nic makes QEMU build a NIC itself, with its own defaults"),
        ("-net", "-net can make QEMU build a NIC itself, with its own defaults"),
    ],
)
def test_options_that_reach_past_the_command_line_are_unverifiable(
    option: str, reason: str
) -> None:
    xml = _xml(_nic_xml(txmode="iothread"), extra=_args(option, "x=y"))
    domain = parse_domain(xml.encode(), "vm1.xml")
    assert domain.qemu_args == (
        QemuArg(kind="unverifiable", line=_line(xml, "x=y"), text=f"{option} x=y", reason=reason),
    )
    assert [f.code for f in _check(xml)] == [codes.PASSTHROUGH_UNVERIFIABLE]
