"""What ``<qemu:commandline>`` and ``<qemu:override>`` do to each virtio-net device's ``tx``.

The semantic half of the gate (``qemu_args.py`` is the syntax half): given the devices libvirt
builds for a domain's NICs on one host, apply what the domain passes to QEMU past libvirt, with
QEMU's own precedence, and say what is left that nobody can compute:

- ``<qemu:override>`` rewrites a libvirt device's -device properties before QEMU sees them
  (``qemuBuildDeviceCommandlineHandleOverrides``): a ``driver`` swap makes another device, a
  ``remove`` of ``tx`` leaves the device to the globals.
- ``-set device.ID.PROP`` edits a QemuOpts device defined before it. libvirt passes its own
  devices as JSON when the QEMU supports that, and then no ``-set`` can find them: QEMU exits.
- A device's own ``tx`` (libvirt's, an override's, a ``-set``'s) beats every ``-global``.
- A ``-global TYPE.tx`` applies to every object whose type descends from TYPE or implements it
  (``object_apply_global_props``: ``object_dynamic_cast``), in command-line order, the last one
  winning. A virtio-net PCI or CCW device is a proxy around a ``virtio-net-device``: the inner
  device takes its globals first (while the proxy is being made), the proxy's globals then set
  ``tx`` through its alias, so a global that reaches the proxy beats one that reaches only the
  inner device, whatever their order.

Pure: no I/O. The type ancestry comes from the host's probe (``HostCapabilities.ancestry``);
without one, ``KNOWN_ANCESTRY`` (QEMU 7.2 and 10.0) stands in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from ..common.records import SLOTS
from .model import QEMU_TX, Domain, HostCapabilities, QemuArg

DRIVER_ROUTE = "<driver txmode>"
_TX_TO_TXMODE = {tx: mode for mode, tx in QEMU_TX.items()}

_PCI = ("virtio-net-pci-base", "virtio-pci", "pci-device", "device", "object")
# type -> its ancestors, parent first (QEMU 7.2 and 10.0: hw/virtio/virtio-pci.c,
# hw/virtio/virtio.c, hw/net/virtio-net.c, hw/s390x/virtio-ccw.c, hw/pci/pci.c, hw/core/qdev.c).
KNOWN_ANCESTRY: Mapping[str, tuple[str, ...]] = {
    "virtio-net-pci": _PCI,
    "virtio-net-pci-transitional": _PCI,
    "virtio-net-pci-non-transitional": _PCI,
    "virtio-net-device": ("virtio-device", "device", "object"),
    "virtio-net-ccw": ("virtio-ccw-device", "ccw-device", "device", "object"),
}
# Interfaces a -global may name too (object_dynamic_cast checks them; the probe's ancestry does
# not list them): every device's (hw/core/qdev.c), and the PCI variants' (virtio_pci_types_
# register: a transitional device is conventional PCI only). The root type "interface" is no
# target: every device implements several, and object_class_dynamic_cast refuses an ambiguous
# cast.
DEVICE_INTERFACES = frozenset(("vmstate-if", "resettable"))
_CONVENTIONAL = frozenset(("conventional-pci-device",))
_PCI_INTERFACES = frozenset(("pci-express-device", "conventional-pci-device"))
INNER_DEVICE = "virtio-net-device"
# qdev_alias_table: "virtio-net" is the transport's device of the target arch.
_ALIAS = "virtio-net"


@dataclass(frozen=True, **SLOTS)
class DeviceTx:
    """The tx one virtio-net device ends up with, and where it was set."""

    device: str  # the QEMU type built (after override and -set driver changes)
    txmode: Optional[str]  # libvirt's word for QEMU's tx (bh -> iothread), other text kept
    route: str  # DRIVER_ROUTE, or the option or override that set it
    line: Optional[int]  # where that route stands; None: the NIC's own line


@dataclass(frozen=True, **SLOTS)
class Unprovable:
    """Something passed to QEMU that this tool cannot prove harmless (passthrough-unverifiable),
    or that makes QEMU refuse to start (``fails``: start-will-fail)."""

    line: int
    text: str
    reason: str
    fails: bool = False


@dataclass(frozen=True, **SLOTS)
class Passthrough:
    """One domain's passthrough on one host: each NIC's device as QEMU builds it and its tx
    (None: a NIC libvirt builds no device for; a txmode of None: no tx, or not virtio-net), the
    virtio-net devices the command line adds, what cannot be judged."""

    nics: tuple[Optional[DeviceTx], ...]
    extra: tuple[DeviceTx, ...] = ()
    unprovable: tuple[Unprovable, ...] = field(default_factory=tuple)


def txmode_of(tx: Optional[str]) -> Optional[str]:
    """QEMU's tx value in libvirt's words (bh -> iothread); any other text is kept as it is."""
    if tx is None:
        return None
    return _TX_TO_TXMODE.get(tx, tx)


class _Types:
    """Which QEMU types are virtio-net and what they descend from, on one host's emulator."""

    def __init__(self, probed: Mapping[str, tuple[str, ...]], arch: Optional[str]) -> None:
        self.probed = probed
        self.arch = arch

    def resolve(self, driver: str) -> str:
        if driver != _ALIAS:
            return driver
        if self.arch in ("s390", "s390x"):
            return "virtio-net-ccw"
        return INNER_DEVICE if self.arch == "m68k" else "virtio-net-pci"

    def is_virtio_net(self, device: str) -> bool:
        return device in self.probed or device in KNOWN_ANCESTRY or device.startswith("virtio-net")

    def ancestors(self, device: str) -> Optional[tuple[str, ...]]:
        found = self.probed.get(device)
        return found if found is not None else KNOWN_ANCESTRY.get(device)

    def layers(self, device: str) -> Optional[list[frozenset[str]]]:
        """The type sets a -global must name to reach the device, in the order QEMU applies
        them (inner device first); None when the device's ancestry is unknown."""
        own = self.ancestors(device)
        if own is None:
            return None
        outer = frozenset((device, *own)) | DEVICE_INTERFACES | _pci_interfaces(device, own)
        if device == INNER_DEVICE or INNER_DEVICE in own or "virtio-device" in own:
            return [outer]
        inner_chain = self.ancestors(INNER_DEVICE) or KNOWN_ANCESTRY[INNER_DEVICE]
        return [frozenset((INNER_DEVICE, *inner_chain)) | DEVICE_INTERFACES, outer]


