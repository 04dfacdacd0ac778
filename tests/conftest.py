from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The e2e tests share one daemon; run them last so unit failures show up quickly.
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Under CI a skipped integration test hides a broken setup, whatever skipped it: fail it.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") == "true" and item.get_closest_marker("integration"):
        report.outcome = "failed"
        report.longrepr = f"integration test skipped under CI=true: {report.longrepr}"


@pytest.fixture(autouse=True)
def _no_colour_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests compare output exactly; the caller's GitHub Actions variable must not switch formats.
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def pytest_report_header(config: pytest.Config) -> str:
    return f"CI={os.environ.get('CI', '')!r}: integration skips are {'failures' if os.environ.get('CI') == 'true' else 'allowed'}"
