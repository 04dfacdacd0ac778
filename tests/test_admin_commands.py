"""libvirt-txmode builds every subcommand's parser at start, so every subcommand module is imported
for --help and for each command: none may load lxml or libvirt-python then. They load with the
commands that parse XML or talk to libvirt (the deferred imports in admin/ say so)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from libvirt_txmode.admin.commands import SUBCOMMANDS

HEAVY = ("lxml", "libvirt")


def _loaded_after(argv: list[str]) -> list[str]:
    """The heavy libraries loaded once ``libvirt-txmode ARGV`` has run (in a fresh interpreter)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from libvirt_txmode.admin.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["audit", "--help"], ["explain"], ["policy-schema"], ["completion", "bash"]],
)
def test_a_command_that_needs_neither_loads_neither_lxml_nor_libvirt(argv: list[str]) -> None:
    assert _loaded_after(argv) == []


def test_a_command_that_parses_xml_loads_lxml(tmp_path: Path) -> None:
    # The control for the test above: the same probe sees lxml once a domain is parsed.
    (tmp_path / "vm.xml").write_text(
        "<!-- expect: -->\n<domain type='kvm'><name>vm</name><devices/></domain>\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    assert "lxml" in _loaded_after(["policy-test", "-p", str(policy), str(tmp_path)])


@pytest.mark.parametrize("module", SUBCOMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_each_listed_module_adds_a_subcommand(module: ModuleType) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    module.add_parser(sub)
    assert sub.choices
    assert all(callable(p.get_default("run")) for p in sub.choices.values())


@pytest.mark.parametrize("module", ["libvirt_txmode", "libvirt_txmode.host_commands"])
def test_the_command_runs_under_its_module_names(module: str) -> None:
    # The snapshot unit install-hook writes runs `python -I -m libvirt_txmode snapshot`; units
    # written by 0.3 run `-m libvirt_txmode.host_commands`, and install-hook keeps existing units.
    done = subprocess.run(
        [sys.executable, "-I", "-m", module, "snapshot", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: libvirt-txmode snapshot")


def test_the_snapshot_unit_runs_the_stable_module_name() -> None:
    unit = (
        Path(__file__).resolve().parent.parent
        / "libvirt_txmode/data/libvirt-txmode-snapshot.service"
    )
    assert "ExecStart=@PYTHON@ -I -m libvirt_txmode snapshot\n" in unit.read_text()
