"""What counting decisions (tally.py) costs the hook's cached path.

    .venv/bin/python bench/decision_counter.py [--rounds N] [--python PATH]

One hook installed as install-hook does it (temporary directories, no snapshot), one domain
whose verdict is cached; then, in interleaved rounds, ``prepare begin`` through the installed
``sh`` wrapper with libvirt's environment:

* **counting**: every run takes the lock on ``CACHE/decisions``, reads it and rewrites it;
* **not counting**: ``CACHE/decisions`` is a directory, so opening it fails and the counter gives
  up after the cache directory's trust check, which the verdict lookup made anyway.

Also times ``tally.count_decision`` itself in this process. Medians of wall and CPU time; a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from libvirt_txmode.admin.install import install
from libvirt_txmode.admin.layout import Layout
from libvirt_txmode.common import logsink
from libvirt_txmode.hook import tally

ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
XML = (
    b"<domain type='qemu'><name>bench-counter</name><memory unit='MiB'>128</memory>"
    b"<os><type arch='x86_64'>hvm</type></os><devices>"
    b"<emulator>/usr/bin/qemu-system-x86_64</emulator>"
    b"<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/>"
    b"<driver txmode='iothread'/></interface></devices></domain>\n"
)
POLICY = "version: 1\nemulators: [/usr/bin/qemu-system-*]\n"


def run_once(hook: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        ["/bin/sh", hook, "bench-counter", "prepare", "begin", "-"],
        input=XML,
        env=ENV,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="txm-bench-counter-")
    try:
        layout = Layout(*(os.path.join(base, d) for d in ("hooks", "etc", "state", "cache")))
        os.makedirs(layout.config_dir)
        with open(layout.policy, "w", encoding="utf-8") as handle:
            handle.write(POLICY)
        outcome = install(layout, python=args.python, take_snapshot=None)
        hook = outcome.hook_path
        assert hook is not None
        run_once(hook)  # the full check: from now on the verdict is cached
        counter = os.path.join(layout.cache_dir, tally.FILE_NAME)
        aside = counter + ".bench"
        samples: dict[str, list[tuple[float, float]]] = {"counting": [], "not counting": []}
        for round_ in range(args.rounds):
            order = list(samples) if round_ % 2 else list(reversed(samples))
            for case in order:
                if case == "counting":
                    samples[case].append(run_once(hook))
                    continue
                os.replace(counter, aside)
                os.mkdir(counter)
                samples[case].append(run_once(hook))
                os.rmdir(counter)
                os.replace(aside, counter)
        counted = tally.read(layout.cache_dir)[0][logsink.ALLOWED]
        print(f"hook cached path, median of {args.rounds} interleaved rounds ({args.python}):")
        for case, runs in samples.items():
            wall = statistics.median(w for w, _ in runs) * 1000
            cpu = statistics.median(c for _, c in runs) * 1000
            print(f"  {case:<13} wall {wall:6.2f} ms   CPU {cpu:6.2f} ms")
        print(f"  decisions counted: {counted} (expected {args.rounds + 1})")
        assert counted == args.rounds + 1

        os.unlink(counter)
        fields = [{"MESSAGE_ID": logsink.MESSAGE_IDS[logsink.ALLOWED]}]
        calls = 2000
        start = time.perf_counter()
        for _ in range(calls):
            tally.count_decision(layout.cache_dir, fields)
        per_call = (time.perf_counter() - start) / calls * 1e6
        print(f"tally.count_decision in-process: {per_call:.1f} µs per call ({calls} calls)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
