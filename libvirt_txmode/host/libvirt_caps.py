"""libvirt's own QEMU capabilities cache: whether libvirt passes ``-device`` to an emulator as JSON.

libvirt probes each QEMU binary over QMP and keeps what it learned in
``/var/cache/libvirt/qemu/capabilities/<sha256 hex of the binary's path>.xml`` (virQEMUCapsCache;
root:root 0600). When the flag ``device.json+hotplug`` (QEMU_CAPS_DEVICE_JSON: QEMU's
``device_add`` has the ``json-cli-hotplug`` feature) is set, libvirt 9.0 writes every ``-device``
as JSON (qemuBuildDeviceCommandlineFromJSON), and a ``-set device.ID.PROP=...`` of
``<qemu:commandline>`` can no longer reach a device libvirt creates. Nothing but that flag
proves JSON: libvirt < 9.0 wrote other names (``device.json`` meant the broken-hotplug variant),
so a file from such a libvirt without the flag proves nothing either way.

The file is believed only when (else the emulator is left out, i.e. unknown):
- the whole path passes the project's trust rule (``files.path_trust_problem``: root's, not
  writable by others, root's directories);
- its ``<emulator>`` is the path asked about (the file name is only a digest of it);
- it is not stale, as libvirt 9.0's virQEMUCapsIsValid decides for the binary: ``<qemuctime>``
  equals the binary's ``st_ctime`` in whole seconds (``stat``, links followed). A snapshot taken
  through libvirt also compares ``<selfvers>`` with the daemon's version. libvirt's other checks
  (its own ctime, the QEMU module directory's mtime, KVM, microcode, kernel) are not repeated:
  none of them can change the QMP schema feature the flag comes from, and libvirt itself
  revalidates (and rewrites) the file before it runs the ``prepare`` hook (qemuProcessInit).

Parsed with the standard library's expat directly, not lxml: this runs on the hook's miss, which
must stay cheap, and the flags sit in the first ~8 KB of the ~200 KB file, so the parse stops
after ``<version>``. Hardened as the project's lxml parser is: any DOCTYPE is refused (so no
entity can be declared, expanded or fetched; an undeclared one is an expat error), parameter
entities are never parsed, nothing is fetched, and at most ``MAX_CAPS_BYTES`` are read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..common import files, logs
from ..common.records import SLOTS

if TYPE_CHECKING:
    import pyexpat

LOG = logs.get(__name__)  # logging itself only once there is a message
LIBVIRT_CAPS_DIR = "/var/cache/libvirt/qemu/capabilities"
DEVICE_JSON_FLAG = "device.json+hotplug"
# The first libvirt whose flag names this module reads (LIBVIR_VERSION_NUMBER of 9.0.0).
FIRST_KNOWN_LIBVIRT = 9_000_000
MAX_CAPS_BYTES = 4 * 1024 * 1024  # libvirt's files are ~200-250 KB; the parse stops far earlier
_CHUNK = 16 * 1024
_TEXT_ELEMENTS = ("emulator", "qemuctime", "selfvers", "version")


@dataclass(frozen=True, **SLOTS)
class LibvirtQemuCaps:
    """The part of one capabilities file this project reads."""

    emulator: str
    qemu_ctime: int
    libvirt_version: int
    flags: frozenset[str]
    qemu_version: Optional[int] = None

    @property
    def device_json(self) -> Optional[bool]:
        """True: JSON. False: not JSON (a libvirt whose flag names we know). None: can't tell."""
        if DEVICE_JSON_FLAG in self.flags:
            return True
        return False if self.libvirt_version >= FIRST_KNOWN_LIBVIRT else None


class CapsFileError(ValueError):
    """A capabilities file that is not what libvirt writes, or not safe to read."""


def caps_path(emulator: str, directory: str = LIBVIRT_CAPS_DIR) -> str:
    """libvirt's file for ``emulator`` (virFileCacheGetFileName: sha256 of the path as given)."""
    return os.path.join(directory, hashlib.sha256(emulator.encode()).hexdigest() + ".xml")


def device_json(
    emulator: str,
    *,
    directory: str = LIBVIRT_CAPS_DIR,
    libvirt_version: Optional[int] = None,
) -> Optional[bool]:
    """Whether libvirt passes -device to ``emulator`` as JSON; None when its file is missing,
    unreadable, untrusted, foreign or stale (see the module's docstring). ``libvirt_version``
    (``virConnectGetLibVersion``), when known, must be the version that wrote the file."""
    caps = read_caps(emulator, directory=directory, libvirt_version=libvirt_version)
    return caps.device_json if caps is not None else None


def installed_libvirt_version(
    emulators: Iterable[str], *, directory: str = LIBVIRT_CAPS_DIR
) -> Optional[int]:
    """The version of the libvirt that last validated its file for one of ``emulators``
    (``<selfvers>``): libvirt rewrites the file when its own version changes, and checks it
    before the prepare hook runs, so for the emulator being started this is the running daemon's
    version, read without calling libvirt. None when no believable file is there."""
    for emulator in emulators:
        caps = read_caps(emulator, directory=directory)
        if caps is not None:
            return caps.libvirt_version
    return None


