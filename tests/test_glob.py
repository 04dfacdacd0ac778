"""text.glob_match answers as fnmatch.fnmatchcase does (it stands in for it on the hook's path)."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from libvirt_txmode.text import glob_match

# A small alphabet, so that pieces of a pattern often occur (and recur) in the name.
NAMES = st.text(alphabet="ab/-.*", max_size=12)
PATTERNS = st.text(alphabet="ab/-.*", max_size=8)


@given(NAMES, PATTERNS)
def test_star_patterns_match_as_fnmatchcase(name: str, pattern: str) -> None:
    assert glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)


@given(NAMES, st.text(alphabet="ab*?[]!-", max_size=8))
def test_other_patterns_match_as_fnmatchcase(name: str, pattern: str) -> None:
    assert glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)


def test_policy_style_patterns() -> None:
    assert glob_match("/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-system-*")
    assert glob_match("/usr/bin/qemu-system-x/../../tmp/evil", "/usr/bin/qemu-system-*")
    assert not glob_match("/usr/local/bin/qemu-system-x86_64", "/usr/bin/qemu-system-*")
    assert glob_match("db-1", "db-*") and not glob_match("xdb-1", "db-*")
    assert glob_match("aXbXc", "a*b*c") and not glob_match("ab", "a*b*b")
    assert glob_match("web", "web") and not glob_match("Web", "web")  # case-sensitive
