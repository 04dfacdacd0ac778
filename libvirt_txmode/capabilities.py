"""What a host can do, as plain data: the check engine reads this and never does I/O itself.

A HostCapabilities comes either from a snapshot file (taken on the host with libvirt's APIs and
direct probes) or from probing this machine's emulators on the spot; both give the same records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

from .domain import Domain


class SupportState(str, enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Support:
    state: SupportState
    detail: str = ""
    method: str = ""


@dataclass(frozen=True)
class Guest:
    """One (arch, domain type) -> emulator line of libvirt's host capabilities."""

    arch: str
    emulator: str
    domain_types: tuple[str, ...] = ("qemu",)


@dataclass(frozen=True)
class HostCapabilities:
    name: str
    guests: tuple[Guest, ...] = ()
    # emulator path -> QEMU device name -> Support
    devices: Mapping[str, Mapping[str, Support]] = field(default_factory=dict)
    # emulator path -> why nothing is known about it (untrusted, missing, probe failed ...)
    emulator_errors: Mapping[str, str] = field(default_factory=dict)

    def resolve_emulator(self, domain: Domain) -> Optional[str]:
        """The binary libvirt would run: the domain's <emulator>, else the host's for the arch."""
        if domain.emulator:
            return domain.emulator
        arch = domain.effective_arch
        for guest in self.guests:
            if guest.arch == arch and domain.type in guest.domain_types:
                return guest.emulator
        for guest in self.guests:
            if guest.arch == arch:
                return guest.emulator
        return None

    def support(self, domain: Domain, device: str) -> tuple[Optional[str], Support]:
        emulator = self.resolve_emulator(domain)
        if emulator is None:
            return None, Support(
                SupportState.UNKNOWN, f"no emulator for arch {domain.effective_arch} on {self.name}"
            )
        if emulator in self.emulator_errors:
            return emulator, Support(SupportState.UNKNOWN, self.emulator_errors[emulator])
        known = self.devices.get(emulator)
        if known is None:
            return emulator, Support(
                SupportState.UNKNOWN, f"emulator {emulator} is not known on {self.name}"
            )
        result = known.get(device)
        if result is None:
            return emulator, Support(SupportState.UNKNOWN, f"{device} was not probed on {emulator}")
        return emulator, result
