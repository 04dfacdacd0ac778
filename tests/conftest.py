from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import IO

import pytest

from tests.libvirt_env import clean_stale_state

# One libvirt daemon and one /etc/libvirt/hooks serve every test run on this machine: two pytest
# sessions that both install hooks and start domains would see each other's hooks. The first
# integration test of a session takes this lock and holds it until the session ends.
E2E_LOCK = "/run/lock/libvirt-txmode-e2e.lock"
_LOCK_KEY = pytest.StashKey[IO[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The e2e tests share one daemon; run them last so unit failures show up quickly.
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is None or _LOCK_KEY in item.config.stash:
        return
    if os.geteuid() != 0 or not os.path.isdir(os.path.dirname(E2E_LOCK)):
        return  # such a run skips its integration tests anyway
    handle = open(E2E_LOCK, "a")  # noqa: SIM115 - held for the whole session
    fcntl.flock(handle, fcntl.LOCK_EX)  # waits for another session's e2e tests to finish
    item.config.stash[_LOCK_KEY] = handle
    # Whatever an interrupted run left (a root's daemons, a test's hook) goes before it can fail
    # this one; only now, holding the lock, is it sure to be nobody's.
    clean_stale_state()


# Hooks run by the tests log there when neither journald nor /dev/log listens (logsink.py).
FALLBACK_LOG = "/var/log/libvirt-txmode.log"
_LOG_EXISTED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LOG_EXISTED] = os.path.exists(FALLBACK_LOG)


def pytest_unconfigure(config: pytest.Config) -> None:
    handle = config.stash.get(_LOCK_KEY, None)
    if handle is not None:
        handle.close()
    if not config.stash.get(_LOG_EXISTED, True) and os.geteuid() == 0:
        # The tests made it: leave the machine as they found it.
        with contextlib.suppress(OSError):
            os.unlink(FALLBACK_LOG)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # CI runs as root on the machine the project's scripts set up: any skip there (no libvirt,
    # not root, a missing package) hides a broken setup, whatever skipped it: fail it.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") == "true":
        kind = "integration test" if item.get_closest_marker("integration") else "test"
        report.outcome = "failed"
        report.longrepr = f"{kind} skipped under CI=true: {report.longrepr}"


@pytest.fixture(autouse=True)
def _no_colour_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests compare output exactly; the caller's GitHub Actions variable must not switch formats.
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def pytest_report_header(config: pytest.Config) -> str:
    return f"CI={os.environ.get('CI', '')!r}: skips are {'failures' if os.environ.get('CI') == 'true' else 'allowed'}"
