"""install-hook: put the hook where libvirt looks (see hook_file), with the default policy, a
systemd unit that refreshes the snapshot, and a snapshot, recording each file in this hooks
directory's manifest. The hook is written beside its place, self-tested there and only then renamed
into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

from ..common.files import write_atomic
from .hook_file import hook_target, other_copies_problem, packaged, render_hook, sha256_of
from .interpreter import inspect_interpreter, interpreter_trust_problem
from .layout import UNIT_PATH, InstallError, Layout, Outcome, layout_trust_problem
from .manifest import load_manifest, save_manifest
from .selftest import self_test


def install(
    layout: Layout,
    *,
    python: Optional[str] = None,
    dry_run: bool = False,
    manage_daemon: Optional[bool] = None,
    verify: bool = True,
    take_snapshot: Optional[Callable[[str], str]] = None,
) -> Outcome:
    """Install the hook for ``layout``.

    ``manage_daemon`` (default: only for libvirt's own hooks directory) allows a systemd unit;
    ``verify`` checks the interpreter's trust and self-tests the hook before it goes live;
    ``take_snapshot(path)`` writes a snapshot and returns what to say (None: no snapshot).
    """
    outcome = Outcome()
    python = python or sys.executable
    manage_daemon = layout.is_libvirts_own if manage_daemon is None else manage_daemon
    # Before anything is read from or written into them: a directory someone else can write
    # would let them swap the root-run hook or forge the manifest uninstall trusts.
    _refuse_if(layout_trust_problem(layout, (os.path.dirname(UNIT_PATH),) if manage_daemon else ()))
    files = load_manifest(layout)
    interpreter = inspect_interpreter(python) if verify else None
    if interpreter is not None:
        _refuse_if(interpreter_trust_problem(interpreter))
    target, moved = hook_target(layout)
    _refuse_if(other_copies_problem(layout, target))
    if moved:
        outcome.say(moved)
    outcome.hook_path = target
    content = render_hook(python, layout, interpreter.package if interpreter else None).encode()
    step = _Step(outcome, files, dry_run)

    policy_written = _install_policy(layout, step)
    try:
        _install_hook_file(target, content, python, verify, step)
    except (InstallError, OSError):
        if policy_written:  # nothing of a refused install stays behind
            with contextlib.suppress(OSError):
                os.unlink(layout.policy)
                os.rmdir(layout.config_dir)
        raise
    if manage_daemon and os.path.isdir("/run/systemd/system") and not os.path.exists(UNIT_PATH):
        _install_unit(python, step)
    if take_snapshot is not None:
        _install_snapshot(layout, take_snapshot, step)
    if dry_run:
        outcome.say(f"would record the install in {layout.manifest}")
        return outcome
    outcome.changed = save_manifest(layout, files) or outcome.changed
    if not outcome.changed:
        outcome.say("nothing changed: every file is already as this install would write it")
    return outcome


def _refuse_if(problem: Optional[str]) -> None:
    if problem is not None:
        raise InstallError(problem)


@dataclass
class _Step:
    """What every install step shares: what to say, the manifest being built, and --dry-run."""

    outcome: Outcome
    files: dict[str, dict[str, str]]
    dry_run: bool

    @property
    def verb(self) -> str:
        return "would install" if self.dry_run else "installed"

    def record(self, path: str, content: bytes, role: str) -> None:
        """What uninstall will insist on finding before it removes ``path``: a regular file of
        ours, this size, this content."""
        self.files[path] = {
            "sha256": hashlib.sha256(content).hexdigest(),
            "role": role,
            "type": "file",
            "uid": str(os.geteuid()),
            "size": str(len(content)),
        }

    def wrote(self) -> None:
        if not self.dry_run:
            self.outcome.changed = True


def _install_policy(layout: Layout, step: _Step) -> bool:
    """The default policy, unless one is there. Returns whether it was written now."""
    if os.path.lexists(layout.policy):
        step.outcome.say(f"kept existing policy {layout.policy}")
        return False
    policy = packaged("policy.yaml").encode()
    if not step.dry_run:
        os.makedirs(layout.config_dir, mode=0o755, exist_ok=True)
        write_atomic(layout.policy, policy, mode=0o644)
        step.record(layout.policy, policy, "policy")
        step.wrote()
    step.outcome.say(f"{step.verb} default policy {layout.policy}")
    return not step.dry_run


def _install_hook_file(target: str, content: bytes, python: str, verify: bool, step: _Step) -> None:
    if sha256_of(target) == hashlib.sha256(content).hexdigest():
        if verify and not step.dry_run:
            self_test(target)
        step.outcome.say(f"hook {target} already installed")
    else:
        if not step.dry_run:
            _install_verified(target, content, verify)
            step.wrote()
        step.outcome.say(f"{step.verb} hook {target} (interpreter {python})")
    step.record(target, content, "hook")


def _install_unit(python: str, step: _Step) -> None:
    unit = packaged("libvirt-txmode-snapshot.service").replace("@PYTHON@", python).encode()
    if not step.dry_run:
        write_atomic(UNIT_PATH, unit, mode=0o644)
        step.record(UNIT_PATH, unit, "unit")
        step.wrote()
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", os.path.basename(UNIT_PATH)], check=False)
    step.outcome.say(f"{step.verb} {UNIT_PATH} (refreshes the snapshot when the daemon starts)")


def _install_snapshot(layout: Layout, take_snapshot: Callable[[str], str], step: _Step) -> None:
    if step.dry_run:
        step.outcome.say(f"would take a capability snapshot to {layout.snapshot}")
        return
    existed = os.path.lexists(layout.snapshot)
    before = sha256_of(layout.snapshot)
    step.outcome.say(take_snapshot(layout.snapshot))
    if sha256_of(layout.snapshot) != before:
        step.wrote()
    owned = layout.snapshot in step.files or not existed
    if owned and os.path.isfile(layout.snapshot):
        step.files[layout.snapshot] = {"sha256": "", "role": "snapshot", "type": "file"}


def _install_verified(target: str, content: bytes, verify: bool) -> None:
    """Write the hook beside its place, self-test it there and only then rename it into place.

    The temporary file is 0600: libvirt runs every *executable* in qemu.d, so an untested hook must
    never be executable under that directory, not even for the time of the test."""
    directory = os.path.dirname(target)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".libvirt-txmode-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if verify:
            self_test(tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - libvirt runs hooks that are executable
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
