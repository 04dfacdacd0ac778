"""The hook's interpreter: what it imports when run as the hook runs it (``-I``), and whether
every place it loads code from may be trusted (it runs as root on every VM start)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from ..common import files
from .hook_file import HOOK_ENV
from .layout import InstallError


@dataclass(frozen=True)
class Interpreter:
    """What the hook's interpreter, run as the wrapper runs it (``-I``), imports and trusts."""

    python: str
    package: str  # the libvirt_txmode package directory it imports
    path: tuple[str, ...]  # its sys.path: every directory code is imported from as root


_INSPECT = (
    "import json, os, sys, libvirt_txmode; "
    "print(json.dumps({'package': os.path.dirname(os.path.abspath(libvirt_txmode.__file__)), "
    "'path': [p for p in sys.path if p]}))"
)


def inspect_interpreter(python: str) -> Interpreter:
    """Run ``python -I`` as the hook will, and learn where it imports libvirt_txmode from."""
    if not os.path.isabs(python):
        raise InstallError(f"python path {python!r} must be absolute")
    try:
        proc = subprocess.run(
            [python, "-I", "-c", _INSPECT],
            capture_output=True,
            text=True,
            env=HOOK_ENV,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        raise InstallError(f"cannot run the hook's interpreter {python}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"the hook's interpreter {python} did not answer in 60 s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(
            f"the hook's interpreter {python}, run isolated (-I) as the hook runs it, cannot "
            f"import libvirt_txmode ({last}); a 'pip install --user' is invisible to it: install "
            "into a venv (python3 -m venv /opt/libvirt-txmode) or system-wide"
        )
    try:
        data = json.loads(proc.stdout)
        return Interpreter(python, str(data["package"]), tuple(str(p) for p in data["path"]))
    except (ValueError, KeyError, TypeError):
        raise InstallError(f"the hook's interpreter {python} gave an unreadable answer") from None


def interpreter_trust_problem(interpreter: Interpreter) -> Optional[str]:
    """Why code the interpreter runs as root could be planted by someone else, or None.

    The interpreter itself, the package directory and every existing directory on its ``-I``
    sys.path (site-packages with its ``.pth`` files included) must pass the whole-path trust rule
    of ``files.path_trust_problem``: owned by root, writable by no one else, from ``/`` down."""
    candidates = [interpreter.python, interpreter.package]
    candidates += [p for p in interpreter.path if os.path.exists(p)]
    for path in dict.fromkeys(candidates):
        problem = files.path_trust_problem(path)
        if problem is not None:
            return (
                f"refusing the hook's interpreter {interpreter.python}: {problem} (it runs as "
                "root on every VM start; whoever can write there could plant code in it)"
            )
    return None
