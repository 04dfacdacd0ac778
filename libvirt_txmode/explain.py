"""What each finding code means, why it matters and how to fix it.

One entry per stable code of ``findings.CODES``: ``libvirt-txmode explain CODE`` prints it, the
SARIF report carries it as rule help, and the man page lists the titles. Like yamllint's rule
docstrings, this is the user documentation of the checks, so every fact here is one DESIGN.md
records.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from . import findings as codes
from .findings import Level

WIDTH = 78


@dataclass(frozen=True)
class Explanation:
    code: str
    title: str
    # The level with the shipped policy; ``level_note`` says what moves it.
    level: Level
    level_note: str
    meaning: str
    why: str
    fix: str
    example: str

    def sections(self) -> tuple[tuple[str, str], ...]:
        return (
            ("What it means", self.meaning),
            ("Why it matters", self.why),
            ("How to fix it", self.fix),
        )


_ENTRIES = (
    Explanation(
        code=codes.UNSUPPORTED,
        title="the host's QEMU has no 'tx' property for this NIC's virtio-net device",
        level=Level.ERROR,
        level_note="error with policy action 'enforce', warning with 'audit'",
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
    Explanation(
        code=codes.NOT_ALLOWED,
        title="the site policy does not allow this txmode for this NIC",
        level=Level.ERROR,
        level_note="error with policy action 'enforce', warning with 'audit'",
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
    Explanation(
        code=codes.REQUIRED,
        title="the site policy requires a txmode on this virtio NIC",
        level=Level.ERROR,
        level_note="error with policy action 'enforce', warning with 'audit'",
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
    Explanation(
        code=codes.INEFFECTIVE,
        title="the txmode is set but QEMU will not use it",
        level=Level.WARNING,
        level_note="set by the policy's 'ineffective': error, warn (the default) or ignore",
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
    Explanation(
        code=codes.UNKNOWN_SUPPORT,
        title="cannot tell whether the host's QEMU supports this txmode",
        level=Level.ERROR,
        level_note="error with policy 'on_unknown: deny' (the default), warning with 'allow'",
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
    Explanation(
        code=codes.INVALID,
        title="the txmode is not a value libvirt accepts",
        level=Level.ERROR,
        level_note="always an error",
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
    Explanation(
        code=codes.XML_INVALID,
        title="the input is not a domain XML document this tool will read",
        level=Level.ERROR,
        level_note="always an error",
        meaning=(
            "The file is not well-formed XML, is empty, is larger than 64 MiB (this tool's "
            "bound; libvirt sets none) or beyond libxml2's limits (256 levels, 10,000,000-byte "
            "text nodes), has a DOCTYPE, or (given to the hook) its root element is not "
            "<domain>; validate-domain skips well-formed XML of another root element (a "
            "<network> kept beside the domains) and counts it in its summary. Its NICs were not "
            "checked; the other inputs were."
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

EXPLANATIONS: Mapping[str, Explanation] = MappingProxyType({e.code: e for e in _ENTRIES})


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="  ")


def explain(code: str) -> str:
    """The text page for ``code`` (``libvirt-txmode explain CODE``); KeyError if unknown."""
    item = EXPLANATIONS[code]
    parts = [f"{item.code}: {item.title}", "", f"Level: {item.level.value} ({item.level_note})"]
    for heading, body in item.sections():
        parts += ["", heading, _wrap(body)]
    parts += ["", "Example", textwrap.indent(item.example, "  ")]
    return "\n".join(parts) + "\n"


def explain_markdown(code: str) -> str:
    """The same page in Markdown, for SARIF rule help (code scanning UIs render it)."""
    item = EXPLANATIONS[code]
    language = "yaml" if item.example.startswith("#") else "xml"  # policy or domain snippet
    parts = [f"**{item.code}**: {item.title}", "", f"Level: {item.level.value} ({item.level_note})"]
    for heading, body in item.sections():
        parts += ["", f"### {heading}", "", body]
    parts += ["", "### Example", "", f"```{language}", item.example, "```"]
    return "\n".join(parts) + "\n"
