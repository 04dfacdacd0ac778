"""``libvirt-txmode metrics``: the state of this host's gate as Prometheus text exposition.

The format is node_exporter's textfile collector's (exposition format 0.0.4: ``# HELP`` and
``# TYPE`` lines, then samples; no timestamps), so a systemd timer or cron job can refresh
``/var/lib/prometheus/node-exporter/libvirt-txmode.prom`` (``-o``, written in one rename: the
collector never reads half a file) and Telegraf's or Zabbix's Prometheus inputs read the same.

What is measured, each from the one place that already knows it:

* hook installed and live, policy valid: doctor's own checks (``hook_health``), without its
  self-test (that would be a decision every scrape);
* snapshot present, age and staleness: doctor's ``snapshot_drift``;
* decisions by outcome: the hook's counter file (tally.py), read under the trust rule;
* findings by code and rule from the last ``audit``, which keeps its summary in
  ``CACHE/last-audit.json`` (``save_audit``; beside the counter, in the directory uninstall-hook
  empties);
* the tool's version, as an info metric.

A source that cannot be read leaves its metrics out and sets
``libvirt_txmode_collector_success{collector=...}`` to 0, as node_exporter does for its own.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Optional

from .. import __version__
from ..ci.cli import FILE_COMPLETION, complete_as
from ..common import files, logsink
from ..common.exits import EXIT_OK, FatalError
from ..common.records import SLOTS
from ..hook import tally
from .doctor import (
    OK,
    check_hook,
    check_interpreter,
    check_live,
    check_policy,
    run_checks,
    snapshot_drift,
)
from .options import add_connect, add_directories, layout_of

if TYPE_CHECKING:
    from ..engine.model import Report
    from .layout import Layout

LOG = logging.getLogger(__name__)
PREFIX = "libvirt_txmode_"
AUDIT_FILE = "last-audit.json"
AUDIT_FORMAT = "libvirt-txmode-audit-summary"
AUDIT_VERSION = 1
MAX_AUDIT_BYTES = 4 * 1024 * 1024
# node_exporter's Debian package reads its textfile collector from here.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


@dataclass(frozen=True, **SLOTS)
class Metric:
    """One metric family: its name (without PREFIX), type, help and samples (labels, value)."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: tuple[tuple[tuple[tuple[str, str], ...], float], ...]


@dataclass(frozen=True, **SLOTS)
class HookHealth:
    """The hook's state as metrics shows it, from doctor's own checks."""

    installed: bool
    live: bool
    policy_valid: bool


def gauge(name: str, help_text: str, value: float, **labels: str) -> Metric:
    return Metric(name, "gauge", help_text, ((tuple(sorted(labels.items())), value),))


# --- sources -------------------------------------------------------------------------------------


def hook_health(layout: Layout) -> HookHealth:
    """doctor's verdicts on the hook, its interpreter, whether the running daemon has loaded it
    (by times, or a canary's proof: never a canary of its own on every scrape) and the policy."""
    checks = (check_hook, check_interpreter, check_live, check_policy)
    status = {c.name: c.status for c in run_checks(layout, checks)}
    installed = status.get("hook") == OK
    return HookHealth(
        installed=installed,
        live=installed and status.get("interpreter") == OK and status.get("live") == OK,
        policy_valid=status.get("policy") == OK,
    )


def snapshot_metrics(path: str, uri: Optional[str], now: float) -> list[Metric]:
    present = os.path.lexists(path)
    out = [gauge("snapshot_present", "1 if the capability snapshot exists.", float(present))]
    if not present:
        return out
    problems, _notes = snapshot_drift(path, uri)
    stale = problems is None or bool(problems)
    out.append(
        gauge(
            "snapshot_stale",
            "1 if the snapshot is unreadable or no longer matches this host's emulators "
            "(run 'libvirt-txmode snapshot').",
            float(stale),
        )
    )
    taken = _snapshot_time(path)
    if taken is not None:
        out.append(
            gauge("snapshot_age_seconds", "Seconds since the snapshot was taken.", now - taken)
        )
    return out


