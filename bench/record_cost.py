"""What the records' dataclasses cost the hook's miss: importing hook.gate (the full check's
modules) after lxml, with ``dataclass`` as written and with the methods it generates cut down.

The package's records are ``@dataclass(frozen=True, slots=True)``. On Python 3.11 each such class
costs about 1 ms to create: dataclasses compiles ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` and ``__delattr__`` with an ``exec`` each. Every process pays it
for every class it imports; the hook's miss imports about 45. Variants, each in a fresh
interpreter, rounds interleaved:

- ``as written``: the package as it is;
- ``not frozen``: ``frozen`` dropped (no ``__setattr__``/``__delattr__``/``__hash__``);
- ``init only``: ``frozen``, ``eq`` and ``repr`` dropped (what a hand-made record class costs).

Usage: .venv/bin/python bench/record_cost.py [--python .bench-venv/bin/python] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Optional

PROBE = """
import sys, time
import lxml.etree, dataclasses
variant = sys.argv[1]
original = dataclasses.dataclass
def variant_dataclass(cls=None, /, **options):
    if variant != "as written":
        options.pop("frozen", None)
    if variant == "init only" and not options.get("unsafe_hash"):
        options.update(eq=False, repr=False)
    return original(**options) if cls is None else original(cls, **options)
dataclasses.dataclass = variant_dataclass
start = time.perf_counter()
import libvirt_txmode.hook.gate
print(time.perf_counter() - start)
"""
VARIANTS = ("as written", "not frozen", "init only")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the install to measure")
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(options.rounds):
        for variant in VARIANTS:
            done = subprocess.run(
                [options.python, "-I", "-c", PROBE, variant],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds[variant].append(float(done.stdout))
    written = statistics.median(seconds["as written"])
    print(f"import libvirt_txmode.hook.gate after lxml, median of {options.rounds} rounds:")
    for variant in VARIANTS:
        median = statistics.median(seconds[variant])
        print(f"  {variant:<11} {median * 1000:6.1f} ms  ({median / written:.2f} x as written)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
