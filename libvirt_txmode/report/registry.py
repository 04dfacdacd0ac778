"""The report formats by name: the one list that validate-domain's and audit's ``-f``, the shell
completion, the generated docs and the tests read.

A name maps to ``module:Class`` below this package, so a parser can offer the choices (and
``--help`` can list them) without importing a single formatter.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .formats import Formatter

FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "codeclimate": "formats:CodeClimateFormatter",
        "github": "formats:GitHubFormatter",
        "json": "formats:JsonFormatter",
        "junit": "formats:JUnitFormatter",
        "sarif": "formats:SarifFormatter",
        "text": "formats:TextFormatter",
    }
)
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(FORMATS))


def formatter(name: str) -> type[Formatter]:
    """The formatter class of format ``name`` (KeyError for an unknown name)."""
    module, _, cls = FORMATS[name].partition(":")
    found: type[Formatter] = getattr(importlib.import_module(f".{module}", __package__), cls)
    return found
