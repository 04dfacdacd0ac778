"""``libvirt-txmode doctor``: is this host's installation healthy? One line per check.

Each check is a small function of the layout returning a ``Check``; ``run_checks`` runs them in
order. ``fail`` means the gate is broken, off or can be bypassed (CRITICAL, exit 2); ``warn`` is
worth knowing but the hook still decides correctly (a missing snapshot only costs speed: WARNING,
exit 1); ``ok`` and ``info`` need nothing (OK, exit 0) — the monitoring-plugin convention.
Read-only, except that the hook's self-test leaves its cached verdict behind and a canary that
proved the hook live leaves its proof (liveness.py).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any, Callable, Optional

from ..common.files import path_trust_problem, private_dir_problem
from ..common.logsink import destination, recent_decisions
from ..common.text import printable
from ..engine.policy import PolicyError, load_policy
from ..hook.verdict import PREFIX
from ..host.emulator import ProbeError, identify
from ..host.snapshot import SnapshotError, load_snapshot
from . import liveness
from .daemon import running_daemon
from .hook_file import DROPIN_NAME, describe_copy, hook_settings, installed_copies, is_ours
from .interpreter import inspect_interpreter, interpreter_trust_problem
from .layout import InstallError, Layout
from .options import add_connect, add_directories, layout_of
from .selftest import SELFTEST_DOMAIN, self_test

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
# Exit codes and names of the monitoring-plugin convention (Nagios, Icinga, Zabbix, Sensu).
EXIT_CODES = {OK: 0, INFO: 0, WARN: 1, FAIL: 2}
STATE_NAMES = {0: "OK", 1: "WARNING", 2: "CRITICAL"}


@dataclass(frozen=True)
class Check:
    """One line of doctor's report: what was checked, how it stands, and why."""

    name: str
    status: str  # ok | info | warn | fail
    detail: str


@dataclass
class _State:
    """What earlier checks found that later ones need (the hook's own settings)."""

    layout: Layout
    canary: bool = False  # prove liveness with a canary domain
    uri: str = "qemu:///system"
    hook: Optional[str] = None
    copies: tuple[str, ...] = ()
    settings: Optional[dict[str, str]] = None

    def setting(self, name: str, default: str) -> str:
        return (self.settings or {}).get(name, default)


def check_hook(state: _State) -> Check:
    copies = installed_copies(state.layout.hooks_dir)
    state.copies = tuple(copies)
    hook = copies[0] if copies else None
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

    problem = path_trust_problem(hook)
    if problem is not None:
        return Check("hook", FAIL, f"{hook}: {problem}")
    if len(copies) > 1:
        return Check(
            "hook",
            FAIL,
            f"{len(copies)} libvirt-txmode hooks installed: "
            f"{', '.join(describe_copy(c) for c in copies)}; one gate per host (each start is "
            "checked by every copy, with its own version and policy): remove all but one "
            "('libvirt-txmode uninstall-hook' of the install that wrote it, or 'apt remove "
            "libvirt-txmode' for the package's)",
        )
    where = "main hook"
    if "qemu.d" in hook:
        main_hook = os.path.join(state.layout.hooks_dir, "qemu")
        foreign = os.path.lexists(main_hook) and not is_ours(main_hook)
        where = "qemu.d drop-in" + (" (beside a foreign qemu hook)" if foreign else "")
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
    from ..host.libvirt_snapshot import ConnectError, connect, guests_from_capabilities  # noqa: PLC0415 - loads lxml: not for --help

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
    where, problem = destination()
    if problem is not None:
        return Check("logging", FAIL, f"{where}: {problem}: decisions would be lost")
    return Check("logging", OK, f"decisions go to {where}")


def check_daemon(state: _State) -> Check:
    daemon = running_daemon()
    if daemon is None:
        return Check("daemon", WARN, "no libvirtd/virtqemud running: nothing runs the hook now")
    return Check("daemon", OK, f"{daemon.name} running (pid {daemon.pid})")


