"""What hooks/qemu runs for ``prepare begin``: ``python -I -S PACKAGE/hookstart.py ARGS``.

A script rather than ``-m libvirt_txmode.hook.protocol``, and ``-S``: runpy and ``site`` cost
more than answering from the verdict cache. Without ``site`` only the standard library is on
``sys.path``, so this puts the directory holding this package there (where the installing
interpreter, run with ``-I``, imports it from: admin/hook_file.py writes it into the hook as
PACKAGE). When the cache cannot answer, ``site`` is set up as a normal start would before the
full check (lxml and YAML live there). This file stays at the package's top: installed hooks
name it. Kept tiny: a script is compiled at every run, a module comes from its .pyc.
"""

import os
import sys

if __name__ == "__main__":
    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.append(ROOT)
    from libvirt_txmode.hook import protocol as hook

    def full_start() -> None:
        # sys.path as a normal start has it (first found first); the package keeps importing
        # its own modules through its __path__.
        sys.path.remove(ROOT)
        import site  # noqa: PLC0415 - only when the cache cannot answer

        site.main()

    status = hook.main(sys.argv[1:], before_full_check=full_start)
    # After a full check, tearing down lxml, the engine and their objects writes nothing (cache
    # and log files are written and closed; stdout is never used): flush stderr and leave.
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except OSError:  # libvirt closed the pipe: the exit code is all that is left to give
        pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(status)
