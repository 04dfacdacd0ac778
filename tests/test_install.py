"""install-hook / uninstall-hook on a temporary hooks directory (the real /etc is in the e2e tests)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.install import (
    DROPIN_NAME,
    InstallError,
    Layout,
    install,
    is_ours,
    render_hook,
    uninstall,
)

FOREIGN = "#!/bin/sh\n# the operator's own hook\nexit 0\n"


def layout(base: Path) -> Layout:
    return Layout(
        hooks_dir=str(base / "hooks"),
        config_dir=str(base / "etc"),
        state_dir=str(base / "state"),
        cache_dir=str(base / "cache"),
    )


def tree(base: Path) -> dict[str, str]:
    """Every file under base with its content (for before/after comparisons)."""
    return {
        str(p.relative_to(base)): p.read_text(errors="replace")
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def test_install_writes_an_executable_wrapper_with_this_installation(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    outcome = install(lay, python="/opt/venv/bin/python3")
    hook = tmp_path / "hooks" / "qemu"
    assert outcome.hook_path == str(hook)
    text = hook.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "PYTHON=/opt/venv/bin/python3\n" in text
    assert f"POLICY={lay.policy}\n" in text
    assert f"SNAPSHOT={lay.snapshot}\n" in text
    assert f"CACHE={lay.cache_dir}\n" in text
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert is_ours(str(hook))
    # The default policy is the bundled one, installed root-only-writable.
    assert (
        Path(lay.policy).read_text() == (Path(__file__).parent.parent / "policy.yaml").read_text()
    )
    assert stat.S_IMODE(os.stat(lay.policy).st_mode) == 0o644
    assert outcome.messages == [
        f"installed hook {hook} (interpreter /opt/venv/bin/python3)",
        f"installed default policy {lay.policy}",
    ]


def test_rendered_wrapper_is_valid_posix_sh(tmp_path: Path) -> None:
    install(layout(tmp_path), python=sys.executable)
    assert (
        subprocess.run(["sh", "-n", str(tmp_path / "hooks" / "qemu")], check=False).returncode == 0
    )


def test_install_is_idempotent(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    before = tree(tmp_path)
    outcome = install(lay, python=sys.executable)
    assert tree(tmp_path) == before
    assert outcome.messages == [
        f"hook {tmp_path / 'hooks' / 'qemu'} already installed",
        f"kept existing policy {lay.policy}",
    ]


def test_foreign_hook_is_never_clobbered(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "qemu").write_text(FOREIGN)
    outcome = install(layout(tmp_path), python=sys.executable)
    dropin = hooks / "qemu.d" / DROPIN_NAME
    assert (hooks / "qemu").read_text() == FOREIGN
    assert outcome.hook_path == str(dropin)
    assert is_ours(str(dropin))
    assert outcome.messages[0].startswith(f"{hooks / 'qemu'} belongs to someone else: left alone")

    uninstall(layout(tmp_path))
    assert (hooks / "qemu").read_text() == FOREIGN
    assert not dropin.exists()
    assert not (hooks / "qemu.d").exists()


def test_uninstall_removes_exactly_what_install_added(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "daemon").write_text(FOREIGN)  # another object's hook: not ours
    before = tree(tmp_path)
    install(lay, python=sys.executable)
    Path(lay.cache_dir).mkdir()
    (Path(lay.cache_dir) / "abc.json").write_text("{}")
    (Path(lay.cache_dir) / "abc.lock").write_text("")
    outcome = uninstall(lay)
    assert tree(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["hooks"]
    assert f"removed {tmp_path / 'hooks' / 'qemu'}" in outcome.messages


def test_uninstall_keeps_an_edited_policy_and_operator_files(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    Path(lay.policy).write_text(Path(lay.policy).read_text() + "# tuned by the operator\n")
    (Path(lay.config_dir) / "notes.txt").write_text("mine")
    outcome = uninstall(lay)
    assert (
        f"kept {lay.policy}: changed since install (remove it yourself if you want)"
        in outcome.messages
    )
    assert Path(lay.policy).read_text().endswith("# tuned by the operator\n")
    assert (Path(lay.config_dir) / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "hooks" / "qemu").exists()


def test_uninstall_leaves_a_hook_someone_replaced(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    (tmp_path / "hooks" / "qemu").write_text(FOREIGN)
    outcome = uninstall(lay)
    assert (tmp_path / "hooks" / "qemu").read_text() == FOREIGN
    assert f"kept {tmp_path / 'hooks' / 'qemu'}: no longer ours" in outcome.messages


def test_uninstall_without_install_says_so(tmp_path: Path) -> None:
    outcome = uninstall(layout(tmp_path))
    assert outcome.messages == ["nothing to uninstall (no install manifest)"]


@pytest.mark.parametrize(
    "bad", ["/opt/my venv/python", "/opt/$(reboot)/python", "/opt/`id`/py", "/a;b"]
)
def test_paths_that_would_be_shell_code_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InstallError, match="refusing to embed unusual path"):
        render_hook(bad, layout(tmp_path))


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InstallError, match=re.escape("python path '.venv/bin/python' must be absolute")
    ):
        render_hook(".venv/bin/python", layout(tmp_path))
    with pytest.raises(
        InstallError, match=re.escape("policy path 'etc/policy.yaml' must be absolute")
    ):
        render_hook("/usr/bin/python3", Layout("hooks", "etc", "state", "cache"))


def test_install_hook_command_through_console_script(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "libvirt-txmode"
    args = [
        "--hooks-dir", str(tmp_path / "hooks"),
        "--config-dir", str(tmp_path / "etc"),
        "--state-dir", str(tmp_path / "state"),
        "--cache-dir", str(tmp_path / "cache"),
        "--no-reload",
    ]  # fmt: skip
    result = subprocess.run(
        [str(cli), "install-hook", "--no-snapshot", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"installed hook {tmp_path / 'hooks' / 'qemu'} (interpreter {sys.executable})",
        f"installed default policy {tmp_path / 'etc' / 'policy.yaml'}",
    ]
    result = subprocess.run(
        [str(cli), "uninstall-hook", *args], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert not (tmp_path / "hooks" / "qemu").exists()
    assert not (tmp_path / "etc").exists()
