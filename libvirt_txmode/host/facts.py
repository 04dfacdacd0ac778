"""Capabilities of this machine: a snapshot's recorded probes, the probe cache, or a fresh probe.

Order of trust per emulator: the binary must pass the policy's trust rules before anything is
believed about it; a snapshot's or cache's answers count only while the binary's identity is the one
they were recorded for; whatever is still missing is probed once, under the emulator's lock.

The same holds for the virtio-net types' ancestry, which the probe records with the answers: it
comes from the snapshot or the cache for the same binary, else from the probe that runs anyway
for a missing device. Ancestry alone never causes a probe: where none is recorded (an older
snapshot or cache entry, a QEMU without qom-list-types) it stays unknown. Whether libvirt passes
-device as JSON is read from libvirt's own capabilities file (``libvirt_caps``: what libvirt
itself uses for this start, checked against the binary's ctime), and only where that cannot be
read (not root) from the snapshot of the same binary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from ..common import logs, paths
from ..common.records import SLOTS
from ..engine.libvirt_rules import emulator_binary, needs_libvirt_version, plan_domain_passthrough
from ..engine.model import Domain, Guest, HostCapabilities, Support, SupportState
from ..engine.policy import Policy
from . import libvirt_caps
from .emulator import EmulatorIdentity, ProbeError, identify, trust_problem
from .networks import read_forward_modes
from .probe_cache import ProbeCache

if TYPE_CHECKING:
    from .probe import ProbeResult

LOG = logs.get(__name__)  # logging itself only once there is a message
VHOST_NET_DEVICE = paths.VHOST_NET_DEVICE
Ancestry = dict[str, tuple[str, ...]]


class Prober(Protocol):
    """``qemu.probe_emulator``'s shape: the devices' support, and the type ancestry when asked."""

    def __call__(
        self, emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
    ) -> ProbeResult: ...


# emulator -> whether libvirt passes -device to it as JSON (None: unknown)
DeviceJsonReader = Callable[[str], Optional[bool]]


@dataclass(frozen=True, **SLOTS)
class EmulatorFacts:
    """What is believed about one trusted emulator."""

    devices: dict[str, Support]
    ancestry: Optional[Ancestry] = None  # None: unknown
    device_json: Optional[bool] = None  # None: unknown


def _which(name: str) -> Optional[str]:
    import shutil  # noqa: PLC0415 - only for a domain without <emulator>: shutil costs ~2 ms

    return shutil.which(name)


def _default_prober(
    emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
) -> ProbeResult:
    from .probe import probe_emulator  # noqa: PLC0415 - a miss the probe cache answers starts no process

    return probe_emulator(emulator, devices, timeout=timeout, ancestry=ancestry)


def _default_device_json(emulator: str) -> Optional[bool]:
    return libvirt_caps.device_json(emulator)


def host_arch() -> str:
    """This machine's arch in libvirt's names (what platform.machine() gives, without importing
    platform: ~3 ms per hook run). Only ever the arch of the machine the check runs on."""
    machine = os.uname().machine
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def this_host(
    domains: Sequence[Domain],
    *,
    name: Optional[str] = None,
    snapshot: Optional[HostCapabilities] = None,
    networks: Optional[Callable[[Iterable[str]], dict[str, str]]] = None,
) -> HostCapabilities:
    """The facts about this machine that decide what libvirt builds, before any probe: its
    arch, its libvirt networks' forward modes (read from libvirt's own files, never through
    libvirt: the hook must not call it), whether vhost-net is there and, where a rule depends on
    it, libvirt's version (the snapshot's, else libvirt's own capabilities files)."""
    names = {
        nic.network for d in domains for nic in d.nics if nic.type == "network" and nic.network
    }
    read_networks = networks if networks is not None else read_forward_modes
    version = snapshot.libvirt_version if snapshot is not None else None
    if version is None and any(needs_libvirt_version(d) for d in domains):
        guests = snapshot.guests if snapshot is not None else ()
        emulators = [d.emulator for d in domains if d.emulator] + [g.emulator for g in guests]
        version = libvirt_caps.installed_libvirt_version(emulators)
    return HostCapabilities(
        # socket.gethostname() is uname's nodename on Linux; socket costs the hook ~2 ms.
        name=name or os.uname().nodename,
        guests=snapshot.guests if snapshot is not None else (),
        arch=host_arch(),
        networks=read_networks(sorted(names)) if names else {},
        vhost_net=os.path.exists(VHOST_NET_DEVICE),
        libvirt_version=version,
    )


