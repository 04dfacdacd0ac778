"""install-hook / uninstall-hook: put the hook where libvirt looks, and take it away again.

libvirt runs ``$HOOKS/qemu`` and, since 6.5, every executable in ``$HOOKS/qemu.d/``. We never
replace a hook we did not write: if a foreign ``qemu`` exists we go into ``qemu.d``.

Each install keeps its own manifest, keyed by its hooks directory
(``STATE/installs/<sha256(hooks dir)[:16]>.json``): uninstalling one hooks directory removes what
that install wrote and nothing of another's. A file both installs use (the policy, the snapshot,
the probe cache, when they share config/state/cache directories) stays while any other manifest
still names it. Nothing is ever removed through a symlink or outside the file names we write.

Before the hook goes live it is run once, as libvirt would run it, on a ``prepare begin`` event of
a sample domain and on a no-op event: a hook that cannot start (``pip install --user`` is invisible
to ``python -I``) is refused instead of refusing every VM start later.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Optional

from ..common import files, paths
from ..hook.gate import SELFTEST_NAMESPACE
from ..host.probe_cache import write_atomic

LOG = logging.getLogger(__name__)
MARKER = "# libvirt-txmode: libvirt qemu hook"
DROPIN_NAME = "50-libvirt-txmode"
DEFAULT_HOOKS_DIR = paths.HOOKS_DIR
DEFAULT_CONFIG_DIR = paths.CONFIG_DIR
DEFAULT_STATE_DIR = paths.STATE_DIR
DEFAULT_CACHE_DIR = paths.CACHE_DIR
UNIT_PATH = "/etc/systemd/system/libvirt-txmode-snapshot.service"
MANIFEST_FORMAT = "libvirt-txmode-install"
MANIFEST_VERSION = 3
# Where the Debian package keeps its hook (its /etc/libvirt/hooks/qemu.d entry links there).
PACKAGED_HOOK_DIR = "/usr/libexec/libvirt-txmode/"
# The environment libvirt gives a hook (virCommandAddEnvPassCommon: LC_ALL=C and a short PATH).
HOOK_ENV = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
SELFTEST_DOMAIN = "libvirt-txmode-selftest"
# A domain without NICs: compliant under every valid policy, yet it goes through the whole hook
# (policy, XML parser, engine, logging), which is what the self-test must prove. Its marker has
# the hook log it as DECISION=selftest, not as an allowed start.
SELFTEST_XML = (
    f"<domain type='qemu'><name>{SELFTEST_DOMAIN}</name><memory unit='MiB'>64</memory>"
    f"<metadata><txmode:selftest xmlns:txmode='{SELFTEST_NAMESPACE}'/></metadata>"
    "<os><type arch='x86_64'>hvm</type></os><devices/></domain>\n"
)
SELFTEST_TIMEOUT = 120.0
# What the hook writes into the cache directory (probe answers and their locks, compiled policies,
# verdicts, atomic-write temporaries): uninstall removes these names and no others.
CACHE_NAMES = re.compile(
    r"(?:(?:verdict|policy)-)?[0-9a-f]{16,64}\.(?:json|lock|txt)|\.tmp-[A-Za-z0-9_]{1,16}"
    r"|decisions|last-audit\.json"
)
# In CACHE/shell, left by 0.3.0's sh replay of decisions: its entries (a SHA-256 each) and
# write_atomic's temporaries. Removed on uninstall like the rest of the cache.
SHELL_DIR = "shell"
SHELL_NAMES = re.compile(r"[0-9a-f]{64}|\.tmp-[A-Za-z0-9_]{1,16}")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./+:@-]+")


class InstallError(Exception):
    pass


@dataclass
class Layout:
    hooks_dir: str = DEFAULT_HOOKS_DIR
    config_dir: str = DEFAULT_CONFIG_DIR
    state_dir: str = DEFAULT_STATE_DIR
    cache_dir: str = DEFAULT_CACHE_DIR

    @property
    def policy(self) -> str:
        return os.path.join(self.config_dir, "policy.yaml")

    @property
    def snapshot(self) -> str:
        return os.path.join(self.state_dir, "snapshot.json")

    @property
    def manifests(self) -> str:
        return os.path.join(self.state_dir, "installs")

    @property
    def manifest(self) -> str:
        digest = hashlib.sha256(os.path.normpath(self.hooks_dir).encode()).hexdigest()[:16]
        return os.path.join(self.manifests, f"{digest}.json")

    @property
    def legacy_manifest(self) -> str:
        """Version 1 kept one manifest per state directory, whichever hooks dir it served."""
        return os.path.join(self.state_dir, "install-manifest.json")

    @property
    def is_libvirts_own(self) -> bool:
        return os.path.normpath(self.hooks_dir) == DEFAULT_HOOKS_DIR


@dataclass
class Outcome:
    messages: list[str] = field(default_factory=list)
    hook_path: Optional[str] = None
    nothing: bool = False  # uninstall: no install of this hooks directory was found
    changed: bool = False  # install: something was written (the daemon has something to learn)

    def say(self, message: str) -> None:
        self.messages.append(message)


@dataclass(frozen=True)
class Interpreter:
    """What the hook's interpreter, run as the wrapper runs it (``-I``), imports and trusts."""

    python: str
    package: str  # the libvirt_txmode package directory it imports
    path: tuple[str, ...]  # its sys.path: every directory code is imported from as root


