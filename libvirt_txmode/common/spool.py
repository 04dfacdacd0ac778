"""Text held aside while a report is being written: in memory while small, then in a file.

validate-domain writes each finding the moment it is made, but document formats put things
before the findings that are only known at the end (SARIF's artifacts and invocation, JSON's
file list, JUnit's counts), and a run that fails must leave no half report. So the parts go to
spools (``tempfile.SpooledTemporaryFile``: an unnamed file once large, so nothing is left behind
whatever happens), and the document is assembled from them at the end: memory stays flat however
many files there are.
"""

from __future__ import annotations

import tempfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Optional

# Above this many characters the text moves from memory to a file.
MEMORY_LIMIT = 1 << 18


class Spool:
    def __init__(self, limit: Optional[int] = None) -> None:
        self.limit = limit or MEMORY_LIMIT
        # surrogateescape: file names need not be valid UTF-8.
        self.file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            self.limit, mode="w+", encoding="utf-8", errors="surrogateescape", newline=""
        )

    def write(self, text: str) -> None:
        self.file.write(text)

    def chunks(self) -> Iterator[str]:
        """Everything written, in order, in pieces of at most ``limit`` characters."""
        self.file.seek(0)
        while chunk := self.file.read(self.limit):
            yield chunk

    def lines(self) -> Iterator[str]:
        """What was written as lines ending in newlines, one at a time."""
        self.file.seek(0)
        yield from self.file

    def copy_to(self, out: IO[str]) -> None:
        for chunk in self.chunks():
            out.write(chunk)

    def close(self) -> None:
        self.file.close()