@dataclass(**SLOTS)
class _Built:
    """A device while the passthrough is applied to it: what QEMU will be asked to build."""

    device: Optional[str]
    tx: Optional[str]
    route: str = ""
    line: Optional[int] = None
    driver_text: str = ""  # the override or -set that changed the driver, as written
    driver_line: Optional[int] = None

    def set_driver(self, device: str, text: str, line: int) -> None:
        self.device, self.driver_text, self.driver_line = device, text, line

    def set_tx(self, tx: Optional[str], route: str, line: Optional[int]) -> None:
        self.tx, self.route, self.line = tx, route if tx is not None else "", line


def _pci_interfaces(device: str, ancestors: tuple[str, ...]) -> frozenset[str]:
    if "pci-device" not in ancestors:
        return frozenset()
    return (
        _CONVENTIONAL
        if device.endswith("-transitional") and not device.endswith("non-transitional")
        else _PCI_INTERFACES
    )


def _route(arg: QemuArg) -> str:
    return f"{arg.text} in <qemu:commandline>"


def resolve(
    domain: Domain,
    host: HostCapabilities,
    nics: Sequence[tuple[Optional[str], Optional[str], str]],
) -> Passthrough:
    """Apply the domain's passthrough to libvirt's NIC devices on ``host``.

    ``nics``: per NIC, the QEMU device libvirt builds (None: none), the tx it puts on it (QEMU's
    word, None: none) and the device's alias. Cheap when there is no passthrough at all.
    """
    if not domain.qemu_args and not domain.overrides:
        return Passthrough(
            nics=tuple(
                DeviceTx(device, txmode_of(tx), DRIVER_ROUTE if tx is not None else "", None)
                if device is not None
                else None
                for device, tx, _ in nics
            )
        )
    return _Resolver(domain, host).run(nics)