def _packaged(name: str) -> str:
    data = resources.files("libvirt_txmode").joinpath("data")
    return data.joinpath(name).read_text(encoding="utf-8")


def _sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def render_hook(python: str, layout: Layout, package: Optional[str] = None) -> str:
    """The sh wrapper with this installation's interpreter and paths (libvirt gives a bare PATH)."""
    text = _packaged("qemu-hook")
    settings = [("PYTHON", python)]
    if package is not None:
        settings.append(("PACKAGE", package))
    settings += [("POLICY", layout.policy), ("SNAPSHOT", layout.snapshot)]
    settings.append(("CACHE", layout.cache_dir))
    for name, value in settings:
        if not _SAFE_VALUE.fullmatch(value):
            raise InstallError(f"refusing to embed unusual path {value!r} into a shell script")
        if not os.path.isabs(value):
            # libvirt runs hooks from its own working directory: a relative path would not resolve.
            raise InstallError(f"{name.lower()} path {value!r} must be absolute")
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, count=1, flags=re.M)
    return text


def hook_settings(path: str) -> dict[str, str]:
    """The NAME=value settings of an installed wrapper (for doctor)."""
    found: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(8192)
    except OSError:
        return found
    for match in re.finditer(r"^(PYTHON|PACKAGE|POLICY|SNAPSHOT|CACHE)=(.*)$", head, flags=re.M):
        found.setdefault(match.group(1), match.group(2))
    return found


def is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return MARKER in handle.read(4096)
    except OSError:
        return False


def installed_copies(hooks_dir: str) -> list[str]:
    """Every libvirt-txmode hook libvirt would run from ``hooks_dir``: ``qemu`` and any entry of
    ``qemu.d`` (a packaged one is a symlink) that is ours."""
    found = []
    main_hook = os.path.join(hooks_dir, "qemu")
    if os.path.isfile(main_hook) and is_ours(main_hook):
        found.append(main_hook)
    dropins = os.path.join(hooks_dir, "qemu.d")
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(dropins)):
            path = os.path.join(dropins, name)
            if not name.startswith(".") and os.path.isfile(path) and is_ours(path):
                found.append(path)
    return found


def describe_copy(path: str) -> str:
    """A hook copy as an operator tells them apart: whose it is, and its interpreter."""
    python = hook_settings(path).get("PYTHON", "?")
    if os.path.realpath(path).startswith(PACKAGED_HOOK_DIR):
        return f"{path} (the Debian package's, interpreter {python})"
    return f"{path} (interpreter {python})"


