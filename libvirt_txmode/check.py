"""The check engine: (domain, policy, capabilities) -> findings.

Pure: no I/O, no clock, no globals.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

from . import findings as codes
from .capabilities import HostCapabilities, SupportState
from .domain import TXMODES, Domain, Nic, qemu_device, vhost_reason
from .findings import Finding, Level
from .policy import Policy, Settings

ALL_HOSTS = "all"
ANY_HOST = "any"
# policy "ineffective" setting -> finding level; "ignore" has none.
_INEFFECTIVE_LEVELS = {"error": Level.ERROR, "warn": Level.WARNING}


def _violation(settings: Settings) -> Level:
    return Level.ERROR if settings.action == "enforce" else Level.WARNING


def check_domain(
    domain: Domain,
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    host_mode: str = ALL_HOSTS,
) -> list[Finding]:
    """Every finding for every NIC of ``domain``.

    ``host_mode`` matters only with several hosts: ``all`` reports support problems on each host
    (the domain must run and migrate everywhere); ``any`` only when no host can run the NIC.
    """
    result: list[Finding] = []
    for nic in domain.nics:
        result.extend(_check_nic(domain, nic, policy, hosts, host_mode))
    return result


@dataclass(frozen=True)
class _Subject:
    """The NIC under check and the rule that governs it: everything a finding must name."""

    domain: Domain
    nic: Nic
    rule: str

    def finding(self, code: str, level: Level, message: str, host: Optional[str] = None) -> Finding:
        return Finding(
            file=self.domain.file,
            line=self.nic.line,
            domain=self.domain.name,
            code=code,
            level=level,
            message=message,
            interface=self.nic.index,
            mac=self.nic.mac,
            txmode=self.nic.txmode,
            rule=self.rule,
            host=host,
        )


def _check_nic(
    domain: Domain, nic: Nic, policy: Policy, hosts: Sequence[HostCapabilities], host_mode: str
) -> Iterator[Finding]:
    settings = policy.settings_for(domain, nic)
    rule = settings.rule or "defaults"
    subject = _Subject(domain, nic, rule)

    if nic.txmode is None:
        if settings.require and nic.is_virtio and nic.type not in ("hostdev", "vhostuser"):
            allowed = "|".join(settings.allowed) or "none"
            yield subject.finding(
                codes.REQUIRED,
                _violation(settings),
                f"virtio NIC has no txmode, but rule '{rule}' requires one "
                f"(add <driver txmode='{allowed}'/>)",
            )
        return

    ineffective = vhost_reason(domain, nic)
    ineffective_level = _INEFFECTIVE_LEVELS.get(settings.ineffective)
    if not nic.is_virtio or nic.type == "hostdev":
        # libvirt drops the attribute here without even validating it (libvirt 9.0 defines an e1000
        # or hostdev NIC with txmode='bogus' and no <driver txmode>), so neither validity, policy
        # nor host support is at stake.
        if ineffective_level is not None:
            yield subject.finding(
                codes.INEFFECTIVE,
                ineffective_level,
                f"txmode '{nic.txmode}' has no effect: {ineffective}",
            )
        return

    if nic.txmode not in TXMODES:
        yield subject.finding(
            codes.INVALID,
            Level.ERROR,
            f"txmode '{nic.txmode}' is not a valid value (libvirt accepts: {', '.join(TXMODES)})",
        )
        return

    if nic.txmode not in settings.allowed:
        allowed = ", ".join(settings.allowed) or "none"
        yield subject.finding(
            codes.NOT_ALLOWED,
            _violation(settings),
            f"txmode '{nic.txmode}' is not allowed by rule '{rule}' (allowed: {allowed})",
        )
    if ineffective and ineffective_level is not None:
        yield subject.finding(
            codes.INEFFECTIVE,
            ineffective_level,
            f"txmode '{nic.txmode}' has no effect: {ineffective}",
        )

    device = qemu_device(domain, nic)
    if device is not None:
        yield from _support_findings(
            subject, device, policy=policy, settings=settings, hosts=hosts, host_mode=host_mode
        )


def _support_findings(
    subject: _Subject,
    device: str,
    *,
    policy: Policy,
    settings: Settings,
    hosts: Sequence[HostCapabilities],
    host_mode: str,
) -> Iterator[Finding]:
    txmode = subject.nic.txmode
    problems: list[Finding] = []
    any_supported = False
    for host in hosts:
        emulator, support = host.support(subject.domain, device)
        on_host = f" on {host.name}" if len(hosts) > 1 else ""
        label = host.name if len(hosts) > 1 else None
        if support.state is SupportState.SUPPORTED:
            any_supported = True
        elif support.state is SupportState.UNSUPPORTED:
            problems.append(
                subject.finding(
                    codes.UNSUPPORTED,
                    _violation(settings),
                    f"txmode '{txmode}' needs the 'tx' property of {device}, which "
                    f"{emulator}{on_host} does not have ({support.detail})",
                    label,
                )
            )
        else:
            level = Level.ERROR if policy.on_unknown == "deny" else Level.WARNING
            problems.append(
                subject.finding(
                    codes.UNKNOWN_SUPPORT,
                    level,
                    f"cannot tell whether {device}{on_host} supports txmode '{txmode}': "
                    f"{support.detail}",
                    label,
                )
            )
    if host_mode == ANY_HOST and any_supported:
        return
    yield from problems