def needed_devices(domains: Sequence[Domain], host: HostCapabilities) -> list[set[str]]:
    """Per domain (same order), the QEMU devices whose tx support decides a finding: the
    virtio-net devices of NICs whose txmode reaches QEMU, and of the devices <qemu:commandline>
    adds with a tx. Linear in NICs."""
    needed: list[set[str]] = []
    for domain in domains:
        devices: set[str] = set()
        plans, passthrough = plan_domain_passthrough(domain, host)
        for plan in plans:
            if plan.txmode is not None and plan.device is not None and plan.virtio_net:
                devices.add(plan.device)
        devices.update(extra.device for extra in passthrough.extra if extra.txmode is not None)
        needed.append(devices)
    return needed


def local_capabilities(
    domains: Sequence[Domain],
    policy: Policy,
    cache: ProbeCache,
    *,
    snapshot: Optional[HostCapabilities] = None,
    snapshot_identities: Optional[Mapping[str, str]] = None,
    name: Optional[str] = None,
    which: Optional[Callable[[str], Optional[str]]] = None,
    prober: Prober = _default_prober,
    host: Optional[HostCapabilities] = None,
    needed: Optional[list[set[str]]] = None,
    device_json: DeviceJsonReader = _default_device_json,
) -> HostCapabilities:
    """``needed``: ``needed_devices(domains, host)`` if the caller has it already (the hook).
    Each emulator a needed device runs on gets its support answers, its virtio-net types'
    ancestry and whether libvirt passes it -device as JSON, as far as they are known."""
    facts = host if host is not None else this_host(domains, name=name, snapshot=snapshot)
    if needed is None or host is None:
        needed = needed_devices(domains, facts)
    wanted, guests = _wanted(domains, needed, facts, which or _which)
    results: dict[str, dict[str, Support]] = {}
    errors: dict[str, str] = {}
    ancestry: dict[str, Mapping[str, tuple[str, ...]]] = dict(facts.ancestry)
    as_json: dict[str, bool] = dict(facts.device_json)
    for emulator, devices in sorted(wanted.items()):
        try:
            found = _emulator_facts(
                emulator,
                devices=sorted(devices),
                policy=policy,
                cache=cache,
                snapshot=snapshot,
                snapshot_identities=snapshot_identities or {},
                prober=prober,
                device_json=device_json,
            )
        except ProbeError as exc:
            LOG.warning("%s", exc)
            errors[emulator] = str(exc)
            continue
        results[emulator] = found.devices
        if found.ancestry is not None:
            ancestry[emulator] = found.ancestry
        if found.device_json is not None:
            as_json[emulator] = found.device_json
    return replace(
        facts,
        guests=facts.guests + tuple(guests.values()),
        devices=results,
        emulator_errors=errors,
        ancestry=ancestry,
        device_json=as_json,
    )


def _wanted(
    domains: Sequence[Domain],
    needed: list[set[str]],
    facts: HostCapabilities,
    which: Callable[[str], Optional[str]],
) -> tuple[dict[str, set[str]], dict[tuple[str, str], Guest]]:
    """Emulator -> the devices needed on it, and the guests found on the search path."""
    guests: dict[tuple[str, str], Guest] = {}
    wanted: dict[str, set[str]] = {}
    for domain, devices in zip(domains, needed):
        if not devices:
            continue
        emulator = facts.resolve_emulator(domain)
        arch = facts.guest_arch(domain) or ""
        if emulator is None:
            # libvirt looks for qemu-system-<its binary name for the arch> on its search path.
            emulator = which(emulator_binary(arch))
        if emulator is None:
            continue
        if domain.emulator is None and facts.guest(domain) is None:
            guests[(arch, domain.type)] = Guest(arch, emulator, (domain.type,))
        wanted.setdefault(emulator, set()).update(devices)
    return wanted, guests


