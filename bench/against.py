"""This tree against another install of libvirt-txmode (a previous release), in the same run.

A ratio to a floor moves with the floor: the bare lxml loop of table 6 ran at 8,400 to 16,600
files/s on this machine in different runs while ``validate-domain`` stayed near 6,000/s. Whether
a change made the tool slower is answered by running both trees' commands on the same inputs,
round by round in a shuffled order, next to their floors:

- ``validate-domain -j 1 -f json --caps`` over one generated corpus (each tree's own bench policy
  and snapshot, as its ``bench/domains.py`` writes them), and the bare lxml loop of table 6;
- the hook's miss (an edited domain: probes and compiled policy warm, no decision cached) as the
  installed hook execs it, ``python -I -S PACKAGE/hookstart.py ...``, and
  ``python -I -c "import lxml.etree"``.

Usage (the other tree checked out with its own bench/prod-venv built, e.g. release 0.3.0):

    git worktree add --detach ../v030 c0d6b777724158d113e2d73b21e58a4ec135269c
    (cd ../v030 && python3 -m venv .venv && .venv/bin/pip install lxml pyyaml \\
        && .venv/bin/pip install --no-deps -e . && bash bench/prod-venv)
    .venv/bin/python bench/against.py --other ../v030 --python "$(bash bench/prod-venv)"
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import domains
from run import Case, Table, ms, run_rounds
from validate_floors import FLOOR

ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}


@dataclass
class Tree:
    """One install under test: its interpreter and package directory, and its checkout, whose
    own bench/domains.py (run by the checkout's .venv) writes a policy and a snapshot it reads."""

    label: str
    python: str
    source: str

    @property
    def package(self) -> str:
        lib = os.path.join(os.path.dirname(os.path.dirname(self.python)), "lib")
        return glob.glob(os.path.join(lib, "python3*", "site-packages", "libvirt_txmode"))[0]

    def write(self, what: str, path: str) -> None:
        """``what``: "policy" or "caps", written as this tree's bench writes it."""
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import domains\n"
            "if sys.argv[2] == 'policy':\n"
            "    open(sys.argv[3], 'w').write(domains.bench_policy())\n"
            "else:\n"
            "    domains.write_json(sys.argv[3], domains.snapshot_document([domains.QEMU]))\n"
        )
        harness = os.path.join(self.source, ".venv", "bin", "python")
        bench = os.path.join(self.source, "bench")
        subprocess.run([harness, "-c", code, bench, what, path], check=True, cwd=self.source)
        os.chmod(path, 0o644)


def _validate_case(tree: Tree, work: str, corpus: str) -> Case:
    policy = os.path.join(work, f"{tree.label}-policy.yaml")
    tree.write("policy", policy)
    caps = os.path.join(work, f"{tree.label}-caps.json")
    tree.write("caps", caps)
    validate = os.path.join(os.path.dirname(tree.python), "validate-domain")
    argv = [validate, "-p", policy, "--caps", caps, "-j", "1", "-f", "json", corpus]
    return Case(f"{tree.label}: validate-domain -j 1 -f json", argv, ENV, expect_status=1)


def _miss_case(tree: Tree, work: str, xml: str) -> Case:
    """The hook's miss: a warm start first (probes, compiled policy), then every decision
    file removed before each timed run."""
    policy = os.path.join(work, f"{tree.label}-hook-policy.yaml")
    tree.write("policy", policy)
    cache = os.path.join(work, f"{tree.label}-cache")
    argv = [
        tree.python, "-I", "-S", os.path.join(tree.package, "hookstart.py"),
        "--policy", policy, "--snapshot", os.path.join(work, "no-snapshot.json"),
        "--cache-dir", cache, "--", "txmbench-against", "prepare", "begin", "-",
    ]  # fmt: skip

    def edited() -> None:
        for name in os.listdir(cache) if os.path.isdir(cache) else ():
            if name.startswith("verdict"):  # both trees' decision files
                os.unlink(os.path.join(cache, name))

    return Case(f"{tree.label}: hook miss, 4 NICs", argv, ENV, xml, edited)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, help="the other tree's checkout")
    parser.add_argument("--other-python", help="its interpreter (default OTHER/.bench-venv)")
    parser.add_argument("--python", required=True, help="this tree's installed interpreter")
    parser.add_argument("--size", type=int, default=10000, help="corpus size (default 10000)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hook-rounds", type=int, default=21)
    options = parser.parse_args(argv)
    other_python = options.other_python or os.path.join(options.other, ".bench-venv/bin/python")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [
        Tree("this", os.path.abspath(options.python), here),
        Tree("other", os.path.abspath(other_python), os.path.abspath(options.other)),
    ]
    work = tempfile.mkdtemp(prefix="txmagainst-")
    try:
        corpus = os.path.join(work, "corpus")
        domains.write_corpus(corpus, options.size)
        floor = os.path.join(work, "floor.py")
        with open(floor, "w", encoding="utf-8") as handle:
            handle.write(FLOOR)
        xml = os.path.join(work, "hook.xml")
        with open(xml, "wb") as handle:
            handle.write(domains.hook_domain("txmbench-against", 4, domains.QEMU))
        validate = [_validate_case(tree, work, corpus) for tree in trees]
        floors = [Case("bare lxml loop (floor)", [trees[0].python, floor, corpus], ENV)]
        run_rounds([*validate, *floors], options.rounds, work)
        lxml_import = [trees[0].python, "-I", "-c", "import lxml.etree"]
        misses = [_miss_case(tree, work, xml) for tree in trees]
        baseline = Case('python -I -c "import lxml.etree"', lxml_import, ENV)
        run_rounds([*misses, baseline], options.hook_rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(
        f"validate-domain, {options.size:,} domains (median of {options.rounds} rounds)",
        ["case", "wall", "files/s", "speed x floor", "speed x other"],
    )
    for case in [*validate, *floors]:
        table.add(
            case.label,
            ms(case.median),
            f"{options.size / case.median:,.0f}",
            f"{floors[0].median / case.median:.2f}",
            f"{validate[1].median / case.median:.2f}" if case in validate else "-",
        )
    print(table.render())
    table = Table(
        f"hook miss (median of {options.hook_rounds} rounds)",
        ["case", "wall", "CPU", "time x lxml import", "time x other"],
    )
    for case in [*misses, baseline]:
        table.add(
            case.label,
            ms(case.median),
            ms(case.cpu_median),
            f"{case.median / baseline.median:.2f}",
            f"{case.median / misses[1].median:.2f}" if case in misses else "-",
        )
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