def _snapshot_time(path: str) -> Optional[float]:
    """When the snapshot was taken: its ``created`` stamp, else the file's mtime."""
    try:
        raw, info = files.read_regular(path, MAX_AUDIT_BYTES, follow_symlinks=True)
    except OSError:
        return None
    try:
        created = json.loads(raw).get("created", "")
        return float(calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return info.st_mtime


def decision_metrics(cache_dir: str) -> list[Metric]:
    counts, changed = tally.read(cache_dir)
    out = [
        Metric(
            "decisions_total",
            "counter",
            "VM starts the hook decided, by outcome (allowed, denied, audit-warned: started "
            "with warnings, error: could not check).",
            tuple(((("outcome", o),), float(counts[o])) for o in logsink.OUTCOMES),
        )
    ]
    if changed is not None:
        out.append(
            gauge(
                "last_decision_timestamp_seconds",
                "When the hook last counted a decision (Unix time).",
                changed,
            )
        )
    return out


def save_audit(cache_dir: str, report: Report, exit_code: int, now: float) -> None:
    """Keep an audit's summary (counts by code, rule and level; no domain names) for
    ``metrics``. OSError when the cache directory is not ours to write."""
    problem = files.private_dir_problem(cache_dir, create=True)
    if problem is not None:
        raise OSError(problem)
    counts = Counter((f.code, f.rule or "", f.level.value) for f in report.findings)
    document = {
        "format": AUDIT_FORMAT,
        "version": AUDIT_VERSION,
        "finished": now,
        "exit_code": exit_code,
        "domains": report.summary.domains,
        "documents": report.summary.files,
        "nics": report.summary.nics,
        "findings": [
            {"code": code, "rule": rule, "level": level, "count": n}
            for (code, rule, level), n in sorted(counts.items())
        ],
    }
    data = (json.dumps(document, indent=1) + "\n").encode()
    files.write_atomic(os.path.join(cache_dir, AUDIT_FILE), data, mode=0o600)


def load_audit(cache_dir: str) -> Optional[dict[str, Any]]:
    """The last audit's summary, None before the first; OSError or ValueError naming the
    problem when it must not be believed (the trust rule) or is not one."""
    path = os.path.join(cache_dir, AUDIT_FILE)
    if not os.path.lexists(path):
        return None
    uids = files.owners()
    problem = files.path_trust_problem(path, allowed_uids=uids, kind="file")
    if problem is not None:
        raise OSError(problem)
    document = json.loads(files.read_trusted(path, MAX_AUDIT_BYTES, allowed_uids=uids))
    if not isinstance(document, dict) or document.get("format") != AUDIT_FORMAT:
        raise ValueError(f"{path}: not an audit summary")
    return document


def audit_metrics(cache_dir: str) -> list[Metric]:
    document = load_audit(cache_dir)
    if document is None:
        return []
    findings = tuple(
        (
            (("code", str(f["code"])), ("level", str(f["level"])), ("rule", str(f["rule"]))),
            float(f["count"]),
        )
        for f in document["findings"]
    )
    return [
        gauge(
            "audit_last_run_timestamp_seconds",
            "When 'libvirt-txmode audit' last finished (Unix time).",
            float(document["finished"]),
        ),
        gauge(
            "audit_exit_code",
            "Exit status of the last audit (0 no error finding, 1 findings).",
            float(document["exit_code"]),
        ),
        gauge("audit_domains", "Domains the last audit checked.", float(document["domains"])),
        Metric(
            "audit_findings",
            "gauge",
            "Findings of the last audit, by finding code, policy rule and level.",
            findings,
        ),
    ]


# --- the whole document --------------------------------------------------------------------------


def collect(layout: Layout, *, uri: Optional[str], now: Optional[float] = None) -> list[Metric]:
    """Every metric of this host; a source that fails is logged and reported as such."""
    now = time.time() if now is None else now
    out = [
        gauge(
            "build_info",
            "Version of libvirt-txmode that wrote these metrics.",
            1.0,
            version=__version__,
        )
    ]
    success: list[tuple[str, bool]] = []

    def health() -> list[Metric]:
        found = hook_health(layout)
        return [
            gauge(
                "hook_installed",
                "1 if a libvirt-txmode hook is in place, executable and trusted.",
                float(found.installed),
            ),
            gauge(
                "hook_live",
                "1 if the installed hook can run (its interpreter imports the package).",
                float(found.live),
            ),
            gauge(
                "policy_valid",
                "1 if the hook's policy is valid and trusted.",
                float(found.policy_valid),
            ),
        ]

    sources = (
        ("hook", health),
        ("snapshot", lambda: snapshot_metrics(layout.snapshot, uri, now)),
        ("decisions", lambda: decision_metrics(layout.cache_dir)),
        ("audit", lambda: audit_metrics(layout.cache_dir)),
    )
    for name, source in sources:
        try:
            out += source()
            success.append((name, True))
        except Exception as exc:  # one unreadable source must not hide the others
            LOG.warning("metrics: %s: %s", name, exc)
            success.append((name, False))
    out.append(
        Metric(
            "collector_success",
            "gauge",
            "1 if the source of these metrics could be read, 0 if it failed (see the log).",
            tuple(((("collector", name),), float(ok)) for name, ok in success),
        )
    )
    return out


def render(metrics: Iterable[Metric]) -> str:
    """Text exposition format 0.0.4."""
    lines: list[str] = []
    for metric in metrics:
        name = PREFIX + metric.name
        help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {metric.kind}"]
        for labels, value in metric.samples:
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def write(text: str, output: Optional[str], out: Any) -> None:
    """To ``output`` in one rename (a temporary beside it, not named *.prom, which the textfile
    collector would read), readable by the node_exporter user; else to ``out``."""
    if output is None:
        out.write(text)
        return
    files.write_atomic(output, text.encode("utf-8"), mode=0o644)


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "metrics",
        help="write this host's gate state as Prometheus text (node_exporter textfile format)",
    )
    add_directories(cmd)
    add_connect(cmd)
    complete_as(
        cmd.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="write to FILE in one rename (e.g. "
            "/var/lib/prometheus/node-exporter/libvirt-txmode.prom) instead of stdout",
        ),
        FILE_COMPLETION,
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    text = render(collect(layout_of(args), uri=args.connect))
    try:
        write(text, args.output, out)
    except OSError as exc:
        raise FatalError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return EXIT_OK
