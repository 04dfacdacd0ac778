"""``libvirt-txmode metrics`` and the hook's decision counter (tally.py).

The output is read back with a real Prometheus text parser (prometheus_client's) and, where
Debian's ``promtool`` is on PATH, checked by it; the counters are moved by the installed hook
(through its ``sh`` wrapper, as libvirt runs it) and, in the integration test, by real
``virsh start`` calls through a hook installed in /etc/libvirt/hooks. The systemd units the
Debian package ships are checked with ``systemd-analyze verify``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from libvirt_txmode import __version__
from libvirt_txmode.admin import commands as host_commands
from libvirt_txmode.admin import metrics
from libvirt_txmode.admin.uninstall import CACHE_NAMES
from libvirt_txmode.common import logsink, paths
from libvirt_txmode.engine.model import Finding, Level, Report, Summary
from libvirt_txmode.hook import tally
from libvirt_txmode.hook.markers import SELFTEST_DOMAIN
from tests import libvirt_env as env
from tests.hookrun import POLICY, domain, make_hook, nic
from tests.libvirt_env import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
DEBIAN = REPO / "debian"


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by metric name (as the parser names them) and sorted labels."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def run_metrics(base: Path, *extra: str, hooks_dir: str = "") -> tuple[int, str, str]:
    """The installed command, as the timer runs it, on the installation under ``base`` (its
    hooks in ``base/hooks`` unless ``hooks_dir`` says otherwise)."""
    result = subprocess.run(
        [
            str(env.VENV_BIN / "libvirt-txmode"),
            "metrics",
            "--hooks-dir",
            hooks_dir or str(base / "hooks"),
            *env.install_args(base),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def decisions(text: str) -> dict[str, float]:
    samples = parse(text)["libvirt_txmode_decisions_total"]
    return {dict(labels)["outcome"]: value for labels, value in samples.items()}


# --- rendering -----------------------------------------------------------------------------------


def test_rendered_text_is_read_back_by_prometheus_parser_labels_and_all() -> None:
    rule = 'odd "rule" \\ with\nnewline'
    text = metrics.render(
        [
            metrics.gauge("build_info", "Version.", 1.0, version="1.2.3"),
            metrics.Metric(
                "decisions_total",
                "counter",
                "Decisions.\nSecond line \\ backslash.",
                ((((("outcome", "allowed"),)), 3.0), ((("outcome", "denied"),), 0.0)),
            ),
            metrics.Metric(
                "audit_findings",
                "gauge",
                "Findings.",
                (((("code", "txmode-not-allowed"), ("rule", rule)), 2.0),),
            ),
            metrics.gauge("snapshot_age_seconds", "Age.", 12.5),
        ]
    )
    assert families(text) == {
        "libvirt_txmode_build_info": "gauge",
        "libvirt_txmode_decisions": "counter",
        "libvirt_txmode_audit_findings": "gauge",
        "libvirt_txmode_snapshot_age_seconds": "gauge",
    }
    samples = parse(text)
    assert samples["libvirt_txmode_build_info"] == {(("version", "1.2.3"),): 1.0}
    assert samples["libvirt_txmode_decisions_total"] == {
        (("outcome", "allowed"),): 3.0,
        (("outcome", "denied"),): 0.0,
    }
    assert samples["libvirt_txmode_audit_findings"] == {
        (("code", "txmode-not-allowed"), ("rule", rule)): 2.0
    }
    assert samples["libvirt_txmode_snapshot_age_seconds"] == {(): 12.5}


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(env.VENV_BIN))
    if found is None:
        env.skip_unless_ci("promtool missing: scripts/get-promtool puts Debian's in .venv/bin")
    assert found is not None
    return found


# --- the decision counter ------------------------------------------------------------------------


def _count_many(cache_dir: str, times: int) -> None:
    fields = {"MESSAGE_ID": logsink.MESSAGE_IDS[logsink.DENIED], "DOMAIN": "vm"}
    for _ in range(times):
        assert tally.count_decision(cache_dir, [fields])


def test_parallel_hooks_lose_no_count(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    workers = [
        multiprocessing.get_context("fork").Process(target=_count_many, args=(str(cache), 25))
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    counts, changed = tally.read(str(cache))
    assert counts == {"allowed": 0, "denied": 200, "audit-warned": 0, "error": 0}
    assert changed is not None
    assert [p.name for p in cache.iterdir()] == ["decisions"]
    assert (cache / "decisions").stat().st_mode & 0o777 == 0o600
    assert CACHE_NAMES.fullmatch("decisions")  # uninstall-hook empties it with the cache


def test_counter_in_an_untrusted_place_is_neither_written_nor_believed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("the trust rule is root's")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    fields = [{"MESSAGE_ID": logsink.MESSAGE_IDS[logsink.ALLOWED]}]
    assert tally.count_decision(str(cache), fields)
    os.chmod(cache / "decisions", 0o666)
    assert not tally.count_decision(str(cache), fields)
    with pytest.raises(OSError, match="writable by group or others"):
        tally.read(str(cache))
    os.chmod(cache / "decisions", 0o600)
    os.chmod(cache, 0o777)
    assert not tally.count_decision(str(cache), fields)
    with pytest.raises(OSError, match="writable by group or others"):
        tally.read(str(cache))
    os.chmod(cache, 0o700)
    assert tally.read(str(cache))[0][logsink.ALLOWED] == 1


def test_the_self_test_is_not_a_decision() -> None:
    fields = {"MESSAGE_ID": logsink.MESSAGE_IDS[logsink.ALLOWED], "DOMAIN": SELFTEST_DOMAIN}
    assert not tally.count_decision("/nonexistent-but-never-reached", [fields])


def test_installed_hook_counts_every_outcome_also_from_its_verdict_cache(tmp_path: Path) -> None:
    hook = make_hook(tmp_path)
    cache = hook.layout.cache_dir
    assert (
        hook.run(SELFTEST_DOMAIN, "prepare", "begin", "-", stdin=domain(SELFTEST_DOMAIN)).returncode
        == 0
    )
    assert tally.read(cache)[0] == dict.fromkeys(logsink.OUTCOMES, 0)  # the self-test: no count
    qemu = "/usr/bin/qemu-system-x86_64"  # a decision is cached only for a known emulator
    allowed = domain("vm-ok", nic("52:54:00:00:00:01", "iothread"), emulator=qemu)
    denied = domain("vm-notimer", nic("52:54:00:00:00:02", "timer"), emulator=qemu)
    for _ in range(2):  # the second round is answered from the verdict cache
        assert hook.run("vm-ok", "prepare", "begin", "-", stdin=allowed).returncode == 0
        assert hook.run("vm-notimer", "prepare", "begin", "-", stdin=denied).returncode == 1
    assert any(p.name.startswith("verdict-") for p in Path(hook.layout.cache_dir).iterdir())
    assert hook.run("vm-x", "started", "begin", "-", stdin=allowed).returncode == 0  # no decision
    hook.policy.write_text(POLICY.replace("action: enforce", "action: audit"))
    assert hook.run("vm-notimer", "prepare", "begin", "-", stdin=denied).returncode == 0
    hook.policy.write_text("version: 1\nbogus: key\n")
    assert hook.run("vm-ok", "prepare", "begin", "-", stdin=allowed).returncode == 1
    counts = {"allowed": 2, "denied": 2, "audit-warned": 1, "error": 1}
    assert tally.read(cache)[0] == counts

    code, out, err = run_metrics(tmp_path)
    assert (code, err) == (0, "")
    assert decisions(out) == counts
    samples = parse(out)
    assert samples["libvirt_txmode_hook_installed"] == {(): 1.0}
    # Not libvirt's hooks directory: no daemon runs this hook, so it is not live.
    assert samples["libvirt_txmode_hook_live"] == {(): 0.0}
    assert samples["libvirt_txmode_policy_valid"] == {(): 0.0}  # the broken policy above
    assert samples["libvirt_txmode_build_info"] == {(("version", __version__),): 1.0}
    assert all(v == 1.0 for v in samples["libvirt_txmode_collector_success"].values())


def test_metrics_of_a_host_without_the_gate(tmp_path: Path) -> None:
    code, out, err = run_metrics(tmp_path)
    assert (code, err) == (0, "")
    samples = parse(out)
    assert samples["libvirt_txmode_hook_installed"] == {(): 0.0}
    assert samples["libvirt_txmode_hook_live"] == {(): 0.0}
    assert samples["libvirt_txmode_snapshot_present"] == {(): 0.0}
    assert decisions(out) == dict.fromkeys(logsink.OUTCOMES, 0.0)
    assert "libvirt_txmode_audit_findings" not in samples


def test_an_untrusted_counter_file_is_reported_not_shown(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("the trust rule is root's")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "decisions").write_text("allowed 99\n")
    os.chmod(cache / "decisions", 0o646)
    code, out, err = run_metrics(tmp_path)
    assert code == 0
    assert "metrics: decisions:" in err and "writable by group or others" in err
    samples = parse(out)
    assert "libvirt_txmode_decisions_total" not in samples
    assert samples["libvirt_txmode_collector_success"][(("collector", "decisions"),)] == 0.0


# --- the output file -----------------------------------------------------------------------------


def test_output_file_is_replaced_in_one_rename_and_readable_by_the_collector(
    tmp_path: Path,
) -> None:
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    target = textfiles / "libvirt-txmode.prom"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    code, out, err = run_metrics(tmp_path, "-o", str(target))
    assert (code, out, err) == (0, "", "")
    assert target.stat().st_ino != old_inode  # a new file renamed over, never rewritten in place
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in textfiles.iterdir()] == ["libvirt-txmode.prom"]
    assert "libvirt_txmode_build_info" in parse(target.read_text())
    check = subprocess.run(
        [promtool(), "check", "metrics"],
        input=target.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


def test_unwritable_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = run_metrics(tmp_path, "-o", str(tmp_path / "missing" / "x.prom"))
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0
    assert f"cannot write {tmp_path / 'missing' / 'x.prom'}" in err and "Traceback" not in err


# --- the last audit ------------------------------------------------------------------------------


def test_last_audit_summary_becomes_findings_by_code_and_rule(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def finding(name: str, code: str, rule: str, level: Level) -> Finding:
        return Finding(f"{name} (inactive XML)", 1, name, code, level, "m", 0, rule=rule)

    found = (
        finding("a", "txmode-not-allowed", "no-timer", Level.ERROR),
        finding("b", "txmode-not-allowed", "no-timer", Level.ERROR),
        finding("b", "txmode-ineffective", "", Level.WARNING),
    )
    report = Report(("a (inactive XML)", "b (inactive XML)"), found, Summary(2, 2, 3, 2, 1))
    metrics.save_audit(str(cache), report, 1, 1_700_000_000.0)
    saved = (cache / metrics.AUDIT_FILE).read_text()
    assert "(inactive XML)" not in saved  # counts only: no domain names kept
    assert CACHE_NAMES.fullmatch(metrics.AUDIT_FILE)  # emptied with the cache
    samples = parse(metrics.render(metrics.audit_metrics(str(cache))))
    assert samples["libvirt_txmode_audit_findings"] == {
        (("code", "txmode-not-allowed"), ("level", "error"), ("rule", "no-timer")): 2.0,
        (("code", "txmode-ineffective"), ("level", "warning"), ("rule", "")): 1.0,
    }
    assert samples["libvirt_txmode_audit_last_run_timestamp_seconds"] == {(): 1_700_000_000.0}
    assert samples["libvirt_txmode_audit_domains"] == {(): 2.0}
    assert samples["libvirt_txmode_audit_exit_code"] == {(): 1.0}


# --- the packaged units --------------------------------------------------------------------------


def test_timer_and_service_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        env.skip_unless_ci("systemd-analyze missing (Debian: the systemd package)")
    assert analyze is not None
    service = (DEBIAN / "libvirt-txmode.libvirt-txmode-metrics.service").read_text()
    # The one change: the command where this machine has it (verify checks it is executable).
    command = "/usr/bin/libvirt-txmode"
    assert f"ExecStart={command} metrics -o {metrics.TEXTFILE_DIR}/libvirt-txmode.prom" in service
    if not os.access(command, os.X_OK):
        service = service.replace(command, str(env.VENV_BIN / "libvirt-txmode"))
    (tmp_path / "libvirt-txmode-metrics.service").write_text(service)
    shutil.copy(
        DEBIAN / "libvirt-txmode.libvirt-txmode-metrics.timer",
        tmp_path / "libvirt-txmode-metrics.timer",
    )
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            "libvirt-txmode-metrics.timer",
            "libvirt-txmode-metrics.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on a value it cannot parse and only says so: no output is the pass.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_cron_fallback_runs_the_same_command_only_without_systemd() -> None:
    cron = (DEBIAN / "libvirt-txmode.cron.d").read_text()
    (job,) = [line for line in cron.splitlines() if line.startswith("* * * * * root ")]
    assert "[ ! -d /run/systemd/system ]" in job
    assert f"libvirt-txmode metrics -o {metrics.TEXTFILE_DIR}/libvirt-txmode.prom" in job


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture
def e2e_hook(tmp_path: Path) -> Iterator[Path]:
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    with env.installed_hook(tmp_path, POLICY):
        yield tmp_path


@pytest.mark.integration
def test_counters_move_with_real_virsh_starts_and_audit_findings_show(
    e2e_hook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = e2e_hook
    tag = uuid.uuid4().hex[:6]
    names = [f"{env.PREFIX}metrics-{tag}", f"{env.PREFIX}metrics-notimer-{tag}"]
    try:
        for name, txmode in zip(names, ("iothread", "timer")):
            path = base / f"{name}.xml"
            path.write_text(env.domain_xml(name, txmode=txmode))
            env.virsh("define", str(path))
        code, before, err = run_metrics(base, hooks_dir=paths.HOOKS_DIR)
        assert (code, err) == (0, "")
        env.virsh("start", names[0])
        env.virsh("destroy", names[0])
        refused = env.virsh("start", names[1], check=False)
        assert refused.returncode != 0 and "[txmode-not-allowed]" in refused.stderr
        env.virsh("start", names[0])  # a restart: answered from the verdict cache
        after = run_metrics(base, hooks_dir=paths.HOOKS_DIR)[1]
        moved = {k: v - decisions(before)[k] for k, v in decisions(after).items()}
        assert moved == {"allowed": 2, "denied": 1, "audit-warned": 0, "error": 0}
        samples = parse(after)
        assert samples["libvirt_txmode_hook_installed"] == {(): 1.0}
        assert samples["libvirt_txmode_hook_live"] == {(): 1.0}
        assert samples["libvirt_txmode_policy_valid"] == {(): 1.0}
        assert samples["libvirt_txmode_snapshot_present"] == {(): 1.0}
        assert samples["libvirt_txmode_snapshot_stale"] == {(): 0.0}

        # audit keeps its summary where metrics reads it (this install's cache directory).
        policy = str(base / "etc" / "policy.yaml")
        cache = str(base / "cache")
        audit = ["audit", "-p", policy, "-d", names[0], "-d", names[1], "--cache-dir", cache]
        assert host_commands.main(audit) == 1
        capsys.readouterr()
        audited = parse(run_metrics(base, hooks_dir=paths.HOOKS_DIR)[1])
        assert audited["libvirt_txmode_audit_findings"] == {
            (("code", "txmode-not-allowed"), ("level", "error"), ("rule", "no-timer")): 1.0
        }
        assert audited["libvirt_txmode_audit_domains"] == {(): 2.0}
    finally:
        for name in names:
            env.remove_domain(name)
