"""libvirt-txmode benchmark suite: hook latency, validate-domain throughput, virsh overhead, memory.

Run from the repository root with the project's interpreter (it is the one the hook gets installed
with, and the one the Python baselines use):

    .venv/bin/python bench/run.py            # everything, ~3 minutes
    .venv/bin/python bench/run.py --quick    # fewer rounds, 1k corpus only for the baseline
    .venv/bin/python bench/run.py --no-libvirt --json results.json

Every figure is a median of several runs and is printed next to a baseline measured in the same run,
in interleaved rounds so that a noisy neighbour on a shared machine hits both alike. Nothing here is
a pass/fail test: targets are printed for comparison only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import domains

from libvirt_txmode.admin import daemon
from libvirt_txmode.admin.hook_file import DROPIN_NAME, hook_settings, is_ours
from libvirt_txmode.admin.install import install
from libvirt_txmode.admin.layout import DEFAULT_HOOKS_DIR, Layout
from libvirt_txmode.admin.uninstall import uninstall
from libvirt_txmode.common.files import write_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
GNU_TIME = "/usr/bin/time"
HOOK_ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}  # what libvirt gives a hook (virhook.c)
URI = "qemu:///system"
PREFIX = "txmbench-"
NOOP_EVENTS = (
    ("start", "begin"),
    ("started", "begin"),
    ("stopped", "end"),
    ("release", "end"),
    ("reconnect", "begin"),
)


# --- running a child and measuring it ------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    status: int
    cpu: float  # user + system time of the child and everything it waited for


def spawn(
    argv: Sequence[str],
    env: dict[str, str],
    stdin_path: str = "/dev/null",
    stderr_path: str = "/dev/null",
) -> Sample:
    """posix_spawn + wait4: the cheapest way to start a child, so the harness adds little to it."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin_path, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    return Sample(elapsed, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)


@dataclass(eq=False)
class Case:
    """One command measured in every round; ``prepare`` runs untimed before each run."""

    label: str
    argv: list[str]
    env: dict[str, str]
    stdin_path: str = "/dev/null"
    prepare: Optional[Callable[[], None]] = None
    expect_status: int = 0
    probes: Optional[Callable[[], int]] = None  # counter read before/after each run
    samples: list[Sample] = field(default_factory=list)
    probe_counts: list[int] = field(default_factory=list)
    peak_kib: Optional[int] = None

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(s.cpu for s in self.samples)


def peak_rss_kib(case: Case, workdir: str, repeat: int = 3) -> Optional[int]:
    """Peak RSS of ``case`` via GNU time, in runs of their own.

    wait4's ru_maxrss is useless here: a child inherits its parent's RSS high-water mark when it
    execs (the kernel records the old mm's peak), so every child of this 30 MiB harness would
    report at least 30 MiB. GNU time is a small process, so its child's figure is the real one.
    """
    if not os.access(GNU_TIME, os.X_OK):
        return None
    out = os.path.join(workdir, "rss")
    peak = 0
    for _ in range(repeat):
        if case.prepare:
            case.prepare()
        spawn([GNU_TIME, "-f", "%M", "-o", out, *case.argv], case.env, case.stdin_path)
        with open(out, encoding="ascii") as handle:
            peak = max(peak, int(handle.read().split()[-1]))
    return peak


def rss(kib: Optional[int]) -> str:
    return "n/a (no /usr/bin/time)" if kib is None else f"{kib / 1024:.1f} MiB"


def run_rounds(cases: Sequence[Case], rounds: int, workdir: str) -> None:
    stderr_path = os.path.join(workdir, "last-stderr")
    for case in cases:  # one warm-up each: page cache, .pyc files
        if case.prepare:
            case.prepare()
        spawn(case.argv, case.env, case.stdin_path, stderr_path)
    shuffle = random.Random(42).shuffle  # noqa: S311 - a fixed order would favour whoever runs after a sleep
    order = list(cases)
    for _ in range(rounds):
        shuffle(order)
        for case in order:
            if case.prepare:
                case.prepare()
            before = case.probes() if case.probes else 0
            sample = spawn(case.argv, case.env, case.stdin_path, stderr_path)
            if case.probes:
                case.probe_counts.append(case.probes() - before)
            if sample.status != case.expect_status:
                with open(stderr_path, encoding="utf-8", errors="replace") as handle:
                    detail = handle.read().strip()
                raise SystemExit(
                    f"bench: {case.label}: exit {sample.status}, "
                    f"expected {case.expect_status}: {detail}"
                )
            case.samples.append(sample)


# --- output ------------------------------------------------------------------------------------


class Table:
    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title, self.columns, self.rows = title, list(columns), []  # type: ignore[var-annotated]

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.columns, *self.rows]) for i in range(len(self.columns))
        ]
        line = "| " + " | ".join(c.ljust(w) for c, w in zip(self.columns, widths)) + " |"
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in self.rows]
        return "\n".join([f"\n### {self.title}\n", line, rule, *body])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    return "meets" if ok else "MISSES"


