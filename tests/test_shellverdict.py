"""The installed hook's sh replay (hooks/qemu ``replay``, libvirt_txmode/shellverdict.py).

Every test runs the real installed hook the way libvirt does. Whether sh answered or Python did
is seen through the hook's PYTHON setting, pointed at a wrapper that records each start of the
interpreter and then is the real one.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from libvirt_txmode import logsink, shellverdict
from tests import libvirt_env as env
from tests.hookrun import POLICY, InstalledHook, domain, make_hook, nic
from tests.test_faults import counting_emulator

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root's entries are written and believed (run as root in CI)"
)

QEMU = "/usr/bin/qemu-system-x86_64"
LOG = Path(logsink.FALLBACK_FILE)


class Hook:
    """An installed hook whose interpreter starts are counted."""

    def __init__(self, base: Path, policy: str = POLICY) -> None:
        self.installed: InstalledHook = make_hook(base, policy)
        self.calls = base / "python-starts"
        wrapper = base / "python"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >>{self.calls}\nexec {sys.executable} "$@"\n')
        os.chmod(wrapper, 0o755)
        text = self.installed.path.read_text()
        self.installed.path.write_text(re.sub(r"(?m)^PYTHON=.*$", f"PYTHON={wrapper}", text))
        self.cache = Path(self.installed.layout.cache_dir)

    def run(self, name: str, xml: bytes) -> tuple[int, str, bool]:
        """(exit code, stderr, whether Python was started)."""
        before = self.starts()
        result = self.installed.run(name, "prepare", "begin", "-", stdin=xml)
        return result.returncode, result.stderr, self.starts() > before

    def starts(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def entries(self) -> list[Path]:
        shell = self.cache / shellverdict.DIRECTORY
        return sorted(shell.iterdir()) if shell.is_dir() else []


def live(name: str, run_id: int, txmode: str = "iothread", emulator: str = QEMU) -> bytes:
    """prepare begin's XML: libvirt formats the root with the run-time id on the first line."""
    xml = domain(name, nic("52:54:00:00:00:01", txmode), emulator=emulator)
    return xml.replace(b"<domain type='qemu'>", f"<domain type='qemu' id='{run_id}'>".encode())


@pytest.fixture
def log_file() -> Path:
    # The file sink is used only once it is root's 0600 file (Python creates it, sh appends).
    if not LOG.exists():
        LOG.touch(mode=0o600)
    return LOG


@pytest.fixture
def hook(tmp_path: Path, log_file: Path) -> Hook:
    return Hook(tmp_path)


