"""Where the hook's decisions go: journald (native protocol), syslog, or the fallback file.

There is no systemd on the build machines: journald is played by a datagram socket bound in a
temporary directory, which receives exactly what journald would (the native protocol is a plain
datagram of KEY=value lines); syslog likewise. The hook itself is run in-process with the module's
socket paths pointed at those, and through the installed wrapper for the fallback file.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import syslog
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode import __version__
from libvirt_txmode.common import logsink
from libvirt_txmode.common.text import printable
from libvirt_txmode.engine import policy as policy_module
from libvirt_txmode.hook import gate
from libvirt_txmode.hook import protocol as hook
from tests import libvirt_env as env

REPO = Path(__file__).resolve().parent.parent


class FakeSocket:
    """A datagram socket that collects what is sent to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(1 << 20))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


def journal_fields(datagram: bytes) -> dict[str, str]:
    """Decode the native journal protocol (both the KEY=value and the binary length form)."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            size = int.from_bytes(after[:8], "little")
            fields[line.decode()] = after[8 : 8 + size].decode()
            rest = after[8 + size + 1 :]
    return fields


@pytest.fixture
def targets(tmp_path: Path) -> logsink.Targets:
    return logsink.Targets(
        journal=str(tmp_path / "journal.sock"),
        syslog=str(tmp_path / "log.sock"),
        fallback=str(tmp_path / "libvirt-txmode.log"),
    )


@pytest.fixture
def journal(targets: logsink.Targets) -> Iterator[FakeSocket]:
    fake = FakeSocket(Path(targets.journal))
    yield fake
    fake.close()


def test_journald_gets_structured_fields(targets: logsink.Targets, journal: FakeSocket) -> None:
    fields = {
        "DOMAIN": "db-02",
        "NIC_MAC": "52:54:00:7e:00:02",
        "TXMODE": "timer",
        "CODE": "txmode-not-allowed",
        "RULE": "no-timer",
        "DECISION": "denied",
        "MESSAGE_ID": logsink.MESSAGE_IDS[logsink.DENIED],
        "POLICY": "/etc/libvirt-txmode/policy.yaml",
        "POLICY_SHA256": "0" * 64,
        "VERSION": "1.2.3",
    }
    message = "denied: domain 'db-02' NIC #0 (52:54:00:7e:00:02): ... [txmode-not-allowed]"
    assert logsink.log(syslog.LOG_ERR, message, fields, targets=targets) == "journald"
    (datagram,) = journal.received()
    sent = fields
    fields = journal_fields(datagram)
    assert fields["MESSAGE"].startswith("denied: domain 'db-02' NIC #0")
    assert {k: fields[k] for k in logsink.FIELDS} == sent
    assert fields["PRIORITY"] == str(syslog.LOG_ERR)
    assert fields["SYSLOG_IDENTIFIER"] == "libvirt-txmode"
    assert fields["SYSLOG_PID"] == str(os.getpid())


def test_multiline_values_use_the_binary_form(
    targets: logsink.Targets, journal: FakeSocket
) -> None:
    logsink.log(syslog.LOG_ERR, "traceback:\n  line 1\n  line 2", {}, targets=targets)
    (datagram,) = journal.received()
    assert journal_fields(datagram)["MESSAGE"] == "traceback:\n  line 1\n  line 2"


def test_syslog_when_there_is_no_journald(tmp_path: Path, targets: logsink.Targets) -> None:
    fake = FakeSocket(Path(targets.syslog))
    try:
        assert (
            logsink.log(syslog.LOG_INFO, "allowed domain 'web-01'", {}, targets=targets) == "syslog"
        )
        (datagram,) = fake.received()
    finally:
        fake.close()
    text = datagram.decode()
    assert text.startswith(f"<{3 * 8 + syslog.LOG_INFO}>")  # facility daemon
    assert text.endswith(f" libvirt-txmode[{os.getpid()}]: allowed domain 'web-01'")
    assert not os.path.exists(targets.fallback)


def test_fallback_file_when_neither_socket_listens(targets: logsink.Targets) -> None:
    # A socket file nobody listens on any more (a stopped journald) counts as absent.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(targets.journal)
    stale.close()
    message = "refused to start domain 'db-02' (1 violation)"
    fields = {"DOMAIN": "db-02", "DECISION": "refused"}
    assert logsink.log(syslog.LOG_ERR, message, fields, targets=targets) == "file"
    assert logsink.log(syslog.LOG_INFO, "allowed domain 'x'", targets=targets) == "file"
    info = os.stat(targets.fallback)
    assert stat.S_IMODE(info.st_mode) == 0o600  # names and MACs are private, like domain XML
    lines = Path(targets.fallback).read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        'refused to start domain \'db-02\' (1 violation) DECISION="refused" DOMAIN="db-02"'
    )
    assert f"libvirt-txmode[{os.getpid()}] <{syslog.LOG_ERR}>:" in lines[0]
    assert logsink.destination(targets)[1] is None
    assert logsink.recent_decisions(5, targets) == lines


def test_fallback_file_is_never_a_symlink_or_a_fifo(
    tmp_path: Path, targets: logsink.Targets
) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    os.symlink(victim, targets.fallback)
    assert logsink.log(syslog.LOG_INFO, "x", {}, targets=targets) == "lost"
    assert victim.read_text() == "root:x:0:0\n"
    os.unlink(targets.fallback)
    os.mkfifo(targets.fallback)
    assert logsink.log(syslog.LOG_INFO, "x", {}, targets=targets) == "lost"  # and no hang
    assert logsink.destination(targets)[1] == f"{targets.fallback} is not a regular file"


def test_fields_cannot_be_forged_through_a_domain_name(
    targets: logsink.Targets, journal: FakeSocket
) -> None:
    name = 'evil\x1e{"DECISION": "allowed"}\x1e\nDECISION=allowed'
    message = f"refused to start domain '{name}'"
    # As the hook logs: its messages through printable, the fields escaped by log itself.
    logsink.log(
        syslog.LOG_ERR, printable(message), {"DOMAIN": name, "DECISION": "refused"}, targets=targets
    )
    fields = journal_fields(journal.received()[0])
    assert fields["DECISION"] == "refused"
    assert "\n" not in fields["MESSAGE"] and "\n" not in fields["DOMAIN"]


POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
rules:
  - name: no-timer-here
    match: {domain: "db-*"}
    allowed: [iothread]
"""
DOMAIN = b"""<domain type='qemu'><name>db-02</name><memory>1</memory>
<os><type arch='x86_64'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<interface type='user'><mac address='52:54:00:7e:00:02'/><model type='virtio'/>
<driver txmode='timer'/></interface></devices></domain>"""