def check_live(state: _State) -> Check:
    """Does the running daemon run the hook: by times, or proven by a canary (--canary)."""
    daemon = running_daemon()
    if state.canary:
        if daemon is None:
            return Check("live", WARN, "no libvirt daemon running: no canary sent")
        # Also right after a reload (postinst, the role): it waits for the daemon and retries.
        result = liveness.prove_after_reload(state.uri, state.layout.state_dir, wait=10.0)
        if result.state == liveness.LIVE:
            return Check("live", OK, f"{result.detail}: {daemon.name} runs the hook")
        if result.state == liveness.OFF:
            fix = (
                f"fix: reload the daemon (systemctl reload {daemon.name}, or kill -HUP "
                f"{daemon.pid}), then run 'libvirt-txmode doctor --canary' again"
            )
            return Check("live", FAIL, f"the gate is off: {result.detail}; {fix}")
        return Check("live", FAIL, f"liveness not proven: {result.detail}")
    if not state.copies:
        return Check("live", INFO, "no hook installed, nothing to load")
    if not state.layout.is_libvirts_own:
        return Check(
            "live", INFO, f"{state.layout.hooks_dir} is not libvirt's hooks directory: not checked"
        )
    if daemon is None:
        return Check("live", INFO, "no libvirt daemon running: it loads the hook when it starts")
    result = liveness.by_time(state.copies, daemon, state.layout.state_dir)
    return Check("live", OK if result.state == liveness.LIVE else FAIL, result.detail)


def check_decisions(state: _State) -> Check:
    # Self-tests of earlier versions were logged as allowed starts: not decisions either.
    selftest = f"'{SELFTEST_DOMAIN}'"
    recent = [line for line in recent_decisions(20) if selftest not in line][-3:]
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
    check_live,
    check_decisions,
)


def run_checks(
    layout: Layout,
    checks: Sequence[Callable[[_State], Check]] = CHECKS,
    *,
    canary: bool = False,
    uri: str = "qemu:///system",
) -> list[Check]:
    """``checks`` in order (later ones use what earlier ones found: hook before policy)."""
    state = _State(layout, canary=canary, uri=uri)
    results = []
    for check in checks:
        try:
            results.append(check(state))
        except Exception as exc:  # one broken check must not hide the others
            name = check.__name__.removeprefix("check_").replace("_", "-")
            results.append(Check(name, FAIL, f"check crashed: {type(exc).__name__}: {exc}"))
    return results


def exit_code(checks: list[Check]) -> int:
    """0 OK, 1 WARNING (a warn, no fail), 2 CRITICAL (a fail)."""
    return max((EXIT_CODES[c.status] for c in checks), default=0)


def render_checks(checks: list[Check], fmt: str) -> str:
    failed = sum(1 for c in checks if c.status == FAIL)
    warnings = sum(1 for c in checks if c.status == WARN)
    passed = len(checks) - failed - warnings
    status = STATE_NAMES[exit_code(checks)]
    if fmt == "json":
        document = {
            "status": status,
            "ok": passed,
            "warnings": warnings,
            "failed": failed,
            "checks": [asdict(c) for c in checks],
        }
        return json.dumps(document, indent=1) + "\n"
    lines = [f"{c.status:<4} {c.name}: {printable(c.detail)}" for c in checks]
    plural = "" if warnings == 1 else "s"
    counts = f"{failed} failed, {warnings} warning{plural}, {passed} ok of {len(checks)} checks"
    lines.append(
        f"{status}: {counts}" if failed or warnings else f"OK: all {len(checks)} checks passed"
    )
    return "\n".join(lines) + "\n"


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "doctor",
        help="check the installed hook, interpreter, policy, snapshot, cache, logging and that "
        "the daemon runs the hook (one line per check; exit 0 OK, 1 WARNING, 2 CRITICAL)",
    )
    add_directories(cmd)
    cmd.add_argument("-f", "--format", default="text", choices=["text", "json"])
    cmd.add_argument(
        "--canary",
        action="store_true",
        help="prove the daemon runs the hook: start a transient, paused, diskless domain the "
        "hook refuses whatever the policy says (started: the gate is off; destroyed at once)",
    )
    add_connect(cmd)
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    checks = run_checks(layout_of(args), canary=args.canary, uri=args.connect)
    out.write(render_checks(checks, args.format))
    return exit_code(checks)
