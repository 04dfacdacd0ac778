"""Checking many files on several CPUs: consecutive slices of the inputs in forked processes.

validate-domain's only concurrency. fork, not multiprocessing: the children inherit the policy,
the capabilities and the work function, so only their results are pickled and nothing is imported
again; results come back in slice order, so the joined output equals a one-process run.
"""

from __future__ import annotations

import os

# typing.TYPE_CHECKING without importing typing: cli.py imports this module for --help, whose
# start-up time counts.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Callable, Optional, TypeVar

    T = TypeVar("T")
    R = TypeVar("R")

# Below this many files forking costs more than it saves.
PARALLEL_MIN_FILES = 200


def job_count(requested: Optional[int], count: int) -> int:
    if requested is not None:
        return max(1, min(requested, count))
    if count < PARALLEL_MIN_FILES:
        return 1  # forking costs more than it saves on a few files
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, count // (PARALLEL_MIN_FILES // 2)))


def in_slices(  # noqa: C901 - fork, collect and reap on every path, in one reading
    items: Sequence[T],
    jobs: int,
    work: Callable[[Sequence[T]], R],
    *,
    local: Optional[Callable[[Sequence[T]], R]] = None,
) -> Iterator[R]:
    """``work`` on ``jobs`` consecutive slices of ``items``, the first in this process (with
    ``local`` instead, if given: it may write as it goes) and the others in forked children; the
    results come one at a time, in slice order, each child's as soon as it is needed.

    fork, not multiprocessing: the children inherit the policy, the capabilities and ``work``
    itself, so only their results are pickled, and nothing else needs importing. A child never
    returns into the caller's code: it writes its pickled result (or its error) to a pipe and
    leaves with os._exit, which flushes none of the parent's buffered output. Iterate to the
    end (or close the iterator): that is when every child has been reaped.
    """
    import pickle  # noqa: PLC0415

    own = work if local is None else local
    if jobs <= 1 or len(items) <= 1:
        yield own(items)
        return
    size = -(-len(items) // jobs)
    slices = [items[i : i + size] for i in range(0, len(items), size)]
    children: list[tuple[int, int]] = []
    try:
        for part in slices[1:]:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; its results are what the tests compare
                os.close(read_end)
                for _, sibling in children:  # earlier workers' pipes: only the parent reads them
                    os.close(sibling)
                try:
                    try:
                        payload = pickle.dumps((True, work(part)), pickle.HIGHEST_PROTOCOL)
                    except BaseException as exc:  # reported by the parent instead
                        payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
                    with os.fdopen(write_end, "wb") as pipe:
                        pipe.write(payload)
                finally:
                    os._exit(0)
            os.close(write_end)
            children.append((pid, read_end))
        yield own(slices[0])
        for _, read_end in children:
            with os.fdopen(read_end, "rb", closefd=False) as pipe:
                payload = pipe.read()
            if not payload:
                raise RuntimeError("worker process exited without a result")
            # Our own child's output, through a pipe nobody else holds.
            ok, value = pickle.loads(payload)  # noqa: S301
            del payload
            if not ok:
                raise RuntimeError(f"worker process failed: {value}")
            yield value
    finally:
        # On every path (also an exception above, or the caller leaving early): no open pipe,
        # no zombie. All read ends are closed before the first wait, so a child still writing
        # gets EPIPE and exits.
        for _, read_end in children:
            os.close(read_end)
        for pid, _ in children:
            os.waitpid(pid, 0)
