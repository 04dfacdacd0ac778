"""The README stays true: its CI examples run, its quoted output is what the tool prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from libvirt_txmode import __version__

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent


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


@pytest.fixture
def domains_repo(tmp_path: Path) -> Path:
    """A repository of domain definitions laid out as the README says: the policy as
    .libvirt-txmode.yaml at its root, snapshots in hosts/, domains in domains/."""
    root = tmp_path / "domains-repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copy(REPO / "policy.yaml", root / ".libvirt-txmode.yaml")
    shutil.copytree(REPO / "examples" / "hosts", root / "hosts")
    shutil.copytree(REPO / "examples" / "domains", root / "domains")
    return root


def run_line(line: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A recipe's line as the CI runner's shell runs it, with this venv's commands on PATH."""
    environ = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8", **env}
    return subprocess.run(
        ["sh", "-c", line], cwd=cwd, env=environ, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip


def test_readme_has_the_ci_examples() -> None:
    blocks = yaml_blocks()
    assert len(blocks) == 3
    github, gitlab, precommit = blocks
    assert isinstance(github, dict) and "jobs" in github
    assert isinstance(gitlab, dict) and "txmode" in gitlab
    assert (
        isinstance(precommit, dict) and precommit["repos"][0]["hooks"][0]["id"] == "validate-domain"
    )


def test_github_actions_example_runs(domains_repo: Path) -> None:
    workflow = yaml_blocks()[0]
    assert isinstance(workflow, dict)
    # upload-sarif needs it; without it the upload fails on repositories with default permissions.
    assert workflow["permissions"]["security-events"] == "write"
    steps = workflow["jobs"]["txmode"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/"))
    assert upload["if"] == "always()"
    assert f"@v{__version__}" in next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    (line,) = commands(workflow)
    result = run_line(line, domains_repo, GITHUB_ACTIONS="true", CI="true")
    # The examples include failing domains: findings, not a crash.
    assert result.returncode == 1, result.stderr
    sarif = json.loads((domains_repo / upload["with"]["sarif_file"]).read_text())
    (run,) = sarif["runs"]
    assert {r["ruleId"] for r in run["results"]} >= {"txmode-not-allowed", "xml-invalid"}
    assert {a["location"]["uriBaseId"] for a in run["artifacts"]} == {"%SRCROOT%"}
    assert run["artifacts"][0]["location"]["uri"] == "domains/01-web-iothread.xml"
    assert run["invocations"][0]["exitCode"] == 1


def test_gitlab_example_runs_in_a_writable_checkout_as_root(domains_repo: Path) -> None:
    job = yaml_blocks()[1]
    assert isinstance(job, dict)
    assert not job["txmode"]["image"].endswith("-slim")  # pip install git+... needs git
    # GitLab's default runners check out group/other-writable files, and run as root.
    subprocess.run(["chmod", "-R", "go+w", str(domains_repo)], check=True)
    assert os.geteuid() == 0
    results = [run_line(line, domains_repo, GITLAB_CI="true") for line in commands(job)]
    assert [r.returncode for r in results] == [0, 1], [r.stderr for r in results]
    assert all(r.stderr == "" for r in results)
    reports = job["txmode"]["artifacts"]["reports"]
    assert job["txmode"]["artifacts"]["when"] == "always"
    issues = json.loads((domains_repo / reports["codequality"]).read_text())
    assert {i["check_name"] for i in issues} >= {"txmode-not-allowed", "xml-invalid"}
    assert all(i["location"]["path"].startswith("domains/") for i in issues)
    from lxml import etree

    suite = etree.parse(str(domains_repo / reports["junit"])).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(list((REPO / "examples" / "domains").glob("*.xml")))
    assert suite.xpath("count(.//testcase[failure])") >= 1


def test_pre_commit_example_runs_for_real(domains_repo: Path, tmp_path: Path) -> None:
    """pre-commit installs the hook from a clone of this repository at the tag the README names
    and runs it on the domains repository, as a developer's `git commit` would."""
    config = yaml_blocks()[2]
    assert isinstance(config, dict)
    (entry,) = config["repos"]
    assert entry["rev"] == f"v{__version__}"
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["require_serial"] is True
    tool = tmp_path / "libvirt-txmode"
    subprocess.run(["git", "clone", "-q", str(REPO), str(tool)], check=True, timeout=120)
    # The release tag (the lead creates it in the real repository); here on the clone's HEAD.
    subprocess.run(["git", "-C", str(tool), "tag", "-f", entry["rev"]], check=True)
    text = README.split("pre-commit (`.pre-commit-config.yaml`", 1)[1].split("```yaml\n", 1)[1]
    text = text.split("```", 1)[0].replace(entry["repo"], str(tool))
    (domains_repo / ".pre-commit-config.yaml").write_text(text)
    git = ["git", "-C", str(domains_repo), "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    subprocess.run([*git, "add", "-A"], check=True)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "LC_ALL": "C.UTF-8",
    }
    for key in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    result = subprocess.run(
        [str(BIN / "pre-commit"), "run", "--all-files"], cwd=domains_repo, env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert re.search(r"^validate-domain \(libvirt NIC txmode\)\.+Failed$", output, re.M), output
    assert "domains/04-storage-timer.xml:17: error: " in output
    # One process for every file: one summary line.
    summaries = re.findall(r"^\d+ files?, \d+ domains?, .*$", output, re.M)
    assert summaries == ["12 files, 11 domains, 12 NICs: 7 errors, 2 warnings"]


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
