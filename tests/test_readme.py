"""The README stays true: its CI examples run, its quoted output is what the tool prints."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent

# What the examples call their files, and this repository's stand-ins for them.
SUBSTITUTES = {
    "policy.yaml": str(REPO / "policy.yaml"),
    "hosts/debian12.json": str(REPO / "examples" / "hosts" / "debian12.json"),
    "domains/": str(REPO / "examples" / "domains"),
}


def yaml_blocks() -> list[object]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README, re.S)]


def commands(node: object) -> list[str]:
    """Every validate-domain command line in a CI document's run:/script: entries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script"):
                lines = value if isinstance(value, list) else [value]
                found += [line for line in lines if str(line).startswith("validate-domain ")]
            else:
                found += commands(value)
    elif isinstance(node, list):
        for item in node:
            found += commands(item)
    return found


def run_example(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [SUBSTITUTES.get(word, word) for word in shlex.split(line)]
    argv[0] = str(BIN / "validate-domain")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_readme_has_the_ci_examples() -> None:
    blocks = yaml_blocks()
    assert len(blocks) == 3
    github, gitlab, precommit = blocks
    assert isinstance(github, dict) and "jobs" in github
    assert isinstance(gitlab, dict) and "txmode" in gitlab
    assert (
        isinstance(precommit, dict) and precommit["repos"][0]["hooks"][0]["id"] == "validate-domain"
    )


def test_github_actions_example_runs(tmp_path: Path) -> None:
    (line,) = commands(yaml_blocks()[0])
    result = run_example(line, tmp_path)
    # The examples include failing domains: findings, not a crash.
    assert result.returncode == 1, result.stderr
    import json

    sarif = json.loads((tmp_path / "txmode.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} >= {
        "txmode-not-allowed",
        "xml-invalid",
    }


def test_gitlab_example_runs(tmp_path: Path) -> None:
    (line,) = commands(yaml_blocks()[1])
    result = run_example(line, tmp_path)
    assert result.returncode == 1, result.stderr
    from lxml import etree

    suite = etree.parse(str(tmp_path / "txmode-junit.xml")).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(list((REPO / "examples" / "domains").glob("*.xml")))
    assert suite.xpath("count(.//testcase[failure])") >= 1


def test_pre_commit_hook_definition_runs(tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "validate-domain"
    assert re.search(hook["files"], "vm.xml") and not re.search(hook["files"], "vm.yaml")
    example = yaml_blocks()[2]
    assert isinstance(example, dict)
    args = example["repos"][0]["hooks"][0]["args"]
    # pre-commit appends the changed file names to entry + args.
    line = " ".join(
        [hook["entry"], *hook.get("args", []), *args, "examples/domains/01-web-iothread.xml"]
    )
    result = run_example(line, REPO)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("example", ["04-storage-timer.xml"])
def test_readme_quotes_the_demo_truthfully(example: str) -> None:
    quoted = re.search(
        rf"```\n== examples/domains/{example}\n(.*?)   exit code (\d)\n```", README, re.S
    )
    assert quoted is not None
    result = subprocess.run(
        [str(BIN / "validate-domain"), "-p", "policy.yaml", "--caps", "examples/hosts/debian12.json",
         f"examples/domains/{example}"],
        cwd=REPO, capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.stdout == quoted.group(1)
    assert str(result.returncode) == quoted.group(2)


def test_every_example_produces_what_its_header_says() -> None:
    for path in sorted((REPO / "examples" / "domains").glob("*.xml")):
        header = re.match(r"<!-- expect:(.*?)-->", path.read_text())
        assert header is not None, path
        expected = sorted(header.group(1).split())
        result = subprocess.run(
            [str(BIN / "validate-domain"), "-p", "policy.yaml", "--caps", "examples/hosts/debian12.json",
             "-f", "json", str(path.relative_to(REPO))],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        import json

        found = sorted(f"{f['code']}@{f['line']}" for f in json.loads(result.stdout)["findings"])
        assert found == expected, path
        errors = any(c.split("@")[0] != "txmode-ineffective" for c in expected)
        assert result.returncode == (1 if errors else 0), path


def test_fault_matrix_names_tests_that_exist() -> None:
    matrix = README.split("## Fault matrix", 1)[1].split("\n## ", 1)[0]
    current = ""
    checked = 0
    for token in re.findall(r"`((?:test_\w+\.py)?(?:::\w+)?)(?:\[[^\]]*\])?`", matrix):
        file, _, name = token.partition("::")
        current = file or current
        source = (REPO / "tests" / current).read_text()
        if name:
            assert re.search(rf"^def {name}\(", source, re.M), f"{current}::{name}"
        checked += 1
    assert checked > 40