def test_second_start_is_answered_in_sh_with_the_same_words(hook: Hook, log_file: Path) -> None:
    name = f"db-notimer-{uuid.uuid4().hex[:8]}"  # the log file is shared with everything else
    first = hook.run(name, live(name, 1, "timer"))
    assert first[0] == 1 and first[2]
    assert len(hook.entries()) == 1
    again = hook.run(name, live(name, 2, "timer"))
    assert again == (1, first[1], False)
    lines = [line for line in log_file.read_text().splitlines() if f"'{name}'" in line]
    assert sum(f"refused to start domain '{name}'" in line for line in lines) == 2
    # Python's file line and sh's differ only in time stamp and sender pid.
    python_line, sh_line = [line for line in lines if "NIC #0" in line]
    assert python_line.split("] ", 1)[1] == sh_line.split("] ", 1)[1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ libvirt-txmode\[\d+\] <3>: ", sh_line)


def test_an_allowed_start_is_replayed_and_logged(hook: Hook, log_file: Path) -> None:
    name = f"web-{uuid.uuid4().hex[:8]}"
    assert hook.run(name, live(name, 1))[:2] == (0, "")
    assert hook.run(name, live(name, 2)) == (0, "", False)
    assert log_file.read_text().count(f"allowed domain '{name}' ") == 2


def test_syslog_gets_the_replayed_decision(hook: Hook) -> None:
    hook.run("web", live("web", 1))
    with env.SyslogSink() as sink:
        assert hook.run("web", live("web", 2)) == (0, "", False)
        assert any("libvirt-txmode" in m and "allowed domain 'web'" in m for m in sink.lines())


FIRST_LINES = [
    b"<domain type='qemu' id='12'>",
    b"<domain id='12' type='qemu'>",
    b"<domain type='qemu' id='1x'>",
    b"<domain type='qemu' id=''>",
    b"<domain type='qemu' id='12",
    b"<domain type='qemu' id='12'",
    b"<domain type='qemu'><x id='5'/>",
    b"<domain type='qemu' xmlns:q='x' id='7' q:id='8'>",
    b"<domain type='qemu' q:id='8' id='7'>",
    b"<domain  type='qemu'>",
    b"<domain type='qemu' id='007' id='8'>",
    b"<?xml version='1.0'?><domain type='qemu' id='3'>",
    b"<domain type='qemu' id='\xff'>",
    b"",
]


@pytest.mark.parametrize("first_line", FIRST_LINES)
def test_sh_and_python_normalize_every_first_line_alike(first_line: bytes) -> None:
    for xml in (first_line, first_line + b"\n<name>x</name>\n", first_line + b"\n\n"):
        assert shellverdict.normalized(xml) == _sh_normalized(xml)


@pytest.mark.parametrize(
    "first_line",
    [
        b"<domain type='qemu' id='12'>",
        b"<domain id='12' type='qemu'>",
        b"<domain type='qemu' xmlns:q='urn:x' id='7' q:id='8'>",
        b"<?xml version='1.0'?><domain type='qemu' id='3'>",
    ],
)
def test_an_entry_written_by_python_is_found_by_sh(tmp_path: Path, first_line: bytes) -> None:
    # The entry is named by Python's digest and looked up by sh's.
    hook = Hook(tmp_path)
    xml = first_line + b"\n" + live("web", 1).split(b"\n", 1)[1]
    assert hook.run("web", xml)[0] == 0
    assert len(hook.entries()) == 1
    assert hook.run("web", xml) == (0, "", False)


def _hook_part(start: str, end: str) -> str:
    """The text of hooks/qemu from ``start`` up to the next ``end``: a piece to run on its own."""
    text = (Path(__file__).resolve().parent.parent / "hooks" / "qemu").read_text()
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def _sh_normalized(xml: bytes) -> bytes:
    """The hook's own expansion, cut out of hooks/qemu and run by dash on ``xml``."""
    body = _hook_part("    first=${xml%%", "    digest=$(")
    program = f'NL="\n"\nxml=$(cat; echo .)\nxml=${{xml%.}}\n{body}printf %s "$first$rest"\n'
    done = subprocess.run(["dash", "-c", program], input=xml, capture_output=True, check=True)
    return done.stdout


def test_only_the_run_time_id_is_left_out_of_the_key(hook: Hook) -> None:
    hook.run("web", live("web", 1))
    assert hook.run("web", live("web", 99))[2] is False
    other = live("web", 1).replace(b"<name>web</name>", b"<name>web2</name>")
    assert hook.run("web", other)[2] is True


def test_policy_edit_goes_to_python(hook: Hook) -> None:
    assert hook.run("vm", live("vm", 1, "timer"))[0] == 0
    hook.installed.policy.write_text(
        POLICY.replace("allowed: [iothread, timer]", "allowed: [iothread]")
    )
    code, stderr, python = hook.run("vm", live("vm", 2, "timer"))
    assert (code, python) == (1, True)
    assert "[txmode-not-allowed]" in stderr


def test_a_snapshot_that_appears_goes_to_python(hook: Hook) -> None:
    hook.run("vm", live("vm", 1))
    os.makedirs(hook.installed.layout.state_dir, exist_ok=True)
    Path(hook.installed.layout.snapshot).write_text("{}")
    assert hook.run("vm", live("vm", 2))[2] is True


def test_a_changed_emulator_goes_to_python(hook: Hook, tmp_path: Path) -> None:
    copy_dir = Path(f"/var/tmp/txmtest-sh-{tmp_path.name[-8:]}")
    copy_dir.mkdir(mode=0o755)
    try:
        emulator = copy_dir / "qemu-system-x86_64"
        shutil.copy2(QEMU, emulator)
        xml = live("vm", 1, emulator=str(emulator))
        assert hook.run("vm", xml)[0] == 0
        assert hook.run("vm", xml)[2] is False
        os.utime(emulator)  # an upgrade in place: new mtime and ctime
        assert hook.run("vm", xml)[2] is True
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)


