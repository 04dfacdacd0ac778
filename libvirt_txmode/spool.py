"""Text held aside while a report is being written: in memory while small, then in a file.

validate-domain writes each finding the moment it is made, but document formats put things
before the findings that are only known at the end (SARIF's artifacts and invocation, JSON's
file list, JUnit's counts), and a run that fails must leave no half report. So the parts go to
spools, and the document is assembled from them at the end: memory stays flat however many
files there are. Not tempfile: it costs more to import (~10 ms) than a whole small run spends
here. The file is unlinked at once, so nothing is left behind whatever happens.
"""

from __future__ import annotations

import codecs
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Optional

# Above this many characters the text moves from memory to a file.
MEMORY_LIMIT = 1 << 18
_ENCODING = ("utf-8", "surrogateescape")  # file names need not be valid UTF-8


class Spool:
    def __init__(self, limit: Optional[int] = None) -> None:
        self.limit = limit or MEMORY_LIMIT
        self.parts: list[str] = []
        self.size = 0
        self.fd: Optional[int] = None

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.limit:
            self._spill()

    def _spill(self) -> None:
        if self.fd is None:
            try:
                self.fd = _unnamed_file()
            except OSError:
                # No writable temporary directory: the report is still whole, only not flat
                # in memory any more.
                self.limit = 1 << 62
                return
        data = "".join(self.parts).encode(*_ENCODING)
        self.parts, self.size = [], 0
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def chunks(self) -> Iterator[str]:
        """Everything written, in order, in pieces of at most about ``limit`` characters."""
        if self.fd is not None:
            os.lseek(self.fd, 0, os.SEEK_SET)
            # Incremental: a character split between two blocks is decoded whole.
            decoder = codecs.getincrementaldecoder(_ENCODING[0])(_ENCODING[1])
            while True:
                block = os.read(self.fd, self.limit)
                text = decoder.decode(block, final=not block)
                if text:
                    yield text
                if not block:
                    break
        if self.parts:
            yield "".join(self.parts)

    def lines(self) -> Iterator[str]:
        """What was written as lines ending in newlines, one at a time."""
        rest = ""
        for chunk in self.chunks():
            pieces = (rest + chunk).split("\n")
            rest = pieces.pop()
            for piece in pieces:
                yield piece + "\n"
        if rest:
            yield rest

    def copy_to(self, out: IO[str]) -> None:
        for chunk in self.chunks():
            out.write(chunk)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.parts = []


def _unnamed_file() -> int:
    directory = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - the conventional place
    flags = os.O_RDWR | os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, flags | tmpfile, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE: a named file, unlinked at once
    for attempt in range(100):
        path = os.path.join(directory, f".validate-domain-{os.getpid()}-{attempt}")
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        os.unlink(path)
        return fd
    raise OSError(f"cannot create a temporary file in {directory}")
