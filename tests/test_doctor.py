"""`libvirt-txmode doctor` on installs in temporary directories: one line per check, exit 0 OK,
1 WARNING, 2 CRITICAL.

The installs are real (install-hook with its self-test); the faults are made on the file system
as an operator or a dist-upgrade would make them. doctor against libvirt's own hooks directory
and a real snapshot is in test_e2e_libvirt.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.admin.doctor import Check, exit_code, render_checks, snapshot_drift
from libvirt_txmode.admin.install import install
from libvirt_txmode.admin.layout import Layout

CLI = Path(sys.executable).parent / "libvirt-txmode"


def layout(base: Path) -> Layout:
    return Layout(
        hooks_dir=str(base / "hooks"),
        config_dir=str(base / "etc"),
        state_dir=str(base / "state"),
        cache_dir=str(base / "cache"),
    )


def doctor(base: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    lay = layout(base)
    return subprocess.run(
        [
            str(CLI), "doctor", "--hooks-dir", lay.hooks_dir, "--config-dir", lay.config_dir,
            "--state-dir", lay.state_dir, "--cache-dir", lay.cache_dir, *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    install(layout(tmp_path), python=sys.executable)
    return tmp_path


def test_healthy_install_passes_one_line_per_check(installed: Path) -> None:
    result = doctor(installed)
    # No snapshot taken: a warning, so WARNING (exit 1), nothing CRITICAL.
    assert (result.returncode, result.stderr) == (1, ""), result.stdout
    lines = result.stdout.splitlines()
    names = [line.split(":")[0].split()[-1] for line in lines[:-1]]
    assert names == [
        "hook", "interpreter", "self-test", "policy", "snapshot", "cache", "logging", "daemon",
        "live", "decisions",
    ]  # fmt: skip
    assert (
        lines[0]
        == f"ok   hook: {installed / 'hooks' / 'qemu'}: ours, main hook, mode 0755, owned by root"
    )
    assert lines[1] == (
        f"ok   interpreter: {sys.executable} -I imports libvirt_txmode from "
        f"{Path(__file__).resolve().parent.parent / 'libvirt_txmode'}"
    )
    assert lines[4].startswith("warn snapshot: ")  # none taken: slower, not broken
    # A test hooks directory is not what the daemon reads: nothing to prove there.
    assert lines[8] == (
        f"info live: {installed / 'hooks'} is not libvirt's hooks directory: not checked"
    )
    assert lines[-1].startswith("WARNING: 0 failed, ")
    data = json.loads(doctor(installed, "-f", "json").stdout)
    assert (data["status"], data["failed"]) == ("WARNING", 0)
    assert data["warnings"] >= 1 and data["ok"] + data["warnings"] == len(data["checks"])
    assert set(data["checks"][0]) == {"name", "status", "detail"}


def test_no_hook_fails(tmp_path: Path) -> None:
    result = doctor(tmp_path)
    assert result.returncode == 2
    assert result.stdout.splitlines()[0] == (
        f"fail hook: no libvirt-txmode hook in {tmp_path / 'hooks'} (qemu or "
        "qemu.d/50-libvirt-txmode): run 'libvirt-txmode install-hook'"
    )


def test_hook_libvirt_would_skip_fails(installed: Path) -> None:
    (installed / "hooks" / "qemu").chmod(0o644)
    result = doctor(installed, "-f", "json")
    assert result.returncode == 2
    assert statuses(result)["hook"] == "fail"


def test_removed_interpreter_fails_with_the_fix(installed: Path) -> None:
    """What a removed venv looks like: the wrapper names an interpreter that is gone."""
    hook = installed / "hooks" / "qemu"
    gone = str(installed / "removed-venv" / "bin" / "python3")
    hook.write_text(hook.read_text().replace(f"PYTHON={sys.executable}", f"PYTHON={gone}"))
    result = doctor(installed)
    assert result.returncode == 2
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert lines["fail interpreter"].startswith(
        f"fail interpreter: cannot run the hook's interpreter {gone}: No such file or directory"
    )
    assert "its interpreter " + gone + " is missing or not executable" in lines["fail self-test"]


def test_broken_policy_fails(installed: Path) -> None:
    policy = installed / "etc" / "policy.yaml"
    policy.write_text("version: 1\nactoin: audit\n")
    result = doctor(installed, "-f", "json")
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["policy"]["status"] == "fail"
    assert checks["policy"]["detail"].startswith(f"{policy}:2: actoin: unknown key")
    assert checks["self-test"]["status"] == "fail"


def test_cache_others_can_write_fails(installed: Path) -> None:
    (installed / "cache").chmod(0o777)
    result = doctor(installed, "-f", "json")
    assert result.returncode == 2
    assert statuses(result)["cache"] == "fail"


def test_stale_snapshot_is_named(tmp_path: Path) -> None:
    """A snapshot recorded for another build of the binary (a QEMU upgrade since) is stale."""
    emulator = tmp_path / "qemu-system-x86_64"
    emulator.write_text("#!/bin/sh\nexit 0\n")
    emulator.chmod(0o755)
    from libvirt_txmode.host.emulator import identify

    snapshot = tmp_path / "snapshot.json"
    document = {
        "format": "libvirt-txmode-snapshot",
        "version": 1,
        "host": "h",
        "created": "2026-11-25T00:00:00Z",
        "guests": [],
        "emulators": {
            str(emulator): {"identity": identify(str(emulator)).key(), "error": None, "devices": {}}
        },
    }
    snapshot.write_text(json.dumps(document))
    assert snapshot_drift(str(snapshot))[0] == []
    emulator.write_text("#!/bin/sh\n# upgraded\nexit 0\n")
    assert snapshot_drift(str(snapshot))[0] == [
        f"{emulator} changed since the snapshot (upgraded?)"
    ]
    emulator.unlink()
    assert snapshot_drift(str(snapshot))[0] == [
        f"{emulator} is gone (it was probed for the snapshot)"
    ]
    result = subprocess.run(
        [str(CLI), "snapshot", "--check", "-o", str(snapshot), "-c", "test:///nowhere"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"stale: {emulator} is gone (it was probed for the snapshot)" in result.stdout
    snapshot.write_text("{")
    result = subprocess.run(
        [str(CLI), "snapshot", "--check", "-o", str(snapshot)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "not a valid snapshot" in result.stderr


def test_text_rendering_counts_failures() -> None:
    checks = [Check("hook", "ok", "fine"), Check("policy", "fail", "bad\nline")]
    assert render_checks(checks, "text") == (
        "ok   hook: fine\nfail policy: bad\\x0aline\nCRITICAL: 1 failed, 0 warnings, 1 ok of 2 "
        "checks\n"
    )


@pytest.mark.parametrize(
    ("statuses_", "code", "name"),
    [
        (["ok", "info"], 0, "OK"),
        (["ok", "warn", "info"], 1, "WARNING"),
        (["warn", "fail", "ok"], 2, "CRITICAL"),
    ],
)
def test_exit_code_is_the_monitoring_plugin_convention(
    statuses_: list[str], code: int, name: str
) -> None:
    checks = [Check(f"c{i}", status, "x") for i, status in enumerate(statuses_)]
    assert exit_code(checks) == code
    document = json.loads(render_checks(checks, "json"))
    assert document["status"] == name
    assert (document["ok"], document["warnings"], document["failed"]) == (
        statuses_.count("ok") + statuses_.count("info"),
        statuses_.count("warn"),
        statuses_.count("fail"),
    )
    assert [c["status"] for c in document["checks"]] == statuses_


def test_every_installed_copy_is_reported_and_two_are_critical(installed: Path) -> None:
    """A second libvirt-txmode hook in qemu.d (what the package adds beside a venv's qemu)."""
    hooks = installed / "hooks"
    (hooks / "qemu.d").mkdir()
    second = hooks / "qemu.d" / "60-other-copy"
    shutil.copy2(hooks / "qemu", second)
    result = doctor(installed, "-f", "json")
    assert result.returncode == 2
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "hook")
    assert check["status"] == "fail"
    assert check["detail"].startswith(
        f"2 libvirt-txmode hooks installed: {hooks / 'qemu'} (interpreter {sys.executable}), "
        f"{second} (interpreter {sys.executable}); one gate per host"
    )


def test_a_dropin_without_a_foreign_hook_says_no_foreign_hook(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    (tmp_path / "hooks" / "qemu.d").mkdir()
    os.rename(tmp_path / "hooks" / "qemu", tmp_path / "hooks" / "qemu.d" / "50-libvirt-txmode")
    line = doctor(tmp_path).stdout.splitlines()[0]
    assert line.startswith(f"ok   hook: {tmp_path / 'hooks' / 'qemu.d' / '50-libvirt-txmode'}: ")
    assert "qemu.d drop-in, mode" in line and "foreign" not in line
    (tmp_path / "hooks" / "qemu").write_text("#!/bin/sh\nexit 0\n")
    line = doctor(tmp_path).stdout.splitlines()[0]
    assert "qemu.d drop-in (beside a foreign qemu hook)" in line


def test_logging_check_says_where_decisions_go(installed: Path) -> None:
    result = doctor(installed, "-f", "json")
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "logging")
    assert check["status"] == "ok"
    # journald, syslog or, where neither socket exists (this machine, mostly), the file.
    assert check["detail"].startswith(
        ("decisions go to journald", "decisions go to syslog", "decisions go to file ")
    )
