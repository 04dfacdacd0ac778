"""``SLOTS``: ``dataclass``'s ``slots=True`` where Python has it (3.10 on), nothing on 3.9.

The package's records are ``@dataclass(frozen=True, **SLOTS)``: slots make them smaller and
their attributes faster to read, and this is the one place that knows which Python added them.
"""

from __future__ import annotations

import sys

SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}