def test_the_hook_logs_its_refusal_with_fields_also_when_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, targets: logsink.Targets, journal: FakeSocket
) -> None:
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", targets.journal)
    monkeypatch.setattr(logsink, "SYSLOG_SOCKET", targets.syslog)
    monkeypatch.setattr(logsink, "FALLBACK_FILE", targets.fallback)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    argv = [
        "--policy", str(policy),
        "--snapshot", str(tmp_path / "none.json"),
        "--cache-dir", str(tmp_path / "cache"),
        "--", "db-02", "prepare", "begin", "-",
    ]  # fmt: skip
    for _ in range(2):  # the second start replays the cached verdict
        err = io.StringIO()
        assert hook.main(argv, io.BytesIO(DOMAIN), err) == 1
        sent = [journal_fields(d) for d in journal.received()]
        denied = [f for f in sent if f.get("DECISION") == "denied"]
        assert len(denied) == 1, sent
        assert {k: denied[0].get(k) for k in logsink.FIELDS} == {
            "DOMAIN": "db-02",
            "NIC_MAC": "52:54:00:7e:00:02",
            "TXMODE": "timer",
            "CODE": "txmode-not-allowed",
            "RULE": "no-timer-here",
            "DECISION": "denied",
            "MESSAGE_ID": logsink.MESSAGE_IDS[logsink.DENIED],
            "POLICY": str(policy),
            "POLICY_SHA256": hashlib.sha256(POLICY.encode()).hexdigest(),
            "VERSION": __version__,
        }
        refused = [f for f in sent if f.get("DECISION") == "refused"]
        assert refused and refused[0]["MESSAGE"] == "refused to start domain 'db-02' (1 violation)"
        assert refused[0]["MESSAGE_ID"] == logsink.MESSAGE_IDS[logsink.DENIED]
    assert any(p.name.startswith("verdict-") for p in (tmp_path / "cache").iterdir())