# --- 1, 4, 5: the hook -------------------------------------------------------------------------


@dataclass
class Bench:
    workdir: str
    rounds: int
    python: str = PYTHON  # the hook's interpreter (install renders it into the hook) and baselines'
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)


def make_counting_emulator(
    bench: Bench, name: str = "qemu-system-x86_64"
) -> tuple[str, Callable[[], int]]:
    """A wrapper that counts its runs, then execs the real QEMU. Probes run as libvirt's QEMU user
    (qemu.py demotes itself), so the counter is world-writable; the wrapper itself is root's and
    0755, as qemu.trust_problem demands."""
    bindir = bench.path("bin", name.replace("/", "_") + ".d")
    os.makedirs(bindir, mode=0o755, exist_ok=True)
    counter = os.path.join(bindir, "runs")
    with open(counter, "w", encoding="ascii"):
        pass
    os.chmod(counter, 0o666)  # noqa: S103 - the probe runs as the QEMU user and counts itself
    wrapper = os.path.join(bindir, "qemu-system-x86_64")
    with open(wrapper, "w", encoding="ascii") as handle:
        handle.write(f'#!/bin/sh\necho run >> {counter}\nexec {domains.QEMU} "$@"\n')
    os.chmod(wrapper, 0o755)  # noqa: S103 - root-owned, like a real emulator

    def count() -> int:
        with open(counter, encoding="ascii") as handle:
            return sum(1 for _ in handle)

    return wrapper, count


def clear_dir(path: str, keep: Callable[[str], bool] = lambda _name: False) -> None:
    if os.path.isdir(path):
        for name in os.listdir(path):
            if not keep(name):
                entry = os.path.join(path, name)
                if os.path.isdir(entry):
                    shutil.rmtree(entry)
                else:
                    os.unlink(entry)


