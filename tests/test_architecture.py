"""The walls of the design: one-way data flow, a pure engine, a hook that never reaches libvirt."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.install import hook_settings
from tests.hookrun import LIBVIRT_ENV, domain, make_hook, nic

QEMU = "/usr/bin/qemu-system-x86_64"

PACKAGE = Path(__file__).resolve().parent.parent / "libvirt_txmode"
MODULES = {path.stem for path in PACKAGE.glob("*.py")}


def _imports(module: str) -> set[str]:
    """Package modules ``module`` imports anywhere (deferred imports inside functions count)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    # A name imported for mypy only (``if TYPE_CHECKING:``) is no import at run time.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("libvirt_txmode."):
                found.add(node.module.split(".")[1])
    return found & MODULES


GRAPH = {module: _imports(module) for module in MODULES}


def _reach(start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in GRAPH.get(stack.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_no_import_cycle_in_the_package() -> None:
    cycles = sorted(m for m in MODULES if m in _reach(m))
    assert cycles == []


def test_the_hook_never_reaches_the_libvirt_api() -> None:
    # Calling libvirt from a hook deadlocks the daemon: the module that does is out of reach.
    assert "libvirt_host" not in _reach("hook")
    source = "\n".join((PACKAGE / f"{m}.py").read_text() for m in _reach("hook") | {"hook"})
    assert "import libvirt\n" not in source and "import libvirt " not in source


@pytest.mark.parametrize("module", ["model", "text", "codes", "findings", "records"])
def test_the_model_is_standard_library_only(module: str) -> None:
    assert _reach(module) <= {"text", "model", "codes", "records"}


@pytest.mark.parametrize(
    "module", ["check", "policy", "libvirt_rules", "model", "qemu_args", "codes"]
)
def test_the_engine_imports_no_parser(module: str) -> None:
    assert "domain" not in _reach(module)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, libvirt_txmode.{module}; "
            "print(sorted(m for m in ('lxml', 'yaml', 'libvirt') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


# What a hook miss (no cached verdict; warm probe cache and compiled policy) does not need: logging
# waits for a first message (logs.py), probes import subprocess, the policy is read compiled.
NOT_ON_THE_MISS_PATH = {
    "logging", "traceback", "threading", "subprocess", "selectors", "signal", "yaml",
}  # fmt: skip
# A cached decision answers before the full check: none of it, nor the heavier standard modules.
NOT_ON_THE_CACHED_PATH = NOT_ON_THE_MISS_PATH | {
    "lxml", "lxml.etree", "libvirt_txmode.gate", "libvirt_txmode.check", "libvirt_txmode.domain",
    "libvirt_txmode.policy", "libvirt_txmode.model", "dataclasses", "typing", "json", "re",
}  # fmt: skip


def _imported(hook_path: Path, xml: bytes) -> set[str]:
    settings = hook_settings(str(hook_path))
    hookstart = [
        sys.executable, "-I", "-S", "-X", "importtime",
        os.path.join(settings["PACKAGE"], "hookstart.py"),
        "--policy", settings["POLICY"], "--snapshot", settings["SNAPSHOT"],
        "--cache-dir", settings["CACHE"], "--", "vm", "prepare", "begin", "-",
    ]  # fmt: skip
    done = subprocess.run(
        hookstart, input=xml, capture_output=True, check=False, env=dict(LIBVIRT_ENV)
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    return ours(stderr)


def ours(importtime: str) -> set[str]:
    """The modules the hook imports itself: at the top level or from a libvirt_txmode module.
    What a standard module imports in turn is that Python's business and changes between
    versions (3.9's tempfile brings threading through shutil and bz2); only our choices count.
    ``-X importtime`` prints a module after the ones it imported, indented one level less."""
    entries = []
    for line in importtime.splitlines():
        if line.startswith("import time:") and not line.rstrip().endswith("| imported package"):
            name = line.split("|")[-1]
            entries.append((len(name) - len(name.lstrip()), name.strip()))
    found = set()
    for position, (depth, name) in enumerate(entries):
        parent = next((n for d, n in entries[position + 1 :] if d < depth), None)
        if depth == 1 or parent is None or parent.startswith("libvirt_txmode"):
            found.add(name)
    return found


def test_a_hook_miss_imports_only_what_it_uses(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    # The first warms the probe cache and the compiled policy.
    _imported(hook.path, domain("arch-warm", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU))
    xml = domain("arch-miss", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU)
    miss = _imported(hook.path, xml)
    assert {"libvirt_txmode.check", "libvirt_txmode.domain"} <= miss  # a miss: the full check
    assert miss & NOT_ON_THE_MISS_PATH == set()
    hit = _imported(hook.path, xml.replace(b"<domain ", b"<domain id='7' ", 1))
    assert "libvirt_txmode.verdict" in hit
    assert hit & NOT_ON_THE_CACHED_PATH == set()


def test_no_private_interpreter_module_and_no_exec() -> None:
    """The standard library's public modules only (``_json``, ``_sha256`` come and go between
    Python versions), and no code compiled at run time."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                names = []
            for name in names:
                private = any(part.startswith("_") for part in name.split("."))
                assert name == "__future__" or not private, (path, name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("exec", "eval", "compile"), (path, node.lineno)


# The one module that judges an owner or mode itself: the rule's own.
_OWN_JUDGEMENT = {"files"}


def test_one_trust_rule() -> None:
    """Whether a path may be believed is decided in files.py (path_trust_problem, node_problem)."""
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in _OWN_JUDGEMENT:
            continue
        source = path.read_text()
        for needle in ("st_uid", "S_IWGRP", "S_IWOTH", "0o022", "0o077", "S_IMODE"):
            assert needle not in source, (path.name, needle)


def test_validate_domain_on_an_unchanged_policy_needs_no_yaml(tmp_path: Path) -> None:
    # The second run reads the compiled copy the first one kept in the cache directory.
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefaults:\n  allowed: [iothread]\n")
    snapshot = Path(__file__).resolve().parent.parent / "examples" / "hosts"
    caps = sorted(snapshot.glob("*.json"))[0]
    xml = tmp_path / "vm.xml"
    xml.write_bytes(domain("vm", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU))
    command = [
        sys.executable, "-X", "importtime", str(Path(sys.executable).parent / "validate-domain"),
        "-p", str(policy), "--caps", str(caps), "--cache-dir", str(tmp_path / "cache"),
        "-f", "json", str(xml),
    ]  # fmt: skip
    loaded = []
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode in (0, 1), done.stderr
        loaded.append({line.split("|")[-1].strip() for line in done.stderr.splitlines()})
    assert "yaml" in loaded[0]
    assert "yaml" not in loaded[1]
    no_cache = subprocess.run([*command, "--no-cache"], capture_output=True, text=True, check=False)
    assert "yaml" in {line.split("|")[-1].strip() for line in no_cache.stderr.splitlines()}
