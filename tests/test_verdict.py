"""The hook's verdict cache: replayed only while everything the decision rests on is unchanged."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_txmode.admin.hook_file import hook_settings
from libvirt_txmode.common import paths
from libvirt_txmode.hook import gate, verdict
from libvirt_txmode.host.emulator import identify
from tests import libvirt_env as env
from tests.hookrun import LIBVIRT_ENV, POLICY, InstalledHook, domain, make_hook, nic, shared_dir
from tests.test_faults import counting_emulator

__all__ = ["shared_dir"]

QEMU = "/usr/bin/qemu-system-x86_64"


def live_xml(name: str, run_id: int, txmode: str = "iothread", emulator: str = QEMU) -> bytes:
    """What libvirt passes to prepare begin: the root carries the run-time domain id."""
    xml = domain(name, nic("52:54:00:00:00:01", txmode), emulator=emulator)
    return xml.replace(b"<domain type='qemu'>", f"<domain type='qemu' id='{run_id}'>".encode(), 1)


def verdicts(hook: InstalledHook) -> list[Path]:
    return sorted(Path(hook.layout.cache_dir).glob("verdict-*.txt"))


def run_in_process(hook: InstalledHook, xml: bytes) -> tuple[int, str, bool]:
    """Run hook.main in a fresh interpreter; report whether lxml or yaml got imported."""
    code = (
        "import io, sys\n"
        "from libvirt_txmode.hook import protocol as hook\n"
        "err = io.StringIO()\n"
        f"rc = hook.main(['--policy', {str(hook.policy)!r}, '--snapshot', {hook.layout.snapshot!r},"
        f" '--cache-dir', {hook.layout.cache_dir!r}, '--', 'vm', 'prepare', 'begin', '-'],"
        " stdin=sys.stdin.buffer, stderr=err)\n"
        "sys.stdout.write(f\"{rc}|{err.getvalue()}|{'lxml' in sys.modules or 'yaml' in sys.modules}\")\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], input=xml, capture_output=True, check=True
    )
    rc, stderr, heavy = done.stdout.decode().split("|")
    return int(rc), stderr, heavy == "True"


def test_normalized_drops_only_the_root_run_time_id() -> None:
    a = b"<?xml version='1.0'?>\n<domain type='kvm' id='7'>\n<name>x</name><id>9</id></domain>"
    b = b"<?xml version='1.0'?>\n<domain type='kvm' id='12345'>\n<name>x</name><id>9</id></domain>"
    assert verdict.normalized(a) == verdict.normalized(b)
    assert (
        verdict.normalized(a)
        == b"<?xml version='1.0'?>\n<domain type='kvm'>\n<name>x</name><id>9</id></domain>"
    )
    assert verdict.normalized(b'<domain id="3" type="qemu"/>') == b'<domain type="qemu"/>'
    # Only a numeric id of the root is run-time state; anything else is content.
    assert verdict.normalized(b"<domain type='kvm' id='x1'/>") == b"<domain type='kvm' id='x1'/>"
    assert (
        verdict.normalized(b"<domain type='kvm'><x id='1'/></domain>")
        == b"<domain type='kvm'><x id='1'/></domain>"
    )


def test_emulator_key_is_the_probe_cache_identity() -> None:
    assert verdict.emulator_key(QEMU) == identify(QEMU).key()
    assert verdict.emulator_key("/nonexistent/qemu") is None


def test_second_start_is_answered_without_lxml_or_yaml(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    first = hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1))
    assert (first.returncode, first.stderr) == (0, "")
    assert len(verdicts(hook)) == 1
    rc, stderr, heavy = run_in_process(hook, live_xml("vm", 2))
    assert (rc, stderr, heavy) == (0, "", False)


def test_domain_without_txmode_is_replayed_too(tmp_path: Path) -> None:
    # No NIC needs the emulator's support, so the decision rests on the XML and the policy alone.
    hook = make_hook(tmp_path)
    xml = domain("plain", nic("52:54:00:00:00:01"), emulator=QEMU)
    assert hook.run("plain", "prepare", "begin", "-", stdin=xml).returncode == 0
    assert run_in_process(hook, xml) == (0, "", False)


def test_a_denial_is_replayed_word_for_word(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    xml = live_xml("db-notimer", 1, txmode="timer")
    first = hook.run("db-notimer", "prepare", "begin", "-", stdin=xml)
    assert first.returncode == 1
    rc, stderr, heavy = run_in_process(hook, live_xml("db-notimer", 2, txmode="timer"))
    assert (rc, stderr, heavy) == (1, first.stderr, False)


def test_replay_is_logged_like_a_fresh_decision(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1))
    with env.SyslogSink() as sink:
        assert hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 2)).returncode == 0
        assert any("allowed domain 'vm'" in line for line in sink.lines())


def test_policy_edit_is_seen_at_once(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    assert hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1, "timer")).returncode == 0
    hook.policy.write_text(POLICY.replace("allowed: [iothread, timer]", "allowed: [iothread]"))
    result = hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 2, "timer"))
    assert result.returncode == 1
    assert (
        "is not allowed by rule 'defaults' (allowed: iothread) [txmode-not-allowed]"
        in result.stderr
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership rules apply when the hook runs as root")
def test_policy_made_writable_is_refused_not_replayed(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    assert hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1)).returncode == 0
    os.chmod(hook.policy, 0o666)
    result = hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 2))
    assert result.returncode == 1
    assert "policy unusable" in result.stderr


def test_replaced_emulator_is_probed_again(tmp_path: Path, shared_dir: Path) -> None:
    emulator, calls = counting_emulator(shared_dir)
    hook = make_hook(tmp_path)
    xml = live_xml("vm", 1, emulator=str(emulator))
    assert hook.run("vm", "prepare", "begin", "-", stdin=xml).returncode == 0
    assert hook.run("vm", "prepare", "begin", "-", stdin=xml).returncode == 0
    # One probe: -device help, and the type ancestry's QMP session.
    assert len(calls.read_text().splitlines()) == 2
    emulator.write_text(emulator.read_text() + "# upgraded\n")  # new size and ctime
    assert hook.run("vm", "prepare", "begin", "-", stdin=xml).returncode == 0
    assert len(calls.read_text().splitlines()) == 4


def test_new_snapshot_invalidates(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    assert hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1)).returncode == 0
    (entry,) = verdicts(hook)
    os.makedirs(hook.layout.state_dir, exist_ok=True)
    Path(hook.layout.snapshot).write_text("{}")
    assert hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 2)).returncode == 0
    decoded = verdict.decode(entry.read_bytes())
    assert decoded is not None
    assert f"snapshot={hook.layout.snapshot}=absent" not in decoded[1]


def test_other_xml_is_a_miss(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1))
    result = hook.run("vm", "prepare", "begin", "-", stdin=live_xml("vm", 1, txmode="bogus"))
    assert result.returncode == 1
    assert len(verdicts(hook)) == 2


@pytest.mark.parametrize("tamper", ["writable", "corrupt", "forged-code", "symlink"])
def test_tampered_verdict_is_not_trusted(tmp_path: Path, tamper: str) -> None:
    hook = make_hook(tmp_path)
    xml = live_xml("db-notimer", 1, txmode="timer")
    assert hook.run("db-notimer", "prepare", "begin", "-", stdin=xml).returncode == 1
    (entry,) = verdicts(hook)
    decoded = verdict.decode(entry.read_bytes())
    assert decoded is not None
    digest, context, dependencies, (code, stderr, records) = decoded
    assert code == 1
    allowed = verdict.encode(digest, context, dependencies, (0, (), records))
    if tamper == "writable":
        entry.write_bytes(allowed)
        os.chmod(entry, 0o666)
    elif tamper == "corrupt":
        entry.write_bytes(entry.read_bytes()[:-3])
    elif tamper == "forged-code":
        entry.write_bytes(verdict.encode(digest, context, dependencies, (7, stderr, records)))
    else:
        forged = tmp_path / "forged.txt"
        forged.write_bytes(allowed)
        entry.unlink()
        entry.symlink_to(forged)
    result = hook.run("db-notimer", "prepare", "begin", "-", stdin=xml)
    assert result.returncode == 1
    assert "[txmode-not-allowed]" in result.stderr


def test_unknown_support_is_never_remembered(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    xml = live_xml("vm", 1, emulator="/usr/bin/qemu-system-nonexistent")
    assert hook.run("vm", "prepare", "begin", "-", stdin=xml).returncode == 1
    assert verdicts(hook) == []


def test_entries_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict, "MAX_ENTRIES", 4)
    cache = tmp_path / "cache"
    cache.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    outcome = gate.Decision(0, (), ())
    for i in range(10):
        xml = live_xml(f"vm{i}", 1)
        verdict.store(
            str(cache), verdict.key(xml, str(policy), ""), outcome,
            policy=str(policy), snapshot="", dependencies={},
        )  # fmt: skip
    assert 2 <= len(list(cache.glob("verdict-*.txt"))) <= 4


def test_a_file_that_was_absent_and_appears_makes_the_verdict_stale(tmp_path: Path) -> None:
    # A libvirt network definition the domain names: absent when the verdict was taken (the
    # NIC is no hostdev), then defined, maybe as a hostdev pool: the verdict must not replay.
    cache = tmp_path / "cache"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    network = tmp_path / "net-a.xml"
    xml = live_xml("vm", 1)
    entry_key = verdict.key(xml, str(policy), "")
    deps = {str(network): verdict.dependency_key(str(network))}
    verdict.store(
        str(cache), entry_key, gate.Decision(0, ("said",), ()),
        policy=str(policy), snapshot="", dependencies=deps,
    )  # fmt: skip
    err = io.StringIO()
    assert verdict.answer(str(cache), entry_key, err) == 0
    assert err.getvalue() == "said\n"
    network.write_text("<network><name>net-a</name><forward mode='hostdev'/></network>")
    assert verdict.answer(str(cache), entry_key, io.StringIO()) is None


def test_a_host_fact_that_changes_makes_the_verdict_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decided while /dev/vhost-net was absent (txmode takes effect), replayed after it appeared
    # (vhost makes it ineffective): a different decision under 'ineffective: error'.
    vhost = tmp_path / "vhost-net"
    monkeypatch.setattr(paths, "VHOST_NET_DEVICE", str(vhost))
    cache = tmp_path / "cache"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    xml = live_xml("vm", 1)
    entry_key = verdict.key(xml, str(policy), "")
    verdict.store(
        str(cache), entry_key, gate.Decision(0, (), ()),
        policy=str(policy), snapshot="", dependencies={},
    )  # fmt: skip
    assert verdict.answer(str(cache), verdict.key(xml, str(policy), ""), io.StringIO()) == 0
    vhost.write_text("")
    assert verdict.answer(str(cache), verdict.key(xml, str(policy), ""), io.StringIO()) is None


def _hookstart(hook: InstalledHook, *argv: str, importtime: bool = False) -> list[str]:
    """The command hooks/qemu execs for prepare begin, with the installed hook's settings."""
    settings = hook_settings(str(hook.path))
    return [
        sys.executable,
        "-I",
        "-S",
        *(["-X", "importtime"] if importtime else []),
        os.path.join(settings["PACKAGE"], "hookstart.py"),
        *argv,
    ]


