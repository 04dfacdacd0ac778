"""The README and the guides stay true: their CI recipes run, their quoted output is what the tool
prints, their fault matrix names tests that exist, their sample policy is one the tool accepts."""

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

from tests.libvirt_env import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# Where the recipes live: the CI guide (GitHub, GitLab, pre-commit), the fleet guide (the
# collection's install lines), the fault matrix.
CI_GUIDE = (REPO / "docs" / "ci-guide.md").read_text()
FLEET_GUIDE = (REPO / "docs" / "fleet-guide.md").read_text()
FAULT_MATRIX = (REPO / "docs" / "fault-matrix.md").read_text()
BIN = Path(sys.executable).parent


def yaml_blocks(text: str = CI_GUIDE) -> list[object]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


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
    """A repository of domain definitions laid out as the CI guide says: the policy as
    .libvirt-txmode.yaml at its root, snapshots in hosts/, domains in domains/."""
    root = tmp_path / "domains-repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copy(REPO / "policy.yaml", root / ".libvirt-txmode.yaml")
    shutil.copytree(REPO / "examples" / "hosts", root / "hosts")
    shutil.copytree(REPO / "examples" / "domains", root / "domains")
    return root


# The recipes' placeholders: the project's git server, and the commit of main they pin.
SERVER = "https://YOUR-GIT-SERVER/libvirt-txmode"
COMMIT = "COMMIT"
# What pip needs from this machine's environment to reach its index (or its local mirror).
PIP_ENV = ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_CONFIG_FILE", "PIP_INDEX_URL",
           "PIP_EXTRA_INDEX_URL")  # fmt: skip


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A clone of this repository, as a user's git server would serve it, and its commit."""
    path = tmp_path_factory.mktemp("server") / "libvirt-txmode"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True, timeout=120)
    commit = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # No tag to fall back on: the recipes must work from a commit alone.
    assert subprocess.run(["git", "-C", str(path), "tag"], capture_output=True, text=True,
                          check=True).stdout == ""  # fmt: skip
    return path, commit


def pinned(line: str, clone: tuple[Path, str], url: bool = True) -> str:
    """A recipe's line with the placeholders filled in: the clone for the server, its commit."""
    path, commit = clone
    # file://localhost/...: the pip a fresh venv brings (23.x) refuses "name @ git+file:///..."
    # (a URL without a host); git and pip both accept localhost.
    server = f"file://localhost{path}" if url else str(path)
    return line.replace(SERVER, server).replace(COMMIT, commit)


