"""files.load_json reads as json.loads does (it stands in for it on the hook's miss path)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libvirt_txmode.files import load_json

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _same(raw: bytes) -> None:
    try:
        expected: Any = ("ok", json.dumps(json.loads(raw), sort_keys=True))
    except ValueError as exc:
        expected = ("error", type(exc), str(exc))  # the same words: messages quote them
    try:
        got: Any = ("ok", json.dumps(load_json(raw), sort_keys=True))
    except ValueError as exc:
        got = ("error", type(exc), str(exc))
    assert got == expected


@given(VALUES, st.sampled_from(["", " ", "\n", "\t\r\n "]), st.booleans())
def test_documents_read_as_json_loads_reads_them(value: Any, space: str, indent: bool) -> None:
    text = space + json.dumps(value, indent=1 if indent else None, ensure_ascii=False) + space
    _same(text.encode("utf-8"))


@given(st.binary(max_size=24))
def test_any_bytes_read_or_fail_as_with_json_loads(raw: bytes) -> None:
    _same(raw)


@given(st.text(alphabet='{}[]":,01 tfnul-.eE\\x', max_size=16))
def test_near_json_text_reads_or_fails_as_with_json_loads(text: str) -> None:
    _same(text.encode())


@pytest.mark.parametrize(
    "raw",
    [b"", b"  ", b"{} x", b"[1,]", b"NaN", b"-Infinity", b'"\\ud800"', b"\xef\xbb\xbf{}",
     '{"a": 1}'.encode("utf-16"), b'{"a":1}\n{"b":2}', b"\xed\xa0\x80",
     b"{not json", b"{x", b"{1: 2}", b'{"a" 1}', b'[{"a": x}]'],
)  # fmt: skip
def test_edge_cases(raw: bytes) -> None:
    _same(raw)
