"""``libvirt-txmode explain CODE``: a finding code's page, as text and as Markdown (SARIF help).

What the codes are, how their levels are decided and what they mean lives in one registry,
``codes.REGISTRY``; this module only lays it out.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from ..engine.codes import REGISTRY, FindingCode

WIDTH = 78
Explanation = FindingCode  # the older name of a registry entry

EXPLANATIONS: Mapping[str, FindingCode] = REGISTRY  # the name report.py and manpage.py use


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="  ")


def explain(code: str) -> str:
    """The text page for ``code`` (``libvirt-txmode explain CODE``); KeyError if unknown."""
    item = EXPLANATIONS[code]
    parts = [f"{item.code}: {item.title}", "", f"Level: {item.level.value} ({item.level_note})"]
    for heading, body in item.sections():
        parts += ["", heading, _wrap(body)]
    parts += ["", "Example", textwrap.indent(item.example, "  ")]
    return "\n".join(parts) + "\n"


def explain_markdown(code: str) -> str:
    """The same page in Markdown, for SARIF rule help (code scanning UIs render it)."""
    item = EXPLANATIONS[code]
    language = "yaml" if item.example.startswith("#") else "xml"  # policy or domain snippet
    parts = [f"**{item.code}**: {item.title}", "", f"Level: {item.level.value} ({item.level_note})"]
    for heading, body in item.sections():
        parts += ["", f"### {heading}", "", body]
    parts += ["", "### Example", "", f"```{language}", item.example, "```"]
    return "\n".join(parts) + "\n"