def run_line(
    line: str, cwd: Path, path: Path = BIN, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """A recipe's line as the CI runner's shell runs it, with ``path``'s commands on PATH."""
    environ = {"PATH": f"{path}:/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8", **env}
    environ.update({key: os.environ[key] for key in PIP_ENV if key in os.environ})
    return subprocess.run(
        ["sh", "-c", line], cwd=cwd, env=environ, capture_output=True, text=True, check=False,
        timeout=timeout,
    )  # fmt: skip


def install_lines(node: object) -> list[str]:
    """The pip install lines of a CI document's run:/script: entries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script"):
                lines = value if isinstance(value, list) else [value]
                found += [line for line in lines if str(line).startswith("pip install ")]
            else:
                found += install_lines(value)
    elif isinstance(node, list):
        for item in node:
            found += install_lines(item)
    return found


def runner_venv(tmp_path: Path, line: str, clone: tuple[Path, str]) -> Path:
    """A fresh Python, as a CI job starts with, into which the recipe's pip line installs the tool
    from the clone at its commit; its bin directory."""
    venv = tmp_path / "runner"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    assert f"{SERVER}@{COMMIT}" in line, line
    result = run_line(pinned(line, clone), tmp_path, path=venv / "bin", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (venv / "bin" / "validate-domain").exists()
    return venv / "bin"


def test_ci_guide_has_the_ci_examples() -> None:
    blocks = yaml_blocks()
    assert len(blocks) == 3
    github, gitlab, precommit = blocks
    assert isinstance(github, dict) and "jobs" in github
    assert isinstance(gitlab, dict) and "txmode" in gitlab
    assert (
        isinstance(precommit, dict) and precommit["repos"][0]["hooks"][0]["id"] == "validate-domain"
    )


def test_github_actions_example_runs(
    domains_repo: Path, clone: tuple[Path, str], tmp_path: Path
) -> None:
    workflow = yaml_blocks()[0]
    assert isinstance(workflow, dict)
    # upload-sarif needs it; without it the upload fails on repositories with default permissions.
    assert workflow["permissions"]["security-events"] == "write"
    steps = workflow["jobs"]["txmode"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/"))
    assert upload["if"] == "always()"
    (install,) = install_lines(workflow)
    runner = runner_venv(tmp_path, install, clone)
    (line,) = commands(workflow)
    result = run_line(line, domains_repo, path=runner, GITHUB_ACTIONS="true", CI="true")
    # The examples include failing domains: findings, not a crash.
    assert result.returncode == 1, result.stderr
    sarif = json.loads((domains_repo / upload["with"]["sarif_file"]).read_text())
    (run,) = sarif["runs"]
    assert {r["ruleId"] for r in run["results"]} >= {"txmode-not-allowed", "xml-invalid"}
    assert {a["location"]["uriBaseId"] for a in run["artifacts"]} == {"%SRCROOT%"}
    assert run["artifacts"][0]["location"]["uri"] == "domains/01-web-iothread.xml"
    assert run["invocations"][0]["exitCode"] == 1


def test_gitlab_example_runs_in_a_writable_checkout_as_root(
    domains_repo: Path, clone: tuple[Path, str], tmp_path: Path
) -> None:
    job = yaml_blocks()[1]
    assert isinstance(job, dict)
    assert not job["txmode"]["image"].endswith("-slim")  # pip install git+... needs git
    (install,) = install_lines(job)
    runner = runner_venv(tmp_path, install, clone)
    # GitLab's default runners check out group/other-writable files, and run as root.
    subprocess.run(["chmod", "-R", "go+w", str(domains_repo)], check=True)
    assert os.geteuid() == 0
    results = [
        run_line(line, domains_repo, path=runner, GITLAB_CI="true") for line in commands(job)
    ]
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


def test_pre_commit_example_runs_for_real(
    domains_repo: Path, clone: tuple[Path, str], tmp_path: Path
) -> None:
    """pre-commit installs the hook from a clone of this repository at the commit the recipe pins
    and runs it on the domains repository, as a developer's `git commit` would."""
    config = yaml_blocks()[2]
    assert isinstance(config, dict)
    (entry,) = config["repos"]
    assert (entry["repo"], entry["rev"]) == (SERVER, COMMIT)
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["require_serial"] is True
    text = CI_GUIDE.split("pre-commit (`.pre-commit-config.yaml`", 1)[1].split("```yaml\n", 1)[1]
    text = pinned(text.split("```", 1)[0], clone, url=False)
    (domains_repo / ".pre-commit-config.yaml").write_text(text)
    git = ["git", "-C", str(domains_repo), "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    subprocess.run([*git, "add", "-A"], check=True)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "LC_ALL": "C.UTF-8",
    }
    for key in PIP_ENV:
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


def test_collection_install_recipe_runs_from_a_clone(
    clone: tuple[Path, str], tmp_path: Path
) -> None:
    """The fleet guide's lines: clone at the pinned commit, build and install the collection."""
    block = re.search(rf"```sh\n(git clone {re.escape(SERVER)} .*?)```", FLEET_GUIDE, re.S)
    assert block is not None and COMMIT in block.group(1)
    if shutil.which("ansible-galaxy", path=f"{BIN}:/usr/bin:/bin") is None:
        skip_unless_ci("needs ansible-galaxy (ansible-core)")
    controller = tmp_path / "controller"
    controller.mkdir()
    result = run_line(pinned(block.group(1), clone), controller, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    checked_out = subprocess.run(
        ["git", "-C", str(controller / "libvirt-txmode"), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert checked_out == clone[1]
    # ansible-galaxy's default collections path below HOME (the controller directory here).
    installed = controller / ".ansible" / "collections" / "ansible_collections" / "libvirt_txmode"
    manifest = json.loads((installed / "fleet" / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["name"] == "fleet"
    assert (installed / "fleet" / "playbooks" / "fleet-check.yml").is_file()


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
    matrix = FAULT_MATRIX
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


def test_the_readme_policy_is_one_the_tool_accepts() -> None:
    """The front door's sample policy: every key real, every value valid."""
    from libvirt_txmode.engine.policy import parse_policy

    (sample,) = re.findall(r"```yaml\n(.*?)```", README, re.S)
    policy = parse_policy(sample, "README.md")
    assert [rule.name for rule in policy.rules] == ["storage-no-timer"]


def test_the_readme_validate_domain_lines_run(domains_repo: Path) -> None:
    """The short tour's command lines, in a repository laid out as the CI guide says."""
    block = README.split("### validate-domain\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert len(lines) == 2 and all(line.startswith("validate-domain ") for line in lines)
    for line in lines:
        result = run_line(line, domains_repo)
        # The examples include failing domains: findings, not a crash.
        assert (result.returncode, result.stderr) == (1, ""), line
    assert "domains/04-storage-timer.xml:17: error: " in run_line(lines[0], domains_repo).stdout
    sarif = json.loads((domains_repo / "txmode.sarif").read_text())
    assert sarif["runs"][0]["invocations"][0]["exitCode"] == 1
