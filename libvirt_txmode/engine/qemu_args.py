"""``<qemu:commandline>`` arguments as QEMU itself reads them: the options that can reach a NIC's
``tx``, and every argument that cannot be proven harmless to it.

libvirt appends these arguments to QEMU's command line verbatim, after the devices it builds, so
a ``tx`` set there reaches a virtio-net device exactly as ``<driver txmode>`` would. This module
is the syntax half of the gate: it splits the arguments into options the way QEMU's option table
does, parses each value with QEMU's own grammar (QemuOpts with ``,,`` escapes and the implied
``driver``, the ``-global``/``-set`` short forms, QEMU's JSON with either quote), and keeps what
the engine must judge (``passthrough.py``). What it drops is provably harmless; what it cannot
read is kept as unverifiable, never assumed harmless. Pure: no I/O.

Followed: QEMU 7.2 ``softmmu/vl.c`` (option loop, ``-set``), ``softmmu/qdev-monitor.c``
(``qemu_global_option``), ``util/qemu-option.c`` (``get_opt_name_value``, ``opts_parse_id``,
``qemu_opts_to_qdict``), ``qobject/json-lexer.c``/``json-parser.c``; checked against QEMU 10.0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Optional

from .model import QemuArg

# QEMU's option table (qemu-options.hx): options that take a value. Needed to tell an option
# from the value of the one before it, the way QEMU's lookup_opt does.
_WITH_VALUE = frozenset(
    (
        "D", "L", "M", "accel", "acpitable", "action", "add-fd", "append", "audio", "audiodev",
        "bios", "blockdev", "boot", "cdrom", "chardev", "chroot", "compat", "cpu", "d",
        "debugcon", "device", "dfilter", "display", "drive", "dtb", "dump-vmstate", "echr",
        "fda", "fdb", "fsdev", "fw_cfg", "g", "gdb", "global", "hda", "hdb", "hdc", "hdd",
        "icount", "incoming", "initrd", "iscsi", "k", "kernel", "loadvm", "m", "machine",
        "mem-path", "mon", "monitor", "msg", "mtdblock", "name", "net", "netdev", "nic", "numa",
        "object", "option-rom", "overcommit", "parallel", "pflash", "pidfile", "plugin",
        "prom-env", "qmp", "qmp-pretty", "qtest", "qtest-log", "readconfig", "rotate", "rtc",
        "run-with", "runas", "sandbox", "sd", "seed", "semihosting-config", "serial", "set",
        "smbios", "smp", "spice", "tpmdev", "trace", "usbdevice", "uuid", "vga", "virtfs",
        "vnc", "watchdog-action", "xen-domid",
    )
)  # fmt: skip
_WITHOUT_VALUE = frozenset(
    (
        "S", "async-teardown", "audio-help", "daemonize", "enable-kvm", "enable-sync-profile",
        "full-screen", "help", "mem-prealloc", "no-acpi", "no-fd-bootchk", "no-hpet",
        "no-reboot", "no-shutdown", "no-user-config", "nodefaults", "nographic", "old-param",
        "only-migratable", "portrait", "preconfig", "s", "semihosting", "singlestep",
        "snapshot", "usb", "version", "win2k-hack", "xen-attach", "xen-domid-restrict",
    )
)  # fmt: skip
# Options that provably cannot create a virtio-net device, register a -global or edit a
# device's options: they name the guest, feed firmware, add backends (a -netdev is a backend,
# never the device), storage, chardevs, monitors and user-creatable objects (not devices).
_HARMLESS = frozenset(
    (
        "D", "L", "S", "accel", "acpitable", "action", "add-fd", "append", "async-teardown",
        "audiodev", "bios", "blockdev", "boot", "cdrom", "chardev", "chroot", "cpu", "d",
        "daemonize", "debugcon", "dfilter", "display", "drive", "dtb", "echr", "enable-kvm",
        "fda", "fdb", "fsdev", "full-screen", "fw_cfg", "g", "gdb", "hda", "hdb", "hdc", "hdd",
        "help", "icount", "initrd", "iscsi", "k", "kernel", "m", "mem-path", "mem-prealloc",
        "mon", "monitor", "msg", "mtdblock", "name", "netdev", "no-acpi", "no-fd-bootchk",
        "no-hpet", "no-reboot", "no-shutdown", "no-user-config", "nodefaults", "nographic",
        "numa", "object", "only-migratable", "option-rom", "overcommit", "parallel", "pflash",
        "pidfile", "portrait", "prom-env", "qmp", "qmp-pretty", "rtc", "runas", "s", "sandbox",
        "sd", "seed", "serial", "singlestep", "smbios", "smp", "snapshot", "tpmdev", "trace",
        "usb", "uuid", "version", "vga", "virtfs", "vnc", "watchdog-action", "win2k-hack",
    )
)  # fmt: skip
_WHY = {
    "plugin": "-plugin loads native code into QEMU, which can do anything",
    "readconfig": "-readconfig reads options from a file this tool cannot see",
    "nic": "-nic makes QEMU build a NIC itself, with its own defaults",
    "net": "-net can make QEMU build a NIC itself, with its own defaults",
}
# qemu_global_option's sscanf("%63[^.=].%63[^=]%n") and qemu_set_option's
# sscanf("%63[^.].%63[^.].%63[^=]%n"): the short forms, each part at most 63 characters.
_GLOBAL_SHORT = re.compile(r"([^.=]{1,63})\.([^=]{1,63})=")
_SET_FORM = re.compile(r"([^.]{1,63})\.([^.]{1,63})\.([^=]{1,63})=")
# What a -set may name: qemu_set_option refuses these groups ("-set is not supported with").
_NOT_SETTABLE = ("object", "machine", "smp-opts", "boot-opts")
_NAME_END = re.compile("[=,]")
MAX_VALUE = 64 * 1024


def parse_commandline(args: Sequence[tuple[str, int]]) -> tuple[QemuArg, ...]:
    """Every argument (value, line) of a domain's <qemu:commandline>s, in libvirt's order, as
    the options the engine must judge; provably harmless options are left out."""
    found: list[QemuArg] = []
    position = 0
    while position < len(args):
        arg, line = args[position]
        position += 1
        # lookup_opt: one leading '-' more is allowed ("--global" is "-global").
        name = (arg[2:] if arg.startswith("--") else arg[1:]) if arg.startswith("-") else None
        if name in _WITH_VALUE and position < len(args):
            # Findings point at the value: that is where a tx or a driver is written.
            value, line = args[position]
            position += 1
            found.extend(_with_value(name, f"{arg} {value}", value, line))
        else:
            found.extend(_alone(name, arg, line))
    return tuple(found)


def _alone(name: Optional[str], arg: str, line: int) -> list[QemuArg]:
    if name is None:
        return [_unverifiable(arg, line, "QEMU reads a bare argument as a disk image")]
    if name in _WITH_VALUE:
        return [_unverifiable(arg, line, f"{arg} has no value")]
    if name not in _WITHOUT_VALUE:
        # Unknown to QEMU's table: QEMU would stop ("invalid option"), but a newer QEMU may
        # know it. Whether it takes a value is unknown too, so the next argument is read as an
        # option: anything it could hide is still judged.
        return [_unverifiable(arg, line, f"{arg} is not an option this tool knows")]
    if name not in _HARMLESS:
        return [_unverifiable(arg, line, f"{arg} is not known to be harmless to a NIC's tx")]
    return []


def _with_value(name: str, text: str, value: str, line: int) -> list[QemuArg]:
    if name in ("global", "device", "set") and len(value) > MAX_VALUE:
        # Bounded work per option whatever the input: no real option value comes near this.
        return [_unverifiable(f"{text[:80]}...", line, f"a value over {MAX_VALUE} characters")]
    if name == "global":
        return _global(value, line, text)
    if name == "device":
        return [_device(value, line, text)]
    if name == "set":
        return _set(value, line, text)
    if name in _HARMLESS:
        return []
    reason = _WHY.get(name, f"-{name} is not known to be harmless to a NIC's tx")
    return [_unverifiable(text, line, reason)]


def _unverifiable(text: str, line: int, reason: str) -> QemuArg:
    return QemuArg(kind="unverifiable", line=line, text=text, reason=reason)


# --- QemuOpts ------------------------------------------------------------------------------------


def opt_value(text: str, start: int) -> tuple[str, int]:
    """get_opt_value: the value from ``start`` to the next lone ',' (',,' is a literal comma),
    and the index of that comma (or the end)."""
    value: list[str] = []
    index = start
    while True:
        comma = text.find(",", index)
        if comma == -1:
            value.append(text[index:])
            return "".join(value), len(text)
        value.append(
            text[index : comma + 1] if text[comma + 1 : comma + 2] == "," else text[index:comma]
        )
        if text[comma + 1 : comma + 2] != ",":
            return "".join(value), comma
        index = comma + 2


def parse_opts(text: str, implied: Optional[str] = None) -> list[tuple[str, str]]:
    """QEMU's opts_do_parse as (name, value) pairs in order, ``id`` included: ``implied`` names
    a first part without '=' (-device's driver); any other part without '=' is a flag
    (``foo`` is foo=on, ``nofoo`` foo=off)."""
    pairs: list[tuple[str, str]] = []
    index = 0
    first = True
    while index < len(text):
        # strcspn(params, "=,"): a search that stops at the first of either keeps this linear.
        end = _NAME_END.search(text, index)
        stop = end.start() if end is not None else len(text)
        if stop == len(text) or text[stop] != "=":
            if first and implied is not None:
                value, index = opt_value(text, index)
                pairs.append((implied, value))
            else:
                name = text[index:stop]
                index = stop
                if name.startswith("no"):
                    pairs.append((name[2:], "off"))
                else:
                    pairs.append((name, "on"))
        else:
            name = text[index:stop]
            value, index = opt_value(text, stop + 1)
            pairs.append((name, value))
        first = False
        if index < len(text):  # at the ',' that ended this part
            index += 1
    return pairs


def opts_id(text: str) -> Optional[str]:
    """opts_parse_id: the first ``id`` part, read without the implied name."""
    for name, value in parse_opts(text):
        if name == "id":
            return value
    return None


# --- -global, -set, -device ----------------------------------------------------------------------


def _global(value: str, line: int, text: str) -> list[QemuArg]:
    short = _GLOBAL_SHORT.match(value)
    if short is not None:
        driver, prop, setting = short.group(1), short.group(2), value[short.end() :]
    else:
        fields: dict[str, str] = {}
        for name, part in parse_opts(value):
            if name == "id":
                continue
            if name not in ("driver", "property", "value"):
                return []  # QEMU: "Invalid parameter": it refuses to start
            fields[name] = part  # qemu_opt_get: the last one counts
        if len(fields) < 3:
            return []  # "options 'driver', 'property', and 'value' are required"
        driver, prop, setting = fields["driver"], fields["property"], fields["value"]
    # Only the property named is set (object_property_parse): another one cannot touch tx.
    if prop != "tx":
        return []
    return [QemuArg(kind="global", line=line, text=text, target=driver, prop=prop, value=setting)]


def _set(value: str, line: int, text: str) -> list[QemuArg]:
    form = _SET_FORM.match(value)
    if form is None:
        return []  # QEMU: "can't parse": it refuses to start
    group, ident, prop = form.groups()
    setting = value[form.end() :]
    if group in _NOT_SETTABLE:
        return []
    if group == "global":
        # A -global written with id= is a QemuOpts of group global: -set can rewrite it.
        return [_unverifiable(text, line, "-set of a -global: which tx it makes is not computed")]
    if group != "device" or prop not in ("tx", "driver"):
        return []  # another group's options, or a device property other than tx and driver
    return [
        QemuArg(
            kind="set",
            line=line,
            text=text,
            target=ident,
            prop=prop,
            value=setting,
        )
    ]


def _device(value: str, line: int, text: str) -> QemuArg:
    if value.startswith("{"):
        try:
            props = parse_json_object(value)
        except ValueError as exc:
            return _unverifiable(text, line, f"the JSON cannot be read as QEMU reads it: {exc}")
        driver = props.get("driver")
        tx = props.get("tx")
        if "tx" in props and not isinstance(tx, str):
            return _unverifiable(text, line, "its tx is not a string")
        return QemuArg(
            kind="device",
            line=line,
            text=text,
            target=driver if isinstance(driver, str) else "",
            value=tx,
            json=True,
        )
    options = dict(parse_opts(value, implied="driver"))  # qemu_opts_to_qdict: the last counts
    options.pop("id", None)
    return QemuArg(
        kind="device",
        line=line,
        text=text,
        target=options.get("driver", ""),
        value=options.get("tx"),
        ident=opts_id(value),
    )


# --- QEMU's JSON ---------------------------------------------------------------------------------

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_ESCAPES.update({"r": "\r", "t": "\t"})


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object as QEMU's parser reads a -device value: strings in double or single quotes
    (with QEMU's escapes), and a duplicate key is an error. ValueError otherwise."""
    pieces: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in "\"'":
            string, index = _json_string(text, index)
            pieces.append(json.dumps(string))
            continue
        pieces.append(char)
        index += 1
    try:
        value = json.loads("".join(pieces), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _json_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == quote:
            return "".join(out), index + 1
        if char == "\\":
            escape = text[index + 1 : index + 2]
            if escape == "u":
                digits = text[index + 2 : index + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ValueError("bad \\u escape")
                out.append(chr(int(digits, 16)))
                index += 6
                continue
            if escape not in _ESCAPES:
                raise ValueError(f"bad escape \\{escape}")
            out.append(_ESCAPES[escape])
            index += 2
            continue
        if ord(char) < 0x20:
            raise ValueError("control character in a string")
        out.append(char)
        index += 1
    raise ValueError("unterminated string")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key '{key}'")
        result[key] = value
    return result
