"""Every finding code is explained, and the explanations say what to do."""

from __future__ import annotations

import dataclasses

import pytest
from lxml import etree

from libvirt_txmode.engine.wording import CODES, Level
from libvirt_txmode.report.explain import (
    EXPLANATIONS,
    WIDTH,
    Explanation,
    explain,
    explain_markdown,
)


def test_every_code_has_exactly_one_explanation() -> None:
    assert list(EXPLANATIONS) == list(CODES)
    assert all(item.code == code for code, item in EXPLANATIONS.items())


@pytest.mark.parametrize("code", CODES)
def test_explanation_fields_are_filled(code: str) -> None:
    item = EXPLANATIONS[code]
    for field in dataclasses.fields(Explanation):
        assert getattr(item, field.name), f"{code}: {field.name} is empty"
    assert isinstance(item.level, Level)


@pytest.mark.parametrize("code", CODES)
def test_explain_page(code: str) -> None:
    item = EXPLANATIONS[code]
    page = explain(code)
    lines = page.splitlines()
    assert lines[0] == f"{code}: {item.title}"
    assert lines[2] == f"Level: {item.level.value} ({item.level_note})"
    for heading in ("What it means", "Why it matters", "How to fix it", "Example"):
        assert heading in lines
    example = lines[lines.index("Example") + 1 :]
    assert "\n".join(example) == "\n".join(
        "  " + ln if ln else ln for ln in item.example.split("\n")
    )
    assert page.endswith("\n") and not page.endswith("\n\n")
    prose = lines[: lines.index("Example")]
    assert all(len(ln) <= WIDTH for ln in prose[3:])


@pytest.mark.parametrize("code", CODES)
def test_explain_markdown(code: str) -> None:
    item = EXPLANATIONS[code]
    page = explain_markdown(code)
    assert page.startswith(f"**{code}**: {item.title}\n")
    assert "### How to fix it\n\n" + item.fix in page
    assert page.endswith(item.example + "\n```\n")


@pytest.mark.parametrize("code", [c for c in CODES if not EXPLANATIONS[c].example.startswith("#")])
def test_xml_examples_are_well_formed_fragments(code: str) -> None:
    # Snippets may elide parts with "..."; what remains must still parse once elisions are dropped.
    text = "\n".join(ln for ln in EXPLANATIONS[code].example.split("\n") if ln.strip() != "...")
    etree.fromstring(f"<snippet>{text}</snippet>")


def test_facts_from_design() -> None:
    assert "tx=bh" in EXPLANATIONS["txmode-unsupported"].meaning
    assert "tx=timer" in EXPLANATIONS["txmode-unsupported"].meaning
    ineffective = EXPLANATIONS["txmode-ineffective"]
    assert "vhost-net" in ineffective.meaning
    assert "<driver name='qemu'/>" in ineffective.fix
    assert EXPLANATIONS["txmode-ineffective"].level is Level.WARNING
    assert EXPLANATIONS["xml-invalid"].level is Level.ERROR


def test_unknown_code_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        explain("txmode-nope")
    with pytest.raises(KeyError):
        explain_markdown("")


def test_explanations_are_read_only() -> None:
    with pytest.raises(TypeError):
        EXPLANATIONS["x"] = EXPLANATIONS["xml-invalid"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXPLANATIONS["xml-invalid"].title = "changed"  # type: ignore[misc]
