"""A stdout callback for the tests: one JSON document with every task's per-host results and stats.

ansible-core ships no JSON callback (ansible.posix has one); the tests parse results, not text.
"""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "txmode_json"

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict[str, Any]] = []

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.tasks.append({"name": task.get_name(), "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self.tasks.append({"name": task.get_name(), "hosts": {}})

    def _record(self, result: Any, status: str) -> None:
        self.tasks[-1]["hosts"][result._host.get_name()] = {**result._result, "status": status}

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"tasks": self.tasks, "stats": summary}, default=str))