def bench_hook(bench: Bench) -> None:
    wrapper, count = make_counting_emulator(bench)
    layout = Layout(
        hooks_dir=bench.path("hooks"),
        config_dir=bench.path("etc"),
        state_dir=bench.path("state"),
        cache_dir=bench.path("cache"),
    )
    os.makedirs(layout.config_dir, mode=0o755)
    with open(layout.policy, "w", encoding="utf-8") as handle:
        handle.write(domains.bench_policy([bench.path("bin", "*", "qemu-system-*")]))
    os.chmod(layout.policy, 0o644)
    hook = install(layout, python=bench.python).hook_path
    assert hook is not None

    # A snapshot at the hook's snapshot path only for the 'snapshot' case: it is moved in and out.
    snapshot_copy = bench.path("snapshot.json")
    domains.write_json(snapshot_copy, domains.snapshot_document([wrapper]))

    def use_snapshot(on: bool) -> None:
        if on:
            shutil.copy2(snapshot_copy, layout.snapshot)
        elif os.path.exists(layout.snapshot):
            os.unlink(layout.snapshot)

    xml: dict[int, str] = {}
    for nics in (1, 4, 64, 256):
        xml[nics] = bench.path(f"hook-{nics}.xml")
        with open(xml[nics], "wb") as handle:
            handle.write(domains.hook_domain(f"{PREFIX}hook{nics}", nics, wrapper))

    def argv(event: tuple[str, str], nics: int = 4) -> list[str]:
        return [hook, f"{PREFIX}hook{nics}", event[0], event[1], "-"]

    # The wrappers above count probes, but a script's identity also covers what it execs
    # (files.script_targets: re and a digest on every replay); most hosts name the binary itself.
    xml_binary = bench.path("hook-binary.xml")
    with open(xml_binary, "wb") as binary_handle:
        binary_handle.write(domains.hook_domain(f"{PREFIX}hookbin", 4, domains.QEMU))
    argv_binary = [hook, f"{PREFIX}hookbin", "prepare", "begin", "-"]

    def warm_binary() -> None:
        use_snapshot(False)
        spawn(argv_binary, base_env, xml_binary)

    base_env = dict(HOOK_ENV)

    def cold() -> None:
        use_snapshot(False)
        clear_dir(layout.cache_dir)

    def warm(nics: int = 4) -> None:
        # Whatever ran before may have emptied the cache: a start of this very domain, untimed,
        # fills it (compiled policy, probe answers, this definition's verdict) as a real one would.
        use_snapshot(False)
        spawn(argv(("prepare", "begin"), nics), base_env, xml[nics])

    def stale_policy() -> None:
        warm()
        clear_dir(layout.cache_dir, keep=lambda name: not name.startswith(("policy-", "verdict-")))

    def new_definition(nics: int = 4) -> None:
        # The domain was edited since its last start: no verdict, but probes and policy are warm.
        warm(nics)
        clear_dir(layout.cache_dir, keep=lambda name: not name.startswith("verdict-"))

    def snapshot_only() -> None:
        use_snapshot(True)
        clear_dir(layout.cache_dir, keep=lambda name: name.startswith("policy-"))

    baselines = [
        Case("/bin/sh -c :", ["/bin/sh", "-c", ":"], base_env),
        Case("python -I -c pass", [bench.python, "-I", "-c", "pass"], base_env),
        # What the installed hook starts for prepare begin (hooks/qemu, hookstart.py): no site.
        Case("python -I -S -c pass", [bench.python, "-I", "-S", "-c", "pass"], base_env),
        Case(
            'python -I -c "import lxml.etree"',
            [bench.python, "-I", "-c", "import lxml.etree"],
            base_env,
        ),
    ]
    noops = [Case(f"{e[0]} {e[1]} (no-op)", argv(e), base_env, xml[4]) for e in NOOP_EVENTS]
    prepare: dict[tuple[int, str], Case] = {}
    for nics in (1, 4, 64):
        for state, hook_prep in (("cold", cold), ("warm", functools.partial(warm, nics))):
            prepare[(nics, state)] = Case(
                f"prepare begin, {nics} NIC{'s' if nics > 1 else ''}, {state} cache",
                argv(("prepare", "begin"), nics),
                base_env,
                xml[nics],
                hook_prep,
                probes=count,
            )
    prepare[(4, "miss")] = Case(
        "prepare begin, 4 NICs, edited domain (no verdict), warm probes and policy",
        argv(("prepare", "begin"), 4),
        base_env,
        xml[4],
        new_definition,
        probes=count,
    )
    prepare[(4, "binary")] = Case(
        f"prepare begin, 4 NICs, warm cache, emulator {domains.QEMU} (a binary)",
        argv_binary,
        base_env,
        xml_binary,
        warm_binary,
    )
    prepare[(256, "warm")] = Case(
        "prepare begin, 256 NICs, warm cache",
        argv(("prepare", "begin"), 256),
        base_env,
        xml[256],
        functools.partial(warm, 256),
        probes=count,
    )
    prepare[(256, "miss")] = Case(
        "prepare begin, 256 NICs, edited domain (no verdict), warm probes and policy",
        argv(("prepare", "begin"), 256),
        base_env,
        xml[256],
        functools.partial(new_definition, 256),
        probes=count,
    )
    prepare[(4, "stale")] = Case(
        "prepare begin, 4 NICs, warm probes, YAML parsed (no compiled policy, no verdict)",
        argv(("prepare", "begin"), 4),
        base_env,
        xml[4],
        stale_policy,
        probes=count,
    )
    prepare[(4, "snapshot")] = Case(
        "prepare begin, 4 NICs, empty probe cache, warm snapshot",
        argv(("prepare", "begin"), 4),
        base_env,
        xml[4],
        snapshot_only,
        probes=count,
    )
    ordered = [
        *baselines,
        *noops,
        prepare[(1, "cold")],
        prepare[(1, "warm")],
        prepare[(4, "cold")],
        prepare[(4, "miss")],
        prepare[(4, "stale")],
        prepare[(4, "warm")],
        prepare[(4, "binary")],
        prepare[(4, "snapshot")],
        prepare[(64, "cold")],
        prepare[(64, "warm")],
        prepare[(256, "warm")],
        prepare[(256, "miss")],
    ]
    run_rounds(ordered, bench.rounds, bench.workdir)
    for case in ordered:
        case.peak_kib = peak_rss_kib(case, bench.workdir)

    sh, py, _py_no_site, lxml = (c.median for c in baselines)
    sh_cpu, lxml_cpu = baselines[0].cpu_median, baselines[3].cpu_median
    table = Table(
        "1. Hook latency per event (installed hook, env LC_ALL=C PATH=/usr/bin:/bin; "
        f"median of {bench.rounds} interleaved rounds)",
        [
            "case",
            "wall",
            "x sh -c :",
            "x py pass",
            "x py lxml",
            "CPU (user+sys)",
            "CPU x sh",
            "CPU x py lxml",
            "probes/run",
            "peak RSS",
            "target (wall)",
        ],
    )
    for case in ordered:
        wall, cpu = case.median, case.cpu_median
        if case in baselines:
            target = "baseline"
        elif case in noops:
            target = f"≤ 2.0 x sh: {verdict(wall / sh, 2.0)}"
        elif case is prepare[(4, "binary")]:
            target = f"≤ 1.5 x py pass: {verdict(wall / py, 1.5)}"
        elif case is prepare[(4, "miss")]:
            target = f"≤ 1.5 x lxml: {verdict(wall / lxml, 1.5)}"
        elif case is prepare[(256, "miss")]:
            ratio = wall / prepare[(4, "miss")].median
            target = f"≤ 1.2 x 4-NIC miss: {ratio:.2f}, {verdict(ratio, 1.2)}"
        else:
            target = ""
        probes = f"{statistics.mean(case.probe_counts):g}" if case.probe_counts else "-"
        table.add(
            case.label,
            ms(wall),
            f"{wall / sh:.2f}",
            f"{wall / py:.2f}",
            f"{wall / lxml:.2f}",
            ms(cpu),
            f"{cpu / sh_cpu:.2f}",
            f"{cpu / lxml_cpu:.2f}",
            probes,
            rss(case.peak_kib),
            target,
        )
    bench.tables.append(table)

    per_nic = (prepare[(64, "warm")].median - prepare[(1, "warm")].median) / 63
    per_nic_cold = (prepare[(64, "cold")].median - prepare[(1, "cold")].median) / 63
    bench.results["hook"] = {
        "baselines": {
            c.label: {"median_s": c.median, "cpu_median_s": c.cpu_median} for c in baselines
        },
        "cases": {
            c.label: {
                "median_s": c.median,
                "cpu_median_s": c.cpu_median,
                "peak_rss_kib": c.peak_kib,
                "probes_per_run": statistics.mean(c.probe_counts) if c.probe_counts else 0,
            }
            for c in ordered[len(baselines) :]
        },
        "per_nic_warm_s": per_nic,
        "per_nic_cold_s": per_nic_cold,
        # The targets' ratios, each against a baseline of this run.
        "hit_x_py_pass": prepare[(4, "binary")].median / py,
        "hit_script_emulator_x_py_pass": prepare[(4, "warm")].median / py,
        "miss_x_py_lxml": prepare[(4, "miss")].median / lxml,
        "miss_256_x_miss_4": prepare[(256, "miss")].median / prepare[(4, "miss")].median,
    }
    scaling = Table(
        "5a. Hook scaling with NICs (warm and cold cache)",
        ["", "1 NIC", "4 NICs", "64 NICs", "cost per extra NIC", "64-NIC / 1-NIC"],
    )
    for state in ("warm", "cold"):
        for metric, value in (("wall", Case.median), ("CPU", Case.cpu_median)):
            one, four, many = (value.fget(prepare[(n, state)]) for n in (1, 4, 64))  # type: ignore[attr-defined]
            scaling.add(
                f"{state} cache, {metric}",
                ms(one),
                ms(four),
                ms(many),
                f"{(many - one) / 63 * 1e6:.0f} µs",
                f"{many / one:.2f}",
            )
    bench.tables.append(scaling)
    bench_large_inputs(bench, hook, layout, base_env)
    uninstall(layout)


