"""The integration tests again, on Debian 13 (trixie: its Python, libvirt and QEMU), in a root.

A debootstrap root with the test suite's own packages (`scripts/debian-root --suite trixie --dev`)
gets a copy of this tree and its test venv, runs its own virtlogd and libvirtd (its own /run and
/dev: the host's daemon, hooks and sockets are never touched), and runs every test marked
`integration` there, under CI=true so that a skip is a failure. Tests that make a Debian root of
their own (marker `debian_root`, this one included) run on the host only; the package test runs
on a trixie root from the host instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.debian_root import debian_root, require_tools
from tests.libvirt_env import daemon_pid

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

SUITE = "trixie"
# What runs inside: every integration test, so that one added later is picked up too.
SELECTION = "integration and not debian_root"


def test_integration_tests_pass_on_debian_13(tmp_path: Path) -> None:
    require_tools()
    with debian_root(tmp_path, SUITE, dev=True) as root:
        root.assert_separate_from_host(daemon_pid())
        release = root.path("/etc/os-release").read_text()
        assert "VERSION_CODENAME=trixie" in release
        project = root.install_project(SUITE)
        result = root.run(
            "bash",
            "-c",
            f'cd {project} && exec .venv/bin/python -m pytest -p no:cacheprovider -q -rfEs -m "$1"',
            "pytest",
            SELECTION,
            check=False,
            timeout=1800,
            env={"CI": "true", "COLUMNS": os.environ.get("COLUMNS", "120")},
        )
        summary = result.stdout.strip().splitlines()[-1:] or [""]
        assert result.returncode == 0, (
            f"integration tests on Debian 13 failed ({summary[0]}):\n"
            f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
        )
        assert " passed" in summary[0] and "skipped" not in summary[0], summary[0]