def other_copies_problem(layout: Layout, target: str) -> Optional[str]:
    """Why a second gate must not be installed beside one already there, with the fix."""
    others = [p for p in installed_copies(layout.hooks_dir) if p != target]
    if not others:
        return None
    first = others[0]
    if os.path.realpath(first).startswith(PACKAGED_HOOK_DIR):
        fix = (
            "the package's hook already guards this host: use its /usr/bin/libvirt-txmode, or "
            "'apt remove libvirt-txmode' before installing this one"
        )
    else:
        python = hook_settings(first).get("PYTHON", "?")
        fix = (
            f"run '{os.path.join(os.path.dirname(python), 'libvirt-txmode')} uninstall-hook"
            f" --hooks-dir {layout.hooks_dir}' (the install that wrote it) before installing "
            "this one, or keep that one"
        )
    return (
        f"another libvirt-txmode hook is installed: {describe_copy(first)}; one gate per host "
        f"(two would check every start twice, with different versions and policies): {fix}"
    )


_DIRECTORY_FLAGS = {
    "hooks_dir": "--hooks-dir",
    "config_dir": "--config-dir",
    "state_dir": "--state-dir",
    "cache_dir": "--cache-dir",
}


def directory_problem(path: str) -> Optional[str]:
    """Why install/uninstall must not write into, or read a manifest from, directory ``path``:
    the one trust rule (files.path_trust_problem) on it, or on its nearest existing ancestor when
    it does not exist yet (it is then created by us, root's, 0755)."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    return files.path_trust_problem(probe, allowed_uids=files.owners(), kind="directory")


def layout_trust_problem(layout: Layout, extra: tuple[str, ...] = ()) -> Optional[str]:
    """The first directory of ``layout`` (and ``extra``) that is not trusted, as a refusal naming
    the path, the option that chose it and the fix."""
    candidates = [(getattr(layout, name), flag) for name, flag in _DIRECTORY_FLAGS.items()]
    candidates.insert(3, (layout.manifests, "--state-dir"))
    candidates += [(path, "") for path in extra]
    for path, flag in candidates:
        problem = directory_problem(path)
        if problem is not None:
            where = f" (chosen by {flag})" if flag else ""
            return (
                f"refusing directory {path}{where}: {problem}; fix: make it and every directory "
                f"above it root's and writable by nobody else (chown root:root, chmod go-w)"
                f"{', or choose another ' + flag if flag else ''}"
            )
    return None


def hook_target(layout: Layout) -> tuple[str, Optional[str]]:
    """Where our hook goes, and why not ``qemu`` when a foreign one is there."""
    main_hook = os.path.join(layout.hooks_dir, "qemu")
    if os.path.lexists(main_hook) and not is_ours(main_hook):
        target = os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME)
        return target, (
            f"{main_hook} belongs to someone else: left alone; installing {target} instead "
            "(libvirt >= 6.5 runs hooks in qemu.d/ after qemu)"
        )
    return main_hook, None


# --- the interpreter -----------------------------------------------------------------------------

_INSPECT = (
    "import json, os, sys, libvirt_txmode; "
    "print(json.dumps({'package': os.path.dirname(os.path.abspath(libvirt_txmode.__file__)), "
    "'path': [p for p in sys.path if p]}))"
)


def inspect_interpreter(python: str) -> Interpreter:
    """Run ``python -I`` as the hook will, and learn where it imports libvirt_txmode from."""
    if not os.path.isabs(python):
        raise InstallError(f"python path {python!r} must be absolute")
    try:
        proc = subprocess.run(
            [python, "-I", "-c", _INSPECT],
            capture_output=True,
            text=True,
            env=HOOK_ENV,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        raise InstallError(f"cannot run the hook's interpreter {python}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"the hook's interpreter {python} did not answer in 60 s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(
            f"the hook's interpreter {python}, run isolated (-I) as the hook runs it, cannot "
            f"import libvirt_txmode ({last}); a 'pip install --user' is invisible to it: install "
            "into a venv (python3 -m venv /opt/libvirt-txmode) or system-wide"
        )
    try:
        data = json.loads(proc.stdout)
        return Interpreter(python, str(data["package"]), tuple(str(p) for p in data["path"]))
    except (ValueError, KeyError, TypeError):
        raise InstallError(f"the hook's interpreter {python} gave an unreadable answer") from None


def interpreter_trust_problem(interpreter: Interpreter) -> Optional[str]:
    """Why code the interpreter runs as root could be planted by someone else, or None.

    The interpreter itself, the package directory and every existing directory on its ``-I``
    sys.path (site-packages with its ``.pth`` files included) must pass the whole-path trust rule
    of ``files.path_trust_problem``: owned by root, writable by no one else, from ``/`` down."""
    candidates = [interpreter.python, interpreter.package]
    candidates += [p for p in interpreter.path if os.path.exists(p)]
    for path in dict.fromkeys(candidates):
        problem = files.path_trust_problem(path)
        if problem is not None:
            return (
                f"refusing the hook's interpreter {interpreter.python}: {problem} (it runs as "
                "root on every VM start; whoever can write there could plant code in it)"
            )
    return None


def self_test(hook: str) -> None:
    """Run the wrapper as libvirt would, once on ``prepare begin`` of a compliant sample domain
    and once on a no-op event; InstallError with the hook's own words when it cannot run."""
    events = (("prepare", "begin"), ("started", "begin"), ("reconnect", "begin"))
    for operation, sub in events:
        try:
            proc = subprocess.run(
                ["/bin/sh", hook, SELFTEST_DOMAIN, operation, sub, "-"],
                input=SELFTEST_XML.encode(),
                capture_output=True,
                env=HOOK_ENV,
                cwd="/",
                timeout=SELFTEST_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InstallError(
                f"the hook did not answer '{operation} {sub}' in {SELFTEST_TIMEOUT:.0f} s"
            ) from None
        if proc.returncode != 0 or proc.stdout:
            said = proc.stderr.decode("utf-8", "replace").strip() or "no message"
            if proc.stdout:
                said += " (and it wrote to stdout, which libvirt would take as XML)"
            raise InstallError(
                f"the hook failed its self-test on a sample '{operation} {sub}' event "
                f"(exit {proc.returncode}): {said}"
            )


# --- manifests -----------------------------------------------------------------------------------


def _read_json(path: str) -> Optional[dict[str, Any]]:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files_of(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    raw = document.get("files")
    if not isinstance(raw, dict):
        return files
    for path, entry in raw.items():
        if isinstance(entry, str):  # version 1: path -> sha256
            files[str(path)] = {"sha256": entry, "role": _role_of(str(path))}
        elif isinstance(entry, dict):
            files[str(path)] = {str(k): str(v) for k, v in entry.items()}
    return files


def _role_of(path: str) -> str:
    if path == UNIT_PATH:
        return "unit"
    if path.endswith(("/qemu", "/" + DROPIN_NAME)):
        return "hook"
    return "policy"


def load_manifest(layout: Layout) -> dict[str, dict[str, str]]:
    """The files this hooks directory's install wrote: path -> {sha256, role}."""
    document = _read_json(layout.manifest)
    if document is not None:
        return _files_of(document)
    legacy = _read_json(layout.legacy_manifest)
    if legacy is None:
        return {}
    files = _files_of(legacy)
    # A version-1 manifest is adopted only by the hooks directory its hook was installed in.
    hooks = (os.path.join(layout.hooks_dir, "qemu"), hook_target(layout)[0])
    if any(entry.get("role") == "hook" and path in hooks for path, entry in files.items()):
        return files
    return {}


def _save_manifest(layout: Layout, files: dict[str, dict[str, str]]) -> bool:
    """Write the manifest unless it already says exactly this; whether it was written."""
    os.makedirs(layout.manifests, mode=0o755, exist_ok=True)
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "hooks_dir": os.path.normpath(layout.hooks_dir),
        "uses": sorted(_uses(layout)),
        "files": files,
    }
    data = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
    written = False
    try:
        with open(layout.manifest, "rb") as handle:
            same = handle.read(len(data) + 1) == data
    except OSError:
        same = False
    if not same:
        write_atomic(layout.manifest, data)
        written = True
    if os.path.lexists(layout.legacy_manifest) and load_manifest_legacy_is_ours(layout):
        os.unlink(layout.legacy_manifest)
        written = True
    return written


def load_manifest_legacy_is_ours(layout: Layout) -> bool:
    legacy = _read_json(layout.legacy_manifest)
    if legacy is None:
        return False
    hooks = (os.path.join(layout.hooks_dir, "qemu"), hook_target(layout)[0])
    return any(path in hooks for path in _files_of(legacy))


def _uses(layout: Layout) -> set[str]:
    """Shared paths an installed hook depends on, whoever wrote them."""
    return {layout.policy, layout.snapshot, os.path.normpath(layout.cache_dir)}


def _used_elsewhere(layout: Layout) -> dict[str, str]:
    """Paths other installs (other hooks directories, same state directory) still use or own,
    with the manifest of the install that uses them."""
    used: dict[str, str] = {}
    try:
        names = sorted(os.listdir(layout.manifests))
    except OSError:
        return used
    own = os.path.basename(layout.manifest)
    for name in names:
        if name == own or not name.endswith(".json"):
            continue
        manifest = os.path.join(layout.manifests, name)
        document = _read_json(manifest)
        if document is None:
            continue
        uses = document.get("uses")
        for path in [*(uses if isinstance(uses, list) else []), *_files_of(document)]:
            used.setdefault(str(path), manifest)
    return used


def _hand_over(manifest: str, path: str, entry: dict[str, str]) -> str:
    """A file our install wrote that another install still uses becomes that install's: its
    uninstall removes it then, so no install leaves an orphan behind. Returns its hooks dir."""
    document = _read_json(manifest) or {}
    files = _files_of(document)
    files.setdefault(path, entry)
    document["files"] = files
    write_atomic(manifest, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")
    return str(document.get("hooks_dir", "?"))


# --- install -------------------------------------------------------------------------------------


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
    outcome.changed = _save_manifest(layout, files) or outcome.changed
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
    policy = _packaged("policy.yaml").encode()
    if not step.dry_run:
        os.makedirs(layout.config_dir, mode=0o755, exist_ok=True)
        write_atomic(layout.policy, policy, mode=0o644)
        step.record(layout.policy, policy, "policy")
        step.wrote()
    step.outcome.say(f"{step.verb} default policy {layout.policy}")
    return not step.dry_run


def _install_hook_file(target: str, content: bytes, python: str, verify: bool, step: _Step) -> None:
    if _sha256(target) == hashlib.sha256(content).hexdigest():
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
    unit = _packaged("libvirt-txmode-snapshot.service").replace("@PYTHON@", python).encode()
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
    before = _sha256(layout.snapshot)
    step.outcome.say(take_snapshot(layout.snapshot))
    if _sha256(layout.snapshot) != before:
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


# --- uninstall -----------------------------------------------------------------------------------


def uninstall(layout: Layout, *, dry_run: bool = False) -> Outcome:  # noqa: C901, PLR0912 - the removal rules (manifest, shared files, daemon) are kept together so none is skipped
    outcome = Outcome()
    problem = _manifest_trust_problem(layout)
    if problem is not None:
        raise InstallError(f"{problem}; nothing removed")
    files = load_manifest(layout)
    if not files and not os.path.lexists(layout.manifest):
        outcome.say(f"nothing to uninstall for {layout.hooks_dir} (no install manifest)")
        outcome.nothing = True
        return outcome
    used = _used_elsewhere(layout)
    verb = "would remove" if dry_run else "removed"
    for path, entry in sorted(files.items()):
        role = entry.get("role", "")
        if path in used:
            other = _read_json(used[path]) or {}
            hooks_dir = str(other.get("hooks_dir", "?"))
            if not dry_run:
                hooks_dir = _hand_over(used[path], path, entry)
            outcome.say(f"kept {path}: still used by the install in {hooks_dir}")
            continue
        problem = _removal_problem(path, entry, _writable_paths(layout))
        if problem is not None:
            outcome.say(problem)
            continue
        if not dry_run:
            if role == "unit":
                subprocess.run(["systemctl", "disable", os.path.basename(path)], check=False)
            os.unlink(path)
        outcome.say(f"{verb} {path}")
    cache = os.path.normpath(layout.cache_dir)
    if cache in used:
        hooks_dir = str((_read_json(used[cache]) or {}).get("hooks_dir", "?"))
        outcome.say(
            f"kept probe cache {layout.cache_dir}: still used by the install in {hooks_dir}"
        )
    else:
        outcome.messages.extend(empty_cache(layout.cache_dir, dry_run=dry_run))
    for manifest in (layout.manifest, layout.legacy_manifest):
        if manifest == layout.legacy_manifest and not load_manifest_legacy_is_ours(layout):
            continue
        if os.path.lexists(manifest):
            if not dry_run:
                os.unlink(manifest)
            outcome.say(f"{verb} {manifest}")
    if not dry_run:
        directories = (
            os.path.join(layout.hooks_dir, "qemu.d"),
            layout.config_dir,
            layout.manifests,
            layout.state_dir,
            layout.cache_dir,
        )
        for directory in directories:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only when empty (a symlink is not removed by rmdir)
    return outcome


def _manifest_trust_problem(layout: Layout) -> Optional[str]:
    """Why the manifests of ``layout`` must not be believed: their directories and the manifest
    files themselves pass the one trust rule, or nothing is removed by them."""
    for directory, flag in ((layout.state_dir, "--state-dir"), (layout.manifests, "--state-dir")):
        if not os.path.lexists(directory):
            return None
        problem = files.path_trust_problem(directory, allowed_uids=files.owners(), kind="directory")
        if problem is not None:
            return (
                f"refusing to read install manifests from {directory} (chosen by {flag}): "
                f"{problem}; fix: make it root's and writable by nobody else (chown root:root, "
                "chmod go-w), then check what it holds"
            )
    for manifest in (layout.manifest, layout.legacy_manifest):
        if os.path.lexists(manifest):
            problem = files.path_trust_problem(manifest, allowed_uids=files.owners(), kind="file")
            if problem is not None:
                return (
                    f"refusing install manifest {manifest}: {problem}; fix: remove it if you did "
                    "not write it, and remove the install's files yourself"
                )
    return None


def _writable_paths(layout: Layout) -> dict[str, str]:
    """The only files an install of ``layout`` writes, with their role: a manifest naming any
    other path (forged, or edited) removes nothing there."""
    hooks = (
        os.path.join(layout.hooks_dir, "qemu"),
        os.path.join(layout.hooks_dir, "qemu.d", DROPIN_NAME),
    )
    allowed = {path: "hook" for path in hooks}
    allowed.update({layout.policy: "policy", layout.snapshot: "snapshot", UNIT_PATH: "unit"})
    return allowed


def _removal_problem(path: str, entry: dict[str, str], allowed: dict[str, str]) -> Optional[str]:
    """Why a manifest entry must stay, or None when it is still exactly what install wrote:
    one of the paths an install writes, a regular file in a trusted directory, with the owner,
    size and content recorded."""
    role = entry.get("role", "")
    if allowed.get(path) != role:
        return f"kept {path}: not a file install-hook writes for this hooks directory"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} already gone"
    except OSError as exc:
        return f"kept {path}: {exc.strerror}"
    return _place_problem(path, info) or _record_problem(path, info, entry)


def _place_problem(path: str, info: os.stat_result) -> Optional[str]:
    """A regular file reached without a symlink, in a directory that passes the trust rule."""
    if not stat.S_ISREG(info.st_mode):
        return f"kept {path}: no longer a regular file (never removed through a symlink)"
    if os.path.realpath(path) != os.path.abspath(path):
        return f"kept {path}: reached through a symlinked directory"
    parent = os.path.dirname(os.path.abspath(path))
    problem = files.path_trust_problem(parent, allowed_uids=files.owners(), kind="directory")
    if problem is not None:
        # Only in trusted directories: in another's, the name may no longer be ours to remove.
        return f"kept {path}: its directory is not trusted ({problem})"
    return None


def _record_problem(path: str, info: os.stat_result, entry: dict[str, str]) -> Optional[str]:
    """The owner, size and content the manifest recorded (a snapshot: its owner only)."""
    role = entry.get("role", "")
    recorded = entry.get("uid", "")
    owners = files.owners()
    allowed = owners & {int(recorded)} if recorded.isdigit() else owners
    problem = files.node_problem(path, info, allowed, kind="file")
    if problem is not None:
        # Not a file to repair but one to leave alone: the trust rule's fix does not apply.
        found = problem.split("; fix: ", 1)[0]
        return f"kept {path}: {found}: not as install-hook wrote it"
    if role == "snapshot":
        return None  # rewritten by every refresh: ours by its one path, whatever its content
    same_size = str(info.st_size) == entry.get("size", str(info.st_size))
    if same_size and _sha256(path) == entry.get("sha256"):
        return None
    if role == "hook" and not is_ours(path):
        return f"kept {path}: no longer ours"
    return f"kept {path}: changed since install (remove it yourself if you want)"


def empty_cache(cache_dir: str, *, dry_run: bool = False) -> list[str]:
    """Remove the files the hook writes into ``cache_dir``: by name (CACHE_NAMES), regular files
    only, never through a symlink, and only in a directory owned by us or root."""
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if os.path.islink(cache_dir):
            return [f"kept probe cache {cache_dir}: a symlink, never followed"]
        return [f"kept probe cache {cache_dir}: {exc.strerror}"]
    try:
        if files.node_problem(cache_dir, os.fstat(fd), files.owners()) is not None:
            return [f"kept probe cache {cache_dir}: not a directory only we can write"]
        problem = (
            "reached through a symlinked directory"
            if os.path.realpath(cache_dir) != os.path.abspath(cache_dir)
            else files.path_trust_problem(cache_dir, allowed_uids=files.owners(), kind="directory")
        )
        if problem is not None:
            return [f"kept probe cache {cache_dir}: {problem}"]
        removed = _remove_ours(fd, CACHE_NAMES, dry_run=dry_run)
        # 0.3.0's sh-replayed decisions: one directory of ours.
        try:
            shell = os.open(SHELL_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            shell = -1
        if shell >= 0:
            try:
                if files.node_problem(SHELL_DIR, os.fstat(shell), files.owners()) is None:
                    removed += _remove_ours(shell, SHELL_NAMES, dry_run=dry_run)
                    if not dry_run:
                        with contextlib.suppress(OSError):  # something not ours is left in it
                            os.rmdir(SHELL_DIR, dir_fd=fd)
            finally:
                os.close(shell)
        verb = "would remove" if dry_run else "removed"
        return [f"{verb} {removed} cache file{'s' if removed != 1 else ''} from {cache_dir}"]
    finally:
        os.close(fd)


def _remove_ours(fd: int, names: re.Pattern[str], *, dry_run: bool) -> int:
    """Unlink the regular files named like ours in the directory open as ``fd``; how many."""
    removed = 0
    for name in sorted(os.listdir(fd)):
        if not names.fullmatch(name):
            continue
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(entry.st_mode):
                continue  # a directory named x.json, a symlink: not something we wrote
            if not dry_run:
                os.unlink(name, dir_fd=fd)
            removed += 1
        except FileNotFoundError:
            continue
    return removed
