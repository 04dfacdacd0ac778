"""Text held aside while a report is being written: in memory while small, then in a file.

validate-domain writes each finding the moment it is made, but document formats put things
before the findings that are only known at the end (SARIF's artifacts and invocation, JSON's
file list, JUnit's counts), and a run that fails must leave no half report. So the parts go to
spools, and the document is assembled from them at the end: memory stays flat however many
files there are.

The parts are kept as a list of strings and moved to the file in one write whenever they pass
the limit; the file is ``tempfile.TemporaryFile``, which has no name, so nothing is left behind
whatever happens. (``tempfile.SpooledTemporaryFile`` would do the same, but it asks its text
layer for the position after every write to decide whether to roll over: with two writes per
finding, that was a sixth of validate-domain's own time per domain.)
"""

from __future__ import annotations

import sys
import tempfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Optional

# Above this many characters the text moves from memory to a file.
MEMORY_LIMIT = 1 << 18


class Spool:
    """Text written in pieces, read back whole, in chunks or as lines."""

    def __init__(self, limit: Optional[int] = None) -> None:
        self.limit = limit or MEMORY_LIMIT
        self.parts: list[str] = []
        self.size = 0
        self.file: Optional[IO[str]] = None

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.limit:
            self._spill()

    def _spill(self) -> None:
        if self.file is None:
            try:
                # surrogateescape: file names need not be valid UTF-8. newline="\n": written as
                # given, and read back as lines that end only in "\n", as lines() promises.
                self.file = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
                    "w+", encoding="utf-8", errors="surrogateescape", newline="\n"
                )
            except OSError:
                # No usable temporary directory: the report is still whole, only memory no
                # longer stays flat.
                self.limit = sys.maxsize
                return
        self.file.write("".join(self.parts))
        self.parts, self.size = [], 0

    def chunks(self) -> Iterator[str]:
        """Everything written, in order, in pieces of at most ``limit`` characters."""
        if self.file is not None:
            self.file.seek(0)
            while chunk := self.file.read(self.limit):
                yield chunk
        if self.parts:
            yield "".join(self.parts)

    def lines(self) -> Iterator[str]:
        """What was written as lines ending in newlines, one at a time."""
        rest = ""
        if self.file is not None:
            self.file.seek(0)
            for line in self.file:
                if line.endswith("\n"):
                    yield line
                else:
                    rest = line  # the file's last piece: its line goes on in memory
        pieces = (rest + "".join(self.parts)).split("\n")
        last = pieces.pop()
        for piece in pieces:
            yield piece + "\n"
        if last:
            yield last

    def copy_to(self, out: IO[str]) -> None:
        for chunk in self.chunks():
            out.write(chunk)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.parts, self.size = [], 0
