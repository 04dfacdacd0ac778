"""The check engine: (domain, policy, capabilities) -> findings.

Pure: no I/O, no clock, no globals. Each NIC is judged as libvirt realizes it on each host
(``libvirt_rules.plan_nic``): the model after libvirt's defaults, the QEMU device, and the tx that
reaches it by whichever route, so the XML a user wrote and the XML libvirt formats get the same
findings.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Optional

from ..common.records import SLOTS
from . import codes
from .libvirt_rules import NicPlan, plan_domain_passthrough
from .model import TXMODES, Domain, Finding, HostCapabilities, Level, Nic, SupportState
from .passthrough import DRIVER_ROUTE, DeviceTx, Passthrough
from .policy import Policy, Settings

ALL_HOSTS = "all"
ANY_HOST = "any"
# Without hosts the domain is judged on its own arch and policy alone: no support findings.
_NO_HOSTS = (HostCapabilities(name="(no host)"),)


def check_domain(
    domain: Domain,
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    host_mode: str = ALL_HOSTS,
) -> list[Finding]:
    """Every finding for every NIC of ``domain``, in NIC order, each reported once.

    ``host_mode`` matters only with several hosts: ``all`` reports support problems on each host
    (the domain must run and migrate everywhere); ``any`` only when no host can run the NIC.
    """
    targets = tuple(hosts) or _NO_HOSTS
    planned = [plan_domain_passthrough(domain, host) for host in targets]
    result: list[Finding] = []
    for index, nic in enumerate(domain.nics):
        plans = [nic_plans[index] for nic_plans, _ in planned]
        result.extend(_unique(_check_nic(domain, nic, plans, policy, targets, host_mode=host_mode)))
    passthroughs = [passthrough for _, passthrough in planned]
    result.extend(_unique(_check_extra_devices(domain, passthroughs, policy, targets, host_mode)))
    result.extend(_unique(_unprovable(domain, passthroughs, policy)))
    return result


def _unique(found: Iterator[Finding]) -> list[Finding]:
    """Hosts that realize a NIC the same way produce the same policy findings: keep one."""
    return list(dict.fromkeys(found))


@dataclass(frozen=True, **SLOTS)
class _Subject:
    """The NIC under check and the rule that governs it: everything a finding must name."""

    domain: Domain
    nic: Optional[Nic]
    settings: Settings
    on_unknown: str
    txmode: Optional[str]
    line: int

    @property
    def rule(self) -> str:
        return self.settings.rule or "defaults"

    def findings(self, code: str, message: str, host: Optional[str] = None) -> list[Finding]:
        """The finding, at the level the code's registry entry and the policy give it; none
        when the policy asks for none (``ineffective: ignore``)."""
        level = codes.level(
            code,
            action=self.settings.action,
            on_unknown=self.on_unknown,
            ineffective=self.settings.ineffective,
        )
        if level is None:
            return []
        return [self.finding(code, level, message, host)]

    def finding(self, code: str, level: Level, message: str, host: Optional[str] = None) -> Finding:
        return Finding(
            file=self.domain.file,
            line=self.line,
            domain=self.domain.name,
            code=code,
            level=level,
            message=message,
            interface=self.nic.index if self.nic is not None else None,
            mac=self.nic.mac if self.nic is not None else None,
            txmode=self.txmode,
            rule=self.rule,
            host=host,
        )


def _check_nic(
    domain: Domain,
    nic: Nic,
    plans: list[NicPlan],
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    *,
    host_mode: str,
) -> Iterator[Finding]:
    supported: list[tuple[HostCapabilities, str, _Subject]] = []
    for host, plan in zip(hosts, plans):
        # Rules match the NIC as libvirt formats it (canonical model, libvirt's default model).
        # (A copy only when the model differs: replace() costs ~30 µs a NIC on the hook's path.)
        as_formatted = nic if nic.model == plan.model else replace(nic, model=plan.model)
        settings = policy.settings_for(domain, as_formatted)
        line = _route_line(plan, nic)
        subject = _Subject(domain, nic, settings, policy.on_unknown, plan.txmode, line)
        if plan.refused is not None:
            # The domain never starts: say why, not which tx a device that never runs would get.
            refused = replace(subject, txmode=nic.txmode, line=nic.line)
            label = host.name if len(hosts) > 1 else None
            yield from refused.findings(
                codes.START_WILL_FAIL, f"the domain will not start: {plan.refused}", label
            )
            continue
        yield from _dropped(subject, nic, plan, settings)
        if plan.txmode is None:
            yield from _required(subject, nic, plan, settings)
            continue
        if not (yield from _policy(subject, plan.txmode, plan.route, settings)):
            continue
        if plan.unused:
            yield from _ineffective(subject, plan.txmode, plan.unused, settings)
        if plan.device is not None and plan.virtio_net:
            supported.append((host, plan.device, subject))
    if hosts is not _NO_HOSTS:
        yield from _support_findings(supported, len(hosts), host_mode)


def _check_extra_devices(
    domain: Domain,
    passthroughs: Sequence[Passthrough],
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    host_mode: str,
) -> Iterator[Finding]:
    """The virtio-net devices <qemu:commandline> adds, each with the tx it ends up with. The
    same -device on every host (the command line does not change) is one device to judge."""
    per_device: dict[int, list[tuple[HostCapabilities, DeviceTx]]] = {}
    for host, passthrough in zip(hosts, passthroughs):
        for number, device in enumerate(passthrough.extra):
            per_device.setdefault(number, []).append((host, device))
    for found in per_device.values():
        yield from _check_extra_device(domain, found, policy, hosts, host_mode)


def _check_extra_device(
    domain: Domain,
    found: list[tuple[HostCapabilities, DeviceTx]],
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    host_mode: str,
) -> Iterator[Finding]:
    pseudo = Nic(index=-1, line=domain.line, type="", model="virtio")
    settings = policy.settings_for(domain, pseudo)
    supported: list[tuple[HostCapabilities, str, _Subject]] = []
    for host, device in found:
        if device.txmode is None:
            continue
        line = device.line or domain.line
        subject = _Subject(domain, None, settings, policy.on_unknown, device.txmode, line)
        if (yield from _policy(subject, device.txmode, device.route, settings)):
            supported.append((host, device.device, subject))
    if hosts is not _NO_HOSTS:
        yield from _support_findings(supported, len(hosts), host_mode)


def _unprovable(
    domain: Domain, passthroughs: Sequence[Passthrough], policy: Policy
) -> Iterator[Finding]:
    """What the domain passes to QEMU that cannot be judged (passthrough-unverifiable, at the
    policy's 'passthrough' level) or that makes QEMU refuse to start (start-will-fail)."""
    for passthrough in passthroughs:
        for item in passthrough.unprovable:
            code = codes.START_WILL_FAIL if item.fails else codes.PASSTHROUGH_UNVERIFIABLE
            level = codes.level(code, action=policy.action, passthrough=policy.passthrough)
            if level is None:
                continue
            if item.fails:
                message = f"the domain will not start: {item.text}: {item.reason}"
            else:
                message = (
                    f"{item.text} cannot be proven harmless to the NICs' tx ({item.reason}); "
                    f"policy 'passthrough: {policy.passthrough}'"
                )
            yield Finding(
                file=domain.file,
                line=item.line,
                domain=domain.name,
                code=code,
                level=level,
                message=message,
                rule="passthrough" if not item.fails else None,
            )


def _route_line(plan: NicPlan, nic: Nic) -> int:
    return plan.line if plan.line is not None else nic.line


def _where(route: str) -> str:
    return "" if route == DRIVER_ROUTE else f" (set by {route})"


def _dropped(subject: _Subject, nic: Nic, plan: NicPlan, settings: Settings) -> Iterator[Finding]:
    """A written <driver txmode> that libvirt never passes on: nothing to validate or allow."""
    if nic.txmode is not None and plan.dropped:
        written = replace(subject, txmode=nic.txmode, line=nic.line)
        yield from written.findings(
            codes.INEFFECTIVE, f"txmode '{nic.txmode}' has no effect: {plan.dropped}"
        )


def _required(subject: _Subject, nic: Nic, plan: NicPlan, settings: Settings) -> Iterator[Finding]:
    # vhost-user and vDPA backends do the transmit themselves: a txmode there would be moot.
    if settings.require and plan.virtio_net and nic.type not in ("vhostuser", "vdpa"):
        allowed = "|".join(settings.allowed) or "none"
        yield from subject.findings(
            codes.REQUIRED,
            f"virtio NIC has no txmode, but rule '{subject.rule}' requires one "
            f"(add <driver txmode='{allowed}'/>)",
        )


def _policy(
    subject: _Subject, txmode: str, route: str, settings: Settings
) -> Generator[Finding, None, bool]:
    """Validity and the allowed list; returns whether the txmode is valid (worth probing)."""
    if txmode not in TXMODES:
        if route == DRIVER_ROUTE:
            message = (
                f"txmode '{txmode}' is not a valid value (libvirt accepts: {', '.join(TXMODES)})"
            )
        else:
            message = (
                f"tx '{txmode}'{_where(route)} is not a transmit mode QEMU knows "
                "(bh or timer; QEMU falls back to bh with a warning)"
            )
        yield from subject.findings(codes.INVALID, message)
        return False
    if txmode not in settings.allowed:
        allowed = ", ".join(settings.allowed) or "none"
        yield from subject.findings(
            codes.NOT_ALLOWED,
            f"txmode '{txmode}'{_where(route)} is not allowed by rule '{subject.rule}' "
            f"(allowed: {allowed})",
        )
    return True


def _ineffective(
    subject: _Subject, txmode: str, reason: str, settings: Settings
) -> Iterator[Finding]:
    yield from subject.findings(codes.INEFFECTIVE, f"txmode '{txmode}' has no effect: {reason}")


def _support_findings(
    targets: list[tuple[HostCapabilities, str, _Subject]],
    host_count: int,
    host_mode: str,
) -> Iterator[Finding]:
    problems: list[Finding] = []
    any_supported = False
    for host, device, subject in targets:
        txmode = subject.txmode
        emulator, support = host.support(subject.domain, device)
        on_host = f" on {host.name}" if host_count > 1 else ""
        label = host.name if host_count > 1 else None
        if support.state is SupportState.SUPPORTED:
            any_supported = True
        elif support.state is SupportState.UNSUPPORTED:
            problems.extend(
                subject.findings(
                    codes.UNSUPPORTED,
                    f"txmode '{txmode}' needs the 'tx' property of {device}, which "
                    f"{emulator}{on_host} does not have ({support.detail})",
                    label,
                )
            )
        else:
            problems.extend(
                subject.findings(
                    codes.UNKNOWN_SUPPORT,
                    f"cannot tell whether {device}{on_host} supports txmode '{txmode}': "
                    f"{support.detail}",
                    label,
                )
            )
    if host_mode == ANY_HOST and any_supported:
        return
    yield from problems
