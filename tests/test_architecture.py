"""The walls of the design: subpackages with one-way arrows between them, a pure engine, a hook
that never reaches libvirt."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.admin.hook_file import hook_settings
from tests.hookrun import LIBVIRT_ENV, domain, make_hook, nic

QEMU = "/usr/bin/qemu-system-x86_64"

PACKAGE = Path(__file__).resolve().parent.parent / "libvirt_txmode"


def _name(path: Path) -> str:
    """``engine.check`` for libvirt_txmode/engine/check.py; ``engine`` for its __init__."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
MODULES = set(FILES)
SUBPACKAGES = {name for name, path in FILES.items() if path.name == "__init__.py" and name}

# Who may import whom. common is the floor; the engine stands on it alone; a door (hook, ci,
# admin) may use what is below it, never another door, except that admin writes the man pages
# and completion of validate-domain (ci's parser) and empties the hook's cache.
ALLOWED = {
    "common": set(),
    "engine": {"common"},
    "host": {"common", "engine"},
    "report": {"common", "engine"},
    "hook": {"common", "engine", "host"},
    "ci": {"common", "engine", "host", "report"},
    "admin": {"common", "engine", "host", "report", "hook", "ci"},
}
# The top of the package: the version, the script installed hooks run, and the command's names
# for python -m (the current one and the one 0.3's snapshot units run).
TOP_LEVEL = {"", "hookstart", "__main__", "host_commands"}


def _imports(module: str) -> set[str]:
    """Package modules ``module`` imports anywhere (deferred imports inside functions count)."""
    path = FILES[module]
    tree = ast.parse(path.read_text())
    # A name imported for mypy only (``if TYPE_CHECKING:``) is no import at run time.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    here = module.split(".") if module else []
    if path.name != "__init__.py":
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - node.level + 1]
        elif node.module and (node.module + ".").startswith("libvirt_txmode."):
            base = []
        else:
            continue
        dotted = ".".join(
            [*base, *(node.module or "").split(".")]
            if node.level
            else (node.module or "").split(".")[1:]
        ).strip(".")
        for alias in node.names:
            candidate = f"{dotted}.{alias.name}" if dotted else alias.name
            found.add(candidate if candidate in MODULES else dotted)
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


def _subpackage(module: str) -> str:
    return module.split(".", maxsplit=1)[0] if module not in TOP_LEVEL else ""


def test_every_module_lives_in_a_subpackage_with_its_rules() -> None:
    assert set(ALLOWED) == SUBPACKAGES
    strays = sorted(m for m in MODULES if m not in TOP_LEVEL and _subpackage(m) not in ALLOWED)
    assert strays == []


@pytest.mark.parametrize("module", sorted(MODULES - TOP_LEVEL))
def test_imports_follow_the_arrows(module: str) -> None:
    own = _subpackage(module)
    crossing = {
        target for target in GRAPH[module] if _subpackage(target) not in {own, "", *ALLOWED[own]}
    }
    assert crossing == set(), f"{module} may not import {sorted(crossing)}"


def test_the_hook_script_enters_through_the_hook_package() -> None:
    assert {_subpackage(m) for m in GRAPH["hookstart"]} <= {"hook", ""}


def test_no_import_cycle_in_the_package() -> None:
    cycles = sorted(m for m in MODULES if m in _reach(m))
    assert cycles == []


