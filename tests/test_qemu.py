"""qemu.py: reading QEMU's answers (recorded and reconstructed outputs), running emulators safely.

Recorded outputs of QEMU 7.2 and hand-reconstructed ones of older QEMU are in tests/data/qemu (its
README says which is which). Fake emulators (tests/fakes.py) stand in for binaries that misbehave.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.engine.model import Support, SupportState
from libvirt_txmode.host.bounded_run import MAX_OUTPUT_BYTES, PROBE_ENV, probe_user, run_bounded
from libvirt_txmode.host.emulator import ProbeError, identify, trust_problem
from libvirt_txmode.host.probe import (
    parse_help,
    parse_qmp,
    probe,
    probe_help,
    probe_qmp,
    qmp_request,
)
from tests.fakes import FakeEmulators, make_fakes, processes_with, read

QEMU = "/usr/bin/qemu-system-x86_64"
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="only root demotes and checks owners")


def supported(detail: str, method: str = "help") -> Support:
    return Support(SupportState.SUPPORTED, detail, method)


def unsupported(detail: str, method: str = "help") -> Support:
    return Support(SupportState.UNSUPPORTED, detail, method)


@pytest.fixture
def fakes() -> Iterator[FakeEmulators]:
    yield from make_fakes()


# --- parse_help on recorded and reconstructed outputs --------------------------------------------


@pytest.mark.parametrize(
    ("device", "files", "expected"),
    [
        # Recorded: QEMU 7.2 prints "DEV options:" then "  tx=<str>" on stdout.
        (
            "virtio-net-pci",
            ["7.2-virtio-net-pci-help.stdout", "7.2-virtio-net-pci-help.stderr"],
            supported("tx listed by -device virtio-net-pci,help"),
        ),
        (
            "virtio-net-device",
            ["7.2-virtio-net-device-help.stdout", "7.2-virtio-net-device-help.stderr"],
            supported("tx listed by -device virtio-net-device,help"),
        ),
        # Recorded: a transport this binary lacks is "not found" on stderr (with exit status 0).
        (
            "virtio-net-ccw",
            ["7.2-virtio-net-ccw-help.stdout", "7.2-virtio-net-ccw-help.stderr"],
            unsupported("this QEMU has no device virtio-net-ccw"),
        ),
        # Reconstructed from QEMU 0.14-1.x sources: "DEV.prop=type" lines on stderr.
        (
            "virtio-net-pci",
            ["old-0.14-virtio-net-pci-help.stderr"],
            supported("virtio-net-pci.tx listed by -device virtio-net-pci,help"),
        ),
        # Reconstructed: QEMU 0.13, before tx existed.
        (
            "virtio-net-pci",
            ["old-0.13-virtio-net-pci-help.stderr"],
            unsupported("virtio-net-pci has no tx property"),
        ),
        # Reconstructed: QEMU 1.x refusing a device it does not have.
        (
            "virtio-net-ccw",
            ["old-1.x-virtio-net-ccw-help.stderr"],
            unsupported("this QEMU has no device virtio-net-ccw"),
        ),
        # Reconstructed: QEMU 2.x, "DEV.prop=type (description)" on stdout.
        (
            "virtio-net-pci",
            ["old-2.x-virtio-net-pci-help.stdout"],
            supported("virtio-net-pci.tx listed by -device virtio-net-pci,help"),
        ),
    ],
)
def test_parse_help_recorded_outputs(device: str, files: list[str], expected: Support) -> None:
    output = b"\n".join(read(name) for name in files)
    assert parse_help(device, output) == expected


def test_recorded_help_is_what_qemu_7_2_prints() -> None:
    # The facts docs/libvirt-facts.md rests on, pinned to the recording.
    pci = read("7.2-virtio-net-pci-help.stdout")
    assert pci.startswith(b"virtio-net-pci options:\n")
    assert b"\n  tx=<str>\n" in pci
    assert read("7.2-virtio-net-pci-help.stderr") == b""
    assert read("7.2-virtio-net-ccw-help.stdout") == b""
    assert read("7.2-virtio-net-ccw-help.stderr") == (
        b"qemu-system-x86_64: -device virtio-net-ccw,help: Device 'virtio-net-ccw' not found\n"
    )


def test_parse_help_new_format_without_tx_line() -> None:
    # tx_queue_size and x-txtimer stay: only an exact "tx=" counts.
    output = read("7.2-virtio-net-pci-help.stdout").replace(b"  tx=<str>\n", b"")
    assert b"tx_queue_size=" in output and b"x-txtimer=" in output
    assert parse_help("virtio-net-pci", output) == unsupported("virtio-net-pci has no tx property")


def test_parse_help_answers_only_for_the_device_asked() -> None:
    # A listing of another device (prefix of ours or not) settles nothing.
    old = read("old-0.14-virtio-net-pci-help.stderr")
    assert parse_help("virtio-net-pci-transitional", old) is None
    new = read("7.2-virtio-net-pci-help.stdout")
    assert parse_help("virtio-net-pci-transitional", new) is None
    assert parse_help("virtio-net", new) is None


@pytest.mark.parametrize(
    "output",
    [b"", b"\n", b"qemu-system-x86_64: something else went wrong\n", b"\x00\xff" * 100],
)
def test_parse_help_inconclusive(output: bytes) -> None:
    assert parse_help("virtio-net-pci", output) is None


# --- parse_qmp on the recorded exchange ----------------------------------------------------------


def test_qmp_request_is_the_recorded_one() -> None:
    assert qmp_request(["virtio-net-pci", "virtio-net-ccw"]) == read("7.2-qmp-request.jsonl")


def test_parse_qmp_recorded_exchange() -> None:
    result = parse_qmp(["virtio-net-pci", "virtio-net-ccw"], read("7.2-qmp-response.jsonl"))
    assert result == {
        "virtio-net-pci": supported("tx listed by device-list-properties", "qmp"),
        "virtio-net-ccw": unsupported("this QEMU has no device virtio-net-ccw", "qmp"),
    }


def test_recorded_qmp_exchange_shape() -> None:
    messages = [json.loads(line) for line in read("7.2-qmp-response.jsonl").splitlines()]
    assert messages[0]["QMP"]["version"]["qemu"] == {"major": 7, "minor": 2, "micro": 22}
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert {"name": "tx", "type": "str"} in by_id["dev0"]["return"]
    assert by_id["dev1"]["error"] == {
        "class": "DeviceNotFound",
        "desc": "Device 'virtio-net-ccw' not found",
    }


def test_parse_qmp_cut_short() -> None:
    # QEMU died after the first reply line: the second device stays unsettled, nothing is guessed.
    lines = read("7.2-qmp-response.jsonl").splitlines(keepends=True)
    cut = b"".join(lines[:3]) + lines[3][:40]
    assert parse_qmp(["virtio-net-pci", "virtio-net-ccw"], cut) == {
        "virtio-net-pci": supported("tx listed by device-list-properties", "qmp"),
    }


def test_parse_qmp_other_replies() -> None:
    output = b"\n".join(
        [
            b"not json at all",
            b"[1, 2, 3]",
            b'{"id": 7, "return": []}',
            b'{"id": "dev0", "return": [{"name": "mac", "type": "str"}, "junk"]}',
            b'{"id": "dev1", "error": {"class": "GenericError", "desc": "busy"}}',
            b'{"id": "dev2", "return": {"unexpected": "object"}}',
        ]
    )
    assert parse_qmp(["virtio-net-pci", "virtio-net-ccw", "virtio-net-device"], output) == {
        "virtio-net-pci": unsupported("virtio-net-pci has no tx property", "qmp"),
    }


# --- trust ---------------------------------------------------------------------------------------


def test_trust_accepts_root_owned_binary_in_globs(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-ok", "exit 0\n")
    assert trust_problem(str(path), [fakes.glob]) is None


def test_trust_refusals(fakes: FakeEmulators) -> None:
    ok = fakes.script("qemu-ok", "exit 0\n")
    plain = fakes.script("qemu-plain", "exit 0\n", mode=0o644)
    group_writable = fakes.script("qemu-gw", "exit 0\n", mode=0o775)
    other_writable = fakes.script("qemu-ow", "exit 0\n", mode=0o757)
    globs = [fakes.glob]
    assert trust_problem("qemu-system-x86_64", globs) == (
        "emulator path 'qemu-system-x86_64' is not absolute"
    )
    sneaky = f"{fakes.directory}/x/../../../usr/bin/id"
    assert trust_problem(sneaky, globs) == f"emulator path {sneaky!r} has '.' or '..' components"
    assert trust_problem(str(ok), ["/usr/bin/qemu-system-*"]) == (
        f"emulator {ok} is not in the policy's trusted 'emulators' list"
    )
    missing = f"{fakes.directory}/qemu-missing"
    assert trust_problem(missing, globs) == (
        f"emulator {missing} is not accessible: No such file or directory"
    )
    assert trust_problem(str(plain), globs) == f"emulator {plain} is not an executable file"
    assert trust_problem(str(fakes.directory), [f"{fakes.directory}*"]) == (
        f"emulator {fakes.directory} is not an executable file"
    )
    for path, mode in ((group_writable, "0775"), (other_writable, "0757")):
        assert trust_problem(str(path), globs) == (
            f"emulator {path} is not trusted: file {path} is writable by group or others "
            f"(mode {mode}); fix: chmod go-w {path}: refusing to run it"
        )


@AS_ROOT
def test_trust_refuses_binary_not_owned_by_root(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-nobody", "exit 0\n", uid=65534)
    assert trust_problem(str(path), [fakes.glob]) == (
        f"emulator {path} is not trusted: file {path} is owned by uid 65534, not root; "
        f"fix: chown root {path}: refusing to run it"
    )


@AS_ROOT
def test_trust_refuses_root_binary_in_a_directory_others_can_write(fakes: FakeEmulators) -> None:
    # The binary passes on its own, but whoever can write its directory can swap it.
    shared = fakes.directory / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    path = fakes.script("qemu-in-shared", "exit 0\n", directory=shared)
    assert trust_problem(str(path), [f"{shared}/*"]) == (
        f"emulator {path} is not trusted: directory {shared} is writable by group or others "
        f"(mode 0777); fix: chmod go-w {shared}: refusing to run it"
    )
    os.chmod(shared, 0o755)
    link = fakes.directory / "qemu-link-by-nobody"
    link.symlink_to(path)
    os.lchown(link, 65534, 65534)
    assert trust_problem(str(link), [fakes.glob]) == (
        f"emulator {link} is not trusted: symlink {link} is owned by uid 65534, not root; "
        f"fix: chown -h root {link}: refusing to run it"
    )


def test_identify(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-id", "exit 0\n")
    link = fakes.directory / "qemu-link"
    link.symlink_to(path)
    first = identify(str(link))
    assert (first.path, first.realpath) == (str(link), str(path))
    assert first.key() == identify(str(path)).key()
    with pytest.raises(ProbeError, match="is not accessible: No such file or directory"):
        identify(str(fakes.directory / "nope"))
    with pytest.raises(ProbeError, match="is not a regular file"):
        identify(str(fakes.directory))


# --- run_bounded: what the emulator gets and what happens when it misbehaves ---------------------


def test_environment_is_clean(fakes: FakeEmulators, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/evil.so")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    path = fakes.script("qemu-env", "tr '\\0' '\\n' < /proc/$$/environ\n")
    result = run_bounded([str(path)], timeout=10)
    assert result.returncode == 0
    assert sorted(result.stdout.decode().splitlines()) == sorted(
        f"{k}={v}" for k, v in PROBE_ENV.items()
    )
    assert PROBE_ENV == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def test_stdin_is_not_inherited(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-stdin", 'readlink /proc/$$/fd/0\ncat\necho "cwd $(pwd)"\n')
    result = run_bounded([str(path)], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"/dev/null\ncwd /\n", b"")


def test_input_data_is_fed_then_eof(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-echo", "cat\necho EOF\n")
    result = run_bounded([str(path)], timeout=10, input_data=b'{"execute": "quit"}\n')
    assert result.stdout == b'{"execute": "quit"}\nEOF\n'


@AS_ROOT
def test_root_probes_as_libvirts_qemu_user(fakes: FakeEmulators) -> None:
    # Debian 12: libvirt runs QEMU as libvirt-qemu:libvirt-qemu with the supplementary group kvm.
    path = fakes.script("qemu-id", "id -u; id -g; id -G\n")
    result = run_bounded([str(path)], timeout=10)
    qemu_user, qemu_group = pwd.getpwnam("libvirt-qemu"), grp.getgrnam("libvirt-qemu")
    uid, gid, groups = result.stdout.decode().splitlines()
    assert (int(uid), int(gid)) == (qemu_user.pw_uid, qemu_group.gr_gid)
    assert {int(g) for g in groups.split()} == {qemu_group.gr_gid, grp.getgrnam("kvm").gr_gid}


def test_hang_ignoring_sigterm_is_killed(fakes: FakeEmulators) -> None:
    sleep_args = fakes.sleep_args()
    path = fakes.script("qemu-hang", f"trap '' TERM\necho started\nsleep {sleep_args}\n")
    result = run_bounded([str(path)], timeout=0.5)
    assert result.timed_out
    assert result.returncode == -9
    assert result.stdout == b"started\n"
    assert processes_with(sleep_args) == []


def test_forked_child_holding_the_pipe_is_killed(fakes: FakeEmulators) -> None:
    sleep_args = fakes.sleep_args()
    path = fakes.script(
        "qemu-fork", f"(trap '' TERM; sleep {sleep_args}) &\necho 'virtio-net-pci options:'\n"
    )
    result = run_bounded([str(path)], timeout=0.5)
    assert result.timed_out
    assert result.returncode == 0  # the parent itself exited at once
    assert processes_with(sleep_args) == []
    with pytest.raises(ProbeError, match=r"did not finish within 0\.5 s"):
        probe_help(str(path), "virtio-net-pci", 0.5)
    assert processes_with(sleep_args) == []


def test_daemonized_child_does_not_outlive_the_probe(fakes: FakeEmulators) -> None:
    # It closes its pipes, so the probe ends normally; what it left in the session is killed.
    sleep_args = fakes.sleep_args()
    path = fakes.script(
        "qemu-daemon",
        f"(exec >/dev/null 2>&1; trap '' TERM; sleep {sleep_args}) &\n"
        "echo 'virtio-net-pci options:'\necho '  tx=<str>'\n",
    )
    result = run_bounded([str(path)], timeout=10)
    assert (result.timed_out, result.returncode) == (False, 0)
    assert processes_with(sleep_args) == []


def test_huge_output_is_bounded(fakes: FakeEmulators) -> None:
    path = fakes.script("qemu-chatty", "head -c 52428800 /dev/zero | tr '\\0' 'x'\n")
    result = run_bounded([str(path)], timeout=20)
    assert result.truncated
    assert not result.timed_out
    assert MAX_OUTPUT_BYTES < len(result.stdout) + len(result.stderr) <= MAX_OUTPUT_BYTES + 65536
    with pytest.raises(ProbeError, match=f"printed more than {MAX_OUTPUT_BYTES} bytes"):
        probe_help(str(path), "virtio-net-pci", 20)


def test_exit_status_and_signal(fakes: FakeEmulators) -> None:
    failing = fakes.script("qemu-exit3", "echo oops >&2\nexit 3\n")
    crashing = fakes.script("qemu-segv", "kill -SEGV $$\n")
    assert run_bounded([str(failing)], timeout=10).returncode == 3
    assert run_bounded([str(crashing)], timeout=10).returncode == -11


def test_cannot_execute(fakes: FakeEmulators) -> None:
    with pytest.raises(ProbeError, match=r"cannot execute .*: No such file or directory"):
        run_bounded([str(fakes.directory / "missing")], timeout=10)


# --- probe() with fake emulators -----------------------------------------------------------------


def test_probe_old_help_on_stderr(fakes: FakeEmulators) -> None:
    path = fakes.help_printer("qemu-0.14", stderr=read("old-0.14-virtio-net-pci-help.stderr"))
    assert probe(str(path), ["virtio-net-pci"], timeout=10) == {
        "virtio-net-pci": supported("virtio-net-pci.tx listed by -device virtio-net-pci,help"),
    }


def test_probe_device_without_tx(fakes: FakeEmulators) -> None:
    path = fakes.help_printer("qemu-notx", stdout=b"virtio-net-pci options:\n  mac=<str>\n")
    assert probe(str(path), ["virtio-net-pci"], timeout=10) == {
        "virtio-net-pci": unsupported("virtio-net-pci has no tx property"),
    }


def test_probe_old_not_found_exits_nonzero_but_is_conclusive(fakes: FakeEmulators) -> None:
    path = fakes.help_printer(
        "qemu-1.x", stderr=read("old-1.x-virtio-net-ccw-help.stderr"), exit_code=1
    )
    assert probe(str(path), ["virtio-net-ccw"], timeout=10) == {
        "virtio-net-ccw": unsupported("this QEMU has no device virtio-net-ccw"),
    }


def test_probe_falls_back_to_qmp(fakes: FakeEmulators) -> None:
    path = fakes.help_printer(
        "qemu-qmp-only", stdout=b"unexpected\n", qmp=read("7.2-qmp-response.jsonl")
    )
    assert probe(str(path), ["virtio-net-pci", "virtio-net-ccw"], timeout=10) == {
        "virtio-net-pci": supported("tx listed by device-list-properties", "qmp"),
        "virtio-net-ccw": unsupported("this QEMU has no device virtio-net-ccw", "qmp"),
    }


def test_probe_unreadable_answers_are_unknown(fakes: FakeEmulators) -> None:
    path = fakes.help_printer("qemu-garbage", stdout=b"garbage\n", exit_code=3)
    assert probe(str(path), ["virtio-net-pci"], timeout=10) == {
        "virtio-net-pci": Support(
            SupportState.UNKNOWN, f"{path} gave no readable answer for virtio-net-pci", "auto"
        ),
    }


def test_probe_crash_mid_listing_is_not_unsupported(fakes: FakeEmulators) -> None:
    # The listing stopped before tx: a crash must not read as "this QEMU has no tx".
    path = fakes.script(
        "qemu-crash", "echo 'virtio-net-pci options:'\necho '  mac=<str>'\nkill -SEGV $$\n"
    )
    assert probe(str(path), ["virtio-net-pci"], timeout=10) == {
        "virtio-net-pci": Support(
            SupportState.UNKNOWN, f"{path} gave no readable answer for virtio-net-pci", "auto"
        ),
    }


def test_probe_hang_is_a_probe_error_without_leftovers(fakes: FakeEmulators) -> None:
    sleep_args = fakes.sleep_args()
    path = fakes.script("qemu-hang", f"trap '' TERM INT HUP\nsleep {sleep_args}\n")
    with pytest.raises(ProbeError, match=rf"^{path} -device virtio-net-pci,help did not finish"):
        probe(str(path), ["virtio-net-pci"], timeout=0.5)
    with pytest.raises(ProbeError, match=rf"^QMP probe of {path} did not finish within 0\.5 s$"):
        probe_qmp(str(path), ["virtio-net-pci"], 0.5)
    assert processes_with(sleep_args) == []


# --- the real QEMU -------------------------------------------------------------------------------


def require_qemu() -> None:
    """Skip without QEMU, except under CI where a skip would hide a broken setup."""
    if shutil.which("qemu-system-x86_64") and os.path.exists(QEMU):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{QEMU} is missing under CI (scripts/apt-deps installs qemu-system-x86)")
    pytest.skip(f"needs {QEMU}")


SUPPORTED_HERE = (
    "virtio-net-pci",
    "virtio-net-pci-transitional",
    "virtio-net-pci-non-transitional",
)


@pytest.mark.qemu
@pytest.mark.parametrize("device", [*SUPPORTED_HERE, "virtio-net-device"])
def test_real_qemu_help_supported(device: str) -> None:
    require_qemu()
    assert probe_help(QEMU, device, 20) == supported(f"tx listed by -device {device},help")


@pytest.mark.qemu
def test_real_qemu_help_device_not_found() -> None:
    require_qemu()
    assert probe_help(QEMU, "virtio-net-ccw", 20) == unsupported(
        "this QEMU has no device virtio-net-ccw"
    )


@pytest.mark.qemu
def test_real_qemu_qmp() -> None:
    require_qemu()
    devices = [*SUPPORTED_HERE, "virtio-net-device", "virtio-net-ccw"]
    expected = {d: supported("tx listed by device-list-properties", "qmp") for d in devices}
    expected["virtio-net-ccw"] = unsupported("this QEMU has no device virtio-net-ccw", "qmp")
    assert probe_qmp(QEMU, devices, 20) == expected


@pytest.mark.qemu
@pytest.mark.parametrize("method", ["auto", "help", "qmp"])
def test_real_qemu_probe(method: str) -> None:
    require_qemu()
    shown = "help" if method == "auto" else method
    devices = [*SUPPORTED_HERE, "virtio-net-device", "virtio-net-ccw"]
    if shown == "help":
        expected = {d: supported(f"tx listed by -device {d},help") for d in devices}
    else:
        expected = {d: supported("tx listed by device-list-properties", "qmp") for d in devices}
    expected["virtio-net-ccw"] = unsupported("this QEMU has no device virtio-net-ccw", shown)
    assert probe(QEMU, devices, timeout=20, method=method) == expected


@pytest.mark.qemu
@AS_ROOT
def test_real_qemu_runs_as_libvirts_qemu_user(fakes: FakeEmulators) -> None:
    # A wrapper in front of the real binary reports who ran it, then hands over like Debian's
    # /usr/bin/qemu-system-i386 wrapper does.
    require_qemu()
    wrapper = fakes.script("qemu-wrapper", f'id -u >&2\nexec {QEMU} "$@"\n')
    result = run_bounded([str(wrapper), "-device", "virtio-net-pci,help"], timeout=20)
    assert result.returncode == 0
    assert result.stderr == f"{pwd.getpwnam('libvirt-qemu').pw_uid}\n".encode()
    # What the real binary itself says (its version's help, whichever QEMU this machine has).
    direct = run_bounded([QEMU, "-device", "virtio-net-pci,help"], timeout=20)
    assert direct.returncode == 0 and b"tx=" in direct.stdout
    assert result.stdout == direct.stdout


def test_data_dir_documents_reconstructed_files() -> None:
    readme = (Path(__file__).parent / "data" / "qemu" / "README.md").read_text()
    for name in sorted(os.listdir(Path(__file__).parent / "data" / "qemu")):
        if name != "README.md":
            assert name.split(".std")[0].split(".jsonl")[0] in readme, name


# --- whom probes run as ---------------------------------------------------------------------------

# The start of Debian 12's /etc/libvirt/qemu.conf section: built-in defaults as commented lines.
TEMPLATE = """\
#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#user = "libvirt-qemu"
#group = "libvirt-qemu"
"""


def _conf(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "qemu.conf"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@AS_ROOT
def test_probe_user_is_libvirts_qemu_user(tmp_path: Path) -> None:
    qemu_user = pwd.getpwnam("libvirt-qemu")
    kvm = grp.getgrnam("kvm").gr_gid
    user, problem = probe_user(_conf(tmp_path, TEMPLATE))
    assert problem is None and user is not None
    # As the QEMU libvirt 9.0 starts on Debian 12: uid and gid libvirt-qemu, groups kvm too.
    assert (user.uid, user.gid) == (qemu_user.pw_uid, grp.getgrnam("libvirt-qemu").gr_gid)
    assert kvm in user.groups
    set_ones = TEMPLATE + 'user = "+65534"   # set by the operator\ngroup = "kvm"\n'
    user, problem = probe_user(_conf(tmp_path, set_ones))
    assert problem is None and user is not None
    assert (user.uid, user.gid) == (65534, kvm)
    ran = run_bounded(["/usr/bin/id", "-u"], timeout=10)  # the real /etc/libvirt/qemu.conf
    assert int(ran.stdout) == probe_user()[0].uid  # type: ignore[union-attr]


@AS_ROOT
@pytest.mark.parametrize(
    "text, mode, reason",
    [
        ('user = "root"\n', 0o600, "runs QEMU as root: probes never run as root"),
        ('user = "+0"\n', 0o600, "runs QEMU as root: probes never run as root"),
        ('user = "no-such-user-txm"\n', 0o600, "QEMU user 'no-such-user-txm'"),
        (TEMPLATE, 0o666, "is not trusted: file"),
    ],
    ids=["root", "uid-0", "unknown", "writable-conf"],
)
def test_probe_user_falls_back_to_nobody_and_says_why(
    tmp_path: Path, text: str, mode: int, reason: str
) -> None:
    user, problem = probe_user(_conf(tmp_path, text, mode))
    assert user is not None and (user.uid, user.description) == (65534, "nobody")
    assert problem is not None and reason in problem
    user, problem = probe_user(str(tmp_path / "missing.conf"))
    assert user is not None and user.uid == 65534
    assert problem is not None and "No such file or directory" in problem