def _wrapper_args(hook: InstalledHook, name: str) -> list[str]:
    settings = hook_settings(str(hook.path))
    return [
        "--policy", settings["POLICY"], "--snapshot", settings["SNAPSHOT"],
        "--cache-dir", settings["CACHE"], "--", name, "prepare", "begin", "-",
    ]  # fmt: skip


def test_a_cached_verdict_loads_nothing_beyond_the_interpreters_own_modules(
    tmp_path: Path,
) -> None:
    # The cached path's promise: no site, typing, json, re or dataclasses on a hit (each costs
    # more than the whole replay), while the miss before it ran the full check.
    hook = make_hook(tmp_path)
    xml = live_xml("db-notimer", 1, txmode="timer")
    first = hook.run("db-notimer", "prepare", "begin", "-", stdin=xml)
    assert first.returncode == 1
    done = subprocess.run(
        _hookstart(hook, *_wrapper_args(hook, "db-notimer"), importtime=True),
        input=live_xml("db-notimer", 2, txmode="timer"),
        capture_output=True,
        check=False,
        env=dict(LIBVIRT_ENV),
    )
    stderr = done.stderr.decode()
    imported = {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }
    replayed = "".join(line + "\n" for line in stderr.splitlines() if not line.startswith("import"))
    assert (done.returncode, replayed) == (1, first.stderr)
    assert "libvirt_txmode.hook.verdict" in imported
    heavy = {"site", "typing", "json", "re", "dataclasses", "lxml", "yaml", "runpy"}
    assert imported & heavy == set()


