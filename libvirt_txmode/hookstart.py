"""What hooks/qemu runs for ``prepare begin``: ``python -I -S PACKAGE/hookstart.py ARGS``.

A script rather than ``-m libvirt_txmode.hook``: runpy costs ~5 ms, and ``-S`` (no ``site``) saves
a quarter of the interpreter's own start-up. Without ``site`` only the standard library is on
``sys.path``, so this puts the directory holding this package there (where the installing
interpreter, run with ``-I``, imports it from: install.py records it as PACKAGE) for hookfast.py,
which answers from a cached verdict. Anything else goes to hook.py once ``site`` is set up as a
normal start would (lxml and YAML live there). Kept tiny: a script is compiled at every run, a
module comes from its .pyc.
"""

import os
import sys

if __name__ == "__main__":
    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.append(ROOT)
    from libvirt_txmode import hookfast

    status = hookfast.main(sys.argv[1:], sys.stdin.buffer, sys.stderr)
    if not isinstance(status, int):
        # sys.path as a normal start has it (lxml, YAML: first found first); the package keeps
        # importing its own modules through its __path__.
        sys.path.remove(ROOT)
        import site

        site.main()
        from libvirt_txmode import hook

        status = hook.resume(status, sys.stderr)
        # The full check leaves lxml, the engine and their objects behind: tearing the
        # interpreter down costs a miss ~15 ms and writes nothing (cache and log files are
        # written with os.write and closed; stdout is never used). Only stderr is buffered.
        sys.stderr.flush()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        os._exit(status)
    raise SystemExit(status)
