"""install-hook / uninstall-hook on a temporary hooks directory (the real /etc is in the e2e tests).

Every install here runs the real self-test: the written wrapper is started with `sh`, as libvirt
starts it, on a sample `prepare begin` and on no-op events, with the real interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.admin.hook_file import DROPIN_NAME, hook_settings, is_ours, render_hook
from libvirt_txmode.admin.install import install
from libvirt_txmode.admin.layout import InstallError, Layout
from libvirt_txmode.admin.uninstall import uninstall
from tests.libvirt_env import fake_venv, skip_unless_ci

FOREIGN = "#!/bin/sh\n# the operator's own hook\nexit 0\n"
REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "libvirt-txmode"
HOOK_ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def layout(base: Path, hooks: str = "hooks") -> Layout:
    return Layout(
        hooks_dir=str(base / hooks),
        config_dir=str(base / "etc"),
        state_dir=str(base / "state"),
        cache_dir=str(base / "cache"),
    )


def tree(base: Path) -> dict[str, str]:
    """Every file and link under base with its content (for before/after comparisons)."""
    return {
        str(p.relative_to(base)): (
            "-> " + os.readlink(p) if p.is_symlink() else p.read_text(errors="replace")
        )
        for p in sorted(base.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def cli_args(base: Path, hooks: str = "hooks") -> list[str]:
    return [
        "--hooks-dir", str(base / hooks),
        "--config-dir", str(base / "etc"),
        "--state-dir", str(base / "state"),
        "--cache-dir", str(base / "cache"),
    ]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, check=False, timeout=120
    )


# --- the wrapper ---------------------------------------------------------------------------------


def test_install_writes_an_executable_wrapper_with_this_installation(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    outcome = install(lay, python=sys.executable)
    hook = tmp_path / "hooks" / "qemu"
    assert outcome.hook_path == str(hook)
    text = hook.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert f"PYTHON={sys.executable}\n" in text
    assert f"PACKAGE={REPO / 'libvirt_txmode'}\n" in text  # where `python -I` imports it from
    assert f"POLICY={lay.policy}\n" in text
    assert f"SNAPSHOT={lay.snapshot}\n" in text
    assert f"CACHE={lay.cache_dir}\n" in text
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert is_ours(str(hook))
    # The default policy is the bundled one, installed root-only-writable.
    assert Path(lay.policy).read_text() == (REPO / "policy.yaml").read_text()
    assert stat.S_IMODE(os.stat(lay.policy).st_mode) == 0o644
    assert outcome.messages == [
        f"installed default policy {lay.policy}",
        f"installed hook {hook} (interpreter {sys.executable})",
    ]
    # No temporary file of the self-test is left beside the hook.
    assert sorted(os.listdir(tmp_path / "hooks")) == ["qemu"]


def test_rendered_wrapper_is_valid_posix_sh(tmp_path: Path) -> None:
    install(layout(tmp_path), python=sys.executable)
    assert (
        subprocess.run(["sh", "-n", str(tmp_path / "hooks" / "qemu")], check=False).returncode == 0
    )


def wrapper(tmp_path: Path, *, python: str, package: str, on_error: str) -> tuple[Path, Path]:
    """A wrapper whose interpreter or package went away after install (a removed venv)."""
    lay = layout(tmp_path)
    Path(lay.config_dir).mkdir(parents=True)
    policy = Path(lay.policy)
    policy.write_text(f"version: 1\non_error: {on_error}  # the operator's choice\n")
    policy.chmod(0o644)
    hook = tmp_path / "qemu"
    hook.write_text(render_hook(python, lay, package))
    hook.chmod(0o755)
    return hook, policy


def run_hook(
    hook: Path, *event: str, stdin: bytes = b"<domain/>"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hook), *event],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        env=HOOK_ENV,
        check=False,
        timeout=60,
    )


def test_missing_interpreter_says_what_and_how_to_fix_and_follows_on_error(
    tmp_path: Path,
) -> None:
    gone = str(tmp_path / "venv" / "bin" / "python3")
    hook, policy = wrapper(tmp_path, python=gone, package=str(tmp_path / "pkg"), on_error="deny")
    result = run_hook(hook, "vm\n1", "prepare", "begin", "-")
    assert result.returncode == 1
    assert result.stderr == (
        f"libvirt-txmode: hook {hook} cannot check domain 'vm1': its interpreter {gone} is "
        "missing or not executable; fix: reinstall libvirt-txmode and run 'libvirt-txmode "
        "install-hook' (or 'libvirt-txmode uninstall-hook' to remove the gate); refusing to "
        "start it (on_error: deny)\n"
    )
    # on_error: allow in the installed (root-owned, 0644) policy lets the domain start ...
    policy.write_text("version: 1\non_error: allow\n")
    assert run_hook(hook, "vm1", "prepare", "begin", "-").returncode == 0
    # ... but not from a policy others could write: the hook itself would not believe it.
    policy.chmod(0o666)
    assert run_hook(hook, "vm1", "prepare", "begin", "-").returncode == 1


def test_missing_package_says_the_interpreter_cannot_import_it(tmp_path: Path) -> None:
    package = str(tmp_path / "site-packages" / "libvirt_txmode")
    hook, _ = wrapper(tmp_path, python=sys.executable, package=package, on_error="deny")
    result = run_hook(hook, "vm1", "prepare", "begin", "-")
    assert result.returncode == 1
    assert (
        f"its interpreter {sys.executable} cannot import libvirt_txmode ({package}/hookstart.py is "
        "missing); fix: reinstall libvirt-txmode" in result.stderr
    )
    assert result.stderr.count("\n") == 1  # one line


@pytest.mark.parametrize(
    "event",
    [("reconnect", "begin"), ("started", "begin"), ("stopped", "end"), ("release", "end"), ()],
)
def test_every_other_event_stays_a_noop_without_an_interpreter(
    tmp_path: Path, event: tuple[str, ...]
) -> None:
    """A failing `reconnect` makes libvirt kill running VMs: a removed venv must not do that."""
    hook, _ = wrapper(
        tmp_path, python="/nonexistent/python3", package="/nonexistent", on_error="deny"
    )
    result = run_hook(hook, "vm1", *event, "-")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# --- refusing a hook that cannot run -------------------------------------------------------------


def test_interpreter_that_cannot_import_the_package_isolated_is_refused(tmp_path: Path) -> None:
    """What `pip install --user` leaves: the package importable without -I, not with it. Here
    PYTHONPATH plays the user site: both are ignored by `python -I`, which the hook runs."""
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    check = subprocess.run(
        ["/usr/bin/python3", "-c", "import libvirt_txmode"], env=env, check=False
    )
    assert check.returncode == 0  # importable for the operator's shell ...
    result = subprocess.run(
        [
            str(CLI),
            "install-hook",
            "--no-snapshot",
            "--python",
            "/usr/bin/python3",
            *cli_args(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "libvirt-txmode: error: install refused: the hook's interpreter /usr/bin/python3, run "
        "isolated (-I) as the hook runs it, cannot import libvirt_txmode (ModuleNotFoundError: "
        "No module named 'libvirt_txmode'); a 'pip install --user' is invisible to it"
    )
    assert tree(tmp_path) == before  # nothing written


def test_hook_failing_its_self_test_is_not_installed(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    Path(lay.config_dir).mkdir()
    Path(lay.policy).write_text("version: 1\non_unknwon: deny\n")  # refuses every start
    with pytest.raises(InstallError) as caught:
        install(lay, python=sys.executable)
    assert str(caught.value).startswith(
        "the hook failed its self-test on a sample 'prepare begin' event (exit 1): "
        "libvirt-txmode: refusing to start domain 'libvirt-txmode-selftest': policy unusable: "
        f"{lay.policy}:2: on_unknwon: unknown key"
    )
    assert not (tmp_path / "hooks" / "qemu").exists()
    assert os.listdir(tmp_path / "hooks") == []  # no temporary file either
    assert not Path(lay.manifest).exists()


def test_interpreter_in_a_venv_owned_by_nobody_is_refused(tmp_path: Path) -> None:
    """Code planted in such a venv (a .pth file, a module) would run as root on every start."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the venv to nobody")
    venv = fake_venv(tmp_path)
    python = str(venv / "bin" / "python3")
    lay = layout(tmp_path)
    install(lay, python=python)  # root-owned: accepted, and the self-test passes
    uninstall(lay)
    site = next(venv.glob("lib/*/site-packages"))
    os.chown(site, 65534, 65534)
    with pytest.raises(
        InstallError, match=re.escape(f"refusing the hook's interpreter {python}: ")
    ):
        install(lay, python=python)
    with pytest.raises(InstallError, match="owned by uid 65534, not root"):
        install(lay, python=python)
    assert not (tmp_path / "hooks" / "qemu").exists()


