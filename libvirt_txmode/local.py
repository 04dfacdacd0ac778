"""Capabilities of this machine: a snapshot's recorded probes, the probe cache, or a fresh probe.

Order of trust per emulator: the binary must pass the policy's trust rules before anything is
believed about it; a snapshot's or cache's answers count only while the binary's identity is the one
they were recorded for; whatever is still missing is probed once, under the emulator's lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, Optional

from . import logs, paths
from .cache import ProbeCache
from .libvirt_rules import emulator_binary, plan_domain_passthrough
from .model import Domain, Guest, HostCapabilities, Support, SupportState
from .networks import read_forward_modes
from .policy import Policy
from .qemu import ProbeError, identify, probe, trust_problem
from .records import replace

LOG = logs.get(__name__)  # logging itself only once there is a message
VHOST_NET_DEVICE = paths.VHOST_NET_DEVICE

Prober = Callable[[str, Sequence[str], float], dict[str, Support]]


def _which(name: str) -> Optional[str]:
    import shutil  # noqa: PLC0415 - only for a domain without <emulator>: shutil costs ~2 ms

    return shutil.which(name)


def _default_prober(emulator: str, devices: Sequence[str], timeout: float) -> dict[str, Support]:
    return probe(emulator, devices, timeout=timeout)


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
    libvirt: the hook must not call it) and whether vhost-net is there."""
    names = {
        nic.network for d in domains for nic in d.nics if nic.type == "network" and nic.network
    }
    read_networks = networks if networks is not None else read_forward_modes
    return HostCapabilities(
        # socket.gethostname() is uname's nodename on Linux; socket costs the hook ~2 ms.
        name=name or os.uname().nodename,
        guests=snapshot.guests if snapshot is not None else (),
        arch=host_arch(),
        networks=read_networks(sorted(names)) if names else {},
        vhost_net=os.path.exists(VHOST_NET_DEVICE),
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
) -> HostCapabilities:
    """``needed``: ``needed_devices(domains, host)`` if the caller has it already (the hook)."""
    facts = host if host is not None else this_host(domains, name=name, snapshot=snapshot)
    guests: dict[tuple[str, str], Guest] = {}
    wanted: dict[str, set[str]] = {}
    if needed is None or host is None:
        needed = needed_devices(domains, facts)
    for domain, devices in zip(domains, needed):
        if not devices:
            continue
        emulator = facts.resolve_emulator(domain)
        arch = facts.guest_arch(domain) or ""
        if emulator is None:
            # libvirt looks for qemu-system-<its binary name for the arch> on its search path.
            emulator = (which or _which)(emulator_binary(arch))
        if emulator is None:
            continue
        if domain.emulator is None and facts.guest(domain) is None:
            guests[(arch, domain.type)] = Guest(arch, emulator, (domain.type,))
        wanted.setdefault(emulator, set()).update(devices)

    results: dict[str, dict[str, Support]] = {}
    errors: dict[str, str] = {}
    for emulator, devices in sorted(wanted.items()):
        try:
            results[emulator] = _emulator_support(
                emulator,
                devices=sorted(devices),
                policy=policy,
                cache=cache,
                snapshot=snapshot,
                snapshot_identities=snapshot_identities or {},
                prober=prober,
            )
        except ProbeError as exc:
            LOG.warning("%s", exc)
            errors[emulator] = str(exc)
    return replace(
        facts,
        guests=facts.guests + tuple(guests.values()),
        devices=results,
        emulator_errors=errors,
    )


def _emulator_support(
    emulator: str,
    *,
    devices: list[str],
    policy: Policy,
    cache: ProbeCache,
    snapshot: Optional[HostCapabilities],
    snapshot_identities: Mapping[str, str],
    prober: Prober,
) -> dict[str, Support]:
    problem = trust_problem(emulator, policy.emulators)
    if problem is not None:
        raise ProbeError(problem)
    identity = identify(emulator)
    known: dict[str, Support] = {}
    if snapshot is not None and snapshot_identities.get(emulator) == identity.key():
        known.update(_settled(snapshot.devices.get(emulator, {})))
    missing = [d for d in devices if d not in known]
    if missing:
        known.update(_settled(cache.load(identity)))
        missing = [d for d in devices if d not in known]
    if not missing:
        return known
    # Wait for a concurrent prober of the same binary rather than probing it again ourselves.
    with cache.lock(identity, timeout=policy.probe_timeout + 1.0):
        known.update(_settled(cache.load(identity)))
        missing = [d for d in devices if d not in known]
        if missing:
            fresh = prober(emulator, missing, policy.probe_timeout)
            if identify(emulator).key() != identity.key():
                # Replaced while we probed: the answer may describe either binary, so don't keep it.
                raise ProbeError(f"emulator {emulator} changed while it was being probed")
            cache.store(identity, fresh)
            known.update(fresh)
    return known


def _settled(answers: Mapping[str, Support]) -> dict[str, Support]:
    """Recorded answers worth reusing: an UNKNOWN (a snapshot's failed probe) is asked again."""
    return {d: s for d, s in answers.items() if s.state is not SupportState.UNKNOWN}
