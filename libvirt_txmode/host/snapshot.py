"""Capability snapshots: one JSON document per host, and its one codec.

A snapshot is taken on a host (``libvirt_host.take_snapshot``, outside the hook, where calling
libvirt is safe), read by the hook as a warm source of probe answers, and read by
``validate-domain --caps`` in CI, where there is no libvirt at all. ``Snapshot.to_json`` and
``parse_snapshot`` are the only writer and reader of the format (docs/operator-guide.md,
"Capability snapshots").
Standard library only, like the model it fills.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import __version__
from ..common import files, paths
from ..common.records import SLOTS
from ..engine.model import Guest, HostCapabilities, Support, SupportState, libvirt_version_text

FORMAT = "libvirt-txmode-snapshot"
FORMAT_VERSION = 1
DEFAULT_SNAPSHOT_PATH = paths.SNAPSHOT
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024


class SnapshotError(ValueError):
    """A snapshot that cannot be read or is not a valid document; the message names the file."""


@dataclass(frozen=True, **SLOTS)
class Snapshot:
    """A capability snapshot: one host's capabilities and the emulator identities they hold for."""

    host: str
    source: str
    capabilities: HostCapabilities
    # emulator path -> identity key the probes were taken for (see qemu.EmulatorIdentity.key)
    identities: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    tool: str = ""
    libvirt: Mapping[str, Any] = field(default_factory=dict)
    domain_capabilities: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The document ``parse_snapshot`` reads back to an equal Snapshot."""
        caps = self.capabilities
        emulators: dict[str, Any] = {}
        for path in sorted(set(caps.devices) | set(caps.emulator_errors)):
            entry: dict[str, Any] = {
                "identity": self.identities.get(path),
                "error": caps.emulator_errors.get(path),
                "devices": {
                    device: support_to_json(support)
                    for device, support in sorted(caps.devices.get(path, {}).items())
                },
            }
            # Optional keys, written only when known (absent or null: unknown); readers of
            # version 1 that predate them ignore them.
            if path in caps.ancestry:
                entry["ancestry"] = ancestry_to_json(caps.ancestry[path])
            if path in caps.device_json:
                entry["device_json"] = caps.device_json[path]
            emulators[path] = entry
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tool": self.tool or __version__,
            "host": self.host,
            "created": self.created,
            "arch": caps.arch,
            "vhost_net": caps.vhost_net,
            "libvirt": _libvirt_facts(self.libvirt, caps.libvirt_version),
            "guests": [
                {
                    "arch": g.arch,
                    "emulator": g.emulator,
                    "domain_types": list(g.domain_types),
                    "machine": g.machine,
                }
                for g in caps.guests
            ],
            "networks": {name: {"forward": mode} for name, mode in sorted(caps.networks.items())},
            "domain_capabilities": dict(self.domain_capabilities),
            "emulators": emulators,
        }
        return document


def libvirt_version_number(text: str) -> Optional[int]:
    """``libvirt_version_text``'s reverse; None for anything that is not MAJOR.MINOR.MICRO."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 6 for p in parts):
        return None
    major, minor, micro = (int(p) for p in parts)
    if minor > 999 or micro > 999:
        return None
    return major * 1_000_000 + minor * 1000 + micro


def _libvirt_facts(recorded: Mapping[str, Any], version: Optional[int]) -> dict[str, Any]:
    facts = dict(recorded)
    if version is not None and "library_version" not in facts:
        facts["library_version"] = libvirt_version_text(version)
    return facts


def support_to_json(support: Support) -> dict[str, str]:
    return {"state": support.state.value, "detail": support.detail, "method": support.method}


def support_from_json(entry: object) -> Support:
    if not isinstance(entry, dict):
        raise TypeError("device entry is not an object")
    state = entry.get("state")
    try:
        parsed = SupportState(state)
    except ValueError:
        known = ", ".join(repr(s.value) for s in SupportState)
        raise ValueError(f"'state' is {state!r}, not one of {known}") from None
    return Support(parsed, str(entry.get("detail", "")), str(entry.get("method", "")))


