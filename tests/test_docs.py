"""The documents hold together: every relative link leads to a file, every #anchor to a heading,
docs/design.md's module map lists exactly the package's modules, and the reference tables
scripts/gen-docs writes cover every code and format, once each."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.admin.policy_docs import BLOCKS, begin, end
from libvirt_txmode.admin.policy_docs import DOCUMENTS as TABLE_HOMES
from libvirt_txmode.engine.codes import CODES, REGISTRY
from libvirt_txmode.report.registry import FORMAT_NAMES

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "libvirt_txmode"
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
# [label](target), not inside `code`; images and reference-style links are not used here.
LINK = re.compile(r"(?<!`)\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are no links."""
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings; a repeated heading gets -1, -2 … as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text(encoding="utf-8"))
    for match in re.finditer(r"(?m)^#{1,6} +(.+?) *$", text):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_the_link_check_sees_links_and_anchors() -> None:
    # The checks below are only as good as the parsing: it must find what is there.
    assert "install" in anchors(ROOT / "README.md")
    assert "the-trust-rule" in anchors(ROOT / "docs" / "policy.md")
    assert "docs/ci-guide.md" in links(ROOT / "README.md")
    assert slug("What the gate sees, and what it cannot") == "what-the-gate-sees-and-what-it-cannot"
    assert slug("`-f` choices: 1.5 times (faster)") == "-f-choices-15-times-faster"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in links(document):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        destination = (document.parent / file).resolve() if file else document
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    assert broken == [], f"{document.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def module_map() -> set[str]:
    """The files docs/design.md's module map names, as paths relative to the package."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("\n## The module map\n", 1)[1]
    block = re.search(r"(?ms)^```\n(libvirt_txmode/\n.*?)^```", section)
    assert block is not None, "docs/design.md: the module map's code block"
    names: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, folder) of the enclosing subpackages
    for line in block.group(1).splitlines()[1:]:
        match = re.match(r"( +)(\w+\.py|\w+/)(?: |$)", line)
        assert match is not None, f"docs/design.md module map: not a module line: {line!r}"
        indent, name = len(match.group(1)), match.group(2)
        folders = [(i, f) for i, f in folders if i < indent]
        if name.endswith("/"):
            folders.append((indent, name))
        else:
            names.add("".join(f for _, f in folders) + name)
    return names


def test_the_module_map_lists_every_module_and_nothing_else() -> None:
    on_disk = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    on_map = module_map()
    missing, extra = sorted(on_disk - on_map), sorted(on_map - on_disk)
    assert (missing, extra) == ([], []), (
        "docs/design.md's module map is out of step with libvirt_txmode/: "
        f"add a line for each of {missing or 'none'}; remove {extra or 'none'}"
    )


# --- the generated reference tables ---------------------------------------------------------------


@pytest.mark.parametrize("code", CODES)
def test_every_finding_code_has_its_row(code: str) -> None:
    table = block_text("docs/policy.md", "finding-codes")
    (row,) = [line for line in table.splitlines() if line.startswith(f"| `{code}` |")]
    assert REGISTRY[code].level_note in row


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_format_is_among_the_documented_choices(name: str) -> None:
    assert f"`{name}`" in block_text("docs/ci-guide.md", "format-choices")


def block_text(document: str, name: str) -> str:
    text = (ROOT / document).read_text(encoding="utf-8")
    return text.split(begin(name), 1)[1].split(end(name), 1)[0]


def test_no_hand_written_copy_of_a_generated_table_remains() -> None:
    """Each table stands once, between its markers, in the file gen-docs writes it to."""
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        relative = str(document.relative_to(ROOT))
        for name in BLOCKS:
            expected = 1 if name in TABLE_HOMES.get(relative, ()) else 0
            assert text.count(begin(name)) == expected, (relative, name)
        outside = text
        for name in TABLE_HOMES.get(relative, ()):
            outside = outside.replace(block_text(relative, name), "")
        # The old hand-kept copies: a code table's header, the report formats spelled out as a
        # -f list (doctor's own -f text|json is not one).
        assert "| code | meaning |" not in outside, relative
        assert not re.search(r"-f [a-z|]*\|(junit|sarif)\b", outside), relative


def test_gen_docs_check_finds_a_stale_table(tmp_path: Path) -> None:
    """A reference table edited by hand (or left behind by a new code) is stale for --check."""
    # The man pages and completion too: --check counts a missing generated file as stale.
    for folder in ("man", "completion"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "docs").mkdir()
    for relative in TABLE_HOMES:
        shutil.copy(ROOT / relative, tmp_path / relative)
    gen_docs = [sys.executable, str(ROOT / "scripts" / "gen-docs")]
    check = subprocess.run([*gen_docs, "--check", str(tmp_path)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (0, "")
    policy = tmp_path / "docs" / "policy.md"
    policy.write_text(policy.read_text().replace("| `xml-invalid` |", "| `xml-broken` |"))
    check = subprocess.run([*gen_docs, "--check", str(tmp_path)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "stale: docs/policy.md (policy-reference, finding-codes)" in check.stderr
    # Without --check it writes the table back.
    subprocess.run([*gen_docs, str(tmp_path)], capture_output=True, check=True)
    assert policy.read_text() == (ROOT / "docs" / "policy.md").read_text()
