"""check_domain for one validate-domain run, remembering decisions per shape of domain.

A repository's domains repeat themselves: the same NICs on the same networks with the same
models, under different names and MACs. What ``check.check_domain`` decides depends only on
the inputs named in ``_shape`` (the domain's type, arch, machine, emulator and every NIC's
fields, with the name and the MACs reduced to which policy patterns they fit), so a domain of a
shape already seen gets the findings of the first one, re-addressed to its own file, name, NIC
lines and MACs. The engine stays pure; this cache lives as long as the run's ``Checker``.
"""

from __future__ import annotations

import dataclasses
import re
from fnmatch import translate
from operator import itemgetter

from ..engine.check import ALL_HOSTS, check_domain
from ..engine.domain_xml import NIC_FIELDS, NicFields, domain_from_parts
from ..engine.exceptions import apply
from ..engine.model import Domain, Finding, Level
from ..engine.policy_schema import MATCH_KEYS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Optional

    # What one finding of a remembered shape keeps: all but file, line, domain name and MAC.
    _Template = tuple[int, str, Level, str, Optional[str], Optional[str], Optional[str]]

    from ..engine.model import HostCapabilities
    from ..engine.policy import Policy

# The policy keys a rule may match on, and the ones _shape knows how to reduce; a policy schema
# with another key turns the cache off rather than risk a stale answer.
_SHAPED_KEYS = frozenset(("domain", "network", "bridge", "type", "model", "mac"))
# A bound, so that a corpus of all-different domains costs no more memory than a repetitive one.
MAX_SHAPES = 4096

# Domain's fields as parse_parts gives them (all but the NICs).
_DOMAIN_FIELDS = (
    "name", "file", "line", "type", "uuid", "arch", "machine", "emulator", "qemu_args",
    "overrides", "qemu_capabilities", "has_mmio_devices",
)  # fmt: skip


# A NIC's fields but its index, line and MAC (NIC_FIELDS 0, 1 and 3): what its findings depend on
# besides the policy's view of the MAC.
_NIC_SHAPE = itemgetter(2, 4, 5, 6, 7, 8, 9, 10, 11)
# Finding's first fields, in the order Checker passes them positionally.
_FINDING_ORDER = (
    "file", "line", "domain", "code", "level", "message", "interface", "mac", "txmode", "rule",
    "host",
)  # fmt: skip


def _matcher(pattern: str) -> Callable[[str], object]:
    """fnmatchcase(value, pattern) as one compiled regex's match."""
    return re.compile(translate(pattern)).match


