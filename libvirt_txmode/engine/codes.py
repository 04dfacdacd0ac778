"""The finding codes: one registry of what each code is, how its level is decided, and what it
means. The engine takes levels from it, ``libvirt-txmode explain`` and the man page print it, and
SARIF carries it as rule help. Like yamllint's rule docstrings, this is the user documentation of
the checks; the libvirt/QEMU facts it states are listed with their sources in
docs/libvirt-facts.md. Standard library only.

One module past 400 lines because it is the registry: one entry per finding code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

from ..common.records import SLOTS
from .model import Level

# Stable codes: tools and users match on these, so never rename one.
UNSUPPORTED = "txmode-unsupported"
NOT_ALLOWED = "txmode-not-allowed"
REQUIRED = "txmode-required"
INEFFECTIVE = "txmode-ineffective"
UNKNOWN_SUPPORT = "txmode-unknown-support"
INVALID = "txmode-invalid"
XML_INVALID = "xml-invalid"
PASSTHROUGH_UNVERIFIABLE = "passthrough-unverifiable"
START_WILL_FAIL = "start-will-fail"
EXCEPTION_EXPIRED = "exception-expired"


class LevelRule(str, enum.Enum):
    """Which policy setting decides a code's level."""

    VIOLATION = "violation"  # the rule's action: enforce -> error, audit -> warning
    ON_UNKNOWN = "on_unknown"  # the policy's on_unknown: deny -> error, allow -> warning
    INEFFECTIVE = "ineffective"  # the rule's ineffective: error, warn, or ignore (no finding)
    PASSTHROUGH = "passthrough"  # the policy's passthrough: deny -> as VIOLATION, warn, allow
    ALWAYS_ERROR = "always"
    ALWAYS_WARNING = "always-warning"


_NOTES = {
    LevelRule.VIOLATION: "error with policy action 'enforce', warning with 'audit'",
    LevelRule.ON_UNKNOWN: (
        "error with policy 'on_unknown: deny' (the default), warning with 'allow'"
    ),
    LevelRule.INEFFECTIVE: "set by the policy's 'ineffective': error, warn (the default) or ignore",
    LevelRule.PASSTHROUGH: (
        "set by the policy's 'passthrough': deny (the default) gives an error with action "
        "'enforce' and a warning with 'audit', warn a warning, allow no finding"
    ),
    LevelRule.ALWAYS_ERROR: "always an error",
    LevelRule.ALWAYS_WARNING: "always a warning",
}


def level_of(
    rule: LevelRule,
    *,
    action: str = "enforce",
    on_unknown: str = "deny",
    ineffective: str = "warn",
    passthrough: str = "deny",
) -> Optional[Level]:
    """The level a finding gets under these settings; None: the policy asks for no finding."""
    if rule is LevelRule.VIOLATION:
        return Level.ERROR if action == "enforce" else Level.WARNING
    if rule is LevelRule.PASSTHROUGH:
        if passthrough == "deny":
            return Level.ERROR if action == "enforce" else Level.WARNING
        return Level.WARNING if passthrough == "warn" else None
    if rule is LevelRule.ALWAYS_WARNING:
        return Level.WARNING
    if rule is LevelRule.ON_UNKNOWN:
        return Level.ERROR if on_unknown == "deny" else Level.WARNING
    if rule is LevelRule.INEFFECTIVE:
        return {"error": Level.ERROR, "warn": Level.WARNING}.get(ineffective)
    return Level.ERROR


@dataclass(frozen=True, **SLOTS)
class FindingCode:
    """A finding code and everything said about it: title, level rule, meaning, why, fix."""

    code: str
    title: str
    level_rule: LevelRule
    meaning: str
    why: str
    fix: str
    example: str

    @property
    def level(self) -> Level:
        """The level with the shipped policy's settings."""
        return level_of(self.level_rule) or Level.WARNING

    @property
    def level_note(self) -> str:
        return _NOTES[self.level_rule]

    def sections(self) -> tuple[tuple[str, str], ...]:
        found = (
            ("What it means", self.meaning),
            ("Why it matters", self.why),
            ("How to fix it", self.fix),
        )
        if self.code in NEVER_SILENCED:
            return found
        return (*found, ("Accepting it for a while", _EXCEPTION_NOTE.format(code=self.code)))


