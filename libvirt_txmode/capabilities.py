"""What a host can do, as plain data: the records live in ``model``; this name stays importable."""

from __future__ import annotations

from .model import Guest, HostCapabilities, Support, SupportState

__all__ = ["Guest", "HostCapabilities", "Support", "SupportState"]