def bench_large_inputs(bench: Bench, hook: str, layout: Layout, env: dict[str, str]) -> None:
    """1 MiB and 60 MiB domains, on one line and formatted, through the installed hook and
    through the Python it execs (``python -I -S hookstart.py``): the wrapper adds nothing."""
    settings = hook_settings(hook)
    hookstart = [
        bench.python, "-I", "-S", os.path.join(settings["PACKAGE"], "hookstart.py"),
        "--policy", settings["POLICY"], "--snapshot", settings["SNAPSHOT"],
        "--cache-dir", settings["CACHE"], "--",
    ]  # fmt: skip
    cases: list[tuple[Case, Case]] = []
    for mib in (1, 60):
        for layout_name, sep in (("one line", ""), ("formatted", "\n")):
            name = f"{PREFIX}big{mib}{'f' if sep else 'l'}"
            path = bench.path(f"{name}.xml")
            with open(path, "wb") as handle:
                handle.write(domains.large_domain(name, mib * 1024 * 1024, sep))
            argv_tail = [name, "prepare", "begin", "-"]
            label = f"prepare begin, {mib} MiB domain on {layout_name}"
            clear = functools.partial(
                clear_dir, layout.cache_dir, keep=lambda n: not n.startswith("verdict-")
            )
            cases.append(
                (
                    Case(f"{label}: hooks/qemu", [hook, *argv_tail], env, path, clear),
                    Case(f"{label}: hookstart.py", [*hookstart, *argv_tail], env, path, clear),
                )
            )
    run_rounds([case for pair in cases for case in pair], 3, bench.workdir)
    table = Table(
        "1b. Large domains: the installed hook against the Python path it execs (no verdict)",
        ["case", "hooks/qemu", "python -I -S hookstart.py", "ratio", "target"],
    )
    for wrapped, direct in cases:
        ratio = wrapped.median / direct.median
        label = wrapped.label.rsplit(":", 1)[0]
        table.add(label, ms(wrapped.median), ms(direct.median), f"{ratio:.2f}", "about 1 x")
        bench.results.setdefault("large", {})[label] = ratio
    bench.tables.append(table)


# --- 2, 4, 5: validate-domain ------------------------------------------------------------------


