"""Capabilities of this machine: a snapshot's recorded probes, the probe cache, or a fresh probe.

Order of trust per emulator: the binary must pass the policy's trust rules before anything is
believed about it; a snapshot's or cache's answers count only while the binary's identity is the one
they were recorded for; whatever is still missing is probed once, under the emulator's lock.
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, Optional

from .cache import ProbeCache
from .capabilities import Guest, HostCapabilities, Support, SupportState
from .domain import Domain, qemu_device
from .policy import Policy
from .qemu import ProbeError, identify, probe, trust_problem

LOG = logging.getLogger(__name__)

Prober = Callable[[str, Sequence[str], float], dict[str, Support]]


def _default_prober(emulator: str, devices: Sequence[str], timeout: float) -> dict[str, Support]:
    return probe(emulator, devices, timeout=timeout)


def needed_devices(domains: Iterable[Domain]) -> dict[Domain, set[str]]:
    """Which QEMU devices each domain's txmode-bearing virtio NICs need to be probed."""
    needed: dict[Domain, set[str]] = {}
    for domain in domains:
        for nic in domain.nics:
            if nic.txmode is None:
                continue
            device = qemu_device(domain, nic)
            if device is not None:
                needed.setdefault(domain, set()).add(device)
    return needed


def local_capabilities(
    domains: Iterable[Domain],
    policy: Policy,
    cache: ProbeCache,
    *,
    snapshot: Optional[HostCapabilities] = None,
    snapshot_identities: Optional[dict[str, str]] = None,
    name: Optional[str] = None,
    which: Callable[[str], Optional[str]] = shutil.which,
    prober: Prober = _default_prober,
) -> HostCapabilities:
    guests: dict[tuple[str, str], Guest] = {}
    wanted: dict[str, set[str]] = {}
    for domain, devices in needed_devices(domains).items():
        emulator = domain.emulator
        if emulator is None and snapshot is not None:
            emulator = snapshot.resolve_emulator(domain)
        if emulator is None:
            # libvirt picks qemu-system-<arch> from its search path when <emulator> is absent.
            emulator = which(f"qemu-system-{domain.effective_arch}")
        if emulator is None:
            continue
        if domain.emulator is None:
            guests[(domain.effective_arch, domain.type)] = Guest(
                domain.effective_arch, emulator, (domain.type,)
            )
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
    return HostCapabilities(
        name=name or socket.gethostname(),
        guests=tuple(guests.values()),
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
    snapshot_identities: dict[str, str],
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
