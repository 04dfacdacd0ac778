"""parallel.in_slices: worker interpreters, results in slice order, every worker reaped.

The workers are real processes running the functions below (pickled by name, so they live at
module level); validate-domain's own -j runs are compared with -j 1 in
test_throughput_equivalence.py.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections.abc import Sequence

import pytest

from libvirt_txmode.ci.parallel import in_slices


def _tagged(tag: str, part: Sequence[int]) -> list[str]:
    return [f"{tag}{n}:{os.getpid()}" for n in part]


def _noisy(part: Sequence[int]) -> list[int]:
    print("chatter on stdout must not reach the result")
    sys.stdout.flush()
    return [n * 2 for n in part]


def _failing(part: Sequence[int]) -> list[int]:
    raise ValueError(f"cannot take {part[0]}")


def _no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_slices_come_back_in_order_from_other_processes() -> None:
    results = list(in_slices(list(range(10)), 3, functools.partial(_tagged, "n")))
    assert [[item.split(":")[0] for item in part] for part in results] == [
        ["n0", "n1", "n2", "n3"],
        ["n4", "n5", "n6", "n7"],
        ["n8", "n9"],
    ]
    pids = [{item.split(":")[1] for item in part} for part in results]
    assert pids[0] == {str(os.getpid())}  # the first slice: this process
    assert len({*pids[1], *pids[2]} - pids[0]) == 2  # the others: two other processes
    assert _no_children_left()


def test_a_worker_printing_leaves_its_result_intact() -> None:
    assert list(in_slices([1, 2, 3, 4], 2, _noisy)) == [[2, 4], [6, 8]]


def test_a_failing_worker_is_an_error_in_the_caller() -> None:
    with pytest.raises(RuntimeError, match="worker process failed: ValueError: cannot take 3"):
        list(in_slices([1, 2, 3, 4], 2, _failing, local=_noisy))
    assert _no_children_left()


def test_leaving_early_reaps_every_worker() -> None:
    results = in_slices(list(range(40)), 4, functools.partial(_tagged, "x"))
    next(results)
    results.close()
    assert _no_children_left()


def test_workers_start_safely_while_threads_run() -> None:
    # fork() with a thread running is what Python 3.12 on warns about (and may deadlock).
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        # Recorded, not raised: CPython swallows the warning fork() would turn into an error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert len(list(in_slices(list(range(6)), 3, functools.partial(_tagged, "t")))) == 3
        assert [str(w.message) for w in caught] == []
    finally:
        stop.set()
        busy.join()