def test_a_wrapper_script_emulator_is_never_replayed_in_sh(hook: Hook, tmp_path: Path) -> None:
    # Its identity is the binaries it execs (files.script_targets), which sh cannot follow.
    shared = Path(f"/var/tmp/txmtest-shw-{tmp_path.name[-8:]}")
    shared.mkdir(mode=0o755)
    try:
        emulator, _ = counting_emulator(shared)
        xml = live("vm", 1, emulator=str(emulator))
        assert hook.run("vm", xml)[0] == 0
        assert hook.entries() == []
        assert hook.run("vm", xml)[2] is True
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("tamper", ["entry-mode", "dir-mode", "policy-dir", "syntax", "symlink"])
def test_anything_unusual_goes_to_python(hook: Hook, tmp_path: Path, tamper: str) -> None:
    xml = live("db-notimer", 1, "timer")
    first = hook.run("db-notimer", xml)
    (entry,) = hook.entries()
    if tamper == "entry-mode":
        os.chmod(entry, 0o644)
    elif tamper == "dir-mode":
        os.chmod(entry.parent, 0o755)
    elif tamper == "policy-dir":
        os.chmod(hook.installed.policy.parent, 0o775)
    elif tamper == "syntax":
        entry.write_text(entry.read_text().replace("code=1", "code=0\nif then"))
    else:
        forged = tmp_path / "forged"
        forged.write_text(entry.read_text().replace("code=1", "code=0"))
        os.chmod(forged, 0o600)
        entry.unlink()
        entry.symlink_to(forged)
    code, stderr, python = hook.run("db-notimer", live("db-notimer", 2, "timer"))
    assert python is True
    assert code == 1
    if tamper != "policy-dir":
        assert stderr == first[1]  # Python decided, and decided the same
    else:
        assert "policy unusable" in stderr


def test_a_forged_entry_in_a_directory_others_could_write_is_not_believed(hook: Hook) -> None:
    xml = live("db-notimer", 1, "timer")
    hook.run("db-notimer", xml)
    (entry,) = hook.entries()
    entry.write_text(entry.read_text().replace("code=1", "code=0"))
    os.chmod(entry.parent, 0o733)  # as if anybody could have put it there
    assert hook.run("db-notimer", live("db-notimer", 2, "timer"))[:1] == (1,)


def test_no_usable_log_sink_goes_to_python(hook: Hook, tmp_path: Path) -> None:
    hook.run("web", live("web", 1))
    # No journald or syslog socket here, and a fallback file sh may not append to (a symlink,
    # as if planted): Python decides and logs wherever logsink.py can.
    planted = tmp_path / "planted.log"
    planted.touch(mode=0o600)
    link = tmp_path / "log-link"
    link.symlink_to(planted)
    text = hook.installed.path.read_text()
    hook.installed.path.write_text(re.sub(r"(?m)^LOG=.*$", f"LOG={link}", text))
    assert hook.run("web", live("web", 2)) == (0, "", True)
    assert planted.read_text() == ""


def test_an_input_beyond_the_bound_still_reaches_python(hook: Hook) -> None:
    hook.run("web", live("web", 1))
    head = live("web", 1).replace(b"</domain>", b"")
    big = head + b"<!--" + b"x" * (64 * 1024 * 1024) + b"--></domain>\n"
    code, stderr, python = hook.run("web", big)
    assert (code, python) == (1, True)
    assert "refusing to start domain 'web'" in stderr


def test_entries_name_each_file_they_rest_on(hook: Hook) -> None:
    hook.run("web", live("web", 1))
    (entry,) = hook.entries()
    text = entry.read_text()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    named = text.splitlines()[0].removeprefix("# ").split(" ")
    assert named[0] == str(hook.installed.policy)
    assert named[1] == hook.installed.layout.snapshot
    assert named[2].endswith("libvirt_txmode/__init__.py")
    assert QEMU in named


