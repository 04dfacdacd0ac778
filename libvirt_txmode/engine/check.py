"""The check engine: (domain, policy, capabilities) -> findings.

Pure: no I/O, no clock, no globals. Each NIC is judged as libvirt realizes it on each host
(``libvirt_rules.plan_nic``): the model after libvirt's defaults, the QEMU device, and the tx that
reaches it by whichever route, so the XML a user wrote and the XML libvirt formats get the same
findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Optional

from ..common.records import SLOTS
from . import codes
from .libvirt_rules import NicPlan, plan_domain_passthrough
from .model import TXMODES, Domain, Finding, HostCapabilities, Level, Nic, SupportState
from .passthrough import DRIVER_ROUTE, DeviceTx, Passthrough
from .policy_records import Policy, Settings

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
    """Every finding for every NIC of ``domain``, in NIC order, each reported once, then the
    domain's own (``DOMAIN_CHECKS``).

    ``host_mode`` matters only with several hosts: ``all`` reports support problems on each host
    (the domain must run and migrate everywhere); ``any`` only when no host can run the NIC.
    """
    targets = tuple(hosts) or _NO_HOSTS
    planned = [plan_domain_passthrough(domain, host) for host in targets]
    nics = tuple(
        _nic_views(domain, nic, policy, targets, [plans[index] for plans, _ in planned])
        for index, nic in enumerate(domain.nics)
    )
    result: list[Finding] = []
    for views in nics:
        # Host by host, every check in turn; then the emulators' support, judged across hosts.
        found = [finding for view in views for check in NIC_CHECKS for finding in check(view)]
        if targets is not _NO_HOSTS:
            found.extend(_support(views, host_mode))
        result.extend(_unique(found))
    whole = DomainView(
        domain, policy, targets, host_mode, nics, tuple(passthrough for _, passthrough in planned)
    )
    for domain_check in DOMAIN_CHECKS:
        result.extend(_unique(domain_check(whole)))
    return result


def _unique(found: Iterable[Finding]) -> list[Finding]:
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


@dataclass(frozen=True, **SLOTS)
class NicView:
    """One NIC as libvirt realizes it on one host, with the settings of the rule governing it."""

    nic: Nic
    host: HostCapabilities
    plan: NicPlan
    settings: Settings
    subject: _Subject  # names the NIC, its rule and the tx that reaches QEMU in a finding
    label: Optional[str]  # the host's name in findings, when there are several hosts
    starts: bool  # libvirt and QEMU start the domain with this NIC (plan.refused is None)
    valid_txmode: bool  # it starts, and a tx QEMU knows reaches the device (worth probing)


@dataclass(frozen=True, **SLOTS)
class DomainView:
    """The whole domain for the checks that look beyond one NIC."""

    domain: Domain
    policy: Policy
    hosts: tuple[HostCapabilities, ...]
    host_mode: str
    nics: tuple[tuple[NicView, ...], ...]  # each NIC, as realized on each host
    passthroughs: tuple[Passthrough, ...]  # each host's reading of <qemu:commandline>


def _nic_views(
    domain: Domain,
    nic: Nic,
    policy: Policy,
    hosts: Sequence[HostCapabilities],
    plans: Sequence[NicPlan],
) -> tuple[NicView, ...]:
    # Rules match the NIC as libvirt formats it (canonical model, libvirt's default model), which
    # is the same on every host but where arch, machine or libvirt version change the default.
    governing: dict[Optional[str], Settings] = {}
    views = []
    for host, plan in zip(hosts, plans):
        settings = governing.get(plan.model)
        if settings is None:
            # A copy only when the model differs: replace() costs ~30 µs a NIC on the hook's path.
            as_formatted = nic if nic.model == plan.model else replace(nic, model=plan.model)
            settings = governing[plan.model] = policy.settings_for(domain, as_formatted)
        line = plan.line if plan.line is not None else nic.line
        subject = _Subject(domain, nic, settings, policy.on_unknown, plan.txmode, line)
        label = host.name if len(hosts) > 1 else None
        starts = plan.refused is None
        valid = starts and plan.txmode in TXMODES
        views.append(NicView(nic, host, plan, settings, subject, label, starts, valid))
    return tuple(views)


# --- per NIC, on each host -----------------------------------------------------------------------


def _start_will_fail(view: NicView) -> Iterable[Finding]:
    """The domain never starts: say why, not which tx a device that never runs would get."""
    if view.starts:
        return ()
    refused = replace(view.subject, txmode=view.nic.txmode, line=view.nic.line)
    message = f"the domain will not start: {view.plan.refused}"
    return refused.findings(codes.START_WILL_FAIL, message, view.label)


def _dropped(view: NicView) -> Iterable[Finding]:
    """A written <driver txmode> that libvirt never passes on: nothing to validate or allow."""
    nic = view.nic
    if not view.starts or nic.txmode is None or not view.plan.dropped:
        return ()
    written = replace(view.subject, txmode=nic.txmode, line=nic.line)
    message = f"txmode '{nic.txmode}' has no effect: {view.plan.dropped}"
    return written.findings(codes.INEFFECTIVE, message)


def _required(view: NicView) -> Iterable[Finding]:
    settings, plan = view.settings, view.plan
    # vhost-user and vDPA backends do the transmit themselves: a txmode there would be moot.
    if (
        not view.starts
        or plan.txmode is not None
        or not settings.require
        or not plan.virtio_net
        or view.nic.type in ("vhostuser", "vdpa")
    ):
        return ()
    allowed = "|".join(settings.allowed) or "none"
    return view.subject.findings(
        codes.REQUIRED,
        f"virtio NIC has no txmode, but rule '{view.subject.rule}' requires one "
        f"(add <driver txmode='{allowed}'/>)",
    )


def _invalid(view: NicView) -> Iterable[Finding]:
    if not view.starts or view.plan.txmode is None or view.valid_txmode:
        return ()
    return _invalid_findings(view.subject, view.plan.txmode, view.plan.route)


def _not_allowed(view: NicView) -> Iterable[Finding]:
    if not view.valid_txmode:
        return ()
    return _not_allowed_findings(view.subject, view.plan.route)


def _ineffective(view: NicView) -> Iterable[Finding]:
    if not view.valid_txmode or not view.plan.unused:
        return ()
    message = f"txmode '{view.plan.txmode}' has no effect: {view.plan.unused}"
    return view.subject.findings(codes.INEFFECTIVE, message)


def _support(views: Sequence[NicView], host_mode: str) -> Iterator[Finding]:
    """Whether each host's emulator honours the tx that reaches the NIC's virtio-net device."""
    return _support_findings(
        [
            (view.host, view.plan.device, view.subject)
            for view in views
            if view.valid_txmode and view.plan.device is not None and view.plan.virtio_net
        ],
        len(views),
        host_mode,
    )


# --- per domain ----------------------------------------------------------------------------------


def _extra_devices(whole: DomainView) -> Iterator[Finding]:
    """The virtio-net devices <qemu:commandline> adds, each with the tx it ends up with. The
    same -device on every host (the command line does not change) is one device to judge."""
    per_device: dict[int, list[tuple[HostCapabilities, DeviceTx]]] = {}
    for host, passthrough in zip(whole.hosts, whole.passthroughs):
        for number, device in enumerate(passthrough.extra):
            per_device.setdefault(number, []).append((host, device))
    for found in per_device.values():
        yield from _extra_device(whole, found)


def _extra_device(
    whole: DomainView, found: list[tuple[HostCapabilities, DeviceTx]]
) -> Iterator[Finding]:
    domain, policy = whole.domain, whole.policy
    pseudo = Nic(index=-1, line=domain.line, type="", model="virtio")
    settings = policy.settings_for(domain, pseudo)
    supported: list[tuple[HostCapabilities, str, _Subject]] = []
    for host, device in found:
        if device.txmode is None:
            continue
        line = device.line or domain.line
        subject = _Subject(domain, None, settings, policy.on_unknown, device.txmode, line)
        if device.txmode not in TXMODES:
            yield from _invalid_findings(subject, device.txmode, device.route)
            continue
        yield from _not_allowed_findings(subject, device.route)
        supported.append((host, device.device, subject))
    if whole.hosts is not _NO_HOSTS:
        yield from _support_findings(supported, len(whole.hosts), whole.host_mode)


def _unprovable(whole: DomainView) -> Iterator[Finding]:
    """What the domain passes to QEMU that cannot be judged (passthrough-unverifiable, at the
    policy's 'passthrough' level) or that makes QEMU refuse to start (start-will-fail)."""
    domain, policy = whole.domain, whole.policy
    for passthrough in whole.passthroughs:
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


def _where(route: str) -> str:
    return "" if route == DRIVER_ROUTE else f" (set by {route})"


def _invalid_findings(subject: _Subject, txmode: str, route: str) -> list[Finding]:
    if route == DRIVER_ROUTE:
        message = f"txmode '{txmode}' is not a valid value (libvirt accepts: {', '.join(TXMODES)})"
    else:
        message = (
            f"tx '{txmode}'{_where(route)} is not a transmit mode QEMU knows "
            "(bh or timer; QEMU falls back to bh with a warning)"
        )
    return subject.findings(codes.INVALID, message)


def _not_allowed_findings(subject: _Subject, route: str) -> list[Finding]:
    settings = subject.settings
    if subject.txmode in settings.allowed:
        return []
    allowed = ", ".join(settings.allowed) or "none"
    return subject.findings(
        codes.NOT_ALLOWED,
        f"txmode '{subject.txmode}'{_where(route)} is not allowed by rule '{subject.rule}' "
        f"(allowed: {allowed})",
    )


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


# Adding a check is a function and an entry here. Each NIC, on each host, in this order:
NIC_CHECKS: tuple[Callable[[NicView], Iterable[Finding]], ...] = (
    _start_will_fail,
    _dropped,
    _required,
    _invalid,
    _not_allowed,
    _ineffective,
)
# Then, after every NIC, the domain as a whole (each NIC with its settings on each host):
DOMAIN_CHECKS: tuple[Callable[[DomainView], Iterable[Finding]], ...] = (
    _extra_devices,
    _unprovable,
)
