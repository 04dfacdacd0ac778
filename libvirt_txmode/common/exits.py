"""Exit codes of both command lines, and the error that means "could not run" (exit 2).

A module of its own so that cli.py (the parser) and validation.py (the run) share them without
importing each other.
"""

from __future__ import annotations

EXIT_OK, EXIT_FINDINGS, EXIT_FATAL = 0, 1, 2


class FatalError(Exception):
    """The user's input or environment keeps us from running: a clean message and exit 2."""
