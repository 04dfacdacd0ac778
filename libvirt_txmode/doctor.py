"""``libvirt-txmode doctor``: is this host's installation healthy? One line per check.

Each check is a small function of the layout returning a ``Check``; ``run_checks`` runs them in
order. ``fail`` means the gate is broken or can be bypassed (exit 1); ``warn`` is worth knowing
but the hook still decides correctly (a missing snapshot only costs speed); ``ok`` and ``info``
need nothing. Read-only, except that the hook's self-test leaves its cached verdict behind.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .daemon import running_daemons
from .install import (
    DROPIN_NAME,
    InstallError,
    Layout,
    hook_settings,
    inspect_interpreter,
    interpreter_trust_problem,
    is_ours,
    self_test,
)

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | warn | fail
    detail: str


@dataclass
class _State:
    """What earlier checks found that later ones need (the hook's own settings)."""

    layout: Layout
    hook: Optional[str] = None
    settings: Optional[dict[str, str]] = None

    def setting(self, name: str, default: str) -> str:
        return (self.settings or {}).get(name, default)


def _installed_hook(layout: Layout) -> Optional[str]:
    for path in (
        os.path.join(layout.hooks_dir, "qemu"),
        os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME),
    ):
        if os.path.isfile(path) and is_ours(path):
            return path
    return None


def check_hook(state: _State) -> Check:
    hook = _installed_hook(state.layout)
    if hook is None:
        return Check(
            "hook",
            FAIL,
            f"no libvirt-txmode hook in {state.layout.hooks_dir} (qemu or qemu.d/{DROPIN_NAME}): "
            "run 'libvirt-txmode install-hook'",
        )
    state.hook, state.settings = hook, hook_settings(hook)
    info = os.stat(hook)
    mode = info.st_mode & 0o7777
    if not mode & stat.S_IXUSR:
        return Check("hook", FAIL, f"{hook} is not executable (mode {mode:04o}): libvirt skips it")
    from .files import path_trust_problem  # noqa: PLC0415

    problem = path_trust_problem(hook)
    if problem is not None:
        return Check("hook", FAIL, f"{hook}: {problem}")
    where = "qemu.d drop-in (a foreign qemu hook exists)" if "qemu.d" in hook else "main hook"
    return Check("hook", OK, f"{hook}: ours, {where}, mode {mode:04o}, owned by root")


def check_interpreter(state: _State) -> Check:
    if state.settings is None:
        return Check("interpreter", FAIL, "no hook, so no interpreter to check")
    python = state.setting("PYTHON", "")
    try:
        interpreter = inspect_interpreter(python)
    except InstallError as exc:
        return Check("interpreter", FAIL, f"{exc}; then run 'libvirt-txmode install-hook' again")
    problem = interpreter_trust_problem(interpreter)
    if problem is not None:
        return Check("interpreter", FAIL, problem)
    package = state.setting("PACKAGE", "")
    if package and os.path.realpath(package) != os.path.realpath(interpreter.package):
        return Check(
            "interpreter",
            FAIL,
            f"the hook expects libvirt_txmode in {package}, {python} imports it from "
            f"{interpreter.package}: run 'libvirt-txmode install-hook' again",
        )
    return Check(
        "interpreter", OK, f"{python} -I imports libvirt_txmode from {interpreter.package}"
    )


def check_self_test(state: _State) -> Check:
    if state.hook is None:
        return Check("self-test", FAIL, "no hook to run")
    try:
        self_test(state.hook)
    except InstallError as exc:
        return Check("self-test", FAIL, str(exc))
    return Check(
        "self-test",
        OK,
        "the hook allowed a sample domain on 'prepare begin' and no-op events exit 0",
    )


def check_policy(state: _State) -> Check:
    from .policy import PolicyError, load_policy  # noqa: PLC0415

    path = state.setting("POLICY", state.layout.policy)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        effect = " (the hook refuses every start)" if state.hook else ""
        return Check("policy", FAIL, f"{exc}{effect}")
    return Check(
        "policy",
        OK,
        f"{path}: valid, trusted; action {policy.action}, on_unknown {policy.on_unknown}, "
        f"on_error {policy.on_error}, {len(policy.rules)} rules",
    )


def snapshot_drift(path: str, uri: Optional[str] = None) -> tuple[Optional[list[str]], list[str]]:
    """How a stored snapshot differs from this host: (problems, notes).

    problems is None when the snapshot cannot be read (notes[0] says why). An emulator whose
    binary changed identity (a QEMU upgrade) or vanished is a problem; so, when libvirt answers
    on ``uri`` (read-only), is an emulator libvirt now lists that the snapshot lacks."""
    from .qemu import ProbeError, identify  # noqa: PLC0415
    from .snapshot import SnapshotError, load_snapshot  # noqa: PLC0415

    try:
        snapshot = load_snapshot(path, require_root_owned=False)
    except SnapshotError as exc:
        return None, [str(exc)]
    problems: list[str] = []
    notes: list[str] = []
    for emulator, recorded in sorted(snapshot.identities.items()):
        try:
            current = identify(emulator).key()
        except ProbeError:
            problems.append(f"{emulator} is gone (it was probed for the snapshot)")
            continue
        if current != recorded:
            problems.append(f"{emulator} changed since the snapshot (upgraded?)")
    listed = set(snapshot.capabilities.devices) | set(snapshot.capabilities.emulator_errors)
    if uri:
        guests = _libvirt_emulators(uri)
        if guests is None:
            notes.append(f"libvirt at {uri} not reachable: compared the recorded emulators only")
        else:
            problems += [
                f"{e} is new (libvirt lists it, the snapshot does not)"
                for e in sorted(guests - listed)
            ]
    notes.append(
        f"{path}: {len(snapshot.identities)} emulators recorded on {snapshot.created or '?'}"
    )
    return problems, notes