def test_message_ids_are_fixed_distinct_128_bit_and_explained_by_the_catalog(
    tmp_path: Path,
) -> None:
    ids = list(logsink.MESSAGE_IDS.values())
    assert set(logsink.MESSAGE_IDS) == set(logsink.OUTCOMES)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    # journald's own compiler reads the catalog the package ships, as its trigger does on a host.
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        env.skip_unless_ci("journalctl missing (Debian: the systemd package)")
    assert journalctl is not None
    catalog = tmp_path / "usr/lib/systemd/catalog"
    catalog.mkdir(parents=True)
    (tmp_path / "var/lib/systemd").mkdir(parents=True)
    shutil.copy(REPO / "debian" / "libvirt-txmode.catalog", catalog)
    run = [journalctl, f"--root={tmp_path}"]
    subprocess.run([*run, "--update-catalog"], check=True, capture_output=True, timeout=60)
    listed = subprocess.run(
        [*run, "--list-catalog"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert sorted(line.split()[0] for line in listed.splitlines()) == sorted(ids)
    for message_id in ids:
        entry = subprocess.run(
            [*run, "--dump-catalog", message_id],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "Subject: libvirt-txmode " in entry and "@DOMAIN@" in entry


@pytest.mark.parametrize(
    "case",
    [
        (POLICY, DOMAIN.replace(b"db-02", b"web-01"), logsink.ALLOWED, 0),
        (
            POLICY.replace("version: 1", "version: 1\naction: audit"),
            DOMAIN,
            logsink.AUDIT_WARNED,
            0,
        ),
        (POLICY, DOMAIN, logsink.DENIED, 1),
        ("version: 1\nnot_a_key: 1\n", DOMAIN, logsink.ERROR, 1),
        (POLICY, b"<domain", logsink.ERROR, 1),
    ],
)
def test_every_record_of_a_decision_carries_its_outcomes_message_id(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    targets: logsink.Targets,
    journal: FakeSocket,
    case: tuple[str, bytes, str, int],
) -> None:
    policy, xml, outcome, code = case
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", targets.journal)
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    argv = [
        "--policy", str(path),
        "--snapshot", str(tmp_path / "none.json"),
        "--cache-dir", str(tmp_path / "cache"),
        "--", "vm", "prepare", "begin", "-",
    ]  # fmt: skip
    assert hook.main(argv, io.BytesIO(xml), io.StringIO()) == code
    sent = [journal_fields(d) for d in journal.received()]
    decided = [f for f in sent if "MESSAGE_ID" in f]
    assert decided, sent
    assert {f["MESSAGE_ID"] for f in decided} == {logsink.MESSAGE_IDS[outcome]}
    assert all(f["VERSION"] == __version__ and f["POLICY"] == str(path) for f in decided)
    digest = hashlib.sha256(policy.encode()).hexdigest()
    assert all(f["POLICY_SHA256"] == digest for f in decided)


def test_policy_sha256_names_the_bytes_the_decision_was_made_against(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    targets: logsink.Targets,
    journal: FakeSocket,
) -> None:
    # The policy is edited while a check runs: the record names the policy that was checked,
    # not what the file holds afterwards; a later miss that reads the compiled copy (no YAML
    # parsed) names the same bytes.
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", targets.journal)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    checked = hashlib.sha256(POLICY.encode()).hexdigest()
    check_domain = gate.check_domain

    def edited_meanwhile(*args: object, **kwargs: object) -> object:
        found = check_domain(*args, **kwargs)  # type: ignore[arg-type]
        path.write_text(POLICY + "# edited\n")
        return found

    monkeypatch.setattr(gate, "check_domain", edited_meanwhile)

    def start(name: bytes) -> list[dict[str, str]]:
        argv = [
            "--policy", str(path),
            "--snapshot", str(tmp_path / "none.json"),
            "--cache-dir", str(tmp_path / "cache"),
            "--", name.decode(), "prepare", "begin", "-",
        ]  # fmt: skip
        assert hook.main(argv, io.BytesIO(DOMAIN.replace(b"db-02", name)), io.StringIO()) == 1
        sent = [journal_fields(d) for d in journal.received()]
        return [f for f in sent if "MESSAGE_ID" in f]

    assert {f["POLICY_SHA256"] for f in start(b"db-02")} == {checked}
    monkeypatch.setattr(gate, "check_domain", check_domain)
    path.write_text(POLICY)
    assert {f["POLICY_SHA256"] for f in start(b"db-03")} == {checked}  # compiled copy written

    def no_yaml(*args: object, **kwargs: object) -> None:
        raise AssertionError("the compiled copy was not read")

    monkeypatch.setattr(policy_module, "parse_policy", no_yaml)
    assert {f["POLICY_SHA256"] for f in start(b"db-04")} == {checked}


def test_the_environment_names_sockets_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What lets two test runs on one machine keep their lines apart: no /dev/log involved.
    own_syslog = FakeSocket(tmp_path / "syslog")
    monkeypatch.setenv(logsink.SYSLOG_SOCKET_VARIABLE, str(own_syslog.path))
    monkeypatch.setenv(logsink.JOURNAL_SOCKET_VARIABLE, str(tmp_path / "no-journal"))
    monkeypatch.setattr(logsink, "FALLBACK_FILE", str(tmp_path / "fallback.log"))
    assert logsink.log(syslog.LOG_INFO, "to the test's own socket") == "syslog"
    assert [b"to the test's own socket" in d for d in own_syslog.received()] == [True]
    own_journal = FakeSocket(tmp_path / "journal")
    monkeypatch.setenv(logsink.JOURNAL_SOCKET_VARIABLE, str(own_journal.path))
    assert logsink.log(syslog.LOG_INFO, "journald first") == "journald"
    (datagram,) = own_journal.received()
    assert journal_fields(datagram)["MESSAGE"] == "journald first"
    assert logsink.destination() == (f"journald ({own_journal.path})", None)
    own_syslog.close()
    own_journal.close()
    # Unset (or empty): the machine's sockets, as before.
    monkeypatch.delenv(logsink.SYSLOG_SOCKET_VARIABLE)
    monkeypatch.setenv(logsink.JOURNAL_SOCKET_VARIABLE, "")
    defaults = logsink.default_targets()
    assert (defaults.journal, defaults.syslog) == (logsink.JOURNAL_SOCKET, logsink.SYSLOG_SOCKET)
