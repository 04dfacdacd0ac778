"""The check engine: (domain, policy, capabilities) -> findings.

Pure: no I/O, no clock, no globals. Each NIC is judged as libvirt realizes it on each host
(``libvirt_rules.plan_nic``): the model after libvirt's defaults, the QEMU device, and the tx that
reaches it by whichever route, so the XML a user wrote and the XML libvirt formats get the same
findings.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Optional

from . import codes
from .libvirt_rules import NicPlan, extra_devices, plan_domain, route_txmode
from .model import TXMODES, Domain, Finding, HostCapabilities, Level, Nic, SupportState, TxSetting
from .policy import Policy, Settings
from .records import record, replace

ALL_HOSTS = "all"
ANY_HOST = "any"
DRIVER_ROUTE = "<driver txmode>"
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
    host_plans = [plan_domain(domain, host) for host in targets]
    result: list[Finding] = []
    for index, nic in enumerate(domain.nics):
        plans = [per_host[index] for per_host in host_plans]
        result.extend(_unique(_check_nic(domain, nic, plans, policy, targets, host_mode=host_mode)))
    for setting in extra_devices(domain):
        result.extend(_unique(_check_extra_device(domain, setting, policy, targets, host_mode)))
    return result


def _unique(found: Iterator[Finding]) -> list[Finding]:
    """Hosts that realize a NIC the same way produce the same policy findings: keep one."""
    return list(dict.fromkeys(found))


@record(frozen=True)
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
        line = nic.line if plan.route == DRIVER_ROUTE else _route_line(domain, plan, nic)
        subject = _Subject(domain, nic, settings, policy.on_unknown, plan.txmode, line)
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


def _check_extra_device(
    domain: Domain,
    setting: TxSetting,
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    host_mode: str,
) -> Iterator[Finding]:
    """A virtio-net device that <qemu:commandline> adds by itself, with its own tx."""
    txmode = route_txmode(setting) or ""
    device = setting.device or "virtio-net-pci"
    pseudo = Nic(index=-1, line=setting.line, type="", model="virtio")
    settings = policy.settings_for(domain, pseudo)
    subject = _Subject(domain, None, settings, policy.on_unknown, txmode, setting.line)
    if not (yield from _policy(subject, txmode, setting.route, settings)) or hosts is _NO_HOSTS:
        return
    yield from _support_findings([(host, device, subject) for host in hosts], len(hosts), host_mode)


def _route_line(domain: Domain, plan: NicPlan, nic: Nic) -> int:
    for setting in domain.tx_settings:
        if setting.route == plan.route:
            return setting.line
    return nic.line


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