# What no policy exception silences: a file that is not a domain, and an exception that ran out.
NEVER_SILENCED = frozenset((XML_INVALID, EXCEPTION_EXPIRED))
_EXCEPTION_NOTE = (
    "When it cannot be fixed yet, an entry in the policy's 'exceptions' silences it on purpose: "
    "match: {{domain: NAME, mac: MAC, code: {code}}}, a reason (required) and expires: YYYY-MM-DD "
    "(the last day it applies; after it the finding is back, with exception-expired). A silenced "
    "finding is not counted but still reported (validate-domain -v, JSON, SARIF suppressions, the "
    "hook's log). 'validate-domain --generate-exceptions' writes such entries for today's "
    "findings, with reason TODO for check-policy to flag."
)


_REGISTERED = (
    FindingCode(
        code=UNSUPPORTED,
        title="the host's QEMU has no 'tx' property for this NIC's virtio-net device",
        level_rule=LevelRule.VIOLATION,
        meaning=(
            "The NIC sets <driver txmode>, which libvirt passes to QEMU as the 'tx' property of "
            "the NIC's -device (iothread becomes tx=bh, timer becomes tx=timer). The emulator "
            "that would run the domain does not list 'tx' for that device, or does not have the "
            "device at all (virtio-net-ccw on an x86 QEMU, for instance)."
        ),
        why=(
            "QEMU refuses a property its device does not have, so the domain fails to start "
            "(or to migrate to that host). libvirt 0.8.8 checked this itself and refused the "
            "start with an 'unsupported configuration' error; current libvirt no longer checks, "
            "so the failure only shows up when QEMU is launched."
        ),
        fix=(
            "Remove the txmode attribute (QEMU then uses its default transmit path, the bottom "
            "half, which is what txmode='iothread' selects), or run the domain only on hosts whose "
            "QEMU has the property. If the host's QEMU was upgraded since its snapshot was "
            "taken, take a new one with 'libvirt-txmode snapshot' and check again; "
            "'libvirt-txmode probe EMULATOR' asks the binary directly. When the device is a "
            "transport the binary lacks, check the interface's <address type>."
        ),
        example=(
            "<interface type='network'>\n"
            "  <source network='default'/>\n"
            "  <model type='virtio'/>\n"
            "  <driver name='qemu'/>   <!-- txmode removed -->\n"
            "</interface>"
        ),
    ),
    FindingCode(
        code=NOT_ALLOWED,
        title="the site policy does not allow this txmode for this NIC",
        level_rule=LevelRule.VIOLATION,
        meaning=(
            "The txmode is a valid value, but the first policy rule whose 'match' fits the NIC "
            "(or the policy's 'defaults' when none fits) does not list it under 'allowed'. The "
            "finding names the rule."
        ),
        why=(
            "The site decided which transmit paths its networks may use: the timer path, for "
            "instance, batches transmits and adds latency that storage networks may not "
            "tolerate. The hook refuses such a domain at start."
        ),
        fix=(
            "Use a txmode the rule allows, or drop the attribute. If the policy is what is "
            "wrong, change the rule's 'allowed' list, or add a more specific rule before it "
            "(the first matching rule wins)."
        ),
        example=(
            "# policy.yaml\n"
            "rules:\n"
            "  - name: storage-no-timer\n"
            '    match: {network: "storage*"}\n'
            "    allowed: [iothread]\n"
            "# so a NIC on network 'storage1' uses <driver name='qemu' txmode='iothread'/>"
        ),
    ),
    FindingCode(
        code=REQUIRED,
        title="the site policy requires a txmode on this virtio NIC",
        level_rule=LevelRule.VIOLATION,
        meaning=(
            "The policy rule that applies to the NIC (or the policy's 'defaults') has "
            "'require: true', and this virtio NIC has no <driver txmode>. NICs of type hostdev "
            "and vhostuser are exempt: QEMU's transmit path is not used for them."
        ),
        why=(
            "Without a txmode QEMU picks its default transmit path; a site that wants every NIC "
            "to state its choice explicitly has asked for this check."
        ),
        fix="Add a txmode the rule allows to the NIC's <driver> element.",
        example=(
            "<interface type='bridge'>\n"
            "  <source bridge='br0'/>\n"
            "  <model type='virtio'/>\n"
            "  <driver name='qemu' txmode='iothread'/>\n"
            "</interface>"
        ),
    ),
    FindingCode(
        code=INEFFECTIVE,
        title="the txmode is set but QEMU will not use it",
        level_rule=LevelRule.INEFFECTIVE,
        meaning=(
            "The NIC sets a txmode that has no effect: with vhost-net the kernel does the "
            "transmit (libvirt uses vhost-net for virtio NICs of type network, bridge, direct "
            "and ethernet when the domain type is kvm and <driver name> is not 'qemu'); with "
            "type vhostuser an external backend does it; and libvirt silently drops txmode on "
            "non-virtio models and on type hostdev (libvirt 9.0 defines an e1000 NIC with "
            "txmode='iothread' without any <driver>)."
        ),
        why=(
            "The domain starts, but not with the transmit path its XML asks for, so whoever "
            "tuned it is misled."
        ),
        fix=(
            "For vhost-net: set <driver name='qemu'/> to use QEMU's own transmit path and its "
            "txmode (this gives up vhost-net), or remove the txmode. For vhost-user, hostdev and "
            "non-virtio models: remove the txmode, or change the model to virtio."
        ),
        example=(
            "<domain type='kvm'>\n"
            "  ...\n"
            "  <interface type='network'>\n"
            "    <source network='default'/>\n"
            "    <model type='virtio'/>\n"
            "    <driver name='qemu' txmode='timer'/>   <!-- userspace virtio-net, no vhost -->\n"
            "  </interface>\n"
            "  ...\n"
            "</domain>"
        ),
    ),
    FindingCode(
        code=UNKNOWN_SUPPORT,
        title="cannot tell whether the host's QEMU supports this txmode",
        level_rule=LevelRule.ON_UNKNOWN,
        meaning=(
            "Support for the NIC's virtio-net device could not be determined: the emulator is "
            "not trusted by the policy's 'emulators' list (or not owned by root, or writable by "
            "others), it is missing, its probe failed or timed out, or the capability snapshot "
            "has no emulator for the domain's arch or did not probe the device."
        ),
        why=(
            "Nobody knows whether QEMU will accept the NIC, so the policy's 'on_unknown' decides "
            "between failing closed (deny) and letting the start go ahead (allow)."
        ),
        fix=(
            "In CI: take a fresh snapshot on each target host with 'libvirt-txmode snapshot' "
            "and pass it with --caps. On a host: add the emulator to the policy's 'emulators' "
            "globs, make sure it is owned by root and not group/other-writable, see what "
            "'libvirt-txmode probe EMULATOR' says, and raise 'probe_timeout' if the probe "
            "timed out."
        ),
        example=(
            "# policy.yaml\n"
            "emulators:\n"
            "  - /usr/bin/qemu-system-*\n"
            "  - /opt/qemu/bin/qemu-system-x86_64\n"
            "probe_timeout: 10"
        ),
    ),
    FindingCode(
        code=INVALID,
        title="the txmode is not a value libvirt accepts",
        level_rule=LevelRule.ALWAYS_ERROR,
        meaning=(
            "<driver txmode> is something other than 'iothread' or 'timer', the only values "
            "libvirt knows."
        ),
        why="libvirt refuses the domain XML when it is defined, so the domain never starts.",
        fix=(
            "Use txmode='iothread' (QEMU's bottom-half transmit, tx=bh) or txmode='timer' "
            "(tx=timer), or remove the attribute."
        ),
        example="<driver name='qemu' txmode='iothread'/>",
    ),
    FindingCode(
        code=PASSTHROUGH_UNVERIFIABLE,
        title="a QEMU argument or override that this tool cannot prove harmless to a NIC's tx",
        level_rule=LevelRule.PASSTHROUGH,
        meaning=(
            "The domain passes something to QEMU past libvirt (<qemu:commandline> arguments, "
            "<qemu:override> properties) that could set the 'tx' property of a virtio-net "
            "device in a way this tool cannot compute: -readconfig (the setting lives in a "
            "file), -nic and -net (QEMU builds the NIC), an option it does not know, a value it "
            "cannot parse as QEMU would, a -global of 'tx' on a type it cannot place, or an "
            "override of a device that is not one of the domain's NICs. The finding quotes the "
            "argument and says why. Arguments that provably cannot touch a NIC's tx (-fw_cfg, "
            "-smbios, -name, a -global or -set of another property, a -device that is not "
            "virtio-net ...) never give this finding, and a tx that can be computed is checked "
            "like any txmode, with the route named."
        ),
        why=(
            "The gate's promise is that no virtio-net device gets a tx the policy forbids. What "
            "it cannot prove safe it must not assume safe: libvirt hands these arguments to QEMU "
            "unchecked, so they are the one way around <driver txmode>."
        ),
        fix=(
            "Express the setting in a form the tool can compute: <driver txmode> on the "
            "interface, '-global virtio-net-pci.tx=bh' or '-device virtio-net-pci,...,tx=bh' "
            "written out, not in a -readconfig file or a -nic. If the argument is needed and "
            "known to be harmless, the policy's 'passthrough: warn' (or 'allow') lowers the "
            "finding for every domain."
        ),
        example=(
            "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
            "  <qemu:arg value='-global'/>\n"
            "  <qemu:arg value='virtio-net-pci.tx=bh'/>   <!-- computed and checked -->\n"
            "</qemu:commandline>"
        ),
    ),
    FindingCode(
        code=START_WILL_FAIL,
        title="QEMU or libvirt will refuse to start the domain as written",
        level_rule=LevelRule.ALWAYS_WARNING,
        meaning=(
            "Something the domain asks for cannot work, so the start fails before any guest "
            "runs, and the tx the tool would otherwise check never reaches a device: for "
            "example '-set device.net0.tx=...' where libvirt passes the NIC to QEMU as JSON "
            "(QEMU exits with 'there is no device \"net0\" defined'), a -set that comes "
            "before the -device it names, an <address type='virtio-mmio'/> on an x86 pc or q35 "
            "machine (no virtio-mmio bus), a vhostuser NIC without a virtio model on a libvirt "
            "that refuses it (model-less: before 11.1.0), or a tx left on a device that has "
            "no tx property (an override that makes a NIC with a txmode an e1000)."
        ),
        why=(
            "Nothing unsafe starts, but the domain does not start either; the finding says why "
            "instead of reporting a txmode that will never apply."
        ),
        fix=(
            "Use <driver txmode> on the interface (or a <qemu:override> of the NIC's 'tx' "
            "property) instead of -set for a device libvirt creates; put a -set after the "
            "-device it edits."
        ),
        example="<driver name='qemu' txmode='iothread'/>",
    ),
    FindingCode(
        code=EXCEPTION_EXPIRED,
        title="a policy exception that would silence this finding has expired",
        level_rule=LevelRule.ALWAYS_WARNING,
        meaning=(
            "An entry of the policy's 'exceptions' matches a finding of this NIC, but its "
            "'expires' date has passed: it no longer applies, so the finding it used to silence "
            "is reported again beside this one, at its own level (under action 'enforce' a "
            "violation is an error again, and the hook refuses the start)."
        ),
        why=(
            "An exception is a promise to fix something by a date. When the date passes, the "
            "tool says so at the NIC it was granted for, instead of silencing it for ever or "
            "refusing the start with no hint that an exception was meant to cover it."
        ),
        fix=(
            "Fix the NIC (the finding reported with this one says how), or, if the exception "
            "still has to hold, give it a new 'expires' date and say why in its 'reason'. "
            "Remove exceptions that match nothing any more."
        ),
        example=(
            "# policy.yaml\n"
            "exceptions:\n"
            "  - match: {domain: legacy-01, code: txmode-not-allowed}\n"
            "    reason: vendor appliance needs timer until its 2027 upgrade (TICKET-123)\n"
            "    expires: 2027-03-31"
        ),
    ),
    FindingCode(
        code=XML_INVALID,
        title="the input is not a domain XML document this tool will read",
        level_rule=LevelRule.ALWAYS_ERROR,
        meaning=(
            "The file is not well-formed XML, is empty, is larger than 64 MiB (this tool's "
            "bound; libvirt sets none) or beyond libvirt's own parser limits (elements nested "
            "more than 257 deep, text nodes over 10,000,000 bytes), has a DOCTYPE, or (given to "
            "the hook) its root element is not <domain>; validate-domain skips well-formed XML "
            "of another root element (a <network> kept beside the domains) and counts it in its "
            "summary. Its NICs were not checked; the other inputs were."
        ),
        why=(
            "Domain XML is untrusted input: the parser resolves no entities and refuses DTDs "
            "rather than guess. libvirt would not define such a document either."
        ),
        fix=(
            "Fix the XML at the reported line ('xmllint --noout FILE' shows every problem), "
            "remove any DOCTYPE, and check only domain XML ('virsh dumpxml DOMAIN' gives a "
            "canonical one)."
        ),
        example="<domain type='kvm'>\n  <name>vm1</name>\n  ...\n</domain>",
    ),
)


REGISTRY: Mapping[str, FindingCode] = MappingProxyType({c.code: c for c in _REGISTERED})
CODES = tuple(REGISTRY)


def level(code: str, **settings: str) -> Optional[Level]:
    """``level_of`` for a registered code (KeyError for an unknown one)."""
    return level_of(REGISTRY[code].level_rule, **settings)