class JournalSink:
    """journald's native socket, bound here when no journald runs (these machines have none):
    what the hook sends with logger --journald (sd_journal_sendv) arrives as KEY=value lines."""

    PATH = Path(logsink.JOURNAL_SOCKET)

    def __init__(self) -> None:
        self.made: list[Path] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def __enter__(self) -> JournalSink:
        for parent in reversed(self.PATH.parents):
            if not parent.exists():
                parent.mkdir(mode=0o755)
                self.made.append(parent)
        self.sock.bind(str(self.PATH))
        self.sock.setblocking(False)
        return self

    def entries(self) -> list[dict[str, str]]:
        out = []
        while select.select([self.sock], [], [], 0.5)[0]:
            data = self.sock.recv(1 << 20).decode()
            out.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
        return out

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self.PATH.unlink(missing_ok=True)
        for made in reversed(self.made):
            made.rmdir()


@pytest.mark.skipif(
    os.path.exists(logsink.JOURNAL_SOCKET), reason="a real journald owns the socket here"
)
def test_journald_gets_the_same_fields_from_sh_as_from_python(hook: Hook) -> None:
    name = f"db-notimer-{uuid.uuid4().hex[:8]}"  # whatever else logs meanwhile comes here too
    with JournalSink() as journal:
        first = hook.run(name, live(name, 1, "timer"))
        from_python = [e for e in journal.entries() if e.get("DOMAIN") == name]
        again = hook.run(name, live(name, 2, "timer"))
        from_sh = [e for e in journal.entries() if e.get("DOMAIN") == name]
    assert first[2] is True and again == (1, first[1], False)
    assert len(from_sh) == len(from_python) == 2
    for python_entry, sh_entry in zip(from_python, from_sh):
        assert sh_entry.pop("SYSLOG_PID") != python_entry.pop("SYSLOG_PID")
        assert sh_entry == python_entry
    assert from_sh[0]["DECISION"] == "denied" and from_sh[0]["NIC_MAC"] == "52:54:00:00:00:01"


def test_the_log_time_stamp_is_computed_like_logsinks() -> None:
    # hooks/qemu dates a log line in shell arithmetic (no date(1) process): every day boundary,
    # leap day and century rule that matters here, against Python's gmtime.
    function = _hook_part("utc() {", "\n}\n") + "\n}\n"
    stamps = [0, 86399, 86400, 951782399, 951782400, 1709251199, 1709251200, 4107542399]
    stamps += list(range(1_700_000_000, 1_700_000_000 + 400 * 86400 * 4, 86400 * 4 + 3607))
    program = function + "".join(
        f"utc {t}; printf '%04d-%02d-%02dT%02d:%02d:%02dZ\\n' $year $month $day $hour $minute "
        "$second\n"
        for t in stamps
    )
    done = subprocess.run(["dash", "-c", program], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in stamps
    ]


def test_a_fifo_in_place_of_an_entry_never_hangs_the_hook(hook: Hook) -> None:
    # Only root can write there; still, a FIFO must not block the read of the entry's first line.
    hook.run("web", live("web", 1))
    (entry,) = hook.entries()
    entry.unlink()
    os.mkfifo(entry, 0o600)
    result = hook.installed.run("web", "prepare", "begin", "-", stdin=live("web", 2), timeout=30)
    assert (result.returncode, result.stderr) == (0, "")


def test_doctor_counts_the_decisions_replayed_without_python(hook: Hook) -> None:
    hook.run("web", live("web", 1))
    layout = hook.installed.layout
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "libvirt-txmode"), "doctor",
            "--hooks-dir", layout.hooks_dir, "--config-dir", layout.config_dir,
            "--state-dir", layout.state_dir, "--cache-dir", layout.cache_dir,
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    (line,) = [line for line in done.stdout.splitlines() if "trusted," in line]
    # The web domain's, and the self-test doctor runs before it looks at the cache.
    assert len(hook.entries()) == 2
    assert line.endswith(", 2 decisions replayed without Python")


def test_an_entry_cut_short_is_not_used(hook: Hook) -> None:
    # Written without fsync: after a crash an entry may end early, at any line.
    hook.run("web", live("web", 1))
    (entry,) = hook.entries()
    lines = entry.read_text().splitlines(keepends=True)
    assert lines[-1] == "format=1\n"
    entry.write_text("".join(lines[:-1]))
    assert hook.run("web", live("web", 2)) == (0, "", True)