def read_caps(
    emulator: str,
    *,
    directory: str = LIBVIRT_CAPS_DIR,
    libvirt_version: Optional[int] = None,
) -> Optional[LibvirtQemuCaps]:
    """The believable capabilities file of ``emulator``, or None (logged when it is suspect)."""
    path = caps_path(emulator, directory)
    if not os.path.lexists(path):
        return None  # libvirt never probed this binary (or is not installed): unknown, quietly
    problem = files.path_trust_problem(path)
    if problem is not None:
        LOG.warning("libvirt capabilities %s are not trusted (%s): ignored", path, problem)
        return None
    try:
        caps = _read(path)
    except PermissionError:
        return None  # not root: libvirt's files are 0600, and unknown is the honest answer
    except OSError as exc:
        LOG.warning("libvirt capabilities %s unreadable (%s): ignored", path, exc.strerror)
        return None
    except CapsFileError as exc:
        LOG.warning("libvirt capabilities %s refused: %s", path, exc)
        return None
    why = stale_reason(caps, emulator, libvirt_version)
    if why is not None:
        LOG.info("libvirt capabilities %s ignored: %s", path, why)
        return None
    return caps


def stale_reason(
    caps: LibvirtQemuCaps, emulator: str, libvirt_version: Optional[int] = None
) -> Optional[str]:
    """Why ``caps`` does not describe ``emulator`` as it is now, or None when it does."""
    if caps.emulator != emulator:
        return f"written for {caps.emulator!r}, not {emulator!r}"
    try:
        ctime = os.stat(emulator).st_ctime_ns // 1_000_000_000  # libvirt: stat(), st_ctime
    except OSError as exc:
        return f"emulator {emulator}: {exc.strerror}"
    if ctime != caps.qemu_ctime:
        return (
            f"stale: {emulator} changed since libvirt probed it "
            f"(ctime {ctime}, recorded {caps.qemu_ctime})"
        )
    if libvirt_version is not None and libvirt_version != caps.libvirt_version:
        return f"stale: written by libvirt {caps.libvirt_version}, the daemon is {libvirt_version}"
    return None


def _read(path: str) -> LibvirtQemuCaps:
    fd = files.open_regular(path)  # no symlink, no FIFO: the trust rule checked the path itself
    reader = _Reader()
    total = 0
    with os.fdopen(fd, "rb", buffering=0) as handle:
        while not reader.done:
            chunk = handle.read(_CHUNK)
            total += len(chunk)
            if total > MAX_CAPS_BYTES:
                raise CapsFileError(f"larger than {MAX_CAPS_BYTES} bytes before <version>")
            reader.feed(chunk, final=not chunk)
            if not chunk:
                break
    return reader.result()


class _Stop(Exception):
    """Raised from a handler: everything needed was read (or the file is refused)."""


class _Reader:
    """An expat parse of a capabilities file that keeps the top-level facts we read and stops
    once ``<version>`` (written after every flag, virQEMUCapsFormatCache) has ended."""

    def __init__(self) -> None:
        import pyexpat  # noqa: PLC0415 - only where a capabilities file is read

        self.parser: pyexpat.XMLParserType = pyexpat.ParserCreate()
        self.parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._doctype
        self.parser.ExternalEntityRefHandler = self._external
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.depth = 0
        self.root: Optional[str] = None
        self.texts: dict[str, str] = {}
        self.current: Optional[str] = None
        self.buffer: list[str] = []
        self.flags: set[str] = set()
        self.done = False
        self.refusal: Optional[str] = None
        self.error = pyexpat.ExpatError

    def feed(self, data: bytes, *, final: bool) -> None:
        try:
            self.parser.Parse(data, final)
        except _Stop:
            self.done = True
        except self.error as exc:
            raise CapsFileError(f"not well-formed XML: {exc}") from None
        if self.refusal is not None:
            raise CapsFileError(self.refusal)

    def _refuse(self, why: str) -> None:
        self.refusal = why
        raise _Stop

    def _doctype(self, *_args: object) -> None:
        self._refuse("it has a DOCTYPE (libvirt writes none)")

    def _external(self, *_args: object) -> int:
        self._refuse("it refers to an external entity")
        return 0

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 1:
            self.root = name
            if name != "qemuCaps":
                self._refuse(f"its root is <{name}>, not <qemuCaps>")
        elif self.depth == 2:
            if name == "flag" and "name" in attributes:
                self.flags.add(attributes["name"])
            elif name in _TEXT_ELEMENTS and name not in self.texts:
                self.current, self.buffer = name, []

    def _end(self, name: str) -> None:
        if self.depth == 2 and self.current == name:
            self.texts[name] = "".join(self.buffer).strip()
            self.current = None
            if name == "version":
                self.depth -= 1
                raise _Stop
        self.depth -= 1

    def _text(self, data: str) -> None:
        if self.current is not None:
            self.buffer.append(data)

    def result(self) -> LibvirtQemuCaps:
        if self.root is None:
            raise CapsFileError("it is empty")
        missing = [n for n in ("emulator", "qemuctime", "selfvers") if n not in self.texts]
        if missing:
            raise CapsFileError("no " + ", ".join(f"<{n}>" for n in missing))
        try:
            ctime = int(self.texts["qemuctime"])
            selfvers = int(self.texts["selfvers"])
            version = int(self.texts["version"]) if "version" in self.texts else None
        except ValueError as exc:
            raise CapsFileError(f"a number is not a number: {exc}") from None
        return LibvirtQemuCaps(
            emulator=self.texts["emulator"],
            qemu_ctime=ctime,
            libvirt_version=selfvers,
            flags=frozenset(self.flags),
            qemu_version=version,
        )
