"""QOM type ancestry: which types a virtio-net device descends from, from QEMU's
``qom-list-types`` answer. A ``-global TYPE.tx=...`` reaches every device below TYPE, so the
engine needs each virtio-net type's chain of parents to judge it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

ANCESTRY_ID = "ancestry"
ANCESTRY_REQUEST: dict[str, object] = {
    "execute": "qom-list-types",
    "arguments": {"abstract": True},
    "id": ANCESTRY_ID,
}
# Types kept: these, what descends from them, and any type named virtio-net* (virtio-net-ccw).
ANCESTRY_ROOTS = ("virtio-net-device", "virtio-net-pci-base")
ANCESTRY_PREFIX = "virtio-net"
# QOM's root: every device's chain ends here (QEMU 7.2's deepest device chain has 6 links).
QOM_ROOT = "object"
_MAX_CHAIN = 64


def ancestry_from_reply(
    reply: Optional[Mapping[str, object]],
) -> tuple[Optional[dict[str, tuple[str, ...]]], str]:
    """The virtio-net types' ancestry from a ``qom-list-types`` reply, or None and why not."""
    if reply is None:
        return None, "no answer to qom-list-types"
    types = reply.get("return")
    if not isinstance(types, list):
        error = reply.get("error")
        desc = error.get("desc", error) if isinstance(error, dict) else reply
        return None, f"qom-list-types failed: {desc}"
    return ancestry_of(types)


def ancestry_of(types: Sequence[object]) -> tuple[Optional[dict[str, tuple[str, ...]]], str]:
    """From ``qom-list-types`` entries (``{"name", "parent"}``): each kept type's chain.

    A type whose chain does not reach "object" (a parent the answer does not list, a loop) is
    left out rather than given half a chain: a -global names any ancestor, and a chain cut short
    would say it does not apply. QEMU before 2.10 gives no parents at all: None.
    """
    parents: dict[str, Optional[str]] = {}
    for entry in types:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            parent = entry.get("parent")
            parents[entry["name"]] = parent if isinstance(parent, str) else None
    if not any(parent is not None for parent in parents.values()):
        return None, "qom-list-types gave no parents (QEMU before 2.10)"
    kept: dict[str, tuple[str, ...]] = {}
    for name in parents:
        chain = _chain(name, parents)
        if chain is None:
            continue
        if name.startswith(ANCESTRY_PREFIX) or any(
            root == name or root in chain for root in ANCESTRY_ROOTS
        ):
            kept[name] = chain
    return dict(sorted(kept.items())), ""


def _chain(name: str, parents: Mapping[str, Optional[str]]) -> Optional[tuple[str, ...]]:
    chain: list[str] = []
    current = parents.get(name)
    while current is not None:
        if current in chain or current == name or len(chain) >= _MAX_CHAIN:
            return None
        chain.append(current)
        if current not in parents:
            return None
        current = parents[current]
    return tuple(chain) if chain and chain[-1] == QOM_ROOT else None