def bench_validate(bench: Bench, sizes: Sequence[int], baseline_sample: int, runs: int) -> None:
    validate = os.path.join(os.path.dirname(bench.python), "validate-domain")
    policy = bench.path("validate-policy.yaml")
    with open(policy, "w", encoding="utf-8") as handle:
        handle.write(domains.bench_policy([bench.path("bin", "*", "qemu-system-*")]))
    caps = bench.path("caps.json")
    domains.write_json(caps, domains.snapshot_document([domains.QEMU]))
    env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}

    corpora: dict[int, str] = {}
    all_files: list[str] = []
    for size in sizes:
        corpora[size] = bench.path(f"corpus-{size}")
        files = domains.write_corpus(corpora[size], size)
        all_files = files if len(files) > len(all_files) else all_files
    cases = [
        Case(
            f"validate-domain --caps, {size:,} domains",
            [validate, "-p", policy, "--caps", caps, corpora[size]],
            env,
            expect_status=1,
        )
        for size in sizes
    ]
    measure_rss = os.access(GNU_TIME, os.X_OK)
    rss_file = bench.path("rss")
    for _ in range(runs):
        for case in cases:
            # Seconds-long runs: GNU time's extra fork is noise, and it gives the true peak RSS.
            argv = [GNU_TIME, "-f", "%M", "-o", rss_file, *case.argv] if measure_rss else case.argv
            sample = spawn(argv, case.env, stderr_path=bench.path("last-stderr"))
            if sample.status != case.expect_status:
                with open(bench.path("last-stderr"), encoding="utf-8", errors="replace") as handle:
                    raise SystemExit(
                        f"bench: {case.label}: exit {sample.status}: {handle.read().strip()}"
                    )
            case.samples.append(sample)
            if measure_rss:
                with open(rss_file, encoding="ascii") as handle:
                    case.peak_kib = max(case.peak_kib or 0, int(handle.read().split()[-1]))

    # Baseline: libvirt's own schema check, one process per file, on an evenly spaced sample.
    step = max(1, len(all_files) // baseline_sample)
    sample_files = all_files[::step][:baseline_sample]
    start = time.perf_counter()
    statuses = []
    for path in sample_files:
        statuses.append(
            spawn(
                ["/usr/bin/virt-xml-validate", path, "domain"],
                {"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
            ).status
        )
    per_file = (time.perf_counter() - start) / len(sample_files)
    invalid = sum(1 for s in statuses if s != 0)

    table = Table(
        f"2. validate-domain throughput (4 NICs/domain, --caps snapshot; median of {runs} runs)",
        [
            "corpus",
            "median wall",
            "domains/s",
            "baseline domains/s (virt-xml-validate per file)",
            "x baseline",
            "peak RSS",
            "target",
        ],
    )
    results: dict[str, Any] = {
        "baseline_per_file_s": per_file,
        "baseline_sample": len(sample_files),
        "baseline_schema_failures": invalid,
    }
    for size, case in zip(sizes, cases):
        rate = size / case.median
        speedup = (per_file * size) / case.median
        target = f"≥ 2,000/s: {verdict(rate, 2000, True)}; ≥ 100x: {verdict(speedup, 100, True)}"
        table.add(
            f"{size:,} files",
            f"{case.median:.2f} s",
            f"{rate:,.0f}",
            f"{1 / per_file:,.1f} (extrapolated: {per_file * size:.1f} s)",
            f"{speedup:.0f}",
            rss(case.peak_kib),
            target,
        )
        results[str(size)] = {
            "median_s": case.median,
            "domains_per_s": rate,
            "speedup": speedup,
            "peak_rss_kib": case.peak_kib,
        }
    table.rows.append(
        [
            "note",
            "",
            "",
            f"baseline timed on {len(sample_files)} evenly spaced files "
            f"({invalid} fail the schema) and extrapolated per file",
            "",
            "",
            "",
        ]
    )
    bench.tables.append(table)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        ratio = cases[-1].median / cases[0].median
        results["scaling"] = ratio
        scaling = Table(
            "5b. validate-domain scaling with corpus size",
            ["", f"{small:,}", f"{large:,}", "time ratio", "size ratio"],
        )
        scaling.add(
            "median wall",
            f"{cases[0].median:.2f} s",
            f"{cases[-1].median:.2f} s",
            f"{ratio:.2f}",
            f"{large / small:.0f}",
        )
        bench.tables.append(scaling)
    bench.results["validate"] = results
    bench_probe_counts(bench, validate, policy, caps, env)


def bench_probe_counts(
    bench: Bench, validate: str, policy: str, caps: str, env: dict[str, str]
) -> None:
    """Probe economy: each distinct emulator is run once per device it must answer for, and not
    at all when the probe cache or a snapshot already knows it."""
    first, count_a = make_counting_emulator(bench, "a")
    second, count_b = make_counting_emulator(bench, "b")
    corpus = bench.path("corpus-probes")
    domains.write_corpus(corpus, 1000, emulators=(first, second))
    with open(policy, "w", encoding="utf-8") as handle:
        handle.write(domains.bench_policy([bench.path("bin", "*", "qemu-system-*")]))
    cache = bench.path("validate-cache")
    table = Table(
        "5c. QEMU runs per validate-domain call (1,000 domains, 2 distinct emulators, "
        "2 devices each: virtio-net-pci, virtio-net-ccw)",
        ["run", "QEMU runs", "probe cache files afterwards", "wall"],
    )
    rows = []
    for label, extra in (
        ("empty probe cache", ["--cache-dir", cache]),
        ("warm probe cache", ["--cache-dir", cache]),
        ("--caps snapshot (no cache)", ["--no-cache", "--caps", caps]),
    ):
        before = count_a() + count_b()
        sample = spawn(
            [validate, "-p", policy, *extra, corpus], env, stderr_path=bench.path("last-stderr")
        )
        runs = count_a() + count_b() - before
        files: object = sum(1 for n in os.listdir(cache) if n.endswith(".json"))
        if "--no-cache" in extra:
            files = "not used (--no-cache)"
        table.add(label, runs, files, f"{sample.seconds:.2f} s (exit {sample.status})")
        rows.append({"run": label, "qemu_runs": runs, "cache_files": files})
    bench.tables.append(table)
    bench.results["probe_counts"] = rows


# --- 3: virsh start/destroy -------------------------------------------------------------------


def virsh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def libvirt_problem() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("virsh"):
        return "virsh is not installed (scripts/apt-deps)"
    try:
        if virsh("version", timeout=20).returncode != 0:
            return f"libvirtd does not answer on {URI} (start it: bash scripts/libvirt-up)"
    except subprocess.TimeoutExpired:
        return f"libvirtd does not answer on {URI} within 20 s"
    return None


def wait_for_daemon() -> None:
    time.sleep(0.3)  # SIGHUP is asynchronous: let the daemon start its reload
    for _ in range(100):
        if virsh("version", timeout=20).returncode == 0:
            return
        time.sleep(0.1)


@contextlib.contextmanager
def hook_installed(layout: Layout, python: str) -> Iterator[str]:
    outcome = install(layout, python=python)
    assert outcome.hook_path is not None
    try:
        daemon.reload_daemon()
        wait_for_daemon()
        yield outcome.hook_path
    finally:
        uninstall(layout)
        daemon.reload_daemon()
        wait_for_daemon()


def timed(*args: str) -> float:
    start = time.perf_counter()
    result = virsh(*args)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {result.stderr.strip()}")
    return elapsed


def bench_virsh(bench: Bench, cycles: int, blocks: int) -> None:
    problem = libvirt_problem()
    if problem is not None:
        print(f"\n### 3. virsh start/destroy\n\nSKIPPED: {problem}", flush=True)
        bench.results["virsh"] = {"skipped": problem}
        return
    hooks_dir = DEFAULT_HOOKS_DIR
    for existing in (
        os.path.join(hooks_dir, "qemu"),
        os.path.join(hooks_dir, "qemu.d", DROPIN_NAME),
    ):
        if os.path.lexists(existing) and is_ours(existing):
            reason = (
                f"{existing} is an installed libvirt-txmode hook (someone else's install): "
                "not touching it"
            )
            print(f"\n### 3. virsh start/destroy\n\nSKIPPED: {reason}", flush=True)
            bench.results["virsh"] = {"skipped": reason}
            return
    created_hooks_dir = not os.path.exists(hooks_dir)
    layout = Layout(
        hooks_dir=hooks_dir,
        config_dir=bench.path("virsh-etc"),
        state_dir=bench.path("virsh-state"),
        cache_dir=bench.path("virsh-cache"),
    )
    os.makedirs(layout.config_dir, mode=0o755)
    with open(layout.policy, "w", encoding="utf-8") as handle:
        handle.write(domains.bench_policy())
    os.chmod(layout.policy, 0o644)
    name = f"{PREFIX}{os.getpid()}"
    xml = bench.path("virsh-domain.xml")
    with open(xml, "w", encoding="utf-8") as handle:
        handle.write(domains.virsh_domain(name))
    starts: dict[str, list[float]] = {"without": [], "with": []}
    stops: dict[str, list[float]] = {"without": [], "with": []}
    first_start = 0.0
    events: dict[str, list[float]] = {}
    spans: dict[str, list[float]] = {}
    try:
        result = virsh("define", xml)
        if result.returncode != 0:
            raise RuntimeError(f"virsh define: {result.stderr.strip()}")
        timed("start", name)  # warm-up: libvirt's own caches, page cache
        timed("destroy", name)
        for block in range(blocks):
            for mode in ("without", "with"):
                context = (
                    hook_installed(layout, bench.python)
                    if mode == "with"
                    else contextlib.nullcontext("")
                )
                with context:
                    for cycle in range(cycles):
                        elapsed = timed("start", name)
                        if mode == "with" and block == 0 and cycle == 0:
                            first_start = elapsed  # empty probe cache: includes the QEMU probe
                        else:
                            starts[mode].append(elapsed)
                        stops[mode].append(timed("destroy", name))
                    if mode == "with" and not any(
                        n.startswith("policy-") for n in os.listdir(layout.cache_dir)
                    ):
                        raise RuntimeError(
                            "the installed hook never ran (no compiled policy in its cache dir)"
                        )
        events, spans = virsh_event_breakdown(bench, layout, name, cycles)
    finally:
        if virsh("domstate", name).stdout.strip() == "running":
            virsh("destroy", name)
        virsh("undefine", name)
        if os.path.lexists(os.path.join(hooks_dir, "qemu")) or os.path.isdir(
            os.path.join(hooks_dir, "qemu.d")
        ):
            uninstall(layout)
        if created_hooks_dir:
            with contextlib.suppress(OSError):
                os.rmdir(hooks_dir)
        daemon.reload_daemon()

    start_without, start_with = (
        statistics.median(starts["without"]),
        statistics.median(starts["with"]),
    )
    stop_without, stop_with = statistics.median(stops["without"]), statistics.median(stops["with"])
    overhead = (start_with - start_without) / start_without * 100
    stop_overhead = (stop_with - stop_without) / stop_without * 100
    cycle_overhead = (
        ((start_with + stop_with) - (start_without + stop_without))
        / (start_without + stop_without)
        * 100
    )
    table = Table(
        "3. virsh start/destroy of a TCG domain (128 MiB, no disk, user-mode virtio NIC with "
        f"txmode; median of {len(starts['with'])})",
        ["", "without hook", "with hook", "hook adds", "target"],
    )
    table.add(
        "virsh start",
        ms(start_without),
        ms(start_with),
        f"{overhead:+.1f} %",
        f"≤ 20 %: {verdict(overhead, 20)}",
    )
    table.add("virsh destroy", ms(stop_without), ms(stop_with), f"{stop_overhead:+.1f} %", "")
    table.add(
        "start + destroy",
        ms(start_without + stop_without),
        ms(start_with + stop_with),
        f"{cycle_overhead:+.1f} %",
        "",
    )
    table.add(
        "first start after install (empty probe cache)",
        "",
        ms(first_start),
        f"{(first_start - start_without) / start_without * 100:+.1f} %",
        "",
    )
    bench.tables.append(table)
    breakdown = Table(
        "3b. Hook time per libvirt event during virsh start/destroy "
        "(timing wrapper around the installed hook)",
        ["event", "median", "runs", "share of median virsh start"],
    )
    for event, values in events.items():
        share = (
            statistics.median(values) / start_with * 100
            if event.split()[0] in ("prepare", "start", "started")
            else None
        )
        breakdown.add(
            event,
            ms(statistics.median(values)),
            len(values),
            f"{share:.1f} %" if share is not None else "(on destroy)",
        )
    bench.tables.append(breakdown)
    span_with, span_without = statistics.median(spans["with"]), statistics.median(spans["without"])
    hook_share = statistics.median(spans["hook"]) / span_with * 100
    growth = (span_with - span_without) / span_without * 100
    start_path = Table(
        "3c. The hook's share of the start path inside libvirt (prepare begin -> started begin, "
        f"timestamped by the wrapper of 3b; median of {len(spans['with'])} starts each)",
        ["", "median", "target"],
    )
    start_path.add("span, wrapper running nothing", ms(span_without), "baseline")
    start_path.add("span, wrapper running the installed hook (verdict cached)", ms(span_with), "")
    start_path.add(
        "the hook's time inside the span (prepare begin, start begin)",
        ms(statistics.median(spans["hook"])),
        "",
    )
    start_path.add(
        "hook's share of the span", f"{hook_share:.1f} %", f"≤ 5 %: {verdict(hook_share, 5)}"
    )
    start_path.add("span growth with the hook", f"{growth:+.1f} %", f"≤ 3 %: {verdict(growth, 3)}")
    bench.tables.append(start_path)
    bench.results["virsh"] = {
        "start_without_s": start_without,
        "start_with_s": start_with,
        "start_overhead_pct": overhead,
        "destroy_without_s": stop_without,
        "destroy_with_s": stop_with,
        "destroy_overhead_pct": stop_overhead,
        "first_start_s": first_start,
        "events": {e: statistics.median(v) for e, v in events.items()},
        "start_path_span_with_s": span_with,
        "start_path_span_without_s": span_without,
        "start_path_hook_share_pct": hook_share,
        "start_path_growth_pct": growth,
    }


def virsh_event_breakdown(
    bench: Bench, layout: Layout, name: str, cycles: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Put a wrapper that timestamps each invocation in place of the installed hook; restore it.

    Returns the hook's time per event, and per start the span inside libvirt from ``prepare
    begin`` to ``started begin`` with the wrapper running the real hook ("with") and with it
    running nothing ("without"; the same timestamps, so they cost both sides alike), together
    with the real hook's time inside that span ("hook")."""
    log = bench.path("events.log")
    real = bench.path("hook-real")
    events: dict[str, list[float]] = {}
    spans: dict[str, list[float]] = {"with": [], "without": [], "hook": []}
    with hook_installed(layout, bench.python) as hook:
        shutil.copy2(hook, real)
        with open(hook, "rb") as handle:
            original = handle.read()
        try:
            for mode in ("with", "without", "with", "without"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(log)
                command = f'{real} "$@"' if mode == "with" else ":"
                wrapper = (
                    "#!/bin/sh\n"
                    "t0=$(date +%s%N)\n"
                    f"{command}\n"
                    "rc=$?\n"
                    "t1=$(date +%s%N)\n"
                    f'echo "$2 $3 $t0 $t1 $rc" >> {log}\n'
                    "exit $rc\n"
                )
                write_atomic(hook, wrapper.encode(), mode=0o755)
                for _ in range(cycles):
                    timed("start", name)
                    timed("destroy", name)
                _read_events(log, mode, events, spans)
        finally:
            write_atomic(hook, original, mode=0o755)  # uninstall checks the digest
    return events, spans


def _read_events(
    log: str, mode: str, events: dict[str, list[float]], spans: dict[str, list[float]]
) -> None:
    begin: Optional[int] = None
    inside = 0
    with open(log, encoding="ascii") as handle:
        for line in handle:
            op, sub, t0, t1, _rc = line.split()
            event = f"{op} {sub}"
            if mode == "with":
                events.setdefault(event, []).append((int(t1) - int(t0)) / 1e9)
            if event == "prepare begin":
                begin, inside = int(t0), 0
            if begin is not None and event == "started begin":
                spans[mode].append((int(t0) - begin) / 1e9)
                if mode == "with":
                    spans["hook"].append(inside / 1e9)
                begin = None
            elif begin is not None:
                inside += int(t1) - int(t0)


# --- main ----------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a 1k/2k corpus")
    parser.add_argument(
        "--rounds", type=int, default=None, help="hook rounds (default 21, quick 7)"
    )
    parser.add_argument(
        "--no-libvirt", action="store_true", help="skip the virsh start/destroy part"
    )
    parser.add_argument(
        "--only",
        choices=["hook", "validate", "virsh"],
        action="append",
        help="run only these parts",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--python",
        default=PYTHON,
        help="interpreter the hook is installed with and the Python baselines use "
        "(default: this one), e.g. a non-editable install",
    )
    args = parser.parse_args(argv)
    parts = set(args.only or ["hook", "validate", "virsh"])
    validate = os.path.join(os.path.dirname(args.python), "validate-domain")
    if "validate" in parts and not os.access(validate, os.X_OK):
        print(
            f"bench: no {validate}: run me with the project's interpreter "
            "(.venv/bin/python bench/run.py) or pass --python of an installation",
            file=sys.stderr,
        )
        return 2
    if args.no_libvirt:
        parts.discard("virsh")
    rounds = args.rounds or (7 if args.quick else 21)
    workdir = tempfile.mkdtemp(prefix="txmbench-")
    os.chmod(workdir, 0o755)  # noqa: S103 - probes run as the QEMU user and must reach the counting wrappers
    bench = Bench(workdir, rounds, python=args.python)
    started = time.perf_counter()
    print(
        f"libvirt-txmode benchmarks: hook interpreter {args.python}, harness {PYTHON} "
        f"({sys.version.split()[0]}), {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; temp {workdir}",
        flush=True,
    )
    try:
        if "hook" in parts:
            bench_hook(bench)
            print(*(t.render() for t in bench.tables), sep="\n", flush=True)
        if "validate" in parts:
            count = len(bench.tables)
            sizes = (1000, 2000) if args.quick else (1000, 10000)
            bench_validate(
                bench,
                sizes,
                baseline_sample=100 if args.quick else 200,
                runs=3 if args.quick else 5,
            )
            from validate_floors import bench_validate_floors  # noqa: PLC0415

            bench_validate_floors(
                bench,
                large=2000 if args.quick else 10000,
                rss_sizes=(1000, 2000 if args.quick else 20000),
                runs=3 if args.quick else 5,
            )
            print(*(t.render() for t in bench.tables[count:]), sep="\n", flush=True)
        if "virsh" in parts:
            count = len(bench.tables)
            bench_virsh(bench, cycles=3 if args.quick else 5, blocks=2)
            print(*(t.render() for t in bench.tables[count:]), sep="\n", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.2f})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(bench.results, handle, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
