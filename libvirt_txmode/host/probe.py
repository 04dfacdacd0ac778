"""Direct probing of a QEMU binary: does a virtio-net device carry the ``tx`` property?

Two methods, as libvirt itself has used over the years:
- ``help``: ``EMULATOR -device DEV,help``. QEMU < 2.x printed ``DEV.tx=string`` lines on stderr,
  later ones ``DEV.tx=str`` on stdout, and QEMU >= 5.x prints ``DEV options:`` then ``  tx=<str>``.
  A missing device is reported as ``Device 'DEV' not found`` (QEMU 7.2 still exits 0 then).
- ``qmp``: ``device-list-properties`` (QEMU >= 1.2) over a private stdio channel of a
  ``-machine none`` instance; a missing device answers an error of class ``DeviceNotFound``.

Probing runs a binary as root's hook, so only binaries emulator.trust_problem lets through, and
each run bounded as bounded_run.py says. The hook loads this module only to probe: a miss answered
from the probe cache starts no process and imports none of this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from ..common.records import SLOTS
from ..engine.model import Support, SupportState
from .bounded_run import MAX_OUTPUT_BYTES, run_bounded
from .emulator import ProbeError
from .qom_ancestry import ANCESTRY_ID, ANCESTRY_REQUEST, ancestry_from_reply


@dataclass(frozen=True, **SLOTS)
class ProbeResult:
    """What one probe of an emulator learned."""

    devices: dict[str, Support]
    # QEMU type -> its ancestors, parent first up to "object" (virtio-net types only); None:
    # not asked, or not to be had (``ancestry_error`` says why).
    ancestry: Optional[dict[str, tuple[str, ...]]] = None
    ancestry_error: str = ""


# --- the help method -----------------------------------------------------------------------------

_NOT_FOUND = (
    rb"(Device '[^']*' not found|Device \"[^\"]*\" not found|is not a valid device model name"
    rb"|Parameter 'driver' expects)"
)


def parse_help(device: str, output: bytes) -> Optional[Support]:
    """Interpret ``-device DEV,help`` output (stdout and stderr together); None if inconclusive."""
    dev = re.escape(device.encode())
    old_lines = re.findall(rb"^" + dev + rb"\.([A-Za-z0-9_-]+)=", output, re.M)
    if old_lines:
        if b"tx" in old_lines:
            return Support(
                SupportState.SUPPORTED, f"{device}.tx listed by -device {device},help", "help"
            )
        return Support(SupportState.UNSUPPORTED, f"{device} has no tx property", "help")
    if re.search(rb"^" + dev + rb" options:\s*$", output, re.M):
        if re.search(rb"^\s+tx=", output, re.M):
            return Support(SupportState.SUPPORTED, f"tx listed by -device {device},help", "help")
        return Support(SupportState.UNSUPPORTED, f"{device} has no tx property", "help")
    if re.search(_NOT_FOUND, output):
        return Support(SupportState.UNSUPPORTED, f"this QEMU has no device {device}", "help")
    return None


def probe_help(emulator: str, device: str, timeout: float) -> Optional[Support]:
    result = run_bounded([emulator, "-device", f"{device},help"], timeout=timeout)
    if result.timed_out:
        raise ProbeError(f"{emulator} -device {device},help did not finish within {timeout:g} s")
    if result.truncated:
        raise ProbeError(
            f"{emulator} -device {device},help printed more than {MAX_OUTPUT_BYTES} bytes"
        )
    if result.returncode is None or result.returncode < 0:
        # Killed by a signal: a property list cut short would read as "no tx". (A non-zero exit is
        # normal: QEMU 0.14-1.x exit 1 after "Parameter 'driver' expects a driver name".)
        return None
    return parse_help(device, result.stdout + b"\n" + result.stderr)


# --- the QMP method ------------------------------------------------------------------------------

QMP_ARGV = (
    "-machine",
    "none",
    "-nodefaults",
    "-nographic",
    "-display",
    "none",
    "-S",
    "-qmp",
    "stdio",
)


def qmp_request(devices: Sequence[str], *, ancestry: bool = False) -> bytes:
    lines: list[dict[str, object]] = [{"execute": "qmp_capabilities", "id": "caps"}]
    lines += [
        {"execute": "device-list-properties", "arguments": {"typename": d}, "id": f"dev{i}"}
        for i, d in enumerate(devices)
    ]
    if ancestry:
        lines.append(ANCESTRY_REQUEST)
    lines.append({"execute": "quit", "id": "quit"})

    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _replies(output: bytes) -> dict[str, dict[str, object]]:
    """QMP replies by their (string) id; anything else on the channel is skipped."""

    replies: dict[str, dict[str, object]] = {}
    for raw in output.splitlines():
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("id"), str):
            replies[message["id"]] = message
    return replies


def parse_qmp(devices: Sequence[str], output: bytes) -> dict[str, Support]:
    """Interpret the QMP replies; devices without a conclusive reply are left out."""
    return _device_answers(devices, _replies(output))


def _device_answers(
    devices: Sequence[str], replies: Mapping[str, Mapping[str, object]]
) -> dict[str, Support]:
    result: dict[str, Support] = {}
    for i, device in enumerate(devices):
        reply = replies.get(f"dev{i}")
        if reply is None:
            continue
        properties = reply.get("return")
        if isinstance(properties, list):
            names = {p.get("name") for p in properties if isinstance(p, dict)}
            if "tx" in names:
                result[device] = Support(
                    SupportState.SUPPORTED, "tx listed by device-list-properties", "qmp"
                )
            else:
                result[device] = Support(
                    SupportState.UNSUPPORTED, f"{device} has no tx property", "qmp"
                )
            continue
        error = reply.get("error")
        if isinstance(error, dict) and (
            error.get("class") == "DeviceNotFound" or "not found" in str(error.get("desc", ""))
        ):
            result[device] = Support(
                SupportState.UNSUPPORTED, f"this QEMU has no device {device}", "qmp"
            )
    return result


def probe_qmp(emulator: str, devices: Sequence[str], timeout: float) -> dict[str, Support]:
    return _session(emulator, devices, timeout, ancestry=False).devices


def _session(
    emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
) -> ProbeResult:
    """One QMP session of a ``-machine none`` instance: the devices' properties and, when asked,
    the type ancestry (one more request on the same channel). ProbeError when it did not end."""
    result = run_bounded(
        [emulator, *QMP_ARGV], timeout=timeout, input_data=qmp_request(devices, ancestry=ancestry)
    )
    if result.timed_out:
        raise ProbeError(f"QMP probe of {emulator} did not finish within {timeout:g} s")
    if result.truncated:
        raise ProbeError(f"QMP probe of {emulator} printed more than {MAX_OUTPUT_BYTES} bytes")
    replies = _replies(result.stdout)
    found, why = ancestry_from_reply(replies.get(ANCESTRY_ID)) if ancestry else (None, "")
    return ProbeResult(_device_answers(devices, replies), found, why)


def probe(
    emulator: str, devices: Sequence[str], *, timeout: float, method: str = "auto"
) -> dict[str, Support]:
    """Support of each device; a device no method could settle is UNKNOWN with the reason.

    ``auto`` asks ``-device DEV,help`` first (about 20 ms on QEMU 7.2) and falls back to QMP for
    answers it cannot read. Raises ProbeError when the binary cannot be run at all.
    """
    return probe_emulator(emulator, devices, timeout=timeout, method=method, ancestry=False).devices


def probe_emulator(
    emulator: str,
    devices: Sequence[str],
    *,
    timeout: float,
    method: str = "auto",
    ancestry: bool = True,
) -> ProbeResult:
    """``probe``, and with ``ancestry`` the virtio-net types' ancestry over QMP as well: in the
    QMP session of the devices ``help`` left unsettled if there is one, else in a session of its
    own (~30-40 ms more on QEMU 7.2 than a help-only probe: qom-list-types with abstract types
    initialises every QOM class). Ancestry never fails the probe: when it cannot be had (a QEMU
    without qom-list-types or without parents in its answer, or its own session failed), it is
    None and ``ancestry_error`` says why. Raises ProbeError when the devices cannot be probed.
    """
    results: dict[str, Support] = {}
    pending = list(devices)
    if method in ("auto", "help"):
        still: list[str] = []
        for device in pending:
            answer = probe_help(emulator, device, timeout)
            if answer is None:
                still.append(device)
            else:
                results[device] = answer
        pending = still
    found: Optional[dict[str, tuple[str, ...]]] = None
    why = ""
    if pending and method in ("auto", "qmp"):
        session = _session(emulator, pending, timeout, ancestry=ancestry)
        results.update(session.devices)
        found, why = session.ancestry, session.ancestry_error
        pending = [d for d in pending if d not in results]
        ancestry = False  # asked in this session already
    if ancestry:
        try:
            session = _session(emulator, (), timeout, ancestry=True)
            found, why = session.ancestry, session.ancestry_error
        except ProbeError as exc:
            found, why = None, str(exc)
    for device in pending:
        results[device] = Support(
            SupportState.UNKNOWN, f"{emulator} gave no readable answer for {device}", method
        )
    return ProbeResult(results, found, why)