def _emulator_facts(
    emulator: str,
    *,
    devices: list[str],
    policy: Policy,
    cache: ProbeCache,
    snapshot: Optional[HostCapabilities],
    snapshot_identities: Mapping[str, str],
    prober: Prober,
    device_json: DeviceJsonReader,
) -> EmulatorFacts:
    problem = trust_problem(emulator, policy.emulators)
    if problem is not None:
        raise ProbeError(problem)
    identity = identify(emulator)
    same_binary = snapshot is not None and snapshot_identities.get(emulator) == identity.key()
    known: dict[str, Support] = {}
    ancestry: Optional[Ancestry] = None
    if snapshot is not None and same_binary:
        known.update(_settled(snapshot.devices.get(emulator, {})))
        ancestry = _copy(snapshot.ancestry.get(emulator))
    missing = [d for d in devices if d not in known]
    if missing or ancestry is None:
        entry = cache.load_entry(identity)
        known.update(_settled(entry.devices))
        ancestry = ancestry if ancestry is not None else entry.ancestry
        missing = [d for d in devices if d not in known]
    if missing:
        ancestry = _probe_missing(
            emulator, identity, known, devices, ancestry, policy=policy, cache=cache, prober=prober
        )
    # libvirt's own file first: it is what libvirt uses for this very start (it revalidates the
    # file before the prepare hook runs); the snapshot's copy only where it cannot be read.
    as_json = device_json(emulator)
    if as_json is None and snapshot is not None and same_binary:
        as_json = snapshot.device_json.get(emulator)
    return EmulatorFacts(known, ancestry, as_json)


def _probe_missing(
    emulator: str,
    identity: EmulatorIdentity,
    known: dict[str, Support],
    devices: list[str],
    ancestry: Optional[Ancestry],
    *,
    policy: Policy,
    cache: ProbeCache,
    prober: Prober,
) -> Optional[Ancestry]:
    """Probe the devices ``known`` lacks (into ``known``), and the ancestry with them when it is
    not known yet; returns the ancestry now known."""
    # Wait for a concurrent prober of the same binary rather than probing it again ourselves.
    with cache.lock(identity, timeout=policy.probe_timeout + 1.0):
        entry = cache.load_entry(identity)
        known.update(_settled(entry.devices))
        ancestry = ancestry if ancestry is not None else entry.ancestry
        missing = [d for d in devices if d not in known]
        if missing:
            fresh = prober(emulator, missing, policy.probe_timeout, ancestry=ancestry is None)
            if identify(emulator).key() != identity.key():
                # Replaced while we probed: the answer may describe either binary, so don't keep it.
                raise ProbeError(f"emulator {emulator} changed while it was being probed")
            cache.store(identity, dict(fresh.devices), ancestry=fresh.ancestry)
            known.update(fresh.devices)
            if ancestry is None and fresh.ancestry is None and fresh.ancestry_error:
                LOG.info("no type ancestry from %s: %s", emulator, fresh.ancestry_error)
            ancestry = ancestry if ancestry is not None else fresh.ancestry
    return ancestry


def _copy(ancestry: Optional[Mapping[str, tuple[str, ...]]]) -> Optional[Ancestry]:
    return dict(ancestry) if ancestry is not None else None


def _settled(answers: Mapping[str, Support]) -> dict[str, Support]:
    """Recorded answers worth reusing: an UNKNOWN (a snapshot's failed probe) is asked again."""
    return {d: s for d, s in answers.items() if s.state is not SupportState.UNKNOWN}
