"""Which files validate-domain reads: the .gitignore-style matcher and the walk, on a real tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libvirt_txmode.ci.inputs import IGNORE_FILE, InputError, collect


def tree(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<domain/>")


def labels(root: Path, paths: list[str], excludes: list[str]) -> list[str]:
    cwd = os.getcwd()
    os.chdir(root)  # the labels are the paths as given, relative to the current directory
    try:
        return [i.label for i in collect(paths, excludes, str(root)).inputs]
    finally:
        os.chdir(cwd)


FILES = (
    "a.xml",
    "keep.xml",
    "gen/x.xml",
    "gen/deep/y.xml",
    "sub/gen/z.xml",
    "sub/b.xml",
    "sub/c.generated.xml",
    "#odd.xml",
)


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        ([], ["#odd.xml", "a.xml", "keep.xml", "gen/x.xml", "gen/deep/y.xml", "sub/b.xml",
              "sub/c.generated.xml", "sub/gen/z.xml"]),
        # A name without '/' matches at any depth; a trailing '/' only folders.
        (["gen/"], ["#odd.xml", "a.xml", "keep.xml", "sub/b.xml", "sub/c.generated.xml"]),
        # A '/' inside anchors the pattern to the ignore file's folder.
        (["/gen"], ["#odd.xml", "a.xml", "keep.xml", "sub/b.xml", "sub/c.generated.xml",
                    "sub/gen/z.xml"]),
        (["**/deep/*.xml"], ["#odd.xml", "a.xml", "keep.xml", "gen/x.xml", "sub/b.xml",
                             "sub/c.generated.xml", "sub/gen/z.xml"]),
        (["*.xml", "!keep.xml"], ["keep.xml"]),
        (["*.generated.xml", "[ab].xml"], ["#odd.xml", "keep.xml", "gen/x.xml", "gen/deep/y.xml",
                                           "sub/gen/z.xml"]),
        (["\\#odd.xml", "# a comment, not a pattern", ""], ["a.xml", "keep.xml", "gen/x.xml",
         "gen/deep/y.xml", "sub/b.xml", "sub/c.generated.xml", "sub/gen/z.xml"]),
    ],
    ids=["none", "folder", "anchored", "double-star", "negation", "classes", "comment-escape"],
)  # fmt: skip
def test_patterns_from_the_ignore_file_and_exclude_agree(
    tmp_path: Path, patterns: list[str], expected: list[str]
) -> None:
    tree(tmp_path, *FILES)
    walked = [f"./{name}" for name in expected]
    assert labels(tmp_path, ["."], patterns) == walked
    (tmp_path / IGNORE_FILE).write_text("\n".join(patterns) + "\n")
    assert labels(tmp_path, ["."], []) == walked


def test_an_ignore_file_in_a_subfolder_applies_below_it(tmp_path: Path) -> None:
    tree(tmp_path, "a/x.xml", "a/y.xml", "b/x.xml")
    (tmp_path / "a" / IGNORE_FILE).write_text("x.xml\n")
    assert labels(tmp_path, ["a", "b"], []) == ["a/y.xml", "b/x.xml"]


def test_hidden_folders_are_not_entered_unless_named(tmp_path: Path) -> None:
    tree(tmp_path, ".git/x.xml", ".venv/lib/y.xml", "d/z.xml")
    assert labels(tmp_path, ["."], []) == ["./d/z.xml"]
    assert labels(tmp_path, [".git"], []) == [".git/x.xml"]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no such file or directory: nope\.xml"):
        collect(["nope.xml"], [], str(tmp_path))


def test_named_files_obey_exclude_but_never_an_ignore_file(tmp_path: Path) -> None:
    tree(tmp_path, "a/x.xml", "a/y.xml", "b/x.xml")
    (tmp_path / IGNORE_FILE).write_text("*.xml\n")
    (tmp_path / "a" / IGNORE_FILE).write_text("x.xml\n")
    assert labels(tmp_path, ["a", "b"], []) == []
    assert labels(tmp_path, ["a/x.xml", "b/x.xml"], []) == ["a/x.xml", "b/x.xml"]
    assert labels(tmp_path, ["a/x.xml", "b/x.xml"], ["b/"]) == ["a/x.xml"]


def test_no_ignore_file_reads_none(tmp_path: Path) -> None:
    tree(tmp_path, "a/x.xml", "b/x.xml")
    (tmp_path / IGNORE_FILE).write_text("b/\n")
    (tmp_path / "a" / IGNORE_FILE).write_text("x.xml\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        found = collect(["."], ["nothing"], str(tmp_path), ignore_files=False).inputs
    finally:
        os.chdir(cwd)
    assert [i.label for i in found] == ["./a/x.xml", "./b/x.xml"]
