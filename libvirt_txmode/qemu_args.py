"""QEMU command-line arguments from ``<qemu:commandline>`` that set virtio-net's ``tx``.

libvirt appends these arguments to QEMU's command line verbatim, so a ``tx`` set there reaches
the device exactly as ``<driver txmode>`` would (QEMU's ``info qtree`` shows it). Three options
can set it: ``-global DRIVER.tx=V`` (or ``-global driver=D,property=tx,value=V``), a ``-device``
of its own (``virtio-net-pci,...,tx=V`` or QEMU's JSON form), and ``-set device.ID.tx=V``, which
edits an existing device's options. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from .model import TxSetting

_OPTIONS = {"-global": "global", "--global": "global", "-device": "device", "--device": "device"}
_OPTIONS.update({"-set": "set", "--set": "set"})


def tx_settings_from_commandline(args: Iterable[tuple[str, int]]) -> list[TxSetting]:
    """Every tx setting in one ``<qemu:commandline>``'s arguments (value, line), in order."""
    settings: list[TxSetting] = []
    items = list(args)
    new_devices = 0
    for position, (arg, _line) in enumerate(items):
        option = _OPTIONS.get(arg)
        if option is None or position + 1 >= len(items):
            continue
        value, line = items[position + 1]
        if option == "global":
            setting = _global(value, line)
        elif option == "set":
            setting = _set(value, line)
        else:
            setting = _device(value, line, new_devices)
            if setting is not None:
                new_devices += 1
        if setting is not None:
            settings.append(setting)
    return settings


def split_opts(text: str) -> list[str]:
    """QemuOpts' comma list, where ',,' stands for a literal comma."""
    parts: list[str] = []
    current = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "," and text[index + 1 : index + 2] == ",":
            current += ","
            index += 2
            continue
        if char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts


def _global(value: str, line: int) -> Optional[TxSetting]:
    driver: Optional[str] = None
    prop: Optional[str] = None
    tx: Optional[str] = None
    if value.startswith("driver=") or ("," in value and "property=" in value):
        fields = dict(part.partition("=")[::2] for part in split_opts(value))
        driver, prop, tx = fields.get("driver"), fields.get("property"), fields.get("value")
    else:
        name, _, tx = value.partition("=")
        driver, _, prop = name.rpartition(".")
    if prop != "tx" or not driver or tx is None:
        return None
    return TxSetting(
        value=tx,
        route=f"-global {value} in <qemu:commandline>",
        target=f"driver:{driver}",
        line=line,
        device=driver,
    )


def _set(value: str, line: int) -> Optional[TxSetting]:
    name, _, tx = value.partition("=")
    group, _, rest = name.partition(".")
    device_id, _, prop = rest.rpartition(".")
    if group != "device" or prop != "tx" or not device_id:
        return None
    return TxSetting(
        value=tx,
        route=f"-set {value} in <qemu:commandline>",
        target=f"alias:{device_id}",
        line=line,
    )


def _device(value: str, line: int, number: int) -> Optional[TxSetting]:
    driver: Optional[str]
    tx: Optional[str]
    if value.lstrip().startswith("{"):
        try:
            import json  # noqa: PLC0415 - only a JSON -device value needs it (a hook miss does not)

            props = json.loads(value)
        except ValueError:
            return None
        if not isinstance(props, dict):
            return None
        driver, tx = props.get("driver"), props.get("tx")
        if not isinstance(driver, str) or not isinstance(tx, str):
            return None
    else:
        parts = split_opts(value)
        driver = parts[0].partition("=")[2] if parts[0].startswith("driver=") else parts[0]
        fields = dict(part.partition("=")[::2] for part in parts[1:])
        tx = fields.get("tx")
    if tx is None or not driver.startswith("virtio-net"):
        return None
    return TxSetting(
        value=tx,
        route=f"-device {value} in <qemu:commandline>",
        target=f"new:{number}",
        line=line,
        device=driver,
    )
