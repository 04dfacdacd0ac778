"""The test suite again on Debian 13 (trixie: its Python, libvirt and QEMU), in a root.

A debootstrap root with the test suite's own packages (`scripts/debian-root --suite trixie --dev`)
gets a copy of this tree, runs its own virtlogd and libvirtd (its own /run and /dev: the host's
daemon, hooks and sockets are never touched), and runs the README's test command there,
`bash scripts/test` (ruff, mypy, pytest), under CI=true so that a skip is a failure. Every test
runs, the integration tests (real libvirtd, QEMU, `virsh start` through the installed hook)
included, and any added later with them; only tests that make a Debian root of their own
(marker `debian_root`, this one included) run on the host only. The package test installs the
.deb on a trixie root from the host instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.debian_root import debian_root, require_tools
from tests.libvirt_env import daemon_pid

pytestmark = [pytest.mark.integration, pytest.mark.debian_root]

SUITE = "trixie"
SELECTION = "not debian_root"


def test_the_suite_passes_on_debian_13(tmp_path: Path) -> None:
    require_tools()
    with debian_root(tmp_path, SUITE, dev=True) as root:
        root.assert_separate_from_host(daemon_pid())
        assert "VERSION_CODENAME=trixie" in root.path("/etc/os-release").read_text()
        project = root.install_project(SUITE)
        result = root.run(
            "bash",
            f"{project}/scripts/test",
            "-m",
            SELECTION,
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            check=False,
            timeout=2400,
            env={"CI": "true", "COLUMNS": "120", "LIBVIRT_TXMODE_TEST_ROOT": "1"},
        )
        summary = (result.stdout.strip().splitlines() or [""])[-1]
        assert result.returncode == 0, (
            f"bash scripts/test on Debian 13 failed ({summary}):\n"
            f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
        )
        assert " passed" in summary and "skipped" not in summary, summary