def ancestry_to_json(ancestry: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """QEMU type -> its ancestors, parent first: the one JSON form (snapshot and probe cache)."""
    return {name: list(chain) for name, chain in sorted(ancestry.items())}


def ancestry_from_json(value: object, where: str) -> Optional[dict[str, tuple[str, ...]]]:
    """``ancestry_to_json``'s reverse; None (unknown) for a missing or null value. ValueError
    names ``where`` when the value is not an object of lists of strings."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    result: dict[str, tuple[str, ...]] = {}
    for name, chain in value.items():
        if not isinstance(chain, list) or not all(isinstance(t, str) for t in chain):
            raise ValueError(f"{where}[{name!r}] is not a list of strings")
        result[name] = tuple(chain)
    return result


def write_snapshot(path: str, snapshot: Snapshot) -> None:
    """Atomically, as the hook may be reading the old one."""
    data = json.dumps(snapshot.to_json(), indent=1, sort_keys=False).encode() + b"\n"
    files.write_atomic(path, data, mode=0o644)


def load_snapshot(
    path: str, *, require_root_owned: Optional[bool] = None, name: Optional[str] = None
) -> Snapshot:
    if require_root_owned is None:
        require_root_owned = os.geteuid() == 0
    if require_root_owned:
        # As root the snapshot decides which answers are believed: the whole path must be
        # trusted, the rule the hook and the policy follow (files.path_trust_problem), before
        # anything is opened (a missing file is reported as unreadable, below).
        problem = files.path_trust_problem(path) if os.path.lexists(path) else None
        if problem is not None:
            raise SnapshotError(f"{path}: refused: {problem}")
    try:
        # Regular files only, opened without blocking: a FIFO in its place must not hang the
        # hook (and with it `virsh start`) or CI. A root-owned link is allowed by the trust rule.
        raw, _info = files.read_regular(path, MAX_SNAPSHOT_BYTES, follow_symlinks=True)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read snapshot: {exc.strerror or exc}") from None
    if len(raw) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{path}: larger than {MAX_SNAPSHOT_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise SnapshotError(f"{path}: not a valid snapshot: not JSON: {exc}") from None
    return parse_snapshot(data, path, name)


def parse_snapshot(data: Any, source: str, name: Optional[str] = None) -> Snapshot:
    """Validate a decoded snapshot document; SnapshotError names ``source`` and the bad key."""
    try:
        return _parse_snapshot(data, source, name)
    except _Invalid as exc:
        raise SnapshotError(f"{source}: not a valid snapshot: {exc}") from None


class _Invalid(Exception):
    pass


def _get(mapping: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise _Invalid(f"{where}: missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise _Invalid(f"{where}: {key!r} is not {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


_KIND_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true or false",
}


def _guest(g: Any, where: str) -> Guest:
    if not isinstance(g, dict):
        raise _Invalid(f"{where} is not an object")
    types = _get(g, "domain_types", list, where)
    if not all(isinstance(t, str) for t in types):
        raise _Invalid(f"{where}: 'domain_types' is not a list of strings")
    machine = g.get("machine")
    return Guest(
        _get(g, "arch", str, where),
        _get(g, "emulator", str, where),
        tuple(types),
        machine if isinstance(machine, str) else None,
    )


@dataclass(**SLOTS)
class _Emulators:
    """The ``emulators`` object, entry by entry: answers, errors and the identities probed."""

    devices: dict[str, dict[str, Support]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)
    ancestry: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    device_json: dict[str, bool] = field(default_factory=dict)

    def add(self, path: str, entry: Any, on_host: str) -> None:
        where = f"emulators[{path!r}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where} is not an object")
        if entry.get("error"):
            error = str(entry["error"])
            self.errors[path] = error if error.endswith(on_host) else error + on_host
            return
        found: dict[str, Support] = {}
        for device, support in _get(entry, "devices", dict, where).items():
            try:
                found[device] = support_from_json(support)
            except (ValueError, KeyError, TypeError) as exc:
                raise _Invalid(f"{where}.devices[{device!r}]: {exc}") from None
        self.devices[path] = found
        if entry.get("identity"):
            self.identities[path] = str(entry["identity"])
        self._host_facts(path, entry, where)

    def _host_facts(self, path: str, entry: dict[str, Any], where: str) -> None:
        """``ancestry`` and ``device_json``: added after 0.3.0 and optional (absent or null in older
        snapshots: unknown)."""
        try:
            ancestry = ancestry_from_json(entry.get("ancestry"), f"{where}.ancestry")
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if ancestry is not None:
            self.ancestry[path] = ancestry
        device_json = entry.get("device_json")
        if device_json is not None:
            if not isinstance(device_json, bool):
                raise _Invalid(f"{where}: 'device_json' is not true, false or null")
            self.device_json[path] = device_json


def _parse_snapshot(data: Any, source: str, name: Optional[str]) -> Snapshot:
    if not isinstance(data, dict):
        raise _Invalid("the document is not a JSON object")
    if data.get("format") != FORMAT:
        raise _Invalid(f"'format' is not {FORMAT!r}")
    if data.get("version") != FORMAT_VERSION:
        raise _Invalid(
            f"unsupported version {data.get('version')!r} (this tool reads {FORMAT_VERSION})"
        )
    host = _get(data, "host", str, "top level")
    guests = [
        _guest(g, f"guests[{i}]") for i, g in enumerate(_get(data, "guests", list, "top level"))
    ]
    emulators = _Emulators()
    for path, entry in _get(data, "emulators", dict, "top level").items():
        emulators.add(path, entry, f" (on {name or host})")
    devices, errors, identities = emulators.devices, emulators.errors, emulators.identities
    libvirt = _optional(data, "libvirt", dict) or {}
    caps = HostCapabilities(
        name=name or host,
        guests=tuple(guests),
        devices=devices,
        emulator_errors=errors,
        arch=_optional(data, "arch", str),
        networks=_networks(data),
        vhost_net=_optional(data, "vhost_net", bool),
        ancestry=emulators.ancestry,
        device_json=emulators.device_json,
        libvirt_version=_libvirt_version(libvirt),
    )
    return Snapshot(
        host=host,
        source=source,
        capabilities=caps,
        identities=identities,
        created=str(data.get("created", "")),
        tool=str(data.get("tool", "")),
        libvirt=libvirt,
        domain_capabilities=_optional(data, "domain_capabilities", dict) or {},
    )


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    """Keys added after the first release: absent in older snapshots, which stay readable."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise _Invalid(f"top level: {key!r} is not {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


def _libvirt_version(libvirt: dict[str, Any]) -> Optional[int]:
    """``libvirt.library_version`` (written since 0.1): absent or null is unknown, and the rules
    then follow the newest libvirt they know; anything but MAJOR.MINOR.MICRO is refused."""
    text = libvirt.get("library_version")
    if text is None:
        return None
    number = libvirt_version_number(text) if isinstance(text, str) else None
    if number is None:
        raise _Invalid(f"libvirt: 'library_version' is {text!r}, not MAJOR.MINOR.MICRO")
    return number


def _networks(data: dict[str, Any]) -> dict[str, str]:
    networks = _optional(data, "networks", dict) or {}
    for name, entry in networks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("forward", ""), str):
            raise _Invalid(f"networks[{name!r}] is not an object with a string 'forward'")
    return {name: entry.get("forward", "") for name, entry in networks.items()}