def test_an_unusual_command_line_is_decided_by_the_full_hook(tmp_path: Path) -> None:
    # Not the wrapper's exact argv shape: hook.main reads it with argparse.
    hook = make_hook(tmp_path)
    args = _wrapper_args(hook, "db-notimer")
    reordered = [*args[2:4], *args[0:2], *args[4:]]  # --snapshot before --policy
    for run_id in (1, 2):  # the full check, then the cached verdict
        done = subprocess.run(
            _hookstart(hook, *reordered),
            input=live_xml("db-notimer", run_id, txmode="timer"),
            capture_output=True,
            check=False,
        )
        assert done.returncode == 1
        assert b"[txmode-not-allowed]" in done.stderr


def test_the_entry_format_keeps_any_text_and_refuses_any_truncation() -> None:
    odd = "line\nbreak: 3:x\x1e\udcff é"
    entry = (1, [odd, ""], [(3, odd, {"DOMAIN": odd}), (6, "", {})])
    encoded = verdict.encode("d" * 64, odd, {odd: "key"}, entry)
    assert verdict.decode(encoded) == ("d" * 64, odd, {odd: "key"}, entry)
    for end in range(len(encoded)):
        assert verdict.decode(encoded[:end]) is None, end
    assert verdict.decode(encoded + b"0:\n") is None  # a trailing item is not a whole entry


def test_a_decision_on_passthrough_rests_on_libvirts_capabilities_file() -> None:
    # Whether libvirt passes -device as JSON (so whether a -set can reach a NIC) is read from
    # libvirt's capabilities cache for the emulator: a decision on passthrough must be stale once
    # that file changes, as it must once the emulator does.
    from libvirt_txmode.engine.domain_xml import parse_domain
    from libvirt_txmode.host.libvirt_caps import caps_path

    emulator = "/usr/bin/qemu-system-x86_64"
    plain = domain("vm", nic("52:54:00:00:00:01", "iothread"), emulator=emulator)
    with_set = plain.replace(
        b"</domain>",
        b"<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        b"<qemu:arg value='-set'/><qemu:arg value='device.net0.tx=bh'/></qemu:commandline>"
        b"</domain>",
    )
    found = gate._emulator_dependencies(parse_domain(with_set, "<stdin>"), {})
    assert found is not None
    assert found[emulator] == verdict.emulator_key(emulator)
    assert found[caps_path(emulator)] == verdict.dependency_key(caps_path(emulator))
    without = gate._emulator_dependencies(parse_domain(plain, "<stdin>"), {})
    assert without == {emulator: verdict.emulator_key(emulator)}
