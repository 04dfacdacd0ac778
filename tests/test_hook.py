"""The hook protocol, run as libvirt runs it (installed sh wrapper, libvirt's environment, XML on
stdin) but without a daemon, so every outcome can be asserted exactly. The real-daemon side is in
test_e2e_libvirt.py."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_txmode.common.files import MAX_XML_BYTES
from libvirt_txmode.hook import gate, verdict
from libvirt_txmode.hook import protocol as hook_module
from tests import libvirt_env as env
from tests.hookrun import (
    POLICY,
    InstalledHook,
    domain,
    hook_env,
    make_hook,
    nic,
    run_hook,
    shared_dir,
)

__all__ = ["shared_dir"]  # a fixture, imported for pytest

NOOP_EVENTS = [
    ("start", "begin"),
    ("started", "begin"),
    ("stopped", "end"),
    ("release", "end"),
    ("reconnect", "begin"),
    ("migrate", "begin"),
    ("restore", "begin"),
    ("attach", "begin"),
    ("prepare", "end"),
    ("frobnicate", "begin"),
]


@pytest.fixture
def hook(tmp_path: Path) -> InstalledHook:
    return make_hook(tmp_path)


@pytest.fixture
def syslog() -> Iterator[env.SyslogSink]:
    with env.SyslogSink() as sink:
        yield sink


@pytest.mark.parametrize(("op", "sub"), NOOP_EVENTS)
def test_other_events_exit_0_without_touching_stdin(hook: InstalledHook, op: str, sub: str) -> None:
    # stdin=None: a pipe nobody writes or closes. Reading it would hang; the wrapper must not.
    result = hook.run("vm1", op, sub, "-", stdin=None, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "argv",
    [[], ["vm1"], ["vm1", "prepare"], ["--bogus"], ["vm1", "reconnect"], ["", "", "", ""]],
    ids=["none", "one", "two", "option", "reconnect-short", "empty-strings"],
)
def test_missing_or_odd_argv_is_a_noop(hook: InstalledHook, argv: list[str]) -> None:
    result = hook.run(*argv, stdin=None, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(("op", "sub"), NOOP_EVENTS[:5])
def test_python_module_run_directly_is_a_noop_too(op: str, sub: str) -> None:
    import sys

    argv = [sys.executable, "-I", "-m", "libvirt_txmode.hook.protocol", "--", "vm1", op, sub, "-"]
    result = run_hook(argv, stdin=None, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_compliant_domain_is_allowed_and_logged(
    hook: InstalledHook, syslog: env.SyslogSink
) -> None:
    xml = domain("web1", nic("52:54:00:00:00:01", "iothread"), nic("52:54:00:00:00:02", "timer"))
    result = hook.run("web1", "prepare", "begin", "-", stdin=xml)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert any("allowed domain 'web1'" in line for line in syslog.lines())


def test_violation_is_refused_with_one_line_per_nic(
    hook: InstalledHook, syslog: env.SyslogSink
) -> None:
    xml = domain(
        "db-notimer",
        nic("52:54:00:00:00:01", "iothread"),
        nic("52:54:00:00:00:02", "timer"),
        nic("52:54:00:00:00:03", "timer", model="virtio-transitional"),
    )
    result = hook.run("db-notimer", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "libvirt-txmode: domain 'db-notimer' NIC #1 (52:54:00:00:00:02): txmode 'timer' is not "
        "allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed]",
        "libvirt-txmode: domain 'db-notimer' NIC #2 (52:54:00:00:00:03): txmode 'timer' is not "
        "allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed]",
        f"libvirt-txmode: refusing to start domain 'db-notimer': 2 violations of {hook.policy}",
    ]
    logged = syslog.lines()
    assert sum("denied: domain 'db-notimer' NIC #" in line for line in logged) == 2
    assert any("refused to start domain 'db-notimer' (2 violations)" in line for line in logged)


def test_single_violation_is_logged_in_the_singular(
    hook: InstalledHook, syslog: env.SyslogSink
) -> None:
    result = hook.run(
        "x-notimer",
        "prepare",
        "begin",
        "-",
        stdin=domain("x-notimer", nic("52:54:00:00:00:02", "timer")),
    )
    assert result.stderr.endswith("1 violation of " + str(hook.policy) + "\n")
    assert any(
        "refused to start domain 'x-notimer' (1 violation)" in line for line in syslog.lines()
    )


def test_unsupported_transport_is_refused(hook: InstalledHook) -> None:
    # libvirt itself refuses a ccw address on x86 at define time, so only the hook-level protocol
    # is shown here; the probe answer comes from the real qemu-system-x86_64.
    ccw = "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>"
    xml = domain("edge", nic("52:54:00:00:00:09", "iothread", extra=ccw))
    result = hook.run("edge", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "libvirt-txmode: domain 'edge' NIC #0 (52:54:00:00:00:09): txmode 'iothread' needs the 'tx' "
        "property of virtio-net-ccw, which /usr/bin/qemu-system-x86_64 does not have (this QEMU has "
        "no device virtio-net-ccw) [txmode-unsupported, rule 'defaults']"
    )


def test_audit_mode_starts_and_logs_the_violation(tmp_path: Path, syslog: env.SyslogSink) -> None:
    hook = make_hook(tmp_path, POLICY.replace("action: enforce", "action: audit"))
    xml = domain("db-notimer", nic("52:54:00:00:00:02", "timer"))
    result = hook.run("db-notimer", "prepare", "begin", "-", stdin=xml)
    # libvirt drops stderr on exit 0, so the warning must be in syslog, not (only) on stderr.
    assert (result.returncode, result.stderr) == (0, "")
    logged = syslog.lines()
    assert any(
        "warning: domain 'db-notimer' NIC #0 (52:54:00:00:00:02): txmode 'timer' is not allowed"
        in line
        for line in logged
    )
    assert any("allowed domain 'db-notimer' with 1 warning" in line for line in logged)


@pytest.mark.parametrize(
    ("stdin", "reason"),
    [
        (b"", "empty document"),
        (b"<domain><name>x</name>", "not well-formed XML"),
        (b"<network><name>x</name></network>", "root element is <network>, expected <domain>"),
        (b"\xff\xfe\x00garbage", "not well-formed XML"),
    ],
    ids=["closed-stdin", "truncated", "not-a-domain", "binary"],
)
def test_bad_xml_follows_on_error(
    tmp_path: Path, stdin: bytes, reason: str, syslog: env.SyslogSink
) -> None:
    deny = make_hook(tmp_path / "deny")
    result = deny.run("vm1", "prepare", "begin", "-", stdin=stdin)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "libvirt-txmode: refusing to start domain 'vm1': cannot read the domain XML from libvirt: "
    )
    assert reason in result.stderr
    assert result.stderr.rstrip().endswith("(on_error: deny)")
    assert "Traceback" not in result.stderr

    allow = make_hook(tmp_path / "allow", POLICY.replace("on_error: deny", "on_error: allow"))
    result = allow.run("vm1", "prepare", "begin", "-", stdin=stdin)
    assert (result.returncode, result.stderr) == (0, "")
    assert any(
        "allowing domain 'vm1' despite an error (on_error: allow)" in x for x in syslog.lines()
    )


def test_broken_policy_fails_closed_naming_file_line_key(hook: InstalledHook) -> None:
    hook.policy.write_text(POLICY.replace("on_unknown", "on_unknwon"))
    result = hook.run("vm1", "prepare", "begin", "-", stdin=domain("vm1", nic("52:54:00:00:00:01")))
    assert result.returncode == 1
    assert result.stderr == (
        f"libvirt-txmode: refusing to start domain 'vm1': policy unusable: {hook.policy}:3: "
        "on_unknwon: unknown key (expected one of: version, action, on_unknown, on_error, "
        "passthrough, emulators, probe_timeout, defaults, rules, exceptions)\n"
    )


def test_missing_policy_fails_closed(hook: InstalledHook) -> None:
    hook.policy.unlink()
    result = hook.run("vm1", "prepare", "begin", "-", stdin=domain("vm1", nic("52:54:00:00:00:01")))
    assert result.returncode == 1
    assert result.stderr.startswith(
        "libvirt-txmode: refusing to start domain 'vm1': policy unusable: "
    )
    assert str(hook.policy) in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership rules apply when the hook runs as root")
@pytest.mark.parametrize("weaken", ["chmod-o+w", "chmod-g+w", "chown"])
def test_policy_others_could_edit_is_refused(hook: InstalledHook, weaken: str) -> None:
    # Anyone who can write the policy could switch the gate off: the root hook must not trust it.
    if weaken == "chmod-o+w":
        os.chmod(hook.policy, 0o646)
    elif weaken == "chmod-g+w":
        os.chmod(hook.policy, 0o664)
    else:
        os.chown(hook.policy, 65534, 65534)
    result = hook.run(
        "vm1", "prepare", "begin", "-", stdin=domain("vm1", nic("52:54:00:00:00:01", "timer"))
    )
    assert result.returncode == 1
    assert "policy unusable" in result.stderr
    assert str(hook.policy) in result.stderr


def test_hook_never_writes_stdout(hook: InstalledHook) -> None:
    # For migrate/restore libvirt treats a hook's stdout as replacement XML.
    for xml in (domain("ok", nic("52:54:00:00:00:01", "iothread")), b"<broken"):
        assert hook.run("vm1", "prepare", "begin", "-", stdin=xml).stdout == ""


def test_internal_error_fails_closed_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syslog: env.SyslogSink
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine fell over")

    # The full check calls the engine through the name gate.py imported.
    monkeypatch.setattr("libvirt_txmode.hook.gate.check_domain", explode)
    err = io.StringIO()
    code = hook_module.main(
        [
            "--policy",
            str(policy),
            "--snapshot",
            "",
            "--cache-dir",
            str(tmp_path / "c"),
            "--",
            "vm1",
            "prepare",
            "begin",
            "-",
        ],
        stdin=io.BytesIO(domain("vm1", nic("52:54:00:00:00:01", "iothread"))),
        stderr=err,
    )
    assert code == 1
    assert err.getvalue() == (
        "libvirt-txmode: internal error checking domain 'vm1': RuntimeError: engine fell over "
        "(details in syslog); refusing to start (fail closed)\n"
    )
    assert any("Traceback" in line and "engine fell over" in line for line in syslog.lines())


def test_control_characters_cannot_forge_lines(hook: InstalledHook) -> None:
    mac = "52:54:00:00:00:01&#10;libvirt-txmode: allowed"
    xml = domain("evil&#10;name", nic(mac, "bogus"))
    result = hook.run("evil", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "libvirt-txmode: domain 'evil\\x0aname' NIC #0 (52:54:00:00:00:01\\x0alibvirt"
    )


def test_external_entity_file_is_never_opened(hook: InstalledHook, tmp_path: Path) -> None:
    # The entity points at a FIFO: a writer blocked on it is released only if somebody opens the
    # read end, which is exactly what a resolving parser would do.
    import threading

    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        with open(fifo, "w") as handle:
            opened.set()
            handle.write("TOPSECRET")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    xml = (
        f'<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY s SYSTEM "file://{fifo}">]>\n'
        "<domain type='qemu'><name>&s;</name><devices/></domain>\n"
    ).encode()
    result = hook.run("vm1", "prepare", "begin", "-", stdin=xml)
    was_opened = opened.is_set()
    with open(fifo) as release:  # unblock our writer thread whatever happened
        release.read()
    thread.join(5)
    assert not was_opened
    assert result.returncode == 1
    assert "TOPSECRET" not in result.stderr
    assert "DOCTYPE is not allowed" in result.stderr or "not well-formed" in result.stderr


def test_200_mb_on_stdin_is_refused_in_bounded_memory(hook: InstalledHook) -> None:
    head = b"<domain type='qemu'><name>big</name><description>"
    filler = b"x" * (1024 * 1024)
    xml = itertools.chain([head], itertools.repeat(filler, 200), [b"</description></domain>"])
    # Under a 128 MiB data-segment limit (Python, lxml and the 64 MiB bound fit; the whole 200 MB
    # document, read and parsed, would not) the hook must still answer cleanly, and refuse
    # although a domain this large is no hook failure that on_error could excuse.
    result = hook.run("big", "prepare", "begin", "-", stdin=xml, timeout=120, data_limit=128 << 20)
    assert result.returncode == 1
    assert result.stderr == (
        "libvirt-txmode: refusing to start domain 'big': cannot read the domain XML from libvirt: "
        f"input is larger than {MAX_XML_BYTES} bytes (refused whatever on_error says: it cannot "
        "be checked)\n"
    )


def padded(name: str, txmode: str, metadata_bytes: int) -> bytes:
    """A domain padded as setMetadata pads it: one namespaced element per 3 MB call (libvirt
    sends at most VIR_NET_MESSAGE_STRING_MAX = 4 MiB per call, but keeps any number of them)."""
    xml = domain(name, nic("52:54:00:00:00:01", txmode))
    calls = []
    for i, start in enumerate(range(0, metadata_bytes, 3_000_000)):
        size = min(3_000_000, metadata_bytes - start)
        calls.append(f"<p{i}:pad xmlns:p{i}='http://example.org/pad{i}'>{'x' * size}</p{i}:pad>")
    return xml.replace(b"<devices>", f"<metadata>{''.join(calls)}</metadata>\n  <devices>".encode())


@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_12_mb_of_metadata_is_checked_not_refused_as_large(tmp_path: Path, on_error: str) -> None:
    hook = make_hook(tmp_path, POLICY.replace("on_error: deny", f"on_error: {on_error}"))
    ok = padded("big-ok", "iothread", 12_000_000)
    bad = padded("big-notimer", "timer", 12_000_000)
    assert len(ok) > 12_000_000
    assert hook.run("big-ok", "prepare", "begin", "-", stdin=ok).returncode == 0
    refused = hook.run("big-notimer", "prepare", "begin", "-", stdin=bad)
    assert refused.returncode == 1  # checked, and refused for its txmode, whatever on_error says
    assert "[txmode-not-allowed" in refused.stderr


@pytest.mark.parametrize(
    "shape",
    ["over-64-MiB", "text-node-over-10-MB", "257-levels"],
)
def test_input_beyond_the_bounds_is_refused_even_with_on_error_allow(
    tmp_path: Path, shape: str
) -> None:
    """on_error: allow excuses the hook failing, never a domain being large or deep: a timer
    domain padded past a bound must not start under a policy that forbids timer."""
    hook = make_hook(tmp_path, POLICY.replace("on_error: deny", "on_error: allow"))
    base = domain("x-notimer", nic("52:54:00:00:00:01", "timer"))
    if shape == "over-64-MiB":
        xml = padded("x-notimer", "timer", MAX_XML_BYTES)
        reason = f"input is larger than {MAX_XML_BYTES} bytes"
    elif shape == "text-node-over-10-MB":
        # libxml2's limit without XML_PARSE_HUGE, which libvirt does not set either.
        xml = base.replace(
            b"<devices>", b"<description>" + b"x" * 10_000_001 + b"</description><devices>"
        )
        reason = "Text node too long"
    else:
        deep = (
            b"<a>" * 256 + b"</a>" * 256
        )  # with <domain><metadata>: 258 levels, libxml2 takes 256
        xml = base.replace(b"<devices>", b"<metadata>" + deep + b"</metadata><devices>")
        reason = "Excessive depth in document"
    result = hook.run("x-notimer", "prepare", "begin", "-", stdin=xml, timeout=120)
    assert result.returncode == 1
    assert reason in result.stderr
    assert "(refused whatever on_error says: it cannot be checked)" in result.stderr


def many_nics(name: str, count: int, txmode: str) -> bytes:
    nics = [
        nic(f"52:54:00:{i // 65536:02x}:{(i // 256) % 256:02x}:{i % 256:02x}", txmode)
        for i in range(count)
    ]
    return domain(name, *nics, emulator="/usr/bin/qemu-system-x86_64")


def test_5000_nics_are_decided_and_a_huge_refusal_is_not_cached(tmp_path: Path) -> None:
    """A layout libvirt accepts. The refusal logs every NIC (~1 MB of syslog lines as a verdict
    entry): more than verdict.MAX_ENTRY_BYTES, so it is not stored (it could not be read back)
    and every start checks it again, with the same answer. Its stderr, which libvirt quotes
    whole to the user, names the first gate.MAX_STDERR_VIOLATIONS and counts the rest."""
    hook = make_hook(tmp_path)
    ok = many_nics("big", 5000, "iothread")
    assert hook.run("big", "prepare", "begin", "-", stdin=ok, timeout=300).returncode == 0
    bad = many_nics("big-notimer", 5000, "timer")
    first = hook.run("big-notimer", "prepare", "begin", "-", stdin=bad, timeout=300)
    second = hook.run("big-notimer", "prepare", "begin", "-", stdin=bad, timeout=300)
    assert first.returncode == second.returncode == 1
    assert first.stderr == second.stderr
    assert first.stderr.count("[txmode-not-allowed") == gate.MAX_STDERR_VIOLATIONS == 20
    assert "NIC #19 (52:54:00:00:00:13)" in first.stderr
    assert "NIC #20 " not in first.stderr
    assert f"... and {5000 - 20} more violations (every one is logged as 'denied: ...'" in (
        first.stderr
    )
    assert "refusing to start domain 'big-notimer': 5000 violations of" in first.stderr
    entries = list(Path(hook.layout.cache_dir).glob("verdict-*.txt"))
    assert len(entries) == 1  # the allowed domain's; the refusal is not kept
    assert entries[0].stat().st_size <= verdict.MAX_ENTRY_BYTES


_COUNT_CALLS = """
import cProfile, io, pstats, sys
from libvirt_txmode.hook import protocol as hook
xml = sys.stdin.buffer.read()
profile = cProfile.Profile()
profile.enable()
hook.main(sys.argv[1:], stdin=io.BytesIO(xml), stderr=io.StringIO())
profile.disable()
print(pstats.Stats(profile).total_calls)
"""


def _calls(hook: InstalledHook, cache: Path, xml: bytes) -> int:
    argv = ["--policy", str(hook.policy), "--snapshot", hook.layout.snapshot]
    argv += ["--cache-dir", str(cache), "--", "vm-notimer", "prepare", "begin", "-"]
    done = subprocess.run(
        [sys.executable, "-I", "-c", _COUNT_CALLS, *argv],
        input=xml,
        capture_output=True,
        check=True,
    )
    return int(done.stdout)


def test_cost_is_linear_in_nics(tmp_path: Path) -> None:
    """Python function calls of one cold `prepare begin` (cProfile, not a clock): ten times the
    NICs must cost about ten times the calls. (One hash of the whole frozen Domain per NIC, as
    local.needed_devices once did, made it quadratic: 13 s for 5,000 NICs.)"""
    hook = make_hook(tmp_path)
    small = _calls(hook, tmp_path / "c1", many_nics("vm-notimer", 500, "timer"))
    large = _calls(hook, tmp_path / "c2", many_nics("vm-notimer", 5000, "timer"))
    assert large < 12 * small, (small, large)


def test_stderr_closed_changes_no_decision(hook: InstalledHook, syslog: env.SyslogSink) -> None:
    # libvirt always passes a pipe, but a hook must not depend on it: without fd 2 Python has no
    # sys.stderr, and writing or flushing it must not turn an allow into a failure.
    allowed = domain("web1", nic("52:54:00:00:00:01", "iothread"))
    refused = domain("db-notimer", nic("52:54:00:00:00:01", "timer"))
    for name, xml, code in (("web1", allowed, 0), ("db-notimer", refused, 1)):
        for _ in range(2):  # the full check, then the cached decision
            done = subprocess.run(
                ["/bin/sh", "-c", 'exec "$0" "$@" 2>&-', str(hook.path), name, "prepare", "begin"],
                input=xml,
                capture_output=True,
                env=hook_env(),
                timeout=120,
                check=False,
            )
            assert (done.returncode, done.stdout, done.stderr) == (code, b"", b""), name
    assert any("allowed domain 'web1'" in line for line in syslog.lines())


X86 = "/usr/bin/qemu-system-x86_64"  # named: a decision is kept only for a named emulator
EXCEPTED = (
    "exceptions:\n"
    "  - match: {domain: legacy-notimer, mac: '52:54:00:00:00:02'}\n"
    "    reason: vendor appliance (OPS-42)\n"
)


def test_an_exception_lets_its_nic_through_and_is_logged(
    tmp_path: Path, syslog: env.SyslogSink
) -> None:
    """The installed hook: the silenced NIC starts, logged with the exception's reason; the
    other NIC of the same domain is still refused; a decision without an end date is cached."""
    hook = make_hook(tmp_path, POLICY + EXCEPTED)
    ok = domain("legacy-notimer", nic("52:54:00:00:00:02", "timer"), emulator=X86)
    result = hook.run("legacy-notimer", "prepare", "begin", "-", stdin=ok)
    assert (result.returncode, result.stderr) == (0, "")
    assert any(
        "excepted: domain 'legacy-notimer' NIC #0 (52:54:00:00:00:02): txmode 'timer' is not "
        "allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed] (silenced by "
        "exception #0: vendor appliance (OPS-42))" in line
        for line in syslog.lines()
    )
    # An exception without an end changes with the policy file only: the decision is kept.
    assert len(list(Path(hook.layout.cache_dir).glob("verdict-*.txt"))) == 1
    both = domain(
        "legacy-notimer",
        nic("52:54:00:00:00:02", "timer"),
        nic("52:54:00:00:00:03", "timer"),
        emulator=X86,
    )
    result = hook.run("legacy-notimer", "prepare", "begin", "-", stdin=both)
    assert result.returncode == 1
    assert "NIC #1 (52:54:00:00:00:03)" in result.stderr
    assert "NIC #0" not in result.stderr


def test_an_exception_with_an_end_is_never_replayed_from_the_cache(
    tmp_path: Path, syslog: env.SyslogSink
) -> None:
    hook = make_hook(tmp_path, POLICY + EXCEPTED + "    expires: 2999-12-31\n")
    xml = domain("legacy-notimer", nic("52:54:00:00:00:02", "timer"), emulator=X86)
    assert hook.run("legacy-notimer", "prepare", "begin", "-", stdin=xml).returncode == 0
    # Replayed after its last day, the decision would let the NIC through for ever.
    assert list(Path(hook.layout.cache_dir).glob("verdict-*.txt")) == []


def test_an_expired_exception_refuses_and_says_why(tmp_path: Path) -> None:
    hook = make_hook(tmp_path, POLICY + EXCEPTED + "    expires: 2001-01-31\n")
    xml = domain("legacy-notimer", nic("52:54:00:00:00:02", "timer"), emulator=X86)
    result = hook.run("legacy-notimer", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "libvirt-txmode: domain 'legacy-notimer' NIC #0 (52:54:00:00:00:02): txmode 'timer' is "
        "not allowed by rule 'no-timer' (allowed: iothread) [txmode-not-allowed]"
    )
