"""check: the pure engine, with hand-built domains, policies and host capabilities."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libvirt_txmode.engine import check
from libvirt_txmode.engine import wording as codes
from libvirt_txmode.engine.check import ALL_HOSTS, ANY_HOST, check_domain
from libvirt_txmode.engine.codes import START_WILL_FAIL
from libvirt_txmode.engine.domain_xml import Domain, Nic
from libvirt_txmode.engine.model import Guest, HostCapabilities, Support, SupportState
from libvirt_txmode.engine.policy_records import Match, Policy, Rule, Settings
from libvirt_txmode.engine.wording import Finding, Level

EMU = "/usr/bin/qemu-system-x86_64"
S390 = "/usr/bin/qemu-system-s390x"
PCI = "virtio-net-pci"
SUPPORTED = Support(SupportState.SUPPORTED, "tx=<str>", "qmp")
MISSING = Support(SupportState.UNSUPPORTED, "no 'tx' property", "help")
VHOST = "vhost-net does the transmit in the kernel (set <driver name='qemu'/> to use txmode)"


def _host(
    name: str = "h1",
    devices: Optional[Mapping[str, Support]] = None,
    errors: Optional[Mapping[str, str]] = None,
) -> HostCapabilities:
    return HostCapabilities(
        name=name,
        guests=(Guest("x86_64", EMU, ("qemu", "kvm")), Guest("s390x", S390, ("qemu",))),
        devices={EMU: dict(devices if devices is not None else {PCI: SUPPORTED})},
        emulator_errors=dict(errors or {}),
    )


def _nic(index: int = 0, **kwargs: object) -> Nic:
    values: dict[str, object] = {
        "index": index,
        "line": 10 + index,
        "type": "network",
        "mac": f"52:54:00:00:00:{index:02x}",
        "network": "default",
        "model": "virtio",
        "driver_name": "qemu",
        "txmode": "iothread",
    }
    values.update(kwargs)
    return Nic(**values)  # type: ignore[arg-type]


def _domain(*nics: Nic, **kwargs: object) -> Domain:
    values: dict[str, object] = {
        "name": "vm1",
        "file": "vm1.xml",
        "line": 2,
        "type": "qemu",
        "arch": "x86_64",
        "machine": "pc-q35-7.2",
    }
    values.update(kwargs)
    return Domain(nics=nics, **values)  # type: ignore[arg-type]


def _policy(
    *,
    action: str = "enforce",
    on_unknown: str = "deny",
    rules: tuple[Rule, ...] = (),
    **defaults: object,
) -> Policy:
    return Policy(
        action=action,
        on_unknown=on_unknown,
        defaults=Settings.of(action=action, **defaults),
        rules=rules,
    )


def _expected(nic: Nic, code: str, level: Level, message: str, **kwargs: object) -> Finding:
    values: dict[str, object] = {
        "file": "vm1.xml",
        "line": nic.line,
        "domain": "vm1",
        "code": code,
        "level": level,
        "message": message,
        "interface": nic.index,
        "mac": nic.mac,
        "txmode": nic.txmode,
        "rule": "defaults",
    }
    values.update(kwargs)
    return Finding(**values)  # type: ignore[arg-type]


# --- clean cases ----------------------------------------------------------------------------------


def test_supported_allowed_txmode_is_clean() -> None:
    domain = _domain(_nic(0), _nic(1, txmode="timer"))
    assert check_domain(domain, _policy(), [_host()]) == []


def test_no_nics() -> None:
    assert check_domain(_domain(), _policy(require=True), [_host()]) == []


def test_nic_without_txmode_and_no_requirement() -> None:
    domain = _domain(_nic(txmode=None), _nic(1, txmode=None, type="bridge"))
    assert check_domain(domain, _policy(), [_host(devices={})]) == []


def test_no_hosts_means_no_support_findings() -> None:
    assert check_domain(_domain(_nic()), _policy(), []) == []


# --- each code ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "level"), [("enforce", Level.ERROR), ("audit", Level.WARNING)])
def test_unsupported(action: str, level: Level) -> None:
    nic = _nic()
    found = check_domain(_domain(nic), _policy(action=action), [_host(devices={PCI: MISSING})])
    assert found == [
        _expected(
            nic,
            codes.UNSUPPORTED,
            level,
            "txmode 'iothread' needs the 'tx' property of virtio-net-pci, which "
            "/usr/bin/qemu-system-x86_64 does not have (no 'tx' property)",
        )
    ]


@pytest.mark.parametrize(("action", "level"), [("enforce", Level.ERROR), ("audit", Level.WARNING)])
def test_not_allowed(action: str, level: Level) -> None:
    nic = _nic(txmode="timer")
    found = check_domain(_domain(nic), _policy(action=action, allowed=("iothread",)), [_host()])
    assert found == [
        _expected(
            nic,
            codes.NOT_ALLOWED,
            level,
            "txmode 'timer' is not allowed by rule 'defaults' (allowed: iothread)",
        )
    ]


def test_not_allowed_with_nothing_allowed_still_checks_support() -> None:
    nic = _nic()
    found = check_domain(_domain(nic), _policy(allowed=()), [_host(devices={PCI: MISSING})])
    assert [(f.code, f.message) for f in found] == [
        (codes.NOT_ALLOWED, "txmode 'iothread' is not allowed by rule 'defaults' (allowed: none)"),
        (
            codes.UNSUPPORTED,
            "txmode 'iothread' needs the 'tx' property of virtio-net-pci, which "
            "/usr/bin/qemu-system-x86_64 does not have (no 'tx' property)",
        ),
    ]


@pytest.mark.parametrize(("action", "level"), [("enforce", Level.ERROR), ("audit", Level.WARNING)])
def test_required(action: str, level: Level) -> None:
    nic = _nic(txmode=None)
    found = check_domain(_domain(nic), _policy(action=action, require=True), [_host()])
    assert found == [
        _expected(
            nic,
            codes.REQUIRED,
            level,
            "virtio NIC has no txmode, but rule 'defaults' requires one "
            "(add <driver txmode='iothread|timer'/>)",
        )
    ]


@pytest.mark.parametrize(
    ("nic", "required"),
    [
        (_nic(txmode=None, model="e1000"), False),
        (_nic(txmode=None, model=None), False),
        (_nic(txmode=None, type="hostdev"), False),
        (_nic(txmode=None, type="vhostuser"), False),
        (_nic(txmode=None, model="virtio-transitional"), True),
        (_nic(txmode=None, model="virtio-non-transitional", type="bridge"), True),
    ],
)
def test_required_only_for_virtio_nics_with_a_qemu_backend(nic: Nic, required: bool) -> None:
    found = check_domain(_domain(nic), _policy(require=True), [_host()])
    assert [f.code for f in found] == ([codes.REQUIRED] if required else [])


@pytest.mark.parametrize(
    ("level_name", "level"), [("error", Level.ERROR), ("warn", Level.WARNING), ("ignore", None)]
)
def test_ineffective_vhost_net(level_name: str, level: Optional[Level]) -> None:
    nic = _nic(type="bridge", driver_name=None, network=None, bridge="br0")
    found = check_domain(_domain(nic, type="kvm"), _policy(ineffective=level_name), [_host()])
    expected = (
        []
        if level is None
        else [_expected(nic, codes.INEFFECTIVE, level, f"txmode 'iothread' has no effect: {VHOST}")]
    )
    assert found == expected


def test_ineffective_level_independent_of_action() -> None:
    nic = _nic(driver_name="vhost")
    found = check_domain(
        _domain(nic, type="kvm"), _policy(action="audit", ineffective="error"), [_host()]
    )
    assert [(f.code, f.level) for f in found] == [(codes.INEFFECTIVE, Level.ERROR)]


def test_kvm_with_driver_qemu_is_effective() -> None:
    assert check_domain(_domain(_nic(), type="kvm"), _policy(ineffective="error"), [_host()]) == []


def test_tcg_is_effective() -> None:
    nic = _nic(driver_name=None, type="bridge")
    assert check_domain(_domain(nic, type="qemu"), _policy(ineffective="error"), [_host()]) == []


def test_ineffective_vhost_still_checks_policy_and_support() -> None:
    # QEMU still receives tx= and refuses an unknown property, even with vhost-net doing the work.
    nic = _nic(driver_name=None, txmode="timer")
    found = check_domain(
        _domain(nic, type="kvm"), _policy(allowed=("iothread",)), [_host(devices={PCI: MISSING})]
    )
    assert [(f.code, f.level) for f in found] == [
        (codes.NOT_ALLOWED, Level.ERROR),
        (codes.INEFFECTIVE, Level.WARNING),
        (codes.UNSUPPORTED, Level.ERROR),
    ]


def test_vhostuser() -> None:
    nic = _nic(type="vhostuser", network=None, driver_name=None)
    found = check_domain(_domain(nic, type="kvm"), _policy(), [_host(devices={PCI: MISSING})])
    assert [(f.code, f.message) for f in found] == [
        (
            codes.INEFFECTIVE,
            "txmode 'iothread' has no effect: the vhost-user backend does the transmit, not QEMU",
        ),
        (
            codes.UNSUPPORTED,
            "txmode 'iothread' needs the 'tx' property of virtio-net-pci, which "
            "/usr/bin/qemu-system-x86_64 does not have (no 'tx' property)",
        ),
    ]


@pytest.mark.parametrize("txmode", ["timer", "bogus"])
def test_hostdev_only_ineffective(txmode: str) -> None:
    nic = _nic(type="hostdev", network=None, driver_name="vfio", txmode=txmode)
    found = check_domain(_domain(nic), _policy(allowed=()), [_host(devices={PCI: MISSING})])
    assert found == [
        _expected(
            nic,
            codes.INEFFECTIVE,
            Level.WARNING,
            f"txmode '{txmode}' has no effect: libvirt ignores <driver txmode> on hostdev interfaces",
        )
    ]


MODEL_LESS = (
    "libvirt reads <driver txmode> only when <model type='virtio'/> is written; "
    "a default model is filled in after the driver is parsed"
)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("e1000", "libvirt ignores txmode on model 'e1000' (only virtio models use it)"),
        (None, MODEL_LESS),
        ("rtl8139", "libvirt ignores txmode on model 'rtl8139' (only virtio models use it)"),
    ],
)
@pytest.mark.parametrize("txmode", ["timer", "iothread", "bogus"])
def test_non_virtio_only_ineffective(model: Optional[str], reason: str, txmode: str) -> None:
    # libvirt drops txmode on non-virtio NICs without validating it, so no txmode-invalid either.
    nic = _nic(model=model, txmode=txmode)
    found = check_domain(
        _domain(nic, type="kvm"), _policy(allowed=()), [_host(devices={PCI: MISSING})]
    )
    assert found == [
        _expected(
            nic,
            codes.INEFFECTIVE,
            Level.WARNING,
            f"txmode '{txmode}' has no effect: {reason}",
        )
    ]


def test_non_virtio_ignored_ineffective_gives_nothing() -> None:
    nic = _nic(model="e1000", txmode="timer")
    assert check_domain(_domain(nic), _policy(ineffective="ignore"), [_host()]) == []


@pytest.mark.parametrize(("on_unknown", "level"), [("deny", Level.ERROR), ("allow", Level.WARNING)])
@pytest.mark.parametrize("action", ["enforce", "audit"])
def test_unknown_support(on_unknown: str, level: Level, action: str) -> None:
    nic = _nic()
    host = _host(errors={EMU: "emulator is not trusted by the policy"})
    found = check_domain(_domain(nic), _policy(on_unknown=on_unknown, action=action), [host])
    assert found == [
        _expected(
            nic,
            codes.UNKNOWN_SUPPORT,
            level,
            "cannot tell whether virtio-net-pci supports txmode 'iothread': "
            "emulator is not trusted by the policy",
        )
    ]


@pytest.mark.parametrize(
    ("host", "domain_kwargs", "detail"),
    [
        (_host(devices={}), {}, "virtio-net-pci was not probed on /usr/bin/qemu-system-x86_64"),
        (
            _host(),
            {"emulator": "/opt/qemu/bin/qemu-system-x86_64"},
            "emulator /opt/qemu/bin/qemu-system-x86_64 is not known on h1",
        ),
        (_host(), {"arch": "ppc64le"}, "no emulator for arch ppc64le on h1"),
        (
            _host(devices={PCI: Support(SupportState.UNKNOWN, "probe timed out after 5s")}),
            {},
            "probe timed out after 5s",
        ),
    ],
)
def test_unknown_support_details(
    host: HostCapabilities, domain_kwargs: dict[str, str], detail: str
) -> None:
    found = check_domain(_domain(_nic(), **domain_kwargs), _policy(), [host])
    assert [(f.code, f.message) for f in found] == [
        (
            codes.UNKNOWN_SUPPORT,
            f"cannot tell whether virtio-net-pci supports txmode 'iothread': {detail}",
        )
    ]


@pytest.mark.parametrize("txmode", ["bogus", "", "IOTHREAD", " timer", "bh"])
@pytest.mark.parametrize("action", ["enforce", "audit"])
def test_invalid(txmode: str, action: str) -> None:
    nic = _nic(txmode=txmode)
    found = check_domain(
        _domain(nic), _policy(action=action, allowed=()), [_host(devices={PCI: MISSING})]
    )
    assert found == [
        _expected(
            nic,
            codes.INVALID,
            Level.ERROR,
            f"txmode '{txmode}' is not a valid value (libvirt accepts: iothread, timer)",
        )
    ]


def test_invalid_on_vhostuser() -> None:
    nic = _nic(type="vhostuser", txmode="fast")
    found = check_domain(_domain(nic), _policy(), [_host()])
    assert [f.code for f in found] == [codes.INVALID]


# --- devices and transports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "device"),
    [
        ("virtio", "virtio-net-pci"),
        ("virtio-transitional", "virtio-net-pci-transitional"),
        ("virtio-non-transitional", "virtio-net-pci-non-transitional"),
    ],
)
def test_support_is_per_device(model: str, device: str) -> None:
    nic = _nic(model=model)
    host = _host(devices={device: MISSING, **{d: SUPPORTED for d in (PCI,) if d != device}})
    found = check_domain(_domain(nic), _policy(), [host])
    assert [f.message for f in found] == [
        f"txmode 'iothread' needs the 'tx' property of {device}, which "
        "/usr/bin/qemu-system-x86_64 does not have (no 'tx' property)"
    ]


def test_ccw_on_x86_host() -> None:
    nic = _nic(address_type="ccw")
    host = _host(
        devices={
            PCI: SUPPORTED,
            "virtio-net-ccw": Support(SupportState.UNSUPPORTED, "device not found"),
        }
    )
    found = check_domain(_domain(nic), _policy(), [host])
    assert [f.message for f in found] == [
        "txmode 'iothread' needs the 'tx' property of virtio-net-ccw, which "
        "/usr/bin/qemu-system-x86_64 does not have (device not found)"
    ]


def test_s390x_uses_its_own_emulator() -> None:
    host = HostCapabilities(
        name="z1",
        guests=(Guest("s390x", S390, ("qemu",)),),
        devices={S390: {"virtio-net-ccw": SUPPORTED}},
    )
    domain = _domain(_nic(), arch="s390x", machine="s390-ccw-virtio")
    assert check_domain(domain, _policy(), [host]) == []


# --- rules ----------------------------------------------------------------------------------------


def test_rule_name_in_findings() -> None:
    rule = Rule(
        name="storage",
        line=3,
        match=Match(network="storage*"),
        overrides=(("action", "audit"), ("allowed", ("iothread",))),
    )
    policy = _policy(rules=(rule,), require=True)
    storage = _nic(0, network="storage-a", txmode="timer")
    other = _nic(1, txmode=None)
    found = check_domain(_domain(storage, other), policy, [_host()])
    assert found == [
        _expected(
            storage,
            codes.NOT_ALLOWED,
            Level.WARNING,
            "txmode 'timer' is not allowed by rule 'storage' (allowed: iothread)",
            rule="storage",
        ),
        _expected(
            other,
            codes.REQUIRED,
            Level.ERROR,
            "virtio NIC has no txmode, but rule 'defaults' requires one "
            "(add <driver txmode='iothread|timer'/>)",
        ),
    ]


def test_rule_name_on_support_findings() -> None:
    rule = Rule(name="all", line=3, match=Match(), overrides=())
    found = check_domain(_domain(_nic()), _policy(rules=(rule,)), [_host(devices={PCI: MISSING})])
    assert [(f.code, f.rule) for f in found] == [(codes.UNSUPPORTED, "all")]


def test_required_by_rule_lists_its_allowed() -> None:
    rule = Rule(
        name="db",
        line=3,
        match=Match(domain="db-*"),
        overrides=(("allowed", ("timer",)), ("require", True)),
    )
    found = check_domain(_domain(_nic(txmode=None), name="db-1"), _policy(rules=(rule,)), [_host()])
    assert [f.message for f in found] == [
        "virtio NIC has no txmode, but rule 'db' requires one (add <driver txmode='timer'/>)"
    ]


# --- several hosts --------------------------------------------------------------------------------


def _hosts() -> list[HostCapabilities]:
    return [
        _host("new", devices={PCI: SUPPORTED}),
        _host("old", devices={PCI: MISSING}),
        _host("odd", errors={EMU: "probe failed: exit status 1"}),
    ]


def test_all_hosts_reports_each_host() -> None:
    nic = _nic()
    found = check_domain(_domain(nic), _policy(), _hosts(), ALL_HOSTS)
    assert found == [
        _expected(
            nic,
            codes.UNSUPPORTED,
            Level.ERROR,
            "txmode 'iothread' needs the 'tx' property of virtio-net-pci, which "
            "/usr/bin/qemu-system-x86_64 on old does not have (no 'tx' property)",
            host="old",
        ),
        _expected(
            nic,
            codes.UNKNOWN_SUPPORT,
            Level.ERROR,
            "cannot tell whether virtio-net-pci on odd supports txmode 'iothread': "
            "probe failed: exit status 1",
            host="odd",
        ),
    ]


def test_all_hosts_is_the_default() -> None:
    assert check_domain(_domain(_nic()), _policy(), _hosts()) == check_domain(
        _domain(_nic()), _policy(), _hosts(), ALL_HOSTS
    )


def test_any_host_one_supporting_host_is_enough() -> None:
    assert check_domain(_domain(_nic()), _policy(), _hosts(), ANY_HOST) == []


def test_any_host_without_support_reports_every_host() -> None:
    hosts = _hosts()[1:]
    found = check_domain(_domain(_nic()), _policy(on_unknown="allow"), hosts, ANY_HOST)
    assert [(f.code, f.level, f.host) for f in found] == [
        (codes.UNSUPPORTED, Level.ERROR, "old"),
        (codes.UNKNOWN_SUPPORT, Level.WARNING, "odd"),
    ]


def test_any_host_does_not_hide_policy_findings() -> None:
    found = check_domain(
        _domain(_nic(txmode="timer")), _policy(allowed=("iothread",)), _hosts(), ANY_HOST
    )
    assert [(f.code, f.host) for f in found] == [(codes.NOT_ALLOWED, None)]


def test_single_host_findings_have_no_host() -> None:
    found = check_domain(_domain(_nic()), _policy(), [_host("only", devices={PCI: MISSING})])
    assert [f.host for f in found] == [None]
    assert " on only" not in found[0].message


# --- property: never raises, findings describe real NICs, levels follow the policy ---------------

_TEXT = st.one_of(st.none(), st.sampled_from(["a", "storage-1", "br0", "db-1", ""]))
_NICS = st.builds(
    Nic,
    index=st.just(0),
    line=st.integers(1, 500),
    type=st.sampled_from(
        ["network", "bridge", "direct", "ethernet", "user", "vhostuser", "hostdev", ""]
    ),
    mac=st.one_of(st.none(), st.sampled_from(["52:54:00:00:00:01", "52:54:00:AB:CD:EF", "x\n"])),
    network=_TEXT,
    bridge=_TEXT,
    dev=_TEXT,
    model=st.one_of(
        st.none(),
        st.sampled_from(
            ["virtio", "virtio-transitional", "virtio-non-transitional", "e1000", "VIRTIO"]
        ),
    ),
    driver_name=st.one_of(st.none(), st.sampled_from(["qemu", "vhost", "vfio"])),
    txmode=st.one_of(
        st.none(), st.sampled_from(["iothread", "timer", "", "bogus"]), st.text(max_size=5)
    ),
    address_type=st.one_of(st.none(), st.sampled_from(["pci", "ccw", "virtio-mmio", "spapr-vio"])),
)
_SETTINGS = st.builds(
    Settings.of,
    allowed=st.lists(st.sampled_from(["iothread", "timer"]), max_size=2, unique=True).map(tuple),
    require=st.booleans(),
    ineffective=st.sampled_from(["error", "warn", "ignore"]),
    action=st.sampled_from(["enforce", "audit"]),
)
_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "allowed": st.lists(st.sampled_from(["iothread", "timer"]), max_size=2).map(tuple),
        "require": st.booleans(),
        "ineffective": st.sampled_from(["error", "warn", "ignore"]),
        "action": st.sampled_from(["enforce", "audit"]),
    },
)
_RULES = st.lists(
    st.builds(
        lambda name, match, overrides: Rule(name, 1, match, tuple(sorted(overrides.items()))),
        st.sampled_from(["r1", "r2", "r3"]),
        st.builds(
            Match,
            domain=st.one_of(st.none(), st.sampled_from(["db-*", "*"])),
            network=st.one_of(st.none(), st.sampled_from(["storage*", "a"])),
            type=st.one_of(st.none(), st.sampled_from(["bridge", "network"])),
            mac=st.one_of(st.none(), st.just("52:54:00:ab:*")),
        ),
        _OVERRIDES,
    ),
    max_size=3,
)
_POLICIES = st.builds(
    lambda defaults, rules, on_unknown: Policy(
        defaults=defaults, rules=tuple(rules), on_unknown=on_unknown
    ),
    _SETTINGS,
    _RULES,
    st.sampled_from(["deny", "allow"]),
)
_DEVICES = [
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
    "virtio-net-ccw",
    "virtio-net-device",
]
_SUPPORT = st.sampled_from([SUPPORTED, MISSING, Support(SupportState.UNKNOWN, "timed out")])
_HOSTS = st.lists(
    st.builds(
        lambda name, devices, broken: HostCapabilities(
            name=name,
            guests=(Guest("x86_64", EMU, ("kvm", "qemu")), Guest("s390x", S390, ("qemu",))),
            devices={EMU: devices, S390: devices},
            emulator_errors={S390: "not trusted"} if broken else {},
        ),
        st.sampled_from(["h1", "h2", "h3"]),
        st.dictionaries(st.sampled_from(_DEVICES), _SUPPORT),
        st.booleans(),
    ),
    max_size=3,
)
_DOMAINS = st.builds(
    lambda nics, **kw: Domain(
        nics=tuple(dataclasses.replace(n, index=i) for i, n in enumerate(nics)), **kw
    ),
    st.lists(_NICS, max_size=4),
    name=st.sampled_from(["vm", "db-1", "x\x1b"]),
    file=st.just("f.xml"),
    line=st.just(1),
    type=st.sampled_from(["kvm", "qemu", "xen"]),
    arch=st.sampled_from(["x86_64", "s390x", "aarch64", "ppc64le"]),
    machine=st.one_of(st.none(), st.sampled_from(["virt", "pc", "s390-ccw-virtio"])),
    emulator=st.one_of(st.none(), st.just(EMU), st.just("/opt/other")),
)


@settings(max_examples=200, deadline=None)
@given(
    domain=_DOMAINS,
    policy=_POLICIES,
    hosts=_HOSTS,
    host_mode=st.sampled_from([ALL_HOSTS, ANY_HOST]),
)
def test_check_domain_properties(
    domain: Domain, policy: Policy, hosts: list[HostCapabilities], host_mode: str
) -> None:
    found = check_domain(domain, policy, hosts, host_mode)
    for finding in found:
        assert finding.interface is not None
        nic = domain.nics[finding.interface]
        assert (finding.mac, finding.line) == (nic.mac, nic.line)
        # A required txmode is missing where QEMU looks for it (a written one may be dropped).
        assert finding.txmode == (None if finding.code == codes.REQUIRED else nic.txmode)
        assert (finding.file, finding.domain) == (domain.file, domain.name)
        assert finding.code in codes.CODES
        assert finding.code != codes.XML_INVALID
        # Which rule and which level: the literal tables above (test_*_level*) say; here only
        # that every finding names a rule the policy has.
        assert finding.rule in {rule.name for rule in policy.rules} | {"defaults"}
        if finding.code in (codes.INVALID, codes.XML_INVALID):
            assert finding.level is Level.ERROR
        if finding.code in (codes.UNSUPPORTED, codes.UNKNOWN_SUPPORT, START_WILL_FAIL):
            assert (finding.host is not None) == (len(hosts) > 1)
            assert finding.host is None or finding.host in {h.name for h in hosts}
        else:
            assert finding.host is None
        # A NIC that keeps the domain from starting is reported whether or not it has a txmode.
        if finding.code not in (codes.REQUIRED, START_WILL_FAIL):
            assert nic.txmode is not None


# --- host modes as the CLI names them, extra devices, passthrough --------------------------------


def test_host_modes_are_the_clis_words() -> None:
    # validate-domain --any-host passes "any"; its default is "all".
    hosts = _hosts()
    assert check_domain(_domain(_nic()), _policy(), hosts, "any") == []
    assert [f.host for f in check_domain(_domain(_nic()), _policy(), hosts, "all")] == [
        "old",
        "odd",
    ]


def test_required_not_for_vdpa_whose_device_does_the_transmit() -> None:
    nic = _nic(txmode=None, type="vdpa", model=None, network=None)
    assert check_domain(_domain(nic), _policy(require=True), [_host()]) == []


def test_required_with_nothing_allowed_says_none() -> None:
    nic = _nic(txmode=None)
    found = check_domain(_domain(nic), _policy(require=True, allowed=()), [_host()])
    assert [f.message for f in found] == [
        "virtio NIC has no txmode, but rule 'defaults' requires one (add <driver txmode='none'/>)"
    ]


def test_not_allowed_lists_every_allowed_txmode() -> None:
    nic = _nic(txmode="timer")
    rule = Rule(name="both", line=3, match=Match(), overrides=(("allowed", ("iothread",)),))
    found = check_domain(_domain(nic), _policy(rules=(rule,)), [_host()])
    assert [f.message for f in found] == [
        "txmode 'timer' is not allowed by rule 'both' (allowed: iothread)"
    ]
    found = check_domain(_domain(_nic(txmode="fast")), _policy(allowed=()), [_host()])
    assert [f.code for f in found] == [codes.INVALID]


def test_a_nic_whose_device_is_not_probed_for_an_invalid_txmode() -> None:
    # An invalid txmode is reported as such; the host is not asked about it.
    found = check_domain(_domain(_nic(txmode="fast")), _policy(), [_host(devices={PCI: MISSING})])
    assert [f.code for f in found] == [codes.INVALID]


def test_not_allowed_lists_the_policys_allowed_list_as_written() -> None:
    found = check_domain(
        _domain(_nic(txmode="timer")), _policy(allowed=("iothread", "iothread")), [_host()]
    )
    assert [f.message for f in found] == [
        "txmode 'timer' is not allowed by rule 'defaults' (allowed: iothread, iothread)"
    ]


# --- the check lists -----------------------------------------------------------------------------


def test_a_domain_check_sees_every_nic_with_its_governing_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[tuple[int, Optional[str], Optional[str], tuple[str, ...]]]] = []

    def spy(whole: check.DomainView) -> list[Finding]:
        seen.append(
            [
                (view.nic.index, view.settings.rule, view.label, view.settings.allowed)
                for views in whole.nics
                for view in views
            ]
        )
        return []

    monkeypatch.setattr(check, "DOMAIN_CHECKS", (*check.DOMAIN_CHECKS, spy))
    rule = Rule(
        name="storage",
        line=3,
        match=Match(network="storage*"),
        overrides=(("allowed", ("iothread",)),),
    )
    domain = _domain(_nic(0, network="storage-1"), _nic(1))
    assert check_domain(domain, _policy(rules=(rule,)), [_host("a"), _host("b")]) == []
    both = ("iothread", "timer")
    assert seen == [
        [
            (0, "storage", "a", ("iothread",)),
            (0, "storage", "b", ("iothread",)),
            (1, None, "a", both),
            (1, None, "b", both),
        ]
    ]


def test_each_nic_rule_is_resolved_once_for_all_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    resolve = Policy.settings_for

    def counting(policy: Policy, domain: Domain, nic: Nic) -> Settings:
        asked.append(nic.index)
        return resolve(policy, domain, nic)

    monkeypatch.setattr(Policy, "settings_for", counting)
    domain = _domain(_nic(0), _nic(1, txmode="timer"))
    check_domain(domain, _policy(), [_host("a"), _host("b"), _host("c")])
    assert asked == [0, 1]
