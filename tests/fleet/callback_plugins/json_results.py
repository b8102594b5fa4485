"""A stdout callback for the suite: every task's result per host, then the recap, as one JSON document.

ansible-core has no JSON callback of its own (``json`` is in the ansible.posix collection, not
installed here). The document has the shape of ansible.posix's: ``plays[].tasks[]`` with
``task.name`` and ``hosts.<host>`` (the module's result), and ``stats.<host>``.
"""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible-core is untyped
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_results"

    def __init__(self) -> None:
        super().__init__()
        self.plays: list[dict[str, Any]] = []

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def _task(self, task: Any) -> dict[str, Any]:
        tasks = self.plays[-1]["tasks"]
        if not tasks or tasks[-1]["task"]["uuid"] != task._uuid:
            tasks.append({"task": {"name": task.get_name(), "uuid": task._uuid}, "hosts": {}})
        entry: dict[str, Any] = tasks[-1]
        return entry

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task(task)

    def _record(self, result: Any, **extra: Any) -> None:
        self._task(result._task)["hosts"][result._host.get_name()] = {**result._result, **extra}

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, default=str))