class Checker:
    """``check(domain)`` is ``check_domain(domain, policy, hosts, host_mode)``, faster."""

    def __init__(
        self,
        policy: Policy,
        hosts: Sequence[HostCapabilities],
        host_mode: str = ALL_HOSTS,
        today: str = "",
    ) -> None:
        self.policy = policy
        # The policy's exceptions, applied to each domain's findings once they are addressed
        # to it (they match names and MACs, which a shape leaves out); "" when there are none.
        self.today = today if policy.exceptions else ""
        self.hosts = hosts
        self.host_mode = host_mode
        self.enabled = set(MATCH_KEYS) <= _SHAPED_KEYS
        # fnmatchcase's regexes, compiled once (fnmatchcase looks each up in a cache per call).
        self.name_patterns = tuple(_matcher(r.match.domain) for r in policy.rules if r.match.domain)
        self.mac_patterns = tuple(
            _matcher(r.match.mac.lower()) for r in policy.rules if r.match.mac
        )
        self.shapes: dict[tuple[object, ...], tuple[_Template, ...]] = {}
        # Findings are made positionally (twice as fast as by keyword) while Finding's fields
        # start in the order _FINDING_ORDER expects.
        order = tuple(f.name for f in dataclasses.fields(Finding))
        self.positional = order[: len(_FINDING_ORDER)] == _FINDING_ORDER

    def check(self, domain: Domain) -> list[Finding]:
        fields = {name: getattr(domain, name) for name in _DOMAIN_FIELDS}
        nics = [tuple(getattr(nic, name) for name in NIC_FIELDS) for nic in domain.nics]
        return self.check_parts(fields, nics, domain)

    def check_parts(
        self,
        fields: dict[str, Any],
        nics: list[NicFields],
        domain: Optional[Domain] = None,
    ) -> list[Finding]:
        """The findings of the domain ``domain.parse_parts`` gave; its records are made only
        for a shape not seen yet."""
        found = self._check_parts(fields, nics, domain)
        if self.today:
            return apply(found, self.policy, self.today)
        return found

    def _check_parts(
        self,
        fields: dict[str, Any],
        nics: list[NicFields],
        domain: Optional[Domain] = None,
    ) -> list[Finding]:
        # <qemu:commandline>/<qemu:override> settings put findings on their own lines (and
        # devices of their own): rare, so simply not remembered.
        if not self.enabled or fields["qemu_args"] or fields["overrides"]:
            if domain is None:
                domain = domain_from_parts(fields, nics)
            return check_domain(domain, self.policy, self.hosts, self.host_mode)
        key = self._shape(fields, nics)
        templates = self.shapes.get(key)
        if templates is None:
            if domain is None:
                domain = domain_from_parts(fields, nics)
            found = check_domain(domain, self.policy, self.hosts, self.host_mode)
            templates = self._remember(key, domain, found)
            if templates is None:
                return found
        file, name = fields["file"], fields["name"]
        # NIC_FIELDS: 1 is the line, 3 the MAC.
        if self.positional:
            return [
                Finding(file, nics[i][1], name, code, level, message, i, nics[i][3], tx, rule, host)
                for i, code, level, message, tx, rule, host in templates
            ]
        return [
            Finding(
                file=file,
                line=nics[index][1],
                domain=name,
                code=code,
                level=level,
                message=message,
                interface=index,
                mac=nics[index][3],
                txmode=txmode,
                rule=rule,
                host=host,
            )
            for index, code, level, message, txmode, rule, host in templates
        ]

    def _shape(self, fields: dict[str, Any], nics: list[NicFields]) -> tuple[object, ...]:
        mac_patterns = self.mac_patterns
        if mac_patterns:
            # Policy.fits: a missing or empty MAC fits no pattern.
            shapes: tuple[object, ...] = tuple(
                (
                    _NIC_SHAPE(nic),
                    tuple(bool(p(nic[3].lower())) for p in mac_patterns) if nic[3] else None,
                )
                for nic in nics
            )
        else:
            shapes = tuple(map(_NIC_SHAPE, nics))
        name = fields["name"]
        return (
            fields["type"],
            fields["arch"],
            fields["machine"],
            fields["emulator"],
            fields["has_mmio_devices"],
            tuple([bool(p(name)) for p in self.name_patterns]),
            shapes,
        )

    def _remember(
        self, key: tuple[object, ...], domain: Domain, found: list[Finding]
    ) -> Optional[tuple[_Template, ...]]:
        """The findings as templates, or None when one of them is not a NIC's own (then the
        shape is not remembered: re-addressing could not give the same finding)."""
        templates: list[_Template] = []
        for finding in found:
            index = finding.interface
            if (
                index is None
                or not 0 <= index < len(domain.nics)
                or finding.line != domain.nics[index].line
                or finding.mac != domain.nics[index].mac
                or finding.file != domain.file
                or finding.domain != domain.name
                or finding.column is not None
            ):
                return None
            templates.append(
                (
                    index,
                    finding.code,
                    finding.level,
                    finding.message,
                    finding.txmode,
                    finding.rule,
                    finding.host,
                )
            )
        frozen = tuple(templates)
        if len(self.shapes) < MAX_SHAPES:
            self.shapes[key] = frozen
        return frozen
