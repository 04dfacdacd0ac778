"""validate-domain against its floors, each measured in the same run (bench/run.py, "validate").

- start-up: ``validate-domain --version`` against ``python -c pass`` of the same interpreter;
- throughput: ``validate-domain -j 1`` against a bare lxml loop over the same files (read, parse
  with the same safety settings, walk ``devices/interface/driver``) — the parser floor;
- formats: JUnit, SARIF, Code Quality and text against JSON on the same corpus, whole runs;
- memory: peak RSS on the large corpus against the small one (GNU time).

All runs are interleaved round by round, so a noisy neighbour hits every case alike.
"""

from __future__ import annotations

import os
from typing import Any

import domains
from run import GNU_TIME, Bench, Case, Table, rss, spawn, verdict

from libvirt_txmode.report.registry import FORMAT_NAMES

# The floor: what any checker must do per file. Same parser settings as domain.make_parser.
FLOOR = """
import os, sys
from lxml import etree
parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
count = 0
for root, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(files):
        if name.endswith(".xml"):
            with open(os.path.join(root, name), "rb") as handle:
                domain = etree.fromstring(handle.read(), parser)
            for interface in domain.iterfind("devices/interface"):
                driver = interface.find("driver")
                count += driver is not None and driver.get("txmode") is not None
print(count)
"""


def bench_validate_floors(bench: Bench, large: int, rss_sizes: tuple[int, int], runs: int) -> None:
    validate = os.path.join(os.path.dirname(bench.python), "validate-domain")
    policy = bench.path("floors-policy.yaml")
    with open(policy, "w", encoding="utf-8") as handle:
        handle.write(domains.bench_policy())
    caps = bench.path("floors-caps.json")
    domains.write_json(caps, domains.snapshot_document([domains.QEMU]))
    small = rss_sizes[0]
    corpora = {}
    for size in sorted({large, *rss_sizes}):
        corpora[size] = bench.path(f"floors-corpus-{size}")
        domains.write_corpus(corpora[size], size)
    floor_script = bench.path("floor.py")
    with open(floor_script, "w", encoding="utf-8") as handle:
        handle.write(FLOOR)
    env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}

    def check(fmt: str, size: int) -> list[str]:
        return [validate, "-p", policy, "--caps", caps, "-j", "1", "-f", fmt, corpora[size]]

    pass_case = Case("python -c pass", [bench.python, "-c", "pass"], env)
    version_case = Case("validate-domain --version", [validate, "--version"], env)
    floor_case = Case("bare lxml loop", [bench.python, floor_script, corpora[large]], env)
    # json first: every other format's time is given as a ratio of it.
    formats = ("json", *(name for name in FORMAT_NAMES if name != "json"))
    format_cases = {
        fmt: Case(f"-f {fmt}", check(fmt, large), env, expect_status=1) for fmt in formats
    }

    for _ in range(max(runs, 5)):
        for case in (pass_case, version_case):
            case.samples.append(spawn(case.argv, case.env))
    for _ in range(runs):
        for case in (floor_case, *format_cases.values()):
            sample = spawn(case.argv, case.env, stderr_path=bench.path("last-stderr"))
            if sample.status != case.expect_status:
                with open(bench.path("last-stderr"), encoding="utf-8", errors="replace") as handle:
                    raise SystemExit(f"bench: {case.label}: exit {sample.status}: {handle.read()}")
            case.samples.append(sample)

    peaks: dict[tuple[str, int], int] = {}
    if os.access(GNU_TIME, os.X_OK):
        for fmt in ("json", "sarif"):
            for size in rss_sizes:
                out = bench.path("rss")
                spawn([GNU_TIME, "-f", "%M", "-o", out, *check(fmt, size)], env)
                with open(out, encoding="ascii") as handle:
                    peaks[(fmt, size)] = int(handle.read().split()[-1])

    table = Table(
        f"6. validate-domain against its floors ({large:,} domains, -j 1, --caps; medians of "
        f"{runs} interleaved runs)",
        ["measure", "validate-domain", "floor in the same run", "ratio", "target"],
    )
    startup = version_case.median / pass_case.median
    table.add(
        "start-up (--version)",
        f"{version_case.median * 1000:.1f} ms",
        f"python -c pass: {pass_case.median * 1000:.1f} ms",
        f"{startup:.2f}x",
        f"≤ 3x: {verdict(startup, 3)}",
    )
    json_case = format_cases["json"]
    share = floor_case.median / json_case.median
    table.add(
        "domains/s (-f json)",
        f"{large / json_case.median:,.0f}",
        f"bare lxml loop: {large / floor_case.median:,.0f}",
        f"{share:.2f}x the floor",
        f"≥ 0.7x: {verdict(share, 0.7, True)}",
    )
    results: dict[str, Any] = {
        "startup_ratio": startup,
        "floor_share": share,
        "floor_domains_per_s": large / floor_case.median,
        "json_domains_per_s": large / json_case.median,
    }
    for fmt in formats[1:]:
        ratio = format_cases[fmt].median / json_case.median
        results[f"{fmt}_over_json"] = ratio
        target = f"≤ 1.5x: {verdict(ratio, 1.5)}" if fmt in ("junit", "sarif") else ""
        table.add(
            f"-f {fmt}",
            f"{format_cases[fmt].median:.2f} s",
            f"-f json: {json_case.median:.2f} s",
            f"{ratio:.2f}x",
            target,
        )
    biggest = rss_sizes[1]
    for fmt in ("json", "sarif"):
        if (fmt, biggest) in peaks:
            ratio = peaks[(fmt, biggest)] / peaks[(fmt, small)]
            results[f"rss_{fmt}_ratio"] = ratio
            table.add(
                f"peak RSS, -f {fmt}",
                f"{biggest:,}: {rss(peaks[(fmt, biggest)])}",
                f"{small:,}: {rss(peaks[(fmt, small)])}",
                f"{ratio:.2f}x",
                f"≤ 1.3x: {verdict(ratio, 1.3)}",
            )
    bench.tables.append(table)
    bench.results["validate_floors"] = results
