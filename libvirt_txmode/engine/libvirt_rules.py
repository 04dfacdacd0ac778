"""What libvirt hands QEMU for each NIC: libvirt's post-parse defaults and its device choice.

Pure functions of (domain as written, host capabilities). The same answer must come out whether
the domain is the XML a user wrote (``validate-domain`` in CI) or the XML libvirt formats after
applying its defaults (the hook's stdin), so every default libvirt fills in is applied here too.
Followed: libvirt 10.7 (``src/conf/domain_conf.c``, ``src/qemu/qemu_postparse.c``,
``qemu_domain_address.c``, ``qemu_command.c``, ``qemu_alias.c``); where another libvirt differs,
the rule takes the host's libvirt version (``HostCapabilities.libvirt_version``; unknown: the
newest behaviour known here). ``docs/libvirt-facts.md`` lists each fact with its source and the
versions it was checked on.

A NIC may also keep the domain from starting at all (``NicPlan.refused``): then no tx is
predicted for it, the finding says why.

One module past 400 lines: libvirt's post-parse defaults and device choice, one function
per libvirt rule, read together against libvirt's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..common.records import SLOTS
from .model import QEMU_TX, VIRTIO_MODELS, Domain, HostCapabilities, Nic, libvirt_version_text
from .passthrough import DRIVER_ROUTE, DeviceTx, Passthrough, resolve

# The arches libvirt's ARCH_IS_ARM / ARCH_IS_RISCV / ARCH_IS_S390 macros cover.
_ARM = ("armv6l", "armv7l", "armv7b", "aarch64")
_RISCV = ("riscv32", "riscv64")
_S390 = ("s390", "s390x")
# Interface types whose virtio NIC gets a vhost-net backend on a KVM domain
# (qemuBuildInterfaceConnect calls qemuInterfaceOpenVhostNet for these); others never use it.
_VHOST_TYPES = ("network", "bridge", "direct", "ethernet")
_X86 = ("i686", "x86_64")
# Arches whose default machine libvirt 9.3.0 made 'virt' (preferredMachines in
# qemu_capabilities.c: armv6l stays integratorcp).
_VIRT_DEFAULT_ARCHES = ("armv7l", "armv7b", "aarch64", "riscv32", "riscv64")

# The libvirt versions (major * 1,000,000 + minor * 1,000 + micro) where a rule changed.
VIRT_DEFAULT_MACHINE = 9_003_000  # 9.3.0: Arm and RISC-V domains default to the 'virt' machine
VHOSTUSER_DEFAULT_VIRTIO = 11_001_000  # 11.1.0: a model-less vhostuser NIC gets virtio


def libvirt_has(version: Optional[int], since: int) -> bool:
    """Whether a libvirt of ``version`` behaves as libvirt ``since`` and later do. An unknown
    version (a snapshot from before the version was recorded) counts as the newest libvirt,
    the one these rules follow."""
    return version is None or version >= since


@dataclass(frozen=True, **SLOTS)
class NicPlan:
    """One NIC as libvirt realizes it on one host."""

    model: Optional[str]  # after libvirt's default; canonical lower case for libvirt's own models
    device: Optional[str]  # QEMU -device driver; None when libvirt builds no virtio-net device
    alias: str  # the QEMU device id (netN, hostdevN, or the user's ua-* alias)
    txmode: Optional[str]  # the txmode that reaches the device: iothread, timer, other tx text
    route: str  # where that txmode was set ("<driver txmode>", "<qemu:override> ...", ...)
    dropped: Optional[str]  # why a written <driver txmode> never reaches QEMU
    unused: Optional[str]  # why QEMU has the tx property set but does not use it
    line: Optional[int] = None  # where the route stands; None: the NIC's own line
    refused: Optional[str] = None  # why libvirt or QEMU refuses to start the domain for this NIC

    @property
    def virtio_net(self) -> bool:
        return self.device is not None and self.device.startswith("virtio-net")


def canonical_model(model: Optional[str]) -> Optional[str]:
    """libvirt matches its own model names case-insensitively and formats them in lower case."""
    if model is None:
        return None
    lowered = model.lower()
    return lowered if lowered in VIRTIO_MODELS or lowered in _KNOWN_MODELS else model


# virDomainNetModel's names (libvirt 10.7); any other string is passed to QEMU as the device name.
_KNOWN_MODELS = frozenset(
    (
        "netfront", "rtl8139", "e1000", "e1000e", "igb", "usb-net", "spapr-vlan", "lan9118",
        "smc91c111", "vlance", "vmxnet", "vmxnet2", "vmxnet3", "am79c970a", "am79c973",
        "82540em", "82545em", "82543gc",
    )
)  # fmt: skip


def is_virt(machine: Optional[str]) -> bool:
    # qemuDomainIsARMVirt / qemuDomainIsRISCVVirt / qemuDomainIsLoongArchVirt: "virt" or "virt-*"
    return machine is not None and (machine == "virt" or machine.startswith("virt-"))


def guest_machine(domain: Domain, host: HostCapabilities) -> Optional[str]:
    """The machine type: the domain's, else the default libvirt records for the arch's emulator
    (its capabilities list its preferred machine first), else libvirt's preferred machine where
    this code knows it: 'virt' for Arm and RISC-V from libvirt 9.3.0 on."""
    if domain.machine:
        return domain.machine
    guest = host.guest(domain)
    if guest is not None and guest.machine:
        return guest.machine
    if host.guest_arch(domain) in _VIRT_DEFAULT_ARCHES and libvirt_has(
        host.libvirt_version, VIRT_DEFAULT_MACHINE
    ):
        return "virt"
    return None


def needs_libvirt_version(domain: Domain) -> bool:
    """Whether a rule for this domain depends on the libvirt version: a model-less vhostuser NIC,
    or a default machine (the hook's XML has one; a domain as written may not)."""
    return domain.machine is None or any(
        nic.type == "vhostuser" and nic.model is None for nic in domain.nics
    )


def default_model(
    nic_type: str,
    arch: Optional[str],
    machine: Optional[str],
    libvirt_version: Optional[int] = None,
) -> Optional[str]:
    """The model libvirt fills in when <model> is absent (qemuDomainDefaultNetModel; vDPA and,
    from 11.1.0, vhostuser: qemuDomainDeviceNetDefPostParse). None for hostdev NICs, which have
    none. An older libvirt gives a vhostuser NIC the arch's default, which it then refuses."""
    if nic_type == "hostdev":
        return None
    if nic_type == "vdpa" or (
        nic_type == "vhostuser" and libvirt_has(libvirt_version, VHOSTUSER_DEFAULT_VIRTIO)
    ):
        return "virtio"
    if arch in _S390:
        return "virtio"
    if (arch in _RISCV or arch == "loongarch64") and is_virt(machine):
        return "virtio"
    if arch in _ARM:
        if machine == "versatilepb":
            return "smc91c111"
        return "virtio" if is_virt(machine) else "lan9118"
    # Elsewhere the first of rtl8139, e1000, virtio that the QEMU binary has. Every QEMU build we
    # know of for these arches has rtl8139 or e1000, so the default is never virtio there.
    return "rtl8139"


def virtio_transport(nic: Nic, domain: Domain, arch: Optional[str], machine: Optional[str]) -> str:
    """The address type libvirt gives a virtio NIC that names none (qemuDomainAssignAddresses)."""
    if nic.address_type:
        return nic.address_type
    if arch in _S390:
        return "ccw"  # qemuDomainAssignS390Addresses: every virtio device without an address
    if arch in _ARM or arch in _RISCV:
        # qemuDomainAssignVirtioMMIOAddresses: only vexpress-* and virt machines default to
        # virtio-mmio, and virt ones only while they have no PCIe root (libvirt adds one when QEMU
        # has gpex, which every supported QEMU does) or already have a virtio-mmio device.
        if machine is not None and machine.startswith("vexpress-"):
            return "virtio-mmio"
        if is_virt(machine) and domain.has_mmio_devices:
            return "virtio-mmio"
    return "pci"


def virtio_device(model: str, transport: str) -> str:
    """qemuBuildVirtioDevGetConfig: the transport's suffix, plus the PCI variant of the model."""
    if transport == "ccw":
        return "virtio-net-ccw"
    if transport == "virtio-mmio":
        return "virtio-net-device"
    if transport == "virtio-s390":
        return "virtio-net-s390"
    if model == "virtio-transitional":
        return "virtio-net-pci-transitional"
    if model == "virtio-non-transitional":
        return "virtio-net-pci-non-transitional"
    return "virtio-net-pci"


def actual_type(nic: Nic, host: HostCapabilities) -> str:
    """A network NIC takes its network's type; of those only a hostdev pool changes the device."""
    if nic.type == "network" and nic.network and host.networks.get(nic.network) == "hostdev":
        return "hostdev"
    return nic.type


def aliases(domain: Domain, host: HostCapabilities) -> list[str]:
    """QEMU ids in libvirt's order (qemuAssignDeviceNetAlias): a user alias (ua-*) is kept;
    hostdev NICs are hostdevN and take no netN; the others are net0, net1, ... in document order."""
    result: list[str] = []
    net = hostdev = 0
    for nic in domain.nics:
        if nic.alias and nic.alias.startswith("ua-"):
            result.append(nic.alias)
        elif actual_type(nic, host) == "hostdev":
            result.append(f"hostdev{hostdev}")
            hostdev += 1
        else:
            result.append(f"net{net}")
            net += 1
    return result


def plan_domain(domain: Domain, host: HostCapabilities) -> list[NicPlan]:
    """Every NIC's plan; the domain's arch, machine and aliases are worked out once."""
    return plan_domain_passthrough(domain, host)[0]


def plan_domain_passthrough(
    domain: Domain, host: HostCapabilities
) -> tuple[list[NicPlan], Passthrough]:
    """``plan_domain``, and what the domain's passthrough adds and leaves unprovable."""
    arch = host.guest_arch(domain)
    machine = guest_machine(domain, host)
    built = [
        _libvirt_device(domain, nic, host, alias, (arch, machine))
        for nic, alias in zip(domain.nics, aliases(domain, host))
    ]
    result = resolve(domain, host, [(b.device, b.tx, b.alias) for b in built])
    plans = [_plan(domain, b, found, host) for b, found in zip(built, result.nics)]
    return plans, result


def plan_nic(
    domain: Domain,
    nic: Nic,
    host: HostCapabilities,
    alias: str,
    *,
    where: Optional[tuple[Optional[str], Optional[str]]] = None,
) -> NicPlan:
    """One NIC on one host. ``where`` is the domain's (arch, machine) there, when known."""
    arch, machine = (
        where if where is not None else (host.guest_arch(domain), guest_machine(domain, host))
    )
    built = _libvirt_device(domain, nic, host, alias, (arch, machine))
    found = resolve(domain, host, [(built.device, built.tx, alias)]).nics[0]
    return _plan(domain, built, found, host)


@dataclass(frozen=True, **SLOTS)
class _LibvirtDevice:
    """What libvirt itself builds for a NIC, before any passthrough."""

    nic: Nic
    alias: str
    model: Optional[str]
    kind: str
    device: Optional[str]
    tx: Optional[str]  # QEMU's word
    dropped: Optional[str]
    refused: Optional[str] = None


def _libvirt_device(
    domain: Domain,
    nic: Nic,
    host: HostCapabilities,
    alias: str,
    where: tuple[Optional[str], Optional[str]],
) -> _LibvirtDevice:
    arch, machine = where
    written = canonical_model(nic.model)
    model = (
        written
        if written is not None
        else default_model(nic.type, arch, machine, host.libvirt_version)
    )
    kind = actual_type(nic, host)

    dropped: Optional[str] = None
    txmode = nic.txmode
    if txmode is not None:
        dropped = _dropped(nic, written, kind)
        if dropped is not None:
            txmode = None

    device: Optional[str]
    transport: Optional[str] = None
    if kind == "hostdev" or model is None:
        device = "vfio-pci" if kind == "hostdev" else None
    elif model in VIRTIO_MODELS:
        transport = virtio_transport(nic, domain, arch, machine)
        device = virtio_device(model, transport)
    else:
        device = model
    refused = _refused(nic, written, model, host.libvirt_version) or _no_bus(
        transport, arch, machine
    )
    if refused is not None or device is None or not device.startswith("virtio-net"):
        # Only virtio-net has a tx property; libvirt never emits one for other devices.
        txmode = None
    # qemuBuildNicDevProps: iothread -> tx=bh, timer -> tx=timer; other text as written.
    tx = QEMU_TX.get(txmode, txmode) if txmode is not None else None
    return _LibvirtDevice(nic, alias, model, kind, device, tx, dropped, refused)


def _refused(
    nic: Nic, written: Optional[str], model: Optional[str], version: Optional[int]
) -> Optional[str]:
    """Why libvirt refuses the NIC when the domain is defined or started (qemu_validate.c,
    qemuValidateDomainDeviceDefNetwork: vhostuser needs a virtio model, whatever the version)."""
    if nic.type != "vhostuser" or model in VIRTIO_MODELS:
        return None
    why = (
        "libvirt refuses <interface type='vhostuser'> without a virtio model ('vhostuser "
        "requires the virtio-net* frontend')"
    )
    if written is None and version is not None:
        why += (
            f"; libvirt {libvirt_version_text(version)} gives a model-less vhostuser NIC the model "
            f"'{model}' (virtio only from {libvirt_version_text(VHOSTUSER_DEFAULT_VIRTIO)})"
        )
    return why


def _no_bus(transport: Optional[str], arch: Optional[str], machine: Optional[str]) -> Optional[str]:
    """A virtio-mmio NIC on an x86 machine without virtio-mmio transports: only microvm has
    them, so QEMU exits while it creates the device."""
    if transport != "virtio-mmio" or arch not in _X86:
        return None
    if machine is not None and machine.startswith("microvm"):
        return None
    return (
        f"<address type='virtio-mmio'/> on machine '{machine or 'pc'}', which has no virtio-mmio "
        "bus: QEMU exits with 'No 'virtio-bus' bus found for device 'virtio-net-device''"
    )


def _plan(
    domain: Domain, built: _LibvirtDevice, found: Optional[DeviceTx], host: HostCapabilities
) -> NicPlan:
    device = found.device if found is not None else built.device
    txmode = found.txmode if found is not None else None
    if txmode is not None and found is not None and found.route == DRIVER_ROUTE:
        txmode = built.nic.txmode  # libvirt's own word, even one libvirt would refuse
    if built.refused is not None:
        txmode = None  # the domain never starts: no device gets a tx
    return NicPlan(
        model=built.model,
        device=device,
        alias=built.alias,
        txmode=txmode,
        route=found.route if found is not None and found.route else DRIVER_ROUTE,
        dropped=built.dropped,
        unused=(
            _unused(domain, built.nic, built.kind, host)
            if plan_is_virtio(device) and built.refused is None
            else None
        ),
        line=found.line if found is not None else None,
        refused=built.refused,
    )


def plan_is_virtio(device: Optional[str]) -> bool:
    return device is not None and device.startswith("virtio")


def _dropped(nic: Nic, written_model: Optional[str], kind: str) -> Optional[str]:
    # virDomainNetDefParseXMLDriver runs only for virtio models known at parse time and never for
    # type='hostdev': libvirt stores no txmode at all otherwise (it is gone from the formatted XML).
    if nic.type == "hostdev":
        return "libvirt ignores <driver txmode> on hostdev interfaces"
    if written_model is None:
        return (
            "libvirt reads <driver txmode> only when <model type='virtio'/> is written; "
            "a default model is filled in after the driver is parsed"
        )
    if written_model not in VIRTIO_MODELS:
        return f"libvirt ignores txmode on model '{written_model}' (only virtio models use it)"
    if kind == "hostdev":
        return (
            f"network '{nic.network}' is a hostdev pool: the NIC becomes a vfio-pci device, "
            "which has no tx"
        )
    return None


def _unused(domain: Domain, nic: Nic, kind: str, host: HostCapabilities) -> Optional[str]:
    if kind == "vhostuser":
        return "the vhost-user backend does the transmit, not QEMU"
    if kind == "vdpa":
        return "the vhost-vdpa backend does the transmit in the device, not QEMU"
    if domain.type == "kvm" and kind in _VHOST_TYPES and nic.driver_name != "qemu":
        if host.vhost_net is False and nic.driver_name != "vhost":
            return None  # libvirt falls back to QEMU's own backend without /dev/vhost-net
        return "vhost-net does the transmit in the kernel (set <driver name='qemu'/> to use txmode)"
    return None


# virQEMUCapsArchToString: the qemu-system-* name of an arch where it differs from libvirt's.
_BINARY_ARCH = {
    "i686": "i386",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv7b": "arm",
    "ppc64le": "ppc64",
    "mips64el": "mips64el",
}


def emulator_binary(arch: str) -> str:
    """The binary libvirt looks for on its search path when a domain names no <emulator>."""
    return f"qemu-system-{_BINARY_ARCH.get(arch, arch)}"