def _third_party(module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(FILES[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & {"lxml", "yaml", "libvirt"}


# Who may import a third-party library: only domain parsing reads XML with lxml in the engine
# (libvirt's own files and JUnit are read and written at the edges), only the policy reader
# parses YAML, and only snapshot-taking, audit and the liveness canary talk to the libvirt API.
THIRD_PARTY = {
    "engine.domain_xml": {"lxml"},
    "engine.policy": {"yaml"},
    "host.networks": {"lxml"},
    "host.libvirt_snapshot": {"lxml", "libvirt"},
    "report.junit_format": {"lxml"},
    "report.fleet_render": {"lxml"},
    "admin.audit": {"libvirt"},
    "admin.liveness": {"libvirt"},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_third_party_libraries_stay_where_they_belong(module: str) -> None:
    assert _third_party(module) <= THIRD_PARTY.get(module, set())


def test_the_hook_never_reaches_the_libvirt_api() -> None:
    # Calling libvirt from a hook deadlocks the daemon: the module that does is out of reach.
    reach = _reach("hook.protocol") | {"hook.protocol"}
    assert "host.libvirt_snapshot" not in reach
    assert all("libvirt" not in _third_party(m) for m in reach)


@pytest.mark.parametrize(
    "module", ["engine.model", "common.text", "engine.codes", "engine.wording", "common.records"]
)
def test_the_model_is_standard_library_only(module: str) -> None:
    assert _reach(module) <= {
        "common.text", "engine.model", "engine.codes", "common.records", "common", "engine",
    }  # fmt: skip


@pytest.mark.parametrize(
    "module",
    [
        "engine.check",
        "engine.policy",
        "engine.libvirt_rules",
        "engine.model",
        "engine.qemu_args",
        "engine.codes",
    ],
)
def test_the_engine_imports_no_parser(module: str) -> None:
    assert "engine.domain_xml" not in _reach(module)
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
    "lxml", "lxml.etree", "libvirt_txmode.hook.gate", "libvirt_txmode.engine.check", "libvirt_txmode.engine.domain_xml",
    "libvirt_txmode.engine.policy", "libvirt_txmode.engine.model", "dataclasses", "typing", "json", "re",
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
    return {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def test_a_hook_miss_imports_only_what_it_uses(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    # The first warms the probe cache and the compiled policy.
    _imported(hook.path, domain("arch-warm", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU))
    xml = domain("arch-miss", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU)
    miss = _imported(hook.path, xml)
    assert {
        "libvirt_txmode.engine.check",
        "libvirt_txmode.engine.domain_xml",
    } <= miss  # a miss: the full check
    assert miss & NOT_ON_THE_MISS_PATH == set()
    hit = _imported(hook.path, xml.replace(b"<domain ", b"<domain id='7' ", 1))
    assert "libvirt_txmode.hook.verdict" in hit
    assert hit & NOT_ON_THE_CACHED_PATH == set()


def test_no_private_interpreter_module_and_no_exec() -> None:
    """The standard library's public modules only (``_json``, ``_sha256`` come and go between
    Python versions), and no code compiled at run time."""
    for path in sorted(PACKAGE.rglob("*.py")):
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
_OWN_JUDGEMENT = {"common.files"}


def test_one_trust_rule() -> None:
    """Whether a path may be believed is decided in files.py (path_trust_problem, node_problem)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if _name(path) in _OWN_JUDGEMENT:
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


def test_validate_domain_loads_logging_only_to_say_something(tmp_path: Path) -> None:
    # A snapshot without type ancestry: validate-domain has an INFO line for it, which only -v
    # shows; without -v, logging (which would load only to drop the line) is not imported.
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    snapshot = json.loads(
        (
            Path(__file__).resolve().parent.parent / "examples" / "hosts" / "debian12.json"
        ).read_text()
    )
    for emulator in snapshot["emulators"].values():
        emulator.pop("ancestry", None)
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps(snapshot))
    xml = tmp_path / "vm.xml"
    xml.write_bytes(domain("vm", nic("52:54:00:00:00:01", "iothread"), emulator=QEMU))
    command = [
        sys.executable, "-X", "importtime", str(Path(sys.executable).parent / "validate-domain"),
        "-p", str(policy), "--caps", str(caps), "-f", "json", str(xml),
    ]  # fmt: skip
    quiet = subprocess.run(command, capture_output=True, text=True, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert "logging" not in {line.split("|")[-1].strip() for line in quiet.stderr.splitlines()}
    verbose = subprocess.run([*command, "-v"], capture_output=True, text=True, check=False)
    assert "has no recorded type ancestry" in verbose.stderr
    no_cache = subprocess.run([*command, "--no-cache"], capture_output=True, text=True, check=False)
    assert "yaml" in {line.split("|")[-1].strip() for line in no_cache.stderr.splitlines()}


def _deferred_imports(module: str) -> list[tuple[int, bool]]:
    """(line, has a reason) of each group of imports inside a function: consecutive import
    statements share the reason the first one gives after ``noqa: PLC0415 -``."""
    path = FILES[module]
    lines = path.read_text().splitlines()
    found: list[tuple[int, bool]] = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        blocks = (getattr(inner, "body", None) for inner in ast.walk(node))
        for block in (b for b in blocks if isinstance(b, list)):
            previous_was_import = False
            for statement in block:
                is_import = isinstance(statement, (ast.Import, ast.ImportFrom))
                if is_import and not previous_was_import:
                    text = lines[statement.lineno - 1]
                    found.append((statement.lineno, "PLC0415 - " in text))
                previous_was_import = is_import
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_deferred_import_says_why(module: str) -> None:
    # A deferred import hides a dependency from the reader: each one states what it saves.
    silent = [line for line, reason in _deferred_imports(module) if not reason]
    assert silent == [], f"{FILES[module]}: deferred imports without a reason at lines {silent}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_long_module_says_why_it_is_one(module: str) -> None:
    # Past ~400 lines a module usually holds two jobs; one that does not says so at its top.
    source = FILES[module].read_text()
    if source.count("\n") > 400:
        assert "past 400 lines" in (ast.get_docstring(ast.parse(source)) or ""), (
            f"{FILES[module]} has {source.count(chr(10))} lines: split it by job, or say in its "
            "docstring why it is one module ('past 400 lines')"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_record_says_what_it_is(module: str) -> None:
    # A record is read more often than its fields: a docstring says what one stands for. (A
    # dataclass without one also has dataclasses build one through inspect.signature, at every
    # import: 0.15 ms a class on the hook's miss.)
    missing = [
        f"{node.name} (line {node.lineno})"
        for node in ast.walk(ast.parse(FILES[module].read_text()))
        if isinstance(node, ast.ClassDef)
        and any("dataclass" in ast.unparse(decorator) for decorator in node.decorator_list)
        and not ast.get_docstring(node)
    ]
    assert missing == [], f"{FILES[module]}: records without a docstring: {missing}"
