"""Checking many files on several CPUs: consecutive slices of the inputs in worker processes.

validate-domain's only concurrency. Each worker is a fresh interpreter (subprocess), never a
fork() of this one: a fork copies a process whose other threads may hold locks (Python 3.12 warns
about it), and a process that embeds validate-domain may have threads. What a worker needs comes
to it pickled: ``work`` must be a module-level function (or a ``functools.partial`` of one) with
plain data for arguments; its result comes back pickled. Results come back in slice order, so
the joined output equals a one-process run.
"""

from __future__ import annotations

import os

# typing.TYPE_CHECKING without importing typing: cli.py imports this module for --help, whose
# start-up time counts.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator, Sequence
    from typing import Callable, Optional, TypeVar

    T = TypeVar("T")
    R = TypeVar("R")

# Below this many files starting workers costs more than it saves.
PARALLEL_MIN_FILES = 200
# A worker imports this very package (the folder that holds it comes first on its sys.path),
# whatever the caller's current directory holds.
_WORKER_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from libvirt_txmode.ci.parallel import worker_main; worker_main()"
)


def job_count(requested: Optional[int], count: int) -> int:
    if requested is not None:
        return max(1, min(requested, count))
    if count < PARALLEL_MIN_FILES:
        return 1  # starting workers costs more than it saves on a few files
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, count // (PARALLEL_MIN_FILES // 2)))


def in_slices(
    items: Sequence[T],
    jobs: int,
    work: Callable[[Sequence[T]], R],
    *,
    local: Optional[Callable[[Sequence[T]], R]] = None,
) -> Iterator[R]:
    """``work`` on ``jobs`` consecutive slices of ``items``, the first in this process (with
    ``local`` instead, if given: it may write as it goes) and the others in worker processes;
    the results come one at a time, in slice order, each worker's as soon as it is needed.

    ``work`` and the items are pickled to the workers (see the module's docstring). Iterate to
    the end (or close the iterator): that is when every worker has been reaped.
    """
    own = work if local is None else local
    if jobs <= 1 or len(items) <= 1:
        yield own(items)
        return
    import pickle  # noqa: PLC0415 - only a parallel run pays for these
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    size = -(-len(items) // jobs)
    slices = [items[i : i + size] for i in range(0, len(items), size)]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for part in slices[1:]:
            # The task in an unlinked file, not a pipe: writing it never waits for the worker's
            # interpreter to start, so this process begins its own slice at once.
            with tempfile.TemporaryFile() as task:
                pickle.dump((work, part), task, pickle.HIGHEST_PROTOCOL)
                task.seek(0)
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _WORKER_CODE, here],
                        stdin=task,
                        stdout=subprocess.PIPE,
                    )
                )
        yield own(slices[0])
        for worker in workers:
            assert worker.stdout is not None  # noqa: S101 - stdout=PIPE above
            payload = worker.stdout.read()
            if not payload:
                raise RuntimeError("worker process exited without a result")
            # Our own worker's output, through a pipe nobody else holds.
            ok, value = pickle.loads(payload)  # noqa: S301
            del payload
            if not ok:
                raise RuntimeError(f"worker process failed: {value}")
            yield value
    finally:
        # On every path (also an exception above, or the caller leaving early): no open pipe,
        # no zombie. All read ends are closed before the first wait, so a worker still writing
        # gets EPIPE and exits.
        for worker in workers:
            if worker.stdout is not None:
                worker.stdout.close()
        for worker in workers:
            worker.wait()


def worker_main() -> None:
    """A worker (see in_slices): ``(work, part)`` pickled on stdin, ``(ok, result or error)``
    pickled on stdout. Anything else the work prints goes to /dev/null, not into the result."""
    import contextlib  # noqa: PLC0415 - as in_slices: validate-domain --help loads this module
    import pickle  # noqa: PLC0415
    import sys  # noqa: PLC0415

    result = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        work, part = pickle.load(sys.stdin.buffer)  # noqa: S301 - written by our parent
        payload = pickle.dumps((True, work(part)), pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # reported by the parent instead
        payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
    out = os.fdopen(result, "wb")
    try:
        out.write(payload)
        out.flush()
    except BrokenPipeError:
        pass  # the parent left early: nobody wants the result
    finally:
        with contextlib.suppress(OSError):  # the same broken pipe, met again by close's flush
            out.close()