# --- idempotence, foreign hooks, scoped manifests ------------------------------------------------


def identities(base: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every file under base outside the cache: a rewrite changes one."""
    return {
        str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in sorted(base.rglob("*"))
        if "cache" not in p.parts and (p.is_file() or p.is_symlink())
    }


def test_install_is_idempotent(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    first = install(lay, python=sys.executable)
    assert first.changed
    before, written = tree(tmp_path), identities(tmp_path)
    outcome = install(lay, python=sys.executable)
    assert tree(tmp_path) == before
    assert identities(tmp_path) == written  # not even rewritten with the same bytes
    assert not outcome.changed
    assert outcome.messages == [
        f"kept existing policy {lay.policy}",
        f"hook {tmp_path / 'hooks' / 'qemu'} already installed",
        "nothing changed: every file is already as this install would write it",
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


def test_uninstall_of_one_hooks_dir_leaves_another_install_alone(tmp_path: Path) -> None:
    """Two installs sharing config, state and cache: each uninstall removes only its own hook;
    the shared policy stays while the other install uses it, then goes with the last one."""
    first, second = layout(tmp_path, "hooks-a"), layout(tmp_path, "hooks-b")
    install(first, python=sys.executable)
    install(second, python=sys.executable)
    assert first.manifest != second.manifest
    outcome = uninstall(first)
    assert not (tmp_path / "hooks-a" / "qemu").exists()
    assert is_ours(str(tmp_path / "hooks-b" / "qemu"))
    assert Path(second.policy).exists()
    assert f"kept {first.policy}: still used by the install in {second.hooks_dir}" in (
        outcome.messages
    )
    # The hook of B still runs after A's uninstall (policy and cache still there).
    hook_b = tmp_path / "hooks-b" / "qemu"
    xml = b"<domain type='qemu'><name>vm</name><devices/></domain>"
    assert run_hook(hook_b, "vm", "prepare", "begin", "-", stdin=xml).returncode == 0
    uninstall(second)
    assert sorted(os.listdir(tmp_path)) == ["hooks-a", "hooks-b"]
    assert os.listdir(tmp_path / "hooks-a") == os.listdir(tmp_path / "hooks-b") == []


def test_version_1_manifest_is_adopted_only_by_its_own_hooks_dir(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    # Rewrite the manifest as version 1 kept it: one per state dir, path -> sha256.
    document = json.loads(Path(lay.manifest).read_text())
    Path(lay.manifest).unlink()
    legacy = {"format": "libvirt-txmode-install", "version": 1}
    legacy["files"] = {path: entry["sha256"] for path, entry in document["files"].items()}
    Path(lay.legacy_manifest).write_text(json.dumps(legacy))
    other = uninstall(layout(tmp_path, "elsewhere"))
    assert other.messages == [
        f"nothing to uninstall for {tmp_path / 'elsewhere'} (no install manifest)"
    ]
    assert (tmp_path / "hooks" / "qemu").exists()
    uninstall(lay)
    assert not (tmp_path / "hooks" / "qemu").exists()
    assert not Path(lay.legacy_manifest).exists()


def test_uninstall_removes_exactly_what_install_added(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "daemon").write_text(FOREIGN)  # another object's hook: not ours
    before = tree(tmp_path)
    install(lay, python=sys.executable)
    (Path(lay.cache_dir) / ("a" * 32 + ".json")).write_text("{}")
    (Path(lay.cache_dir) / ("a" * 32 + ".lock")).write_text("")
    outcome = uninstall(lay)
    assert tree(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["hooks"]
    assert f"removed {tmp_path / 'hooks' / 'qemu'}" in outcome.messages


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    result = run_cli("install-hook", "--no-snapshot", "--dry-run", *cli_args(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert not tmp_path.joinpath("hooks").exists() and list(tmp_path.iterdir()) == []
    assert result.stdout.splitlines() == [
        f"would install default policy {lay.policy}",
        f"would install hook {tmp_path / 'hooks' / 'qemu'} (interpreter {sys.executable})",
        f"would record the install in {lay.manifest}",
        f"daemon not reloaded: {tmp_path / 'hooks'} is not libvirt's own hooks directory "
        "(--reload to reload it anyway)",
    ]
    # --reload asks for the daemon even for a hooks dir that is not libvirt's own.
    forced = run_cli("install-hook", "--no-snapshot", "--dry-run", "--reload", *cli_args(tmp_path))
    assert forced.stdout.splitlines()[-1] == "would make the libvirt daemon re-read its hooks"
    install(lay, python=sys.executable)
    before = tree(tmp_path)
    result = run_cli("uninstall-hook", "--dry-run", *cli_args(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert tree(tmp_path) == before
    assert f"would remove {tmp_path / 'hooks' / 'qemu'}" in result.stdout.splitlines()
    assert f"would remove {lay.policy}" in result.stdout.splitlines()


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


def test_uninstall_never_follows_a_symlinked_cache_dir(tmp_path: Path) -> None:
    """An operator who moved the cache to another disk must not lose that disk's files."""
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (elsewhere / ("b" * 32 + ".json")).write_text("{}")
    (elsewhere / "db.lock").write_text("")
    shutil.rmtree(lay.cache_dir)  # the self-test's entries, the sh replay's directory too
    Path(lay.cache_dir).symlink_to(elsewhere)
    outcome = uninstall(lay)
    assert sorted(os.listdir(elsewhere)) == ["b" * 32 + ".json", "db.lock"]
    assert f"kept probe cache {lay.cache_dir}: a symlink, never followed" in outcome.messages


def test_uninstall_removes_only_our_file_names_and_skips_directories(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    cache = Path(lay.cache_dir)
    (cache / "x.json").mkdir()  # a directory with a cache-like name: no crash, not touched
    (cache / ("c" * 32 + ".json")).mkdir()
    (cache / "notes.json").write_text("the operator's")  # not a name the hook writes
    target = tmp_path / "precious"
    target.write_text("keep me")
    (cache / ("d" * 32 + ".json")).symlink_to(target)  # a link with our name: not ours either
    (cache / ("e" * 32 + ".json")).write_text("{}")  # ours
    uninstall(lay)
    assert sorted(os.listdir(cache)) == [
        "c" * 32 + ".json",
        "d" * 32 + ".json",
        "notes.json",
        "x.json",
    ]
    assert target.read_text() == "keep me"


def test_uninstall_removes_nothing_from_a_directory_others_can_write(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    Path(lay.config_dir).chmod(0o777)
    outcome = uninstall(lay)
    assert any(
        m.startswith(f"kept {lay.policy}: its directory is not trusted (") and "writable" in m
        for m in outcome.messages
    ), outcome.messages
    assert Path(lay.policy).exists()


def test_uninstall_without_install_says_so(tmp_path: Path) -> None:
    outcome = uninstall(layout(tmp_path))
    assert outcome.messages == [
        f"nothing to uninstall for {tmp_path / 'hooks'} (no install manifest)"
    ]


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
    result = run_cli("install-hook", "--no-snapshot", *cli_args(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"installed default policy {tmp_path / 'etc' / 'policy.yaml'}",
        f"installed hook {tmp_path / 'hooks' / 'qemu'} (interpreter {sys.executable})",
        f"daemon not reloaded: {tmp_path / 'hooks'} is not libvirt's own hooks directory "
        "(--reload to reload it anyway)",
    ]
    settings = hook_settings(str(tmp_path / "hooks" / "qemu"))
    assert settings["PYTHON"] == sys.executable
    result = run_cli("uninstall-hook", "--no-reload", *cli_args(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "daemon not reloaded (--no-reload)"
    assert not (tmp_path / "hooks" / "qemu").exists()
    assert not (tmp_path / "etc").exists()


def test_uninstall_removes_the_sh_replay_entries_and_their_directory(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    shell = Path(lay.cache_dir) / "shell"
    shell.mkdir(mode=0o700, exist_ok=True)
    (shell / ("a" * 64)).write_text("format=1\n")
    (shell / "notes").write_text("the operator's")  # not a name the hook writes
    uninstall(lay)
    assert sorted(os.listdir(shell)) == ["notes"]
    (shell / "notes").unlink()
    install(lay, python=sys.executable)
    (shell / ("b" * 64)).write_text("format=1\n")
    uninstall(lay)
    assert not shell.exists()


# --- trust: nothing written where others can write, nothing removed that we did not write --------

NOBODY = 65534


def as_nobody(*argv: str) -> None:
    """Run a command as nobody (setpriv, util-linux): what a local attacker can do."""
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        check=True,
        timeout=30,
    )


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        skip_unless_ci("needs root: directories owned by nobody are made with chown")


def test_state_dir_owned_by_nobody_is_refused(tmp_path: Path, root_only: None) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    result = run_cli("install-hook", "--no-snapshot", *cli_args(tmp_path))
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(
        f"libvirt-txmode: error: install refused: refusing directory {state} (chosen by --state-dir): "
    )
    assert "uid 65534" in result.stderr and "chown root:root" in result.stderr
    assert not (tmp_path / "hooks").exists() and not (tmp_path / "etc").exists()


def test_hooks_dir_symlinked_to_a_nobody_directory_is_refused(
    tmp_path: Path, root_only: None
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    (tmp_path / "hooks").symlink_to(theirs)
    with pytest.raises(InstallError) as refused:
        install(layout(tmp_path), python=sys.executable)
    message = str(refused.value)
    assert message.startswith(f"refusing directory {tmp_path / 'hooks'} (chosen by --hooks-dir): ")
    assert "or choose another --hooks-dir" in message
    assert os.listdir(theirs) == []


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A root-owned 0755 directory nobody can reach (pytest's tmp_path is in a 0700 one)."""
    base = Path(tempfile.mkdtemp(prefix="txmtest-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def test_forged_manifest_in_a_state_dir_nobody_took_over_removes_nothing(
    reachable: Path, root_only: None
) -> None:
    """The attack: nobody owns the state directory, moves root's installs/ aside and writes a
    manifest naming a root-only file as the snapshot. uninstall must refuse to read it."""
    tmp_path = reachable
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    precious = tmp_path / "precious"
    precious.write_text("root's data")
    precious.chmod(0o600)
    os.chown(lay.state_dir, NOBODY, NOBODY)
    forged = {
        "format": "libvirt-txmode-install",
        "version": 3,
        "hooks_dir": lay.hooks_dir,
        "files": {str(precious): {"sha256": "", "role": "snapshot"}},
    }
    as_nobody("mv", lay.manifests, lay.state_dir + "/moved-aside")
    as_nobody("mkdir", lay.manifests)
    as_nobody("sh", "-c", 'printf %s "$1" > "$2"', "sh", json.dumps(forged), lay.manifest)
    result = run_cli("uninstall-hook", *cli_args(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"libvirt-txmode: error: uninstall refused: refusing to read install manifests from "
        f"{lay.state_dir} (chosen by --state-dir): "
    )
    assert result.stderr.rstrip().endswith("nothing removed")
    assert precious.read_text() == "root's data"
    assert (tmp_path / "hooks" / "qemu").exists()


def test_edited_manifest_removes_nothing_it_did_not_write(tmp_path: Path) -> None:
    """A root-owned manifest edited to name other files, with their true hash, owner and size:
    only the paths an install writes are ever removed, and only as recorded."""
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    precious = tmp_path / "hooks" / "precious"
    precious.write_text("keep me")
    policy_copy = tmp_path / "etc" / "policy-backup.yaml"
    shutil.copy(lay.policy, policy_copy)
    document = json.loads(Path(lay.manifest).read_text())
    entry = document["files"][lay.policy]
    document["files"][str(policy_copy)] = dict(entry)  # true content, owner, size: not its path
    document["files"][str(precious)] = {**entry, "role": "hook"}
    hook = str(tmp_path / "hooks" / "qemu")
    document["files"][hook]["sha256"] = "0" * 64  # the hook no longer as recorded
    Path(lay.manifest).write_text(json.dumps(document))
    outcome = uninstall(lay)
    assert precious.read_text() == "keep me" and policy_copy.exists()
    assert f"kept {precious}: not a file install-hook writes for this hooks directory" in (
        outcome.messages
    )
    assert f"kept {policy_copy}: not a file install-hook writes for this hooks directory" in (
        outcome.messages
    )
    assert f"kept {hook}: changed since install (remove it yourself if you want)" in (
        outcome.messages
    )
    assert f"removed {lay.policy}" in outcome.messages  # still exactly what install wrote


def test_manifest_records_type_owner_size_and_hash(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    install(lay, python=sys.executable)
    entry = json.loads(Path(lay.manifest).read_text())["files"][lay.policy]
    data = Path(lay.policy).read_bytes()
    import hashlib

    assert entry == {
        "role": "policy",
        "type": "file",
        "uid": str(os.geteuid()),
        "size": str(len(data)),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # Another owner since (a chown by someone who could): not what install wrote.
    if os.geteuid() == 0:
        os.chown(lay.policy, NOBODY, NOBODY)
        outcome = uninstall(lay)
        assert (
            f"kept {lay.policy}: file {lay.policy} is owned by uid {NOBODY}, not root: not as "
            "install-hook wrote it"
        ) in outcome.messages


# --- one gate per hooks directory ----------------------------------------------------------------


def test_second_install_beside_another_copy_is_refused_naming_it(tmp_path: Path) -> None:
    """A venv's install where another interpreter's hook is already in qemu.d (the Debian
    package's place): refused with the first named, nothing written."""
    venv = fake_venv(tmp_path)
    first = layout(tmp_path)
    install(first, python=sys.executable)
    hooks = tmp_path / "hooks"
    (hooks / "qemu.d").mkdir()
    os.rename(hooks / "qemu", hooks / "qemu.d" / DROPIN_NAME)
    before = tree(tmp_path)
    result = run_cli("install-hook", "--no-snapshot", "--python", str(venv / "bin" / "python3"),
                     *cli_args(tmp_path))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        "libvirt-txmode: error: install refused: another libvirt-txmode hook is installed: "
        f"{hooks / 'qemu.d' / DROPIN_NAME} (interpreter {sys.executable}); one gate per host"
    )
    assert f"{Path(sys.executable).parent / 'libvirt-txmode'} uninstall-hook" in result.stderr
    assert tree(tmp_path) == before


def test_second_install_hook_command_says_nothing_changed(tmp_path: Path) -> None:
    args = ["install-hook", "--no-snapshot", *cli_args(tmp_path)]
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert (again.returncode, again.stderr) == (0, "")
    assert "nothing changed: every file is already as this install would write it" in (
        again.stdout.splitlines()
    )
