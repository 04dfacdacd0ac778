"""Reading, parsing and checking validate-domain's inputs in order, in this process or in a
worker's (parallel.py): each outcome is handed on as it is made.
"""

from __future__ import annotations

import errno
import io
import time
from collections.abc import Iterable, Sequence

from ..common import logs
from ..engine.domain_xml import (
    MAX_XML_BYTES,
    DomainXMLError,
    NotADomainError,
    make_parser,
    parse_domain,
    parse_parts,
    read_bounded,
)
from ..engine.wording import XML_INVALID, Finding, Level
from .inputs import Input, read_input
from .memo import Checker
from .sinks import CHECKED, SKIPPED, Record, finding_order

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Optional

    from ..engine.model import HostCapabilities
    from ..engine.policy import Policy

LOG = logs.get("libvirt_txmode")


def process(  # noqa: C901, PLR0912 - the order of validate-domain's steps is the order of its options
    items: Iterable[Input],
    stdin: IO[bytes],
    check: Optional[Callable[[dict[str, Any], list[Any]], list[Finding]]],
    emit: Callable[[Record], None],
) -> Optional[str]:
    """Read, parse and (with ``check``) check ``items`` in order, handing each outcome to
    ``emit`` as it is made; stops at an unreadable input and returns why (None: all read)."""

    parser = make_parser()  # one per run of inputs (and process), not one per document
    # With a check, the domain as parse_parts gives it (memo.Checker makes records only for a
    # shape it has not seen); without, the Domain, kept until the host is probed.
    parse: Callable[..., Any] = parse_domain if check is None else parse_parts
    clock = time.perf_counter
    for item in items:
        began = clock()
        try:
            if item.path is None:
                data: Optional[bytes] = read_bounded(stdin, MAX_XML_BYTES)
            else:
                data = read_input(item, MAX_XML_BYTES)
        except DomainXMLError as exc:
            # Not timed: the file was never parsed.
            emit((CHECKED, item.label, None, [_invalid(item.label, exc)], 0, 0))
            continue
        except OSError as exc:
            if item.regular_only and exc.errno == errno.ELOOP:
                data = None  # replaced by a symlink since the walk: never followed
            else:
                return f"cannot read {item.label}: {exc.strerror}"
        if data is None:
            emit((SKIPPED, item.label))
            continue
        try:
            outcome = parse(data, item.label, parser=parser)
        except NotADomainError as exc:
            # A libvirt <network> or <pool> beside the domains: skipped, not an error.
            LOG.info("skipped %s: %s", item.label, exc.message)
            emit((SKIPPED, item.label))
            continue
        except DomainXMLError as exc:
            emit((CHECKED, item.label, clock() - began, [_invalid(item.label, exc)], 0, 0))
            continue
        if isinstance(outcome, tuple):
            assert check is not None  # noqa: S101 - parts are asked for only then
            found = check(*outcome)
            if len(found) > 1:
                found.sort(key=finding_order)
            emit((CHECKED, item.label, clock() - began, found, 1, len(outcome[1])))
        else:
            emit((CHECKED, item.label, clock() - began, outcome, 1, len(outcome.nics)))
    return None


def _invalid(label: str, exc: Exception) -> Finding:
    line = getattr(exc, "line", 1)
    column = getattr(exc, "column", None)  # libxml2's, when it gives one
    message = getattr(exc, "message", str(exc))
    return Finding(label, line, "-", XML_INVALID, Level.ERROR, message, column=column)


def check_slice(
    policy: Policy, hosts: list[HostCapabilities], host_mode: str, part: Sequence[Input]
) -> tuple[list[Record], Optional[str]]:
    """A worker's slice (parallel.py): module-level, so that it and its arguments pickle."""

    records: list[Record] = []
    check = Checker(policy, hosts, host_mode).check_parts
    # A worker never gets standard input (see _validate): an empty one stands in.
    return records, process(part, io.BytesIO(), check, records.append)
