"""Liveness without libvirt: the daemon's start time from /proc, the time rule with its proof,
the canary's marker refused in the hook before the policy is read, and the self-test's own
DECISION. The canary against a real libvirtd is in test_e2e_liveness.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from lxml import etree

from libvirt_txmode.admin.daemon import Daemon, process_start_time
from libvirt_txmode.admin.liveness import (
    CANARY_PREFIX,
    LIVE,
    OFF,
    by_time,
    canary_xml,
    hook_time,
    record_proof,
)
from libvirt_txmode.admin.selftest import SELFTEST_DOMAIN, SELFTEST_XML
from libvirt_txmode.common import logsink
from libvirt_txmode.hook import gate


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hook's records go to a file of the test's (no journald or syslog socket there)."""
    monkeypatch.setattr(logsink, "JOURNAL_SOCKET", str(tmp_path / "no-journal"))
    monkeypatch.setattr(logsink, "SYSLOG_SOCKET", str(tmp_path / "no-syslog"))
    monkeypatch.setattr(logsink, "FALLBACK_FILE", str(tmp_path / "decisions.log"))
    return tmp_path / "decisions.log"


def request(tmp_path: Path, name: str, xml: str, policy: str) -> gate.Request:
    return gate.Request(name, policy, "", str(tmp_path / "cache"), xml.encode(), None, None)


# --- the daemon's start ---------------------------------------------------------------------------


def test_start_time_of_a_process_started_now(tmp_path: Path) -> None:
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start_time(child.pid)
    finally:
        child.kill()
        child.wait()
    assert started is not None
    # /proc counts in clock ticks since boot, btime in whole seconds: within a second of the
    # moment it was started, never before the test began.
    assert before - 1.0 <= started <= time.time() + 1.0


def test_start_time_reads_past_a_command_name_with_parentheses(tmp_path: Path) -> None:
    """Field 22 counts from the last ')' (the command name may hold ') (' itself)."""
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    ticks = os.sysconf("SC_CLK_TCK") * 50
    fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10
    (proc / "42" / "stat").write_text(f"42 (evil) (name) {' '.join(fields)}\n")
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1000000000\nprocesses 5\n")
    assert process_start_time(42, str(proc)) == 1000000050.0
    (proc / "stat").write_text("cpu 1 2 3\n")
    assert process_start_time(42, str(proc)) is None


# --- the time rule --------------------------------------------------------------------------------


def test_hook_newer_than_the_daemon_is_not_live_until_a_canary_proves_it(tmp_path: Path) -> None:
    hook = tmp_path / "qemu"
    hook.write_text("#!/bin/sh\n")
    installed = hook_time(str(hook))
    older = Daemon("libvirtd", 4242, installed + 60)
    assert by_time([str(hook)], older, str(tmp_path)).state == LIVE
    daemon = Daemon("libvirtd", 4242, installed - 60)
    result = by_time([str(hook)], daemon, str(tmp_path / "state"))
    assert result.state == OFF
    assert f"{hook} appeared at " in result.detail
    assert "after libvirtd (pid 4242) started at " in result.detail
    assert result.detail.endswith(
        "fix: reload the daemon (systemctl reload libvirtd, or kill -HUP 4242) and prove it "
        "with 'libvirt-txmode doctor --canary'"
    )
    # A canary proof for another daemon instance (a restart reused nothing) proves nothing.
    assert record_proof(str(tmp_path / "state"), Daemon("libvirtd", 99, 1.0), installed + 1) is None
    assert by_time([str(hook)], daemon, str(tmp_path / "state")).state == OFF
    # One older than the hook proves nothing either; one taken after it does.
    record_proof(str(tmp_path / "state"), daemon, installed - 1)
    assert by_time([str(hook)], daemon, str(tmp_path / "state")).state == OFF
    record_proof(str(tmp_path / "state"), daemon, installed + 1)
    proven = by_time([str(hook)], daemon, str(tmp_path / "state"))
    assert proven.state == LIVE and proven.detail.startswith("a canary proved libvirtd")


def test_a_proof_in_a_directory_others_can_write_is_not_believed(tmp_path: Path) -> None:
    hook = tmp_path / "qemu"
    hook.write_text("#!/bin/sh\n")
    daemon = Daemon("virtqemud", 7, hook_time(str(hook)) - 60)
    state = tmp_path / "state"
    record_proof(str(state), daemon, time.time() + 1)
    assert by_time([str(hook)], daemon, str(state)).state == LIVE
    state.chmod(0o777)
    assert by_time([str(hook)], daemon, str(state)).state == OFF


# --- the canary in the hook -----------------------------------------------------------------------


def test_canary_xml_carries_the_marker_and_runs_nothing() -> None:
    root = etree.fromstring(canary_xml(CANARY_PREFIX + "x", "x86_64").encode())
    assert root.findtext("name") == CANARY_PREFIX + "x"
    assert root.find(f"metadata/{{{gate.CANARY_NAMESPACE}}}canary") is not None
    devices = root.find("devices")
    assert devices is not None and len(devices) == 0  # no disk, no NIC
    assert root.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]


def test_canary_is_refused_before_the_policy_is_read(tmp_path: Path, log_file: Path) -> None:
    """No policy file at all (which refuses every start as 'policy unusable'): the canary is
    refused with its own words, so doctor can tell the hook refused it, and logged as a canary."""
    name = CANARY_PREFIX + "0123"
    err = io.StringIO()
    code = gate.run(request(tmp_path, name, canary_xml(name), str(tmp_path / "none.yaml")), err)
    assert code == 1
    assert err.getvalue() == (
        f"libvirt-txmode: canary {name} refused by the hook: the gate is live (a test domain of "
        "'libvirt-txmode doctor --canary', never started)\n"
    )
    logged = log_file.read_text()
    assert 'DECISION="canary"' in logged and f"canary domain '{name}' refused" in logged
    assert "refused to start" not in logged  # not a decision: doctor's decisions line skips it
    assert not (tmp_path / "cache").exists() or not any(
        p.name.startswith("verdict-") for p in (tmp_path / "cache").iterdir()
    )


def test_self_test_is_logged_as_selftest_not_as_an_allowed_start(
    tmp_path: Path, log_file: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    err = io.StringIO()
    assert gate.run(request(tmp_path, SELFTEST_DOMAIN, SELFTEST_XML, str(policy)), err) == 0
    logged = log_file.read_text()
    assert 'DECISION="selftest"' in logged and "self-test passed" in logged
    assert "allowed domain" not in logged
    # Without the marker the same domain is a start like any other.
    plain = SELFTEST_XML.replace(gate.SELFTEST_NAMESPACE, "http://example.invalid/other")
    assert gate.run(request(tmp_path, SELFTEST_DOMAIN, plain, str(policy)), err) == 0
    assert f"allowed domain '{SELFTEST_DOMAIN}'" in log_file.read_text()


def test_the_selftest_marker_hides_no_refusal(tmp_path: Path, log_file: Path) -> None:
    err = io.StringIO()
    broken = tmp_path / "policy.yaml"
    broken.write_text("version: 1\nactoin: audit\n")
    assert gate.run(request(tmp_path, SELFTEST_DOMAIN, SELFTEST_XML, str(broken)), err) == 1
    logged = log_file.read_text()
    assert 'DECISION="refused"' in logged and 'DECISION="selftest"' not in logged