class _Resolver:
    def __init__(self, domain: Domain, host: HostCapabilities) -> None:
        emulator = host.resolve_emulator(domain)
        self.domain = domain
        self.types = _Types(
            host.ancestry.get(emulator, {}) if emulator else {}, host.guest_arch(domain)
        )
        json_devices = host.device_json.get(emulator) if emulator else None
        # <qemu:capabilities> may change how libvirt passes -device: then it is not known.
        self.libvirt_json = json_devices is True and not domain.qemu_capabilities
        self.globals = [a for a in domain.qemu_args if a.kind == "global"]
        # type named -> (position, the last -global naming it): a device looks up only the
        # types it descends from, whatever the number of -globals.
        self.last_global = {arg.target: (order, arg) for order, arg in enumerate(self.globals)}
        self.unknown: set[str] = set()  # devices whose ancestry nobody knows
        self.unprovable: list[Unprovable] = [
            Unprovable(a.line, a.text, a.reason)
            for a in domain.qemu_args
            if a.kind == "unverifiable"
        ]

    def run(self, nics: Sequence[tuple[Optional[str], Optional[str], str]]) -> Passthrough:
        aliases = {alias: index for index, (_, _, alias) in enumerate(nics)}
        state = [
            _Built(device, tx, DRIVER_ROUTE if tx is not None else "") for device, tx, _ in nics
        ]
        self._overrides(aliases, state)
        extra = self._commandline(aliases, state)
        results = tuple(self._finish(built) for built in state)
        devices = tuple(
            found
            for found in map(self._finish, extra)
            if found is not None and self.types.is_virtio_net(found.device)
        )
        self._unknown_ancestry()
        return Passthrough(nics=results, extra=devices, unprovable=tuple(self.unprovable))

    def _overrides(self, aliases: Mapping[str, int], state: list[_Built]) -> None:
        for prop in self.domain.overrides:
            where = f"<qemu:override> of device '{prop.alias}'"
            index = aliases.get(prop.alias)
            text = f"{where}: property '{prop.name}' ({prop.type})"
            if index is None:
                self.unprovable.append(
                    Unprovable(
                        prop.line,
                        text,
                        f"'{prop.alias}' is not the alias of one of the domain's NICs, so what "
                        "device it is cannot be seen here",
                    )
                )
                continue
            built = state[index]
            if prop.type == "remove":
                if prop.name == "tx":
                    built.set_tx(None, "", None)
                else:
                    self.unprovable.append(
                        Unprovable(prop.line, text, "removes the device's driver")
                    )
                continue
            if prop.type != "string":
                self.unprovable.append(
                    Unprovable(prop.line, text, f"a {prop.type} where QEMU expects a string")
                )
                continue
            if prop.name == "driver":
                # QEMU resolves a JSON -device driver through qdev_alias_table too.
                built.set_driver(self.types.resolve(prop.value or ""), text, prop.line)
            else:
                built.set_tx(prop.value, where, prop.line)

    def _commandline(self, aliases: Mapping[str, int], state: list[_Built]) -> list[_Built]:
        """Extra -device entries (with -set applied), and -set applied to libvirt's devices."""
        extra: list[_Built] = []
        by_id: dict[str, _Built] = {}
        for arg in self.domain.qemu_args:
            if arg.kind == "device":
                built = _Built(self.types.resolve(arg.target), None)
                built.set_tx(arg.value, _route(arg), arg.line)
                extra.append(built)
                if arg.ident is not None and not arg.json:
                    by_id[arg.ident] = built
            elif arg.kind == "set":
                target = by_id.get(arg.target)
                if target is None and arg.target in aliases:
                    target = self._libvirt_set(arg, state[aliases[arg.target]])
                elif target is None:
                    self._unknown_set(arg)
                if target is not None:
                    if arg.prop == "driver":
                        target.set_driver(self.types.resolve(arg.value or ""), arg.text, arg.line)
                    else:
                        target.set_tx(arg.value, _route(arg), arg.line)
        return extra

    def _libvirt_set(self, arg: QemuArg, built: _Built) -> Optional[_Built]:
        if not self.libvirt_json:
            return built  # libvirt may pass its devices as QemuOpts: then -set reaches them
        self.unprovable.append(
            Unprovable(
                arg.line,
                arg.text,
                f"libvirt passes device '{arg.target}' to this QEMU as JSON, which -set cannot "
                f"edit: QEMU exits with 'there is no device \"{arg.target}\" defined'",
                fails=True,
            )
        )
        return None

    def _unknown_set(self, arg: QemuArg) -> None:
        if self.libvirt_json:
            self.unprovable.append(
                Unprovable(
                    arg.line,
                    arg.text,
                    f"no -device before it has id '{arg.target}' and libvirt passes its own "
                    f'devices as JSON: QEMU exits with \'there is no device "{arg.target}" '
                    "defined'",
                    fails=True,
                )
            )
        else:
            self.unprovable.append(
                Unprovable(
                    arg.line,
                    arg.text,
                    f"'{arg.target}' is neither a NIC nor a -device before it: it may be another "
                    "device libvirt builds",
                )
            )

    def _no_tx_property(self, device: str, built: _Built) -> None:
        """Only virtio-net has a tx property, and QEMU refuses to set one a device lacks: a tx
        left on a NIC whose driver an override or -set changed, a -device of another type with
        a tx, or a -global naming the device's very type (object_apply_global_props: fatal for
        a -global of the command line)."""
        if built.tx is not None:
            if built.driver_text:
                text, line = built.driver_text, built.driver_line
                why = f"it makes the device {device}, whose tx={built.tx} " + (
                    "(libvirt's, from <driver txmode>)"
                    if built.route == DRIVER_ROUTE
                    else f"(from {built.route})"
                )
            else:
                text, line, why = built.route, built.line, f"it gives {device} tx={built.tx}"
            self.unprovable.append(
                Unprovable(
                    line if line is not None else self.domain.line,
                    text,
                    f"{why}, and {device} has no 'tx' property: QEMU exits with "
                    f"\"Property '{device}.tx' not found\"",
                    fails=True,
                )
            )
        named = self.last_global.get(device)
        if named is not None:
            arg = named[1]
            self.unprovable.append(
                Unprovable(
                    arg.line,
                    arg.text,
                    f"QEMU applies it to the domain's {device}, which has no 'tx' property: QEMU "
                    f"exits with \"can't apply global ...: Property '{device}.tx' not found\"",
                    fails=True,
                )
            )

    def _unknown_ancestry(self) -> None:
        """A -global may reach a device whose ancestry is unknown, unless it names that very
        device: say so once per -global."""
        if not self.unknown:
            return
        names = ", ".join(sorted(self.unknown)[:3]) + (", ..." if len(self.unknown) > 3 else "")
        for arg in self.globals:
            if len(self.unknown) > 1 or arg.target not in self.unknown:
                self.unprovable.append(
                    Unprovable(
                        arg.line,
                        arg.text,
                        f"what {names} descends from is not known, so whether this reaches it "
                        "is not known",
                    )
                )

    def _finish(self, built: _Built) -> Optional[DeviceTx]:
        device = built.device
        if device is None:
            return None
        if not self.types.is_virtio_net(device):
            self._no_tx_property(device, built)
            return DeviceTx(device, None, "", None)  # no tx: only virtio-net has one
        if built.tx is not None:
            return DeviceTx(device, txmode_of(built.tx), built.route, built.line)
        if not self.globals:
            return DeviceTx(device, None, "", None)
        layers = self.types.layers(device)
        if layers is None:
            self.unknown.add(device)
            layers = [frozenset((device,))]
        chosen: Optional[QemuArg] = None
        for layer in layers:  # inner device first: the proxy's globals come after
            found = [self.last_global[t] for t in layer if t in self.last_global]
            if found:
                chosen = max(found, key=lambda item: item[0])[1]
        if chosen is None:
            return DeviceTx(device, None, "", None)
        return DeviceTx(device, txmode_of(chosen.value), _route(chosen), chosen.line)
