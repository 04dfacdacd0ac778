"""Loggers that import ``logging`` at their first message, not when their module is imported.

The probe cache, the prober and the network reader log only when something is wrong, and the
hook's full check imports all three: ``logging`` (with threading, traceback, weakref, string)
would cost every check more than the messages it almost never writes. ``get(__name__)`` stands
in for ``logging.getLogger(__name__)``; each message goes to that standard logger, so handlers,
levels, propagation and pytest's caplog work unchanged.

The hook routes these messages to syslog (hook.py). It does so through ``before_first_use``, which
keeps a setup step to run just before ``logging`` is first needed: process-wide, as the handlers
of ``logging`` it configures are.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

_SETUP: list[Callable[[], None]] = []


def before_first_use(setup: Callable[[], None]) -> None:
    """Run ``setup`` before the next message of ours reaches ``logging``: at once if ``logging``
    is already imported (nothing to save then), as the code it replaces did."""
    if "logging" in sys.modules:
        setup()
    else:
        _SETUP.append(setup)


class Logger:
    """The part of ``logging.Logger`` our modules use."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _logger(self) -> logging.Logger:
        import logging  # noqa: PLC0415 - see the module's docstring

        while _SETUP:
            _SETUP.pop(0)()
        return logging.getLogger(self.name)

    def warning(self, message: str, *args: object) -> None:
        self._logger().warning(message, *args)

    def info(self, message: str, *args: object) -> None:
        # Until something imports logging nobody can have configured it, and its defaults (root
        # at WARNING, the last-resort handler at WARNING) drop an INFO message: importing
        # logging to drop it cost validate-domain's start more than its own work on one file.
        if "logging" in sys.modules or _SETUP:
            self._logger().info(message, *args)

    def error(self, message: str, *args: object) -> None:
        self._logger().error(message, *args)


def get(name: str) -> Logger:
    return Logger(name)