def _libvirt_emulators(uri: str) -> Optional[set[str]]:
    from .libvirt_host import ConnectError, connect, guests_from_capabilities  # noqa: PLC0415

    try:
        conn = connect(uri, read_only=True)
    except ConnectError:
        return None
    try:
        return {g.emulator for g in guests_from_capabilities(conn.getCapabilities())}
    except Exception:  # libvirt.libvirtError: the daemon went away meanwhile
        return None
    finally:
        conn.close()


def check_snapshot(state: _State) -> Check:
    path = state.setting("SNAPSHOT", state.layout.snapshot)
    if not os.path.lexists(path):
        return Check(
            "snapshot",
            WARN,
            f"{path} missing: the hook probes emulators itself (slower first start)",
        )
    problems, notes = snapshot_drift(path, uri="qemu:///system")
    if problems is None:
        return Check("snapshot", FAIL, f"{notes[0]}: run 'libvirt-txmode snapshot'")
    if problems:
        return Check(
            "snapshot",
            WARN,
            f"{path} is stale: {'; '.join(problems)}; the hook probes those emulators itself "
            "(run 'libvirt-txmode snapshot')",
        )
    return Check("snapshot", OK, f"{path} matches this host's emulators")


def check_cache(state: _State) -> Check:
    from .files import private_dir_problem  # noqa: PLC0415
    from .verdict import PREFIX  # noqa: PLC0415

    path = state.setting("CACHE", state.layout.cache_dir)
    if not os.path.lexists(path):
        return Check("cache", OK, f"{path} not created yet (the hook creates it)")
    problem = private_dir_problem(path, create=False)
    if problem is not None:
        return Check("cache", FAIL, f"{path}: {problem} (the hook ignores it: every start probes)")
    names = [entry.name for entry in os.scandir(path)]
    decisions = sum(1 for name in names if name.startswith(PREFIX))
    return Check(
        "cache",
        OK,
        f"{path}: trusted, {len(names)} entries, {decisions} cached decision"
        f"{'s' if decisions != 1 else ''}",
    )


def check_logging(state: _State) -> Check:
    from .logsink import destination  # noqa: PLC0415

    where, problem = destination()
    if problem is not None:
        return Check("logging", FAIL, f"{where}: {problem}: decisions would be lost")
    return Check("logging", OK, f"decisions go to {where}")


def check_daemon(state: _State) -> Check:
    running = running_daemons()
    if not running:
        return Check("daemon", WARN, "no libvirtd/virtqemud running: nothing runs the hook now")
    return Check("daemon", OK, f"{', '.join(running)} running")


def check_decisions(state: _State) -> Check:
    from .logsink import recent_decisions  # noqa: PLC0415

    recent = recent_decisions(3)
    if not recent:
        return Check("decisions", INFO, "no decision logged yet (or not readable here)")
    return Check("decisions", INFO, "last: " + " | ".join(line.strip() for line in recent))


CHECKS: tuple[Callable[[_State], Check], ...] = (
    check_hook,
    check_interpreter,
    check_self_test,
    check_policy,
    check_snapshot,
    check_cache,
    check_logging,
    check_daemon,
    check_decisions,
)


def run_checks(layout: Layout, checks: Sequence[Callable[[_State], Check]] = CHECKS) -> list[Check]:
    """``checks`` in order (later ones use what earlier ones found: hook before policy)."""
    state = _State(layout)
    results = []
    for check in checks:
        try:
            results.append(check(state))
        except Exception as exc:  # one broken check must not hide the others
            name = check.__name__.removeprefix("check_").replace("_", "-")
            results.append(Check(name, FAIL, f"check crashed: {type(exc).__name__}: {exc}"))
    return results


def render_checks(checks: list[Check], fmt: str) -> str:
    from .text import printable  # noqa: PLC0415

    failed = sum(1 for c in checks if c.status == FAIL)
    if fmt == "json":
        document = {"checks": [asdict(c) for c in checks], "failed": failed, "ok": not failed}
        return json.dumps(document, indent=1) + "\n"
    lines = [f"{c.status:<4} {c.name}: {printable(c.detail)}" for c in checks]
    lines.append(f"{failed} of {len(checks)} checks failed" if failed else "all checks passed")
    return "\n".join(lines) + "\n"
