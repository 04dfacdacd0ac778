"""Policy loading for the hook's hot path."""

from __future__ import annotations

from .policy import Policy, load_policy


def load_policy_cached(path: str) -> Policy:
    return load_policy(path)
