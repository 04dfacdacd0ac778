""".gitignore globs matched without a backtracking regex: time linear in the path's length.

A translated regex turns each ``**/`` into ``(?:.*/)?``; a pattern of twenty of them against a
deep path that does not match makes the regex engine try every way of splitting the path among
them (minutes for twenty ``**/`` and 30 levels). Here a pattern is a list of segments, and a
path is matched segment by segment with the set of pattern positions reachable so far (an NFA
run, as RE2 would): at most one pass over the path, each step bounded by the pattern's length.
Inside one segment (a file or folder name) ``*``, ``?`` and ``[...]`` are matched by the greedy
wildcard algorithm, which backtracks only to the last ``*`` (quadratic in one name at worst,
never exponential).

Syntax, as git reads .gitignore: ``**`` is special only as a whole segment (``**/x``, ``a/**/b``,
``a/**``); elsewhere it is two ``*``, which never match a ``/``. ``\\`` escapes the next
character; ``[!...]`` and ``[^...]`` negate a class; a ``]`` right after the opening bracket
(or its ``!``) is part of the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from ..common.records import SLOTS

# One name's tokens: a literal character, ANY_CHAR ('?'), ANY_RUN ('*'), or a class.
ANY_CHAR = "?"
ANY_RUN = "*"


@dataclass(frozen=True, **SLOTS)
class CharClass:
    """A ``[...]`` of a glob: characters and ranges, or everything but them."""

    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negated: bool

    def fits(self, char: str) -> bool:
        found = char in self.chars or any(low <= char <= high for low, high in self.ranges)
        return found != self.negated


@dataclass(frozen=True, **SLOTS)
class Literal:
    """One character of a glob that stands for itself."""

    char: str


Token = Union[Literal, CharClass, str]  # str: ANY_CHAR or ANY_RUN
Name = tuple[Token, ...]


@dataclass(frozen=True, **SLOTS)
class AnySegments:
    """``**``: any number of whole segments (``at_least_one``: a trailing ``/**``, which matches
    what is inside a folder, not the folder itself)."""

    at_least_one: bool = False


Segment = Union[Name, AnySegments]


@dataclass(frozen=True, **SLOTS)
class Glob:
    """A compiled .gitignore pattern, one segment per path component."""

    segments: tuple[Segment, ...]

    def matches(self, path: str) -> bool:
        """Whether the whole ``/``-separated relative ``path`` fits."""
        return match_segments(self.segments, path.split("/"))


def compile_glob(pattern: str, *, anchored: bool) -> Glob:
    """A .gitignore glob without its ``!``, leading ``/`` and trailing ``/``; unanchored, it
    may match at any depth (as if it began with ``**/``)."""
    parts = pattern.split("/")
    segments: list[Segment] = [] if anchored else [AnySegments()]
    for position, part in enumerate(parts):
        if part == "**":
            item = AnySegments(at_least_one=position == len(parts) - 1 and position > 0)
            if segments and isinstance(segments[-1], AnySegments):  # a/**/**/b is a/**/b
                item = AnySegments(segments[-1].at_least_one or item.at_least_one)
                segments[-1] = item
            else:
                segments.append(item)
            continue
        segments.append(_name(part))
    return Glob(tuple(segments))


def _name(text: str) -> Name:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            if not tokens or tokens[-1] != ANY_RUN:  # '**' inside a name is one '*'
                tokens.append(ANY_RUN)
        elif c == "?":
            tokens.append(ANY_CHAR)
        elif c == "[":
            parsed = _char_class(text, i)
            if parsed is None:
                tokens.append(Literal(c))
            else:
                klass, i = parsed
                tokens.append(klass)
        elif c == "\\" and i + 1 < len(text):
            i += 1
            tokens.append(Literal(text[i]))
        else:
            tokens.append(Literal(c))
        i += 1
    return tuple(tokens)


def _char_class(text: str, start: int) -> tuple[CharClass, int] | None:
    """The class opening at ``start`` and the index of its ``]``; None: no closing bracket
    (the ``[`` is then a literal)."""
    i = start + 1
    negated = i < len(text) and text[i] in "!^"
    if negated:
        i += 1
    first = i
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    while i < len(text):
        c = text[i]
        if c == "]" and i > first:
            return CharClass(frozenset(chars), tuple(ranges), negated), i
        if c == "\\" and i + 1 < len(text):
            i += 1
            c = text[i]
        if i + 2 < len(text) and text[i + 1] == "-" and text[i + 2] != "]":
            ranges.append((c, text[i + 2]))
            i += 3
            continue
        chars.add(c)
        i += 1
    return None


def match_segments(pattern: Sequence[Segment], path: Sequence[str]) -> bool:
    """Run the pattern over the path's segments, keeping the set of positions reached."""
    end = len(pattern)
    states = _closure(pattern, {0})
    for segment in path:
        following: set[int] = set()
        for position in states:
            if position == end:
                continue
            item = pattern[position]
            if isinstance(item, AnySegments):
                following.add(position)  # '**' takes this segment and may take more
                if item.at_least_one:
                    following.add(position + 1)
            elif match_name(item, segment):
                following.add(position + 1)
        if not following:
            return False
        states = _closure(pattern, following)
    return end in states


def _closure(pattern: Sequence[Segment], states: set[int]) -> set[int]:
    """Also every position reached by letting a ``**`` take no segment."""
    result = set(states)
    work = list(states)
    while work:
        position = work.pop()
        if position == len(pattern):
            continue
        item = pattern[position]
        skips = isinstance(item, AnySegments) and not item.at_least_one
        if skips and position + 1 not in result:
            result.add(position + 1)
            work.append(position + 1)
    return result


def match_name(tokens: Name, name: str) -> bool:
    """One name against one segment's tokens: the greedy wildcard match, going back only to
    just after the last ``*`` seen."""
    t = n = 0
    star = -1  # index of the last '*' token
    resume = 0  # where in the name that '*' stopped
    while n < len(name):
        if t < len(tokens) and tokens[t] == ANY_RUN:
            star, resume = t, n
            t += 1
            continue
        if t < len(tokens) and _fits(tokens[t], name[n]):
            t += 1
            n += 1
            continue
        if star < 0:
            return False
        resume += 1  # the last '*' takes one character more
        t, n = star + 1, resume
    while t < len(tokens) and tokens[t] == ANY_RUN:
        t += 1
    return t == len(tokens)


def _fits(token: Token, char: str) -> bool:
    if token == ANY_CHAR:
        return True
    if isinstance(token, Literal):
        return token.char == char
    if isinstance(token, CharClass):
        return token.fits(char)
    return False  # pragma: no cover - ANY_RUN is handled by the caller
