"""Which files validate-domain reads: paths in, an ordered list of inputs out.

- Directories are walked in sorted order for ``*.xml``; hidden folders (``.git``, ``.venv``) are
  not entered.
- ``--exclude GLOB`` and ``.libvirt-txmode-ignore`` files use .gitignore syntax: ``#`` comments,
  ``!`` to re-include, a trailing ``/`` for folders only, a ``/`` inside anchors the pattern to the
  ignore file's folder (for ``--exclude``: the current directory), ``*``, ``?``, ``[...]`` and
  ``**`` (a whole segment only; elsewhere it is ``*``). The ignore file of the current directory
  applies to every walk; one inside a walked folder to what is below it. A path named on the
  command line is filtered by ``--exclude`` only: an ignore file never stops a named file from
  being checked (``--no-ignore-file`` reads none at all). Matching is linear in the path's
  length (globmatch.py).
- A walk only reads regular files inside the tree: a FIFO, socket or device is skipped (opening a
  FIFO would block for ever), and so is a symlink whose target lies outside the folder given.
  A file named on the command line is read as named (``<(cmd)`` is a pipe on purpose).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..common import logs
from ..common.records import SLOTS
from .globmatch import Glob, compile_glob

IGNORE_FILE = ".libvirt-txmode-ignore"
LOG = logs.get("libvirt_txmode")
# typing.TYPE_CHECKING without importing typing: it weighs on validate-domain's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class InputError(Exception):
    """A path given on the command line that cannot be used."""


@dataclass(frozen=True, **SLOTS)
class Input:
    """One domain XML to check: a file, or standard input."""

    label: str  # as the user wrote it (or as found below a folder they named)
    path: Optional[str]  # None: standard input
    # Opened with O_NONBLOCK|O_NOFOLLOW and checked to be a regular file: found by a walk.
    regular_only: bool = False


@dataclass(frozen=True, **SLOTS)
class _Pattern:
    """One line of an ignore file or ``--exclude``, compiled."""

    glob: Glob
    negated: bool
    dir_only: bool


def compile_pattern(line: str) -> Optional[_Pattern]:
    """One line of an ignore file (or one --exclude), or None for blanks and comments."""
    text = line.rstrip("\n")
    if not text.endswith("\\ "):
        text = text.rstrip()
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated or text.startswith(("\\!", "\\#")):
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    anchored = "/" in text
    return _Pattern(compile_glob(text.lstrip("/"), anchored=anchored), negated, dir_only)


@dataclass(**SLOTS)
class Ignore:
    """Patterns relative to ``base`` (a directory, absolute)."""

    base: str
    patterns: list[_Pattern] = field(default_factory=list)

    @classmethod
    def from_lines(cls, base: str, lines: Iterable[str]) -> Ignore:
        found = [compile_pattern(line) for line in lines]
        return cls(os.path.abspath(base), [p for p in found if p is not None])

    @classmethod
    def from_file(cls, directory: str) -> Optional[Ignore]:
        path = os.path.join(directory, IGNORE_FILE)
        try:
            # O_NONBLOCK: a FIFO in its place must not hang the run.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = handle.read(1024 * 1024).decode("utf-8", "surrogateescape")
        return cls.from_lines(directory, text.splitlines())

    def verdict(self, absolute: str, is_dir: bool) -> Optional[bool]:
        """True: ignored, False: re-included, None: no pattern here says anything."""
        prefix = self.base.rstrip(os.sep) + os.sep
        if not self.patterns or not absolute.startswith(prefix):
            return None
        # A prefix cut, not os.path.relpath: this runs once per file of a walk.
        relative = absolute[len(prefix) :].replace(os.sep, "/")
        result: Optional[bool] = None
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                continue
            if pattern.glob.matches(relative):
                result = not pattern.negated
        return result


def _ignored(rules: Sequence[Ignore], absolute: str, is_dir: bool) -> bool:
    result = False
    for rule in rules:  # outermost first: a nearer ignore file has the last word
        verdict = rule.verdict(absolute, is_dir)
        if verdict is not None:
            result = verdict
    return result


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(**SLOTS)
class Selection:
    """The inputs a run checks, and what was left out on the way."""

    inputs: list[Input] = field(default_factory=list)
    excluded: int = 0  # by --exclude or an ignore file
    skipped: list[str] = field(default_factory=list)  # not regular, or a link out of the tree


class Collector:
    """``ignore_files``: read ``.libvirt-txmode-ignore`` files at all (``--no-ignore-file``
    turns them off). They only ever thin out a walk: a path named on the command line is
    filtered by ``--exclude`` alone, so an ignore file added to a repository cannot stop a file
    the pipeline names from being checked."""

    def __init__(self, excludes: Sequence[str], cwd: str, *, ignore_files: bool = True) -> None:
        self.cwd = os.path.abspath(cwd)
        self.ignore_files = ignore_files
        excluded = Ignore.from_lines(self.cwd, excludes)
        top_file = Ignore.from_file(self.cwd) if ignore_files else None
        # Only ignores that say something: a walk without any costs no pattern matching.
        self.top: list[Ignore] = [i for i in (top_file, excluded) if i is not None and i.patterns]
        self.named: list[Ignore] = [excluded] if excluded.patterns else []
        self.selection = Selection()
        self._rules_cache: dict[str, list[Ignore]] = {}

    def _rules_for(self, directory: str) -> list[Ignore]:
        """The ignore rules that apply inside ``directory`` (absolute): the current directory's,
        then the ignore file of every folder from there down to ``directory``."""
        if directory in self._rules_cache:
            return self._rules_cache[directory]
        if directory == self.cwd or not _inside(directory, self.cwd):
            rules = list(self.top)
        else:
            rules = list(self._rules_for(os.path.dirname(directory)))
            local = Ignore.from_file(directory) if self.ignore_files else None
            if local is not None and local.patterns:
                rules.append(local)
        self._rules_cache[directory] = rules
        return rules

    def _excluded_path(self, path: str, is_dir: bool) -> bool:
        """A path named on the command line: excluded by --exclude, itself or as below an
        excluded folder (ignore files have no say over it)."""
        if not self.named:
            return False
        absolute = os.path.abspath(path)
        chain: list[str] = []
        current = absolute
        while _inside(current, self.cwd) and current != self.cwd:
            chain.append(current)
            current = os.path.dirname(current)
        if not chain:
            return _ignored(self.named, absolute, is_dir)
        for depth, ancestor in enumerate(reversed(chain)):
            last = depth == len(chain) - 1
            if _ignored(self.named, ancestor, is_dir if last else True):
                return True
        return False

    def add(self, path: str) -> None:
        self.selection.inputs.extend(self.each(path))

    def each(self, path: str) -> Iterator[Input]:
        """The inputs ``path`` stands for, one at a time as the walk finds them (``add`` keeps
        them in ``selection``; validate-domain -j 1 reads each as it comes, holding no list).
        Counts go to ``selection`` as they are found. Raises InputError when it gets there."""
        if path == "-":
            yield Input("<stdin>", None)
            return
        if os.path.isdir(path):
            if self._excluded_path(path, True):
                self.selection.excluded += 1
                return
            yield from self._walk(path)
            return
        if not os.path.exists(path):
            raise InputError(f"no such file or directory: {path}")
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}: permission denied")
        if self._excluded_path(path, False):
            self.selection.excluded += 1
            return
        yield Input(path, path)

    def _walk(self, top: str) -> Iterator[Input]:
        absolute = os.path.abspath(top)
        rules = self._rules_for(os.path.dirname(absolute)) if absolute != self.cwd else self.top
        return self._walk_dir(top, os.path.realpath(top), list(rules))

    def _walk_dir(self, directory: str, root_real: str, rules: list[Ignore]) -> Iterator[Input]:  # noqa: C901 - the skip rules of a folder walk (hidden, excluded, not regular, link out of the tree) read best in order
        local = Ignore.from_file(directory) if self.ignore_files else None
        if local is not None and local.patterns:
            rules = [*rules, local]
        absolute_dir = os.path.abspath(directory)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"cannot read {directory}: {exc.strerror}") from None
        subdirs: list[str] = []
        for entry in entries:
            path = entry.path  # os.path.join(directory, entry.name), already made by scandir
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    continue  # hidden folders: .git, .venv, .tox ...
                if rules and _ignored(rules, os.path.join(absolute_dir, entry.name), True):
                    self.selection.excluded += 1
                    continue
                subdirs.append(path)
                continue
            if not entry.name.endswith(".xml"):
                continue
            if rules and _ignored(rules, os.path.join(absolute_dir, entry.name), False):
                self.selection.excluded += 1
                continue
            problem = _walk_problem(entry, root_real)
            if problem is not None:
                LOG.info("skipped %s: %s", path, problem)
                self.selection.skipped.append(path)
                continue
            target = os.path.realpath(path) if entry.is_symlink() else path
            yield Input(path, target, True)  # regular_only
        # os.walk's order: a folder's files first, then its subfolders, each sorted.
        for sub in subdirs:
            yield from self._walk_dir(sub, root_real, rules)


def _walk_problem(entry: os.DirEntry[str], root_real: str) -> Optional[str]:
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if not _inside(target, root_real):
            return f"a symlink out of the folder being checked (to {target})"
        if not os.path.isfile(target):
            return "a symlink to something that is not a regular file"
        return None
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file"
    return None


def collect(
    paths: Sequence[str], excludes: Sequence[str], cwd: str, *, ignore_files: bool = True
) -> Selection:
    collector = Collector(excludes, cwd, ignore_files=ignore_files)
    for path in paths:
        collector.add(path)
    return collector.selection


def read_input(item: Input, limit: int) -> Optional[bytes]:
    """The bytes of a file, at most ``limit`` + 1 (the caller refuses more). None: a walked entry
    that turned out not to be a regular file when opened (replaced meanwhile): skip it."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    if item.regular_only:
        # Found by a walk: a FIFO swapped in since must not block, a symlink must not lead out.
        flags |= os.O_NONBLOCK | os.O_NOFOLLOW
    if item.path is None:
        raise ValueError("standard input has no path")
    fd = os.open(item.path, flags)
    try:
        info = os.fstat(fd)
        if item.regular_only and not stat.S_ISREG(info.st_mode):
            return None
        request = min(info.st_size, limit) + 1
        regular = stat.S_ISREG(info.st_mode)
        parts: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, request)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if regular and len(chunk) < request:
                break  # a regular file reads short only at its end: no second read to see it
            request = min(limit + 1 - total, 1 << 16)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)
