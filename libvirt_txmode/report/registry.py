"""The report formats by name: the one list that validate-domain's and audit's ``-f``, the shell
completion, the generated docs and the tests read, and the one way to a formatter from its name.

A name maps to ``module:Class`` below this package, so a parser can offer the choices (and
``--help`` can list them) without importing a single formatter; a format is imported only when
a run asks for it. Adding a format is its module (a ``base.Formatter``) and one line here.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Optional

    from ..engine.model import Report
    from .base import Formatter, RunInfo

FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "codeclimate": "codeclimate_format:CodeClimateFormatter",
        "github": "github_format:GitHubFormatter",
        "json": "json_format:JsonFormatter",
        "junit": "junit_format:JUnitFormatter",
        "sarif": "sarif_format:SarifFormatter",
        "text": "text_format:TextFormatter",
    }
)
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(FORMATS))


def formatter(name: str) -> type[Formatter]:
    """The formatter class of format ``name`` (KeyError for an unknown name)."""
    module, _, cls = FORMATS[name].partition(":")
    found: type[Formatter] = getattr(importlib.import_module(f".{module}", __package__), cls)
    return found


def choose_format(requested: str, environ: Mapping[str, str]) -> str:
    """``auto`` is github under GitHub Actions (annotations in the PR), text everywhere else."""
    if requested == "auto":
        return "github" if environ.get("GITHUB_ACTIONS") == "true" else "text"
    if requested not in FORMATS:
        raise ValueError(f"unknown format {requested!r} (known: {', '.join(FORMAT_NAMES)})")
    return requested


def render(fmt: str, report: Report, color: bool, run: Optional[RunInfo] = None) -> str:
    """A whole ``Report`` in format ``fmt``, fed through the same formatter a run streams to."""
    return "".join(formatter(fmt)(color=color, run=run).chunks(report))


def write(
    stream: IO[str], fmt: str, report: Report, color: bool, run: Optional[RunInfo] = None
) -> None:
    """``render`` into ``stream`` piece by piece."""
    for chunk in formatter(fmt)(color=color, run=run).chunks(report):
        if chunk:
            stream.write(chunk)
