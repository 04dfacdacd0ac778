"""The walls of the design: one-way data flow, a pure engine, a hook that never reaches libvirt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "libvirt_txmode"
MODULES = {path.stem for path in PACKAGE.glob("*.py")}


def _imports(module: str) -> set[str]:
    """Package modules ``module`` imports anywhere (deferred imports inside functions count)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
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
