"""The shell completion scripts the wheel installs, found at run time (no shtab needed).

scripts/gen-docs generates them from the parsers into completion/ (checked in, and kept current
by a test); setup.cfg's data_files install them where bash-completion and zsh look:
``share/bash-completion/completions/PROGRAM.bash`` and ``share/zsh/site-functions/_PROGRAM``
below the installation prefix. A source checkout has them in completion/.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from ..common import paths


def _candidates(program: str, shell: str) -> list[str]:
    if shell == "bash":
        name, subdir = f"{program}.bash", os.path.join("bash-completion", "completions")
    else:
        name, subdir = f"_{program}", os.path.join("zsh", "site-functions")
    # A source checkout's own copy first (the freshest there), then the installation prefix.
    found = [os.path.join(os.path.dirname(paths.PACKAGE_DIR), "completion", name)]
    prefixes = dict.fromkeys((sys.prefix, sys.base_prefix))
    found += [os.path.join(prefix, "share", subdir, name) for prefix in prefixes]
    return found


def shipped_script(program: str, shell: str) -> Optional[str]:
    """The installed (or checked-in) script for ``program`` in ``shell``, or None."""
    for path in _candidates(program, shell):
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            continue
    return None
